"""What vector tiles read besides the lon/lat copy (schema v10): the Web Mercator copy of each footprint and
its clearance, kept by the footprint trigger; and footprints snapped to the tile grid in SQL
(``cim.tiles.mvt.SNAP_UNITS``).

PostGIS writes a footprint whose minimum clearance is a few grid cells wide by plain arithmetic (scale, snap,
orient) instead of ST_AsMVTGeom: the tiles must decode to the same geometries as ST_AsMVTGeom's, and a
footprint too narrow for the grid must still come out valid (both backends). WebMercatorQuad tiles read the
stored copy: the same bytes as projecting every footprint."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import mapbox_vector_tile
import pytest
import shapely
from geoalchemy2 import WKBElement
from pyproj import Transformer
from sqlalchemy import select, text

from cim.db import schema
from cim.db.engine import open_engine
from cim.db.models import cim_tables
from cim.settings import get_settings
from cim.tiles import grid, mvt

from .conftest import BACKENDS, older_database
from .test_tiles import CENTRE, tile_of

TO_4550 = Transformer.from_crs(4326, 4550, always_xy=True)
HERE = TO_4550.transform(*CENTRE)


def footprint(wkt: str) -> WKBElement:
    return WKBElement(shapely.to_wkb(shapely.from_wkt(wkt), include_srid=False), srid=4550)


def add(conn, t, uid: str, geom, layer: str = "buildings") -> None:
    dataset = conn.execute(select(t.dataset.c.id).limit(1)).scalar()
    if dataset is None:
        dataset = conn.execute(t.dataset.insert().values(name="snap", created_at=datetime.now(UTC))
                               .returning(t.dataset.c.id)).scalar()
    conn.execute(t.city_object.insert().values(uid=uid, object_class="Building", layer=layer, cim_level=2,
                                               valid_from=datetime.now(UTC), dataset_id=dataset, geom=geom))


def clearances(conn, t) -> dict[str, float | None]:
    co = t.city_object
    return {uid: (None if c is None else round(c, 6)) for uid, c in conn.execute(select(co.c.uid, co.c.clearance))}


def test_tile_columns_follow_every_write_of_the_footprint(db):
    """PostGIS: the footprint trigger sets the Web Mercator copy of every footprint and the clearance of
    valid (multi)polygons (NULL for anything else), whoever writes; SpatiaLite has the columns and leaves
    them NULL (its tiles are built in Python; it has no minimum clearance)."""
    t = schema.tables_for(db)
    co = t.city_object
    x, y = HERE
    with db.begin() as conn:
        add(conn, t, "box", footprint(f"POLYGON(({x} {y},{x + 20} {y},{x + 20} {y + 15},{x} {y + 15},{x} {y}))"))
        add(conn, t, "two", footprint(f"MULTIPOLYGON((({x} {y},{x + 5} {y},{x + 5} {y + 5},{x} {y + 5},{x} {y})),"
                                    f"(({x + 7} {y},{x + 12} {y},{x + 12} {y + 5},{x + 7} {y + 5},{x + 7} {y})))"))
        add(conn, t, "bowtie", footprint(f"POLYGON(({x} {y},{x + 10} {y + 10},{x + 10} {y},{x} {y + 10},{x} {y}))"))
        add(conn, t, "line", footprint(f"LINESTRING({x} {y},{x + 30} {y})"), layer="roads")
    with db.connect() as conn:
        got = clearances(conn, t)
    if db.dialect.name == "sqlite":
        assert got == {"box": None, "two": None, "bowtie": None, "line": None}
        with db.connect() as conn:
            assert conn.execute(select(co.c.geom_webmercator).where(co.c.geom_webmercator.is_not(None))).all() == []
        return
    assert got == {"box": 15.0, "two": 2.0, "bowtie": None, "line": None}
    assert webmercator_mismatches(db) == (4, [])
    with db.begin() as conn:  # the footprint changed by plain SQL, and derived columns written by hand
        conn.execute(text("UPDATE city_object SET geom = ST_Scale(geom, 2, 2) WHERE uid = 'box'"))
        conn.execute(co.update().where(co.c.uid == "two").values(clearance=1000.0))
        conn.execute(text("UPDATE city_object SET geom_webmercator = ST_Translate(geom_webmercator, 5, 5) "
                          "WHERE uid = 'line'"))
        conn.execute(co.update().where(co.c.uid == "bowtie").values(
            geom=footprint(f"POLYGON(({x} {y},{x + 10} {y},{x + 10} {y + 4},{x} {y + 4},{x} {y}))")))
    with db.connect() as conn:
        assert clearances(conn, t) == {"box": 30.0, "two": 2.0, "bowtie": 4.0, "line": None}
    assert webmercator_mismatches(db) == (4, [])


def webmercator_mismatches(engine) -> tuple[int, list[str]]:
    """(rows, uids whose Web Mercator copy is not the lon/lat copy projected by the database, exactly)."""
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT uid, ST_Equals(geom_webmercator, ST_Transform(geom_lonlat, 3857)) "
                                 "AND ST_AsBinary(geom_webmercator) = ST_AsBinary(ST_Transform(geom_lonlat, 3857)) "
                                 "FROM city_object WHERE geom IS NOT NULL")).all()
    return len(rows), sorted(uid for uid, same in rows if not same)


@pytest.mark.parametrize("backend", BACKENDS)
def test_upgrade_to_v10_fills_the_tile_columns(new_database, backend):
    engine = open_engine(new_database(backend), create=True)
    try:
        older_database(engine, 9, ("clearance", "geom_webmercator"))  # before 10: no such columns
        t = cim_tables(4550)
        assert schema.upgrade(engine) == (9, schema.HEAD)
        with engine.begin() as conn:  # and the trigger keeps it for the rows written after the upgrade
            add(conn, t, "b2", footprint("POLYGON((564600 4574200, 564630 4574200, 564630 4574220, 564600 4574220, "
                                       "564600 4574200))"))
        with engine.connect() as conn:
            got = clearances(conn, t)
        assert got == ({"b1": None, "b2": None} if backend == "spatialite" else {"b1": 15.0, "b2": 20.0})
        if backend == "postgis":
            assert webmercator_mismatches(engine) == (2, [])
    finally:
        engine.dispose()


def _tile(conn, t, tms_id: str, matrix: str, tile, layer: str = "buildings") -> bytes:
    st = get_settings().tiles
    q = mvt.tile_query(layer, layer, grid.tile_set(tms_id), matrix, tile.y, tile.x, 4550,
                       mvt.LayerRules.from_settings(layer, st), st)
    return mvt.render(conn, t, q)


def _geometries(data: bytes, layer: str = "buildings") -> dict[int, shapely.Geometry]:
    doc = mapbox_vector_tile.decode(data, default_options={"y_coord_down": True}) if data else {}
    return {f["id"]: shapely.geometry.shape(f["geometry"]) for f in doc.get(layer, {}).get("features", [])}


def test_snapped_footprints_are_what_st_asmvtgeom_writes(demo_db, monkeypatch):
    """PostGIS: tiles at z14-z17 of the three sets, around the centre (and a tile's width off it, so edges
    cross the tile): the same features, the same valid geometries with and without the snapping, and the
    snapping taken (the bytes differ: ST_AsMVTGeom's clipper starts rings elsewhere)."""
    if demo_db.backend != "postgis":
        pytest.skip("SpatiaLite's tiles are built in Python (cim.tiles.mvt.tile_space): nothing is snapped in SQL")
    engine = demo_db.engine()
    t = schema.tables_for(engine)
    features = differ = 0
    try:
        with engine.connect() as conn:
            for tms_id in ("WebMercatorQuad", "WorldCRS84Quad", "CGCS2000TiandituQuad"):
                for matrix in ("14", "15", "16", "17"):
                    for dx in (0, 1):
                        tile = tile_of(tms_id, matrix, *CENTRE)
                        tile = type(tile)(tile.x + dx, tile.y, tile.z)
                        monkeypatch.setattr(mvt, "SNAP_UNITS", 1.5)
                        snapped = _tile(conn, t, tms_id, matrix, tile)
                        monkeypatch.setattr(mvt, "SNAP_UNITS", math.inf)  # ST_AsMVTGeom for every footprint
                        reference = _tile(conn, t, tms_id, matrix, tile)
                        a, b = _geometries(snapped), _geometries(reference)
                        assert set(a) == set(b), (tms_id, matrix, dx)
                        for fid, g in a.items():
                            assert g.is_valid and g.equals(b[fid]), (tms_id, matrix, dx, fid, g.wkt, b[fid].wkt)
                        features += len(a)
                        differ += snapped != reference
    finally:
        engine.dispose()
    assert features > 500
    assert differ >= 12  # most of the 24 tiles: the snapping was taken


def test_webmercator_tiles_are_the_same_from_the_stored_copy(demo_db):
    """PostGIS: WebMercatorQuad tiles are read from the stored copy (moved by hand, the tiles move) and are
    byte for byte those projected per footprint (the copy removed). Its trigger held, in a transaction rolled
    back."""
    if demo_db.backend != "postgis":
        pytest.skip("SpatiaLite's tiles are built in Python from the footprint")
    engine = demo_db.engine()
    t = schema.tables_for(engine)
    tiles = [tile_of("WebMercatorQuad", m, *CENTRE) for m in ("14", "15", "16")]
    try:
        with engine.connect() as conn:
            stored = [_tile(conn, t, "WebMercatorQuad", str(tile.z), tile) for tile in tiles]
            conn.rollback()
            with conn.begin() as tx:
                conn.execute(text("ALTER TABLE city_object DISABLE TRIGGER city_object_geom_lonlat"))
                conn.execute(text("UPDATE city_object SET geom_webmercator = ST_Translate(geom_webmercator, 5, 0)"))
                moved = [_tile(conn, t, "WebMercatorQuad", str(tile.z), tile) for tile in tiles]
                conn.execute(text("UPDATE city_object SET geom_webmercator = NULL"))
                projected = [_tile(conn, t, "WebMercatorQuad", str(tile.z), tile) for tile in tiles]
                tx.rollback()
    finally:
        engine.dispose()
    assert all(stored) and stored == projected
    assert all(a != b for a, b in zip(moved, stored))


def test_a_footprint_too_narrow_for_the_grid_is_made_valid(demo_db, monkeypatch):
    """A valid footprint with a vertex closer to an edge than a z14 grid cell: snapped, they cross. Both
    backends write it valid; on PostGIS only because its clearance keeps it away from the plain snapping
    (with the snapping forced, the same tile holds an invalid polygon: this test would catch its loss)."""
    engine = demo_db.engine()
    t = schema.tables_for(engine)
    tile = tile_of("WebMercatorQuad", "14", *CENTRE)
    left, bottom, right, top = grid.tile_bounds(grid.tile_set("WebMercatorQuad"), "14", tile.y, tile.x)
    extent = mvt.tile_extent(get_settings().tiles, 14)
    to_4550 = Transformer.from_crs(3857, 4550, always_xy=True)

    def from_grid(u: float, v: float) -> tuple[float, float]:
        return to_4550.transform(left + u / extent * (right - left), top - v / extent * (top - bottom))

    # about 40 × 30 cells in the middle of the tile, a tooth whose tip comes within 0.3 cell of a slanting
    # edge: valid; snapped to the grid, the tip crosses that edge (a ring self-intersection)
    ring = [(1030, 1020), (1040, 995), (1050, 1005.52), (1070, 1005.52), (1070, 1024), (1047, 1024),
            (1045.59, 1001.29), (1043, 1024)]
    tooth = shapely.Polygon([from_grid(u, v) for u, v in ring])
    assert tooth.is_valid and not shapely.Polygon([(round(u), round(v)) for u, v in ring]).is_valid
    try:
        with engine.connect() as conn:
            with conn.begin() as tx:
                add(conn, t, "tooth", WKBElement(shapely.to_wkb(tooth, include_srid=False), srid=4550))
                fid = conn.execute(select(t.city_object.c.id).where(t.city_object.c.uid == "tooth")).scalar()
                written = _geometries(_tile(conn, t, "WebMercatorQuad", "14", tile))[fid]
                assert written.is_valid and written.area > 0, written.wkt
                if demo_db.backend == "postgis":
                    monkeypatch.setattr(mvt, "SNAP_UNITS", 0.0)
                    forced = _geometries(_tile(conn, t, "WebMercatorQuad", "14", tile))[fid]
                    assert not forced.is_valid, forced.wkt
                tx.rollback()
    finally:
        engine.dispose()


def test_clearance_threshold_is_in_grid_cells_of_the_longer_side():
    """Cells of longitude/latitude sets are not square: the threshold is measured on the longer side."""
    st = get_settings().tiles
    for tms_id, matrix in (("WebMercatorQuad", "15"), ("WorldCRS84Quad", "14"), ("CGCS2000TiandituQuad", "15")):
        tile = tile_of(tms_id, matrix, *CENTRE)
        q = mvt.tile_query("buildings", "buildings", grid.tile_set(tms_id), matrix, tile.y, tile.x, 4550,
                           mvt.LayerRules.from_settings("buildings", st), st)
        cell = max(q.frame.pixel) * grid.PIXELS / q.extent
        assert q.min_clearance == pytest.approx(mvt.SNAP_UNITS * cell)
    assert mvt.SNAP_UNITS > math.sqrt(2)  # a snapped vertex moves up to √2/2 cell: a vertex and an edge, √2
