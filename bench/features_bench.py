"""Benchmark: OGC API – Features, our items routes against stock pygeoapi 0.24 and tipg 1.x on one PostGIS.

Not a test (timings belong here, not in pytest). Set up the peers once, then run:

    bash bench/peers.sh
    .venv/bin/python bench/features_bench.py --database-url "$CIM_DATABASE_URL"   # an existing demo city
    .venv/bin/python bench/features_bench.py                                     # a throwaway PostGIS + demo

Method (../shared/PERF-NOTES.md):
- The same PostGIS, the same buildings, the same worker count. Ours serves ``city_object`` (EPSG:4550);
  the peers serve a copy of its buildings, ``public.buildings_4326`` (typed columns + attributes, the
  footprint transformed to EPSG:4326, GiST index): stock pygeoapi is wrong and ~20× slower on a table in
  EPSG:4550, and tipg widens a CRS84 bbox on one, so the copy is the peers' best case.
- Servers: ``cim serve --workers W`` (uvicorn + uvloop); pygeoapi 0.24's ``PostgreSQL`` provider under
  gunicorn ``-w W`` (sync workers, its documented deployment); tipg under uvicorn ``--workers W`` with
  uvloop + httptools. Cold start: launch → first 200 of an items request.
- Workloads, each a fixed list of URLs (seeded) that a wrk Lua script rotates through:
  W1 ~500 m bbox, limit 100; W1b first page (no bbox), limit 100; W2 ~2 km bbox, limit 1000;
  W3 one item by id; W4 a page ~50,000 features deep, limit 100 (ours: the ``after`` token of our next
  links; the peers: ``offset``, which is what their next links use).
- wrk, 2 threads, 4 connections, a warm-up then the measured window; servers alternate (ours, pygeoapi,
  tipg, ours, …) for each workload, for several rounds; medians over rounds. Before every window the
  servers' process trees (and the database's other sessions) must be idle. Peak RSS (and PSS: forked
  workers share pages) of each server's whole process tree, sampled every 0.5 s during its windows.
- Correctness in the same run: for 20 of the W1 and 5 of the W2 bboxes every page of every server (pages of
  20 and 200 features, its ``next`` links followed) against PostGIS ``ST_Intersects`` on the footprints in
  EPSG:4490; W1b and W4 pages must hold 100 features starting at the expected one, W3 must return the uid
  asked for. A workload a server answers wrongly gets no throughput figure and no ratio.
- Targets (the issue's, checked on the medians of per-round ratios): ours ≥ 2× tipg on W1, ≥ 3× on W2,
  ≥ 1.2× on W3; the deep page (W4) at ≥ 0.8× the first page's (W1b) req/s; our p99 < 100 ms everywhere.

Results: Markdown tables on standard output (workloads, targets, per-server cold start / memory /
correctness), JSON in bench/results/features-<date>.json (``--report FILE`` shows a saved run again).
Needs ``wrk`` (bench/peers.sh installs the Debian package when it is missing).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
sys.path.insert(0, str(ROOT))

PEER_TABLE = "buildings_4326"
# The typed columns our items route writes as properties (cim/db/queries.py), and the rest as JSON:
# the peers carry the same information, so their responses are about as large as ours.
PEER_COLUMNS = ("uid", "name", "object_class", "cim_level", "district", "usage", "floors", "height",
                "year_built", "address", "min_z", "max_z", "valid_from", "valid_to", "attributes")
WORKLOADS = {
    "W1": "~500 m bbox, limit=100",
    "W1b": "first page, no bbox, limit=100",
    "W2": "~2 km bbox, limit=1000",
    "W3": "one item by id",
    "W4": "page ~50,000 deep, limit=100",
}
SERVERS = ("ours", "pygeoapi", "tipg")
M_PER_DEG_LAT = 111_320.0
PAGE_SIZE = 100


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cim(*args: str) -> list[str]:
    # the interpreter running this script (the project's venv; a worktree may have no .venv of its own)
    return [sys.executable, "-m", "cim.cli", *args]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- database
def pg_params(url: str) -> dict[str, Any]:
    """host/port/user/password/dbname of a SQLAlchemy PostgreSQL URL."""
    from sqlalchemy.engine import make_url

    u = make_url(url)
    return {"host": u.host or "127.0.0.1", "port": u.port or 5432, "user": u.username, "password": u.password,
            "dbname": u.database}


def libpq_url(url: str) -> str:
    """The same database as a plain ``postgresql://`` URL (tipg, asyncpg)."""
    from sqlalchemy.engine import make_url

    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def connect(url: str, autocommit: bool = True):
    import psycopg

    p = pg_params(url)
    return psycopg.connect(host=p["host"], port=p["port"], user=p["user"], password=p["password"],
                           dbname=p["dbname"], autocommit=autocommit)


def make_demo(pg: Any, size: int, data_dir: str, src: Path) -> str:
    """``cim db init`` + ``cim demo --size N`` into a throwaway PostGIS; returns its URL."""
    env = {**os.environ, "CIM_DATABASE_URL": pg.url, "CIM_DATA_DIR": data_dir}
    for args in (("db", "init"), ("demo", "--size", str(size))):
        log(f"cim {' '.join(args)}")
        subprocess.run(cim(*args), env=env, cwd=src, check=True, stdout=subprocess.DEVNULL)
    return pg.url


