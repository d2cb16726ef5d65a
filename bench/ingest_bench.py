"""Benchmark: `cim load` (objects/s, peak RSS) against cjdb's importer, on a generated 3D BAG-like city.

Not a test (timings belong here, not in pytest). Run (after `bash bench/ingest_peers.sh`):

    .venv/bin/python bench/ingest_bench.py                       # 10k (3 rounds) + 100k (1 round), IFC samples
    .venv/bin/python bench/ingest_bench.py --sizes 10000 --rounds 1 --skip-ifc
    .venv/bin/python bench/ingest_bench.py --profile-size 10000  # also cProfile load_files (both databases)

(a) CityJSONSeq. A deterministic `.city.jsonl` of N buildings is generated (once; cached under
    bench/results/data/) in the shape of a 3D BAG tile: per feature one ``Building`` with a LOD0 footprint
    surface and 3D BAG's attribute set, and one ``BuildingPart`` child with LOD1.2, LOD1.3 and LOD2.2
    solids (ground / roof / wall semantics with ``on_footprint_edge``), vertices shared and quantised
    (``transform`` 1 mm). Footprints are rectangles with notched corners and bays (4-32 corners), rotated, on a
    400-column street grid of 38 m plots around Benxi (lon 123.77, lat 41.30) in EPSG:4550; half split into
    two parts of different heights at LOD1.3/2.2; 60 % gable roofs at LOD2.2. The N = 10,000 file is the
    first 10,000 features of the 100,000 file.
    Each round loads the file, alternating (A B C, A B C, ...): `cim load` into a fresh CIM database on a
    throwaway PostGIS; `cjdb import` into a fresh database on the same server; `cim load` into a fresh
    SpatiaLite file. Each tool runs in its own process; the wall time is the process's, the peak RSS its own
    (``os.wait4`` → ``ru_maxrss``) and CPU seconds (the PostgreSQL server's are not included). After each load the
    stored result is checked: object counts, and the summed footprint area of the Buildings and of the
    BuildingParts against the generator's exact figure. A fast wrong load is a failure, not a result.
(b) IFC. Each sample in ../shared/datasets/ifc and ifc43 loaded with ``--anchor 123.77,41.30,180,0``
    into PostGIS and SpatiaLite, alternated with a reference floor: ifcopenshell's geometry iterator alone
    triangulating the same file with the same settings (the part of our load no Python code can speed up).

Results: bench/results/ingest-<date>.json (git-ignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import math
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
DATA = RESULTS / "data"
PY = ROOT / ".venv" / "bin" / "python"
CJDB = ROOT / "bench" / ".venv-cjdb" / "bin" / "cjdb"
SHARED = ROOT.parent / "shared" / "datasets"
ANCHOR = "123.77,41.30,180,0"

# ---------------------------------------------------------------------------------------------------------
# (a) the generated city
# ---------------------------------------------------------------------------------------------------------

GENERATOR_VERSION = 1
SEED = 20261205
COLS, PITCH = 400, 38.0  # 400 plots per row, 38 m apart: 100,000 buildings ≈ 15.2 × 9.5 km
CENTRE = (564489.71, 4574176.35)  # lon 123.77, lat 41.30 in EPSG:4550 (CGCS2000 / 3-degree GK CM 123E)
ROWS_100K = 250
X0 = CENTRE[0] - COLS * PITCH / 2
Y0 = CENTRE[1] - ROWS_100K * PITCH / 2
SCALE = 0.001  # CityJSON transform: integer millimetres
TRANSLATE = (round(X0, 0), round(Y0, 0), 0.0)
CRS_URI = "https://www.opengis.net/def/crs/EPSG/0/4550"
SEMANTIC_SURFACES = [{"type": "GroundSurface"}, {"type": "RoofSurface"},
                     {"type": "WallSurface", "on_footprint_edge": True},
                     {"type": "WallSurface", "on_footprint_edge": False}]
GROUND, ROOF, WALL, INNER_WALL = 0, 1, 2, 3
USES = ["residential", "residential", "residential", "commercial", "office", "industrial", "education"]


def terrain(x: float, y: float) -> float:
    """Ground height (m) of the generated city: Benxi lies in a valley at ~180 m between hills."""
    return 180.0 + 25.0 * math.sin(x / 1700.0) * math.cos(y / 1300.0) + 8.0 * math.sin((x + y) / 450.0)


def _footprint(rng: random.Random, a: float, b: float) -> list[tuple[float, float]]:
    """Counter-clockwise ring (not closed) of a 2a × 2b rectangle whose corners may be notched and whose long
    sides may carry bays, with the points where x = 0 crosses the long sides (split points) and where y = 0
    crosses the short sides (ridge points). Notches and bays stay clear of both axes."""
    notch = [(rng.uniform(1.5, a / 2.5), rng.uniform(1.0, b / 2.5)) if rng.random() < 0.45 else None for _ in range(4)]

    def bay(lo: float, hi: float) -> tuple[float, float, float] | None:  # (x1, x2, depth) within [lo, hi]
        if hi - lo < 2.5 or rng.random() >= 0.5:
            return None
        width = rng.uniform(1.5, min(hi - lo - 0.5, 8.0))
        x1 = rng.uniform(lo, hi - width)
        return x1, x1 + width, rng.uniform(0.5, 2.0)

    w = [n[0] if n else 0.0 for n in notch]
    bays = [bay(-a + w[0] + 0.5, -0.5), bay(0.5, a - w[1] - 0.5), bay(0.5, a - w[2] - 0.5), bay(-a + w[3] + 0.5, -0.5)]
    ring: list[tuple[float, float]] = []
    # bottom-left corner (arriving down the left side), then eastwards along y = -b
    ring += [(-a, -b + notch[0][1]), (-a + notch[0][0], -b + notch[0][1]), (-a + notch[0][0], -b)] if notch[0] else [(-a, -b)]
    for k in (0, 1):
        if k == 1:
            ring.append((0.0, -b))  # split point
        if bays[k]:
            x1, x2, d = bays[k]
            ring += [(x1, -b), (x1, -b - d), (x2, -b - d), (x2, -b)]
    ring += [(a - notch[1][0], -b), (a - notch[1][0], -b + notch[1][1]), (a, -b + notch[1][1])] if notch[1] else [(a, -b)]
    ring.append((a, 0.0))  # ridge point
    # top-right corner, then westwards along y = b
    ring += [(a, b - notch[2][1]), (a - notch[2][0], b - notch[2][1]), (a - notch[2][0], b)] if notch[2] else [(a, b)]
    for k in (2, 3):
        if k == 3:
            ring.append((0.0, b))  # split point
        if bays[k]:
            x1, x2, d = bays[k]
            ring += [(x2, b), (x2, b + d), (x1, b + d), (x1, b)]
    ring += [(-a + notch[3][0], b), (-a + notch[3][0], b - notch[3][1]), (-a, b - notch[3][1])] if notch[3] else [(-a, b)]
    ring.append((-a, 0.0))  # ridge point
    return ring


def _building(i: int) -> tuple[str, dict, list[list[int]], float]:
    """Feature i: (id, CityObjects, integer vertices, exact footprint area in m²)."""
    rng = random.Random(SEED * 1_000_003 + i)
    row, col = divmod(i, COLS)
    cx = X0 + (col + 0.5) * PITCH + rng.uniform(-1.0, 1.0)
    cy = Y0 + (row + 0.5) * PITCH + rng.uniform(-1.0, 1.0)
    length = rng.uniform(10.0, 30.0)
    depth = rng.uniform(8.0, min(length, 15.0))
    a, b = length / 2, depth / 2
    theta = math.radians(rng.uniform(-20.0, 20.0) + (90.0 if rng.random() < 0.3 else 0.0))
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    ring = _footprint(rng, a, b)
    z0 = round(terrain(cx, cy), 2)
    floors = rng.choice([1, 2, 2, 3, 4, 5, 6, 6, 7, 9, 11, 18, 26])
    storey = rng.uniform(2.9, 3.4)
    split = rng.random() < 0.5  # LOD1.3 / 2.2 in two parts of different heights
    gable = rng.random() < 0.6
    # the second part is 1.5-4 m taller or lower (never lower than 60 % of the walls)
    step = min(rng.uniform(1.5, 4.0), 0.4 * floors * storey) * (1 if rng.random() < 0.5 else -1) if split else 0.0
    eave = z0 + floors * storey
    rise = rng.uniform(1.5, 4.0) if gable else 0.0
    slope = rise / b

    verts: list[list[int]] = []
    index: dict[tuple[int, int, int], int] = {}

    def vid(x: float, y: float, z: float) -> int:
        key = (round((cx + x * cos_t - y * sin_t - TRANSLATE[0]) / SCALE),
               round((cy + x * sin_t + y * cos_t - TRANSLATE[1]) / SCALE), round(z / SCALE))
        found = index.get(key)
        if found is None:
            found = index[key] = len(verts)
            verts.append(list(key))
        return found

    def shell(ring_pts: list[tuple[float, float]], z_of, two_parts: bool, pitched: bool) -> tuple[list, list]:
        """Faces (vertex-index rings) and semantic values of the closed shell over ring_pts with roof
        heights z_of(part, x, y); two_parts: part A (x ≤ 0) and part B (x ≥ 0) meet at a step wall;
        pitched: gable roofs (ridge along y = 0), else flat."""
        pts = ring_pts if two_parts else [p for p in ring_pts if not (p[0] == 0.0 and abs(p[1]) == b)]
        if not pitched:
            pts = [p for p in pts if not (p[1] == 0.0 and abs(p[0]) == a)]
        n = len(pts)
        faces: list[list[list[int]]] = [[[vid(x, y, z0) for x, y in reversed(pts)]]]
        values = [GROUND]
        part = (lambda x: "A" if x < 0 else "B") if two_parts else (lambda x: "A")
        for k in range(n):
            (px, py), (qx, qy) = pts[k], pts[(k + 1) % n]
            p_ = part((px + qx) / 2)
            zp, zq = z_of(p_, px, py), z_of(p_, qx, qy)
            face = [vid(px, py, z0), vid(qx, qy, z0)]
            if two_parts and qx == 0.0:  # at a split point: the taller part's wall has the lower eave's vertex
                lower = z_of("B" if p_ == "A" else "A", qx, qy)
                if lower < zq:
                    face.append(vid(qx, qy, lower))
            face.append(vid(qx, qy, zq))
            face.append(vid(px, py, zp))
            if two_parts and px == 0.0:
                lower = z_of("B" if p_ == "A" else "A", px, py)
                if lower < zp:
                    face.append(vid(px, py, lower))
            faces.append([face])
            values.append(WALL)
        # roofs: per part, per gable half
        parts = ("A", "B") if two_parts else ("A",)
        for p_ in parts:
            if two_parts:
                outline = [q for q in pts if (q[0] <= 0.0 if p_ == "A" else q[0] >= 0.0)]
                # rotate so that the ring starts after the split edge, then close along x = 0 through (0, 0)
                if p_ == "A":  # CCW: (0, b) … left … (0, -b), then up x = 0
                    start = outline.index((0.0, b))
                    outline = outline[start:] + outline[:start]
                    if pitched:
                        outline.append((0.0, 0.0))
                else:  # CCW: (0, -b) … right … (0, b), then down x = 0
                    start = outline.index((0.0, -b))
                    outline = outline[start:] + outline[:start]
                    if pitched:
                        outline.append((0.0, 0.0))
            else:
                outline = pts
            if pitched:
                for sign in (-1, 1):
                    half = _half(outline, sign)
                    faces.append([[vid(x, y, z_of(p_, x, y)) for x, y in half]])
                    values.append(ROOF)
            else:
                faces.append([[vid(x, y, z_of(p_, x, y)) for x, y in outline]])
                values.append(ROOF)
        if two_parts:  # the step wall on x = 0, facing the lower part
            prof = [(0.0, -b), (0.0, 0.0), (0.0, b)] if pitched else [(0.0, -b), (0.0, b)]
            low, high = ("A", "B") if z_of("A", 0.0, 0.0) < z_of("B", 0.0, 0.0) else ("B", "A")
            if high == "B":  # faces -x: bottom profile runs +y → -y
                face = [vid(x, y, z_of(low, x, y)) for x, y in reversed(prof)] + \
                       [vid(x, y, z_of(high, x, y)) for x, y in prof]
            else:  # faces +x: bottom profile runs -y → +y
                face = [vid(x, y, z_of(low, x, y)) for x, y in prof] + \
                       [vid(x, y, z_of(high, x, y)) for x, y in reversed(prof)]
            faces.append([face])
            values.append(INNER_WALL)
        return [faces], [values]

    h70 = eave + 0.7 * rise
    lod12 = shell(ring, lambda p_, x, y: h70, False, False)
    lod13 = shell(ring, lambda p_, x, y: h70 + (step if p_ == "B" else 0.0), split, False)

    def roof22(p_: str, x: float, y: float) -> float:
        return eave + (step if p_ == "B" else 0.0) + slope * (b - abs(y)) if gable else eave + (step if p_ == "B" else 0.0)

    lod22 = shell(ring, roof22, split, gable)
    plan = [p for p in ring if not ((p[0] == 0.0 and abs(p[1]) == b) or (p[1] == 0.0 and abs(p[0]) == a))]
    lod0 = [[[vid(x, y, z0) for x, y in plan]]]
    # exact footprint area from the quantised vertices (shoelace)
    xy = [verts[v][:2] for v in lod0[0][0]]
    area = abs(sum(xy[k][0] * xy[(k + 1) % len(xy)][1] - xy[(k + 1) % len(xy)][0] * xy[k][1]
                   for k in range(len(xy)))) / 2 * SCALE * SCALE

    bid = f"BX.Building.{i + 1:09d}"
    top = max(h70 + max(step, 0.0), eave + max(step, 0.0) + rise)
    attributes = {
        "dak_type": "slanted" if gable else "horizontal",
        "data_area": round(area * rng.uniform(0.85, 0.99), 3),
        "data_coverage": round(rng.uniform(0.7, 1.0), 4),
        "documentnummer": f"BX{2000 + i % 25}-{rng.randrange(10**6):06d}",
        "geconstateerd": False,
        "gid": 11_000_000 + i,
        "h_dak_50p": round(eave + 0.5 * rise, 3),
        "h_dak_70p": round(h70, 3),
        "h_dak_max": round(top, 3),
        "h_dak_min": round(eave + min(step, 0.0), 3),
        "h_maaiveld": z0,
        "identificatie": bid,
        "kas_warenhuis": False,
        "lod11_replace": False,
        "ondergronds_type": "above ground",
        "oorspronkelijkbouwjaar": rng.randrange(1950, 2025),
        "pw_actueel": "yes",
        "pw_bron": "lidar2024",
        "reconstructie_methode": "tudelft3d-geoflow",
        "reconstruction_skipped": False,
        "rmse_lod12": round(rng.uniform(0.2, 1.8), 4),
        "rmse_lod13": round(rng.uniform(0.1, 1.2), 4),
        "rmse_lod22": round(rng.uniform(0.02, 0.4), 4),
        "rn": 1,
        "status": "Pand in gebruik",
        "t_run": round(rng.uniform(0.5, 300.0), 2),
        "val3dity_codes_lod12": "[]",
        "val3dity_codes_lod13": "[]",
        "val3dity_codes_lod22": "[]",
        "voorkomenidentificatie": 1,
        "function": rng.choice(USES),
        "storeysAboveGround": floors,
    }
    def semantics(values: list) -> dict:
        return {"surfaces": SEMANTIC_SURFACES, "values": values}

    city_objects = {
        bid: {"type": "Building", "attributes": attributes, "children": [f"{bid}-0"],
              "geometry": [{"type": "MultiSurface", "lod": "0", "boundaries": lod0}]},
        f"{bid}-0": {"type": "BuildingPart", "parents": [bid], "geometry": [
            {"type": "Solid", "lod": "1.2", "boundaries": lod12[0], "semantics": semantics(lod12[1])},
            {"type": "Solid", "lod": "1.3", "boundaries": lod13[0], "semantics": semantics(lod13[1])},
            {"type": "Solid", "lod": "2.2", "boundaries": lod22[0], "semantics": semantics(lod22[1])},
        ]},
    }
    return bid, city_objects, verts, area


def _half(outline: list[tuple[float, float]], sign: int) -> list[tuple[float, float]]:
    """The part of a CCW outline on one side of y = 0 (sign -1: y ≤ 0), closed along y = 0; the outline
    holds its two crossing points of y = 0 as vertices (ridge points)."""
    n = len(outline)
    on_axis = [k for k, (x, y) in enumerate(outline) if y == 0.0]
    # walk from one crossing to the other through the wanted side
    for s in on_axis:
        nxt = outline[(s + 1) % n]
        if (nxt[1] < 0) == (sign < 0) and nxt[1] != 0.0:
            out = [outline[s]]
            k = (s + 1) % n
            while outline[k][1] != 0.0:
                out.append(outline[k])
                k = (k + 1) % n
            out.append(outline[k])
            return out
    raise AssertionError("outline does not cross y = 0")


def generate(n: int) -> tuple[Path, dict]:
    """The N-building file and its manifest, generated unless a file of this generator version exists."""
    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / f"benxi_{n}_buildings.city.jsonl"
    manifest_path = path.with_suffix(".manifest.json")
    if path.exists() and manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get("generator_version") == GENERATOR_VERSION and manifest.get("buildings") == n:
            return path, manifest
    rows = math.ceil(n / COLS)
    header = {
        "type": "CityJSON", "version": "2.0", "CityObjects": {}, "vertices": [],
        "transform": {"scale": [SCALE] * 3, "translate": list(TRANSLATE)},
        "metadata": {
            "identifier": f"benxi-bench-{n}",
            "title": f"Benxi CIM ingest benchmark: {n:,} generated buildings (3D BAG-like, LOD0/1.2/1.3/2.2)",
            "referenceSystem": CRS_URI,
            "referenceDate": "2026-12-05",
            "geographicalExtent": [X0, Y0, 100.0, X0 + COLS * PITCH, Y0 + rows * PITCH, 400.0],
        },
    }
    t0 = time.perf_counter()
    tmp = path.with_suffix(".tmp")
    area = 0.0
    with tmp.open("w", encoding="utf-8") as fh:
        fh.write(json.dumps(header, separators=(",", ":")) + "\n")
        for i in range(n):
            bid, objects, verts, a = _building(i)
            area += a
            fh.write(json.dumps({"type": "CityJSONFeature", "id": bid, "CityObjects": objects, "vertices": verts},
                                separators=(",", ":")) + "\n")
    tmp.replace(path)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    manifest = {"generator_version": GENERATOR_VERSION, "seed": SEED, "buildings": n, "objects": 2 * n,
                "footprint_area_m2": area, "bytes": path.stat().st_size, "sha256": sha,
                "generated_s": round(time.perf_counter() - t0, 1)}
    manifest_path.write_text(json.dumps(manifest, indent=2))
    return path, manifest


# ---------------------------------------------------------------------------------------------------------
# measuring
# ---------------------------------------------------------------------------------------------------------


def run_measured(cmd: list[str], env: dict[str, str] | None = None, mem_limit_gib: float | None = None,
                 timeout: float = 4 * 3600) -> dict:
    """Run one process to its end: wall seconds, its own peak RSS (MiB), exit code, output tails."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        def limit() -> None:
            if mem_limit_gib:
                cap = int(mem_limit_gib * 2**30)
                resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})}, cwd=ROOT, stdout=out, stderr=err,
                                stdin=subprocess.DEVNULL, preexec_fn=limit)  # noqa: PLW1509  (no threads here)
        deadline = t0 + timeout
        try:
            while True:
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
                if pid:
                    break
                if time.perf_counter() > deadline:
                    proc.kill()
                time.sleep(0.05)
        except BaseException:  # interrupted (SIGTERM, Ctrl-C): the measured process goes too
            proc.kill()
            proc.wait()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    return {"seconds": round(seconds, 2), "peak_rss_mib": usage.ru_maxrss // 1024, "exit": proc.returncode,
            "user_s": round(usage.ru_utime, 1), "sys_s": round(usage.ru_stime, 1),
            "stdout_tail": stdout[-1500:], "stderr_tail": stderr[-3000:],
            # a failure's first cause can scroll out of the tail (cjdb's clean-up raises again over it)
            "error_lines": [ln[:300] for ln in stderr.splitlines() if "Error" in ln or "ERROR" in ln][:10]}


