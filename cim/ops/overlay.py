"""Overlay of cases on the CIM: the objects related to each case, and a 3D viewpoint on it.

For every case of a batch, in the storage CRS (EPSG:4550, metres): the nearest pipe node or segment of the
kind its type names (``CASE_TYPES``) within a radius, the building whose footprint contains it and, where
interiors are modelled, the lowest storey and space containing it, and the nearest road within the radius.
All of it is set-based SQL over a temporary table of the batch's points, one statement per relation: PostGIS
with a KNN (``<->``) LATERAL join bounded by ``ST_DWithin``; SpatiaLite with its R*Tree
(``SpatialIndex`` search frame of the radius around each case) and a window function for the nearest.

The viewpoint is a camera for the command centre's 3D screen: looking north at the case from ``range``
metres away at 45° down, its position in CGCS2000 lon/lat with the height above the ellipsoid when a geoid
grid is configured (else the 1985 height, with a warning).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
from pyproj import Geod
from sqlalchemy import Connection, select, text

from cim.crs.registry import CRS84_URI, default_registry
from cim.crs.transform import height_warning, transform
from cim.db.models import CIMTables
from cim.ops.cases import CASE_TYPES, LAYER

VIEW_PITCH = -45.0  # degrees, looking down
GEOD = Geod(ellps="GRS80")  # CGCS2000's ellipsoid (its flattening differs from GRS80's by 1e-10)
VIEW_RANGE = 120.0  # metres from the camera to the case (more when related objects lie further)


@dataclass(frozen=True)
class Relation:
    """One kind of related object: the layer, which of its objects, how far to look."""

    name: str
    layer: str
    classes: tuple[str, ...] = ()
    by_case_kind: bool = False  # only objects of the pipe kind (and layer) the case type names
    within: bool = False  # containing the case (distance 0): the lowest by min_z wins, not the nearest


RELATIONS = (
    Relation("pipe_node", "pipe-nodes", by_case_kind=True),
    Relation("pipe_segment", "pipelines", by_case_kind=True),
    Relation("building", "buildings", ("Building", "BuildingPart"), within=True),
    Relation("storey", "building-components", ("Storey",), within=True),
    Relation("space", "building-components", ("Space",), within=True),
    Relation("road", "roads"),
)


@dataclass
class OverlayCase:
    """A point to overlay: a stored case's id (or the caller's label), its location and its type."""

    id: str
    x: float
    y: float
    case_type: str | None = None


def stored_cases(conn: Connection, t: CIMTables, ids: list[str]) -> tuple[list[OverlayCase], list[str]]:
    """The stored cases of ``ids`` (in that order) and the ids not found."""
    co = t.city_object
    from sqlalchemy import func

    found: dict[str, OverlayCase] = {}
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        rows = conn.execute(select(co.c.uid, func.ST_X(co.c.geom), func.ST_Y(co.c.geom), co.c.case_type)
                            .where(co.c.layer == LAYER, co.c.uid.in_(chunk))).all()
        for uid, x, y, kind in rows:
            found[uid] = OverlayCase(uid, float(x), float(y), kind)
    return [found[i] for i in ids if i in found], [i for i in ids if i not in found]


def _load_points(conn: Connection, cases: list[OverlayCase]) -> None:
    postgis = conn.dialect.name == "postgresql"
    conn.execute(text("DROP TABLE IF EXISTS overlay_case"))
    conn.execute(text("CREATE TEMP TABLE overlay_case (n INTEGER PRIMARY KEY, x DOUBLE PRECISION, "
                      "y DOUBLE PRECISION, pipe_layer VARCHAR(32), pipe_kind VARCHAR(8))"
                      + (" ON COMMIT DROP" if postgis else "")))
    rows = []
    for n, c in enumerate(cases):
        kind = CASE_TYPES.get(c.case_type or "")
        rows.append({"n": n, "x": c.x, "y": c.y, "pipe_layer": kind.pipe_layer if kind else None,
                     "pipe_kind": kind.pipe_kind if kind else None})
    conn.execute(text("INSERT INTO overlay_case (n, x, y, pipe_layer, pipe_kind) "
                      "VALUES (:n, :x, :y, :pipe_layer, :pipe_kind)"), rows)
    if postgis:
        conn.execute(text("ANALYZE overlay_case"))


def _conditions(rel: Relation) -> str:
    out = ["o.layer = :layer"]
    if rel.classes:
        out.append("o.object_class IN (" + ", ".join(f"'{c}'" for c in rel.classes) + ")")
    if rel.by_case_kind:
        out.append("c.pipe_layer = :layer AND (c.pipe_kind IS NULL OR o.pipe_kind = c.pipe_kind)")
    return " AND ".join(out)


OUT_COLUMNS = "o.uid, o.name, o.object_class, o.pipe_kind, o.min_z, o.max_z"


def relation_sql(rel: Relation, dialect: str, srid: int) -> str:
    """One statement: for every case the related object of ``rel`` (at most one) and its distance."""
    where = _conditions(rel)
    if dialect == "postgresql":
        point = f"ST_SetSRID(ST_MakePoint(c.x, c.y), {srid})"
        order = "o.min_z, o.id" if rel.within else f"o.geom <-> {point}"  # KNN on the (layer, geom) GiST index
        reach = f"ST_Intersects(o.geom, {point})" if rel.within else f"ST_DWithin(o.geom, {point}, :radius)"
        return (f"SELECT c.n, {OUT_COLUMNS.replace('o.', 'r.')}, r.d FROM overlay_case c CROSS JOIN LATERAL ("
                f"SELECT {OUT_COLUMNS}, ST_Distance(o.geom, {point}) AS d FROM city_object o "
                f"WHERE {where} AND {reach} ORDER BY {order} LIMIT 1) r")
    point = f"MakePoint(c.x, c.y, {srid})"
    r = "0" if rel.within else ":radius"
    frame = f"BuildMbr(c.x - {r}, c.y - {r}, c.x + {r}, c.y + {r}, {srid})"
    # candidates from the R*Tree, each distance computed once (MATERIALIZED: not re-evaluated per use)
    if rel.within:
        measure, keep, order = f"0.0 AS d, ST_Intersects(o.geom, {point}) AS hit", "hit = 1", "min_z, id"
    else:
        measure, keep, order = f"ST_Distance(o.geom, {point}) AS d", "d <= :radius", "d, id"
    return (f"WITH cand AS MATERIALIZED (SELECT c.n AS n, o.id AS id, {OUT_COLUMNS}, {measure} "
            f"FROM overlay_case c CROSS JOIN city_object o "  # CROSS: the cases are the outer loop (SQLite)
            f"WHERE o.id IN (SELECT rowid FROM SpatialIndex WHERE f_table_name = 'city_object' "
            f"AND f_geometry_column = 'geom' AND search_frame = {frame}) AND {where}) "
            f"SELECT n, uid, name, object_class, pipe_kind, min_z, max_z, d FROM ("
            f"SELECT *, row_number() OVER (PARTITION BY n ORDER BY {order}) AS rk FROM cand WHERE {keep}) "
            f"WHERE rk = 1")


def overlay(conn: Connection, t: CIMTables, cases: list[OverlayCase], radius_m: float, base_url: str,
            data_dir: Path) -> list[dict[str, Any]]:
    """The related objects and a viewpoint of every case, in the order given. Runs inside the caller's
    transaction (the temporary table lives only there)."""
    srid = t.city_object.c.geom.type.srid
    related: list[dict[str, Any]] = [{} for _ in cases]
    if cases:
        _load_points(conn, cases)
        for rel in RELATIONS:
            rows = conn.execute(text(relation_sql(rel, conn.dialect.name, srid)),
                                {"layer": rel.layer, "radius": radius_m}).mappings().all()
            for row in rows:
                related[row["n"]][rel.name] = {
                    "collection": rel.layer, "id": row["uid"], "class": row["object_class"], "name": row["name"],
                    **({"pipe_kind": row["pipe_kind"]} if row["pipe_kind"] else {}),
                    "distance_m": round(float(row["d"]), 3),
                    "href": f"{base_url}/collections/{rel.layer}/items/{row['uid']}"}
        conn.execute(text("DROP TABLE IF EXISTS overlay_case"))
    x = np.array([c.x for c in cases], dtype=float)
    y = np.array([c.y for c in cases], dtype=float)
    reg = default_registry()
    lon, lat, _ = transform(reg.epsg(srid), reg.resolve(CRS84_URI), x, y) if cases else (x, y, None)
    ground = ground_heights(conn, t, x, y, data_dir)
    views, warning = viewpoints(x, y, ground, related, srid)
    out = []
    for i, c in enumerate(cases):
        item: dict[str, Any] = {"id": c.id, "case_type": c.case_type,
                                "location": {"lon": round(float(lon[i]), 9), "lat": round(float(lat[i]), 9),
                                             "x": round(c.x, 3), "y": round(c.y, 3), "crs_xy": f"EPSG:{srid}"},
                                "related": related[i], "viewpoint": views[i]}
        if c.case_type and c.case_type in CASE_TYPES:
            item["case_type_name"] = CASE_TYPES[c.case_type].zh
        if warning:
            item["viewpoint"]["warning"] = warning
        out.append(item)
    return out


@lru_cache(maxsize=2)
def _dem(path: str, mtime: float) -> tuple[np.ndarray, Any, float | None]:
    """The DEM's band in its own type (float32: 16 MB for the demo's), read once per file version: per-point
    sampling through rasterio cost 0.45 ms a point."""
    import rasterio

    with rasterio.open(path) as ds:
        return ds.read(1), ds.transform, ds.nodata


def ground_heights(conn: Connection, t: CIMTables, x: np.ndarray, y: np.ndarray, data_dir: Path) -> np.ndarray:
    """Ground heights (1985 datum) at the points from the registered DEM; NaN where there is none."""
    import rasterio.transform

    out = np.full(x.shape, np.nan)
    rl = t.raster_layer
    row = conn.execute(select(rl.c.path, rl.c.srid).where(rl.c.kind == "dem").order_by(rl.c.id).limit(1)).first()
    if row is None or len(x) == 0:
        return out
    path = Path(row.path) if Path(row.path).is_absolute() else data_dir / row.path
    if not path.exists():
        return out
    band, affine, nodata = _dem(str(path), path.stat().st_mtime)
    if row.srid != t.city_object.c.geom.type.srid:
        reg = default_registry()
        x, y, _ = transform(reg.epsg(t.city_object.c.geom.type.srid), reg.epsg(row.srid), x, y)
    rows, cols = (np.asarray(v) for v in rasterio.transform.rowcol(affine, x, y))
    inside = (rows >= 0) & (rows < band.shape[0]) & (cols >= 0) & (cols < band.shape[1])
    out[inside] = band[rows[inside], cols[inside]]
    if nodata is not None:
        out[out == nodata] = np.nan
    return out


def viewpoints(x: np.ndarray, y: np.ndarray, ground: np.ndarray, related: list[dict[str, Any]],
               srid: int) -> tuple[list[dict[str, Any]], str | None]:
    """A camera per case: heading (true) north, pitch −45°, roll 0, far enough to see the related objects."""
    reg = default_registry()
    far = np.array([max([r.get("distance_m", 0.0) for r in rel.values()] + [0.0]) for rel in related], dtype=float)
    span = np.maximum(VIEW_RANGE, 3.0 * far)
    horizontal = span * math.cos(math.radians(-VIEW_PITCH))
    target_h = np.where(np.isnan(ground), 0.0, ground)
    if len(x) == 0:
        return [], None
    src = reg.resolve(f"EPSG:{srid}+5737")
    dst = reg.resolve("EPSG:4480")  # CGCS2000 3D: ellipsoidal heights
    tlon, tlat, th = transform(src, dst, x, y, target_h)
    # due south along the ellipsoid (true north, not grid north: 0.5° apart in Benxi's GK zone)
    lon, lat, _ = GEOD.fwd(tlon, tlat, np.full(len(x), 180.0), horizontal)
    h = th + span * math.sin(math.radians(-VIEW_PITCH))
    warning = height_warning(src, dst)
    out = []
    for i in range(len(x)):
        out.append({"longitude": round(float(lon[i]), 9), "latitude": round(float(lat[i]), 9),
                    "height": round(float(h[i]), 2), "heading": 0.0, "pitch": VIEW_PITCH, "roll": 0.0,
                    "range_m": round(float(span[i]), 1),
                    "target": {"longitude": round(float(tlon[i]), 9), "latitude": round(float(tlat[i]), 9),
                               "height": round(float(th[i]), 2),
                               **({} if not np.isnan(ground[i]) else {"ground": "unknown (no DEM here)"})},
                    "crs": "EPSG:4480 (CGCS2000 lon/lat, height above the ellipsoid)"})
    return out, warning
