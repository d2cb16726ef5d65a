"""The ASGI application: pygeoapi's Starlette app mounted beside our own routes.

``create_app`` is a factory (``uvicorn --factory cim.api.app:create_app``) so every worker process builds
its own app, engine and pool after the server has forked.
"""

from __future__ import annotations

import json
import gc
import os

import yaml

from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Scope

from cim.api.cases import CONFORMANCE as CASES_CONFORMANCE, CaseEndpoints
from cim.api.auth import AuthMiddleware, ListingScrubber, Policy
from cim.api.config import STATIC_URL, prepare
from cim.api import logs, metrics
from cim.api.features import CollectionCRSMetadata, FeaturesEndpoint
from cim.api.health import healthz, readyz
from cim.api.limits import BodyLimit, install_handlers
from cim.api.geovolumes import CONFORMANCE as GEOVOLUMES_CONFORMANCE, GeoVolumeLinks, GeoVolumesEndpoints
from cim.api.indicators import IndicatorEndpoints
from cim.api.jobs import ProcessExecutions, dismiss_route
from cim.api.coverage import CoverageBBox
from cim.api.middleware import BodyRewriter, OfflineAssets
from cim.api.tracks import TrackEndpoints
from cim.api.provider import read_database, write_database
from cim.db.engine import open_engine
from cim.settings import get_settings
from cim.tiles.cache import TileCache
from cim.tiles.front import CurrentLinks, public_collections
from cim.tiles.endpoints import RasterTileEndpoints, VectorTileEndpoints
from cim.tiles.tilesets import CONFORMANCE as TILES_CONFORMANCE
from cim.tiles.tilesets import MAP_CONFORMANCE
from cim.tiles3d.endpoints import Tiles3DEndpoints
from cim.tiles3d.served import cache_root
from cim.tiles3d.terrain_endpoints import TerrainEndpoints
from cim.web import CHARTJS_DIR, MAPLIBRE_DIR, STATIC_DIR
from cim.web.viewer3d import viewer_routes

class Conformance(BodyRewriter):
    """Adds conformance classes our own routes implement (vector tiles) to pygeoapi's /conformance."""

    def __init__(self, app: ASGIApp, classes: list[str]) -> None:
        super().__init__(app)
        self.classes = classes

    def applies(self, scope: Scope) -> bool:
        return scope.get("path", "").rstrip("/") == "/conformance"

    def buffers(self, content_type: bytes, status: int) -> bool:
        return content_type.startswith(b"application/json") and status == 200

    def rewrite(self, scope: Scope, body: bytes) -> bytes:
        doc = json.loads(body)
        doc["conformsTo"] = list(dict.fromkeys(doc.get("conformsTo", []) + self.classes))
        return json.dumps(doc, ensure_ascii=False).encode()


def _audit(entries: list[dict]) -> None:
    """Audit entries into the database, in a transaction of their own (cim.db.audit)."""
    from cim.db.audit import write_entries

    engine, _ = write_database()
    with engine.begin() as conn:
        write_entries(conn, entries)


