"""Process jobs (cim.api.jobs): synchronous executions leave the job store alone, asynchronous jobs still work
(status, results, listing, dismissal, their access restriction), and jobs expire with their files."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import httpx
import pytest

from .conftest import AUTH_HEADERS, DemoDB, run_cim, start_server, stop_server, wait_for_job

BBOX = [123.765, 41.295, 123.775, 41.302]
FEATURES = [{"type": "Feature", "id": "c1", "geometry": {"type": "Point", "coordinates": [123.77, 41.30]},
             "properties": {"case_type": "BJ0101"}}]


def store(data_dir: Path) -> dict[str, int]:
    """Every file under the data folder's jobs/ (records, results, access lists) and its size."""
    jobs = data_dir / "jobs"
    return {str(p.relative_to(jobs)): p.stat().st_size for p in sorted(jobs.rglob("*")) if p.is_file()}


def job_ids(client: httpx.Client) -> set[str]:
    return {j["jobID"] for j in client.get("/jobs", params={"f": "json", "limit": 10000}).json()["jobs"]}


def test_synchronous_executions_leave_the_job_store_unchanged(server, http):
    """Each sync execution was a TinyDB record (the file rewritten three times under a lock every worker
    shares) plus a result file, and one naming a restricted layer an access list: none is written now, and
    the answer names no job."""
    listed = job_ids(http)  # (TinyDB creates its file on first use)
    before = store(server.db.data_dir)
    runs = [("coordinate-transform", {"source_crs": "OGC:CRS84", "target_crs": "EPSG:4550",
                                      "coordinates": [[123.77, 41.30]]}),
            ("case-overlay", {"features": FEATURES}),
            ("cim-download", {"layers": ["pipelines"], "bbox": BBOX})]
    for i in range(12):
        process, inputs = runs[i % len(runs)]
        r = http.post(f"/processes/{process}/execution", json={"inputs": inputs, "response": "raw"})
        assert r.status_code == 200, r.text[:300]
        assert "location" not in r.headers, r.headers  # pygeoapi named a job that does not exist
    bad = http.post("/processes/coordinate-transform/execution",
                    json={"inputs": {"source_crs": "EPSG:0", "target_crs": "EPSG:4550", "coordinates": [[1, 2]]}})
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidParameterValue" and "location" not in bad.headers
    assert store(server.db.data_dir) == before
    assert job_ids(http) == listed


def test_an_asynchronous_job_lists_returns_and_dismisses(server, http, anon):
    r = anon.post("/processes/case-overlay/execution", json={"inputs": {"features": FEATURES}},
                  headers={"Prefer": "respond-async"})
    assert r.status_code == 201, r.text[:300]
    job_url = r.headers["location"]
    job_id = job_url.rstrip("/").rsplit("/", 1)[1]
    status, results_url = wait_for_job(anon, job_url)
    results = anon.get(results_url, params={"f": "json"})
    assert results.status_code == 200 and results.json()["cases"][0]["id"] == "c1"
    assert job_id in job_ids(http)
    result_files = [p for p in (server.db.data_dir / "jobs").iterdir() if p.name.endswith(job_id)]
    assert len(result_files) == 1, status
    dismissed = http.delete(job_url)  # a write: the operations role
    assert dismissed.status_code == 200 and dismissed.json()["status"] == "dismissed"
    assert anon.get(job_url, params={"f": "json"}).status_code == 404
    assert not result_files[0].exists()


@pytest.fixture(scope="module")
def short_retention(new_database, tmp_path_factory):
    """`cim serve` on an empty database and data folder of its own (the shared servers' jobs must not expire
    under other tests) whose jobs expire after 10 s: time enough to create and read two jobs on a busy machine."""
    db = DemoDB("spatialite", new_database("spatialite"), tmp_path_factory.mktemp("jobs-expiry"))
    run_cim("db", "init", env=db.env, check=True)
    srv = start_server(db, extra_env={"CIM_JOBS__RETENTION_S": "10"}, log_name="jobs-server.log")
    yield srv
    stop_server(srv)


def test_jobs_expire_with_their_results_and_access_lists(short_retention):
    srv, jobs_dir = short_retention, short_retention.db.data_dir / "jobs"
    with httpx.Client(base_url=srv.url, timeout=60, headers=AUTH_HEADERS) as http:
        made = []
        for body in ({"inputs": {"features": FEATURES}},  # public
                     {"inputs": {"layers": ["pipelines"], "bbox": BBOX}, "response": "raw"}):  # restricted
            process = "case-overlay" if "features" in body["inputs"] else "cim-download"
            r = http.post(f"/processes/{process}/execution", json=body, headers={"Prefer": "respond-async"})
            assert r.status_code == 201, r.text[:300]
            made.append(r.headers["location"])
        ids = [url.rstrip("/").rsplit("/", 1)[1] for url in made]
        for url in made:
            assert http.get(wait_for_job(http, url)[1]).status_code == 200
        assert (jobs_dir / "access" / f"{ids[1]}.json").exists()  # the pipelines job's access list
        assert all(any(p.name.endswith(i) for p in jobs_dir.iterdir()) for i in ids)
        # a result file of no job (a job dismissed while running wrote it after all), older than the retention
        orphan = jobs_dir / f"cim-download-{uuid.uuid1()}"
        orphan.write_bytes(b"left over")
        os.utime(orphan, (time.time() - 60, time.time() - 60))
        time.sleep(11)
        assert not job_ids(http) & set(ids)
        for url in made:
            assert http.get(url, params={"f": "json"}).status_code == 404
            assert http.get(f"{url}/results").status_code == 404
        assert not [p for p in jobs_dir.rglob("*") if p.is_file() and any(i in p.name for i in ids)]
        assert not orphan.exists()
        # a job made after the sweep is kept
        r = http.post("/processes/case-overlay/execution", json={"inputs": {"features": FEATURES}},
                      headers={"Prefer": "respond-async"})
        assert http.get(wait_for_job(http, r.headers["location"])[1]).status_code == 200


@pytest.mark.parametrize("body", ["null", "[]", '{"inputs": [1, 2]}', '{"inputs": {}, "response": "both"}',
                                  '{"inputs": {}, "subscriber": 1}', '{"inputs": {}, "subscriber": {"failedUri": "x"}}'])
def test_malformed_execute_requests_are_400(anon, body):
    """pygeoapi read these without looking: 500s (found by tests/test_fuzz.py)."""
    r = anon.post("/processes/coordinate-transform/execution", content=body,
                  headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "InvalidParameterValue", (r.status_code, r.text[:300])
