"""CityGML 2.0 and 3.0 files (1.0 is read like 2.0) → :class:`SourceObject`, streamed member by member.

A CityGML file can be gigabytes of XML, so it is never loaded whole: ``lxml.etree.iterparse`` hands over
one top-level ``cityObjectMember`` at a time, which is read completely (its ``xlink:href`` references
resolved inside it) and then cleared. A first, short pass reads only the root element and the first
``srsName`` so that the :class:`SourceFile` knows its version and CRS before any object is read.

CityGML LODs map to CIM levels (城市信息模型分级) as follows; LOD0 and LOD4 have no CIM level here and are
not read (``metadata["not_read"]`` lists what a file held that was skipped):

=====  ==========================================  =========
LOD    what it is                                  CIM level
=====  ==========================================  =========
1      block model (massing)                       2
2      roofs and wall surfaces                     3
3      detailed exterior with doors and windows    4
=====  ==========================================  =========

An object's geometry at a level is every polygon of its own ``lodN…`` properties (``lodNSolid``,
``lodNMultiSurface``, ``lodNGeometry``…) and of its thematic surfaces (``WallSurface``, ``RoofSurface``…),
each polygon once even when a solid and a surface both name it; the surface's class is the polygon's
semantic type. Building parts, installations and LOD3 openings (doors, windows) become objects of their
own, children of the building; their geometry is not repeated in the building's, except where the
building's own solid references their polygons (a LoD3 solid closes over its windows).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from lxml import etree
from pyproj import CRS
from pyproj.exceptions import CRSError

from cim.ingest.model import ReadError, SourceFile, SourceObject

__all__ = ["read_citygml"]

_CITYGML = "http://www.opengis.net/citygml/"
_CITYGML_VERSION = re.compile(r"http://www\.opengis\.net/citygml/(\d\.\d)")
_GML = frozenset({"http://www.opengis.net/gml", "http://www.opengis.net/gml/3.2"})
_GML_IDS = ("{http://www.opengis.net/gml}id", "{http://www.opengis.net/gml/3.2}id")
_XLINK_HREF = "{http://www.w3.org/1999/xlink}href"
_XAL = "urn:oasis:names:tc:ciq:"

# CityGML LOD → CIM level (LOD0 footprints and LOD4 interiors have none here).
_LOD_LEVEL = {1: 2, 2: 3, 3: 4}
# The lodN properties whose polygons are an object's geometry. Curves (lodNMultiCurve, terrain
# intersections), points and implicit (template) geometries carry no surfaces and are not read.
_LOD_GEOMETRY = re.compile(r"lod([0-4])(Solid|MultiSolid|MultiSurface|Surface|Geometry)")
# GML elements that are one face: a polygon, or a patch of a gml:Surface / gml:TriangulatedSurface.
_FACES = frozenset({"Polygon", "PolygonPatch", "Triangle", "Rectangle"})

# Features nested in an object that are objects of their own (CityGML local name → CIM class).
_CHILD_CLASSES = {
    "BuildingPart": "BuildingPart",
    "BuildingInstallation": "BuildingInstallation",
    "Door": "Door",  # 2.0 bldg:opening, 3.0 con:filling
    "Window": "Window",
    "DoorSurface": "Door",  # 3.0 con:fillingSurface of a wall or roof
    "WindowSurface": "Window",
    "BridgePart": "BridgePart",
    "TunnelPart": "TunnelPart",
    "TINRelief": "TINRelief",  # a ReliefFeature's component: the CIM1 terrain
}
# Top-level classes renamed to the CIM's: every kind of CityGML road surface is a CIM Road.
_TOP_CLASSES = {"Road": "Road", "Street": "Road", "Track": "Road", "Square": "Road"}
# Interior features (LOD4 rooms, 3.0 storeys, rooms, constructive elements): their geometry is not the
# building's, and they are not read as objects yet; doors and windows inside them still are.
_NOT_GEOMETRY_OF = frozenset({"Room", "IntBuildingInstallation", "BuildingFurniture", "BuildingRoom",
                              "Storey", "BuildingUnit", "BuildingConstructiveElement"})
# Properties that hold no geometry of the object: not walked (appearances can be large).
_NOT_WALKED = frozenset({"appearance", "address", "externalReference", "genericAttribute", "generalizesTo",
                         "groupMember", "parent", "relatedTo", "dynamizer"})
# Thematic surfaces whose class name does not end in "Surface".
_THEMATIC = frozenset({"TrafficArea", "AuxiliaryTrafficArea", "Marking"})
_OPENING_TYPES = {"Door": "Door", "Window": "Window", "DoorSurface": "Door", "WindowSurface": "Window"}

# 2.0 generic attributes (3.0 writes gen:StringAttribute... inside core:genericAttribute)
_GENERIC_20 = frozenset({"stringAttribute", "intAttribute", "doubleAttribute", "dateAttribute",
                         "uriAttribute", "measureAttribute", "genericAttributeSet"})
_NUMBER_KINDS = {"int": int, "double": float, "measure": float}

# AdV (German surveying authorities, GeoInfoDok) srsName codes: urn:adv:crs:<horizontal>[*<vertical>].
# The FZK-Haus files say ETRS89_UTM32*DE_DHHN92_NH: ETRS89 / UTM zone 32N (EPSG:25832) with normal heights
# in DHHN92 (EPSG:5783), together the compound EPSG:5555; the Bavarian TUM file says DE_DHHN2016_NH, the
# newer German height system (EPSG:7837). Only the horizontal part places the coordinates.
_ADV_HORIZONTAL = {"ETRS89_UTM32": 25832, "ETRS89_UTM33": 25833, "ETRS89_Lat-Lon": 4258,
                   "ETRS89_Lat-Lon_h": 4937, "DE_DHDN_3GK2": 31466, "DE_DHDN_3GK3": 31467,
                   "DE_DHDN_3GK4": 31468, "DE_DHDN_3GK5": 31469}
_ADV_VERTICAL = {"DE_DHHN92_NH": 5783, "DE_DHHN2016_NH": 7837}
_EPSG_FORMS = re.compile(
    r"(?:EPSG:|urn:(?:x-)?ogc:def:crs:EPSG:(?:[\d.]*:)?|https?://www\.opengis\.net/def/crs/EPSG/[^/]+/)(\d+)",
    re.IGNORECASE)
_CRS84 = re.compile(r"(urn:ogc:def:crs:OGC:1\.3:CRS84|https?://www\.opengis\.net/def/crs/OGC/1\.3/CRS84)",
                    re.IGNORECASE)


@cache
def _split(tag: str) -> tuple[str, str]:
    """(namespace, local name) of a Clark-notation tag; cached because a file uses few distinct tags."""
    if tag[:1] == "{":
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


# Elements carrying a gml:id (either GML version), found in C rather than by a Python loop over the tree.
_WITH_GML_ID = etree.XPath("descendant-or-self::*[@g:id or @g32:id]", namespaces={
    "g": "http://www.opengis.net/gml", "g32": "http://www.opengis.net/gml/3.2"})


def _gml_id(el: etree._Element) -> str | None:
    return el.get(_GML_IDS[0]) or el.get(_GML_IDS[1])


def _text(el: etree._Element | None) -> str:
    """An element's text with whitespace collapsed (pretty-printed files wrap codes in newlines)."""
    return " ".join((el.text or "").split()) if el is not None else ""


