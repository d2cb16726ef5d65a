"""Building plans for one block: footprints of varied shapes, uses, floors and roofs.

A block's plan depends only on (seed, block), so the generator can count a block's buildings in a first
pass and write them in a second without keeping anything. Footprints are laid out not to overlap: rows of
slab blocks (板楼) in residential compounds (小区), perimeter buildings and a tower on commercial blocks,
school and hospital campuses, factory halls on the periphery, and the civic centre in the middle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# 用途 (use): English code in the typed column, Chinese label in the attributes.
USAGE_LABEL = {
    "residential": "住宅", "commercial": "商业", "office": "办公", "industrial": "工业",
    "education": "教育", "medical": "医疗", "public": "公共服务",
}
_COMPOUNDS = ["东明", "胜利", "永丰", "华夏", "金域", "丹霞", "太子河", "平山", "明珠", "紫金", "和谐", "阳光",
              "翰林", "龙城", "山水", "锦绣", "北地", "站前", "彩屯", "卧龙"]
_COMPOUND_SUFFIX = ["小区", "花园", "家园", "新村", "名苑", "佳苑"]


@dataclass
class PlannedBuilding:
    """One building's plan in the street frame (u, v in metres)."""

    shape: str
    centre: tuple[float, float]
    rotated: bool  # long axis along v instead of u
    length: float  # along the long axis
    depth: float
    usage: str
    floors: int
    storey_height: float
    roof: str  # "flat" or "gable"
    name: str
    ring: np.ndarray = field(repr=False)  # exterior ring, counter-clockwise, closed
    holes: list[np.ndarray] = field(default_factory=list, repr=False)

    @property
    def height(self) -> float:
        ridge = 0.25 * self.depth if self.roof == "gable" else 1.2  # ridge, or parapet
        return round(self.floors * self.storey_height + ridge, 2)

    def to_grid(self, xy: np.ndarray) -> np.ndarray:
        """Building-local (x along the long axis, y across) → street frame."""
        x, y = xy[:, 0], xy[:, 1]
        if self.rotated:
            x, y = -y, x
        return np.column_stack([x + self.centre[0], y + self.centre[1]])


def _close(xy: list[tuple[float, float]]) -> np.ndarray:
    arr = np.asarray(xy, dtype=float)
    return np.vstack([arr, arr[:1]])


def shape_ring(shape: str, length: float, depth: float, rng: np.random.Generator) -> tuple[np.ndarray, list]:
    """Exterior ring (counter-clockwise) and holes of a footprint centred on the origin."""
    a, b = length / 2, depth / 2
    if shape == "rect":
        return _close([(-a, -b), (a, -b), (a, b), (-a, b)]), []
    if shape == "notched":  # slab block with recessed balconies on the north side (凹凸)
        units = max(2, int(round(length / 14.0)))
        w = length / units
        pts = [(-a, -b), (a, -b)]
        for k in range(units, 0, -1):
            x1, x0 = -a + k * w, -a + (k - 1) * w
            pts += [(x1, b), (x1 - 0.2 * w, b), (x1 - 0.2 * w, b - 1.5), (x0 + 0.2 * w, b - 1.5), (x0 + 0.2 * w, b)]
        pts.append((-a, b))
        return _close(_dedupe(pts)), []
    if shape == "L":
        cx, cy = a - 0.45 * length, b - 0.5 * depth
        return _close([(-a, -b), (a, -b), (a, cy), (cx + 0.0, cy), (cx, b), (-a, b)]), []
    if shape == "U":
        x0, x1, y0 = -0.2 * length, 0.2 * length, b - 0.55 * depth
        return _close([(-a, -b), (a, -b), (a, b), (x1, b), (x1, y0), (x0, y0), (x0, b), (-a, b)]), []
    if shape == "T":
        x0, x1, y0 = -0.2 * length, 0.2 * length, -b + 0.45 * depth
        return _close([(x0, -b), (x1, -b), (x1, y0), (a, y0), (a, b), (-a, b), (-a, y0), (x0, y0)]), []
    if shape == "cross":  # point tower (十字形)
        c = 0.22 * length
        return _close([(-c, -a), (c, -a), (c, -c), (a, -c), (a, c), (c, c), (c, a), (-c, a), (-c, c), (-a, c),
                       (-a, -c), (-c, -c)]), []
    if shape == "chamfer":  # octagonal tower
        c = 0.29 * length
        return _close([(-a + c, -b), (a - c, -b), (a, -b + c), (a, b - c), (a - c, b), (-a + c, b), (-a, b - c),
                       (-a, -b + c)]), []
    if shape == "courtyard":  # 回字形
        t = min(14.0, 0.3 * min(length, depth))
        hole = _close([(-a + t, -b + t), (-a + t, b - t), (a - t, b - t), (a - t, -b + t)])  # clockwise
        return _close([(-a, -b), (a, -b), (a, b), (-a, b)]), [hole]
    raise ValueError(f"unknown shape {shape!r}")


