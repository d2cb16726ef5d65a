"""The tiles of a tileset: an adaptive quadtree of square cells aligned on the storage CRS's grid.

A cell is 2^k metres wide at (ix·2^k, iy·2^k) in the storage CRS (EPSG:4550 easting/northing): its
address ``k/ix/iy`` is absolute, so a cell means the same ground whatever else the layer holds. That keeps
tiles reusable between builds (resuming, or rebuilding after an edit elsewhere) and lets a server answer
any cell on demand with the same rule. An object belongs to exactly one cell per level: the one holding
the centre of its footprint's bounding box (half-open intervals).

Cells are split while they hold more than ``max_features`` objects and are wider than ``min_cell_m``.
The tree's root has no cell of its own: its children are the (at most 2×2) cells of the level at which
the layer's extent first fits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Cell", "Node", "plan"]


@dataclass(frozen=True, order=True)
class Cell:
    """A square of 2^k metres: [ix·2^k, (ix+1)·2^k) × [iy·2^k, (iy+1)·2^k)."""

    k: int
    ix: int
    iy: int

    @property
    def size(self) -> float:
        return 2.0 ** self.k

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        s = self.size
        return self.ix * s, self.iy * s, (self.ix + 1) * s, (self.iy + 1) * s

    @property
    def centre(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.bounds
        return (x0 + x1) / 2, (y0 + y1) / 2

    @property
    def address(self) -> str:
        return f"{self.k}/{self.ix}/{self.iy}"

    @classmethod
    def parse(cls, address: str) -> Cell:
        k, ix, iy = (int(v) for v in address.split("/"))
        return cls(k, ix, iy)

    def children(self) -> list[Cell]:
        return [Cell(self.k - 1, 2 * self.ix + dx, 2 * self.iy + dy) for dy in (0, 1) for dx in (0, 1)]


@dataclass
class Node:
    """A tile of the tree: a cell (None for the root) with its children, or a leaf with ``count`` objects."""

    cell: Cell | None
    count: int
    depth: int
    children: list[Node] = field(default_factory=list)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def leaves(self) -> list[Node]:
        if self.is_leaf and self.cell is not None:
            return [self]
        return [leaf for c in self.children for leaf in c.leaves()]


def _cell_indices(x: np.ndarray, y: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = 2.0 ** k
    return np.floor(x / s).astype(np.int64), np.floor(y / s).astype(np.int64)


def plan(x: np.ndarray, y: np.ndarray, max_features: int, min_cell_m: float) -> Node:
    """The quadtree over objects whose footprint bbox centres are (x, y). Empty cells are left out."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not len(x):
        return Node(None, 0, 0)
    k_min = max(0, math.ceil(math.log2(max(min_cell_m, 1.0))))
    span = max(float(x.max() - x.min()), float(y.max() - y.min()), 1.0)
    k = max(k_min, math.ceil(math.log2(span)))  # the extent spans at most two cells of this level per axis
    ix, iy = _cell_indices(x, y, k)
    root = Node(None, len(x), 0)
    for cx, cy in sorted({(int(a), int(b)) for a, b in zip(ix, iy)}):
        members = np.flatnonzero((ix == cx) & (iy == cy))
        root.children.append(_split(Cell(k, cx, cy), x, y, members, 1, max_features, k_min))
    return root


def _split(cell: Cell, x: np.ndarray, y: np.ndarray, members: np.ndarray, depth: int, max_features: int,
           k_min: int) -> Node:
    node = Node(cell, len(members), depth)
    if len(members) <= max_features or cell.k <= k_min:
        return node
    ix, iy = _cell_indices(x[members], y[members], cell.k - 1)
    for child in cell.children():
        inside = members[(ix == child.ix) & (iy == child.iy)]
        if len(inside):
            node.children.append(_split(child, x, y, inside, depth + 1, max_features, k_min))
    return node
