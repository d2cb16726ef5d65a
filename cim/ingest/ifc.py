"""IFC 2x3, IFC4 and IFC 4.3 models (``.ifc``, STEP physical files) → :class:`SourceObject`.

What a BIM file becomes in the CIM:

- **Spatial tree.** ``IfcBuilding`` → Building (BuildingPart when aggregated in another building),
  ``IfcBuildingStorey`` → Storey, ``IfcSpace`` → Space. ``IfcSite`` is not an object: it carries the
  georeferencing, kept in the file's metadata. Other IFC 4.3 facilities (``IfcRoad``, ``IfcBridge``…) are
  containers only — the drainage sample's road holds its pipes but has no shape of its own — so they are
  listed in the metadata too, and what they contain has no parent.
- **Elements.** Every physical ``IfcElement`` (not openings, not virtual elements) becomes an object of
  its CIM class (:data:`CIM_CLASSES`; others take the IFC name without ``Ifc``). Its parent is the wall
  it fills (doors and windows: ``IfcRelFillsElement`` → opening → ``IfcRelVoidsElement``), else the
  element it is a part of (an ``IfcRoof``'s slabs, a window's mullions), else its spatial container.
- **Geometry.** Bodies are triangulated by IfcOpenShell in world coordinates, many elements at a time
  (:func:`ifcopenshell.geom.iterator`), and become a MultiPolygon Z of triangles, each counter-clockwise
  seen from outside (IfcOpenShell orients the triangles by the solid's outward normals). Elements sit at
  CIM level 6, spaces at 5. Buildings and storeys have no mesh: their footprint is the plan-view union of
  their elements. Pipe segments also get their axis (CIM3 LineString Z), chambers their top centre
  (CIM3 Point Z): what network analysis and 2D maps use.
- **Coordinates.** Always metres, whatever the file's length unit (IfcOpenShell's meshes are in SI
  units; attribute lengths are scaled here). An ``IfcMapConversion`` (or IFC2x3's ``ePSet_MapConversion``)
  is applied, so the output is in its ``IfcProjectedCRS``. Without one, the model stays in its local
  engineering system and the site's latitude/longitude/true north are handed to the loader, which
  anchors the model there (:mod:`cim.ingest.place`).

Reading is eager — the building's footprint needs every element's mesh before the building itself can be
yielded (parents come first) — but objects are built lazily from compact numpy meshes, so the shapely
geometries of a large model never all exist at once.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ifcopenshell
import ifcopenshell.geom
import ifcopenshell.util.classification
import ifcopenshell.util.element
import ifcopenshell.util.placement
import ifcopenshell.util.unit
import numpy as np
import shapely
from ifcopenshell import ifcopenshell_wrapper
from pyproj import CRS
from pyproj.crs import CompoundCRS
from pyproj.exceptions import CRSError

from cim.ingest.model import ReadError, SourceFile, SourceObject

__all__ = ["CIM_CLASSES", "SUPPORTED_SCHEMAS", "read_ifc"]

# Schema families this reader maps (ifcopenshell's ``file.schema``; IFC4X3 covers IFC4X3_ADD2).
SUPPORTED_SCHEMAS = ("IFC2X3", "IFC4", "IFC4X3")

# CGAL for the simple shapes, OpenCASCADE for booleans (walls with openings): the same triangles as plain
# OpenCASCADE on the FZK house, in about half the CPU time (1.8 s vs 3.2 s). Elements the iterator cannot
# do are retried one by one with plain OpenCASCADE before being reported.
GEOMETRY_LIBRARY = "hybrid-cgal-simple-opencascade"
FALLBACK_GEOMETRY_LIBRARY = "opencascade"

# IFC class (and its subclasses) → CIM class; checked in order, first match wins.
CIM_CLASSES: tuple[tuple[str, str], ...] = (
    ("IfcBuilding", "Building"),
    ("IfcBuildingStorey", "Storey"),
    ("IfcSpace", "Space"),
    ("IfcWall", "Wall"),
    ("IfcCurtainWall", "Wall"),
    ("IfcRoof", "Roof"),
    ("IfcSlab", "Slab"),  # ROOF slabs, and slabs of an IfcRoof, become Roof (see _cim_class)
    ("IfcDoor", "Door"),
    ("IfcWindow", "Window"),
    ("IfcStair", "Stair"),
    ("IfcStairFlight", "Stair"),
    ("IfcPipeSegment", "PipeSegment"),
    ("IfcDistributionChamberElement", "PipeNode"),  # manholes (MANHOLE) and every other chamber
)

# CIM class → semantic type of its mesh's polygons (CityGML names where there is one).
SURFACE_TYPES: dict[str, str] = {
    "Wall": "WallSurface",
    "Roof": "RoofSurface",
    "Slab": "FloorSurface",
    "Door": "Door",
    "Window": "Window",
    "Space": "InteriorSpace",
}

SPACE_LEVEL = 5
ELEMENT_LEVEL = 6
NETWORK_LEVEL = 3  # a pipe's axis, a chamber's point: the 2D/network view of the same object

# IfcDistributionSystem.PredefinedType → 管线种类 code (cim.db.models.PIPE_KINDS). DRAINAGE is left out:
# it does not say whether the water is storm water (YS) or sewage (WS).
PIPE_KIND_BY_SYSTEM: dict[str, str] = {
    "STORMWATER": "YS", "RAINWATER": "YS",
    "SEWAGE": "WS", "WASTEWATER": "WS",
    "DOMESTICCOLDWATER": "JS", "WATERSUPPLY": "JS",
    "GAS": "RQ",
    "HEATING": "RL",
    "ELECTRICAL": "DL", "POWERGENERATION": "DL",
    "COMMUNICATION": "TX", "DATA": "TX", "TELEPHONE": "TX", "TV": "TX",
}

# IfcMaterial Category or Name (whole, case-insensitive) → the material code list of the quality rules
# (config.yml ``code_lists.material``). Files name materials in their own language ("betoni"); IFC4's
# Category is meant to be a plain English word, which is what makes this mapping possible.
MATERIAL_CODES: dict[str, str] = {
    "concrete": "混凝土", "reinforced concrete": "钢筋混凝土", "precast concrete": "钢筋混凝土",
    "steel": "钢", "galvanized steel": "镀锌钢", "galvanised steel": "镀锌钢", "stainless steel": "不锈钢",
    "cast iron": "铸铁", "ductile iron": "球墨铸铁", "copper": "铜", "aluminium": "铝", "aluminum": "铝",
    "plastic": "塑料", "pvc": "PVC", "upvc": "UPVC", "pvc-u": "UPVC", "pe": "PE", "hdpe": "HDPE",
    "pe-hd": "HDPE", "ppr": "PPR", "pp-r": "PPR", "mpp": "MPP", "brick": "砖", "masonry": "砖",
    "grp": "玻璃钢", "frp": "玻璃钢", "fibreglass": "玻璃钢", "fiberglass": "玻璃钢",
}

# Diameter properties, in order of preference: the declared nominal size is what 管径 means; an inner
# diameter comes next (drainage pipes are sized by their bore); the outer diameter last.
DIAMETER_PROPERTIES = ("NominalDiameter", "InnerDiameter", "OuterDiameter")

# A model whose extent's centre is this far from its origin (m) is not in a local engineering system: it
# carries map coordinates without declaring their CRS (the drainage sample: ETRS-GK25 eastings).
PROJECTED_OFFSET_M = 100_000.0

# A storey whose elevation is above this (m, relative to the building) counts as above ground: ground
# floors sit near 0 (a few cm either way), basements ≥ 2 m below.
ABOVE_GROUND_M = -1.0

MIN_TRIANGLE_AREA = 1e-10  # m²: triangles below this are collinear points, never a face
MAX_LOGGED_WARNINGS = 20

_INSTANCE = re.compile(r"instance #(\d+)")
_ANY_INSTANCE = re.compile(r"#(\d+)")
_TRAILER = b"END-ISO-10303-21;"


# --- the public reader ---------------------------------------------------------------------------------


def read_ifc(path: Path, threads: int = 2) -> SourceFile:
    """Read an IFC file: its buildings, storeys, spaces and elements (parents first), georeferencing found.

    Args:
        path: an IFC STEP file (``.ifc``) in schema IFC2X3, IFC4 or IFC4X3.
        threads: triangulation threads (IfcOpenShell's iterator); capped at the CPU count.

    Raises:
        ReadError: the file is missing, not an IFC STEP file, truncated, of an unsupported schema, or an
            entity is broken (the message names it, e.g. ``#1234 IfcWall``).
    """
    path = Path(path)
    model, warnings = _open(path)
    return _Reader(path, model, warnings, max(1, min(int(threads), os.cpu_count() or 1))).read()


# --- opening and checking the file ---------------------------------------------------------------------


def _open(path: Path) -> tuple[ifcopenshell.file, dict[int, list[str]]]:
    """Parse the file; parser errors become a ReadError naming the entity, warnings are returned per entity.

    IfcOpenShell opens a truncated file without complaint (it keeps what it could parse), and logs broken
    entities instead of raising, so both are checked here: the STEP trailer, and the parser's own log,
    collected per file with an in-memory logger (the global log is shared by every thread).
    """
    if not path.is_file():
        raise ReadError(f"{path}: no such file")
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
            fh.seek(max(0, path.stat().st_size - 1024))
            tail = fh.read()
    except OSError as exc:
        raise ReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    if not head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"ISO-10303-21;"):
        hint = " (an ifcZIP: unzip it first)" if head.startswith(b"PK") else ""
        raise ReadError(f"{path}: not an IFC file: no ISO-10303-21 header{hint}")
    if _TRAILER not in tail:
        raise ReadError(f"{path}: truncated: the file does not end with {_TRAILER.decode()}")
    logger = ifcopenshell_wrapper.logger()
    logger.output_format(ifcopenshell_wrapper.logger.FMT_INMEMORY)
    try:
        model = ifcopenshell.open(path, format=".ifc", logger=logger)
    except ifcopenshell.SchemaError as exc:
        raise ReadError(f"{path}: {exc}; supported: {', '.join(SUPPORTED_SCHEMAS)} (IFC4X3 as IFC4X3_ADD2)") from None
    except (ifcopenshell.Error, OSError, RuntimeError) as exc:
        raise ReadError(f"{path}: not a readable IFC file ({exc})") from None
    if model.schema not in SUPPORTED_SCHEMAS:
        raise ReadError(f"{path}: unsupported schema {model.schema_identifier}; "
                        f"supported: {', '.join(SUPPORTED_SCHEMAS)}")
    warnings: dict[int, list[str]] = {}
    for message in logger.log_messages():
        text = message.message.strip()
        match = _INSTANCE.search(text) or _ANY_INSTANCE.search(text)
        step_id = int(match.group(1)) if match else 0
        if message.severity >= ifcopenshell_wrapper.logger.LOG_ERROR:
            where = f"{_entity_name(model, step_id)}: " if step_id else ""
            raise ReadError(f"{path}: {where}{text}")
        if message.severity >= ifcopenshell_wrapper.logger.LOG_WARNING:
            warnings.setdefault(step_id, []).append(text)
    return model, warnings


def _entity_name(model: ifcopenshell.file, step_id: int) -> str:
    """``#1234 IfcWall``, or ``#1234`` when the entity itself is missing."""
    try:
        return f"#{step_id} {model.by_id(step_id).is_a()}"
    except (RuntimeError, ValueError):
        return f"#{step_id}"


# --- georeferencing ------------------------------------------------------------------------------------


@dataclass
class _Georeferencing:
    """How world coordinates (metres, local engineering system) become output coordinates."""

    crs: CRS | None = None
    local: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    # map conversion, in the parameters of ifcopenshell.util.geolocation: map = R·(scale·local) + offset
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation: tuple[float, float] = (1.0, 0.0)  # cos, sin of the angle from map east to local +X
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)  # metres → map units, per axis
    shift: tuple[float, float, float] = (0.0, 0.0, 0.0)  # subtracted first (the site's reference point)

    def apply(self, xyz: np.ndarray) -> np.ndarray:
        """World metres (n×3) → output coordinates (n×3), vectorised."""
        p = np.asarray(xyz, dtype=float) - np.asarray(self.shift)
        p = p * np.asarray(self.scale)
        c, s = self.rotation
        out = np.empty_like(p)
        out[:, 0] = c * p[:, 0] - s * p[:, 1] + self.offset[0]
        out[:, 1] = s * p[:, 0] + c * p[:, 1] + self.offset[1]
        out[:, 2] = p[:, 2] + self.offset[2]
        return out


def _georeferencing(model: ifcopenshell.file, path: Path, unit_scale: float) -> _Georeferencing:
    """The file's georeferencing: (a) a map conversion to a projected CRS, (b) the site's latitude and
    longitude, or (c) none (see the module docstring)."""
    geo = _map_conversion(model, path, unit_scale)
    site = _main_site(model)
    if site is not None:
        lonlat = _site_lonlat(site, path, unit_scale)
        if lonlat is not None:
            geo.metadata["site_lonlat"] = lonlat
            if geo.metadata.get("georeferencing") is None:
                geo.metadata["georeferencing"] = "IfcSite"
                # RefLatitude/RefLongitude/RefElevation locate the site's own origin: make it the origin
                origin = ifcopenshell.util.placement.get_local_placement(site.ObjectPlacement)[:3, 3] * unit_scale \
                    if site.ObjectPlacement is not None else np.zeros(3)
                if np.any(np.abs(origin) > 1e-9):
                    geo.shift = (float(origin[0]), float(origin[1]), float(origin[2]))
                    geo.metadata["site_origin"] = [float(v) for v in origin]
    north = _true_north(model)
    if north is not None:
        geo.metadata["true_north_deg"] = north
    geo.metadata.setdefault("georeferencing", None)
    return geo


def _map_conversion(model: ifcopenshell.file, path: Path, unit_scale: float) -> _Georeferencing:
    """Case (a): an IfcMapConversion (IFC4, 4.3) or IFC2x3's ePSet_MapConversion with a projected CRS."""
    geo = _Georeferencing()
    if model.schema == "IFC2X3":
        project = _project(model)
        if project is None:
            return geo
        params = ifcopenshell.util.element.get_pset(project, "ePSet_MapConversion") or {}
        crs_info = ifcopenshell.util.element.get_pset(project, "ePSet_ProjectedCRS") or {}
        if not params or not crs_info.get("Name"):
            return geo
        kind, name, vertical, map_unit = "ePSet_MapConversion", crs_info["Name"], crs_info.get("VerticalDatum"), None
        factors = (1.0, 1.0, 1.0)
        get = params.get
    else:
        conversion = None
        contexts = sorted(model.by_type("IfcGeometricRepresentationContext", include_subtypes=False),
                          key=lambda c: c.ContextType != "Model")
        for context in contexts:
            for operation in getattr(context, "HasCoordinateOperation", None) or ():
                if operation.is_a("IfcMapConversion"):
                    conversion = operation
                    break
            if conversion is not None:
                break
        if conversion is None:
            return geo
        target = conversion.TargetCRS
        if target is None or not target.is_a("IfcProjectedCRS") or not target.Name:
            geo.metadata["map_conversion_ignored"] = (f"{_entity_name(model, conversion.id())}: its target is not "
                                                      "a named IfcProjectedCRS")
            return geo
        kind, name, vertical = "IfcMapConversion", target.Name, target.VerticalDatum
        map_unit = target.MapUnit
        factors = ((conversion.FactorX, conversion.FactorY, conversion.FactorZ)
                   if conversion.is_a("IfcMapConversionScaled") else (1.0, 1.0, 1.0))

        def get(attribute: str, default: Any = None) -> Any:
            return getattr(conversion, attribute, default)

    try:
        geo.crs = _crs(str(name), vertical)
    except CRSError as exc:
        # the coordinates are map coordinates all the same: the loader asks for --crs
        geo.metadata["crs_problem"] = f"{name!r} is not a CRS pyproj knows ({exc})"
    # Scale turns project length units into map units. The schema reads a missing Scale as 1.0, but a
    # millimetre model on a metre grid that omits it means the units' ratio, not a 1000× larger city: the
    # map unit is the IfcProjectedCRS's MapUnit, else the CRS's own axis unit, else the project's.
    scale = get("Scale")
    if scale is None:
        if map_unit is not None:
            map_scale = float(ifcopenshell.util.unit.get_unit_scale(map_unit))
        elif geo.crs is not None and geo.crs.axis_info:
            map_scale = float(geo.crs.axis_info[0].unit_conversion_factor or unit_scale)
        else:
            map_scale = unit_scale
        scale = unit_scale / map_scale
    abscissa, ordinate = get("XAxisAbscissa") or 0.0, get("XAxisOrdinate") or 0.0
    norm = math.hypot(abscissa, ordinate)
    geo.rotation = (abscissa / norm, ordinate / norm) if norm > 0 else (1.0, 0.0)
    # world coordinates come in metres: back to project units, then Scale
    geo.scale = tuple(float(scale) * float(f or 1.0) / unit_scale for f in factors)  # type: ignore[assignment]
    geo.offset = (float(get("Eastings") or 0.0), float(get("Northings") or 0.0), float(get("OrthogonalHeight") or 0.0))
    geo.local = False
    geo.metadata.update({"georeferencing": kind, "crs_name": name, "map_conversion": {
        "eastings": geo.offset[0], "northings": geo.offset[1], "orthogonal_height": geo.offset[2],
        "x_axis_abscissa": abscissa, "x_axis_ordinate": ordinate, "scale": float(scale)}})
    if vertical:
        geo.metadata["vertical_datum"] = str(vertical)
    return geo


def _crs(name: str, vertical: Any) -> CRS:
    """The pyproj CRS of an IfcProjectedCRS name ("EPSG:25832", "25832", a URN, a WKT name), made compound
    with its vertical datum when that too is a CRS pyproj knows."""
    horizontal = CRS.from_epsg(int(name)) if name.strip().isdigit() else CRS.from_user_input(name.strip())
    if vertical:
        try:
            v = CRS.from_user_input(str(vertical).strip())
        except CRSError:
            return horizontal
        if v.is_vertical:
            return CompoundCRS(f"{horizontal.name} + {v.name}", [horizontal, v])
    return horizontal


def _main_site(model: ifcopenshell.file) -> Any:
    """The site with a latitude, else the first one."""
    sites = model.by_type("IfcSite")
    return next((s for s in sites if s.RefLatitude is not None), sites[0] if sites else None)


def _compound_angle(value: Any) -> float | None:
    """IfcCompoundPlaneAngleMeasure (degrees, minutes, seconds[, millionths], all of one sign) → degrees."""
    if not value:
        return None
    parts = [int(v) for v in value]
    sign = -1.0 if any(v < 0 for v in parts) else 1.0
    parts = [abs(v) for v in parts] + [0] * (4 - len(parts))
    return sign * (parts[0] + parts[1] / 60 + parts[2] / 3600 + parts[3] / 3.6e9)


def _site_lonlat(site: Any, path: Path, unit_scale: float) -> list[float] | None:
    """Case (b): [lon, lat, elevation m] from the site's RefLongitude/RefLatitude/RefElevation."""
    try:
        lat, lon = _compound_angle(site.RefLatitude), _compound_angle(site.RefLongitude)
    except (TypeError, ValueError) as exc:
        raise ReadError(f"{path}: #{site.id()} IfcSite: RefLatitude/RefLongitude are not angles ({exc})") from None
    if lat is None or lon is None:
        return None
    return [lon, lat, float(site.RefElevation or 0.0) * unit_scale]


def _true_north(model: ifcopenshell.file) -> float | None:
    """Degrees clockwise from true north to the model's +Y axis (the loader's anchor rotation), from the
    model context's TrueNorth: that vector is true north seen in model coordinates."""
    contexts = sorted(model.by_type("IfcGeometricRepresentationContext", include_subtypes=False),
                      key=lambda c: c.ContextType != "Model")
    for context in contexts:
        if context.TrueNorth is not None:
            x, y = context.TrueNorth.DirectionRatios[:2]
            if x or y:
                # true north at angle a anticlockwise from +Y is (-sin a, cos a); +Y is then a clockwise of it
                return round(math.degrees(math.atan2(-x, y)), 9) + 0.0  # + 0.0: no "-0.0"
    return None


def _application(app: Any) -> str | None:
    """"ARCHICAD-64 20.0.0": the authoring application's name and version (once, if the name has it)."""
    if app is None:
        return None
    name, version = (app.ApplicationFullName or "").strip(), (app.Version or "").strip()
    return (name if not version or version in name else f"{name} {version}").strip() or None


def _project(model: ifcopenshell.file) -> Any:
    projects = model.by_type("IfcProject")
    return projects[0] if projects else None


# --- values --------------------------------------------------------------------------------------------


def _jsonable(value: Any) -> Any:
    """Property values as JSON: entities as their ``#id IfcClass`` (or wrapped value), tuples as lists,
    non-finite floats as None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items() if k != "id"}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, ifcopenshell.entity_instance):
        if hasattr(value, "wrappedValue"):
            return _jsonable(value.wrappedValue)
        return f"#{value.id()} {value.is_a()}" if value.id() else value.is_a()
    if isinstance(value, (np.integer, np.floating)):
        return _jsonable(value.item())
    return str(value)


def _year(value: Any) -> int | None:
    match = re.search(r"\b(1[0-9]{3}|20[0-9]{2})\b", str(value)) if value is not None else None
    return int(match.group(1)) if match else None


# --- meshes --------------------------------------------------------------------------------------------


@dataclass
class _Mesh:
    """One element's triangles in output coordinates: vertices (n×3) and faces (m×3 vertex indices)."""

    verts: np.ndarray
    faces: np.ndarray

    def triangles(self) -> np.ndarray:
        """m×3×3 corner coordinates."""
        return self.verts[self.faces]

    def multipolygon(self) -> shapely.MultiPolygon:
        """One polygon per triangle, in the mesh's winding (counter-clockwise seen from outside)."""
        tri = self.triangles()
        rings = np.concatenate([tri, tri[:, :1]], axis=1)  # closed rings of 4 points
        return shapely.multipolygons(shapely.polygons(rings))

    def plan_triangles(self) -> np.ndarray:
        """The triangles seen from above, those with an area in plan (vertical faces add nothing)."""
        tri = self.triangles()[:, :, :2]
        a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
        area = 0.5 * np.abs((b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1]))
        return tri[area > 1e-8]

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        return self.verts.min(axis=0), self.verts.max(axis=0)


