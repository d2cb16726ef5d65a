"""Load test: a fixed mix of items, vector tiles, 3D tiles, terrain and a process against `cim serve` on PostGIS, with wrk.

Not a test (timings belong here). Runs the same wrk window twice in a row against one server and reports
per run: requests/s, errors (socket errors and non-2xx/3xx), p50/p90/p99 latency, and the server's
memory (RSS and PSS of its process tree) after each run; memory growth from the first run to the second
must stay under 10 %, errors at zero. The process requests are timed apart too (a client-side probe, see
``ProcessProbe``), and the job store's size is reported after each run. Then one window per worker count (``--scale``) for the per-worker
throughput quoted in docs/deployment.md.

    .venv/bin/python bench/load_test.py                      # throwaway PostGIS, 5,000-building demo
    .venv/bin/python bench/load_test.py --database-url "$CIM_DATABASE_URL" --duration 60 --connections 64

The URL mix (seeded, fixed): 30 % vector tiles of the city centre at zooms 14-17 (buildings, roads,
pipelines), 22 % first items pages (limit 10-100, some with a ~500 m bbox), 15 % single items, 8 % keyset
next pages, 15 % 3D tiles on demand (tileset.json and its GLB contents, buildings CIM3 and roads CIM2),
5 % Cesium terrain tiles (quantized mesh), 5 % ``POST /processes/coordinate-transform/execution`` (1-50
points, CRS84 to EPSG:4550 / GCJ-02). Pipelines are restricted (cim.auth): their requests carry the
bench's own API key (``X-API-Key``, roles operations + utilities, given to the server in
``CIM_AUTH__KEYS``); every other request is anonymous.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from features_bench import (  # noqa: E402  one way of starting servers and measuring process trees
    MemorySampler,
    Server,
    connect,
    free_port,
    get_json,
    log,
    tree_memory_mib,
)

ROOT = Path(__file__).resolve().parent.parent
CENTRE = (123.77, 41.30)
BENCH_KEY = "cim-load-test-key"  # sent with the restricted layers' requests (pipelines)
KEYS_ENV = json.dumps([{"name": "load-test", "roles": ["operations", "utilities"],
                        "sha256": hashlib.sha256(BENCH_KEY.encode()).hexdigest()}])
TILESETS = (("buildings", 3), ("roads", 2))

LUA = r"""-- written by bench/load_test.py: rotate through a fixed mix of request paths, count non-2xx/3xx
-- each entry: {method, path, body or false, send the API key}
reqs = {
%s
}
key = "%s"
local counter = 0
function setup(thread)
  thread:set("start", counter * 997)
  counter = counter + 1
end
function init(args)
  i = start or 0
