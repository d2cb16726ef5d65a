"""Quantized-mesh terrain (/terrain for Cesium, `cim terrain build`), on both backends, checked from outside:

- tiles decoded by a decoder written here from Cesium's quantized-mesh-1.0 specification (header, zig-zag
  delta vertices, high-water-mark indices, edge indices, octvertexnormals), not by the encoder's package;
- vertex heights against the DEM read here with rasterio and pyproj (bilinear), within the level's mesh
  error, and the mesh between its vertices against every DEM cell centre of the tile;
- neighbouring tiles share their edge vertices (no cracks);
- layer.json's available ranges against the tiles served (200 inside, 404 outside);
- with a geoid grid, heights are ellipsoidal (DEM + the grid's anomaly), and buildings stand on the terrain;
- HTTP: ETag keyed on the DEM version (304, changed when the DEM changes), gzip, 400/404 as OGC JSON; the
  server answers from the pre-built folder while it is current.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import rasterio
import yaml
from pyproj import Transformer
from sqlalchemy import select

from tests.conftest import ROOT, geoid_anomaly, run_cim, start_server, stop_server

QM = "application/vnd.quantized-mesh"
LONLAT_TO_GK = Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True)
GEODETIC_TO_ECEF = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)


# ---------------------------------------------------------------------- an independent decoder
@dataclass
class Decoded:
    header: dict[str, float]
    u: np.ndarray
    v: np.ndarray
    h: np.ndarray  # quantized 0..32767
    triangles: np.ndarray
    edges: dict[str, np.ndarray]
    extensions: dict[int, bytes]

    def positions(self, bounds: tuple[float, float, float, float]) -> np.ndarray:
        w, s, e, n = bounds
        lo, hi = self.header["min_h"], self.header["max_h"]
        return np.column_stack([w + (e - w) * self.u / 32767, s + (n - s) * self.v / 32767,
                                lo + (hi - lo) * self.h / 32767])

    @property
    def height_step(self) -> float:
        return (self.header["max_h"] - self.header["min_h"]) / 32767


def _zigzag_deltas(raw: np.ndarray) -> np.ndarray:
    values = raw.astype(np.int64)
    return np.cumsum((values >> 1) ^ -(values & 1))


def decode(data: bytes) -> Decoded:
    """quantized-mesh-1.0 as https://github.com/CesiumGS/quantized-mesh specifies it (little-endian)."""
    names = ["cx", "cy", "cz", "min_h", "max_h", "bx", "by", "bz", "radius", "hx", "hy", "hz"]
    header = dict(zip(names, struct.unpack_from("<3d2f4d3d", data, 0)))
    pos = 88
    (n,) = struct.unpack_from("<I", data, pos)
    pos += 4
    arrays = []
    for _ in range(3):
        arrays.append(_zigzag_deltas(np.frombuffer(data, "<u2", n, pos)))
        pos += 2 * n
    wide = n > 65536
    size, dtype = (4, "<u4") if wide else (2, "<u2")
    pos += (-pos) % size  # indices are aligned to their size
    (tri_count,) = struct.unpack_from("<I", data, pos)
    pos += 4
    codes = np.frombuffer(data, dtype, tri_count * 3, pos).astype(np.int64)
    pos += size * tri_count * 3
    indices, highest = np.empty(len(codes), np.int64), 0
    for i, code in enumerate(codes):  # high-water mark
        indices[i] = highest - code
        if code == 0:
            highest += 1
    edges = {}
    for side in ("west", "south", "east", "north"):
        (count,) = struct.unpack_from("<I", data, pos)
        pos += 4
        edges[side] = np.frombuffer(data, dtype, count, pos).astype(np.int64)
        pos += size * count
    extensions = {}
    while pos < len(data):
        ext_id, length = struct.unpack_from("<BI", data, pos)
        pos += 5
        extensions[ext_id] = data[pos:pos + length]
        pos += length
    assert pos == len(data)
    return Decoded(header, arrays[0], arrays[1], arrays[2], indices.reshape(-1, 3), edges, extensions)


