"""CityJSON 1.1 / 2.0 files and CityJSONSeq (``.jsonl``) → :class:`SourceObject`.

Every LOD a file holds is kept. CityJSON LODs map to CIM levels as follows (one geometry per level is
the object's geometry at that level — the highest LOD of the level; the others are kept as superseded
source LODs for export):

======  =========================================  =========
LOD     what it is                                 CIM level
======  =========================================  =========
0.x     footprint / roofprint surfaces             1
1.x     block model (massing)                      2
2.x     roofs and wall surfaces                    3
3.x     detailed exterior (openings, overhangs)    4
======  =========================================  =========

Semantic surfaces (``RoofSurface``, ``WallSurface``, ``GroundSurface``…) become the per-polygon surface
types; ``parents``/``children`` become parent links (objects are ordered parents first); vertices are
decoded with ``transform``; geometry templates are instantiated. CityJSONSeq streams: one feature (a
building and its parts) in memory at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError

from cim.ingest.model import ReadError, SourceFile, SourceObject

# attribute names (CityJSON/CityGML core, 3D BAG) → typed columns
TYPED_ATTRIBUTES: dict[str, tuple[str, type]] = {
    "measuredHeight": ("height", float),
    "yearOfConstruction": ("year_built", int),
    "oorspronkelijkbouwjaar": ("year_built", int),
    "oorspronkelijk_bouwjaar": ("year_built", int),
    "storeysAboveGround": ("floors", int),
    "function": ("usage", str),
    "usage": ("usage", str),
}


def lod_level(lod: Any) -> int:
    """The CIM level of a CityJSON LOD ("2.2" → 3)."""
    major = int(str(lod).split(".")[0])
    return min(major, 3) + 1


def parse_crs(reference: str | None, path: Path) -> CRS | None:
    """A pyproj CRS from CityJSON's ``referenceSystem`` (URL or URN), None when absent."""
    if not reference:
        return None
    match = re.search(r"EPSG(?:/0/|::|:)(\d+)", reference)
    try:
        return CRS.from_epsg(int(match.group(1))) if match else CRS.from_user_input(reference)
    except CRSError as exc:
        raise ReadError(f"{path}: unknown referenceSystem {reference!r} ({exc})") from None


def read_cityjson(path: Path) -> SourceFile:
    """Open a CityJSON file (``.json``) or CityJSONSeq (``.jsonl``)."""
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path}: no such file")
    if path.suffix == ".jsonl":
        return _read_seq(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ReadError(f"{path}: not JSON ({exc})") from None
    except _DuplicateKey as exc:  # json would keep the last silently: two CityObjects with one id
        raise ReadError(f"{path}: the key {exc.args[0]!r} appears twice in one JSON object (duplicate ids)") from None
    if not isinstance(doc, dict) or doc.get("type") != "CityJSON":
        raise ReadError(f"{path}: not a CityJSON file (no \"type\": \"CityJSON\")")
    version = str(doc.get("version", ""))
    if not version.startswith(("1.1", "2.0")):
        raise ReadError(f"{path}: CityJSON version {version!r}; 1.1 and 2.0 are supported")
    meta = doc.get("metadata") or {}
    vertices = _vertices(doc.get("vertices", []), doc.get("transform"), path, "vertices")
    templates = _templates(doc.get("geometry-templates"), path)
    crs = parse_crs(meta.get("referenceSystem"), path)
    extent = _extent(vertices)
    objects = _ordered(doc.get("CityObjects") or {}, path)
    return SourceFile(crs, "cityjson", _objects(objects, vertices, templates, path),
                      {"version": version, "referenceSystem": meta.get("referenceSystem"), "extent": extent,
                       "count": len(objects)})


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _v in pairs if k in seen or seen.add(k)))
    return out


