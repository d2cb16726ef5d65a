"""CIM geometry → triangle meshes in a tile's east-north-up frame.

What is drawn follows the geometry type, not the layer:

- **Surfaces** (MultiPolygon Z / Polygon Z faces, with holes): each face triangulated in its own plane
  (earcut on the face projected along its dominant normal axis), flat-shaded with the face normal and
  coloured by its semantic surface type (roofs, walls...).
- **Axes** (LineString Z: pipe segments): a tube of the pipe's true diameter (``diameter_mm``) centred on
  the axis, which is stored at the pipe's true depth; closed with end caps.
- **Points** (Point Z: pipe nodes such as 检查井): a vertical cylinder from the stored point (the ground
  level) down by the node's ``depth_m``.

Coordinates are converted to the frame *before* meshes are built, so tubes and cylinders are round and of
their true size in metres on the ground (the Gauss-Krüger grid's scale and convergence do not distort
them) and "vertical" is the true vertical. Triangles are wound counter-clockwise seen from outside (the
side the vertex normals point to), as glTF expects.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import mapbox_earcut
import numpy as np
import shapely

from cim.tiles3d.geodesy import Geodesy, LocalFrame

__all__ = ["DrawStyle", "MeshParts", "Shape", "mesh_shapes"]

_FACE_TYPES = {"Polygon", "MultiPolygon", "PolyhedralSurface", "TIN", "Triangle"}
_LINE_TYPES = {"LineString", "MultiLineString", "LinearRing"}
_POINT_TYPES = {"Point", "MultiPoint"}


@dataclass
class DrawStyle:
    """How one object is drawn besides its geometry: colour and, for axes and points, their size."""

    colour: tuple[int, int, int]
    surface_colours: dict[str, tuple[int, int, int]] = field(default_factory=dict)
    radius_m: float = 0.1  # tubes and cylinders
    depth_m: float = 1.0  # cylinders: how far below the point they reach
    segments: int = 12  # sides of tubes and cylinders


@dataclass
class Shape:
    """One object's geometry to draw (storage coordinates) with its feature id in the tile."""

    feature_id: int
    geometry: Any  # shapely, with z
    surfaces: list[str] | None
    style: DrawStyle


@dataclass
class MeshParts:
    """Triangles of one primitive, growing batch by batch (all float64 ENU until written)."""

    positions: list[np.ndarray] = field(default_factory=list)
    normals: list[np.ndarray] = field(default_factory=list)
    colours: list[np.ndarray] = field(default_factory=list)
    feature_ids: list[np.ndarray] = field(default_factory=list)
    triangles: list[np.ndarray] = field(default_factory=list)
    vertex_count: int = 0
    skipped: int = 0  # objects that produced no triangles (degenerate or an unknown geometry type)

    def add(self, positions: np.ndarray, normals: np.ndarray, triangles: np.ndarray, colour: tuple[int, int, int],
            feature_id: int) -> None:
        if not len(triangles):
            return
        n = len(positions)
        self.positions.append(positions)
        self.normals.append(normals)
        self.colours.append(np.broadcast_to(np.array([*colour, 255], dtype=np.uint8), (n, 4)))
        self.feature_ids.append(np.full(n, feature_id, dtype=np.uint32))
        self.triangles.append(np.asarray(triangles, dtype=np.int64) + self.vertex_count)
        self.vertex_count += n

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """positions (n, 3), normals (n, 3), colours (n, 4) uint8, feature ids (n,), triangles (m, 3)."""
        if not self.triangles:
            empty = np.zeros((0, 3))
            return empty, empty, np.zeros((0, 4), np.uint8), np.zeros(0, np.uint32), np.zeros((0, 3), np.int64)
        return (np.concatenate(self.positions), np.concatenate(self.normals), np.concatenate(self.colours),
                np.concatenate(self.feature_ids), np.concatenate(self.triangles))


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.divide(v, n, out=np.zeros_like(v), where=n > 0)


# Triangles thinner than this (m) are dropped: earcut splits faces with collinear vertices (an edge cut by a
# neighbour's corner) into zero-area slivers, whose winding float32 rounding then flips at random.
MIN_TRIANGLE_HEIGHT_M = 1e-4


