"""Terrain for Cesium: quantized-mesh-1.0 tiles of the DEM, so that the 3D Tiles stand on the Taizi valley.

The DEM is a Cloud-Optimized GeoTIFF registered in ``raster_layer`` (the demo writes one, ``cim load``
registers others). Tiles follow Cesium's geographic tiling scheme (EPSG:4326 TMS: 2 × 1 tiles at level 0,
rows counted from the south) and Cesium's quantized-mesh-1.0 format (``layer.json`` + ``{z}/{x}/{y}.terrain``),
with the ``octvertexnormals`` extension on request.

A tile is made in four steps:

1. **Samples.** A regular grid of ``grid_cells + 1`` points a side over the tile, in CGCS2000 lon/lat,
   is projected to the DEM's CRS and read bilinearly from the DEM (from the coarsest overview still finer
   than the samples). Heights go through the same conversion as the buildings' vertices
   (:class:`cim.tiles3d.geodesy.Geodesy`: 1985 normal heights + the operator's geoid grid → ellipsoidal
   heights), so a building's ground sits on the terrain. Outside the DEM the surface is the ellipsoid
   (height 0), as Cesium draws it without terrain.
2. **Mesh.** pydelatin (the hmm library: Garland–Heckbert greedy insertion into a Delaunay triangulation)
   picks the interior samples needed to stay within the level's error. It was chosen over pymartini: it
   takes any grid size (Martini needs 2^n + 1 squares), bounds the error over every sample (Martini measures
   it at its split points only), and was 5× faster on a 257² tile of the demo DEM (3 ms vs 15 ms).
3. **Edges.** Each side keeps the samples a Douglas–Peucker simplification of its own profile keeps, at
   the same tolerance. Both tiles beside an edge sample the same points with the same arithmetic, so they
   keep the same vertices: no cracks, even without Cesium's skirts. Interior and edge vertices are
   triangulated again (Delaunay, GEOS), and where a new triangle strays from the samples by more than the
   error (it may join vertices delatin kept apart, across the DEM's edge) its worst interior sample is
   added, until none does.
4. **Encoding.** quantized-mesh-encoder (header with the ECEF centre, bounding sphere and horizon
   occlusion point, zig-zag delta vertices, high-water-mark indices, edge indices, normals).

Per-level error: Cesium assumes a level's terrain is within ``77,067 m / 2^level`` (its estimate for a
65-sample heightmap of a level-0 tile), so each level is meshed to that bound (× ``error_factor``), down to
``min_error_m``; the deepest level (where the samples reach the DEM's resolution) is meshed to
``min_error_m``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import shapely
from pydelatin import Delatin
from quantized_mesh_encoder import encode
from quantized_mesh_encoder.extensions import VertexNormalsExtension
from sqlalchemy import Connection, Engine, select

from cim.crs import transformer
from cim.db.models import CIMTables
from cim.db.schema import read_meta, tables_for
from cim.db.versions import layer_version
from cim.settings import TerrainSettings
from cim.tiles3d.build import _atomic_write
from cim.tiles3d.errors import Tiles3DError
from cim.tiles3d.geodesy import Geodesy, geodesy

__all__ = ["DEM", "NoTerrain", "Terrain", "TerrainReport", "build_terrain", "find_dem", "level_error", "tile_bounds"]

# Bump when the tiles made from the same DEM and settings change (part of the version and the ETag)
TERRAIN_FORMAT = 1
# Cesium's CesiumTerrainProvider: ellipsoid.maximumRadius · 2π · 0.25 / (65 · 2 tiles at level 0)
LEVEL_ZERO_ERROR = 6378137.0 * 2 * math.pi * 0.25 / (65 * 2)
METRES_PER_DEGREE = 6378137.0 * math.pi / 180
# Douglas–Peucker measures distances square to the chord; with the sample index stretched this much the
# chords are nearly level and the distance it measures is the height difference
_PROFILE_STRETCH = 1.0e6
EXTENSION = "octvertexnormals"
MAX_REFINEMENTS = 16


class NoTerrain(Tiles3DError):
    """No DEM is registered (or the configured one is missing)."""


def tile_bounds(z: int, x: int, y: int) -> tuple[float, float, float, float]:
    """West, south, east, north (degrees) of a tile of Cesium's geographic TMS scheme."""
    size = 180.0 / (1 << z)
    return -180.0 + x * size, -90.0 + y * size, -180.0 + (x + 1) * size, -90.0 + (y + 1) * size


