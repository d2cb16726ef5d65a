"""The first OGC API over the CIM database, over real HTTP against `cim serve`, on both backends."""

from __future__ import annotations

import re

import pytest
import shapely
from pyproj import Transformer
from sqlalchemy import text

LAYERS = ["buildings", "building-components", "pipelines", "pipe-nodes", "roads", "bridges", "terrain"]


def test_landing_page_and_health(http):
    assert http.get("/healthz").json()["status"] == "ok"
    landing = http.get("/", params={"f": "json"}).json()
    rels = {link["rel"] for link in landing["links"]}
    assert {"self", "conformance", "data", "service-desc"} <= rels


def test_collections_list_every_layer_with_extent(http):
    body = http.get("/collections", params={"f": "json"}).json()
    ids = {c["id"] for c in body["collections"]}
    assert set(LAYERS) <= ids
    for c in body["collections"]:
        minx, miny, maxx, maxy = c["extent"]["spatial"]["bbox"][0]
        assert 123.5 < minx < maxx < 124.0 and 41.1 < miny < maxy < 41.5, c["id"]


@pytest.mark.parametrize("layer", LAYERS)
def test_items_are_geojson(http, layer):
    r = http.get(f"/collections/{layer}/items", params={"f": "json", "limit": 5})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/geo+json") or r.headers["content-type"].startswith(
        "application/json")
    body = r.json()
    assert body["type"] == "FeatureCollection" and 0 < body["numberReturned"] == len(body["features"]) <= 5
    for f in body["features"]:
        assert f["type"] == "Feature" and isinstance(f["id"], str)
        geom = shapely.geometry.shape(f["geometry"])
        assert geom.is_valid and not geom.is_empty
        lon, lat = geom.representative_point().coords[0]
        assert 123.5 < lon < 124.0 and 41.1 < lat < 41.5
        assert f["properties"]["class"]


@pytest.mark.parametrize("layer", ["pipelines", "building-components", "buildings"])
def test_properties_are_the_typed_columns_over_the_attributes(http, server, layer):
    """The JSON the database writes for ``properties``: each non-null typed column (timestamps as RFC 3339
    UTC, dates ISO, numbers as numbers, parent/root as uids), then every other attribute; and geometries
    carry no ``crs`` member (RFC 7946)."""
    from datetime import UTC, date, datetime

    from sqlalchemy import select
    from sqlalchemy.orm import aliased

    from cim.db.queries import COLUMN_PROPERTY, layer_properties
    from cim.db.schema import tables_for

    body = http.get(f"/collections/{layer}/items", params={"f": "json", "limit": 40}).json()
    engine = server.db.engine()
    co = tables_for(engine).city_object
    p, r = aliased(co), aliased(co)
    with engine.connect() as conn:
        rows = {row.uid: row._mapping for row in conn.execute(
            select(co, p.c.uid.label("parent"), r.c.uid.label("root")).outerjoin(p, p.c.id == co.c.parent_id)
            .outerjoin(r, r.c.id == co.c.root_id).where(co.c.uid.in_([f["id"] for f in body["features"]])))}
    engine.dispose()
    for f in body["features"]:
        assert "crs" not in f["geometry"]
        row = rows[f["id"]]
        want = dict(row["attributes"] or {})
        for prop in layer_properties(layer):
            value = row[{v: k for k, v in COLUMN_PROPERTY.items()}.get(prop, prop)]
            if isinstance(value, datetime):
                value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
                value = value.isoformat().replace("+00:00", "Z")
            elif isinstance(value, date):
                value = value.isoformat()
            if value is not None:
                want[prop] = value
        assert f["properties"] == want


def test_item_by_id_and_404(http):
    one = http.get("/collections/buildings/items", params={"f": "json", "limit": 1}).json()["features"][0]
    got = http.get(f"/collections/buildings/items/{one['id']}", params={"f": "json"})
    assert got.status_code == 200 and got.json()["id"] == one["id"]
    assert got.json()["geometry"] == one["geometry"]
    missing = http.get("/collections/buildings/items/BX-NOPE", params={"f": "json"})
    assert missing.status_code == 404 and missing.json()["code"]