def oct_decode(data: bytes) -> np.ndarray:
    xy = np.frombuffer(data, np.uint8).reshape(-1, 2).astype(float) / 255 * 2 - 1
    z = 1 - np.abs(xy[:, 0]) - np.abs(xy[:, 1])
    x, y = xy[:, 0].copy(), xy[:, 1].copy()
    neg = z < 0
    x[neg] = (1 - np.abs(xy[neg, 1])) * np.sign(xy[neg, 0])
    y[neg] = (1 - np.abs(xy[neg, 0])) * np.sign(xy[neg, 1])
    v = np.column_stack([x, y, z])
    return v / np.linalg.norm(v, axis=1)[:, None]


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    size = 180.0 / 2 ** z
    return -180 + x * size, -90 + y * size, -180 + (x + 1) * size, -90 + (y + 1) * size


class DEMReader:
    """The demo DEM, read here (rasterio) with bilinear interpolation at lon/lat points."""

    def __init__(self, path) -> None:
        with rasterio.open(path) as src:
            self.data = src.read(1, masked=True).astype(float).filled(np.nan)
            self.inv = ~src.transform
            self.transform = src.transform
            self.bounds = src.bounds

    def heights(self, lon, lat) -> np.ndarray:
        e, n = LONLAT_TO_GK.transform(np.asarray(lon), np.asarray(lat))
        col, row = self.inv @ (np.asarray(e), np.asarray(n))
        col, row = np.asarray(col) - 0.5, np.asarray(row) - 0.5
        rows, cols = self.data.shape
        out = np.full(col.shape, np.nan)
        ok = (col >= 0) & (row >= 0) & (col <= cols - 1) & (row <= rows - 1)
        c0 = np.minimum(np.floor(col[ok]).astype(int), cols - 2)
        r0 = np.minimum(np.floor(row[ok]).astype(int), rows - 2)
        fc, fr = col[ok] - c0, row[ok] - r0
        d = self.data
        out[ok] = ((d[r0, c0] * (1 - fc) + d[r0, c0 + 1] * fc) * (1 - fr)
                   + (d[r0 + 1, c0] * (1 - fc) + d[r0 + 1, c0 + 1] * fc) * fr)
        return out


