"""The ASGI application: pygeoapi's Starlette app mounted beside our own routes.

``create_app`` is a factory (``uvicorn --factory cim.api.app:create_app``) so every worker process builds
its own app, engine and pool after the server has forked.
"""

from __future__ import annotations

import os

import yaml

from starlette.applications import Starlette
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cim.api.config import STATIC_URL, prepare
from cim.api.features import CollectionCRSMetadata, FeaturesEndpoint
from cim.api.middleware import OfflineAssets
from cim.db.engine import open_engine
from cim.settings import get_settings
from cim.web import STATIC_DIR

async def healthz(request: Request) -> JSONResponse:
    """Liveness and database reachability."""
    from cim.api.provider import database

    engine, _ = database(get_settings().database_url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as exc:  # reported, not raised: this is the health check
        return JSONResponse({"status": "error", "database": str(exc).splitlines()[0]}, status_code=503)
    return JSONResponse({"status": "ok", "database": engine.dialect.name})


def create_app() -> Starlette:
    settings = get_settings()
    if "PYGEOAPI_CONFIG" not in os.environ or "PYGEOAPI_OPENAPI" not in os.environ:
        engine = open_engine(settings.database_url)
        try:
            prepare(settings, engine)
        finally:
            engine.dispose()
    # pygeoapi reads its configuration at import time: only now may its app module be imported
    from pygeoapi.starlette_app import APP as pygeoapi_app

    pygeoapi_app.debug = False  # no tracebacks to clients
    with open(os.environ["PYGEOAPI_CONFIG"], encoding="utf-8") as fh:
        cfg = yaml.safe_load(fh)
    layers = {name: p for name, res in cfg.get("resources", {}).items() for p in res.get("providers", [])
              if p.get("name") == "cim.api.provider.CIMProvider"}
    url, limits = cfg["server"]["url"], cfg["server"].get("limits", {})
    app = Starlette(routes=[
        Route("/healthz", healthz),
        Mount(STATIC_URL, app=StaticFiles(directory=STATIC_DIR), name="cim-static"),
        Route("/collections/{collection}/items", FeaturesEndpoint(pygeoapi_app, layers, url, limits, single=False)),
        Route("/collections/{collection}/items/{feature}",
              FeaturesEndpoint(pygeoapi_app, layers, url, limits, single=True)),
        Mount("/", app=pygeoapi_app),
    ])
    # the last added runs outermost: gzip must see the bodies the rewriting middlewares produce
    app.add_middleware(OfflineAssets)
    app.add_middleware(CollectionCRSMetadata, layers=set(layers), storage_srid=settings.storage_crs)
    app.add_middleware(GZipMiddleware, minimum_size=1024, compresslevel=5)  # level 9 cost 23 ms on 800 KB
    return app