def _orient(positions: np.ndarray, triangles: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Triangles wound so that their normal agrees with their vertices' normals; slivers dropped."""
    if not len(triangles):
        return triangles
    a, b, c = (positions[triangles[:, i]] for i in range(3))
    face = np.cross(b - a, c - a)
    area2 = np.linalg.norm(face, axis=1)
    longest = np.sqrt(np.max([np.einsum("ij,ij->i", e, e) for e in (b - a, c - b, a - c)], axis=0))
    keep = area2 > MIN_TRIANGLE_HEIGHT_M * np.maximum(longest, 1e-9)
    want = normals[triangles[:, 0]] + normals[triangles[:, 1]] + normals[triangles[:, 2]]
    flip = np.einsum("ij,ij->i", face, want) < 0
    out = triangles.copy()
    out[flip, 1], out[flip, 2] = triangles[flip, 2], triangles[flip, 1]
    return out[keep]


def faces_mesh(enu: np.ndarray, ring_start: np.ndarray, ring_len: np.ndarray, first_ring: np.ndarray,
               n_rings: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Triangulate many planar faces at once.

    ``enu`` holds every ring's coordinates including its closing point; ring r is
    ``enu[ring_start[r]:ring_start[r] + ring_len[r]]`` (closing point excluded), face f has rings
    ``first_ring[f] .. first_ring[f] + n_rings[f] - 1`` (exterior first).

    Returns positions (n, 3), unit normals (n, 3) (the face's, flat shading), triangles (m, 3) and the face
    of each vertex; faces without area are left out. Triangles and quads without holes (most faces of
    city models) are split in numpy; the others go through earcut one by one.
    """
    n_faces = len(first_ring)
    # vertices: every ring's coordinates without its closing point, in face order
    keep = np.ones(len(enu), dtype=bool)
    keep[ring_start + ring_len] = False
    vertices = enu[keep]
    face_len = np.add.reduceat(ring_len, first_ring) if n_faces else np.zeros(0, np.int64)
    face_start = np.concatenate([[0], np.cumsum(face_len)[:-1]]).astype(np.int64)
    # Newell normal of each exterior ring: pairs (i, i + 1) over its closed coordinates
    ext_start, ext_len = ring_start[first_ring], ring_len[first_ring]
    i = np.repeat(ext_start - np.concatenate([[0], np.cumsum(ext_len)[:-1]]), ext_len) + np.arange(ext_len.sum())
    a, b = enu[i], enu[i + 1]
    terms = np.column_stack([(a[:, 1] - b[:, 1]) * (a[:, 2] + b[:, 2]), (a[:, 2] - b[:, 2]) * (a[:, 0] + b[:, 0]),
                             (a[:, 0] - b[:, 0]) * (a[:, 1] + b[:, 1])])
    offsets = np.concatenate([[0], np.cumsum(ext_len)[:-1]]).astype(np.int64)
    normal = np.add.reduceat(terms, offsets, axis=0) if n_faces else np.zeros((0, 3))
    length = np.linalg.norm(normal, axis=1)
    valid = (length > 1e-9) & (ext_len >= 3)
    normal = np.divide(normal, length[:, None], out=np.zeros_like(normal), where=length[:, None] > 0)

    tris: list[np.ndarray] = []
    simple = valid & (n_rings == 1) & ((face_len == 3) | (face_len == 4))
    tri3 = simple & (face_len == 3)
    tris.append(face_start[tri3][:, None] + np.array([0, 1, 2]))
    quads = face_start[simple & (face_len == 4)]
    if len(quads):
        p = [vertices[quads + k] for k in range(4)]
        qn = normal[simple & (face_len == 4)]
        # split along 0-2 when both halves face the face's way (the quad is convex there), else along 1-3
        d1 = np.einsum("ij,ij->i", np.cross(p[1] - p[0], p[2] - p[0]), qn)
        d2 = np.einsum("ij,ij->i", np.cross(p[2] - p[0], p[3] - p[0]), qn)
        diag02 = ((d1 > 0) & (d2 > 0)) | ((d1 < 0) & (d2 < 0))
        q = quads[:, None]
        tris.append(np.where(diag02[:, None], q + np.array([0, 1, 2]), q + np.array([0, 1, 3])))
        tris.append(np.where(diag02[:, None], q + np.array([0, 2, 3]), q + np.array([1, 2, 3])))
    for f in np.flatnonzero(valid & ~simple):
        lo, hi = face_start[f], face_start[f] + face_len[f]
        drop = int(np.argmax(np.abs(normal[f])))
        flat = vertices[lo:hi][:, [k for k in range(3) if k != drop]]
        flat = np.ascontiguousarray(flat - flat.mean(axis=0), dtype=np.float64)  # earcut is best near 0
        ends = np.cumsum(ring_len[first_ring[f]:first_ring[f] + n_rings[f]]).astype(np.uint32)
        tris.append(mapbox_earcut.triangulate_float64(flat, ends).reshape(-1, 3).astype(np.int64) + lo)
    triangles = np.concatenate(tris) if tris else np.zeros((0, 3), np.int64)

    # keep only the vertices of faces with area, renumbered
    vertex_face = np.repeat(np.arange(n_faces), face_len)
    kept = valid[vertex_face]
    renumber = np.cumsum(kept) - 1
    positions = vertices[kept]
    normals = normal[vertex_face[kept]]
    triangles = renumber[triangles]
    return positions, normals, _orient(positions, triangles, normals), vertex_face[kept]


def _perpendicular(t: np.ndarray) -> np.ndarray:
    """A unit vector perpendicular to unit vector ``t`` (horizontal when ``t`` is not vertical)."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(t[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    return _unit(np.cross(t, helper))


def tube_mesh(axis: np.ndarray, radius: float, segments: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A closed tube of ``radius`` around a polyline (ENU, (n, 3)): rings at every vertex, capped ends.

    Rings lie across the mean direction of the two segments meeting at a vertex and keep their
    orientation from one vertex to the next (parallel transport), so the tube does not twist.
    """
    keep = np.concatenate([[True], np.linalg.norm(np.diff(axis, axis=0), axis=1) > 1e-6])
    axis = axis[keep]
    if len(axis) < 2 or radius <= 0:
        return None
    seg = _unit(np.diff(axis, axis=0))
    tangents = np.empty_like(axis)
    tangents[0], tangents[-1] = seg[0], seg[-1]
    if len(axis) > 2:
        tangents[1:-1] = _unit(seg[:-1] + seg[1:])
    theta = 2 * np.pi * np.arange(segments) / segments
    cos, sin = np.cos(theta), np.sin(theta)
    u = _perpendicular(tangents[0])
    rings, radials = [], []
    for t in tangents:
        u = _unit(u - np.dot(u, t) * t)  # parallel transport: keep u across the new tangent
        v = np.cross(t, u)
        radial = np.outer(cos, u) + np.outer(sin, v)
        radials.append(radial)
        rings.append(radial * radius)
    n_rings = len(axis)
    side = np.concatenate([axis[i] + rings[i] for i in range(n_rings)])
    side_normals = np.concatenate(radials)
    i = np.arange(n_rings - 1)[:, None] * segments
    k = np.arange(segments)[None, :]
    a = (i + k).ravel()
    b = (i + (k + 1) % segments).ravel()
    c, d = a + segments, b + segments
    tri_side = np.concatenate([np.column_stack([a, c, d]), np.column_stack([a, d, b])])
    parts_p, parts_n, parts_t = [side], [side_normals], [tri_side]
    offset = len(side)
    for end, direction in ((0, -tangents[0]), (n_rings - 1, tangents[-1])):
        ring = axis[end] + rings[end]
        centre = axis[end][None, :]
        cap = np.concatenate([centre, ring])
        fan = np.column_stack([np.zeros(segments, int), 1 + np.arange(segments), 1 + (np.arange(segments) + 1) % segments])
        parts_p.append(cap)
        parts_n.append(np.broadcast_to(direction, cap.shape))
        parts_t.append(fan + offset)
        offset += len(cap)
    positions = np.concatenate(parts_p)
    normals = np.concatenate(parts_n)
    tri = _orient(positions, np.concatenate(parts_t), normals)
    return positions, normals, tri


def _surface_rings(geoms: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every face ring of ``geoms`` at once (shapely's vectorised functions, no loop per face).

    Returns all coordinates (n, 3); per ring its first coordinate and its length without the closing
    point; per face (polygon) its first ring, ring count, geometry index and index within its geometry.
    """
    polys, poly_geom = shapely.get_parts(np.asarray(geoms, dtype=object), return_index=True)
    is_poly = shapely.get_type_id(polys) == 3
    polys, poly_geom_kept = polys[is_poly], poly_geom[is_poly]
    first_part = np.searchsorted(poly_geom, np.arange(len(geoms)))
    part_index = np.flatnonzero(is_poly) - first_part[poly_geom_kept]
    rings, ring_poly = shapely.get_rings(polys, return_index=True)
    coords, coord_ring = shapely.get_coordinates(rings, include_z=True, return_index=True)
    ring_len = np.bincount(coord_ring, minlength=len(rings))
    ring_start = np.concatenate([[0], np.cumsum(ring_len)[:-1]]).astype(np.int64)
    rings_per_poly = np.bincount(ring_poly, minlength=len(polys))
    first_ring = np.concatenate([[0], np.cumsum(rings_per_poly)[:-1]]).astype(np.int64)
    faces = np.column_stack([first_ring, rings_per_poly, poly_geom_kept, part_index]).astype(np.int64)
    return coords, ring_start, ring_len - 1, faces


def mesh_shapes(shapes: list[Shape], geo: Geodesy, frame: LocalFrame, out: MeshParts) -> None:
    """Triangulate a batch of objects into ``out``, converting all their coordinates in one call."""
    surfaces = [s for s in shapes if s.geometry.geom_type in _FACE_TYPES]
    lines = [s for s in shapes if s.geometry.geom_type in _LINE_TYPES]
    points = [s for s in shapes if s.geometry.geom_type in _POINT_TYPES]
    out.skipped += len(shapes) - len(surfaces) - len(lines) - len(points)

    # one array of every coordinate the batch needs (face rings, axes, cylinder ends) → ENU in one go
    if surfaces:
        face_xyz, ring_start, ring_len, faces = _surface_rings([s.geometry for s in surfaces])
    else:
        face_xyz, ring_start, ring_len, faces = np.zeros((0, 3)), None, None, np.zeros((0, 4), np.int64)
    line_parts = [[shapely.get_coordinates(p, include_z=True) for p in shapely.get_parts(s.geometry)] for s in lines]
    line_xyz = [c for parts in line_parts for c in parts]
    point_xyz = [shapely.get_coordinates(s.geometry, include_z=True) for s in points]
    cyl = np.zeros((0, 3))
    if point_xyz:
        cyl = np.concatenate([np.concatenate([t, t - [0.0, 0.0, s.style.depth_m]]) for t, s in zip(point_xyz, points)])
    chunks = [c for c in (face_xyz, *line_xyz, cyl) if len(c)]
    if not chunks:
        out.skipped += len(surfaces) + len(lines) + len(points)
        return
    allxyz = np.concatenate(chunks)
    lon, lat, h = geo.geodetic(allxyz[:, 0], allxyz[:, 1], allxyz[:, 2])
    enu = frame.local(geo.ecef(lon, lat, h))
    at = len(face_xyz)

    # faces, all at once; then per vertex its object's feature id and its face's colour
    if len(faces):
        first_ring, n_rings, face_geom, part_index = faces.T
        positions, normals, triangles, vertex_face = faces_mesh(enu[:at], ring_start, ring_len, first_ring, n_rings)
        colour_of = {}
        face_colour = np.empty((len(faces), 4), np.uint8)
        for f, (g, k) in enumerate(zip(face_geom, part_index)):
            style, kinds = surfaces[g].style, surfaces[g].surfaces
            kind = kinds[k] if kinds and k < len(kinds) else None
            key = (id(style), kind)
            if key not in colour_of:
                c = style.surface_colours.get(kind, style.colour) if kind else style.colour
                colour_of[key] = (*c, 255)
            face_colour[f] = colour_of[key]
        fids = np.array([s.feature_id for s in surfaces], dtype=np.uint32)[face_geom[vertex_face]]
        drawn = np.zeros(len(surfaces), dtype=bool)
        drawn[face_geom[vertex_face[triangles[:, 0]]]] = True
        out.skipped += int((~drawn).sum())
        if len(triangles):
            out.positions.append(positions)
            out.normals.append(normals)
            out.colours.append(face_colour[vertex_face])
            out.feature_ids.append(fids)
            out.triangles.append(triangles + out.vertex_count)
            out.vertex_count += len(positions)
    else:
        out.skipped += len(surfaces)

    # axes and cylinders: straight two-point tubes (almost all of them) in numpy, polylines one by one
    straight: list[tuple[np.ndarray, np.ndarray, Shape]] = []
    drawn: set[int] = set()
    for shape, parts in zip(lines, line_parts):
        for part in parts:
            axis = enu[at:at + len(part)]
            at += len(part)
            if len(axis) == 2:
                straight.append((axis[0], axis[1], shape))
                continue
            built = tube_mesh(axis, shape.style.radius_m, shape.style.segments)
            if built is not None:
                out.add(*built, shape.style.colour, shape.feature_id)
                drawn.add(id(shape))
    for shape, top in zip(points, point_xyz):
        n = len(top)
        for t, b in zip(enu[at:at + n], enu[at + n:at + 2 * n]):
            straight.append((t, b, shape))
        at += 2 * n
    for segments in sorted({s.style.segments for _, _, s in straight}):
        group = [j for j in straight if j[2].style.segments == segments]
        a = np.array([j[0] for j in group])
        b = np.array([j[1] for j in group])
        radius = np.array([j[2].style.radius_m for j in group])
        ok = (np.linalg.norm(b - a, axis=1) > 1e-6) & (radius > 0)
        if not ok.any():
            continue
        positions, normals, triangles, owner = straight_tubes(a[ok], b[ok], radius[ok], segments)
        shapes = [j[2] for j, good in zip(group, ok) if good]
        colours = np.array([(*sh.style.colour, 255) for sh in shapes], dtype=np.uint8)
        fids = np.array([sh.feature_id for sh in shapes], dtype=np.uint32)
        out.positions.append(positions)
        out.normals.append(normals)
        out.colours.append(colours[owner])
        out.feature_ids.append(fids[owner])
        out.triangles.append(triangles + out.vertex_count)
        out.vertex_count += len(positions)
        drawn.update(id(sh) for sh in shapes)
    out.skipped += sum(1 for sh in (*lines, *points) if id(sh) not in drawn)


def straight_tubes(a: np.ndarray, b: np.ndarray, radius: np.ndarray, segments: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Closed tubes from ``a[i]`` to ``b[i]`` (ENU, (n, 3)) of ``radius[i]``, all at once.

    Each tube has two rings of ``segments`` vertices for its side (radial normals) and a centre plus a ring
    for each end cap (axial normals). Returns positions, normals, triangles and the tube of each vertex.
    """
    n, m = len(a), segments
    t = _unit(b - a)
    helper = np.where((np.abs(t[:, 2]) < 0.9)[:, None], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0])
    u = _unit(np.cross(t, helper))
    v = np.cross(t, u)
    theta = 2 * np.pi * np.arange(m) / m
    radial = np.cos(theta)[None, :, None] * u[:, None, :] + np.sin(theta)[None, :, None] * v[:, None, :]  # (n, m, 3)
    ring = radial * radius[:, None, None]
    side = np.concatenate([a[:, None, :] + ring, b[:, None, :] + ring], axis=1)  # (n, 2m, 3)
    start_cap = np.concatenate([a[:, None, :], a[:, None, :] + ring], axis=1)  # (n, m + 1, 3)
    end_cap = np.concatenate([b[:, None, :], b[:, None, :] + ring], axis=1)
    positions = np.concatenate([side, start_cap, end_cap], axis=1)  # (n, 4m + 2, 3)
    normals = np.concatenate([radial, radial, np.repeat(-t[:, None, :], m + 1, axis=1),
                              np.repeat(t[:, None, :], m + 1, axis=1)], axis=1)
    # one triangle template for every tube (all tubes share their topology)
    k = np.arange(m)
    k1 = (k + 1) % m
    side_tri = np.concatenate([np.column_stack([k, m + k, m + k1]), np.column_stack([k, m + k1, k1])])
    s0, s1 = 2 * m, 3 * m + 1
    caps = np.concatenate([np.column_stack([np.full(m, s0), s0 + 1 + k, s0 + 1 + k1]),
                           np.column_stack([np.full(m, s1), s1 + 1 + k, s1 + 1 + k1])])
    template = np.concatenate([side_tri, caps])
    per = 4 * m + 2
    triangles = (template[None, :, :] + (np.arange(n) * per)[:, None, None]).reshape(-1, 3)
    positions = positions.reshape(-1, 3)
    normals = normals.reshape(-1, 3)
    return positions, normals, _orient(positions, triangles, normals), np.repeat(np.arange(n), per)
