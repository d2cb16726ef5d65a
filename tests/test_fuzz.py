"""Fuzzing the whole HTTP API from its own OpenAPI document (schemathesis), against the running `cim serve`.

The document pygeoapi generates points at OGC building blocks on schemas.opengis.net / GitHub; nothing may be
fetched, so every external `$ref` is inlined from the offline copies in ../shared/specs/ogc/ (host/path
mirrored). Blocks with no offline copy become permissive (a response without a schema), never fetched.

Bounded and reproducible: a fixed number of derandomized examples per operation. GETs run against the shared
demo servers; the operations that write or run processes (POST, PUT, PATCH, DELETE: process executions, cases,
GPS fixes, job dismissal) against a server on a database and data folder of their own, with the tests' API key,
so that what they write never reaches another test.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
import time
from pathlib import Path
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx
import pytest
import yaml

from tests.conftest import AUTH_HEADERS, BACKENDS, DEMO_SEED, SHARED, DemoDB, run_cim, start_server, stop_server

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

OGC_SPECS = SHARED / "specs" / "ogc"
EXAMPLES_PER_OPERATION = 8
WRITE_METHODS = ("POST", "PUT", "PATCH", "DELETE")
# every response check (none disabled): no 5xx, only documented status codes and media types, bodies valid
# against their documented schema
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _local_copy(url: str) -> Path:
    parts = urlsplit(url)
    return OGC_SPECS / parts.netloc / parts.path.lstrip("/")


class OfflineRefs:
    """Inlines external `$ref`s from the offline OGC copies; cycles and missing files become permissive."""

    def __init__(self) -> None:
        self.documents: dict[str, object] = {}
        self.missing: set[str] = set()

    def _document(self, url: str):
        if url not in self.documents:
            path = _local_copy(url)
            self.documents[url] = yaml.safe_load(path.read_text()) if path.exists() else None
        return self.documents[url]

    def inline(self, node, base: str | None = None, stack: tuple[str, ...] = ()):
        if isinstance(node, list):
            return [self.inline(v, base, stack) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and (base is not None or not ref.startswith("#")):
            target = urljoin(base or "", ref)
            if target in stack:  # a recursive schema (GeoJSON geometry collections, CQL2): accept anything
                return {}
            doc_url, fragment = urldefrag(target)
            doc = self._document(doc_url)
            if doc is None:
                self.missing.add(doc_url)
                return {"description": f"(offline copy missing: {target})"}
            part = doc
            for key in [k for k in fragment.split("/") if k]:
                part = part[key.replace("~1", "/").replace("~0", "~")]
            return self.inline(copy.deepcopy(part), doc_url, (*stack, target))
        return {k: self.inline(v, base, stack) for k, v in node.items()}


def offline_document(raw: dict) -> tuple[dict, set[str]]:
    refs = OfflineRefs()
    raw = copy.deepcopy(raw)
    for path_item in raw["paths"].values():
        for op in path_item.values() if isinstance(path_item, dict) else ():
            for media in (op.get("requestBody", {}).get("content", {}) if isinstance(op, dict) else {}).values():
                # CQL2 JSON (JSON Schema 2020-12, recursive through $dynamicRef): schemathesis cannot generate from
                # it; any JSON object is sent instead, which the server must refuse cleanly or answer
                if str(media.get("schema", {}).get("$ref", "")).endswith("/cql2.json"):
                    media["schema"] = {"type": "object"}
    doc = refs.inline(raw)
    for path_item in doc["paths"].values():
        for op in path_item.values() if isinstance(path_item, dict) else ():
            if isinstance(op, dict) and "parameters" in op:
                # a parameter whose definition is missing offline (the coverages `subset`): drop it
                op["parameters"] = [p for p in op["parameters"] if "name" in p or "$ref" in p]
    return doc, refs.missing


def test_offline_document_has_no_external_refs(server):
    raw = httpx.get(f"{server.url}/openapi?f=json", timeout=30).json()
    assert any('"$ref": "http' in json.dumps(v) for v in raw["paths"].values())  # pygeoapi's refs: still there
    doc, _ = offline_document(raw)
    text = json.dumps(doc)
    assert '"$ref": "http' not in text
    # the OGC Features building blocks really were resolved from the offline copies
    assert "featureGeoJSON" not in text or "FeatureCollection" in text
    assert "numberReturned" in text


def fuzz_operations(url: str, methods: tuple[str, ...], headers: dict[str, str] | None = None,
                    statuses: Counter | None = None) -> tuple[int, list[str]]:
    """Fuzz every operation of ``url``'s OpenAPI document with one of ``methods``: (operations, failures).
    ``statuses`` counts the answers per operation and status."""
    # with the credentials: the document then lists the restricted collections' operations too
    raw = httpx.get(f"{url}/openapi?f=json", timeout=30, headers=headers).json()
    doc, _ = offline_document(raw)
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.method.upper() not in methods:
            continue
        operations += 1

        # no shrinking: it can take minutes on a finding; the failure's curl line reproduces it as it is
        @settings(max_examples=EXAMPLES_PER_OPERATION, derandomize=True, deadline=None, database=None,
                  phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy())
        def fuzz(case):
            response = case.call_and_validate(base_url=url, headers=headers, checks=CHECKS, timeout=30)
            if statuses is not None:
                statuses[f"{operation.method.upper()} {operation.path} {response.status_code}"] += 1

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # noqa: BLE001 - collect every operation's findings, report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {str(exc)[:1500]}")
    return operations, failures


@pytest.mark.slow
def test_fuzz_every_get_operation(server):
    started = time.monotonic()
    operations, failures = fuzz_operations(server.url, ("GET",))
    print(f"fuzzed {operations} GET operations in {time.monotonic() - started:.0f} s")
    assert operations > 50
    assert not failures, "\n\n".join(failures)


@pytest.fixture(scope="module", params=BACKENDS)
def write_server(request, new_database, tmp_path_factory):
    """`cim serve` over a small demo city of its own (database and data folder): the fuzzer's cases, GPS fixes
    and jobs stay there."""
    db = DemoDB(request.param, new_database(request.param), tmp_path_factory.mktemp(f"fuzz-{request.param}"))
    run_cim("db", "init", env=db.env, check=True)
    run_cim("demo", "--size", "120", "--seed", str(DEMO_SEED), env=db.env, check=True)
    srv = start_server(db, log_name="fuzz-server.log")
    yield srv
    stop_server(srv)


@pytest.mark.slow
def test_fuzz_every_write_and_process_operation(write_server):
    """POST/PUT/PATCH/DELETE with the tests' key (every role): process executions, case writes, GPS fixes,
    CQL2 item searches, job dismissal. Bounded: EXAMPLES_PER_OPERATION each (~20 operations)."""
    started = time.monotonic()
    statuses: Counter = Counter()
    operations, failures = fuzz_operations(write_server.url, WRITE_METHODS, AUTH_HEADERS, statuses)
    print(f"fuzzed {operations} write and process operations in {time.monotonic() - started:.0f} s:")
    print("\n".join(f"  {n:3d} × {k}" for k, n in sorted(statuses.items())))
    assert operations >= 15
    assert not failures, "\n\n".join(failures)


# regression tests for what the fuzzer found


@pytest.mark.parametrize("query", ["bbox=123.7,41.2,0,123.8,41.3,100",  # 3D: rasterio unpacked four values
                                   "bbox=123.8,41.2,123.7,41.1",  # inverted: pygeoapi's own 500
                                   "bbox=123.7,41.2,123.8,41.3&bbox-crs=https://example.invalid",
                                   "bbox=-1e16,-1e16,-1e15,-1e15"])  # off the raster: rasterio's mask error
def test_bad_coverage_bbox_is_a_400(http, query):
    r = http.get(f"/collections/dem/coverage?{query}")
    assert r.status_code == 400, r.text
    assert r.json()["code"] in ("InvalidParameterValue", "InvalidQuery") and "bbox" in r.json()["description"]


def test_an_empty_json_ld_page_is_json(http):
    """pygeoapi's JSON-LD items template left a comma before the closing brace when nothing matched."""
    r = http.get("/collections/buildings/items", params={"f": "jsonld", "bbox": "0,0,0.001,0.001"})
    assert r.status_code == 200 and json.loads(r.text)["type"] == "FeatureCollection" and "features" not in r.json()
    full = http.get("/collections/buildings/items", params={"f": "jsonld", "limit": 2}).json()
    assert len(full["features"]) == 2


