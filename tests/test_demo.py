"""The Benxi demo city: counts, CIM levels, hierarchy, coordinates, determinism and all-or-nothing writes."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from pyproj import Transformer
from sqlalchemy import func, select, text
from sqlalchemy.orm import aliased

from cim import demo
from cim.db import schema
from cim.db.models import OPS_LAYERS
from cim.demo.layout import Frame

from .conftest import DEMO_SIZE


@pytest.fixture(scope="module")
def engine(demo_db):
    e = demo_db.engine()
    yield e
    e.dispose()


def _tables(engine):
    return schema.tables_for(engine)


def test_counts_per_class(engine):
    counts = {cls: n for (_layer, cls), n in schema.object_counts(engine).items()}
    assert counts["Building"] == DEMO_SIZE
    for cls in ("Storey", "Space", "Wall", "Slab", "Door", "Window", "Stair", "Roof", "PipeSegment", "PipeNode",
                "Road", "Bridge", "TINRelief"):
        assert counts.get(cls, 0) > 0, cls
    assert counts["TINRelief"] == 1
    assert counts["PipeSegment"] > counts["Road"]


_DIGESTS: dict[str, str] = {}


def test_same_city_on_both_backends(demo_db):
    """Deterministic: both backends hold the same objects (compared through a digest within this session).

    Only the city model's layers: the operations layers (cases, vehicle tracks) of the shared demo database are
    written by other tests (tests/test_cases.py, test_tracks.py), in an order that differs per backend."""
    e = demo_db.engine()
    co = _tables(e).city_object
    with e.connect() as conn:
        rows = conn.execute(select(co.c.uid, co.c.object_class, co.c.height, co.c.name, co.c.min_z)
                            .where(co.c.layer.notin_(OPS_LAYERS)).order_by(co.c.uid)).all()
    e.dispose()
    text_rows = "\n".join(f"{u}|{c}|{None if h is None else round(h, 3)}|{n}|{None if z is None else round(z, 3)}"
                          for u, c, h, n, z in rows)
    _DIGESTS[demo_db.backend] = hashlib.sha256(text_rows.encode()).hexdigest()
    assert len(set(_DIGESTS.values())) == 1, _DIGESTS


def test_pipe_kinds_and_survey_attributes(engine):
    t = _tables(engine)
    co = t.city_object
    with engine.connect() as conn:
        kinds = set(conn.execute(select(co.c.pipe_kind).where(co.c.layer == "pipelines").distinct()).scalars())
        row = conn.execute(select(co).where(co.c.object_class == "PipeSegment").limit(1)).mappings().one()
        node_types = conn.execute(select(co.c.attributes).where(co.c.object_class == "PipeNode")).scalars().all()
    assert kinds == {"JS", "YS", "WS", "RQ", "RL", "DL", "TX"}
    attrs = row["attributes"] if isinstance(row["attributes"], dict) else json.loads(row["attributes"])
    for key in ("起点号", "终点号", "起点高程", "终点高程", "起点埋深", "终点埋深"):
        assert key in attrs
    assert row["diameter_mm"] > 0 and row["material"] and row["depth_m"] > 0 and row["owner"] and row["laid_date"]
    types = Counter((a if isinstance(a, dict) else json.loads(a))["node_type"] for a in node_types)
    assert types["manhole"] > 0 and types["valve"] > 0 and types["hydrant"] > 0


def test_bridges_span_the_river(engine):
    from cim.demo.layout import RIVER_HALF_WIDTH

    t = _tables(engine)
    co = t.city_object
    fn = func.ST_AsBinary if engine.dialect.name == "postgresql" else func.AsBinary
    with engine.connect() as conn:
        rows = conn.execute(select(co.c.uid, co.c.attributes, fn(co.c.geom)).where(co.c.object_class == "Bridge")).all()
    assert rows
    for uid, attrs, wkb in rows:
        attrs = attrs if isinstance(attrs, dict) else json.loads(attrs)
        deck = shapely.from_wkb(bytes(wkb))
        length = max(shapely.minimum_rotated_rectangle(deck).exterior.segmentize(1e9).length / 2 - attrs["width_m"], 0)
        assert attrs["length_m"] > 2 * RIVER_HALF_WIDTH, uid
        assert length == pytest.approx(attrs["length_m"], rel=0.01), uid
    assert len({r[0] for r in rows}) == len(rows)


def test_pipe_network_is_connected_to_its_nodes(engine):
    t = _tables(engine)
    co = t.city_object
    with engine.connect() as conn:
        nodes = set(conn.execute(select(co.c.uid).where(co.c.object_class == "PipeNode")).scalars())
        ends = conn.execute(select(co.c.attributes).where(co.c.object_class == "PipeSegment")).scalars().all()
    missing = 0
    for a in ends:
        a = a if isinstance(a, dict) else json.loads(a)
        missing += (a["起点号"] not in nodes) + (a["终点号"] not in nodes)
    assert missing == 0


def test_cim_levels(engine):
    t = _tables(engine)
    co, g = t.city_object, t.city_object_geometry
    with engine.connect() as conn:
        levels = dict(conn.execute(select(co.c.object_class, func.max(g.c.cim_level)).join(g, g.c.object_id == co.c.id)
                                   .group_by(co.c.object_class)).all())
        buildings_without_massing = conn.execute(text(
            "SELECT count(*) FROM city_object o WHERE o.object_class = 'Building' AND NOT EXISTS "
            "(SELECT 1 FROM city_object_geometry g WHERE g.object_id = o.id AND g.cim_level = 2)")).scalar()
        gabled = conn.execute(select(func.count()).select_from(g).join(co, g.c.object_id == co.c.id)
                              .where(co.c.object_class == "Building", g.c.cim_level == 3)).scalar()
        with_interiors = conn.execute(select(func.count()).where(co.c.object_class == "Building", co.c.cim_level == 6)).scalar()
    assert levels["TINRelief"] == 1
    assert levels["Building"] == 3 and gabled > 0
    assert buildings_without_massing == 0
    assert levels["Storey"] == 5 and levels["Space"] == 5
    for cls in ("Wall", "Slab", "Door", "Window", "Stair", "Roof"):
        assert levels[cls] == 6, cls
    assert with_interiors >= 3


def test_hierarchy(engine):
    t = _tables(engine)
    co = t.city_object
    parent = aliased(co)
    with engine.connect() as conn:
        pairs = Counter(conn.execute(select(co.c.object_class, parent.c.object_class)
                                     .join(parent, parent.c.id == co.c.parent_id)).all())
        orphans = conn.execute(select(func.count()).where(co.c.layer == "building-components",
                                                          co.c.root_id.is_(None))).scalar()
        wrong_root = conn.execute(text(
            "SELECT count(*) FROM city_object c JOIN city_object r ON r.id = c.root_id "
            "WHERE c.layer = 'building-components' AND r.object_class <> 'Building'")).scalar()
    assert set(pairs) == {("Storey", "Building"), ("Space", "Storey"), ("Wall", "Storey"), ("Slab", "Storey"),
                          ("Stair", "Storey"), ("Door", "Wall"), ("Window", "Wall"), ("Roof", "Building")}
    assert orphans == 0 and wrong_root == 0


def test_known_coordinate_round_trip(engine):
    """The check point of CRS-NOTES: lon 123.77, lat 41.30 ↔ EPSG:4550 E 564489.714, N 4574176.348."""
    frame = Frame.at(123.77, 41.30, 4550)
    assert frame.e0 == pytest.approx(564489.714, abs=1e-3) and frame.n0 == pytest.approx(4574176.348, abs=1e-3)
    fn = "ST_AsText" if engine.dialect.name == "postgresql" else "AsText"
    with engine.connect() as conn:
        wkt = conn.execute(text(f"SELECT {fn}(ST_Transform(ST_GeomFromText('POINT(564489.714 4574176.348)', 4550), 4490))")).scalar()
        back = conn.execute(text(f"SELECT {fn}(ST_Transform(ST_GeomFromText('POINT(123.77 41.3)', 4490), 4550))")).scalar()
    lon, lat = shapely.from_wkt(wkt).coords[0]
    assert lon == pytest.approx(123.77, abs=1e-8) and lat == pytest.approx(41.30, abs=1e-8)
    e, n = shapely.from_wkt(back).coords[0]
    assert e == pytest.approx(564489.714, abs=1e-3) and n == pytest.approx(4574176.348, abs=1e-3)


def test_buildings_valid_street_aligned_not_overlapping(engine):
    t = _tables(engine)
    co = t.city_object
    fn = func.ST_AsBinary if engine.dialect.name == "postgresql" else func.AsBinary
    with engine.connect() as conn:
        rows = conn.execute(select(fn(co.c.geom), co.c.attributes).where(co.c.object_class == "Building")).all()
    polys = shapely.from_wkb([bytes(r[0]) for r in rows])
    assert shapely.is_valid(polys).all()
    shapes = Counter((r[1] if isinstance(r[1], dict) else json.loads(r[1]))["shape"] for r in rows)
    assert len(shapes) >= 5 and shapes["rect"] < len(rows) * 0.8  # not all rectangles
    tree = shapely.STRtree(polys)
    a, b = tree.query(shapely.buffer(polys, -0.05), predicate="intersects")
    assert [(i, j) for i, j in zip(a, b) if i != j] == []
    # inside Benxi's urban core
    lon, lat = Transformer.from_crs(4550, 4490, always_xy=True).transform(*shapely.get_coordinates(polys).T)
    assert 123.65 < lon.min() and lon.max() < 123.90 and 41.20 < lat.min() and lat.max() < 41.40


def test_solids_are_closed_and_outward(engine):
    t = _tables(engine)
    co, g = t.city_object, t.city_object_geometry
    fn = func.ST_AsBinary if engine.dialect.name == "postgresql" else func.AsBinary
    with engine.connect() as conn:
        rows = conn.execute(select(fn(g.c.geom), g.c.surfaces).join(co, co.c.id == g.c.object_id)
                            .where(co.c.object_class == "Building", g.c.cim_level == 2).limit(200)).all()
    from cim.geom3d import outward_normals_ok

    for wkb, surfaces in rows:
        solid = shapely.from_wkb(bytes(wkb))
        assert shapely.has_z(solid)
        kinds = surfaces if isinstance(surfaces, list) else json.loads(surfaces)
        assert len(kinds) == len(solid.geoms) and kinds[:2] == ["GroundSurface", "RoofSurface"]
        # every edge shared by exactly two faces: a closed shell
        edges = Counter()
        for poly in solid.geoms:
            ring = [tuple(np.round(c, 6)) for c in poly.exterior.coords]
            for p, q in zip(ring[:-1], ring[1:]):
                edges[(p, q)] += 1
            for inner in poly.interiors:
                ring = [tuple(np.round(c, 6)) for c in inner.coords]
                for p, q in zip(ring[:-1], ring[1:]):
                    edges[(p, q)] += 1
        assert all(edges[(q, p)] == n for (p, q), n in edges.items())
    convex = [shapely.from_wkb(bytes(w)) for w, _ in rows]
    assert sum(outward_normals_ok(s) for s in convex) > 0


def test_dem_is_a_cloud_optimized_geotiff(demo_db, engine):
    from rio_cogeo.cogeo import cog_validate

    t = _tables(engine)
    with engine.connect() as conn:
        layer = conn.execute(select(t.raster_layer)).mappings().one()
    path = demo_db.data_dir / layer["path"]
    valid, errors, _warnings = cog_validate(str(path), quiet=True)
    assert valid, errors
    with rasterio.open(path) as src:
        assert src.crs.to_epsg() == 4550 and src.overviews(1)
        dem = src.read(1, masked=True)
    assert 150 < float(dem.min()) and float(dem.max()) < 800  # the valley floor and the hills, in metres


def test_failed_demo_changes_nothing(demo_db, monkeypatch):
    """A failure halfway through leaves the previous demo and its DEM untouched."""
    e = demo_db.engine()
    before = schema.object_counts(e)
    dem = demo_db.data_dir / "dem.cog.tif"
    dem_bytes = dem.read_bytes()

    def exploding(self):
        yield from []
        raise RuntimeError("power cut (simulated)")

    monkeypatch.setattr(demo.Networks, "objects", exploding)
    with pytest.raises(RuntimeError, match="simulated"):
        demo.generate(e, size=50, seed=1, center=(123.77, 41.30), data_dir=demo_db.data_dir)
    assert schema.object_counts(e) == before
    assert dem.read_bytes() == dem_bytes
    assert not list(Path(demo_db.data_dir).glob(".dem-*"))
    e.dispose()
