"""The HTML pages in a real headless browser, offline: the bundled Leaflet draws the features on the map."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def render(url: str, tmp_path) -> str:
    if CHROMIUM is None:
        pytest.fail("chromium is not installed (scripts/install.sh installs it with the test extras)")
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=8000", "--dump-dom", url],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


@pytest.mark.parametrize("layer,limit", [("buildings", 40), ("pipelines", 25), ("building-components", 30)])
def test_items_page_draws_features_on_the_map(server, tmp_path, layer, limit):
    dom = render(f"{server.url}/collections/{layer}/items?f=html&limit={limit}", tmp_path)
    assert "leaflet-container" in dom  # Leaflet loaded from our own server and ran
    drawn = len(re.findall(r'<path class="leaflet-interactive"', dom))
    assert drawn == limit