def mesh_at(positions: np.ndarray, triangles: np.ndarray, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """The mesh's height at points (barycentric in lon/lat), NaN where no triangle holds them."""
    out = np.full(len(lon), np.nan)
    for a, b, c in triangles:
        pa, pb, pc = positions[a], positions[b], positions[c]
        det = (pb[1] - pc[1]) * (pa[0] - pc[0]) + (pc[0] - pb[0]) * (pa[1] - pc[1])
        if det == 0:
            continue
        l1 = ((pb[1] - pc[1]) * (lon - pc[0]) + (pc[0] - pb[0]) * (lat - pc[1])) / det
        l2 = ((pc[1] - pa[1]) * (lon - pc[0]) + (pa[0] - pc[0]) * (lat - pc[1])) / det
        l3 = 1 - l1 - l2
        inside = (l1 >= -1e-9) & (l2 >= -1e-9) & (l3 >= -1e-9)
        out[inside] = (l1 * pa[2] + l2 * pb[2] + l3 * pc[2])[inside]
    return out


# ---------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def layer(server) -> dict:
    r = httpx.get(f"{server.url}/terrain/layer.json", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def fetch(server, z: int, x: int, y: int, **headers) -> httpx.Response:
    return httpx.get(f"{server.url}/terrain/{z}/{x}/{y}.terrain", headers=headers, timeout=60)


def deepest_tiles(layer: dict, up: int = 0) -> list[tuple[int, int, int]]:
    z = layer["maxzoom"] - up
    r = layer["available"][z][0]
    return [(z, x, y) for x in range(r["startX"], r["endX"] + 1) for y in range(r["startY"], r["endY"] + 1)]


# ---------------------------------------------------------------------- tests
def test_layer_json_describes_cesium_geographic_tiling(layer, server):
    assert layer["format"] == "quantized-mesh-1.0" and layer["scheme"] == "tms"
    assert layer["projection"] == "EPSG:4326" and layer["minzoom"] == 0
    assert layer["tiles"][0].startswith("{z}/{x}/{y}.terrain")
    assert "octvertexnormals" in layer["extensions"]
    assert layer["available"][0] == [{"startX": 0, "startY": 0, "endX": 1, "endY": 0}]  # both root tiles
    assert len(layer["available"]) == layer["maxzoom"] + 1
    # 5 m demo DEM, 256 samples a tile: level 14 is the first whose samples (4.8 m) are as fine
    assert layer["maxzoom"] == 14
    w, s, e, n = layer["cim"]["dem_bounds"]
    assert 123.7 < w < e < 123.85 and 41.25 < s < n < 41.35
    for z, ranges in enumerate(layer["available"][1:], start=1):
        size = 180 / 2 ** z
        r = ranges[0]
        assert r["startX"] == int((w + 180) // size) and r["endX"] == int((e + 180) // size)
        assert r["startY"] == int((s + 90) // size) and r["endY"] == int((n + 90) // size)


def test_served_tiles_match_the_available_ranges(layer, server):
    for z in (0, 5, 10, layer["maxzoom"]):
        r = layer["available"][z][0]
        for x, y in ((r["startX"], r["startY"]), (r["endX"], r["endY"])):
            resp = fetch(server, z, x, y)
            assert resp.status_code == 200 and resp.headers["content-type"].startswith(QM)
            decode(resp.content)
        for x, y in ((r["endX"] + 1, r["startY"]), (r["startX"], r["endY"] + 1)):
            resp = fetch(server, z, x, y)
            assert resp.status_code == 404 and resp.json()["code"] == "NotFound"
    z = layer["maxzoom"]
    r = layer["available"][z][0]
    assert fetch(server, z + 1, 2 * r["startX"], 2 * r["startY"]).status_code == 404  # deeper than maxzoom
    bad = httpx.get(f"{server.url}/terrain/14/a/1.terrain")
    assert bad.status_code == 400 and "z/x/y" in bad.json()["description"]
    unknown = httpx.get(f"{server.url}/terrain/0/0/0.terrain?foo=1")
    assert unknown.status_code == 400 and "foo" in unknown.json()["description"]


@pytest.mark.slow  # ~35 s: 47 tiles made on demand and checked against every DEM cell
def test_vertices_are_the_dem_within_the_mesh_error_and_the_mesh_follows_the_dem(layer, server, demo_db):
    dem = DEMReader(demo_db.data_dir / "dem.cog.tif")
    errors = {int(k): v for k, v in layer["cim"]["max_error_m"].items()}
    checked, worst_seen = 0, {}
    for z, x, y in deepest_tiles(layer) + deepest_tiles(layer, up=1):
        d = decode(fetch(server, z, x, y).content)
        bounds = tile_bounds(z, x, y)
        p = d.positions(bounds)
        expected = dem.heights(p[:, 0], p[:, 1])
        inside = ~np.isnan(expected)
        # no geoid grid on this server: heights pass through as stored
        tolerance = errors[z] + d.height_step
        assert np.all(np.abs(p[inside, 2] - expected[inside]) <= tolerance), (z, x, y)
        e, n = LONLAT_TO_GK.transform(p[:, 0], p[:, 1])
        b = dem.bounds
        # (decoded positions are within ~0.5 m: the encoder keeps lon/lat as float32)
        outside = (e < b.left - 1) | (e > b.right + 1) | (n < b.bottom - 1) | (n > b.top + 1)
        assert np.all(np.abs(p[outside, 2]) <= d.height_step)  # the ellipsoid beyond the DEM
        # every DEM cell centre of the tile away from the DEM's edge (where the surface drops to the ellipsoid
        # between two samples): the mesh within the level's error (+ the DEM's own bilinear variation between
        # the tile's samples, a fraction of a metre on the demo valley)
        w, s, e, n = bounds
        rows, cols = np.mgrid[4:dem.data.shape[0] - 4, 4:dem.data.shape[1] - 4]
        ex, ny = dem.transform @ (cols.ravel() + 0.5, rows.ravel() + 0.5)
        lon, lat = Transformer.from_crs("EPSG:4550", "EPSG:4490", always_xy=True).transform(ex, ny)
        lon, lat = np.asarray(lon), np.asarray(lat)
        pick = (lon > w) & (lon < e) & (lat > s) & (lat < n)
        if pick.sum() < 100 or checked >= 8:
            continue
        truth = dem.data[4:-4, 4:-4].ravel()[pick]
        meshed = mesh_at(p, d.triangles, lon[pick], lat[pick])
        assert not np.isnan(meshed).any()
        worst = float(np.max(np.abs(meshed - truth)))
        assert worst <= errors[z] + 1.0, (z, x, y, worst)
        worst_seen[z] = max(worst_seen.get(z, 0.0), worst)
        checked += 1
    assert checked >= 4
    print("largest mesh error against the DEM's cells, by level:", worst_seen, "allowed:", errors)


def test_neighbouring_tiles_share_their_edge_vertices(layer, server):
    tiles = set(deepest_tiles(layer))
    decoded = {t: decode(fetch(server, *t).content) for t in tiles}
    pairs = 0
    for (z, x, y), d in decoded.items():
        for (dx, dy, mine, theirs, along) in ((1, 0, "east", "west", "v"), (0, 1, "north", "south", "u")):
            other = decoded.get((z, x + dx, y + dy))
            if other is None:
                continue
            a_idx, b_idx = d.edges[mine], other.edges[theirs]
            a_pos = getattr(d, along)[a_idx]
            b_pos = getattr(other, along)[b_idx]
            assert sorted(a_pos.tolist()) == sorted(b_pos.tolist()), ((z, x, y), mine)
            ha = d.positions(tile_bounds(z, x, y))[a_idx, 2][np.argsort(a_pos)]
            hb = other.positions(tile_bounds(z, x + dx, y + dy))[b_idx, 2][np.argsort(b_pos)]
            assert np.allclose(ha, hb, atol=d.height_step + other.height_step + 1e-3)
            pairs += 1
    assert pairs >= 4
    # the edge index lists are exactly the vertices on each edge
    d = next(iter(decoded.values()))
    assert set(d.edges["west"].tolist()) == set(np.flatnonzero(d.u == 0).tolist())
    assert set(d.edges["north"].tolist()) == set(np.flatnonzero(d.v == 32767).tolist())


def test_header_triangles_and_normals(layer, server):
    z, x, y = deepest_tiles(layer)[len(deepest_tiles(layer)) // 2]
    plain = fetch(server, z, x, y)
    assert plain.headers["content-type"] == QM and not decode(plain.content).extensions
    r = fetch(server, z, x, y, accept=f"{QM};extensions=octvertexnormals,application/octet-stream;q=0.9")
    assert r.headers["content-type"] == f"{QM};extensions=octvertexnormals"
    assert r.headers["etag"] != plain.headers["etag"]
    d = decode(r.content)
    p = d.positions(tile_bounds(z, x, y))
    ecef = np.column_stack(GEODETIC_TO_ECEF.transform(p[:, 0], p[:, 1], p[:, 2]))
    centre = np.array([d.header["cx"], d.header["cy"], d.header["cz"]])
    assert np.allclose(centre, (ecef.min(0) + ecef.max(0)) / 2, atol=1.0)
    sphere = np.array([d.header["bx"], d.header["by"], d.header["bz"]])
    assert np.all(np.linalg.norm(ecef - sphere, axis=1) <= d.header["radius"] + 0.5)
    assert d.header["min_h"] == pytest.approx(p[:, 2].min(), abs=0.01)
    # triangles cover the tile once: their areas (u, v) add up to the square, all counter-clockwise
    a, b, c = (np.column_stack([d.u, d.v]).astype(float)[d.triangles[:, i]] for i in range(3))
    cross = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    assert np.all(cross > 0)
    assert cross.sum() / 2 == pytest.approx(32767.0 ** 2, rel=1e-6)
    normals = oct_decode(d.extensions[1])
    assert len(normals) == len(d.u)
    lon, lat = np.radians(p[:, 0]), np.radians(p[:, 1])
    up = np.column_stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)])
    cosine = np.einsum("ij,ij->i", normals, up)
    # up, on the valley's gentle slopes: vertices 30 m or more inside the DEM (at its edge the surface drops
    # to the ellipsoid, and the encoder's float32 ECEF makes those slivers' normals noisy)
    e, n = LONLAT_TO_GK.transform(p[:, 0], p[:, 1])
    b = demo_bounds(server)
    away = (e > b.left + 30) & (e < b.right - 30) & (n > b.bottom + 30) & (n < b.top - 30)
    assert away.sum() > 20 and np.all(cosine[away] > 0.7) and np.median(cosine[away]) > 0.95


def demo_bounds(server):
    with rasterio.open(server.db.data_dir / "dem.cog.tif") as src:
        return src.bounds


def test_etag_gzip_and_cache_headers(layer, server):
    z, x, y = deepest_tiles(layer)[0]
    r = fetch(server, z, x, y, **{"accept-encoding": "gzip"})
    assert r.status_code == 200 and r.headers["etag"].startswith('W/"')
    assert "max-age" in r.headers["cache-control"]
    if len(r.content) >= 1024:
        assert r.headers["content-encoding"] == "gzip"
    again = fetch(server, z, x, y, **{"if-none-match": r.headers["etag"]})
    assert again.status_code == 304
    lj = httpx.get(f"{server.url}/terrain/layer.json", headers={"if-none-match": r.headers["etag"]})
    assert lj.status_code == 200 and lj.headers["etag"] != r.headers["etag"]


@pytest.fixture(scope="module")
def grid_server(demo_db, geoid_grid, tmp_path_factory):
    """A server of the SpatiaLite demo with a geoid grid and a pre-built terrain folder (config file)."""
    if demo_db.backend != "spatialite":
        pytest.skip("the pre-built folder and the geoid grid do not depend on the backend")
    folder = tmp_path_factory.mktemp("terrain")
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    config["cim"]["geoid_grid"] = str(geoid_grid)
    config["cim"]["terrain"] = {"out_dir": str(folder / "prebuilt")}
    path = folder / "config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    env = {"CIM_CONFIG": str(path)}
    built = run_cim("terrain", "build", env={**demo_db.env, **env}, check=True)
    assert "tiles (levels 0–14)" in built.stdout and "warning" not in built.stderr
    srv = start_server(demo_db, env, log_name="terrain-server.log")
    yield srv, folder / "prebuilt"
    stop_server(srv)


@pytest.mark.slow  # its fixture pre-builds the demo's 67 tiles (~40 s)
def test_cli_build_writes_every_available_tile(grid_server):
    srv, folder = grid_server
    doc = json.loads((folder / "layer.json").read_text())
    served = httpx.get(f"{srv.url}/terrain/layer.json").json()
    assert doc["available"] == served["available"] and doc["tiles"] == served["tiles"]
    expected = {(z, x, y) for z, ranges in enumerate(doc["available"]) for r in ranges
                for x in range(r["startX"], r["endX"] + 1) for y in range(r["startY"], r["endY"] + 1)}
    found = {(int(p.parent.parent.name), int(p.parent.name), int(p.name.split(".")[0]))
             for p in folder.rglob("*.terrain") if not p.name.endswith(".normals.terrain")}
    assert found == expected
    assert len(list(folder.rglob("*.normals.terrain"))) == len(expected)


def test_geoid_heights_and_buildings_standing_on_the_terrain(grid_server, demo_db):
    srv, folder = grid_server
    layer = httpx.get(f"{srv.url}/terrain/layer.json").json()
    assert "geoid grid" in layer["cim"]["heights"] and layer["cim"]["height_warning"] is None
    dem = DEMReader(demo_db.data_dir / "dem.cog.tif")
    engine = demo_db.engine()
    from cim.db.schema import tables_for

    t = tables_for(engine)
    co = t.city_object
    with engine.connect() as conn:
        rows = conn.execute(select(co.c.uid, co.c.min_z, co.c.geom).where(co.c.layer == "buildings")
                            .where(co.c.object_class == "Building").order_by(co.c.id).limit(400)).all()
    engine.dispose()
    from geoalchemy2.shape import to_shape

    z = layer["maxzoom"]
    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    diffs = []
    to_lonlat = Transformer.from_crs("EPSG:4550", "EPSG:4490", always_xy=True)
    for _uid, min_z, footprint in rows:
        c = to_shape(footprint).centroid
        lon, lat = to_lonlat.transform(c.x, c.y)
        size = 180 / 2 ** z
        x, y = int((lon + 180) // size), int((lat + 90) // size)
        if (x, y) not in cache:
            d = decode(fetch(srv, z, x, y).content)
            cache[(x, y)] = (d.positions(tile_bounds(z, x, y)), d.triangles)
            p = cache[(x, y)][0]
            expected = dem.heights(p[:, 0], p[:, 1]) + geoid_anomaly(p[:, 0], p[:, 1])
            inside = ~np.isnan(expected)
            assert np.all(np.abs(p[inside, 2] - expected[inside]) <= 0.5 + d.height_step + 0.01)
        p, tri = cache[(x, y)]
        ground = mesh_at(p, tri, np.array([lon]), np.array([lat]))[0]
        # the building's ground (1985 height) placed as the 3D tiles place it: + the same anomaly
        diffs.append(ground - (min_z + float(geoid_anomaly(lon, lat))))
    diffs = np.abs(np.array(diffs))
    # the demo sets a building's ground at its plan centre; the footprint's centroid is a few metres off
    assert np.median(diffs) < 0.5 and diffs.max() < 2.0, (np.median(diffs), diffs.max())


def test_server_answers_from_the_prebuilt_folder_and_the_etag_follows_the_dem(grid_server, demo_db):
    srv, folder = grid_server
    z = 14
    layer = httpx.get(f"{srv.url}/terrain/layer.json").json()
    r = layer["available"][z][0]
    x, y = r["startX"], r["startY"]
    path = folder / str(z) / str(x) / f"{y}.terrain"
    first = fetch(srv, z, x, y)
    assert first.content == path.read_bytes()
    original = path.read_bytes()
    try:
        path.write_bytes(original + b"\x00")  # a marker only the folder has
        assert fetch(srv, z, x, y).content == original + b"\x00"
    finally:
        path.write_bytes(original)
    dem_path = demo_db.data_dir / "dem.cog.tif"
    st = dem_path.stat()
    try:
        os.utime(dem_path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # the DEM changed
        changed = fetch(srv, z, x, y, **{"if-none-match": first.headers["etag"]})
        assert changed.status_code == 200 and changed.headers["etag"] != first.headers["etag"]
        assert httpx.get(f"{srv.url}/terrain/layer.json").json()["tiles"] != layer["tiles"]
        decode(changed.content)  # made on demand: the folder is no longer current
    finally:
        os.utime(dem_path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_no_dem_is_a_404_and_a_cli_error(new_database, tmp_path):
    url = new_database("spatialite")
    env = {"CIM_DATABASE_URL": url, "CIM_DATA_DIR": str(tmp_path / "data")}
    run_cim("db", "init", env=env, check=True)
    proc = run_cim("terrain", "build", "--out", str(tmp_path / "t"), env=env)
    assert proc.returncode == 1 and "no DEM is registered" in proc.stderr
    assert not (tmp_path / "t" / "layer.json").exists()


def test_gzip_roundtrip_of_a_big_tile(layer, server):
    tiles = deepest_tiles(layer)
    sizes = []
    for t in tiles[:6]:
        r = httpx.get(f"{server.url}/terrain/{t[0]}/{t[1]}/{t[2]}.terrain",
                      headers={"accept-encoding": "gzip"}, timeout=60)
        sizes.append(len(r.content))
        if r.headers.get("content-encoding") == "gzip":
            raw = httpx.Client().send(r.request, stream=True)
            body = gzip.decompress(b"".join(raw.iter_raw()))
            raw.close()
            assert body == r.content
            return
    pytest.fail(f"no tile big enough to be gzipped: {sizes}")
