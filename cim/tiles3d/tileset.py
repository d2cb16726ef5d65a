"""The tileset JSON (3D Tiles 1.1) of a quadtree whose leaves hold the content.

Refinement is ``ADD`` with content in the leaves only: every object is drawn exactly once, in the leaf
of its cell, and inner tiles only group and cull. A tile's geometric error is what is missing while it is
drawn without its children: 0 for a leaf; for an inner tile everything below it, so ``error_per_metre`` ×
the larger of its cell's width and its content's extent (an object is in the cell of its centre and may
reach far beyond it: a bridge in a 16 m cell), and at least twice its children's errors, so that errors
fall with depth (halving per level where cells are full).
Bounding volumes are ``region`` s (radians, heights above the ellipsoid) of the content's actual vertices,
a parent's being the union of its children's; regions are not affected by tile transforms, and each
leaf's ``transform`` places its GLB (ENU at the cell centre → ECEF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from cim.tiles3d.quadtree import Cell, Node

__all__ = ["LeafTile", "content_uri", "extent_m", "tileset_document", "union"]


@dataclass(frozen=True)
class LeafTile:
    """What the tileset needs to know about a leaf's content."""

    region: list[float]
    transform: list[float]


def content_uri(cell: Cell) -> str:
    """Where a cell's GLB lives, relative to tileset.json."""
    return f"content/{cell.k}/{cell.ix}/{cell.iy}.glb"


def union(regions: list[list[float]]) -> list[float]:
    return [min(r[0] for r in regions), min(r[1] for r in regions), max(r[2] for r in regions),
            max(r[3] for r in regions), min(r[4] for r in regions), max(r[5] for r in regions)]


def _tile(node: Node, leaves: dict[str, LeafTile], error_per_metre: float) -> dict[str, Any] | None:
    if node.is_leaf:
        if node.cell is None:
            return None
        leaf = leaves.get(node.cell.address)
        if leaf is None:  # a cell whose objects drew nothing
            return None
        return {"boundingVolume": {"region": leaf.region}, "geometricError": 0.0, "transform": leaf.transform,
                "content": {"uri": content_uri(node.cell)}}
    children = [c for c in (_tile(n, leaves, error_per_metre) for n in node.children) if c is not None]
    if not children:
        return None
    if node.cell is not None:
        size = node.cell.size
    else:  # the root: its children are the top cells
        size = 2 * max(n.cell.size for n in node.children if n.cell is not None)
    region = union([c["boundingVolume"]["region"] for c in children])
    error = max(error_per_metre * max(size, extent_m(region)), 2 * max(c["geometricError"] for c in children))
    return {"boundingVolume": {"region": region}, "geometricError": error, "children": children}


def extent_m(region: list[float]) -> float:
    """The diagonal of a region in metres (on a sphere of the equatorial radius: plenty for an error)."""
    w, s, e, n, hmin, hmax = region
    radius = 6378137.0
    dx = (e - w) * radius * math.cos((s + n) / 2)
    dy = (n - s) * radius
    return math.sqrt(dx * dx + dy * dy + (hmax - hmin) ** 2)


def tileset_document(tree: Node, leaves: dict[str, LeafTile], error_per_metre: float, version: str,
                     extras: dict[str, Any]) -> dict[str, Any] | None:
    """The tileset JSON for ``tree`` with the leaves that have content (None when none has)."""
    root = _tile(tree, leaves, error_per_metre)
    if root is None:
        return None
    root["refine"] = "ADD"
    return {
        "asset": {"version": "1.1", "tilesetVersion": version},
        "geometricError": 2 * root["geometricError"],
        "root": root,
        "extras": extras,
    }