def _mesh_from(geometry: Any, geo: _Georeferencing) -> _Mesh | None:
    """An IfcOpenShell triangulation (world coordinates, metres) → a _Mesh in output coordinates, without
    degenerate triangles; None when nothing is left."""
    verts = np.asarray(geometry.verts, dtype=float).reshape(-1, 3)
    faces = np.asarray(geometry.faces, dtype=np.int64).reshape(-1, 3)
    if not len(faces):
        return None
    tri = verts[faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    faces = faces[area > MIN_TRIANGLE_AREA]
    if not len(faces):
        return None
    return _Mesh(geo.apply(verts), faces)


def _plan_union(parts: list[np.ndarray]) -> Any:
    """The plan-view union of triangles (k×3×2 arrays) as a valid Polygon/MultiPolygon, None if empty."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return None
    tri = np.concatenate(parts)
    polygons = shapely.polygons(np.concatenate([tri, tri[:, :1]], axis=1))
    merged = shapely.make_valid(shapely.union_all(polygons))
    if merged.geom_type == "GeometryCollection":
        merged = shapely.union_all([g for g in merged.geoms if g.geom_type in ("Polygon", "MultiPolygon")])
    # adjacent triangles leave collinear vertices and float-noise duplicates (5.000000000002608 beside
    # 5.000000000002609) along the outline: drop them (1 µm)
    merged = shapely.make_valid(shapely.simplify(merged, 1e-6))
    return None if merged.is_empty else merged


_SOLID_ITEMS = ("IfcSolidModel", "IfcBooleanResult", "IfcCsgPrimitive3D", "IfcHalfSpaceSolid")


def _is_solid_item(item: Any) -> bool:
    """True when a representation item bounds a volume (what the quality rules may then check for closure)."""
    if item.is_a("IfcMappedItem"):
        return _is_solid_representation(item.MappingSource.MappedRepresentation)
    if item.is_a("IfcSweptAreaSolid"):
        return getattr(item.SweptArea, "ProfileType", "AREA") == "AREA"
    if item.is_a("IfcTessellatedFaceSet"):
        return bool(getattr(item, "Closed", False))
    return any(item.is_a(t) for t in _SOLID_ITEMS)


def _is_solid_representation(representation: Any) -> bool:
    items = representation.Items or ()
    return bool(items) and all(_is_solid_item(i) for i in items)


def _body(product: Any) -> Any:
    """The product's 3D body representation (the one IfcOpenShell triangulates), or None."""
    shape = getattr(product, "Representation", None)
    if shape is None:
        return None
    candidates = [r for r in shape.Representations or () if r.RepresentationIdentifier in ("Body", "Facetation", None)
                  and (r.RepresentationType or "") not in ("Curve", "Curve2D", "Curve3D", "Point", "GeometricCurveSet")]
    return next((r for r in candidates if r.RepresentationIdentifier == "Body"), candidates[0] if candidates else None)


# --- the reader ----------------------------------------------------------------------------------------


@dataclass
class _Record:
    """What is known about one object once the file has been read; becomes a SourceObject on demand."""

    entity: Any
    object_class: str
    parent_entity: Any = None
    parent: str | None = None
    attributes: dict[str, Any] = field(default_factory=dict)
    typed: dict[str, Any] = field(default_factory=dict)
    mesh: _Mesh | None = None
    solid: bool = False
    footprint: Any = None
    network: Any = None  # the CIM3 axis or node point
    errors: list[str] = field(default_factory=list)
    elevation: float | None = None  # storeys: metres above the building's 0.00
    base_z: float | None = None  # storeys: output z of the storey's placement
    depth: int = 0


class _Reader:
    """One pass over one opened file."""

    def __init__(self, path: Path, model: ifcopenshell.file, warnings: dict[int, list[str]], threads: int) -> None:
        self.path = path
        self.model = model
        self.warnings = warnings
        self.threads = threads
        self.records: dict[int, _Record] = {}  # step id → record, in file order

    def fail(self, entity: Any, problem: str) -> ReadError:
        return ReadError(f"{self.path}: {_entity_name(self.model, entity.id())}: {problem}")

    def read(self) -> SourceFile:
        model = self.model
        try:
            self.unit_scale = float(ifcopenshell.util.unit.calculate_unit_scale(model))
        except Exception as exc:  # noqa: BLE001  any failure here means broken unit entities
            raise ReadError(f"{self.path}: the project's length unit cannot be read ({exc})") from None
        self.geo = _georeferencing(model, self.path, self.unit_scale)
        metadata = self._metadata()
        self._collect()
        self._triangulate()
        for record in self.records.values():
            self._network(record)
        self._storeys_and_buildings()
        ordered = self._ordered()
        extent = self._extent()
        metadata["extent"] = extent
        metadata["classes"] = dict(Counter(r.object_class for r in ordered))
        metadata["count"] = len(ordered)
        local = self.geo.local
        if metadata["georeferencing"] is None and extent is not None:
            centre = max(abs(extent[0] + extent[3]), abs(extent[1] + extent[4])) / 2
            if centre > PROJECTED_OFFSET_M:
                # map coordinates without a declared CRS: --crs says which, or --anchor places the extent
                local = False
                metadata["coordinates"] = "projected, CRS not declared"
        return SourceFile(self.geo.crs, "ifc", self._objects(ordered), metadata, local)

    # metadata ------------------------------------------------------------------------------------------

    def _metadata(self) -> dict[str, Any]:
        model = self.model
        header = model.header.file_name
        project = _project(model)
        applications = model.by_type("IfcApplication")
        app = applications[0] if applications else None
        metadata: dict[str, Any] = {
            "schema": model.schema,
            "schema_identifier": model.schema_identifier,
            "application": _application(app),
            "originating_system": header.originating_system or None,
            "preprocessor": header.preprocessor_version or None,
            "project": project.Name if project is not None else None,
            "length_unit_scale": self.unit_scale,  # metres per file length unit; output is in metres
            **self.geo.metadata,
        }
        site = _main_site(model)
        if site is not None:
            metadata["site"] = _jsonable({
                "GlobalId": site.GlobalId, "Name": site.Name, "Description": site.Description,
                "LongName": site.LongName, "RefLatitude": site.RefLatitude, "RefLongitude": site.RefLongitude,
                "RefElevation_m": None if site.RefElevation is None else site.RefElevation * self.unit_scale,
                "LandTitleNumber": site.LandTitleNumber, "psets": ifcopenshell.util.element.get_psets(site)})
        facilities = [f for f in model.by_type("IfcSpatialStructureElement")
                      if not f.is_a("IfcSite") and not f.is_a("IfcBuilding") and not f.is_a("IfcBuildingStorey")
                      and not f.is_a("IfcSpace")]
        if facilities:
            metadata["facilities"] = [{"ifc_class": f.is_a(), "GlobalId": f.GlobalId, "Name": f.Name}
                                      for f in facilities]
        if self.warnings:
            flat = [f"{_entity_name(model, i)}: {m}" if i else m for i, ms in self.warnings.items() for m in ms]
            metadata["parse_warnings"] = flat[:MAX_LOGGED_WARNINGS]
        return metadata

    # objects and parents -------------------------------------------------------------------------------

    def _collect(self) -> None:
        """A record for every object to yield, with its class, attributes and parent entity."""
        model = self.model
        spatial = [*model.by_type("IfcBuilding"), *model.by_type("IfcBuildingStorey"), *model.by_type("IfcSpace")]
        elements = [e for e in model.by_type("IfcElement")
                    if not e.is_a("IfcFeatureElement") and not e.is_a("IfcVirtualElement")]
        for entity in sorted(spatial + elements, key=lambda e: e.id()):
            try:
                record = _Record(entity, self._cim_class(entity))
                record.attributes = self._attributes(entity)
                record.parent_entity = self._parent_entity(entity)
            except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
                raise self.fail(entity, str(exc) or type(exc).__name__) from None
            if not isinstance(getattr(entity, "GlobalId", None), str) or not entity.GlobalId:
                raise self.fail(entity, "no GlobalId")
            record.errors += [f"IFC parser: {m}" for m in self.warnings.get(entity.id(), [])]
            self.records[entity.id()] = record
        seen: dict[str, Any] = {}
        for record in self.records.values():
            other = seen.setdefault(record.entity.GlobalId, record.entity)
            if other is not record.entity:
                raise self.fail(record.entity, f"GlobalId {record.entity.GlobalId} is also used by "
                                               f"{_entity_name(model, other.id())}")
        for record in self.records.values():
            parent = record.parent_entity
            if parent is not None and parent.id() in self.records:
                record.parent = parent.GlobalId
                if record.object_class == "Building" and self.records[parent.id()].object_class == "Building":
                    record.object_class = "BuildingPart"
            else:
                record.parent_entity = None

    def _cim_class(self, entity: Any) -> str:
        for ifc_class, cim_class in CIM_CLASSES:
            if entity.is_a(ifc_class):
                if cim_class == "Slab":
                    whole = ifcopenshell.util.element.get_aggregate(entity)
                    if ifcopenshell.util.element.get_predefined_type(entity) == "ROOF" or (
                            whole is not None and whole.is_a("IfcRoof")):
                        return "Roof"
                return cim_class
        if entity.is_a("IfcFlowSegment"):  # IFC2x3 has no IfcPipeSegment: a flow segment of a pipe type
            element_type = ifcopenshell.util.element.get_type(entity)
            if element_type is not None and element_type.is_a("IfcPipeSegmentType"):
                return "PipeSegment"
        name = entity.is_a()[3:]
        for suffix in ("StandardCase", "ElementedCase"):
            name = name.removesuffix(suffix) or name
        return name

    def _parent_entity(self, entity: Any) -> Any:
        """The host (doors, windows), else the whole it is part of, else its spatial container."""
        for fills in getattr(entity, "FillsVoids", None) or ():
            for voids in getattr(fills.RelatingOpeningElement, "VoidsElements", None) or ():
                if voids.RelatingBuildingElement is not None:
                    return voids.RelatingBuildingElement
        whole = ifcopenshell.util.element.get_aggregate(entity)
        if whole is not None and not whole.is_a("IfcProject"):
            return whole
        return ifcopenshell.util.element.get_container(entity)

    def _attributes(self, entity: Any) -> dict[str, Any]:
        scale = self.unit_scale
        attributes: dict[str, Any] = {"ifc_class": entity.is_a(), "GlobalId": entity.GlobalId}
        info = entity.get_info(include_identifier=False, recursive=False)
        for name in ("Description", "ObjectType", "LongName", "Tag"):
            if info.get(name) not in (None, ""):
                attributes[name] = _jsonable(info[name])
        # the occurrence's own value first: ifcopenshell lets the type's win, but exporters (ArchiCAD's FZK
        # house: a BASESLAB whose type says FLOOR) put the specific value on the occurrence
        own = info.get("PredefinedType")
        predefined = own if own not in (None, "NOTDEFINED") else \
            ifcopenshell.util.element.get_predefined_type(entity)
        if predefined == "USERDEFINED" and info.get("ObjectType"):
            predefined = info["ObjectType"]
        if predefined:
            attributes["PredefinedType"] = predefined
        for name in ("OverallHeight", "OverallWidth"):  # doors and windows; lengths, in metres here
            if isinstance(info.get(name), float):
                attributes[name] = info[name] * scale
        if entity.is_a("IfcBuildingStorey") and isinstance(info.get("Elevation"), float):
            attributes["elevation"] = info["Elevation"] * scale
        element_type = ifcopenshell.util.element.get_type(entity)
        if element_type is not None:
            attributes["type"] = {"ifc_class": element_type.is_a(), "Name": element_type.Name}
            type_predefined = getattr(element_type, "PredefinedType", None)
            if type_predefined not in (None, "NOTDEFINED"):
                attributes["type"]["PredefinedType"] = type_predefined
        references = ifcopenshell.util.classification.get_references(entity)
        if references:
            attributes["classification"] = [
                {"system": getattr(_source(r), "Name", None),
                 "code": getattr(r, "Identification", None) or getattr(r, "ItemReference", None), "name": r.Name}
                for r in sorted(references, key=lambda r: r.id())]
        attributes["psets"] = _jsonable(ifcopenshell.util.element.get_psets(entity))
        return attributes

    # geometry ------------------------------------------------------------------------------------------

    def _settings(self) -> ifcopenshell.geom.settings:
        settings = ifcopenshell.geom.settings()
        settings.set("use-world-coords", True)
        return settings

    def _triangulate(self) -> None:
        """Every record's body, through the multi-threaded iterator; what it skips is retried alone."""
        wanted = [r.entity for r in self.records.values() if _body(r.entity) is not None]
        if not wanted:
            return
        settings = self._settings()
        done: set[int] = set()
        iterator = ifcopenshell.geom.iterator(settings, self.model, self.threads, include=wanted,
                                              geometry_library=GEOMETRY_LIBRARY)
        if iterator.initialize():
            while True:
                shape = iterator.get()
                record = self.records.get(shape.id)
                if record is not None:
                    record.mesh = _mesh_from(shape.geometry, self.geo)
                    done.add(shape.id)
                if not iterator.next():
                    break
        for entity in wanted:
            if entity.id() in done:
                continue
            record = self.records[entity.id()]
            try:
                shape = ifcopenshell.geom.create_shape(settings, entity, geometry_library=FALLBACK_GEOMETRY_LIBRARY)
                record.mesh = _mesh_from(shape.geometry, self.geo)
            except Exception as exc:  # noqa: BLE001  the kernel raises bare RuntimeErrors and worse
                record.errors.append(f"body not triangulated: {exc}")
        for entity in wanted:
            record = self.records[entity.id()]
            record.solid = record.mesh is not None and _is_solid_representation(_body(entity))

    def _network(self, record: _Record) -> None:
        """Pipe segments: axis, diameter, material, kind; chambers: top centre, material, kind."""
        if record.object_class not in ("PipeSegment", "PipeNode"):
            return
        entity = record.entity
        kind = self._pipe_kind(entity)
        if kind is not None:
            record.typed["pipe_kind"] = kind
        material = self._material(entity, record)
        if material is not None:
            record.typed["material"] = material
        if record.object_class == "PipeNode":
            if record.mesh is not None:
                low, high = record.mesh.bounds
                record.network = shapely.Point(float(low[0] + high[0]) / 2, float(low[1] + high[1]) / 2, float(high[2]))
            return
        diameter = self._diameter(entity, record)
        if diameter is not None:
            record.typed["diameter_mm"] = diameter
        record.network = self._axis(entity, record)

    def _axis(self, entity: Any, record: _Record) -> Any:
        """The pipe's axis: its Axis representation where the file has one, else the mesh's long direction."""
        shape = getattr(entity, "Representation", None)
        axis = next((r for r in (shape.Representations if shape is not None else ())
                     if r.RepresentationIdentifier == "Axis"), None)
        if axis is not None:
            settings = self._settings()
            settings.set("dimensionality", ifcopenshell_wrapper.CURVES)
            try:
                curve = ifcopenshell.geom.create_shape(settings, entity, axis)
                line = _polyline(np.asarray(curve.geometry.verts, dtype=float).reshape(-1, 3),
                                 np.asarray(curve.geometry.edges, dtype=np.int64).reshape(-1, 2))
                if line is not None:
                    record.attributes["axis_source"] = "Axis representation"
                    return shapely.LineString(self.geo.apply(line))
                record.attributes["axis_source"] = "Axis representation not one open polyline"
            except Exception as exc:  # noqa: BLE001  an axis the kernel cannot do: the mesh still gives one
                record.attributes["axis_source"] = f"Axis representation failed: {exc}"
        if record.mesh is None:
            return None
        record.attributes["axis_source"] = "mesh principal direction" + (
            f" ({record.attributes['axis_source']})" if "axis_source" in record.attributes else "")
        return _principal_axis(record.mesh.verts)

    def _pipe_kind(self, entity: Any) -> str | None:
        for assignment in getattr(entity, "HasAssignments", None) or ():
            group = getattr(assignment, "RelatingGroup", None)
            if group is not None and group.is_a("IfcSystem"):
                kind = PIPE_KIND_BY_SYSTEM.get(str(getattr(group, "PredefinedType", None) or ""))
                if kind is not None:
                    return kind
        return None

    def _material(self, entity: Any, record: _Record) -> str | None:
        """The material code (see MATERIAL_CODES), else the first IfcMaterial's name; all names kept."""
        materials = ifcopenshell.util.element.get_materials(entity)
        if not materials:
            return None
        record.attributes["materials"] = [{"Name": m.Name, "Category": getattr(m, "Category", None)}
                                          for m in materials]
        for m in materials:
            for word in (getattr(m, "Category", None), m.Name):
                if word and str(word).strip().lower() in MATERIAL_CODES:
                    return MATERIAL_CODES[str(word).strip().lower()]
        return materials[0].Name or None

    def _diameter(self, entity: Any, record: _Record) -> float | None:
        """Diameter in mm: a declared pset value (DIAMETER_PROPERTIES) first, else twice the radius of the
        body's circular profile or swept disk (the outer diameter). The source is kept in the attributes."""
        psets = ifcopenshell.util.element.get_psets(entity, psets_only=True)
        for prop in DIAMETER_PROPERTIES:
            for pset_name, values in sorted(psets.items()):
                value = values.get(prop)
                if isinstance(value, (int, float)) and value > 0:
                    record.attributes["diameter_source"] = f"{pset_name}.{prop}"
                    return round(float(value) * self.unit_scale * 1000, 3)
        body = _body(entity)
        radius = _profile_radius(body) if body is not None else None
        if radius is None:
            usage = ifcopenshell.util.element.get_material(entity)
            profile_set = getattr(usage, "ForProfileSet", None) or (usage if usage is not None and usage.is_a(
                "IfcMaterialProfileSet") else None)
            for profile in getattr(profile_set, "MaterialProfiles", None) or ():
                radius = getattr(profile.Profile, "Radius", None)
                if radius:
                    break
        if radius:
            record.attributes["diameter_source"] = "profile radius (outer diameter)"
            return round(2 * float(radius) * self.unit_scale * 1000, 3)
        return None

    # storeys and buildings -----------------------------------------------------------------------------

    def _storeys_and_buildings(self) -> None:
        """Footprints, storey elevations and heights, building heights and floors."""
        children: dict[int, list[_Record]] = {}
        for record in self.records.values():
            if record.parent_entity is not None:
                children.setdefault(record.parent_entity.id(), []).append(record)
        self.children = children

        def plan(record: _Record) -> list[np.ndarray]:
            """Plan triangles of the record's descendant elements (not spaces, not storeys)."""
            out: list[np.ndarray] = []
            for child in children.get(record.entity.id(), []):
                if child.object_class in ("Storey", "Building", "BuildingPart"):
                    continue
                if child.mesh is not None and child.object_class != "Space":
                    out.append(child.mesh.plan_triangles())
                out += plan(child)
            return out

        def top(record: _Record) -> float | None:
            zs = [c.mesh.bounds[1][2] for c in children.get(record.entity.id(), []) if c.mesh is not None
                  and c.object_class != "Space"]
            zs += [z for c in children.get(record.entity.id(), []) if (z := top(c)) is not None]
            return max(zs) if zs else None

        storeys = [r for r in self.records.values() if r.object_class == "Storey"]
        for storey in storeys:
            storey.footprint = _plan_union(plan(storey))
            placement = storey.entity.ObjectPlacement
            try:
                world = (ifcopenshell.util.placement.get_local_placement(placement)[:3, 3] * self.unit_scale
                         if placement is not None else np.zeros(3))
            except (AttributeError, TypeError, ValueError, RuntimeError) as exc:
                raise self.fail(storey.entity, f"its placement cannot be read ({exc})") from None
            storey.base_z = float(self.geo.apply(world[None, :])[0, 2])
            elevation = storey.attributes.get("elevation")
            if elevation is None:  # no Elevation: the placement's height above its building's
                building = storey.parent_entity
                ref = (ifcopenshell.util.placement.get_local_placement(building.ObjectPlacement)[2, 3]
                       * self.unit_scale if building is not None and building.ObjectPlacement is not None else 0.0)
                elevation = float(world[2] - ref)
            storey.elevation = elevation

        # elements whose body is their parts' (IfcOpenHouse's roof and windows): the parts' plan view
        for record in self.records.values():
            if (record.mesh is None and record.footprint is None
                    and record.object_class not in ("Storey", "Building", "BuildingPart", "Space")):
                parts = plan(record)
                if parts:
                    record.footprint = _plan_union(parts)

        buildings = [r for r in self.records.values() if r.object_class in ("Building", "BuildingPart")]
        for building in buildings:
            own = sorted((c for c in children.get(building.entity.id(), []) if c.object_class == "Storey"),
                         key=lambda s: s.elevation or 0.0)
            for lower, upper in zip(own, own[1:] + [None], strict=True):
                if upper is not None:
                    height = (upper.elevation or 0.0) - (lower.elevation or 0.0)
                else:
                    z = top(lower)
                    height = None if z is None or lower.base_z is None else z - lower.base_z
                if height is not None and height > 0:
                    lower.typed["height"] = round(float(height), 3)
            direct = [p for c in children.get(building.entity.id(), []) if c.object_class not in ("Storey", "Space")
                      for p in ([c.mesh.plan_triangles()] if c.mesh is not None else []) + plan(c)]
            parts = [s.footprint for s in own if s.footprint is not None]
            if direct:
                parts.append(_plan_union(direct))
            if parts:
                building.footprint = shapely.make_valid(shapely.union_all(parts))
            above = [s for s in own if (s.elevation or 0.0) > ABOVE_GROUND_M]
            if own:
                building.typed["floors"] = len(above)
            meshes = self._descendant_meshes(building)
            if meshes:
                z_top = max(m.bounds[1][2] for m in meshes)
                ground = above[0].base_z if above else min(m.bounds[0][2] for m in meshes)
                if ground is not None and z_top > ground:
                    building.typed["height"] = round(float(z_top - ground), 3)
            year = _year((ifcopenshell.util.element.get_pset(building.entity, "Pset_BuildingCommon") or {})
                         .get("YearOfConstruction"))
            if year is not None:
                building.typed["year_built"] = year

    def _descendant_meshes(self, record: _Record) -> list[_Mesh]:
        out: list[_Mesh] = []
        for child in self.children.get(record.entity.id(), []):
            if child.mesh is not None and child.object_class != "Space":
                out.append(child.mesh)
            if child.object_class not in ("Building", "BuildingPart"):
                out += self._descendant_meshes(child)
        return out

    # order and output ----------------------------------------------------------------------------------

    def _ordered(self) -> list[_Record]:
        """Parents before children: by depth in the tree, then buildings, storeys (by elevation), spaces,
        elements, then file order."""
        rank = {"Building": 0, "BuildingPart": 0, "Storey": 1, "Space": 2}
        for record in self.records.values():
            depth, parent, seen = 0, record.parent_entity, {record.entity.id()}
            while parent is not None:
                if parent.id() in seen:
                    raise self.fail(record.entity, "its decomposition/containment loops back to itself")
                seen.add(parent.id())
                depth += 1
                parent = self.records[parent.id()].parent_entity
            record.depth = depth
        return sorted(self.records.values(), key=lambda r: (r.depth, rank.get(r.object_class, 3),
                                                            r.elevation or 0.0, r.entity.id()))

    def _extent(self) -> list[float] | None:
        meshes = [r.mesh for r in self.records.values() if r.mesh is not None]
        if not meshes:
            return None
        low = np.min([m.bounds[0] for m in meshes], axis=0)
        high = np.max([m.bounds[1] for m in meshes], axis=0)
        return [float(v) for v in (*low, *high)]

    def _surface_type(self, record: _Record) -> str | None:
        """The semantic type of the record's polygons: its own class's, else that of the element it is part
        of (a window's mullions and glazing are Window surfaces)."""
        while record is not None:
            surface = SURFACE_TYPES.get(record.object_class)
            if surface is not None or record.object_class in ("Storey", "Building", "BuildingPart"):
                return surface
            parent = record.parent_entity
            record = self.records.get(parent.id()) if parent is not None else None
        return None

    def _objects(self, ordered: list[_Record]) -> Iterator[SourceObject]:
        for record in ordered:
            geometries: list[tuple[int, Any, list[str] | None]] = []
            if record.network is not None:
                geometries.append((NETWORK_LEVEL, record.network, None))
            if record.mesh is not None:
                mesh = record.mesh.multipolygon()
                if record.object_class in ("PipeSegment", "PipeNode"):
                    surfaces = None
                else:
                    surface = self._surface_type(record)
                    surfaces = None if surface is None else [surface] * len(mesh.geoms)
                level = SPACE_LEVEL if record.object_class == "Space" else ELEMENT_LEVEL
                geometries.append((level, mesh, surfaces))
            entity = record.entity
            yield SourceObject(
                source_id=entity.GlobalId, object_class=record.object_class, parent=record.parent,
                name=entity.Name or None, typed=dict(record.typed), attributes=record.attributes,
                geometries=geometries, footprint=record.footprint, solid=record.solid, errors=list(record.errors))


# --- small geometry helpers ----------------------------------------------------------------------------


def _source(reference: Any) -> Any:
    """The classification a reference belongs to (IFC2x3 ItemReference/ReferencedSource, IFC4 nesting)."""
    source = getattr(reference, "ReferencedSource", None)
    while source is not None and source.is_a("IfcClassificationReference"):
        source = getattr(source, "ReferencedSource", None)
    return source


def _profile_radius(representation: Any) -> float | None:
    """The outer radius (project units) of a circular body: a circle (hollow) profile swept, or a swept disk."""
    for item in representation.Items or ():
        if item.is_a("IfcMappedItem"):
            radius = _profile_radius(item.MappingSource.MappedRepresentation)
        elif item.is_a("IfcSweptDiskSolid"):
            radius = item.Radius
        elif item.is_a("IfcSweptAreaSolid") and item.SweptArea.is_a("IfcCircleProfileDef"):
            radius = item.SweptArea.Radius
        else:
            radius = None
        if radius:
            return float(radius)
    return None


def _polyline(verts: np.ndarray, edges: np.ndarray) -> np.ndarray | None:
    """The vertices of a curve's edges in path order; None unless they form one open or closed chain."""
    if not len(edges):
        return None
    neighbours: dict[int, list[int]] = {}
    for a, b in edges.tolist():
        if a != b:
            neighbours.setdefault(a, []).append(b)
            neighbours.setdefault(b, []).append(a)
    if not neighbours or any(len(n) > 2 for n in neighbours.values()):
        return None
    start = next((v for v, n in neighbours.items() if len(n) == 1), int(edges[0, 0]))
    path, previous = [start], None
    while True:
        current = path[-1]
        following = [n for n in neighbours[current] if n != previous]
        if not following or following[0] == start:
            break
        previous = current
        path.append(following[0])
    if len(path) != len(neighbours):
        return None
    return verts[path]


def _principal_axis(verts: np.ndarray) -> shapely.LineString | None:
    """A straight axis through a tube-like mesh: along its principal direction, from end to end, through
    the middle of its cross-section's extent (not its vertex mean, which dense tessellation would bias)."""
    if len(verts) < 2:
        return None
    centre = verts.mean(axis=0)
    _, _, vt = np.linalg.svd(verts - centre, full_matrices=False)
    local = (verts - centre) @ vt.T
    low, high = local.min(axis=0), local.max(axis=0)
    mid = (low + high) / 2
    ends = np.array([[low[0], mid[1], mid[2]], [high[0], mid[1], mid[2]]]) @ vt + centre
    if np.allclose(ends[0], ends[1]):
        return None
    return shapely.LineString(ends)

