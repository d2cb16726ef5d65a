"""`cim export` on both backends: CityJSON 2.0 / CityJSONSeq round trips of the real 3D BAG samples
(coordinates within 1 mm, every LOD, semantics, attributes exactly, parents), GeoPackage and FlatGeobuf
read back with pyogrio, a third-party reader (cjio), and the error paths (nothing written)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyogrio
import pytest
import shapely

from cim.export import ExportError, export
from cim.ingest.cityjson import read_cityjson
from cim.ingest.load import LoadOptions, load_files
from cim.ingest.place import Anchor

from .conftest import ROOT, run_cim

SHARED = ROOT.parent / "shared" / "datasets" / "cityjson"
# where the samples are moved to: Benxi, EPSG:4550 (x = easting, y = northing)
BENXI = (564_500.0, 4_574_100.0, 180.0)


def in_benxi(source: Path, target: Path) -> Path:
    """The sample with its vertices moved to Benxi by changing only ``transform.translate`` (so the
    integer vertices, and every millimetre, stay as they are) and its CRS set to EPSG:4550."""
    lines = source.read_text(encoding="utf-8").splitlines()
    header = json.loads(lines[0]) if source.suffix == ".jsonl" else json.loads("\n".join(lines))
    header["transform"]["translate"] = list(BENXI)
    header.setdefault("metadata", {})["referenceSystem"] = "https://www.opengis.net/def/crs/EPSG/0/4550"
    if source.suffix == ".jsonl":
        target.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n", encoding="utf-8")
    else:
        target.write_text(json.dumps(header), encoding="utf-8")
    return target


def every_lod(path: Path) -> dict[str, dict]:
    """Object id → class, parent, attributes and {lod: (coordinates, surfaces)} as our reader reads them."""
    out = {}
    for obj in read_cityjson(path).objects:
        lods = {g[3]: (g[1], g[2]) for g in obj.geometries}
        lods.update({lod: (geom, surfaces) for lod, _level, geom, surfaces in obj.other_lods})
        out[obj.source_id] = {"class": obj.object_class, "parent": obj.parent, "attributes": obj.attributes,
                              "lods": lods}
    return out


def assert_same_city(original: dict[str, dict], exported: dict[str, dict]) -> None:
    assert exported.keys() == original.keys()
    for key, a in original.items():
        b = exported[key]
        assert (b["class"], b["parent"]) == (a["class"], a["parent"]), key
        assert b["attributes"] == a["attributes"], key  # exactly, nulls and all
        assert sorted(b["lods"]) == sorted(a["lods"]), key
        for lod, (geom, surfaces) in a["lods"].items():
            other, other_surfaces = b["lods"][lod]
            assert other.geom_type == geom.geom_type and len(other.geoms) == len(geom.geoms)
            ca = shapely.get_coordinates(geom, include_z=True)
            cb = shapely.get_coordinates(other, include_z=True)
            assert ca.shape == cb.shape and np.abs(ca - cb).max() <= 0.001, (key, lod)
            assert other_surfaces == surfaces, (key, lod)


@pytest.mark.parametrize("sample,suffix", [("3dbag_multi_lod.city.json", ".city.json"),
                                           ("3dbag_tile_901_trimmed.city.jsonl", ".jsonl")])
def test_cityjson_round_trip(db, tmp_path, sample, suffix):
    """CityJSON → database → CityJSON: the 3D BAG's LOD 0, 1.2, 1.3 and 2.2 (1.2 and 1.3 share CIM2: one is
    kept as a superseded LOD), roof/wall/ground semantics, Building → BuildingPart links, attributes."""
    source = in_benxi(SHARED / sample, tmp_path / f"benxi{suffix}")
    report = load_files(db, [source], LoadOptions(dataset="rt"))
    assert report.rejected == 0
    out = tmp_path / f"out{suffix}"
    result = export(db, out, dataset="rt")
    assert result.objects == report.loaded and result.crs.endswith("/EPSG/0/4550")
    assert_same_city(every_lod(source), every_lod(out))
    if suffix == ".jsonl":
        lines = out.read_text(encoding="utf-8").splitlines()
        header = json.loads(lines[0])
        assert (header["type"], header["version"], header["transform"]["scale"]) == ("CityJSON", "2.0", [0.001] * 3)
        features = [json.loads(line) for line in lines[1:]]
        assert all(f["type"] == "CityJSONFeature" and f["id"] in f["CityObjects"] for f in features)
        assert len(features) == 52  # one feature per building, its part inside
    else:
        doc = json.loads(out.read_text(encoding="utf-8"))
        assert doc["version"] == "2.0" and doc["metadata"]["referenceSystem"].endswith("/EPSG/0/4550")
        lo = np.asarray(doc["metadata"]["geographicalExtent"][:3])
        assert np.all(lo >= np.asarray(BENXI) - 1)
        types = {g["type"] for co in doc["CityObjects"].values() for g in co["geometry"]}
        assert types == {"Solid"}  # the 3D BAG's closed solids stay solids


def test_export_again_is_identical(db, tmp_path):
    source = in_benxi(SHARED / "3dbag_multi_lod.city.json", tmp_path / "benxi.city.json")
    load_files(db, [source], LoadOptions(dataset="rt"))
    export(db, tmp_path / "a.city.json", dataset="rt")
    load_files(db, [tmp_path / "a.city.json"], LoadOptions(dataset="rt"))  # replaces by source id
    export(db, tmp_path / "b.city.json", dataset="rt")
    assert (tmp_path / "a.city.json").read_bytes() == (tmp_path / "b.city.json").read_bytes()


def test_bim_and_pipes_export(db, tmp_path):
    """IFC objects keep their hierarchy and become CityJSON 2.0 types; pipes GenericCityObjects."""
    ifc = ROOT.parent / "shared" / "datasets" / "ifc" / "AC20-FZK-Haus.ifc"
    drainage = ROOT.parent / "shared" / "datasets" / "ifc43" / "DrainageSystem-1-2.hdr-IFC4X3_ADD2.ifc"
    load_files(db, [ifc], LoadOptions(anchor=Anchor(123.77, 41.30, 180.0, 0.0), dataset="fzk"))
    load_files(db, [drainage], LoadOptions(anchor=Anchor(123.772, 41.30, 178.0, 0.0), dataset="drain"))
    out = tmp_path / "bim.city.json"
    result = export(db, out, layers=["buildings", "building-components", "pipelines", "pipe-nodes"])
    assert result.counts["Wall"] == 13 and result.counts["PipeSegment"] == 6 and result.counts["PipeNode"] == 7
    doc = json.loads(out.read_text(encoding="utf-8"))
    objects = doc["CityObjects"]
    by_type: dict[str, int] = {}
    for co in objects.values():
        by_type[co["type"]] = by_type.get(co["type"], 0) + 1
    assert by_type["Building"] == 1 and by_type["BuildingStorey"] == 2 and by_type["BuildingRoom"] == 7
    assert by_type["GenericCityObject"] == 13
    walls = [co for co in objects.values() if co.get("attributes", {}).get("cim_class") == "Wall"]
    assert len(walls) == 13 and all(objects[w["parents"][0]]["type"] == "BuildingStorey" for w in walls)
    pipe = next(co for co in objects.values() if co.get("attributes", {}).get("cim_class") == "PipeSegment")
    assert pipe["attributes"]["pipe_kind"] == "YS" and pipe["attributes"]["diameter_mm"] > 0
    assert {g["type"] for g in pipe["geometry"]} == {"MultiLineString", "Solid"}  # axis and closed tube
    # keys are public uids when datasets are mixed: unique across them
    assert all(key.startswith(("fzk-", "drain-")) for key in objects)


def test_cjio_reads_the_export(db, tmp_path):
    """cjio (TU Delft's CityJSON tool, installed with the test extras) reads what we write."""
    source = in_benxi(SHARED / "3dbag_multi_lod.city.json", tmp_path / "benxi.city.json")
    load_files(db, [source], LoadOptions(dataset="rt"))
    export(db, tmp_path / "out.city.json", dataset="rt")
    cjio = str(Path(sys.executable).parent / "cjio")
    proc = subprocess.run([cjio, str(tmp_path / "out.city.json"), "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "CityJSON version = 2.0" in proc.stdout and "EPSG = 4550" in proc.stdout
    assert "Building (10)" in proc.stdout


def test_geopackage_and_flatgeobuf(db, tmp_path):
    source = in_benxi(SHARED / "3dbag_multi_lod.city.json", tmp_path / "benxi.city.json")
    load_files(db, [source], LoadOptions(dataset="rt"))
    gpkg = tmp_path / "out.gpkg"
    result = export(db, gpkg, layers=["buildings", "roads"])
    assert result.counts == {"buildings": 10, "roads": 0}
    info = pyogrio.read_info(gpkg, layer="buildings")
    assert info["features"] == 10 and info["crs"] == "EPSG:4550"
    _meta, _fids, geometry, fields = pyogrio.raw.read(gpkg, layer="buildings")
    names = list(_meta["fields"])
    attributes = [json.loads(a) for a in fields[names.index("attributes")]]
    assert {a["identificatie"] for a in attributes} >= {"NL.IMBAG.Pand.0796100000236261"}
    footprints = shapely.from_wkb(geometry)
    assert all(f.geom_type in ("Polygon", "MultiPolygon") for f in footprints)
    x0, y0, _ = BENXI
    assert all(x0 - 1 <= f.bounds[0] < x0 + 1000 and y0 - 1 <= f.bounds[1] < y0 + 1000 for f in footprints)
    # a bbox elsewhere in the city selects nothing: an empty but valid file
    empty = export(db, tmp_path / "none.fgb", layers=["buildings"], bbox=(123.5, 41.0, 123.51, 41.01))
    assert empty.objects == 0 and len(pyogrio.raw.read(tmp_path / "none.fgb")[2]) == 0  # no geometries
    # the CIM3 solids in lon/lat, as 3D geometries
    solids = tmp_path / "solids.fgb"
    export(db, solids, layers=["buildings"], crs="EPSG:4490", cim_level=3)
    _meta, _fids, geometry, _fields = pyogrio.raw.read(solids)
    geoms = shapely.from_wkb(geometry)
    assert all(shapely.has_z(g) for g in geoms) and 123 < geoms[0].bounds[0] < 124  # x = longitude in files


def test_bbox_selects(db, tmp_path):
    source = in_benxi(SHARED / "3dbag_multi_lod.city.json", tmp_path / "benxi.city.json")
    load_files(db, [source], LoadOptions(dataset="rt"))
    everything = export(db, tmp_path / "all.city.json")
    assert everything.objects == 10
    nowhere = export(db, tmp_path / "none.city.json", bbox=(123.5, 41.0, 123.51, 41.01))
    assert nowhere.objects == 0
    doc = json.loads((tmp_path / "none.city.json").read_text())
    assert doc["CityObjects"] == {} and doc["vertices"] == []


@pytest.mark.parametrize("kwargs,message", [
    ({"layers": ["houses"]}, "unknown layer(s) houses"),
    ({"bbox": (123.8, 41.4, 123.7, 41.3)}, "bbox: min lon"),
    ({"crs": "EPSG:4490"}, "CityJSON is written in a projected CRS"),
    ({"crs": "EPSG:999999"}, "--crs"),
    ({"dataset": "nope"}, "no dataset named 'nope'"),
])
def test_bad_arguments_write_nothing(db, tmp_path, kwargs, message):
    with pytest.raises(ExportError, match=message.replace("(", r"\(").replace(")", r"\)")):
        export(db, tmp_path / "x.city.json", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_cli(db, tmp_path):
    source = in_benxi(SHARED / "3dbag_multi_lod.city.json", tmp_path / "benxi.city.json")
    load_files(db, [source], LoadOptions(dataset="rt"))
    url = db.url.render_as_string(hide_password=False)
    env = {"CIM_DATA_DIR": str(tmp_path / "data")}
    proc = run_cim("export", str(tmp_path / "x.gpkg"), "-d", url, "--layers", "buildings", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "buildings" in proc.stdout and "10" in proc.stdout
    proc = run_cim("export", str(tmp_path / "x.txt"), "-d", url, env=env)
    assert proc.returncode == 1 and "the suffix says the format" in proc.stderr
    proc = run_cim("export", str(tmp_path / "y.fgb"), "-d", url, "--layers", "buildings,roads", env=env)
    assert proc.returncode == 1 and "FlatGeobuf holds one layer" in proc.stderr
    proc = run_cim("export", str(tmp_path / "y.gpkg"), "-d", url, "--bbox", "1,2,3", env=env)
    assert proc.returncode == 1 and "--bbox: four numbers" in proc.stderr
    assert not (tmp_path / "y.fgb").exists() and not (tmp_path / "y.gpkg").exists()
