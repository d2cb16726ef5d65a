"""3D geometry construction shared by the demo generator and the ingesters.

Surfaces are returned as shapely ``MultiPolygon`` Z with a parallel list of semantic surface types
(``GroundSurface``, ``WallSurface``, ``RoofSurface``, ``ClosureSurface``), oriented so that each polygon's
normal (right-hand rule) points out of the solid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import shapely
from shapely.geometry.polygon import orient

Surfaces = tuple[shapely.MultiPolygon, list[str]]


def _rings(polygon: shapely.Polygon) -> list[np.ndarray]:
    polygon = orient(polygon, 1.0)  # exterior counter-clockwise, holes clockwise: solid on the left
    return [np.asarray(polygon.exterior.coords)[:, :2]] + [np.asarray(r.coords)[:, :2] for r in polygon.interiors]


def _with_z(xy: np.ndarray, z: float | np.ndarray) -> np.ndarray:
    return np.column_stack([xy, np.broadcast_to(z, (len(xy),))])


def extrude(polygon: shapely.Polygon, z0: float, z1: float) -> Surfaces:
    """A prism: the footprint (holes allowed) from ``z0`` up to a flat top at ``z1``."""
    rings = _rings(polygon)
    polys: list[shapely.Polygon] = []
    kinds: list[str] = []
    # ground faces down (reverse orientation), roof faces up
    polys.append(shapely.Polygon(_with_z(rings[0][::-1], z0), [_with_z(r[::-1], z0) for r in rings[1:]]))
    kinds.append("GroundSurface")
    polys.append(shapely.Polygon(_with_z(rings[0], z1), [_with_z(r, z1) for r in rings[1:]]))
    kinds.append("RoofSurface")
    for ring in rings:
        for a, b in zip(ring[:-1], ring[1:]):
            # solid on the left of a→b, so (a0, b0, b1, a1) faces right: outwards
            polys.append(shapely.Polygon([(a[0], a[1], z0), (b[0], b[1], z0), (b[0], b[1], z1), (a[0], a[1], z1)]))
            kinds.append("WallSurface")
    return shapely.MultiPolygon(polys), kinds


def gable(corners: Sequence[Sequence[float]], z0: float, eave: float, ridge: float) -> Surfaces:
    """A gable-roofed block on a rectangle ``p0 p1 p2 p3`` (counter-clockwise, ``p0→p1`` the long side).

    The ridge runs parallel to the long side, over the middle of the short sides.
    """
    p0, p1, p2, p3 = (np.asarray(c, dtype=float)[:2] for c in corners)
    m12, m30 = (p1 + p2) / 2, (p3 + p0) / 2

    def pt(p: np.ndarray, z: float) -> tuple[float, float, float]:
        return (float(p[0]), float(p[1]), z)

    polys = [
        shapely.Polygon([pt(p0, z0), pt(p3, z0), pt(p2, z0), pt(p1, z0)]),  # ground, facing down
        shapely.Polygon([pt(p0, eave), pt(p1, eave), pt(m12, ridge), pt(m30, ridge)]),  # front slope
        shapely.Polygon([pt(p2, eave), pt(p3, eave), pt(m30, ridge), pt(m12, ridge)]),  # back slope
        shapely.Polygon([pt(p0, z0), pt(p1, z0), pt(p1, eave), pt(p0, eave)]),  # long walls
        shapely.Polygon([pt(p2, z0), pt(p3, z0), pt(p3, eave), pt(p2, eave)]),
        shapely.Polygon([pt(p1, z0), pt(p2, z0), pt(p2, eave), pt(m12, ridge), pt(p1, eave)]),  # gables
        shapely.Polygon([pt(p3, z0), pt(p0, z0), pt(p0, eave), pt(m30, ridge), pt(p3, eave)]),
    ]
    kinds = ["GroundSurface", "RoofSurface", "RoofSurface"] + ["WallSurface"] * 4
    return shapely.MultiPolygon(polys), kinds


def combine(parts: Sequence[Surfaces]) -> Surfaces:
    """Several solids as one multi-surface (e.g. a bridge deck and its piers)."""
    polys = [p for mp, _ in parts for p in mp.geoms]
    kinds = [k for _, ks in parts for k in ks]
    return shapely.MultiPolygon(polys), kinds


def outward_normals_ok(surfaces: shapely.MultiPolygon) -> bool:
    """True when every polygon's normal points away from the centroid of the solid (convex-ish solids)."""
    coords = shapely.get_coordinates(surfaces, include_z=True)
    centre = coords.mean(axis=0)
    for poly in surfaces.geoms:
        ring = np.asarray(poly.exterior.coords)
        normal = np.zeros(3)
        for a, b in zip(ring[:-1], ring[1:]):  # Newell's method
            normal += np.array([(a[1] - b[1]) * (a[2] + b[2]), (a[2] - b[2]) * (a[0] + b[0]),
                                (a[0] - b[0]) * (a[1] + b[1])])
        if np.dot(normal, ring[:-1].mean(axis=0) - centre) <= 0:
            return False
    return True
