"""Production serving, over real HTTP against `cim serve`, on both backends: health and readiness, request ids,
JSON logs, Prometheus metrics summed over several workers, and the limits that protect the database
(statement timeout, bounded pool, body and ids sizes, export area) answering 4xx or 503 + Retry-After."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from cim.db.schema import HEAD
from tests.conftest import AUTH_HEADERS, start_server, stop_server

# building components as 3D solids in EPSG:4490: one statement of well over 100 ms on either backend
HEAVY = ("/collections/building-components/items", {"limit": "1000", "cim_level": "6", "crs": "http://www.opengis.net/def/crs/EPSG/0/4490"})
LIGHT = ("/collections/buildings/items", {"limit": "1"})


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name and ",".join(sorted((m.group(2) or "").split(","))) == want:
            return float(m.group(3))
    return 0.0


def assert_503(resp: httpx.Response) -> dict:
    assert resp.status_code == 503, resp.text[:300]
    assert int(resp.headers["Retry-After"]) >= 1
    body = resp.json()
    assert body["code"] == "ServiceUnavailable" and body["description"]
    return body


@pytest.fixture(scope="module")
def limited(demo_db):
    """Two workers, small body/ids/export caps."""
    srv = start_server(demo_db, {"CIM_WORKERS": "2", "CIM_LIMITS__MAX_BODY_BYTES": "2000", "CIM_LIMITS__MAX_IDS": "5",
                                 "CIM_LIMITS__MAX_EXPORT_KM2": "1", "CIM_LIMITS__RETRY_AFTER_S": "7"},
                       log_name="limited.log")
    yield srv
    stop_server(srv)


TIMEOUT_MS = 50  # SpatiaLite: its slow request takes ~0.7 s; PostGIS: made slow by a lock the test holds


@pytest.fixture(scope="module")
def short_statements(demo_db):
    srv = start_server(demo_db, {"CIM_LIMITS__STATEMENT_TIMEOUT_MS": str(TIMEOUT_MS), "CIM_LIMITS__RETRY_AFTER_S": "7"},
                       log_name="short_statements.log")
    yield srv
    stop_server(srv)


@pytest.fixture(scope="module")
def one_connection(demo_db):
    """One worker with one database connection that nobody waits long for."""
    srv = start_server(demo_db, {"CIM_LIMITS__POOL_SIZE": "1", "CIM_LIMITS__MAX_OVERFLOW": "0",
                                 "CIM_LIMITS__POOL_TIMEOUT_S": "0.2"}, log_name="one_connection.log")
    yield srv
    stop_server(srv)


def test_health_readiness_request_ids_and_json_logs(server, http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["database"]["schema_version"] == HEAD
    assert "read_database" not in ready.json()
    given = http.get(*LIGHT[:1], params=LIGHT[1], headers={"X-Request-Id": "trace-4711.a"})
    assert given.status_code == 200 and given.headers["X-Request-Id"] == "trace-4711.a"
    made = http.get(*LIGHT[:1], params=LIGHT[1], headers={"X-Request-Id": "no spaces; " + "x" * 200})
    assert re.fullmatch(r"[0-9a-f]{32}", made.headers["X-Request-Id"])
    assert http.get("/nowhere").headers["X-Request-Id"]
    deadline = time.monotonic() + 5
    while True:  # the access line is written once the response has gone out
        lines = [json.loads(line) for line in (server.db.data_dir / "server.log").read_text().splitlines()
                 if line.startswith("{")]
        mine = [r for r in lines if r.get("request_id") == "trace-4711.a"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert mine, lines[-5:]
    assert mine[0]["logger"] == "cim.access" and mine[0]["status"] == 200
    assert mine[0]["route"] == "/collections/{collection}/items" and mine[0]["path"] == "/collections/buildings/items"
    assert mine[0]["duration_ms"] > 0 and mine[0]["level"] == "INFO" and mine[0]["time"]


def test_metrics_are_summed_over_workers(limited):
    metrics_dir = limited.db.data_dir / "metrics" / limited.url.rsplit(":", 1)[1]
    with httpx.Client(base_url=limited.url, timeout=30) as c:
        before = c.get("/metrics").text

    def one(i: int) -> int:  # a connection each, several at once
        return httpx.get(f"{limited.url}/collections/roads/items", params={"limit": "200", "offset": str(i)},
                         timeout=30).status_code

    def workers_counted() -> set[str]:
        return {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("counter_*.db")}

    n = 0
    with ThreadPoolExecutor(8) as pool:
        # the kernel hands each connection to whichever worker accepts first: go on until both have served
        while len(workers_counted()) < 2 and n < 800:
            assert set(pool.map(one, range(n, n + 40))) == {200}
            n += 40
    assert len(workers_counted()) == 2, f"one worker took all {n} connections"
    with httpx.Client(base_url=limited.url, timeout=30) as c:
        assert c.get("/collections/nowhere/items").status_code == 404
        after = c.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    labels = {"route": "/collections/{collection}/items", "method": "GET", "status": "200"}
    assert metric(after.text, "cim_http_requests_total", **labels) - metric(before, "cim_http_requests_total", **labels) == n
    assert metric(after.text, "cim_http_request_duration_seconds_count", route=labels["route"]) >= n
    # an unknown collection falls through to pygeoapi's route, and is counted under its template
    assert metric(after.text, "cim_http_requests_total", route="/collections/{collection_id:path}/items",
                  method="GET", status="404") >= 1
    # the pools are watched, and no worker holds a connection between requests
    assert 'cim_db_pool_checked_out{database="primary"}' in after.text
    assert metric(after.text, "cim_db_pool_checked_out", database="primary") == 0
    assert 'pid="' not in after.text  # summed, not one series per process


def test_statement_timeout_answers_503(limited, short_statements):
    if limited.db.backend == "postgis":
        statement_timeout_postgis(limited, short_statements)
        return
    # 800 buildings' roofed 3D solids transformed and encoded in one statement (0.7 s in all)
    slow = ("/collections/buildings/items", {**HEAVY[1], "limit": "800", "cim_level": "3"})
    with httpx.Client(base_url=limited.url, timeout=60, headers=AUTH_HEADERS) as c:  # no timeout there: it completes
        started = time.monotonic()
        assert c.get(*slow[:1], params=slow[1]).status_code == 200
        unlimited = time.monotonic() - started
    assert unlimited > 2 * TIMEOUT_MS / 1000, "the slow request is not slow enough to test the timeout"
    with httpx.Client(base_url=short_statements.url, timeout=60, headers=AUTH_HEADERS) as c:
        c.get(*LIGHT[:1], params=LIGHT[1])
        before = metric(c.get("/metrics").text, "cim_unavailable_total", reason="timeout")
        started = time.monotonic()
        body = assert_503(c.get(*slow[:1], params=slow[1]))
        assert time.monotonic() - started < unlimited / 2  # cancelled, not run to the end
        assert_timeout_answer(c, slow, body, before)


def assert_timeout_answer(c: httpx.Client, slow: tuple, body: dict, before: float) -> None:
    assert f"{TIMEOUT_MS} ms" in body["description"]
    assert c.get(*slow[:1], params=slow[1]).headers.get("Retry-After") == "7"
    # the worker and its connection are fine afterwards
    assert c.get(*LIGHT[:1], params=LIGHT[1]).status_code == 200
    assert metric(c.get("/metrics").text, "cim_unavailable_total", reason="timeout") == before + 2


def statement_timeout_postgis(limited, short_statements) -> None:
    """A statement made slow for sure, whatever the machine's speed: the test holds an exclusive lock on the
    features table, and PostgreSQL's statement_timeout counts the time a statement waits for a lock."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(limited.db.url)
    slow = ("/collections/buildings/items", {"limit": "5"})
    clients = [httpx.Client(base_url=s.url, timeout=60, headers=AUTH_HEADERS) for s in (limited, short_statements)]
    try:
        for c in clients:  # warm the connections (PostGIS loads PROJ on first use)
            assert c.get(*LIGHT[:1], params=LIGHT[1]).status_code == 200
        unlimited, short = clients
        before = metric(short.get("/metrics").text, "cim_unavailable_total", reason="timeout")
        with psycopg.connect(host=u.host, port=u.port, user=u.username, dbname=u.database) as lock:
            lock.execute("LOCK TABLE city_object IN ACCESS EXCLUSIVE MODE")  # held until the block ends
            with ThreadPoolExecutor(1) as pool:
                waiting = pool.submit(unlimited.get, slow[0], params=slow[1])  # the default 30 s timeout
                started = time.monotonic()
                body = assert_503(short.get(*slow[:1], params=slow[1]))
                assert time.monotonic() - started < 5  # cancelled while the lock is still held
                time.sleep(0.5)
                assert not waiting.done(), "the request did not wait for the lock: the test proves nothing"
                second = short.get(*slow[:1], params=slow[1])
                assert second.status_code == 503 and second.headers.get("Retry-After") == "7"
                lock.rollback()  # the lock goes: the waiting request completes
                assert waiting.result(timeout=30).status_code == 200
        assert f"{TIMEOUT_MS} ms" in body["description"]
        assert short.get(*LIGHT[:1], params=LIGHT[1]).status_code == 200
        assert metric(short.get("/metrics").text, "cim_unavailable_total", reason="timeout") == before + 2
    finally:
        for c in clients:
            c.close()


