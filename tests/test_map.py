"""The /map page and its MapLibre style, in a real headless Chromium (WebGL through SwiftShader).

The page loads MapLibre GL JS from our own static route, the style from /map/style.json and the combined
vector tiles from /tiles; the browser reports what it drew and what ``queryRenderedFeatures`` finds where a
known building (asked of the database) stands.
"""

from __future__ import annotations

import json
import subprocess
from urllib.parse import urlparse

import pytest
from sqlalchemy import text

from .conftest import ROOT

JS = ROOT / "tests" / "js"


@pytest.fixture(scope="module")
def known_buildings(demo_db) -> list[tuple[str, float, float]]:
    """Three buildings near the centre with a point well inside each (CRS84), from SQL."""
    engine = demo_db.engine()
    geom_from_text = "GeomFromText" if engine.dialect.name == "sqlite" else "ST_GeomFromText"
    centre = f"ST_Transform({geom_from_text}('POINT(123.77 41.30)', 4490), 4550)"
    # the centre of the largest circle inside the footprint would be better; a point on the surface of
    # the footprint shrunk by 2 m is well inside at zoom 17 (1.2 m per pixel)
    inner = "ST_Transform(ST_PointOnSurface(ST_Buffer(geom, -2)), 4490)"
    sql = (f"SELECT uid, ST_X({inner}), ST_Y({inner}) FROM city_object WHERE layer = 'buildings' "
           f"AND ST_Area(geom) > 400 ORDER BY ST_Distance(geom, {centre}), uid LIMIT 3")
    with engine.connect() as conn:
        rows = [(r[0], float(r[1]), float(r[2])) for r in conn.execute(text(sql))]
    engine.dispose()
    assert len(rows) == 3
    return rows


def test_style_uses_only_our_tiles_and_layers(http):
    style = http.get("/map/style.json").json()
    assert style["version"] == 8
    assert "glyphs" not in style and "sprite" not in style  # offline: nothing to fetch from elsewhere
    assert all(layer["type"] != "symbol" for layer in style["layers"])
    (source,) = style["sources"].values()
    tilejson = http.get(urlparse(source["url"]).path + "?" + urlparse(source["url"]).query).json()
    served = {v["id"] for v in tilejson["vector_layers"]}
    used = {layer["source-layer"] for layer in style["layers"] if "source-layer" in layer}
    assert used == served  # every collection drawn, none invented
    kinds = {layer["id"]: layer["type"] for layer in style["layers"]}
    assert kinds["buildings"] == "fill-extrusion" and kinds["pipelines"] == "line" and kinds["pipe-nodes"] == "circle"
    height = json.dumps(next(x for x in style["layers"] if x["id"] == "buildings")["paint"]["fill-extrusion-height"])
    assert '"height"' in height
    pipe_colour = next(x for x in style["layers"] if x["id"] == "pipelines")["paint"]["line-color"]
    assert pipe_colour[:2] == ["match", ["get", "pipe_kind"]]
    w, s, e, n = tilejson["bounds"]
    assert w < style["center"][0] < e and s < style["center"][1] < n


def test_map_page_serves_bundled_maplibre(http):
    page = http.get("/map")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "/cim-static/maplibre-gl/maplibre-gl.mjs" in page.text and "unpkg" not in page.text
    js = http.get("/cim-static/maplibre-gl/maplibre-gl.mjs")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert "6.17.0" in js.text[:300]  # the version pinned in cim/web/package.json
    assert http.get("/cim-static/maplibre-gl/maplibre-gl-worker.mjs").status_code == 200
    assert http.get("/map", params={"f": "xml"}).status_code == 400


@pytest.mark.slow
def test_map_renders_the_city_in_headless_chromium(server, known_buildings, tmp_path):
    if not (JS / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is not installed in tests/js (scripts/install.sh runs npm ci there)")
    shot = tmp_path / "map.png"
    points = [[lon, lat] for _, lon, lat in known_buildings]
    proc = subprocess.run(["node", str(JS / "render-map.mjs"), f"{server.url}/map", str(tmp_path / "chromium"),
                           str(shot), json.dumps(points)], capture_output=True, text=True, timeout=300, cwd=JS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert "error" not in out, out["error"]
    assert out["console"] == [] and out["failed"] == []
    assert all(url.startswith(server.url) or url.startswith("data:") for url in out["requests"])  # offline
    assert any("/tiles/WebMercatorQuad/" in url for url in out["requests"])
    # non-blank: most of the canvas is drawn over the background, in many colours
    assert out["drawn"]["share"] > 0.3 and out["drawn"]["colours"] > 50
    assert shot.stat().st_size > 10_000
    for (uid, lon, lat), found in zip(known_buildings, out["queries"], strict=True):
        buildings = [f for f in found if f["sourceLayer"] == "buildings"]
        assert [f["id"] for f in buildings] == [uid], (uid, lon, lat, found)
        assert buildings[0]["layer"] == "buildings"
