"""HTTP routes of OGC API – Tiles (Part 1): the CIM collections' vector tiles and the rasters' map tiles.

- ``/tileMatrixSets``, ``/tileMatrixSets/{id}``: every set of :mod:`cim.crs.tms` (also under pygeoapi's
  spelling ``/TileMatrixSets``, which its landing page links to: pygeoapi itself knows only OGC's two
  sets and answers 400 for ours);
- ``/collections/{id}/tiles``: the tilesets list; ``/collections/{id}/tiles/{tms}``: the tileset
  (``?f=tilejson``: TileJSON 3.0.0);
- ``/collections/{id}/tiles/{tms}/{tileMatrix}/{tileRow}/{tileCol}``: the tile
  (``application/vnd.mapbox-vector-tile``);
- ``/tiles``, ``/tiles/{tms}``, ``/tiles/{tms}/{tileMatrix}/{tileRow}/{tileCol}``: the dataset's combined
  tiles, one MVT layer per collection (each within its own zoom range and limits), all collections or the
  ``collections=a,b`` selection (an unknown id is a 400);
- ``/map/style.json``: the MapLibre style over the combined tiles (:mod:`cim.tiles.style`), and ``/map``:
  the page that draws it with the bundled MapLibre GL JS (``cim/web/map.html``).
- ``/collections/{raster}[/styles/{style}]/map/tiles[/{tms}[/{tileMatrix}/{tileRow}/{tileCol}]]``: map
  tiles (PNG, JPEG, WebP) of the registered rasters, :class:`RasterTileEndpoints`.

Responses:

- ``ETag`` (weak) from the database id, the data versions of the layer (and of the layers its attributes
  link to), the tile settings, this software's version and the address: checking it costs one key read,
  so a conditional GET is a 304 before any geometry work. A tile's is ``W/"{cache version}-{z}-{row}-{col}"``
  (:func:`tile_etag`), which a front server that serves the cache's files writes too (:mod:`cim.tiles.front`).
  ``Cache-Control: public, max-age`` from ``cim.tiles.max_age``; after it, clients revalidate.
- Tiles, single-collection and combined, come from the tile cache (:mod:`cim.tiles.cache`) when it has them
  for the current data version, else are built and stored there (combined tiles: one folder per selection,
  whose layers are in the order asked for).
- gzip: vector tiles are stored gzip-compressed (level 5) and travel ``Content-Encoding: gzip`` when the
  client sends ``Accept-Encoding: gzip`` (``Vary: Accept-Encoding``), uncompressed otherwise (a tile just
  built as it came from the database, a cached one decompressed): never compressed bytes without that
  header, which clients that do not sniff cannot read. Images are sent as
  they are (PNG is deflated already, JPEG and WebP compressed).
- An empty tile, inside the tileset's limits but with no feature, is **204 No Content** (with its ETag):
  OGC API – Tiles allows it, and clients skip it without decoding.
- 404 (OGC exception JSON) for an unknown collection or tile matrix set, a tile matrix outside the
  layer's zoom range, or a row/column outside the matrix or the ``tileMatrixSetLimits``; 400 for a
  malformed address, an unknown query parameter or an unsupported ``f``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cim import __version__
from cim.crs import transformer
from cim.db.models import CIMTables
from cim.db.engine import autocommit
from cim.db.queries import extent_statements
from cim.db.schema import read_meta
from cim.db.versions import layer_version, raster_key
from cim.settings import RasterTileSettings, TilesSettings
from cim.tiles import raster, tilesets
from cim.tiles.cache import TileCache, TileKey
from cim.tiles.grid import (
    Limits,
    TileError,
    TileSet,
    extent_in,
    limits,
    matrices_in_zoom_range,
    parse_address,
    tile_set,
    web_mercator_zoom,
)
from cim.tiles.mvt import LayerRules, layer_rules, render, render_layers, render_with_versions, tile_query
from cim.tiles.style import TILE_MATRIX_SET as STYLE_TMS
from cim.tiles.style import city_style
from cim.web import MAP_PAGE, MAPLIBRE_DIR, STATIC_URL

TILE_FORMAT = 1  # bump when the tiles written for the same data and settings change (part of the ETag)
# layers whose tile attributes show data of other layers (a component's building uid as its root)
LINKED_LAYERS: dict[str, tuple[str, ...]] = {"building-components": ("buildings",)}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or ("NotFound" if status == HTTPStatus.NOT_FOUND else "InvalidParameterValue")


def exception_response(exc: HTTPError) -> Response:
    """The OGC API exception document."""
    body = {"code": exc.code, "type": exc.code, "description": str(exc)}
    return Response(json.dumps(body, ensure_ascii=False), status_code=exc.status, media_type="application/json")


def not_modified(request: Request, etag: str) -> bool:
    """True when the client already holds this version (If-None-Match, weak comparison)."""
    sent = [t.strip().removeprefix("W/") for t in request.headers.get("if-none-match", "").split(",")]
    return etag.removeprefix("W/") in sent or "*" in sent


def digest(*parts: Any) -> str:
    return hashlib.blake2b(json.dumps(parts).encode(), digest_size=16).hexdigest()


# the cache folder of combined tiles (``/tiles/...``): ``_tiles/mvt-{a+b+…}/{tms}/{version}/…``, one per selection
DATASET = "_tiles"


def dataset_kind(chosen: list[str]) -> str:
    """The cache kind of the combined tiles of a selection (in the order asked for)."""
    return "mvt-" + "+".join(chosen)


def tile_etag(key: TileKey) -> str:
    """A tile's validator: its cache version (what its bytes depend on) and its address."""
    return f'W/"{key.version}-{key.matrix}-{key.row}-{key.col}"'


def accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def tile_response(request: Request, data: bytes, gzipped: bool, media_type: str, headers: dict[str, str],
                  vary: bool = False) -> Response:
    """A tile as stored: b"" is 204; gzip bytes go out as they are to a client that accepts gzip (else
    decompressed). ``vary``: the answer depends on Accept-Encoding although ``data`` is not compressed."""
    if not data:
        return Response(status_code=HTTPStatus.NO_CONTENT, headers=headers)
    if gzipped or vary:
        headers = {**headers, "Vary": "Accept-Encoding"}
    if gzipped:
        if accepts_gzip(request):
            return Response(data, media_type=media_type, headers={**headers, "Content-Encoding": "gzip"})
        data = gzip.decompress(data)
    return Response(data, media_type=media_type, headers=headers)


def compress_tile(mvt: bytes) -> bytes:
    """A vector tile as the cache stores it: gzip level 5, no timestamp (the same bytes for the same tile)."""
    return gzip.compress(mvt, compresslevel=5, mtime=0) if mvt else b""


def query_format(request: Request, allowed: tuple[str, ...], others: tuple[str, ...] = ()) -> str:
    """The ``f`` asked for (the first allowed one by default); anything but ``others`` else in the query is
    a 400."""
    for name in request.query_params:
        if name != "f" and name not in others:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {name!r}")
    f = request.query_params.get("f", allowed[0]).lower()
    if f not in allowed:
        raise HTTPError(HTTPStatus.BAD_REQUEST, f"f: one of {', '.join(allowed)}, got {f!r}")
    return f


_DATABASE_IDS: dict[str, str] = {}


def database_id(conn: Connection) -> str:
    """The database's own id (``cim_meta``), read once per process: part of every tile's version."""
    key = str(conn.engine.url)
    if key not in _DATABASE_IDS:
        _DATABASE_IDS[key] = str(read_meta(conn).get("database_id", ""))
    return _DATABASE_IDS[key]


def endpoint(handler: Callable[..., Response]) -> Callable[[Request], Any]:
    """An async route around a blocking handler; HTTP and tile errors become OGC exception documents."""
    async def run(request: Request) -> Response:
        try:
            return await run_in_threadpool(handler, request, **request.path_params)
        except HTTPError as exc:
            return exception_response(exc)
        except TileError as exc:
            return exception_response(HTTPError(exc.status, str(exc)))

    return run


