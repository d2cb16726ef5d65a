"""HTTP routes of the quantized-mesh terrain, for ``CesiumTerrainProvider.fromUrl('/terrain')``.

- ``/terrain/layer.json``: the layer description (tile URL template, available tiles per level, extensions);
- ``/terrain/{z}/{x}/{y}.terrain``: a tile (``application/vnd.quantized-mesh``), with the
  ``octvertexnormals`` extension when the client asks for it in ``Accept``
  (``application/vnd.quantized-mesh;extensions=octvertexnormals``, as Cesium does with
  ``requestVertexNormals``) or with ``?extensions=octvertexnormals``.

Tiles come from the pre-built folder (``cim terrain build``) while it holds the current version of the DEM,
and are made on demand otherwise (0.1–0.5 s each; the last 512 are kept in memory). ``ETag`` (weak) is the terrain version: the DEM's row and
file, the terrain layer's data version, the geoid grid and the settings; a conditional GET is a 304 after
one key read and two file stats. gzip comes from the app's middleware (tiles of 1 KB or more). A tile
outside ``layer.json``'s ``available`` ranges, or any tile when no DEM is registered, is a 404; a malformed
address or an unknown query parameter a 400 (OGC exception JSON).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cim.db.models import CIMTables
from cim.db.schema import read_meta
from cim.settings import TerrainSettings
from cim.tiles.endpoints import HTTPError, exception_response, not_modified
from cim.tiles3d.geodesy import geodesy
from cim.tiles3d.terrain import EXTENSION, NoTerrain, Terrain, find_dem, prebuilt_path, prebuilt_version, terrain_version

QUANTIZED_MESH = "application/vnd.quantized-mesh"
QUERY = ("v", "extensions")
RECENT_TILES = 512


def wants_normals(request: Request) -> bool:
    """Whether the client asked for the octvertexnormals extension (Accept parameter or query)."""
    asked: list[str] = []
    for part in request.headers.get("accept", "").split(","):
        for param in part.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "extensions":
                asked += value.strip().strip('"').split("-")
    asked += request.query_params.get("extensions", "").split("-")
    return EXTENSION in asked


@dataclass
class TerrainEndpoints:
    """The routes, with their dependencies as fields (the shared engine comes from the API layer)."""

    database: Callable[[], tuple[Engine, CIMTables]]
    settings: TerrainSettings
    data_dir: Path
    geoid_grid: str | None = None
    _terrains: dict[str, Terrain] = field(init=False, default_factory=dict)
    # the last tiles made on demand (a few KB each): viewers ask for the same tiles again and again
    _recent: OrderedDict[tuple[str, int, int, int, bool], bytes] = field(init=False, default_factory=OrderedDict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def routes(self) -> list[Route]:
        return [Route("/terrain/layer.json", self._endpoint(self._layer_json)),
                Route("/terrain/{z}/{x}/{y}.terrain", self._endpoint(self._tile))]

    def _endpoint(self, handler: Callable[..., Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                for name in request.query_params:
                    if name not in QUERY:
                        raise HTTPError(HTTPStatus.BAD_REQUEST, f"unknown query parameter {name!r}; "
                                        f"allowed: {', '.join(QUERY)}")
                return await run_in_threadpool(handler, request, **request.path_params)
            except HTTPError as exc:
                return exception_response(exc)
            except NoTerrain as exc:
                return exception_response(HTTPError(HTTPStatus.NOT_FOUND, str(exc)))

        return endpoint

    def _terrain(self) -> Terrain:
        """The terrain of the current DEM version (built once per version and process)."""
        engine, t = self.database()
        with engine.connect() as conn:
            meta = read_meta(conn)
            dem = find_dem(conn, t, self.data_dir, self.settings.raster)
            version = terrain_version(conn, t, dem, meta, self.settings, self.geoid_grid)
        terrain = self._terrains.get(version)
        if terrain is None:
            vertical = dem.vertical_srid or (int(meta["vertical_srid"]) if meta.get("vertical_srid") else None)
            terrain = Terrain(dem, geodesy(dem.srid, vertical, self.geoid_grid), self.settings, version)
            with self._lock:
                if len(self._terrains) > 8:
                    self._terrains.clear()
                self._terrains[version] = terrain
        return terrain

    def _headers(self, terrain: Terrain, variant: str) -> dict[str, str]:
        etag = 'W/"' + hashlib.blake2b(f"{terrain.version}:{variant}".encode(), digest_size=16).hexdigest() + '"'
        return {"ETag": etag, "Cache-Control": f"public, max-age={self.settings.max_age}"}

    def _layer_json(self, request: Request) -> Response:
        terrain = self._terrain()
        headers = self._headers(terrain, "layer.json")
        if not_modified(request, headers["ETag"]):
            return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
        body = json.dumps(terrain.layer_json(), ensure_ascii=False).encode("utf-8")
        return Response(body, media_type="application/json", headers=headers)

    def _tile(self, request: Request, z: str, x: str, y: str) -> Response:
        try:
            zi, xi, yi = int(z), int(x), int(y)
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"tile address {z}/{x}/{y}: three integers z/x/y") from None
        terrain = self._terrain()
        if not terrain.available(zi, xi, yi):
            raise HTTPError(HTTPStatus.NOT_FOUND, f"terrain tile {zi}/{xi}/{yi} is outside the available tiles "
                            f"(levels 0–{terrain.max_level}; see /terrain/layer.json)")
        normals = wants_normals(request)
        headers = self._headers(terrain, f"{zi}/{xi}/{yi}:{int(normals)}")
        headers["Vary"] = "Accept"
        if not_modified(request, headers["ETag"]):
            return Response(status_code=HTTPStatus.NOT_MODIFIED, headers=headers)
        data = None
        out_dir = self.settings.out_dir
        if prebuilt_version(out_dir) == terrain.version:
            try:
                data = prebuilt_path(out_dir, zi, xi, yi, normals).read_bytes()
            except OSError:
                data = None
        if data is None:
            key = (terrain.version, zi, xi, yi, normals)
            data = self._recent.get(key)
            if data is None:
                data = terrain.tile(zi, xi, yi, normals)
                with self._lock:
                    self._recent[key] = data
                    while len(self._recent) > RECENT_TILES:
                        self._recent.popitem(last=False)
        media_type = QUANTIZED_MESH + (f";extensions={EXTENSION}" if normals else "")
        return Response(data, media_type=media_type, headers=headers)