def _surface_type(local: str) -> str | None:
    """The semantic type a CityGML feature gives its polygons: its class for a thematic surface, Door or
    Window for openings in either version; None for anything else."""
    if local in _OPENING_TYPES:
        return _OPENING_TYPES[local]
    if local.endswith("Surface") or local in _THEMATIC:
        return local
    return None


def _crs_from_srs_name(srs_name: str) -> tuple[CRS, int | None]:
    """(horizontal CRS, vertical EPSG code or None) of a GML srsName.

    Forms read: ``EPSG:25832``, ``EPSG:25832+5783``, ``urn:ogc:def:crs:EPSG::25832``,
    ``http://www.opengis.net/def/crs/EPSG/0/25832``, the compounds
    ``urn:ogc:def:crs,crs:EPSG::25832,crs:EPSG::7837`` and ``http://www.opengis.net/def/crs-compound?1=…&2=…``,
    OGC CRS84 and the AdV ``urn:adv:crs:`` codes.
    Parsed here rather than by ``CRS.from_user_input`` so that a free text (a CRS *name*, a PROJ string) in
    srsName is refused instead of guessed.

    Raises:
        ValueError: the srsName is not one of these forms or names an unknown code.
    """
    text = srs_name.strip()
    vertical: int | None = None
    if text.lower().startswith("urn:adv:crs:"):
        horizontal_name, _, vertical_name = text[len("urn:adv:crs:"):].partition("*")
        if horizontal_name not in _ADV_HORIZONTAL or (vertical_name and vertical_name not in _ADV_VERTICAL):
            raise ValueError("unknown AdV CRS code")
        codes = [_ADV_HORIZONTAL[horizontal_name]] + ([_ADV_VERTICAL[vertical_name]] if vertical_name else [])
    elif _CRS84.fullmatch(text):
        return CRS.from_user_input("OGC:CRS84"), None
    else:
        if text.lower().startswith("urn:ogc:def:crs,"):
            parts = [p.replace("crs:", "urn:ogc:def:crs:", 1) for p in text.split(",")[1:]]
        elif "/def/crs-compound?" in text:
            parts = [p.partition("=")[2] for p in text.partition("?")[2].split("&")]
        else:
            parts = text.split("+") if re.fullmatch(r"EPSG:\d+\+\d+", text, re.IGNORECASE) else [text]
            if len(parts) == 2:
                parts[1] = "EPSG:" + parts[1]
        matches = [_EPSG_FORMS.fullmatch(p.strip()) for p in parts]
        if not parts or not all(matches):
            raise ValueError("not an EPSG, OGC or AdV CRS identifier")
        codes = [int(m.group(1)) for m in matches if m]
    try:
        crs = CRS.from_epsg(codes[0])
    except CRSError as exc:
        raise ValueError(f"unknown EPSG code {codes[0]}") from exc
    if crs.is_compound:  # a registered compound (EPSG:5555): its first part is the horizontal one
        vertical = crs.sub_crs_list[1].to_epsg() if len(crs.sub_crs_list) > 1 else None
        crs = crs.sub_crs_list[0]
    if len(codes) > 1:
        try:
            CRS.from_epsg(codes[1])
        except CRSError as exc:
            raise ValueError(f"unknown EPSG code {codes[1]}") from exc
        vertical = codes[1]
    return crs, vertical


