"""OGC API – Features Part 4 on the ``cases`` collection: create, replace, update (merge patch), delete.

Reads (items, bbox, datetime, filter, single items) are the ordinary feature routes; a single case's ETag is
``"r<revision>-<variant>"`` (:func:`item_etag`), and writes need it back in ``If-Match`` (428 without, 412
when stale). ``Content-Crs`` (or a ``crs`` member) names the CRS of a location, GCJ-02 included. Every
version is kept: ``/collections/cases/items/{id}/history``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from http import HTTPStatus
from typing import Any

from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cim.db.models import CIMTables
from cim.ops import cases
from cim.ops.cases import CaseError
from cim.settings import OpsSettings

ITEMS = "/collections/cases/items"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update",
    "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/features",
]
MAX_BODY = 64 * 1024  # a case is a point and a few properties


# examples in the OpenAPI document (Swagger UI offers them as request bodies)
CASE_EXAMPLE = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.7702, 41.3003]},
                "properties": {"case_type": "BJ0101", "case_status": "reported",
                               "reported_at": "2026-12-05T08:30:00+08:00", "description": "井盖缺失"}}
FIXES_EXAMPLE = ("vehicle_id,time,lon,lat,speed\n辽E12345,2026-12-05T08:00:00+08:00,123.7702,41.3003,20\n"
                 "辽E12345,2026-12-05T08:00:30+08:00,123.7712,41.3005,25\n")


def openapi_paths() -> dict[str, Any]:
    """OpenAPI for what pygeoapi does not document (or documents wrongly): the case writes with If-Match and
    every status they answer, a case's history and related objects, and the GPS fixes route (cim.api.tracks)."""
    fid = {"name": "featureId", "in": "path", "required": True, "schema": {"type": "string"}}
    if_match = {"name": "If-Match", "in": "header", "required": True, "schema": {"type": "string"},
                "description": "The case's ETag from a GET (428 without it, 412 when stale)"}
    error = {"description": "OGC exception JSON with the reasons",
             "content": {"application/json": {"schema": {"type": "object"}}}}
    geojson = {"application/geo+json": {"schema": {"type": "object"}}}
    content_crs = {"name": "Content-Crs", "in": "header", "required": False, "schema": {"type": "string"},
                   "description": "CRS of the body's coordinates, <URI> (default CRS84)",
                   "example": "<http://www.opengis.net/def/crs/OGC/1.3/CRS84>"}
    # a write refused: a body that is not a valid case, no credentials or role, too large, not JSON
    refused = {"400": error, "401": error, "403": error, "413": error, "415": error}
    stale = {"404": error, "412": error, "428": error}  # no such case; If-Match stale; If-Match missing
    return {
        ITEMS + "/{featureId}/history": {"get": {
            "tags": ["cases"], "summary": "Every version of a case (the first and a deletion included)",
            "operationId": "getCaseHistory", "parameters": [fid],
            "responses": {"200": {"description": "A FeatureCollection of the versions, oldest first", "content": geojson},
                          "404": error}}},
        ITEMS + "/{featureId}/related": {"get": {
            "tags": ["cases"], "summary": "The CIM objects related to a case and a 3D viewpoint (case-overlay)",
            "operationId": "getCaseRelated", "parameters": [fid, {"name": "radius_m", "in": "query", "required": False,
                                                                  "schema": {"type": "number"}}],
            "responses": {"200": {"description": "Related objects with distances (m) and a viewpoint",
                                  "content": {"application/json": {"schema": {"type": "object"}}}},
                          "400": error, "404": error}}},
        ITEMS: {"post": {
            "tags": ["cases"], "summary": "Add a case (a GeoJSON Point Feature; Content-Crs names its CRS)",
            "operationId": "createCase", "parameters": [content_crs],
            "requestBody": {"required": True, "content": {
                "application/geo+json": {"schema": {"type": "object"}, "example": CASE_EXAMPLE},
                "application/json": {"schema": {"type": "object"}}}},
            "responses": {"201": {"description": "Added; its URL in Location, its ETag in the header"},
                          **refused, "409": error}}},
        ITEMS + "/{featureId}": {
            "patch": {
                "tags": ["cases"], "summary": "Update a case with a JSON merge patch (RFC 7396)",
                "operationId": "patchCase", "parameters": [fid, if_match, content_crs],
                "requestBody": {"required": True,
                                "content": {"application/merge-patch+json": {"schema": {"type": "object"}}}},
                "responses": {"204": {"description": "Updated; the new ETag in the header"}, **refused, **stale}},
            "put": {
                "tags": ["cases"], "summary": "Replace a case", "operationId": "replaceCase",
                "parameters": [fid, if_match, content_crs],
                "requestBody": {"required": True, "content": {**geojson, "application/json": {"schema": {"type": "object"}}}},
                "responses": {"204": {"description": "Replaced; the new ETag in the header"}, **refused, **stale,
                              "409": error}},
            "delete": {
                "tags": ["cases"], "summary": "Delete a case (its history stays)", "operationId": "deleteCase",
                "parameters": [fid, if_match],
                "responses": {"204": {"description": "Deleted"}, "400": error, "401": error, "403": error,
                              **stale}}},
        "/vehicle-tracks/fixes": {"post": {
            "tags": ["vehicle-tracks"], "summary": "Load vehicle GPS fixes (CSV or JSON), all or nothing",
            "operationId": "postVehicleFixes",
            "parameters": [{"name": "crs", "in": "query", "required": False, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"text/csv": {"schema": {"type": "string"},
                                                                       "example": FIXES_EXAMPLE},
                                                          "application/json": {"schema": {"type": "array"}}}},
            "responses": {"201": {"description": "Fixes, vehicles and tracks written",
                                  "content": {"application/json": {"schema": {"type": "object"}}}}, **refused}}},
    }


