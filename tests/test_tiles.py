"""Vector tiles (OGC API – Tiles Part 1, MVT) against the running server on both backends.

Expectations come from outside the tile code: which buildings a tile must hold is asked of the database
in plain SQL (footprints transformed there and intersected with the tile's bounds), attributes from the
items API, tile positions from morecantile's grid, documents from the OGC schemas (offline copy in
../shared/specs), and a tile is read back by GDAL's MVT driver too. Tiles of both backends are compared
feature by feature (ids and attributes).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import httpx
import mapbox_vector_tile
import morecantile
import numpy as np
import pytest
import shapely
import yaml
from pyproj import Transformer
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012
from sqlalchemy import text

from cim.crs import tms as tms_registry
from cim.db.schema import tables_for
from cim.db.versions import bump
from cim.settings import TilesSettings, get_settings
from cim.tiles import grid, mvt

from .conftest import AUTH_HEADERS, SHARED, start_server, stop_server

OPENAPI = SHARED / "specs/ogc/schemas.opengis.net/ogcapi/tiles/part1/1.0/openapi"
TMS_SCHEMAS = OPENAPI / "schemas/tms"
MVT = "application/vnd.mapbox-vector-tile"
CENTRE = (123.77, 41.30)  # 平山区, the demo city's centre
SETS = {"WebMercatorQuad": ("16", 3857), "WorldCRS84Quad": ("15", 4326), "CGCS2000TiandituQuad": ("16", 4490)}
TILES_CONFORMANCE = {f"http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{c}"
                     for c in ("core", "tileset", "tilesets-list", "geodata-tilesets", "mvt")}

# tiles of each backend (backend → tile address → uid → attributes), for the cross-backend comparisons
SEEN: dict[str, dict[str, dict[str, dict]]] = {}
SEEN_CAPPED: dict[str, dict[str, dict]] = {}


# ---------------------------------------------------------------------------------------------- helpers


def schema_validator(path: Path, pointer: tuple[str, ...] = ()) -> Draft202012Validator:
    """A validator for an OGC schema file (or a part of a response file), $refs resolved offline."""

    def retrieve(uri: str) -> Resource:
        return DRAFT202012.create_resource(yaml.safe_load(Path(urlparse(uri).path).read_text(encoding="utf-8")))

    root = yaml.safe_load(path.read_text(encoding="utf-8"))
    for key in pointer:
        root = root[key]
    schema = {"$id": path.resolve().as_uri(), **root}
    return Draft202012Validator(schema, registry=Registry(retrieve=retrieve))


def assert_valid(validator: Draft202012Validator, doc: dict) -> None:
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]
    assert errors == []


def decode(content: bytes, layer: str) -> dict[str, dict]:
    """Features of a tile by public id: {"properties", "geometry" (tile coordinates, y down), "extent"}."""
    doc = mapbox_vector_tile.decode(content, default_options={"y_coord_down": True})
    assert set(doc) <= {layer}
    out = {}
    for f in doc.get(layer, {}).get("features", []):
        props = dict(f["properties"])
        uid = props["id"]
        assert uid not in out, f"{uid} twice in one tile"
        out[uid] = {"properties": props, "geometry": shapely.geometry.shape(f["geometry"]),
                    "extent": doc[layer]["extent"]}
    return out


def tile_of(tms_id: str, matrix: str, lon: float, lat: float) -> morecantile.Tile:
    return tms_registry.get(tms_id).tile(lon, lat, int(matrix))


def tile_url(layer: str, tms_id: str, tile: morecantile.Tile) -> str:
    return f"/collections/{layer}/tiles/{tms_id}/{tile.z}/{tile.y}/{tile.x}"


def bounds(tms_id: str, tile: morecantile.Tile) -> tuple[float, float, float, float]:
    b = tms_registry.get(tms_id).xy_bounds(tile)
    return b.left, b.bottom, b.right, b.top


def intersecting(engine, layer: str, srid: int, box: tuple[float, float, float, float]) -> set[str]:
    """Objects of a layer whose footprint, transformed by the database, intersects a box in ``srid``."""
    if engine.dialect.name == "sqlite":
        env = "BuildMbr(:l, :b, :r, :t, :srid)"
    else:
        env = "ST_MakeEnvelope(:l, :b, :r, :t, :srid)"
    sql = (f"SELECT uid FROM city_object WHERE layer = :layer "
           f"AND ST_Intersects(ST_Transform(geom, :srid), {env}) = {'1' if engine.dialect.name == 'sqlite' else 'true'}")
    with engine.connect() as conn:
        rows = conn.execute(text(sql), dict(layer=layer, srid=srid, l=box[0], b=box[1], r=box[2], t=box[3]))
        return {r[0] for r in rows}


def grow(box: tuple[float, float, float, float], by: float) -> tuple[float, float, float, float]:
    return box[0] - by, box[1] - by, box[2] + by, box[3] + by


def rules(layer: str) -> mvt.LayerRules:
    return mvt.LayerRules.from_settings(layer, get_settings().tiles)


def zoom_of(tms_id: str, matrix: str) -> int:
    return grid.web_mercator_zoom(grid.tile_set(tms_id), matrix)


def expected_keys(layer: str, tms_id: str, matrix: str) -> set[str]:
    a = rules(layer).attributes(zoom_of(tms_id, matrix))
    return {"id", *a.typed, *a.extra}


@pytest.fixture(scope="session")
def engine(demo_db):
    e = demo_db.engine()
    yield e
    e.dispose()


@pytest.fixture(scope="session")
def central_buildings(engine) -> list[tuple[str, float, float]]:
    """The eight buildings nearest the centre: (uid, lon, lat of a point inside the footprint), from SQL."""
    geom_from_text = "GeomFromText" if engine.dialect.name == "sqlite" else "ST_GeomFromText"
    point = f"ST_Transform({geom_from_text}('POINT(123.77 41.30)', 4490), 4550)"
    inside = "ST_Transform(ST_PointOnSurface(geom), 4490)"
    sql = (f"SELECT uid, ST_X({inside}), ST_Y({inside}) FROM city_object WHERE layer = 'buildings' "
           f"ORDER BY ST_Distance(geom, {point}), uid LIMIT 8")
    with engine.connect() as conn:
        return [(r[0], float(r[1]), float(r[2])) for r in conn.execute(text(sql))]


def footprint_bounds(engine, uid: str, srid: int) -> tuple[float, float, float, float]:
    """A footprint's bounds in ``srid`` (x = longitude/easting), transformed by the database."""
    names = ("MbrMinX", "MbrMinY", "MbrMaxX", "MbrMaxY") if engine.dialect.name == "sqlite" else \
        ("ST_XMin", "ST_YMin", "ST_XMax", "ST_YMax")
    cols = ", ".join(f"{n}(ST_Transform(geom, :srid))" for n in names)
    with engine.connect() as conn:
        return tuple(float(v) for v in conn.execute(text(f"SELECT {cols} FROM city_object WHERE uid = :uid"),
                                                    dict(uid=uid, srid=srid)).one())


