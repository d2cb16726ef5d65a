"""Mapbox Vector Tiles of one CIM layer: built in SQL on PostGIS, in Python on SpatiaLite, the same on both.

What goes into a tile (both backends, one set of rules):

- the layer's objects whose 2D footprint intersects the tile plus its buffer (less ``ROBUST_UNITS``), where
  stored data can be (the storage CRS's area of use): on PostGIS their longitude/latitude copy against
  ``TileFrame.lonlat``, a rectangle, through the layer's partial GiST; on SpatiaLite the footprint against
  ``TileFrame.area``, a densified polygon in the storage CRS, through its ``SpatialIndex``
  (:func:`cim.db.queries.area_filter`);
- except what is too small to see: polygons of less than ``min_size``² pixels of area, lines shorter than
  ``min_size`` pixels (points are always kept), and what the tile grid would collapse: polygons thinner
  than ``ROBUST_UNITS`` grid units (2·area/perimeter), shorter lines. All of it is decided in SQL, the same
  on both backends, so no candidate is lost in a geometry pipeline: ST_AsMVTGeom and GEOS collapse slivers
  differently (and ST_AsMVTGeom changed between PostGIS 3.3 and 3.4), which made the backends disagree;
- at most ``max_features``: the largest first (area of polygons, length of lines, rounded to 0.01; points
  count 0), ties by id, so a capped tile keeps what is visible and is the same on every request;
- geometry transformed to the tile matrix set's CRS with an integer SRID (x = longitude/easting, whatever
  the CRS's axis order), scaled to the tile's grid, snapped to it, clipped to the buffer. The grid is the
  per-zoom simplification: ``simplify`` pixels (of a 256-pixel tile) per cell, i.e. an MVT extent of
  256 / simplify (``extent`` where simplify is 0). Snapping is plain arithmetic, the same on both backends;
  Douglas-Peucker was not (PostGIS's ST_Simplify and GEOS, and GEOS versions, keep different vertices);
- attributes: ``id`` (the public uid, as in the items API) and the properties scheduled for the zoom
  (typed properties, and keys of the object's other attributes); the MVT feature id is the database row id.
  Timestamps are RFC 3339 UTC text, dates ISO text, null values are left out.

PostGIS: one statement (``ST_AsMVTGeom`` + ``ST_AsMVT``), each candidate read once, the cap applied before
ST_AsMVTGeom; footprints clear of the grid (``SNAP_UNITS``) and inside the buffer are snapped by plain
arithmetic instead, with the same result.
SpatiaLite has no MVT functions: rows come back as WKB and shapely (vectorised) and mapbox-vector-tile
encode them. An empty tile is ``b""``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from datetime import date, datetime
from typing import Any

import numpy as np
import shapely
from sqlalchemy import (BigInteger, Connection, Date, DateTime, Float, Text, and_, bindparam, case, cast, func,
                        literal, literal_column, select, text, true, union_all)
from sqlalchemy.orm import aliased

from cim.crs import transformer
from cim.db.models import LAYERS, CIMTables
from cim.db.versions import version_columns
from cim.db.queries import (LINKS, PROPERTY_COLUMN, area_filter_parameters, area_filter_values, footprint_in,
                             layer_is, layer_properties, lonlat_box_filter, lonlat_box_values, to_utc)
from cim.settings import TilesSettings
from cim.tiles.grid import PIXELS, TileFrame, TileSet, tile_frame, web_mercator_zoom

ID_PROPERTY = "id"  # the public uid; the MVT feature id is the integer row id


@dataclass(frozen=True)
class Attributes:
    """The attributes written at some zoom: typed properties (columns) and keys of ``attributes`` (JSON)."""

    typed: tuple[str, ...]
    extra: tuple[str, ...]


@dataclass(frozen=True)
class LayerRules:
    """How one layer is tiled, resolved from ``cim.tiles`` once (an invalid property name fails at start)."""

    layer: str
    min_zoom: int
    max_zoom: int
    max_features: int
    schedule: tuple[tuple[int, Attributes], ...]  # (from zoom, attributes), ascending

    @classmethod
    def from_settings(cls, layer: str, settings: TilesSettings) -> LayerRules:
        own = settings.layers.get(layer)
        typed_names = layer_properties(layer)
        schedule: list[tuple[int, Attributes]] = []
        entries = own.properties if own is not None and own.properties is not None else {0: ["*"]}
        for zoom, names in sorted(entries.items()):
            typed: list[str] = []
            extra: list[str] = []
            for name in names:
                if not isinstance(name, str) or not name.strip():
                    raise ValueError(f"cim.tiles.layers.{layer}.properties.{zoom}: {name!r} is not a property name")
                picked = typed_names if name == "*" else [name]
                for p in picked:
                    if p == ID_PROPERTY:
                        continue
                    target = typed if p in typed_names else extra
                    if p not in target:
                        target.append(p)
            schedule.append((int(zoom), Attributes(tuple(typed), tuple(extra))))
        min_zoom = own.min_zoom if own is not None and own.min_zoom is not None else settings.min_zoom
        max_zoom = own.max_zoom if own is not None and own.max_zoom is not None else settings.max_zoom
        if min_zoom > max_zoom:
            raise ValueError(f"cim.tiles.layers.{layer}: min_zoom {min_zoom} > max_zoom {max_zoom}")
        cap = own.max_features if own is not None and own.max_features is not None else settings.max_features
        return cls(layer, min_zoom, max_zoom, cap, tuple(schedule))

    def attributes(self, zoom: int) -> Attributes:
        """The attributes at a (WebMercatorQuad) zoom: the last schedule entry at or below it."""
        current = Attributes((), ())
        for start, attrs in self.schedule:
            if start <= zoom:
                current = attrs
        return current

    def all_attributes(self) -> Attributes:
        """Every attribute written at some zoom (for metadata: TileJSON fields, properties schema)."""
        typed: dict[str, None] = {}
        extra: dict[str, None] = {}
        for _, a in self.schedule:
            typed.update(dict.fromkeys(a.typed))
            extra.update(dict.fromkeys(a.extra))
        return Attributes(tuple(typed), tuple(extra))


def layer_rules(settings: TilesSettings, layers: Iterable[str]) -> dict[str, LayerRules]:
    """Rules of the served layers; configured layers that do not exist are an error, not silently unused."""
    unknown = set(settings.layers) - set(LAYERS)
    if unknown:
        raise ValueError(f"cim.tiles.layers: unknown layers {sorted(unknown)}; known: {', '.join(LAYERS)}")
    return {layer: LayerRules.from_settings(layer, settings) for layer in layers}


def tile_extent(settings: TilesSettings, zoom: int) -> int:
    """The MVT extent at a zoom: 256 / ``simplify`` pixels per grid cell, at most ``extent``."""
    cell = 0.0
    for start, px in sorted(settings.simplify.items()):
        if start <= zoom:
            cell = px
    return settings.extent if cell <= 0 else max(16, min(settings.extent, int(round(256 / cell))))


@dataclass(frozen=True)
class TileQuery:
    """Everything one tile depends on, already resolved: the same inputs for both backends."""

    layer: str  # the CIM layer (``city_object.layer``)
    name: str  # the MVT layer name (the collection id)
    tile_set: TileSet
    frame: TileFrame
    attributes: Attributes
    max_features: int
    extent: int  # MVT coordinates per tile side at this zoom
    buffer: int  # MVT units kept beyond the tile's edges
    min_area: float  # polygons smaller than this (storage units²) are left out
    min_width: float  # polygons thinner than this (2·area/perimeter, storage units) are left out
    min_length: float  # lines shorter than this (storage units) are left out
    min_clearance: float  # polygons with at least this clearance (storage units) are snapped without a clipper


# Features the tile grid could collapse are decided in SQL, not left to each backend's geometry pipeline
# (ST_AsMVTGeom's changes between PostGIS versions, GEOS's snapping): polygons thinner than this many grid
# units and lines shorter than it are left out, and only features reaching this far inside the buffer are
# candidates, so every candidate survives the grid and the clip on both backends.
ROBUST_UNITS = 2

# A footprint wholly inside the buffered tile whose minimum clearance (``city_object.clearance``: the least
# distance between a vertex and an edge not its own) is at least this many grid cells is written as
# ST_AsMVTGeom would write it, by plain arithmetic in SQL: scaled to the grid, snapped, points on straight
# lines dropped, rings oriented for MVT. Snapping moves each vertex at most √2/2 cell, so a vertex and an edge
# come at most √2 cells closer: above that the polygon stays valid and ST_AsMVTGeom's clipper (wagyu, which
# validates every polygon: half of a z14 tile's database time) would return it unchanged. 1.5 keeps a margin
# over √2 for the change of scale across a tile and between the storage CRS and the set's (both conformal).
SNAP_UNITS = 1.5


def tile_query(layer: str, name: str, ts: TileSet, matrix: str, row: int, col: int, storage_srid: int,
               rules: LayerRules, settings: TilesSettings) -> TileQuery:
    """The query for one tile of a (checked) address."""
    zoom = web_mercator_zoom(ts, matrix)
    extent = tile_extent(settings, zoom)
    buffer = int(round(settings.buffer * extent / settings.extent))  # the same share of the tile at any grid
    frame = tile_frame(ts, matrix, row, col, storage_srid, max(buffer - ROBUST_UNITS, 0) / extent)
    size_x, size_y = settings.min_size * frame.pixel[0], settings.min_size * frame.pixel[1]
    unit = (frame.pixel[0] + frame.pixel[1]) / 2 * PIXELS / extent  # one grid unit in storage units
    return TileQuery(layer, name, ts, frame, rules.attributes(zoom), rules.max_features, extent, buffer,
                     min_area=size_x * size_y, min_width=ROBUST_UNITS * unit,
                     min_length=max((size_x + size_y) / 2, ROBUST_UNITS * unit),
                     # the cell's longer side (cells of longitude/latitude sets are not square)
                     min_clearance=SNAP_UNITS * max(frame.pixel) * PIXELS / extent)


def _outside_data(q: TileQuery) -> bool:
    """A tile wholly outside where stored data can be: empty without a query."""
    return q.frame.lonlat is None


def render(conn: Connection, t: CIMTables, q: TileQuery) -> bytes:
    """The tile as MVT bytes; ``b""`` when no feature is in it."""
    if _outside_data(q):
        return b""
    if conn.dialect.name == "postgresql":
        return bytes(_postgis(conn, t, q)[0] or b"")
    return _spatialite(conn, t, q)


def render_layers(conn: Connection, t: CIMTables, queries: Iterable[TileQuery]) -> bytes:
    """One tile holding one MVT layer per query, in their order; ``b""`` when none has a feature.

    A vector tile is a protobuf message whose layers are a repeated field, so single-layer tiles
    concatenated are the multi-layer tile (as ST_AsMVT's documentation suggests for several layers)."""
    return b"".join(render(conn, t, q) for q in queries)


# ---------------------------------------------------------------------------------------------- both


def _conditions(t: CIMTables, dialect: str, layer: str) -> list[Any]:
    """The candidates' filters, with the tile's values as parameters (:func:`_condition_values`)."""
    co = t.city_object
    g = co.c.geom
    area = func.ST_Area(g)
    polygon_ok = and_(area >= bindparam("min_area", type_=Float),
                      area * 2 >= bindparam("min_width", type_=Float) * func.ST_Perimeter(g))
    # PostGIS: the tile as a longitude/latitude rectangle against the stored copy, through its index
    spatial = lonlat_box_filter(t) if dialect == "postgresql" else area_filter_parameters(t, dialect)
    return [layer_is(t, layer), spatial,
            case((func.ST_Dimension(g) == 2, polygon_ok),
                 (func.ST_Dimension(g) == 1, func.ST_Length(g) >= bindparam("min_length", type_=Float)),
                 else_=true())]


def _condition_values(t: CIMTables, dialect: str, q: TileQuery) -> dict[str, Any]:
    # (a tile outside any longitude/latitude, lonlat None, never gets here: _outside_data)
    spatial = lonlat_box_values(t, q.frame.lonlat) if dialect == "postgresql" \
        else area_filter_values(t, dialect, q.frame.area)
    return {"min_area": q.min_area, "min_width": q.min_width, "min_length": q.min_length,
            "max_features": q.max_features, **spatial}


def _cap_rank(t: CIMTables) -> Any:
    """The size a capped tile ranks by: area of polygons, length of lines, points 0, rounded to 0.01 so both
    databases rank alike."""
    g = t.city_object.c.geom
    size = case((func.ST_Dimension(g) == 2, func.ST_Area(g)), (func.ST_Dimension(g) == 1, func.ST_Length(g)),
                else_=literal(0.0))
    return func.round(size * 100)


def _cap_order(t: CIMTables) -> list[Any]:
    """Largest first, then id."""
    return [_cap_rank(t).desc(), t.city_object.c.id]


def _typed_columns(t: CIMTables, dialect: str, names: Iterable[str]) -> list[Any]:
    co = t.city_object
    cols = []
    for name in names:
        if name in LINKS:  # a linked object's public uid (a component's storey, its building)
            other = aliased(co)
            col: Any = select(other.c.uid).where(other.c.id == co.c[LINKS[name]]).scalar_subquery()
        else:
            col = co.c[PROPERTY_COLUMN.get(name, name)]
            if dialect == "postgresql" and isinstance(col.type, DateTime):
                col = func.to_char(func.timezone("UTC", col), 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
            elif dialect == "postgresql" and isinstance(col.type, Date):
                col = func.to_char(col, "YYYY-MM-DD")
        cols.append(col.label(name))
    return cols


# ---------------------------------------------------------------------------------------------- PostGIS


def render_with_versions(conn: Connection, t: CIMTables, q: TileQuery, layers: tuple[str, ...],
                         ) -> tuple[bytes, list[int]] | None:
    """PostGIS: the tile and the data versions of ``layers`` read by the same statement (one round trip
    instead of two; cim.db.versions.version_columns); None where that is not how the tile is built (SpatiaLite,
    a tile outside any data)."""
    if conn.dialect.name != "postgresql" or _outside_data(q):
        return None
    row = _postgis(conn, t, q, layers)
    return bytes(row[0] or b""), [int(v) for v in row[1:]]


def _postgis(conn: Connection, t: CIMTables, q: TileQuery, versions_of: tuple[str, ...] = ()) -> Any:
    stmt = _postgis_statement(t, q.layer, q.name, int(q.tile_set.srid), q.extent, q.buffer, q.attributes,
                              versions_of)
    return conn.execute(stmt, _postgis_values(t, q)).one()


def _postgis_values(t: CIMTables, q: TileQuery) -> dict[str, Any]:
    """The tile's values of :func:`_postgis_statement`'s parameters."""
    left, bottom, right, top = q.frame.bounds
    # ST_AsMVTGeom's affine transformation to the grid (the same doubles), for the footprints snapped in SQL
    fx, fy = q.extent / (right - left), -(q.extent / (top - bottom))
    return {**_condition_values(t, "postgresql", q), "tile_bounds": f"BOX({left!r} {bottom!r},{right!r} {top!r})",
            "min_clearance": q.min_clearance, "fx": fx, "fy": fy, "xoff": -left * fx, "yoff": -top * fy}


@lru_cache(maxsize=256)
def _postgis_statement(t: CIMTables, layer: str, name: str, srid: int, extent: int, buffer: int,
                       attributes: Attributes, versions_of: tuple[str, ...] = ()) -> Any:
    """The tile statement of one shape of tile (layer, set, grid, attributes), the tile's values as
    parameters: building it per tile was ~a fifth of the handler's time."""
    co = t.city_object
    # tile matrix sets in longitude/latitude read the stored copy as it is, WebMercatorQuad its stored Web
    # Mercator copy (schema v10; projected from the lon/lat copy where there is none); the inverse
    # Gauss–Krüger from the storage CRS was most of a tile's time, bench/README.md. Always an integer SRID,
    # never text (PERF-NOTES)
    g = footprint_in(t, srid, project_lonlat=True)
    if srid == 3857:
        g = func.coalesce(co.c.geom_webmercator, g)
    written = [co.c.id.label("fid"), g.label("_g"), co.c.uid.label(ID_PROPERTY),
               *_typed_columns(t, "postgresql", attributes.typed)]
    if attributes.extra:
        # a jsonb column: ST_AsMVT writes each key as an attribute (numbers integral → int, else double;
        # null, arrays and objects left out)
        pairs: list[Any] = []
        for key in attributes.extra:
            k = cast(literal(key), Text)
            pairs += [k, co.c.attributes.op("->")(k)]
        written.append(func.jsonb_build_object(*pairs).label("extra_attributes"))
    # The candidates, materialized once with everything the tile writes (the table is read once per feature,
    # not again by id). Every candidate when they are no more than the cap, else the largest
    # ``max_features``: which of the two runs is decided once, at execution (a one-time filter on their
    # count), so a tile under the cap, nearly every tile, pays no ranking (a third of a z14 tile's candidate
    # step when it ranked them all).
    # SNAP_UNITS: whether the footprint is clear enough to be snapped in SQL (NULL clearance: not a valid polygon)
    snap = (co.c.clearance >= bindparam("min_clearance", type_=Float)).label("_snap")
    candidates = (select(*written, snap, _cap_rank(t).label("_cap_rank"))
                  .where(*_conditions(t, "postgresql", layer)).cte("candidates").prefix_with("MATERIALIZED"))
    c = candidates.c
    # those on the grid (ST_AsMVTGeom's affine transformation, the same doubles), NULL for the others
    on_grid = func.ST_Affine(c._g, bindparam("fx", type_=Float), 0, 0, bindparam("fy", type_=Float),
                             bindparam("xoff", type_=Float), bindparam("yoff", type_=Float))
    out = [c[col.name] for col in written] + [case((c._snap, func.ST_SnapToGrid(on_grid, 1))).label("_snapped")]
    cap = bindparam("max_features", type_=BigInteger)
    count = select(func.count()).select_from(candidates).scalar_subquery()
    largest = select(*out).where(count > cap).order_by(c["_cap_rank"].desc(), c.fid).limit(cap).subquery("largest")
    picked = union_all(select(*out).where(count <= cap), select(largest)).subquery("picked")
    # the tile's bounds as one parameter typed box2d: in the generic plan PostgreSQL settles on after five
    # runs, ST_MakeEnvelope of parameters was evaluated for every row
    bounds = text("CAST(:tile_bounds AS box2d)")
    mvt_geom = func.ST_AsMVTGeom(picked.c["_g"], bounds, literal_column(str(int(extent))),
                                 literal_column(str(int(buffer))), True)
    # a snapped footprint within the buffered tile less one cell is kept whole, as ST_AsMVTGeom keeps it:
    # points on straight lines dropped, exterior rings counter-clockwise in these numbers (clockwise on the
    # y-down grid, MVT 2.1). Compared on the grid, where the bounding boxes PostGIS keeps as float32 are exact
    # (in the set's CRS their rounding is a metre)
    s = picked.c._snapped
    inside = literal_column(f"'BOX({1 - buffer} {1 - buffer},{extent + buffer - 1} {extent + buffer - 1})'::box2d")
    geom = case((s.op("@")(inside), func.ST_ForcePolygonCCW(func.ST_Simplify(s, 0))), else_=mvt_geom)
    cols = [picked.c.fid, geom.label("geom"), *(picked.c[col.name] for col in written[2:])]
    # no "WHERE geom IS NOT NULL": ST_AsMVT skips rows whose geometry is null, and the planner would push
    # that filter into the scan and compute ST_AsMVTGeom twice per row
    # ordered by id: the bytes of a tile must not depend on the plan (a generic plan joins in another order;
    # the tile's ETag is its data version, and caches and packages compare bytes)
    rows = select(*cols).order_by(picked.c.fid).subquery("q")
    return select(func.ST_AsMVT(literal_column("q"), name, literal_column(str(int(extent))), "geom", "fid"),
                  *version_columns(t, versions_of)).select_from(rows)


# ---------------------------------------------------------------------------------------------- SpatiaLite


def _spatialite(conn: Connection, t: CIMTables, q: TileQuery) -> bytes:
    import mapbox_vector_tile
    from mapbox_vector_tile.encoder import on_invalid_geometry_make_valid

    co = t.city_object
    typed = q.attributes.typed
    cols = [co.c.id, co.c.uid, func.AsBinary(co.c.geom).label("wkb"), *_typed_columns(t, "sqlite", typed)]
    if q.attributes.extra:
        cols.append(co.c.attributes)
    stmt = (select(*cols).where(*_conditions(t, "sqlite", q.layer)).order_by(*_cap_order(t))
            .limit(bindparam("max_features", type_=BigInteger)))
    rows = conn.execute(stmt, _condition_values(t, "sqlite", q)).all()
    if not rows:
        return b""
    geoms = tile_space(shapely.from_wkb([bytes(r.wkb) for r in rows]), q, int(t.city_object.c.geom.type.srid))
    features = []
    for row, geom in zip(rows, geoms, strict=True):
        if geom is None or geom.is_empty:
            continue
        props: dict[str, Any] = {ID_PROPERTY: row.uid}
        for name in typed:
            value = _typed_value(getattr(row, name))
            if value is not None:
                props[name] = value
        if q.attributes.extra:
            attrs = row.attributes if isinstance(row.attributes, dict) else {}
            for key in q.attributes.extra:
                value = _json_value(attrs.get(key))
                if value is not None:
                    props[key] = value
        features.append({"geometry": geom, "id": int(row.id), "properties": props})
    if not features:
        return b""
    return mapbox_vector_tile.encode(
        {"name": q.name, "features": features},
        default_options={"extents": q.extent, "y_coord_down": True, "check_winding_order": True,
                         "on_invalid_geometry": on_invalid_geometry_make_valid})


def tile_space(geoms: np.ndarray, q: TileQuery, storage_srid: int) -> list[shapely.Geometry | None]:
    """Footprints (storage CRS) → tile coordinates (y down) on the integer grid, clipped to the buffer.

    The steps and their order are ST_AsMVTGeom's (PostGIS 3.3), so both backends keep and drop the same
    features: every vertex rounded to the grid (half to even, as ``rint``); a polygon with no area left or
    a line with no length left drops; a geometry whose bounds lie within the buffered tile (edges included)
    is kept whole, any other is clipped to it (what remains only on the edge drops) and rounded again.
    """
    ts = q.tile_set
    if ts.srid != storage_srid:
        tr = transformer(storage_srid, ts.srid)
        geoms = shapely.transform(geoms, _xy(tr.transform))
    left, bottom, right, top = q.frame.bounds
    fx, fy = q.extent / (right - left), q.extent / (top - bottom)
    geoms = shapely.transform(
        geoms, lambda c: np.rint(np.column_stack([(c[:, 0] - left) * fx, (top - c[:, 1]) * fy])))
    lo, hi = -float(q.buffer), float(q.extent + q.buffer)
    box = shapely.box(lo, lo, hi, hi)
    b = shapely.bounds(geoms)
    contained = (b[:, 0] >= lo) & (b[:, 1] >= lo) & (b[:, 2] <= hi) & (b[:, 3] <= hi)
    out: list[shapely.Geometry | None] = []
    for geom, whole in zip(geoms, contained, strict=True):
        out.append(_on_grid(geom, whole, box))
    return out


def _on_grid(geom: shapely.Geometry | None, whole: bool, box: shapely.Geometry) -> shapely.Geometry | None:
    if geom is None or geom.is_empty or _collapsed(geom):
        return None
    dim = shapely.get_dimensions(geom)
    if dim == 0:  # points: those inside the buffered tile, its edges included
        parts = [p for p in shapely.get_parts(geom) if shapely.covered_by(p, box)]
        return None if not parts else parts[0] if len(parts) == 1 else shapely.MultiPoint(parts)
    if dim == 2 and not geom.is_valid:
        geom = _basic(shapely.make_valid(geom))
        if geom is None:
            return None
    if whole:
        return _basic(geom)
    clipped = shapely.clip_by_rect(geom, *box.bounds)
    clipped = shapely.transform(clipped, np.rint)
    if clipped.is_empty or _collapsed(clipped):
        return None
    if dim == 2 and not clipped.is_valid:
        clipped = shapely.make_valid(clipped)
    return _basic(clipped)


def _collapsed(geom: shapely.Geometry) -> bool:
    """Nothing left on the grid: a polygon without area, a line without length."""
    dim = shapely.get_dimensions(geom)
    return (dim == 2 and shapely.area(geom) == 0) or (dim == 1 and shapely.length(geom) == 0)


def _xy(fn: Callable[..., tuple[np.ndarray, np.ndarray]]) -> Callable[[np.ndarray], np.ndarray]:
    return lambda c: np.column_stack(fn(c[:, 0], c[:, 1]))


def _basic(geom: shapely.Geometry) -> shapely.Geometry | None:
    """A geometry MVT can hold: a collection (from clipping or snapping) reduced to its highest dimension."""
    if geom is None or geom.is_empty:
        return None
    if geom.geom_type != "GeometryCollection":
        return geom
    parts = list(geom.geoms)
    top = max(shapely.get_dimensions(parts))
    keep = [p for p in parts if shapely.get_dimensions(p) == top and not p.is_empty]
    if not keep:
        return None
    return shapely.union_all(keep) if len(keep) > 1 else keep[0]


def _typed_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, date):
        return value.isoformat()
    return value


def _json_value(value: Any) -> Any:
    """An attribute as PostGIS's ST_AsMVT writes a jsonb value: scalars only, integral numbers as integers."""
    if isinstance(value, bool) or isinstance(value, str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    return None