def cim(*args: str) -> list[str]:
    return [str(PY), "-m", "cim.cli", *args]


def pg_query(port: int, db: str, sql: str) -> list[tuple]:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname=db) as conn:
        return conn.execute(sql).fetchall()


def drop_db(port: int, db: str) -> None:
    import psycopg

    with psycopg.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def check_area(found: float | None, expected: float) -> bool:
    return found is not None and abs(found - expected) <= 1e-6 * expected


def run_cim_load(url: str, path: Path, extra: list[str], work: Path, label: str) -> dict:
    env = {"CIM_DATABASE_URL": url, "CIM_DATA_DIR": str(work)}
    init = run_measured(cim("db", "init"), env)
    if init["exit"] != 0:
        raise RuntimeError(f"cim db init failed: {init['stderr_tail']}")
    report = work / f"{label}.report.json"
    r = run_measured(cim("load", str(path), "--report", str(report), *extra), env)
    if report.exists():
        rep = json.loads(report.read_text())
        r["loaded"], r["rejected"] = rep["loaded"], rep["rejected"]
        r["rules_failed"] = {name: v["failed"] for f in rep["files"] for name, v in f["rules"].items() if v["failed"]}
        r["by_class"] = {k: v for f in rep["files"] for k, v in f["by_class"].items()}
    if r["exit"] == 0:
        r["stdout_tail"] = r["stderr_tail"] = ""
    return r


