"""HTTP routes for 3D Tiles 1.1: tilesets of the CIM collections on demand, their 3TZ archives, and the
pre-built tilesets of ``cim 3dtiles build`` as static files.

- ``/collections/{id}/3dtiles``: the collection's tilesets, one per CIM level (JSON);
- ``/collections/{id}/3dtiles/{level}/tileset.json``: the tileset (``application/json``), its content at
  ``…/{level}/content/{k}/{ix}/{iy}.glb`` (``model/gltf-binary``; the addresses of :mod:`cim.tiles3d.quadtree`);
- ``/collections/{id}/3dtiles/{level}/package.3tz``: the whole tileset as one 3D Tiles archive (3TZ);
- ``/3dtiles/…``: the folder ``cim 3dtiles build`` writes to, as static files
  (e.g. ``/3dtiles/buildings/cim3/tileset.json``).

Tilesets are built on first request and cached per collection and level (:mod:`cim.tiles3d.served`),
rebuilt incrementally after a data change. Responses carry a weak ``ETag`` made of the database id, the
data versions of the layers shown (and of the layers their properties name), the tile code and the path:
a conditional GET is answered 304 from one key read per layer, before any tile work.
``Cache-Control: public, max-age`` comes from ``cim.tiles.max_age``.

Bad requests are OGC exception JSON: an unknown collection, a CIM level the collection has no tilesets
at (or no geometry at), or a tile that is not in the tileset is a 404; a malformed tile address or an
unknown query parameter a 400. Never a broken GLB: content is only ever a whole file the build wrote.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.exceptions import HTTPException
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from cim import __version__
from cim.db.models import CIMTables
from cim.db.schema import read_meta
from cim.db.versions import layer_version
from cim.tiles.endpoints import LINKED_LAYERS, HTTPError, exception_response, not_modified
from cim.tiles3d.archive import MEDIA_TYPE as TZ_MEDIA_TYPE
from cim.tiles3d.errors import Tiles3DError
from cim.tiles3d.served import ServedTileset, served_key
from cim.tiles3d.specs import LAYER_SPECS, Tiles3DSettings, check_request

__all__ = ["GLB", "TILESET_JSON", "Tiles3DEndpoints", "tileset_url"]

GLB = "model/gltf-binary"
TILESET_JSON = "application/json"
# 3D Tiles' own media type, as OGC API - 3D GeoVolumes links name it
TILES3D_MEDIA_TYPE = "application/3dtiles+json"
mimetypes.add_type(GLB, ".glb")  # for the static pre-built tilesets (Python 3.12 does not know .glb)


def tileset_url(base_url: str, collection: str, level: int) -> str:
    return f"{base_url}/collections/{collection}/3dtiles/{level}/tileset.json"


class PrebuiltTilesets(StaticFiles):
    """The pre-built folder as static files (ETag, Last-Modified, 304, ranges from Starlette), with OGC
    exception JSON for what is not there, also while no tileset has been built yet."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if not Path(self.directory or "").is_dir():
            return exception_response(HTTPError(HTTPStatus.NOT_FOUND, "no pre-built 3D tilesets yet "
                                                "(cim 3dtiles build writes them)"))
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            return exception_response(HTTPError(exc.status_code, f"{path}: {exc.detail}"))


