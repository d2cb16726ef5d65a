"""``city_object.geom_lonlat`` (schema v8): the footprint in EPSG:4490 that items and tiles read, equal to the
transform of the stored footprint after every kind of write, on both backends, and filled by the upgrade."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import shapely
from geoalchemy2 import WKBElement
from pyproj import Transformer
from sqlalchemy import func, select, text

from cim.db import schema
from cim.db.engine import open_engine
from cim.db.models import cim_tables
from cim.ingest.load import LoadOptions, load_files
from cim.ops import cases

from .conftest import BACKENDS, older_database
from .test_ingest import ANCHOR, MULTI_LOD

TO_4490 = Transformer.from_crs(4550, 4490, always_xy=True)


def mismatches(engine) -> tuple[int, list[str]]:
    """(rows with a footprint, uids whose copy is not the footprint transformed by pyproj to 1e-9°)."""
    t = schema.tables_for(engine)
    co = t.city_object
    bad: list[str] = []
    with engine.connect() as conn:
        rows = conn.execute(select(co.c.uid, func.ST_AsBinary(co.c.geom), func.ST_AsBinary(co.c.geom_lonlat),
                                   func.ST_SRID(co.c.geom_lonlat)).where(co.c.geom.is_not(None))).all()
    for uid, wkb, wkb_ll, srid in rows:
        expected = shapely.transform(shapely.from_wkb(bytes(wkb)), lambda c: np.column_stack(TO_4490.transform(c[:, 0], c[:, 1])))
        if wkb_ll is None or srid != 4490 or not shapely.from_wkb(bytes(wkb_ll)).equals_exact(expected, 1e-9):
            bad.append(uid)
    return len(rows), bad


def test_ingest_case_writes_and_updates_keep_the_copy(db):
    load_files(db, [MULTI_LOD], LoadOptions(crs="EPSG:28992", anchor=ANCHOR))  # COPY on PostGIS
    n, bad = mismatches(db)
    assert n > 0 and bad == []

    t = schema.tables_for(db)
    co = t.city_object
    doc = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.7712, 41.3003]},
           "properties": {"case_type": "BJ0101", "case_status": "reported", "reported_at": "2026-12-05T08:30:00+08:00"}}
    bbox = (123.6, 41.2, 123.9, 41.4)
    with db.begin() as conn:
        uid, rev = cases.create(conn, t, cases.parse_case(doc, None, 4550, bbox))
    moved = {**doc, "geometry": {"type": "Point", "coordinates": [123.7801, 41.3102]}}
    with db.begin() as conn:
        cases.replace(conn, t, uid, cases.parse_case(moved, None, 4550, bbox, uid=uid), rev)
    with db.connect() as conn:
        lon, lat = conn.execute(select(func.ST_X(co.c.geom_lonlat), func.ST_Y(co.c.geom_lonlat))
                                .where(co.c.uid == uid)).one()
    assert abs(lon - 123.7801) < 1e-9 and abs(lat - 41.3102) < 1e-9  # the replaced location, not the first

    # any other update of the footprint, e.g. plain SQL moving a layer by 10 m
    with db.begin() as conn:
        conn.execute(text("UPDATE city_object SET geom = ST_Translate(geom, 10, 0, 0) WHERE layer = 'buildings'"))
    n, bad = mismatches(db)
    assert n > 1 and bad == []
    with db.begin() as conn:  # a footprint removed takes its copy with it
        conn.execute(co.update().where(co.c.uid == uid).values(geom=None))
        assert conn.execute(select(co.c.geom_lonlat).where(co.c.uid == uid)).scalar() is None


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("column_exists", [True, False])
def test_upgrade_to_v8_fills_the_copy(new_database, backend, column_exists):
    engine = open_engine(new_database(backend), create=True)
    try:
        # a database made by a version before 8 may have no such column
        older_database(engine, 7, () if column_exists else ("geom_lonlat",))
        co = cim_tables(4550).city_object
        assert schema.upgrade(engine) == (7, schema.HEAD)
        n, bad = mismatches(engine)
        assert n == 1 and bad == []
        with engine.begin() as conn:  # and the triggers are in place after the upgrade
            conn.execute(co.insert().values(
                uid="b2", object_class="Building", layer="buildings", cim_level=2, valid_from=datetime.now(UTC),
                dataset_id=1, geom=WKBElement(shapely.to_wkb(shapely.box(564600, 4574200, 564630, 4574220),
                                                             include_srid=False), srid=4550)))
        n, bad = mismatches(engine)
        assert n == 2 and bad == []
    finally:
        engine.dispose()


def _plan(conn, stmt, params) -> str:
    from sqlalchemy.dialects import postgresql

    compiled = stmt.compile(dialect=postgresql.dialect())
    state = compiled.construct_expanded_state(params)  # what SQLAlchemy sends: literal_execute values written in
    # the layer is written into the statement (a generic plan of a prepared statement can use its index)
    assert "city_object.layer = 'buildings'" in state.statement
    cur = conn.connection.driver_connection.cursor()
    cur.execute("EXPLAIN " + state.statement, state.parameters)
    return "\n".join(r[0] for r in cur.fetchall())


def test_lonlat_boxes_select_through_the_v9_index_and_agree_with_the_storage_area(demo_db):
    """PostGIS (schema v9): a CRS84 bbox page and a vector tile select candidates from the longitude/latitude
    copy through the layer's partial index (also in a generic plan: the layer is a literal), with the same
    answer as the storage-CRS area filter."""
    if demo_db.backend != "postgis":
        pytest.skip("the index is PostGIS's; SpatiaLite filters with its R*Tree on geom")
    from cim.crs.registry import CRS84_URI, default_registry
    from cim.crs.transform import query_area
    from cim.db.queries import FeatureQuery, page_statement
    from cim.settings import get_settings
    from cim.tiles.grid import tile_set
    from cim.tiles.mvt import _postgis_statement, _postgis_values, layer_rules, tile_query

    engine = demo_db.engine()
    try:
        t = schema.tables_for(engine)
        reg = default_registry()
        box = (123.762, 41.292, 123.778, 41.308)  # ~1.3 km around the demo city's centre
        area = query_area(box, reg.resolve(CRS84_URI), reg.epsg(4550))
        found = {}
        with engine.connect() as conn:
            conn.execute(text("SET enable_seqscan = off"))
            for kind, q in (("lonlat", FeatureQuery("buildings", area=area, lonlat_box=box, limit=100_000)),
                            ("area", FeatureQuery("buildings", area=area, limit=100_000))):
                stmt, params = page_statement(t, "postgresql", q)
                found[kind] = {r.uid for r in conn.execute(stmt, params)}
                plan = _plan(conn, stmt, params)
                assert ("ix_city_object_lonlat_buildings" in plan) == (kind == "lonlat"), plan
            assert found["lonlat"] == found["area"] and len(found["area"]) > 20
            settings = get_settings().tiles
            rules = layer_rules(settings, ["buildings"])["buildings"]
            ts = tile_set("WebMercatorQuad")
            tile = ts.tms.tile(123.77, 41.30, 15)
            q = tile_query("buildings", "buildings", ts, "15", tile.y, tile.x, 4550, rules, settings)
            plan = _plan(conn, _postgis_statement(t, "buildings", "buildings", 3857, q.extent, q.buffer, q.attributes),
                         _postgis_values(t, q))
            assert "ix_city_object_lonlat_buildings" in plan, plan
    finally:
        engine.dispose()
