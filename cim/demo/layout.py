"""The plan of the demo district: a street grid in the Taizi River valley around 平山区, Benxi.

Everything is a pure function of the seed and the requested size, so the city is the same on every
machine and any part of it can be regenerated on its own (streaming needs no global state beyond a few
small numpy arrays over the grid). Work is done in a local street frame (u along the east–west streets,
v along the north–south ones, metres, origin at the district centre); :class:`Frame` places it in the
storage CRS.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from cim.crs import transformer

# Street grades (道路等级) with their widths in metres.
MAIN, SECONDARY, BRANCH = "主干路", "次干路", "支路"
STREET_WIDTH = {MAIN: 40.0, SECONDARY: 26.0, BRANCH: 16.0}

# Benxi street names; E–W streets are 路, N–S streets are 街.
_EW_NAMES = ["胜利", "解放", "东明", "平山", "光明", "人民", "和平", "育才", "环山", "峪明", "明山", "溪湖",
             "彩屯", "东芬", "卧龙", "紫金", "广裕", "滨河", "长江", "黄河", "建设", "文化", "工人", "铁山",
             "钢铁", "北台", "矿山", "新华", "永丰", "站前", "北地", "水塔"]
_NS_NAMES = ["平安", "友谊", "光荣", "团结", "兴安", "民主", "幸福", "繁荣", "振兴", "公园", "新兴", "春风",
             "丹霞", "青云", "石桥", "龙泉", "惠民", "顺城", "滨江", "临江", "太平", "通江", "东兴", "西兴"]
_ORDINALS = ["", "二", "三", "四", "五", "六", "七", "八", "九", "十"]

RIVER_HALF_WIDTH = 80.0  # 太子河 at Benxi is 150–250 m wide
RIVER_CLEARANCE = 100.0  # embankment and riverside park: no blocks, no streets (only bridges)


_M64 = (1 << 64) - 1


def unit_hash(*keys: int | np.ndarray) -> np.ndarray | float:
    """Deterministic pseudo-random numbers in [0, 1) from integer keys (SplitMix64-style mixing).

    Scalars take a pure-Python path (numpy's per-call overhead dominates there); arrays are vectorised.
    Both give the same numbers.
    """
    if all(isinstance(k, int) for k in keys):
        h = 0x9E3779B97F4A7C15
        for k in keys:
            h = ((h ^ (k & _M64)) * 0xBF58476D1CE4E5B9) & _M64
            h ^= h >> 31
            h = (h * 0x94D049BB133111EB) & _M64
            h ^= h >> 29
        return (h >> 11) / float(1 << 53)
    with np.errstate(over="ignore"):
        h = np.uint64(0x9E3779B97F4A7C15)
        for k in keys:
            h = (h ^ np.asarray(k).astype(np.uint64)) * np.uint64(0xBF58476D1CE4E5B9)
            h ^= h >> np.uint64(31)
            h *= np.uint64(0x94D049BB133111EB)
            h ^= h >> np.uint64(29)
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


@dataclass(frozen=True)
class Frame:
    """The local street frame placed in the storage CRS (x = easting, y = northing)."""

    e0: float
    n0: float
    angle_deg: float = 12.0  # the valley, and so the street grid, runs a little north of east

    @classmethod
    def at(cls, lon: float, lat: float, storage_srid: int) -> "Frame":
        e0, n0 = transformer(4490, storage_srid).transform(lon, lat)
        return cls(float(e0), float(n0))

    def to_world(self, u: np.ndarray | float, v: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        a = math.radians(self.angle_deg)
        c, s = math.cos(a), math.sin(a)
        u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
        return self.e0 + u * c - v * s, self.n0 + u * s + v * c

    def to_local(self, e: np.ndarray | float, n: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
        a = math.radians(self.angle_deg)
        c, s = math.cos(a), math.sin(a)
        de, dn = np.asarray(e, dtype=float) - self.e0, np.asarray(n, dtype=float) - self.n0
        return de * c + dn * s, -de * s + dn * c


def river_centre_v(u: np.ndarray | float) -> np.ndarray:
    """The Taizi River's centre line (v as a function of u), meandering south of the centre."""
    u = np.asarray(u, dtype=float)
    return -420.0 + 170.0 * np.sin(2 * np.pi * u / 3300.0) + 60.0 * np.sin(2 * np.pi * u / 1150.0 + 1.3)


def terrain_height(u: np.ndarray | float, v: np.ndarray | float) -> np.ndarray:
    """Ground height (1985 National Height Datum, m): the river valley rising to the hills around it."""
    u, v = np.asarray(u, dtype=float), np.asarray(v, dtype=float)
    d = np.abs(v - river_centre_v(u))
    base = 176.0 + 0.0025 * u  # the river flows west
    valley = 14.0 * (1.0 - np.exp(-((d / 650.0) ** 2)))
    slopes = 420.0 * np.tanh(np.maximum(0.0, d - 1300.0) / 4500.0)
    hills = 16.0 * np.sin(u / 410.0 + 0.3) * np.cos(v / 330.0) + 6.0 * np.sin(u / 157.0 - v / 203.0)
    hills *= np.clip(d / 400.0, 0.0, 1.0)  # flat along the water
    return base + valley + slopes + hills


@dataclass
class StreetGrid:
    """Street lines (u positions of N–S streets, v positions of E–W streets) and the blocks between them."""

    n_cols: int
    n_rows: int
    seed: int
    u_lines: np.ndarray = field(init=False)
    v_lines: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng([self.seed, 1])
        widths = rng.uniform(150.0, 260.0, self.n_cols)
        heights = rng.uniform(120.0, 200.0, self.n_rows)
        self.u_lines = np.concatenate([[0.0], np.cumsum(widths)])
        self.v_lines = np.concatenate([[0.0], np.cumsum(heights)])
        # centre the middle block on the origin
        mc, mr = self.n_cols // 2, self.n_rows // 2
        self.u_lines -= (self.u_lines[mc] + self.u_lines[mc + 1]) / 2
        self.v_lines -= (self.v_lines[mr] + self.v_lines[mr + 1]) / 2

    @classmethod
    def for_size(cls, n_buildings: int, seed: int) -> "StreetGrid":
        # about 9 buildings a block; room for parks, the river and the spiral's ragged edge
        side = int(math.ceil(math.sqrt(n_buildings / 4.0))) + 6
        return cls(side, side, seed)

    def grade(self, orient: str, index: int) -> str:
        """Grade of street line ``index`` (orient 'u': a N–S street at u_lines[index]; 'v': E–W)."""
        mid = (self.n_cols if orient == "u" else self.n_rows) // 2
        k = index - mid
        if k % 5 == 0:
            return MAIN
        return SECONDARY if k % 5 == 3 else BRANCH

    def width(self, orient: str, index: int) -> float:
        return STREET_WIDTH[self.grade(orient, index)]

    def name(self, orient: str, index: int) -> str:
        names, suffix = (_NS_NAMES, "街") if orient == "u" else (_EW_NAMES, "路")
        mid = (self.n_cols if orient == "u" else self.n_rows) // 2
        k = (abs(index - mid) * 2 + (index < mid)) % (len(names) * len(_ORDINALS))
        return f"{names[k % len(names)]}{_ORDINALS[k // len(names)]}{suffix}"

    def block_bounds(self, bi: int, bj: int) -> tuple[float, float, float, float]:
        """Buildable extent of block (bi, bj) inside the street lines: (u0, v0, u1, v1)."""
        return (
            self.u_lines[bi] + self.width("u", bi) / 2,
            self.v_lines[bj] + self.width("v", bj) / 2,
            self.u_lines[bi + 1] - self.width("u", bi + 1) / 2,
            self.v_lines[bj + 1] - self.width("v", bj + 1) / 2,
        )

    @cached_property
    def river_blocked(self) -> np.ndarray:
        """Blocks (n_cols × n_rows) touched by the river or its embankment."""
        out = np.zeros((self.n_cols, self.n_rows), dtype=bool)
        for bi in range(self.n_cols):
            us = np.linspace(self.u_lines[bi], self.u_lines[bi + 1], 24)
            rv = river_centre_v(us)
            lo, hi = rv.min() - RIVER_HALF_WIDTH - RIVER_CLEARANCE, rv.max() + RIVER_HALF_WIDTH + RIVER_CLEARANCE
            out[bi] = (self.v_lines[1:] > lo) & (self.v_lines[:-1] < hi)
        return out

    def blocks_by_distance(self) -> np.ndarray:
        """Buildable blocks as (col, row) rows, nearest the centre first (the city grows outwards with size).

        A compact int32 array: at a million buildings it holds ~170,000 blocks in 1.4 MB.
        """
        uc = (self.u_lines[:-1] + self.u_lines[1:]) / 2
        vc = (self.v_lines[:-1] + self.v_lines[1:]) / 2
        d = np.hypot(uc[:, None], vc[None, :] * 1.1)
        d[self.river_blocked] = np.inf
        order = np.lexsort((np.arange(d.size), d.ravel()))
        order = order[np.isfinite(d.ravel()[order])]
        cols, rows = np.unravel_index(order, d.shape)
        return np.column_stack([cols, rows]).astype(np.int32)
