"""Raster map tiles of the COGs registered in ``raster_layer`` (DEM, DSM, orthophoto), read by rio-tiler.

One tile is one call: :func:`render_raster_tile` (layer, tile matrix set, address, style, format) → image
bytes, or ``None`` when the tile holds no data. The COG stays in its own CRS; rio-tiler warps each tile into
the tile matrix set (any of :mod:`cim.crs.tms`, the Tianditu CGCS2000 quad included).

Styles:

- ``hillshade`` (DEM/DSM, the default): grey relief lit from the north-west (azimuth 315°, altitude 45°),
  slopes from ground distances (a pixel's size measured on the ellipsoid at the tile's centre, so the
  relief looks the same in every tile matrix set); read with one pixel of buffer so tiles join seamlessly.
- ``terrain-rgb`` (DEM/DSM): heights in Mapbox's Terrain-RGB encoding,
  ``height = -10000 + (R·65536 + G·256 + B) · 0.1`` m, PNG or lossless WebP; cells are read with nearest
  resampling, so a pixel decodes to the DEM's own value (to 0.1 m), never a blend with a no-data cell.
- ``visual`` (orthophoto, the default): the image itself (bilinear).

Pixels without data are transparent (alpha) in PNG and WebP, black in JPEG.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from pyproj import Geod
from rio_tiler.errors import TileOutsideBounds
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from sqlalchemy import Connection, select

from cim.crs import transformer
from cim.db.models import CIMTables
from cim.tiles.grid import TileSet, tile_bounds, tile_set

__all__ = ["FORMATS", "MEDIA_TYPES", "STYLES", "RasterLayer", "default_style", "native_zoom", "raster_layer",
           "raster_layers", "render_raster_tile"]

TILE_SIZE = 256
MEDIA_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
# style → the formats it is served in (the first is the default)
FORMATS: dict[str, tuple[str, ...]] = {
    "hillshade": ("png", "jpeg", "webp"),
    "terrain-rgb": ("png", "webp"),  # lossless only: a lossy codec would change the heights
    "visual": ("png", "jpeg", "webp"),
}
# raster kind → its styles (the first is the default)
STYLES: dict[str, tuple[str, ...]] = {
    "dem": ("hillshade", "terrain-rgb"),
    "dsm": ("hillshade", "terrain-rgb"),
    "orthophoto": ("visual",),
}
_GEOD = Geod(ellps="GRS80")  # CGCS2000's ellipsoid differs from GRS80 by 0.1 mm in b: same distances


@dataclass(frozen=True)
class RasterLayer:
    """One registered raster: its COG (absolute path), CRS and extent (in its own CRS)."""

    name: str
    kind: str  # dem, dsm, orthophoto
    path: Path
    srid: int
    resolution: float  # in the units of its CRS
    bounds: tuple[float, float, float, float]

    @property
    def styles(self) -> tuple[str, ...]:
        return STYLES.get(self.kind, STYLES["dem"])


def _row_layer(row, data_dir: Path) -> RasterLayer:
    path = Path(row.path)
    return RasterLayer(str(row.name), str(row.kind), path if path.is_absolute() else data_dir / path, int(row.srid),
                       float(row.resolution), (float(row.minx), float(row.miny), float(row.maxx), float(row.maxy)))


def raster_layers(conn: Connection, t: CIMTables, data_dir: Path) -> list[RasterLayer]:
    """Every registered raster, by name."""
    rl = t.raster_layer
    return [_row_layer(r, data_dir) for r in conn.execute(select(rl).order_by(rl.c.name))]


def raster_layer(conn: Connection, t: CIMTables, data_dir: Path, name: str) -> RasterLayer | None:
    rl = t.raster_layer
    row = conn.execute(select(rl).where(rl.c.name == name)).first()
    return None if row is None else _row_layer(row, data_dir)


def default_style(layer: RasterLayer) -> str:
    return layer.styles[0]


def _ground_resolution(layer: RasterLayer) -> float:
    """The size of one cell on the ground, metres."""
    from cim.crs import crs as pyproj_crs

    c = pyproj_crs(layer.srid)
    if c.is_geographic:
        lat = (layer.bounds[1] + layer.bounds[3]) / 2
        return layer.resolution * math.pi / 180 * 6378137.0 * max(math.cos(math.radians(lat)), 0.01)
    return layer.resolution * (c.axis_info[0].unit_conversion_factor or 1.0)


def native_zoom(layer: RasterLayer) -> int:
    """The WebMercatorQuad zoom whose pixels are as fine as the raster's cells (at its latitude)."""
    x, y = (layer.bounds[0] + layer.bounds[2]) / 2, (layer.bounds[1] + layer.bounds[3]) / 2
    _, lat = transformer(layer.srid, "OGC:CRS84").transform(x, y)
    metres = 2 * math.pi * 6378137.0 * math.cos(math.radians(lat)) / TILE_SIZE  # zoom 0 pixel
    return max(0, int(math.ceil(math.log2(metres / max(_ground_resolution(layer), 1e-6)))))


