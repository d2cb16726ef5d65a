"""Benchmark: `cim 3dtiles build` (time, output size, peak RSS) against py3dtiles' PostGIS export, on the demo city.

Not a test (timings belong here, not in pytest). Run (after `bash bench/tiles3d_peers.sh`):

    python bench/tiles3d_bench.py                    # 100,000 buildings, CIM2 and CIM3, 1 round
    python bench/tiles3d_bench.py --size 20000 --rounds 2

What is compared, on one throwaway PostGIS server:

- ours: ``cim 3dtiles build --layer buildings --cim-level L --force`` (a full build, every tile written), in
  its own process: reads the CIM database (EPSG:4550 + 1985 heights), converts to ECEF, triangulates,
  writes GLB (EXT_mesh_features / EXT_structural_metadata with 10 properties per building) and tileset.json.
- ours with ``cim.tiles3d.compression: draco`` (KHR_draco_mesh_compression), the same build otherwise.
- py3dtiles 12.1.1: ``py3dtiles export -D ... -t TABLE -c geom -i id`` over a table holding the same
  buildings' geometry, the one our build draws (CIM L, or the highest level below it where a building has
  no CIM L geometry, as our default ``fallback``; only currently valid buildings), already transformed to
  ECEF (EPSG:4978) in PostGIS: the peer does no CRS work and writes one id per feature. Making that table is
  not timed. Its output is b3dm (3D Tiles 1.0 batched models).

Each round runs the two alternately (A B, A B); wall time and the process's peak RSS and CPU seconds
(``os.wait4``; the PostgreSQL server's are not included). After each run the output is checked: the number of
features drawn (ours: the tileset's ``extras``; the peer: the table's rows) and the bytes written.

Results: bench/results/tiles3d-<date>.json (git-ignored), summarised in bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
PY3DTILES = ROOT / "bench" / ".venv-py3dtiles" / "bin" / "py3dtiles"


def run(cmd: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Run a command to completion; its wall time, peak RSS (MB) and CPU seconds."""
    started = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed, see {log}:\n{log.read_text()[-2000:]}")
    return {"seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_seconds": usage.ru_utime + usage.ru_stime}


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
             and p.name not in ("build-state.json",)]
    return sum(p.stat().st_size for p in files), len(files)


