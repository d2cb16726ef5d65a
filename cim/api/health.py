"""Liveness (``/healthz``) and readiness (``/readyz``) for load balancers and orchestrators.

``/healthz`` answers as long as the worker's event loop does, without touching the database: a database
outage must not get healthy workers restarted. ``/readyz`` says whether this worker can serve: the primary
database and the read replica (when configured) answer, carry a CIM schema of the version this software
expects, and (replica) how far it lags; 503 with Retry-After otherwise, so the balancer sends no traffic.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse

from cim.settings import get_settings

__all__ = ["healthz", "readyz"]


async def healthz(request: Request) -> JSONResponse:
    """Liveness: the worker answers."""
    return JSONResponse({"status": "ok"})


def _check(engine: Engine) -> dict[str, Any]:
    from cim.db.schema import HEAD, read_meta

    with engine.connect() as conn:
        meta = read_meta(conn)
        report: dict[str, Any] = {"dialect": engine.dialect.name, "schema_version": int(meta.get("schema_version", 0))}
        if engine.dialect.name == "postgresql" and conn.execute(text("SELECT pg_is_in_recovery()")).scalar():
            lag = conn.execute(text("SELECT EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp())")).scalar()
            report["replica_lag_s"] = None if lag is None else round(float(lag), 3)
    if report["schema_version"] != HEAD:
        report["error"] = f"schema version {report['schema_version']}, this software needs {HEAD}"
    return report


def _checks() -> dict[str, Any]:
    from cim.api.provider import read_database, write_database

    settings = get_settings()
    targets = {"database": write_database}
    if settings.read_database_url and settings.read_database_url != settings.database_url:
        targets["read_database"] = read_database
    out: dict[str, Any] = {}
    for name, opener in targets.items():
        try:
            out[name] = _check(opener()[0])
        except Exception as exc:  # reported, not raised: this is the readiness check
            out[name] = {"error": (str(exc).splitlines() or [type(exc).__name__])[0]}
    return out


async def readyz(request: Request) -> JSONResponse:
    """Readiness: the databases answer with the expected schema."""
    checks = await run_in_threadpool(_checks)
    ready = not any("error" in c for c in checks.values())
    headers = None if ready else {"Retry-After": str(get_settings().limits.retry_after_s)}
    return JSONResponse({"status": "ok" if ready else "unavailable", **checks}, status_code=200 if ready else 503,
                        headers=headers)
