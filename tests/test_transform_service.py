"""The coordinate transformation service: the OGC API – Processes `coordinate-transform` over HTTP, and
`cim transform` on the command line."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cim.crs import gcj

from .conftest import run_cim

URL = "/processes/coordinate-transform/execution"
E_CHECK, N_CHECK = 564489.714, 4574176.348


def execute(http, **inputs):
    return http.post(URL, json={"inputs": inputs})


def test_process_is_listed(http):
    ids = {p["id"] for p in http.get("/processes", params={"f": "json"}).json()["processes"]}
    assert "coordinate-transform" in ids


def test_check_point_in_both_axis_orders(http):
    r = execute(http, source_crs="http://www.opengis.net/def/crs/OGC/1.3/CRS84", target_crs="EPSG:4550",
                coordinates=[[123.77, 41.30]])
    assert r.status_code == 200, r.text
    (n, e), = r.json()["coordinates"]  # EPSG:4550's own order: north, east
    assert n == pytest.approx(N_CHECK, abs=1e-3) and e == pytest.approx(E_CHECK, abs=1e-3)
    r = execute(http, source_crs="EPSG:4490", target_crs="EPSG:4550", coordinates=[[123.77, 41.30]], axis_order="xy")
    (e, n), = r.json()["coordinates"]
    assert n == pytest.approx(N_CHECK, abs=1e-3) and e == pytest.approx(E_CHECK, abs=1e-3)
    # EPSG:4490 input in its own order: latitude first
    r = execute(http, source_crs="EPSG:4490", target_crs="EPSG:4550", coordinates=[[41.30, 123.77]])
    (n, e), = r.json()["coordinates"]
    assert n == pytest.approx(N_CHECK, abs=1e-3)


def test_feature_collection_to_bd09_keeps_properties(http):
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": "manhole-1", "properties": {"部件编码": "2105020102000001"},
         "geometry": {"type": "Point", "coordinates": [123.77, 41.30]}},
        {"type": "Feature", "properties": {"n": 2}, "geometry": None},
        {"type": "Feature", "properties": {}, "geometry": {"type": "LineString",
                                                           "coordinates": [[123.77, 41.30], [123.78, 41.31]]}},
    ]}
    r = execute(http, source_crs="OGC:CRS84", target_crs="urn:benxi-cim:crs:BD-09", geometry=fc)
    assert r.status_code == 200, r.text
    out = r.json()["geometry"]
    assert out["features"][0]["properties"] == {"部件编码": "2105020102000001"} and out["features"][0]["id"] == "manhole-1"
    assert out["features"][1]["geometry"] is None
    want = gcj.wgs84_to_bd09(123.77, 41.30)
    assert out["features"][0]["geometry"]["coordinates"] == pytest.approx(list(want), abs=1e-12)
    assert len(out["features"][2]["geometry"]["coordinates"]) == 2


@pytest.mark.slow
def test_a_million_points(http):
    rng = np.random.default_rng(5)
    pts = np.column_stack([rng.uniform(123.6, 124.4, 1_000_000), rng.uniform(41.0, 41.5, 1_000_000)])
    body = json.dumps({"inputs": {"source_crs": "OGC:CRS84", "target_crs": "EPSG:4550", "axis_order": "xy",
                                  "coordinates": np.round(pts, 7).tolist()}})
    r = http.post(URL, content=body, headers={"Content-Type": "application/json"}, timeout=300)
    assert r.status_code == 200
    out = np.asarray(r.json()["coordinates"])
    assert out.shape == (1_000_000, 2) and np.isfinite(out).all()
    assert 480_000 < out[:, 0].min() and out[:, 0].max() < 640_000


@pytest.mark.parametrize("inputs,fragment", [
    ({"source_crs": "EPSG:2000", "target_crs": "EPSG:4550", "coordinates": [[1, 2]]}, "supported: "),
    ({"source_crs": "OGC:CRS84", "target_crs": "EPSG:4550", "coordinates": [[2.35, 48.85]]}, "outside the area"),
    ({"source_crs": "OGC:CRS84", "target_crs": "EPSG:4550", "coordinates": [[123.7, 41.3], [123.7, "x"]]},
     "coordinates[1]"),
    ({"source_crs": "OGC:CRS84", "target_crs": "EPSG:4550",
      "geometry": {"type": "FeatureCollection", "features": [
          {"type": "Feature", "properties": {}, "geometry": {"type": "Point", "coordinates": [123.7, 41.3]}},
          {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}]}},
     "input.features[1].geometry"),
    ({"source_crs": "OGC:CRS84", "target_crs": "EPSG:4550"}, "exactly one of geometry and coordinates"),
    ({"target_crs": "EPSG:4550", "coordinates": [[1, 2]]}, "source_crs"),
    ({"source_crs": "OGC:CRS84", "target_crs": "EPSG:4550", "coordinates": [[123.7, 41.3]], "axis_order": "yx"},
     "axis_order"),
])
def test_bad_input_is_a_400_naming_the_part(http, inputs, fragment):
    r = http.post(URL, json={"inputs": inputs})
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["code"] == "InvalidParameterValue" and fragment in body["description"]


def test_cli_transform(tmp_path):
    proc = run_cim("transform", "--from", "EPSG:4490", "--to", "EPSG:4550", "--point", "41.30,123.77", check=True)
    (n, e), = json.loads(proc.stdout)
    assert n == pytest.approx(N_CHECK, abs=1e-3) and e == pytest.approx(E_CHECK, abs=1e-3)
    src = tmp_path / "in.geojson"
    src.write_text(json.dumps({"type": "Point", "coordinates": [123.77, 41.30]}))
    proc = run_cim("transform", "--from", "OGC:CRS84", "--to", "urn:benxi-cim:crs:GCJ-02", str(src), check=True)
    assert json.loads(proc.stdout)["coordinates"] == pytest.approx(list(gcj.wgs84_to_gcj02(123.77, 41.30)), abs=1e-12)
    bad = tmp_path / "bad.geojson"
    bad.write_text('{"type": "Point", "coordinates": [123.77, ')
    proc = run_cim("transform", "--from", "OGC:CRS84", "--to", "EPSG:4550", str(bad))
    assert proc.returncode == 1 and "bad.geojson" in proc.stderr and "line 1" in proc.stderr
    proc = run_cim("transform", "--from", "OGC:CRS84", "--to", "EPSG:4550", "--point", "2.3,48.8")
    assert proc.returncode == 1 and "outside the area of use" in proc.stderr
