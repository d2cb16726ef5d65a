"""The tile cache (vector and raster tiles) against the running server on both backends, and `cim tiles seed`.

Observed from outside: files appearing under the cache folder, bytes and validators of responses, what a
server answers after a cached file was changed behind its back (it serves the file), what a data change
does (`cim load` again, or a version bump), and servers whose cache cannot be written (a path under a
regular file: ENOTDIR; a 64 KiB tmpfs: ENOSPC) still answering every tile, with a warning in their log.
"""

from __future__ import annotations

import gzip
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import mapbox_vector_tile
import morecantile
import pytest
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile

from cim.db.versions import bump

from .conftest import ROOT, SHARED, run_cim, start_server, stop_server
from .test_tiles import httpx_raw

CENTRE = (123.77, 41.30)
WM = morecantile.tms.get("WebMercatorQuad")


@pytest.fixture
def http(raster_server):
    with httpx.Client(base_url=raster_server.url, timeout=60) as client:
        yield client


def cache_dir(db) -> Path:
    return db.data_dir / "tile-cache"


def cached_files(root: Path, collection: str, kind: str, tms: str, z: int, y: int, x: int, ext: str) -> list[Path]:
    """The cache files of one tile, whatever data version folder they are in (not again through the
    ``current`` link of cim/tiles/front.py)."""
    return sorted(p for p in (root / collection / kind / tms).glob(f"*/{z}/{y}/{x}.{ext}") if p.parts[-4] != "current")


def dem_tile(http, zoom: int = 15) -> morecantile.Tile:
    doc = http.get("/collections/dem/map/tiles/WebMercatorQuad").json()
    (w, s), (e, n) = doc["boundingBox"]["lowerLeft"], doc["boundingBox"]["upperRight"]
    return WM.tile((w + e) / 2, (s + n) / 2, zoom)


def is_png(data: bytes) -> bool:
    with warnings.catch_warnings(), MemoryFile(data) as mem:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with mem.open() as img:
            return img.driver == "PNG" and img.width == 256


# ---------------------------------------------------------------------------------------------- hits


def test_raster_tile_is_cached_and_served_from_the_file(http, raster_db):
    tile = dem_tile(http, 14)
    url = f"/collections/dem/map/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}"
    assert cached_files(cache_dir(raster_db), "dem", "map-hillshade", "WebMercatorQuad", *tile[::-1], "png") == []
    first = http.get(url)
    assert first.status_code == 200 and first.headers["cache-control"].startswith("public, max-age=")
    (path,) = cached_files(cache_dir(raster_db), "dem", "map-hillshade", "WebMercatorQuad", *tile[::-1], "png")
    assert path.read_bytes() == first.content
    written = path.stat().st_mtime_ns
    second = http.get(url)
    assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
    assert path.stat().st_mtime_ns == written  # read, not written again
    # the server sends the file's bytes: change them behind its back and it serves the change
    other = http.get(f"/collections/dem/styles/terrain-rgb/map/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}")
    path.write_bytes(other.content)
    assert http.get(url).content == other.content
    path.write_bytes(first.content)
    assert http.get(url, headers={"If-None-Match": first.headers["etag"]}).status_code == 304
    assert "content-encoding" not in second.headers  # PNG is deflated already (and WebP, JPEG compressed)


