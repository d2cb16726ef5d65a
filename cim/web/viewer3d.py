"""The 3D viewer page (``/3d``): CesiumJS, bundled from npm (``cim/web/package.json``) and served by us, over the 3D
Tiles of the CIM collections (buildings, a building's interior, the pipe network), with picking that shows
each object's properties (EXT_structural_metadata).

Offline by construction: no Cesium ion token, no default imagery, geocoder or base layer picker, and every
script, worker and asset comes from our static route (``CESIUM_BASE_URL``).
"""

from __future__ import annotations

import json

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from cim.web import STATIC_URL, WEB_DIR

__all__ = ["CESIUM_DIR", "CESIUM_URL", "viewer_routes"]

# CesiumJS's built bundle (Cesium.js, Workers, Assets, Widgets, ThirdParty) as npm installs it (cim/web/package.json)
CESIUM_DIR = WEB_DIR / "node_modules" / "cesium" / "Build" / "Cesium"
CESIUM_URL = f"{STATIC_URL}/cesium"
PAGE = WEB_DIR / "static" / "viewer3d" / "index.html"


def viewer_routes(base_url: str) -> list[BaseRoute]:
    """``/3d`` and the CesiumJS bundle (mounted before the general static route, which it sits inside)."""
    base_url = base_url.rstrip("/")
    config = {"baseUrl": base_url, "cesiumBaseUrl": f"{base_url}{CESIUM_URL}/",
              "static": f"{base_url}{STATIC_URL}/viewer3d"}

    async def page(request: Request) -> HTMLResponse:
        if not (CESIUM_DIR / "Cesium.js").is_file():
            return HTMLResponse("<h1>3D viewer unavailable</h1><p>CesiumJS is not installed: run "
                                "<code>bash scripts/install.sh</code> (npm ci in cim/web).</p>", status_code=503)
        html = PAGE.read_text(encoding="utf-8").replace("{{CONFIG}}", json.dumps(config))
        html = html.replace("{{CESIUM}}", config["cesiumBaseUrl"]).replace("{{STATIC}}", config["static"])
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    async def unavailable(request: Request) -> JSONResponse:
        return JSONResponse({"code": "NotFound", "description": "CesiumJS is not installed (npm ci in cim/web)"},
                            status_code=404)

    cesium = (Mount(CESIUM_URL, app=StaticFiles(directory=CESIUM_DIR), name="cesium") if CESIUM_DIR.is_dir()
              else Route(CESIUM_URL + "/{path:path}", unavailable))
    return [Route("/3d", page), cesium]