def test_body_ids_and_export_area_limits(limited):
    with httpx.Client(base_url=limited.url, timeout=30) as c:
        big = {"inputs": {"layers": ["buildings"], "bbox": [123.76, 41.29, 123.78, 41.31]}, "pad": "x" * 5000}
        resp = c.post("/processes/cim-download/execution", json=big)
        assert resp.status_code == 413 and resp.json()["code"] == "PayloadTooLarge"

        def chunked():  # no Content-Length: counted as it arrives
            for _ in range(10):
                yield b"x" * 500

        resp = c.post("/processes/cim-download/execution", content=chunked(), headers={"Content-Type": "application/json"})
        assert resp.status_code == 413
        ids = ",".join(f"b{i}" for i in range(6))
        resp = c.get("/collections/buildings/items", params={"ids": ids})
        assert resp.status_code == 400 and "at most 5" in resp.json()["description"]
        assert c.get("/collections/buildings/items", params={"ids": "b1,b2"}).status_code == 200
        # 2 km x 2 km is over the 1 km² cap; 0.5 km x 0.5 km is not
        resp = c.post("/processes/cim-download/execution",
                      json={"inputs": {"layers": ["buildings"], "bbox": [123.76, 41.29, 123.784, 41.308]}})
        assert resp.status_code == 400 and "km²" in resp.json()["description"], resp.text
        resp = c.post("/processes/cim-download/execution",
                      json={"inputs": {"layers": ["buildings"], "bbox": [123.768, 41.298, 123.774, 41.3025]}})
        assert resp.status_code == 200, resp.text[:300]


def test_exhausted_pool_answers_503_not_a_hang(one_connection):
    with httpx.Client(base_url=one_connection.url, timeout=30) as c:
        assert c.get(HEAVY[0], params=HEAVY[1]).status_code == 200  # alone, the heavy request is fine

        def heavy(i: int) -> httpx.Response:
            return c.get(HEAVY[0], params={**HEAVY[1], "offset": str(i)})

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(heavy, range(8)))
        statuses = sorted(r.status_code for r in answers)
        assert set(statuses) <= {200, 503} and 503 in statuses and 200 in statuses, statuses
        for r in answers:
            if r.status_code == 503:
                assert "busy" in assert_503(r)["description"]
        assert c.get(*LIGHT[:1], params=LIGHT[1]).status_code == 200
        assert metric(c.get("/metrics").text, "cim_unavailable_total", reason="pool") == statuses.count(503)
