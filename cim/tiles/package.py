"""Tile packages for planners working offline: MBTiles 1.3 and PMTiles v3 of a bbox, a zoom range and layers.

A package is built from a **tile source** (:class:`TileSource`), one per kind of tile: the vector source
(the CIM layers, one MVT layer per collection, exactly the tiles ``/tiles/{tms}/…`` serves, built by
:func:`cim.tiles.mvt.render_layers`) or a raster source (one registered raster, DEM or orthophoto, in one
of its styles, ``dem`` or ``dem:terrain-rgb``: the map tiles ``/collections/{raster}/map/tiles/…`` serves,
built by :func:`cim.tiles.raster.render_raster_tile`). One package holds one kind of tile: vector layers,
or one raster layer.

- **MBTiles 1.3** (SQLite): ``metadata`` (name, format, bounds, center, minzoom, maxzoom, type, version,
  description, attribution and, for vector tiles, ``json`` with ``vector_layers``) and ``tiles`` with rows
  in TMS order (counted from the bottom); vector tiles gzip-compressed as the specification asks. The
  specification knows Web Mercator only: a package in another tile matrix set says so in two extra
  metadata rows (``tile_matrix_set``, ``crs``), which tools such as GDAL do not read.
- **PMTiles v3** (the ``pmtiles`` package's writer): Web Mercator only (its tile ids are WebMercatorQuad's);
  tiles gzip-compressed, clustered (written in tile-id order), the same metadata as JSON.

Empty tiles are left out (both formats treat a missing tile as empty). A package is written to a
temporary file beside the target and renamed when complete: a failed build leaves nothing behind.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import morecantile
from sqlalchemy import Connection, Engine

from cim import __version__
from cim.db.models import LAYERS, CIMTables
from cim.settings import TilesSettings
from cim.tiles.grid import TileSet, tile_set, web_mercator_zoom
from cim.tiles.mvt import LayerRules, layer_rules, render_layers, tile_query
from cim.tiles.raster import RasterLayer, default_style, native_zoom, raster_layers, render_raster_tile
from cim.tiles.tilesets import property_types, title_of

FORMATS = ("mbtiles", "pmtiles")
WEB_MERCATOR = "WebMercatorQuad"


class PackageError(ValueError):
    """A request that cannot be packaged, said in words a planner can act on."""


class TileSource(Protocol):
    """Where the tiles of a package come from (vector tiles of CIM layers, raster tiles, …)."""

    format: str  # the MBTiles ``format``: pbf, png, jpg, webp
    layers: list[str]

    def zoom_range(self, ts: TileSet) -> tuple[int, int]:
        """The matrices (ids) with tiles at all."""

    def tile(self, conn: Connection, t: CIMTables, ts: TileSet, matrix: str, row: int, col: int) -> bytes:
        """One tile, ``b""`` when empty."""

    def metadata(self, t: CIMTables, ts: TileSet) -> dict[str, Any]:
        """Format-specific metadata (``vector_layers`` for vector tiles)."""


@dataclass
class VectorSource:
    """The CIM layers as one MVT per tile, one layer per collection (in the order given)."""

    layers: list[str]
    settings: TilesSettings
    format: str = "pbf"
    rules: dict[str, LayerRules] = field(init=False)

    def __post_init__(self) -> None:
        self.rules = layer_rules(self.settings, self.layers)

    def zoom_range(self, ts: TileSet) -> tuple[int, int]:
        ids = [int(m) for m in ts.matrix_ids() if any(
            r.min_zoom <= web_mercator_zoom(ts, m) <= r.max_zoom for r in self.rules.values())]
        return (min(ids), max(ids)) if ids else (0, -1)

    def tile(self, conn: Connection, t: CIMTables, ts: TileSet, matrix: str, row: int, col: int) -> bytes:
        zoom = web_mercator_zoom(ts, matrix)
        storage_srid = int(t.city_object.c.geom.type.srid)
        return render_layers(conn, t, [
            tile_query(layer, layer, ts, matrix, row, col, storage_srid, self.rules[layer], self.settings)
            for layer in self.layers if self.rules[layer].min_zoom <= zoom <= self.rules[layer].max_zoom])

    def metadata(self, t: CIMTables, ts: TileSet) -> dict[str, Any]:
        vector_layers = []
        for layer in self.layers:
            r = self.rules[layer]
            zooms = [int(m) for m in ts.matrix_ids() if r.min_zoom <= web_mercator_zoom(ts, m) <= r.max_zoom]
            fields = {name: {"integer": "Number", "number": "Number"}.get(p.get("type"), "String")
                      for name, p in property_types(t, layer, r).items()}
            vector_layers.append({"id": layer, "description": title_of(layer), "fields": fields,
                                  "minzoom": min(zooms, default=0), "maxzoom": max(zooms, default=0)})
        return {"vector_layers": vector_layers}


@dataclass
class RasterSource:
    """One registered raster in one style, as PNG map tiles."""

    raster: RasterLayer
    style: str
    min_zoom: int  # WebMercatorQuad zooms, as the map tiles route serves them
    max_zoom: int
    format: str = "png"

    @property
    def layers(self) -> list[str]:
        return [self.raster.name]

    def zoom_range(self, ts: TileSet) -> tuple[int, int]:
        ids = [int(m) for m in ts.matrix_ids() if self.min_zoom <= web_mercator_zoom(ts, m) <= self.max_zoom]
        return (min(ids), max(ids)) if ids else (0, -1)

    def tile(self, conn: Connection, t: CIMTables, ts: TileSet, matrix: str, row: int, col: int) -> bytes:
        return render_raster_tile(self.raster, ts, matrix, row, col, self.format, self.style) or b""

    def metadata(self, t: CIMTables, ts: TileSet) -> dict[str, Any]:
        return {"raster_layer": self.raster.name, "raster_kind": self.raster.kind, "style": self.style}


def sources_for(layers: list[str], settings: TilesSettings, rasters: dict[str, RasterLayer]) -> TileSource:
    """The one source that serves these layers (a package holds one kind of tile).

    ``rasters``: the registered rasters by name; a raster is asked for as ``name`` (its default style) or
    ``name:style``."""
    if not layers:
        raise PackageError(f"layers: one or more of {', '.join(LAYERS)}, or one raster of {', '.join(rasters)}")
    named = {x.split(":", 1)[0]: x for x in layers}
    raster_names = [n for n in named if n in rasters]
    if raster_names:
        if len(layers) != 1:
            raise PackageError(f"layers: one package holds vector layers or one raster layer; "
                               f"{', '.join(raster_names)} must go in a package of its own")
        name, _, style = layers[0].partition(":")
        layer = rasters[name]
        style = style or default_style(layer)
        if style not in layer.styles:
            raise PackageError(f"layers: {name} has styles {', '.join(layer.styles)}, not {style!r}")
        max_zoom = native_zoom(layer) + settings.raster.overzoom
        return RasterSource(layer, style, min(settings.raster.min_zoom, max_zoom), max_zoom)
    unknown = [x for x in layers if x not in LAYERS]
    if unknown:
        raise PackageError(f"layers: unknown {', '.join(map(repr, unknown))}; vector layers: {', '.join(LAYERS)}; "
                           f"rasters: {', '.join(rasters) or 'none'}")
    return VectorSource(list(dict.fromkeys(layers)), settings)


@dataclass(frozen=True)
class PackageRequest:
    """What to package: a CRS84 bbox, a zoom range (the tile matrix set's matrix ids), layers, a format."""

    bbox: tuple[float, float, float, float]
    min_zoom: int
    max_zoom: int
    layers: list[str]
    tile_matrix_set: str = WEB_MERCATOR
    format: str = "mbtiles"
    name: str = "Benxi CIM"


@dataclass(frozen=True)
class PackageReport:
    path: Path
    format: str
    tiles: int  # tiles written (with data)
    addressed: int  # tiles of the bbox and zooms that were built (empty ones are left out)
    size: int  # bytes


def check(request: PackageRequest, settings: TilesSettings, rasters: dict[str, RasterLayer],
          ) -> tuple[TileSource, TileSet, list[morecantile.Tile]]:
    """The source, tile set and tiles of a request; ``PackageError`` for anything a planner must change."""
    if request.format not in FORMATS:
        raise PackageError(f"format: one of {', '.join(FORMATS)}, got {request.format!r}")
    w, s, e, n = request.bbox
    if not all(math.isfinite(v) for v in request.bbox) or not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        raise PackageError("bbox: min lon, min lat, max lon, max lat in CRS84 (min < max)")
    if request.tile_matrix_set not in settings.tile_matrix_sets:
        raise PackageError(f"tile matrix set: one of {', '.join(settings.tile_matrix_sets)}, "
                           f"got {request.tile_matrix_set!r}")
    if request.format == "pmtiles" and request.tile_matrix_set != WEB_MERCATOR:
        raise PackageError(f"PMTiles holds {WEB_MERCATOR} tiles only: use it, or MBTiles")
    ts = tile_set(request.tile_matrix_set)
    source = sources_for(request.layers, settings, rasters)
    lo, hi = source.zoom_range(ts)
    if request.min_zoom > request.max_zoom:
        raise PackageError(f"zooms: {request.min_zoom} > {request.max_zoom}")
    if request.min_zoom < lo or request.max_zoom > hi:
        raise PackageError(f"zooms: {', '.join(source.layers)} have {ts.id} tiles at {lo}–{hi}, "
                           f"asked for {request.min_zoom}–{request.max_zoom}")
    count = 0
    for z in range(request.min_zoom, request.max_zoom + 1):
        ul, lr = ts.tms.tile(w, n, z), ts.tms.tile(e, s, z)
        count += (abs(lr.x - ul.x) + 1) * (abs(lr.y - ul.y) + 1)
        if count > settings.package_max_tiles:
            raise PackageError(f"more than {settings.package_max_tiles:,} tiles (cim.tiles.package_max_tiles): "
                               "narrow the bbox or the zooms")
    tiles = list(ts.tms.tiles(w, s, e, n, list(range(request.min_zoom, request.max_zoom + 1))))
    return source, ts, tiles


def build(engine: Engine, t: CIMTables, request: PackageRequest, path: Path, settings: TilesSettings,
          data_dir: Path, progress: Callable[[int, int], None] | None = None) -> PackageReport:
    """Write the package to ``path`` (replaced only once complete); ``data_dir``: where rasters' COGs are."""
    with engine.connect() as conn:
        rasters = {r.name: r for r in raster_layers(conn, t, Path(data_dir))}
    source, ts, tiles = check(request, settings, rasters)
    if request.format == "pmtiles":  # clustered: tiles in tile-id order
        from pmtiles.tile import zxy_to_tileid

        tiles.sort(key=lambda x: zxy_to_tileid(x.z, x.x, x.y))
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    writer = _MBTilesWriter(tmp, ts) if request.format == "mbtiles" else _PMTilesWriter(tmp)
    written = 0
    try:
        with engine.connect() as conn:
            for i, tile in enumerate(tiles):
                data = source.tile(conn, t, ts, str(tile.z), tile.y, tile.x)
                if data:
                    writer.add(tile, gzip.compress(data, mtime=0) if source.format == "pbf" else data)
                    written += 1
                if progress is not None and (i % 64 == 0 or i == len(tiles) - 1):
                    progress(i + 1, len(tiles))
            if written == 0:
                raise PackageError(f"no data of {', '.join(source.layers)} in this bbox at zooms "
                                   f"{request.min_zoom}–{request.max_zoom}")
            writer.finish(_metadata(request, source, ts, t, written))
        os.replace(tmp, path)
    finally:
        writer.close()
        tmp.unlink(missing_ok=True)
    return PackageReport(path, request.format, written, len(tiles), path.stat().st_size)


def _metadata(request: PackageRequest, source: TileSource, ts: TileSet, t: CIMTables, written: int,
              ) -> dict[str, Any]:
    w, s, e, n = (round(v, 7) for v in request.bbox)
    centre_zoom = min(request.max_zoom, max(request.min_zoom, 15))
    meta: dict[str, Any] = {
        "name": request.name,
        "format": source.format,
        "bounds": [w, s, e, n],
        "center": [round((w + e) / 2, 7), round((s + n) / 2, 7), centre_zoom],
        "minzoom": request.min_zoom,
        "maxzoom": request.max_zoom,
        "type": "overlay",
        "version": "1",
        "description": f"{', '.join(title_of(x) for x in source.layers)}: {written} tiles, built by "
                       f"benxi-cim {__version__}",
        "attribution": "Benxi CIM (本溪市城市信息模型)",
        **source.metadata(t, ts),
    }
    if ts.id != WEB_MERCATOR:  # not in MBTiles 1.3: for our own readers and the planners' notes
        meta["tile_matrix_set"] = ts.id
        meta["crs"] = str(ts.tms.crs.srs)
    return meta


class _MBTilesWriter:
    def __init__(self, path: Path, ts: TileSet) -> None:
        path.unlink(missing_ok=True)
        self.ts = ts
        self.db = sqlite3.connect(path)
        self.db.executescript(
            "CREATE TABLE metadata (name TEXT, value TEXT);"
            "CREATE TABLE tiles (zoom_level INTEGER, tile_column INTEGER, tile_row INTEGER, tile_data BLOB);"
            "CREATE UNIQUE INDEX tile_index ON tiles (zoom_level, tile_column, tile_row);")

    def add(self, tile: morecantile.Tile, data: bytes) -> None:
        height = self.ts.tms.matrix(tile.z).matrixHeight  # rows counted from the bottom (TMS)
        self.db.execute("INSERT INTO tiles VALUES (?, ?, ?, ?)", (tile.z, tile.x, height - 1 - tile.y, data))

    def finish(self, meta: dict[str, Any]) -> None:
        rows = []
        for key, value in meta.items():
            if key == "vector_layers":
                rows.append(("json", json.dumps({"vector_layers": value}, ensure_ascii=False)))
            elif isinstance(value, list):
                rows.append((key, ",".join(str(v) for v in value)))
            else:
                rows.append((key, str(value)))
        self.db.executemany("INSERT INTO metadata VALUES (?, ?)", rows)
        self.db.commit()

    def close(self) -> None:
        self.db.close()


class _PMTilesWriter:
    def __init__(self, path: Path) -> None:
        from pmtiles.writer import Writer

        self.fh = open(path, "wb")
        self.writer = Writer(self.fh)

    def add(self, tile: morecantile.Tile, data: bytes) -> None:
        from pmtiles.tile import zxy_to_tileid

        self.writer.write_tile(zxy_to_tileid(tile.z, tile.x, tile.y), data)

    def finish(self, meta: dict[str, Any]) -> None:
        from pmtiles.tile import Compression, TileType

        w, s, e, n = meta["bounds"]
        lon, lat, zoom = meta["center"]
        header = {"tile_type": TileType.MVT if meta["format"] == "pbf" else TileType.PNG,
                  "tile_compression": Compression.GZIP if meta["format"] == "pbf" else Compression.NONE,
                  "min_lon_e7": int(w * 1e7), "min_lat_e7": int(s * 1e7),
                  "max_lon_e7": int(e * 1e7), "max_lat_e7": int(n * 1e7),
                  "center_zoom": int(zoom), "center_lon_e7": int(lon * 1e7), "center_lat_e7": int(lat * 1e7)}
        self.writer.finalize(header, {k: v for k, v in meta.items() if k not in ("bounds", "center", "minzoom",
                                                                                 "maxzoom", "format")})

    def close(self) -> None:
        self.fh.close()


def parse_zooms(text: str) -> tuple[int, int]:
    """``12-16`` or ``15`` → (min, max)."""
    parts = text.replace("–", "-").split("-")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise PackageError(f"zooms: N or MIN-MAX, got {text!r}") from None
    if len(values) not in (1, 2) or any(v < 0 for v in values):
        raise PackageError(f"zooms: N or MIN-MAX, got {text!r}")
    return values[0], values[-1]


def iter_layers(text: str | Iterable[str]) -> list[str]:
    items = text.split(",") if isinstance(text, str) else list(text)
    return [x.strip() for x in items if x.strip()]