def test_geometry_matches_storage_crs(http, server):
    """The served CRS84 coordinates are the stored EPSG:4550 ones transformed (to 1 cm)."""
    f = http.get("/collections/buildings/items", params={"f": "json", "limit": 1}).json()["features"][0]
    engine = server.db.engine()
    fn = "ST_AsText" if engine.dialect.name == "postgresql" else "AsText"
    with engine.connect() as conn:
        wkt = conn.execute(text(f"SELECT {fn}(geom) FROM city_object WHERE uid = :u"), {"u": f["id"]}).scalar()
    engine.dispose()
    stored = shapely.from_wkt(wkt)
    lon, lat = Transformer.from_crs(4550, 4326, always_xy=True).transform(*shapely.get_coordinates(stored).T)
    served = shapely.get_coordinates(shapely.geometry.shape(f["geometry"]))
    assert abs(served[:, 0] - lon).max() < 1e-7 and abs(served[:, 1] - lat).max() < 1e-7


def test_bbox_returns_exactly_what_the_database_intersects(http, server):
    bbox = (123.765, 41.295, 123.775, 41.302)
    body = http.get("/collections/buildings/items",
                    params={"f": "json", "bbox": ",".join(map(str, bbox)), "limit": 10000}).json()
    got = {f["id"] for f in body["features"]}
    assert body["numberMatched"] == len(got) > 0
    engine = server.db.engine()
    fn = "ST_GeomFromText" if engine.dialect.name == "postgresql" else "GeomFromText"
    # the reference: the bbox polygon densified and transformed by the database itself
    box = shapely.segmentize(shapely.box(*bbox), 0.0001).wkt
    with engine.connect() as conn:
        want = set(conn.execute(text(
            f"SELECT uid FROM city_object WHERE layer = 'buildings' AND "
            f"ST_Intersects(geom, ST_Transform({fn}(:w, 4326), 4550))"), {"w": box}).scalars())
    engine.dispose()
    assert got == want


def test_components_of_a_building(http):
    b = http.get("/collections/buildings/items", params={"f": "json", "limit": 1}).json()["features"][0]
    assert b["properties"]["cim_level"] == 6  # the civic centre, nearest the centre, has interiors
    doors = http.get("/collections/building-components/items",
                     params={"f": "json", "class": "Door", "limit": 1000}).json()
    assert doors["numberMatched"] > 0
    assert all(f["properties"]["class"] == "Door" for f in doors["features"])
    assert any(f["properties"]["root"] == b["id"] for f in doors["features"])


def test_datetime_on_validity(http):
    body = http.get("/collections/buildings/items",
                    params={"f": "json", "datetime": "1990-06-01T00:00:00Z", "limit": 10000}).json()
    assert body["numberReturned"] > 0
    for f in body["features"]:
        assert f["properties"]["valid_from"] <= "1990-06-01T00:00:00Z"
        assert f["properties"].get("valid_to", "9999") > "1990-06-01T00:00:00Z"
    everything = http.get("/collections/buildings/items", params={"f": "json", "limit": 1}).json()["numberMatched"]
    assert body["numberMatched"] < everything


