"""Full interiors (CIM5 storeys and spaces, CIM6 components) for a rectangular office building.

A double-loaded corridor plan: a corridor along the long axis, rooms on both sides, a stair room at one
end. Every storey has its slab, exterior and corridor walls, partition walls, one door per room into the
corridor and one window per room in the exterior wall; the ground floor has an entrance door, the top a
roof slab. The hierarchy is building → storey → space / wall / slab / stair, with doors and windows
children of the wall that hosts them (every object's root is the building).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely

from cim.demo.layout import Frame
from cim.demo.plan import PlannedBuilding
from cim.geom3d import extrude

SLAB = 0.2
EXT_WALL = 0.3
INT_WALL = 0.15
CORRIDOR = 2.4


@dataclass
class Part:
    """One object of the interior, not yet written: its parent is another Part's key (or the building)."""

    key: str
    parent: str | None  # None: the building itself
    object_class: str
    cim_level: int
    name: str
    footprint: shapely.Polygon
    solid: tuple[shapely.MultiPolygon, list[str]]
    min_z: float
    max_z: float
    attributes: dict[str, Any]


def interior_parts(b: PlannedBuilding, frame: Frame, ground: float) -> Iterator[Part]:
    """All storeys, spaces and components of building ``b`` (parents before children)."""
    a, d = b.length / 2, b.depth / 2

    def world_rect(x0: float, y0: float, x1: float, y1: float) -> shapely.Polygon:
        local = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1), (x0, y0)])
        e, n = frame.to_world(*b.to_grid(local).T)
        return shapely.Polygon(np.column_stack([e, n]))

    def box(key, parent, cls, level, name, x0, y0, x1, y1, z0, z1, **attrs) -> Part:
        fp = world_rect(x0, y0, x1, y1)
        return Part(key, parent, cls, level, name, fp, extrude(fp, z0, z1), z0, z1, attrs)

    footprint = world_rect(-a, -d, a, d)
    h = b.storey_height
    n_rooms = max(2, int(round((b.length - 2 * EXT_WALL) / 6.0)))
    room_w = (b.length - 2 * EXT_WALL) / n_rooms
    xs = -a + EXT_WALL + room_w * np.arange(n_rooms + 1)
    south = (-d + EXT_WALL, -CORRIDOR / 2 - INT_WALL / 2)
    north = (CORRIDOR / 2 + INT_WALL / 2, d - EXT_WALL)

    for s in range(b.floors):
        z0 = ground + s * h
        label = f"{s + 1}F"
        st = f"S{s}"
        yield Part(st, None, "Storey", 5, f"{b.name} {label}", footprint, extrude(footprint, z0, z0 + h), z0, z0 + h,
                   {"storey": s + 1, "楼层": label, "elevation": round(z0, 3), "storey_height": h})
        yield box(f"{st}/slab", st, "Slab", 6, f"{label} 楼板", -a, -d, a, d, z0, z0 + SLAB, 构件="楼板", thickness=SLAB)
        walls = {
            "S": (-a, -d, a, -d + EXT_WALL), "N": (-a, d - EXT_WALL, a, d),
            "W": (-a, -d + EXT_WALL, -a + EXT_WALL, d - EXT_WALL), "E": (a - EXT_WALL, -d + EXT_WALL, a, d - EXT_WALL),
            "CS": (-a + EXT_WALL, -CORRIDOR / 2 - INT_WALL, a - EXT_WALL, -CORRIDOR / 2),
            "CN": (-a + EXT_WALL, CORRIDOR / 2, a - EXT_WALL, CORRIDOR / 2 + INT_WALL),
        }
        for wk, (x0, y0, x1, y1) in walls.items():
            exterior = len(wk) == 1
            yield box(f"{st}/wall-{wk}", st, "Wall", 6, f"{label} {'外墙' if exterior else '走廊墙'}{wk}", x0, y0, x1, y1,
                      z0 + SLAB, z0 + h, 构件="外墙" if exterior else "内墙", thickness=EXT_WALL if exterior else INT_WALL,
                      load_bearing=exterior)
        for k, x in enumerate(xs[1:-1]):
            for side, (y0, y1) in (("S", south), ("N", north)):
                yield box(f"{st}/wall-P{side}{k}", st, "Wall", 6, f"{label} 隔墙{side}{k + 1}", x - INT_WALL / 2, y0,
                          x + INT_WALL / 2, y1, z0 + SLAB, z0 + h, 构件="隔墙", thickness=INT_WALL, load_bearing=False)
        yield box(f"{st}/corridor", st, "Space", 5, f"{label} 走廊", -a + EXT_WALL, -CORRIDOR / 2, a - EXT_WALL,
                  CORRIDOR / 2, z0 + SLAB, z0 + h, 用途="走廊", usage="corridor")
        if s == 0:
            yield box(f"{st}/door-entrance", f"{st}/wall-W", "Door", 6, f"{label} 入口门", -a, -0.9, -a + EXT_WALL, 0.9,
                      z0 + SLAB, z0 + SLAB + 2.4, 构件="门", width=1.8, height=2.4)
        for side, (y0, y1), wall, cwall in (("S", south, "S", "CS"), ("N", north, "N", "CN")):
            for k in range(n_rooms):
                xa, xb = xs[k] + INT_WALL / 2, xs[k + 1] - INT_WALL / 2
                xc = (xa + xb) / 2
                stair = side == "N" and k == n_rooms - 1
                usage = "stair" if stair else ("toilet" if side == "N" and k == 0 else
                                               ("meeting" if k % 4 == 3 else "office"))
                label_cn = {"stair": "楼梯间", "toilet": "卫生间", "meeting": "会议室", "office": "办公室"}[usage]
                room = f"{st}/room-{side}{k}"
                yield box(room, st, "Space", 5, f"{label} {side}{k + 1:02d} {label_cn}", xa, y0, xb, y1, z0 + SLAB,
                          z0 + h, 用途=label_cn, usage=usage, room_no=f"{s + 1}{side}{k + 1:02d}",
                          area_m2=round((xb - xa) * (y1 - y0), 2))
                if stair:
                    yield box(f"{room}/stair", st, "Stair", 6, f"{label} 楼梯", xa + 0.2, y0 + 0.2, xb - 0.2,
                              (y0 + y1) / 2, z0 + SLAB, z0 + h, 构件="楼梯", risers=int(round(h / 0.16)))
                cy0, cy1 = walls[cwall][1], walls[cwall][3]
                yield box(f"{room}/door", f"{st}/wall-{cwall}", "Door", 6, f"{label} {side}{k + 1:02d} 门", xc - 0.45,
                          cy0, xc + 0.45, cy1, z0 + SLAB, z0 + SLAB + 2.1, 构件="门", width=0.9, height=2.1,
                          opens_into=room)  # a part key: the writer turns it into the room's uid
                if not stair:
                    wy0, wy1 = walls[wall][1], walls[wall][3]
                    yield box(f"{room}/window", f"{st}/wall-{wall}", "Window", 6, f"{label} {side}{k + 1:02d} 窗",
                              xc - 0.9, wy0, xc + 0.9, wy1, z0 + 1.0, z0 + 2.5, 构件="窗", width=1.8, height=1.5,
                              sill=0.8)
    top = ground + b.floors * h
    yield box("roof", None, "Roof", 6, f"{b.name} 屋面", -a, -d, a, d, top, top + 0.3, 构件="屋面板", thickness=0.3)
