"""Coordinate reference systems: cached transformers (one per source/target pair, built once).

Inside the code every transformer is ``always_xy`` (x = easting/longitude, y = northing/latitude);
the axis order a CRS defines (EPSG:4490 lat/lon, EPSG:4550 north/east) is applied only at the API edge.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from functools import lru_cache

from pyproj import CRS, Transformer

__all__ = ["built_once", "crs", "crs84_srid", "thread_cheap", "transformer"]


def built_once(build: Callable[..., Transformer]) -> Callable[..., Transformer]:
    """A cache for transformers that builds each one once even when many threads ask at the same moment:
    with ``lru_cache`` the first requests of a cold worker (64 at once under load) each built the same
    transformer (~0.1-1 s of CPU apiece) while holding database connections, and the pool ran dry."""
    cache: dict[tuple, Transformer] = {}
    lock = threading.Lock()

    @functools.wraps(build)
    def get(*key: str) -> Transformer:
        found = cache.get(key)
        if found is None:
            with lock:
                found = cache.get(key)
                if found is None:
                    if len(cache) >= 256:
                        cache.clear()
                    found = cache[key] = build(*key)
        return found

    return get


@lru_cache(maxsize=64)
def crs(code: int | str) -> CRS:
    """A pyproj CRS from an EPSG code or any string pyproj accepts (cached)."""
    return CRS.from_epsg(code) if isinstance(code, int) else CRS.from_user_input(code)


@built_once
def transformer(source: int | str, target: int | str) -> Transformer:
    """The transformer from ``source`` to ``target`` in x/y (lon/lat, east/north) order, built once.

    Building one costs 0.2 ms to 0.7 s (../shared/CRS-NOTES.md), so never per request or per feature.
    """
    return thread_cheap(Transformer.from_crs(crs(source), crs(target), always_xy=True))


def thread_cheap(tr: Transformer) -> Transformer:
    """The same operation, rebuilt from its PROJ pipeline so that using it in a new thread is cheap.

    pyproj gives every thread its own PROJ object, and for a transformer made ``from_crs`` re-runs the
    operation search to make it: 0.25 s for OGC:CRS84 → EPSG:4550, in each new thread of the server's
    thread pool (measured: the first requests on every thread paid it). From the pipeline string the
    per-thread copy costs ~0.1 ms, with identical results. Transformers PROJ cannot express as a single
    pipeline string are returned as they are.
    """
    definition = tr.definition
    if not definition or not definition.startswith("proj="):
        return tr
    return Transformer.from_pipeline(definition)


@lru_cache(maxsize=8)
def crs84_srid(storage_srid: int) -> int:
    """The SRID to ask the database for when writing CRS84 longitude/latitude from ``storage_srid``.

    The storage CRS's own geographic CRS (EPSG:4490 for EPSG:4550): PROJ's CGCS2000 → WGS 84 step is a
    no-op ("ballpark"; the real gap is ~0.7 m of plate motion at Benxi, ../shared/CRS-NOTES.md), so the
    numbers are the same as via EPSG:4326, and the database gets them 1.6–3× faster without setting up that
    operation. PostGIS and SpatiaLite write geographic coordinates longitude first.
    """
    geodetic = crs(storage_srid).geodetic_crs
    code = geodetic.to_epsg() if geodetic is not None else None
    return code or 4326
