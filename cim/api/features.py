"""Our own OGC API – Features routes for the CIM layers' GeoJSON: items and single items, with Part 2.

pygeoapi 0.24 cannot serve Part 2 right for data stored in EPSG:4550 (it transforms ``bbox-crs`` from two
corners, cannot parse our GCJ-02/BD-09 URNs and mishandles axis order, ../shared/CRS-NOTES.md), so these
routes answer GeoJSON requests themselves with :mod:`cim.crs`, and hand everything else (HTML, JSON-LD)
to pygeoapi. Parameters:

- ``crs``: output CRS, any 2D CRS of the registry (default CRS84) in its own axis order (EPSG:4490 lat/lon,
  EPSG:4550 north/east); EPSG targets are transformed and axis-swapped in the database, GCJ-02/BD-09 and
  local systems in numpy. The response says which in ``Content-Crs``.
- ``bbox`` with ``bbox-crs`` (default CRS84): densified, transformed to the storage CRS; a CRS84 bbox is
  clipped to the data's area and may cross the antimeridian.
- ``filter`` (CQL2 text or JSON, ``filter-lang``) with ``filter-crs``: compiled to SQL by :mod:`cim.db.cql`.
- ``f=jsonfg`` (or Accept ``application/vnd.ogc.fg+json``): JSON-FG 0.2, ``geometry`` in WGS 84 and ``place``
  in the requested CRS, closed CIM solids as ``Polyhedron``, ``time`` from the validity interval.
- ``cim_level`` (1–7): the geometry is the object's 3D geometry at the highest CIM level stored up to
  that level (MultiPolygon Z, LineString Z, Point Z; heights in the 1985 datum); the default, without it,
  is the 2D footprint, and so is the fallback for an object with nothing at or below the level.
- Paging: ``next``/``prev`` links carry ``after``/``before`` tokens (keyset on the primary key: a deep page
  is as fast as the first); ``offset`` still works, and is what links use when the client sorts.
- ``datetime`` on validity time, ``limit`` (clamped to the configured maximum), ``offset``, ``properties``,
  ``skipGeometry``, ``sortby``, and property = value filters on the layer's queryable properties.
- Anything else is a 400 (OGC's test 21), as is every malformed value.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import urlencode

import numpy as np
import shapely
from pygeoapi.provider.base import ProviderGenericError
from shapely.geometry import mapping, shape
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from cim.api.cases import item_etag
from cim.api.middleware import BodyRewriter
from cim import __version__
from cim.api.provider import CIMProvider, database_id, parse_interval, typed_equals
from cim.crs import crs84_srid
from cim.crs.registry import CRS84_URI, CRSInfo, UnknownCRS, default_registry
from cim.crs.transform import OutsideArea, clip_lonlat_bbox, query_area, swap_axes, transform
from cim.db import cql
from cim.db.engine import autocommit
from cim.db.queries import SAME_LONLAT, FeatureQuery, count_features, feature_statement, page_statement
from cim.db.versions import layer_version
from cim.geometry import is_closed_shell
from cim.settings import get_settings

GEOJSON = "application/geo+json"
RESERVED = {"f", "lang", "bbox", "bbox-crs", "crs", "datetime", "limit", "offset", "properties", "skipGeometry",
            "sortby", "resulttype", "filter", "filter-lang", "filter-crs", "after", "before", "cim_level", "ids"}
NOT_YET = {"q"}  # free-text search
# parameters that change how a page looks or which page it is, not which features match (the count's key)
NOT_FILTERING = {"f", "lang", "crs", "limit", "offset", "after", "before", "properties", "skipGeometry", "sortby",
                 "resulttype", "cim_level"}


class BadRequest(Exception):
    def __init__(self, message: str, code: str = "InvalidParameterValue", status: int = HTTPStatus.BAD_REQUEST):
        super().__init__(message)
        self.code, self.status = code, status


def output_crs_uris() -> list[str]:
    """The CRSs features can be written in: every 2D CRS of the registry (footprints are 2D)."""
    reg = default_registry()
    return [u for u in reg.uris if (i := reg.resolve(u)).dimension == 2 and not i.pyproj_crs.is_geocentric]


def _exception(exc: BadRequest) -> Response:
    body = {"code": exc.code, "type": exc.code, "description": str(exc)}
    return Response(json.dumps(body, ensure_ascii=False), status_code=exc.status, media_type="application/json")


JSONFG = "application/vnd.ogc.fg+json"
JSONFG_CONFORMS = ["http://www.opengis.net/spec/json-fg-1/0.2/conf/core",
                   "http://www.opengis.net/spec/json-fg-1/0.2/conf/3d"]


def wants_geojson(request: Request) -> bool:
    """True for f=json/geojson/jsonfg, or no f and an Accept header that does not prefer HTML."""
    f = request.query_params.get("f")
    if f is not None:
        return f.lower() in ("json", "geojson", "jsonfg")
    return "text/html" not in request.headers.get("accept", "")


def wants_jsonfg(request: Request) -> bool:
    f = request.query_params.get("f")
    return (f or "").lower() == "jsonfg" or (f is None and JSONFG in request.headers.get("accept", ""))


class FeaturesEndpoint:
    """ASGI endpoint for ``/collections/{collection}/items[/{feature}]``; delegates non-GeoJSON to pygeoapi."""

    def __init__(self, fallback: ASGIApp, layers: dict[str, dict[str, Any]], base_url: str,
                 limits: dict[str, int], single: bool) -> None:
        self.fallback, self.layers, self.base_url, self.single = fallback, layers, base_url.rstrip("/"), single
        self.default_limit = int(limits.get("default_items", 10))
        self.max_limit = int(limits.get("max_items", 10000))
        self.output_crs = output_crs_uris()
        self.count_matched = get_settings().count_matched
        self.count_limit = get_settings().count_limit
        self._counts = CountCache(get_settings().count_cache_size)
        self.max_ids = get_settings().limits.max_ids
        self._providers: dict[str, CIMProvider] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        collection = scope["path_params"]["collection"]
        if collection not in self.layers or not wants_geojson(request) or request.method != "GET":
            await self.fallback(scope, receive, send)
            return
        handler: Callable = self._item if self.single else self._items
        try:
            try:
                response = await run_in_threadpool(handler, request, collection)
            except DBAPIError as exc:
                # a pooled connection the server dropped while it was busy (engine.IDLE_PING_SECONDS): the
                # pool has discarded it and every older one; a read can simply be asked again, once
                if not exc.connection_invalidated:
                    raise
                response = await run_in_threadpool(handler, request, collection)
        except BadRequest as exc:
            response = _exception(exc)
        except ProviderGenericError as exc:
            response = _exception(BadRequest(exc.message, exc.ogc_exception_code, exc.http_status_code))
        await response(scope, receive, send)

    # ------------------------------------------------------------------ parameters
    def _provider(self, collection: str) -> CIMProvider:
        """The collection's provider, made once (it holds only references to the shared engine and tables)."""
        provider = self._providers.get(collection)
        if provider is None:
            provider = self._providers[collection] = CIMProvider(self.layers[collection])
        return provider

    def _output_crs(self, request: Request) -> CRSInfo:
        value = request.query_params.get("crs", CRS84_URI)
        try:
            info = default_registry().resolve(value)
        except UnknownCRS:
            info = None
        if info is None or info.uri not in self.output_crs:
            raise BadRequest(f"crs: unsupported CRS {value!r}; supported: {', '.join(self.output_crs)}")
        return info

    def _check_params(self, request: Request, provider: CIMProvider, allowed: set[str]) -> None:
        for name in request.query_params:
            if name in NOT_YET:
                raise BadRequest(f"{name}: not supported on this collection yet")
            if name not in allowed and name not in provider.get_fields():  # property = value filters
                raise BadRequest(f"unknown query parameter {name!r}")

    def _area(self, request: Request, provider: CIMProvider,
              ) -> tuple[shapely.Geometry | None, tuple[float, float, float, float] | None]:
        """The ``bbox`` as an area in the storage CRS, and as a longitude/latitude box when it is one (given
        in CRS84, EPSG:4326 or EPSG:4490, not crossing the antimeridian): (None, None) without a bbox."""
        raw = request.query_params.get("bbox")
        bbox_crs_text = request.query_params.get("bbox-crs")
        if raw is None:
            if bbox_crs_text is not None:
                raise BadRequest("bbox-crs: given without bbox")
            return None, None
        reg = default_registry()
        bbox_crs = _param_crs("bbox-crs", bbox_crs_text)
        try:
            values = [float(v) for v in raw.split(",")]
        except ValueError:
            raise BadRequest("bbox: numbers separated by commas") from None
        if len(values) not in (4, 6) or not all(v == v and abs(v) != float("inf") for v in values):
            raise BadRequest("bbox: 4 or 6 finite numbers")
        half = len(values) // 2
        a0, b0, a1, b1 = values[0], values[1], values[half], values[half + 1]
        (x0, x1), (y0, y1) = swap_axes(bbox_crs, (a0, a1), (b0, b1))  # the CRS's axis order → x/y
        if y0 > y1 or (x0 > x1 and not bbox_crs.geographic):
            raise BadRequest("bbox: the lower corner must come first (min <= max)")
        if bbox_crs.uri == CRS84_URI and provider.dialect == "postgresql":
            # the box itself, clipped to where stored data can be, is the filter (lonlat_box_filter): no
            # densified polygon in the storage CRS to build (~0.4 ms of a 100-feature page's ~2 ms of Python)
            boxes = clip_lonlat_bbox((x0, y0, x1, y1), reg.epsg(provider.storage_srid).area)
            if not boxes:
                return shapely.Polygon(), None
            if len(boxes) == 1:
                return None, boxes[0]
        try:
            area = query_area((x0, y0, x1, y1), bbox_crs, reg.epsg(provider.storage_srid))
        except OutsideArea as exc:
            raise BadRequest(f"bbox: {exc}") from None
        lonlat = bbox_crs.offset is None and (bbox_crs.uri == CRS84_URI or bbox_crs.epsg in SAME_LONLAT)
        box = (max(x0, -180.0), max(y0, -90.0), min(x1, 180.0), min(y1, 90.0)) if lonlat and x0 <= x1 else None
        return area, box

    def _filter(self, request: Request, provider: CIMProvider) -> list:
        """The CQL2 ``filter`` (text or JSON) in ``filter-crs``, compiled to a WHERE clause."""
        text_ = request.query_params.get("filter")
        lang = request.query_params.get("filter-lang", "cql2-text")
        crs_text = request.query_params.get("filter-crs")
        if lang not in ("cql2-text", "cql2-json"):
            raise BadRequest(f"filter-lang: cql2-text or cql2-json, got {lang!r}")
        if text_ is None:
            if crs_text is not None or "filter-lang" in request.query_params:
                raise BadRequest("filter-lang/filter-crs: given without filter")
            return []
        reg = default_registry()
        filter_crs = _param_crs("filter-crs", crs_text)
        try:
            node = cql.parse(text_, lang)
            return [cql.to_sql(node, provider.tables, provider.dialect, list(provider.get_fields()), filter_crs,
                               reg.epsg(provider.storage_srid))]
        except cql.FilterError as exc:
            raise BadRequest(str(exc)) from None

    def _ids(self, request: Request, provider: CIMProvider) -> list:
        """``ids=a,b,c``: only these features (at most ``cim.limits.max_ids``)."""
        if "ids" not in request.query_params:
            return []
        wanted = _csv(request.query_params["ids"])
        if not wanted:
            raise BadRequest("ids: one or more feature ids separated by commas")
        if len(wanted) > self.max_ids:
            raise BadRequest(f"ids: {len(wanted)} ids, at most {self.max_ids} in one request")
        return [provider.tables.city_object.c.uid.in_(wanted)]

    def _cim_level(self, request: Request) -> int | None:
        if "cim_level" not in request.query_params:
            return None
        level = self._int(request, "cim_level", 0, 1)
        if level > 7:
            raise BadRequest("cim_level: 1 to 7")
        return level

    def _int(self, request: Request, name: str, default: int, minimum: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise BadRequest(f"{name}: an integer, got {raw!r}") from None
        if value < minimum:
            raise BadRequest(f"{name}: at least {minimum}")
        return value

    # ------------------------------------------------------------------ handlers
    def _layers(self, provider: CIMProvider) -> tuple[str, ...]:
        """The layers whose data an answer shows (a component's root building uid: the buildings too)."""
        return (provider.layer, *DEPENDS.get(provider.layer, ()))

    def _versions(self, conn: Connection, provider: CIMProvider, rows: list[Any] | None = None) -> tuple[int, ...]:
        """The answer's layer versions: from the page's own rows (``version_columns``, same snapshot), else
        one key read each (for a conditional request before any data is read, or an empty page)."""
        layers = self._layers(provider)
        if rows:
            return tuple(int(rows[0][f"_version_{i}"]) for i in range(len(layers)))
        return tuple(layer_version(conn, provider.tables, layer) for layer in layers)

    def _validator(self, provider: CIMProvider, request: Request, media_type: str, versions: tuple[int, ...]) -> str:
        """A weak ETag from what the answer depends on: the layer's data version (read with or before the
        data), the database, this software, the base URL and the request. Checking it costs one key read,
        not the query."""
        key = json.dumps([database_id(provider), versions, __version__, RESPONSE_FORMAT, self.base_url, media_type,
                          request.url.path, sorted(request.query_params.multi_items())])
        return 'W/"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'

    def _conditional(self, conn: Connection, provider: CIMProvider, request: Request, media_type: str,
                     headers: dict[str, str]) -> Response | None:
        """304 when the client's If-None-Match still holds (checked before the query is run)."""
        if "if-none-match" not in request.headers:
            return None
        etag = self._validator(provider, request, media_type, self._versions(conn, provider))
        if not not_modified(request, etag):
            return None
        return Response(status_code=HTTPStatus.NOT_MODIFIED, headers={**headers, "ETag": etag})

    def _items(self, request: Request, collection: str) -> Response:
        provider = self._provider(collection)
        fields = provider.get_fields()
        self._check_params(request, provider, RESERVED)
        out_crs = self._output_crs(request)
        limit = min(self._int(request, "limit", self.default_limit, 1), self.max_limit)
        offset = self._int(request, "offset", 0, 0)
        after = self._int(request, "after", -1, 0) if "after" in request.query_params else None
        before = self._int(request, "before", -1, 1) if "before" in request.query_params else None
        select = _csv(request.query_params.get("properties"))
        for p in select:
            if p not in fields:
                raise BadRequest(f"properties: unknown property {p!r}")
        sortby = []
        for key in _csv(request.query_params.get("sortby")):
            name, asc = (key[1:], key[0] != "-") if key[0] in "+-" else (key, True)
            if name not in fields or name in ("parent", "root"):
                raise BadRequest(f"sortby: unknown property {name!r}")
            sortby.append((name, asc))
        if (after is not None or before is not None) and (sortby or offset or (after is not None and before is not None)):
            raise BadRequest("after/before: page tokens from next/prev links; not with sortby, offset or each other")
        skip_geometry = _bool(request.query_params.get("skipGeometry"), "skipGeometry")
        when = request.query_params.get("datetime")
        equals = typed_equals(fields, [(k, v) for k, v in request.query_params.items() if k not in RESERVED])
        srid, swap, post = sql_output(out_crs, provider.storage_srid)
        fg = wants_jsonfg(request)
        area, lonlat_box = self._area(request, provider)
        q = FeatureQuery(collection_layer(self.layers[collection]), area=area, lonlat_box=lonlat_box,
                         time=parse_interval(when) if when else None, equals=equals, sortby=sortby,
                         limit=limit + 1, offset=offset, after_id=after, before_id=before,
                         with_geometry=not skip_geometry, output_srid=srid, swap_xy=swap,
                         cim_level=self._cim_level(request),
                         crs84_also_srid=crs84_srid(provider.storage_srid) if fg else None,
                         select=select or None,
                         conditions=self._filter(request, provider) + self._ids(request, provider))
        media_type = JSONFG if fg else GEOJSON
        page = Page(self, request, collection, limit, offset, after, before, out_crs, fg)
        headers = {"Content-Crs": f"<{out_crs.uri}>", "Cache-Control": CACHE_CONTROL}
        whole = limit <= STREAM_ABOVE or before is not None  # else streamed from a server-side cursor
        # a page read whole is a few reads of one statement each: no transaction (one round trip apiece); a
        # streamed page needs one (PostgreSQL's cursors live in transactions)
        conn = (autocommit(provider.engine) if whole else provider.engine).connect()
        try:
            if (unchanged := self._conditional(conn, provider, request, media_type, headers)) is not None:
                conn.close()
                return unchanged
            first_page = not offset and after is None and before is None
            if whole:
                q.versions_of = self._layers(provider)
                stmt, params = page_statement(provider.tables, provider.dialect, q)
                rows = conn.execute(stmt, params).mappings().all()
                versions = self._versions(conn, provider, rows)
                # counting costs as much as the page again on a large layer: not when the first page holds
                # them all, and only up to count_limit (beyond it numberMatched is omitted, as the spec
                # allows); a count is kept per filter until the layer's data changes
                if self.count_matched:
                    page.matched = len(rows) if first_page and len(rows) <= limit else \
                        self._count(conn, provider, q, request, versions)
                conn.close()
                headers["ETag"] = self._validator(provider, request, media_type, versions)
                body = "".join(page.render(rows, post))
                return Response(body, media_type=media_type, headers=headers)
            versions = self._versions(conn, provider)
            headers["ETag"] = self._validator(provider, request, media_type, versions)
            if self.count_matched:
                page.matched = self._count(conn, provider, q, request, versions)
            # a large page: rows stream from a server-side cursor straight into the response
            stmt, params = page_statement(provider.tables, provider.dialect, q)
            result = conn.execution_options(yield_per=STREAM_CHUNK).execute(stmt, params).mappings()
        except BaseException:
            conn.close()
            raise

        def chunks() -> Iterator[str]:
            try:
                buffer: list[str] = []
                for text_ in page.render(result, post):
                    buffer.append(text_)
                    if len(buffer) >= STREAM_CHUNK:
                        yield "".join(buffer)
                        buffer = []
                yield "".join(buffer)
            finally:
                conn.close()

        return StreamingResponse(chunks(), media_type=media_type, headers=headers)

    def _count(self, conn: Connection, provider: CIMProvider, q: FeatureQuery, request: Request,
               versions: tuple[int, ...]) -> int | None:
        """numberMatched, counted once per (layer, filtering parameters, layer versions)."""
        key = (provider.layer, versions, tuple(sorted((k, v) for k, v in request.query_params.multi_items()
                                                      if k not in NOT_FILTERING)))
        found, n = self._counts.get(key)
        if not found:
            n = conn.execute(count_features(provider.tables, provider.dialect, q, self.count_limit + 1)).scalar_one()
            n = n if n <= self.count_limit else None
            self._counts.put(key, n)
        return n

    def _item(self, request: Request, collection: str) -> Response:
        provider = self._provider(collection)
        self._check_params(request, provider, {"f", "lang", "crs", "cim_level"})
        out_crs = self._output_crs(request)
        srid, swap, post = sql_output(out_crs, provider.storage_srid)
        fid = request.path_params["feature"]
        fg = wants_jsonfg(request)
        media_type = JSONFG if fg else GEOJSON
        headers = {"Content-Crs": f"<{out_crs.uri}>", "Cache-Control": CACHE_CONTROL}
        with autocommit(provider.engine).connect() as conn:  # reads of one statement each
            if provider.layer == "cases":
                # edited in place: a strong per-case ETag for If-Match (cim.api.cases), known before the query
                weak = self._validator(provider, request, media_type, self._versions(conn, provider))
                etag = item_etag(conn, provider.tables, fid, weak) or weak
                if not_modified(request, etag):
                    return Response(status_code=HTTPStatus.NOT_MODIFIED, headers={**headers, "ETag": etag})
                headers["ETag"] = etag
            elif (unchanged := self._conditional(conn, provider, request, media_type, headers)) is not None:
                return unchanged
            stmt, params = feature_statement(provider.tables, provider.dialect, provider.layer, fid, srid,
                                             swap_xy=swap, cim_level=self._cim_level(request),
                                             crs84_also_srid=crs84_srid(provider.storage_srid) if fg else None,
                                             versions_of=self._layers(provider))
            row = conn.execute(stmt, params).mappings().first()
        if row is None:
            raise BadRequest(f"no feature {fid!r} in {collection}", "NotFound", HTTPStatus.NOT_FOUND)
        url = f"{self.base_url}/collections/{collection}/items/{fid}"
        feature = json.loads(_feature_json(row, post, out_crs if fg else None))
        if fg:
            feature = {"conformsTo": JSONFG_CONFORMS, "coordRefSys": out_crs.uri, **feature}
        params = [(k, v) for k, v in request.query_params.multi_items() if k != "f"]
        feature["links"] = [_link("self", GEOJSON, url, params + [("f", "json")]),
                            _link("alternate", "text/html", url, params + [("f", "html")]),
                            {"rel": "collection", "type": "application/json",
                             "href": f"{self.base_url}/collections/{collection}"}]
        if provider.layer == "cases":  # the CIM objects related to the case, and its versions (cim.api.cases)
            feature["links"] += [{"rel": "related", "type": "application/json", "title": "Related CIM objects",
                                  "href": f"{url}/related"},
                                 {"rel": "version-history", "type": GEOJSON, "href": f"{url}/history"}]
        if "ETag" not in headers:
            headers["ETag"] = self._validator(provider, request, media_type, self._versions(conn, provider, [row]))
        return Response(json.dumps(feature, ensure_ascii=False), media_type=media_type, headers=headers)


class CountCache:
    """numberMatched per (layer, filtering parameters, layer versions), least recently used out first: the
    first and the deep pages of a large layer each counted the whole match (an index-only scan of 100,000
    entries, ~10 ms), now once until the layer's data changes. Shared by a worker's threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Any, int | None] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> tuple[bool, int | None]:
        with self._lock:
            if key not in self._entries:
                return False, None
            self._entries.move_to_end(key)
            return True, self._entries[key]

    def put(self, key: Any, n: int | None) -> None:
        if self.size <= 0:
            return
        with self._lock:
            self._entries[key] = n
            while len(self._entries) > self.size:
                self._entries.popitem(last=False)


class Page:
    """Writes one items page as JSON text, piece by piece, from rows as they arrive (``limit`` + 1 rows at
    most: one beyond the page says there is a next page). Links and ``numberReturned`` come last, once
    the page's first and last ids are known."""

    def __init__(self, endpoint: FeaturesEndpoint, request: Request, collection: str, limit: int, offset: int,
                 after: int | None, before: int | None, out_crs: CRSInfo, fg: bool) -> None:
        self.endpoint, self.request, self.collection = endpoint, request, collection
        self.limit, self.offset, self.after, self.before = limit, offset, after, before
        self.out_crs, self.fg = out_crs, fg
        self.matched: int | None = None

    def render(self, rows: Iterable[Any], post: CRSInfo | None) -> Iterator[str]:
        if self.before is not None:  # the page before: fetched newest first, shown in id order
            rows = list(rows)
            more = len(rows) > self.limit
            rows = rows[:self.limit][::-1]
        fg_head = (f'"conformsTo":{json.dumps(JSONFG_CONFORMS)},"coordRefSys":{json.dumps(self.out_crs.uri)},'
                   f'"featureType":{json.dumps(self.collection)},' if self.fg else "")
        yield '{"type":"FeatureCollection",' + fg_head + '"features":['
        n, first_id, last_id, beyond = 0, None, None, False
        for row in rows:
            if n == self.limit:
                beyond = True
                break
            yield ("," if n else "") + _feature_json(row, post, self.out_crs if self.fg else None)
            first_id = row["id"] if first_id is None else first_id
            last_id = row["id"]
            n += 1
        if self.before is None:
            more = beyond
        matched = "" if self.matched is None else f'"numberMatched":{self.matched},'
        links = self._links(first_id, last_id, more)
        stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        yield (f'],{matched}"numberReturned":{n},"links":{json.dumps(links, ensure_ascii=False)},'
               f'"timeStamp":"{stamp}"}}')

    def _links(self, first_id: int | None, last_id: int | None, more: bool) -> list[dict[str, str]]:
        base = self.endpoint.base_url
        url = f"{base}/collections/{self.collection}/items"
        params = [(k, v) for k, v in self.request.query_params.multi_items()
                  if k not in ("f", "offset", "after", "before")]
        offset, after, before = self.offset, self.after, self.before
        here = [("offset", str(offset))] if offset else [("after", str(after))] if after is not None else \
            [("before", str(before))] if before is not None else []
        links = [_link("self", GEOJSON, url, params + [("f", "json")] + here),
                 _link("alternate", "text/html", url, params + [("f", "html")]),
                 {"rel": "collection", "type": "application/json", "href": f"{base}/collections/{self.collection}"}]
        json_params = params + [("f", "json")]
        if not self.request.query_params.get("sortby") and not offset:  # keyset paging on the id
            if last_id is not None and (more if before is None else True):
                links.append(_link("next", GEOJSON, url, json_params + [("after", str(last_id))]))
            if first_id is not None and (after is not None or (before is not None and more)):
                links.append(_link("prev", GEOJSON, url, json_params + [("before", str(first_id))]))
        else:
            if more:
                links.append(_link("next", GEOJSON, url, json_params + [("offset", str(offset + self.limit))]))
            if offset > 0:
                links.append(_link("prev", GEOJSON, url, json_params + [("offset", str(max(0, offset - self.limit)))]))
        return links


def _param_crs(name: str, value: str | None) -> CRSInfo:
    """The CRS a request parameter names (CRS84 when absent); a 400 listing the supported ones otherwise."""
    try:
        return default_registry().resolve(value or CRS84_URI)
    except UnknownCRS as exc:
        raise BadRequest(f"{name}: {exc}") from None


CACHE_CONTROL = "public, max-age=60"
STREAM_ABOVE = 1000  # pages of up to this many features are built whole; larger ones stream from a cursor
STREAM_CHUNK = 500  # rows per fetch and features per written chunk when streaming
RESPONSE_FORMAT = 2  # bump when the JSON written for the same data changes (part of the ETag)
# layers whose features show data of other layers (a component's root building uid)
DEPENDS: dict[str, tuple[str, ...]] = {"building-components": ("buildings",)}


def not_modified(request: Request, etag: str) -> bool:
    """True when the client already holds this version (If-None-Match, weak comparison)."""
    sent = [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]
    return etag.removeprefix("W/") in sent or "*" in sent


def collection_layer(provider_def: dict[str, Any]) -> str:
    return str(provider_def["data"])


def sql_output(info: CRSInfo, storage_srid: int) -> tuple[int, bool, CRSInfo | None]:
    """(SRID the database writes, swap axes there, CRS to transform to afterwards in numpy or None)."""
    if info.uri == CRS84_URI:
        return crs84_srid(storage_srid), False, None
    if info.epsg is not None:  # plain EPSG CRSs (not compound, not ours): the database transforms
        return info.epsg, info.yx, None
    return crs84_srid(storage_srid), False, info  # GCJ-02, BD-09, local systems: from CRS84 in numpy


def _feature_json(row: Any, post: CRSInfo | None, jsonfg_crs: CRSInfo | None = None) -> str:
    """One feature as JSON text from a row whose geometry and properties the database wrote as JSON; with
    ``jsonfg_crs``, as a JSON-FG feature (place, time, featureType)."""
    geometry = row.get("geometry")
    if geometry is not None and post is not None:
        geom = shape(json.loads(geometry))
        has_z = bool(shapely.has_z(geom))
        coords = shapely.get_coordinates(geom, include_z=has_z)
        reg = default_registry()
        x, y, _ = transform(reg.resolve(CRS84_URI), post, coords[:, 0], coords[:, 1], check_area=False)
        a, b = swap_axes(post, np.round(x, 9), np.round(y, 9))
        cols = [a, b, coords[:, 2]] if has_z else [a, b]  # heights pass through (they are 1985 heights)
        geometry = json.dumps(mapping(shapely.set_coordinates(geom, np.column_stack(cols))))
    props = row["properties"]
    uid = json.dumps(row["uid"], ensure_ascii=False)
    if jsonfg_crs is None:
        return f'{{"type":"Feature","id":{uid},"geometry":{geometry or "null"},"properties":{props}}}'
    # JSON-FG: "geometry" is always WGS 84 lon/lat; "place" holds it in any other CRS, and solids (CIM
    # levels' closed shells) as Polyhedron, which GeoJSON cannot express.
    wgs84 = row.get("geometry84", geometry) if jsonfg_crs.uri != CRS84_URI else geometry
    place = None if jsonfg_crs.uri == CRS84_URI else geometry
    solid = _polyhedron(geometry) if geometry is not None else None
    if solid is not None:
        place = solid
    props_dict = json.loads(props)
    valid_from, valid_to = props_dict.get("valid_from"), props_dict.get("valid_to")
    time_ = json.dumps({"interval": [valid_from or "..", valid_to or ".."]}) if valid_from else "null"
    return (f'{{"type":"Feature","id":{uid},"featureType":{json.dumps(props_dict.get("class"))},'
            f'"time":{time_},"place":{place or "null"},"geometry":{wgs84 or "null"},"properties":{props}}}')


def _polyhedron(geometry: str) -> str | None:
    """A closed 3D MultiPolygon (a CIM solid's faces) as a JSON-FG Polyhedron; None for anything else
    (a draped road surface is 3D but not closed, a pipe is a line)."""
    doc = json.loads(geometry)
    coords = doc.get("coordinates")
    if doc.get("type") != "MultiPolygon" or not coords or len(coords[0][0][0]) != 3:
        return None
    solid = shape(doc)
    degrees = float(np.abs(shapely.get_coordinates(solid)).max()) <= 360  # lon/lat: compare at ~0.1 mm
    if not is_closed_shell(solid, decimals=9 if degrees else 3):
        return None
    return json.dumps({"type": "Polyhedron", "coordinates": [coords]})


def _link(rel: str, media_type: str, url: str, params: list[tuple[str, str]]) -> dict[str, str]:
    return {"rel": rel, "type": media_type, "href": f"{url}?{urlencode(params)}" if params else url}


def _csv(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()] if value else []


def _bool(value: str | None, name: str) -> bool:
    if value is None:
        return False
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise BadRequest(f"{name}: true or false")


CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-features-2/1.0/conf/crs",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
    "http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/features-filter",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
    "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-cql2",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions",
    "http://www.opengis.net/spec/cql2/1.0/conf/basic-spatial-functions-plus",
]


