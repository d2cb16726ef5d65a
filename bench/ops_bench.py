"""Benchmark: city operations — the case-overlay of 10,000 cases in one batch, and case creation by 8
concurrent clients with a count proving no write was lost.

Not a test (timings belong here, not in pytest). Run:

    .venv/bin/python bench/ops_bench.py                       # both backends, a throwaway PostGIS, demo 2,000
    .venv/bin/python bench/ops_bench.py --backends postgis --size 5000 --rounds 3

Method (../shared/PERF-NOTES.md):
- Per backend: ``cim db init`` + ``cim demo --size N``; 10,000 cases stored (types drawn from the code list,
  each within 30 m of a random pipe node, so most find a pipe), ``cim serve`` (1 worker).
- Overlay: ``POST /processes/case-overlay/execution`` with the 10,000 ids, synchronous, radius 50 m; wall
  time of the whole HTTP request (JSON result included) and the server's peak RSS (VmHWM of its process
  tree) before and after. Peer, PostGIS only, alternated with ours in each round: the same relations as
  one hand-written PostGIS statement (six KNN/containment LATERAL joins over a table of the cases) run with
  psycopg — the database's floor, without viewpoints, DEM heights or JSON. Correctness in the same run:
  every case's related pipe, building and road must be the peer's.
- Creation: 8 client threads POST cases concurrently (``--creates`` in all); every 201 counted; the
  collection's count before and after must differ by exactly the number of 201s, and the history must
  hold one "create" version per case. Baseline in the same run: one client posting an eighth as many.
  Both after a warm-up of 8 cases per client (a server thread's first requests are slower).
- Rounds: ``--rounds`` (default 3), medians. Results as Markdown on stdout, JSON in bench/results/.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cim.db.engine import open_engine  # noqa: E402  (orders the imports SpatiaLite needs)

RADIUS = 50.0


def cim(env: dict[str, str], *args: str) -> None:
    subprocess.run([sys.executable, "-m", "cim.cli", *args], check=True, env={**os.environ, **env}, cwd=ROOT,
                   stdout=subprocess.DEVNULL)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def tree_hwm_mib(pid: int) -> float:
    """Sum of VmHWM (peak RSS) over a process and its descendants."""
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total / 1024


def seed_cases(url: str, n: int, seed: int) -> list[str]:
    """n cases near random pipe nodes, in one transaction, through cim.ops.cases (history included)."""
    from sqlalchemy import func, select

    from cim.db.schema import tables_for
    from cim.ops import cases

    engine = open_engine(url)
    t = tables_for(engine)
    co = t.city_object
    rng = random.Random(seed)
    codes = list(cases.CASE_TYPES)
    ids = []
    with engine.connect() as conn:
        nodes = conn.execute(select(func.ST_X(co.c.geom), func.ST_Y(co.c.geom)).where(co.c.layer == "pipe-nodes")).all()
    with engine.connect() as conn:
        conn.execution_options(write_lock=True)
        with conn.begin():
            for i in range(n):
                x, y = rng.choice(nodes)
                c = cases.Case(f"B{seed}-{i:06d}", rng.choice(codes), "reported", dt.datetime(2026, 12, 5, tzinfo=dt.UTC),
                               x + rng.uniform(-30, 30), y + rng.uniform(-30, 30), {"description": "bench"})
                ids.append(cases.create(conn, t, c)[0])
    engine.dispose()
    return ids


PEER_SQL = """
WITH c AS (SELECT n, geom, pipe_layer, pipe_kind FROM bench_case)
SELECT c.n, pn.uid AS pipe_node, ps.uid AS pipe_segment, b.uid AS building, st.uid AS storey, sp.uid AS space,
       r.uid AS road, pn.d AS pipe_node_d, ps.d AS pipe_segment_d, r.d AS road_d
FROM c
LEFT JOIN LATERAL (SELECT uid, ST_Distance(o.geom, c.geom) d FROM city_object o WHERE c.pipe_layer = 'pipe-nodes'
    AND o.layer = 'pipe-nodes' AND (c.pipe_kind IS NULL OR o.pipe_kind = c.pipe_kind) AND ST_DWithin(o.geom, c.geom, 50)
    ORDER BY o.geom <-> c.geom LIMIT 1) pn ON true
LEFT JOIN LATERAL (SELECT uid, ST_Distance(o.geom, c.geom) d FROM city_object o WHERE c.pipe_layer = 'pipelines'
    AND o.layer = 'pipelines' AND (c.pipe_kind IS NULL OR o.pipe_kind = c.pipe_kind) AND ST_DWithin(o.geom, c.geom, 50)
    ORDER BY o.geom <-> c.geom LIMIT 1) ps ON true
LEFT JOIN LATERAL (SELECT uid FROM city_object o WHERE o.layer = 'buildings' AND ST_Intersects(o.geom, c.geom)
    ORDER BY o.min_z, o.id LIMIT 1) b ON true
LEFT JOIN LATERAL (SELECT uid FROM city_object o WHERE o.layer = 'building-components' AND o.object_class = 'Storey'
    AND ST_Intersects(o.geom, c.geom) ORDER BY o.min_z, o.id LIMIT 1) st ON true
