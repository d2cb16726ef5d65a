"""``POST /vehicle-tracks/fixes``: GPS fixes over HTTP (CSV or JSON body), the same load as ``cim tracks load``.

For terminals' gateways that push batches: all or nothing, a 400 naming every bad row, 201 with counts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from http import HTTPStatus

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cim.db.models import CIMTables
from cim.ops.tracks import LoadResult, TrackError, load, parse
from cim.settings import OpsSettings

MAX_BODY = 64 * 1024 * 1024


def _json(status: int, body: dict) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type="application/json")


class TrackEndpoints:
    def __init__(self, database: Callable[[], tuple[Engine, CIMTables]], settings: OpsSettings) -> None:
        self.database, self.settings = database, settings

    def routes(self) -> list[Route]:
        return [Route("/vehicle-tracks/fixes", self.post, methods=["POST"])]

    async def post(self, request: Request) -> Response:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            return _json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                         {"code": "PayloadTooLarge", "description": f"body: at most {MAX_BODY:,} bytes"})
        kind = request.headers.get("content-type", "").split(";")[0].strip()
        fmt = "csv" if kind == "text/csv" else "json" if kind in ("application/json", "application/geo+json") else None
        if fmt is None:
            return _json(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"code": "UnsupportedMediaType",
                                                             "description": "Content-Type: text/csv or application/json"})
        unknown = set(request.query_params) - {"crs"}
        if unknown:
            return _json(HTTPStatus.BAD_REQUEST, {"code": "InvalidParameterValue",
                                                  "description": f"unknown query parameters: {', '.join(sorted(unknown))}"})
        crs = request.query_params.get("crs")
        try:
            result = await run_in_threadpool(self._load, raw, fmt, crs)
        except TrackError as exc:
            return _json(HTTPStatus.BAD_REQUEST, {"code": "InvalidParameterValue", "description": str(exc),
                                                  "problems": exc.problems[:1000]})
        return _json(HTTPStatus.CREATED, {"fixes": result.fixes, "vehicles": result.vehicles, "tracks": result.tracks})

    def _load(self, raw: bytes, fmt: str, crs: str | None) -> LoadResult:
        fixes = parse(raw, "body", fmt, self.settings.tracks_max_rows)
        engine, t = self.database()
        with engine.connect() as conn:
            conn.execution_options(write_lock=True)
            with conn.begin():
                return load(conn, t, fixes, crs, self.settings.city_bbox, "body")