class _Reader(Reader):
    """rio-tiler's reader without its own "does the tile touch the raster" test: the endpoints check the
    tileset's limits first, and the test set a coordinate transformation up on every tile."""

    def tile_exists(self, tile_x: int, tile_y: int, tile_z: int) -> bool:
        return True


@lru_cache(maxsize=64)
def _source(path: Path, srid: int) -> str:
    """What rio-tiler opens: the COG, or for a CGCS2000-based CRS the COG seen through GDAL's ``vrt://``
    with that CRS bound to WGS 84 by a zero shift. PROJ has no CGCS2000 → WGS 84 operation and applies
    that no-op anyway (../shared/CRS-NOTES.md), same coordinates, but finding it out took 100-150 ms on
    every tile (GDAL sets the transformation up per warp); bound, 1-20 ms."""
    from cim.crs import crs as pyproj_crs

    c = pyproj_crs(srid)
    datum = c.datum.to_json_dict().get("id", {}) if c.datum is not None else {}
    if datum.get("authority") == "EPSG" and datum.get("code") == 1043:  # China 2000
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "you will likely lose information": a TM or lon/lat loses none
            proj = " ".join(p for p in c.to_proj4().split() if p != "+type=crs")
        return f"vrt://{path}?a_srs={proj} +towgs84=0,0,0,0,0,0,0"
    return str(path)


@lru_cache(maxsize=64)
def _pixel_metres(tms_id: str, matrix: str, row: int, col: int) -> tuple[float, float]:
    """A tile pixel's width and height on the ellipsoid, at the tile's centre."""
    ts = tile_set(tms_id)
    left, bottom, right, top = tile_bounds(ts, matrix, row, col)
    px, py = (right - left) / TILE_SIZE, (top - bottom) / TILE_SIZE
    cx, cy = (left + right) / 2, (bottom + top) / 2
    to_lonlat = transformer(ts.srid, "OGC:CRS84")
    lons, lats = to_lonlat.transform(np.array([cx, cx + px, cx]), np.array([cy, cy, cy + py]))
    _, _, dx = _GEOD.inv(lons[0], lats[0], lons[1], lats[1])
    _, _, dy = _GEOD.inv(lons[0], lats[0], lons[2], lats[2])
    return float(dx), float(dy)


def hillshade(heights: np.ndarray, pixel: tuple[float, float], azimuth: float = 315.0,
              altitude: float = 45.0) -> np.ndarray:
    """Lambertian shading (0–255) of a height grid (rows from the top) with ground pixel sizes (dx, dy)."""
    d_row, d_col = np.gradient(heights.astype("float64"), pixel[1], pixel[0])
    dz_east, dz_north = d_col, -d_row  # rows grow southwards
    az, alt = math.radians(azimuth), math.radians(altitude)
    light = (math.sin(az) * math.cos(alt), math.cos(az) * math.cos(alt), math.sin(alt))
    shade = (-dz_east * light[0] - dz_north * light[1] + light[2]) / np.sqrt(dz_east ** 2 + dz_north ** 2 + 1.0)
    return np.clip(shade * 255.0, 0, 255).astype("uint8")


