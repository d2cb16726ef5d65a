"""Faults and scale-out against real PostgreSQL servers the tests start and stop themselves: the database
restarted under the running service (503 with Retry-After meanwhile, recovery by itself), and reads served
by a streaming replica while writes stay on the primary."""

from __future__ import annotations

import time

import httpx
import pytest

from cim.db.throwaway import ThrowawayPostGIS
from tests.conftest import DEMO_SEED, DemoDB, run_cim, start_server, stop_server

pytestmark = [pytest.mark.slow, pytest.mark.postgis]

ITEMS = "/collections/buildings/items"
TILE = "/collections/buildings/tiles/WebMercatorQuad/15/12249/27650"  # central Benxi; 204 if empty: still read
BBOX = [123.765, 41.295, 123.775, 41.305]
# (case-overlay stays on the primary: cim/api/overlay.py)
PROCESS_READS = [
    ("cim-tiles-package", {"layers": ["buildings", "roads"], "bbox": BBOX, "zooms": [13, 14]}),
    ("cim-download", {"layers": ["buildings"], "bbox": BBOX}),
]


def demo_on(url: str, data_dir) -> DemoDB:
    db = DemoDB("postgis", url, data_dir)
    run_cim("db", "init", env=db.env, check=True)
    run_cim("demo", "--size", "120", "--seed", str(DEMO_SEED), env=db.env, check=True)
    return db


def assert_503(resp: httpx.Response) -> None:
    assert resp.status_code == 503, (resp.status_code, resp.text[:300])
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.json()["code"] == "ServiceUnavailable"


def recovers(client: httpx.Client, path: str, within: float) -> float:
    """Seconds until ``path`` answers 200 again (fails after ``within``); every answer meanwhile is a 503."""
    started = time.monotonic()
    while True:
        resp = client.get(path, params={"limit": "5"})
        if resp.status_code == 200:
            return time.monotonic() - started
        assert_503(resp)
        assert time.monotonic() - started < within, f"{path} still {resp.status_code} after {within} s"
        time.sleep(0.1)


@pytest.fixture(scope="module")
def restartable(tmp_path_factory):
    """`cim serve` (two workers) over a PostGIS of its own, which the test may stop and start."""
    with ThrowawayPostGIS() as pg:
        db = demo_on(pg.url, tmp_path_factory.mktemp("restartable"))
        srv = start_server(db, {"CIM_WORKERS": "2", "CIM_LIMITS__RETRY_AFTER_S": "2"})
        try:
            yield pg, srv
        finally:
            stop_server(srv)


def test_database_restart_answers_503_then_recovers_by_itself(restartable):
    pg, srv = restartable
    with httpx.Client(base_url=srv.url, timeout=30) as c:
        for _ in range(6):  # both workers hold pooled connections
            assert c.get(ITEMS, params={"limit": "5"}).status_code == 200
            assert c.get(TILE).status_code in (200, 204)
        pg.halt()
        try:
            for _ in range(6):
                started = time.monotonic()
                assert_503(c.get(ITEMS, params={"limit": "5"}))
                assert_503(c.get(TILE))
                assert_503(c.get(ITEMS, params={"f": "html"}))  # pygeoapi's own route, through our provider
                assert time.monotonic() - started < 5  # answered, not hung
            assert c.get("/healthz").status_code == 200  # alive: no restart wanted
            ready = c.get("/readyz")
            assert ready.status_code == 503 and "error" in ready.json()["database"]
        finally:
            pg.resume()
        assert recovers(c, ITEMS, within=5) < 5
        for _ in range(6):  # on every worker, every route
            assert c.get(ITEMS, params={"limit": "5"}).status_code == 200
            assert c.get(TILE).status_code in (200, 204)
            assert c.get(ITEMS, params={"f": "html"}).status_code == 200
        assert c.get("/readyz").status_code == 200
        metrics = c.get("/metrics").text
        assert 'cim_unavailable_total{reason="down"}' in metrics


@pytest.fixture(scope="module")
def replicated(tmp_path_factory):
    """A primary with the demo city, a streaming replica of it, and `cim serve` reading from the replica."""
    with ThrowawayPostGIS() as primary:
        db = demo_on(primary.url, tmp_path_factory.mktemp("replicated"))
        replica = primary.replica()
        try:
            srv = start_server(db, {"CIM_READ_DATABASE_URL": replica.url, "CIM_WORKERS": "2"})
            try:
                yield primary, replica, srv
            finally:
                stop_server(srv)
        finally:
            replica.stop()


def test_reads_go_to_the_replica_and_follow_the_primary(replicated):
    primary, replica, srv = replicated
    import psycopg

    with httpx.Client(base_url=srv.url, timeout=30) as c:
        ready = c.get("/readyz").json()
        assert ready["status"] == "ok"
        assert "replica_lag_s" in ready["read_database"] and "replica_lag_s" not in ready["database"]
        page = c.get(ITEMS, params={"limit": "5"})
        assert page.status_code == 200 and len(page.json()["features"]) == 5
        first = page.json()["features"][0]
        # a write on the primary reaches the readers through replication
        with psycopg.connect(host="127.0.0.1", port=primary.port, user="postgres", dbname=primary.database,
                             autocommit=True) as conn:
            conn.execute("UPDATE city_object SET name = 'replicated-7' WHERE uid = %s", (first["id"],))
            conn.execute("UPDATE layer_version SET version = version + 1")
        deadline = time.monotonic() + 10
        while c.get(f"{ITEMS}/{first['id']}").json()["properties"].get("name") != "replicated-7":
            assert time.monotonic() < deadline, "the replica did not catch up in 10 s"
            time.sleep(0.2)
        # with the primary down, reads go on from the replica...
        primary.halt()
        try:
            for _ in range(6):
                assert c.get(ITEMS, params={"limit": "5"}).status_code == 200
                assert c.get(TILE).status_code in (200, 204)
            # the read-only processes read there too: tile package, download (twice each: both workers)
            for _ in range(2):
                for process, inputs in PROCESS_READS:
                    r = c.post(f"/processes/{process}/execution", json={"inputs": inputs, "response": "raw"})
                    assert r.status_code == 200, (process, r.status_code, r.text[:300])
            assert c.get("/readyz").status_code == 503  # ...but this worker cannot write: not ready
        finally:
            primary.resume()
        # ...and with the replica down, they stop: nothing reads from the primary behind its back
        replica.halt()
        try:
            for _ in range(4):
                assert_503(c.get(ITEMS, params={"limit": "5"}))
        finally:
            replica.resume()
        assert recovers(c, ITEMS, within=5) < 5
        active = psycopg.connect(host="127.0.0.1", port=replica.port, user="postgres", dbname="postgres",
                                 autocommit=True)
        with active:
            assert active.execute("SELECT pg_is_in_recovery()").fetchone()[0]
