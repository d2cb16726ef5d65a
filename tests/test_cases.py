"""Cases of the operations platform over HTTP: Part 4 writes with If-Match, history, reads, bad input."""

from __future__ import annotations

import threading
import uuid

import pytest

from cim.crs.gcj import wgs84_to_gcj02


ITEMS = "/collections/cases/items"
GCJ02 = "urn:benxi-cim:crs:GCJ-02"
LON, LAT = 123.7712, 41.3003  # WGS 84, in the demo district


def case(type_code="BJ0101", status="reported", lon=LON, lat=LAT, **props):
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"case_type": type_code, "case_status": status, "reported_at": "2026-12-05T08:30:00+08:00",
                           "description": "井盖缺失, 人行道上", **props}}


def count(http) -> int:
    return http.get(ITEMS, params={"f": "json", "limit": 1}).json()["numberMatched"]


def new_id() -> str:
    return f"T-{uuid.uuid4().hex[:10]}"


def test_create_from_gaode_read_replace_patch_delete_with_history(http):
    gx, gy = wgs84_to_gcj02(LON, LAT)  # what a phone on a Gaode map reports
    uid = new_id()
    body = {**case(lon=float(gx), lat=float(gy)), "id": uid}
    r = http.post(ITEMS, json=body, headers={"Content-Crs": f"<{GCJ02}>", "Content-Type": "application/geo+json"})
    assert r.status_code == 201, r.text
    assert r.headers["location"].endswith(f"{ITEMS}/{uid}")
    got = http.get(r.headers["location"], params={"f": "json"})
    assert got.status_code == 200
    f = got.json()
    lon, lat = f["geometry"]["coordinates"]
    assert abs(lon - LON) < 1e-7 and abs(lat - LAT) < 1e-7  # GCJ-02 undone exactly (545 m offset at Benxi)
    p = f["properties"]
    assert p["case_type"] == "BJ0101" and p["case_status"] == "reported" and p["revision"] == 1
    assert p["name"] == "上水井盖" and p["reported_at"] == "2026-12-05T00:30:00Z"
    assert p["valid_from"] == "2026-12-05T00:30:00Z" and "valid_to" not in p
    assert p["reported_location"]["crs"] == GCJ02
    etag1 = got.headers["etag"]
    assert etag1.startswith('"r1-')
    # the same in GCJ-02 for the Gaode screen
    back = http.get(f"{ITEMS}/{uid}", params={"f": "json", "crs": GCJ02}).json()["geometry"]["coordinates"]
    assert abs(back[0] - gx) < 1e-7 and abs(back[1] - gy) < 1e-7

    # readable like every collection: bbox, datetime, filter
    bbox = f"{LON - 0.001},{LAT - 0.001},{LON + 0.001},{LAT + 0.001}"
    ids = lambda **q: {x["id"] for x in http.get(ITEMS, params={"f": "json", "limit": 1000, **q}).json()["features"]}  # noqa: E731
    assert uid in ids(bbox=bbox)
    assert uid not in ids(bbox=f"{LON + 0.01},{LAT},{LON + 0.02},{LAT + 0.01}")
    assert uid in ids(datetime="2026-12-05T00:30:00Z/..") and uid not in ids(datetime="../2026-12-04T00:00:00Z")
    assert uid in ids(filter="case_type='BJ0101' AND case_status='reported'")
    assert uid not in ids(filter="case_status='closed'")

    # PUT replaces (If-Match from the GET), in CRS84 this time
    r = http.put(f"{ITEMS}/{uid}", json=case(status="registered", lon=LON + 0.0001), headers={"If-Match": etag1})
    assert r.status_code == 204, r.text
    assert r.headers["etag"] == '"r2"'
    f = http.get(f"{ITEMS}/{uid}", params={"f": "json"}).json()
    assert f["properties"]["case_status"] == "registered" and f["properties"]["revision"] == 2
    assert abs(f["geometry"]["coordinates"][0] - (LON + 0.0001)) < 1e-9

    # PATCH: a merge patch; null removes a property; the location is kept exactly
    r = http.patch(f"{ITEMS}/{uid}", json={"properties": {"case_status": "closed", "description": None}},
                   headers={"If-Match": r.headers["etag"], "Content-Type": "application/merge-patch+json"})
    assert r.status_code == 204, r.text
    g = http.get(f"{ITEMS}/{uid}", params={"f": "json"}).json()
    assert g["properties"]["case_status"] == "closed" and "description" not in g["properties"]
    assert g["geometry"] == f["geometry"] and g["properties"]["valid_to"] > g["properties"]["valid_from"]
    assert uid not in ids(datetime="2030-01-01T00:00:00Z")  # closed: no longer current

    # DELETE, then gone; the history keeps every version
    etag = http.get(f"{ITEMS}/{uid}", params={"f": "json"}).headers["etag"]
    assert http.delete(f"{ITEMS}/{uid}", headers={"If-Match": etag}).status_code == 204
    assert http.get(f"{ITEMS}/{uid}", params={"f": "json"}).status_code == 404
    h = http.get(f"{ITEMS}/{uid}/history")
    assert h.status_code == 200
    versions = h.json()["features"]
    assert [v["properties"]["operation"] for v in versions] == ["create", "replace", "update", "delete"]
    assert [v["properties"]["revision"] for v in versions] == [1, 2, 3, 4]
    assert [v["properties"]["case_status"] for v in versions] == ["reported", "registered", "closed", "closed"]
    assert versions[0]["properties"]["description"] == "井盖缺失, 人行道上"
    assert abs(versions[0]["geometry"]["coordinates"][0] - LON) < 1e-7


