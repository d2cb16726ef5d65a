"""The 3D viewer page (/3d) in a real headless Chromium (playwright-core from tests/js, WebGL on SwiftShader),
against the running server on both backends: CesiumJS served by us with nothing fetched elsewhere, the
buildings, a building's interior and the pipe network loaded without a console error, a screenshot that is
not blank, and a click on a known building (the camera straight above it) naming it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import numpy as np
import pytest
import rasterio
from shapely.geometry import shape

from tests.conftest import AUTH_HEADERS, ROOT

DRIVER = ROOT / "tests" / "js" / "viewer3d.mjs"


def known_building(http) -> tuple[str, float, float]:
    """A large building and a point inside its footprint (not in a courtyard)."""
    features = http.get("/collections/buildings/items", params={"limit": 40, "f": "json"}).json()["features"]
    feature = max(features, key=lambda f: shape(f["geometry"]).area)
    point = shape(feature["geometry"]).representative_point()
    return feature["id"], point.x, point.y


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")  # a PNG has no georeferencing
def test_viewer_loads_offline_and_picks_a_building(server, http, tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    if not (ROOT / "tests" / "js" / "node_modules" / "playwright-core").is_dir():
        pytest.fail("playwright-core is not installed: run scripts/install.sh (npm ci in tests/js)")
    page = http.get("/3d")
    assert page.status_code == 200, page.text
    assert "CESIUM_BASE_URL" in page.text
    uid, lon, lat = known_building(http)
    shot = tmp_path / "viewer.png"
    proc = subprocess.run([node, str(DRIVER), f"{server.url}/3d", str(shot), str(lon), str(lat), "700"],
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "CIM_TEST_HEADERS": json.dumps(AUTH_HEADERS)})  # pipes need a role
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["errors"] == [], report["errors"][:5]
    assert report["requests"] == []  # offline: every script, worker, asset and tile from our server
    assert sorted(report["tilesets"]) == ["buildings", "interior", "nodes", "pipelines"]
    assert report["terrain"] is True  # the demo's DEM as quantized-mesh from /terrain, not the ellipsoid
    assert report["pick"] is not None, "nothing picked at the building"
    assert report["pick"]["collection"] == "buildings"
    assert report["pick"]["properties"]["uid"] == uid
    assert report["pick"]["properties"]["class"] == "Building"
    with rasterio.open(shot) as img:
        pixels = img.read()[:3].astype(float)
    # the scene, not a blank canvas: many colours across the frame, the right part (no panel) included
    scene = pixels[:, :, 300:]
    assert scene.std() > 10
    assert len(np.unique(scene.reshape(3, -1).T, axis=0)) > 200
