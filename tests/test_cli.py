"""The `cim` command line, run as a user runs it."""

from __future__ import annotations

from cim.db import schema

from .conftest import run_cim


def _one_line_error(proc) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def test_missing_database_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'missing.sqlite'}"
    for cmd in (["info"], ["demo", "--size", "5"], ["db", "upgrade"], ["serve"]):
        line = _one_line_error(run_cim(*cmd, env={"CIM_DATABASE_URL": url}))
        assert "missing.sqlite" in line and "not found" in line
    assert not (tmp_path / "missing.sqlite").exists()


def test_corrupt_database_file(tmp_path):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(b"\x00garbage" * 512)
    line = _one_line_error(run_cim("info", env={"CIM_DATABASE_URL": f"sqlite:///{path}"}))
    assert "corrupt.sqlite" in line and "not a readable SpatiaLite database" in line


def test_unreachable_postgis_hides_password():
    line = _one_line_error(run_cim("db", "init", env={"CIM_DATABASE_URL": "postgresql+psycopg://cim:hunter2@127.0.0.1:1/cim"}))
    assert "cannot reach PostGIS" in line and "hunter2" not in line and "cim:***@127.0.0.1:1/cim" in line


def test_not_initialised(tmp_path, new_database):
    url = new_database("postgis")
    line = _one_line_error(run_cim("demo", "--size", "5", env={"CIM_DATABASE_URL": url}))
    assert "not a CIM database" in line and "cim db init" in line


def test_failed_init_on_new_file_removes_it(tmp_path):
    path = tmp_path / "x.sqlite"
    # EPSG:999999 does not exist: the schema cannot be created for it
    proc = run_cim("db", "init", env={"CIM_DATABASE_URL": f"sqlite:///{path}", "CIM_STORAGE_CRS": "999999"})
    assert "999999" in _one_line_error(proc)
    assert not path.exists() and not (tmp_path / "x.sqlite-wal").exists()


def test_init_demo_info_on_both_backends(new_database, tmp_path):
    for backend in ("spatialite", "postgis"):
        env = {"CIM_DATABASE_URL": new_database(backend), "CIM_DATA_DIR": str(tmp_path / backend)}
        first = run_cim("db", "init", env=env, check=True)
        assert "created CIM schema version" in first.stdout
        again = run_cim("db", "init", env=env, check=True)
        assert "already a CIM database" in again.stdout
        run_cim("demo", "--size", "30", env=env, check=True)
        skipped = run_cim("demo", "--size", "30", "--skip-if-present", env=env, check=True)
        assert "already in" in skipped.stdout
        info = run_cim("info", env=env, check=True).stdout
        assert f"schema version {schema.HEAD}" in info and "EPSG:4550" in info
        assert "Building" in info and "PipeSegment" in info


def test_bad_size_is_rejected():
    proc = run_cim("demo", "--size", "0")
    assert proc.returncode == 2 and "--size" in proc.stderr
