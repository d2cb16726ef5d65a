"""Limits that protect the database and the workers (``cim.limits`` in config.yml).

The engines of the HTTP service (:func:`cim.api.provider.database`) have a bounded pool (``pool_size`` +
``max_overflow``, ``pool_timeout_s``) and a statement timeout; this module turns what they raise into
answers instead of hung workers or 500s:

- the database is down or restarting, a connection dropped, the pool stayed exhausted for
  ``pool_timeout_s``, or a statement ran past ``statement_timeout_ms``: **503** (OGC exception JSON,
  ``Retry-After``). SQLAlchemy invalidates the whole pool on a disconnect error, so the next request
  reconnects: the service recovers by itself once the database is back, with or without pre-ping.
- a request body over ``max_body_bytes``: **413**, before it is read into memory.

``ids`` (``max_ids``) and the area of a ``cim-download`` bbox (``max_export_km2``) are checked where those
parameters are parsed, as 400s.
"""

from __future__ import annotations

import json
import logging
from http import HTTPStatus

from sqlalchemy import exc as sa_exc
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cim.db.engine import CIMDatabaseError
from cim.settings import LimitsSettings

LOGGER = logging.getLogger(__name__)

__all__ = ["BodyLimit", "BodyTooLarge", "install_handlers", "unavailable"]


class BodyTooLarge(Exception):
    """A request body longer than ``max_body_bytes``."""


def unavailable(exc: BaseException) -> str | None:
    """Why the database cannot answer this request now (``timeout``, ``pool``, ``down``), or None when
    ``exc`` is not such an error (a bug: a 500)."""
    if isinstance(exc, sa_exc.TimeoutError):  # no pooled connection came free within pool_timeout_s
        return "pool"
    if isinstance(exc, CIMDatabaseError):  # an engine could not be opened: the server is unreachable
        return "down"
    if isinstance(exc, sa_exc.DBAPIError):
        orig = str(getattr(exc, "orig", "") or "")
        # PostgreSQL's statement_timeout (psycopg QueryCanceled), SQLite's progress-handler interrupt
        if type(exc.orig).__name__ == "QueryCanceled" or orig.strip() == "interrupted":
            return "timeout"
        if exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return "down"
    return None


def _exception(status: int, code: str, description: str, retry_after: int | None = None) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after else None
    body = {"code": code, "type": code, "description": description}
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type="application/json",
                    headers=headers)


MESSAGES = {
    "timeout": "the query ran longer than the service allows ({ms} ms): narrow the request (bbox, limit, filter)",
    "pool": "the service is busy (no database connection came free in time): retry shortly",
    "down": "the database is not answering: retry shortly",
}


def install_handlers(app: Starlette, limits: LimitsSettings) -> None:
    """Answer database unavailability with 503 + Retry-After and long bodies with 413, on ``app`` (ours, and
    pygeoapi's mounted app, whose own error middleware would otherwise answer 500 first)."""

    async def database_error(request: Request, exc: Exception) -> Response:
        reason = unavailable(exc)
        if reason is None:
            raise exc
        from cim.api import metrics

        metrics.unavailable(reason)
        LOGGER.warning("503 %s: %s", reason, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return _exception(HTTPStatus.SERVICE_UNAVAILABLE, "ServiceUnavailable",
                          MESSAGES[reason].format(ms=limits.statement_timeout_ms), limits.retry_after_s)

    async def too_large(request: Request, exc: Exception) -> Response:
        return _exception(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PayloadTooLarge",
                          f"request body over {limits.max_body_bytes:,} bytes")

    app.add_exception_handler(sa_exc.SQLAlchemyError, database_error)
    app.add_exception_handler(CIMDatabaseError, database_error)
    app.add_exception_handler(BodyTooLarge, too_large)


class BodyLimit:
    """Refuses request bodies over ``max_bytes``: by Content-Length at once, and by counting as a body without
    one (chunked) arrives, so no handler ever buffers more."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers", [])).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            response = _exception(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PayloadTooLarge",
                                  f"request body of {int(length):,} bytes; at most {self.max_bytes:,}")
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counted, send)