LEFT JOIN LATERAL (SELECT uid FROM city_object o WHERE o.layer = 'building-components' AND o.object_class = 'Space'
    AND ST_Intersects(o.geom, c.geom) ORDER BY o.min_z, o.id LIMIT 1) sp ON true
LEFT JOIN LATERAL (SELECT uid, ST_Distance(o.geom, c.geom) d FROM city_object o WHERE o.layer = 'roads'
    AND ST_DWithin(o.geom, c.geom, 50) ORDER BY o.geom <-> c.geom LIMIT 1) r ON true
ORDER BY c.n
"""


def peer_setup(url: str, ids: list[str]) -> None:
    """A plain table of the cases (point, pipe layer and kind of the type) for the peer statement."""
    from sqlalchemy import text

    from cim.ops.cases import CASE_TYPES

    engine = open_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS bench_case"))
        conn.execute(text("CREATE TABLE bench_case (n int PRIMARY KEY, uid text, geom geometry(Point, 4550), "
                          "pipe_layer text, pipe_kind text)"))
        rows = conn.execute(text("SELECT uid, case_type, geom FROM city_object WHERE layer = 'cases' AND uid = ANY(:ids)"),
                            {"ids": ids}).all()
        order = {u: i for i, u in enumerate(ids)}
        conn.execute(text("INSERT INTO bench_case VALUES (:n, :uid, :geom, :pl, :pk)"),
                     [{"n": order[u], "uid": u, "geom": g, "pl": CASE_TYPES[k].pipe_layer, "pk": CASE_TYPES[k].pipe_kind}
                      for u, k, g in rows])
        conn.execute(text("ANALYZE bench_case"))
    engine.dispose()


def peer_run(url: str) -> tuple[float, list[dict[str, Any]]]:
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, password=u.password,
                         options="-c max_parallel_workers_per_gather=0 -c jit=off") as pg:
        start = time.perf_counter()
        cur = pg.execute(PEER_SQL)
        names = [d.name for d in cur.description]
        rows = [dict(zip(names, r)) for r in cur.fetchall()]
        return time.perf_counter() - start, rows


def ours_run(client: httpx.Client, ids: list[str]) -> tuple[float, list[dict[str, Any]], int]:
    start = time.perf_counter()
    r = client.post("/processes/case-overlay/execution", json={"inputs": {"ids": ids, "radius_m": RADIUS}}, timeout=600)
    elapsed = time.perf_counter() - start
    r.raise_for_status()
    return elapsed, r.json()["cases"], len(r.content)


def compare(ours: list[dict[str, Any]], peer: list[dict[str, Any]]) -> int:
    """Cases whose related objects differ between ours and the peer (distances within 1 mm)."""
    bad = 0
    for o, p in zip(ours, peer):
        rel = o["related"]
        for name in ("pipe_node", "pipe_segment", "building", "storey", "space", "road"):
            if (rel.get(name) or {}).get("id") != p[name]:
                bad += 1
                break
            d = p.get(f"{name}_d")
            if d is not None and abs(rel[name]["distance_m"] - d) > 1e-3:
                bad += 1
                break
    return bad


def create_concurrently(base: str, clients: int, total: int, tag: str) -> dict[str, Any]:
    statuses: list[int] = []
    lock = threading.Lock()
    barrier = threading.Barrier(clients)
    per = total // clients

    def work(k: int) -> None:
        rng = random.Random(k)
        with httpx.Client(base_url=base, timeout=120) as c:
            barrier.wait()
            for i in range(per):
                body = {"type": "Feature", "id": f"{tag}-{k}-{i}",
                        "geometry": {"type": "Point", "coordinates": [123.77 + rng.uniform(-0.01, 0.01),
                                                                      41.30 + rng.uniform(-0.01, 0.01)]},
                        "properties": {"case_type": "BJ0101", "case_status": "reported",
                                       "reported_at": "2026-12-05T08:00:00+08:00"}}
                r = c.post("/collections/cases/items", json=body)
                with lock:
                    statuses.append(r.status_code)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    start = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    elapsed = time.perf_counter() - start
    return {"clients": clients, "posted": per * clients, "created": statuses.count(201),
            "other_statuses": sorted({s for s in statuses if s != 201}), "seconds": elapsed,
            "per_second": statuses.count(201) / elapsed}


def count_cases(client: httpx.Client) -> int:
    return client.get("/collections/cases/items", params={"f": "json", "limit": 1}).json()["numberMatched"]


def history_creates(url: str, tag: str) -> int:
    from sqlalchemy import func, select

    from cim.db.schema import tables_for

    engine = open_engine(url)
    t = tables_for(engine)
    h = t.case_history
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).where(h.c.operation == "create", h.c.case_uid.like(f"{tag}%"))).scalar_one()
    engine.dispose()
    return int(n)


def run_backend(backend: str, url: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    env = {"CIM_DATABASE_URL": url, "CIM_DATA_DIR": str(work / f"data-{backend}")}
    t0 = time.perf_counter()
    cim(env, "db", "init")
    cim(env, "demo", "--size", str(args.size))
    demo_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    ids = seed_cases(url, args.cases, 7)
    seed_s = time.perf_counter() - t0
    if backend == "postgis":
        peer_setup(url, ids)
    port = free_port()
    log = open(work / f"serve-{backend}.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "cim.cli", "serve", "--port", str(port)], cwd=ROOT,
                              env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"backend": backend, "demo_size": args.size, "demo_seconds": demo_s,
                           "seed_cases": args.cases, "seed_seconds": seed_s, "rounds": []}
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError((work / f"serve-{backend}.log").read_text())
            time.sleep(0.3)
        with httpx.Client(base_url=base) as client:
            ours_run(client, ids[:10])  # warm-up: transformers, DEM, pool
            out["rss_before_mib"] = tree_hwm_mib(server.pid)
            for r in range(args.rounds):
                rnd: dict[str, Any] = {}
                seconds, result, size = ours_run(client, ids)
                rnd.update(ours_seconds=seconds, response_mb=size / 1e6,
                           with_pipe=sum(1 for c in result if "pipe_node" in c["related"] or "pipe_segment" in c["related"]),
                           in_building=sum(1 for c in result if "building" in c["related"]))
                if backend == "postgis":
                    peer_s, peer_rows = peer_run(url)
                    rnd.update(peer_seconds=peer_s, mismatches=compare(result, peer_rows))
                out["rounds"].append(rnd)
                print(f"  {backend} round {r + 1}: {rnd}", file=sys.stderr)
            out["rss_after_mib"] = tree_hwm_mib(server.pid)
            tag = f"C{int(time.time())}"
            # warm-up: the server's first requests on each of its threads pay a one-off set-up
            create_concurrently(base, args.clients, 8 * args.clients, tag + "w")
            before = count_cases(client)
            out["create_1"] = create_concurrently(base, 1, args.creates // args.clients, tag + "s")
            out["create_8"] = create_concurrently(base, args.clients, args.creates, tag)
            after = count_cases(client)
            out["count_before"], out["count_after"] = before, after
            made = out["create_8"]["created"] + out["create_1"]["created"]
            out["lost_writes"] = made - (after - before)
            out["history_creates"] = history_creates(url, tag + "-") + history_creates(url, tag + "s-")
    finally:
        server.terminate()
        server.wait(20)
    return out


def report(results: list[dict[str, Any]]) -> str:
    lines = [f"| backend | overlay of {results[0]['seed_cases']:,} cases (HTTP, JSON) | peer: one PostGIS statement | ours / peer time | "
             "mismatches | server peak RSS before → after | cases with a pipe / in a building |", "|---|---|---|---|---|---|---|"]
    for r in results:
        ours = statistics.median(x["ours_seconds"] for x in r["rounds"])
        peer = [x["peer_seconds"] for x in r["rounds"] if "peer_seconds" in x]
        p = statistics.median(peer) if peer else None
        mism = max((x.get("mismatches", 0) for x in r["rounds"]), default=0) if peer else "—"
        last = r["rounds"][-1]
        lines.append(f"| {r['backend']} | {ours:.2f} s ({last['response_mb']:.1f} MB) | "
                     f"{'—' if p is None else f'{p:.2f} s'} | {'—' if p is None else f'{ours / p:.1f}×'} | {mism} | "
                     f"{r['rss_before_mib']:.0f} → {r['rss_after_mib']:.0f} MiB | "
                     f"{last['with_pipe']:,} / {last['in_building']:,} |")
    lines += ["", "| backend | 8 clients: created / posted | cases/s | 1 client cases/s | count after − before | lost | "
              "history 'create' rows |", "|---|---|---|---|---|---|---|"]
    for r in results:
        c8, c1 = r["create_8"], r["create_1"]
        lines.append(f"| {r['backend']} | {c8['created']:,} / {c8['posted']:,} {c8['other_statuses'] or ''} | "
                     f"{c8['per_second']:.0f} | {c1['per_second']:.0f} | {r['count_after'] - r['count_before']:,} | "
                     f"{r['lost_writes']} | {r['history_creates']:,} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="spatialite,postgis")
    ap.add_argument("--size", type=int, default=2000, help="demo buildings")
    ap.add_argument("--cases", type=int, default=10_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--creates", type=int, default=800, help="cases posted by the concurrent clients in all")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="ops-bench-") as tmp:
        work = Path(tmp)
        for backend in args.backends.split(","):
            if backend == "postgis":
                from cim.db.throwaway import ThrowawayPostGIS

                with ThrowawayPostGIS() as pg:
                    results.append(run_backend(backend, pg.create_database("ops_bench"), args, work))
            else:
                results.append(run_backend(backend, f"sqlite:///{work / 'ops.sqlite'}", args, work))
    print(report(results))
    target = ROOT / "bench" / "results" / f"ops-{dt.date.today().isoformat()}.json"
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(results, indent=2, default=str))
    print(f"\n{target}")


if __name__ == "__main__":
    main()