def bench_city_round(pg, path: Path, manifest: dict, rnd: int, work: Path, skip_spatialite: bool,
                     peer_mem_gib: float) -> list[dict]:
    n = manifest["buildings"]
    expected_area = manifest["footprint_area_m2"]
    out = []

    # A: cim load → PostGIS
    db = f"cim_{n}_{rnd}"
    url = pg.create_database(db)
    r = run_cim_load(url, path, [], work, db)
    if r["exit"] == 0:
        rows = dict(pg_query(pg.port, db, "SELECT object_class, sum(ST_Area(geom)) FROM city_object GROUP BY 1"))
        counts = dict(pg_query(pg.port, db, "SELECT object_class, count(*) FROM city_object GROUP BY 1"))
        geoms = pg_query(pg.port, db, "SELECT (SELECT count(*) FROM city_object_geometry), "
                                      "(SELECT count(*) FROM city_object_other_lod)")[0]
        size = pg_query(pg.port, db, "SELECT pg_database_size(current_database())")[0][0]
        r["stored"] = {"objects": counts, "geometries": geoms[0], "other_lods": geoms[1],
                       "db_mib": round(size / 2**20)}
        r["check_ok"] = (counts.get("Building") == n and counts.get("BuildingPart") == n
                         and check_area(rows.get("Building"), expected_area)
                         and check_area(rows.get("BuildingPart"), expected_area))
        r["area_building_m2"], r["area_part_m2"] = rows.get("Building"), rows.get("BuildingPart")
    out.append({"tool": "cim load", "db": "postgis", "size": n, "round": rnd, **r})
    drop_db(pg.port, db)
    print(json.dumps({k: v for k, v in out[-1].items() if not k.endswith("_tail")}), flush=True)

    # B: cjdb import → PostGIS (same server, its own database)
    db = f"cjdb_{n}_{rnd}"
    pg.create_database(db)
    if CJDB.exists():
        r = run_measured([str(CJDB), "import", "-H", "127.0.0.1", "-p", str(pg.port), "-U", "postgres", "-d", db,
                          "-s", "cjdb", "-f", str(path)], {"PGPASSWORD": "bench"}, mem_limit_gib=peer_mem_gib)
        if r["exit"] == 0:
            rows = dict(pg_query(pg.port, db, "SELECT type, sum(ST_Area(ground_geometry)) FROM cjdb.city_object "
                                              "GROUP BY 1"))
            counts = dict(pg_query(pg.port, db, "SELECT type, count(*) FROM cjdb.city_object GROUP BY 1"))
            rel = pg_query(pg.port, db, "SELECT count(*) FROM cjdb.city_object_relationships")[0][0]
            size = pg_query(pg.port, db, "SELECT pg_database_size(current_database())")[0][0]
            r["stored"] = {"objects": counts, "relationships": rel, "db_mib": round(size / 2**20)}
            r["loaded"] = sum(counts.values())
            r["check_ok"] = (counts.get("Building") == n and counts.get("BuildingPart") == n and rel == n
                             and check_area(rows.get("Building"), expected_area)
                             and check_area(rows.get("BuildingPart"), expected_area))
            r["area_building_m2"], r["area_part_m2"] = rows.get("Building"), rows.get("BuildingPart")
            r["stdout_tail"] = r["stderr_tail"][-600:]
            r["stderr_tail"] = ""
        else:
            r["limit_gib"] = peer_mem_gib
    else:
        r = {"exit": None, "error": f"{CJDB} missing: run bash bench/ingest_peers.sh"}
    out.append({"tool": "cjdb import", "db": "postgis", "size": n, "round": rnd, **r})
    drop_db(pg.port, db)
    print(json.dumps({k: v for k, v in out[-1].items() if not k.endswith("_tail") or out[-1].get("exit")}), flush=True)

    # C: cim load → SpatiaLite
    if not skip_spatialite:
        file = work / f"cim_{n}_{rnd}.sqlite"
        r = run_cim_load(f"sqlite:///{file}", path, [], work, file.stem)
        if r["exit"] == 0:
            r["stored"] = {"db_mib": round(file.stat().st_size / 2**20)}
            r["check_ok"] = r.get("by_class", {}).get("Building") == n and r.get("by_class", {}).get("BuildingPart") == n
            r["check_ok"] = r["check_ok"] and _spatialite_areas(file, expected_area, r)
        out.append({"tool": "cim load", "db": "spatialite", "size": n, "round": rnd, **r})
        for suffix in ("", "-wal", "-shm"):
            Path(f"{file}{suffix}").unlink(missing_ok=True)
        print(json.dumps({k: v for k, v in out[-1].items() if not k.endswith("_tail")}), flush=True)
    return out


