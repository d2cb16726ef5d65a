"""OGC API – Features Part 2 over HTTP on both backends: crs, bbox-crs, Content-Crs, axis order per CRS,
collection CRS metadata; and the strict parameter handling of our items route."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from sqlalchemy import text

from cim.crs import gcj
from cim.crs.registry import default_registry
from cim.crs.transform import transform

ITEMS = "/collections/buildings/items"
CRS84 = "http://www.opengis.net/def/crs/OGC/1.3/CRS84"
EPSG = "http://www.opengis.net/def/crs/EPSG/0/"
BBOX84 = (123.765, 41.295, 123.775, 41.302)


def coords(feature) -> np.ndarray:
    return shapely.get_coordinates(shapely.geometry.shape(feature["geometry"]))


def get(http, **params):
    r = http.get(ITEMS, params={"f": "json", "limit": 5, **params})
    assert r.status_code == 200, r.text
    return r


def test_default_is_crs84(http):
    r = get(http)
    assert r.headers["content-crs"] == f"<{CRS84}>" and r.headers["content-type"].startswith("application/geo+json")


def test_epsg4490_is_lat_lon(http):
    base = get(http).json()["features"]
    r = get(http, crs=f"{EPSG}4490")
    assert r.headers["content-crs"] == f"<{EPSG}4490>"
    for a, b in zip(base, r.json()["features"], strict=True):
        lonlat, latlon = coords(a), coords(b)
        assert 41 < latlon[0, 0] < 42 and 123 < latlon[0, 1] < 125
        assert np.abs(latlon[:, ::-1] - lonlat).max() < 1e-8


def test_epsg4550_is_north_east_and_matches_storage(http, server):
    r = get(http, crs="EPSG:4550")
    assert r.headers["content-crs"] == f"<{EPSG}4550>"
    f = r.json()["features"][0]
    engine = server.db.engine()
    fn = "ST_AsText" if engine.dialect.name == "postgresql" else "AsText"
    with engine.connect() as conn:
        stored = shapely.from_wkt(conn.execute(text(f"SELECT {fn}(geom) FROM city_object WHERE uid = :u"),
                                               {"u": f["id"]}).scalar())
    engine.dispose()
    assert np.abs(coords(f)[:, ::-1] - shapely.get_coordinates(stored)).max() < 1e-3


@pytest.mark.parametrize("uri,forward", [("urn:benxi-cim:crs:GCJ-02", gcj.wgs84_to_gcj02),
                                         ("urn:benxi-cim:crs:BD-09", gcj.wgs84_to_bd09)])
def test_gcj02_and_bd09_output(http, uri, forward):
    base = get(http).json()["features"]
    r = get(http, crs=uri)
    assert r.headers["content-crs"] == f"<{uri}>"
    for a, b in zip(base, r.json()["features"], strict=True):
        lon, lat = forward(coords(a)[:, 0], coords(a)[:, 1])
        assert np.abs(coords(b) - np.column_stack([lon, lat])).max() < 1e-8


def test_local_system_output(http):
    uri = "urn:benxi-cim:crs:local:example-tm-raised"
    base = get(http).json()["features"][0]
    got = coords(get(http, crs=uri).json()["features"][0])
    reg = default_registry()
    x, y, _ = transform(reg.resolve("OGC:CRS84"), reg.resolve(uri), coords(base)[:, 0], coords(base)[:, 1])
    assert np.abs(got - np.column_stack([x, y])).max() < 1e-3


def _ids(http, **params) -> set[str]:
    body = http.get(ITEMS, params={"f": "json", "limit": 10000, **params}).json()
    assert body["numberMatched"] == body["numberReturned"]
    return {f["id"] for f in body["features"]}


def test_bbox_crs_in_each_axis_order(http, server):
    want = _ids(http, bbox=",".join(map(str, BBOX84)))
    assert want
    # EPSG:4490: the same box, latitude first
    assert _ids(http, bbox=f"{BBOX84[1]},{BBOX84[0]},{BBOX84[3]},{BBOX84[2]}", **{"bbox-crs": "EPSG:4490"}) == want
    # EPSG:4550: northing first; the reference is the database's own intersection with that box
    box = (4573900.0, 564000.0, 4574600.0, 565000.0)
    got = _ids(http, bbox=",".join(map(str, box)), **{"bbox-crs": f"{EPSG}4550"})
    engine = server.db.engine()
    fn = "ST_GeomFromText" if engine.dialect.name == "postgresql" else "GeomFromText"
    with engine.connect() as conn:
        ref = set(conn.execute(text(
            f"SELECT uid FROM city_object WHERE layer = 'buildings' AND ST_Intersects(geom, {fn}(:w, 4550))"),
            {"w": shapely.box(box[1], box[0], box[3], box[2]).wkt}).scalars())
    engine.dispose()
    assert got == ref and got


def test_following_next_links_sums_to_number_matched(http):
    url, params, seen, matched = ITEMS, {"f": "json", "limit": 7, "bbox": ",".join(map(str, BBOX84))}, [], None
    while url:
        body = http.get(url, params=params).json()
        matched = body["numberMatched"]
        seen += [f["id"] for f in body["features"]]
        nxt = [link["href"] for link in body["links"] if link["rel"] == "next"]
        url, params = (nxt[0], None) if nxt else (None, None)
    assert len(seen) == matched == len(set(seen)) > 7


def test_single_item_in_a_crs(http):
    fid = get(http).json()["features"][0]["id"]
    r = http.get(f"{ITEMS}/{fid}", params={"f": "json", "crs": "EPSG:4490"})
    assert r.status_code == 200 and r.headers["content-crs"] == f"<{EPSG}4490>"
    body = r.json()
    assert body["id"] == fid and 41 < coords(body)[0, 0] < 42
    assert {link["rel"] for link in body["links"]} >= {"self", "alternate", "collection"}
    assert http.get(f"{ITEMS}/nope", params={"f": "json"}).status_code == 404


def test_collection_crs_metadata(http):
    c = http.get("/collections/buildings", params={"f": "json"}).json()
    assert c["storageCrs"] == f"{EPSG}4550" and c["storageCrsCoordinateEpoch"] == 2000.0
    assert {CRS84, f"{EPSG}4490", f"{EPSG}4550", "urn:benxi-cim:crs:GCJ-02"} <= set(c["crs"])
    listed = {x["id"]: x for x in http.get("/collections", params={"f": "json"}).json()["collections"]}
    assert listed["pipelines"]["storageCrs"] == f"{EPSG}4550"
    conformance = http.get("/conformance", params={"f": "json"}).json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs" in conformance


@pytest.mark.parametrize("params,fragment", [
    ({"crs": "EPSG:4978"}, "crs: unsupported"),
    ({"crs": "EPSG:2000"}, "crs: unsupported"),
    ({"bbox-crs": "EPSG:4490"}, "without bbox"),
    ({"bbox": "1,2,3,4", "bbox-crs": "EPSG:12345"}, "bbox-crs"),
    ({"bbox": "41.3,123.7,41.2,123.8", "bbox-crs": "EPSG:4490"}, "min <= max"),
    ({"bbox": "1,2,3"}, "bbox"),
    ({"foo": "bar"}, "unknown query parameter 'foo'"),
    ({"limit": "0"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"offset": "-1"}, "offset"),
    ({"sortby": "-nope"}, "sortby"),
    ({"properties": "nope"}, "properties"),
    ({"skipGeometry": "maybe"}, "skipGeometry"),
    ({"floors": "many"}, "floors"),
    ({"datetime": "garbage"}, "datetime"),
])
def test_bad_parameters_are_400(http, params, fragment):
    r = http.get(ITEMS, params={"f": "json", **params})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["description"]


def test_limit_is_clamped(http):
    r = http.get("/collections/pipe-nodes/items", params={"f": "json", "limit": 1_000_000})
    assert r.status_code == 200 and r.json()["numberReturned"] <= 10000


def _link(body, rel):
    return next((link["href"] for link in body["links"] if link["rel"] == rel), None)


def test_keyset_pages_match_offset_pages_and_go_back(http):
    params = {"f": "json", "limit": 50}
    first = http.get("/collections/pipe-nodes/items", params=params).json()
    assert "after=" in _link(first, "next") and _link(first, "prev") is None
    pages = [first]
    for _ in range(3):
        pages.append(http.get(_link(pages[-1], "next")).json())
    for i, page in enumerate(pages):
        by_offset = http.get("/collections/pipe-nodes/items", params={**params, "offset": 50 * i}).json()
        assert [f["id"] for f in page["features"]] == [f["id"] for f in by_offset["features"]]
        assert page["numberMatched"] == first["numberMatched"]
    back = http.get(_link(pages[3], "prev")).json()
    assert [f["id"] for f in back["features"]] == [f["id"] for f in pages[2]["features"]]
    assert [f["id"] for f in http.get(_link(back, "next")).json()["features"]] == [
        f["id"] for f in pages[3]["features"]]


@pytest.mark.parametrize("params", [{"after": "abc"}, {"after": "5", "sortby": "name"}, {"after": "5", "before": "9"},
                                    {"before": "0"}, {"after": "5", "offset": "10"}])
def test_bad_page_tokens(http, params):
    r = http.get("/collections/pipe-nodes/items", params={"f": "json", **params})
    assert r.status_code == 400, r.text


def test_ids(http):
    some = [f["id"] for f in http.get(ITEMS, params={"f": "json", "limit": 3}).json()["features"]]
    body = http.get(ITEMS, params={"f": "json", "ids": ",".join(some + ["BX-NOPE"])}).json()
    assert sorted(f["id"] for f in body["features"]) == sorted(some) and body["numberMatched"] == 3
    huge = ",".join(f"BX-BLD-{i:07d}" for i in range(1001))
    r = http.get(ITEMS, params={"f": "json", "ids": huge})
    assert r.status_code == 400 and "at most 1000" in r.json()["description"]


def test_gzip_etag_and_304(http):
    r = http.get(ITEMS, params={"f": "json", "limit": 100}, headers={"Accept-Encoding": "gzip"})
    assert r.headers["content-encoding"] == "gzip" and r.headers["cache-control"].startswith("public")
    etag = r.headers["etag"]
    again = http.get(ITEMS, params={"f": "json", "limit": 100}, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    other = http.get(ITEMS, params={"f": "json", "limit": 99}, headers={"If-None-Match": etag})
    assert other.status_code == 200 and other.headers["etag"] != etag
    one = r.json()["features"][0]["id"]
    item = http.get(f"{ITEMS}/{one}", params={"f": "json"})
    assert http.get(f"{ITEMS}/{one}", params={"f": "json"},
                    headers={"If-None-Match": item.headers["etag"]}).status_code == 304


@pytest.mark.parametrize("value,start,end", [
    ("1990-06-01T00:00:00Z", (1990, 6, 1), (1990, 6, 1)),
    ("1990-01-01T00:00:00Z/2000-01-01T00:00:00Z", (1990, 1, 1), (2000, 1, 1)),
    ("../1990-01-01T00:00:00Z", None, (1990, 1, 1)),
    ("2015-01-01T00:00:00Z/..", (2015, 1, 1), None),
    ("../..", None, None),
])
def test_datetime_forms_on_validity(http, server, value, start, end):
    """Instants and closed/open intervals select the objects valid at some time within them."""
    from datetime import UTC, datetime

    from sqlalchemy import func, or_, select

    from cim.db.schema import tables_for

    engine = server.db.engine()
    co = tables_for(engine).city_object
    stmt = select(func.count()).where(co.c.layer == "buildings")
    if end is not None:
        stmt = stmt.where(co.c.valid_from <= datetime(*end, tzinfo=UTC))
    if start is not None:
        stmt = stmt.where(or_(co.c.valid_to.is_(None), co.c.valid_to > datetime(*start, tzinfo=UTC)))
    with engine.connect() as conn:
        want = conn.execute(stmt).scalar()
    engine.dispose()
    assert http.get(ITEMS, params={"f": "json", "limit": 1, "datetime": value}).json()["numberMatched"] == want


def test_number_matched_can_be_omitted(server, http):
    """CIM_COUNT_MATCHED=false: no count per request; next links still walk every feature."""
    from .conftest import start_server, stop_server

    other = start_server(server.db, {"CIM_COUNT_MATCHED": "false"}, "server-nocount.log")
    try:
        import httpx

        params = {"f": "json", "limit": 9, "bbox": ",".join(map(str, BBOX84))}
        total = http.get(ITEMS, params=params).json()["numberMatched"]
        url, seen = f"{other.url}{ITEMS}", []
        while url:
            body = httpx.get(url, params=params if not seen else None, timeout=30).json()
            assert "numberMatched" not in body
            seen += [f["id"] for f in body["features"]]
            url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
        assert len(seen) == len(set(seen)) == total
    finally:
        stop_server(other)


def test_jsonfg(http):
    plain = http.get(ITEMS, params={"f": "json", "limit": 3}).json()["features"]
    r = http.get(ITEMS, params={"f": "jsonfg", "limit": 3})
    assert r.headers["content-type"].startswith("application/vnd.ogc.fg+json")
    body = r.json()
    assert "http://www.opengis.net/spec/json-fg-1/0.2/conf/core" in body["conformsTo"]
    assert body["coordRefSys"] == CRS84
    for a, b in zip(plain, body["features"], strict=True):
        assert b["place"] is None and b["geometry"] == a["geometry"] and b["featureType"] == "Building"
        assert b["time"]["interval"][0] == a["properties"]["valid_from"]
    gk = http.get(ITEMS, params={"f": "jsonfg", "limit": 3, "crs": "EPSG:4550"}).json()
    assert gk["coordRefSys"] == f"{EPSG}4550"
    for a, b in zip(plain, gk["features"], strict=True):
        assert b["geometry"] == a["geometry"]  # always WGS 84 lon/lat
        n, e = b["place"]["coordinates"][0][0][:2]
        assert 4.5e6 < n < 4.7e6 and 5e5 < e < 6e5  # north, east


def test_jsonfg_solids_are_polyhedra(http):
    solids = http.get(ITEMS, params={"f": "jsonfg", "limit": 5, "cim_level": 2}).json()["features"]
    for f in solids:
        assert f["place"]["type"] == "Polyhedron" and len(f["place"]["coordinates"][0][0][0][0]) == 3
        assert f["geometry"]["type"] == "MultiPolygon"
    road = http.get("/collections/roads/items", params={"f": "jsonfg", "limit": 1, "cim_level": 2}).json()
    assert road["features"][0]["place"] is None or road["features"][0]["place"]["type"] != "Polyhedron"
    one = http.get(f"{ITEMS}/{solids[0]['id']}", params={"f": "jsonfg", "cim_level": 2})
    assert one.headers["content-type"].startswith("application/vnd.ogc.fg+json")
    assert one.json()["place"] == solids[0]["place"]