def _dedupe(pts: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for p in pts:
        if not out or abs(out[-1][0] - p[0]) > 1e-9 or abs(out[-1][1] - p[1]) > 1e-9:
            out.append(p)
    return out


def _make(shape: str, centre: tuple[float, float], rotated: bool, length: float, depth: float, usage: str,
          floors: int, storey_height: float, roof: str, name: str, rng: np.random.Generator) -> PlannedBuilding:
    b = PlannedBuilding(shape, centre, rotated, length, depth, usage, floors, storey_height, roof, name,
                        ring=np.empty((0, 2)))
    ring, holes = shape_ring(shape, length, depth, rng)
    b.ring = b.to_grid(ring)
    b.holes = [b.to_grid(h) for h in holes]
    return b


def block_kind(bi: int, bj: int, rank: int, distance: float, seed: int) -> str:
    """The land use of a block: civic centre, core, residential, commercial, public, industrial, park."""
    if rank == 0:
        return "civic"
    r = np.random.default_rng([seed, 7, bi, bj]).random()
    if distance < 700:
        return "commercial" if r < 0.7 else "residential"
    if r < 0.05:
        return "park"
    if r < 0.15:
        return "commercial"
    if r < 0.23:
        return "school" if r < 0.19 else "hospital"
    if distance > 2500 and r < 0.36:
        return "industrial"
    return "residential"


def plan_block(bounds: tuple[float, float, float, float], kind: str, seed: int, bi: int, bj: int) -> list[PlannedBuilding]:
    """The buildings of one block, deterministic in (seed, block)."""
    rng = np.random.default_rng([seed, 11, bi, bj])
    u0, v0, u1, v1 = bounds
    setback = 8.0
    u0, v0, u1, v1 = u0 + setback, v0 + setback, u1 - setback, v1 - setback
    if u1 - u0 < 40 or v1 - v0 < 30 or kind == "park":
        return []
    return _LAYOUTS[kind](rng, u0, v0, u1, v1)


def _compound_name(rng: np.random.Generator) -> str:
    return str(rng.choice(_COMPOUNDS)) + str(rng.choice(_COMPOUND_SUFFIX))


def _residential(rng, u0, v0, u1, v1) -> list[PlannedBuilding]:
    compound = _compound_name(rng)
    out: list[PlannedBuilding] = []
    if rng.random() < 0.25:  # high-rise point towers
        floors = int(rng.choice([18, 24, 26, 32]))
        size = float(rng.uniform(22, 28))
        gap = max(24.0, 0.5 * floors * 2.9)
        nu, nv = int((u1 - u0 + gap) // (size + gap)), int((v1 - v0 + gap) // (size + gap))
        for i in range(nu):
            for j in range(nv):
                cu = u0 + size / 2 + i * (size + gap)
                cv = v0 + size / 2 + j * (size + gap)
                shape = str(rng.choice(["cross", "chamfer", "rect"], p=[0.45, 0.35, 0.2]))
                out.append(_make(shape, (cu, cv), False, size, size, "residential", floors, 2.9, "flat",
                                 f"{compound}{len(out) + 1}号楼", rng))
        return out
    floors = int(rng.choice([5, 6, 7, 11, 12, 18], p=[0.2, 0.3, 0.1, 0.15, 0.15, 0.1]))
    depth = float(rng.uniform(11.0, 14.0))
    row_gap = max(18.0, 0.8 * floors * 2.9)
    n_rows = max(1, int((v1 - v0 + row_gap) // (depth + row_gap)))
    for r in range(n_rows):
        cv = v0 + depth / 2 + r * (depth + row_gap)
        u = u0
        while True:
            length = float(rng.uniform(34.0, 72.0))
            if u + length > u1:
                break
            shape = str(rng.choice(["notched", "rect", "L"], p=[0.5, 0.38, 0.12]))
            roof = "gable" if shape == "rect" and floors <= 6 else "flat"
            out.append(_make(shape, (u + length / 2, cv), False, length, depth, "residential", floors, 2.9, roof,
                             f"{compound}{len(out) + 1}号楼", rng))
            u += length + float(rng.uniform(9.0, 16.0))
    return out


def _commercial(rng, u0, v0, u1, v1) -> list[PlannedBuilding]:
    out: list[PlannedBuilding] = []
    street = str(rng.choice(["银座", "万达", "兴隆", "华联", "国贸", "金融", "商业", "中兴"]))
    depth = float(rng.uniform(16.0, 22.0))
    for side, cv in (("south", v0 + depth / 2), ("north", v1 - depth / 2)):
        u = u0
        while True:
            length = float(rng.uniform(30.0, 60.0))
            if u + length > u1:
                break
            shape = "L" if u == u0 and rng.random() < 0.5 else "rect"
            floors = int(rng.integers(3, 7))
            b = _make(shape, (u + length / 2, cv), False, length, depth,
                      "commercial" if rng.random() < 0.7 else "office", floors, 4.2, "flat",
                      f"{street}{'商厦' if side == 'south' else '大厦'}{len(out) + 1}", rng)
            if side == "north" and shape == "L":  # mirror so the wing points into the block
                b.ring[:, 1] = 2 * cv - b.ring[:, 1]
                b.ring = b.ring[::-1].copy()
            out.append(b)
            u += length + float(rng.uniform(6.0, 12.0))
    # in the middle: a tower or a courtyard complex, if the space between the perimeter rows allows
    free_v = (v1 - v0) - 2 * depth - 2 * 12.0
    if free_v >= 30:
        cu, cv = (u0 + u1) / 2, (v0 + v1) / 2
        if free_v >= 50 and (u1 - u0) >= 90 and rng.random() < 0.4:
            size_u, size_v = min(70.0, u1 - u0 - 20), min(50.0, free_v)
            out.append(_make("courtyard", (cu, cv), False, size_u, size_v, "commercial", int(rng.integers(4, 8)),
                             4.5, "flat", f"{street}广场", rng))
        else:
            size = min(free_v, float(rng.uniform(28.0, 38.0)))
            out.append(_make(str(rng.choice(["chamfer", "cross", "rect"])), (cu, cv), False, size, size, "office",
                             int(rng.integers(15, 33)), 3.6, "flat", f"{street}中心", rng))
    return out


def _civic(rng, u0, v0, u1, v1) -> list[PlannedBuilding]:
    """本溪市政务服务中心: three office buildings with full interiors."""
    out = []
    length = min(48.0, (u1 - u0) / 2 - 10)
    depth = 16.0
    spots = [(u0 + length / 2, v0 + depth / 2), (u1 - length / 2, v0 + depth / 2), ((u0 + u1) / 2, v1 - depth / 2)]
    for k, (cu, cv) in enumerate(spots):
        out.append(_make("rect", (cu, cv), False, length, depth, "office", 5 - (k == 2), 3.6, "flat",
                         f"本溪市政务服务中心{'ABC'[k]}座", rng))
    return out


def _school(rng, u0, v0, u1, v1) -> list[PlannedBuilding]:
    name = str(rng.choice(["本溪市第一中学", "本溪市实验小学", "平山区育才小学", "本溪市第十二中学", "明山区东明小学"]))
    length = min(80.0, u1 - u0 - 10)
    out = [_make("U", (u0 + length / 2, v1 - 14), False, length, 28.0, "education", 4, 3.8, "flat",
                 f"{name}教学楼", rng)]
    if v1 - v0 > 90:
        out.append(_make("rect", (u0 + 30, v0 + 10), False, 50.0, 16.0, "education", 4, 3.8, "flat",
                         f"{name}实验楼", rng))
    return out


def _hospital(rng, u0, v0, u1, v1) -> list[PlannedBuilding]:
    name = str(rng.choice(["本溪市中心医院", "本溪市中医院", "平山区人民医院", "本钢总医院"]))
    length = min(70.0, u1 - u0 - 10)
    out = [_make("T", ((u0 + u1) / 2, v0 + 20), False, length, 40.0, "medical", int(rng.integers(8, 14)), 3.9, "flat",
                 f"{name}门诊住院楼", rng)]
    if v1 - v0 > 90 and u1 - u0 > 60:
        out.append(_make("rect", (u0 + 25, v1 - 9), False, 40.0, 16.0, "public", 3, 3.6, "gable",
                         f"{name}后勤楼", rng))
    return out


def _industrial(rng, u0, v0, u1, v1) -> list[PlannedBuilding]:
    out = []
    name = str(rng.choice(["本钢", "本溪制药", "辽宁冶金机械", "本溪水泥", "本溪钢铁配件"]))
    half = (v1 - v0 - 20) / 2
    for k, cv in enumerate((v0 + half / 2, v1 - half / 2)):
        length = float(min(u1 - u0, rng.uniform(60, 130)))
        shape = "L" if rng.random() < 0.3 else "rect"
        out.append(_make(shape, (u0 + length / 2, cv), False, length, half, "industrial", int(rng.integers(1, 3)),
                         6.0, "flat", f"{name}厂房{k + 1}", rng))
    return out


_LAYOUTS = {
    "residential": _residential,
    "commercial": _commercial,
    "civic": _civic,
    "school": _school,
    "hospital": _hospital,
    "industrial": _industrial,
}