@dataclass
class VectorTileEndpoints:
    """The routes, with their dependencies as fields (the shared engine comes from the API layer)."""

    database: Callable[[], tuple[Engine, CIMTables]]
    collections: dict[str, str]  # collection id → CIM layer
    base_url: str
    settings: TilesSettings
    cache: TileCache = field(default_factory=lambda: TileCache(None))
    sets: dict[str, TileSet] = field(init=False)
    rules: dict[str, LayerRules] = field(init=False)
    _states: dict[tuple[str, int, str], tilesets.LayerState] = field(init=False, default_factory=dict)
    _extents: dict[tuple[str, int], tuple[float, float, float, float] | None] = field(init=False, default_factory=dict)
    _seen: dict[str, list[int]] = field(init=False, default_factory=dict)  # layer → the versions its last tile had
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.sets = {}
        for tms_id in self.settings.tile_matrix_sets:
            try:
                self.sets[tms_id] = tile_set(tms_id)
            except KeyError as exc:
                raise ValueError(f"cim.tiles.tile_matrix_sets: {exc.args[0]}") from None
        by_layer = layer_rules(self.settings, set(self.collections.values()))
        self.rules = {c: by_layer[layer] for c, layer in self.collections.items()}
        self._settings_key = self.settings.model_dump_json()

    def routes(self) -> list[Route]:
        tiles = "/collections/{collection}/tiles"
        routes = [
            Route(f"{tiles}", self._endpoint(self._tilesets)),
            Route(f"{tiles}/{{tms}}", self._endpoint(self._tileset)),
            Route(f"{tiles}/{{tms}}/metadata", self._endpoint(self._tileset)),  # pygeoapi's name for it
            Route(f"{tiles}/{{tms}}/{{matrix}}/{{row}}/{{col}}", self._endpoint(self._tile)),
        ]
        routes += [
            Route("/tiles", self._endpoint(self._dataset_tilesets)),
            Route("/tiles/{tms}", self._endpoint(self._dataset_tileset)),
            Route("/tiles/{tms}/metadata", self._endpoint(self._dataset_tileset)),
            Route("/tiles/{tms}/{matrix}/{row}/{col}", self._endpoint(self._dataset_tile)),
        ]
        routes += [Route("/map", self._endpoint(self._map_page)),
                   Route("/map/style.json", self._endpoint(self._style))]
        for prefix in ("/tileMatrixSets", "/TileMatrixSets"):
            routes += [Route(prefix, self._endpoint(self._tms_list)),
                       Route(f"{prefix}/{{tms}}", self._endpoint(self._tms))]
        return routes

    def _endpoint(self, handler: Callable[..., Response]) -> Callable[[Request], Any]:
        return endpoint(handler)

    # ------------------------------------------------------------------ checks
    def _layer(self, collection: str) -> str:
        if collection not in self.collections:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no collection {collection!r} with vector tiles; "
                            f"collections: {', '.join(self.collections)}")
        return self.collections[collection]

    def _tile_set(self, tms_id: str) -> TileSet:
        if tms_id not in self.sets:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no vector tiles in tile matrix set {tms_id!r}; "
                            f"tile matrix sets: {', '.join(self.sets)}")
        return self.sets[tms_id]

    @staticmethod
    def _format(request: Request, allowed: tuple[str, ...], others: tuple[str, ...] = ()) -> str:
        return query_format(request, allowed, others)

    def _selection(self, request: Request) -> tuple[list[str], list[str] | None]:
        """The collections of a combined tile (all, in configuration order, when not asked for) and the
        selection as asked (None: none)."""
        raw = request.query_params.getlist("collections")
        if not raw:
            return list(self.collections), None
        chosen = [c.strip() for value in raw for c in value.split(",")]
        if any(not c for c in chosen):
            raise HTTPError(HTTPStatus.BAD_REQUEST, "collections: comma-separated collection ids, none empty")
        unknown = [c for c in chosen if c not in self.collections]
        if unknown:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"collections: no vector tiles of {', '.join(map(repr, unknown))}; "
                            f"collections: {', '.join(self.collections)}")
        chosen = list(dict.fromkeys(chosen))
        return chosen, chosen

    # ------------------------------------------------------------------ state
    def _database_id(self, conn: Connection) -> str:
        return database_id(conn)

    def tile_version(self, conn: Connection, versions: list[int]) -> str:
        """What a tile's bytes depend on, as the cache's version folder name."""
        return digest(database_id(conn), versions, __version__, TILE_FORMAT, self._settings_key)

    def _versions(self, conn: Connection, t: CIMTables, layer: str) -> list[int]:
        return [layer_version(conn, t, name) for name in (layer, *LINKED_LAYERS.get(layer, ()))]

    def collection_version(self, conn: Connection, t: CIMTables, collection: str) -> str:
        """The cache version of a collection's tiles now (:class:`cim.tiles.front.CurrentLinks`)."""
        return self.tile_version(conn, self._versions(conn, t, self.collections[collection]))

    def dataset_version(self, conn: Connection, chosen: list[str], versions: dict[str, list[int]]) -> str:
        """The cache version of the combined tiles of ``chosen`` (in that order)."""
        return digest(database_id(conn), [versions[x] for x in chosen], chosen, __version__, TILE_FORMAT,
                      self._settings_key)

    def _etag(self, conn: Connection, request: Request, versions: list[int], media_type: str) -> str:
        key = json.dumps([self._database_id(conn), versions, __version__, TILE_FORMAT, self._settings_key,
                          self.base_url, media_type, request.url.path, sorted(request.query_params.multi_items())])
        return 'W/"' + hashlib.blake2b(key.encode(), digest_size=16).hexdigest() + '"'

    def _headers(self, etag: str) -> dict[str, str]:
        # Vary: Accept-Encoding comes from the gzip middleware when it compresses
        return {"ETag": etag, "Cache-Control": f"public, max-age={self.settings.max_age}"}

    def _storage_extent(self, conn: Connection, t: CIMTables, layer: str, version: int,
                        ) -> tuple[float, float, float, float] | None:
        """The layer's extent in the storage CRS, read once per data version (a scan of the layer)."""
        key = (layer, version)
        if key not in self._extents:
            bounds = conn.execute(extent_statements(t, conn.dialect.name, layer)[0]).one()
            value = None if bounds[0] is None else tuple(float(v) for v in bounds)
            with self._lock:
                if len(self._extents) > 256:
                    self._extents.clear()
                self._extents[key] = value  # type: ignore[assignment]
        return self._extents[key]

    def _state(self, conn: Connection, t: CIMTables, layer: str, version: int, ts: TileSet,
               rules: LayerRules) -> tilesets.LayerState:
        key = (layer, version, ts.id)
        state = self._states.get(key)
        if state is None:
            storage_srid = int(t.city_object.c.geom.type.srid)
            extent = self._storage_extent(conn, t, layer, version)
            if extent is None:
                state = tilesets.LayerState(version, None, [])
            else:
                crs84 = transformer(storage_srid, "OGC:CRS84").transform_bounds(*extent, densify_pts=21)
                bbox = extent_in(ts, extent, storage_srid)
                state = tilesets.LayerState(
                    version, tuple(round(float(v), 7) for v in crs84),  # type: ignore[arg-type]
                    [limits(ts, m, bbox) for m in matrices_in_zoom_range(ts, rules.min_zoom, rules.max_zoom)])
            with self._lock:
                if len(self._states) > 1024:
                    self._states.clear()
                self._states[key] = state
        return state

    # ------------------------------------------------------------------ tiles (the server's and the seeder's)
    def tile_limits(self, conn: Connection, t: CIMTables, collection: str, ts: TileSet) -> list[Limits]:
        """The collection's ``tileMatrixSetLimits`` in a set now (matrices of its zoom range with data)."""
        layer = self.collections[collection]
        return self._state(conn, t, layer, self._versions(conn, t, layer)[0], ts, self.rules[collection]).limits

    def tile_key(self, conn: Connection, t: CIMTables, collection: str, ts: TileSet, matrix_id: str, row: int,
                 col: int, versions: list[int] | None = None) -> TileKey:
        versions = versions if versions is not None else self._versions(conn, t, self.collections[collection])
        return TileKey(collection, "mvt", ts.id, self.tile_version(conn, versions), matrix_id, row, col, "mvt.gz")

    def render_tile(self, conn: Connection, t: CIMTables, key: TileKey) -> bytes:
        """The tile of ``key`` as MVT bytes (b"" without features), not stored."""
        q = tile_query(self.collections[key.collection], key.collection, self.sets[key.tms], key.matrix, key.row,
                       key.col, int(t.city_object.c.geom.type.srid), self.rules[key.collection], self.settings)
        return render(conn, t, q)

    def build(self, conn: Connection, t: CIMTables, key: TileKey) -> bytes:
        """The tile of ``key`` as the cache holds it (gzip-compressed MVT; b"" without features), stored."""
        stored = compress_tile(self.render_tile(conn, t, key))
        self.cache.put(key, stored)
        return stored

    def fresh_response(self, request: Request, key: TileKey, mvt: bytes, headers: dict[str, str]) -> Response:
        """A tile just built: stored in the cache (when on) and sent compressed to a client that accepts gzip;
        to any other client as built (never compressed only to be decompressed again)."""
        stored = compress_tile(mvt) if self.cache.enabled or accepts_gzip(request) else None
        if self.cache.enabled:
            self.cache.put(key, stored or b"")
        if stored is not None and accepts_gzip(request):
            return tile_response(request, stored, True, tilesets.VECTOR_TILE, headers)
        return tile_response(request, mvt, False, tilesets.VECTOR_TILE, headers, vary=True)

    # ------------------------------------------------------------------ handlers
    def _tile(self, request: Request, collection: str, tms: str, matrix: str, row: str, col: str) -> Response:
        layer = self._layer(collection)
        ts = self._tile_set(tms)
        self._format(request, ("mvt", "pbf"))
        matrix_id, r, c = parse_address(ts, matrix, row, col)
        rules = self.rules[collection]
        zoom = web_mercator_zoom(ts, matrix_id)
        if not rules.min_zoom <= zoom <= rules.max_zoom:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{collection} has tiles at zoom {rules.min_zoom}–{rules.max_zoom} "
                            f"(WebMercatorQuad levels); {ts.id} {matrix_id} is zoom {zoom}")
        engine, t = self.database()
        # With no cache to look in and no validator to check (PostGIS), the data versions come with the tile
        # from one statement: the tile's limits are checked against the versions this worker saw last, and
        # again should the tile's be newer. Otherwise the versions are read first (the cache's key, a 304).
        folded = engine.dialect.name == "postgresql" and not self.cache.enabled and "if-none-match" not in request.headers
        with autocommit(engine).connect() as conn:  # reads only, one statement each
            seen = self._seen.get(layer) if folded else None
            versions = seen if seen is not None else self._versions(conn, t, layer)
            try:
                self._check_limits(conn, t, collection, ts, matrix_id, r, c, versions)
            except HTTPError:
                if seen is None:
                    raise
                # outside what the worker saw last: the data may have grown since (no 404 on old news)
                versions = self._seen[layer] = self._versions(conn, t, layer)
                self._check_limits(conn, t, collection, ts, matrix_id, r, c, versions)
            mvt: bytes | None = None
            if folded:
                q = tile_query(layer, collection, ts, matrix_id, r, c, int(t.city_object.c.geom.type.srid), rules,
                               self.settings)
                built = render_with_versions(conn, t, q, (layer, *LINKED_LAYERS.get(layer, ())))
                if built is not None:
                    mvt, now = built
                    if now != versions:  # the data changed since: its extent may have too
                        self._check_limits(conn, t, collection, ts, matrix_id, r, c, now)
                    versions = self._seen[layer] = now
            key = self.tile_key(conn, t, collection, ts, matrix_id, r, c, versions)
            headers = self._headers(tile_etag(key))
            if mvt is None:
                if not_modified(request, headers["ETag"]):
                    return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
                cached = self.cache.get(key)
                if cached is not None:
                    return tile_response(request, cached.data, True, tilesets.VECTOR_TILE, headers)
                mvt = self.render_tile(conn, t, key)
        return self.fresh_response(request, key, mvt, headers)

    def _check_limits(self, conn: Connection, t: CIMTables, collection: str, ts: TileSet, matrix_id: str, r: int,
                      c: int, versions: list[int]) -> None:
        """404 for a tile outside the collection's ``tileMatrixSetLimits`` at these data versions."""
        if not self._within_limits(conn, t, collection, ts, matrix_id, r, c, versions):
            raise HTTPError(HTTPStatus.NOT_FOUND, f"tile {matrix_id}/{r}/{c} is outside the tileMatrixSetLimits "
                            f"of {collection} in {ts.id}")

    def _within_limits(self, conn: Connection, t: CIMTables, collection: str, ts: TileSet, matrix_id: str, r: int,
                       c: int, versions: list[int]) -> bool:
        """Whether a tile is inside the collection's ``tileMatrixSetLimits`` at these data versions."""
        state = self._state(conn, t, self.collections[collection], versions[0], ts, self.rules[collection])
        lim: Limits | None = next((x for x in state.limits if x.matrix == matrix_id), None)
        return lim is not None and lim.contains(r, c)

    def _dataset_tile(self, request: Request, tms: str, matrix: str, row: str, col: str) -> Response:
        ts = self._tile_set(tms)
        self._format(request, ("mvt", "pbf"), ("collections",))
        chosen, _ = self._selection(request)
        matrix_id, r, c = parse_address(ts, matrix, row, col)
        zoom = web_mercator_zoom(ts, matrix_id)
        in_zoom = [x for x in chosen if self.rules[x].min_zoom <= zoom <= self.rules[x].max_zoom]
        if not in_zoom:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"none of {', '.join(chosen)} has tiles at {ts.id} {matrix_id} "
                            f"(WebMercatorQuad zoom {zoom})")
        engine, t = self.database()
        storage_srid = int(t.city_object.c.geom.type.srid)
        with autocommit(engine).connect() as conn:  # reads only, one statement each
            versions = {x: self._versions(conn, t, self.collections[x]) for x in chosen}
            inside = [x for x in in_zoom if self._within_limits(conn, t, x, ts, matrix_id, r, c, versions[x])]
            if not inside:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"tile {matrix_id}/{r}/{c} is outside the tileMatrixSetLimits "
                                f"of {', '.join(in_zoom)} in {ts.id}")
            key = TileKey(DATASET, dataset_kind(chosen), ts.id, self.dataset_version(conn, chosen, versions),
                          matrix_id, r, c, "mvt.gz")
            headers = self._headers(tile_etag(key))
            if not_modified(request, headers["ETag"]):
                return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
            cached = self.cache.get(key)
            if cached is not None:
                return tile_response(request, cached.data, True, tilesets.VECTOR_TILE, headers)
            mvt = render_layers(conn, t, [
                tile_query(self.collections[x], x, ts, matrix_id, r, c, storage_srid, self.rules[x],
                           self.settings) for x in inside])
        return self.fresh_response(request, key, mvt, headers)

    def _dataset_tilesets(self, request: Request) -> Response:
        self._format(request, ("json",))
        doc = tilesets.dataset_tileset_list(self.base_url, list(self.sets.values()))
        return self._json(request, doc, tilesets.JSON, {"Cache-Control": f"public, max-age={self.settings.max_age}"})

    def _dataset_tileset(self, request: Request, tms: str) -> Response:
        ts = self._tile_set(tms)
        f = self._format(request, ("json", "tilejson"), ("collections",))
        chosen, selection = self._selection(request)
        media_type = tilesets.TILEJSON if f == "tilejson" else tilesets.JSON
        engine, t = self.database()
        with engine.connect() as conn:
            versions = {x: self._versions(conn, t, self.collections[x]) for x in chosen}
            headers = self._headers(self._etag(conn, request, [v for x in chosen for v in versions[x]], media_type))
            if not_modified(request, headers["ETag"]):
                return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
            layers = [tilesets.DatasetLayer(
                x, self.rules[x], self._state(conn, t, self.collections[x], versions[x][0], ts, self.rules[x]),
                tilesets.property_types(t, self.collections[x], self.rules[x])) for x in chosen]
        build = tilesets.dataset_tilejson if f == "tilejson" else tilesets.dataset_tileset
        return self._json(request, build(self.base_url, ts, layers, selection), media_type, headers)

    def _style(self, request: Request) -> Response:
        self._format(request, ("json",))
        doc = city_style(self.base_url, self.rules)
        ts = self.sets.get(STYLE_TMS)
        if ts is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"the map needs {STYLE_TMS} tiles (cim.tiles.tile_matrix_sets)")
        engine, t = self.database()
        with engine.connect() as conn:  # centred on the data
            versions = {x: self._versions(conn, t, layer) for x, layer in self.collections.items()}
            headers = self._headers(self._etag(conn, request, [v for vs in versions.values() for v in vs],
                                               tilesets.JSON))
            if not_modified(request, headers["ETag"]):
                return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
            boxes = [self._state(conn, t, layer, versions[x][0], ts, self.rules[x]).extent_crs84
                     for x, layer in self.collections.items() if x in ("buildings", "roads")]
        boxes = [b for b in boxes if b is not None]
        if boxes:
            doc["center"] = [round((min(b[0] for b in boxes) + max(b[2] for b in boxes)) / 2, 6),
                             round((min(b[1] for b in boxes) + max(b[3] for b in boxes)) / 2, 6)]
        return self._json(request, doc, tilesets.JSON, headers)

    def _map_page(self, request: Request) -> Response:
        self._format(request, ("html",))
        if not (MAPLIBRE_DIR / "maplibre-gl.mjs").is_file():
            raise HTTPError(HTTPStatus.SERVICE_UNAVAILABLE, f"MapLibre GL JS is not installed in {MAPLIBRE_DIR.parents[1]}: "
                            "run scripts/install.sh (npm ci in cim/web)", "ServiceUnavailable")
        page = MAP_PAGE.read_text(encoding="utf-8").format(base=self.base_url, static=f"{self.base_url}{STATIC_URL}")
        return Response(page, media_type="text/html",
                        headers={"Cache-Control": f"public, max-age={self.settings.max_age}"})

    def _json(self, request: Request, doc: dict[str, Any], media_type: str, headers: dict[str, str]) -> Response:
        return Response(json.dumps(doc, ensure_ascii=False), media_type=media_type, headers=headers)

    def _tilesets(self, request: Request, collection: str) -> Response:
        layer = self._layer(collection)
        self._format(request, ("json",))
        doc = tilesets.tileset_list(self.base_url, collection, layer, list(self.sets.values()))
        return self._json(request, doc, tilesets.JSON, {"Cache-Control": f"public, max-age={self.settings.max_age}"})

    def _tileset(self, request: Request, collection: str, tms: str) -> Response:
        layer = self._layer(collection)
        ts = self._tile_set(tms)
        f = self._format(request, ("json", "tilejson"))
        media_type = tilesets.TILEJSON if f == "tilejson" else tilesets.JSON
        rules = self.rules[collection]
        engine, t = self.database()
        with engine.connect() as conn:
            versions = self._versions(conn, t, layer)
            headers = self._headers(self._etag(conn, request, versions, media_type))
            if not_modified(request, headers["ETag"]):
                return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
            state = self._state(conn, t, layer, versions[0], ts, rules)
        props = tilesets.property_types(t, layer, rules)
        build = tilesets.tilejson if f == "tilejson" else tilesets.tileset
        return self._json(request, build(self.base_url, collection, ts, rules, state, props), media_type, headers)

    def _tms_list(self, request: Request) -> Response:
        f = self._format(request, ("json", "html"))
        doc = tilesets.tile_matrix_sets(self.base_url)
        headers = {"Cache-Control": f"public, max-age={self.settings.max_age}"}
        if f == "html":  # pygeoapi's landing page links here with f=html
            return Response(tilesets.tile_matrix_sets_html(doc), media_type="text/html", headers=headers)
        return self._json(request, doc, tilesets.JSON, headers)

    def _tms(self, request: Request, tms: str) -> Response:
        self._format(request, ("json",))
        try:
            doc = tilesets.tile_matrix_set(tms)
        except KeyError as exc:
            raise HTTPError(HTTPStatus.NOT_FOUND, str(exc.args[0])) from None
        return self._json(request, doc, tilesets.JSON, {"Cache-Control": f"public, max-age={self.settings.max_age}"})