def level_error(z: int, settings: TerrainSettings, max_level: int) -> float:
    """The largest height error (m) allowed in a tile of level ``z``."""
    if z >= max_level:
        return settings.min_error_m
    return max(settings.min_error_m, settings.error_factor * LEVEL_ZERO_ERROR / (1 << z))


@dataclass(frozen=True)
class DEM:
    """A registered DEM: where its COG is and what its heights are."""

    name: str
    path: Path
    srid: int
    vertical_srid: int | None
    resolution: float
    bounds: tuple[float, float, float, float]  # in its own CRS


def find_dem(conn: Connection, t: CIMTables, data_dir: Path, name: str | None = None) -> DEM:
    """The DEM to tile: ``name`` (``cim.terrain.raster``), else the one named ``dem`` (the demo's), else the
    finest registered DEM."""
    r = t.raster_layer
    query = select(r).where(r.c.kind == "dem")
    rows = conn.execute(query.where(r.c.name == name) if name else query).mappings().all()
    if not rows:
        known = conn.execute(select(r.c.name, r.c.kind)).all()
        listed = ", ".join(f"{n} ({k})" for n, k in known) or "none"
        raise NoTerrain((f"no DEM named {name!r} is registered" if name else "no DEM is registered")
                        + f" (raster layers: {listed}); load one with `cim load dem.tif` or run `cim demo`")
    row = next((x for x in rows if x["name"] == "dem"), None) or min(rows, key=lambda x: (x["resolution"], x["id"]))
    path = Path(row["path"])
    path = path if path.is_absolute() else data_dir / path
    if not path.is_file():
        raise NoTerrain(f"the DEM {row['name']!r} is registered at {path}, which does not exist")
    return DEM(row["name"], path, int(row["srid"]), row["vertical_srid"], float(row["resolution"]),
               (float(row["minx"]), float(row["miny"]), float(row["maxx"]), float(row["maxy"])))


