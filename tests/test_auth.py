"""Authentication, roles and the audit trail (cim.api.auth) against the running server, on both backends.

The routes are enumerated from the app's own route table (ours and pygeoapi's, printed by a subprocess that
builds the app), so a route added later is tried too: every route that can name a collection is asked for
the restricted ones without credentials (401), with a key lacking the role (403), and must leak nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta

import httpx
import jwt
import morecantile
import pytest
from sqlalchemy import text

from cim.api.auth import names_in, scrub

from .conftest import JWT_SECRET, ROOT, TEST_KEYS, wait_for_job

RESTRICTED = ["pipelines", "pipe-nodes"]
WM = morecantile.tms.get("WebMercatorQuad")

ROUTES_SCRIPT = """
import json
from starlette.routing import Mount, Route
from cim.api.app import create_app

def walk(routes, prefix=""):
    for r in routes:
        if isinstance(r, Mount):
            yield from walk(r.routes, prefix + r.path)
            if not r.routes:  # an app without a route table (static files): its path with a parameter
                yield {"path": prefix + r.path + "/{path}", "methods": ["GET"]}
        elif isinstance(r, Route):
            yield {"path": prefix + r.path, "methods": sorted(r.methods or ["GET"])}

print(json.dumps(list(walk(create_app().routes))))
"""


def key(name: str) -> dict[str, str]:
    return {"X-API-Key": TEST_KEYS[name][0]}


@pytest.fixture(scope="session")
def route_table(server, tmp_path_factory) -> list[dict]:
    import os

    # a data dir of its own (building the app writes the effective pygeoapi config, which the server reads),
    # with the server's files (the DEM...) linked in
    data_dir = tmp_path_factory.mktemp("routes")
    for entry in server.db.data_dir.iterdir():
        if not entry.name.startswith("pygeoapi-"):
            (data_dir / entry.name).symlink_to(entry)
    data_dir = str(data_dir)
    proc = subprocess.run([sys.executable, "-c", ROUTES_SCRIPT], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, **server.db.env, "CIM_DATA_DIR": data_dir}, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    routes = json.loads(proc.stdout.strip().splitlines()[-1])
    assert any(r["path"] == "/collections/{collection}/items" for r in routes)  # ours
    assert any(r["path"].endswith("/collections/{collection_id:path}/queryables") for r in routes)  # pygeoapi's
    return routes


@pytest.fixture(scope="session")
def pipe_sample(server) -> dict:
    """Real restricted objects: their ids (what must never leak) and a tile that holds pipelines."""
    with httpx.Client(base_url=server.url, timeout=30, headers=key("tests")) as c:
        pipes = c.get("/collections/pipelines/items", params={"f": "json", "limit": 20}).json()["features"]
        nodes = c.get("/collections/pipe-nodes/items", params={"f": "json", "limit": 20}).json()["features"]
    lon, lat = pipes[0]["geometry"]["coordinates"][0][:2]
    tile = WM.tile(lon, lat, 16)
    return {"pipe": pipes[0]["id"], "node": nodes[0]["id"], "ids": [f["id"] for f in pipes + nodes],
            "tile": (tile.z, tile.y, tile.x)}


def leaks(r: httpx.Response, sample: dict) -> list[str]:
    body = r.content
    found = [i for i in sample["ids"] if i.encode() in body]
    found += [m for m in ("PipeSegment", "PipeNode", "collections/pipelines", "collections/pipe-nodes",
                          "diameter_mm") if m.encode() in body]
    if b"json" not in r.headers.get("content-type", "").encode() and b"html" not in r.headers.get(
            "content-type", "").encode():
        found += [m for m in RESTRICTED if m.encode() in body]  # binary: an MVT layer name
    return found


VALUES = {"tms": "WebMercatorQuad", "tileMatrixSetId": "WebMercatorQuad", "job_id": "0" * 32,
          "location_id": "x", "instance_id": "x", "style_id": "default", "process_id": "cim-download",
          "resource_id": "x", "path": "index.html", "z": "0", "x": "0", "y": "0",
          "level": "3", "k": "0", "ix": "0", "style": "default"}
COLLECTION_PARAMS = {"collection", "collection_id", "collectionId", "layer", "name"}


def concrete(template: str, collection: str, sample: dict) -> str:
    z, y, x = sample["tile"]
    values = {**VALUES, "feature": sample["pipe" if collection == "pipelines" else "node"],
              "matrix": str(z), "tile_matrix": str(z), "tileMatrix": str(z), "row": str(y), "tileRow": str(y),
              "col": str(x), "tileCol": str(x)}
    values["item_id"] = values["featureId"] = values["feature"]

    def sub(m: re.Match) -> str:
        name = m.group(1).split(":")[0]
        if name in COLLECTION_PARAMS:
            return collection
        assert name in values, f"route {template}: no test value for {{{name}}}: add one to VALUES"
        return values[name]

    return re.sub(r"\{([^}]+)\}", sub, template)


def test_every_route_naming_a_restricted_collection_is_refused(server, route_table, pipe_sample):
    """Anonymous → 401 with WWW-Authenticate; a key without the role → 403; OGC exception JSON; no data."""
    tried = 0
    with httpx.Client(base_url=server.url, timeout=30) as anon, \
            httpx.Client(base_url=server.url, timeout=30, headers=key("planner")) as planner:
        for route in route_table:
            named = any(p.split(":")[0] in COLLECTION_PARAMS for p in re.findall(r"\{([^}]+)\}", route["path"]))
            for collection in RESTRICTED:
                url = concrete(route["path"], collection, pipe_sample)
                for method in route["methods"]:
                    if method == "HEAD":
                        continue
                    # a route without a collection in its path names one in its query or body
                    params = {} if named else {"collections": collection}
                    body = {"inputs": {"layers": [collection], "bbox": [123.7, 41.2, 123.9, 41.4]}}
                    kw = {"json": body} if method in ("POST", "PUT", "PATCH") else {}
                    for client, status in ((anon, 401), (planner, 403)):
                        r = client.request(method, url, params=params, **kw)
                        what = f"{method} {url} {params} as {'anonymous' if client is anon else 'planner'}"
                        assert r.status_code == status, f"{what}: {r.status_code} {r.text[:300]}"
                        doc = r.json()
                        assert doc["code"] in ("NotAuthorized", "Forbidden") and doc["description"], what
                        if status == 401:
                            assert r.headers["www-authenticate"].startswith("Bearer realm="), what
                        assert not leaks(r, pipe_sample), f"{what}: leaks {leaks(r, pipe_sample)}"
                        tried += 1
    assert tried > 200


@pytest.mark.parametrize("path", ["/collections/PIPELINES/items", "/collections/pipelines/items/",
                                  "/collections/pipelines//items", "/collections/pipe%2Dnodes/items",
                                  "/collections/pipelines.json", "/collections/pipelines/items.geojson",
                                  "/collections/buildings/items?ids=x&collections=pipe-nodes",
                                  "/collections/pipelines/tiles/WebMercatorQuad/16/0/0",
                                  "/3dtiles/pipelines-cim3/tileset.json", "/collections/pipelines/queryables?f=html",
                                  "/collections/pipelines/schema", "/collections/pipelines?f=html"])
def test_spellings_of_a_restricted_path(anon, path, pipe_sample):
    r = anon.get(path)
    assert r.status_code == 401, f"{path}: {r.status_code} {r.text[:200]}"
    assert not leaks(r, pipe_sample)


def test_authorised_roles_read_restricted_collections(server, pipe_sample):
    z, y, x = pipe_sample["tile"]
    for name in ("tests", "pipe-office"):
        with httpx.Client(base_url=server.url, timeout=30, headers=key(name)) as c:
            items = c.get("/collections/pipelines/items", params={"f": "json", "limit": 5})
            assert items.status_code == 200 and len(items.json()["features"]) == 5
            assert c.get(f"/collections/pipe-nodes/items/{pipe_sample['node']}", params={"f": "json"}).json()[
                "id"] == pipe_sample["node"]
            assert c.get("/collections/pipelines/queryables", params={"f": "json"}).status_code == 200
            assert c.get("/collections/pipelines", params={"f": "html"}).status_code == 200
            tile = c.get(f"/collections/pipelines/tiles/WebMercatorQuad/{z}/{y}/{x}")
            assert tile.status_code == 200 and b"pipelines" in tile.content
            dl = c.post("/processes/cim-download/execution", json={"inputs": {
                "layers": ["pipelines"], "bbox": [123.76, 41.29, 123.78, 41.31], "format": "fgb"}, "response": "raw"})
            assert dl.status_code == 200 and dl.content[:3] == b"fgb"


def test_public_collections_stay_anonymous(anon):
    assert anon.get("/collections/buildings/items", params={"f": "json", "limit": 2}).status_code == 200
    assert anon.get("/collections/roads", params={"f": "json"}).status_code == 200
    dl = anon.post("/processes/cim-download/execution", json={"inputs": {
        "layers": ["buildings"], "bbox": [123.76, 41.29, 123.78, 41.31], "format": "fgb"}, "response": "raw"})
    assert dl.status_code == 200
    t = anon.post("/processes/coordinate-transform/execution", json={"inputs": {
        "source_crs": "OGC:CRS84", "target_crs": "EPSG:4550", "coordinates": [[123.77, 41.30]]}})
    assert t.status_code == 200


def test_listings_hide_what_anonymous_users_may_not_read(anon, http):
    for client, visible in ((anon, False), (http, True)):
        ids = {c["id"] for c in client.get("/collections", params={"f": "json"}).json()["collections"]}
        assert "buildings" in ids and ("pipelines" in ids) is visible and ("pipe-nodes" in ids) is visible
        html = client.get("/collections", params={"f": "html"}).text
        assert "/collections/buildings" in html and ("/collections/pipelines" in html) is visible
        oas = client.get("/openapi", params={"f": "json"}).json()
        assert "/collections/buildings/items" in oas["paths"]
        assert any("pipelines" in p for p in oas["paths"]) is visible
        assert any(t.get("name") == "pipe-nodes" for t in oas.get("tags", [])) is visible
        enum = client.get("/processes/cim-download", params={"f": "json"}).json()["inputs"]["layers"]["schema"]
        assert ("pipelines" in enum["items"]["enum"]) is visible and "buildings" in enum["items"]["enum"]
    assert anon.get("/jobs", params={"f": "json"}).status_code == 401


def test_writes_need_the_operations_role(server, anon):
    case = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.7712, 41.3003]},
            "properties": {"case_type": "BJ0101", "case_status": "reported", "reported_at": "2026-12-05T08:30:00+08:00"}}
    url = "/collections/cases/items"
    assert anon.post(url, json=case).status_code == 401
    assert anon.get(url, params={"f": "json"}).status_code == 200  # cases are public reading
    for name in ("planner", "pipe-office"):
        with httpx.Client(base_url=server.url, timeout=30, headers=key(name)) as c:
            for method, path in (("POST", url), ("PUT", f"{url}/x"), ("PATCH", f"{url}/x"), ("DELETE", f"{url}/x")):
                r = c.request(method, path, json=case if method != "DELETE" else None)
                assert r.status_code == 403 and r.json()["code"] == "Forbidden", (name, method, r.text)
    with httpx.Client(base_url=server.url, timeout=30, headers=key("tests")) as c:
        created = c.post(url, json=case)
        assert created.status_code == 201
        # past the middleware to the route, which answers for itself (no such case)
        assert c.delete(f"{url}/no-such-case", headers={"If-Match": '"r1"'}).status_code == 404


def token(roles, **claims) -> str:
    now = datetime.now(UTC)
    return jwt.encode({"sub": "sso-user-7", "roles": roles, "exp": now + timedelta(minutes=5), **claims},
                      claims.pop("secret", JWT_SECRET), algorithm="HS256")


def test_jwt_bearer_tokens(anon):
    url = "/collections/pipelines/items"
    ok = anon.get(url, params={"f": "json", "limit": 1}, headers={"Authorization": f"Bearer {token(['utilities'])}"})
    assert ok.status_code == 200 and ok.json()["features"]
    assert anon.get(url, headers={"Authorization": f"Bearer {token(['planning'])}"}).status_code == 403
    expired = jwt.encode({"sub": "x", "roles": ["operations"], "exp": datetime.now(UTC) - timedelta(minutes=1)},
                         JWT_SECRET, algorithm="HS256")
    forged = jwt.encode({"sub": "x", "roles": ["operations"], "exp": datetime.now(UTC) + timedelta(minutes=1)},
                        "not-the-secret-but-long-enough-for-hs256", algorithm="HS256")
    no_exp = jwt.encode({"sub": "x", "roles": ["operations"]}, JWT_SECRET, algorithm="HS256")
    for bad in (expired, forged, no_exp, "not.a.jwt"):
        r = anon.get(url, headers={"Authorization": f"Bearer {bad}"})
        assert r.status_code == 401 and 'error="invalid_token"' in r.headers["www-authenticate"]
        assert r.json()["code"] == "NotAuthorized"
    # bad credentials are refused even where none are needed; an unknown key too
    assert anon.get("/collections/buildings/items", headers={"Authorization": f"Bearer {forged}"}).status_code == 401
    assert anon.get("/collections/buildings/items", headers={"X-API-Key": "guess"}).status_code == 401
    assert anon.get("/collections/buildings/items", headers={"Authorization": "Basic dTpw"}).status_code == 401


def _audit_rows(server, after: int = 0) -> list[dict]:
    engine = server.db.engine()
    try:
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT id, at, principal, auth, action, method, path, query, collections, status "
                                     "FROM audit_log WHERE id > :i ORDER BY id"), {"i": after}).mappings().all()
    finally:
        engine.dispose()
    return [{**r, "collections": json.loads(r["collections"]) if isinstance(r["collections"], str)
             else r["collections"]} for r in rows]


def test_audit_log_records_sensitive_reads_writes_and_refusals(server, anon):
    time.sleep(0.5)  # earlier tests' entries are in
    last = max([r["id"] for r in _audit_rows(server)], default=0)
    with httpx.Client(base_url=server.url, timeout=30, headers=key("pipe-office")) as c:
        assert c.get("/collections/pipe-nodes/items", params={"f": "json", "limit": 1}).status_code == 200
        assert c.get("/collections/buildings/items", params={"f": "json", "limit": 1}).status_code == 200
    assert anon.get("/collections/pipelines/items").status_code == 401
    anon.get("/collections/roads/items", params={"f": "json", "limit": 1})
    with httpx.Client(base_url=server.url, timeout=30, headers=key("tests")) as c:
        c.delete("/collections/buildings/items/x")
    want = [("pipe-office", "api-key", "read", "GET", "/collections/pipe-nodes/items", ["pipe-nodes"], 200),
            ("anonymous", "anonymous", "denied", "GET", "/collections/pipelines/items", ["pipelines"], 401),
            ("tests", "api-key", "write", "DELETE", "/collections/buildings/items/x", None, None)]
    keys = ("principal", "auth", "action", "method", "path", "collections", "status")

    def found(rows: list[dict]) -> bool:
        return all(any(all(w[i] is None or r[k] == w[i] for i, k in enumerate(keys)) for r in rows) for w in want)

    deadline = time.monotonic() + 10
    while not found(rows := _audit_rows(server, last)) and time.monotonic() < deadline:
        time.sleep(0.2)  # entries are written after the response has gone out
    assert found(rows), rows
    # public reads are not audited
    assert not [r for r in rows if r["path"] in ("/collections/buildings/items", "/collections/roads/items")]
    assert all(isinstance(r["at"], datetime) or r["at"] for r in rows)
    assert "f=json" in next(r["query"] for r in rows if r["path"] == "/collections/pipe-nodes/items")


def test_names_in_and_scrub():
    names = {"pipelines", "pipe-nodes"}
    assert names_in("/3dtiles/buildings+pipelines/cim3", names) == {"pipelines"}
    assert names_in("pipelines_cim3 PIPE-NODES.json", names) == {"pipelines", "pipe-nodes"}
    assert names_in("pipelinesx pipe-nodesy pipe_kind", names) == set()
    doc = {"paths": {"/collections/pipelines/items": {}, "/collections/roads": {}},
           "collections": [{"id": "pipelines"}, {"id": "roads"}],
           "links": [{"href": "http://h/collections/pipe-nodes"}, {"href": "http://h/collections"}],
           "enum": ["buildings", "pipelines"]}
    assert scrub(doc, names) == {"paths": {"/collections/roads": {}}, "collections": [{"id": "roads"}],
                                 "links": [{"href": "http://h/collections"}], "enum": ["buildings"]}


def test_derived_documents_leave_out_restricted_objects(server, anon, http, pipe_sample):
    """A case overlay names the nearest pipe node: not to anonymous users (process, async job, related route);
    an authorised one sees it, and the read is audited as one of pipe-nodes."""
    node = http.get(f"/collections/pipe-nodes/items/{pipe_sample['node']}", params={"f": "json"}).json()
    lon, lat = node["geometry"]["coordinates"][:2]
    kind = {"JS": "BJ0101", "WS": "BJ0102", "YS": "BJ0103", "DL": "BJ0104", "TX": "BJ0106", "RQ": "BJ0108",
            "RL": "BJ0109"}[node["properties"]["pipe_kind"]]
    feats = [{"type": "Feature", "id": "c1", "geometry": {"type": "Point", "coordinates": [lon, lat]},
              "properties": {"case_type": kind}}]
    url = "/processes/case-overlay/execution"
    seen = http.post(url, json={"inputs": {"features": feats}}).json()["cases"][0]["related"]
    assert seen["pipe_node"]["id"] == node["id"]
    hidden = anon.post(url, json={"inputs": {"features": feats}})
    assert hidden.status_code == 200
    related = hidden.json()["cases"][0]["related"]
    assert "pipe_node" not in related and "pipe_segment" not in related
    assert not leaks(hidden, pipe_sample) and node["id"] not in hidden.text
    # the same through an asynchronous job's results
    job = anon.post(url, json={"inputs": {"features": feats}}, headers={"Prefer": "respond-async"})
    assert job.status_code == 201
    results = job.headers["location"].rstrip("/") + "/results"
    for _ in range(100):
        r = anon.get(results, params={"f": "json"})
        if r.status_code == 200:
            break
        time.sleep(0.2)
    assert r.status_code == 200 and "cases" in r.text and node["id"] not in r.text
    # a stored case's related objects
    case = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
            "properties": {"case_type": kind, "case_status": "reported", "reported_at": "2026-12-05T08:30:00+08:00"}}
    where = http.post("/collections/cases/items", json=case).headers["location"]
    assert http.get(f"{where}/related").json()["related"]["pipe_node"]["id"] == node["id"]
    mine = anon.get(f"{where}/related")
    assert mine.status_code == 200 and "pipe_node" not in mine.json()["related"] and node["id"] not in mine.text
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        rows = [r for r in _audit_rows(server) if r["path"] == url and r["principal"] == "tests"]
        if rows:
            break
        time.sleep(0.2)
    assert rows and rows[-1]["collections"] in (["pipe-nodes"], ["pipe-nodes", "pipelines"]), rows


def test_combined_tiles_and_the_map_style_leave_restricted_layers_out(anon, http, pipe_sample):
    import gzip

    import mapbox_vector_tile

    z, y, x = pipe_sample["tile"]

    def layers(client) -> set[str]:
        r = client.get(f"/tiles/WebMercatorQuad/{z}/{y}/{x}")
        assert r.status_code == 200, r.text[:300]
        data = r.content
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        return set(mapbox_vector_tile.decode(data))

    assert "pipelines" in layers(http) and "roads" in layers(http)
    public = layers(anon)
    assert "roads" in public and not public & set(RESTRICTED)
    tilejson = anon.get("/tiles/WebMercatorQuad", params={"f": "tilejson"}).json()
    assert {v["id"] for v in tilejson["vector_layers"]} and not {v["id"] for v in tilejson["vector_layers"]} & set(RESTRICTED)
    style = anon.get("/map/style.json").json()
    assert style["layers"] and not [s for s in style["layers"] if s.get("source-layer") in RESTRICTED]
    assert [s for s in http.get("/map/style.json").json()["layers"] if s.get("source-layer") == "pipelines"]


def test_an_async_job_over_a_restricted_layer_is_restricted_like_it(server, anon, http):
    """A pipeline download run as a job: its status and results need the pipelines' roles too (not a
    capability URL anyone holding the job id may fetch); the job of a public download stays public."""
    url = "/processes/cim-download/execution"
    bbox = [123.765, 41.295, 123.775, 41.302]

    def run(client, layers):
        r = client.post(url, json={"inputs": {"layers": layers, "bbox": bbox}, "response": "raw"},
                        headers={"Prefer": "respond-async"})
        assert r.status_code == 201, r.text[:300]
        job = r.headers["location"]
        return job, wait_for_job(http, job)[1]

    job, results = run(http, ["pipelines"])
    got = http.get(results)
    assert got.status_code == 200 and got.content[:16] == b"SQLite format 3\x00"
    with httpx.Client(timeout=30, headers=key("planner")) as planner:
        for target in (job, results):
            assert anon.get(target).status_code == 401
            denied = planner.get(target)
            assert denied.status_code == 403 and b"SQLite" not in denied.content
    with httpx.Client(timeout=30, headers=key("pipe-office")) as owner:
        assert owner.get(results).status_code == 200
    public_job, public_results = run(anon, ["buildings"])
    assert anon.get(public_job, params={"f": "json"}).status_code == 200
    assert anon.get(public_results).status_code == 200
