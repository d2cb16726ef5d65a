"""The dashboard's indicators over HTTP: ``/indicators`` (the list), ``/indicators/{id}`` (JSON or CSV, per
city, district or grid cell) and the dashboard page ``/dashboard``.

Indicator ids are the ids of the layers they summarise (``pipelines``, ``pipe-nodes``...), so the access rules
of those collections (cim.api.auth) apply to their indicators without a rule of their own, and the list
leaves out what a client may not read.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route

from cim.db.models import CIMTables
from cim.db.schema import read_meta
from cim.ops.indicators import AREAS, DEFAULT_CELL, INDICATORS, IndicatorCache, IndicatorError, to_csv
from cim.web import STATIC_DIR

PARAMS = {"f", "by", "cell"}


def _error(status: int, code: str, message: str) -> Response:
    return Response(json.dumps({"code": code, "type": code, "description": message}, ensure_ascii=False),
                    status_code=status, media_type="application/json")


class IndicatorEndpoints:
    """Routes of the indicators and the dashboard; one cache per worker."""

    def __init__(self, database: Callable[[], tuple[Engine, CIMTables]], base_url: str) -> None:
        self.database, self.base_url = database, base_url.rstrip("/")
        self.cache = IndicatorCache()
        self._database_id: str | None = None

    def routes(self) -> list[Route]:
        return [Route("/indicators", self.list), Route("/indicators/{name}", self.indicator),
                Route("/dashboard", self.dashboard)]

    async def list(self, request: Request) -> Response:
        base = self.base_url
        doc = {"title": "城市体征指标 (city-sign indicators)", "areas": list(AREAS), "indicators": [
            {"id": i.id, "title": i.title, "layers": list(i.layers), "measures": i.measures,
             "links": [{"rel": "self", "type": "application/json", "href": f"{base}/indicators/{i.id}?f=json"},
                       {"rel": "alternate", "type": "text/csv", "href": f"{base}/indicators/{i.id}?f=csv"}]}
            for i in INDICATORS.values()],
            "links": [{"rel": "self", "type": "application/json", "href": f"{base}/indicators"},
                      {"rel": "alternate", "type": "text/html", "title": "Dashboard", "href": f"{base}/dashboard"}]}
        return Response(json.dumps(doc, ensure_ascii=False), media_type="application/json")

    async def indicator(self, request: Request) -> Response:
        q = request.query_params
        if unknown := set(q) - PARAMS:
            return _error(HTTPStatus.BAD_REQUEST, "InvalidParameterValue",
                          f"unknown parameters: {', '.join(sorted(unknown))} (allowed: {', '.join(sorted(PARAMS))})")
        f = q.get("f", "json")
        if f not in ("json", "csv"):
            return _error(HTTPStatus.BAD_REQUEST, "InvalidParameterValue", "f: json or csv")
        name = request.path_params["name"]
        if name not in INDICATORS:
            return _error(HTTPStatus.NOT_FOUND, "NotFound", f"no indicator {name!r}: {', '.join(INDICATORS)}")
        try:
            cell = float(q.get("cell", DEFAULT_CELL))
        except ValueError:
            return _error(HTTPStatus.BAD_REQUEST, "InvalidParameterValue", "cell: a number of metres")
        by = q.get("by", "district")
        try:
            result = await run_in_threadpool(self._compute, name, by, cell)
        except IndicatorError as exc:
            return _error(HTTPStatus.BAD_REQUEST, "InvalidParameterValue", str(exc))
        tag = hashlib.sha256(json.dumps([self._database_id, name, by, cell, result.versions,
                                         result.computed_at.isoformat(), f]).encode()).hexdigest()[:32]
        etag = f'"{tag}"'
        headers = {"ETag": etag, "Cache-Control": "no-cache",
                   "Last-Modified": result.computed_at.strftime("%a, %d %b %Y %H:%M:%S GMT")}
        if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
            return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
        if f == "csv":
            headers["Content-Disposition"] = f'attachment; filename="{name}-{by}.csv"'
            return Response(to_csv(result), media_type="text/csv; charset=utf-8", headers=headers)
        return Response(json.dumps(result.document(), ensure_ascii=False), media_type="application/json",
                        headers=headers)

    def _compute(self, name: str, by: str, cell: float) -> Any:
        engine, t = self.database()
        with engine.connect() as conn:
            if self._database_id is None:
                self._database_id = str(read_meta(conn).get("database_id", ""))
            return self.cache.get(conn, t, self._database_id, name, by, cell)

    async def dashboard(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "dashboard.html", media_type="text/html; charset=utf-8")
