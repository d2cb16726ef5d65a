"""CQL2 filters (text and JSON) → SQL over city objects, in the database, on both backends.

pygeofilter parses and compiles to SQLAlchemy; we check every property against the layer's queryables
(no injection, no silent nulls) and take the geometry literals ourselves: pygeofilter 0.4 emits them as
SRID 4326 (PostGIS then raises "mixed SRID", SpatiaLite silently returns wrong rows, ../shared/
STACK-NOTES.md). Literals are read in the ``filter-crs``'s axis order, transformed with :mod:`cim.crs`
(edges densified) and bound in the storage CRS.
"""

from __future__ import annotations

import json
from typing import Any

import cql2
import numpy as np
import shapely
from pygeofilter import ast, values
from pygeofilter.backends.evaluator import handle
from pygeofilter.backends.sqlalchemy.evaluate import SQLAlchemyFilterEvaluator
from pygeofilter.parsers.cql2_json import parse as parse_cql2_json
from sqlalchemy import ColumnElement, func

from cim.crs.registry import CRSInfo
from cim.crs.transform import OutsideArea, bbox_polygon, swap_axes, transform
from cim.db.models import CIMTables
from cim.db.queries import PROPERTY_COLUMN

GEOMETRY_NAMES = ("geometry", "geom", "footprint")


class FilterError(ValueError):
    """A filter that cannot be used; the message says why (syntax, unknown property, CRS...)."""


def parse(text: str, lang: str) -> ast.Node:
    """Parse a CQL2 text or JSON filter.

    CQL2 text goes through cql2 (cql2-rs) to CQL2 JSON, and only that to pygeofilter: pygeofilter 0.4's
    text grammar gives AND and OR the same precedence (``a OR b AND c`` read as ``(a OR b) AND c``) and
    rejects ``NOT (a AND b)``, both found by tests/test_properties_api.py.
    """
    try:
        doc = json.loads(text) if lang == "cql2-json" else cql2.parse_text(text).to_json()
        node = parse_cql2_json(_between_as_pygeofilter_reads_it(doc))
    except Exception as exc:  # cql2, lark and json raise many kinds
        raise FilterError(f"filter: not valid {lang} ({_reason(exc)})") from None
    _check_conditions(node)
    return node


def _between_as_pygeofilter_reads_it(doc: Any) -> Any:
    """CQL2 JSON's ``{"op": "between", "args": [x, low, high]}`` as pygeofilter 0.4 reads it (``[x, [low,
    high]]``, an older draft's form; the standard one failed with "'float' object is not subscriptable")."""
    if isinstance(doc, list):
        return [_between_as_pygeofilter_reads_it(v) for v in doc]
    if not isinstance(doc, dict):
        return doc
    out = {k: _between_as_pygeofilter_reads_it(v) for k, v in doc.items()}
    args = out.get("args")
    if out.get("op") == "between" and isinstance(args, list) and len(args) == 3:
        out["args"] = [args[0], [args[1], args[2]]]
    return out


def _check_conditions(node: Any) -> None:
    """The filter, and each operand of AND, OR and NOT, must be a condition: a bare value (``0``, ``'x'``,
    a property, a boolean literal) is refused here rather than sent to the database (PostgreSQL: "argument
    of WHERE must be type boolean", a 500 found by tests/test_properties_api.py)."""
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, (ast.And, ast.Or)):
            stack += [n.lhs, n.rhs]
        elif isinstance(n, ast.Not):
            stack.append(n.sub_node)
        elif not isinstance(n, (ast.Predicate, ast.Condition)):
            raise FilterError(f"filter: {str(n)[:60]!r} is not a condition (a comparison, a spatial predicate, "
                              "or AND/OR/NOT of them)")