def create_peer_table(conn: Any) -> dict[str, Any]:
    """``public.buildings_4326``: the buildings in the peers' best case (a table of their own, in EPSG:4326).

    Rows are written in id order, so the peers' table and ours hold the same buildings in the same
    physical order; their paging order is their primary key (uid), ours is id.
    """
    storage_srid = conn.execute("SELECT Find_SRID('public', 'city_object', 'geom')").fetchone()[0]
    kinds = [r[0] for r in conn.execute(
        "SELECT DISTINCT GeometryType(geom) FROM city_object WHERE layer = 'buildings'").fetchall()]
    # one geometry type per column, as the peers (and QGIS) expect: Polygon if they all are, else multi
    if kinds == ["POLYGON"]:
        geom_type, geom_sql = "Polygon", "ST_Transform(geom, 4326)"
    else:
        geom_type, geom_sql = "MultiPolygon", "ST_Multi(ST_Transform(geom, 4326))"
    cols = ", ".join("uid::text AS uid" if c == "uid" else c for c in PEER_COLUMNS)
    t0 = time.perf_counter()
    with conn.transaction():
        conn.execute(f"DROP TABLE IF EXISTS public.{PEER_TABLE}")
        conn.execute(f"CREATE TABLE public.{PEER_TABLE} AS SELECT {cols}, "
                     f"{geom_sql}::geometry({geom_type}, 4326) AS geom "
                     "FROM city_object WHERE layer = 'buildings' ORDER BY id")
        conn.execute(f"ALTER TABLE public.{PEER_TABLE} ADD PRIMARY KEY (uid)")
        conn.execute(f"CREATE INDEX {PEER_TABLE}_geom_idx ON public.{PEER_TABLE} USING gist (geom)")
    conn.execute(f"ANALYZE public.{PEER_TABLE}")
    n = conn.execute(f"SELECT count(*) FROM public.{PEER_TABLE}").fetchone()[0]
    box = conn.execute(f"SELECT ST_XMin(e), ST_YMin(e), ST_XMax(e), ST_YMax(e) "
                       f"FROM (SELECT ST_Extent(geom) e FROM public.{PEER_TABLE}) s").fetchone()
    return {"rows": n, "geometry_type": geom_type, "storage_srid": storage_srid,
            "extent_crs84": [round(v, 6) for v in box], "seconds": round(time.perf_counter() - t0, 1)}


def truth(conn: Any, bbox: tuple[float, float, float, float]) -> set[str]:
    """The uids PostGIS says intersect a CRS84 bbox (footprints transformed to CGCS2000 lon/lat)."""
    rows = conn.execute("SELECT uid FROM city_object WHERE layer = 'buildings' AND "
                        "ST_Intersects(ST_Transform(geom, 4490), ST_MakeEnvelope(%s, %s, %s, %s, 4490))",
                        bbox).fetchall()
    return {r[0] for r in rows}


# ---------------------------------------------------------------------------------------------- workloads
def bbox_around(lon: float, lat: float, size_m: float) -> tuple[float, float, float, float]:
    """A lon/lat box of about size_m × size_m metres centred on a point (6 decimals, ~0.1 m)."""
    dlat = size_m / 2 / M_PER_DEG_LAT
    dlon = size_m / 2 / (M_PER_DEG_LAT * math.cos(math.radians(lat)))
    return (round(lon - dlon, 6), round(lat - dlat, 6), round(lon + dlon, 6), round(lat + dlat, 6))


@dataclass
class Plan:
    """The deterministic inputs of every workload (the same for each server)."""

    w1_bboxes: list[tuple[float, float, float, float]]
    w2_bboxes: list[tuple[float, float, float, float]]
    w3_uids: list[str]
    w4_ranks: list[int]  # 0-based rank in the layer of a deep page's first feature (offset)
    w4_after_ids: list[int]  # ours: the id of the feature just before that rank (id order)
    w4_first_uid_ours: list[str]  # the uid expected first on each W4 page (id order)
    deep: int
    first_uid_ours: str  # the uid expected first on the first page (id order)