def test_if_match_required_and_stale_refused(http):
    r = http.post(ITEMS, json=case())
    url = r.headers["location"]
    etag = http.get(url, params={"f": "json"}).headers["etag"]
    assert http.put(url, json=case(status="dispatched")).status_code == 428
    assert http.patch(url, json={"properties": {"case_status": "dispatched"}}, headers={"If-Match": etag}).status_code == 204
    for method in ("put", "patch", "delete"):  # the first ETag is stale now
        kwargs = {} if method == "delete" else {"json": case(status="cancelled") if method == "put" else
                                                {"properties": {"case_status": "cancelled"}}}
        r = getattr(http, method)(url, headers={"If-Match": etag}, **kwargs)
        assert r.status_code == 412, (method, r.text)
        assert "stale" in r.json()["description"]
    f = http.get(url, params={"f": "json"}).json()
    assert f["properties"]["case_status"] == "dispatched" and f["properties"]["revision"] == 2
    assert http.put(f"{ITEMS}/no-such-case", json=case(), headers={"If-Match": '"r1"'}).status_code == 404


def test_concurrent_updates_exactly_one_wins(http, server):
    import httpx

    url = http.post(ITEMS, json=case()).headers["location"]
    etag = http.get(url, params={"f": "json"}).headers["etag"]
    results: list[int] = []
    start = threading.Barrier(8)

    def edit(i: int) -> None:
        with httpx.Client(timeout=60, headers=http.headers) as c:  # the fixture's credentials, if any
            start.wait()
            r = c.patch(url, json={"properties": {"case_status": "dispatched", "worker": str(i)}},
                        headers={"If-Match": etag})
            results.append(r.status_code)

    threads = [threading.Thread(target=edit, args=(i,)) for i in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [204] + [412] * 7
    f = http.get(url, params={"f": "json"}).json()
    assert f["properties"]["revision"] == 2
    history = http.get(f"{url}/history").json()["features"]
    assert len(history) == 2 and history[1]["properties"]["worker"] == f["properties"]["worker"]


def test_concurrent_creates_of_one_id_one_wins(http, server):
    import httpx

    uid = new_id()
    before = count(http)
    results: list[int] = []
    start = threading.Barrier(8)

    def post() -> None:
        with httpx.Client(timeout=60, headers=http.headers) as c:  # the fixture's credentials, if any
            start.wait()
            results.append(c.post(f"{server.url}{ITEMS}", json={**case(), "id": uid}).status_code)

    threads = [threading.Thread(target=post) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(results) == [201] + [409] * 7
    assert count(http) == before + 1
    assert len(http.get(f"{ITEMS}/{uid}/history").json()["features"]) == 1


@pytest.mark.parametrize("body,fragment", [
    ("{not json", "not JSON"),
    ({"type": "Feature", "geometry": {"type": "Point", "coordinates": [LON, LAT]}, "properties": {}}, "case_type"),
    (case(type_code="BJ9999"), "'BJ9999' is not one of"),
    (case(status="lost"), "case_status"),
    (case(lon=116.39, lat=39.91), "outside the city"),  # Beijing
    (case(reported_at="2026-12-05 08:30"), "time zone"),
    ({**case(), "geometry": {"type": "LineString", "coordinates": [[LON, LAT], [LON, LAT + 0.001]]}}, "geometry"),
    ({**case(), "crs": "EPSG:99999"}, "crs"),
    ({**case(), "id": "has spaces"}, "id"),
])
def test_bad_cases_refused_with_reasons_nothing_stored(http, body, fragment):
    before = count(http)
    kwargs = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, str) else {"json": body}
    r = http.post(ITEMS, **kwargs)
    assert r.status_code == 400, r.text
    doc = r.json()
    assert doc["code"] == "InvalidParameterValue" and fragment in doc["description"], doc
    assert count(http) == before


def test_duplicate_id_conflicts_and_oversized_body(http):
    uid = new_id()
    assert http.post(ITEMS, json={**case(), "id": uid}).status_code == 201
    before = count(http)
    r = http.post(ITEMS, json={**case(), "id": uid})
    assert r.status_code == 409 and uid in r.json()["description"]
    r = http.post(ITEMS, json=case(description="x" * 100_000))
    assert r.status_code == 413
    assert count(http) == before


def test_part4_conformance_and_collection(http):
    conf = http.get("/conformance", params={"f": "json"}).json()["conformsTo"]
    assert "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/create-replace-delete" in conf
    assert "http://www.opengis.net/spec/ogcapi-features-4/1.0/conf/update" in conf
    c = http.get("/collections/cases", params={"f": "json"}).json()
    assert c["id"] == "cases" and GCJ02 in c["crs"]
    q = http.get("/collections/cases/queryables", params={"f": "json"}).json()["properties"]
    assert {"case_type", "case_status"} <= set(q)
    paths = http.get("/openapi", params={"f": "json"}).json()["paths"]
    assert {"post"} <= set(paths[ITEMS]) and {"put", "patch", "delete"} <= set(paths[ITEMS + "/{featureId}"])
    assert "get" in paths[ITEMS + "/{featureId}/history"] and "post" in paths["/vehicle-tracks/fixes"]