def to_set_crs(tms_id: str, tile: morecantile.Tile, geom: shapely.Geometry, extent: int) -> shapely.Geometry:
    """Tile coordinates (0..extent, y down) → the set's CRS (x/y order)."""
    left, bottom, right, top = bounds(tms_id, tile)
    return shapely.transform(geom, lambda c: np.column_stack([left + c[:, 0] / extent * (right - left),
                                                              top - c[:, 1] / extent * (top - bottom)]))


# ---------------------------------------------------------------------------------------------- content


@pytest.mark.parametrize("tms_id", list(SETS))
def test_known_buildings_in_their_tile_with_their_attributes_and_place(http, engine, central_buildings, tms_id):
    matrix, srid = SETS[tms_id]
    seen_tiles: dict[morecantile.Tile, dict[str, dict]] = {}
    for uid, lon, lat in central_buildings:
        tile = tile_of(tms_id, matrix, lon, lat)
        if tile not in seen_tiles:
            r = http.get(tile_url("buildings", tms_id, tile))
            assert r.status_code == 200 and r.headers["content-type"] == MVT
            seen_tiles[tile] = decode(r.content, "buildings")
        features = seen_tiles[tile]
        assert uid in features, f"{uid} (centroid {lon}, {lat}) not in {tms_id} tile {tile}"
        f = features[uid]
        # attributes: the ones configured for this zoom, with the items API's values
        item = http.get(f"/collections/buildings/items/{uid}", params={"f": "json"}).json()
        assert set(f["properties"]) == {k for k in expected_keys("buildings", tms_id, matrix)
                                        if k == "id" or item["properties"].get(k) is not None}
        for key, value in f["properties"].items():
            assert value == (uid if key == "id" else item["properties"][key]), key
        # place: tile x is longitude (even for EPSG:4490, a lat/lon CRS), y runs down from the top; the
        # decoded outline lies within the footprint's bounds and covers its inner point (2 units of slack)
        slack = 2 * (bounds(tms_id, tile)[2] - bounds(tms_id, tile)[0]) / f["extent"]
        outline = to_set_crs(tms_id, tile, f["geometry"], f["extent"])
        x0, y0, x1, y1 = footprint_bounds(engine, uid, srid)
        gx0, gy0, gx1, gy1 = outline.bounds
        assert x0 - slack <= gx0 and y0 - slack <= gy0 and gx1 <= x1 + slack and gy1 <= y1 + slack, uid
        px, py = (lon, lat) if srid != 3857 else morecantile.tms.get("WebMercatorQuad").xy(lon, lat)
        assert outline.buffer(slack).contains(shapely.Point(px, py)), uid


@pytest.mark.parametrize("tms_id", list(SETS))
def test_tile_holds_what_the_database_says_intersects_it(http, engine, tms_id):
    matrix, srid = SETS[tms_id]
    tile = tile_of(tms_id, matrix, *CENTRE)
    r = http.get(tile_url("buildings", tms_id, tile))
    got = set(decode(r.content, "buildings"))
    box = bounds(tms_id, tile)
    pixel = (box[2] - box[0]) / 4096
    inside = intersecting(engine, "buildings", srid, grow(box, -pixel))
    around = intersecting(engine, "buildings", srid, grow(box, (64 + 1) * pixel))  # the 64-unit buffer
    assert len(inside) >= 5
    assert inside <= got <= around