def make_plan(conn: Any, n_urls: int, seed: int) -> Plan:
    """Bbox centres are points on random buildings' footprints (inside the city, never an empty field)."""
    rows = conn.execute(
        "SELECT id, uid, ST_X(p), ST_Y(p) "
        "FROM (SELECT id, uid, ST_PointOnSurface(ST_Transform(geom, 4490)) p FROM city_object "
        "      WHERE layer = 'buildings') s ORDER BY id").fetchall()
    n = len(rows)
    rng = random.Random(seed)
    w1 = [bbox_around(rows[i][2], rows[i][3], 500) for i in rng.sample(range(n), n_urls)]
    w2 = [bbox_around(rows[i][2], rows[i][3], 2000) for i in rng.sample(range(n), n_urls)]
    w3 = [rows[i][1] for i in rng.sample(range(n), n_urls)]
    deep = min(50_000, n // 2)  # a small demo has no 50,000th building
    ranks = [deep + rng.randrange(100) for _ in range(n_urls)]
    return Plan(w1, w2, w3, ranks, [rows[r - 1][0] for r in ranks], [rows[r][1] for r in ranks], deep,
                rows[0][1])


def _bbox(b: tuple[float, ...]) -> str:
    return ",".join(f"{v:.6f}" for v in b)


def collection_path(server: str) -> tuple[str, str]:
    """A server's path of the buildings collection, and its ``f`` value for GeoJSON."""
    if server == "tipg":
        return "/collections/public.buildings_4326", "geojson"
    return "/collections/buildings", "json"


def items_path(server: str, *params: tuple[str, Any]) -> str:
    coll, f = collection_path(server)
    return f"{coll}/items?" + urlencode([("f", f), *params], safe=",")


def workload_paths(server: str, plan: Plan) -> dict[str, list[str]]:
    """Each workload's URL paths for one server (same requests, each server's own spelling)."""
    coll, f = collection_path(server)

    def items(*params: tuple[str, Any]) -> str:
        return items_path(server, *params)

    paths = {
        "W1": [items(("bbox", _bbox(b)), ("limit", 100)) for b in plan.w1_bboxes],
        "W1b": [items(("limit", 100))],
        "W2": [items(("bbox", _bbox(b)), ("limit", 1000)) for b in plan.w2_bboxes],
        "W3": [f"{coll}/items/{uid}?f={f}" for uid in plan.w3_uids],
    }
    if server == "ours":
        paths["W4"] = [items(("limit", PAGE_SIZE), ("after", a)) for a in plan.w4_after_ids]
    else:
        paths["W4"] = [items(("offset", r), ("limit", PAGE_SIZE)) for r in plan.w4_ranks]
    return paths


# ---------------------------------------------------------------------------------------------- processes
def _proc_stat(pid: int | str) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()  # fields after "pid (comm) ": state, ppid, …


def tree_pids(root: int) -> list[int]:
    """root and all its descendants (scanned from /proc each time: workers may be replaced)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _proc_stat(d)) is not None:
            children.setdefault(int(st[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out


def tree_cpu_seconds(root: int) -> float:
    ticks = 0
    for pid in tree_pids(root):
        if (st := _proc_stat(pid)) is not None:
            ticks += int(st[11]) + int(st[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_memory_mib(root: int) -> tuple[float, float]:
    """(sum of RSS, sum of PSS) of a process tree, MiB."""
    rss = pss = 0
    for pid in tree_pids(root):
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            continue
    return rss / 1024, pss / 1024


@dataclass
class Server:
    """One server under test: how to launch it, and what was measured of it."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    log_path: Path
    proc: subprocess.Popen | None = None
    cold_start_s: float | None = None
    error: str | None = None
    peak_rss_mib: float = 0.0
    peak_pss_mib: float = 0.0
    paths: dict[str, list[str]] = field(default_factory=dict)
    keeps_alive: bool = True  # uvicorn workers keep wrk's connections; gunicorn's sync workers close them

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def start(self, probe: str, timeout: float = 180.0) -> None:
        """Launch and wait for the first 200 of ``probe``: the cold start."""
        log(f"starting {self.name}: {' '.join(self.cmd)}")
        logf = self.log_path.open("wb")
        t0 = time.perf_counter()
        # its own session: stop() signals the whole group (uvicorn/gunicorn parents and their workers)
        self.proc = subprocess.Popen(self.cmd, env={**os.environ, **self.env}, cwd=self.cwd, stdout=logf,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url(probe), timeout=30) as r:
                    if r.status == 200:
                        r.read()
                        break
            except (OSError, urllib.error.HTTPError):
                pass
            if time.perf_counter() - t0 > timeout:
                raise RuntimeError(f"{self.name}: no 200 from {probe} in {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)
        self.cold_start_s = round(time.perf_counter() - t0, 2)
        log(f"{self.name} ready in {self.cold_start_s} s (pid {self.proc.pid})")

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


class MemorySampler:
    """Samples a server's process tree every 0.5 s while in use; keeps the peaks on the server."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            rss, pss = tree_memory_mib(self.server.proc.pid)
            self.server.peak_rss_mib = max(self.server.peak_rss_mib, rss)
            self.server.peak_pss_mib = max(self.server.peak_pss_mib, pss)
            self._stop.wait(0.5)

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def wait_idle(servers: list[Server], db: Any, timeout: float = 90.0) -> float:
    """Wait until every server tree uses < 5 % of a core and the database runs no other query.

    A slow server keeps answering requests wrk gave up on (and PostgreSQL keeps running their queries):
    that must not eat into the next server's window. Returns the seconds waited.
    """
    t0 = time.perf_counter()
    quiet = 0
    while quiet < 2 and time.perf_counter() - t0 < timeout:
        before = sum(tree_cpu_seconds(s.proc.pid) for s in servers)
        time.sleep(0.5)
        busy = sum(tree_cpu_seconds(s.proc.pid) for s in servers) - before > 0.025
        active = db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                            "AND state = 'active' AND pid <> pg_backend_pid()").fetchone()[0]
        quiet = 0 if busy or active else quiet + 1
    waited = time.perf_counter() - t0
    if quiet < 2:
        log(f"warning: not idle after {timeout:.0f} s, going on")
    return waited


# ---------------------------------------------------------------------------------------------- wrk
LUA = r"""-- written by bench/features_bench.py: rotate through a fixed list of request paths
paths = {
%s
}
local counter = 0
function setup(thread)
  -- each thread starts at its own place in the list
  thread:set("start", counter * math.floor(#paths / 2))
  counter = counter + 1
end
function init(args)
  i = start or 0
end
function request()
  i = (i %% #paths) + 1
  return wrk.format("GET", paths[i])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,"connect":%%d,"read":%%d,"write":%%d,' ..
    '"status":%%d,"timeout":%%d,"p50_us":%%d,"p90_us":%%d,"p99_us":%%d,"mean_us":%%.1f,"max_us":%%d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def write_lua(path: Path, paths: list[str]) -> None:
    path.write_text(LUA % ",\n".join(json.dumps(p) for p in paths))


CONNECTIONS = 4
BALANCE_ATTEMPTS = 15


def connections_per_process(server: Server) -> dict[int, int]:
    """Established TCP connections to the server's port, counted per process of its tree holding them."""
    port = f":{server.port:04X}"
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[1].endswith(port) and f[3] == "01":  # local address is the server's, state ESTABLISHED
                inodes.add(f[9])
    per: dict[int, int] = {}
    for pid in tree_pids(server.proc.pid):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and target[8:-1] in inodes:
                per[pid] = per.get(pid, 0) + 1
    return per


def run_wrk(server: Server, script: Path, seconds: int, workers: int = 0,
            settle: Any = None) -> dict[str, Any]:
    """One wrk run: 2 threads, 4 connections, a 30 s timeout (slow servers' pages are not socket errors).

    With ``workers`` (servers that keep connections alive: uvicorn's), the window only counts when wrk's
    connections are spread evenly over the workers (2/2 for 4 on 2): the kernel hands each new connection
    to whichever worker accepts first, and 4/0 happened in about half of the windows, which measures one
    worker instead of two (W3: ~500 vs ~800 req/s, for us and tipg alike). An uneven start is stopped
    after a second, ``settle()`` waits for the server to go idle, and wrk starts again (at most
    BALANCE_ATTEMPTS times; the last attempt counts whatever its split).
    """
    cmd = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{seconds}s", "--latency", "--timeout", "30s", "-s", str(script),
           server.url("/")]
    split: list[int] | None = None
    for attempt in range(1, BALANCE_ATTEMPTS + 1):
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if workers:
            deadline = time.monotonic() + 3
            per: dict[int, int] = {}
            while time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.25)
                per = connections_per_process(server)
                if sum(per.values()) >= CONNECTIONS:
                    break
            split = sorted(per.values(), reverse=True) + [0] * max(0, workers - len(per))
            even = sum(split) == CONNECTIONS and max(split) - min(split) <= 1
            if not even and attempt < BALANCE_ATTEMPTS:
                proc.kill()
                proc.communicate()
                if settle is not None:
                    settle()
                continue
        try:
            out = proc.communicate(timeout=seconds + 120)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
        break
    line = next((ln for ln in out.splitlines() if ln.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no summary:\n{out}")
    r = json.loads(line[8:])
    secs = r["duration_us"] / 1e6
    return {"req_s": round(r["requests"] / secs, 2), "requests": r["requests"],
            "p50_ms": round(r["p50_us"] / 1000, 2), "p90_ms": round(r["p90_us"] / 1000, 2),
            "p99_ms": round(r["p99_us"] / 1000, 2), "mean_ms": round(r["mean_us"] / 1000, 2),
            "max_ms": round(r["max_us"] / 1000, 1), "non_2xx_3xx": r["status"],
            "socket_errors": r["connect"] + r["read"] + r["write"] + r["timeout"],
            "mib_s": round(r["bytes"] / secs / 2**20, 2), "connections_per_worker": split,
            "attempts": attempt}


# ---------------------------------------------------------------------------------------------- correctness
def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=300) as r:
        return json.loads(r.read())


def all_pages(server: Server, first: str, max_pages: int = 500) -> tuple[list[str], int]:
    """The feature ids of every page from ``first`` on, following ``next`` links; and the page count."""
    ids: list[str] = []
    url, pages = server.url(first), 0
    while url and pages < max_pages:
        doc = get_json(url)
        pages += 1
        ids.extend(str(f.get("id")) for f in doc.get("features", []))
        url = next((ln["href"] for ln in doc.get("links", []) if ln.get("rel") == "next"), None)
        # a next link after an empty page would loop for ever on some servers
        if not doc.get("features"):
            break
    return ids, pages


def check_correctness(server: Server, plan: Plan, db: Any, truths: dict[tuple, set[str]], n_w1: int,
                      n_w2: int) -> dict[str, Any]:
    """Compare a server's answers with PostGIS: extra/missing/duplicate features, wrong items and pages."""
    out: dict[str, Any] = {"bbox": [], "extra": 0, "missing": 0, "duplicates": 0, "bboxes_wrong": 0}
    # Pages smaller than the workloads' (a 500 m bbox holds ~60 buildings, a 2 km one ~800), so that
    # every answer spans several pages and the next links (ours: keyset tokens; peers: offset) are tested.
    for label, bboxes, k, limit in (("W1", plan.w1_bboxes, n_w1, 20), ("W2", plan.w2_bboxes, n_w2, 200)):
        for b in bboxes[:k]:
            ids, pages = all_pages(server, items_path(server.name, ("bbox", _bbox(b)), ("limit", limit)))
            got, want = set(ids), truths[b]
            extra, missing, dup = len(got - want), len(want - got), len(ids) - len(got)
            out["bbox"].append({"workload": label, "bbox": b, "truth": len(want), "returned": len(ids),
                                "pages": pages, "extra": extra, "missing": missing, "duplicates": dup})
            out["extra"] += extra
            out["missing"] += missing
            out["duplicates"] += dup
            out["bboxes_wrong"] += bool(extra or missing or dup)
    # W3: the uid asked for, once
    w3_wrong, w3 = 0, list(zip(plan.w3_uids, server.paths["W3"], strict=True))[:20]
    for uid, path in w3:
        try:
            doc = get_json(server.url(path))
            w3_wrong += str(doc.get("id")) != uid
        except urllib.error.HTTPError:
            w3_wrong += 1
    out["w3_checked"], out["w3_wrong"] = len(w3), w3_wrong
    # W1b: the first page holds the first 100 features of the layer (id order for ours, uid order for peers)
    doc = get_json(server.url(server.paths["W1b"][0]))
    feats = doc.get("features", [])
    expected = plan.first_uid_ours if server.name == "ours" else db.execute(
        f"SELECT uid FROM public.{PEER_TABLE} ORDER BY uid LIMIT 1").fetchone()[0]
    out["w1b_wrong"] = int(len(feats) != PAGE_SIZE or not feats or str(feats[0].get("id")) != expected)
    # W4: 100 features, starting where the page is meant to (id order for ours, uid order for the peers)
    w4_wrong, w4_checked = 0, min(5, len(plan.w4_ranks))
    for j in range(w4_checked):
        doc = get_json(server.url(server.paths["W4"][j]))
        feats = doc.get("features", [])
        if server.name == "ours":
            expected = plan.w4_first_uid_ours[j]
        else:
            expected = db.execute(f"SELECT uid FROM public.{PEER_TABLE} ORDER BY uid OFFSET %s LIMIT 1",
                                  (plan.w4_ranks[j],)).fetchone()[0]
        w4_wrong += len(feats) != PAGE_SIZE or not feats or str(feats[0].get("id")) != expected
    out["w4_checked"], out["w4_wrong"] = w4_checked, w4_wrong
    return out


# ---------------------------------------------------------------------------------------------- servers
def ours_source(ref: str, tmp: Path) -> tuple[Path, dict[str, Any]]:
    """Where our server runs from: a snapshot of a git ref (default HEAD), or the working tree itself.

    Someone may be editing cim/ while this runs (for 20 minutes): a snapshot makes the result belong to one
    commit. ``python -m cim.cli`` run in the snapshot imports its ``cim`` (the working directory comes
    first on sys.path, before the editable install's finder), with its config.yml and tiles/.
    """
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()

    if ref == "worktree":
        return ROOT, {"ref": "worktree", "commit": git("rev-parse", "--short", "HEAD"),
                      "uncommitted_files_in_cim": len(git("status", "--short", "cim").splitlines())}
    src = tmp / "ours-src"
    src.mkdir()
    archive = subprocess.run(["git", "archive", ref, "cim", "config.yml", "tiles"], cwd=ROOT,
                             capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src, {"ref": ref, "commit": git("rev-parse", "--short", ref)}


def server_ours(url: str, workers: int, tmp: Path, src: Path) -> Server:
    port = free_port()
    data_dir = tmp / "ours-data"
    data_dir.mkdir()
    # the demo's rasters (the DEM COG the raster layers name): from the demo's data folder (a throwaway
    # demo's, or CIM_DATA_DIR's for --database-url), since `cim serve` refuses a raster layer without its file
    for demo in (tmp / "demo-data", Path(os.environ.get("CIM_DATA_DIR", tmp / "none"))):
        for tif in demo.glob("*.tif"):
            if not (data_dir / tif.name).exists():
                (data_dir / tif.name).symlink_to(tif.resolve())
    return Server("ours", cim("serve", "--port", str(port), "--workers", str(workers)),
                  {"CIM_DATABASE_URL": url, "CIM_DATA_DIR": str(data_dir)}, src, port, tmp / "ours.log")


def server_pygeoapi(url: str, workers: int, tmp: Path, extent: list[float]) -> Server:
    """Stock pygeoapi: its PostgreSQL provider on the peer table, gunicorn sync workers."""
    import yaml

    venv = BENCH / ".venv-pygeoapi"
    port = free_port()
    p = pg_params(url)
    data = {k: v for k, v in {"host": p["host"], "port": p["port"], "dbname": p["dbname"], "user": p["user"],
                              "password": p["password"], "search_path": ["public"]}.items() if v is not None}
    cfg = {
        "server": {
            "bind": {"host": "127.0.0.1", "port": port},
            "url": f"http://127.0.0.1:{port}",
            "mimetype": "application/json; charset=UTF-8",
            "encoding": "utf-8",
            "gzip": False,
            "languages": ["en-US"],
            "cors": False,
            "pretty_print": False,
            # W2 asks for 1000 per page (the default maximum is 10); ours allows 10,000 as well
            "limits": {"default_items": 10, "max_items": 10000},
            "map": {"url": "https://tile.openstreetmap.org/{z}/{x}/{y}.png", "attribution": "OSM"},
        },
        "logging": {"level": "ERROR"},
        "metadata": {
            "identification": {"title": "features_bench peer", "description": "pygeoapi on buildings_4326",
                               "keywords": ["bench"], "keywords_type": "theme",
                               "terms_of_service": "https://creativecommons.org/licenses/by/4.0/",
                               "url": "https://example.org"},
            "license": {"name": "CC-BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"},
            "provider": {"name": "bench", "url": "https://example.org"},
            "contact": {"name": "bench", "email": "bench@example.org", "url": "https://example.org",
                        "role": "pointOfContact"},
        },
        "resources": {
            "buildings": {
                "type": "collection",
                "title": "Buildings",
                "description": "Benxi demo buildings (copy in EPSG:4326)",
                "keywords": ["buildings"],
                "extents": {"spatial": {"bbox": extent, "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
                "providers": [{"type": "feature", "name": "PostgreSQL", "data": data, "id_field": "uid",
                               "table": PEER_TABLE, "geom_field": "geom"}],
            }
        },
    }
    cfg_path, oas_path = tmp / "pygeoapi-config.yml", tmp / "pygeoapi-openapi.yml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    env = {"PYGEOAPI_CONFIG": str(cfg_path), "PYGEOAPI_OPENAPI": str(oas_path)}
    # the OpenAPI document is a deployment step (not part of the cold start); ours writes it in `cim serve`
    t0 = time.perf_counter()
    proc = subprocess.run([str(venv / "bin/pygeoapi"), "openapi", "generate", str(cfg_path), "--output-file",
                           str(oas_path)], env={**os.environ, **env}, cwd=tmp, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"pygeoapi openapi generate failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    server = Server("pygeoapi", [str(venv / "bin/gunicorn"), "-w", str(workers), "-b", f"127.0.0.1:{port}",
                                 "--timeout", "120", "--no-control-socket", "--log-level", "warning",
                                 "pygeoapi.flask_app:APP"], env, tmp, port, tmp / "pygeoapi.log",
                    keeps_alive=False)
    server.openapi_s = round(time.perf_counter() - t0, 2)  # type: ignore[attr-defined]
    return server


def server_tipg(url: str, workers: int, tmp: Path) -> Server:
    """tipg restricted to the peer table (no functions: public also holds PostGIS's own)."""
    venv = BENCH / ".venv-tipg"
    port = free_port()
    cwd = tmp / "tipg"  # tipg reads a .env from its working directory: an empty one of its own
    cwd.mkdir()
    env = {"DATABASE_URL": libpq_url(url), "TIPG_DB_SCHEMAS": '["public"]',
           "TIPG_DB_TABLES": f'["public.{PEER_TABLE}"]', "TIPG_DB_EXCLUDE_FUNCTION_SCHEMAS": '["public"]'}
    cmd = [str(venv / "bin/uvicorn"), "tipg.main:app", "--host", "127.0.0.1", "--port", str(port),
           "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning",
           "--no-access-log"]
    return Server("tipg", cmd, env, cwd, port, tmp / "tipg.log")


def versions(venv: Path, packages: list[str]) -> dict[str, str]:
    code = ("import importlib.metadata as m, json, sys; "
            "print(json.dumps({p: m.version(p) for p in sys.argv[1:]}))")
    try:
        proc = subprocess.run([str(venv / "bin/python"), "-c", code, *packages], capture_output=True,
                              text=True, check=True)
        return json.loads(proc.stdout)
    except (subprocess.CalledProcessError, OSError, json.JSONDecodeError):
        return {}


# ---------------------------------------------------------------------------------------------- report
def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def wrong_workloads(c: dict[str, Any] | None) -> set[str]:
    """The workloads a server answered wrongly in the correctness check: they get no throughput figure."""
    if not c or "error" in c:
        return set(WORKLOADS)
    bad = {b["workload"] for b in c["bbox"] if b["extra"] or b["missing"] or b["duplicates"]}
    for wl, key in (("W1b", "w1b_wrong"), ("W3", "w3_wrong"), ("W4", "w4_wrong")):
        if c.get(key):
            bad.add(wl)
    return bad


def summarise(raw: dict[str, dict[str, list[dict]]],
              correctness: dict[str, Any]) -> dict[str, dict[str, dict[str, Any]]]:
    """Medians over rounds per server and workload, errors summed; and ours against each peer.

    The ratio is the median of the per-round ratios: within a round the two servers ran minutes apart,
    so a shared machine's slow spell weighs on both (rounds here differ by up to ~30 %). A workload a
    server answered wrongly (``wrong``) has no ratio: a fast wrong answer is not a result.
    """
    out: dict[str, dict[str, dict[str, Any]]] = {}
    wrong = {server: wrong_workloads(correctness.get(server)) for server in raw}
    for server, per_wl in raw.items():
        for wl, runs in per_wl.items():
            m = out.setdefault(server, {})[wl] = {
                "req_s": median([r["req_s"] for r in runs]), "p50_ms": median([r["p50_ms"] for r in runs]),
                "p99_ms": median([r["p99_ms"] for r in runs]), "mib_s": median([r["mib_s"] for r in runs]),
                "non_2xx_3xx": sum(r["non_2xx_3xx"] for r in runs),
                "socket_errors": sum(r["socket_errors"] for r in runs), "rounds": len(runs),
                "wrong": wl in wrong[server]}
            if server != "ours" and wl in raw.get("ours", {}) and not m["wrong"] \
                    and wl not in wrong.get("ours", set()):
                pairs = zip(raw["ours"][wl], runs, strict=False)
                m["ours_vs_this"] = median([o["req_s"] / p["req_s"] for o, p in pairs if p["req_s"]])
    return out


# the targets for our server: (workload, peer, minimum ratio of req/s in the same run)
RATIO_TARGETS = (("W1", "tipg", 2.0), ("W2", "tipg", 3.0), ("W3", "tipg", 1.2))
DEEP_VS_FIRST_MIN = 0.8  # "deep page ≈ first page": the deep page at 80 % of the first page's req/s or better
P99_MAX_MS = 100.0


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of the issue, its measured figure, and whether it was met."""
    summary, runs = result["summary"], result["runs"]
    ours = summary.get("ours", {})
    out: list[dict[str, Any]] = []
    for wl, peer, want in RATIO_TARGETS:
        r = summary.get(peer, {}).get(wl, {}).get("ours_vs_this")
        out.append({"target": f"{wl}: ours ≥ {want:g}× {peer} (req/s)", "measured": r,
                    "shown": "—" if r is None else f"{r:.2f}×", "met": r is not None and r >= want})
    o = runs.get("ours", {})
    if "W4" in o and "W1b" in o and not (ours["W4"]["wrong"] or ours["W1b"]["wrong"]):
        rs = median([d["req_s"] / f["req_s"] for d, f in zip(o["W4"], o["W1b"], strict=False) if f["req_s"]])
        p50 = median([d["p50_ms"] / f["p50_ms"] for d, f in zip(o["W4"], o["W1b"], strict=False) if f["p50_ms"]])
        out.append({"target": f"W4 deep page ≈ first page (W1b): req/s ratio ≥ {DEEP_VS_FIRST_MIN:g}",
                    "measured": rs, "p50_ratio": p50,
                    "shown": f"{rs:.2f}× the first page's req/s (p50 {p50:.2f}×)",
                    "met": rs is not None and rs >= DEEP_VS_FIRST_MIN})
    for wl, m in ours.items():
        out.append({"target": f"{wl}: ours p99 < {P99_MAX_MS:g} ms", "measured": m["p99_ms"],
                    "shown": f"{m['p99_ms']:g} ms", "met": not m["wrong"] and m["p99_ms"] < P99_MAX_MS})
    return out


def markdown(result: dict[str, Any]) -> str:
    """The results as two Markdown tables (from the JSON alone, so a saved run can be shown again)."""
    summary, correctness, failed = result["summary"], result["correctness"], result.get("failed", {})
    names = [s for s in SERVERS if s in summary]
    head = "| workload | " + " | ".join(f"{s} req/s · p50 / p99 ms" for s in names)
    head += " | ours/tipg | ours/pygeoapi |"
    lines = [head, "|" + "---|" * (len(names) + 3)]
    for wl in result["args"]["workloads"]:
        cells = []
        for s in names:
            m = summary[s].get(wl)
            if m is None:
                cells.append("—")
                continue
            if m.get("wrong"):
                cells.append("**wrong results** (no figure)")
                continue
            errs = m["non_2xx_3xx"] + m["socket_errors"]
            cells.append(f"{m['req_s']:g} · {m['p50_ms']:g} / {m['p99_ms']:g}"
                         + (f" ({errs} errors)" if errs else ""))
        ratios = [summary.get(peer, {}).get(wl, {}).get("ours_vs_this") for peer in ("tipg", "pygeoapi")]
        lines.append(f"| {wl}: {WORKLOADS[wl]} | " + " | ".join(cells) + " | "
                     + " | ".join(f"**{r:.2f}**" if r else "—" for r in ratios) + " |")
    spread = [r for runs in result["runs"].values() for rs in runs.values() for r in rs
              if r.get("connections_per_worker") is not None]
    if spread:
        uneven = sum(1 for r in spread if max(r["connections_per_worker"]) - min(r["connections_per_worker"]) > 1)
        lines += ["", f"Keep-alive servers' windows: {len(spread) - uneven} of {len(spread)} with wrk's "
                      f"{CONNECTIONS} connections spread evenly over the workers (wrk restarted "
                      f"{sum(r['attempts'] - 1 for r in spread)} times in all to get there)."]
    if result.get("targets"):
        lines += ["", "| target | measured | met |", "|---|---|---|"]
        lines += [f"| {t['target']} | {t['shown']} | {'yes' if t['met'] else '**no**'} |"
                  for t in result["targets"]]
    lines += ["", "| server | cold start | peak RSS (tree) | peak PSS (tree) "
              "| bbox mismatches (extra / missing, bboxes wrong) | W1b wrong | W3 wrong | W4 wrong |",
              "|---|---|---|---|---|---|---|---|"]
    for name in SERVERS:
        if name in failed:
            lines.append(f"| {name} | failed: {failed[name].splitlines()[0][:120]} | | | | | | |")
            continue
        if name not in result["cold_start_s"]:
            continue
        c = correctness.get(name, {})
        corr = (f"{c['extra']} / {c['missing']} ({c['bboxes_wrong']} of {len(c['bbox'])})"
                if "error" not in c else f"error: {c['error'][:80]}")
        lines.append(f"| {name} | {result['cold_start_s'][name]} s | {result['peak_rss_mib'][name]} MiB "
                     f"| {result['peak_pss_mib'][name]} MiB | {corr} | {c.get('w1b_wrong', '—')} of 1 "
                     f"| {c.get('w3_wrong', '—')} of {c.get('w3_checked', '—')} "
                     f"| {c.get('w4_wrong', '—')} of {c.get('w4_checked', '—')} |")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main
def bench(url: str, args: argparse.Namespace, tmp: Path, src: Path, source: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = {"date": dt.datetime.now().isoformat(timespec="seconds"), "args": vars(args),
                              "ours_source": source, "nproc": os.cpu_count()}
    db = connect(url)
    try:
        row = db.execute("SELECT split_part(version(), ' ', 2), postgis_lib_version()").fetchone()
        result["postgresql"], result["postgis"] = row
        log("creating the peers' table public.buildings_4326")
        result["peer_table"] = create_peer_table(db)
        log(f"peer table: {result['peer_table']}")
        plan = make_plan(db, args.urls, args.seed)
        result["layer_size"], result["deep_rank"] = result["peer_table"]["rows"], plan.deep
        log(f"computing PostGIS truth for {args.check_w1} W1 + {args.check_w2} W2 bboxes")
        t0 = time.perf_counter()
        truths = {b: truth(db, b) for b in plan.w1_bboxes[:args.check_w1] + plan.w2_bboxes[:args.check_w2]}
        log(f"truth in {time.perf_counter() - t0:.1f} s; features per bbox: W1 median "
            f"{median([len(truths[b]) for b in plan.w1_bboxes[:args.check_w1]])}, W2 median "
            f"{median([len(truths[b]) for b in plan.w2_bboxes[:args.check_w2]])}")
        result["versions"] = {
            "ours": versions(Path(sys.executable).parent.parent, ["pygeoapi", "uvicorn", "uvloop", "httptools", "SQLAlchemy",
                                              "psycopg"]),
            "pygeoapi": versions(BENCH / ".venv-pygeoapi", ["pygeoapi", "gunicorn", "SQLAlchemy",
                                                            "GeoAlchemy2", "psycopg2-binary", "Flask"]),
            "tipg": versions(BENCH / ".venv-tipg", ["tipg", "uvicorn", "uvloop", "httptools", "asyncpg",
                                                    "fastapi"]),
        }

        servers: dict[str, Server] = {}
        failed: dict[str, str] = {}
        try:
            # one at a time, each cold start on an otherwise idle machine (as far as we are concerned)
            for name in args.servers:
                s = None
                try:
                    if name == "ours":
                        s = server_ours(url, args.workers, tmp, src)
                    elif name == "pygeoapi":
                        s = server_pygeoapi(url, args.workers, tmp, result["peer_table"]["extent_crs84"])
                    else:
                        s = server_tipg(url, args.workers, tmp)
                    s.paths = workload_paths(name, plan)
                    s.start(s.paths["W1"][0])
                    servers[name] = s
                except Exception as exc:  # a peer that cannot run is a result, not the end of the run
                    failed[name] = f"{type(exc).__name__}: {exc}"
                    log(f"{name} failed: {failed[name]}")
                    if s is not None:
                        s.stop()
            result["cold_start_s"] = {n: s.cold_start_s for n, s in servers.items()}
            if "pygeoapi" in servers:
                result["pygeoapi_openapi_generate_s"] = servers["pygeoapi"].openapi_s  # type: ignore[attr-defined]

            log("correctness")
            correctness: dict[str, Any] = {}
            for name, s in servers.items():
                try:
                    correctness[name] = check_correctness(s, plan, db, truths, args.check_w1, args.check_w2)
                except Exception as exc:
                    correctness[name] = {"error": f"{type(exc).__name__}: {exc}", "bbox": [], "extra": 0,
                                         "missing": 0, "bboxes_wrong": 0}
                c = correctness[name]
                log(f"{name}: extra {c['extra']}, missing {c['missing']}, bboxes wrong {c['bboxes_wrong']}, "
                    f"W3 wrong {c.get('w3_wrong')}, W4 wrong {c.get('w4_wrong')} {c.get('error', '')}")
            result["correctness"] = correctness

            scripts = {}
            for name, s in servers.items():
                for wl in args.workloads:
                    scripts[name, wl] = tmp / f"{name}-{wl}.lua"
                    write_lua(scripts[name, wl], s.paths[wl])
            raw: dict[str, dict[str, list[dict]]] = {n: {} for n in servers}
            live = list(servers.values())
            for rnd in range(args.rounds):
                for wl in args.workloads:
                    for s in live:  # alternate: ours, pygeoapi, tipg, ours, …
                        if not s.alive():
                            raise RuntimeError(f"{s.name} died:\n{s.log_tail()}")
                        wait_idle(live, db)
                        balance = args.workers if args.balance and s.keeps_alive and args.workers > 1 else 0
                        with MemorySampler(s):
                            run_wrk(s, scripts[s.name, wl], args.warmup)
                            idle = wait_idle(live, db)
                            r = run_wrk(s, scripts[s.name, wl], args.duration, balance,
                                        settle=lambda: wait_idle(live, db))
                        r["idle_wait_s"] = round(idle, 1)
                        raw[s.name].setdefault(wl, []).append(r)
                        log(f"round {rnd + 1} {wl} {s.name}: {r['req_s']} req/s, p50 {r['p50_ms']} ms, "
                            f"p99 {r['p99_ms']} ms, errors {r['non_2xx_3xx'] + r['socket_errors']}"
                            + (f", connections per worker {r['connections_per_worker']} "
                               f"(attempt {r['attempts']})" if balance else ""))
            result["runs"] = raw
            result["summary"] = summarise(raw, correctness)
            result["targets"] = targets(result)
            result["peak_rss_mib"] = {n: round(s.peak_rss_mib) for n, s in servers.items()}
            result["peak_pss_mib"] = {n: round(s.peak_pss_mib) for n, s in servers.items()}
            result["failed"] = failed
            result["markdown"] = markdown(result)
        finally:
            for s in servers.values():
                s.stop()
    finally:
        db.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", help="an existing PostGIS holding a demo city (SQLAlchemy URL); "
                                               "default: a throwaway PostGIS with a new demo")
    parser.add_argument("--size", type=int, default=100_000, help="demo buildings (throwaway PostGIS only)")
    parser.add_argument("--duration", type=int, default=20, help="seconds per measured window")
    parser.add_argument("--warmup", type=int, default=3, help="seconds of warm-up before each window")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--urls", type=int, default=200, help="URLs per workload")
    parser.add_argument("--seed", type=int, default=20261130)
    parser.add_argument("--check-w1", type=int, default=20, help="W1 bboxes checked against PostGIS")
    parser.add_argument("--check-w2", type=int, default=5, help="W2 bboxes checked against PostGIS")
    parser.add_argument("--no-balance", dest="balance", action="store_false",
                        help="count every window, however wrk's connections land on the workers "
                             "(default: restart wrk until they are spread evenly; see run_wrk)")
    parser.add_argument("--servers", nargs="+", choices=SERVERS, default=list(SERVERS))
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    parser.add_argument("--ours-ref", default="HEAD", help="git ref our server runs from (a snapshot), "
                                                          "or 'worktree' for the working tree as it is")
    parser.add_argument("--output", type=Path,
                        help="JSON results (default bench/results/features-<date>.json)")
    parser.add_argument("--report", type=Path, metavar="JSON",
                        help="show a saved run's tables again (medians and ratios recomputed), and exit")
    args = parser.parse_args()
    if args.report:
        result = json.loads(args.report.read_text())
        result["summary"] = summarise(result["runs"], result["correctness"])
        result["targets"] = targets(result)
        result["markdown"] = markdown(result)
        args.report.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
        print(result["markdown"])
        return
    # a kill (not only Ctrl-C) must still run the finally blocks that stop the servers and the PostGIS
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    for venv, name in ((BENCH / ".venv-pygeoapi", "pygeoapi"), (BENCH / ".venv-tipg", "tipg")):
        if name in args.servers and not (venv / "bin/python").exists():
            parser.error(f"{venv} is missing: run bash bench/peers.sh first "
                         f"(or leave {name} out of --servers)")

    with tempfile.TemporaryDirectory(prefix="cim-features-bench-") as tmpdir:
        tmp = Path(tmpdir)
        src, source = ours_source(args.ours_ref, tmp)
        log(f"our server runs from {src} ({source})")
        if args.database_url:
            result = bench(args.database_url, args, tmp, src, source)
        else:
            from cim.db.throwaway import ThrowawayPostGIS

            with ThrowawayPostGIS() as pg:
                url = make_demo(pg, args.size, str(tmp / "demo-data"), src)
                result = bench(url, args, tmp, src, source)
    out = args.output or BENCH / "results" / f"features-{dt.date.today().isoformat()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    args.output = str(out)
    out.write_text(json.dumps(result, indent=2, ensure_ascii=False, default=str))
    print(result["markdown"])
    log(f"results written to {out}")


if __name__ == "__main__":
    main()