def _latitude_first(crs: CRS) -> bool:
    """True for a geographic CRS whose first axis is latitude (EPSG:4326, 4490): GML writes positions in
    the CRS's axis order, and the SourceFile wants x = longitude. Projected CRSs are left as written (files
    in north-first systems such as EPSG:4550 are in practice written easting first)."""
    return crs.is_geographic and bool(crs.axis_info) and crs.axis_info[0].direction.lower() == "north"


@dataclass
class _Header:
    """What the first pass learns: version, CRS declaration, the model's envelope."""

    version: str
    srs_name: str | None = None
    srs_line: int | None = None
    dimension: int = 3
    extent: list[float] | None = None


@dataclass
class _Context:
    """Per-file state shared by the member readers."""

    path: Path
    version: str
    srs_name: str | None
    crs: CRS | None
    swap_xy: bool
    dimension: int
    not_read: set[str] = field(default_factory=set)
    srs_seen: dict[str, CRS] = field(default_factory=dict)

    def fail(self, el: etree._Element, message: str) -> ReadError:
        """A ReadError naming the file, the line and the nearest gml:id (the polygon, surface or object)."""
        gid = next((g for g in (_gml_id(a) for a in (el, *el.iterancestors())) if g), None)
        where = f"line {el.sourceline}" + (f" (gml:id {gid})" if gid else "")
        return ReadError(f"{self.path}: {where}: {message}")