end
function request()
  i = (i %% #reqs) + 1
  local r = reqs[i]
  local headers = {}
  if r[4] then headers["X-API-Key"] = key end
  if r[3] then
    headers["Content-Type"] = "application/json"
    return wrk.format(r[1], r[2], headers, r[3])
  end
  return wrk.format(r[1], r[2], headers)
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"connect":%%d,"read":%%d,"write":%%d,"status":%%d,' ..
    '"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"max_us":%%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def tile_of(lon: float, lat: float, z: int) -> tuple[int, int]:
    n = 2 ** z
    x = int((lon + 180) / 360 * n)
    y = int((1 - math.asinh(math.tan(math.radians(lat))) / math.pi) / 2 * n)
    return y, x


def tileset_contents(server: Server, layer: str, level: int) -> list[str]:
    """The GLB paths of a tileset served on demand (asking for it builds it once)."""
    base = f"/collections/{layer}/3dtiles/{level}/"
    tileset = get_json(server.url(base + "tileset.json"))
    out, stack = [], [tileset["root"]]
    while stack:
        tile = stack.pop()
        for c in [tile.get("content")] + tile.get("contents", []):
            if c and c["uri"].endswith(".glb"):
                out.append(urllib.parse.urljoin(base, c["uri"]))
        stack.extend(tile.get("children", []))
    return sorted(out)


def terrain_tiles(server: Server, levels: range) -> list[str]:
    """Terrain tile paths as a Cesium client asks for them (layer.json's template, its versioned URL)."""
    layer = get_json(server.url("/terrain/layer.json"))
    template = layer["tiles"][0]
    out = []
    for z, ranges in enumerate(layer["available"]):
        if z in levels:
            for r in ranges:
                out += [urllib.parse.urljoin("/terrain/", template.format(z=z, x=x, y=y))
                        for x in range(r["startX"], r["endX"] + 1) for y in range(r["startY"], r["endY"] + 1)]
    return out


def transform_body(rnd: random.Random) -> str:
    n = rnd.choice((1, 10, 50))
    coords = [[round(CENTRE[0] + rnd.uniform(-0.05, 0.05), 6), round(CENTRE[1] + rnd.uniform(-0.04, 0.04), 6)]
              for _ in range(n)]
    target = rnd.choice(("EPSG:4550", "urn:benxi-cim:crs:GCJ-02"))
    return json.dumps({"inputs": {"source_crs": "OGC:CRS84", "target_crs": target, "coordinates": coords,
                                  "axis_order": "xy"}})


def url_mix(db_url: str, server: Server, n: int, seed: int) -> list[tuple[str, str, str | None, bool]]:
    """(method, path, body, send the key) per request: the fixed, seeded mix."""
    rnd = random.Random(seed)
    with connect(db_url) as conn:
        uids = [r[0] for r in conn.execute(
            "SELECT uid FROM city_object WHERE object_class = 'Building' ORDER BY id LIMIT 5000").fetchall()]
        first_ids = [r[0] for r in conn.execute(
            "SELECT id FROM city_object WHERE object_class = 'Building' ORDER BY id LIMIT 2000").fetchall()]
    glbs = {(layer, level): tileset_contents(server, layer, level) for layer, level in TILESETS}
    terrain = terrain_tiles(server, range(8, 15))
    log(f"3D tiles: {', '.join(f'{k[0]} CIM{k[1]} {len(v)} GLBs' for k, v in glbs.items())}; "
        f"terrain: {len(terrain)} tiles at levels 8-14")
    reqs: list[tuple[str, str, str | None, bool]] = []
    for _ in range(n):
        r = rnd.random()
        if r < 0.30:
            z = rnd.choice((14, 15, 16, 17))
            layer = rnd.choice(("buildings", "roads", "pipelines"))
            lon = CENTRE[0] + rnd.uniform(-0.01, 0.01)
            lat = CENTRE[1] + rnd.uniform(-0.008, 0.008)
            row, col = tile_of(lon, lat, z)
            reqs.append(("GET", f"/collections/{layer}/tiles/WebMercatorQuad/{z}/{row}/{col}", None,
                         layer == "pipelines"))
        elif r < 0.52:
            limit = rnd.choice((10, 50, 100))
            if rnd.random() < 0.5:
                lon = CENTRE[0] + rnd.uniform(-0.01, 0.01)
                lat = CENTRE[1] + rnd.uniform(-0.008, 0.008)
                bbox = f"{lon - 0.003:.5f},{lat - 0.0022:.5f},{lon + 0.003:.5f},{lat + 0.0022:.5f}"
                reqs.append(("GET", f"/collections/buildings/items?limit={limit}&bbox={bbox}", None, False))
            else:
                layer = rnd.choice(("buildings", "roads", "pipe-nodes"))
                reqs.append(("GET", f"/collections/{layer}/items?limit={limit}", None, layer == "pipe-nodes"))
        elif r < 0.67:
            reqs.append(("GET", f"/collections/buildings/items/{rnd.choice(uids)}", None, False))
        elif r < 0.75:
            reqs.append(("GET", f"/collections/buildings/items?limit=100&after={rnd.choice(first_ids)}", None, False))
        elif r < 0.90:
            layer, level = rnd.choice(TILESETS)
            if rnd.random() < 0.2:
                reqs.append(("GET", f"/collections/{layer}/3dtiles/{level}/tileset.json", None, False))
            else:
                reqs.append(("GET", rnd.choice(glbs[(layer, level)]), None, False))
        elif r < 0.95:
            reqs.append(("GET", rnd.choice(terrain), None, False))
        else:
            reqs.append(("POST", "/processes/coordinate-transform/execution", transform_body(rnd), False))
    return reqs


def lua_script(reqs: list[tuple[str, str, str | None, bool]]) -> str:
    rows = ",\n".join("{%s, %s, %s, %s}" % (json.dumps(m), json.dumps(p), json.dumps(b) if b else "false",
                                              "true" if k else "false") for m, p, b, k in reqs)
    return LUA % (rows, BENCH_KEY)


class ProcessProbe:
    """Times the mix's process requests from the client side while wrk runs: wrk reports one latency
    distribution for the whole mix, in which 5 % of requests hide. One connection, one request after another
    (a tenth of a second apart), the same bodies as the mix's."""

    def __init__(self, server: Server, bodies: list[str]) -> None:
        self.server, self.bodies = server, bodies
        self.latencies_ms: list[float] = []
        self.failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        url = self.server.url("/processes/coordinate-transform/execution")
        i = 0
        while not self._stop.is_set():
            body = self.bodies[i % len(self.bodies)].encode()
            i += 1
            req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
            t0 = time.perf_counter()
            try:
                with urllib.request.urlopen(req, timeout=30) as r:
                    r.read()
                self.latencies_ms.append((time.perf_counter() - t0) * 1000)
            except OSError:
                self.failures += 1
            self._stop.wait(0.1)

    def __enter__(self) -> "ProcessProbe":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        ms = sorted(self.latencies_ms)
        if not ms:
            return {"n": 0, "failures": self.failures}
        def pct(q: float) -> float:
            return round(ms[min(len(ms) - 1, int(q * len(ms)))], 1)
        return {"n": len(ms), "failures": self.failures, "p50_ms": pct(0.50), "p90_ms": pct(0.90),
                "p99_ms": pct(0.99), "max_ms": round(ms[-1], 1)}


def job_store(data_dir: Path) -> dict[str, Any]:
    """What pygeoapi's job store holds: its records file and the files beside it (results, access lists)."""
    jobs = data_dir / "jobs"
    store = jobs / "jobs.json"
    files = [f for f in jobs.rglob("*") if f.is_file()] if jobs.exists() else []
    return {"records_bytes": store.stat().st_size if store.exists() else 0, "files": len(files),
            "bytes": sum(f.stat().st_size for f in files)}


def run_wrk(server: Server, script: Path, seconds: int, connections: int) -> dict[str, Any]:
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "30s", "-s", str(script),
           server.url("/")]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(ln for ln in out.splitlines() if ln.startswith("WRKJSON "))
    res = json.loads(line[len("WRKJSON "):])
    res["rps"] = round(res["requests"] / (res["duration_us"] / 1e6), 1)
    res["errors"] = res["connect"] + res["read"] + res["write"] + res["status"] + res["timeout"]
    return res


