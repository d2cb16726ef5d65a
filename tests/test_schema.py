"""The CIM schema: creation, versioned upgrade, all-or-nothing, the same on SpatiaLite and PostGIS."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import shapely
from geoalchemy2 import WKBElement
from sqlalchemy import inspect, select, text

from cim.db import schema
from cim.db.engine import CIMDatabaseError, open_engine
from cim.db.models import cim_tables

from .conftest import BACKENDS


@pytest.fixture(params=BACKENDS)
def empty(request, new_database):
    engine = open_engine(new_database(request.param), create=True)
    yield engine
    engine.dispose()


def _spatial_indexes(engine) -> set[tuple[str, str]]:
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            rows = conn.execute(text(
                "SELECT f_table_name, f_geometry_column FROM geometry_columns WHERE spatial_index_enabled = 1")).all()
        else:
            rows = conn.execute(text(
                "SELECT t.relname, a.attname FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid "
                "JOIN pg_class t ON t.oid = x.indrelid JOIN pg_am am ON am.oid = i.relam "
                "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = ANY(x.indkey) WHERE am.amname = 'gist'")).all()
    return {(r[0], r[1]) for r in rows}


def test_init_creates_current_schema_with_spatial_index(empty):
    assert schema.init(empty, 4550, 5737) == schema.HEAD
    names = set(inspect(empty).get_table_names())
    assert {"cim_meta", "dataset", "import_run", "city_object", "city_object_geometry", "raster_layer",
            "layer_version", "city_object_other_lod"} <= names
    assert "lod" in {c["name"] for c in inspect(empty).get_columns("city_object_geometry")}
    assert ("city_object", "geom") in _spatial_indexes(empty)
    if empty.dialect.name == "postgresql":  # one GiST index on (layer, footprint) for per-layer bbox queries
        with empty.connect() as conn:
            assert conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_city_object_layer_geom'")
                                ).scalar() == "CREATE INDEX ix_city_object_layer_geom ON public.city_object USING gist (layer, geom)"
            # and one per layer on the longitude/latitude copy, for CRS84 boxes and tiles (v9)
            assert conn.execute(text("SELECT indexdef FROM pg_indexes WHERE indexname = "
                                     "'ix_city_object_lonlat_building_components'")).scalar() == (
                "CREATE INDEX ix_city_object_lonlat_building_components ON public.city_object USING gist "
                "(geom_lonlat) WHERE ((layer)::text = 'building-components'::text)")
    assert schema.schema_version(empty) == schema.HEAD
    assert schema.storage_srid(empty) == 4550
    # idempotent
    assert schema.init(empty, 4550, 5737) == schema.HEAD


def test_init_refuses_other_storage_crs(empty):
    schema.init(empty, 4550, 5737)
    with pytest.raises(CIMDatabaseError, match="stores EPSG:4550.*EPSG:4490"):
        schema.init(empty, 4490, 5737)


def test_upgrade_from_version_1_keeps_data(empty):
    assert schema.init(empty, 4550, 5737, to=1) == 1
    assert "raster_layer" not in inspect(empty).get_table_names()
    with pytest.raises(CIMDatabaseError, match="cim db upgrade"):
        schema.tables_for(empty)
    t = cim_tables(4550)
    with empty.begin() as conn:
        conn.execute(t.dataset.insert().values(id=1, name="before-upgrade", created_at=datetime.now(UTC)))
        point = shapely.to_wkb(shapely.set_srid(shapely.Point(564489.714, 4574176.348), 4550), include_srid=True)
        conn.execute(t.city_object.insert().values(
            id=1, uid="X-1", object_class="Building", layer="buildings", cim_level=2, dataset_id=1,
            valid_from=datetime.now(UTC), geom=WKBElement(point, srid=4550, extended=True)))
    assert schema.upgrade(empty) == (1, schema.HEAD)
    assert "raster_layer" in inspect(empty).get_table_names()
    assert schema.upgrade(empty) == (schema.HEAD, schema.HEAD)
    with empty.connect() as conn:
        assert conn.execute(select(t.city_object.c.uid)).scalars().all() == ["X-1"]


def test_failed_init_leaves_nothing(empty, monkeypatch):
    def broken(conn, t):
        t.raster_layer.create(conn)
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setitem(schema.STEPS, 2, broken)
    with pytest.raises(RuntimeError, match="simulated"):
        schema.init(empty, 4550, 5737)
    names = set(inspect(empty).get_table_names())
    assert not names & {"cim_meta", "dataset", "city_object", "city_object_geometry", "raster_layer"}
    assert schema.schema_version(empty) == 0


def test_failed_upgrade_keeps_old_version(empty, monkeypatch):
    schema.init(empty, 4550, 5737, to=1)

    def broken(conn, t):
        t.raster_layer.create(conn)
        raise RuntimeError("simulated")

    monkeypatch.setitem(schema.STEPS, 2, broken)
    with pytest.raises(RuntimeError):
        schema.upgrade(empty)
    assert schema.schema_version(empty) == 1
    assert "raster_layer" not in inspect(empty).get_table_names()


def test_writes_bump_the_versions_of_the_layers_they_touch(empty):
    """Every ObjectWriter run gives the layers it wrote a new version (what ETags and caches key on);
    upgrading an old database starts each layer holding data at version 1 and records a database id."""
    from cim.db.versions import layer_version
    from cim.db.writer import ObjectWriter

    schema.init(empty, 4550, 5737, to=2)
    t = cim_tables(4550)
    now = datetime.now(UTC)

    def write(layer: str, uid: str) -> None:
        with empty.begin() as conn:
            ds = conn.execute(t.dataset.insert().values(name=uid, created_at=now)).inserted_primary_key[0]
            w = ObjectWriter(conn, t, ds, None)
            w.add({"uid": uid, "object_class": "Road" if layer == "roads" else "Building", "layer": layer,
                   "cim_level": 1, "geom": shapely.box(560000, 4570000, 560010, 4570010)})
            w.finish()

    with empty.begin() as conn:  # data written at schema v2, before versions existed
        ds = conn.execute(t.dataset.insert().values(name="old", created_at=now)).inserted_primary_key[0]
        conn.execute(t.city_object.insert().values(uid="R-0", object_class="Road", layer="roads", cim_level=1,
                                                   valid_from=now, dataset_id=ds))
    schema.upgrade(empty)
    with empty.connect() as conn:
        assert layer_version(conn, t, "roads") == 1 and layer_version(conn, t, "buildings") == 0
        assert len(schema.read_meta(conn)["database_id"]) == 32
    write("buildings", "B-1")
    write("buildings", "B-2")
    with empty.connect() as conn:
        assert layer_version(conn, t, "buildings") == 2 and layer_version(conn, t, "roads") == 1
