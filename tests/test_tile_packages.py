"""Tile packages (MBTiles 1.3, PMTiles v3) from the CLI and the cim-tiles-package process, on both backends.

Every package is read back with tools that are not ours (sqlite3, GDAL's MBTiles driver, the pmtiles
reader) and every tile in it is compared, decoded, with the tile the server serves for the same address;
tiles the server answers 204 (empty) must be absent.
"""

from __future__ import annotations

import gzip
import json
import re
import shutil
import sqlite3
import subprocess

import mapbox_vector_tile
import morecantile
import pytest
import shapely
from pmtiles.reader import MmapSource, Reader
from pmtiles.tile import Compression, TileType
from sqlalchemy import text

from cim.crs import tms as tms_registry

from .conftest import run_cim, wait_for_job

BBOX = (123.766, 41.297, 123.772, 41.302)
LAYERS = ["buildings", "roads", "pipelines", "pipe-nodes"]


def decoded(data: bytes) -> dict[str, dict[str, dict]]:
    doc = mapbox_vector_tile.decode(data)
    return {name: {f["properties"]["id"]: f["properties"] for f in layer["features"]} for name, layer in doc.items()}


def addresses(tms_id: str, zooms: range) -> list[morecantile.Tile]:
    return list(tms_registry.get(tms_id).tiles(*BBOX, list(zooms)))


def served(http, tms_id: str, tile: morecantile.Tile, layers: list[str]) -> bytes | None:
    """The server's tile (None when it says there is nothing there: 204, or 404 outside the limits)."""
    r = http.get(f"/tiles/{tms_id}/{tile.z}/{tile.y}/{tile.x}", params={"collections": ",".join(layers)})
    assert r.status_code in (200, 204, 404), r.text
    return r.content if r.status_code == 200 else None


def package(demo_db, path, *args) -> subprocess.CompletedProcess:
    return run_cim("tiles", "package", "--bbox", ",".join(map(str, BBOX)), "-o", str(path), *args, env=demo_db.env)


@pytest.fixture(scope="module")
def central_building(demo_db) -> tuple[str, float, float]:
    """The building nearest the bbox's centre, with a point inside it (CRS84), from SQL."""
    engine = demo_db.engine()
    gft = "GeomFromText" if engine.dialect.name == "sqlite" else "ST_GeomFromText"
    centre = f"ST_Transform({gft}('POINT(123.769 41.2995)', 4490), 4550)"
    inner = "ST_Transform(ST_PointOnSurface(geom), 4490)"
    with engine.connect() as conn:
        row = conn.execute(text(f"SELECT uid, ST_X({inner}), ST_Y({inner}) FROM city_object WHERE layer = 'buildings' "
                                f"ORDER BY ST_Distance(geom, {centre}), uid LIMIT 1")).one()
    engine.dispose()
    return row[0], float(row[1]), float(row[2])


