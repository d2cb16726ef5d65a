"""Seeding the tile cache ahead of requests (``cim tiles seed``): the tiles of an area and zoom range.

The seeder builds exactly what the server would (the same endpoint objects make the cache keys and the
tiles), only where the cache has no tile for the layer's current data version: a second run over the same
area skips what is there, so an interrupted run resumes where it stopped. Tiles outside a collection's
``tileMatrixSetLimits`` or zoom range are not tiles of it and are left out.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import morecantile
from sqlalchemy import Engine

from cim.db.models import CIMTables
from cim.tiles.endpoints import HTTPError, RasterTileEndpoints, VectorTileEndpoints
from cim.tiles.grid import TileSet
from cim.tiles.raster import FORMATS


@dataclass
class SeedReport:
    """What a run did, per outcome."""

    built: int = 0
    empty: int = 0  # built, without data (204)
    skipped: int = 0  # already cached for the current version
    failed: list[str] = field(default_factory=list)
    uncached: int = 0  # built but the cache did not take it (full or read-only: see the log)


@dataclass(frozen=True)
class SeedJob:
    collection: str
    kind: str  # "vector" or a raster style
    ts: TileSet
    matrix: str
    row: int
    col: int
    fmt: str = "mvt"


def plan(engine: Engine, t: CIMTables, vector: VectorTileEndpoints, rasters: RasterTileEndpoints,
         collections: list[str], sets: list[TileSet], matrices: list[str],
         bbox: tuple[float, float, float, float], raster_format: str | None = None) -> list[SeedJob]:
    """The tiles to seed: per collection (vector, or raster in each of its styles), set and matrix, those of
    the lon/lat ``bbox`` within the collection's limits."""
    jobs: list[SeedJob] = []
    with engine.connect() as conn:
        for collection in collections:
            for ts in sets:
                if collection in vector.collections:
                    kinds = [("vector", "mvt", vector.tile_limits(conn, t, collection, ts))]
                else:
                    try:
                        state = rasters.state(conn, t, collection)
                    except HTTPError:
                        raise ValueError(f"no collection {collection!r}: vector collections "
                                         f"{', '.join(vector.collections)}, or a raster's name") from None
                    kinds = [(style, raster_format if raster_format in FORMATS[style] else FORMATS[style][0],
                              state.limits[ts.id]) for style in state.layer.styles]
                for kind, fmt, limits in kinds:
                    by_matrix = {lim.matrix: lim for lim in limits}
                    for matrix in matrices:
                        lim = by_matrix.get(matrix)
                        if lim is None:
                            continue
                        for tile in _tiles(ts, bbox, int(matrix)):
                            if lim.contains(tile.y, tile.x):
                                jobs.append(SeedJob(collection, kind, ts, matrix, tile.y, tile.x, fmt))
    return jobs


def _tiles(ts: TileSet, bbox: tuple[float, float, float, float], matrix: int) -> Iterator[morecantile.Tile]:
    w, s, e, n = bbox
    return ts.tms.tiles(w, s, e, n, [matrix], truncate=True)


def seed(database: Callable[[], tuple[Engine, CIMTables]], vector: VectorTileEndpoints,
         rasters: RasterTileEndpoints, jobs: list[SeedJob], workers: int = 2,
         advance: Callable[[], None] = lambda: None) -> SeedReport:
    """Build and cache the ``jobs`` not yet cached, on ``workers`` threads (one connection each)."""
    report = SeedReport()
    lock = threading.Lock()
    local = threading.local()
    engine, t = database()
    opened: list = []  # one connection per worker thread

    def count(attr: str) -> None:
        with lock:
            setattr(report, attr, getattr(report, attr) + 1)

    def run(job: SeedJob) -> None:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = engine.connect()
            with lock:
                opened.append(conn)
        try:
            if job.kind == "vector":
                key = vector.tile_key(conn, t, job.collection, job.ts, job.matrix, job.row, job.col)
                if vector.cache.contains(key):
                    count("skipped")
                    return
                data = vector.build(conn, t, key)
                conn.rollback()  # end the read transaction: the next job sees the current versions
            else:
                state = rasters.state(conn, t, job.collection)
                key = rasters.tile_key(conn, state, job.kind, job.ts, job.matrix, job.row, job.col, job.fmt)
                conn.rollback()
                if rasters.cache.contains(key):
                    count("skipped")
                    return
                data = rasters.build(state, key)
            count("built" if data else "empty")
            if not rasters.cache.contains(key):
                count("uncached")
        except Exception as exc:  # one failed tile is reported, the others go on
            with lock:
                report.failed.append(f"{job.collection} {job.kind} {job.ts.id} {job.matrix}/{job.row}/{job.col}: "
                                     f"{type(exc).__name__}: {exc}")
        finally:
            advance()

    try:
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(run, jobs):
                pass
    finally:
        for c in opened:
            c.close()
    return report


def vector_collections(config: dict) -> dict[str, str]:
    """Collection id → CIM layer of the vector collections in a config file's pygeoapi ``resources``."""
    return {name: str(p["data"]) for name, res in (config.get("resources") or {}).items()
            for p in res.get("providers", []) if p.get("name") == "cim.api.provider.CIMProvider"}


def parse_matrices(text: str) -> list[str]:
    """``12-16`` or ``14,15,17`` (tile matrix ids) → ids; ``ValueError`` naming the option otherwise."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise ValueError(f"--zooms: tile matrix ids like 12-16 or 14,15, got {text!r}") from None
    if not out or min(out) < 0 or max(out) > 30:
        raise ValueError(f"--zooms: tile matrix ids from 0 to 30, got {text!r}")
    return [str(m) for m in sorted(set(out))]