def test_vector_tile_is_cached_gzipped_and_sent_as_is(http, raster_db):
    tile = WM.tile(*CENTRE, 15)
    url = f"/collections/buildings/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}"
    with httpx_raw(http, url, {"Accept-Encoding": "gzip"}) as (headers, body):
        assert headers["content-encoding"] == "gzip" and "Accept-Encoding" in headers["vary"]
        etag = headers["etag"]
    (path,) = cached_files(cache_dir(raster_db), "buildings", "mvt", "WebMercatorQuad", *tile[::-1], "mvt.gz")
    assert path.read_bytes() == body
    plain = http.get(url, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.content == gzip.decompress(body)
    assert plain.headers["etag"] == etag
    assert mapbox_vector_tile.decode(plain.content)["buildings"]["features"]


def test_data_change_invalidates_vector_and_raster_tiles(http, raster_db):
    tile = WM.tile(*CENTRE, 15)
    url = f"/collections/buildings/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}"
    before = http.get(url)
    (old,) = cached_files(cache_dir(raster_db), "buildings", "mvt", "WebMercatorQuad", *tile[::-1], "mvt.gz")
    engine = raster_db.engine()
    try:
        from cim.db.schema import tables_for

        with engine.begin() as conn:
            bump(conn, tables_for(engine), ["buildings"])
    finally:
        engine.dispose()
    after = http.get(url)
    assert after.headers["etag"] != before.headers["etag"] and after.content == before.content
    assert http.get(url, headers={"If-None-Match": before.headers["etag"]}).status_code == 200
    # the old version is gone once the `current` link has moved (cim.tile_cache_links_s, 2 s: until then a
    # front server may still be sending its tiles)
    deadline = time.monotonic() + 20
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    (new,) = cached_files(cache_dir(raster_db), "buildings", "mvt", "WebMercatorQuad", *tile[::-1], "mvt.gz")
    assert new.parent.parent.parent != old.parent.parent.parent and not old.exists()

    # a raster: cim load of the same file again is a new version of it
    doc = http.get("/collections/lidar_dtm_2m_epsg26918/map/tiles/WebMercatorQuad").json()
    lim = doc["tileMatrixSetLimits"][-3]
    z, y, x = int(lim["tileMatrix"]), lim["minTileRow"], lim["minTileCol"]
    rurl = f"/collections/lidar_dtm_2m_epsg26918/map/tiles/WebMercatorQuad/{z}/{y}/{x}"
    first = http.get(rurl)
    (cached,) = cached_files(cache_dir(raster_db), "lidar_dtm_2m_epsg26918", "map-hillshade", "WebMercatorQuad",
                             z, y, x, "png")
    run_cim("load", str(SHARED / "datasets/raster/lidar_dtm_2m_epsg26918.tif"), env=raster_db.env, check=True)
    second = http.get(rurl)
    assert second.headers["etag"] != first.headers["etag"] and second.content == first.content
    (regenerated,) = cached_files(cache_dir(raster_db), "lidar_dtm_2m_epsg26918", "map-hillshade",
                                  "WebMercatorQuad", z, y, x, "png")
    assert regenerated != cached and not cached.exists()


# ---------------------------------------------------------------------------------------------- seeding


def seed(db, *args: str, cache: Path | None = None) -> subprocess.CompletedProcess:
    env = {**db.env, **({"CIM_TILE_CACHE_DIR": str(cache)} if cache else {})}
    return run_cim("tiles", "seed", *args, env=env)


SEED_ARGS = ("--bbox", "123.765,41.295,123.775,41.305", "--zooms", "14-16", "--tms", "WebMercatorQuad",
             "--collections", "dem,buildings")


def tiles_in(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def counts(output: str) -> dict[str, int]:
    m = re.search(r"([\d,]+) built, ([\d,]+) empty, ([\d,]+) already cached, ([\d,]+) failed", output)
    assert m, output
    return dict(zip(("built", "empty", "skipped", "failed"), (int(v.replace(",", "")) for v in m.groups())))


@pytest.mark.slow  # command-line runs / a server of its own: 20-45 s on a shared machine
def test_seed_then_resume_and_the_server_serves_the_seeded_tiles(http, raster_db):
    root = cache_dir(raster_db)
    first = seed(raster_db, *SEED_ARGS)
    assert first.returncode == 0, first.stderr
    done = counts(first.stdout)
    assert done["failed"] == 0 and done["built"] + done["skipped"] >= 3 * 4  # DEM styles and buildings, 3 zooms
    w, s, e, n = (float(v) for v in SEED_ARGS[1].split(","))
    wanted = {(t.z, t.y, t.x) for t in WM.tiles(w, s, e, n, [14, 15, 16])}
    seeded = [p for p in tiles_in(root / "dem") + tiles_in(root / "buildings")
              if (int(p.parts[-3]), int(p.parts[-2]), int(p.name.split(".")[0])) in wanted]
    assert len(seeded) == done["built"] + done["empty"] + done["skipped"]
    # interrupted: some tiles lost; the second run builds those only
    lost = seeded[::3][:5]
    for p in lost:
        p.unlink()
    second = counts(seed(raster_db, *SEED_ARGS).stdout)
    assert second["built"] + second["empty"] == len(lost) and second["skipped"] == len(seeded) - len(lost)
    assert all(p.exists() for p in lost)
    third = counts(seed(raster_db, *SEED_ARGS).stdout)
    assert third["built"] == third["empty"] == 0 and third["skipped"] == len(seeded)
    # the server finds them: the same file, not written again, its bytes served
    path = next(p for p in seeded if p.suffix == ".png" and p.stat().st_size)
    style = path.parts[-6].removeprefix("map-")
    mtime = path.stat().st_mtime_ns
    r = http.get(f"/collections/dem/styles/{style}/map/tiles/WebMercatorQuad/{path.parts[-3]}/{path.parts[-2]}/"
                 f"{path.stem}")
    assert r.status_code == 200 and r.content == path.read_bytes() and path.stat().st_mtime_ns == mtime


@pytest.mark.slow  # command-line runs / a server of its own: 20-45 s on a shared machine
def test_seed_bad_options_name_the_option(raster_db):
    for args, words in ((("--bbox", "1,2,3", "--zooms", "14"), "--bbox"),
                        (("--bbox", "123.7,41.2,123.8,41.3", "--zooms", "x"), "--zooms"),
                        (("--bbox", "123.7,41.2,123.8,41.3", "--zooms", "14", "--tms", "NoSuchQuad"), "--tms"),
                        (("--bbox", "123.7,41.2,123.8,41.3", "--zooms", "14", "--collections", "nope"), "nope")):
        r = seed(raster_db, *args)
        assert r.returncode != 0 and words in r.stderr, r.stderr


@pytest.mark.slow  # command-line runs / a server of its own: 20-45 s on a shared machine
def test_concurrent_seeds_write_whole_tiles(raster_db, tmp_path):
    """Two seeders (4 threads each) on one fresh cache: every file is a whole tile, no temporary left."""
    root = tmp_path / "cache"
    env = {**os.environ, **raster_db.env, "CIM_TILE_CACHE_DIR": str(root)}
    procs = [subprocess.Popen([sys.executable, "-m", "cim.cli", "tiles", "seed", *SEED_ARGS, "--workers", "4"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    for p in procs:
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
    files = tiles_in(root)
    assert files and not [p for p in files if p.name.endswith(".tmp")]
    for p in files:
        data = p.read_bytes()
        if p.name.endswith(".mvt.gz"):
            assert not data or mapbox_vector_tile.decode(gzip.decompress(data))
        elif data:
            assert is_png(data), p


# ---------------------------------------------------------------------------------------------- faults


def assert_tiles_served(url: str, reference: httpx.Client, tile: morecantile.Tile) -> None:
    paths = [f"/collections/dem/map/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}",
             f"/collections/dem/styles/terrain-rgb/map/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}",
             f"/collections/buildings/tiles/WebMercatorQuad/15/{WM.tile(*CENTRE, 15).y}/{WM.tile(*CENTRE, 15).x}"]
    with httpx.Client(base_url=url, timeout=60) as client:
        for path in paths:
            for _ in range(2):
                r = client.get(path)
                assert r.status_code == 200, r.text
                assert r.content == reference.get(path).content


@pytest.mark.slow  # command-line runs / a server of its own: 20-45 s on a shared machine
def test_unwritable_cache_serves_tiles_uncached_with_a_warning(http, raster_db, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a regular file where the cache's parent folder should be")
    server = start_server(raster_db, {"CIM_TILE_CACHE_DIR": str(blocker / "cache")}, log_name="enotdir.log")
    try:
        assert_tiles_served(server.url, http, dem_tile(http, 14))
    finally:
        stop_server(server)
    log = (raster_db.data_dir / "enotdir.log").read_text()
    assert "tile cache" in log and "ENOTDIR" in log and "serving them uncached" in log
    assert log.count("ENOTDIR") == 1  # once a minute, not once a tile (and a miss on reading is no failure)


@pytest.mark.slow  # command-line runs / a server of its own: 20-45 s on a shared machine
def test_full_cache_serves_tiles_uncached_with_a_warning(http, raster_db, tmp_path):
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        (mount / "filler").write_bytes(b"\0" * (60 * 1024))  # leaves less than one DEM tile's room
        server = start_server(raster_db, {"CIM_TILE_CACHE_DIR": str(mount / "cache")}, log_name="enospc.log")
        try:
            assert_tiles_served(server.url, http, dem_tile(http, 13))
        finally:
            stop_server(server)
        assert not [p for p in mount.rglob("*.tmp")]  # a failed write leaves no temporary file
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    log = (raster_db.data_dir / "enospc.log").read_text()
    assert "tile cache" in log and "ENOSPC" in log
