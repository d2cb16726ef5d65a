"""Benchmark: generating and serving the demo city; loading large cities into PostGIS with bounded memory.

Not a test (timings belong here, not in pytest). Run:  .venv/bin/python bench/demo_load.py [--sizes 100000 1000000]

- serve: `cim db init` + `cim demo` (5,000 buildings, SpatiaLite) + `cim serve` until the first items page
  answers; wall time from the first command.
- load: `cim demo --size N` into a throwaway PostGIS for each N: wall time, objects written, peak RSS of
  the `cim demo` process. The peer, in the same run: GDAL's ogr2ogr (PG COPY driver) loading the same
  building footprints (exported to FlatGeobuf) into a new table with its spatial index.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cim.db.throwaway import ThrowawayPostGIS  # noqa: E402


def run_measured(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """Wall seconds, peak RSS (MiB) of that process alone, and its stdout."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **env}, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - t0
    out, err = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{out}\n{err}")
    return elapsed, usage.ru_maxrss // 1024, out


def cim(*args: str) -> list[str]:
    return [str(ROOT / ".venv/bin/python"), "-m", "cim.cli", *args]


def bench_serve(port: int = 5055) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        env = {"CIM_DATABASE_URL": f"sqlite:///{tmp}/cim.sqlite", "CIM_DATA_DIR": tmp}
        t0 = time.perf_counter()
        run_measured(cim("db", "init"), env)
        demo_s, rss, _ = run_measured(cim("demo", "--size", "5000"), env)
        server = subprocess.Popen(cim("serve", "--port", str(port)), env={**os.environ, **env}, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/collections/buildings/items?f=json") as r:
                        n = json.load(r)["numberMatched"]
                    break
                except OSError:
                    time.sleep(0.1)
            total = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait()
    return {"demo_s": round(demo_s, 1), "demo_peak_rss_mib": rss, "init_demo_serve_first_items_s": round(total, 1),
            "buildings_served": n}


def bench_load(pg: ThrowawayPostGIS, size: int) -> dict:
    url = pg.create_database(f"bench_{size}")
    env = {"CIM_DATABASE_URL": url, "CIM_DATA_DIR": tempfile.mkdtemp(prefix="cim-bench-")}
    run_measured(cim("db", "init"), env)
    seconds, rss, out = run_measured(cim("demo", "--size", str(size)), env)
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=pg.port, user="postgres", dbname=f"bench_{size}") as conn:
        objects = conn.execute("SELECT count(*) FROM city_object").fetchone()[0]
        solids = conn.execute("SELECT count(*) FROM city_object_geometry").fetchone()[0]
    result = {"size": size, "seconds": round(seconds, 1), "objects": objects, "geometries": solids,
              "objects_per_s": round(objects / seconds), "peak_rss_mib": rss}
    if shutil.which("ogr2ogr"):
        result.update(_peer_ogr2ogr(pg, size))
    shutil.rmtree(env["CIM_DATA_DIR"], ignore_errors=True)
    return result


def _peer_ogr2ogr(pg: ThrowawayPostGIS, size: int) -> dict:
    """GDAL loading the same building footprints (with their typed attributes) into PostGIS."""
    src = f"PG:host=127.0.0.1 port={pg.port} user=postgres dbname=bench_{size}"
    with tempfile.TemporaryDirectory() as tmp:
        fgb = f"{tmp}/buildings.fgb"
        subprocess.run(["ogr2ogr", "-f", "FlatGeobuf", fgb, src, "-sql",
                        "SELECT uid, name, usage, floors, height, year_built, district, address, geom FROM city_object "
                        "WHERE layer = 'buildings'"], check=True, capture_output=True)
        seconds, rss, _ = run_measured(["ogr2ogr", "-f", "PostgreSQL", src, fgb, "-nln", "peer_buildings",
                                        "-lco", "SPATIAL_INDEX=GIST", "--config", "PG_USE_COPY", "YES"], {})
        # the same file through our writer (what ingest uses), into an empty CIM database on the same server
        url = pg.create_database(f"bench_{size}_writer")
        ours_s, ours_rss, _ = run_measured([str(ROOT / ".venv/bin/python"), str(ROOT / "bench/load_footprints.py"),
                                            url, fgb], {})
    return {"peer_ogr2ogr_buildings_s": round(seconds, 1), "peer_ogr2ogr_buildings_per_s": round(size / seconds),
            "peer_ogr2ogr_peak_rss_mib": rss, "writer_buildings_s": round(ours_s, 1),
            "writer_buildings_per_s": round(size / ours_s), "writer_peak_rss_mib": ours_rss,
            "writer_vs_ogr2ogr_speed": round(seconds / ours_s, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000, 1_000_000])
    parser.add_argument("--skip-serve", action="store_true")
    args = parser.parse_args()
    results: dict = {}
    if not args.skip_serve:
        results["serve_5000_spatialite"] = bench_serve()
        print(json.dumps(results["serve_5000_spatialite"]), flush=True)
    with ThrowawayPostGIS() as pg:
        for size in args.sizes:
            r = bench_load(pg, size)
            results[f"load_{size}_postgis"] = r
            print(json.dumps(r), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
