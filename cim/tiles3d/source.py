"""The SQL behind 3D tiles: which objects a tileset shows, where they are, and one tile's objects.

One rule decides which tile an object is in, shared by planning and by reading a tile: the centre of its
footprint's bounding box, computed by the database with the same expression in both queries, falls in the
cell's half-open square. Reading a tile goes through the spatial index first (SpatiaLite's R*Tree through
its ``SpatialIndex`` table, PostGIS's GiST on (layer, footprint)), so a tile costs the same whatever the
size of the city. Only currently valid objects are drawn (``valid_to`` unset or later than ``as_of``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import lru_cache
from typing import Any

import numpy as np
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Float,
    Select,
    and_,
    bindparam,
    func,
    literal_column,
    or_,
    select,
    text,
)
from sqlalchemy.orm import aliased

from cim.db.models import CIMTables
from cim.db.queries import area_filter
from cim.tiles3d.quadtree import Cell
from cim.tiles3d.specs import LayerSpec

__all__ = ["Selection", "TileRow", "levels_present", "plan_points", "read_tile"]


@dataclass(frozen=True)
class Selection:
    """What one tileset shows: layers at a CIM level, optionally within an area of the storage CRS."""

    specs: tuple[LayerSpec, ...]
    cim_level: int
    fallback: bool = True
    area: Any = None  # shapely geometry in the storage CRS: objects whose footprint intersects it
    as_of: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def layers(self) -> list[str]:
        return [s.layer for s in self.specs]

    def window(self, spec: LayerSpec) -> tuple[int, int]:
        """The CIM levels an object of ``spec``'s layer may be drawn with (highest first)."""
        low = spec.levels[0] if (self.fallback and spec.fallback) else self.cim_level
        return low, self.cim_level

    def spec(self, layer: str) -> LayerSpec:
        return next(s for s in self.specs if s.layer == layer)


@dataclass
class TileRow:
    """One object of a tile: its property values, what its drawing depends on, and its raw geometry."""

    id: int
    uid: str
    layer: str
    cim_level: int
    values: dict[str, Any]  # property table values, by property name
    draw: dict[str, Any]  # pipe_kind, diameter_mm, depth_m, object_class, well_diameter_m
    wkb: bytes
    surfaces: list[str] | None

    def digest(self, h: Any) -> None:
        """Feed everything this object contributes to a tile into hash ``h``.

        ``repr`` of plain values (str, int, float, None, lists) is exact and stable, and 5× cheaper than JSON.
        """
        h.update(repr((self.id, self.uid, self.layer, self.cim_level, tuple(self.values.items()),
                       tuple(self.draw.items()), self.surfaces)).encode())
        h.update(len(self.wkb).to_bytes(8, "little"))
        h.update(self.wkb)


def _bbox_parts(t: CIMTables, dialect: str) -> tuple[ColumnElement, ...]:
    g = t.city_object.c.geom
    if dialect == "sqlite":
        return func.MbrMinX(g), func.MbrMinY(g), func.MbrMaxX(g), func.MbrMaxY(g)
    return func.ST_XMin(g), func.ST_YMin(g), func.ST_XMax(g), func.ST_YMax(g)


def _centre(t: CIMTables, dialect: str) -> tuple[ColumnElement, ColumnElement]:
    """The centre of the footprint's bounding box: the one expression both planning and tiles use."""
    x0, y0, x1, y1 = _bbox_parts(t, dialect)
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0


def _level_window(sel: Selection, co: Any, level: ColumnElement) -> ColumnElement[bool]:
    clauses = []
    for spec in sel.specs:
        low, high = sel.window(spec)
        clauses.append(and_(co.c.layer == spec.layer, level.between(low, high)))
    return or_(*clauses)


def _where(t: CIMTables, dialect: str, sel: Selection) -> list[ColumnElement[bool]]:
    co = t.city_object
    out = [co.c.layer.in_(sel.layers), co.c.geom.is_not(None),
           or_(co.c.valid_to.is_(None), co.c.valid_to > sel.as_of)]
    for spec in sel.specs:
        if spec.hidden_classes:
            out.append(or_(co.c.layer != spec.layer, co.c.object_class.not_in(spec.hidden_classes)))
    if sel.area is not None:
        out.append(area_filter(t, dialect, sel.area))
    return out


def _best_level(t: CIMTables, sel: Selection) -> ColumnElement:
    """Each object's highest stored CIM level within its layer's window (a correlated subquery)."""
    co, g = t.city_object, aliased(t.city_object_geometry, name="g_best")
    return (select(func.max(g.c.cim_level)).where(g.c.object_id == co.c.id, _level_window(sel, co, g.c.cim_level))
            .correlate(co).scalar_subquery())


def levels_present(conn: Connection, t: CIMTables, sel: Selection) -> dict[str, dict[int, int]]:
    """Objects per stored CIM level, per layer of the selection (for messages about empty tilesets)."""
    co, g = t.city_object, t.city_object_geometry
    rows = conn.execute(select(co.c.layer, g.c.cim_level, func.count()).select_from(co.join(g, g.c.object_id == co.c.id))
                        .where(*_where(t, conn.dialect.name, sel)).group_by(co.c.layer, g.c.cim_level))
    out: dict[str, dict[int, int]] = {layer: {} for layer in sel.layers}
    for layer, level, n in rows:
        out[layer][int(level)] = int(n)
    return out