RASTER_TILE_FORMAT = 1  # bump when the raster tiles written for the same data and settings change


@dataclass(frozen=True)
class RasterState:
    """A raster as one data version serves it: the layer, its zoom range, extent and limits per set."""

    layer: raster.RasterLayer
    version: int
    min_zoom: int
    max_zoom: int
    extent_crs84: tuple[float, float, float, float]
    limits: dict[str, list[Limits]]  # tile matrix set id → limits of the matrices in the zoom range


@dataclass
class RasterTileEndpoints:
    """Map tiles (OGC API – Tiles, PNG/JPEG/WebP) of the rasters registered in ``raster_layer``.

    A collection is a raster by its name. Routes: ``/collections/{c}/map/tiles[/{tms}[/{z}/{row}/{col}]]`` in
    the raster's default style, ``/collections/{c}/styles/{style}/map/tiles/...`` in any of its styles
    (:data:`cim.tiles.raster.STYLES`); ``?f=`` picks the image format, ``?f=tilejson`` on a tileset.
    Rasters are looked up per request by their data version (one key read), so a raster loaded while the
    server runs has tiles at once.
    """

    database: Callable[[], tuple[Engine, CIMTables]]
    base_url: str
    data_dir: Any  # Path: relative COG paths in raster_layer resolve against it
    settings: TilesSettings
    cache: TileCache = field(default_factory=lambda: TileCache(None))
    sets: dict[str, TileSet] = field(init=False)
    _states: dict[tuple[str, int], RasterState] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.sets = {tms_id: tile_set(tms_id) for tms_id in self.settings.tile_matrix_sets}
        self._settings_key = self.settings.raster.model_dump_json()

    @property
    def raster_settings(self) -> RasterTileSettings:
        return self.settings.raster

    def routes(self) -> list[Route]:
        routes = []
        for prefix in ("/collections/{collection}/map/tiles", "/collections/{collection}/styles/{style}/map/tiles"):
            routes += [Route(prefix, endpoint(self._tilesets)),
                       Route(f"{prefix}/{{tms}}", endpoint(self._tileset)),
                       Route(f"{prefix}/{{tms}}/{{matrix}}/{{row}}/{{col}}", endpoint(self._tile))]
        return routes

    # ------------------------------------------------------------------ state
    def state(self, conn: Connection, t: CIMTables, collection: str) -> RasterState:
        """The raster named ``collection`` at its current data version (404 when there is none)."""
        version = layer_version(conn, t, raster_key(collection))
        state = self._states.get((collection, version))
        if state is not None:
            return state
        layer = raster.raster_layer(conn, t, Path(self.data_dir), collection)
        if layer is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no raster collection {collection!r} with map tiles")
        max_zoom = raster.native_zoom(layer) + self.raster_settings.overzoom
        min_zoom = min(self.raster_settings.min_zoom, max_zoom)
        crs84 = transformer(layer.srid, "OGC:CRS84").transform_bounds(*layer.bounds, densify_pts=21)
        tile_limits = {}
        for ts in self.sets.values():
            bbox = extent_in(ts, layer.bounds, layer.srid)
            tile_limits[ts.id] = [limits(ts, m, bbox) for m in matrices_in_zoom_range(ts, min_zoom, max_zoom)]
        state = RasterState(layer, version, min_zoom, max_zoom,
                            tuple(round(float(v), 7) for v in crs84), tile_limits)  # type: ignore[arg-type]
        if version:  # a raster registered before versions were kept is read again each time
            with self._lock:
                if len(self._states) > 256:
                    self._states.clear()
                self._states[(collection, version)] = state
        return state

    def tile_version(self, conn: Connection, state: RasterState) -> str:
        return digest(database_id(conn), state.version, __version__, RASTER_TILE_FORMAT, self._settings_key,
                      str(state.layer.path))

    # ------------------------------------------------------------------ checks
    def _tile_set(self, tms_id: str) -> TileSet:
        if tms_id not in self.sets:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no map tiles in tile matrix set {tms_id!r}; "
                            f"tile matrix sets: {', '.join(self.sets)}")
        return self.sets[tms_id]

    @staticmethod
    def _style(state: RasterState, style: str | None) -> tuple[str, bool]:
        """(style, whether it is the default) for a path's style segment."""
        styles = state.layer.styles
        if style is None:
            return styles[0], True
        if style not in styles:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{state.layer.name} has styles {', '.join(styles)}; "
                            f"no style {style!r}")
        return style, False

    # ------------------------------------------------------------------ tiles (the server's and the seeder's)
    def tile_key(self, conn: Connection, state: RasterState, style: str, ts: TileSet, matrix_id: str, row: int,
                 col: int, fmt: str) -> TileKey:
        return TileKey(state.layer.name, f"map-{style}", ts.id, self.tile_version(conn, state), matrix_id, row, col,
                       fmt)

    def build(self, state: RasterState, key: TileKey) -> bytes:
        """The tile of ``key`` (b"" without data), stored in the cache."""
        data = raster.render_raster_tile(state.layer, self.sets[key.tms], key.matrix, key.row, key.col, key.ext,
                                         key.kind.removeprefix("map-")) or b""
        self.cache.put(key, data)
        return data

    # ------------------------------------------------------------------ handlers
    def _tile(self, request: Request, collection: str, tms: str, matrix: str, row: str, col: str,
              style: str | None = None) -> Response:
        engine, t = self.database()
        with engine.connect() as conn:
            state = self.state(conn, t, collection)
            style, _ = self._style(state, style)
            ts = self._tile_set(tms)
            fmt = query_format(request, raster.FORMATS[style])
            matrix_id, r, c = parse_address(ts, matrix, row, col)
            zoom = web_mercator_zoom(ts, matrix_id)
            if not state.min_zoom <= zoom <= state.max_zoom:
                raise HTTPError(HTTPStatus.NOT_FOUND, f"{collection} has map tiles at zoom {state.min_zoom}–"
                                f"{state.max_zoom} (WebMercatorQuad levels); {ts.id} {matrix_id} is zoom {zoom}")
            lim = next((x for x in state.limits[ts.id] if x.matrix == matrix_id), None)
            if lim is None or not lim.contains(r, c):
                raise HTTPError(HTTPStatus.NOT_FOUND, f"tile {matrix_id}/{r}/{c} is outside the tileMatrixSetLimits "
                                f"of {collection} in {ts.id}")
            key = self.tile_key(conn, state, style, ts, matrix_id, r, c, fmt)
        etag = 'W/"' + digest(key.version, self.base_url, request.url.path, fmt) + '"'
        headers = {"ETag": etag, "Cache-Control": f"public, max-age={self.settings.max_age}"}
        if not_modified(request, etag):
            return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
        cached = self.cache.get(key)
        data = cached.data if cached is not None else self.build(state, key)
        return tile_response(request, data, False, raster.MEDIA_TYPES[fmt], headers)

    def _tilesets(self, request: Request, collection: str, style: str | None = None) -> Response:
        query_format(request, ("json",))
        engine, t = self.database()
        with engine.connect() as conn:
            state = self.state(conn, t, collection)
        style_id, default = self._style(state, style)
        media = {f: raster.MEDIA_TYPES[f] for f in raster.FORMATS[style_id]}
        doc = tilesets.map_tileset_list(self.base_url, collection, None if default else style_id,
                                        list(self.sets.values()), media)
        return Response(json.dumps(doc, ensure_ascii=False), media_type=tilesets.JSON,
                        headers={"Cache-Control": f"public, max-age={self.settings.max_age}"})

    def _tileset(self, request: Request, collection: str, tms: str, style: str | None = None) -> Response:
        engine, t = self.database()
        with engine.connect() as conn:
            state = self.state(conn, t, collection)
        style_id, default = self._style(state, style)
        ts = self._tile_set(tms)
        f = query_format(request, ("json", "tilejson"))
        media = {fmt: raster.MEDIA_TYPES[fmt] for fmt in raster.FORMATS[style_id]}
        lims = state.limits[ts.id]
        if f == "tilejson":
            doc = tilesets.map_tilejson(self.base_url, collection, style_id, default, ts, next(iter(media)),
                                        state.version, state.extent_crs84, lims)
            media_type = tilesets.TILEJSON
        else:
            doc = tilesets.map_tileset(self.base_url, collection, style_id, default, ts, media, state.version,
                                       state.extent_crs84, lims)
            media_type = tilesets.JSON
        return Response(json.dumps(doc, ensure_ascii=False), media_type=media_type,
                        headers={"Cache-Control": f"public, max-age={self.settings.max_age}"})