LAYER_TILES = [("buildings", "WebMercatorQuad", "17"), ("buildings", "WebMercatorQuad", "13"),
               ("buildings", "CGCS2000TiandituQuad", "15"), ("buildings", "WorldCRS84Quad", "16"),
               ("building-components", "WebMercatorQuad", "17"), ("pipelines", "CGCS2000TiandituQuad", "17"),
               ("pipe-nodes", "WebMercatorQuad", "17"), ("roads", "WorldCRS84Quad", "13"),
               ("bridges", "WebMercatorQuad", "13"), ("terrain", "CGCS2000TiandituQuad", "10"),
               # low zooms, coarse grids: where the backends' geometry pipelines would drop different slivers
               ("roads", "WebMercatorQuad", "12"), ("buildings", "WebMercatorQuad", "12"),
               ("pipelines", "WorldCRS84Quad", "11"), ("pipe-nodes", "CGCS2000TiandituQuad", "14"),
               ("building-components", "WebMercatorQuad", "16")]


def test_spatialite_and_postgis_tiles_hold_the_same_features_and_attributes(http, demo_db):
    """Each backend records its tiles; whichever runs second compares them with the first's."""
    mine: dict[str, dict[str, dict]] = {}
    for layer, tms_id, matrix in LAYER_TILES:
        url = tile_url(layer, tms_id, tile_of(tms_id, matrix, *CENTRE))
        r = http.get(url)
        assert r.status_code == 200, url
        features = decode(r.content, layer)
        assert features, url
        for f in features.values():
            assert set(f["properties"]) <= expected_keys(layer, tms_id, matrix)
        mine[url] = {uid: f["properties"] for uid, f in features.items()}
    SEEN[demo_db.backend] = mine
    others = [b for b in SEEN if b != demo_db.backend]
    for other in others:
        for url, features in mine.items():
            theirs = SEEN[other][url]
            assert set(features) == set(theirs), (url, set(features) ^ set(theirs))
            for uid in features:
                assert features[uid] == theirs[uid], (url, uid)


def test_attributes_follow_the_zoom_schedule(http):
    keys_at = {}
    for matrix in ("13", "16", "17"):
        tile = tile_of("WebMercatorQuad", matrix, *CENTRE)
        features = decode(http.get(tile_url("buildings", "WebMercatorQuad", tile)).content, "buildings")
        keys_at[matrix] = set().union(*(f["properties"] for f in features.values()))
        assert keys_at[matrix] <= expected_keys("buildings", "WebMercatorQuad", matrix)
    assert keys_at["13"] == {"id", "usage"}
    assert {"floors", "height"} <= keys_at["16"] and "address" not in keys_at["16"]
    assert {"address", "year_built", "valid_from"} <= keys_at["17"]
    # keys of the objects' other attributes (道路等级 is not a column) are served where configured
    roads = decode(http.get(tile_url("roads", "WebMercatorQuad", tile_of("WebMercatorQuad", "14", *CENTRE))).content,
                   "roads")
    grades = {f["properties"].get("道路等级") for f in roads.values()}
    assert grades and grades <= {"主干路", "次干路", "支路"}
    assert all(isinstance(f["properties"].get("lanes"), int) for f in roads.values())


def test_simplification_grid_by_zoom(http):
    """``simplify`` pixels per grid cell by zoom: the MVT extent of the tiles follows it."""
    settings = get_settings().tiles
    for matrix in ("12", "14", "16"):
        tile = tile_of("WebMercatorQuad", matrix, *CENTRE)
        doc = mapbox_vector_tile.decode(http.get(tile_url("buildings", "WebMercatorQuad", tile)).content)
        assert doc["buildings"]["extent"] == mvt.tile_extent(settings, int(matrix))
    assert mvt.tile_extent(settings, 12) < mvt.tile_extent(settings, 16) == settings.extent


def test_feature_cap_keeps_the_largest_footprints(engine, demo_db):
    """The cap, in-process with a small max_features (same code path as the server's)."""
    settings = TilesSettings(max_features=7, layers={"buildings": {"properties": {0: ["usage"]}}})
    ts = grid.tile_set("WebMercatorQuad")
    tile = tile_of("WebMercatorQuad", "15", *CENTRE)
    q = mvt.tile_query("buildings", "buildings", ts, "15", tile.y, tile.x, 4550,
                       mvt.LayerRules.from_settings("buildings", settings), settings)
    from cim.db.schema import tables_for

    with engine.connect() as conn:
        data = mvt.render(conn, tables_for(engine), q)
    features = decode(data, "buildings")
    assert len(features) == 7
    assert all(set(f["properties"]) <= {"id", "usage"} for f in features.values())
    # the seven largest of the buildings the uncapped tile holds (same filter, from SQL)
    box = bounds("WebMercatorQuad", tile)
    candidates = intersecting(engine, "buildings", 3857, grow(box, 60 * (box[2] - box[0]) / 4096))  # surely in
    with engine.connect() as conn:
        areas = {r[0]: round(float(r[1]), 2) for r in conn.execute(
            text("SELECT uid, ST_Area(geom) FROM city_object WHERE layer = 'buildings'")) if r[0] in candidates}
    smallest_kept = min(areas[u] for u in features)
    assert all(areas[u] <= smallest_kept for u in set(areas) - set(features))
    SEEN_CAPPED[demo_db.backend] = {u: f["properties"] for u, f in features.items()}
    for other, theirs in SEEN_CAPPED.items():
        assert theirs == SEEN_CAPPED[demo_db.backend], other


