"""Prometheus metrics at ``/metrics``: requests by route template and status, latencies, tile cache use,
database pool use and 503s.

With several workers every process keeps its own values; prometheus-client's multiprocess mode adds them
up at scrape time from files in ``PROMETHEUS_MULTIPROC_DIR``, which ``cim serve`` points at an emptied
folder before the workers start (it must be set before this module is first imported). Without it (one
process, tests calling :func:`create_app` directly) the process's own registry is served.

Other code counts through the small API here, e.g. a tile cache::

    from cim.api import metrics
    metrics.tile_cache("vector", hit=True)
"""

from __future__ import annotations

import atexit
import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import Engine, event
from starlette.requests import Request
from starlette.responses import Response

__all__ = ["metrics_endpoint", "observe_request", "tile_cache", "unavailable", "watch_pool"]

MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

REQUESTS = Counter("cim_http_requests", "HTTP requests by route template, method and status",
                   ["route", "method", "status"])
LATENCY = Histogram("cim_http_request_duration_seconds", "Time to the end of the response, by route template",
                    ["route"], buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
TILE_CACHE = Counter("cim_tile_cache", "Tile cache lookups by kind (vector, raster, 3d...) and result",
                     ["kind", "result"])
POOL_IN_USE = Gauge("cim_db_pool_checked_out", "Database connections in use, by database (primary, replica)",
                    ["database"], multiprocess_mode="livesum")
POOL_CONNECTIONS = Gauge("cim_db_pool_connections", "Database connections open, by database",
                         ["database"], multiprocess_mode="livesum")
UNAVAILABLE = Counter("cim_unavailable", "503 answers by reason (timeout, pool, down)", ["reason"])

if MULTIPROCESS:  # this worker's live gauges leave the sums when it exits
    atexit.register(lambda pid=os.getpid(): multiprocess.mark_process_dead(pid))


def tile_cache(kind: str, hit: bool) -> None:
    """Count one tile cache lookup."""
    TILE_CACHE.labels(kind, "hit" if hit else "miss").inc()


def unavailable(reason: str) -> None:
    """Count one 503 (see :mod:`cim.api.limits`)."""
    UNAVAILABLE.labels(reason).inc()


def observe_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one finished request (called by :class:`cim.api.logs.RequestLog`)."""
    REQUESTS.labels(route, method, str(status)).inc()
    LATENCY.labels(route).observe(seconds)


def watch_pool(engine: Engine, database: str) -> None:
    """Follow ``engine``'s pool: connections open and checked out."""
    in_use, open_ = POOL_IN_USE.labels(database), POOL_CONNECTIONS.labels(database)
    open_.inc(engine.pool.checkedin() + engine.pool.checkedout())  # opened before we listened (the first check)
    event.listen(engine.pool, "checkout", lambda *_: in_use.inc())
    event.listen(engine.pool, "checkin", lambda *_: in_use.dec())
    event.listen(engine.pool, "connect", lambda *_: open_.inc())
    event.listen(engine.pool, "close", lambda *_: open_.dec())
    event.listen(engine.pool, "close_detached", lambda *_: open_.dec())


async def metrics_endpoint(request: Request) -> Response:
    """``/metrics`` in Prometheus' text format, summed over the workers."""
    registry = REGISTRY
    if MULTIPROCESS:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