def _spatialite_areas(file: Path, expected: float, r: dict) -> bool:
    from sqlalchemy import text

    from cim.db.engine import open_engine

    engine = open_engine(f"sqlite:///{file}")
    try:
        with engine.connect() as conn:
            rows = dict(conn.execute(text("SELECT object_class, sum(ST_Area(geom)) FROM city_object GROUP BY 1")).all())
    finally:
        engine.dispose()
    r["area_building_m2"], r["area_part_m2"] = rows.get("Building"), rows.get("BuildingPart")
    return check_area(rows.get("Building"), expected) and check_area(rows.get("BuildingPart"), expected)


# ---------------------------------------------------------------------------------------------------------
# (b) IFC
# ---------------------------------------------------------------------------------------------------------

IFC_FLOOR = r"""
import sys, time, ifcopenshell, ifcopenshell.geom
from cim.ingest.ifc import GEOMETRY_LIBRARY
t0 = time.perf_counter()
model = ifcopenshell.open(sys.argv[1])
settings = ifcopenshell.geom.settings()
settings.set("use-world-coords", True)
it = ifcopenshell.geom.iterator(settings, model, 2, geometry_library=GEOMETRY_LIBRARY)
n = tris = 0
if it.initialize():
    while True:
        shape = it.get()
        n += 1
        tris += len(shape.geometry.faces) // 3
        if not it.next():
            break
print(n, tris, round(time.perf_counter() - t0, 3))
"""


