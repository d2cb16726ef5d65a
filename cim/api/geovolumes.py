"""OGC API – 3D GeoVolumes (draft, opengeospatial/ogcapi-3d-geovolumes): the CIM layers as 3D containers.

The draft puts 3D containers in an OGC API ``/collections``; ours is taken by the Features collections
(pygeoapi), so the GeoVolumes API has its own root, ``/3dgeovolumes``, with a landing page, conformance,
``/3dgeovolumes/collections`` and ``/3dgeovolumes/collections/{id}``. Each layer with 3D tilesets is one
container (same id as its Features collection) with:

- a 3D ``extent.spatial.bbox`` (lon, lat, min height, lon, lat, max height) in CRS84h: the horizontal
  extent of the stored footprints and the range of the stored heights, converted to ellipsoidal heights
  with the configured geoid grid (passed through without one, as the tilesets do);
- ``links`` to its 3D Tiles tileset per CIM level with the draft's relation ``ogc-rel:3d-geovolumes`` and
  3D Tiles' media type, and to its 3TZ archives (``enclosure``);
- ``content``, the earlier drafts' (and the 3D Container pilot's) list of distributions: ``rel: original``,
  ``type: application/json+3dtiles``, as clients of that generation read it.

The Features collection documents (``/collections`` and ``/collections/{id}``, pygeoapi's JSON) get links
to their geovolume and tilesets through :class:`GeoVolumeLinks`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

from sqlalchemy import Connection, Engine, func, select
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Scope

from cim.api.middleware import BodyRewriter
from cim.crs import transformer
from cim.db.models import CIMTables
from cim.db.queries import extent_statements
from cim.db.schema import read_meta
from cim.db.versions import layer_version
from cim.tiles.endpoints import HTTPError, exception_response
from cim.tiles3d.archive import MEDIA_TYPE as TZ_MEDIA_TYPE
from cim.tiles3d.endpoints import TILES3D_MEDIA_TYPE, tileset_url
from cim.tiles3d.geodesy import geodesy
from cim.tiles3d.specs import LAYER_SPECS

__all__ = ["CONFORMANCE", "GeoVolumeLinks", "GeoVolumesEndpoints", "REL_GEOVOLUMES"]

ROOT = "/3dgeovolumes"
REL_GEOVOLUMES = "http://www.opengis.net/def/rel/ogc/1.0/3d-geovolumes"
PILOT_3DTILES = "application/json+3dtiles"  # the pilot's content type for a 3D Tiles distribution
CRS84H = "http://www.opengis.net/def/crs/OGC/0/CRS84h"
CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-common-2/1.0/conf/collections",
    "https://www.opengis.net/spec/ogcapi-geovolumes-1/1.0/conf/core",
    "https://www.opengis.net/spec/ogcapi-geovolumes-1/1.0/conf/3d-tiles",
]


def default_level(layer: str) -> int:
    """The level a viewer shows first: roofs for buildings (CIM3), spaces for interiors (CIM5), …"""
    levels = LAYER_SPECS[layer].levels
    return 3 if 3 in levels else levels[0]


def geovolume_links(base_url: str, collection: str, layer: str) -> list[dict[str, str]]:
    """Links from anything describing ``collection`` to its geovolume and its tilesets."""
    links = [{"rel": REL_GEOVOLUMES, "type": "application/json", "title": "3D GeoVolume (3D container)",
              "href": f"{base_url}{ROOT}/collections/{collection}"}]
    for lv in LAYER_SPECS[layer].levels:
        links.append({"rel": REL_GEOVOLUMES, "type": TILES3D_MEDIA_TYPE, "title": f"3D Tiles 1.1 tileset, CIM{lv}",
                      "href": tileset_url(base_url, collection, lv)})
    return links


@dataclass
class GeoVolumesEndpoints:
    database: Callable[[], tuple[Engine, CIMTables]]
    collections: dict[str, str]  # collection id → layer (only layers with 3D tilesets)
    titles: dict[str, Any]  # pygeoapi resource titles: a string or {language: text}
    base_url: str
    geoid_grid: str | None = None
    max_age: int = 60
    _extents: dict[tuple[str, int], list[float] | None] = field(init=False, default_factory=dict)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.collections = {c: layer for c, layer in self.collections.items() if layer in LAYER_SPECS}

    def routes(self) -> list[Route]:
        return [Route(ROOT, self._endpoint(self._landing)), Route(f"{ROOT}/", self._endpoint(self._landing)),
                Route(f"{ROOT}/conformance", self._endpoint(self._conformance)),
                Route(f"{ROOT}/collections", self._endpoint(self._collections)),
                Route(f"{ROOT}/collections/{{collection}}", self._endpoint(self._collection))]

    def _endpoint(self, handler: Callable[..., Response]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            try:
                for name in request.query_params:
                    if name != "f" or request.query_params["f"] != "json":
                        raise HTTPError(HTTPStatus.BAD_REQUEST, f"unknown query parameter or value {name!r} "
                                        "(only f=json)")
                return await run_in_threadpool(handler, request, **request.path_params)
            except HTTPError as exc:
                return exception_response(exc)

        return endpoint

    def _json(self, doc: dict[str, Any]) -> Response:
        return Response(json.dumps(doc, ensure_ascii=False), media_type="application/json",
                        headers={"Cache-Control": f"public, max-age={self.max_age}"})

    # ------------------------------------------------------------------ extents
    def _extent(self, conn: Connection, t: CIMTables, layer: str) -> list[float] | None:
        """[lon, lat, h, lon, lat, h] (CRS84h) of the layer's stored objects, once per data version."""
        key = (layer, layer_version(conn, t, layer))
        if key in self._extents:
            return self._extents[key]
        co = t.city_object
        x0, y0, x1, y1 = conn.execute(extent_statements(t, conn.dialect.name, layer)[0]).one()
        z0, z1 = conn.execute(select(func.min(co.c.min_z), func.max(co.c.max_z)).where(co.c.layer == layer)).one()
        value = None
        if x0 is not None:
            srid = int(t.city_object.c.geom.type.srid)
            lon0, lat0, lon1, lat1 = transformer(srid, "OGC:CRS84").transform_bounds(x0, y0, x1, y1, densify_pts=21)
            value = [round(lon0, 7), round(lat0, 7), None, round(lon1, 7), round(lat1, 7), None]
            if z0 is not None:
                meta = read_meta(conn)
                vertical = int(meta["vertical_srid"]) if meta.get("vertical_srid") else None
                geo = geodesy(srid, vertical, self.geoid_grid)
                cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
                _, _, h = geo.geodetic([cx, cx], [cy, cy], [float(z0), float(z1)])
                value[2], value[5] = round(float(h[0]), 3), round(float(h[1]), 3)
            else:
                value[2], value[5] = 0.0, 0.0
        with self._lock:
            if len(self._extents) > 256:
                self._extents.clear()
            self._extents[key] = value
        return value

    def _container(self, conn: Connection, t: CIMTables, collection: str) -> dict[str, Any]:
        layer = self.collections[collection]
        spec = LAYER_SPECS[layer]
        url = f"{self.base_url}{ROOT}/collections/{collection}"
        doc: dict[str, Any] = {
            "id": collection,
            "title": _title(self.titles.get(collection), spec.title),
            "description": f"{spec.title} as 3D Tiles 1.1 at CIM levels {', '.join(map(str, spec.levels))}; "
                           "each feature names its CIM object (EXT_mesh_features, EXT_structural_metadata)",
            "collectionType": "3d-container",
            "links": [{"rel": "self", "type": "application/json", "href": url},
                      {"rel": "collection", "type": "application/json", "title": "the Features collection",
                       "href": f"{self.base_url}/collections/{collection}"}],
            "content": [],
        }
        bbox = self._extent(conn, t, layer)
        if bbox is not None:
            doc["extent"] = {"spatial": {"bbox": [bbox], "crs": CRS84H}}
        for lv in spec.levels:
            href = tileset_url(self.base_url, collection, lv)
            doc["links"].append({"rel": REL_GEOVOLUMES, "type": TILES3D_MEDIA_TYPE, "title": f"CIM{lv}", "href": href})
            doc["links"].append({"rel": "enclosure", "type": TZ_MEDIA_TYPE, "title": f"CIM{lv} as a 3D Tiles archive",
                                 "href": href.removesuffix("tileset.json") + "package.3tz"})
            doc["content"].append({"rel": "original", "type": PILOT_3DTILES, "title": f"CIM{lv}", "href": href,
                                   **({"default": True} if lv == default_level(layer) else {})})
        return doc

    # ------------------------------------------------------------------ handlers
    def _landing(self, request: Request) -> Response:
        u = f"{self.base_url}{ROOT}"
        return self._json({"title": "Benxi CIM: OGC API - 3D GeoVolumes",
                           "description": "The CIM layers as 3D containers with 3D Tiles 1.1 distributions",
                           "links": [{"rel": "self", "type": "application/json", "href": u},
                                     {"rel": "conformance", "type": "application/json", "href": f"{u}/conformance"},
                                     {"rel": "data", "type": "application/json", "href": f"{u}/collections"},
                                     {"rel": "service-desc", "type": "application/vnd.oai.openapi+json;version=3.0",
                                      "href": f"{self.base_url}/openapi"}]})

    def _conformance(self, request: Request) -> Response:
        return self._json({"conformsTo": ["http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/core",
                                          "http://www.opengis.net/spec/ogcapi-common-1/1.0/conf/json", *CONFORMANCE]})

    def _collections(self, request: Request) -> Response:
        engine, t = self.database()
        with engine.connect() as conn:
            containers = [self._container(conn, t, c) for c in self.collections]
        u = f"{self.base_url}{ROOT}/collections"
        return self._json({"collections": containers, "links": [{"rel": "self", "type": "application/json", "href": u}]})

    def _collection(self, request: Request, collection: str) -> Response:
        if collection not in self.collections:
            raise HTTPError(HTTPStatus.NOT_FOUND, f"no 3D container {collection!r}; 3D containers: "
                            f"{', '.join(self.collections)}")
        engine, t = self.database()
        with engine.connect() as conn:
            return self._json(self._container(conn, t, collection))


