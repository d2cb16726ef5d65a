"""Tile matrix sets as the database sees them: integer SRIDs, x/y order, tile frames and limits.

Every coordinate here is x/y (longitude/latitude, easting/northing), whatever axis order the tile matrix
set's CRS declares (EPSG:4490 is lat/lon): morecantile's bounds are x/y, PostGIS and pyproj (``always_xy``)
write longitude first, so MVT tile-space x is always longitude or easting.

Zoom levels in the configuration are WebMercatorQuad's; a matrix of another set is mapped to the
WebMercatorQuad zoom of the nearest scale denominator (CGCS2000TiandituQuad level n is zoom n,
WorldCRS84Quad level n is zoom n + 1), so one ``min_zoom``, one attribute schedule, serves every set.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

import morecantile
import numpy as np
import shapely
from morecantile import TileMatrixSet

from cim.crs import crs as pyproj_crs
from cim.crs import transformer
from cim.crs import tms as registry
from cim.crs.registry import CRS84_URI, default_registry
from cim.crs.transform import clip_lonlat_bbox, query_area

# WebMercatorQuad's level-0 scale denominator (OGC 0.28 mm pixel)
WEB_MERCATOR_SCALE0 = 559082264.0287178
PIXELS = 256  # the screen tile size pixel-based settings (simplify, min_size) refer to


class TileError(ValueError):
    """A tile address that is malformed (``status`` 400) or outside what is served (404)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TileSet:
    """A tile matrix set as served: its definition and the SRID the database transforms footprints to."""

    tms: TileMatrixSet
    srid: int

    @property
    def id(self) -> str:
        return str(self.tms.id)

    def matrix_ids(self) -> list[str]:
        return [str(m.id) for m in self.tms.tileMatrices]


def srid_of(tms: TileMatrixSet) -> int:
    """The integer SRID of a tile matrix set's CRS (CRS84 → 4326: databases write it lon/lat anyway).

    Always an integer: a text CRS in ``ST_Transform`` sets the projection up for every row
    (../shared/PERF-NOTES.md)."""
    crs = pyproj_crs(tms.crs.srs)
    code = crs.to_epsg()
    if code is None and crs == pyproj_crs("OGC:CRS84"):
        code = 4326
    if code is None:
        raise ValueError(f"tile matrix set {tms.id}: its CRS {tms.crs.srs} has no EPSG code")
    return int(code)


@lru_cache(maxsize=16)
def tile_set(tms_id: str) -> TileSet:
    """A registered tile matrix set by id (``KeyError`` otherwise); the matrix ids must be integers."""
    tms = registry.get(tms_id)
    if any(not str(m.id).isdigit() for m in tms.tileMatrices) or tms.is_variable:
        raise ValueError(f"tile matrix set {tms_id}: only sets with integer matrix ids and fixed widths are served")
    return TileSet(tms, srid_of(tms))


def web_mercator_zoom(ts: TileSet, matrix_id: str) -> int:
    """The WebMercatorQuad zoom whose scale is nearest to this matrix's."""
    scale = ts.tms.matrix(int(matrix_id)).scaleDenominator
    return int(round(math.log2(WEB_MERCATOR_SCALE0 / scale)))


def matrices_in_zoom_range(ts: TileSet, min_zoom: int, max_zoom: int) -> list[str]:
    """The set's matrix ids whose WebMercatorQuad zoom is within [min_zoom, max_zoom]."""
    return [m for m in ts.matrix_ids() if min_zoom <= web_mercator_zoom(ts, m) <= max_zoom]


def parse_address(ts: TileSet, matrix: str, row: str, col: str) -> tuple[str, int, int]:
    """(matrix id, row, col) checked against the set: 400 when malformed, 404 when outside its matrices."""
    for name, value in (("tileMatrix", matrix), ("tileRow", row), ("tileCol", col)):
        if not value.isascii() or not value.isdigit():
            raise TileError(f"{name}: a non-negative integer, got {value!r}", 400)
    matrix = str(int(matrix))
    if matrix not in ts.matrix_ids():
        ids = ts.matrix_ids()
        raise TileError(f"tileMatrix {matrix} is not in {ts.id} ({ids[0]}–{ids[-1]})", 404)
    m = ts.tms.matrix(int(matrix))
    r, c = int(row), int(col)
    if r >= m.matrixHeight or c >= m.matrixWidth:
        raise TileError(f"tile {matrix}/{r}/{c} is outside {ts.id}'s matrix {matrix} "
                        f"({m.matrixHeight} rows × {m.matrixWidth} columns)", 404)
    return matrix, r, c


def tile_bounds(ts: TileSet, matrix: str, row: int, col: int) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) of a tile in the set's CRS, x/y order."""
    b = ts.tms.xy_bounds(morecantile.Tile(col, row, int(matrix)))
    return float(b.left), float(b.bottom), float(b.right), float(b.top)


@dataclass(frozen=True)
class Limits:
    """The tiles of one matrix that hold data (OGC ``TileMatrixLimits``), inclusive."""

    matrix: str
    min_row: int
    max_row: int
    min_col: int
    max_col: int

    def contains(self, row: int, col: int) -> bool:
        return self.min_row <= row <= self.max_row and self.min_col <= col <= self.max_col

    def as_json(self) -> dict[str, object]:
        return {"tileMatrix": self.matrix, "minTileRow": self.min_row, "maxTileRow": self.max_row,
                "minTileCol": self.min_col, "maxTileCol": self.max_col}


