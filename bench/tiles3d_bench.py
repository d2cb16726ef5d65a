"""Benchmark: `cim 3dtiles build` (time, output size, peak RSS) against py3dtiles' PostGIS export, and the
on-demand 3D Tiles route's latency against nginx serving the same files, on the demo city.

Not a test (timings belong here, not in pytest). Run (after `bash bench/tiles3d_peers.sh`):

    python bench/tiles3d_bench.py                    # throwaway PostGIS + 100,000-building demo, both parts
    python bench/tiles3d_bench.py --size 20000 --rounds 2
    CIM_DATA_DIR=… python bench/tiles3d_bench.py --database-url postgresql+psycopg://…/cim   # an existing city
    python bench/tiles3d_bench.py --parts latency --database-url …                        # one part only

**build** — what is compared, on one PostGIS server:

- ours: ``cim 3dtiles build --layer buildings --cim-level L --force`` (a full build, every tile written), in
  its own process: reads the CIM database (EPSG:4550 + 1985 heights), converts to ECEF, triangulates,
  writes GLB (EXT_mesh_features / EXT_structural_metadata with 10 properties per building) and tileset.json.
- ours with ``cim.tiles3d.compression: draco`` (KHR_draco_mesh_compression), the same build otherwise.
- py3dtiles 12.1.1: ``py3dtiles export -D ... -t TABLE -c geom -i id`` over a table holding the same
  buildings' geometry, the one our build draws (CIM L, or the highest level below it where a building has
  no CIM L geometry, as our default ``fallback``; only currently valid buildings), already transformed to
  ECEF (EPSG:4978) in PostGIS: the peer does no CRS work and writes one id per feature. Making that table is
  not timed. Its output is b3dm (3D Tiles 1.0 batched models).

Each round runs them alternately (ours, ours Draco, peer per level); wall time and the process's peak RSS
and CPU seconds (``os.wait4``; the PostgreSQL server's are not included). After each run the output is
checked: the number of features drawn (ours: the tileset's ``extras``; the peer: the table's rows) and the
bytes written, and the bytes are split by what they hold (positions, normals, colours, feature ids,
indices, property/batch tables, JSON, padding) over every GLB / b3dm, so that a size gap can be read;
a seeded sample of each output's tiles goes through the Khronos glTF validator (a b3dm's glTF cut out).

**latency** — ``cim serve --workers 2`` with an empty cache on the same city:

- cold: the first ``GET /collections/buildings/3dtiles/{L}/tileset.json`` builds the whole tileset into the
  cache (the on-demand route builds per tileset, not per tile) — one request, timed to its last byte; then
  one pass over a fixed, seeded list of content URLs (every tile of the tree once, shuffled) with one
  client: each tile's first request after the build.
- warm: wrk (2 threads, 4 connections, warm-up + window, rounds) over the same URLs, ours against nginx
  serving the very cache folder as static files (the peer: no database key check, no Python), alternating.
  p50/p99 and tiles/s; before each window the servers and the database are idle.

Results: bench/results/tiles3d-<size>-<date>.json, summarised in bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

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
    return {"seconds": wall, "peak_rss_mb": usage.ru_maxrss / 1024, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "load_average": os.getloadavg()}


def folder_bytes(folder: Path) -> tuple[int, int]:
    files = [p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")
             and p.name not in ("build-state.json",)]
    return sum(p.stat().st_size for p in files), len(files)


# ---------------------------------------------------------------------------------------------- size split
def _glb_parts(data: bytes, out: dict[str, int]) -> None:
    """Add a GLB's bytes to ``out`` by what they hold (attribute name, indices, metadata, json, padding)."""
    _, _, length = struct.unpack_from("<III", data, 0)
    json_len, _ = struct.unpack_from("<II", data, 12)
    doc = json.loads(data[20:20 + json_len])
    out["json"] = out.get("json", 0) + json_len
    used = 0
    owner: dict[int, str] = {}
    for mesh in doc.get("meshes", []):
        for prim in mesh["primitives"]:
            for name, acc in prim["attributes"].items():
                view = doc["accessors"][acc].get("bufferView")
                if view is not None:
                    owner[view] = name
            if "indices" in prim and doc["accessors"][prim["indices"]].get("bufferView") is not None:
                owner[doc["accessors"][prim["indices"]]["bufferView"]] = "indices"
            draco = prim.get("extensions", {}).get("KHR_draco_mesh_compression")
            if draco:
                owner[draco["bufferView"]] = "draco mesh"
    for i, view in enumerate(doc.get("bufferViews", [])):
        name = owner.get(i, "property tables")
        name = {"_BATCHID": "feature ids", "_FEATURE_ID_0": "feature ids"}.get(name, name)
        out[name] = out.get(name, 0) + view["byteLength"]
        used += view["byteLength"]
    out["headers + padding"] = out.get("headers + padding", 0) + length - json_len - used


