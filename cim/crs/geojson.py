"""Transforming GeoJSON (geometries, features, feature collections) and coordinate arrays in bulk.

All coordinates of a document are gathered into one numpy array, transformed in one call and put back
(shapely's get/set_coordinates), so a million points cost one transformation, not a million. Axis order:
``"crs"`` reads and writes coordinates in each CRS's own axis order (OGC's rule: EPSG:4490 is lat/lon,
EPSG:4550 north/east), ``"xy"`` in longitude/latitude, easting/northing order whatever the CRS.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import shapely
from shapely.geometry import mapping, shape

from cim.crs.registry import CRSInfo
from cim.crs.transform import swap_axes, transform

AxisOrder = Literal["crs", "xy"]
MAX_POINTS = 5_000_000


class InvalidInput(ValueError):
    """Malformed input; the message names the offending part."""


def _geometry(obj: Any, where: str) -> shapely.Geometry:
    if not isinstance(obj, dict) or "type" not in obj:
        raise InvalidInput(f"{where}: not a GeoJSON geometry")
    try:
        geom = shape(obj)
    except Exception as exc:  # shapely raises several kinds for bad coordinates
        raise InvalidInput(f"{where}: invalid {obj.get('type')} ({exc})") from None
    return geom


def _collect(doc: Any) -> tuple[list[shapely.Geometry | None], list[str]]:
    """The geometries of a document and where each came from."""
    if not isinstance(doc, dict):
        raise InvalidInput("input: expected a GeoJSON object")
    kind = doc.get("type")
    if kind == "FeatureCollection":
        features = doc.get("features")
        if not isinstance(features, list):
            raise InvalidInput("input.features: expected an array")
        geoms, where = [], []
        for i, f in enumerate(features):
            if not isinstance(f, dict) or f.get("type") != "Feature":
                raise InvalidInput(f"input.features[{i}]: not a Feature")
            g = f.get("geometry")
            geoms.append(None if g is None else _geometry(g, f"input.features[{i}].geometry"))
            where.append(f"input.features[{i}].geometry")
        return geoms, where
    if kind == "Feature":
        g = doc.get("geometry")
        return [None if g is None else _geometry(g, "input.geometry")], ["input.geometry"]
    return [_geometry(doc, "input")], ["input"]


def transform_geojson(doc: dict[str, Any], src: CRSInfo, dst: CRSInfo, axis_order: AxisOrder = "crs") -> dict[str, Any]:
    """A copy of ``doc`` with every coordinate transformed from ``src`` to ``dst``."""
    geoms, _where = _collect(doc)
    arr = np.array(geoms, dtype=object)
    present = arr[arr != None]  # noqa: E711  (object array of geometries and None)
    has_z = bool(present.size) and bool(shapely.has_z(present).any())
    coords = shapely.get_coordinates(present, include_z=has_z) if present.size else np.empty((0, 2))
    if len(coords) > MAX_POINTS:
        raise InvalidInput(f"input: {len(coords):,} coordinates, more than {MAX_POINTS:,} in one request")
    out = transform_array(coords, src, dst, axis_order)
    new = shapely.set_coordinates(present.copy(), out) if present.size else present
    it = iter(new)
    converted = [None if g is None else next(it) for g in geoms]
    return _rebuild(doc, converted)


def _rebuild(doc: dict[str, Any], geoms: list[shapely.Geometry | None]) -> dict[str, Any]:
    def geo(g):
        return None if g is None else mapping(g)

    kind = doc.get("type")
    if kind == "FeatureCollection":
        feats = [{**f, "geometry": geo(g)} for f, g in zip(doc["features"], geoms, strict=True)]
        return {**{k: v for k, v in doc.items() if k != "crs"}, "features": feats}
    if kind == "Feature":
        return {**doc, "geometry": geo(geoms[0])}
    return geo(geoms[0])


def transform_array(coords: np.ndarray, src: CRSInfo, dst: CRSInfo, axis_order: AxisOrder = "crs") -> np.ndarray:
    """An (n, 2) or (n, 3) coordinate array transformed; the third column is height where given."""
    if coords.ndim != 2 or coords.shape[1] not in (2, 3):
        raise InvalidInput("coordinates: expected an array of [x, y] or [x, y, z]")
    a, b = coords[:, 0], coords[:, 1]
    if axis_order == "crs":
        a, b = swap_axes(src, a, b)
    z = coords[:, 2] if coords.shape[1] == 3 else None
    x, y, z = transform(src, dst, a, b, z)
    if axis_order == "crs":
        x, y = swap_axes(dst, x, y)
    cols = [x, y] if z is None else [x, y, z]
    return np.column_stack(cols)


def parse_coordinates(values: Any) -> np.ndarray:
    """A JSON array of positions as an (n, 2|3) float array; the message names the first bad position."""
    if not isinstance(values, list) or not values:
        raise InvalidInput("coordinates: expected a non-empty array of positions")
    if len(values) > MAX_POINTS:
        raise InvalidInput(f"coordinates: {len(values):,} positions, more than {MAX_POINTS:,} in one request")
    try:
        arr = np.array(values, dtype=float)
    except (TypeError, ValueError):
        arr = None
    if arr is None or arr.ndim != 2 or arr.shape[1] not in (2, 3):
        for i, p in enumerate(values):
            ok = (isinstance(p, list) and len(p) in (2, 3)
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p))
            if not ok:
                raise InvalidInput(f"coordinates[{i}]: expected [x, y] or [x, y, z] numbers, got {p!r}"[:200])
        raise InvalidInput("coordinates: positions must all have the same number of values")
    bad = ~np.isfinite(arr).all(axis=1)
    if bad.any():
        raise InvalidInput(f"coordinates[{int(np.flatnonzero(bad)[0])}]: not a finite number")
    return arr
