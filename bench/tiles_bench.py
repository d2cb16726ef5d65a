"""Benchmark: vector tiles (MVT) of the buildings, our uncached tiles against tipg and stock pygeoapi 0.24.

Not a test (timings belong here, not in pytest). Set up the peers once (bench/peers.sh), then:

    .venv/bin/python bench/tiles_bench.py                                  # throwaway PostGIS + demo (100k)
    .venv/bin/python bench/tiles_bench.py --database-url "$CIM_DATABASE_URL"   # an existing 100k demo city
    .venv/bin/python bench/tiles_bench.py --report bench/results/tiles-….json  # show a saved run again

Method (../shared/PERF-NOTES.md), as bench/features_bench.py, whose servers, wrk driver and idle checks this
script reuses:
- One PostGIS, two databases: the 100,000-building demo city, and a 1,000,000-building one **derived from
  it in SQL** (``CREATE DATABASE … TEMPLATE``, then nine translated copies of every building with new ids
  and uids, laid out on a grid beside the original, ~28 × 26 km each): the same buildings at the same
  density over ten times the area, built in minutes instead of the ~22 min (quiet machine) of ``cim demo
  --size 1000000``. Only footprints and attributes are copied (no 3D geometry: tiles do not read it).
- Servers, the same worker count: ``cim serve --workers W`` (uvicorn + uvloop), our uncached MVT route
  ``/collections/buildings/tiles/WebMercatorQuad/{z}/{row}/{col}`` on ``city_object`` (EPSG:4550); tipg
  (uvicorn ``--workers W``, uvloop + httptools) and pygeoapi 0.24's ``MVT-postgresql`` provider (gunicorn
  ``-w W``) on ``public.buildings_4326``, the peers' best case (features_bench.create_peer_table). tipg is
  asked for the properties ours writes at each zoom (``properties=``); pygeoapi has no such parameter and
  writes every column.
- Workload: a fixed, seeded list of tiles at z14, z15 and z16 (a third each), each the tile holding a
  random building (so no empty tiles), per database; wrk, 2 threads, 4 connections, warm-up + window,
  servers alternating per round, medians, ratios as medians of per-round ratios.
- Correctness, same run: for a sample of tiles, every server's tile decoded (mapbox-vector-tile) and its
  building ids compared with PostGIS: none missing of those intersecting the tile's interior (the tile
  envelope shrunk by 2/4096 of its side: a footprint touching the edge may clip to nothing), none beyond
  the tile plus the server's own buffer (ours 64, tipg and pygeoapi 256 units of 4096).
- Targets (the issue's): ours ≥ 1.5× tipg tiles/s uncached; ours' tiles/s falls by at most 1.5× from 100k to
  1M buildings; cached tiles at ≥ 50 % of nginx serving the same tile files (needs the tile cache), as
  deployed: through the nginx front of ``cim deploy nginx`` (``--cached`` also measures the app alone).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from features_bench import (  # noqa: E402  (bench/ is not a package)
    BENCH,
    PEER_TABLE,
    MemorySampler,
    Server,
    connect,
    create_peer_table,
    free_port,
    log,
    make_demo,
    median,
    ours_source,
    pg_params,
    run_wrk,
    server_ours,
    server_tipg,
    versions,
    wait_idle,
    write_lua,
)

SERVERS = ("ours", "tipg", "pygeoapi")
ZOOMS = (14, 15, 16)
EXTENT = 4096
BUFFER = {"ours": 64, "tipg": 256, "pygeoapi": 256}  # MVT units beyond the tile edge, per server
# the properties ours writes for buildings (config.yml tiles.layers.buildings), asked of tipg too
OUR_PROPERTIES = {14: ["usage"], 15: ["usage", "floors", "height", "name"], 16: ["usage", "floors", "height", "name"]}
COPIES = 10  # the 1M database: the 100k buildings and nine translated copies
MVT = "application/vnd.mapbox-vector-tile"


# ---------------------------------------------------------------------------------------------- databases
def derive_million(url: str) -> str:
    """A database beside ``url``'s holding its buildings ten times over (new ids and uids, translated copies).

    ``CREATE DATABASE … TEMPLATE`` copies the 100k city file by file (no other session may be connected to
    it meanwhile); the copies go on a 3 × 4 grid of the city's extent plus 1 km (cells (-1..1, -1..2) but
    the last two), all within the storage CRS's zone (121.5–124.5°E). The layer's version is bumped as any
    write does."""
    from sqlalchemy.engine import make_url

    source = make_url(url)
    name = f"{source.database}_1m"
    admin = connect(source.set(database="postgres").render_as_string(hide_password=False))
    try:
        exists = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if exists:
            log(f"{name} exists: reusing it")
            return source.set(database=name).render_as_string(hide_password=False)
        log(f"CREATE DATABASE {name} TEMPLATE {source.database}")
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{source.database}"')
    finally:
        admin.close()
    target = source.set(database=name).render_as_string(hide_password=False)
    db = connect(target)
    try:
        x0, y0, x1, y1 = db.execute("SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) FROM "
                                    "(SELECT ST_Extent(geom) e FROM city_object WHERE layer = 'buildings') s"
                                    ).fetchone()
        dx, dy = x1 - x0 + 1000, y1 - y0 + 1000
        # three columns, not more: EPSG:4550's zone ends at 124.5°E, 1.5 cells east of the city (a copy beyond
        # it is outside the storage CRS's area, where our tiles are empty by design); rows are free
        cells = [(i, j) for j in (-1, 0, 1, 2) for i in (-1, 0, 1) if (i, j) != (0, 0)][:COPIES - 1]
        cols = [r[0] for r in db.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'public' "
            "AND table_name = 'city_object' AND column_name NOT IN ('id', 'uid', 'geom') "
            "ORDER BY ordinal_position").fetchall()]
        listed = ", ".join(cols)
        t0 = time.perf_counter()
        with db.transaction():
            for k, (i, j) in enumerate(cells, start=1):
                db.execute(f"INSERT INTO city_object (uid, geom, {listed}) "
                           f"SELECT uid || '-c{k}', ST_Translate(geom, %s, %s), {listed} FROM city_object "
                           "WHERE layer = 'buildings' AND uid NOT LIKE '%%-c%%' ORDER BY id",
                           (i * dx, j * dy))
                log(f"copy {k} of {len(cells)} at ({i * dx:+.0f}, {j * dy:+.0f}) m")
            db.execute("UPDATE layer_version SET version = version + 1, changed_at = now() "
                       "WHERE layer = 'buildings'")
        db.execute("ANALYZE city_object")
        n = db.execute("SELECT count(*) FROM city_object WHERE layer = 'buildings'").fetchone()[0]
        log(f"{name}: {n} buildings in {time.perf_counter() - t0:.0f} s")
    finally:
        db.close()
    return target


# ---------------------------------------------------------------------------------------------- tiles
def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    """WebMercatorQuad column and row of a point."""
    n = 2 ** z
    col = int((lon + 180.0) / 360.0 * n)
    row = int((1.0 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2.0 * n)
    return col, row


def make_tiles(db: Any, n: int, seed: int) -> list[tuple[int, int, int]]:
    """``n`` tiles (z, col, row), a third per zoom, each the tile of a random building's inner point."""
    ids = [r[0] for r in db.execute("SELECT id FROM city_object WHERE layer = 'buildings' ORDER BY id").fetchall()]
    rng = random.Random(seed)
    chosen = rng.sample(ids, n)
    where = dict(db.execute(
        "SELECT id, ARRAY[ST_X(p), ST_Y(p)] FROM (SELECT id, ST_PointOnSurface(ST_Transform(geom, 4326)) p "
        "FROM city_object WHERE id = ANY(%s)) s", (chosen,)).fetchall())
    out = []
    for i, oid in enumerate(chosen):
        z = ZOOMS[i % len(ZOOMS)]
        out.append((z, *tile_of(where[oid][0], where[oid][1], z)))
    return out