def item_etag(conn: Connection, t: CIMTables, uid: str, variant: str) -> str | None:
    """The strong ETag of one case's representation (None for no such case): its revision, which If-Match
    compares, and a digest of the representation (CRS, format) so that variants differ."""
    revision = cases.revision_of(conn, t, uid)
    if revision is None:
        return None
    return f'"r{revision}-{hashlib.blake2b(variant.encode(), digest_size=4).hexdigest()}"'


def _error(exc: CaseError) -> Response:
    body = {"code": exc.code, "description": str(exc), "reasons": exc.reasons}
    return Response(json.dumps(body, ensure_ascii=False), status_code=exc.status, media_type="application/json")


class CaseEndpoints:
    """The write routes and the history route of the ``cases`` collection."""

    def __init__(self, database: Callable[[], tuple[Engine, CIMTables]], base_url: str, settings: OpsSettings) -> None:
        self.database, self.base_url, self.settings = database, base_url.rstrip("/"), settings

    def routes(self) -> list[Route]:
        return [Route(ITEMS, self.create, methods=["POST"]),
                Route(ITEMS + "/{feature}", self.modify, methods=["PUT", "PATCH", "DELETE"]),
                Route(ITEMS + "/{feature}/history", self.history, methods=["GET"]),
                Route(ITEMS + "/{feature}/related", self.related, methods=["GET"])]

    async def _body(self, request: Request) -> Any:
        raw = await request.body()
        if len(raw) > MAX_BODY:
            raise CaseError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "PayloadTooLarge",
                            [f"body: {len(raw):,} bytes, at most {MAX_BODY:,}"])
        kind = request.headers.get("content-type", "application/json").split(";")[0].strip()
        if kind not in ("application/json", "application/geo+json", "application/merge-patch+json"):
            raise CaseError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "UnsupportedMediaType",
                            [f"Content-Type: {kind}; send application/geo+json"])
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise cases.invalid(f"body: not JSON ({exc})") from None

    @staticmethod
    def _content_crs(request: Request) -> str | None:
        value = request.headers.get("content-crs")
        return value.strip().strip("<>").strip() if value else None

    def _write(self, fn: Callable[[Connection, CIMTables], Any]) -> Any:
        engine, t = self.database()
        with engine.connect() as conn:
            conn.execution_options(write_lock=True)  # SpatiaLite: BEGIN IMMEDIATE (cim.db.engine)
            with conn.begin():
                return fn(conn, t)

    async def create(self, request: Request) -> Response:
        try:
            doc, crs = await self._body(request), self._content_crs(request)
            uid, revision = await run_in_threadpool(self._create, doc, crs)
        except CaseError as exc:
            return _error(exc)
        return Response(status_code=HTTPStatus.CREATED,
                        headers={"Location": f"{self.base_url}{ITEMS}/{uid}", "ETag": f'"r{revision}"'})

    def _create(self, doc: Any, crs: str | None) -> tuple[str, int]:
        _, t = self.database()
        case = cases.parse_case(doc, crs, t.city_object.c.geom.type.srid, self.settings.city_bbox)
        return self._write(lambda conn, t: cases.create(conn, t, case))

    async def modify(self, request: Request) -> Response:
        uid = request.path_params["feature"]
        try:
            if_match = cases.etag_revision(request.headers.get("if-match"))
            if request.method == "DELETE":
                await run_in_threadpool(self._write, lambda conn, t: cases.delete(conn, t, uid, if_match))
                return Response(status_code=HTTPStatus.NO_CONTENT)
            doc, crs = await self._body(request), self._content_crs(request)
            revision = await run_in_threadpool(self._modify, request.method, uid, doc, crs, if_match)
        except CaseError as exc:
            return _error(exc)
        return Response(status_code=HTTPStatus.NO_CONTENT, headers={"ETag": f'"r{revision}"'})

    def _modify(self, method: str, uid: str, doc: Any, crs: str | None, if_match: int | None) -> int:
        _, t = self.database()
        srid = t.city_object.c.geom.type.srid
        if method == "PUT":
            case = cases.parse_case(doc, crs, srid, self.settings.city_bbox, uid)
            return self._write(lambda conn, t: cases.replace(conn, t, uid, case, if_match))
        return self._write(lambda conn, t: cases.update(conn, t, uid, doc, crs, if_match, srid, self.settings.city_bbox))

    async def history(self, request: Request) -> Response:
        uid = request.path_params["feature"]
        engine, t = self.database()

        def read() -> list[dict[str, Any]]:
            with engine.connect() as conn:
                return cases.history(conn, t, uid)

        versions = await run_in_threadpool(read)
        if not versions:
            return _error(CaseError(HTTPStatus.NOT_FOUND, "NotFound", [f"no case {uid!r} (ever)"]))
        body = {"type": "FeatureCollection", "features": versions, "numberReturned": len(versions),
                "links": [{"rel": "self", "type": "application/geo+json", "href": f"{self.base_url}{ITEMS}/{uid}/history"},
                          {"rel": "about", "type": "application/geo+json", "href": f"{self.base_url}{ITEMS}/{uid}"}]}
        return Response(json.dumps(body, ensure_ascii=False), media_type="application/geo+json")

    async def related(self, request: Request) -> Response:
        """The case-overlay result of one case: its related CIM objects and viewpoint."""
        from cim.api.overlay import run_overlay
        from cim.api.processes import InvalidProcessInput

        uid = request.path_params["feature"]
        params = dict(request.query_params)
        data: dict[str, Any] = {"ids": [uid]}
        try:
            if "radius_m" in params:
                data["radius_m"] = float(params.pop("radius_m"))
            params.pop("f", None)
            if params:
                raise cases.invalid(f"unknown query parameters: {', '.join(sorted(params))}")
            result = await run_in_threadpool(run_overlay, data, self.base_url)
        except ValueError:
            return _error(cases.invalid("radius_m: a number of metres"))
        except CaseError as exc:
            return _error(exc)
        except InvalidProcessInput as exc:
            status = HTTPStatus.NOT_FOUND if "no such cases" in str(exc.user_msg) else HTTPStatus.BAD_REQUEST
            return _error(CaseError(status, "NotFound" if status == 404 else "InvalidParameterValue", [str(exc.user_msg)]))
        return Response(json.dumps(result["cases"][0], ensure_ascii=False), media_type="application/json")