def test_html_pages_use_bundled_assets(http):
    for path in ("/", "/collections", "/collections/buildings", "/collections/pipelines/items"):
        r = http.get(path, params={"f": "html"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        assert not re.search(r"https://(unpkg\.com|cdnjs\.cloudflare\.com)/(leaflet|bootstrap|ajax/libs/leaflet)",
                             r.text), path
    page = http.get("/collections/buildings/items", params={"f": "html"}).text
    for asset in re.findall(r'(/cim-static/vendor/[^"\']+)', page):
        assert http.get(asset).status_code == 200, asset
    assert "本溪市政务服务中心" in page


@pytest.mark.parametrize("bbox,expect", [
    ("-180,-90,180,90", "all"),  # the whole world: every building (clipped to the storage CRS's area)
    ("2.2,48.8,2.5,48.9", 0),  # Paris: nothing, not an error
    ("170,41.2,-170,41.4", 0),  # crosses the antimeridian
])
def test_bbox_outside_or_around_the_area(http, bbox, expect):
    total = http.get("/collections/buildings/items", params={"f": "json", "limit": 1}).json()["numberMatched"]
    r = http.get("/collections/buildings/items", params={"f": "json", "bbox": bbox, "limit": 1})
    assert r.status_code == 200
    assert r.json()["numberMatched"] == (total if expect == "all" else expect)


@pytest.mark.parametrize("bbox", ["123.7,41.3,123.8,41.2", "nan,41.2,123.8,41.3"])
def test_bad_bbox_is_a_400(http, bbox):
    r = http.get("/collections/buildings/items", params={"f": "json", "bbox": bbox})
    body = r.json()
    assert r.status_code == 400 and body["code"] in ("InvalidParameterValue", "InvalidQuery")
    assert "bbox" in body["description"] or "maxy" in body["description"]


def test_parent_and_root_select_components(http, server):
    """All components of a building (root=), all spaces of a storey (parent=&class=Space)."""
    b = http.get("/collections/buildings/items", params={"f": "json", "limit": 1}).json()["features"][0]
    comps = http.get("/collections/building-components/items",
                     params={"f": "json", "root": b["id"], "limit": 10000}).json()
    engine = server.db.engine()
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*) FROM city_object c JOIN city_object r ON r.id = c.root_id "
                              "WHERE r.uid = :u"), {"u": b["id"]}).scalar()
    engine.dispose()
    assert comps["numberMatched"] == n > 0 and all(f["properties"]["root"] == b["id"] for f in comps["features"])
    storey = next(f for f in comps["features"] if f["properties"]["class"] == "Storey")
    spaces = http.get("/collections/building-components/items",
                      params={"f": "json", "parent": storey["id"], "class": "Space", "limit": 1000}).json()
    assert spaces["numberMatched"] > 1
    assert all(f["properties"]["parent"] == storey["id"] and f["properties"]["class"] == "Space"
               for f in spaces["features"])
    none = http.get("/collections/building-components/items", params={"f": "json", "root": "BX-NOPE"}).json()
    assert none["numberMatched"] == 0


def test_cim_level_geometries(http, server):
    """cim_level=N: the 3D geometry at the highest level stored up to N, heights within the envelope."""
    feats = http.get("/collections/buildings/items", params={"f": "json", "limit": 50, "cim_level": 3}).json()["features"]
    kinds = set()
    for f in feats:
        solid = shapely.geometry.shape(f["geometry"])
        assert solid.geom_type == "MultiPolygon" and shapely.has_z(solid)
        z = shapely.get_coordinates(solid, include_z=True)[:, 2]
        assert abs(z.min() - f["properties"]["min_z"]) < 1e-3 and abs(z.max() - f["properties"]["max_z"]) < 1e-3
        kinds.add(len(solid.geoms))
    assert 7 in kinds  # gable roofs (CIM3) among the flat-roofed CIM2 prisms
    pipe = http.get("/collections/pipelines/items", params={"f": "json", "limit": 1, "cim_level": 3,
                                                             "crs": "EPSG:4490"}).json()["features"][0]
    (lat, lon, z), _ = pipe["geometry"]["coordinates"]
    assert 41 < lat < 42 and 123 < lon < 125 and z < pipe["properties"]["max_z"]  # buried, lat/lon order
    flat = http.get("/collections/buildings/items", params={"f": "json", "limit": 1, "cim_level": 1}).json()
    assert not shapely.has_z(shapely.geometry.shape(flat["features"][0]["geometry"]))  # nothing at CIM1: footprint
    one = feats[0]
    item = http.get(f"/collections/buildings/items/{one['id']}", params={"f": "json", "cim_level": 3}).json()
    assert item["geometry"] == one["geometry"]
    for bad in ("0", "8", "high"):
        assert http.get("/collections/buildings/items", params={"f": "json", "cim_level": bad}).status_code == 400


def test_openapi_documents_our_parameters(http):
    """The OpenAPI document describes the items parameters our routes answer, not only pygeoapi's."""
    doc = http.get("/openapi", params={"f": "json"}).json()
    items = {p.get("name", p.get("$ref")): p for p in doc["paths"]["/collections/buildings/items"]["get"]["parameters"]}
    for name in ("datetime", "filter", "filter-lang", "filter-crs", "ids", "after", "before", "crs", "bbox-crs"):
        assert name in items, name
    assert items["cim_level"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 7}
    assert "jsonfg" in items["f"]["schema"]["enum"]
    assert "http://www.opengis.net/def/crs/EPSG/0/4550" in items["crs"]["schema"]["enum"]
    one = {p.get("name") for p in doc["paths"]["/collections/buildings/items/{featureId}"]["get"]["parameters"]}
    assert {"crs", "cim_level", "f"} <= one