def read_citygml(path: Path) -> SourceFile:
    """Open a CityGML 2.0 or 3.0 file; its objects stream from ``SourceFile.objects``.

    The root element and CRS are checked now; each object is read when the iterator reaches it, so a
    broken polygon deep in a large file raises then. ``metadata`` gains ``objects``, ``objects_by_class``
    and ``not_read`` once the iterator is exhausted (the count needs the whole file).

    Raises:
        ReadError: the file is missing, not XML, not a CityGML CityModel, or declares an unknown srsName
            (while iterating: a malformed polygon, posList or srsName), naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path}: no such file")
    header = _scan_header(path)
    crs: CRS | None = None
    vertical: int | None = None
    if header.srs_name is not None:
        try:
            crs, vertical = _crs_from_srs_name(header.srs_name)
        except ValueError as exc:
            raise ReadError(f"{path}: line {header.srs_line}: unknown srsName {header.srs_name!r} "
                            f"({exc})") from None
    ctx = _Context(path, header.version, header.srs_name, crs, crs is not None and _latitude_first(crs),
                   header.dimension)
    if crs is not None and header.srs_name is not None:
        ctx.srs_seen[header.srs_name] = crs
    metadata: dict[str, Any] = {"citygml_version": header.version, "srs_name": header.srs_name}
    if vertical is not None:
        metadata["vertical_crs"] = f"EPSG:{vertical}"
    if header.extent is not None:
        e = header.extent
        metadata["extent"] = [e[1], e[0], e[2], e[4], e[3], e[5]] if ctx.swap_xy else e
    return SourceFile(crs, "citygml", _objects(ctx, metadata), metadata)


def _scan_header(path: Path) -> _Header:
    """The version (from the root's namespace), the first srsName and the model's envelope.

    Usually done within the first kilobytes (the root envelope declares the CRS); a file that declares
    its CRS only on geometries is scanned up to the first one, clearing members as it goes.
    """
    header: _Header | None = None
    root: etree._Element | None = None
    try:
        with path.open("rb") as fh:
            for event, el in etree.iterparse(fh, events=("start", "end"), huge_tree=True,
                                             resolve_entities=False, remove_comments=True, remove_pis=True):
                if root is None:
                    root = el
                    header = _Header(_version_of(root, path))
                assert header is not None
                if event == "start":
                    if header.srs_name is None and el.get("srsName"):
                        header.srs_name = el.get("srsName", "").strip()
                        header.srs_line = el.sourceline
                        if el.get("srsDimension", "").isdigit():
                            header.dimension = int(el.get("srsDimension", "3"))
                        if el.getparent() is not root and _split(el.tag)[1] != "Envelope":
                            break  # found on a geometry inside a member: nothing more to learn
                    elif header.srs_name is not None and el.getparent() is root:
                        break  # the first member starts: the root envelope is behind us
                elif el.getparent() is root:
                    if _split(el.tag)[1] == "boundedBy":
                        header.extent = _envelope(el)
                        if header.srs_name is not None:
                            break
                    el.clear()
                    while el.getprevious() is not None:
                        del root[0]
    except etree.XMLSyntaxError as exc:
        raise ReadError(f"{path}: line {max(exc.lineno, 1)}: not well-formed XML ({exc.msg})") from None
    if header is None:
        raise ReadError(f"{path}: line 1: empty document")
    return header


def _version_of(root: etree._Element, path: Path) -> str:
    ns, local = _split(root.tag)
    match = _CITYGML_VERSION.fullmatch(ns)
    if local != "CityModel" or match is None:
        raise ReadError(f"{path}: line {root.sourceline}: not CityGML: the root element is {local!r} in "
                        f"{ns or 'no namespace'!r}, not a CityGML 2.0 or 3.0 CityModel")
    version = match.group(1)
    if version not in ("1.0", "2.0", "3.0"):
        raise ReadError(f"{path}: line {root.sourceline}: CityGML {version}; 2.0 and 3.0 are read")
    return version


def _envelope(bounded_by: etree._Element) -> list[float] | None:
    """[minx, miny, minz, maxx, maxy, maxz] of the model's 3D gml:Envelope, as written; None otherwise."""
    lower = bounded_by.find(".//{*}lowerCorner")
    upper = bounded_by.find(".//{*}upperCorner")
    try:
        lo, hi = [float(v) for v in _text(lower).split()], [float(v) for v in _text(upper).split()]
    except ValueError:
        return None
    return lo + hi if len(lo) == len(hi) == 3 else None


def _objects(ctx: _Context, metadata: dict[str, Any]) -> Iterator[SourceObject]:
    """Every object of the file, member by member, parents before children; each member's tree is dropped
    once read, so memory holds one member at a time."""
    by_class: dict[str, int] = {}
    members = 0
    try:
        with ctx.path.open("rb") as fh:
            for _, member in etree.iterparse(fh, events=("end",), tag="{*}cityObjectMember", huge_tree=True,
                                             resolve_entities=False, remove_comments=True, remove_pis=True):
                parent = member.getparent()
                top_level = parent is not None and parent.getparent() is None
                if not top_level or not _split(member.tag)[0].startswith(_CITYGML):
                    continue
                members += 1
                feature = next(member.iterchildren(etree.Element), None)
                if feature is not None:  # None: the member only references (xlink:href) an object elsewhere
                    for obj in _MemberReader(ctx, feature, members).objects():
                        by_class[obj.object_class] = by_class.get(obj.object_class, 0) + 1
                        yield obj
                member.clear(keep_tail=False)
                while member.getprevious() is not None:
                    del parent[0]
    except etree.XMLSyntaxError as exc:
        raise ReadError(f"{ctx.path}: line {max(exc.lineno, 1)}: not well-formed XML ({exc.msg})") from None
    metadata["city_object_members"] = members
    metadata["objects"] = sum(by_class.values())
    metadata["objects_by_class"] = by_class
    metadata["not_read"] = sorted(ctx.not_read)


@dataclass
class _Collected:
    """What walking one object's XML finds: its faces per CIM level (face element → [semantic type,
    reversed]), those reached from a lodNSolid, and the nested features that are objects of their own."""

    faces: dict[int, dict[etree._Element, list[Any]]] = field(default_factory=dict)
    solid_faces: dict[int, set[etree._Element]] = field(default_factory=dict)
    lods: dict[int, str | None] = field(default_factory=dict)  # the source LOD of each level ("2")
    children: list[etree._Element] = field(default_factory=list)

    @property
    def solid(self) -> bool:
        """True when every level's geometry is exactly the faces of its lodNSolid. A surface outside the
        solid (the FZK-Haus LoD3 roof overhangs) makes the level an open surface model: the quality rules
        would reject it as an unclosed solid."""
        levels = {level: faces for level, faces in self.faces.items() if faces}
        return bool(levels) and all(set(faces) == self.solid_faces.get(level, set())
                                    for level, faces in levels.items())


class _MemberReader:
    """Reads one top-level city object (and the objects nested in it) from its complete member tree."""

    def __init__(self, ctx: _Context, feature: etree._Element, member_no: int) -> None:
        self.ctx = ctx
        self.feature = feature
        self.member_no = member_no
        self._ids: dict[str, etree._Element] | None = None

    def objects(self) -> Iterator[SourceObject]:
        local = _split(self.feature.tag)[1]
        source_id = _gml_id(self.feature) or f"{local}#{self.member_no}"
        yield from self._read(self.feature, _TOP_CLASSES.get(local, local), source_id, None)

    def _read(self, feature: etree._Element, object_class: str, source_id: str,
              parent: str | None) -> Iterator[SourceObject]:
        local = _split(feature.tag)[1]
        obj = SourceObject(source_id=source_id, object_class=object_class, parent=parent)
        if local != object_class:
            obj.attributes["citygml_class"] = local
        _read_attributes(feature, obj)
        found = _Collected()
        self._walk(feature, found, _surface_type(local), True, obj)
        ground: list[Any] = []
        for level in sorted(found.faces):
            geometry, types = self._multipolygon(found.faces[level], obj)
            if geometry is None:
                continue
            obj.geometries.append((level, geometry, types, found.lods[level]))
            if types and "GroundSurface" in types:
                ground = [p for p, t in zip(geometry.geoms, types, strict=True) if t == "GroundSurface"]
        obj.solid = found.solid
        if ground:  # the highest level's ground surfaces are the most detailed footprint
            footprint = shapely.union_all(shapely.force_2d(np.asarray(ground, dtype=object)))
            obj.footprint = None if footprint.is_empty else footprint
        yield obj
        numbers: dict[str, int] = {}
        for child in found.children:
            child_local = _split(child.tag)[1]
            numbers[child_local] = numbers.get(child_local, 0) + 1
            child_id = _gml_id(child) or f"{source_id}/{child_local}#{numbers[child_local]}"
            yield from self._read(child, _CHILD_CLASSES[child_local], child_id, source_id)

    def _walk(self, el: etree._Element, found: _Collected, semantic: str | None, collecting: bool,
              obj: SourceObject) -> None:
        """Find the object's geometry properties below ``el``, stopping at nested objects (collected in
        ``found.children``); ``semantic`` is the thematic surface being walked, if any."""
        for child in el.iterchildren(etree.Element):
            ns, local = _split(child.tag)
            if not ns.startswith(_CITYGML):
                continue  # gml:name/boundedBy, xAL, ADEs: geometry hangs off CityGML properties only
            if local[:1].isupper():  # a nested feature
                if local in _CHILD_CLASSES:
                    found.children.append(child)
                elif local in _NOT_GEOMETRY_OF:
                    self.ctx.not_read.add(local)
                    self._walk(child, found, semantic, False, obj)
                else:
                    self._walk(child, found, _surface_type(local) or semantic, collecting, obj)
                continue
            lod = _LOD_GEOMETRY.fullmatch(local)
            if lod is not None or (local == "tin" and "relief" in ns):
                if not collecting:
                    continue
                level = 1 if lod is None else _LOD_LEVEL.get(int(lod.group(1)))
                if level is None:
                    self.ctx.not_read.add(local)
                    continue
                found.lods[level] = None if lod is None else lod.group(1)
                is_solid = lod is not None and lod.group(2) == "Solid"
                in_solid = found.solid_faces.setdefault(level, set()) if is_solid else None
                self._collect(child, found.faces.setdefault(level, {}), semantic, False, obj, 0, in_solid)
            elif local.startswith("lod"):
                self.ctx.not_read.add(local)
            elif local not in _NOT_WALKED and child.get(_XLINK_HREF) is None:
                # an href-only property (an opening shared by two walls) points at a feature read elsewhere
                self._walk(child, found, semantic, collecting, obj)

    def _collect(self, el: etree._Element, faces: dict[etree._Element, list[Any]], semantic: str | None,
                 reversed_: bool, obj: SourceObject, depth: int,
                 in_solid: set[etree._Element] | None) -> None:
        """Add the faces of a geometry (property) to ``faces`` (and to ``in_solid`` when it is a solid),
        following xlink:href references; a face reached twice is kept once, with the semantic type of the
        thematic surface that defines it."""
        href = el.get(_XLINK_HREF)
        if href is not None:
            target = self._resolve(href)
            if target is None:
                obj.errors.append(f"line {el.sourceline}: xlink:href {href!r} not found in this object")
            elif depth > 16:
                obj.errors.append(f"line {el.sourceline}: xlink:href {href!r}: references loop")
            else:
                defined = self._defined_semantic(target) or semantic
                self._collect(target, faces, defined, reversed_, obj, depth + 1, in_solid)
            return
        ns, local = _split(el.tag)
        if ns in _GML:
            srs_name = el.get("srsName")
            if srs_name and srs_name != self.ctx.srs_name:
                self._check_srs(el, srs_name)
            if local in _FACES:
                if in_solid is not None:
                    in_solid.add(el)
                entry = faces.get(el)
                if entry is None:
                    faces[el] = [semantic, reversed_]
                elif entry[0] is None:
                    entry[0] = semantic
                return
            if local == "OrientableSurface" and el.get("orientation") == "-":
                reversed_ = not reversed_
        for child in el.iterchildren(etree.Element):
            self._collect(child, faces, semantic, reversed_, obj, depth, in_solid)

    def _resolve(self, href: str) -> etree._Element | None:
        """The element a local ``#id`` reference names in this member (the index is built on first use:
        most members reference nothing)."""
        if not href.startswith("#"):
            return None
        if self._ids is None:
            self._ids = {_gml_id(el) or "": el for el in _WITH_GML_ID(self.feature)}
        return self._ids.get(href[1:])

    @staticmethod
    def _defined_semantic(el: etree._Element) -> str | None:
        """The semantic type of a referenced geometry: that of the nearest feature defining it."""
        for ancestor in el.iterancestors():
            ns, local = _split(ancestor.tag)
            if ns.startswith(_CITYGML) and local[:1].isupper():
                return _surface_type(local)
        return None

    def _check_srs(self, el: etree._Element, srs_name: str) -> None:
        """A geometry may repeat the file's CRS in another spelling; a different CRS is refused, as the
        SourceFile has one CRS."""
        crs = self.ctx.srs_seen.get(srs_name)
        if crs is None:
            try:
                crs = _crs_from_srs_name(srs_name)[0]
            except ValueError as exc:
                raise self.ctx.fail(el, f"unknown srsName {srs_name!r} ({exc})") from None
            self.ctx.srs_seen[srs_name] = crs
        if self.ctx.crs is not None and crs != self.ctx.crs:
            raise self.ctx.fail(el, f"srsName {srs_name!r} differs from the file's {self.ctx.srs_name!r}; "
                                    "files mixing CRSs are not read")

    def _multipolygon(self, faces: dict[etree._Element, list[Any]],
                      obj: SourceObject) -> tuple[Any, list[str | None] | None]:
        """One MultiPolygon Z of a level's faces (built in one vectorised call) and their semantic types
        (None when no face has one)."""
        rings: list[np.ndarray] = []
        ring_face: list[int] = []
        types: list[str | None] = []
        for face, (semantic, reversed_) in faces.items():
            face_rings = self._face_rings(face, obj)
            if not face_rings:
                continue
            for ring in face_rings:
                rings.append(ring[::-1] if reversed_ else ring)
                ring_face.append(len(types))
            types.append(semantic)
        if not types:
            return None, None
        lengths = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
        coords = np.concatenate(rings)
        if self.ctx.swap_xy:
            coords[:, [0, 1]] = coords[:, [1, 0]]
        linear_rings = shapely.linearrings(coords, indices=np.repeat(np.arange(len(rings)), lengths))
        polygons = shapely.polygons(linear_rings, indices=np.asarray(ring_face))
        return shapely.multipolygons(polygons), (types if any(t is not None for t in types) else None)

    def _face_rings(self, face: etree._Element, obj: SourceObject) -> list[np.ndarray]:
        """Exterior then interior rings of a face, closed, as (n, 3) float arrays, orientation as written."""
        exterior: list[np.ndarray] = []
        interiors: list[np.ndarray] = []
        for boundary in face.iterchildren(etree.Element):
            kind = _split(boundary.tag)[1]
            if kind not in ("exterior", "interior", "outerBoundaryIs", "innerBoundaryIs"):
                continue
            ring = next(boundary.iterchildren(etree.Element), None)
            if ring is None:
                continue
            coords = self._ring(ring, obj)
            if coords is None:
                return []
            (exterior if kind in ("exterior", "outerBoundaryIs") else interiors).append(coords)
        if not exterior:
            raise self.ctx.fail(face, "a polygon with fewer than 4 positions (it has no exterior ring)")
        return exterior[:1] + interiors

    def _ring(self, ring: etree._Element, obj: SourceObject) -> np.ndarray | None:
        """A ring's positions from gml:posList, gml:pos elements or gml:coordinates, parsed by numpy."""
        if _split(ring.tag)[1] != "LinearRing":
            kind = _split(ring.tag)[1]
            obj.errors.append(f"line {ring.sourceline}: {kind} rings (curve segments) are not read")
            return None
        source: etree._Element = ring
        text = ""
        dimension = 0
        positions: list[etree._Element] = []
        for child in ring.iterchildren(etree.Element):
            local = _split(child.tag)[1]
            if local == "posList":
                source, text = child, child.text or ""
                dimension = self._dimension(child)
                break
            if local == "coordinates":
                source = child
                text, dimension = _coordinates_text(child)
                break
            if local in ("pos", "pointProperty", "pointRep"):
                pos = child if local == "pos" else child.find(".//{*}pos")
                if pos is not None:
                    positions.append(pos)
        if positions and not text:
            source = positions[0]
            text = " ".join(p.text or "" for p in positions)
            attribute = positions[0].get("srsDimension", "")
            dimension = int(attribute) if attribute.isdigit() else len((positions[0].text or "").split())
        try:
            values = np.array(text.split(), dtype=np.float64)
        except ValueError:
            raise self.ctx.fail(source, "a position that is not a number") from None
        if dimension not in (2, 3):
            if not values.size:
                raise self.ctx.fail(source, "a polygon with fewer than 4 positions (an empty ring)")
            raise self.ctx.fail(source, f"srsDimension {dimension}: positions must be 2D or 3D")
        if values.size % dimension:
            raise self.ctx.fail(source, f"{values.size} values in a posList of dimension {dimension} "
                                        f"(not a multiple of {dimension})")
        coords = values.reshape(-1, dimension)
        if dimension == 2:
            obj.errors.append(f"line {source.sourceline}: 2D positions in a 3D model (z set to 0)")
            coords = np.column_stack([coords, np.zeros(len(coords))])
        if len(coords) and not (coords[0] == coords[-1]).all():
            coords = np.vstack([coords, coords[:1]])  # GML rings repeat the first position; some files do not
        if len(coords) < 4:
            raise self.ctx.fail(source, f"a polygon with fewer than 4 positions ({len(coords)} in this ring, "
                                        "closed; a ring needs at least 3 distinct corners)")
        return coords

    def _dimension(self, pos_list: etree._Element) -> int:
        """srsDimension of a posList: its own, else the nearest geometry's, else the file's (3)."""
        for el in (pos_list, *pos_list.iterancestors()):
            value = el.get("srsDimension")
            if value is not None:
                if not value.strip().isdigit():
                    raise self.ctx.fail(el, f"srsDimension {value!r} is not a number")
                return int(value)
        return self.ctx.dimension


def _coordinates_text(el: etree._Element) -> tuple[str, int]:
    """The old gml:coordinates form ("x,y,z x,y,z", separators configurable) as posList text + dimension."""
    cs, ts, decimal = el.get("cs", ","), el.get("ts", " "), el.get("decimal", ".")
    raw = el.text or ""
    tuples = raw.split() if not ts.strip() else [t for t in raw.split(ts) if t.strip()]
    if not tuples:
        return "", 0
    dimension = len(tuples[0].split(cs))
    text = " ".join(v for t in tuples for v in t.split(cs))
    return (text.replace(decimal, ".") if decimal != "." else text), dimension


# ---------------------------------------------------------------------------------------------------------
# attributes


def _read_attributes(feature: etree._Element, obj: SourceObject) -> None:
    """Name, simple properties (codes kept as text), generic attributes, heights and addresses of one
    feature → ``obj.name``, ``obj.attributes`` and the typed columns."""
    simple: dict[str, Any] = {}
    uom: dict[str, str] = {}
    generic: dict[str, Any] = {}
    heights: list[dict[str, Any]] = []
    addresses: list[dict[str, str]] = []
    references: list[dict[str, str]] = []
    for prop in feature.iterchildren(etree.Element):
        ns, local = _split(prop.tag)
        if ns in _GML:
            if local == "name" and obj.name is None and _text(prop):
                obj.name = _text(prop)
            elif local == "description" and _text(prop):
                simple["description"] = _text(prop)
            continue
        if not ns.startswith(_CITYGML) or local.startswith("lod") or prop.get(_XLINK_HREF) is not None:
            continue
        if local in _GENERIC_20 and "generics" in ns:
            _generic_20(prop, generic, obj)
        elif local == "genericAttribute":
            for attribute in prop.iterchildren(etree.Element):
                _generic_30(attribute, generic, obj)
        elif local == "address":
            parts = _address_parts(prop)
            if parts:
                addresses.append(parts)
        elif local == "height":  # 3.0 con:height/con:Height: references, status, value with uom
            for h in prop.iterchildren(etree.Element):
                height = {_split(c.tag)[1]: _text(c) for c in h.iterchildren(etree.Element)}
                value = h.find("{*}value")
                if value is not None and value.get("uom"):
                    height["uom"] = value.get("uom", "")
                heights.append(height)
        elif local == "externalReference":
            references.append({_split(c.tag)[1]: _text(c) for c in prop.iter(tag=etree.Element)
                               if c is not prop and next(c.iterchildren(etree.Element), None) is None})
        elif next(prop.iterchildren(etree.Element), None) is None and _text(prop):
            value = _text(prop)
            if prop.get("uom"):
                uom[local] = prop.get("uom", "")
            previous = simple.get(local)  # a repeated property (bldg:function) becomes a list
            if previous is None:
                simple[local] = value
            else:
                simple[local] = [*(previous if isinstance(previous, list) else [previous]), value]
    obj.attributes.update(simple)
    for name, value in generic.items():  # a generic attribute never hides a CityGML property of that name
        obj.attributes[name if name not in obj.attributes else f"gen:{name}"] = value
    if heights:
        obj.attributes["heights"] = heights
    if references:
        obj.attributes["externalReference"] = references
    if addresses:
        obj.attributes["address"] = addresses[0]
        if len(addresses) > 1:
            obj.attributes["addresses"] = addresses
        obj.typed["address"] = _address_text(addresses[0])
    _typed(obj, simple, uom, heights)


def _first(value: Any) -> Any:
    return value[0] if isinstance(value, list) else value


def _typed(obj: SourceObject, simple: dict[str, Any], uom: dict[str, str],
           heights: list[dict[str, Any]]) -> None:
    """The typed columns: height (m), floors, year built, usage code."""
    height = _first(simple.get("measuredHeight"))
    height_uom = uom.get("measuredHeight")
    if height is None and heights:  # 3.0: a measured height first, else whichever is given
        chosen = next((h for h in heights if h.get("status") == "measured" and h.get("value")),
                      next((h for h in heights if h.get("value")), None))
        if chosen is not None:
            height, height_uom = chosen["value"], chosen.get("uom")
    if height is not None:
        if height_uom and not re.search(r"(^|[#:/])(m|9001)$", height_uom):
            obj.errors.append(f"height {height!r} in {height_uom!r}, not metres")
        else:
            _set_number(obj, "height", height, float)
    floors = _first(simple.get("storeysAboveGround"))
    if floors is not None:
        _set_number(obj, "floors", floors, int)
    year = _first(simple.get("yearOfConstruction") or simple.get("dateOfConstruction"))
    if year is not None:
        match = re.match(r"-?\d{1,4}", str(year))
        if match:
            obj.typed["year_built"] = int(match.group(0))
        else:
            obj.errors.append(f"year of construction {year!r} is not a year")
    usage = _first(simple.get("function") or simple.get("usage"))
    if usage is not None:
        obj.typed["usage"] = str(usage)


def _set_number(obj: SourceObject, column: str, text: str, kind: type) -> None:
    try:
        number = float(text)
        obj.typed[column] = int(number) if kind is int and number.is_integer() else kind(text)
    except ValueError:
        obj.errors.append(f"{column} {text!r} is not a {'whole ' if kind is int else ''}number")


def _generic_value(kind: str, text: str) -> Any:
    """A generic attribute's value: numbers for int/double/measure attributes, text otherwise."""
    convert = _NUMBER_KINDS.get(kind)
    if convert is None:
        return text
    try:
        return convert(text)
    except ValueError:
        return text


def _generic_20(el: etree._Element, out: dict[str, Any], obj: SourceObject) -> None:
    """gen:stringAttribute name="…"><gen:value>… (2.0); sets nest as dicts."""
    local = _split(el.tag)[1]
    name = el.get("name")
    if not name:
        obj.errors.append(f"line {el.sourceline}: generic attribute without a name")
        return
    if local == "genericAttributeSet":
        nested: dict[str, Any] = {}
        for member in el.iterchildren(etree.Element):
            _generic_20(member, nested, obj)
        out[name] = nested
        return
    out[name] = _generic_value(local.removesuffix("Attribute"), _text(el.find("{*}value")))


def _generic_30(el: etree._Element, out: dict[str, Any], obj: SourceObject) -> None:
    """<gen:StringAttribute><gen:name>…</gen:name><gen:value>… (3.0, inside core:genericAttribute)."""
    local = _split(el.tag)[1]
    name = _text(el.find("{*}name"))
    if not name:
        obj.errors.append(f"line {el.sourceline}: generic attribute without a name")
        return
    if local == "GenericAttributeSet":
        nested: dict[str, Any] = {}
        for prop in el.iterchildren("{*}genericAttribute"):
            for member in prop.iterchildren(etree.Element):
                _generic_30(member, nested, obj)
        out[name] = nested
        return
    out[name] = _generic_value(local.removesuffix("Attribute").lower(), _text(el.find("{*}value")))


# xAL 2.0 leaf elements → address part
_XAL2_PARTS = {
    "CountryName": "country", "AdministrativeAreaName": "administrative_area",
    "SubAdministrativeAreaName": "sub_administrative_area", "LocalityName": "locality",
    "DependentLocalityName": "dependent_locality", "ThoroughfareName": "street",
    "ThoroughfareNumber": "number", "PostalCodeNumber": "postcode", "PremiseName": "premise",
    "PremiseNumber": "premise_number", "BuildingName": "premise", "AddressLine": "address_line",
    "PostBoxNumber": "post_box",
}
# xAL 3 containers: their NameElement / Number / Identifier leaves → address part
_XAL3_PARTS = {
    "Country": "country", "AdministrativeArea": "administrative_area",
    "SubAdministrativeArea": "sub_administrative_area", "Locality": "locality",
    "SubLocality": "dependent_locality", "Thoroughfare": "street", "Premises": "premise",
    "PostCode": "postcode", "PostOffice": "post_office", "FreeTextAddress": "address_line",
}


def _address_parts(prop: etree._Element) -> dict[str, str]:
    """The parts of a core:Address (xAL 2.0 in CityGML 2.0, xAL 3 in 3.0) as {part: text}."""
    parts: dict[str, str] = {}
    for leaf in prop.iter(tag=etree.Element):
        ns, local = _split(leaf.tag)
        text = _text(leaf)
        if not ns.startswith(_XAL) or not text or next(leaf.iterchildren(etree.Element), None) is not None:
            continue
        parent = _split(leaf.getparent().tag)[1] if leaf.getparent() is not None else ""
        if local in _XAL2_PARTS:
            key = _XAL2_PARTS[local]
        elif local == "Number" and parent == "Thoroughfare":
            key = "number"
        elif local == "Number" and parent == "Premises":
            key = "premise_number"
        elif parent in _XAL3_PARTS:
            key = _XAL3_PARTS[parent]
        else:
            key = local
        parts[key] = f"{parts[key]} {text}" if key in parts else text
    return parts


def _address_text(parts: dict[str, str]) -> str:
    """One line: "street number, postcode locality, country" (the European order of the sample files)."""
    street = " ".join(p for p in (parts.get("street"), parts.get("number")) if p)
    town = " ".join(p for p in (parts.get("postcode"), parts.get("locality")) if p)
    lines = [parts.get("premise"), street, parts.get("dependent_locality"), town,
             parts.get("administrative_area"), parts.get("country")]
    return ", ".join(p for p in lines if p) or parts.get("address_line") or ", ".join(parts.values())