def size_split(folder: Path) -> dict[str, int]:
    """Bytes of every tile content in ``folder`` by what they hold; tileset JSON separately."""
    out: dict[str, int] = {}
    for path in folder.rglob("*"):
        if not path.is_file() or path.name.startswith(".") or path.name == "build-state.json":
            continue
        data = path.read_bytes()
        if path.suffix == ".json":
            out["tileset.json"] = out.get("tileset.json", 0) + len(data)
        elif data[:4] == b"b3dm":
            ft_json, ft_bin, bt_json, bt_bin = struct.unpack_from("<IIII", data, 12)
            out["b3dm header + feature table"] = out.get("b3dm header + feature table", 0) + 28 + ft_json + ft_bin
            out["property tables"] = out.get("property tables", 0) + bt_json + bt_bin
            _glb_parts(data[28 + ft_json + ft_bin + bt_json + bt_bin:], out)
        elif data[:4] == b"glTF":
            _glb_parts(data, out)
        else:
            out["other"] = out.get("other", 0) + len(data)
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


VALIDATOR = ROOT / "tests" / "js" / "validate-gltf.mjs"


def validate_sample(folder: Path, work: Path, n: int, seed: int) -> dict[str, Any]:
    """The Khronos glTF validator over ``n`` seeded tiles of ``folder`` (a b3dm's glTF is cut out of it):
    how many files have errors, and the error codes."""
    paths = sorted(p for p in folder.rglob("*") if p.suffix in (".glb", ".b3dm"))
    sample = random.Random(seed).sample(paths, min(n, len(paths)))
    tmp = work / "validate"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    files = []
    for i, path in enumerate(sample):
        data = path.read_bytes()
        if data[:4] == b"b3dm":
            data = data[28 + sum(struct.unpack_from("<IIII", data, 12)):]
        files.append(tmp / f"{i}.glb")
        files[-1].write_bytes(data)
    if shutil.which("node") is None or not files:
        return {"checked": 0}
    proc = subprocess.run(["node", str(VALIDATOR), *map(str, files)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:  # e.g. tests/js/node_modules missing: no figure rather than no benchmark
        return {"checked": 0, "error": proc.stderr[-500:]}
    reports = json.loads(proc.stdout)
    codes: dict[str, int] = {}
    for report in reports:
        for m in report["messages"]:
            if m["severity"] == 0:
                codes[m["code"]] = codes.get(m["code"], 0) + 1
    shutil.rmtree(tmp, ignore_errors=True)
    return {"checked": len(reports), "files_with_errors": sum(1 for r in reports if r["errors"]), "error_codes": codes}


def peer_table(conninfo: dict[str, Any], level: int) -> tuple[str, int]:
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


# ---------------------------------------------------------------------------------------------- build part
def bench_build(url: str, args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    import yaml
    from sqlalchemy.engine import make_url

    u = make_url(url)
    conninfo = {"host": u.host, "port": u.port, "user": u.username, "dbname": u.database}
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CIM_DATABASE_URL": url, "CIM_DATA_DIR": str(work / "data")}
    py = sys.executable
    # the same build with cim.tiles3d.compression: draco (KHR_draco_mesh_compression)
    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    config["cim"].setdefault("tiles3d", {})["compression"] = "draco"
    draco_config = work / "config-draco.yml"
    draco_config.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    results.setdefault("runs", [])
    for level in [int(v) for v in args.levels.split(",")]:
        table, rows = (None, 0) if args.skip_peer else peer_table(conninfo, level)
        libpq = " ".join(f"{k}={v}" for k, v in conninfo.items())
        for r in range(args.rounds):
            ours_out, draco_out, peer_out = work / f"ours{level}", work / f"draco{level}", work / f"peer{level}"
            for out in (ours_out, draco_out, peer_out):
                shutil.rmtree(out, ignore_errors=True)
            ours = run([py, "-m", "cim.cli", "3dtiles", "build", "--layer", "buildings", "--cim-level",
                        str(level), "--out", str(ours_out), "--force"], env, work / f"ours{level}.log")
            doc = json.loads((ours_out / "tileset.json").read_text())
            ours["features"] = int(doc["extras"]["cim"]["objects"])
            ours["bytes"], ours["files"] = folder_bytes(ours_out)
            draco = run([py, "-m", "cim.cli", "3dtiles", "build", "--layer", "buildings", "--cim-level",
                         str(level), "--out", str(draco_out), "--force"], {**env, "CIM_CONFIG": str(draco_config)},
                        work / f"draco{level}.log")
            draco["bytes"], draco["files"] = folder_bytes(draco_out)
            if args.skip_peer:
                peer = None
            else:
                peer_out.mkdir()
                peer = run([str(PY3DTILES), "export", "-D", libpq, "-t", table, "-c", "geom", "-i", "id",
                            "-s", str(peer_out)], env, work / f"peer{level}.log")
                peer["features"] = rows
                peer["bytes"], peer["files"] = folder_bytes(peer_out)
            run_result: dict[str, Any] = {"cim_level": level, "round": r, "ours": ours, "ours_draco": draco,
                                          "py3dtiles": peer}
            if r == 0:
                run_result["size_split"] = {"ours": size_split(ours_out), "ours_draco": size_split(draco_out)}
                run_result["validation"] = {"ours": validate_sample(ours_out, work, args.validate, args.seed),
                                            "ours_draco": validate_sample(draco_out, work, args.validate, args.seed)}
                if peer is not None:
                    run_result["size_split"]["py3dtiles"] = size_split(peer_out)
                    run_result["validation"]["py3dtiles"] = validate_sample(peer_out, work, args.validate, args.seed)
            if peer is not None:
                run_result.update(speed_ratio=peer["seconds"] / ours["seconds"], size_ratio=ours["bytes"] / peer["bytes"],
                                  draco_speed_ratio=peer["seconds"] / draco["seconds"],
                                  draco_size_ratio=draco["bytes"] / peer["bytes"])
            results["runs"].append(run_result)
            save(results, args)
            line = (f"CIM{level} round {r}: ours {ours['seconds']:.1f} s, {ours['bytes'] / 1e6:.1f} MB, "
                    f"{ours['features']:,} features, {ours['peak_rss_mb']:.0f} MB RSS | draco {draco['seconds']:.1f} s, "
                    f"{draco['bytes'] / 1e6:.1f} MB")
            if peer is not None:
                line += (f" | py3dtiles {peer['seconds']:.1f} s, {peer['bytes'] / 1e6:.1f} MB, {rows:,} features, "
                         f"{peer['peak_rss_mb']:.0f} MB RSS | speed ×{run_result['speed_ratio']:.2f}, size "
                         f"×{run_result['size_ratio']:.2f}; draco speed ×{run_result['draco_speed_ratio']:.2f}, "
                         f"size ×{run_result['draco_size_ratio']:.2f}")
            print(line + f" | load {os.getloadavg()[0]:.1f}", flush=True)
            for out in (ours_out, draco_out, peer_out):
                shutil.rmtree(out, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- latency part
# nginx on the pre-built folder (the main configuration is tiles_bench's)
STATIC_3DTILES = """  types {{ model/gltf-binary glb; application/json json; }}
  server {{
    listen 127.0.0.1:{port};
    root {root};
  }}"""


def _content_uris(tile: dict[str, Any]) -> list[str]:
    out = [tile["content"]["uri"]] if "content" in tile else []
    for child in tile.get("children", []):
        out.extend(_content_uris(child))
    return out


def _timed_get(url: str) -> tuple[float, int, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=1800) as r:
        body = r.read()
        status = r.status
    return (time.perf_counter() - t0) * 1000, status, len(body)


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return round(s[min(len(s) - 1, int(round(q / 100 * (len(s) - 1))))], 2)


def bench_latency(url: str, args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    from features_bench import Server, connect, free_port, run_wrk, server_ours, wait_idle, write_lua
    from tiles_bench import nginx_conf

    db = connect(url)
    out: dict[str, Any] = results.setdefault("latency", {})
    sub = work / "latency"
    sub.mkdir(exist_ok=True)
    ours = server_ours(url, args.workers, sub, ROOT)
    servers: list[Server] = []
    try:
        ours.start("/collections/buildings/3dtiles")
        servers.append(ours)
        for level in [int(v) for v in args.levels.split(",")]:
            base = f"/collections/buildings/3dtiles/{level}"
            wait_idle([ours], db, timeout=120)
            cold_ms, status, size = _timed_get(ours.url(f"{base}/tileset.json"))
            doc = json.loads(urllib.request.urlopen(ours.url(f"{base}/tileset.json"), timeout=60).read())
            uris = _content_uris(doc["root"])
            random.Random(args.seed).shuffle(uris)
            paths = [f"{base}/{u}" for u in uris]
            first = [_timed_get(ours.url(p))[0] for p in paths]
            warm_once = [_timed_get(ours.url(p))[0] for p in paths[:100]]
            res: dict[str, Any] = {
                "tiles": len(uris), "tileset_json_bytes": size,
                "cold_tileset_build_s": round(cold_ms / 1000, 2),
                "first_tile_requests_ms": {"p50": _pct(first, 50), "p99": _pct(first, 99), "max": round(max(first), 1)},
                "second_tile_requests_one_client_ms": {"p50": _pct(warm_once, 50), "p99": _pct(warm_once, 99)},
                "wrk": {"ours": [], "nginx": []}}
            print(f"CIM{level}: cold tileset.json (whole build) {cold_ms / 1000:.1f} s; {len(uris)} tiles; first "
                  f"requests p50 {res['first_tile_requests_ms']['p50']} / p99 {res['first_tile_requests_ms']['p99']} ms",
                  flush=True)
            folder = sub / "ours-data" / "3dtiles" / "buildings" / f"cim{level}"
            port = free_port()
            prefix = sub / f"nginx{level}"
            prefix.mkdir(exist_ok=True)
            (prefix / "nginx.conf").write_text(nginx_conf(prefix, args.workers,
                                                          STATIC_3DTILES.format(port=port, root=folder)))
            nginx = Server("nginx", ["nginx", "-c", str(prefix / "nginx.conf"), "-p", str(prefix), "-g", "daemon off;"],
                           {}, prefix, port, prefix / "nginx.log")
            nginx.start(f"/{uris[0]}")
            servers.append(nginx)
            scripts = {"ours": sub / f"ours{level}.lua", "nginx": sub / f"nginx{level}.lua"}
            write_lua(scripts["ours"], paths)
            write_lua(scripts["nginx"], [f"/{u}" for u in uris])
            for rnd in range(args.latency_rounds):
                for s in (ours, nginx):
                    wait_idle(servers, db, timeout=120)
                    run_wrk(s, scripts[s.name], args.warmup)
                    wait_idle(servers, db, timeout=120)
                    w = run_wrk(s, scripts[s.name], args.duration, args.workers if s.name == "ours" else 0,
                                settle=lambda: wait_idle(servers, db, timeout=120))
                    w["load_average"] = os.getloadavg()
                    res["wrk"][s.name].append(w)
                    print(f"  CIM{level} round {rnd} {s.name}: {w['req_s']} tiles/s, p50 {w['p50_ms']} / p99 "
                          f"{w['p99_ms']} ms, {w['mib_s']} MiB/s, non-2xx {w['non_2xx_3xx']}", flush=True)
            nginx.stop()
            servers.remove(nginx)
            out[f"cim{level}"] = res
            save(results, args)
    finally:
        for s in servers:
            s.stop()
        db.close()


# ---------------------------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--database-url", help="an existing PostGIS holding a demo city (default: a throwaway one "
                                           "with `cim demo --size SIZE`); CIM_DATA_DIR names its data folder")
    ap.add_argument("--size", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=20261128)
    ap.add_argument("--levels", default="2,3")
    ap.add_argument("--rounds", type=int, default=1, help="build rounds")
    ap.add_argument("--parts", default="build,latency")
    ap.add_argument("--skip-peer", action="store_true", help="build part: ours only (no py3dtiles)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--duration", type=int, default=20, help="seconds per wrk window")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--latency-rounds", type=int, default=3)
    ap.add_argument("--validate", type=int, default=40, help="tiles per output checked with the glTF validator")
    ap.add_argument("--tag", default="", help="appended to the results file name")
    args = ap.parse_args()
    parts = [p for p in args.parts.split(",") if p]
    if set(parts) - {"build", "latency"}:
        ap.error("--parts: build and/or latency")
    if "build" in parts and not args.skip_peer and not PY3DTILES.exists():
        sys.exit("run bash bench/tiles3d_peers.sh first (py3dtiles in bench/.venv-py3dtiles)")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="tiles3d-bench-"))
    results: dict[str, Any] = {"date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "size": args.size,
                               "commit": commit, "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                               "peer": "py3dtiles 12.1.1 (export from PostGIS)", "args": vars(args)}
    try:
        if args.database_url:
            url = args.database_url
            with __import__("features_bench").connect(url) as db:
                results["size"] = db.execute("SELECT count(*) FROM city_object WHERE layer = 'buildings'").fetchone()[0]
            _parts(url, parts, args, work, results)
        else:
            from cim.db.throwaway import ThrowawayPostGIS

            with ThrowawayPostGIS() as pg:
                url = pg.create_database("bench3d")
                env = {**os.environ, "PYTHONPATH": str(ROOT), "CIM_DATABASE_URL": url,
                       "CIM_DATA_DIR": str(work / "demo-data")}
                os.environ["CIM_DATA_DIR"] = env["CIM_DATA_DIR"]  # the DEM `cim serve` needs (server_ours)
                print(f"demo city of {args.size:,} buildings on PostGIS ...", flush=True)
                run([sys.executable, "-m", "cim.cli", "db", "init"], env, work / "init.log")
                demo = run([sys.executable, "-m", "cim.cli", "demo", "--size", str(args.size), "--seed",
                            str(args.seed)], env, work / "demo.log")
                results["demo_seconds"] = demo["seconds"]
                print(f"  {demo['seconds']:.0f} s", flush=True)
                _parts(url, parts, args, work, results)
    finally:
        print(f"results: {save(results, args)}")
        shutil.rmtree(work, ignore_errors=True)


def _parts(url: str, parts: list[str], args: argparse.Namespace, work: Path, results: dict[str, Any]) -> None:
    for part in parts:  # in the order given
        {"build": bench_build, "latency": bench_latency}[part](url, args, work, results)


def save(results: dict, args: argparse.Namespace) -> Path:
    """Written after every run: a long benchmark stopped early keeps what it measured."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    tag = f"-{args.tag}" if args.tag else ""
    # named after the run's start: a run across midnight keeps one file
    path = RESULTS / f"tiles3d-{results['size']}-{results['date'][:10]}{tag}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    return path


if __name__ == "__main__":
    main()
