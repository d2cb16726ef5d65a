"""OGC API – Processes ``case-overlay``: the CIM objects related to cases, and a 3D viewpoint on each.

Synchronous, or an asynchronous job (``Prefer: respond-async``) for large batches; up to
``cim.ops.overlay_max_cases`` cases per request. The work is :func:`cim.ops.overlay.overlay`.
"""

from __future__ import annotations

from typing import Any


import numpy as np
from pygeoapi.process.base import BaseProcessor

from cim.api.processes import InvalidProcessInput
from cim.api.provider import write_database
from cim.crs.registry import CRS84_URI, UnknownCRS, default_registry
from cim.crs.transform import OutsideArea, swap_axes, transform
from cim.ops.cases import CASE_TYPES
from cim.ops.overlay import OverlayCase, overlay, stored_cases
from cim.settings import get_settings

MAX_RADIUS_M = 1000.0


_SERVED_URL: list[str] = []


def set_served_url(url: str) -> None:
    """Called by the app with the URL it serves under (read once at start-up): not the effective pygeoapi
    config file at run time, which another server started on the same data dir rewrites with its own port
    (the overlay's links then named the wrong server)."""
    _SERVED_URL[:] = [url.rstrip("/")]


def served_url() -> str:
    """The public URL the server runs under."""
    return _SERVED_URL[0] if _SERVED_URL else get_settings().url

PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "case-overlay",
    "title": {"en": "Case overlay on the CIM", "zh": "案件叠加分析"},
    "description": {
        "en": "For each case (stored cases by id, or ad-hoc points): the nearest pipe node or segment of the kind "
              "its type names within radius_m, the building (and, where modelled, storey and space) containing "
              "it, the nearest road; distances in metres (EPSG:4550); and a 3D viewpoint (camera lon/lat/height, "
              "heading/pitch/roll) for the command centre. Synchronous or asynchronous (Prefer: respond-async).",
        "zh": "案件与 CIM 叠加：最近的同类管线点或管段、所在建筑（楼层、房间）、最近道路及三维视点。",
    },
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": ["案件", "overlay", "叠加分析", "viewpoint"],
    "links": [],
    "inputs": {
        "ids": {"title": "Ids of stored cases (collection cases)",
                "schema": {"type": "array", "items": {"type": "string"}}, "minOccurs": 0, "maxOccurs": 1},
        "features": {"title": "Or ad-hoc cases: GeoJSON Point Features (id, properties.case_type)",
                     "schema": {"type": "array", "items": {"type": "object"}}, "minOccurs": 0, "maxOccurs": 1},
        "crs": {"title": "CRS of the features' coordinates (default CRS84)", "schema": {"type": "string"},
                "minOccurs": 0, "maxOccurs": 1},
        "radius_m": {"title": "Search radius for pipes and roads, metres",
                     "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_RADIUS_M},
                     "minOccurs": 0, "maxOccurs": 1},
    },
    "outputs": {"result": {"title": "Related objects and viewpoint of each case",
                           "schema": {"type": "object", "contentMediaType": "application/json"}}},
    "example": {"inputs": {"ids": ["AJ20261205-000001"], "radius_m": 50}},
}


def _adhoc(features: Any, crs_text: str | None, storage_srid: int) -> list[OverlayCase]:
    if not isinstance(features, list) or not features:
        raise InvalidProcessInput(user_msg="features: a non-empty array of GeoJSON Point Features")
    reg = default_registry()
    try:
        src = reg.resolve(crs_text or CRS84_URI)
    except UnknownCRS as exc:
        raise InvalidProcessInput(user_msg=f"crs: {exc}") from None
    ids, kinds, a, b = [], [], [], []
    for i, f in enumerate(features):
        geom = f.get("geometry") if isinstance(f, dict) else None
        coords = geom.get("coordinates") if isinstance(geom, dict) and geom.get("type") == "Point" else None
        if (not isinstance(coords, list) or len(coords) < 2
                or not all(isinstance(v, (int, float)) for v in coords[:2])):
            raise InvalidProcessInput(user_msg=f"features[{i}]: a GeoJSON Feature with a Point geometry")
        kind = (f.get("properties") or {}).get("case_type")
        if kind is not None and kind not in CASE_TYPES:
            raise InvalidProcessInput(user_msg=f"features[{i}].properties.case_type: unknown code {kind!r}")
        ids.append(str(f.get("id", i)))
        kinds.append(kind)
        a.append(float(coords[0]))
        b.append(float(coords[1]))
    x0, y0 = swap_axes(src, np.array(a), np.array(b))
    try:
        x, y, _ = transform(src, reg.epsg(storage_srid), x0, y0)
    except OutsideArea as exc:
        raise InvalidProcessInput(user_msg=f"features: {exc}") from None
    return [OverlayCase(i, float(xx), float(yy), k) for i, xx, yy, k in zip(ids, x, y, kinds)]


def run_overlay(data: dict[str, Any], base_url: str | None = None) -> dict[str, Any]:
    """The process without pygeoapi (the related-objects route of one case uses it too)."""
    settings = get_settings()
    limit = settings.ops.overlay_max_cases
    unknown = set(data) - set(PROCESS_METADATA["inputs"])
    if unknown:
        raise InvalidProcessInput(user_msg=f"unknown inputs: {', '.join(sorted(unknown))}")
    if ("ids" in data) == ("features" in data):
        raise InvalidProcessInput(user_msg="give exactly one of ids and features")
    batch = data.get("ids", data.get("features"))
    if isinstance(batch, list) and len(batch) > limit:
        raise InvalidProcessInput(user_msg=f"{len(batch):,} cases in one request, at most {limit:,}: split the "
                                           "batch")
    radius = data.get("radius_m", settings.ops.overlay_radius_m)
    if not isinstance(radius, (int, float)) or isinstance(radius, bool) or not 0 < radius <= MAX_RADIUS_M:
        raise InvalidProcessInput(user_msg=f"radius_m: a number of metres, 0 < radius_m <= {MAX_RADIUS_M:g}")
    # the primary even with a replica: the overlay's SQL uses temporary tables, which a hot standby refuses
    # ("cannot execute ... in a read-only transaction"), and it must see a case written a moment ago
    engine, t = write_database()
    srid = t.city_object.c.geom.type.srid
    missing: list[str] = []
    with engine.connect() as conn, conn.begin():
        if "ids" in data:
            ids = data["ids"]
            if not isinstance(ids, list) or not ids or not all(isinstance(i, str) for i in ids):
                raise InvalidProcessInput(user_msg="ids: a non-empty array of case ids")
            cases, missing = stored_cases(conn, t, ids)
            if missing and not cases:
                raise InvalidProcessInput(user_msg=f"ids: no such cases: {', '.join(missing[:20])}")
        else:
            cases = _adhoc(data["features"], data.get("crs"), srid)
        results = overlay(conn, t, cases, float(radius), (base_url or served_url()).rstrip("/"), settings.data_dir)
    out: dict[str, Any] = {"radius_m": float(radius), "distance_crs": f"EPSG:{srid}", "cases": results}
    if missing:
        out["not_found"] = missing
    return out


class CaseOverlayProcessor(BaseProcessor):
    """pygeoapi processor for ``case-overlay``."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, PROCESS_METADATA)

    def execute(self, data: dict[str, Any], outputs: dict | None = None) -> tuple[str, dict[str, Any]]:
        return "application/json", run_overlay(data)

    def __repr__(self) -> str:
        return "<CaseOverlayProcessor>"
