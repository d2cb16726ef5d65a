"""Static web assets: bundled copies of the JavaScript and CSS the HTML pages use (no CDN at run time).

``static/``: files committed here (Leaflet, Bootstrap, Swagger UI); ``node_modules/``: the npm packages of
``package.json`` (MapLibre GL JS, Chart.js), installed by scripts/install.sh with ``npm ci``; ``map.html``: the /map page.
"""

from pathlib import Path

WEB_DIR = Path(__file__).parent
STATIC_DIR = WEB_DIR / "static"
TEMPLATES_DIR = WEB_DIR / "templates"  # pygeoapi templates of ours, searched before its own (server.templates.path)
STATIC_URL = "/cim-static"  # where the app serves STATIC_DIR
MAPLIBRE_DIR = WEB_DIR / "node_modules" / "maplibre-gl" / "dist"  # served at STATIC_URL/maplibre-gl
MAP_PAGE = WEB_DIR / "map.html"
CHARTJS_DIR = WEB_DIR / "node_modules" / "chart.js" / "dist"  # served at STATIC_URL/chart.js
