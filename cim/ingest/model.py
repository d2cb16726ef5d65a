"""What every reader hands to the loader: objects as they are in the source file, in the file's CRS.

Readers (CityJSON, CityGML, IFC, survey tables...) only parse: they do not transform, validate, give
public ids or write. The loader (:mod:`cim.ingest.load`) places the objects in the storage CRS (or at an
``--anchor``), checks them against the quality rules, and writes them in one transaction.

CIM classes and levels (see :mod:`cim.db.models`): Building/BuildingPart (CIM2 massing ≈ LOD1, CIM3
with roofs ≈ LOD2, CIM4 detailed exterior ≈ LOD3), Storey/Space (CIM5), Wall/Slab/Roof/Door/Window/Stair
(CIM6), Road, Bridge, PipeSegment, PipeNode, TINRelief (CIM1), and any other class a file brings.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pyproj import CRS


@dataclass
class SourceObject:
    """One object of a source file.

    Attributes:
        source_id: its id in the file (CityJSON key, gml:id, IFC GlobalId, 物探点号); unique per file.
        object_class: the CIM class (``Building``, ``Wall``, ``PipeSegment``...); ``cim.db.models.CLASS_LAYER``
            gives its layer unless the loader is told otherwise.
        parent: the source_id of its parent in the same file (a BuildingPart's Building, a Space's Storey,
            a Window's Wall), or None.
        name: a human name, if the file has one.
        typed: values for the typed columns (usage, floors, height, year_built, address, district,
            pipe_kind, diameter_mm, material, depth_m, owner, laid_date) where the file has them.
        attributes: every other attribute, JSON-serialisable (property sets, codes, the source's own names).
        geometries: per CIM level, the 3D geometry in the file's CRS — a MultiPolygon Z of surfaces (each
            polygon one face, outer ring counter-clockwise seen from outside), a LineString Z (pipe axis), a
            Point Z (a node) — and the semantic type of each polygon (``RoofSurface``, ``WallSurface``,
            ``GroundSurface``, ``Door``, ``Window``...) or None. A fourth item may give the source's LOD
            label ("2.2") the geometry came from.
        other_lods: source LODs superseded at the same CIM level by a more detailed one, as
            ``(lod, cim_level, geometry, surface types)``: kept for export, not served.
        footprint: the 2D footprint in the file's CRS; None to derive it from the geometries.
        solid: True when the geometry at the object's levels is meant to be a closed shell (quality rules
            check closure for these).
        errors: problems the reader met with this object (kept, reported by the quality rules).
        ends: for a pipe segment of a survey table, the source ids of its start and end points (管点): the
            loader draws the segment between them when the table has no geometry, and takes heights from
            them when the geometry is 2D.
        end_heights: the segment's start and end elevations (起点高程/终点高程) where the table gives them.
    """

    source_id: str
    object_class: str
    parent: str | None = None
    name: str | None = None
    typed: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    geometries: list[tuple] = field(default_factory=list)
    other_lods: list[tuple[str, int, Any, list[str] | None]] = field(default_factory=list)
    footprint: Any = None
    solid: bool = False
    errors: list[str] = field(default_factory=list)
    ends: tuple[str, str] | None = None
    end_heights: tuple[float | None, float | None] = (None, None)


@dataclass
class SourceFile:
    """A parsed file: its CRS (None when the file declares none), metadata, and its objects (an iterator,
    so large files stream).

    Attributes:
        crs: the horizontal (or compound) CRS of the coordinates, None when undeclared.
        kind: reader name (``cityjson``, ``citygml``, ``ifc``, ``survey``...), recorded in the lineage.
        metadata: anything worth keeping about the file (version, schema, georeferencing found).
        local: True when coordinates are in a local engineering system (unreferenced IFC): placing them
            needs ``--anchor``.
    """

    crs: CRS | None
    kind: str
    objects: Iterator[SourceObject]
    metadata: dict[str, Any] = field(default_factory=dict)
    local: bool = False


class ReadError(ValueError):
    """The file cannot be read; the message names the file and, where known, the line or object."""
