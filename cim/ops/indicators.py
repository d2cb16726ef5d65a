"""City-sign indicators (城市体征指标) for the command dashboard (数字本溪指挥决策系统), computed from the CIM database.

Each indicator is a set of *measures* aggregated in SQL per area — the whole city, each district (行政区: the
``district`` every object carries; no district polygons exist in the data, see README), or each square cell
of a grid in the storage CRS (by the centroid of the object's footprint) — and split by a category (use,
pipe kind, material, decade, case type...). Results are rows in one long form, the same for JSON and CSV:
``{area, measure, category, value}``.

Only objects current now count: valid from the past, and not ended (a demolished building, a closed case).
Results are cached per worker keyed by the database id and the data versions of the layers an indicator
reads (:mod:`cim.db.versions`), so a cached answer is served exactly as long as its data is unchanged.
Nothing here knows HTTP.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, exists, extract, func, literal, or_, select
from sqlalchemy.sql import ColumnElement, Select

from cim.db.models import CIMTables

UNZONED = "未分区"  # objects without a district
AREAS = ("city", "district", "grid")
DEFAULT_CELL = 1000.0  # m, grid cells in the storage CRS
CELL_RANGE = (100.0, 20_000.0)
NODE_TYPE_MANHOLE = "manhole"  # pipe-node attribute node_type (检查井)
CASE_ENDED = ("closed", "cancelled")
TRACK_DAYS = 7  # road coverage counts the vehicle tracks of the last week
CASE_AGE_BUCKETS = ((1, "<1天"), (3, "1-3天"), (7, "3-7天"), (30, "7-30天"), (None, ">30天"))


class IndicatorError(ValueError):
    """A request for an unknown indicator or area, or a bad grid cell size."""


@dataclass(frozen=True)
class Indicator:
    """One indicator: the layers it reads and how its rows are computed."""

    id: str
    title: str
    layers: tuple[str, ...]
    compute: Callable[[Connection, CIMTables, Callable[[Any], list[ColumnElement]], datetime], list[dict]]
    measures: dict[str, str] = field(default_factory=dict)  # measure → unit and meaning


def _current(co, now: datetime) -> ColumnElement:
    return and_(co.c.valid_from <= now, or_(co.c.valid_to.is_(None), co.c.valid_to > now))


def _decade(year: Any) -> str:
    if year is None:
        return "未知"
    y = int(year)
    return f"{y // 10 * 10}s"


def _rows(result: Iterable[Any], measure: str, fold: Callable[[Any], str] | None = None,
          scale: float = 1.0, digits: int = 3) -> list[dict]:
    """(area, category, value) rows → measure rows, categories folded (years → decades) and summed."""
    acc: dict[tuple[str, str], float] = defaultdict(float)
    for area, category, value in result:
        key = (area, fold(category) if fold else ("未知" if category is None else str(category)))
        acc[key] += float(value or 0) * scale
    return [{"area": a, "measure": measure, "category": c, "value": round(v, digits)} for (a, c), v in sorted(acc.items())]


def _grouped(conn: Connection, area: list[ColumnElement], category: ColumnElement, value: ColumnElement,
             where: ColumnElement, co) -> list[tuple[str, Any, Any]]:
    """SUM/COUNT ``value`` per area and category; the area columns are joined into one label."""
    q: Select = select(*area, category, value).select_from(co).where(where).group_by(*area, category)
    return [(_label(r[:-2]), r[-2], r[-1]) for r in conn.execute(q)]


def _label(parts: tuple) -> str:
    if len(parts) == 0:
        return "本溪市"
    if len(parts) == 1:
        return parts[0] or UNZONED
    return f"{int(parts[0])},{int(parts[1])}"  # grid cell column,row


# ---------------------------------------------------------------------------------------------------- measures
def _buildings(conn: Connection, t: CIMTables, area, now: datetime) -> list[dict]:
    co = t.city_object
    where = and_(co.c.layer == "buildings", co.c.object_class == "Building", _current(co, now))
    a = area(co)
    usage = func.coalesce(co.c.usage, literal("未知"))
    floor_area = func.sum(func.ST_Area(co.c.geom) * func.coalesce(co.c.floors, 1))
    return (_rows(_grouped(conn, a, usage, func.count(), where, co), "count", digits=0)
            + _rows(_grouped(conn, a, usage, floor_area, where, co), "floor_area_m2", digits=1)
            + _rows(_grouped(conn, a, co.c.year_built, func.count(), where, co), "count_by_decade", _decade, digits=0))


def _pipelines(conn: Connection, t: CIMTables, area, now: datetime) -> list[dict]:
    co = t.city_object
    where = and_(co.c.layer == "pipelines", _current(co, now))
    a = area(co)
    length = func.sum(func.ST_Length(co.c.geom))
    year = extract("year", co.c.laid_date)
    return (_rows(_grouped(conn, a, co.c.pipe_kind, length, where, co), "length_km_by_kind", scale=1e-3)
            + _rows(_grouped(conn, a, co.c.material, length, where, co), "length_km_by_material", scale=1e-3)
            + _rows(_grouped(conn, a, year, length, where, co), "length_km_by_decade", _decade, scale=1e-3))


def _manholes(conn: Connection, t: CIMTables, area, now: datetime) -> list[dict]:
    """Manholes (检查井) per km of pipeline of the same kind, per area (and their counts and the km)."""
    co = t.city_object
    a = area(co)
    nodes = and_(co.c.layer == "pipe-nodes", _current(co, now),
                 co.c.attributes["node_type"].as_string() == NODE_TYPE_MANHOLE)
    pipes = and_(co.c.layer == "pipelines", _current(co, now))
    counts = _rows(_grouped(conn, a, co.c.pipe_kind, func.count(), nodes, co), "manholes", digits=0)
    metres = _grouped(conn, a, co.c.pipe_kind, func.sum(func.ST_Length(co.c.geom)), pipes, co)
    km = _rows(metres, "pipeline_km", scale=1e-3)
    length = {(area_, str(kind)): float(m or 0) / 1000 for area_, kind, m in metres}  # unrounded
    per_km = [{**r, "measure": "manholes_per_km", "value": round(r["value"] / length[(r["area"], r["category"])], 3)}
              for r in counts if length.get((r["area"], r["category"]))]
    return per_km + counts + km


def _roads(conn: Connection, t: CIMTables, area, now: datetime) -> list[dict]:
    co = t.city_object
    where = and_(co.c.layer == "roads", _current(co, now))
    a = area(co)
    grade = co.c.attributes["道路等级"].as_string()
    length = func.sum(co.c.attributes["length_m"].as_float())
    return (_rows(_grouped(conn, a, grade, func.count(), where, co), "count", digits=0)
            + _rows(_grouped(conn, a, grade, length, where, co), "length_km", scale=1e-3)
            + _rows(_grouped(conn, a, grade, func.sum(func.ST_Area(co.c.geom)), where, co), "area_m2", digits=1))


def _cases(conn: Connection, t: CIMTables, area, now: datetime) -> list[dict]:
    """Open cases (not closed or cancelled) by type, and by age since they were reported."""
    co = t.city_object
    where = and_(co.c.layer == "cases", co.c.valid_from <= now,
                 or_(co.c.case_status.is_(None), co.c.case_status.not_in(CASE_ENDED)))
    a = area(co)
    by_type = _rows(_grouped(conn, a, co.c.case_type, func.count(), where, co), "open_by_type", digits=0)
    rows = conn.execute(select(*a, co.c.valid_from).where(where)).all()

    def bucket(reported: datetime) -> str:
        if reported.tzinfo is None:
            reported = reported.replace(tzinfo=UTC)
        days = (now - reported).total_seconds() / 86400
        return next(label for limit, label in CASE_AGE_BUCKETS if limit is None or days < limit)

    by_age = _rows(((_label(r[:-1]), bucket(r[-1]), 1) for r in rows), "open_by_age", digits=0)
    return by_type + by_age


def _road_coverage(conn: Connection, t: CIMTables, area, now: datetime) -> list[dict]:
    """Roads driven by the city's vehicles (a track of the last TRACK_DAYS days crossing the road's
    surface): km covered and the share of the km, by grade."""
    co = t.city_object
    tr = co.alias("tr")
    since = now - timedelta(days=TRACK_DAYS)
    driven = exists(select(literal(1)).select_from(tr).where(
        tr.c.layer == "vehicle-tracks", tr.c.valid_to >= since, tr.c.valid_from <= now,
        func.ST_Intersects(tr.c.geom, co.c.geom)))
    roads = and_(co.c.layer == "roads", _current(co, now))
    a = area(co)
    grade = co.c.attributes["道路等级"].as_string()
    length = func.sum(co.c.attributes["length_m"].as_float())
    total = _grouped(conn, a, grade, length, roads, co)
    covered = {(ar, str(g)): float(v or 0) for ar, g, v in _grouped(conn, a, grade, length, and_(roads, driven), co)}
    km = _rows(((ar, g, covered.get((ar, str(g)), 0.0)) for ar, g, _ in total), "covered_km", scale=1e-3)
    pct = _rows(((ar, g, 100 * covered.get((ar, str(g)), 0.0) / float(v)) for ar, g, v in total if v),
                "coverage_pct", digits=1)
    return pct + km


INDICATORS: dict[str, Indicator] = {i.id: i for i in (
    Indicator("buildings", "建筑: 数量、建筑面积 (按用途)、建成年代", ("buildings",), _buildings,
              {"count": "buildings by use", "floor_area_m2": "footprint area × floors, m², by use",
               "count_by_decade": "buildings by decade of construction"}),
    Indicator("pipelines", "地下管线: 长度 (按种类、材质、埋设年代)", ("pipelines",), _pipelines,
              {"length_km_by_kind": "km by 管线种类", "length_km_by_material": "km by 材质",
               "length_km_by_decade": "km by decade laid (埋设日期)"}),
    Indicator("pipe-nodes", "检查井密度: 每公里管线的检查井数 (按种类)", ("pipe-nodes", "pipelines"), _manholes,
              {"manholes_per_km": "检查井 per km of pipeline of the same kind", "manholes": "检查井 count",
               "pipeline_km": "km of pipeline"}),
    Indicator("roads", "道路: 条数、长度、面积 (按等级)", ("roads",), _roads,
              {"count": "road segments by grade", "length_km": "km by grade", "area_m2": "m² by grade"}),
    Indicator("cases", "城运案件: 未结案件 (按类型、案龄)", ("cases",), _cases,
              {"open_by_type": "open cases by type code", "open_by_age": "open cases by days since reported"}),
    Indicator("vehicle-tracks", f"道路覆盖率: 近 {TRACK_DAYS} 天车辆轨迹经过的道路 (按等级)", ("roads", "vehicle-tracks"),
              _road_coverage, {"coverage_pct": f"% of road km crossed by a vehicle track of the last {TRACK_DAYS} days",
                               "covered_km": "road km crossed by a track"}),
)}


# ---------------------------------------------------------------------------------------------------- areas
def area_columns(by: str, cell: float) -> Callable[[Any], list[ColumnElement]]:
    """The SQL columns that name an object's area: none (city), its district, or its grid cell."""
    if by not in AREAS:
        raise IndicatorError(f"by: one of {', '.join(AREAS)}")
    if not CELL_RANGE[0] <= cell <= CELL_RANGE[1]:
        raise IndicatorError(f"cell: a cell size in metres from {CELL_RANGE[0]:g} to {CELL_RANGE[1]:g}")
    if by == "city":
        return lambda co: []
    if by == "district":
        return lambda co: [co.c.district]

    def grid(co) -> list[ColumnElement]:
        centre = func.ST_Centroid(co.c.geom)
        return [func.floor(func.ST_X(centre) / cell), func.floor(func.ST_Y(centre) / cell)]

    return grid


