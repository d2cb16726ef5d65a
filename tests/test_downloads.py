"""The cim-download process: GeoPackage / FlatGeobuf of chosen layers in a bbox, over HTTP."""

from __future__ import annotations

import pyogrio
import pytest
import shapely

from .conftest import wait_for_job

URL = "/processes/cim-download/execution"
BBOX = [123.765, 41.295, 123.775, 41.302]


def download(http, tmp_path, name, **inputs):
    r = http.post(URL, json={"inputs": inputs, "response": "raw"}, timeout=120)
    assert r.status_code == 200, r.text[:500]
    path = tmp_path / name
    path.write_bytes(r.content)
    return r, path


def test_geopackage_of_several_layers(http, tmp_path):
    r, path = download(http, tmp_path, "planner.gpkg", layers=["buildings", "roads", "pipe-nodes"], bbox=BBOX)
    assert r.headers["content-type"] == "application/geopackage+sqlite3"
    assert {name for name, _ in pyogrio.list_layers(path)} == {"buildings", "roads", "pipe-nodes"}
    for layer in ("buildings", "roads", "pipe-nodes"):
        api = http.get(f"/collections/{layer}/items",
                       params={"f": "json", "bbox": ",".join(map(str, BBOX)), "limit": 10000}).json()
        info = pyogrio.read_info(path, layer=layer)
        assert info["features"] == api["numberMatched"] > 0 and info["crs"] == "EPSG:4550"
        _meta, _fids, wkb, fields = pyogrio.raw.read(path, layer=layer)
        ids = set(fields[list(_meta["fields"]).index("id")])
        assert ids == {f["id"] for f in api["features"]}
        xy = shapely.get_coordinates(shapely.from_wkb(wkb))
        assert (5.5e5 < xy[:, 0]).all() and (xy[:, 0] < 5.8e5).all() and (4.56e6 < xy[:, 1]).all()  # E, N


def test_flatgeobuf_in_cgcs2000_lonlat(http, tmp_path):
    r, path = download(http, tmp_path, "pipes.fgb", layers=["pipelines"], bbox=BBOX, format="fgb", crs="EPSG:4490")
    assert r.headers["content-type"] == "application/flatgeobuf"
    _meta, _fids, wkb, _fields = pyogrio.raw.read(path)
    xy = shapely.get_coordinates(shapely.from_wkb(wkb))
    assert len(xy) and (123.7 < xy[:, 0]).all() and (xy[:, 0] < 123.8).all()  # files are x/y: lon first


@pytest.mark.parametrize("inputs,fragment", [
    ({"layers": ["nope"], "bbox": BBOX}, "layers"),
    ({"layers": ["roads", "bridges"], "bbox": BBOX, "format": "fgb"}, "one layer"),
    ({"layers": ["roads"], "bbox": [1, 2, 3]}, "bbox"),
    ({"layers": ["roads"], "bbox": BBOX, "crs": "EPSG:4978"}, "2D"),
    ({"layers": ["roads"], "bbox": BBOX, "format": "shp"}, "format"),
])
def test_bad_requests(http, inputs, fragment):
    r = http.post(URL, json={"inputs": inputs, "response": "raw"})
    assert r.status_code == 400 and fragment in r.json()["description"]


def test_async_job_with_status_and_result(http, tmp_path):
    """Prefer: respond-async → 201 and a job URL; the job runs, reports its status, and its result is the
    same GeoPackage a synchronous request returns."""
    inputs = {"layers": ["buildings", "roads"], "bbox": BBOX}
    r = http.post(URL, json={"inputs": inputs, "response": "raw"}, headers={"Prefer": "respond-async"})
    assert r.status_code == 201, r.text[:500]
    job_url = r.headers["location"]
    assert "/jobs/" in job_url
    status, results = wait_for_job(http, job_url)
    got = http.get(results)
    assert got.status_code == 200 and got.headers["content-type"] == "application/geopackage+sqlite3"
    (tmp_path / "job.gpkg").write_bytes(got.content)
    _, sync_path = download(http, tmp_path, "sync.gpkg", **inputs)
    for layer in ("buildings", "roads"):
        a = pyogrio.raw.read(tmp_path / "job.gpkg", layer=layer)
        b = pyogrio.raw.read(sync_path, layer=layer)
        assert a[0]["fields"].tolist() == b[0]["fields"].tolist() and len(a[2]) == len(b[2]) > 0
        assert list(a[3][0]) == list(b[3][0])  # the ids, in order
    listed = http.get("/jobs", params={"f": "json", "limit": 1000}).json()["jobs"]  # other tests made jobs too
    assert any(j["jobID"] == status["jobID"] for j in listed)