# ---------------------------------------------------------------------------------------------- HTTP


def test_etag_304_cache_control_and_gzip(http):
    url = tile_url("buildings", "WebMercatorQuad", tile_of("WebMercatorQuad", "16", *CENTRE))
    plain = http.get(url, headers={"Accept-Encoding": "identity"})
    assert plain.status_code == 200 and "content-encoding" not in plain.headers
    etag = plain.headers["etag"]
    assert etag.startswith('W/"') and plain.headers["cache-control"].startswith("public, max-age=")
    again = http.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = http.get(tile_url("buildings", "WebMercatorQuad", tile_of("WebMercatorQuad", "17", *CENTRE)))
    assert other.headers["etag"] != etag
    assert http.get(url, headers={"If-None-Match": other.headers["etag"]}).status_code == 200
    # gzip only when asked for (a ≥ 1 KB tile), and the same tile once decompressed
    assert len(plain.content) > 1024
    with httpx_raw(http, url, {"Accept-Encoding": "gzip"}) as (headers, body):
        assert headers["content-encoding"] == "gzip" and "Accept-Encoding" in headers["vary"]
        assert gzip.decompress(body) == plain.content


def test_uncached_tiles_are_sent_as_built_or_compressed_as_asked(demo_db, tmp_path):
    """With the tile cache off (as the uncached benchmark runs), a tile just built goes to a client without
    gzip as the database wrote it and compressed to one with gzip: the same tile, Vary either way, no file."""
    cache = tmp_path / "cache"
    srv = start_server(demo_db, {"CIM_TILE_CACHE": "false", "CIM_TILE_CACHE_DIR": str(cache)},
                       log_name="server-no-tile-cache.log")
    try:
        with httpx.Client(base_url=srv.url, headers=AUTH_HEADERS, timeout=30) as client:
            url = tile_url("buildings", "WebMercatorQuad", tile_of("WebMercatorQuad", "16", *CENTRE))
            plain = client.get(url, headers={"Accept-Encoding": "identity"})
            assert plain.status_code == 200 and "content-encoding" not in plain.headers
            assert "Accept-Encoding" in plain.headers["vary"] and len(plain.content) > 1024
            assert mapbox_vector_tile.decode(plain.content)["buildings"]["features"]
            with httpx_raw(client, url, {"Accept-Encoding": "gzip"}) as (headers, body):
                assert headers["content-encoding"] == "gzip" and "Accept-Encoding" in headers["vary"]
                assert gzip.decompress(body) == plain.content and headers["etag"] == plain.headers["etag"]
            combined = client.get(f"/tiles/WebMercatorQuad/{url.split('/WebMercatorQuad/')[1]}",
                                  headers={"Accept-Encoding": "identity"})
            assert combined.status_code == 200 and "buildings" in mapbox_vector_tile.decode(combined.content)
            # PostGIS reads the data versions with the tile (one statement): a write shows in the next ETag
            engine = demo_db.engine()
            try:
                with engine.begin() as conn:
                    bump(conn, tables_for(engine), ["buildings"])
            finally:
                engine.dispose()
            after = client.get(url, headers={"Accept-Encoding": "identity"})
            assert after.headers["etag"] != plain.headers["etag"] and after.content == plain.content
            assert client.get(url).headers["etag"] == after.headers["etag"]
            assert client.get(url, headers={"If-None-Match": after.headers["etag"]}).status_code == 304
            assert client.get(url, headers={"If-None-Match": plain.headers["etag"]}).status_code == 200
            # a building written beyond the city's extent: its tile, outside the limits the worker saw
            # last, is served once the data has it (the limits are read again, not a 404 on old news)
            far = (123.95, 41.45)
            far_url = tile_url("buildings", "WebMercatorQuad", tile_of("WebMercatorQuad", "16", *far))
            assert client.get(far_url).status_code == 404
            x, y = Transformer.from_crs(4490, 4550, always_xy=True).transform(*far)
            engine = demo_db.engine()
            try:
                with engine.begin() as conn:
                    conn.execute(text(
                        "INSERT INTO city_object (uid, object_class, layer, cim_level, geom, valid_from, dataset_id) "
                        "SELECT 'far-away', 'Building', 'buildings', 2, ST_GeomFromText(:wkt, 4550), valid_from, "
                        "dataset_id FROM city_object WHERE layer = 'buildings' LIMIT 1"),
                        {"wkt": shapely.box(x - 10, y - 10, x + 10, y + 10).wkt})
                    bump(conn, tables_for(engine), ["buildings"])
                found = client.get(far_url, headers={"Accept-Encoding": "identity"})
                assert found.status_code == 200
                ids = [f["properties"]["id"] for f in mapbox_vector_tile.decode(found.content)["buildings"]["features"]]
                assert ids == ["far-away"]
            finally:
                with engine.begin() as conn:
                    conn.execute(text("DELETE FROM city_object WHERE uid = 'far-away'"))
                    bump(conn, tables_for(engine), ["buildings"])
                engine.dispose()
            assert client.get(far_url).status_code == 404
    finally:
        stop_server(srv)
    assert not cache.exists() or not any(p.is_file() for p in cache.rglob("*"))


