"""The HTML pages in a real headless browser (Chromium driven by playwright-core, tests/js/page.mjs), offline:
the bundled Leaflet draws the features on the map."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import AUTH_HEADERS

JS = Path(__file__).resolve().parent / "js"


def open_page(url: str, tmp_path, headers: dict[str, str] | None = None, wait_for: str | None = None) -> dict:
    """The page's report (tests/js/page.mjs): console errors, failed requests, DOM, the wait expression's value."""
    node = shutil.which("node")
    if node is None or not (JS / "node_modules" / "playwright-core").exists():
        pytest.fail("node and tests/js/node_modules are needed (scripts/install.sh installs them with the test extras)")
    if not Path("/usr/bin/chromium").exists():
        pytest.fail("chromium is not installed (scripts/install.sh installs it with the test extras)")
    proc = subprocess.run([node, str(JS / "page.mjs"), url, str(tmp_path / "chromium"), json.dumps(headers or {}),
                           *([wait_for] if wait_for else [])], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads(proc.stdout)
    assert "error" not in report, report["error"]
    return report


@pytest.mark.parametrize("layer,limit", [("buildings", 40), ("pipelines", 25), ("building-components", 30)])
def test_items_page_draws_features_on_the_map(server, tmp_path, layer, limit):
    page = open_page(f"{server.url}/collections/{layer}/items?f=html&limit={limit}", tmp_path, AUTH_HEADERS,
                     "document.querySelectorAll('path.leaflet-interactive').length > 0")
    dom = page["dom"]
    assert "leaflet-container" in dom  # Leaflet loaded from our own server and ran
    drawn = len(re.findall(r'<path class="leaflet-interactive"', dom))
    assert drawn == limit
    assert not page["console"] and not page["failed"], (page["console"], page["failed"])
