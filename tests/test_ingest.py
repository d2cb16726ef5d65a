"""`cim load` on both backends with the real sample files: CityJSON (+Seq), survey tables, the WNTR
network, rasters; quality rules, all-or-nothing loads, replacement by source id, lineage, reports."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import rasterio
import shapely
from geoalchemy2.shape import to_shape
from rio_cogeo.cogeo import cog_validate
from sqlalchemy import func, select

from cim.crs.registry import CRS84_URI, default_registry
from cim.crs.transform import transform
from cim.db import schema
from cim.geometry import consistently_oriented, is_closed_shell
from cim.ingest.cityjson import lod_level, read_cityjson
from cim.ingest.load import LoadError, LoadOptions, load_files, public_uid
from cim.ingest.model import ReadError
from cim.ingest.place import Anchor

from .conftest import ROOT, run_cim

SHARED = ROOT.parent / "shared" / "datasets"
MULTI_LOD = SHARED / "cityjson" / "3dbag_multi_lod.city.json"
DELFT = SHARED / "cityjson" / "delft.city.json"
SEQ = SHARED / "cityjson" / "3dbag_tile_901_trimmed.city.jsonl"
SURVEY = ROOT / "tests" / "data" / "survey"
ANCHOR = Anchor(123.77, 41.30, 180.0, 15.0)


def state(engine) -> dict[str, int]:
    """Row counts of every table a load writes."""
    t = schema.tables_for(engine)
    with engine.connect() as conn:
        return {table.name: conn.execute(select(func.count()).select_from(table)).scalar()
                for table in (t.dataset, t.import_run, t.city_object, t.city_object_geometry,
                              t.city_object_other_lod, t.raster_layer)}


# ---------------------------------------------------------------------------------------------- readers
def test_cityjson_lods_semantics_and_transform():
    source = read_cityjson(MULTI_LOD)
    assert source.crs is None and source.metadata["version"] == "2.0"
    objects = list(source.objects)
    assert len(objects) == 10
    doc = json.loads(MULTI_LOD.read_text())
    first = objects[0]
    raw = doc["CityObjects"][first.source_id]
    assert sorted(str(g["lod"]) for g in raw["geometry"]) == ["1.2", "1.3", "2.2"]
    # LOD1.3 wins CIM2 over LOD1.2 (kept as another LOD), LOD2.2 is CIM3
    assert [(g[0], g[3]) for g in first.geometries] == [(2, "1.3"), (3, "2.2")]
    assert [(lod, level) for lod, level, _g, _s in first.other_lods] == [("1.2", 2)]
    lod22 = next(g for g in raw["geometry"] if str(g["lod"]) == "2.2")
    roof = [s["type"] for s in lod22["semantics"]["surfaces"]]
    assert set(first.geometries[1][2]) <= set(roof) and "RoofSurface" in first.geometries[1][2]
    # vertices decoded with the file's transform
    scale, translate = np.array(doc["transform"]["scale"]), np.array(doc["transform"]["translate"])
    index = lod22["boundaries"][0][0][0][0]
    want = np.array(doc["vertices"][index]) * scale + translate
    got = np.asarray(first.geometries[1][1].geoms[0].exterior.coords[0])
    assert np.allclose(got, want)
    assert first.typed["year_built"] == raw["attributes"]["oorspronkelijk_bouwjaar"]
    assert lod_level("0") == 1 and lod_level("1.2") == 2 and lod_level(2) == 3 and lod_level("3.1") == 4


def test_cityjsonseq_streams_parents_first():
    source = read_cityjson(SEQ)
    assert source.crs.to_epsg() == 7415 and source.kind == "cityjsonseq"
    seen: set[str] = set()
    classes = []
    for obj in source.objects:
        assert obj.parent is None or obj.parent in seen
        seen.add(obj.source_id)
        classes.append(obj.object_class)
    assert classes.count("Building") == 52 and classes.count("BuildingPart") == 52


@pytest.mark.parametrize("content,fragment", [
    ("not json", "not JSON"),
    ('{"type": "FeatureCollection"}', "not a CityJSON file"),
    ('{"type": "CityJSON", "version": "0.9", "CityObjects": {}, "vertices": []}', "version"),
    ('{"type": "CityJSON", "version": "2.0", "CityObjects": {}, "vertices": [[1, 2]]}', "triples"),
    ('{"type": "CityJSON", "version": "2.0", "vertices": [], "CityObjects": {"a": {"type": "Road"}, '
     '"a": {"type": "Road"}}}', "the key 'a' appears twice"),
])
def test_cityjson_bad_files_name_the_file(tmp_path, content, fragment):
    path = tmp_path / "bad.city.json"
    path.write_text(content)
    with pytest.raises(ReadError, match=fragment) as info:
        read_cityjson(path)
    assert str(path) in str(info.value)


# ---------------------------------------------------------------------------------------------- loading
def test_duplicate_ids_across_cityjsonseq_features(db, tmp_path):
    """The second object with an id already read is rejected by the unique_ids rule, named; the first
    stays with its parts."""
    lines = SEQ.read_text(encoding="utf-8").splitlines()
    path = tmp_path / "dup.city.jsonl"
    path.write_text("\n".join([*lines[:3], lines[1]]) + "\n", encoding="utf-8")  # feature 1 again at the end
    first_id = json.loads(lines[1])["id"]
    report = load_files(db, [path], LoadOptions(anchor=ANCHOR))
    f = report.files[0]
    unique = f.rules["unique_ids"]
    assert unique["failed"] == 2 and f.rejected == 2 and f.loaded == 4  # the building and its part, again
    assert unique["objects"][0] == {"source_id": first_id,
                                    "reason": f"Building id {first_id!r} appears again (the first one is kept)"}


def test_anchored_cityjson_with_every_lod(db):
    report = load_files(db, [MULTI_LOD], LoadOptions(crs="EPSG:28992", anchor=ANCHOR))
    assert report.committed and report.loaded == 10 and report.rejected == 0
    t = schema.tables_for(db)
    co, g, other = t.city_object, t.city_object_geometry, t.city_object_other_lod
    with db.connect() as conn:
        rows = conn.execute(select(co.c.uid, co.c.cim_level, co.c.geom, co.c.min_z, co.c.layer)).all()
        levels = conn.execute(select(g.c.cim_level, g.c.lod, func.count()).group_by(g.c.cim_level, g.c.lod)).all()
        others = conn.execute(select(other.c.lod, func.count()).group_by(other.c.lod)).all()
    assert sorted(levels) == [(2, "1.3", 10), (3, "2.2", 10)] and others == [("1.2", 10)]
    assert {r.layer for r in rows} == {"buildings"} and all(r.cim_level == 3 for r in rows)
    # the extent's centre at its lowest height lands on the anchor
    centre = shapely.union_all([to_shape(r.geom) for r in rows]).envelope.centroid
    reg = default_registry()
    x, y, _ = transform(reg.resolve(CRS84_URI), reg.epsg(4550), np.array([ANCHOR.lon]), np.array([ANCHOR.lat]))
    assert abs(centre.x - x[0]) < 60 and abs(centre.y - y[0]) < 60  # the 3D BAG extent is ~470 × 520 m
    assert min(r.min_z for r in rows) == pytest.approx(180.0, abs=0.01)


def test_reload_replaces_by_source_id(db):
    first = load_files(db, [MULTI_LOD], LoadOptions(crs="EPSG:28992", anchor=ANCHOR))
    before = state(db)
    again = load_files(db, [MULTI_LOD], LoadOptions(crs="EPSG:28992", anchor=ANCHOR))
    after = state(db)
    assert again.files[0].replaced == 10 and first.files[0].replaced == 0
    assert {k: v for k, v in after.items() if k != "import_run"} == {k: v for k, v in before.items() if k != "import_run"}
    assert after["import_run"] == before["import_run"] + 1  # lineage: each load is recorded
    t = schema.tables_for(db)
    with db.connect() as conn:
        uids = set(conn.execute(select(t.city_object.c.uid)).scalars())
    assert public_uid("3dbag_multi_lod", "6751773") in uids


def test_delft_counts_with_open_bases_closed(db):
    """Delft's LOD1 'solids' have no ground faces: each is closed with the ground face its base outlines
    (reported as a repair), so every object of the file loads: 160 buildings, 143 roads, 3 bridges."""
    report = load_files(db, [DELFT], LoadOptions(anchor=ANCHOR))
    f = report.files[0]
    assert f.read == f.loaded == 570 and f.rejected == 0
    assert (f.by_class["Building"], f.by_class["Road"], f.by_class["Bridge"]) == (160, 143, 3)
    closed = f.rules["closed_solids"]
    assert closed["checked"] == 160 and closed["failed"] == 0
    assert closed["notes"]["open base closed with a ground face (repaired)"] == 160
    t = schema.tables_for(db)
    with db.connect() as conn:
        geometries = [(to_shape(g), s) for g, s in conn.execute(
            select(t.city_object_geometry.c.geom, t.city_object_geometry.c.surfaces)
            .join(t.city_object, t.city_object.c.id == t.city_object_geometry.c.object_id)
            .where(t.city_object.c.object_class == "Building"))]
    assert len(geometries) == 160
    for geom, surfaces in geometries:
        assert is_closed_shell(geom) and consistently_oriented(geom)
        assert surfaces is None  # Delft's LOD1 has no semantic surfaces; the repair invents none


def test_rules_reject_objects_and_report_them(db):
    """Without the repair the closed-solid rule rejects all 160 buildings (each named, with the reason)
    and the roads, bridges and the rest load."""
    from cim.settings import get_settings

    get_settings().ingest.rules.repair_open_bases = False  # the fixture clears the cached settings
    report = load_files(db, [DELFT], LoadOptions(anchor=ANCHOR))
    f = report.files[0]
    assert f.read == 570 and f.rejected == 160 and f.loaded == 410
    closed = f.rules["closed_solids"]
    assert closed["checked"] == 160 and closed["failed"] == 160
    assert closed["objects"][0]["reason"] == "not closed at CIM2"
    assert f.by_class["Road"] == 143 and f.by_class["Bridge"] == 3 and "Building" not in f.by_class
    assert f.rules["geometry_valid"]["failed"] == 0


def test_strict_loads_nothing_on_any_failure(db):
    from cim.settings import get_settings

    load_files(db, [MULTI_LOD], LoadOptions(crs="EPSG:28992", anchor=ANCHOR))
    before = state(db)
    get_settings().ingest.rules.repair_open_bases = False  # Delft's 160 open solids then fail
    with pytest.raises(LoadError, match="--strict: 160 object") as info:
        load_files(db, [SURVEY / "管线点.csv", DELFT], LoadOptions(anchor=ANCHOR, strict=True, crs="EPSG:4550"))
    assert state(db) == before
    assert not info.value.report.committed and info.value.report.rejected == 160


@pytest.mark.parametrize("options,fragment", [
    (LoadOptions(), "declares no CRS: give --crs, or --anchor"),
    (LoadOptions(crs="EPSG:28992"), "outside the storage CRS's area; to place it in the city anyway, use --anchor"),
    (LoadOptions(crs="EPSG:999999"), "--crs: unknown CRS"),
])
def test_files_that_cannot_be_placed(db, options, fragment):
    before = state(db)
    with pytest.raises(LoadError, match=fragment) as info:
        load_files(db, [MULTI_LOD], options)
    assert state(db) == before
    assert "3dbag_multi_lod.city.json" in str(info.value) or "--crs" in str(info.value)


def test_survey_tables_with_chinese_fields(db):
    """管线点 (GBK CSV, X = northing) then 管线段 drawn between its points; a material outside the code
    list and a segment to an unknown point are rejected and reported."""
    report = load_files(db, [SURVEY / "管线点.csv", SURVEY / "管线段.csv"],
                        LoadOptions(crs="EPSG:4550", dataset="平山区管线2024"))
    points, segments = report.files
    assert (points.loaded, points.rejected) == (6, 0)
    assert (segments.read, segments.loaded, segments.rejected) == (5, 3, 2)
    assert segments.rules["code_lists"]["objects"][0]["reason"] == "material '木头' is not in the code list"
    assert "YS9999 not found" in segments.rules["readable"]["objects"][0]["reason"]
    t = schema.tables_for(db)
    co, g = t.city_object, t.city_object_geometry
    with db.connect() as conn:
        node = conn.execute(select(co).where(co.c.source_id == "JS0001")).one()
        pipe = conn.execute(select(co, g.c.geom.label("axis")).join(g, g.c.object_id == co.c.id)
                            .where(co.c.source_id == "JS:JS0001-JS0002")).one()
        box = conn.execute(select(co.c.diameter_mm, co.c.attributes).where(co.c.source_id == "YS:YS0001-YS0002")).one()
    p = to_shape(node.geom)
    assert (p.x, p.y) == (564431.208, 4574120.512)  # Y坐标 is the easting
    assert node.pipe_kind == "JS" and node.max_z == 182.35 and node.min_z == pytest.approx(181.15)
    assert node.attributes["附属物"] == "阀门" and node.name == "阀门 JS0001"
    axis = shapely.get_coordinates(to_shape(pipe.axis), include_z=True)
    assert axis.tolist() == [[564431.208, 4574120.512, 181.15], [564511.377, 4574120.498, 181.36]]
    assert pipe.diameter_mm == 300 and pipe.material == "球墨铸铁" and str(pipe.laid_date) == "2008-06-01"
    assert box.diameter_mm == 1200 and box.attributes["断面尺寸"] == "1200×800"


def test_wntr_network_anchored_with_defaults(db):
    """The WNTR network (EPSG:3547, US feet): junctions, then pipes draped between them; diameters in
    metres become millimetres; both files share one anchored frame."""
    report = load_files(db, [SHARED / "vector/wntr_ky4_junctions.geojson", SHARED / "vector/wntr_ky4_pipes.geojson"],
                        LoadOptions(anchor=Anchor(123.80, 41.32, 0.0), dataset="wntr-ky4",
                                    defaults={"pipe_kind": "JS", "material": "球墨铸铁"}))
    junctions, pipes = report.files
    assert junctions.loaded == 959 and pipes.read == 1156
    assert pipes.rejected == 7 and pipes.loaded == 1149  # pipes to tanks/reservoirs: no end heights
    t = schema.tables_for(db)
    co, g = t.city_object, t.city_object_geometry
    with db.connect() as conn:
        p1 = conn.execute(select(co, g.c.geom.label("axis")).join(g, g.c.object_id == co.c.id)
                          .where(co.c.source_id == "P-1")).one()
        j1 = conn.execute(select(co.c.geom).where(co.c.source_id == "J-1")).scalar()
    assert p1.diameter_mm == pytest.approx(152.4) and p1.pipe_kind == "JS"
    start = shapely.get_coordinates(to_shape(p1.axis), include_z=True)[0]
    assert np.allclose(start[:2], [to_shape(j1).x, to_shape(j1).y])  # the frames agree
    feature = json.loads((SHARED / "vector/wntr_ky4_pipes.geojson").read_text())["features"][0]
    length_ft = shapely.geometry.shape(feature["geometry"]).length
    assert to_shape(p1.geom).length == pytest.approx(length_ft * 0.3048006096, rel=1e-6)  # feet → metres


def test_plain_vector_features_with_a_layer(db):
    """OSM roads and building footprints in lon/lat elsewhere on Earth, anchored in Benxi: each feature an
    object of the layer's class with its name and typed height; the files' shapes kept (metres around
    their own centre, then placed)."""
    roads = SHARED / "vector" / "osm_west_oakland_highways.geojson"
    footprints = SHARED / "vector" / "buildings_footprints_matching_dsm.geojson"
    with pytest.raises(LoadError, match="give --layer to load its geometries as plain features"):
        load_files(db, [footprints], LoadOptions(anchor=ANCHOR))
    report = load_files(db, [roads], LoadOptions(layer="roads", anchor=Anchor(123.77, 41.30, 180.0, 0.0)))
    assert report.files[0].by_class == {"Road": 31} and report.files[0].reader == "vector"
    report = load_files(db, [footprints], LoadOptions(layer="buildings", anchor=Anchor(123.78, 41.30, 180.0, 0.0)))
    assert report.files[0].by_class == {"Building": 84}
    t = schema.tables_for(db)
    co = t.city_object
    with db.connect() as conn:
        names = set(conn.execute(select(co.c.name).where(co.c.layer == "roads")).scalars())
        heights = list(conn.execute(select(co.c.height).where(co.c.layer == "buildings")).scalars())
        geoms = [to_shape(g) for g in conn.execute(select(co.c.geom).where(co.c.layer == "buildings")).scalars()]
    assert "Wood Street" in names
    known = [h for h in heights if h is not None]
    assert len(known) == 82 and all(h > 0 for h in known)  # two source features have no HEIGHT (NaN)
    # sizes survive the move: the footprint areas equal the source's, measured on the ellipsoid
    import pyogrio
    from pyproj import Geod

    source = shapely.from_wkb(pyogrio.raw.read(footprints)[2])
    geod = Geod(ellps="WGS84")
    expected = sorted(abs(geod.geometry_area_perimeter(g)[0]) for g in source)
    got = sorted(g.area for g in geoms)
    assert np.allclose(got, expected, rtol=2e-3)  # Gauss-Krueger scale at Benxi and the local projection


def test_rasters_become_registered_cogs(db, tmp_path):
    report = load_files(db, [SHARED / "raster/lidar_dtm_2m_epsg26918.tif",
                             SHARED / "raster/colorado_hro_orthophoto_15cm.tif"], LoadOptions(dataset="rasters"))
    assert report.loaded == 2
    t = schema.tables_for(db)
    with db.connect() as conn:
        rows = {r.kind: r for r in conn.execute(select(t.raster_layer)).all()}
    assert set(rows) == {"dem", "orthophoto"}
    dem = rows["dem"]
    assert dem.srid == 26918 and dem.resolution == pytest.approx(2.0)
    path = tmp_path / "data" / dem.path
    assert cog_validate(str(path), quiet=True)[0]
    with rasterio.open(path) as cog, rasterio.open(SHARED / "raster/lidar_dtm_2m_epsg26918.tif") as src:
        assert np.array_equal(cog.read(1), src.read(1)) and cog.crs == src.crs  # lossless, own CRS
        assert (dem.minx, dem.maxy) == pytest.approx((src.bounds.left, src.bounds.top))


def test_a_failed_load_leaves_no_raster_file(db, tmp_path, monkeypatch):
    before = state(db)
    with pytest.raises(LoadError):
        load_files(db, [SHARED / "raster/lidar_dsm_2m_epsg26918.tif", MULTI_LOD], LoadOptions())
    assert state(db) == before
    assert not list((tmp_path / "data" / "rasters").glob("*"))


def test_lineage(db):
    report = load_files(db, [MULTI_LOD], LoadOptions(crs="EPSG:28992", anchor=ANCHOR))
    t = schema.tables_for(db)
    with db.connect() as conn:
        run = conn.execute(select(t.import_run).where(t.import_run.c.id == report.files[0].import_run)).one()
    digest = hashlib.sha256(MULTI_LOD.read_bytes()).hexdigest()
    assert run.params["sha256"] == digest == report.files[0].sha256
    assert run.params["placement"]["mode"] == "anchor" and run.params["rules"]["closed_solids"]["checked"] == 10
    assert run.counts == {"Building": 10} and run.finished_at is not None


def test_cli_load_report_and_errors(db, tmp_path):
    url = str(db.url.render_as_string(hide_password=False))
    env = {"CIM_DATABASE_URL": url, "CIM_DATA_DIR": str(tmp_path / "data")}
    target = tmp_path / "report.json"
    ok = run_cim("load", str(SURVEY / "管线点.csv"), "--crs", "EPSG:4550", "--report", str(target), env=env)
    assert ok.returncode == 0, ok.stderr
    assert "管线点.csv" in ok.stdout and json.loads(target.read_text())["loaded"] == 6
    missing = run_cim("load", str(tmp_path / "nope.city.json"), env=env)
    assert missing.returncode == 1 and "nope.city.json: no such file" in missing.stderr
    unknown = tmp_path / "notes.txt"
    unknown.write_text("hello")
    bad = run_cim("load", str(unknown), env=env)
    assert bad.returncode == 1 and "notes.txt: unknown file type" in bad.stderr
    anchor = run_cim("load", str(MULTI_LOD), "--anchor", "41.3,123.7,10,0,5", env=env)
    assert anchor.returncode == 1 and "--anchor" in anchor.stderr
    assert "Traceback" not in missing.stderr + bad.stderr + anchor.stderr


def test_loaded_objects_are_served(db, tmp_path):
    """What ingest writes, the API serves: the anchored 3D BAG buildings by id, with their CIM3 geometry."""
    from .conftest import DemoDB, start_server, stop_server

    load_files(db, [MULTI_LOD], LoadOptions(crs="EPSG:28992", anchor=ANCHOR))
    import httpx

    (tmp_path / "data").mkdir(exist_ok=True)
    demo = DemoDB(db.dialect.name, db.url.render_as_string(hide_password=False), tmp_path / "data")
    server = start_server(demo)
    try:
        uid = public_uid("3dbag_multi_lod", "6751773")
        r = httpx.get(f"{server.url}/collections/buildings/items/{uid}", params={"f": "json", "cim_level": 3})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["properties"]["year_built"] == 1965 and body["geometry"]["type"] == "MultiPolygon"
        lon, lat = np.asarray(body["geometry"]["coordinates"][0][0])[:, :2].mean(axis=0)
        assert abs(lon - ANCHOR.lon) < 0.01 and abs(lat - ANCHOR.lat) < 0.01
    finally:
        stop_server(server)


def test_anchor_parsing():
    assert Anchor.parse("123.7,41.3") == Anchor(123.7, 41.3, 0.0, 0.0)
    assert Anchor.parse("123.7,41.3,180,-12.5").rotation == -12.5
    for bad in ("x,y", "123", "1,2,3,4,5", "200,41,0", "nan,41"):
        with pytest.raises(ValueError, match="--anchor"):
            Anchor.parse(bad)


def test_uids_are_url_safe_and_short():
    assert public_uid("delft", "b0a8da4cc-2d2a-11e6-9a38-393caa90be70") == "delft-b0a8da4cc-2d2a-11e6-9a38-393caa90be70"
    odd = public_uid("rotterdam", "{C9D4A5CF-094A-47DA-97E4-4A3BFD75D3AE}")
    assert len(odd) <= 64 and "{" not in odd
    assert public_uid("平山区管线", "JS0001").startswith("ds") and public_uid("平山区管线", "JS0001") != public_uid("铁路", "JS0001")
    assert len(public_uid("x" * 40, "y" * 100)) <= 64