class httpx_raw:  # noqa: N801  a context manager returning undecoded bytes
    def __init__(self, client, url, headers):
        self.client, self.url, self.headers = client, url, headers

    def __enter__(self):
        self.response = self.client.send(self.client.build_request("GET", self.url, headers=self.headers),
                                         stream=True)
        body = b"".join(self.response.iter_raw())
        return self.response.headers, body

    def __exit__(self, *exc):
        self.response.close()


def test_empty_tile_is_204_with_validators(http, engine):
    doc = http.get("/collections/buildings/tiles/WebMercatorQuad").json()
    lim = next(x for x in doc["tileMatrixSetLimits"] if x["tileMatrix"] == "18")
    edges = [(r, c) for r in (lim["minTileRow"], lim["maxTileRow"]) for c in range(lim["minTileCol"], lim["maxTileCol"] + 1)]
    empty = None
    for row, col in edges:
        r = http.get(f"/collections/buildings/tiles/WebMercatorQuad/18/{row}/{col}")
        assert r.status_code in (200, 204)
        if r.status_code == 204:
            empty = (row, col, r)
            break
    assert empty is not None, "no empty tile on the edges of zoom 18"
    row, col, r = empty
    assert r.content == b"" and r.headers["etag"]
    box = bounds("WebMercatorQuad", morecantile.Tile(col, row, 18))
    assert intersecting(engine, "buildings", 3857, box) == set()  # the database agrees it is empty
    again = http.get(f"/collections/buildings/tiles/WebMercatorQuad/18/{row}/{col}",
                     headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304


@pytest.mark.parametrize("tms_id", list(SETS))
def test_tile_frames_end_where_stored_data_can_be(tms_id):
    """A tile's frame is clipped to the storage CRS's area of use (EPSG:4550 ends at 124.5°E); beyond it the
    tile is known empty without a query. The storage-CRS polygon only SpatiaLite filters with is made when
    first asked for (it cost a third of a tile's Python)."""
    from cim.crs.registry import default_registry

    _, _, east, _ = default_registry().epsg(4550).area
    ts = grid.tile_set(tms_id)
    across = tile_of(tms_id, "12", east - 1e-4, 41.3)
    frame = grid.tile_frame(ts, "12", across.y, across.x, 4550, 0.01)
    assert "area" not in frame.__dict__
    assert frame.lonlat is not None and frame.lonlat[0] < east and frame.lonlat[2] == east
    lon = Transformer.from_crs(4550, 4326, always_xy=True).transform(*shapely.get_coordinates(frame.area).T)[0]
    assert lon.max() == pytest.approx(east, abs=1e-6) and lon.min() < east
    # one pixel in metres, about the tile's ground width / 256 (the cell side MVT thresholds use)
    left, bottom, right, top = bounds(tms_id, across)
    xs, _ = Transformer.from_crs(ts.srid, 4550, always_xy=True).transform([left, right], [(bottom + top) / 2] * 2)
    assert frame.pixel[0] == pytest.approx((xs[1] - xs[0]) / grid.PIXELS, rel=0.02)
    beyond = tile_of(tms_id, "12", east + 0.5, 41.3)
    frame = grid.tile_frame(ts, "12", beyond.y, beyond.x, 4550, 0.01)
    assert frame.lonlat is None and frame.area.is_empty


@pytest.mark.parametrize("path, status", [
    ("/collections/nope/tiles/WebMercatorQuad/16/24498/55299", 404),  # unknown collection
    ("/collections/buildings/tiles/NoSuchQuad/16/24498/55299", 404),  # unknown tile matrix set
    ("/collections/buildings/tiles/BenxiGK123Quad/10/0/0", 404),  # a set without vector tiles
    ("/collections/buildings/tiles/WebMercatorQuad/25/0/0", 404),  # no such tile matrix
    ("/collections/buildings/tiles/WebMercatorQuad/16/65536/0", 404),  # row beyond the matrix
    ("/collections/buildings/tiles/WebMercatorQuad/16/0/65536", 404),  # column beyond the matrix
    ("/collections/buildings/tiles/WebMercatorQuad/16/0/0", 404),  # outside the limits (no data there)
    ("/collections/buildings/tiles/WebMercatorQuad/5/12/26", 404),  # below the layer's zoom range
    ("/collections/buildings/tiles/CGCS2000TiandituQuad/0/0/0", 404),  # Tianditu starts at level 1
    ("/collections/buildings/tiles/WebMercatorQuad/16/x/55299", 400),
    ("/collections/buildings/tiles/WebMercatorQuad/16/-1/55299", 400),
    ("/collections/buildings/tiles/WebMercatorQuad/1.5/0/0", 400),
    ("/collections/buildings/tiles/WebMercatorQuad/16/24498/55299?f=png", 400),
    ("/collections/buildings/tiles/WebMercatorQuad/16/24498/55299?bbox=1,2,3,4", 400),
    ("/collections/buildings/tiles/WebMercatorQuad?f=xml", 400),
    ("/collections/nope/tiles", 404),
    ("/collections/nope/tiles/WebMercatorQuad", 404),
    ("/tileMatrixSets/NoSuchQuad", 404),
    ("/TileMatrixSets/NoSuchQuad", 404),
])
def test_errors_are_ogc_exceptions(http, path, status):
    r = http.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert_valid(schema_validator(OPENAPI / "schemas/common-core/exception.yaml"), body)
    assert body["code"] == ("NotFound" if status == 404 else "InvalidParameterValue")


# ---------------------------------------------------------------------------------------------- documents


def test_tilesets_list_and_tilesets_validate_and_lead_to_tiles(http):
    listing = http.get("/collections/buildings/tiles").json()
    assert_valid(schema_validator(OPENAPI / "responses/tiles-core/rTileSetsList.yaml",
                                  ("content", "application/json", "schema")), listing)
    assert {t["links"][0]["href"].rsplit("/", 1)[1] for t in listing["tilesets"]} == set(SETS)
    tileset_schema = schema_validator(TMS_SCHEMAS / "tileSet.yaml")
    for tms_id, (matrix, _) in SETS.items():
        doc = http.get(f"/collections/buildings/tiles/{tms_id}").json()
        assert_valid(tileset_schema, doc)
        links = {link["rel"]: link for link in doc["links"]}
        assert links["http://www.opengis.net/def/rel/ogc/1.0/tiling-scheme"]["href"].endswith(f"/tileMatrixSets/{tms_id}")
        item = links["item"]
        assert item["type"] == MVT and item["templated"] is True
        # the limits hold the centre's tile and only the layer's zoom range; the template leads to it
        tile = tile_of(tms_id, matrix, *CENTRE)
        lim = next(x for x in doc["tileMatrixSetLimits"] if x["tileMatrix"] == matrix)
        assert lim["minTileRow"] <= tile.y <= lim["maxTileRow"] and lim["minTileCol"] <= tile.x <= lim["maxTileCol"]
        zooms = {zoom_of(tms_id, x["tileMatrix"]) for x in doc["tileMatrixSetLimits"]}
        assert min(zooms) == rules("buildings").min_zoom and max(zooms) == rules("buildings").max_zoom
        href = urlparse(item["href"]).path.format(tileMatrix=matrix, tileRow=tile.y, tileCol=tile.x)
        assert http.get(href).status_code == 200
        below = http.get(urlparse(item["href"]).path.format(tileMatrix=matrix, tileRow=lim["maxTileRow"] + 1,
                                                           tileCol=tile.x))
        assert below.status_code == 404
        assert doc["layers"][0]["id"] == "buildings"
        assert http.get(f"/collections/buildings/tiles/{tms_id}/metadata").json() == doc  # pygeoapi's path
        assert {"id", "usage", "floors"} <= set(doc["layers"][0]["propertiesSchema"]["properties"])


def test_tilejson(http):
    doc = http.get("/collections/pipelines/tiles/WebMercatorQuad", params={"f": "tilejson"}).json()
    assert doc["tilejson"] == "3.0.0" and doc["vector_layers"][0]["id"] == "pipelines"
    assert doc["minzoom"] == rules("pipelines").min_zoom and doc["maxzoom"] == rules("pipelines").max_zoom
    w, s, e, n = doc["bounds"]
    assert w < CENTRE[0] < e and s < CENTRE[1] < n
    assert {"pipe_kind", "diameter_mm"} <= set(doc["vector_layers"][0]["fields"])
    tile = tile_of("WebMercatorQuad", "16", *CENTRE)
    url = urlparse(doc["tiles"][0]).path.format(z=tile.z, x=tile.x, y=tile.y)
    assert decode(http.get(url).content, "pipelines")


def test_tile_matrix_sets_documents_validate(http):
    listing = http.get("/tileMatrixSets").json()
    assert_valid(schema_validator(OPENAPI / "responses/tiles-core/rTileMatrixSetsList.yaml",
                                  ("content", "application/json", "schema")), listing)
    ids = {t["id"] for t in listing["tileMatrixSets"]}
    assert set(SETS) <= ids and "BenxiGK123Quad" in ids
    tms_schema = schema_validator(TMS_SCHEMAS / "tileMatrixSet.yaml")
    for tms_id in ids:
        doc = http.get(f"/tileMatrixSets/{tms_id}").json()
        assert_valid(tms_schema, doc)
        assert doc["id"] == tms_id
    tianditu = http.get("/TileMatrixSets/CGCS2000TiandituQuad").json()  # pygeoapi's spelling, ours answers
    assert tianditu["crs"].endswith("/4490") and tianditu["orderedAxes"] == ["Lat", "Lon"]
    assert http.get("/tileMatrixSets", params={"f": "html"}).headers["content-type"].startswith("text/html")


def test_conformance_and_collection_links(http):
    conformance = set(http.get("/conformance", params={"f": "json"}).json()["conformsTo"])
    assert TILES_CONFORMANCE <= conformance
    for layer in ("buildings", "pipelines", "terrain"):
        links = http.get(f"/collections/{layer}", params={"f": "json"}).json()["links"]
        tiles = [x for x in links if x["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"]
        assert tiles and urlparse(tiles[0]["href"]).path == f"/collections/{layer}/tiles"
    landing = http.get("/", params={"f": "json"}).json()["links"]
    schemes = [x for x in landing if x["rel"] == "http://www.opengis.net/def/rel/ogc/1.0/tiling-schemes"]
    assert schemes and all(http.get(urlparse(x["href"]).path + "?" + urlparse(x["href"]).query).status_code == 200
                           for x in schemes)


def test_openapi_documents_the_tile_routes(http):
    paths = http.get("/openapi", params={"f": "json"}).json()["paths"]
    tile = paths["/collections/buildings/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"]["get"]
    assert {p["name"] for p in tile["parameters"]} == {"tileMatrixSetId", "tileMatrix", "tileRow", "tileCol"}
    assert {"200", "204", "400", "404"} <= set(tile["responses"])
    assert MVT in tile["responses"]["200"]["content"]
    assert "/tileMatrixSets/{tileMatrixSetId}" in paths and "/collections/terrain/tiles/{tileMatrixSetId}" in paths
    combined = paths["/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"]["get"]
    assert "collections" in {p["name"] for p in combined["parameters"]} and "/tiles" in paths


# ---------------------------------------------------------------------------------------------- GDAL


def test_gdal_reads_a_tile_in_place(http, tmp_path, central_buildings):
    """GDAL's MVT driver georeferences a WebMercatorQuad tile from its z/x/y: a building lands where it is."""
    if shutil.which("ogr2ogr") is None:
        pytest.fail("ogr2ogr is not installed (scripts/install.sh installs gdal-bin with the test extras)")
    uid, lon, lat = central_buildings[0]
    tile = tile_of("WebMercatorQuad", "16", lon, lat)
    path = tmp_path / "tile.pbf"
    path.write_bytes(http.get(tile_url("buildings", "WebMercatorQuad", tile)).content)
    out = tmp_path / "tile.geojson"
    proc = subprocess.run(["ogr2ogr", "-f", "GeoJSON", str(out), str(path), "-t_srs", "EPSG:4326",
                           "-oo", f"X={tile.x}", "-oo", f"Y={tile.y}", "-oo", f"Z={tile.z}"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    features = {f["properties"]["id"]: f for f in json.loads(out.read_text())["features"]}
    assert uid in features
    outline = shapely.geometry.shape(features[uid]["geometry"])
    assert outline.buffer(2e-5).contains(shapely.Point(lon, lat))  # within about 2 m


# ---------------------------------------------------------------------------------------------- combined


def tiled_collections(http) -> list[str]:
    """The collections with vector tiles, in the server's order (city model and operations layers)."""
    rel = "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector"
    return [c["id"] for c in http.get("/collections", params={"f": "json"}).json()["collections"]
            if any(link["rel"] == rel for link in c["links"])]


def layers_of(content: bytes) -> dict[str, dict[str, dict]]:
    """A multi-layer tile: layer name → {public id: attributes}."""
    doc = mapbox_vector_tile.decode(content)
    return {name: {f["properties"]["id"]: f["properties"] for f in layer["features"]} for name, layer in doc.items()}


@pytest.mark.parametrize("tms_id", list(SETS))
def test_combined_tile_holds_each_collections_tile(http, engine, tms_id):
    """One MVT layer per collection in its zoom range, each the same features and attributes as the
    collection's own tile (itself checked against the database above); buildings checked here too."""
    matrix, srid = SETS[tms_id]
    tile = tile_of(tms_id, matrix, *CENTRE)
    r = http.get(f"/tiles/{tms_id}/{tile.z}/{tile.y}/{tile.x}")
    assert r.status_code == 200 and r.headers["content-type"] == MVT
    combined = layers_of(r.content)
    zoom = zoom_of(tms_id, matrix)
    expected_layers = {c for c in tiled_collections(http) if rules(c).min_zoom <= zoom <= rules(c).max_zoom}
    own = {}
    for layer in expected_layers:
        one = http.get(tile_url(layer, tms_id, tile))
        if one.status_code == 200:
            own[layer] = {uid: f["properties"] for uid, f in decode(one.content, layer).items()}
    assert {"buildings", "pipelines", "roads"} <= set(own)
    assert set(combined) == set(own)
    for layer, features in own.items():
        assert combined[layer] == features, layer
    box = bounds(tms_id, tile)
    pixel = (box[2] - box[0]) / 4096
    inside = intersecting(engine, "buildings", srid, grow(box, -pixel))
    assert inside and inside <= set(combined["buildings"])
    # a selection: only those layers, in the order asked for, each the same
    r = http.get(f"/tiles/{tms_id}/{tile.z}/{tile.y}/{tile.x}", params={"collections": "roads,buildings"})
    assert list(mapbox_vector_tile.decode(r.content)) == ["roads", "buildings"]
    assert layers_of(r.content) == {k: combined[k] for k in ("roads", "buildings")}


def test_combined_tile_keeps_each_layer_to_its_zoom_range_and_caches(http):
    tile = tile_of("WebMercatorQuad", "13", *CENTRE)  # pipe nodes and components start at 14 and 16
    url = f"/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}"
    layers = set(layers_of(http.get(url).content))
    assert {"buildings", "roads", "terrain"} <= layers and not layers & {"pipe-nodes", "building-components"}
    # only layers out of their zoom range: no such tile
    assert http.get(url, params={"collections": "pipe-nodes"}).status_code == 404
    first = http.get(url, params={"collections": "buildings"})
    again = http.get(url, params={"collections": "buildings"}, headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304
    other = http.get(url, params={"collections": "buildings,roads"})
    assert other.headers["etag"] != first.headers["etag"]


def test_combined_tilesets_validate_and_lead_to_tiles(http):
    listing = http.get("/tiles").json()
    assert_valid(schema_validator(OPENAPI / "responses/tiles-core/rTileSetsList.yaml",
                                  ("content", "application/json", "schema")), listing)
    assert {t["links"][0]["href"].rsplit("/", 1)[1] for t in listing["tilesets"]} == set(SETS)
    tileset_schema = schema_validator(TMS_SCHEMAS / "tileSet.yaml")
    for tms_id, (matrix, _) in SETS.items():
        doc = http.get(f"/tiles/{tms_id}").json()
        assert_valid(tileset_schema, doc)
        assert [x["id"] for x in doc["layers"]] == tiled_collections(http)
        assert {"buildings", "building-components", "pipelines", "pipe-nodes", "roads", "bridges",
                "terrain"} <= {x["id"] for x in doc["layers"]}
        # the limits cover every collection's, matrix by matrix
        union = {x["tileMatrix"]: x for x in doc["tileMatrixSetLimits"]}
        for layer in ("buildings", "terrain", "pipe-nodes"):
            for lim in http.get(f"/collections/{layer}/tiles/{tms_id}").json()["tileMatrixSetLimits"]:
                u = union[lim["tileMatrix"]]
                assert u["minTileRow"] <= lim["minTileRow"] and lim["maxTileRow"] <= u["maxTileRow"]
                assert u["minTileCol"] <= lim["minTileCol"] and lim["maxTileCol"] <= u["maxTileCol"]
        terrain = next(x for x in doc["layers"] if x["id"] == "terrain")
        assert zoom_of(tms_id, terrain["minTileMatrix"]) == rules("terrain").min_zoom
        item = next(x for x in doc["links"] if x["rel"] == "item")
        tile = tile_of(tms_id, matrix, *CENTRE)
        assert http.get(urlparse(item["href"]).path.format(tileMatrix=matrix, tileRow=tile.y,
                                                           tileCol=tile.x)).status_code == 200
        selected = http.get(f"/tiles/{tms_id}", params={"collections": "pipelines,pipe-nodes"}).json()
        assert_valid(tileset_schema, selected)
        assert [x["id"] for x in selected["layers"]] == ["pipelines", "pipe-nodes"]
        assert next(x for x in selected["links"] if x["rel"] == "item")["href"].endswith(
            "?collections=pipelines,pipe-nodes")
    assert http.get("/tiles/WebMercatorQuad/metadata").json() == http.get("/tiles/WebMercatorQuad").json()


def test_combined_tilejson(http):
    doc = http.get("/tiles/CGCS2000TiandituQuad", params={"f": "tilejson"}).json()
    assert doc["tilejson"] == "3.0.0" and doc["crs"].endswith("/4490")
    by_id = {v["id"]: v for v in doc["vector_layers"]}
    assert list(by_id) == tiled_collections(http)
    assert by_id["pipe-nodes"]["minzoom"] == 14 and "pipe_kind" in by_id["pipe-nodes"]["fields"]
    assert doc["minzoom"] == min(v["minzoom"] for v in by_id.values())
    w, s, e, n = doc["bounds"]
    assert w < CENTRE[0] < e and s < CENTRE[1] < n
    tile = tile_of("CGCS2000TiandituQuad", "16", *CENTRE)
    url = urlparse(doc["tiles"][0]).path.format(z=tile.z, x=tile.x, y=tile.y)
    assert {"buildings", "pipelines"} <= set(layers_of(http.get(url).content))
    selected = http.get("/tiles/WebMercatorQuad", params={"f": "tilejson", "collections": "roads"}).json()
    assert [v["id"] for v in selected["vector_layers"]] == ["roads"]
    assert selected["tiles"][0].endswith("{z}/{y}/{x}?collections=roads")


@pytest.mark.parametrize("path, status", [
    ("/tiles/NoSuchQuad/16/24498/55299", 404),  # unknown tile matrix set
    ("/tiles/NoSuchQuad", 404),
    ("/tiles/WebMercatorQuad/25/0/0", 404),  # beyond the set's matrices
    ("/tiles/WebMercatorQuad/19/0/0", 404),  # beyond every layer's zoom range
    ("/tiles/WebMercatorQuad/16/0/0", 404),  # outside the limits
    ("/tiles/WebMercatorQuad/16/x/55299", 400),
    ("/tiles/WebMercatorQuad/1.5/0/0", 400),
    ("/tiles/WebMercatorQuad/16/24498/-3", 400),
    ("/tiles/WebMercatorQuad/16/24498/55299?collections=buildings,nope", 400),  # unknown collection
    ("/tiles/WebMercatorQuad/16/24498/55299?collections=", 400),
    ("/tiles/WebMercatorQuad/16/24498/55299?collections=buildings,,roads", 400),
    ("/tiles/WebMercatorQuad?collections=nope", 400),
    ("/tiles/WebMercatorQuad?f=tilejson&collections=nope", 400),
    ("/tiles/WebMercatorQuad/16/24498/55299?bbox=1,2,3,4", 400),
    ("/tiles?collections=buildings", 400),
])
def test_combined_errors_are_ogc_exceptions(http, path, status):
    r = http.get(path)
    assert r.status_code == status, r.text
    body = r.json()
    assert_valid(schema_validator(OPENAPI / "schemas/common-core/exception.yaml"), body)
    assert body["code"] == ("NotFound" if status == 404 else "InvalidParameterValue")