def bench_ifc(pg, work: Path, rounds: int) -> list[dict]:
    files = sorted(SHARED.glob("ifc/*.ifc")) + sorted(SHARED.glob("ifc43/*.ifc"))
    out = []
    for rnd in range(1, rounds + 1):
        for path in files:
            stem = path.name.split(".")[0].replace("-", "_").lower()
            db = f"ifc_{stem}_{rnd}"
            url = pg.create_database(db)
            r = run_cim_load(url, path, ["--anchor", ANCHOR], work, db)
            out.append({"tool": "cim load", "db": "postgis", "file": path.name, "round": rnd, **r})
            print(json.dumps({k: v for k, v in out[-1].items() if not k.endswith("_tail")}), flush=True)
            drop_db(pg.port, db)
            file = work / f"{db}.sqlite"
            r = run_cim_load(f"sqlite:///{file}", path, ["--anchor", ANCHOR], work, db + "_sl")
            out.append({"tool": "cim load", "db": "spatialite", "file": path.name, "round": rnd, **r})
            print(json.dumps({k: v for k, v in out[-1].items() if not k.endswith("_tail")}), flush=True)
            for suffix in ("", "-wal", "-shm"):
                Path(f"{file}{suffix}").unlink(missing_ok=True)
            r = run_measured([str(PY), "-c", IFC_FLOOR, str(path)])
            if r["exit"] == 0:
                shapes, tris, inner = r["stdout_tail"].split()
                r.update({"shapes": int(shapes), "triangles": int(tris), "iterate_s": float(inner)})
                r["stdout_tail"] = r["stderr_tail"] = ""
            out.append({"tool": "ifcopenshell iterator (floor)", "db": None, "file": path.name, "round": rnd, **r})
            print(json.dumps({k: v for k, v in out[-1].items() if not k.endswith("_tail")}), flush=True)
    return out