@dataclass
class Terrain:
    """A DEM ready to be cut into quantized-mesh tiles (cheap to keep; rasters are opened per tile)."""

    dem: DEM
    geo: Geodesy
    settings: TerrainSettings
    version: str  # changes whenever the tiles would: the DEM (row and file), the geoid grid, settings, format
    lonlat: tuple[float, float, float, float] = field(init=False)
    max_level: int = field(init=False)
    _overviews: list[tuple[int | None, float]] = field(init=False)

    def __post_init__(self) -> None:
        self.lonlat = tuple(float(v) for v in transformer(self.dem.srid, self.geo.geographic_srid)
                            .transform_bounds(*self.dem.bounds, densify_pts=21))  # type: ignore[assignment]
        if self.settings.max_level is not None:
            self.max_level = self.settings.max_level
        else:  # the first level whose samples (north-south) are as close as the DEM's cells
            z = 0
            while z < 22 and 180.0 / (1 << z) * METRES_PER_DEGREE / self.settings.grid_cells > self.dem.resolution:
                z += 1
            self.max_level = z
        with rasterio.open(self.dem.path) as src:
            factors = src.overviews(1)
            res = abs(src.res[1])
        # (overview_level or None for full resolution, its cell size in the DEM's units), finest first
        self._overviews = [(None, res)] + [(i, res * f) for i, f in enumerate(factors)]

    @classmethod
    def open(cls, engine: Engine, settings: TerrainSettings, data_dir: Path, geoid_grid: str | None) -> Terrain:
        t = tables_for(engine)
        with engine.connect() as conn:
            meta = read_meta(conn)
            dem = find_dem(conn, t, data_dir, settings.raster)
            version = terrain_version(conn, t, dem, meta, settings, geoid_grid)
        vertical = dem.vertical_srid or (int(meta["vertical_srid"]) if meta.get("vertical_srid") else None)
        return cls(dem, geodesy(dem.srid, vertical, geoid_grid), settings, version)

    # ------------------------------------------------------------------ the pyramid
    def tile_range(self, z: int) -> tuple[int, int, int, int]:
        """First and last column and row (TMS, from the south) of the tiles of level ``z`` over the DEM."""
        if z == 0:  # Cesium needs both root tiles
            return 0, 0, 1, 0
        size = 180.0 / (1 << z)
        w, s, e, n = self.lonlat
        last_x, last_y = (2 << z) - 1, (1 << z) - 1
        return (min(last_x, max(0, math.floor((w + 180) / size))), min(last_y, max(0, math.floor((s + 90) / size))),
                min(last_x, max(0, math.ceil((e + 180) / size) - 1)), min(last_y, max(0, math.ceil((n + 90) / size) - 1)))

    def available(self, z: int, x: int, y: int) -> bool:
        if not 0 <= z <= self.max_level:
            return False
        x0, y0, x1, y1 = self.tile_range(z)
        return x0 <= x <= x1 and y0 <= y <= y1

    def tiles(self) -> Iterator[tuple[int, int, int]]:
        for z in range(self.max_level + 1):
            x0, y0, x1, y1 = self.tile_range(z)
            for x in range(x0, x1 + 1):
                for y in range(y0, y1 + 1):
                    yield z, x, y

    def layer_json(self, tiles_url: str = "{z}/{x}/{y}.terrain") -> dict[str, Any]:
        """Cesium's ``layer.json``: the tile URL template (with the data version, so a new DEM is never read
        from a cache) and, per level, the tiles that exist."""
        available = []
        for z in range(self.max_level + 1):
            x0, y0, x1, y1 = self.tile_range(z)
            available.append([{"startX": x0, "startY": y0, "endX": x1, "endY": y1}])
        w, s, e, n = self.lonlat
        return {
            "tilejson": "2.1.0", "format": "quantized-mesh-1.0", "version": "1.0.0", "scheme": "tms",
            "name": f"Benxi CIM terrain ({self.dem.name})",
            "description": self.description(),
            "attribution": "本溪市 CIM",
            "tiles": [f"{tiles_url}?v={self.version[:16]}"],
            "projection": "EPSG:4326", "bounds": [-180.0, -90.0, 180.0, 90.0],
            "minzoom": 0, "maxzoom": self.max_level,
            "available": available,
            "extensions": [EXTENSION],
            "cim": {"dem": self.dem.name, "dem_bounds": [round(v, 7) for v in (w, s, e, n)],
                    "resolution_m": self.dem.resolution, "grid_cells": self.settings.grid_cells,
                    "max_error_m": {str(z): round(level_error(z, self.settings, self.max_level), 3)
                                    for z in range(self.max_level + 1)},
                    "heights": self.heights_note(), "height_warning": self.geo.height_warning,
                    "version": self.version},
        }

    def description(self) -> str:
        return f"Quantized-mesh terrain of the DEM {self.dem.name!r} ({self.dem.resolution:g} m), {self.heights_note()}"

    def heights_note(self) -> str:
        if self.geo.geoid_grid and self.geo.height_warning is None:
            return f"ellipsoidal heights from 1985 normal heights with the geoid grid {Path(self.geo.geoid_grid).name}"
        return "heights as stored (no geoid grid: normal heights used as ellipsoidal heights)"

    # ------------------------------------------------------------------ one tile
    def samples(self, z: int, x: int, y: int) -> np.ndarray:
        """Ellipsoidal heights (m) of the tile's sample grid, shape (n + 1, n + 1), row 0 at the south edge."""
        n = self.settings.grid_cells
        w, s, e, nn = tile_bounds(z, x, y)
        steps = np.arange(n + 1) / n
        lon, lat = np.meshgrid(w + (e - w) * steps, s + (nn - s) * steps)
        # exact edges: neighbours must compute the same positions for their shared samples
        lon[:, 0], lon[:, -1], lat[0, :], lat[-1, :] = w, e, s, nn
        ex, ny = transformer(self.geo.geographic_srid, self.dem.srid).transform(lon.ravel(), lat.ravel())
        ex, ny = np.asarray(ex), np.asarray(ny)
        heights = self._read(ex, ny, spacing=(nn - s) * METRES_PER_DEGREE / n)
        h = np.zeros(ex.shape)
        ok = ~np.isnan(heights)
        if ok.any():
            h[ok] = self.geo.geodetic(ex[ok], ny[ok], heights[ok])[2]
        return h.reshape(n + 1, n + 1)

    def _read(self, ex: np.ndarray, ny: np.ndarray, spacing: float) -> np.ndarray:
        """Bilinear DEM heights at points of the DEM's CRS (NaN outside it or on nodata)."""
        out = np.full(ex.shape, np.nan)
        w, s, e, n = self.dem.bounds
        inside = (ex >= w) & (ex <= e) & (ny >= s) & (ny <= n)
        if not inside.any():
            return out
        level = None
        for ov, res in self._overviews:  # the coarsest still as fine as the samples
            if res <= spacing:
                level = ov
        with rasterio.open(self.dem.path, overview_level=level) if level is not None else rasterio.open(self.dem.path) as src:
            inv = ~src.transform
            # fractional pixel positions in the whole raster (not the window): the same for both neighbours
            col, row = inv * (ex[inside], ny[inside])
            col, row = np.asarray(col) - 0.5, np.asarray(row) - 0.5
            c0 = max(0, int(math.floor(col.min())))
            r0 = max(0, int(math.floor(row.min())))
            c1 = min(src.width, int(math.floor(col.max())) + 2)
            r1 = min(src.height, int(math.floor(row.max())) + 2)
            data = src.read(1, window=((r0, r1), (c0, c1)), masked=True).astype("float64").filled(np.nan)
        ci = np.clip(np.floor(col).astype(int), 0, src.width - 1)
        ri = np.clip(np.floor(row).astype(int), 0, src.height - 1)
        fc, fr = np.clip(col - ci, 0.0, 1.0), np.clip(row - ri, 0.0, 1.0)
        ci1, ri1 = np.minimum(ci + 1, src.width - 1), np.minimum(ri + 1, src.height - 1)

        def at(r: np.ndarray, c: np.ndarray) -> np.ndarray:
            return data[r - r0, c - c0]

        value = ((at(ri, ci) * (1 - fc) + at(ri, ci1) * fc) * (1 - fr)
                 + (at(ri1, ci) * (1 - fc) + at(ri1, ci1) * fc) * fr)
        out[inside] = value
        return out

    def mesh(self, z: int, x: int, y: int) -> tuple[np.ndarray, np.ndarray]:
        """Vertices (lon, lat, ellipsoidal height) and counter-clockwise triangles of a tile."""
        grid = self.samples(z, x, y)
        n = self.settings.grid_cells
        tolerance = level_error(z, self.settings, self.max_level)
        cols, rows = _select_samples(grid, tolerance)
        verified = np.empty(0, dtype=np.int64)  # triangles (by their corners' grid keys) within the tolerance
        for _ in range(MAX_REFINEMENTS):
            index = np.full((n + 1) * (n + 1), -1, dtype=np.int64)
            index[rows * (n + 1) + cols] = np.arange(len(cols))
            triangles = _delaunay(cols, rows, index, n)
            corners = np.sort((rows * (n + 1) + cols)[triangles], axis=1)
            ids = (corners[:, 0] << 40) | (corners[:, 1] << 20) | corners[:, 2]
            todo = ~np.isin(ids, verified)
            extra, bad = _worst_samples(grid, cols, rows, triangles[todo], tolerance)
            verified = np.concatenate([verified, ids[todo][~bad]])
            if not len(extra):
                break
            cols, rows = np.concatenate([cols, extra % (n + 1)]), np.concatenate([rows, extra // (n + 1)])
        w, s, e, nn = tile_bounds(z, x, y)
        lon = np.where(cols == n, e, w + (e - w) * cols / n)
        lat = np.where(rows == n, nn, s + (nn - s) * rows / n)
        positions = np.column_stack([lon, lat, grid[rows, cols]])
        # the indices are high-water-mark encoded: vertices must come in the order the triangles first use them
        flat = triangles.ravel()
        _, first = np.unique(flat, return_index=True)
        order = flat[np.sort(first)]
        remap = np.empty(len(positions), dtype=np.int64)
        remap[order] = np.arange(len(order))
        return positions[order], remap[triangles]

    def tile(self, z: int, x: int, y: int, normals: bool = False) -> bytes:
        """The tile's quantized-mesh-1.0 bytes (with the oct-encoded vertex normals extension if asked)."""
        return self.encode(z, x, y, *self.mesh(z, x, y), normals=normals)

    @staticmethod
    def encode(z: int, x: int, y: int, positions: np.ndarray, triangles: np.ndarray, normals: bool) -> bytes:
        buf = io.BytesIO()
        extensions = [VertexNormalsExtension(indices=triangles.astype(np.uint32), positions=positions.astype(np.float32))] \
            if normals else []
        encode(buf, positions, triangles, bounds=tile_bounds(z, x, y), extensions=extensions)
        return buf.getvalue()


def _select_samples(grid: np.ndarray, tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Columns and rows of the samples kept: delatin's interior ones, and each edge's simplified profile."""
    n = grid.shape[0] - 1
    tin = Delatin(grid.astype(np.float32), max_error=tolerance)
    v = np.rint(tin.vertices[:, :2]).astype(np.int64)  # (col, row) of the array: row 0 is our south edge
    interior = (v[:, 0] > 0) & (v[:, 0] < n) & (v[:, 1] > 0) & (v[:, 1] < n)
    cols, rows = [v[interior, 0]], [v[interior, 1]]
    steps = np.arange(n + 1)
    for profile, fixed, along_cols in ((grid[0, :], 0, True), (grid[n, :], n, True),
                                       (grid[:, 0], 0, False), (grid[:, n], n, False)):
        kept = _simplify_profile(profile, tolerance)
        if along_cols:
            cols.append(steps[kept])
            rows.append(np.full(len(kept), fixed))
        else:
            cols.append(np.full(len(kept), fixed))
            rows.append(steps[kept])
    key = np.unique(np.concatenate(rows) * (n + 1) + np.concatenate(cols))
    return key % (n + 1), key // (n + 1)


def _worst_samples(grid: np.ndarray, cols: np.ndarray, rows: np.ndarray, triangles: np.ndarray,
                   tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """Grid keys (row · (n + 1) + col) of the interior sample farthest from each triangle where that is more
    than ``tolerance`` (the re-triangulation may join vertices delatin kept apart, across a cliff), and which
    triangles those are.

    Scan lines, vectorised: each triangle's span on each grid row it crosses, so every sample is visited
    about once (bounding boxes of long thin triangles cost 30× more).
    """
    n = grid.shape[0] - 1
    c = cols[triangles].astype(float)  # (t, 3)
    r = rows[triangles].astype(float)
    r0 = np.maximum(np.ceil(r.min(1)), 1).astype(np.int64)
    r1 = np.minimum(np.floor(r.max(1)), n - 1).astype(np.int64)
    spans = np.maximum(r1 - r0 + 1, 0)
    none = np.empty(0, dtype=np.int64), np.zeros(len(triangles), dtype=bool)
    if not spans.sum():
        return none
    tri = np.repeat(np.arange(len(triangles)), spans)
    row = r0[tri] + np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)
    lo, hi = np.full(len(tri), np.inf), np.full(len(tri), -np.inf)
    for a, b in ((0, 1), (1, 2), (2, 0)):  # where the row crosses each edge
        ca, cb, ra, rb = c[tri, a], c[tri, b], r[tri, a], r[tri, b]
        crosses = (np.minimum(ra, rb) <= row) & (row <= np.maximum(ra, rb)) & (ra != rb)
        x = ca + (row - ra) * (cb - ca) / np.where(ra != rb, rb - ra, 1.0)
        lo = np.where(crosses, np.minimum(lo, x), lo)
        hi = np.where(crosses, np.maximum(hi, x), hi)
    c_lo = np.maximum(np.ceil(lo - 1e-9), 1).astype(np.int64)
    c_hi = np.minimum(np.floor(hi + 1e-9), n - 1).astype(np.int64)
    width = np.maximum(c_hi - c_lo + 1, 0)
    if not width.sum():
        return none
    t_of = np.repeat(tri, width)
    gr = np.repeat(row, width)
    gc = np.repeat(c_lo, width) + np.arange(width.sum()) - np.repeat(np.cumsum(width) - width, width)
    cf, rf = c[t_of], r[t_of]
    det = (rf[:, 1] - rf[:, 2]) * (cf[:, 0] - cf[:, 2]) + (cf[:, 2] - cf[:, 1]) * (rf[:, 0] - rf[:, 2])
    l1 = ((rf[:, 1] - rf[:, 2]) * (gc - cf[:, 2]) + (cf[:, 2] - cf[:, 1]) * (gr - rf[:, 2])) / det
    l2 = ((rf[:, 2] - rf[:, 0]) * (gc - cf[:, 2]) + (cf[:, 0] - cf[:, 2]) * (gr - rf[:, 2])) / det
    z = grid[rows[triangles[t_of]], cols[triangles[t_of]]]
    err = np.abs(l1 * z[:, 0] + l2 * z[:, 1] + (1 - l1 - l2) * z[:, 2] - grid[gr, gc])
    bad = err > tolerance
    if not bad.any():
        return none
    # per triangle, the worst of its samples
    order = np.lexsort((-err[bad], t_of[bad]))
    t_sorted = t_of[bad][order]
    first = np.r_[True, t_sorted[1:] != t_sorted[:-1]]
    pick = order[first]
    failed = np.zeros(len(triangles), dtype=bool)
    failed[t_sorted[first]] = True
    return np.unique(gr[bad][pick] * (n + 1) + gc[bad][pick]), failed


def _simplify_profile(heights: np.ndarray, tolerance: float) -> np.ndarray:
    """Indices of the samples of an edge profile that Douglas–Peucker keeps (the ends always)."""
    idx = np.arange(len(heights), dtype=float) * _PROFILE_STRETCH
    line = shapely.linestrings(np.column_stack([idx, heights]))
    kept = shapely.get_coordinates(shapely.simplify(line, tolerance, preserve_topology=False))[:, 0]
    return np.unique(np.rint(kept / _PROFILE_STRETCH).astype(np.int64))


def _delaunay(cols: np.ndarray, rows: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Counter-clockwise (east, north) triangles of the samples, as vertex indices."""
    points = shapely.multipoints(np.column_stack([cols, rows]).astype(float))
    parts = shapely.get_parts(shapely.delaunay_triangles(points))
    corners = shapely.get_coordinates(parts).reshape(-1, 4, 2)[:, :3]
    c = np.rint(corners).astype(np.int64)
    tri = index[c[:, :, 1] * (n + 1) + c[:, :, 0]]
    a, b, d = c[:, 0], c[:, 1], c[:, 2]
    area = (b[:, 0] - a[:, 0]) * (d[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (d[:, 0] - a[:, 0])
    tri = tri[area != 0]
    flip = area[area != 0] < 0
    tri[flip] = tri[flip][:, [0, 2, 1]]
    return tri


def terrain_version(conn: Connection, t: CIMTables, dem: DEM, meta: dict[str, Any], settings: TerrainSettings,
                    geoid_grid: str | None) -> str:
    """A digest of everything the tiles depend on: read per request (one key read and two file stats)."""
    st = dem.path.stat()
    grid = None
    if geoid_grid:
        gs = Path(geoid_grid).stat()
        grid = [str(Path(geoid_grid).resolve()), gs.st_size, gs.st_mtime_ns]
    key = [TERRAIN_FORMAT, str(meta.get("database_id", "")), layer_version(conn, t, "terrain"),
           [dem.name, str(dem.path), dem.srid, dem.vertical_srid, dem.resolution, list(dem.bounds)],
           [st.st_size, st.st_mtime_ns], grid,
           settings.model_dump(mode="json", exclude={"out_dir", "max_age"})]
    return hashlib.sha256(json.dumps(key, default=str).encode()).hexdigest()


# ---------------------------------------------------------------------- pre-built
@dataclass
class TerrainReport:
    out_dir: Path
    dem: str
    max_level: int
    tiles: int
    bytes: int
    seconds: float
    warnings: list[str]


STATE_FILE = "terrain-state.json"


def prebuilt_version(out_dir: Path) -> str | None:
    """The version a pre-built folder holds (None when it holds no complete build)."""
    try:
        return str(json.loads((out_dir / STATE_FILE).read_text(encoding="utf-8"))["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def prebuilt_path(out_dir: Path, z: int, x: int, y: int, normals: bool) -> Path:
    return out_dir / str(z) / str(x) / (f"{y}.normals.terrain" if normals else f"{y}.terrain")


def build_terrain(engine: Engine, settings: TerrainSettings, data_dir: Path, geoid_grid: str | None,
                  out_dir: Path | None = None, progress: Callable[[int, int], None] | None = None) -> TerrainReport:
    """Write every tile (with and without normals) and ``layer.json`` under ``out_dir``.

    The folder can be served as it is by any static server (a tile's two variants: ``{y}.terrain`` and
    ``{y}.normals.terrain``), and ``cim serve`` answers from it while its version is the DEM's current one.
    """
    import time

    started = time.perf_counter()
    terrain = Terrain.open(engine, settings, data_dir, geoid_grid)
    out_dir = Path(out_dir or settings.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / STATE_FILE).unlink(missing_ok=True)  # incomplete until the end
    all_tiles = list(terrain.tiles())
    total = 0
    for i, (z, x, y) in enumerate(all_tiles):
        mesh = terrain.mesh(z, x, y)
        for normals in (False, True):
            data = terrain.encode(z, x, y, *mesh, normals=normals)
            _atomic_write(prebuilt_path(out_dir, z, x, y, normals), data)
            total += len(data)
        if progress:
            progress(i + 1, len(all_tiles))
    _atomic_write(out_dir / "layer.json", json.dumps(terrain.layer_json(), ensure_ascii=False, indent=1).encode())
    _atomic_write(out_dir / STATE_FILE, json.dumps({"version": terrain.version, "dem": terrain.dem.name,
                                                    "max_level": terrain.max_level}).encode())
    warnings = [terrain.geo.height_warning] if terrain.geo.height_warning else []
    return TerrainReport(out_dir, terrain.dem.name, terrain.max_level, len(all_tiles), total,
                         time.perf_counter() - started, warnings)