def _read_seq(path: Path) -> SourceFile:
    fh = path.open(encoding="utf-8")
    try:
        header = json.loads(fh.readline())
    except json.JSONDecodeError as exc:
        fh.close()
        raise ReadError(f"{path}:1: not a CityJSONSeq header ({exc})") from None
    if not isinstance(header, dict) or header.get("type") != "CityJSON":
        fh.close()
        raise ReadError(f"{path}:1: the first line must be a CityJSON header object")
    meta = header.get("metadata") or {}
    transform = header.get("transform")
    templates = _templates(header.get("geometry-templates"), path)
    extent = meta.get("geographicalExtent")

    def features() -> Iterator[SourceObject]:
        with fh:
            for lineno, line in enumerate(fh, start=2):
                if not line.strip():
                    continue
                try:
                    feature = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ReadError(f"{path}:{lineno}: not JSON ({exc})") from None
                if feature.get("type") != "CityJSONFeature":
                    raise ReadError(f"{path}:{lineno}: expected a CityJSONFeature, got {feature.get('type')!r}")
                vertices = _vertices(feature.get("vertices", []), transform, path, f"line {lineno}")
                yield from _objects(_ordered(feature.get("CityObjects") or {}, path), vertices, templates,
                                    path, f"line {lineno}")

    return SourceFile(parse_crs(meta.get("referenceSystem"), path), "cityjsonseq", features(),
                      {"version": str(header.get("version", "")), "referenceSystem": meta.get("referenceSystem"),
                       "extent": extent})


def _vertices(raw: list, transform: dict | None, path: Path, where: str) -> np.ndarray:
    try:
        v = np.asarray(raw, dtype=float).reshape(-1, 3)
    except ValueError:
        raise ReadError(f"{path}: {where}: vertices must be [x, y, z] triples") from None
    if transform:
        v = v * np.asarray(transform["scale"], dtype=float) + np.asarray(transform["translate"], dtype=float)
    return v


def _templates(raw: dict | None, path: Path) -> tuple[list[dict], np.ndarray] | None:
    if not raw:
        return None
    return raw.get("templates", []), _vertices(raw.get("vertices-templates", []), None, path, "vertices-templates")


def _extent(vertices: np.ndarray) -> list[float] | None:
    if not len(vertices):
        return None
    return [*vertices.min(axis=0).tolist(), *vertices.max(axis=0).tolist()]


def _ordered(city_objects: dict[str, dict], path: Path) -> list[tuple[str, dict]]:
    """The objects, every parent before its children (files list them in any order)."""
    out: list[tuple[str, dict]] = []
    state: dict[str, int] = {}

    def visit(key: str) -> None:
        if state.get(key) == 2:
            return
        if state.get(key) == 1:
            raise ReadError(f"{path}: CityObject {key!r} is its own ancestor")
        state[key] = 1
        for parent in city_objects[key].get("parents") or []:
            if parent in city_objects:
                visit(parent)
        state[key] = 2
        out.append((key, city_objects[key]))

    for key in city_objects:
        visit(key)
    return out


