"""Opening databases: clear one-line errors, hidden passwords, and the SpatiaLite import-order guard."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cim.db.engine import CIMDatabaseError, open_engine, safe_url


def test_missing_spatialite_file_is_an_error_not_a_new_file(tmp_path):
    path = tmp_path / "nope.sqlite"
    with pytest.raises(CIMDatabaseError, match="not found.*nope.sqlite.*cim db init"):
        open_engine(f"sqlite:///{path}")
    assert not path.exists()


def test_corrupt_spatialite_file(tmp_path):
    path = tmp_path / "corrupt.sqlite"
    path.write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CIMDatabaseError, match="not a readable SpatiaLite database"):
        open_engine(f"sqlite:///{path}")


def test_unreachable_postgis_hides_password():
    with pytest.raises(CIMDatabaseError) as info:
        open_engine("postgresql+psycopg://cim:s3cret@127.0.0.1:1/cim")
    message = str(info.value)
    assert "cannot reach PostGIS" in message and "127.0.0.1:1" in message
    assert "s3cret" not in message and "***" in message
    assert "\n" not in message


def test_safe_url():
    assert safe_url("postgresql+psycopg://u:pw@h/db") == "postgresql+psycopg://u:***@h/db"


def test_spatialite_connection_then_wheels_do_not_crash(tmp_path):
    """Regression: SpatiaLite's RTLD_GLOBAL libproj/libgeos must not shadow the wheels' (STACK-NOTES)."""
    script = f"""
import cim.db.engine as e
engine = e.open_engine("sqlite:///{tmp_path / 'x.sqlite'}", create=True)
with engine.connect() as c:
    c.exec_driver_sql("SELECT spatialite_version()").scalar()
import pyproj, rasterio, pyogrio, shapely
t = pyproj.Transformer.from_crs(4490, 4550, always_xy=True)
x, y = t.transform(123.77, 41.30)
assert abs(x - 564489.714) < 1e-3 and abs(y - 4574176.348) < 1e-3, (x, y)
assert pyproj.proj_version_str == pyproj.__proj_version__ if hasattr(pyproj, "__proj_version__") else True
print("PROJ", pyproj.proj_version_str, "ok")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "ok" in proc.stdout
    # the wheel's PROJ, not Debian's 9.1.1 that SpatiaLite links
    assert "PROJ 9.1.1" not in proc.stdout


def _terminate(url: str, application_name: str) -> int:
    """Ends every server session of ``application_name`` (what a PostgreSQL restart does to a pool)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database, autocommit=True) as conn:
        return len(conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                "WHERE application_name = %s AND pid <> pg_backend_pid()",
                                (application_name,)).fetchall())


def test_an_idle_connection_the_server_dropped_is_replaced(new_database, monkeypatch):
    """No ping per checkout (one round trip per request saved), but a pooled connection idle longer than
    IDLE_PING_SECONDS is pinged first, and one the server dropped is replaced instead of failing."""
    from sqlalchemy import text

    from cim.db import engine as engine_module

    url = new_database("postgis")
    engine = open_engine(url, pool_size=1)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
        assert _terminate(url, "cim") >= 1
        monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.0)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 2")).scalar() == 2
    finally:
        engine.dispose()


def test_autocommit_reads_leave_no_transaction_and_give_the_pool_back_transactional(new_database):
    """autocommit(engine): a read is its own statement (no BEGIN, no ROLLBACK at the pool's reset), on the same
    pool; the connection goes back to the pool transactional, so the next user's writes are atomic again."""
    from psycopg.pq import TransactionStatus
    from sqlalchemy import text

    from cim.db.engine import autocommit

    engine = open_engine(new_database("postgis"), pool_size=1, max_overflow=0)
    try:
        assert autocommit(engine) is autocommit(engine) and autocommit(engine).pool is engine.pool
        with autocommit(engine).connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar() == 1
            raw = conn.connection.driver_connection
            assert raw.autocommit and raw.info.transaction_status == TransactionStatus.IDLE
        with engine.connect() as conn:  # the one pooled connection, transactional again
            assert conn.connection.driver_connection is raw and not raw.autocommit
            conn.execute(text("CREATE TABLE t_atomic (x int)"))
            assert raw.info.transaction_status == TransactionStatus.INTRANS
            conn.rollback()
        with engine.connect() as conn:
            assert conn.execute(text("SELECT to_regclass('t_atomic')")).scalar() is None
    finally:
        engine.dispose()


def test_an_idle_connection_pinged_at_checkout_can_still_go_autocommit(new_database, monkeypatch):
    """The idle ping (a SELECT outside autocommit) must not leave a transaction open: switching the pinged
    connection to autocommit would fail ("can't change 'autocommit' now"), a 500 for the request."""
    from sqlalchemy import text

    from cim.db import engine as engine_module
    from cim.db.engine import autocommit

    engine = open_engine(new_database("postgis"), pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.0)  # every checkout pings
        for _ in range(2):
            with autocommit(engine).connect() as conn:
                assert conn.execute(text("SELECT 2")).scalar() == 2
            with engine.connect() as conn:
                assert conn.execute(text("SELECT 3")).scalar() == 3
    finally:
        engine.dispose()


def test_autocommit_is_the_engine_itself_on_spatialite(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'x.sqlite'}", create=True)
    try:
        from cim.db.engine import autocommit

        assert autocommit(engine) is engine
    finally:
        engine.dispose()