def tile_path(server: str, z: int, col: int, row: int) -> str:
    if server == "ours":
        return f"/collections/buildings/tiles/WebMercatorQuad/{z}/{row}/{col}"
    if server == "tipg":
        props = ",".join(["uid", *OUR_PROPERTIES[z]])
        return f"/collections/public.{PEER_TABLE}/tiles/WebMercatorQuad/{z}/{col}/{row}?properties={props}"
    return f"/collections/buildings/tiles/WebMercatorQuad/{z}/{row}/{col}?f=mvt"


def truth(db: Any, table: str, z: int, col: int, row: int, buffer: int) -> tuple[set[str], set[str]]:
    """(uids intersecting the tile's interior, uids intersecting the tile plus ``buffer`` units)."""
    size = 2 * 20037508.342789244 / 2 ** z
    where = "layer = 'buildings' AND " if table == "city_object" else ""
    schema, name = table.split(".") if "." in table else ("public", table)
    srid = db.execute("SELECT Find_SRID(%s, %s, 'geom')", (schema, name)).fetchone()[0]
    rows = db.execute(
        f"SELECT uid, ST_Intersects(g, ST_Expand(ST_TileEnvelope(%s, %s, %s), %s)) FROM "
        f"(SELECT uid::text, ST_Transform(geom, 3857) g FROM {table} WHERE {where}"
        f" geom && ST_Transform(ST_Expand(ST_TileEnvelope(%s, %s, %s), %s), {int(srid)})) s "
        f"WHERE ST_Intersects(g, ST_Expand(ST_TileEnvelope(%s, %s, %s), %s))",
        (z, col, row, -2 * size / EXTENT, z, col, row, 2 * size * (buffer + 2) / EXTENT,
         z, col, row, size * (buffer + 1) / EXTENT)).fetchall()
    return {r[0] for r in rows if r[1]}, {r[0] for r in rows}