def extent_in(ts: TileSet, extent: tuple[float, float, float, float], storage_srid: int,
              ) -> tuple[float, float, float, float]:
    """A storage-CRS extent as a bbox in the set's CRS (edges densified, not two corners)."""
    if ts.srid == storage_srid:
        return extent
    x0, y0, x1, y1 = transformer(storage_srid, ts.srid).transform_bounds(*extent, densify_pts=21)
    return float(x0), float(y0), float(x1), float(y1)


def limits(ts: TileSet, matrix: str, bbox: tuple[float, float, float, float]) -> Limits:
    """The range of tiles of ``matrix`` that a bbox (in the set's CRS) touches."""
    m = ts.tms.matrix(int(matrix))
    left, _, right, top = tile_bounds(ts, matrix, 0, 0)
    span_x, span_y = right - left, top - tile_bounds(ts, matrix, 0, 0)[1]
    x0, y0, x1, y1 = bbox

    def clamp(v: float, n: int) -> int:
        return min(max(int(math.floor(v)), 0), n - 1)

    return Limits(matrix,
                  clamp((top - y1) / span_y, m.matrixHeight), clamp((top - y0) / span_y, m.matrixHeight),
                  clamp((x0 - left) / span_x, m.matrixWidth), clamp((x1 - left) / span_x, m.matrixWidth))


@dataclass(frozen=True)
class TileFrame:
    """Where one tile is, for the queries that build it.

    ``bounds`` in the set's CRS (what MVT coordinates are relative to); ``lonlat``: the tile with its buffer
    as a longitude/latitude box (west, south, east, north) clipped to where stored data can be (the storage
    CRS's area of use), exactly: each of our tile matrix sets is in longitude/latitude or Web Mercator, whose
    tiles are longitude/latitude rectangles; None where no stored data can be. ``pixel``: the size of one
    pixel of a 256-pixel tile in storage units along x and y, at the centre of ``lonlat``; ``area``: the same
    place as a densified polygon in the storage CRS (for SpatiaLite's index; made when first asked for);
    ``span``: the tile's width in the set's CRS.
    """

    bounds: tuple[float, float, float, float]
    pixel: tuple[float, float]
    lonlat: tuple[float, float, float, float] | None
    tile_set: TileSet = field(repr=False)
    buffered: tuple[float, float, float, float] = field(repr=False)  # in the set's CRS
    storage_srid: int = field(repr=False)

    @property
    def span(self) -> float:
        return self.bounds[2] - self.bounds[0]

    @cached_property
    def area(self) -> shapely.Geometry:
        """The buffered tile in the storage CRS, densified, clipped to its area of use (empty: no data there)."""
        if self.lonlat is None:
            return shapely.Polygon()
        if self.tile_set.srid == self.storage_srid:
            return shapely.box(*self.buffered)
        reg = default_registry()
        return query_area(self.lonlat, reg.resolve(CRS84_URI), reg.epsg(self.storage_srid))


def tile_frame(ts: TileSet, matrix: str, row: int, col: int, storage_srid: int, buffer_fraction: float,
               ) -> TileFrame:
    """The frame of a tile; its ``lonlat`` is None when the tile lies wholly outside the storage CRS's area."""
    left, bottom, right, top = bounds = tile_bounds(ts, matrix, row, col)
    dx, dy = (right - left) * buffer_fraction, (top - bottom) * buffer_fraction
    buffered = (left - dx, bottom - dy, right + dx, top + dy)
    lonlat = _lonlat_box(ts, buffered)
    if lonlat is not None and ts.srid != storage_srid:
        parts = clip_lonlat_bbox(lonlat, default_registry().epsg(storage_srid).area)
        lonlat = parts[0] if parts else None  # (one part: our boxes never cross the antimeridian)
    return TileFrame(bounds, _pixel(ts, bounds, lonlat, storage_srid), lonlat, ts, buffered, storage_srid)


def _lonlat_box(ts: TileSet, bbox: tuple[float, float, float, float]) -> tuple[float, float, float, float] | None:
    if pyproj_crs(ts.srid).is_geographic:
        return max(bbox[0], -180.0), max(bbox[1], -90.0), min(bbox[2], 180.0), min(bbox[3], 90.0)
    # Web Mercator (and any projected set): its tiles are lon/lat rectangles, or covered by this bbox
    try:
        lonlat = transformer(ts.srid, "OGC:CRS84").transform_bounds(*bbox, densify_pts=21)
    except Exception:  # pyproj raises on bounds it cannot transform: a tile far from any data
        return None
    return tuple(float(v) for v in lonlat) if all(np.isfinite(lonlat)) else None  # type: ignore[return-value]


def _pixel(ts: TileSet, bounds: tuple[float, float, float, float],
           lonlat: tuple[float, float, float, float] | None, storage_srid: int) -> tuple[float, float]:
    """One screen pixel (1/256 of the tile) in storage units, measured where the data can be."""
    px = (bounds[2] - bounds[0]) / PIXELS
    py = (bounds[3] - bounds[1]) / PIXELS
    if ts.srid == storage_srid:
        return px, py
    if lonlat is None:
        return 0.0, 0.0
    cx, cy = transformer("OGC:CRS84", ts.srid).transform((lonlat[0] + lonlat[2]) / 2, (lonlat[1] + lonlat[3]) / 2)
    xs, ys = transformer(ts.srid, storage_srid).transform(np.array([cx, cx + px, cx]), np.array([cy, cy, cy + py]))
    if not (np.isfinite(xs).all() and np.isfinite(ys).all()):
        return 0.0, 0.0
    return float(math.hypot(xs[1] - xs[0], ys[1] - ys[0])), float(math.hypot(xs[2] - xs[0], ys[2] - ys[0]))