# ---------------------------------------------------------------------------------------------------------
# profile
# ---------------------------------------------------------------------------------------------------------


def profile_child(url: str, path: str, out: str) -> None:
    """In a fresh process: cProfile of load_files on one file (the database already initialised)."""
    import cProfile
    import io
    import pstats

    from cim.db.engine import open_engine
    from cim.ingest.load import load_files

    engine = open_engine(url)
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    prof.enable()
    report = load_files(engine, [Path(path)])
    prof.disable()
    wall = time.perf_counter() - t0
    engine.dispose()
    prof.dump_stats(out)
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(30)
    stats.sort_stats("cumulative").print_stats(45)
    Path(out).with_suffix(".txt").write_text(f"load_files wall {wall:.1f} s under cProfile, loaded {report.loaded}\n"
                                             + buf.getvalue())
    print(json.dumps({"profiled_wall_s": round(wall, 1), "loaded": report.loaded}))


def bench_profile(pg, path: Path, n: int, work: Path, stamp: str) -> dict:
    out = {}
    for backend in ("postgis", "spatialite"):
        if backend == "postgis":
            url = pg.create_database(f"prof_{n}")
        else:
            url = f"sqlite:///{work / f'prof_{n}.sqlite'}"
        env = {"CIM_DATABASE_URL": url, "CIM_DATA_DIR": str(work)}
        run_measured(cim("db", "init"), env)
        target = RESULTS / f"ingest-profile-{backend}-{n}-{stamp}.prof"
        r = run_measured([str(PY), __file__, "--profile-child", url, str(path), str(target)], env)
        out[backend] = {"prof": str(target.relative_to(ROOT)), "summary": str(target.with_suffix(".txt").relative_to(ROOT)),
                        "exit": r["exit"], "stdout": r["stdout_tail"][-300:], "stderr": r["stderr_tail"][-1500:]}
        print(json.dumps({backend: out[backend]}), flush=True)
        if backend == "postgis":
            drop_db(pg.port, f"prof_{n}")
    return out