def test_a_band_named_twice_is_a_400(http):
    r = http.get("/collections/dem/coverage", params={"properties": "1,1", "f": "json"})
    assert r.status_code == 400 and "properties" in r.json()["description"], r.text[:300]
    assert http.get("/collections/dem/coverage", params={"properties": "1", "bbox": "123.76,41.29,123.77,41.30",
                                                         "f": "json"}).status_code == 200


def test_documented_responses_match_what_is_served(http):
    doc = http.get("/openapi?f=json").json()
    paths = doc["paths"]
    assert "/ConformanceDeclaration" in json.dumps(paths["/conformance"]["get"]["responses"]["200"])
    collections = paths["/collections"]["get"]["responses"]["200"]
    assert collections["content"]["application/json"]["schema"]["$ref"].endswith(
        "/Collections/content/application~1json/schema")
    landing = paths["/"]["get"]["responses"]["200"]["content"]
    assert http.get("/?f=jsonld").headers["content-type"].split(";")[0] in landing
    queryables = doc["components"]["responses"]["Queryables"]["content"]
    assert http.get("/collections/buildings/queryables").headers["content-type"].split(";")[0] in queryables
    assert "400" in paths["/collections/cases/items/{featureId}/related"]["get"]["responses"]


def test_date_time_property_filter(http):
    """valid_to=<date-time> compared text with timestamptz on PostGIS: a 500 (found by fuzzing)."""
    assert http.get("/collections/bridges/items?valid_to=0129-04-14T17:48:00.743Z").status_code == 200
    r = http.get("/collections/bridges/items?valid_to=not-a-date")
    assert r.status_code == 400 and "valid_to" in r.json()["description"]
