"""3D surface geometry checks shared by ingest (quality rules) and outputs (JSON-FG solids).

CIM objects store their 3D geometry as a MultiPolygon Z of faces. shapely's own validity works in the
xy plane, where every wall is a line: faces are checked here in their own plane instead.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

__all__ = ["Faces", "close_open_base", "consistently_oriented", "face_problems", "is_closed_shell", "surface_footprint"]


class Faces:
    """Every ring of a MultiPolygon Z at once (numpy, no per-face Python): coordinates, the ring of each
    vertex, the face of each ring, which rings are exteriors, and each ring's Newell normal. Build it once
    and hand it to the checks below when several of them look at one geometry."""

    def __init__(self, geom: Any) -> None:
        polygons = np.asarray(shapely.get_parts(geom), dtype=object)
        rings, self.face = shapely.get_rings(polygons, return_index=True)
        self.coords, self.ring = shapely.get_coordinates(rings, include_z=True, return_index=True)
        self.faces = len(polygons)
        self.exterior = np.r_[True, self.face[1:] != self.face[:-1]] if len(self.face) else np.zeros(0, bool)
        a, b = self.coords[:-1], self.coords[1:]
        same = self.ring[:-1] == self.ring[1:]  # consecutive vertices of one (closed) ring: its edges
        a, b, of = a[same], b[same], self.ring[:-1][same]
        self.edges = (a, b)
        n = len(rings)
        self.normals = np.column_stack([
            np.bincount(of, (a[:, 1] - b[:, 1]) * (a[:, 2] + b[:, 2]), minlength=n),
            np.bincount(of, (a[:, 2] - b[:, 2]) * (a[:, 0] + b[:, 0]), minlength=n),
            np.bincount(of, (a[:, 0] - b[:, 0]) * (a[:, 1] + b[:, 1]), minlength=n)])


def is_closed_shell(geom: Any, decimals: int = 3, faces: "Faces | None" = None) -> bool:
    """True when the faces of a MultiPolygon Z close a volume (whatever their orientation).

    Every edge of a closed surface is shared by an even number of faces. Real city models split an edge
    of one face with a vertex of its neighbour (T-junctions: every LOD1 building of TU Delft's Delft model
    has them), so edges left unpaired after rounding to ``decimals`` are then checked along their line:
    closed when every stretch of it is covered an even number of times.
    """
    if geom is None or geom.geom_type != "MultiPolygon" or geom.is_empty or not shapely.has_z(geom):
        return False
    odd = _odd_edges(geom, decimals, faces)
    if not len(odd):
        return True
    starts, ends = odd[:, 0], odd[:, 1]
    tol = 2 * 10.0 ** -decimals
    for a, b in odd:  # each unpaired edge must be covered an even number of times along its length
        u = (b - a) / np.linalg.norm(b - a)

        def off_line(points: np.ndarray, a: np.ndarray = a, u: np.ndarray = u) -> np.ndarray:
            w = points - a
            return np.linalg.norm(w - np.outer(w @ u, u), axis=1)

        on = (off_line(starts) < tol) & (off_line(ends) < tol)
        t0, t1 = (starts[on] - a) @ u, (ends[on] - a) @ u
        lo_, hi_ = np.minimum(t0, t1), np.maximum(t0, t1)
        length = float(np.linalg.norm(b - a))
        cuts = np.unique(np.concatenate([[0.0, length], lo_[(lo_ > 0) & (lo_ < length)],
                                         hi_[(hi_ > 0) & (hi_ < length)]]))
        for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
            if hi - lo < tol:
                continue
            mid = (lo + hi) / 2
            if int(((lo_ < mid) & (mid < hi_)).sum()) % 2:
                return False
    return True


def _odd_edges(geom: Any, decimals: int, faces: "Faces | None" = None) -> np.ndarray:
    """The edges (after rounding to ``decimals``) that an odd number of faces use, as (n, 2, 3) floats."""
    a, b = (faces or Faces(geom)).edges
    scale = 10.0 ** decimals
    qa, qb = np.rint(a * scale).astype(np.int64), np.rint(b * scale).astype(np.int64)
    d = qb - qa
    nonzero = d != 0
    keep = nonzero.any(axis=1)  # edges that rounding collapses are no edges
    qa, qb, d, nonzero = qa[keep], qb[keep], d[keep], nonzero[keep]
    forward = d[np.arange(len(d)), nonzero.argmax(axis=1)] > 0  # a < b in lexicographic order
    pairs = np.where(forward[:, None], np.hstack([qa, qb]), np.hstack([qb, qa]))
    if not len(pairs):
        return np.zeros((0, 2, 3))
    unique, counts = np.unique(pairs, axis=0, return_counts=True)
    return (unique[counts % 2 == 1].reshape(-1, 2, 3) / scale)


def close_open_base(geom: Any, decimals: int = 3, faces: Faces | None = None) -> tuple[Any, int]:
    """(geometry, faces added): a shell open only at its flat base, as LOD1 extrusions without a ground
    face are (TU Delft's Delft model), closed with the ground face(s) its base edges outline, facing down;
    base vertices less than 1 cm apart in height at one plan position are snapped to the lowest.
    Anything else comes back unchanged with 0: the closed-solid rule then judges it. ``faces``: the
    geometry's :class:`Faces`, if the caller has them."""
    if (geom is None or geom.geom_type != "MultiPolygon" or geom.is_empty or not shapely.has_z(geom)
            or is_closed_shell(geom, decimals, faces)):
        return geom, 0
    original = geom
    coords = shapely.get_coordinates(geom, include_z=True)
    z0 = float(coords[:, 2].min())
    flat = 0.01  # a base is flat within a centimetre (placed on the ellipsoid, it is not exactly flat)
    # walls whose bottoms differ by millimetres at one corner (Delft has 1 cm steps) meet at the lowest
    low = np.abs(coords[:, 2] - z0) < flat
    keys = list(map(tuple, np.round(coords[low, :2], decimals)))
    vertices: dict[tuple, np.ndarray] = {}  # the base's own vertices by their rounded plan position
    for key, point in zip(keys, coords[low], strict=True):
        if key not in vertices or point[2] < vertices[key][2]:
            vertices[key] = point
    if any(vertices[key][2] != point[2] for key, point in zip(keys, coords[low], strict=True)):
        def snap(points: np.ndarray) -> np.ndarray:
            out = points.copy()
            for i in np.flatnonzero(np.abs(points[:, 2] - z0) < flat):
                out[i, 2] = vertices[tuple(np.round(points[i, :2], decimals))][2]
            return out

        geom = shapely.transform(geom, snap, include_z=True)
        faces = None
    faces = faces or Faces(geom)
    odd = _odd_edges(geom, decimals, faces)
    tol = 2 * 10.0 ** -decimals
    base = odd[(np.abs(odd[:, 0, 2] - z0) < flat) & (np.abs(odd[:, 1, 2] - z0) < flat)]
    if len(base) < 3:
        return original, 0
    lines = shapely.node(shapely.MultiLineString([edge[:, :2] for edge in base]))
    outlines = [f for f in shapely.get_parts(shapely.polygonize(shapely.get_parts(lines))) if f.area > 1e-6]
    if not outlines:
        return original, 0
    # polygonize also returns what the outlines enclose but the building does not (a courtyard): a ground
    # face lies under the building's roofs (its faces that are not vertical)
    sloped = np.abs(faces.normals[faces.exterior][:, 2]) > 1e-9
    plan = surface_footprint(shapely.MultiPolygon(list(shapely.get_parts(geom)[sloped])))
    added = []
    for face in outlines:
        if plan is None or not plan.buffer(tol).contains(face.representative_point()):
            continue
        face = shapely.geometry.polygon.orient(face, sign=-1.0)  # clockwise from above: its normal points down
        # each vertex exactly where the walls have it, so the face meets them without a gap
        def lift(ring: Any) -> np.ndarray:
            xy = np.asarray(ring.coords)
            return np.array([vertices.get(tuple(p), (p[0], p[1], z0)) for p in np.round(xy, decimals)])

        added.append(shapely.Polygon(lift(face.exterior), [lift(r) for r in face.interiors]))
    closed = shapely.MultiPolygon(list(geom.geoms) + added)
    return (closed, len(added)) if added and is_closed_shell(closed, decimals) else (original, 0)


def consistently_oriented(geom: Any, tolerance: float = 1e-6, faces: "Faces | None" = None) -> bool:
    """True when a closed shell's faces all face the same way (outwards or all inwards): their
    area-weighted normals (Newell vectors) then sum to zero, as over any closed surface."""
    faces = faces or Faces(geom)
    total = faces.normals.sum(axis=0)  # holes wind the other way: they subtract
    size = float(np.linalg.norm(faces.normals[faces.exterior], axis=1).sum())
    return size > 0 and float(np.linalg.norm(total)) <= tolerance * size + 1e-8


def face_problems(geom: Any, min_area: float = 1e-6, faces: "Faces | None" = None) -> tuple[list[str], int]:
    """(problems, degenerate face count) of a geometry: non-finite or empty geometry, and faces that
    self-intersect in their own plane. Degenerate faces (area < ``min_area`` m², common in meshes) are
    counted, not problems."""
    if geom is None or geom.is_empty:
        return ["empty geometry"], 0
    coords = shapely.get_coordinates(geom, include_z=True)
    if not np.isfinite(coords).all():
        return ["non-finite coordinates"], 0
    if geom.geom_type not in ("Polygon", "MultiPolygon"):
        return ([] if geom.is_valid else [f"invalid {geom.geom_type}: {shapely.is_valid_reason(geom)}"]), 0
    if not shapely.has_z(geom):
        polygons = shapely.get_parts(geom)
        bad = np.flatnonzero(~shapely.is_valid(polygons))
        return [f"face {i}: {shapely.is_valid_reason(polygons[i])}" for i in bad], 0
    faces = faces or Faces(geom)
    outer = faces.normals[faces.exterior]  # one per face
    area = np.linalg.norm(outer, axis=1) / 2
    degenerate = area < min_area
    # each face projected onto the coordinate plane it is most parallel to, checked there
    drop = np.abs(outer).argmax(axis=1)[faces.face[faces.ring]]
    keep = np.array([[1, 2], [0, 2], [0, 1]])[drop]
    flat = np.take_along_axis(faces.coords, keep, axis=1)
    rings = shapely.linearrings(flat, indices=faces.ring)
    polygons = shapely.polygons(rings, indices=faces.face)
    bad = np.flatnonzero(~shapely.is_valid(polygons) & ~degenerate)
    return [f"face {i}: {shapely.is_valid_reason(polygons[i])}" for i in bad], int(degenerate.sum())


def surface_footprint(geom: Any) -> Any:
    """The 2D footprint of a 3D geometry: the union of its faces' plan views (vertical faces add nothing),
    a line's or point's plan view otherwise; None when nothing has area or length."""
    if geom is None or geom.is_empty:
        return None
    flat = shapely.force_2d(geom)
    if flat.geom_type not in ("Polygon", "MultiPolygon"):
        return flat
    parts = [p for p in getattr(flat, "geoms", [flat]) if p.area > 1e-6]
    if not parts:
        return None
    merged = shapely.union_all(shapely.make_valid(np.asarray(parts, dtype=object)))
    merged = shapely.make_valid(merged)
    if merged.geom_type == "GeometryCollection":
        polys = [g for g in merged.geoms if g.geom_type in ("Polygon", "MultiPolygon")]
        merged = shapely.union_all(polys) if polys else None
    return merged
