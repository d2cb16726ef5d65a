"""Structured logs and request ids.

Every request gets an id: the client's ``X-Request-Id`` when it sends a sane one (up to 128 letters, digits,
``.``, ``_``, ``-``, e.g. from a proxy), else a new one; it is echoed in the response's ``X-Request-Id`` and
in every log line written while the request runs in its own task (``request_id``). One access line per
request (``cim.access``: method, path, route template, status, duration) and the Prometheus request metrics
come from the same middleware. Logs go to standard error as JSON lines (``log_format: json``, the default,
for a log collector) or plain text.
"""

from __future__ import annotations

import logging
import re
import sys
import time
import uuid
from contextvars import ContextVar

from pythonjsonlogger.json import JsonFormatter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cim.api import metrics

__all__ = ["RequestLog", "configure", "request_id"]

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)
ACCESS = logging.getLogger("cim.access")
_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


def configure(log_format: str, access_log: bool = True) -> None:
    """Send every logger's records (ours, pygeoapi's, uvicorn's) to one standard-error handler in
    ``log_format`` (json | text); the ``cim`` loggers at INFO, the others at the level they have."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter("{asctime}{levelname}{name}{message}", style="{",
                                           rename_fields={"asctime": "time", "levelname": "level",
                                                          "name": "logger"}))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"))
    handler.addFilter(_RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    for name in ("uvicorn", "uvicorn.error"):  # uvicorn's own handlers would print a second, plain copy
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("cim").setLevel(logging.INFO)
    ACCESS.disabled = not access_log


def _route_template(scope: Scope) -> str:
    """The matched route's path template (bounded label values: never the raw path)."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path is None:
        return "<unmatched>"
    if type(route).__name__ == "Mount":
        return (path or "") + "/{path}"
    return path or "/"


class RequestLog:
    """Request id in and out, one access log line and the request metrics per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope.get("headers", [])).get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.match(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - start
            route = _route_template(scope)
            metrics.observe_request(route, scope["method"], status, seconds)
            if not ACCESS.disabled:
                ACCESS.info("%s %s %d", scope["method"], scope["path"], status,
                            extra={"method": scope["method"], "path": scope["path"], "route": route,
                                   "status": status, "duration_ms": round(seconds * 1000, 2),
                                   "client": (scope.get("client") or ("", 0))[0]})
            request_id.reset(token)