def create_app() -> Starlette:
    settings = get_settings()
    logs.configure(settings.log_format)
    if "PYGEOAPI_CONFIG" not in os.environ or "PYGEOAPI_OPENAPI" not in os.environ:
        engine = open_engine(settings.database_url)
        try:
            prepare(settings, engine)
        finally:
            engine.dispose()
    # pygeoapi reads its configuration at import time: only now may its app module be imported
    from pygeoapi.starlette_app import APP as pygeoapi_app, api_ as pygeoapi_api

    pygeoapi_app.debug = False  # no tracebacks to clients
    with open(os.environ["PYGEOAPI_CONFIG"], encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    layers = {name: p for name, res in cfg.get("resources", {}).items() for p in res.get("providers", [])
              if p.get("name") == "cim.api.provider.CIMProvider"}
    url, limits = cfg["server"]["url"], cfg["server"].get("limits", {})
    from cim.api.overlay import set_served_url

    set_served_url(url)  # the overlay process's links: this server's URL, not whatever the config file says later
    collection_layers = {name: str(p["data"]) for name, p in layers.items()}
    cache = TileCache(settings.tile_cache_dir if settings.tile_cache else None, counter=metrics.tile_cache)
    tiles = VectorTileEndpoints(read_database, collection_layers, url, settings.tiles, cache)
    if settings.tile_cache and settings.tile_cache_links_s:  # for a front nginx (cim deploy nginx)
        CurrentLinks(tiles, public_collections(collection_layers, settings.auth.restricted, settings.auth.enabled),
                     settings.tile_cache_links_s).start()
    map_tiles = RasterTileEndpoints(read_database, url, settings.data_dir, settings.tiles, cache)
    grid = None if settings.geoid_grid is None else str(settings.geoid_grid)
    tiles3d = Tiles3DEndpoints(read_database, collection_layers, url, cache_root(settings.data_dir),
                               settings.tiles3d.out_dir, grid, settings.tiles.max_age, settings.tiles3d)
    titles = {name: res.get("title", name) for name, res in cfg.get("resources", {}).items()}
    geovolumes = GeoVolumesEndpoints(read_database, collection_layers, titles, url, grid, settings.tiles.max_age)
    app = Starlette(routes=[
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics.metrics_endpoint),
        # MapLibre GL JS for /map, from npm (cim/web/package.json, installed by scripts/install.sh)
        Mount(f"{STATIC_URL}/maplibre-gl", app=StaticFiles(directory=MAPLIBRE_DIR, check_dir=False)),
        *viewer_routes(url),  # /3d and CesiumJS (cim/web/package.json too)
        # Chart.js for /dashboard, from npm (the same package.json)
        Mount(f"{STATIC_URL}/chart.js", app=StaticFiles(directory=CHARTJS_DIR, check_dir=False)),
        Mount(STATIC_URL, app=StaticFiles(directory=STATIC_DIR), name="cim-static"),
        *CaseEndpoints(write_database, url, settings.ops).routes(),  # before the read routes of the same paths
        *TrackEndpoints(write_database, settings.ops).routes(),
        *IndicatorEndpoints(read_database, url).routes(),
        Route("/collections/{collection}/items", FeaturesEndpoint(pygeoapi_app, layers, url, limits, single=False)),
        Route("/collections/{collection}/items/{feature}",
              FeaturesEndpoint(pygeoapi_app, layers, url, limits, single=True)),
        *tiles.routes(),
        *map_tiles.routes(),
        *TerrainEndpoints(read_database, settings.terrain, settings.data_dir,
                          str(settings.geoid_grid) if settings.geoid_grid else None).routes(),
        *tiles3d.routes(),
        *geovolumes.routes(),
        dismiss_route(pygeoapi_api),
        Mount("/", app=pygeoapi_app),
    ])
    # the last added runs outermost: gzip must see the bodies the rewriting middlewares produce
    app.add_middleware(OfflineAssets)
    app.add_middleware(ProcessExecutions)  # execute requests checked; a synchronous one names no job (inside auth)
    app.add_middleware(CoverageBBox)  # pygeoapi answers a bad coverage bbox with a 500
    app.add_middleware(Conformance, classes=TILES_CONFORMANCE + MAP_CONFORMANCE + CASES_CONFORMANCE
                                               + GEOVOLUMES_CONFORMANCE)
    app.add_middleware(GeoVolumeLinks, collections=collection_layers, base_url=url)
    app.add_middleware(CollectionCRSMetadata, layers=set(layers), storage_srid=settings.storage_crs)
    policy = Policy(settings.auth, [n for n, r in cfg.get("resources", {}).items() if r.get("type") == "collection"],
                    list(layers))
    app.add_middleware(ListingScrubber, policy=policy)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)  # level 9 cost 23 ms on 800 KB
    # who may read and write what (cim.auth); inside the body limit and the request log, which see its refusals
    app.add_middleware(AuthMiddleware, policy=policy, audit=_audit if settings.auth.audit_database else None,
                       jobs_dir=settings.data_dir / "jobs")
    app.add_middleware(BodyLimit, max_bytes=settings.limits.max_body_bytes)
    app.add_middleware(logs.RequestLog)  # outermost: sees every answer, and times it
    install_handlers(app, settings.limits)  # 503 + Retry-After when the database cannot answer, 413
    install_handlers(pygeoapi_app, settings.limits)
    # pygeoapi, pyproj and the app leave ~1M long-lived objects that every full collection walked again:
    # frozen, the longest GC pause in a 1000-feature-page window fell from 120-410 ms to 23-84 ms
    gc.freeze()
    return app
