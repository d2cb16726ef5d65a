"""One tile's content: its objects from the database → a GLB in the tile's frame, with its bounding region.

:func:`tile_content` is the whole path for one tile (query, mesh, GLB) and is what an on-demand server
would call per request; the pre-built tilesets (:mod:`cim.tiles3d.build`) use its two halves so that they
can skip a tile whose inputs did not change before doing the expensive part.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from sqlalchemy import Connection

from cim.db.models import CIMTables
from cim.tiles3d.geodesy import Geodesy, LocalFrame
from cim.tiles3d.glb import Primitive, glb_bytes
from cim.tiles3d.mesh import DrawStyle, MeshParts, Shape, mesh_shapes
from cim.tiles3d.quadtree import Cell
from cim.tiles3d.source import Selection, TileRow, fingerprint, read_tile
from cim.tiles3d.specs import CLASS_COLOURS, PIPE_COLOURS, SURFACE_COLOURS, LayerSpec, Tiles3DSettings

__all__ = ["TileContent", "build_tile", "draw_style", "tile_content", "tile_frame"]

# Regions are padded by this much so that vertices rounded to float32 stay inside (float32 keeps < 0.1 mm
# within a few km of the tile origin): ~1.3 cm horizontally, 1 cm vertically.
REGION_MARGIN_RAD = 2e-9
REGION_MARGIN_M = 0.01


@dataclass
class TileContent:
    """A built tile: the GLB and what the tileset says about it."""

    cell: Cell
    glb: bytes
    region: list[float]  # west, south, east, north (radians), min and max ellipsoidal height (m)
    transform: list[float]  # column-major ENU→ECEF
    features: dict[str, int]  # per layer
    vertices: int
    triangles: int
    skipped: int  # objects that drew nothing (degenerate or unsupported geometry)
    fingerprint: str


def tile_frame(geo: Geodesy, cell: Cell) -> LocalFrame:
    """The tile's frame: east-north-up at its cell's centre, at height 0."""
    x, y = cell.centre
    return LocalFrame.at(geo, x, y, 0.0)


def draw_style(spec: LayerSpec, row: TileRow, settings: Tiles3DSettings) -> DrawStyle:
    """Colour and sizes of one object: pipes by kind (CJJ 61 colours) and true diameter, nodes by depth."""
    d = row.draw
    colour = PIPE_COLOURS.get(d.get("pipe_kind") or "", CLASS_COLOURS.get(d.get("object_class") or "", spec.colour))
    diameter_mm = d.get("diameter_mm") or settings.default_pipe_diameter_mm
    if spec.layer == "pipe-nodes" or d.get("object_class") == "PipeNode":
        well = d.get("well_diameter_m")
        radius = float(well) / 2 if isinstance(well, int | float) and well > 0 else settings.node_diameter_m / 2
        segments = settings.node_segments
    else:
        radius = float(diameter_mm) / 2000.0
        segments = settings.tube_segments
    depth = d.get("depth_m")
    depth = float(depth) if isinstance(depth, int | float) and depth > 0 else settings.default_node_depth_m
    return DrawStyle(colour=colour, surface_colours=SURFACE_COLOURS, radius_m=radius, depth_m=depth, segments=segments)


def build_tile(batches: Any, sel: Selection, cell: Cell, geo: Geodesy, settings: Tiles3DSettings,
               digest: str = "") -> TileContent | None:
    """Mesh a tile's rows (an iterable of row batches) into its GLB; None when nothing is drawn."""
    frame = tile_frame(geo, cell)
    parts = {s.layer: MeshParts() for s in sel.specs}
    values: dict[str, dict[str, list[Any]]] = {s.layer: {p.name: [] for p in s.properties} for s in sel.specs}
    for rows in batches:
        by_layer: dict[str, list[Shape]] = {}
        geoms = shapely.from_wkb([r.wkb for r in rows], on_invalid="ignore")  # unreadable: skipped, counted
        for row, geom in zip(rows, geoms):
            spec = sel.spec(row.layer)
            table = values[row.layer]
            fid = len(table["uid"])
            for name, v in row.values.items():
                table[name].append(v)
            if geom is None or geom.is_empty:
                parts[row.layer].skipped += 1
                continue
            by_layer.setdefault(row.layer, []).append(Shape(fid, geom, row.surfaces, draw_style(spec, row, settings)))
        for layer, shapes in by_layer.items():
            mesh_shapes(shapes, geo, frame, parts[layer])

    primitives: list[Primitive] = []
    all_positions: list[np.ndarray] = []
    for spec in sel.specs:
        positions, normals, colours, fids, triangles = parts[spec.layer].arrays()
        if not len(triangles):
            continue
        gltf = LocalFrame.to_gltf(positions).astype(np.float32)
        all_positions.append(LocalFrame.from_gltf(gltf.astype(np.float64)))
        unit = normals / np.linalg.norm(normals, axis=1, keepdims=True)
        primitives.append(Primitive(spec, gltf, LocalFrame.to_gltf(unit).astype(np.float32), colours, fids, triangles,
                                    values[spec.layer], double_sided=spec.layer not in ("pipelines", "pipe-nodes")))
    if not primitives:
        return None
    region = _region(geo, frame, np.concatenate(all_positions))
    features = {p.spec.layer: len(p.values["uid"]) for p in primitives}
    extras = {"cim": {"tile": cell.address, "layers": [p.spec.layer for p in primitives], "cim_level": sel.cim_level,
                      "features": features, "inputs": digest}}
    glb = glb_bytes(primitives, extras, settings.draco_position_bits if settings.compression == "draco" else None)
    return TileContent(cell, glb, region, frame.transform, features,
                       vertices=sum(len(p.positions) for p in primitives),
                       triangles=sum(len(p.triangles) for p in primitives),
                       skipped=sum(m.skipped for m in parts.values()), fingerprint=digest)


def _region(geo: Geodesy, frame: LocalFrame, enu: np.ndarray) -> list[float]:
    """The geodetic region (radians, ellipsoidal heights) holding every vertex, padded a little."""
    lon, lat, h = geo.geodetic_of_ecef(frame.to_ecef(enu))
    west, east = math.radians(float(lon.min())), math.radians(float(lon.max()))
    south, north = math.radians(float(lat.min())), math.radians(float(lat.max()))
    m = REGION_MARGIN_RAD
    return [west - m, south - m, east + m, north + m, float(h.min()) - REGION_MARGIN_M, float(h.max()) + REGION_MARGIN_M]


def tile_content(conn: Connection, t: CIMTables, sel: Selection, cell: Cell, geo: Geodesy,
                 settings: Tiles3DSettings, params: str = "") -> TileContent | None:
    """Query one cell's objects and build its content (None: nothing to draw there)."""
    rows = [r for batch in read_tile(conn, t, sel, cell, settings.rows_per_batch) for r in batch]
    if not rows:
        return None
    digest = fingerprint(rows, params)
    return build_tile(_batches(rows, settings.rows_per_batch), sel, cell, geo, settings, digest)


def _batches(rows: list[TileRow], size: int):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]