def _title(title: Any, default: str) -> str:
    if isinstance(title, dict):
        en, zh = title.get("en"), title.get("zh")
        return f"{en} ({zh})" if en and zh else str(en or zh or default)
    return str(title or default)


class GeoVolumeLinks(BodyRewriter):
    """Adds each 3D-capable Features collection's links to its geovolume and tilesets (pygeoapi's JSON of
    ``/collections`` and ``/collections/{id}``)."""

    def __init__(self, app: ASGIApp, collections: dict[str, str], base_url: str) -> None:
        super().__init__(app)
        self.collections = {c: layer for c, layer in collections.items() if layer in LAYER_SPECS}
        self.base_url = base_url.rstrip("/")

    def applies(self, scope: Scope) -> bool:
        parts = scope.get("path", "").rstrip("/").split("/")
        return parts[1:2] == ["collections"] and len(parts) in (2, 3)

    def buffers(self, content_type: bytes, status: int) -> bool:
        return content_type.startswith(b"application/json") and status == 200

    def _patch(self, c: dict[str, Any]) -> None:
        layer = self.collections.get(c.get("id", ""))
        if layer is not None and isinstance(c.get("links"), list):
            c["links"].extend(geovolume_links(self.base_url, c["id"], layer))

    def rewrite(self, scope: Scope, body: bytes) -> bytes:
        doc = json.loads(body)
        if isinstance(doc.get("collections"), list):
            for c in doc["collections"]:
                self._patch(c)
        else:
            self._patch(doc)
        return json.dumps(doc, ensure_ascii=False).encode()