@dataclass
class IndicatorResult:
    indicator: Indicator
    by: str
    cell: float | None
    rows: list[dict]
    versions: dict[str, int]
    data_changed_at: datetime | None
    computed_at: datetime

    def document(self) -> dict[str, Any]:
        return {"id": self.indicator.id, "title": self.indicator.title, "by": self.by,
                **({"cell_size_m": self.cell} if self.cell else {}),
                "measures": self.indicator.measures, "layers": list(self.indicator.layers),
                "data_versions": self.versions,
                "data_changed_at": self.data_changed_at.isoformat() if self.data_changed_at else None,
                "computed_at": self.computed_at.isoformat(), "rows": self.rows}


class IndicatorCache:
    """Results per (indicator, area kind, cell, database, layer versions); a changed layer misses."""

    def __init__(self, max_entries: int = 256) -> None:
        self._entries: dict[tuple, IndicatorResult] = {}
        self._lock = threading.Lock()
        self.max_entries = max_entries

    def get(self, conn: Connection, t: CIMTables, database_id: str, name: str, by: str = "district",
            cell: float = DEFAULT_CELL, now: datetime | None = None) -> IndicatorResult:
        indicator = INDICATORS.get(name)
        if indicator is None:
            raise IndicatorError(f"no indicator {name!r}: {', '.join(INDICATORS)}")
        area = area_columns(by, cell)
        lv = t.layer_version
        got = conn.execute(select(lv.c.layer, lv.c.version, lv.c.changed_at).where(lv.c.layer.in_(indicator.layers))).all()
        versions = {layer: 0 for layer in indicator.layers} | {r.layer: int(r.version) for r in got}
        changed = max((r.changed_at for r in got), default=None)
        # a date as part of the key: open-case ages and validity move with the clock, not only with the data
        today = date.today().isoformat()
        key = (name, by, cell if by == "grid" else None, database_id, tuple(sorted(versions.items())),
               today if now is None else now.isoformat())
        with self._lock:
            hit = self._entries.get(key)
        if hit is not None:
            return hit
        at = now or datetime.now(UTC)
        rows = indicator.compute(conn, t, area, at)
        if isinstance(changed, datetime) and changed.tzinfo is None:
            changed = changed.replace(tzinfo=UTC)
        result = IndicatorResult(indicator, by, cell if by == "grid" else None, rows, versions,
                                 changed if isinstance(changed, datetime) else None, at)
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._entries.pop(next(iter(self._entries)))
            self._entries[key] = result
        return result


def to_csv(result: IndicatorResult) -> str:
    """The rows as CSV (UTF-8 with BOM, so spreadsheet programs read the Chinese right), stamped in a comment-free
    header: id, by, computed_at and data_changed_at as columns of every row."""
    import csv
    import io

    buf = io.StringIO()
    buf.write("\ufeff")
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["indicator", "by", "area", "measure", "category", "value", "computed_at", "data_changed_at"])
    stamp = result.computed_at.isoformat()
    changed = result.data_changed_at.isoformat() if result.data_changed_at else ""
    for r in result.rows:
        w.writerow([result.indicator.id, result.by, r["area"], r["measure"], r["category"], r["value"], stamp, changed])
    return buf.getvalue()
