"""A `cim load` killed (SIGKILL) in the middle of a file leaves the database as it was, on both backends,
and the same load then succeeds: loads are one transaction, nothing is half-written."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, text

from cim.db import schema
from cim.db.engine import open_engine

from .conftest import BACKENDS, ROOT

SEQ = ROOT.parent / "shared" / "datasets" / "cityjson" / "3dbag_tile_901_trimmed.city.jsonl"


def big_seq(path: Path, copies: int) -> Path:
    """The 3D BAG sample's 52 buildings (each with a part) repeated ``copies`` times under new ids, side by
    side: a file long enough to be caught in the middle."""
    lines = SEQ.read_text(encoding="utf-8").splitlines()
    out = [lines[0]]
    for k in range(copies):
        for line in lines[1:]:
            feature = json.loads(line)
            rename = {key: f"{key}-{k}" for key in feature["CityObjects"]}
            objects = {}
            for key, co in feature["CityObjects"].items():
                for link in ("parents", "children"):
                    if link in co:
                        co[link] = [rename[v] for v in co[link]]
                objects[rename[key]] = co
            feature["CityObjects"], feature["id"] = objects, rename[feature["id"]]
            feature["vertices"] = [[x + k * 40_000, y, z] for x, y, z in feature["vertices"]]  # 40 m apart
            out.append(json.dumps(feature))
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
    return path


def counts(engine) -> dict[str, int]:
    t = schema.tables_for(engine)
    with engine.connect() as conn:
        return {table.name: conn.execute(select(func.count()).select_from(table)).scalar()
                for table in (t.dataset, t.import_run, t.city_object, t.city_object_geometry, t.layer_version)}


def writing(engine, url: str, db_file: Path | None) -> bool:
    """True once the loader has written rows in its (uncommitted) transaction."""
    if db_file is not None:  # SpatiaLite in WAL mode: uncommitted pages go to the -wal file
        wal = Path(f"{db_file}-wal")
        return wal.exists() and wal.stat().st_size > 1_000_000
    with engine.connect() as conn:
        return bool(conn.execute(text(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE c.relname = 'city_object_geometry' AND l.mode = 'RowExclusiveLock' AND a.pid <> pg_backend_pid()"
        )).scalar())


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_killed_load_changes_nothing(backend, new_database, tmp_path):
    url = new_database(backend)
    engine = open_engine(url, create=True)
    schema.init(engine, 4550, 5737)
    engine.dispose()
    engine = open_engine(url)
    db_file = Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite") else None
    source = big_seq(tmp_path / "big.city.jsonl", copies=20)
    env = {**os.environ, "CIM_DATA_DIR": str(tmp_path / "data")}
    command = [sys.executable, "-m", "cim.cli", "load", str(source), "-d", url, "--anchor", "123.77,41.30,180,0"]
    # something loaded before, which must survive
    subprocess.run([*command[:4], str(SEQ), *command[5:]], env=env, cwd=ROOT, check=True, capture_output=True,
                   timeout=300)
    before = counts(engine)
    loader = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while not writing(engine, url, db_file):
            assert loader.poll() is None, f"the load ended before it could be killed: {loader.stderr.read()}"
            assert time.monotonic() < deadline, "the load never started writing"
            time.sleep(0.05)
        loader.send_signal(signal.SIGKILL)
    finally:
        loader.wait(timeout=60)
    assert loader.returncode == -signal.SIGKILL
    engine.dispose()
    engine = open_engine(url)
    # PostgreSQL rolls the dead client's transaction back once it notices the closed socket
    deadline = time.monotonic() + 30
    while db_file is None and writing(engine, url, None) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counts(engine) == before
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    after = counts(engine)
    assert after["city_object"] == before["city_object"] + 20 * 104
    engine.dispose()