def _objects(objects: list[tuple[str, dict]], vertices: np.ndarray, templates, path: Path,
             where: str = "") -> Iterator[SourceObject]:
    for key, co in objects:
        label = f"{path}: {where + ': ' if where else ''}CityObject {key!r}"
        if not isinstance(co, dict) or "type" not in co:
            raise ReadError(f"{label}: no type")
        attributes = dict(co.get("attributes") or {})
        obj = SourceObject(source_id=str(key), object_class=str(co["type"]),
                           parent=(co.get("parents") or [None])[0], attributes=attributes)
        obj.name = attributes.get("name") if isinstance(attributes.get("name"), str) else None
        for name, (column, kind) in TYPED_ATTRIBUTES.items():
            value = attributes.get(name)
            if value not in (None, "") and column not in obj.typed:
                try:
                    obj.typed[column] = kind(value)
                except (TypeError, ValueError):
                    obj.errors.append(f"attribute {name}={value!r} is not a {kind.__name__}")
        by_level: dict[int, list[tuple[str, Any, list[str] | None, bool]]] = {}
        for i, geometry in enumerate(co.get("geometry") or []):
            try:
                lod = str(geometry.get("lod", geometry.get("template", "")))
                geom, surfaces, solid = _geometry(geometry, vertices, templates)
            except (KeyError, IndexError, TypeError, ValueError) as exc:
                obj.errors.append(f"geometry {i}: cannot decode ({type(exc).__name__}: {exc})")
                continue
            if geometry["type"] == "GeometryInstance":
                lod = str(templates[0][geometry["template"]].get("lod", "1"))
            if geom is None:
                continue
            by_level.setdefault(lod_level(lod), []).append((lod, geom, surfaces, solid))
        for level in sorted(by_level):
            # the most detailed LOD of a level is the level's geometry; the others are kept beside it
            ranked = sorted(by_level[level], key=lambda g: _lod_key(g[0]), reverse=True)
            lod, geom, surfaces, solid = ranked[0]
            obj.geometries.append((level, geom, surfaces, lod))
            obj.solid = obj.solid or solid
            for other in ranked[1:]:
                obj.other_lods.append((other[0], level, other[1], other[2]))
        yield obj


def _lod_key(lod: str) -> tuple[float, ...]:
    try:
        return tuple(float(p) for p in lod.split("."))
    except ValueError:
        return (0.0,)


def _geometry(g: dict, vertices: np.ndarray, templates) -> tuple[Any, list[str] | None, bool]:
    """(shapely geometry, surface type per polygon or None, is a solid) of one CityJSON geometry."""
    kind = g["type"]
    if kind == "GeometryInstance":
        template_list, template_vertices = templates
        template = template_list[g["template"]]
        matrix = np.asarray(g["transformationMatrix"], dtype=float).reshape(4, 4)
        ref = vertices[g["boundaries"][0]]
        hom = np.column_stack([template_vertices, np.ones(len(template_vertices))]) @ matrix.T
        placed = hom[:, :3] + ref
        return _geometry(template, placed, None)
    b = g["boundaries"]
    if kind == "MultiPoint":
        return shapely.MultiPoint(vertices[np.asarray(b, dtype=int)]), None, False
    if kind == "MultiLineString":
        return shapely.MultiLineString([vertices[np.asarray(line, dtype=int)] for line in b]), None, False
    if kind in ("MultiSurface", "CompositeSurface"):
        surfaces = b
        values = (g.get("semantics") or {}).get("values")
    elif kind == "Solid":
        surfaces = [s for shell in b for s in shell]
        values = _flatten((g.get("semantics") or {}).get("values"), 1)
    elif kind in ("MultiSolid", "CompositeSolid"):
        surfaces = [s for solid in b for shell in solid for s in shell]
        values = _flatten((g.get("semantics") or {}).get("values"), 2)
    else:
        raise ValueError(f"unsupported geometry type {kind!r}")
    polygons = []
    for surface in surfaces:
        rings = [vertices[np.asarray(ring, dtype=int)] for ring in surface]
        if any(len(r) < 3 for r in rings):
            raise ValueError("a ring with fewer than 3 vertices")
        polygons.append(shapely.Polygon(rings[0], rings[1:]))
    types = None
    semantic = (g.get("semantics") or {}).get("surfaces")
    if semantic and values is not None:
        types = [None if v is None else semantic[v].get("type") for v in values]
        if len(types) != len(polygons):
            raise ValueError(f"{len(types)} semantic values for {len(polygons)} surfaces")
    return shapely.MultiPolygon(polygons), types, kind != "MultiSurface" and kind != "CompositeSurface"


def _flatten(values: Any, depth: int) -> list | None:
    if values is None:
        return None
    for _ in range(depth):
        values = [v for part in values for v in (part if part is not None else [])]
    return values