def decode_ids(data: bytes) -> tuple[int, set[str]]:
    """(features, their building uids) in a tile, whatever the layer's name."""
    import mapbox_vector_tile

    if not data:
        return 0, set()
    layers = mapbox_vector_tile.decode(data)
    n, ids = 0, set()
    for layer in layers.values():
        for f in layer["features"]:
            n += 1
            props = f.get("properties", {})
            ids.add(str(props.get("uid", props.get("id"))))
    return n, ids


def fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=300) as r:
            return r.read()
    except urllib.error.HTTPError as exc:
        if exc.code == 204:
            return b""
        raise


def check_tiles(server: Server, tiles: list[tuple[int, int, int]], db: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"tiles": 0, "features": 0, "missing": 0, "extra": 0, "duplicates": 0, "wrong_tiles": []}
    table = "city_object" if server.name == "ours" else f"public.{PEER_TABLE}"
    for z, col, row in tiles:
        n, got = decode_ids(fetch(server.url(tile_path(server.name, z, col, row))))
        inner, outer = truth(db, table, z, col, row, BUFFER[server.name])
        missing, extra, dup = len(inner - got), len(got - outer), n - len(got)
        out["tiles"] += 1
        out["features"] += n
        out["missing"] += missing
        out["extra"] += extra
        out["duplicates"] += dup
        if missing or extra or dup:
            out["wrong_tiles"].append({"tile": [z, col, row], "decoded": n, "interior": len(inner),
                                       "with_buffer": len(outer), "missing": missing, "extra": extra})
    return out


