"""Benchmark: coordinate transformations through cim.crs vs raw pyproj on the same arrays; GCJ-02 rates;
the HTTP coordinate-transform process. Run:  .venv/bin/python bench/crs_bench.py

Alternates ours and the peer (A B A B ...), 3 rounds, medians; one core (pyproj releases the GIL, but
each call here is a single thread). Raw pyproj is the peer: our layer adds area-of-use checks, CRS
resolution and caching, and should keep >= 80 % of its speed in bulk.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pyproj import Transformer  # noqa: E402

from cim.crs import gcj  # noqa: E402
from cim.crs.registry import default_registry  # noqa: E402
from cim.crs.transform import transform  # noqa: E402

N = 1_000_000


def timed(fn, rounds: int = 3) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def alternate(ours, peer, rounds: int = 3) -> tuple[float, float]:
    a, b = [], []
    for _ in range(rounds):
        a.append(timed(ours, 1))
        b.append(timed(peer, 1))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    rng = np.random.default_rng(0)
    lon, lat = rng.uniform(123.5, 124.3, N), rng.uniform(40.9, 41.6, N)
    reg = default_registry()
    results = {}
    for src, dst in (("EPSG:4490", "EPSG:4550"), ("EPSG:4550", "EPSG:4490"), ("EPSG:4490", "EPSG:4978")):
        s, d = reg.resolve(src), reg.resolve(dst)
        x, y, _ = transform(reg.resolve("EPSG:4490"), s, lon, lat)
        z = np.full(N, 200.0)
        raw = Transformer.from_crs(s.pyproj_crs, d.pyproj_crs, always_xy=True)
        if d.pyproj_crs.is_geocentric:
            ours, peer = alternate(lambda: transform(s, d, x, y, z), lambda: raw.transform(x, y, z))
        else:
            ours, peer = alternate(lambda: transform(s, d, x, y), lambda: raw.transform(x, y))
        results[f"{src}->{dst}"] = {"ours_Mpts_s": round(N / ours / 1e6, 2), "pyproj_Mpts_s": round(N / peer / 1e6, 2),
                                    "ours_vs_pyproj": round(peer / ours, 2)}
    t = timed(lambda: gcj.wgs84_to_gcj02(lon, lat))
    g = gcj.wgs84_to_gcj02(lon, lat)
    ti = timed(lambda: gcj.gcj02_to_wgs84(*g))
    tb = timed(lambda: gcj.wgs84_to_bd09(lon, lat))
    results["gcj02"] = {"forward_Mpts_s": round(N / t / 1e6, 2), "inverse_Mpts_s": round(N / ti / 1e6, 2),
                        "wgs84_to_bd09_Mpts_s": round(N / tb / 1e6, 2)}
    results["http_1M_points"], results["items_crs_cost"] = http_bench(lon, lat)
    print(json.dumps(results, indent=2))


def http_bench(lon: np.ndarray, lat: np.ndarray) -> dict:
    """1M points through POST /processes/coordinate-transform/execution vs raw pyproj in-process."""
    port = 5066
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "CIM_DATABASE_URL": f"sqlite:///{tmp}/cim.sqlite", "CIM_DATA_DIR": tmp}
        cim = [str(ROOT / ".venv/bin/python"), "-m", "cim.cli"]
        subprocess.run([*cim, "db", "init"], env=env, check=True, capture_output=True, cwd=ROOT)
        subprocess.run([*cim, "demo", "--size", "5000"], env=env, check=True, capture_output=True, cwd=ROOT)
        server = subprocess.Popen([*cim, "serve", "--port", str(port)], env=env, cwd=ROOT,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while True:
                try:
                    urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz")
                    break
                except OSError:
                    time.sleep(0.2)
            body = json.dumps({"inputs": {"source_crs": "OGC:CRS84", "target_crs": "EPSG:4550", "axis_order": "xy",
                                          "coordinates": np.column_stack([lon, lat]).round(7).tolist()}}).encode()

            def call() -> None:
                req = urllib.request.Request(f"http://127.0.0.1:{port}/processes/coordinate-transform/execution",
                                             data=body, headers={"Content-Type": "application/json"})
                with urllib.request.urlopen(req, timeout=600) as r:
                    r.read()

            raw = Transformer.from_crs(4326, 4550, always_xy=True)
            http_s, raw_s = alternate(call, lambda: raw.transform(lon, lat))
            crs_cost = items_crs_cost(port)
        finally:
            server.terminate()
            server.wait()
    return ({"http_s": round(http_s, 2), "http_Mpts_s": round(len(lon) / http_s / 1e6, 3),
             "raw_pyproj_s": round(raw_s, 3), "http_vs_raw_pyproj": round(raw_s / http_s, 3)}, crs_cost)


def items_crs_cost(port: int, requests: int = 60) -> dict:
    """Median latency of an items page (~500 m bbox, limit 100) per output CRS, alternating the CRSs."""
    base = (f"http://127.0.0.1:{port}/collections/buildings/items?f=json&limit=100"
            "&bbox=123.765,41.295,123.771,41.300")
    variants = {"CRS84": "", "EPSG:4490": "&crs=EPSG:4490", "EPSG:4550": "&crs=EPSG:4550",
                "GCJ-02": "&crs=urn:benxi-cim:crs:GCJ-02"}
    times: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(requests):
        for name, extra in variants.items():
            t0 = time.perf_counter()
            with urllib.request.urlopen(base + extra) as r:
                r.read()
            times[name].append(time.perf_counter() - t0)
    ref = statistics.median(times["CRS84"])
    return {name: {"median_ms": round(statistics.median(t) * 1000, 1),
                   "vs_crs84": round(statistics.median(t) / ref, 2)} for name, t in times.items()}


if __name__ == "__main__":
    main()
