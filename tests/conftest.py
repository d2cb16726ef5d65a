"""Shared fixtures: a throwaway PostGIS server, demo cities on both backends, and running HTTP servers.

Nothing is mocked: SpatiaLite files live in temporary folders, PostGIS is a real server started for the
test session (or the one named by CIM_TEST_POSTGIS_URL), and the API tests talk HTTP to `cim serve`.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

# Engines only through cim.db.engine: it orders the imports SpatiaLite needs.
from cim.db.engine import open_engine
from cim.db.throwaway import ThrowawayPostGIS

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
DEMO_SIZE = 800  # enough for every block kind, interiors and bridges; fast on both backends
DEMO_SEED = 20261128
BACKENDS = ["spatialite", "postgis"]


@pytest.fixture(scope="session")
def postgis_server() -> Iterator[ThrowawayPostGIS | None]:
    if os.environ.get("CIM_TEST_POSTGIS_URL"):
        yield None
        return
    with ThrowawayPostGIS() as server:
        yield server


@pytest.fixture(scope="session")
def new_database(postgis_server, tmp_path_factory):
    """A factory of empty databases: new_database('spatialite' | 'postgis') → URL."""

    def make(backend: str) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        if backend == "spatialite":
            return f"sqlite:///{tmp_path_factory.mktemp('db') / (name + '.sqlite')}"
        if postgis_server is None:
            return os.environ["CIM_TEST_POSTGIS_URL"]
        return postgis_server.create_database(name)

    return make


@pytest.fixture(params=BACKENDS)
def db(request, new_database, tmp_path, monkeypatch):
    """An empty CIM database (schema at head) on each backend, with a data dir of its own (ingest, export)."""
    from cim.db import schema
    from cim.db.engine import open_engine
    from cim.settings import get_settings

    url = new_database(request.param)
    engine = open_engine(url, create=True)
    schema.init(engine, 4550, 5737)
    monkeypatch.setenv("CIM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield engine
    engine.dispose()
    get_settings.cache_clear()


def older_database(engine, version: int, dropped: tuple[str, ...] = ()) -> None:
    """The schema as a release at ``version`` left it (EPSG:4550): ``city_object`` without the ``dropped``
    columns later versions add (step 1 creates today's table), and one building (uid ``b1``, a 20 × 15 m
    footprint) written in plain SQL, so that the upgrade has a row to fill."""
    from datetime import UTC, datetime

    from geoalchemy2 import Geometry
    from sqlalchemy import text

    from cim.db import schema
    from cim.db.models import cim_tables

    schema.init(engine, 4550, 5737, to=version)
    t = cim_tables(4550)
    with engine.begin() as conn:
        for column in dropped:
            if engine.dialect.name == "sqlite" and isinstance(t.city_object.c[column].type, Geometry):
                conn.execute(text(f"SELECT DiscardGeometryColumn('city_object', '{column}')"))
            conn.execute(text(f"ALTER TABLE city_object DROP COLUMN {column}"))
        conn.execute(t.dataset.insert().values(id=1, name=f"v{version}", created_at=datetime.now(UTC)))
        conn.execute(text(
            "INSERT INTO city_object (uid, object_class, layer, cim_level, geom, valid_from, dataset_id) "
            "VALUES ('b1', 'Building', 'buildings', 2, ST_GeomFromText(:wkt, 4550), :now, 1)"),
            {"wkt": "POLYGON((564490 4574176, 564510 4574176, 564510 4574191, 564490 4574191, 564490 4574176))",
             "now": datetime.now(UTC)})


def geoid_anomaly(lon, lat):
    """The made-up height anomaly of the tests' geoid grid: ~12.7 m at Benxi, varying linearly (so
    bilinear interpolation reproduces it exactly)."""
    import numpy as np

    return 12.7 + 0.5 * (np.asarray(lon) - 123.0) - 0.3 * (np.asarray(lat) - 41.0)


@pytest.fixture(scope="session")
def geoid_grid(tmp_path_factory) -> Path:
    """A GTX grid of :func:`geoid_anomaly` over Benxi (lower-left origin, rows south to north, big-endian
    float32): no real 1985 geoid grid is available offline."""
    import struct

    import numpy as np

    lat0, lon0, step, rows, cols = 40.5, 123.0, 0.1, 15, 30
    lat = lat0 + step * np.arange(rows)[:, None]
    lon = lon0 + step * np.arange(cols)[None, :]
    path = tmp_path_factory.mktemp("geoid") / "benxi_test.gtx"
    with open(path, "wb") as fh:
        fh.write(struct.pack(">4d2i", lat0, lon0, step, step, rows, cols))
        fh.write(geoid_anomaly(lon, lat).astype(">f4").tobytes())
    return path


def run_cim(*args: str, env: dict[str, str] | None = None, check: bool = False) -> subprocess.CompletedProcess:
    """The real command line, in a subprocess."""
    proc = subprocess.run([sys.executable, "-m", "cim.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=ROOT, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"cim {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@dataclass
class DemoDB:
    backend: str
    url: str
    data_dir: Path

    @property
    def env(self) -> dict[str, str]:
        # tiles cached beside the data, never in the worktree's tiles/cache
        return {"CIM_DATABASE_URL": self.url, "CIM_DATA_DIR": str(self.data_dir),
                "CIM_TILE_CACHE_DIR": str(self.data_dir / "tile-cache")}

    def engine(self):
        return open_engine(self.url)


@pytest.fixture(scope="session", params=BACKENDS)
def demo_db(request, new_database, tmp_path_factory) -> DemoDB:
    """The demo city (DEMO_SIZE buildings) generated with the real CLI, once per backend."""
    db = DemoDB(request.param, new_database(request.param), tmp_path_factory.mktemp(f"data-{request.param}"))
    run_cim("db", "init", env=db.env, check=True)
    run_cim("demo", "--size", str(DEMO_SIZE), "--seed", str(DEMO_SEED), env=db.env, check=True)
    return db


RASTERS = ["raster/colorado_hro_orthophoto_15cm.tif", "raster/lidar_dtm_2m_epsg26918.tif",
           "raster/lidar_dsm_2m_epsg26918.tif"]


@pytest.fixture(scope="session", params=BACKENDS)
def raster_db(request, new_database, tmp_path_factory) -> DemoDB:
    """A small demo city (its DEM) plus the sample orthophoto, DTM and DSM loaded with `cim load`."""
    db = DemoDB(request.param, new_database(request.param), tmp_path_factory.mktemp(f"rasters-{request.param}"))
    run_cim("db", "init", env=db.env, check=True)
    run_cim("demo", "--size", "120", "--seed", str(DEMO_SEED), env=db.env, check=True)
    run_cim("load", *(str(SHARED / "datasets" / r) for r in RASTERS), env=db.env, check=True)
    return db


@pytest.fixture(scope="session")
def raster_server(raster_db) -> Iterator[Server]:
    srv = start_server(raster_db, log_name="raster-server.log")
    yield srv
    stop_server(srv)


# The test servers' credentials (cim.auth; config.yml restricts pipelines and pipe-nodes). The `http` client
# sends TEST_KEY, which holds every role; a test that starts its own client or tool sends AUTH_HEADERS
# (GDAL: GDAL_HTTP_HEADERS="X-API-Key: ..."; a browser: extra HTTP headers). `anon` has no credentials.
TEST_KEYS = {"tests": ("cim-test-key-all-roles", ["operations", "utilities"]),
             "pipe-office": ("cim-test-key-utilities", ["utilities"]),
             "planner": ("cim-test-key-planning", ["planning"])}
TEST_KEY = TEST_KEYS["tests"][0]
AUTH_HEADERS = {"X-API-Key": TEST_KEY}
JWT_SECRET = "cim-test-jwt-secret-0123456789abcdef"


def auth_env() -> dict[str, str]:
    keys = [{"name": name, "roles": roles, "sha256": hashlib.sha256(key.encode()).hexdigest()}
            for name, (key, roles) in TEST_KEYS.items()]
    return {"CIM_AUTH__KEYS": json.dumps(keys), "CIM_AUTH__JWT_SECRET": JWT_SECRET}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    db: DemoDB
    process: subprocess.Popen


def start_server(db: DemoDB, extra_env: dict[str, str] | None = None, log_name: str = "server.log") -> Server:
    """`cim serve` over a demo database on a free port, once it answers /healthz."""
    port = free_port()
    log = open(db.data_dir / log_name, "w")
    proc = subprocess.Popen([sys.executable, "-m", "cim.cli", "serve", "--port", str(port)], cwd=ROOT,
                            env={**os.environ, **db.env, **auth_env(), **(extra_env or {})}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return Server(url, db, proc)
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"cim serve did not start:\n{(db.data_dir / log_name).read_text()}")
        time.sleep(0.2)


def stop_server(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(10)
    except subprocess.TimeoutExpired:
        server.process.kill()


@pytest.fixture(scope="session")
def server(demo_db) -> Iterator[Server]:
    """`cim serve` over the demo database, on a free port, until the session ends."""
    srv = start_server(demo_db)
    yield srv
    stop_server(srv)


@pytest.fixture
def http(server) -> Iterator[httpx.Client]:
    """A client of `server` with the tests' API key (every role)."""
    with httpx.Client(base_url=server.url, timeout=30, headers=AUTH_HEADERS) as client:
        yield client


@pytest.fixture
def anon(server) -> Iterator[httpx.Client]:
    """A client of `server` without credentials."""
    with httpx.Client(base_url=server.url, timeout=30) as client:
        yield client


def wait_for_job(client: httpx.Client, job_url: str, timeout: float = 120) -> tuple[dict, str]:
    """Polls an OGC API – Processes job until it has succeeded: (its last status document, its results URL).
    Any status but accepted/running/successful, or the timeout, fails the test with the status in view."""
    deadline = time.monotonic() + timeout
    while (status := client.get(job_url, params={"f": "json"}).json())["status"] != "successful":
        assert status["status"] in ("accepted", "running") and time.monotonic() < deadline, status
        time.sleep(0.2)
    return status, next(link["href"] for link in status["links"] if link["rel"].endswith("results"))