def _reason(exc: Exception) -> str:
    """One line from a parser's message (cql2's are a multi-line picture: keep the position and what it
    expected)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    where = next((line[3:].strip() for line in lines if line.startswith("-->")), None)
    expected = next((line[1:].strip() for line in lines if line.startswith("=")), None)
    return f"at {where}: {expected}" if where and expected else lines[0]


def _attributes(node: Any) -> set[str]:
    found: set[str] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if isinstance(n, ast.Attribute):
            found.add(n.name)
        elif isinstance(n, ast.Node):
            stack.extend(n.get_sub_nodes())
        elif isinstance(n, (list, tuple)):
            stack.extend(n)
    return found


class _Evaluator(SQLAlchemyFilterEvaluator):
    """pygeofilter's SQLAlchemy evaluator with our columns and CRS-correct geometry literals."""

    def __init__(self, mapping: dict[str, Any], dialect: str, filter_crs: CRSInfo, storage: CRSInfo) -> None:
        super().__init__(mapping, undefined_as_null=False)
        self.dialect, self.filter_crs, self.storage = dialect, filter_crs, storage

    def _bind(self, geom: shapely.Geometry) -> ColumnElement:
        fn = func.GeomFromText if self.dialect == "sqlite" else func.ST_GeomFromText
        return fn(geom.wkt, self.storage.epsg)

    def _to_storage(self, geom: shapely.Geometry) -> shapely.Geometry:
        if not isinstance(geom, shapely.Point):
            geom = shapely.segmentize(geom, max(1e-6, _extent(geom) / 32))
        xy = shapely.get_coordinates(geom)
        a, b = swap_axes(self.filter_crs, xy[:, 0], xy[:, 1])  # the CRS's axis order → x/y
        try:
            x, y, _ = transform(self.filter_crs, self.storage, a, b)
        except OutsideArea as exc:
            raise FilterError(f"filter: geometry {exc}") from None
        return shapely.set_coordinates(geom, np.column_stack([x, y]))

    def _envelope(self, minx: float, miny: float, maxx: float, maxy: float) -> ColumnElement:
        (x0, x1), (y0, y1) = swap_axes(self.filter_crs, (minx, maxx), (miny, maxy))
        try:
            return self._bind(bbox_polygon((x0, y0, x1, y1), self.filter_crs, self.storage))
        except OutsideArea as exc:
            raise FilterError(f"filter: BBOX {exc}") from None

    @handle(values.Geometry)
    def geometry(self, node):
        return self._bind(self._to_storage(shapely.geometry.shape(node.__geo_interface__)))

    @handle(values.Envelope)
    def envelope(self, node):
        # pygeofilter 0.4's cql2-json parser builds Envelope(*bbox) into fields ordered x1, x2, y1, y2, so
        # they hold minx, miny, maxx, maxy in that order (the text parser yields BBOX as a function).
        return self._envelope(node.x1, node.x2, node.y1, node.y2)

    @handle(ast.Function)
    def function(self, node, *arguments):
        if node.name.lower() == "bbox" and len(arguments) in (4, 6):
            half = len(arguments) // 2
            return self._envelope(arguments[0], arguments[1], arguments[half], arguments[half + 1])
        raise FilterError(f"filter: unsupported function {node.name}()")

    @handle(ast.TemporalPredicate, subclasses=True)
    def temporal(self, node, lhs, rhs):
        raise FilterError("filter: temporal predicates are not supported yet; compare valid_from/valid_to")

    @handle(ast.SpatialDistancePredicate, subclasses=True)
    def spatial_distance(self, node, lhs, rhs):
        raise FilterError("filter: distance predicates are not supported")


def _extent(geom: shapely.Geometry) -> float:
    minx, miny, maxx, maxy = geom.bounds
    return max(maxx - minx, maxy - miny)


def to_sql(node: ast.Node, t: CIMTables, dialect: str, queryables: list[str], filter_crs: CRSInfo,
           storage: CRSInfo) -> ColumnElement[bool]:
    """The filter as a WHERE clause; :class:`FilterError` for unknown properties or unsupported parts."""
    co = t.city_object
    mapping: dict[str, Any] = {name: co.c.geom for name in GEOMETRY_NAMES}
    for prop in queryables:
        if prop not in ("parent", "root"):
            mapping[prop] = co.c[PROPERTY_COLUMN.get(prop, prop)]
    unknown = sorted(_attributes(node) - set(mapping))
    if unknown:
        raise FilterError(f"filter: unknown properties {', '.join(unknown)}; queryables: {', '.join(queryables)}")
    try:
        return _Evaluator(mapping, dialect, filter_crs, storage).evaluate(node)
    except FilterError:
        raise
    except Exception as exc:
        raise FilterError(f"filter: cannot be evaluated ({exc})") from None