# ---------------------------------------------------------------------------------------------------------


def summarise(rows: list[dict]) -> dict:
    """Medians per (tool, database, size or file), and the ratios against cjdb in the same run."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        key = f"{r['tool']} | {r.get('db')} | {r.get('size') or r.get('file')}"
        groups.setdefault(key, []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("exit") == 0]
        entry = {"runs": len(rs), "ok": len(ok), "checks_ok": all(r.get("check_ok", True) for r in ok)}
        if ok:
            entry["median_s"] = statistics.median(r["seconds"] for r in ok)
            entry["min_s"], entry["max_s"] = min(r["seconds"] for r in ok), max(r["seconds"] for r in ok)
            entry["peak_rss_mib_max"] = max(r["peak_rss_mib"] for r in ok)
            loaded = ok[0].get("loaded")
            if loaded:
                entry["objects"] = loaded
                entry["objects_per_s"] = round(loaded / entry["median_s"])
        failed = [r for r in rs if r.get("exit") != 0]
        if failed:
            entry["failures"] = [{"exit": r.get("exit"), "seconds": r.get("seconds"), "peak_rss_mib": r.get("peak_rss_mib"),
                                  "stderr_tail": (r.get("stderr_tail") or r.get("error") or "")[-800:]} for r in failed]
        out[key] = entry
    # per-round ratios (ours / peer, same round), then their median
    for size in sorted({r["size"] for r in rows if r.get("size")}):
        ratios, rss = [], []
        for rnd in sorted({r["round"] for r in rows if r.get("size") == size}):
            ours = [r for r in rows if r.get("size") == size and r["round"] == rnd and r["tool"] == "cim load"
                    and r["db"] == "postgis" and r.get("exit") == 0]
            peer = [r for r in rows if r.get("size") == size and r["round"] == rnd and r["tool"] == "cjdb import"
                    and r.get("exit") == 0]
            if ours and peer:
                ratios.append(peer[0]["seconds"] / ours[0]["seconds"])
                rss.append(ours[0]["peak_rss_mib"] / peer[0]["peak_rss_mib"])
        if ratios:
            out[f"ratio | {size}"] = {"cim_speed_vs_cjdb_median": round(statistics.median(ratios), 2),
                                      "per_round": [round(x, 2) for x in ratios],
                                      "cim_rss_vs_cjdb_median": round(statistics.median(rss), 2)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--rounds", type=int, default=3, help="rounds for files under 50,000 buildings")
    parser.add_argument("--large-rounds", type=int, default=1,
                        help="rounds for 50,000 buildings and more (one round of 100k takes ~45 min here)")
    parser.add_argument("--ifc-rounds", type=int, default=3)
    parser.add_argument("--skip-ifc", action="store_true")
    parser.add_argument("--skip-city", action="store_true")
    parser.add_argument("--skip-spatialite", action="store_true")
    parser.add_argument("--profile-size", type=int, default=0, help="also cProfile load_files on this many buildings")
    parser.add_argument("--peer-mem-limit-gib", type=float, default=14.0,
                        help="address-space cap for the peer process (protects the shared machine)")
    parser.add_argument("--generate-only", action="store_true")
    parser.add_argument("--profile-child", nargs=3, metavar=("URL", "FILE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    # SIGTERM unwinds like Ctrl-C, so the throwaway PostGIS and the scratch folder are removed
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.profile_child:
        profile_child(*args.profile_child)
        return

    from cim.db.throwaway import ThrowawayPostGIS

    files = {}
    for n in sorted(set(args.sizes + ([args.profile_size] if args.profile_size else []))):
        path, manifest = generate(n)
        files[n] = (path, manifest)
        print(json.dumps({"generated": str(path.relative_to(ROOT)), **manifest}), flush=True)
    if args.generate_only:
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, check=False, capture_output=True, text=True).stdout.strip()
    cjdb_version = (subprocess.run([str(CJDB), "--version"], check=False, capture_output=True, text=True).stdout.strip()
                    if CJDB.exists() else None)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    results: dict = {"date": dt.date.today().isoformat(), "commit": commit, "machine": platform.node(),
                     "cpus": os.cpu_count(), "python": platform.python_version(), "peer": cjdb_version,
                     "files": {n: m for n, (_p, m) in files.items()}, "rows": []}
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"ingest-{stamp}.json"
    work = Path(tempfile.mkdtemp(prefix="cim-ingest-bench-"))
    try:
        with ThrowawayPostGIS() as pg:
            results["postgres"] = pg_query(pg.port, "cim", "SELECT version(), postgis_lib_version()")[0]
            # small files, then IFC, then the long runs: what finishes first is what a cut-short run keeps
            sizes = [] if args.skip_city else sorted(args.sizes)
            for n in [n for n in sizes if n < 50_000] + ["ifc"] + [n for n in sizes if n >= 50_000]:
                if n == "ifc":
                    if not args.skip_ifc:
                        results["rows"] += bench_ifc(pg, work, args.ifc_rounds)
                        target.write_text(json.dumps(results, indent=2, default=str))
                    continue
                path, manifest = files[n]
                rounds = args.rounds if n < 50_000 else args.large_rounds
                for rnd in range(1, rounds + 1):
                    results["rows"] += bench_city_round(pg, path, manifest, rnd, work, args.skip_spatialite,
                                                        args.peer_mem_limit_gib)
                    target.write_text(json.dumps(results, indent=2, default=str))
            if args.profile_size:
                results["profile"] = bench_profile(pg, files[args.profile_size][0], args.profile_size, work, stamp)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        results["summary"] = summarise(results["rows"])
        target.write_text(json.dumps(results, indent=2, default=str))
    print(json.dumps(results["summary"], indent=2))
    print(f"results: {target.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
