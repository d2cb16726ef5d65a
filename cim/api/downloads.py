"""OGC API – Processes ``cim-download``: a GeoPackage (or FlatGeobuf) of chosen layers within a bbox.

For planners working offline. Each layer becomes a file layer with the layer's typed properties as
columns and the remaining attributes as one JSON column; geometry is the footprint (or the geometry at
``cim_level``) in the requested CRS (default the storage CRS, EPSG:4550), written in x/y order as GIS
files are. Runs synchronously, or as an asynchronous job (``Prefer: respond-async``: 201 with the job's
status URL, the file at ``/jobs/{id}/results``) for district- and city-wide exports; either way bounded by
``max_features`` (config), beyond which the request is refused with a 400 that says to narrow the bbox.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from pygeoapi.process.base import BaseProcessor

from cim.api.processes import InvalidProcessInput
from cim.api.provider import CIMProvider
from cim.crs.registry import CRS84_URI, UnknownCRS, default_registry
from cim.crs.transform import OutsideArea, query_area
from cim.db.models import LAYERS
from cim.export import ExportError, write_empty_layer, write_vector_layers
from cim.settings import get_settings

FORMATS = {"gpkg": ("GPKG", "application/geopackage+sqlite3", ".gpkg"),
           "fgb": ("FlatGeobuf", "application/flatgeobuf", ".fgb")}


PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "cim-download",
    "title": {"en": "Download CIM layers", "zh": "CIM 数据下载"},
    "description": {"en": "A GeoPackage (several layers) or FlatGeobuf (one layer) of the chosen CIM layers "
                          "within a CRS84 bbox, in the requested CRS (default EPSG:4550). Execute with "
                          "\"response\": \"raw\" to receive the file."},
    "jobControlOptions": ["sync-execute", "async-execute"],
    "keywords": ["download", "GeoPackage", "FlatGeobuf", "下载"],
    "links": [],
    "inputs": {
        "layers": {"title": "Layers", "schema": {"type": "array", "items": {"type": "string", "enum": list(LAYERS)}},
                   "minOccurs": 1, "maxOccurs": 1},
        "bbox": {"title": "Bounding box (CRS84: min lon, min lat, max lon, max lat)",
                 "schema": {"type": "array", "items": {"type": "number"}, "minItems": 4, "maxItems": 4},
                 "minOccurs": 1, "maxOccurs": 1},
        "crs": {"title": "Output CRS (default EPSG:4550)", "schema": {"type": "string"}, "minOccurs": 0, "maxOccurs": 1},
        "format": {"title": "gpkg (default) or fgb", "schema": {"type": "string", "enum": list(FORMATS)},
                   "minOccurs": 0, "maxOccurs": 1},
        "cim_level": {"title": "Geometry at this CIM level instead of the footprint",
                      "schema": {"type": "integer", "minimum": 1, "maximum": 7}, "minOccurs": 0, "maxOccurs": 1},
    },
    "outputs": {"file": {"title": "The file", "schema": {"type": "string", "contentEncoding": "binary",
                                                         "contentMediaType": "application/geopackage+sqlite3"}}},
    "example": {"inputs": {"layers": ["buildings", "roads"], "bbox": [123.76, 41.29, 123.78, 41.31]},
                "response": "raw"},
}


class DownloadProcessor(BaseProcessor):
    """pygeoapi processor for ``cim-download``."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, PROCESS_METADATA)
        self.max_features = int(processor_def.get("max_features", 250_000))

    def execute(self, data: dict[str, Any], outputs: dict | None = None) -> tuple[str, bytes]:
        layers = data.get("layers")
        if not isinstance(layers, list) or not layers or any(layer not in LAYERS for layer in layers):
            raise InvalidProcessInput(user_msg=f"layers: one or more of {', '.join(LAYERS)}")
        fmt = data.get("format", "gpkg")
        if fmt not in FORMATS:
            raise InvalidProcessInput(user_msg="format: gpkg or fgb")
        if fmt == "fgb" and len(layers) != 1:
            raise InvalidProcessInput(user_msg="format fgb holds one layer: ask for one, or use gpkg")
        bbox = data.get("bbox")
        if (not isinstance(bbox, list) or len(bbox) != 4 or not all(isinstance(v, (int, float)) for v in bbox)
                or bbox[1] > bbox[3]):
            raise InvalidProcessInput(user_msg="bbox: [min lon, min lat, max lon, max lat] in CRS84")
        level = data.get("cim_level")
        if level is not None and (not isinstance(level, int) or not 1 <= level <= 7):
            raise InvalidProcessInput(user_msg="cim_level: an integer from 1 to 7")
        reg = default_registry()
        try:  # a cap on the area, as on the features: a city-wide export is one request among many
            km2 = query_area(tuple(float(v) for v in bbox), reg.resolve(CRS84_URI),
                             reg.epsg(get_settings().storage_crs)).area / 1e6
        except OutsideArea as exc:
            raise InvalidProcessInput(user_msg=f"bbox: {exc}") from None
        if km2 > (most := get_settings().limits.max_export_km2):
            raise InvalidProcessInput(user_msg=f"bbox: {km2:,.0f} km², at most {most:,.0f} km² in one download: "
                                               "split it into smaller boxes")
        try:
            out_crs = reg.resolve(data.get("crs", "EPSG:4550"))
        except UnknownCRS as exc:
            raise InvalidProcessInput(user_msg=f"crs: {exc}") from None
        if out_crs.dimension != 2 or out_crs.pyproj_crs.is_geocentric:
            raise InvalidProcessInput(user_msg="crs: a 2D CRS")
        driver, mime, suffix = FORMATS[fmt]
        with tempfile.TemporaryDirectory(prefix="cim-download-") as tmp:
            path = Path(tmp) / f"cim{suffix}"
            total = 0
            for layer in layers:
                total += self._write_layer(path, driver, layer, [float(v) for v in bbox], out_crs, level, total)
            if total == 0 and not path.exists():
                write_empty_layer(path, driver, layers[0], out_crs)
            return mime, path.read_bytes()

    def _write_layer(self, path: Path, driver: str, layer: str, bbox: list[float], out_crs, level, so_far: int) -> int:
        provider = CIMProvider({"name": "cim.api.provider.CIMProvider", "type": "feature", "data": layer})
        reg = default_registry()
        area = query_area(tuple(bbox), reg.resolve(CRS84_URI), reg.epsg(provider.storage_srid))
        try:
            with provider.engine.connect() as conn:
                return write_vector_layers(conn, provider.tables, path, driver, layer, area, out_crs, level,
                                           limit=self.max_features - so_far)
        except ExportError:
            raise InvalidProcessInput(user_msg=f"more than {self.max_features:,} features: narrow the bbox or "
                                               "the layers") from None

    def __repr__(self) -> str:
        return "<DownloadProcessor>"