def peer_table(conninfo: dict[str, str], level: int) -> tuple[str, int]:
    """The table py3dtiles exports: what our build draws at ``level``, in ECEF."""
    import psycopg

    name = f"peer_cim{level}"
    with psycopg.connect(**conninfo, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"""
            CREATE TABLE {name} AS
            SELECT DISTINCT ON (o.id) o.uid AS id, ST_Transform(g.geom, 4978) AS geom
            FROM city_object o JOIN city_object_geometry g ON g.object_id = o.id
            WHERE o.layer = 'buildings' AND g.cim_level BETWEEN 2 AND {level}
              AND (o.valid_to IS NULL OR o.valid_to > now())
              AND GeometryType(g.geom) IN ('MULTIPOLYGON', 'POLYGON')
            ORDER BY o.id, g.cim_level DESC""")
        rows = conn.execute(f"SELECT count(*) FROM {name}").fetchone()[0]
    return name, int(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--levels", default="2,3")
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if not PY3DTILES.exists():
        sys.exit("run bash bench/tiles3d_peers.sh first (py3dtiles in bench/.venv-py3dtiles)")
    from sqlalchemy.engine import make_url

    from cim.db.throwaway import ThrowawayPostGIS

    work = Path(tempfile.mkdtemp(prefix="tiles3d-bench-"))
    results: dict = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "size": args.size,
                     "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                     "peer": "py3dtiles 12.1.1 (export from PostGIS)", "runs": []}
    with ThrowawayPostGIS() as pg:
        url = pg.create_database("bench3d")
        u = make_url(url)
        conninfo = {"host": u.host, "port": u.port, "user": u.username, "dbname": u.database}
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CIM_DATABASE_URL": url, "CIM_DATA_DIR": str(work / "data")}
        py = sys.executable
        # the same build with cim.tiles3d.compression: draco (KHR_draco_mesh_compression)
        import yaml

        config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
        config["cim"].setdefault("tiles3d", {})["compression"] = "draco"
        draco_config = work / "config-draco.yml"
        draco_config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        print(f"demo city of {args.size:,} buildings on PostGIS ...", flush=True)
        run([py, "-m", "cim.cli", "db", "init"], env, work / "init.log")
        demo = run([py, "-m", "cim.cli", "demo", "--size", str(args.size), "--seed", str(args.seed)], env,
                   work / "demo.log")
        results["demo_seconds"] = demo["seconds"]
        print(f"  {demo['seconds']:.0f} s", flush=True)
        for level in [int(v) for v in args.levels.split(",")]:
            table, rows = peer_table(conninfo, level)
            libpq = " ".join(f"{k}={v}" for k, v in conninfo.items())
            for r in range(args.rounds):
                ours_out, peer_out = work / f"ours{level}", work / f"peer{level}"
                for out in (ours_out, peer_out):
                    shutil.rmtree(out, ignore_errors=True)
                ours = run([py, "-m", "cim.cli", "3dtiles", "build", "--layer", "buildings", "--cim-level",
                            str(level), "--out", str(ours_out), "--force"], env, work / f"ours{level}.log")
                doc = json.loads((ours_out / "tileset.json").read_text())
                ours["features"] = int(doc["extras"]["cim"]["objects"])
                ours["bytes"], ours["files"] = folder_bytes(ours_out)
                draco_out = work / f"draco{level}"
                shutil.rmtree(draco_out, ignore_errors=True)
                draco = run([py, "-m", "cim.cli", "3dtiles", "build", "--layer", "buildings", "--cim-level",
                             str(level), "--out", str(draco_out), "--force"], {**env, "CIM_CONFIG": str(draco_config)},
                            work / f"draco{level}.log")
                draco["bytes"], draco["files"] = folder_bytes(draco_out)
                peer_out.mkdir()
                peer = run([str(PY3DTILES), "export", "-D", libpq, "-t", table, "-c", "geom", "-i", "id",
                            "-s", str(peer_out)], env, work / f"peer{level}.log")
                peer["features"] = rows
                peer["bytes"], peer["files"] = folder_bytes(peer_out)
                run_result = {"cim_level": level, "round": r, "ours": ours, "ours_draco": draco, "py3dtiles": peer,
                              "speed_ratio": peer["seconds"] / ours["seconds"],
                              "size_ratio": ours["bytes"] / peer["bytes"],
                              "draco_speed_ratio": peer["seconds"] / draco["seconds"],
                              "draco_size_ratio": draco["bytes"] / peer["bytes"]}
                results["runs"].append(run_result)
                save(results)
                print(f"CIM{level} round {r}: ours {ours['seconds']:.1f} s, {ours['bytes'] / 1e6:.1f} MB, "
                      f"{ours['features']:,} features, {ours['peak_rss_mb']:.0f} MB RSS | py3dtiles "
                      f"{peer['seconds']:.1f} s, {peer['bytes'] / 1e6:.1f} MB, {rows:,} features, "
                      f"{peer['peak_rss_mb']:.0f} MB RSS | speed ×{run_result['speed_ratio']:.2f}, "
                      f"size ×{run_result['size_ratio']:.2f} | with draco {draco['seconds']:.1f} s, "
                      f"{draco['bytes'] / 1e6:.1f} MB: speed ×{run_result['draco_speed_ratio']:.2f}, "
                      f"size ×{run_result['draco_size_ratio']:.2f}", flush=True)
    print(f"results: {save(results)}")
    shutil.rmtree(work, ignore_errors=True)


def save(results: dict) -> Path:
    """Written after every run: a long benchmark stopped early keeps what it measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"tiles3d-{results['size']}-{dt.date.today().isoformat()}.json"
    path.write_text(json.dumps(results, indent=1))
    return path


if __name__ == "__main__":
    main()