def terrain_rgb(heights: np.ndarray) -> np.ndarray:
    """Mapbox Terrain-RGB: 3 × uint8 bands of ``round((h + 10000) / 0.1)``."""
    v = np.clip(np.rint((heights.astype("float64") + 10000.0) * 10.0), 0, 2 ** 24 - 1).astype("uint32")
    return np.stack([(v >> 16) & 255, (v >> 8) & 255, v & 255]).astype("uint8")


def _encode(bands: np.ndarray, mask: np.ndarray, fmt: str, lossless: bool = False) -> bytes:
    """PNG/WebP with the mask as alpha; JPEG without (no-data black)."""
    options: dict[str, object] = {}
    if fmt == "jpeg":
        options["quality"] = 90
        bands = np.where(mask[None] > 0, bands, 0).astype("uint8")
    elif fmt == "webp":
        options = {"lossless": "TRUE"} if lossless else {"quality": 90}
    image = ImageData(np.ma.MaskedArray(bands, mask=np.broadcast_to(mask[None] == 0, bands.shape)))
    return image.render(add_mask=fmt != "jpeg", img_format=fmt.upper(), **options)


def render_raster_tile(layer: RasterLayer, tms: str | TileSet, matrix: str | int, row: int, col: int,
                       fmt: str = "png", style: str | None = None) -> bytes | None:
    """One map tile of a raster layer; ``None`` when no pixel of it has data.

    ``tms`` is a tile matrix set id (or :class:`TileSet`) of :mod:`cim.crs.tms`; ``matrix``/``row``/``col``
    its OGC tile address; ``fmt`` one of the style's :data:`FORMATS`. ``ValueError`` for a style or format
    the layer does not offer.
    """
    ts = tms if isinstance(tms, TileSet) else tile_set(tms)
    style = style or default_style(layer)
    if style not in layer.styles:
        raise ValueError(f"{layer.name} ({layer.kind}) has styles {', '.join(layer.styles)}, not {style!r}")
    if fmt not in FORMATS[style]:
        raise ValueError(f"style {style} comes as {', '.join(FORMATS[style])}, not {fmt!r}")
    matrix = str(matrix)
    with warnings.catch_warnings(), _Reader(_source(layer.path, layer.srid), tms=ts.tms) as src:
        warnings.simplefilter("ignore")  # rio-tiler warns when it rescales or finds no overview to use
        try:
            if style == "visual":
                img = src.tile(col, row, int(matrix), tilesize=TILE_SIZE, indexes=(1, 2, 3) if src.dataset.count >= 3
                               else None, resampling_method="bilinear", reproject_method="bilinear")
            elif style == "hillshade":
                img = src.tile(col, row, int(matrix), tilesize=TILE_SIZE, indexes=1, buffer=1,
                               resampling_method="bilinear", reproject_method="bilinear")
            else:
                img = src.tile(col, row, int(matrix), tilesize=TILE_SIZE, indexes=1,
                               resampling_method="nearest", reproject_method="nearest")
        except TileOutsideBounds:  # raised by rio-tiler's part() for a tile beside the raster
            return None
    valid = ~np.ma.getmaskarray(img.array).any(axis=0)
    if not valid.any():
        return None
    if style == "visual":
        data = img.array.data
        if data.dtype != np.uint8:  # 16-bit imagery: stretched to its type's range by rio-tiler
            return img.render(add_mask=fmt != "jpeg", img_format=fmt.upper())
        return _encode(data, valid.astype("uint8") * 255, fmt)
    heights = img.array.data[0].astype("float64")
    if style == "hillshade":
        filled = np.where(valid, heights, heights[valid].mean())  # no cliffs down to the no-data value
        shade = hillshade(filled, _pixel_metres(ts.id, matrix, row, col))[1:-1, 1:-1]
        # a pixel is shaded where its four neighbours have data too (its slope is known)
        inner = valid[1:-1, 1:-1] & valid[:-2, 1:-1] & valid[2:, 1:-1] & valid[1:-1, :-2] & valid[1:-1, 2:]
        if not inner.any():
            return None
        return _encode(shade[None], inner.astype("uint8") * 255, fmt)
    return _encode(terrain_rgb(heights), valid.astype("uint8") * 255, fmt, lossless=True)