def cim(*args: str) -> list[str]:
    return [sys.executable, "-m", "cim.cli", *args]  # this interpreter: a worktree has no .venv of its own


def make_demo(db_url: str, size: int, data_dir: Path) -> None:
    env = {**os.environ, "CIM_DATABASE_URL": db_url, "CIM_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT)}
    for args in (("db", "init"), ("demo", "--size", str(size))):
        log(f"cim {' '.join(args)}")
        subprocess.run(cim(*args), env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)


def serve(db_url: str, workers: int, data_dir: Path, logs: Path) -> Server:
    port = free_port()
    srv = Server(f"cim-{workers}w", cim("serve", "--port", str(port), "--workers", str(workers)),
                 {"CIM_DATABASE_URL": db_url, "CIM_DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT),
                  "CIM_AUTH__KEYS": KEYS_ENV},
                 ROOT, port, logs / f"serve-{workers}w-{port}.log")
    srv.start("/collections/buildings/items?limit=1")
    return srv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an existing PostGIS with a demo city; default: a throwaway one")
    parser.add_argument("--size", type=int, default=5000, help="demo buildings (throwaway PostGIS only)")
    parser.add_argument("--duration", type=int, default=60)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--scale", default="1,2", help="worker counts for the per-worker throughput windows")
    parser.add_argument("--scale-duration", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=30,
                        help="seconds of the same load before measuring (a cold server answered 503s: PostGIS "
                             "loads PROJ per connection, the database's pages are not cached yet)")
    parser.add_argument("--urls", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=20261205)
    parser.add_argument("--data-dir", type=Path, help="the demo's data folder (its DEM); default: the throwaway one")
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cim-load-"))
    pg = None
    if args.database_url:
        db_url = args.database_url
    else:
        from cim.db.throwaway import ThrowawayPostGIS

        pg = ThrowawayPostGIS().start()
        db_url = pg.url
        make_demo(db_url, args.size, tmp / "data")
    data_dir = args.data_dir or tmp / "data"
    results: dict[str, Any] = {"connections": args.connections, "duration_s": args.duration, "workers": args.workers,
                               "cpus": os.cpu_count(), "runs": [], "scale": []}
    try:
        script = tmp / "mix.lua"
        srv = serve(db_url, args.workers, data_dir, tmp)
        try:
            reqs = url_mix(db_url, srv, args.urls, args.seed)  # builds the 3D tilesets (cached for the scale runs)
            script.write_text(lua_script(reqs))
            results["mix"] = {m: sum(1 for r in reqs if r[1].startswith(m) or r[0] == m) for m in (
                "/collections/buildings/tiles", "/collections/roads/tiles", "/collections/pipelines/tiles",
                "/collections/buildings/items/", "/collections/buildings/items?", "/collections/roads/items",
                "/collections/pipe-nodes/items", "/collections/buildings/3dtiles", "/collections/roads/3dtiles",
                "/terrain", "POST")}
            run_wrk(srv, script, args.warmup, args.connections)  # pools, caches, first-use imports
            for i in (1, 2):
                with MemorySampler(srv), ProcessProbe(srv, [r[2] for r in reqs if r[0] == "POST"]) as probe:
                    res = run_wrk(srv, script, args.duration, args.connections)
                res["process"] = probe.summary()
                res["job_store"] = job_store(data_dir)
                res["rss_mib"], res["pss_mib"] = (round(v, 1) for v in tree_memory_mib(srv.proc.pid))
                res["peak_rss_mib"] = round(srv.peak_rss_mib, 1)
                log(f"run {i}: {res['rps']} req/s, {res['errors']} errors, p99 {res['p99_us'] / 1000:.1f} ms, "
                    f"RSS {res['rss_mib']} MiB; process (probe) {res['process']}; job store {res['job_store']}")
                results["runs"].append(res)
        finally:
            srv.stop()
        first, second = results["runs"]
        results["memory_growth"] = round(second["rss_mib"] / first["rss_mib"] - 1, 4)
        for workers in (int(w) for w in args.scale.split(",") if w):
            srv = serve(db_url, workers, data_dir, tmp)
            try:
                run_wrk(srv, script, args.warmup, args.connections)
                res = run_wrk(srv, script, args.scale_duration, args.connections)
                results["scale"].append({"workers": workers, "rps": res["rps"], "errors": res["errors"],
                                         "p99_ms": round(res["p99_us"] / 1000, 1)})
                log(f"{workers} worker(s): {res['rps']} req/s, p99 {res['p99_us'] / 1000:.1f} ms")
            finally:
                srv.stop()
    finally:
        if pg is not None:
            pg.stop()
    ok = all(r["errors"] == 0 and r["process"].get("failures", 0) == 0 for r in results["runs"]) \
        and results["memory_growth"] < 0.10
    results["ok"] = ok
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
