"""The one place that opens database engines: PostGIS (production) or SpatiaLite (embedded default).

SQLite loads the SpatiaLite extension with RTLD_GLOBAL, after which Debian's libproj, libgeos and
libsqlite3 shadow the copies inside wheels imported later: pyproj then aborts at exit and rasterio/pyogrio
segfault on import (../shared/STACK-NOTES.md). So this module imports every wheel with its own copy of
those libraries *before* the first SpatiaLite connection can exist. Open engines only through
:func:`open_engine`.
"""

from __future__ import annotations

# Order matters: these imports must precede any SpatiaLite connection (see module docstring).
import pyproj  # noqa: F401  isort: skip
import shapely  # noqa: F401  isort: skip
import rasterio  # noqa: F401  isort: skip
import pyogrio  # noqa: F401  isort: skip

import json
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError

SPATIALITE_LIBRARY = os.environ.setdefault("SPATIALITE_LIBRARY_PATH", "mod_spatialite")


class CIMDatabaseError(RuntimeError):
    """The database cannot be used: missing, corrupt, unreachable or not a CIM database."""


def safe_url(url: str | URL) -> str:
    """The URL with its password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL is shown as given, minus anything that looks like a password
        return str(url).split("@")[-1]


def is_spatialite(url: str | URL) -> bool:
    """True for a SpatiaLite (SQLite) URL."""
    return make_url(url).get_backend_name() == "sqlite"


def spatialite_path(url: str | URL) -> Path | None:
    """The file behind a SpatiaLite URL (None for an in-memory database)."""
    database = make_url(url).database
    return None if not database or database == ":memory:" else Path(database)


def _json_dumps(value: Any) -> str:
    # Chinese attribute values stay readable in the database.
    return json.dumps(value, ensure_ascii=False)


def _sqlite_module() -> Any:
    try:
        import pysqlite3.dbapi2 as sqlite_module  # type: ignore[import-not-found]
    except ImportError:  # a Python whose sqlite3 was built with extension loading
        import sqlite3 as sqlite_module
    return sqlite_module


def _on_spatialite_connect(dbapi_conn: Any, _record: Any) -> None:
    # The sqlite3 driver would begin transactions only before DML, so DDL (db init/upgrade) would
    # autocommit statement by statement. Take transaction control ourselves: see _on_spatialite_begin.
    dbapi_conn.isolation_level = None
    dbapi_conn.enable_load_extension(True)
    dbapi_conn.load_extension(SPATIALITE_LIBRARY)
    dbapi_conn.enable_load_extension(False)
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA foreign_keys = ON")
    # WAL lets the HTTP workers read while an import writes.
    cursor.execute("PRAGMA journal_mode = WAL")
    cursor.execute("PRAGMA busy_timeout = 30000")
    cursor.close()


def _on_spatialite_begin(conn: Any) -> None:
    # A read-then-write transaction (a compare-and-set) must take the write lock first: a deferred one that
    # read before another writer committed fails with SQLITE_BUSY instead of waiting (WAL snapshots).
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write_lock") else "BEGIN")


# A pooled connection idle longer than this is pinged before use (one `SELECT 1`), so one that the server
# dropped meanwhile (a restart, an idle timeout) is replaced instead of failing a request. Busy connections
# are not pinged: pinging every checkout (pool_pre_ping) was one of three round trips per items request.
# A connection dropped while busy fails its statement with `connection_invalidated` set; the pool then
# discards every older connection, and callers that can repeat a read retry once (cim.api.features).
IDLE_PING_SECONDS = 10.0


def _on_checkin(_dbapi_conn: Any, record: Any) -> None:
    record.info["idle_since"] = time.monotonic()


def _on_checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
    since = record.info.get("idle_since")
    if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
        return
    try:
        cursor = dbapi_conn.cursor()
        try:
            cursor.execute("SELECT 1")
        finally:
            cursor.close()
        # the ping opened a transaction (psycopg begins one before a statement outside autocommit): end it, or
        # a connection checked out for autocommit (autocommit(), vector tiles and items) could not switch
        dbapi_conn.rollback()
    except Exception as exc:  # the pool replaces the connection and checks out another
        raise DisconnectionError(str(exc)) from exc


def _interrupt_after(engine: Engine, timeout_ms: int) -> None:
    """SQLite's statement timeout: a progress handler interrupts a statement (``OperationalError:
    interrupted``) once it has run ``timeout_ms``, fetching included; PostgreSQL's is ``statement_timeout``."""
    limit = timeout_ms / 1000

    @event.listens_for(engine, "connect")
    def _install(dbapi_conn: Any, record: Any) -> None:
        deadline = record.info["cim_deadline"] = [None]
        # called every 10,000 virtual machine instructions (~0.1 ms): negligible, and prompt enough
        dbapi_conn.set_progress_handler(lambda: deadline[0] is not None and time.monotonic() > deadline[0], 10_000)

    @event.listens_for(engine, "before_cursor_execute")
    def _start(conn: Any, *_args: Any) -> None:
        if (deadline := conn.info.get("cim_deadline")) is not None:
            deadline[0] = time.monotonic() + limit

    # never interrupt the COMMIT or ROLLBACK that ends a statement's transaction (nor the pool's reset)
    def _clear(info: dict) -> None:
        if (deadline := info.get("cim_deadline")) is not None:
            deadline[0] = None

    event.listen(engine, "commit", lambda conn: _clear(conn.info))
    event.listen(engine, "rollback", lambda conn: _clear(conn.info))
    event.listen(engine.pool, "reset", lambda _dbapi, record, *_: _clear(record.info))


