"""The valley's terrain: a DEM written as a Cloud-Optimized GeoTIFF, and a coarse TIN as its CIM1 geometry."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import rasterio
import shapely
from rasterio.transform import from_origin
from rio_cogeo.cogeo import cog_translate
from rio_cogeo.profiles import cog_profiles

from cim.demo.layout import Frame, terrain_height

MAX_PIXELS = 4096  # per side: bounds the DEM's memory (64 MiB of float32) at any city size


def dem_grid(bounds: tuple[float, float, float, float]) -> tuple[float, int, int]:
    """Resolution (m, at least 5) and size of a DEM covering ``bounds`` (storage CRS, E/N)."""
    minx, miny, maxx, maxy = bounds
    res = max(5.0, math.ceil(max(maxx - minx, maxy - miny) / MAX_PIXELS))
    return res, int(math.ceil((maxx - minx) / res)), int(math.ceil((maxy - miny) / res))


def write_dem(path: Path, frame: Frame, bounds: tuple[float, float, float, float], srid: int,
              vertical_srid: int) -> dict[str, float]:
    """Sample the terrain over ``bounds`` and write it as a COG at ``path``; returns its grid description."""
    res, width, height = dem_grid(bounds)
    minx, _, _, maxy = bounds
    transform = from_origin(minx, maxy, res, res)
    xs = minx + res * (np.arange(width) + 0.5)
    profile = {"driver": "GTiff", "dtype": "float32", "count": 1, "width": width, "height": height,
               "crs": f"EPSG:{srid}", "transform": transform, "nodata": -9999.0}
    path.parent.mkdir(parents=True, exist_ok=True)
    # a tiled scratch file beside the result keeps memory flat (the DEM may be 4096² cells)
    scratch = path.with_suffix(".scratch.tif")
    profile.update(tiled=True, blockxsize=256, blockysize=256, compress="deflate")
    with rasterio.Env(GDAL_CACHEMAX=64):  # GDAL's cache (5 % of RAM by default) would keep the whole DEM
        _write(scratch, path, profile, frame, xs, maxy, res, width, height, vertical_srid)
    return {"resolution": res, "minx": minx, "miny": maxy - res * height, "maxx": minx + res * width, "maxy": maxy}


def _write(scratch: Path, path: Path, profile: dict, frame: Frame, xs: np.ndarray, maxy: float, res: float,
           width: int, height: int, vertical_srid: int) -> None:
    try:
        with rasterio.open(scratch, "w", **profile) as dst:
            rows_per_strip = 256
            for r0 in range(0, height, rows_per_strip):
                r1 = min(height, r0 + rows_per_strip)
                ys = maxy - res * (np.arange(r0, r1) + 0.5)
                e, n = np.meshgrid(xs, ys)
                u, v = frame.to_local(e, n)
                dst.write(terrain_height(u, v).astype("float32")[None], window=((r0, r1), (0, width)))
            dst.update_tags(1, VERTICAL_CRS=f"EPSG:{vertical_srid}", UNITS="m")
            dst.set_band_description(1, "ground height, 1985 National Height Datum")
        with rasterio.open(scratch) as src:
            cog_translate(src, str(path), cog_profiles.get("deflate"), in_memory=False, quiet=True,
                          additional_cog_metadata={"VERTICAL_CRS": f"EPSG:{vertical_srid}"})
    finally:
        scratch.unlink(missing_ok=True)


def coarse_tin(path: Path, cells: int = 48) -> shapely.MultiPolygon:
    """A ``cells × cells`` triangulated surface sampled from the DEM (CIM1 geometry of the terrain)."""
    with rasterio.open(path) as src:
        level = src.read(1, out_shape=(cells + 1, cells + 1), resampling=rasterio.enums.Resampling.bilinear)
        b = src.bounds
    xs = np.linspace(b.left, b.right, cells + 1)
    ys = np.linspace(b.top, b.bottom, cells + 1)
    tris = []
    for r in range(cells):
        for c in range(cells):
            p = [(xs[c], ys[r], level[r, c]), (xs[c + 1], ys[r], level[r, c + 1]),
                 (xs[c + 1], ys[r + 1], level[r + 1, c + 1]), (xs[c], ys[r + 1], level[r + 1, c])]
            # counter-clockwise seen from above (y decreases with r)
            tris.append(shapely.Polygon([p[3], p[2], p[1]]))
            tris.append(shapely.Polygon([p[3], p[1], p[0]]))
    return shapely.MultiPolygon(tris)
