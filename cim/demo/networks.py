"""Roads, bridges over the Taizi River, and the underground pipe network of the demo district.

Every street line carries the pipeline kinds its grade calls for, each at a fixed offset from the centre
line, so that the pipes of one kind along crossing streets meet at a shared junction node: the network
is connected, as a surveyed one is. Survey attributes follow the usual 管线普查 tables: 管径, 材质, 埋深,
起点号/终点号, 起止点高程, 权属单位, 埋设日期. Everything is derived from the seed, the block grid and which
blocks are built, so it streams street segment by street segment.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import shapely

from cim.demo.layout import MAIN, RIVER_HALF_WIDTH, SECONDARY, Frame, StreetGrid, river_centre_v, terrain_height, unit_hash
from cim.geom3d import combine, extrude

KINDS = ["JS", "YS", "WS", "RQ", "RL", "DL", "TX"]
KIND_INDEX = {k: i for i, k in enumerate(KINDS)}
# offset from the street centre line (m), the same on every street so that crossing pipes meet
OFFSET = {"JS": -5.5, "YS": 3.5, "WS": 1.5, "RQ": -7.0, "RL": -1.5, "DL": 5.5, "TX": -3.5}
NODE_SPACING = {"JS": 120.0, "YS": 50.0, "WS": 50.0, "RQ": 120.0, "RL": 90.0, "DL": 80.0, "TX": 80.0}
DEPTH = {"JS": (1.2, 1.8), "YS": (1.5, 3.0), "WS": (2.0, 4.0), "RQ": (1.0, 1.5), "RL": (1.5, 2.5),
         "DL": (0.8, 1.2), "TX": (0.7, 1.0)}
DIAMETERS = {  # (main, secondary, branch) choices, mm
    "JS": ([400, 500, 600], [200, 300], [100, 150, 200]),
    "YS": ([1000, 1200, 1500], [600, 800], [400, 500]),
    "WS": ([800, 1000], [500, 600], [300, 400]),
    "RQ": ([300, 400], [200], [100, 150]),
    "RL": ([600, 800], [400, 500], [300]),
    "DL": ([200], [150], [150]),
    "TX": ([150], [100], [100]),
}
MATERIALS = {"JS": ["球墨铸铁", "PE"], "YS": ["钢筋混凝土", "HDPE"], "WS": ["钢筋混凝土", "HDPE"], "RQ": ["PE", "钢"],
             "RL": ["钢"], "DL": ["MPP", "PVC"], "TX": ["PVC", "HDPE"]}
OWNERS = {"JS": ["本溪市自来水有限公司"], "YS": ["本溪市排水管理处"], "WS": ["本溪市排水管理处"], "RQ": ["本溪燃气有限公司"],
          "RL": ["本溪市热力有限公司"], "DL": ["国网本溪供电公司"],
          "TX": ["中国联通本溪分公司", "中国移动本溪分公司", "中国电信本溪分公司"]}
KIND_NAME = {"JS": "给水", "YS": "雨水", "WS": "污水", "RQ": "燃气", "RL": "热力", "DL": "电力", "TX": "通信"}
# node type per kind at junctions and in between; 检查井 manhole, 阀门 valve, 消防栓 hydrant, 接头 junction
NODE_TYPES = {"JS": ("valve", "hydrant"), "YS": ("manhole", "manhole"), "WS": ("manhole", "manhole"),
              "RQ": ("valve", "valve"), "RL": ("manhole", "manhole"), "DL": ("manhole", "manhole"),
              "TX": ("manhole", "manhole")}
NODE_LABEL = {"manhole": "检查井", "valve": "阀门", "hydrant": "消防栓", "junction": "接头", "end": "堵头"}
# 部件编码 small classes for covers (modelled on GB/T 30428.2: 01 公用设施)
COVER_CLASS = {"JS": 101, "WS": 102, "YS": 103, "DL": 104, "TX": 106, "RQ": 108, "RL": 109}
ADMIN_CODE = {"平山区": "210502", "溪湖区": "210503", "明山区": "210504", "南芬区": "210505"}
ROAD_CLEARANCE = RIVER_HALF_WIDTH + 25.0  # embankment roads run this close to the river centre line
ROAD_LANES = {MAIN: 6, SECONDARY: 4, "支路": 2}
BRIDGE_ABUTMENT = 10.0  # a bridge overlaps the road on each bank by this much


def district_of(u: float, v: float) -> str:
    """The 行政区 of a point of the street frame (平山区 in the centre)."""
    if math.hypot(u, v) < 2200:
        return "平山区"
    if v < river_centre_v(u) - 600:
        return "南芬区"
    return "明山区" if u > 0 else "溪湖区"


def line_kinds(grid: StreetGrid, orient: str, index: int, seed: int) -> list[str]:
    """Pipeline kinds under street line ``index``."""
    grade = grid.grade(orient, index)
    if grade == MAIN:
        return list(KINDS)
    r = float(unit_hash(seed, 31, ord(orient), index))
    if grade == SECONDARY:
        return ["JS", "YS", "WS", "RQ", "DL", "TX"] + (["RL"] if r < 0.5 else [])
    return ["JS", "YS", "WS", "DL", "TX"] + (["RQ"] if r < 0.6 else [])


def outside_river(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    return np.abs(np.asarray(v) - river_centre_v(u)) >= ROAD_CLEARANCE


class Networks:
    """Streams the roads, bridges, pipe segments and pipe nodes of the built part of the grid."""

    def __init__(self, grid: StreetGrid, frame: Frame, used: np.ndarray, seed: int) -> None:
        self.grid, self.frame, self.used, self.seed = grid, frame, used, seed
        nc, nr = grid.n_cols, grid.n_rows
        # segment (i, j) of N–S line i spans rows j; of E–W line j spans cols i
        pad = np.zeros((nc + 2, nr + 2), dtype=bool)
        pad[1:-1, 1:-1] = used
        self.v_used = pad[:-1, 1:-1] | pad[1:, 1:-1]  # (nc+1, nr): N–S line i, row j
        self.h_used = pad[1:-1, :-1] | pad[1:-1, 1:]  # (nc, nr+1): col i, E–W line j
        self.bridge_segments = self._bridges()
        self.v_used |= self.bridge_segments
        self._cover_seq: Counter[tuple[str, int]] = Counter()

    def _bridges(self) -> np.ndarray:
        """N–S main-street segments that cross the river where the city lies on both banks."""
        g = self.grid
        out = np.zeros_like(self.v_used)
        crossings = []
        for i in range(g.n_cols + 1):
            if g.grade("u", i) != MAIN:
                continue
            u = g.u_lines[i]
            rv = float(river_centre_v(u))
            rows = [j for j in range(g.n_rows)
                    if g.v_lines[j] < rv + ROAD_CLEARANCE and g.v_lines[j + 1] > rv - ROAD_CLEARANCE]
            if not rows:
                continue
            crossings.append((abs(u), i, rows))
            south, north = min(rows) - 1, max(rows) + 1
            if south >= 0 and north < g.n_rows and self.v_used[i, south] and self.v_used[i, north]:
                out[i, rows] = True
        if not out.any() and crossings:  # a small city still gets the central bridge
            _, i, rows = min(crossings)
            out[i, rows] = True
        return out

    # ---------------------------------------------------------------- streaming
    def objects(self) -> Iterator[tuple[dict[str, Any], list]]:
        """(object, geometries) for every road, bridge, pipe node and pipe segment."""
        g = self.grid
        yield from self._junctions()
        for i in range(g.n_cols + 1):
            for j in range(g.n_rows):
                if self.v_used[i, j]:
                    yield from self._segment("u", i, j)
        for j in range(g.n_rows + 1):
            for i in range(g.n_cols):
                if self.h_used[i, j]:
                    yield from self._segment("v", j, i)

    def _line_point(self, orient: str, line: int, t: float | np.ndarray, seg: int, offset: float = 0.0):
        """(u, v) at fraction t along segment ``seg`` of a street line, shifted by ``offset`` on both axes."""
        g = self.grid
        if orient == "u":  # N–S line at u_lines[line], running along v
            v0, v1 = g.v_lines[seg] + offset, g.v_lines[seg + 1] + offset
            return np.full(np.shape(t), g.u_lines[line] + offset), v0 + (v1 - v0) * np.asarray(t)
        u0, u1 = g.u_lines[seg] + offset, g.u_lines[seg + 1] + offset
        return u0 + (u1 - u0) * np.asarray(t), np.full(np.shape(t), g.v_lines[line] + offset)

    def _world(self, u, v) -> np.ndarray:
        e, n = self.frame.to_world(u, v)
        return np.column_stack([np.atleast_1d(e), np.atleast_1d(n)])

    def _junction_kinds(self, i: int, j: int) -> list[str]:
        g = self.grid
        kinds: set[str] = set()
        if (j > 0 and self.v_used[i, j - 1]) or (j < g.n_rows and self.v_used[i, j]):
            kinds.update(line_kinds(g, "u", i, self.seed))
        if (i > 0 and self.h_used[i - 1, j]) or (i < g.n_cols and self.h_used[i, j]):
            kinds.update(line_kinds(g, "v", j, self.seed))
        return [k for k in KINDS if k in kinds]

    def _junctions(self) -> Iterator[tuple[dict[str, Any], list]]:
        g = self.grid
        for i in range(g.n_cols + 1):
            for j in range(g.n_rows + 1):
                # the same test as a street segment's first sample: the crossing of the centre lines
                if not outside_river(g.u_lines[i], g.v_lines[j]):
                    continue
                for k in self._junction_kinds(i, j):
                    u, v = g.u_lines[i] + OFFSET[k], g.v_lines[j] + OFFSET[k]
                    node_type = NODE_TYPES[k][0]
                    if node_type == "valve" and unit_hash(self.seed, 41, KIND_INDEX[k], i, j) < 0.5:
                        node_type = "junction"
                    yield self._node(self._junction_uid(k, i, j), k, u, v, node_type, (41, KIND_INDEX[k], i, j))

    @staticmethod
    def _junction_uid(k: str, i: int, j: int) -> str:
        return f"BX-{k}-J{i:03d}-{j:03d}"

    def _node(self, uid: str, k: str, u: float, v: float, node_type: str, key: tuple, ground: float | None = None,
              xy: np.ndarray | None = None) -> tuple[dict[str, Any], list]:
        """A pipe node; ``ground`` and ``xy`` may be passed when computed for a whole run at once."""
        lo, hi = DEPTH[k]
        depth = round(lo + (hi - lo) * float(unit_hash(self.seed, *key)), 2)
        ground = round(float(terrain_height(u, v) if ground is None else ground), 3)
        xy = self._world(u, v)[0] if xy is None else xy
        district = district_of(u, v)
        attrs = {"点号": uid, "点性": NODE_LABEL[node_type], "node_type": node_type, "管线种类": KIND_NAME[k],
                 "地面高程": ground, "埋深": depth}
        source_id = None
        if node_type in ("manhole", "valve", "hydrant") and k in COVER_CLASS:
            cls = COVER_CLASS[k]
            admin = ADMIN_CODE[district]
            self._cover_seq[(admin, cls)] += 1
            source_id = f"{admin}{cls:04d}{self._cover_seq[(admin, cls)]:06d}"  # 部件编码
            attrs["部件编码"] = source_id
            attrs["井盖材质"] = "球墨铸铁"
        if node_type == "manhole":
            attrs["井底高程"] = round(ground - depth - 0.3, 3)
        obj = {
            "uid": uid, "source_id": source_id, "object_class": "PipeNode", "layer": "pipe-nodes", "cim_level": 3,
            "name": f"{KIND_NAME[k]}{NODE_LABEL[node_type]} {uid[3:]}", "pipe_kind": k, "depth_m": depth,
            "owner": OWNERS[k][0], "district": district, "attributes": attrs,
            "geom": shapely.Point(xy), "min_z": round(ground - depth, 3), "max_z": ground,
            "valid_from": datetime(1975 + int(45 * float(unit_hash(self.seed, 48, *key))), 1, 1, tzinfo=UTC),
        }
        return obj, [(3, shapely.Point(xy[0], xy[1], ground), None)]

    def _segment(self, orient: str, line: int, seg: int) -> Iterator[tuple[dict[str, Any], list]]:
        """Road pieces, a bridge where it crosses the river, and the pipes under the road pieces."""
        g = self.grid
        length = float((g.v_lines if orient == "u" else g.u_lines)[seg + 1] - (g.v_lines if orient == "u" else g.u_lines)[seg])
        n = max(2, int(math.ceil(length / 8.0)) + 1)
        t = np.linspace(0.0, 1.0, n)
        ok = outside_river(*self._line_point(orient, line, t, seg))
        name = g.name(orient, line)
        grade = g.grade(orient, line)
        width = g.width(orient, line)
        for p, (a, b) in enumerate(_runs(ok)):
            t0, t1 = t[a], t[b]
            if (t1 - t0) * length < 15.0:
                continue
            yield self._road(orient, line, seg, p, t0, t1, name, grade, width)
            for k in line_kinds(g, orient, line, self.seed):
                yield from self._pipes(orient, line, seg, p, t0, t1, k, grade, length)
        if orient == "u" and self.bridge_segments[line, seg]:
            # one bridge per crossing, emitted with the segment under the river's centre line; it spans the
            # embankments and rests on the road ends (abutments) on both banks
            rv = float(river_centre_v(g.u_lines[line]))
            if g.v_lines[seg] <= rv < g.v_lines[seg + 1]:
                yield self._bridge(line, seg, rv - ROAD_CLEARANCE - BRIDGE_ABUTMENT, rv + ROAD_CLEARANCE + BRIDGE_ABUTMENT,
                                   name, width)

    def _road(self, orient, line, seg, p, t0, t1, name, grade, width) -> tuple[dict[str, Any], list]:
        uid = f"BX-RD-{orient}{line:03d}-{seg:03d}-{p}"
        us, vs = self._line_point(orient, line, np.array([t0, t1]), seg)
        L = float(math.hypot(us[1] - us[0], vs[1] - vs[0]))
        strip = _strip(us, vs, width)  # (u, v) corners: left/right along the centre line
        n = max(1, int(math.ceil(L / 25.0)))
        tt = np.linspace(0.0, 1.0, n + 1)
        quads, kinds = [], []
        for q in range(n):
            cu = strip["l0"][0] + (strip["l1"][0] - strip["l0"][0]) * tt[[q, q + 1]]
            cv = strip["l0"][1] + (strip["l1"][1] - strip["l0"][1]) * tt[[q, q + 1]]
            du, dv = strip["r0"][0] - strip["l0"][0], strip["r0"][1] - strip["l0"][1]
            corner_u = np.array([cu[0], cu[0] + du, cu[1] + du, cu[1]])
            corner_v = np.array([cv[0], cv[0] + dv, cv[1] + dv, cv[1]])
            z = terrain_height(corner_u, corner_v)
            xy = self._world(corner_u, corner_v)
            ring = np.column_stack([xy, z])
            poly = shapely.Polygon(ring)
            if not shapely.is_ccw(poly.exterior):
                poly = shapely.Polygon(ring[::-1])
            quads.append(poly)
            kinds.append("TrafficArea")
        footprint = shapely.Polygon(self._world(*strip["ring"]))
        zs = shapely.get_coordinates(shapely.MultiPolygon(quads), include_z=True)[:, 2]
        obj = {
            "uid": uid, "object_class": "Road", "layer": "roads", "cim_level": 2, "name": name,
            "district": district_of(float(us.mean()), float(vs.mean())),
            "attributes": {"道路名称": name, "道路等级": grade, "width_m": width, "lanes": ROAD_LANES[grade],
                           "length_m": round(L, 2), "路面材质": "沥青"},
            "geom": footprint.normalize() if not footprint.exterior.is_ccw else footprint,
            "min_z": round(float(zs.min()), 3), "max_z": round(float(zs.max()), 3),
            "valid_from": datetime(1960 + int(55 * float(unit_hash(self.seed, 49, ord(orient), line))), 1, 1, tzinfo=UTC),
        }
        return obj, [(2, shapely.MultiPolygon(quads), kinds)]

    def _bridge(self, line, seg, v0, v1, name, width) -> tuple[dict[str, Any], list]:
        us, vs = np.full(2, self.grid.u_lines[line]), np.array([v0, v1])
        L = float(vs[1] - vs[0])
        deck_w = width - 4.0
        strip = _strip(us, vs, deck_w)
        footprint = shapely.Polygon(self._world(*strip["ring"]))
        ends = terrain_height(us, vs)
        deck = float(max(ends)) + 0.5
        deck_solid = extrude(footprint, deck - 1.8, deck)
        piers = []
        n_spans = max(2, int(round(L / 35.0)))
        for s in range(1, n_spans):
            v = vs[0] + L * s / n_spans
            pier = shapely.Polygon(self._world(*_strip(np.array([us[0], us[0]]), np.array([v - 1.0, v + 1.0]),
                                                       deck_w - 6.0)["ring"]))
            bed = float(terrain_height(us[0], v)) - 3.0  # river bed below the water surface
            piers.append(extrude(pier, bed, deck - 1.8))
        year = 1985 + int(30 * float(unit_hash(self.seed, 51, line, seg)))
        obj = {
            "uid": f"BX-BR-{line:03d}-{seg:03d}", "object_class": "Bridge", "layer": "bridges", "cim_level": 3,
            "name": f"{name}太子河大桥", "year_built": year, "height": round(deck - min(ends), 2),
            "district": district_of(float(us[0]), float(vs.mean())),
            "attributes": {"桥梁名称": f"{name}太子河大桥", "跨越": "太子河", "length_m": round(L, 1), "width_m": deck_w,
                           "spans": n_spans, "结构形式": "预应力混凝土连续箱梁", "荷载等级": "城-A级",
                           "deck_elevation": round(deck, 3)},
            "geom": footprint, "min_z": round(min(float(terrain_height(us[0], vs.mean())) - 3.0, deck - 1.8), 3),
            "max_z": round(deck, 3), "valid_from": datetime(year, 1, 1, tzinfo=UTC),
        }
        surfaces, kinds = combine([deck_solid] + piers)
        return obj, [(2, deck_solid[0], deck_solid[1]), (3, surfaces, kinds)]

    def _pipes(self, orient, line, seg, p, t0, t1, k, grade, seg_len) -> Iterator[tuple[dict[str, Any], list]]:
        """Nodes along one pipe run, then the pipe segments between consecutive nodes."""
        g = self.grid
        off = OFFSET[k]
        run_len = (t1 - t0) * seg_len
        n = max(1, int(math.ceil(run_len / NODE_SPACING[k])))
        ts = t0 + (t1 - t0) * np.arange(n + 1) / n
        us, vs = self._line_point(orient, line, ts, seg, off)
        xy = self._world(us, vs)
        ground = terrain_height(us, vs)
        nodes: list[tuple[str, float]] = []  # (uid, depth) at each ts
        okey = ord(orient)
        for m in range(n + 1):
            at_start, at_end = m == 0, m == n
            if (at_start and t0 == 0.0) or (at_end and t1 == 1.0):
                ii, jj = (line, seg + at_end) if orient == "u" else (seg + at_end, line)
                uid = self._junction_uid(k, ii, jj)
                lo, hi = DEPTH[k]
                nodes.append((uid, round(lo + (hi - lo) * float(unit_hash(self.seed, 41, KIND_INDEX[k], ii, jj)), 2)))
                continue
            node_type = "end" if (at_start or at_end) else NODE_TYPES[k][1]
            uid = f"BX-{k}-{orient}{line:03d}-{seg:03d}-{p}-{m}"
            key = (42, KIND_INDEX[k], okey, line, seg, p, m)
            obj, geoms = self._node(uid, k, float(us[m]), float(vs[m]), node_type, key, float(ground[m]), xy[m])
            nodes.append((uid, obj["depth_m"]))
            yield obj, geoms
        r = unit_hash(self.seed, 43, KIND_INDEX[k], okey, line)  # one survey per kind and street
        gi = {MAIN: 0, SECONDARY: 1}.get(grade, 2)
        diameters = DIAMETERS[k][gi]
        diameter = float(diameters[int(r * len(diameters))])
        material = MATERIALS[k][int(float(unit_hash(self.seed, 44, KIND_INDEX[k], okey, line)) * len(MATERIALS[k]))]
        owners = OWNERS[k]
        owner = owners[int(float(unit_hash(self.seed, 45, KIND_INDEX[k], okey, line)) * len(owners))]
        laid = date(1975 + int(49 * float(unit_hash(self.seed, 46, KIND_INDEX[k], okey, line))),
                    1 + int(12 * float(r)), 1 + int(28 * float(unit_hash(self.seed, 47, okey, line))))
        for m in range(n):
            (s_uid, s_depth), (e_uid, e_depth) = nodes[m], nodes[m + 1]
            zs, ze = float(ground[m]) - s_depth, float(ground[m + 1]) - e_depth
            seg_xy = xy[m:m + 2]
            length = float(np.hypot(*(seg_xy[1] - seg_xy[0])))
            attrs = {"管线种类": KIND_NAME[k], "起点号": s_uid, "终点号": e_uid, "起点埋深": s_depth, "终点埋深": e_depth,
                     "起点高程": round(zs, 3), "终点高程": round(ze, 3), "length_m": round(length, 2),
                     "道路名称": g.name(orient, line)}
            if k in ("YS", "WS"):
                attrs["流向"] = "起点→终点" if zs >= ze else "终点→起点"
            if k == "RQ":
                attrs["压力级别"] = "中压" if gi < 2 else "低压"
            if k == "DL":
                attrs["电压"] = "10kV"
                attrs["孔数"] = 6 if gi == 0 else 4
            if k == "TX":
                attrs["孔数"] = 12 if gi == 0 else 6
            mid_u, mid_v = float(us[m:m + 2].mean()), float(vs[m:m + 2].mean())
            obj = {
                "uid": f"BX-{k}-{orient}{line:03d}-{seg:03d}-{p}-L{m}", "object_class": "PipeSegment",
                "layer": "pipelines", "cim_level": 3, "name": f"{KIND_NAME[k]}管 DN{int(diameter)}",
                "pipe_kind": k, "diameter_mm": diameter, "material": material,
                "depth_m": round((s_depth + e_depth) / 2, 2), "owner": owner, "laid_date": laid,
                "district": district_of(mid_u, mid_v), "attributes": attrs,
                "geom": shapely.LineString(seg_xy), "min_z": round(min(zs, ze), 3),
                "max_z": round(float(max(ground[m], ground[m + 1])), 3),
                "valid_from": datetime(laid.year, laid.month, laid.day, tzinfo=UTC),
            }
            yield obj, [(3, shapely.LineString([(seg_xy[0][0], seg_xy[0][1], zs), (seg_xy[1][0], seg_xy[1][1], ze)]),
                         None)]


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """Index ranges [a, b] of consecutive True values."""
    out, start = [], None
    for i, m in enumerate(mask):
        if m and start is None:
            start = i
        elif not m and start is not None:
            out.append((start, i - 1))
            start = None
    if start is not None:
        out.append((start, len(mask) - 1))
    return out


def _strip(us: np.ndarray, vs: np.ndarray, width: float) -> dict[str, Any]:
    """Corners of a strip of ``width`` around the axis-aligned centre line (us[0], vs[0]) → (us[1], vs[1])."""
    du, dv = us[1] - us[0], vs[1] - vs[0]
    L = math.hypot(du, dv) or 1.0
    nu, nv = -dv / L * width / 2, du / L * width / 2  # left normal
    l0, l1 = (us[0] + nu, vs[0] + nv), (us[1] + nu, vs[1] + nv)
    r0, r1 = (us[0] - nu, vs[0] - nv), (us[1] - nu, vs[1] - nv)
    ring_u = np.array([r0[0], r1[0], l1[0], l0[0], r0[0]])
    ring_v = np.array([r0[1], r1[1], l1[1], l0[1], r0[1]])
    return {"l0": l0, "l1": l1, "r0": r0, "r1": r1, "ring": (ring_u, ring_v)}
