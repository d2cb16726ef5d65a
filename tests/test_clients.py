"""Real OGC API clients against the running server: OWSLib and GDAL's OAPIF driver (ogrinfo, ogr2ogr)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pyogrio
import pytest
import shapely
from owslib.ogcapi.features import Features

from .conftest import AUTH_HEADERS

BBOX = (123.76, 41.29, 123.78, 41.31)


def matched(http, layer: str, **params) -> int:
    return http.get(f"/collections/{layer}/items", params={"f": "json", "limit": 1, **params}).json()["numberMatched"]


def test_owslib(server, http):
    w = Features(server.url, headers=AUTH_HEADERS)
    ids = {c["id"] for c in w.collections()["collections"]}
    assert {"buildings", "building-components", "pipelines", "pipe-nodes", "roads", "bridges", "terrain"} <= ids
    items = w.collection_items("pipe-nodes", limit=5, bbox=list(BBOX))
    assert items["numberMatched"] == matched(http, "pipe-nodes", bbox=",".join(map(str, BBOX)))
    assert len(items["features"]) == 5
    assert "floors" in w.collection_queryables("buildings")["properties"]
    one = w.collection_item("pipe-nodes", items["features"][0]["id"])
    assert one["id"] == items["features"][0]["id"]


def gdal(*args: str) -> subprocess.CompletedProcess:
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} is not installed (scripts/install.sh installs gdal-bin with the test extras)")
    headers = "\n".join(f"{k}: {v}" for k, v in AUTH_HEADERS.items())
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=300,
                          env={**os.environ, "GDAL_HTTP_HEADERS": headers})
    assert proc.returncode == 0, proc.stderr
    return proc


def test_ogrinfo_sees_every_layer_and_its_count(server, http):
    out = gdal("ogrinfo", "-ro", "-so", f"OAPIF:{server.url}", "buildings").stdout
    count = int(re.search(r"Feature Count: (\d+)", out).group(1))
    assert count == matched(http, "buildings")
    layers = gdal("ogrinfo", "-ro", "-q", f"OAPIF:{server.url}").stdout
    for layer in ("buildings", "pipelines", "pipe-nodes", "roads", "bridges"):
        assert layer in layers


def test_ogr2ogr_download_with_bbox_and_where(server, http, tmp_path):
    out = tmp_path / "downtown.gpkg"
    gdal("ogr2ogr", "-f", "GPKG", str(out), f"OAPIF:{server.url}", "buildings", "-oo", "PAGE_SIZE=1000",
         "-spat", *map(str, BBOX), "-where", "floors > 6")
    info = pyogrio.read_info(out, layer="buildings")
    want = matched(http, "buildings", bbox=",".join(map(str, BBOX)), filter="floors > 6")
    assert info["features"] == want > 0
    _meta, _fids, wkb, fields = pyogrio.raw.read(out, layer="buildings")
    assert shapely.is_valid(shapely.from_wkb(wkb)).all()
    assert info["crs"] in ("EPSG:4326", "OGC:CRS84")