class CollectionCRSMetadata(BodyRewriter):
    """Adds Part 2 metadata to pygeoapi's JSON: each CIM collection's ``crs`` list, ``storageCrs`` and
    ``storageCrsCoordinateEpoch``, and the conformance classes our routes implement (CRS, filtering).
    (Declaring them to pygeoapi itself would switch on its own, wrong, CRS handling.)"""

    def __init__(self, app: ASGIApp, layers: set[str], storage_srid: int) -> None:
        super().__init__(app)
        self.layers = layers
        self.storage_uri = f"http://www.opengis.net/def/crs/EPSG/0/{storage_srid}"
        self.crs = output_crs_uris()

    def applies(self, scope: Scope) -> bool:
        path = scope.get("path", "").rstrip("/")
        parts = path.split("/")
        return path in ("/collections", "/conformance") or (len(parts) == 3 and parts[1] == "collections")

    def buffers(self, content_type: bytes, status: int) -> bool:
        return content_type.startswith(b"application/json") and status == 200

    def _patch_collection(self, c: dict[str, Any]) -> None:
        if c.get("id") in self.layers:
            c["crs"] = self.crs
            c["storageCrs"] = self.storage_uri
            c["storageCrsCoordinateEpoch"] = 2000.0

    def rewrite(self, scope: Scope, body: bytes) -> bytes:
        path = scope.get("path", "").rstrip("/")
        doc = json.loads(body)
        if path == "/conformance":
            doc["conformsTo"] = list(dict.fromkeys(doc.get("conformsTo", []) + CONFORMANCE))
        elif path == "/collections":
            for c in doc.get("collections", []):
                self._patch_collection(c)
        else:
            self._patch_collection(doc)
        return json.dumps(doc, ensure_ascii=False).encode()
