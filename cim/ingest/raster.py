"""DEM, DSM and orthophoto GeoTIFFs → Cloud-Optimized GeoTIFFs registered in ``raster_layer``.

The COG (rio-cogeo, lossless deflate, internal overviews) is written under ``<data_dir>/rasters`` in the
file's own CRS (reprojecting would resample the heights; tiling reprojects per tile), first to a
temporary name; it takes its final name only when the load's transaction is about to commit, so a failed
load leaves neither a row nor a file. Loading the same file again replaces the row and the COG.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rasterio
from rasterio.crs import CRS as RioCRS
from rasterio.errors import RasterioIOError
from rio_cogeo.cogeo import cog_translate, cog_validate
from rio_cogeo.profiles import cog_profiles
from sqlalchemy import Connection, delete, insert

from cim.db.models import CIMTables
from cim.db.versions import bump, raster_key
from cim.ingest.model import ReadError
from cim.ingest.place import PlacementError

SUFFIXES = (".tif", ".tiff")


def is_raster(path: Path) -> bool:
    return path.suffix.lower() in SUFFIXES


def raster_kind(path: Path, bands: int, dtype: str) -> str:
    """dem, dsm or orthophoto: from the name where it says, else from the bands (imagery has 3 or 4)."""
    name = path.stem.lower()
    if "dsm" in name or "surface" in name:
        return "dsm"
    if any(k in name for k in ("dem", "dtm", "terrain", "elevation")):
        return "dem"
    return "orthophoto" if bands >= 3 and dtype == "uint8" else "dem"


def load_raster(conn: Connection, t: CIMTables, path: Path, dataset_id: int, run_id: int, report: Any,
                settings: Any, crs: Any = None) -> tuple[Callable[[], None], Callable[[], None]]:
    """Convert and register one raster inside the caller's transaction; returns the step that gives the
    COG its final name (to run just before commit) and the one that removes it (if the load fails)."""
    try:
        with rasterio.open(path) as src:
            bands, dtype, source_crs = src.count, src.dtypes[0], src.crs
            res, bounds = src.res, src.bounds
    except RasterioIOError as exc:
        raise ReadError(f"{path}: not a readable GeoTIFF ({exc})") from None
    if crs is not None:
        source_crs = RioCRS.from_wkt(crs.to_wkt())
    if source_crs is None:
        raise PlacementError(f"{path}: the raster has no CRS: give --crs")
    epsg = source_crs.to_epsg()
    if epsg is None:
        raise PlacementError(f"{path}: the raster's CRS has no EPSG code; give --crs EPSG:…")
    kind = raster_kind(path, bands, dtype)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{path.stem}")[:64]
    folder = settings.data_dir / "rasters"
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / f"{name}.cog.tif"
    temporary = folder / f".{name}.{run_id}.tmp.tif"
    profile = cog_profiles.get("deflate")
    cog_translate(str(path), str(temporary), profile, in_memory=False, quiet=True)
    if crs is not None:  # --crs for a raster that lacks one (or overrides it)
        with rasterio.open(temporary, "r+") as dst:
            dst.crs = source_crs
    valid, errors, _warnings = cog_validate(str(temporary), quiet=True)
    if not valid:
        temporary.unlink(missing_ok=True)
        raise ReadError(f"{path}: the COG written is not valid: {'; '.join(errors)}")
    conn.execute(delete(t.raster_layer).where(t.raster_layer.c.name == name))
    conn.execute(insert(t.raster_layer).values(
        name=name, kind=kind, path=os.path.relpath(final, settings.data_dir), srid=epsg,
        vertical_srid=None, resolution=float(res[0]), minx=bounds.left, miny=bounds.bottom, maxx=bounds.right,
        maxy=bounds.top, dataset_id=dataset_id))
    bump(conn, t, [raster_key(name)])  # its tiles' ETags and cache entries follow the new data
    report.loaded, report.read = 1, 1
    report.by_class = {f"raster:{kind}": 1}
    report.placement = {"mode": "registered in its own CRS", "source_crs": f"EPSG:{epsg}",
                        "cog": str(final), "resolution": float(res[0]), "bands": bands, "dtype": dtype}

    def commit_file() -> None:
        os.replace(temporary, final)

    def discard() -> None:
        temporary.unlink(missing_ok=True)

    return commit_file, discard