def plan_points(engine: Engine, t: CIMTables, sel: Selection, batch: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """The footprint bbox centres of every object the selection draws (streamed; 16 bytes per object)."""
    co = t.city_object
    dialect = engine.dialect.name
    cx, cy = _centre(t, dialect)
    stmt = select(cx.label("cx"), cy.label("cy")).where(*_where(t, dialect, sel), _best_level(t, sel).is_not(None))
    xs: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=batch).execute(stmt.order_by(co.c.id))
        for part in result.partitions(batch):
            # through tuples: numpy's asarray on SQLAlchemy Row objects costs ~40 µs a row
            arr = np.array([tuple(r) for r in part], dtype=float).reshape(-1, 2)
            xs.append(arr[:, 0])
            ys.append(arr[:, 1])
    if not xs:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(xs), np.concatenate(ys)


_X0, _Y0, _X1, _Y1 = (bindparam(n, type_=Float) for n in ("x0", "y0", "x1", "y1"))


def _cell_filter(t: CIMTables, dialect: str) -> list[ColumnElement[bool]]:
    """Objects of the cell bound to parameters x0, y0, x1, y1 (so that one compiled statement serves all)."""
    co = t.city_object
    srid = co.c.geom.type.srid
    if dialect == "sqlite":
        # the R*Tree is used only through this virtual table (../shared/STACK-NOTES.md)
        candidates = text(
            "SELECT rowid FROM SpatialIndex WHERE f_table_name = 'city_object' AND f_geometry_column = 'geom' "
            f"AND search_frame = BuildMbr(:x0, :y0, :x1, :y1, {int(srid)})"
        ).bindparams(_X0, _Y0, _X1, _Y1)
        index = co.c.id.in_(candidates.columns(literal_column("rowid")))
    else:
        index = co.c.geom.op("&&")(func.ST_MakeEnvelope(_X0, _Y0, _X1, _Y1, srid))
    cx, cy = _centre(t, dialect)
    return [index, cx >= _X0, cx < _X1, cy >= _Y0, cy < _Y1]


_TYPED = ("object_class", "name", "usage", "height", "floors", "year_built", "district", "address", "pipe_kind",
          "diameter_mm", "material", "depth_m", "owner", "laid_date", "source_id")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _attributes(value: Any) -> dict[str, Any]:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


@lru_cache(maxsize=32)
def _tile_statement(t: CIMTables, dialect: str, sel: Selection) -> Select:
    """One tile's query with the cell as parameters: built once per tileset, compiled once by SQLAlchemy."""
    co, g = t.city_object, t.city_object_geometry
    parent, root = aliased(co, name="p"), aliased(co, name="r")
    as_wkb = func.AsBinary if dialect == "sqlite" else func.ST_AsBinary
    return (select(co.c.id, co.c.uid, co.c.layer, *[co.c[c] for c in _TYPED], co.c.attributes,
                   parent.c.uid.label("parent"), root.c.uid.label("root"), g.c.cim_level.label("level"),
                   as_wkb(g.c.geom).label("wkb"), g.c.surfaces)
            .select_from(co.join(g, and_(g.c.object_id == co.c.id, g.c.cim_level == _best_level(t, sel)))
                         .outerjoin(parent, parent.c.id == co.c.parent_id).outerjoin(root, root.c.id == co.c.root_id))
            .where(*_where(t, dialect, sel), *_cell_filter(t, dialect))
            .order_by(co.c.id))


def read_tile(conn: Connection, t: CIMTables, sel: Selection, cell: Cell, batch: int = 256) -> Iterator[list[TileRow]]:
    """The objects of one tile, in batches, ordered by id (feature ids follow this order)."""
    x0, y0, x1, y1 = cell.bounds
    stmt = _tile_statement(t, conn.dialect.name, sel)
    result = conn.execution_options(yield_per=batch).execute(stmt, {"x0": x0, "y0": y0, "x1": x1, "y1": y1})
    keys = list(result.keys())
    specs = {s.layer: s for s in sel.specs}
    for part in result.partitions(batch):
        # plain dicts: RowMapping lookups by name go through a slow path (~6 µs each)
        yield [_row(specs[r[2]], dict(zip(keys, r))) for r in part]


def _row(spec: LayerSpec, r: dict[str, Any]) -> TileRow:
    attributes = _attributes(r["attributes"])
    values: dict[str, Any] = {}
    for p in spec.properties:
        if p.source == "cim_level":
            v: Any = int(r["level"])
        elif p.source.startswith("attributes."):
            v = attributes.get(p.source.split(".", 1)[1])
        else:
            v = r[p.source]
        if v is not None and p.kind == "STRING":
            v = str(_plain(v))
        elif v is not None and p.kind == "INT32":
            v = int(v)
        elif v is not None and p.kind == "FLOAT64":
            v = float(v)
        values[p.name] = v
    draw = {"object_class": r["object_class"], "pipe_kind": r["pipe_kind"], "diameter_mm": r["diameter_mm"],
            "depth_m": r["depth_m"], "well_diameter_m": attributes.get("well_diameter_m")}
    surfaces = r["surfaces"]
    if isinstance(surfaces, str):
        surfaces = json.loads(surfaces)
    return TileRow(int(r["id"]), r["uid"], r["layer"], int(r["level"]), values, draw, bytes(r["wkb"]), surfaces)


def fingerprint(rows: list[TileRow], params: str) -> str:
    """A digest of everything a tile's content is made from (its objects and the build parameters)."""
    h = hashlib.sha256(params.encode())
    for row in rows:
        row.digest(h)
    return h.hexdigest()