def autocommit(engine: Engine) -> Engine:
    """``engine`` for reads of one statement each that need no transaction (vector tiles, items pages read
    whole, single items): on PostGIS its connections run in autocommit (the same pool), so such a read is one
    round trip instead of three (BEGIN, the statement, and the ROLLBACK of the pool's reset; together ~a fifth
    of an uncached tile's time in the server, bench/README.md). Statements in READ COMMITTED each see their
    own snapshot anyway. SpatiaLite's engine is returned as it is (its transactions are ours: see
    _on_spatialite_begin)."""
    if engine.dialect.name != "postgresql":
        return engine
    found = getattr(engine, "_cim_autocommit", None)
    if found is None:  # kept on the engine (a cycle the collector frees with it), made once
        found = engine.execution_options(isolation_level="AUTOCOMMIT")
        engine._cim_autocommit = found  # type: ignore[attr-defined]
    return found


def open_engine(url: str, *, create: bool = False, pool_size: int = 5, max_overflow: int | None = None,
                pool_timeout: float = 30.0, statement_timeout_ms: int = 0) -> Engine:
    """Open an engine on a CIM database and check that it answers.

    Args:
        url: SQLAlchemy URL: ``sqlite:///path`` (SpatiaLite) or ``postgresql+psycopg://...`` (PostGIS).
        create: allow a SpatiaLite file that does not exist yet (``cim db init``).
        pool_size: connections kept per process.
        max_overflow: connections opened beyond ``pool_size`` under load (default: ``pool_size``).
        pool_timeout: seconds to wait for a connection before ``sqlalchemy.exc.TimeoutError``.
        statement_timeout_ms: cancel any statement running longer (0: never): the HTTP service sets it,
            loads and builds do not.

    Raises:
        CIMDatabaseError: with a one-line message naming the URL (password hidden).
    """
    shown = safe_url(url)
    try:
        sa_url = make_url(url)
    except Exception as exc:
        raise CIMDatabaseError(f"invalid database URL {shown!r}: {exc}") from None

    if is_spatialite(sa_url):
        path = spatialite_path(sa_url)
        if path is not None and not path.exists():
            if not create:
                raise CIMDatabaseError(f"CIM database not found: {shown} (run `cim db init` first)")
            path.parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            sa_url,
            module=_sqlite_module(),
            connect_args={"check_same_thread": False, "timeout": 30},
            json_serializer=_json_dumps,
            pool_size=pool_size,
            max_overflow=pool_size if max_overflow is None else max_overflow,
            pool_timeout=pool_timeout,
        )
        event.listen(engine, "connect", _on_spatialite_connect)
        event.listen(engine, "begin", _on_spatialite_begin)
        if statement_timeout_ms:
            _interrupt_after(engine, statement_timeout_ms)
    elif sa_url.get_backend_name() == "postgresql":
        if sa_url.get_driver_name() in ("", "psycopg2"):
            sa_url = sa_url.set(drivername="postgresql+psycopg")
        engine = create_engine(
            sa_url,
            pool_size=pool_size,
            max_overflow=pool_size if max_overflow is None else max_overflow,
            pool_timeout=pool_timeout,
            # Many short queries: parallel workers and JIT compilation cost more than they save here
            # (a 900-row bbox page: 17 ms with a parallel bitmap scan, 9 ms without).
            connect_args={"connect_timeout": 10, "application_name": "cim",
                          "options": "-c max_parallel_workers_per_gather=0 -c jit=off"
                                     f" -c statement_timeout={int(statement_timeout_ms)}"},
            json_serializer=_json_dumps,
        )
        event.listen(engine, "checkin", _on_checkin)
        event.listen(engine, "checkout", _on_checkout)
    else:
        raise CIMDatabaseError(f"unsupported database {shown}: use sqlite:///FILE or postgresql+psycopg://...")

    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                conn.execute(text("PRAGMA schema_version")).scalar()
            else:
                conn.execute(text("SELECT 1")).scalar()
    except DBAPIError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if engine.dialect.name == "sqlite":
            raise CIMDatabaseError(f"not a readable SpatiaLite database: {shown} ({reason})") from None
        raise CIMDatabaseError(f"cannot reach PostGIS at {shown} ({reason})") from None
    return engine