# ---------------------------------------------------------------------------------------------- servers
def server_pygeoapi_mvt(url: str, workers: int, tmp: Path) -> Server:
    """Stock pygeoapi 0.24: its MVT-postgresql tile provider on the peer table, gunicorn sync workers."""
    import yaml

    venv = BENCH / ".venv-pygeoapi"
    port = free_port()
    p = pg_params(url)
    data = {k: v for k, v in {"host": p["host"], "port": p["port"], "dbname": p["dbname"], "user": p["user"],
                              "password": p["password"], "search_path": ["public"]}.items() if v is not None}
    cfg = {
        "server": {"bind": {"host": "127.0.0.1", "port": port}, "url": f"http://127.0.0.1:{port}",
                   "mimetype": "application/json; charset=UTF-8", "encoding": "utf-8", "gzip": False,
                   "languages": ["en-US"], "cors": False, "pretty_print": False,
                   "limits": {"default_items": 10, "max_items": 10000},
                   "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "attribution": "OSM"}},
        "logging": {"level": "ERROR"},
        "metadata": {
            "identification": {"title": "tiles_bench peer", "description": "pygeoapi MVT on buildings_4326",
                               "keywords": ["bench"], "keywords_type": "theme",
                               "terms_of_service": "https://creativecommons.org/licenses/by/4.0/",
                               "url": "https://example.org"},
            "license": {"name": "CC-BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"},
            "provider": {"name": "bench", "url": "https://example.org"},
            "contact": {"name": "bench", "email": "bench@example.org", "url": "https://example.org",
                        "role": "pointOfContact"}},
        "resources": {"buildings": {
            "type": "collection", "title": "Buildings", "description": "Benxi demo buildings (EPSG:4326 copy)",
            "keywords": ["buildings"],
            "extents": {"spatial": {"bbox": [-180, -90, 180, 90],
                                    "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
            "providers": [
                {"type": "feature", "name": "PostgreSQL", "data": data, "id_field": "uid", "table": PEER_TABLE,
                 "geom_field": "geom"},
                {"type": "tile", "name": "MVT-postgresql", "data": data, "id_field": "uid", "table": PEER_TABLE,
                 "geom_field": "geom", "options": {"zoom": {"min": 0, "max": 20}},
                 "format": {"name": "pbf", "mimetype": MVT}}]}},
    }
    cfg_path, oas_path = tmp / "pygeoapi-tiles.yml", tmp / "pygeoapi-tiles-openapi.yml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {"PYGEOAPI_CONFIG": str(cfg_path), "PYGEOAPI_OPENAPI": str(oas_path)}
    proc = subprocess.run([str(venv / "bin/pygeoapi"), "openapi", "generate", str(cfg_path), "--output-file",
                           str(oas_path)], env={**os.environ, **env}, cwd=tmp, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pygeoapi openapi generate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return Server("pygeoapi", [str(venv / "bin/gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
                               "--timeout", "300", "--no-control-socket", "--log-level", "warning",
                               "pygeoapi.flask_app:APP"], env, tmp, port, tmp / "pygeoapi-tiles.log",
                  keeps_alive=False)


def bench_size(label: str, url: str, args: argparse.Namespace, tmp: Path, src: Path) -> dict[str, Any]:
    """Every server on one database: correctness, then the alternating windows."""
    out: dict[str, Any] = {"database": label}
    db = connect(url)
    servers: dict[str, Server] = {}
    try:
        log(f"[{label}] peer table")
        out["peer_table"] = create_peer_table(db)
        out["buildings"] = out["peer_table"]["rows"]
        tiles = make_tiles(db, args.tiles, args.seed)
        out["tiles_per_zoom"] = {z: sum(1 for t in tiles if t[0] == z) for z in ZOOMS}
        sub = tmp / label
        sub.mkdir()
        if (tmp / "demo-data").exists():  # server_ours links the demo's DEM from <its folder>/demo-data
            (sub / "demo-data").symlink_to(tmp / "demo-data")
        for name in args.servers:
            s = None
            try:
                if name == "ours":
                    s = server_ours(url, args.workers, sub, src)
                    s.env["CIM_TILE_CACHE"] = "false"  # uncached: every tile built on request (the cache is on by default)
                elif name == "tipg":
                    s = server_tipg(url, args.workers, sub)
                else:
                    s = server_pygeoapi_mvt(url, args.workers, sub)
                s.paths = {"tiles": [tile_path(name, *t) for t in tiles]}
                probe = "/collections/buildings/items?f=json&limit=1" if name == "ours" else \
                    f"/collections/public.{PEER_TABLE}" if name == "tipg" else "/collections/buildings?f=json"
                s.start(probe)
                servers[name] = s
            except Exception as exc:
                out.setdefault("failed", {})[name] = f"{type(exc).__name__}: {exc}"
                log(f"[{label}] {name} failed: {exc}")
                if s is not None:
                    s.stop()
        log(f"[{label}] correctness on {args.check} tiles")
        out["correctness"] = {}
        for name, s in servers.items():
            try:
                c = check_tiles(s, tiles[:args.check], db)
            except Exception as exc:
                c = {"error": f"{type(exc).__name__}: {exc}"}
            out["correctness"][name] = c
            log(f"[{label}] {name}: {json.dumps({k: v for k, v in c.items() if k != 'wrong_tiles'})}")
        scripts = {}
        for name, s in servers.items():
            scripts[name] = tmp / f"{label}-{name}.lua"
            write_lua(scripts[name], s.paths["tiles"])
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        live = list(servers.values())
        for rnd in range(args.rounds):
            for s in live:
                if not s.alive():
                    raise RuntimeError(f"{s.name} died:\n{s.log_tail()}")
                wait_idle(live, db, timeout=300)
                balance = args.workers if s.keeps_alive and args.workers > 1 else 0
                with MemorySampler(s):
                    run_wrk(s, scripts[s.name], args.warmup)
                    wait_idle(live, db, timeout=300)
                    r = run_wrk(s, scripts[s.name], args.duration, balance,
                                settle=lambda: wait_idle(live, db, timeout=300))
                runs[s.name].append(r)
                log(f"[{label}] round {rnd + 1} {s.name}: {r['req_s']} tiles/s, p50 {r['p50_ms']} ms, "
                    f"p99 {r['p99_ms']} ms, errors {r['non_2xx_3xx'] + r['socket_errors']}")
        out["runs"] = runs
        out["cold_start_s"] = {n: s.cold_start_s for n, s in servers.items()}
        out["peak_rss_mib"] = {n: round(s.peak_rss_mib) for n, s in servers.items()}
    finally:
        for s in servers.values():
            s.stop()
        db.close()
    return out


# ---------------------------------------------------------------------------------------------- cached
def nginx_conf(prefix: Path, workers: int, http: str) -> str:
    """A whole nginx.conf run from ``prefix`` (pid, error log and temporary folders there; no access log, the
    files sent with sendfile) around ``http``, the lines of its http context."""
    return f"""worker_processes {workers};
user root;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  access_log off;
  sendfile on;
  tcp_nodelay on;
  keepalive_requests 1000000;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
{http}
}}
"""


# nginx on the cache's files as they are
STATIC_TILES = """  server {{
    listen 127.0.0.1:{port};
    root {root};
    default_type application/vnd.mapbox-vector-tile;
    add_header Content-Encoding gzip;
  }}"""
TILE_ROUTE = 'route="/collections/{collection}/tiles/{tms}/{matrix}/{row}/{col}"'


def app_tile_requests(ours: Server) -> int:
    """Tile requests the app has answered (its /metrics, summed over workers and statuses)."""
    with urllib.request.urlopen(ours.url("/metrics"), timeout=60) as r:
        text = r.read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("cim_http_requests_total{") and TILE_ROUTE in line))


def bench_cached(url: str, args: argparse.Namespace, tmp: Path, src: Path) -> dict[str, Any]:
    """Our cached tiles (the cache filled by one pass over the URL list) three ways, all asked with
    ``Accept-Encoding: gzip`` (the cache holds gzip bytes, sent as they are): through the app alone
    (``ours``), through the front as deployed (``front``: nginx configured by ``cim deploy nginx`` sending
    the cache's files and proxying misses to the same app), and nginx serving the very files of that cache
    (``nginx``, the peer)."""
    out: dict[str, Any] = {"database": "100k"}
    db = connect(url)
    servers: dict[str, Server] = {}
    try:
        tiles = make_tiles(db, args.tiles, args.seed)
        sub = tmp / "cached"
        sub.mkdir()
        if (tmp / "demo-data").exists():  # server_ours links the demo's DEM from <its folder>/demo-data
            (sub / "demo-data").symlink_to(tmp / "demo-data")
        cache = sub / "cache"
        ours = server_ours(url, args.workers, sub, src)
        ours.env.update({"CIM_TILE_CACHE": "true", "CIM_TILE_CACHE_DIR": str(cache)})
        ours.paths = {"tiles": [tile_path("ours", *t) for t in tiles]}
        ours.start("/collections/buildings/items?f=json&limit=1")
        servers["ours"] = ours
        t0 = time.perf_counter()
        for path in ours.paths["tiles"]:
            fetch(ours.url(path))
        out["fill_s"] = round(time.perf_counter() - t0, 1)
        versions_ = sorted(p for p in (cache / "buildings" / "mvt" / "WebMercatorQuad").iterdir()
                           if p.name != "current")  # (the front's link to the version folder)
        if len(versions_) != 1:
            raise RuntimeError(f"expected one cache version folder, found {versions_}")
        root = versions_[0]
        files = {(int(p.parts[-3]), int(p.parts[-2]), int(p.stem.split(".")[0])): p for p in root.rglob("*.mvt.gz")}
        out["cached_files"] = len(files)
        out["missing_files"] = sum(1 for z, col, row in set(tiles) if (z, row, col) not in files)
        # the same bytes from both: ours' gzip answer is the file
        same = 0
        for z, col, row in tiles[:args.check]:
            req = urllib.request.Request(ours.url(tile_path("ours", z, col, row)), headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(req, timeout=60) as r:
                same += r.read() == files[(z, row, col)].read_bytes()
        out["same_bytes"] = f"{same} of {min(args.check, len(tiles))}"
        port = free_port()
        prefix = sub / "nginx"
        prefix.mkdir()
        conf = prefix / "nginx.conf"
        conf.write_text(nginx_conf(prefix, args.workers, STATIC_TILES.format(port=port, root=root)))
        nginx = Server("nginx", ["nginx", "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"], {}, prefix, port,
                       sub / "nginx.log")
        nginx.paths = {"tiles": [f"/{z}/{row}/{col}.mvt.gz" for z, col, row in tiles]}
        nginx.start(nginx.paths["tiles"][0])
        servers["nginx"] = nginx
        # the front: the generated configuration, pointing at the same app and cache
        fport = free_port()
        fprefix = sub / "front"
        fprefix.mkdir()
        gen = subprocess.run([sys.executable, "-m", "cim.cli", "deploy", "nginx", "--app", f"127.0.0.1:{ours.port}",
                              "--listen", f"127.0.0.1:{fport}", "--cache-dir", str(cache)],
                             env={**os.environ, **ours.env}, cwd=ours.cwd, capture_output=True, text=True, check=True)
        (fprefix / "cim.conf").write_text(gen.stdout)
        # the front as deployed: `cim deploy nginx`'s output included in the http context
        (fprefix / "nginx.conf").write_text(nginx_conf(fprefix, args.workers, f"  include {fprefix}/cim.conf;"))
        front = Server("front", ["nginx", "-c", str(fprefix / "nginx.conf"), "-p", str(fprefix), "-g", "daemon off;"],
                       {}, fprefix, fport, sub / "front.log")
        front.paths = ours.paths
        front.start("/healthz")
        servers["front"] = front
        # the front sends the cached files itself: the app sees none of these requests
        before = app_tile_requests(ours)
        same = 0
        for z, col, row in tiles[:args.check]:
            req = urllib.request.Request(front.url(tile_path("ours", z, col, row)), headers={"Accept-Encoding": "gzip"})
            with urllib.request.urlopen(req, timeout=60) as r:
                same += r.read() == files[(z, row, col)].read_bytes() and r.headers["Content-Encoding"] == "gzip"
        out["front_same_bytes"] = f"{same} of {min(args.check, len(tiles))}"
        out["front_check_app_requests"] = app_tile_requests(ours) - before
        scripts = {}
        for name, s in servers.items():
            scripts[name] = tmp / f"cached-{name}.lua"
            write_lua(scripts[name], s.paths["tiles"])
            text = scripts[name].read_text().replace('return wrk.format("GET", paths[i])',
                                                     'return wrk.format("GET", paths[i], {["Accept-Encoding"] = "gzip"})')
            scripts[name].write_text(text)
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in servers}
        live = list(servers.values())
        for rnd in range(args.rounds):
            for s in live:
                wait_idle(live, db, timeout=120)
                run_wrk(s, scripts[s.name], args.warmup)
                wait_idle(live, db, timeout=120)
                app_before = app_tile_requests(ours)
                load_before = os.getloadavg()[0]
                r = run_wrk(s, scripts[s.name], args.duration, args.workers if args.workers > 1 else 0,
                            settle=lambda: wait_idle(live, db, timeout=120))
                r["load_avg_1m"] = [round(load_before, 1), round(os.getloadavg()[0], 1)]
                r["app_tile_requests"] = app_tile_requests(ours) - app_before
                runs[s.name].append(r)
                log(f"[cached] round {rnd + 1} {s.name}: {r['req_s']} tiles/s, p50 {r['p50_ms']} ms, "
                    f"p99 {r['p99_ms']} ms, errors {r['non_2xx_3xx'] + r['socket_errors']}, "
                    f"connections per worker {r['connections_per_worker']}, load {r['load_avg_1m']}, "
                    f"app tile requests {r['app_tile_requests']}")
        out["runs"] = runs

        def ratio(a: str, b: str) -> float | None:
            return median([x["req_s"] / y["req_s"] for x, y in zip(runs[a], runs[b], strict=False) if y["req_s"]])

        out["ours_vs_nginx"] = ratio("ours", "nginx")
        out["front_vs_nginx"] = ratio("front", "nginx")
        out["front_vs_ours"] = ratio("front", "ours")
    finally:
        for s in servers.values():
            s.stop()
        db.close()
    return out


# ---------------------------------------------------------------------------------------------- report
def wrong(c: dict[str, Any] | None) -> bool:
    return not c or "error" in c or bool(c.get("missing") or c.get("extra") or c.get("duplicates"))


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, size in result["sizes"].items():
        runs = size.get("runs", {})
        s = out[label] = {}
        for name, rs in runs.items():
            s[name] = {"req_s": median([r["req_s"] for r in rs]), "p50_ms": median([r["p50_ms"] for r in rs]),
                       "p99_ms": median([r["p99_ms"] for r in rs]), "mib_s": median([r["mib_s"] for r in rs]),
                       "errors": sum(r["non_2xx_3xx"] + r["socket_errors"] for r in rs),
                       "wrong": wrong(size["correctness"].get(name))}
            if name != "ours" and "ours" in runs and not s[name]["wrong"]:
                s[name]["ours_vs_this"] = median([o["req_s"] / p["req_s"] for o, p in
                                                  zip(runs["ours"], rs, strict=False) if p["req_s"]])
    return out


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    summary, out = result["summary"], []
    for label in summary:
        r = summary[label].get("tipg", {}).get("ours_vs_this")
        ok = r is not None and not summary[label].get("ours", {}).get("wrong", True)
        out.append({"target": f"{label}: ours ≥ 1.5× tipg tiles/s (uncached)", "shown": "—" if r is None else
                    f"{r:.2f}×", "met": ok and r >= 1.5})
    if "100k" in summary and "1M" in summary:
        a = summary["100k"].get("ours", {}).get("req_s")
        b = summary["1M"].get("ours", {}).get("req_s")
        fall = a / b if a and b else None
        out.append({"target": "ours: tiles/s falls ≤ 1.5× from 100k to 1M", "shown": "—" if fall is None else
                    f"{fall:.2f}× ({a:g} → {b:g} tiles/s)", "met": fall is not None and fall <= 1.5})
        for peer in ("tipg", "pygeoapi"):
            a = summary["100k"].get(peer, {}).get("req_s")
            b = summary["1M"].get(peer, {}).get("req_s")
            if a and b:
                out.append({"target": f"(context) {peer}: 100k → 1M", "shown": f"{a / b:.2f}× ({a:g} → {b:g})",
                            "met": None})
    c = result.get("cached")
    if c and c.get("front_vs_nginx") is not None:
        r = c["front_vs_nginx"]
        out.append({"target": "cached tiles ≥ 50 % of nginx serving the same files (as deployed: the nginx front)",
                    "shown": f"{r:.2f}× (the app alone {c['ours_vs_nginx']:.2f}×)", "met": r >= 0.5})
    elif c and c.get("ours_vs_nginx") is not None:
        r = c["ours_vs_nginx"]
        out.append({"target": "cached tiles ≥ 50 % of nginx serving the same files", "shown": f"{r:.2f}×",
                    "met": r >= 0.5})
    else:
        out.append({"target": "cached tiles ≥ 50 % of nginx serving the same files", "shown": "not measured",
                    "met": None})
    return out


def markdown(result: dict[str, Any]) -> str:
    lines = ["| database | server | tiles/s · p50 / p99 ms | MiB/s | ours / this | correctness (tiles, features, "
             "missing / extra) |", "|---|---|---|---|---|---|"]
    for label, per in result["summary"].items():
        corr = result["sizes"][label]["correctness"]
        for name in SERVERS:
            if name not in per:
                continue
            m, c = per[name], corr.get(name, {})
            fig = "**wrong tiles** (no ratio)" if m["wrong"] else ""
            ratio = m.get("ours_vs_this")
            cc = (f"{c['tiles']}, {c['features']}, {c['missing']} / {c['extra']}" if "error" not in c
                  else f"error: {c['error'][:80]}")
            lines.append(f"| {label} ({result['sizes'][label]['buildings']:,}) | {name} | {m['req_s']:g} · "
                         f"{m['p50_ms']:g} / {m['p99_ms']:g}{' (' + str(m['errors']) + ' errors)' if m['errors'] else ''}"
                         f" {fig}| {m['mib_s']:g} | {'—' if ratio is None else f'**{ratio:.2f}**'} | {cc} |")
    c = result.get("cached")
    if c and c.get("runs"):
        lines += ["", "| cached tiles | tiles/s · p50 / p99 ms (median of rounds) | rounds tiles/s | load avg 1 min "
                  "(window start) | app tile requests in the windows | this / nginx |", "|---|---|---|---|---|---|"]
        for name, runs in c["runs"].items():
            med = lambda k, runs=runs: median([r[k] for r in runs])  # noqa: E731
            this = {"ours": c.get("ours_vs_nginx"), "front": c.get("front_vs_nginx")}.get(name)
            lines.append(f"| {name} | {med('req_s'):g} · {med('p50_ms'):g} / {med('p99_ms'):g} | "
                         f"{', '.join(f'{r['req_s']:g}' for r in runs)} | "
                         f"{', '.join(str(r.get('load_avg_1m', ['?'])[0]) for r in runs)} | "
                         f"{', '.join(str(r.get('app_tile_requests', '?')) for r in runs)} | "
                         f"{'—' if this is None else f'**{this:.2f}**'} |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for t in result["targets"]:
        met = "—" if t["met"] is None else ("yes" if t["met"] else "**no**")
        lines.append(f"| {t['target']} | {t['shown']} | {met} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an existing PostGIS holding the 100k demo city (SQLAlchemy URL); "
                                               "default: a throwaway PostGIS with a new demo")
    parser.add_argument("--million-url", help="an existing 1M database (default: derived from the 100k one, "
                                              "reused if <name>_1m exists)")
    parser.add_argument("--sizes", nargs="*", choices=["100k", "1M"], default=["100k", "1M"])
    parser.add_argument("--duration", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiles", type=int, default=300, help="tiles in the URL list (a third per zoom)")
    parser.add_argument("--check", type=int, default=20, help="tiles checked against PostGIS per server")
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--ours-ref", default="HEAD", help="git ref our server runs from, or 'worktree'")
    parser.add_argument("--cached", action="store_true",
                        help="also our cached tiles (the app alone, and the nginx front of `cim deploy nginx`) "
                             "against nginx serving the cache's files (100k; needs nginx)")
    parser.add_argument("--demo-size", type=int, default=100_000,
                        help="buildings of the throwaway demo (the '100k' database; --cached alone needs fewer)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--report", type=Path, metavar="JSON")
    args = parser.parse_args()
    if args.report:
        result = json.loads(args.report.read_text())
        result["summary"] = summarise(result)
        result["targets"] = targets(result)
        print(markdown(result))
        return
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="cim-tiles-bench-") as tmpdir:
        tmp = Path(tmpdir)
        src, source = ours_source(args.ours_ref, tmp)
        result: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "args": vars(args),
                                  "ours_source": source, "sizes": {}}
        result["versions"] = {
            "ours": versions(Path(sys.executable).parent.parent, ["uvicorn", "uvloop", "SQLAlchemy", "psycopg"]),
            "tipg": versions(BENCH / ".venv-tipg", ["tipg", "uvicorn", "uvloop", "asyncpg"]),
            "pygeoapi": versions(BENCH / ".venv-pygeoapi", ["pygeoapi", "gunicorn", "SQLAlchemy"]),
        }

        def run(url: str) -> None:
            urls = {"100k": url}
            if "1M" in args.sizes:
                urls["1M"] = args.million_url or derive_million(url)
            for label in args.sizes:
                result["sizes"][label] = bench_size(label, urls[label], args, tmp, src)
            if args.cached:
                result["cached"] = bench_cached(url, args, tmp, src)

        if args.database_url:
            run(args.database_url)
        else:
            from cim.db.throwaway import ThrowawayPostGIS

            with ThrowawayPostGIS() as pg:
                run(make_demo(pg, args.demo_size, str(tmp / "demo-data"), src))
    result["summary"] = summarise(result)
    result["targets"] = targets(result)
    result["markdown"] = markdown(result)
    out = args.output or BENCH / "results" / f"tiles-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print(result["markdown"])
    log(f"results written to {out}")


if __name__ == "__main__":
    main()