@pytest.mark.slow
def test_mbtiles_holds_the_served_tiles_and_gdal_reads_it(http, demo_db, tmp_path, central_building):
    path = tmp_path / "city.mbtiles"
    proc = package(demo_db, path, "--zooms", "14-16", "--layers", ",".join(LAYERS))
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT name, value FROM metadata"))
        rows = {(z, x, y): data for z, x, y, data in db.execute(
            "SELECT zoom_level, tile_column, tile_row, tile_data FROM tiles")}
    assert meta["format"] == "pbf" and meta["minzoom"] == "14" and meta["maxzoom"] == "16"
    assert [float(v) for v in meta["bounds"].split(",")] == pytest.approx(BBOX)
    assert meta["type"] == "overlay" and meta["name"]
    vector_layers = json.loads(meta["json"])["vector_layers"]
    assert [v["id"] for v in vector_layers] == LAYERS
    assert "pipe_kind" in next(v for v in vector_layers if v["id"] == "pipelines")["fields"]
    # every tile: the server's, decoded alike; empty ones absent (MBTiles rows count from the bottom)
    stored = 0
    for tile in addresses("WebMercatorQuad", range(14, 17)):
        key = (tile.z, tile.x, 2 ** tile.z - 1 - tile.y)
        expected = served(http, "WebMercatorQuad", tile, LAYERS)
        if expected is None:
            assert key not in rows
            continue
        assert decoded(gzip.decompress(rows[key])) == decoded(expected), tile
        stored += 1
    assert stored == len(rows) > 4
    # GDAL's MBTiles driver: the layers, and a known building where it is
    if shutil.which("ogr2ogr") is None:
        pytest.fail("ogr2ogr is not installed (scripts/install.sh installs gdal-bin with the test extras)")
    info = subprocess.run(["ogrinfo", "-ro", "-so", str(path)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    assert re.findall(r"^\d+: ([\w-]+)", info.stdout, re.M) == LAYERS
    out = tmp_path / "buildings.geojson"
    conv = subprocess.run(["ogr2ogr", "-f", "GeoJSON", str(out), str(path), "buildings", "-t_srs", "EPSG:4326"],
                          capture_output=True, text=True, timeout=120)
    assert conv.returncode == 0, conv.stderr
    uid, lon, lat = central_building
    outlines = [shapely.geometry.shape(f["geometry"]) for f in json.loads(out.read_text())["features"]
                if f["properties"]["id"] == uid]
    assert outlines and shapely.union_all(outlines).buffer(2e-5).contains(shapely.Point(lon, lat))


def test_pmtiles_holds_the_served_tiles(http, demo_db, tmp_path):
    path = tmp_path / "city.pmtiles"
    proc = package(demo_db, path, "--zooms", "13-16", "--layers", "buildings,roads")
    assert proc.returncode == 0, proc.stderr
    with open(path, "rb") as fh:
        reader = Reader(MmapSource(fh))
        header, meta = reader.header(), reader.metadata()
        assert header["tile_type"] == TileType.MVT and header["tile_compression"] == Compression.GZIP
        assert (header["min_zoom"], header["max_zoom"]) == (13, 16) and header["clustered"]
        assert header["min_lon_e7"] == round(BBOX[0] * 1e7) and header["max_lat_e7"] == round(BBOX[3] * 1e7)
        assert [v["id"] for v in meta["vector_layers"]] == ["buildings", "roads"]
        count = 0
        for tile in addresses("WebMercatorQuad", range(13, 17)):
            got = reader.get(tile.z, tile.x, tile.y)
            expected = served(http, "WebMercatorQuad", tile, ["buildings", "roads"])
            if expected is None:
                assert got is None
                continue
            assert decoded(gzip.decompress(got)) == decoded(expected), tile
            count += 1
        assert count == header["addressed_tiles_count"] > 4


def test_mbtiles_in_the_tianditu_quad(http, demo_db, tmp_path):
    path = tmp_path / "tianditu.mbtiles"
    proc = package(demo_db, path, "--zooms", "15-16", "--layers", "pipelines", "--tms", "CGCS2000TiandituQuad",
                   "--format", "mbtiles")
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT name, value FROM metadata"))
        rows = {(z, x, y): data for z, x, y, data in db.execute("SELECT * FROM tiles")}
    assert meta["tile_matrix_set"] == "CGCS2000TiandituQuad" and meta["crs"].endswith("/4490")
    tms = tms_registry.get("CGCS2000TiandituQuad")
    assert rows
    for tile in addresses("CGCS2000TiandituQuad", range(15, 17)):
        key = (tile.z, tile.x, tms.matrix(tile.z).matrixHeight - 1 - tile.y)
        expected = served(http, "CGCS2000TiandituQuad", tile, ["pipelines"])
        assert (key in rows) == (expected is not None), tile
        if expected is not None:
            assert decoded(gzip.decompress(rows[key])) == decoded(expected)


@pytest.mark.parametrize("args, fragment", [
    (["--zooms", "14", "--layers", "nope", "-o", "x.mbtiles"], "unknown 'nope'"),
    (["--zooms", "14", "--layers", "roads", "--tms", "WorldCRS84Quad", "-o", "x.pmtiles"], "PMTiles"),
    (["--zooms", "14", "--tms", "NoSuchQuad", "-o", "x.mbtiles"], "tile matrix set"),
    (["--zooms", "19-20", "--layers", "roads", "-o", "x.mbtiles"], "zooms"),
    (["--zooms", "16-12", "-o", "x.mbtiles"], "zooms"),
    (["--zooms", "a-b", "-o", "x.mbtiles"], "zooms"),
    (["--zooms", "12-18", "--layers", "roads", "-o", "x.mbtiles", "--bbox", "123.0,41.0,124.5,41.9"], "narrow"),
    (["--zooms", "14", "-o", "x.zip"], "format"),
    (["--zooms", "16", "--bbox", "100.0,20.0,100.001,20.001", "-o", "x.mbtiles"], "no data"),
])
def test_cli_errors_name_the_file_and_leave_nothing(demo_db, tmp_path, args, fragment):
    args = [a if not a.startswith("x.") else str(tmp_path / a) for a in args]
    if "--bbox" not in args:
        args += ["--bbox", ",".join(map(str, BBOX))]
    proc = run_cim("tiles", "package", *args, env=demo_db.env)
    assert proc.returncode == 1, proc.stdout
    assert fragment in proc.stderr and str(tmp_path / "x.") in " ".join(proc.stderr.split())
    assert list(tmp_path.iterdir()) == []


def test_process_job_packages_pmtiles_with_status_and_result(http, tmp_path):
    inputs = {"layers": ["buildings", "pipelines"], "bbox": list(BBOX), "zooms": [15, 16], "format": "pmtiles"}
    r = http.post("/processes/cim-tiles-package/execution", json={"inputs": inputs, "response": "raw"},
                  headers={"Prefer": "respond-async"})
    assert r.status_code == 201, r.text[:500]
    job_url = r.headers["location"]
    _, results = wait_for_job(http, job_url, timeout=180)
    got = http.get(results)
    assert got.status_code == 200 and got.headers["content-type"] == "application/vnd.pmtiles"
    path = tmp_path / "job.pmtiles"
    path.write_bytes(got.content)
    with open(path, "rb") as fh:
        reader = Reader(MmapSource(fh))
        assert [v["id"] for v in reader.metadata()["vector_layers"]] == ["buildings", "pipelines"]
        n = 0
        for tile in addresses("WebMercatorQuad", range(15, 17)):
            expected = served(http, "WebMercatorQuad", tile, ["buildings", "pipelines"])
            data = reader.get(tile.z, tile.x, tile.y)
            assert (data is None) == (expected is None)
            if expected is not None:
                assert decoded(gzip.decompress(data)) == decoded(expected)
                n += 1
        assert n > 2


def test_process_is_listed_with_async_execution(http):
    doc = http.get("/processes/cim-tiles-package", params={"f": "json"}).json()
    assert "async-execute" in doc["jobControlOptions"] and {"layers", "bbox", "zooms"} <= set(doc["inputs"])


def test_process_sync_mbtiles(http, tmp_path):
    inputs = {"layers": ["roads"], "bbox": list(BBOX), "zooms": [14, 14]}
    r = http.post("/processes/cim-tiles-package/execution", json={"inputs": inputs, "response": "raw"}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    path = tmp_path / "roads.mbtiles"
    path.write_bytes(r.content)
    with sqlite3.connect(path) as db:
        assert dict(db.execute("SELECT name, value FROM metadata"))["format"] == "pbf"
        assert db.execute("SELECT count(*) FROM tiles").fetchone()[0] > 0


@pytest.mark.parametrize("inputs, fragment", [
    ({"layers": ["nope"], "bbox": list(BBOX), "zooms": [14, 15]}, "layers"),
    ({"layers": ["roads"], "bbox": [1, 2, 3], "zooms": [14, 15]}, "bbox"),
    ({"layers": ["roads"], "bbox": list(BBOX), "zooms": [14]}, "zooms"),
    ({"layers": ["roads"], "bbox": list(BBOX), "zooms": [14.5, 15]}, "zooms"),
    ({"layers": ["roads"], "bbox": list(BBOX), "zooms": [14, 30]}, "zooms"),
    ({"layers": ["roads"], "bbox": list(BBOX), "zooms": [14, 15], "format": "zip"}, "format"),
    ({"layers": ["roads"], "bbox": list(BBOX), "zooms": [14, 15], "tile_matrix_set": "Nope"}, "tile matrix set"),
    ({"layers": ["roads"], "bbox": [123.0, 41.0, 124.5, 41.9], "zooms": [12, 18]}, "narrow"),
])
def test_process_bad_inputs_are_400(http, inputs, fragment):
    r = http.post("/processes/cim-tiles-package/execution", json={"inputs": inputs, "response": "raw"})
    assert r.status_code == 400, r.text[:500]
    assert fragment in r.json()["description"]


# ---------------------------------------------------------------------------------------------- rasters


def served_map_tile(http, path: str, tile: morecantile.Tile) -> bytes | None:
    r = http.get(f"{path}/{tile.z}/{tile.y}/{tile.x}")
    assert r.status_code in (200, 204, 404), r.text
    return r.content if r.status_code == 200 else None


@pytest.mark.slow
def test_raster_mbtiles_holds_the_served_map_tiles_and_gdal_reads_it(http, demo_db, tmp_path):
    path = tmp_path / "dem.mbtiles"
    proc = package(demo_db, path, "--zooms", "12-14", "--layers", "dem")
    assert proc.returncode == 0, proc.stderr
    with sqlite3.connect(path) as db:
        meta = dict(db.execute("SELECT name, value FROM metadata"))
        rows = {(z, x, y): data for z, x, y, data in db.execute("SELECT * FROM tiles")}
    assert meta["format"] == "png" and meta["style"] == "hillshade" and "json" not in meta
    n = 0
    for tile in addresses("WebMercatorQuad", range(12, 15)):
        key = (tile.z, tile.x, 2 ** tile.z - 1 - tile.y)
        expected = served_map_tile(http, "/collections/dem/map/tiles/WebMercatorQuad", tile)
        assert (key in rows) == (expected is not None), tile
        if expected is not None:
            assert rows[key] == expected
            n += 1
    assert n > 2
    info = subprocess.run(["gdalinfo", "-json", str(path)], capture_output=True, text=True, timeout=120)
    assert info.returncode == 0, info.stderr
    doc = json.loads(info.stdout)
    assert doc["driverShortName"] == "MBTiles" and len(doc["bands"]) == 4
    assert doc["coordinateSystem"]["wkt"] and "3857" in json.dumps(doc["coordinateSystem"])
    lons, lats = [c[0] for c in doc["wgs84Extent"]["coordinates"][0]], [c[1] for c in doc["wgs84Extent"]["coordinates"][0]]
    assert min(lons) <= BBOX[0] and max(lons) >= BBOX[2] and min(lats) <= BBOX[1] and max(lats) >= BBOX[3]


def test_raster_pmtiles_in_another_style(http, demo_db, tmp_path):
    path = tmp_path / "dem.pmtiles"
    proc = package(demo_db, path, "--zooms", "13-14", "--layers", "dem:terrain-rgb")
    assert proc.returncode == 0, proc.stderr
    with open(path, "rb") as fh:
        reader = Reader(MmapSource(fh))
        header = reader.header()
        assert header["tile_type"] == TileType.PNG and header["tile_compression"] == Compression.NONE
        n = 0
        for tile in addresses("WebMercatorQuad", range(13, 15)):
            expected = served_map_tile(http, "/collections/dem/styles/terrain-rgb/map/tiles/WebMercatorQuad", tile)
            got = reader.get(tile.z, tile.x, tile.y)
            assert (got is None) == (expected is None), tile
            if expected is not None:
                assert got == expected
                n += 1
        assert n > 0


@pytest.mark.parametrize("layers, fragment", [("dem,buildings", "one raster layer"), ("dem:visual", "styles")])
def test_raster_package_errors(demo_db, tmp_path, layers, fragment):
    proc = run_cim("tiles", "package", "--bbox", ",".join(map(str, BBOX)), "--zooms", "13", "--layers", layers,
                   "-o", str(tmp_path / "x.mbtiles"), env=demo_db.env)
    assert proc.returncode == 1 and fragment in proc.stderr
    assert list(tmp_path.iterdir()) == []