@dataclass
class Tiles3DEndpoints:
    """The routes, with their dependencies as fields (the shared engine comes from the API layer)."""

    database: Callable[[], tuple[Engine, CIMTables]]
    collections: dict[str, str]  # collection id → CIM layer (only layers with 3D tilesets are served)
    base_url: str
    cache_dir: Path  # on-demand tilesets: <cache_dir>/<collection>/cim<level>/
    prebuilt_dir: Path  # what `cim 3dtiles build` writes, served under /3dtiles
    geoid_grid: str | None = None
    max_age: int = 60
    settings: Tiles3DSettings = field(default_factory=Tiles3DSettings)
    _database_ids: dict[str, str] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.collections = {c: layer for c, layer in self.collections.items() if layer in LAYER_SPECS}

    def routes(self) -> list[BaseRoute]:
        base = "/collections/{collection}/3dtiles"
        return [
            Route(base, self._endpoint(self._list)),
            Route(f"{base}/{{level}}/tileset.json", self._endpoint(self._tileset)),
            Route(f"{base}/{{level}}/package.3tz", self._endpoint(self._package)),
            Route(f"{base}/{{level}}/content/{{k}}/{{ix}}/{{name}}", self._endpoint(self._content)),
            Mount("/3dtiles", app=PrebuiltTilesets(directory=self.prebuilt_dir, check_dir=False), name="3dtiles-prebuilt"),
        ]

    def _endpoint(self, handler: Callable[..., Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                return await run_in_threadpool(handler, request, **request.path_params)
            except HTTPError as exc:
                return exception_response(exc)
            except Tiles3DError as exc:  # nothing to draw at that level, an unknown level
                return exception_response(HTTPError(HTTPStatus.NOT_FOUND, str(exc)))

        return endpoint

    # ------------------------------------------------------------------ checks
    def levels(self, collection: str) -> tuple[int, ...]:
        return LAYER_SPECS[self.collections[collection]].levels

    def _layer(self, collection: str) -> str:
        if collection not in self.collections:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no 3D tilesets for collection {collection!r}; "
                            f"collections with 3D tilesets: {', '.join(self.collections)}")
        return self.collections[collection]

    def _level(self, collection: str, level: str) -> int:
        layer = self._layer(collection)
        try:
            value = int(level.lower().removeprefix("cim"))
        except ValueError:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"{level!r} is not a CIM level; {collection} has 3D tilesets at "
                            f"CIM levels {', '.join(map(str, self.levels(collection)))}") from None
        check_request([layer], value)  # BadLevel (a Tiles3DError) names the levels there are
        return value

    @staticmethod
    def _no_query(request: Request) -> None:
        for name in request.query_params:
            # v: what CesiumJS appends to every request of a tileset with asset.tilesetVersion (a cache buster)
            if name != "v":
                raise HTTPError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {name!r}")

    # ------------------------------------------------------------------ state
    def _database_id(self, conn: Connection) -> str:
        key = str(conn.engine.url)
        if key not in self._database_ids:
            self._database_ids[key] = str(read_meta(conn).get("database_id", ""))
        return self._database_ids[key]

    def _served(self, collection: str, level: int) -> ServedTileset:
        return ServedTileset(self.cache_dir / collection / f"cim{level}", (self.collections[collection],), level,
                             self.settings, self.geoid_grid)

    def _key(self, conn: Connection, t: CIMTables, layer: str) -> str:
        versions = {name: layer_version(conn, t, name) for name in (layer, *LINKED_LAYERS.get(layer, ()))}
        return served_key(self._database_id(conn), versions, self.settings, self.geoid_grid)

    def _headers(self, key: str, request: Request) -> dict[str, str]:
        etag = hashlib.blake2b(json.dumps([key, __version__, self.base_url, request.url.path]).encode(),
                               digest_size=16).hexdigest()
        return {"ETag": f'W/"{etag}"', "Cache-Control": f"public, max-age={self.max_age}"}

    def _prepare(self, request: Request, collection: str, level: str) -> tuple[ServedTileset, str, dict[str, str]]:
        lv = self._level(collection, level)
        self._no_query(request)
        engine, t = self.database()
        with engine.connect() as conn:
            key = self._key(conn, t, self.collections[collection])
        return self._served(collection, lv), key, self._headers(key, request)

    # ------------------------------------------------------------------ handlers
    def _list(self, request: Request, collection: str) -> Response:
        self._layer(collection)
        self._no_query(request)
        spec = LAYER_SPECS[self.collections[collection]]
        doc = {"id": collection, "title": f"{spec.title}: 3D Tiles 1.1", "tilesets": [
            {"cimLevel": lv, "title": f"{spec.title} at CIM{lv}", "links": [
                {"rel": "http://www.opengis.net/def/rel/ogc/1.0/3d-geovolumes", "type": TILES3D_MEDIA_TYPE,
                 "title": f"3D Tiles tileset, CIM{lv}", "href": tileset_url(self.base_url, collection, lv)},
                {"rel": "enclosure", "type": TZ_MEDIA_TYPE, "title": f"3D Tiles archive (3TZ), CIM{lv}",
                 "href": f"{self.base_url}/collections/{collection}/3dtiles/{lv}/package.3tz"}]}
            for lv in spec.levels],
            "links": [{"rel": "self", "type": "application/json", "href": f"{self.base_url}/collections/{collection}/3dtiles"},
                      {"rel": "collection", "type": "application/json", "href": f"{self.base_url}/collections/{collection}"}]}
        return Response(json.dumps(doc, ensure_ascii=False), media_type="application/json",
                        headers={"Cache-Control": f"public, max-age={self.max_age}"})

    def _tileset(self, request: Request, collection: str, level: str) -> Response:
        served, key, headers = self._prepare(request, collection, level)
        if not_modified(request, headers["ETag"]):
            return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
        folder = served.ensure(self.database()[0], key)
        return Response((folder / "tileset.json").read_bytes(), media_type=TILESET_JSON, headers=headers)

    def _content(self, request: Request, collection: str, level: str, k: str, ix: str, name: str) -> Response:
        lv = self._level(collection, level)
        if not name.endswith(".glb"):
            raise HTTPError(HTTPStatus.NOT_FOUND, f"tile content is k/ix/iy.glb, not {k}/{ix}/{name}")
        try:
            cell = tuple(int(v) for v in (k, ix, name.removesuffix(".glb")))
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"malformed tile address {k}/{ix}/{name}: k, ix and iy are "
                            "integers") from None
        served, key, headers = self._prepare(request, collection, level)
        if not_modified(request, headers["ETag"]):
            return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
        folder = served.ensure(self.database()[0], key)
        path = folder / "content" / str(cell[0]) / str(cell[1]) / f"{cell[2]}.glb"
        try:
            data = path.read_bytes()
        except OSError:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"tile {'/'.join(map(str, cell))} is not in the CIM{lv} tileset of "
                            f"{collection} (see its tileset.json)") from None
        return Response(data, media_type=GLB, headers=headers)

    def _package(self, request: Request, collection: str, level: str) -> Response:
        served, key, headers = self._prepare(request, collection, level)
        if not_modified(request, headers["ETag"]):
            return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
        path = served.package(self.database()[0], key)
        name = f"{collection}-cim{served.cim_level}.3tz"
        return FileResponse(path, media_type=TZ_MEDIA_TYPE, filename=name, headers=headers)
