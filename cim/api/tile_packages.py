"""OGC API – Processes ``cim-tiles-package``: an MBTiles or PMTiles package of a bbox, zoom range and layers.

For planners taking the city offline (a tablet on site, a desktop GIS without the network). The package
is built by :mod:`cim.tiles.package`, the same tiles ``/tiles/{tms}/…`` serves. Packages take from seconds
to minutes, so the process is meant to run as an asynchronous job (``Prefer: respond-async``: 201 with the
job's status URL; the package at ``/jobs/{id}/results``); small ones also run synchronously. Bounded by
``cim.tiles.package_max_tiles``, beyond which the request is refused with a 400 that says to narrow it.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pygeoapi.process.base import BaseProcessor

from cim.api.processes import InvalidProcessInput
from cim.db.models import LAYERS
from cim.settings import get_settings
from cim.tiles.package import FORMATS, PackageError, PackageRequest, build

MEDIA_TYPES = {"mbtiles": "application/vnd.sqlite3", "pmtiles": "application/vnd.pmtiles"}

PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "cim-tiles-package",
    "title": {"en": "Tile package (MBTiles, PMTiles)", "zh": "离线瓦片包"},
    "description": {"en": "Vector tiles of the chosen CIM layers (one MVT layer each), or PNG map tiles of one "
                          "raster (DEM, orthophoto), within a CRS84 bbox and a zoom range, as MBTiles 1.3 or "
                          "PMTiles v3, for offline maps. Run it as a job "
                          "(Prefer: respond-async) and fetch the package from the job's results."},
    "jobControlOptions": ["async-execute", "sync-execute"],
    "keywords": ["tiles", "MBTiles", "PMTiles", "offline", "离线"],
    "links": [],
    "inputs": {
        "layers": {"title": "Vector layers (one MVT layer each), or one raster layer as NAME or NAME:STYLE "
                            "(e.g. dem, dem:terrain-rgb)",
                   "schema": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                   "minOccurs": 1, "maxOccurs": 1},
        "bbox": {"title": "Bounding box (CRS84: min lon, min lat, max lon, max lat)",
                 "schema": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                 "minOccurs": 1, "maxOccurs": 1},
        "zooms": {"title": "Zoom range [min, max] (matrix ids of the tile matrix set)",
                  "schema": {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 2,
                             "maxItems": 2}, "minOccurs": 1, "maxOccurs": 1},
        "tile_matrix_set": {"title": "Tile matrix set (default WebMercatorQuad; PMTiles: WebMercatorQuad only)",
                            "schema": {"type": "string"}, "minOccurs": 0, "maxOccurs": 1},
        "format": {"title": "mbtiles (default) or pmtiles", "schema": {"type": "string", "enum": list(FORMATS)},
                   "minOccurs": 0, "maxOccurs": 1},
    },
    "outputs": {"package": {"title": "The package", "schema": {"type": "string", "contentEncoding": "binary",
                                                               "contentMediaType": MEDIA_TYPES["mbtiles"]}}},
    "example": {"inputs": {"layers": ["buildings", "roads", "pipelines"], "bbox": [123.765, 41.295, 123.775, 41.305],
                           "zooms": [12, 16], "format": "pmtiles"}, "response": "raw"},
}


class TilePackageProcessor(BaseProcessor):
    """pygeoapi processor for ``cim-tiles-package``."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, PROCESS_METADATA)

    def execute(self, data: dict[str, Any], outputs: dict | None = None) -> tuple[str, bytes]:
        from cim.api.provider import read_database

        layers = data.get("layers")
        if not isinstance(layers, list) or not layers or not all(isinstance(x, str) for x in layers):
            raise InvalidProcessInput(user_msg=f"layers: one or more of {', '.join(LAYERS)}")
        bbox = data.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)):
            raise InvalidProcessInput(user_msg="bbox: [min lon, min lat, max lon, max lat] in CRS84")
        zooms = data.get("zooms")
        if (not isinstance(zooms, list) or len(zooms) != 2
                or not all(isinstance(z, int) and not isinstance(z, bool) and z >= 0 for z in zooms)):
            raise InvalidProcessInput(user_msg="zooms: [min, max], non-negative integers")
        fmt = data.get("format", "mbtiles")
        tms = data.get("tile_matrix_set", "WebMercatorQuad")
        if not isinstance(fmt, str) or not isinstance(tms, str):
            raise InvalidProcessInput(user_msg="format and tile_matrix_set: strings")
        request = PackageRequest(tuple(float(v) for v in bbox), zooms[0], zooms[1], layers, tms, fmt)  # type: ignore[arg-type]
        settings = get_settings()
        engine, t = read_database()  # the replica when there is one
        with tempfile.TemporaryDirectory(prefix="cim-tiles-package-") as tmp:
            path = Path(tmp) / f"cim.{fmt}"
            try:
                build(engine, t, request, path, settings.tiles, settings.data_dir)
            except PackageError as exc:
                raise InvalidProcessInput(user_msg=str(exc)) from None
            return MEDIA_TYPES[fmt], path.read_bytes()

    def __repr__(self) -> str:
        return "<TilePackageProcessor>"
