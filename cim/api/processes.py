"""OGC API – Processes: the coordinate transformation service (``coordinate-transform``, synchronous).

For the operations platform and other systems: a GeoJSON geometry, Feature or FeatureCollection, or a
plain array of positions, from any supported CRS to any other (CGCS2000, Gauss-Krüger zones, the city's
local systems, GCJ-02, BD-09, ECEF...). Everything is transformed in one vectorised call.
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from pygeoapi.process.base import BaseProcessor, ProcessorExecuteError

from cim.crs.geojson import InvalidInput, parse_coordinates, transform_array, transform_geojson
from cim.crs.registry import UnknownCRS, default_registry
from cim.crs.transform import OutsideArea, height_warning


class InvalidProcessInput(ProcessorExecuteError):
    """Bad input to one of our processes: a 400 with the OGC exception JSON, not pygeoapi's default 500."""

    http_status_code = HTTPStatus.BAD_REQUEST
    ogc_exception_code = "InvalidParameterValue"


PROCESS_METADATA: dict[str, Any] = {
    "version": "1.0.0",
    "id": "coordinate-transform",
    "title": {"en": "Coordinate transformation", "zh": "坐标转换"},
    "description": {
        "en": "Transforms a GeoJSON geometry, Feature or FeatureCollection, or an array of positions, between "
              "any two supported CRSs (CGCS2000 EPSG:4490/4480/4479, Gauss-Krueger EPSG:4550/4551/4529, "
              "EPSG:4550+5737, WGS 84, Web Mercator, ECEF, GCJ-02, BD-09 and the city's local systems). "
              "Coordinates are read and written in each CRS's own axis order (EPSG:4490 is lat/lon, EPSG:4550 "
              "north/east) unless axis_order is 'xy'.",
        "zh": "在任意两个支持的坐标系之间转换 GeoJSON 或坐标数组（含 CGCS2000、高斯-克吕格、火星坐标 GCJ-02、百度 BD-09 与城市独立坐标系）。",
    },
    "jobControlOptions": ["sync-execute"],
    "keywords": ["CRS", "坐标转换", "CGCS2000", "GCJ-02", "BD-09"],
    "links": [],
    "inputs": {
        "source_crs": {"title": "Source CRS (URI or EPSG:code)", "schema": {"type": "string"},
                       "minOccurs": 1, "maxOccurs": 1},
        "target_crs": {"title": "Target CRS (URI or EPSG:code)", "schema": {"type": "string"},
                       "minOccurs": 1, "maxOccurs": 1},
        "axis_order": {"title": "'crs' (each CRS's own axis order, default) or 'xy' (lon/lat, east/north)",
                       "schema": {"type": "string", "enum": ["crs", "xy"], "default": "crs"},
                       "minOccurs": 0, "maxOccurs": 1},
        "geometry": {"title": "GeoJSON geometry, Feature or FeatureCollection",
                     "schema": {"type": "object", "contentMediaType": "application/geo+json"},
                     "minOccurs": 0, "maxOccurs": 1},
        "coordinates": {"title": "Array of positions [x, y] or [x, y, z]",
                        "schema": {"type": "array", "items": {"type": "array", "items": {"type": "number"},
                                                              "minItems": 2, "maxItems": 3}},
                        "minOccurs": 0, "maxOccurs": 1},
    },
    "outputs": {
        "result": {"title": "The transformed GeoJSON or positions",
                   "schema": {"type": "object", "contentMediaType": "application/json"}},
    },
    "example": {"inputs": {"source_crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84",
                           "target_crs": "EPSG:4550", "coordinates": [[123.77, 41.30]]}},
}


def run_transform(data: dict[str, Any]) -> dict[str, Any]:
    """The process itself, without pygeoapi (the CLI uses it too). Raises InvalidInput/UnknownCRS/OutsideArea."""
    registry = default_registry()
    for name in ("source_crs", "target_crs"):
        if not isinstance(data.get(name), str):
            raise InvalidInput(f"{name}: required, a CRS URI or EPSG:code")
    src, dst = registry.resolve(data["source_crs"]), registry.resolve(data["target_crs"])
    axis_order = data.get("axis_order", "crs")
    if axis_order not in ("crs", "xy"):
        raise InvalidInput("axis_order: 'crs' or 'xy'")
    if ("geometry" in data) == ("coordinates" in data):
        raise InvalidInput("give exactly one of geometry and coordinates")
    out: dict[str, Any] = {"source_crs": src.uri, "target_crs": dst.uri, "axis_order": axis_order}
    if (warning := height_warning(src, dst)) is not None:
        out["warnings"] = [warning]
    if "coordinates" in data:
        out["coordinates"] = transform_array(parse_coordinates(data["coordinates"]), src, dst, axis_order).tolist()
    else:
        out["geometry"] = transform_geojson(data["geometry"], src, dst, axis_order)
    return out


class CoordinateTransformProcessor(BaseProcessor):
    """pygeoapi processor for ``coordinate-transform``."""

    def __init__(self, processor_def: dict[str, Any]) -> None:
        super().__init__(processor_def, PROCESS_METADATA)

    def execute(self, data: dict[str, Any], outputs: dict | None = None) -> tuple[str, dict[str, Any]]:
        try:
            return "application/json", run_transform(data)
        except (InvalidInput, UnknownCRS, OutsideArea) as exc:
            raise InvalidProcessInput(user_msg=str(exc)) from None

    def __repr__(self) -> str:
        return "<CoordinateTransformProcessor>"
