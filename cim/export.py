"""``cim export``: CIM objects of chosen layers within a bbox → CityJSON 2.0 (or CityJSONSeq), GeoPackage or
FlatGeobuf files, so that what was loaded can be taken out again (and round trips tested).

CityJSON (``.city.json``; ``.jsonl`` streams CityJSONSeq, one feature per root object and its parts):

- coordinates in the storage CRS (EPSG:4550, heights as stored) or ``crs`` (any projected CRS the service
  knows; heights unchanged), quantised to millimetres (``transform``: scale 0.001);
- every geometry of every CIM level, with its source LOD label (or the level's nominal LOD: CIM1 → 0,
  CIM2 → 1, CIM3 → 2, CIM4 and above → 3), and every superseded source LOD kept at load; a closed
  MultiPolygon becomes a ``Solid``, others ``MultiSurface``; lines and points ``MultiLineString`` and
  ``MultiPoint``; semantic surface types as ``semantics``;
- CityObject types: CityJSON's own where the class is one (Building, BuildingPart, Road, Bridge,
  TINRelief, PlantCover...); storeys → ``BuildingStorey``, spaces → ``BuildingRoom``, building elements →
  ``BuildingConstructiveElement`` (doors, windows, walls... with the CIM class in ``cim_class``),
  pipes, nodes and other classes → ``GenericCityObject`` (with ``cim_class``);
- attributes exactly as loaded, plus the typed columns under their CityJSON names (``measuredHeight``,
  ``yearOfConstruction``, ``storeysAboveGround``, ``function``) or ours where the source did not already
  carry them; parents and children among the exported objects;
- object keys: the source ids when one ``dataset`` is exported (so a file loaded and exported keeps its
  ids), otherwise the public uids.

GeoPackage (``.gpkg``, one table per layer) and FlatGeobuf (``.fgb``, one layer): the footprint (or the
geometry at ``cim_level``), typed columns, and the other attributes as one JSON column — the same writer
the ``cim-download`` process uses.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio.raw
import shapely
from sqlalchemy import Engine, and_, func, or_, select

from cim.crs.registry import CRS84_URI, CRSInfo, default_registry
from cim.crs.transform import query_area, transform
from cim.db.models import LAYERS, OPS_LAYERS, CIMTables
from cim.db.queries import FeatureQuery, area_filter, layer_properties, select_features
from cim.db.schema import tables_for
from cim.geometry import is_closed_shell
from cim.ingest.cityjson import TYPED_ATTRIBUTES
from cim.ingest.load import TYPED_COLUMNS

__all__ = ["ExportError", "ExportReport", "export", "write_empty_layer", "write_vector_layers"]

BATCH = 2_000  # objects per query

# CIM classes that are not CityJSON 2.0 CityObject types
CITYJSON_TYPE = {"Storey": "BuildingStorey", "Space": "BuildingRoom"}
CONSTRUCTIVE = {"Wall", "Slab", "Roof", "Door", "Window", "Stair", "Beam", "Column", "Member", "Railing", "Plate",
                "Footing", "Covering", "CurtainWall", "Ramp"}
CITYJSON_TYPES = {
    "Building", "BuildingPart", "BuildingInstallation", "BuildingConstructiveElement", "BuildingFurniture",
    "BuildingStorey", "BuildingRoom", "BuildingUnit", "Bridge", "BridgePart", "BridgeInstallation",
    "BridgeConstructiveElement", "BridgeRoom", "BridgeFurniture", "CityFurniture", "CityObjectGroup",
    "GenericCityObject", "LandUse", "OtherConstruction", "PlantCover", "SolitaryVegetationObject",
    "TINRelief", "WaterBody", "Road", "Railway", "Waterway", "TransportSquare", "Tunnel", "TunnelPart",
    "TunnelInstallation", "TunnelConstructiveElement", "TunnelHollowSpace", "TunnelFurniture",
}
# typed columns → the CityJSON attribute names the reader takes them from (first one written on export)
CITYJSON_NAMES: dict[str, list[str]] = {}
for _name, (_column, _type) in TYPED_ATTRIBUTES.items():
    CITYJSON_NAMES.setdefault(_column, []).append(_name)
TYPED = tuple(c for c in TYPED_COLUMNS if c != "name")
NOMINAL_LOD = {1: "0", 2: "1", 3: "2"}
FORMATS = {".gpkg": "GPKG", ".fgb": "FlatGeobuf"}


class ExportError(ValueError):
    """The export cannot be made (bad arguments); nothing was written."""


@dataclass
class ExportReport:
    path: str
    format: str
    crs: str
    objects: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # per layer (GeoPackage, FlatGeobuf) or class (CityJSON)
    geometries: int = 0


def export(engine: Engine, path: Path | str, layers: list[str] | None = None,
           bbox: tuple[float, float, float, float] | None = None, crs: str | None = None, dataset: str | None = None,
           cim_level: int | None = None, progress: Callable[[int], None] | None = None) -> ExportReport:
    """Write the objects of ``layers`` (default all) whose footprint meets ``bbox`` (CRS84) to ``path``;
    the format follows the suffix (.city.json / .json, .jsonl, .gpkg, .fgb). The file appears whole or not
    at all (written beside it, then renamed)."""
    path = Path(path)
    layers = list(layers or [layer for layer in LAYERS if layer not in OPS_LAYERS])  # the city model
    unknown = [layer for layer in layers if layer not in LAYERS]
    if unknown:
        raise ExportError(f"unknown layer(s) {', '.join(unknown)}: one or more of {', '.join(LAYERS)}")
    if bbox is not None and (len(bbox) != 4 or not all(math.isfinite(v) for v in bbox) or bbox[1] > bbox[3]):
        raise ExportError("bbox: min lon, min lat, max lon, max lat (CRS84)")
    suffix = ".jsonl" if path.name.endswith(".jsonl") else path.suffix.lower()
    if suffix not in (".json", ".jsonl", *FORMATS):
        raise ExportError(f"{path.name}: the suffix says the format: .city.json (CityJSON 2.0), .jsonl "
                          "(CityJSONSeq), .gpkg (GeoPackage) or .fgb (FlatGeobuf)")
    if suffix == ".fgb" and len(layers) != 1:
        raise ExportError("FlatGeobuf holds one layer: give one --layers, or write a .gpkg")
    t = tables_for(engine)
    reg = default_registry()
    storage = reg.epsg(t.city_object.c.geom.type.srid)
    try:
        out_crs = reg.resolve(crs) if crs else storage
    except Exception as exc:  # UnknownCRS
        raise ExportError(f"--crs: {exc}") from None
    if suffix in (".json", ".jsonl") and (out_crs.geographic or out_crs.pyproj_crs.is_geocentric):
        raise ExportError("--crs: CityJSON is written in a projected CRS (metres), e.g. EPSG:4550")
    area = query_area(tuple(bbox), reg.resolve(CRS84_URI), storage) if bbox is not None else None
    dataset_id = None
    if dataset is not None:
        with engine.connect() as conn:
            dataset_id = conn.execute(select(t.dataset.c.id).where(t.dataset.c.name == dataset)).scalar()
        if dataset_id is None:
            raise ExportError(f"--dataset: no dataset named {dataset!r}")
    report = ExportReport(str(path), {".json": "CityJSON", ".jsonl": "CityJSONSeq", **FORMATS}[suffix], out_crs.uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".partial-{path.name}")  # GDAL wants the suffix
    partial.unlink(missing_ok=True)
    try:
        if suffix in FORMATS:
            with engine.connect() as conn:
                for layer in layers:
                    n = write_vector_layers(conn, t, partial, FORMATS[suffix], layer, area, out_crs, cim_level,
                                            dataset_id=dataset_id)
                    report.counts[layer] = n
                    report.objects += n
            if not partial.exists():  # nothing selected: an empty, valid file
                write_empty_layer(partial, FORMATS[suffix], layers[0], out_crs)
        else:
            _write_cityjson(engine, t, partial, suffix == ".jsonl", layers, area, dataset_id, storage, out_crs,
                            report, progress)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return report


# ------------------------------------------------------------------------------------------ vector files


def write_vector_layers(conn: Any, t: CIMTables, path: Path, driver: str, layer: str, area: Any, out_crs: CRSInfo,
                        cim_level: int | None, limit: int | None = None, dataset_id: int | None = None) -> int:
    """Append ``layer`` (objects meeting ``area``, in the storage CRS) to a GeoPackage / FlatGeobuf at
    ``path``: uid, typed columns, the other attributes as JSON, the footprint (or the ``cim_level``
    geometry) in ``out_crs`` written x/y. Returns the number of features; more than ``limit`` raises
    :class:`ExportError` before anything is written."""
    from cim.api.features import sql_output
    from cim.api.provider import FIELD_TYPES

    reg = default_registry()
    storage_srid = t.city_object.c.geom.type.srid
    sql_srid, _swap, post = sql_output(out_crs, storage_srid)  # files are x/y whatever the CRS's axis order
    co = t.city_object
    q = FeatureQuery(layer, area=area, limit=10**12 if limit is None else limit + 1, output_srid=sql_srid,
                     cim_level=cim_level, geometry_encoding="wkb", properties_json=False,
                     conditions=[] if dataset_id is None else [co.c.dataset_id == dataset_id])
    rows = conn.execute(select_features(t, conn.dialect.name, q)).mappings().all()
    if limit is not None and len(rows) > limit:
        raise ExportError(f"more than {limit:,} features: narrow the bbox or the layers")
    if not rows:
        return 0
    geoms = shapely.from_wkb([bytes(r["geometry"]) for r in rows])
    if post is not None:  # GCJ-02, BD-09, local systems: from CRS84 lon/lat in numpy
        has_z = bool(shapely.has_z(geoms).any())
        xy = shapely.get_coordinates(geoms, include_z=has_z)
        x, y, _ = transform(reg.resolve(CRS84_URI), post, xy[:, 0], xy[:, 1], check_area=False)
        xy[:, 0], xy[:, 1] = x, y
        geoms = shapely.set_coordinates(geoms, xy)
    fields = layer_properties(layer)
    columns = [_column([r[f] for r in rows], FIELD_TYPES[f]["type"]) for f in fields]
    fields = ["id", *fields, "attributes"]
    columns.insert(0, np.array([r["uid"] for r in rows], dtype=object))
    columns.append(np.array([None if r["attributes"] is None else
                             (r["attributes"] if isinstance(r["attributes"], str)
                              else json.dumps(r["attributes"], ensure_ascii=False)) for r in rows], dtype=object))
    # GCJ-02/BD-09 are offsets, not CRSs a file can name: the file says WGS 84 lon/lat, the layer metadata
    # CRS_URI says which offset applies
    geoms, geometry_type = _one_type(np.asarray(geoms, dtype=object))
    pyogrio.raw.write(str(path), shapely.to_wkb(geoms), columns, fields, layer=layer, driver=driver,
                      geometry_type=geometry_type, crs=out_crs.pyproj_crs.to_wkt(), append=path.exists(),
                      layer_metadata={"CRS_URI": out_crs.uri})
    return len(rows)


TYPE_NAMES = {0: "Point", 1: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}
MULTI = {"Polygon": shapely.MultiPolygon, "LineString": shapely.MultiLineString, "Point": shapely.MultiPoint}


def _one_type(geoms: np.ndarray) -> tuple[np.ndarray, str]:
    """The geometries and one declared type for them: single parts promoted to multi where a layer mixes
    both, " Z" where they have heights (a FlatGeobuf declared "Unknown" drops them)."""
    names = set(shapely.get_type_id(geoms).tolist())
    names = {TYPE_NAMES.get(t, "Unknown") for t in names}
    z = " Z" if bool(shapely.has_z(geoms).any()) else ""
    if len(names) == 2:
        single = next((n for n in names if n in MULTI and f"Multi{n}" in names), None)
        if single is not None:
            geoms = np.array([MULTI[single]([g]) if g.geom_type == single else g for g in geoms], dtype=object)
            return geoms, f"Multi{single}{z}"
    if len(names) == 1 and "Unknown" not in names:
        return geoms, f"{names.pop()}{z}"
    return geoms, "Unknown"


def write_empty_layer(path: Path, driver: str, layer: str, out_crs: CRSInfo) -> None:
    """A valid file with one empty layer (nothing was selected)."""
    pyogrio.raw.write(str(path), np.array([], dtype=object), [np.array([], dtype=object)], ["id"], layer=layer,
                      driver=driver, geometry_type="Unknown", crs=out_crs.pyproj_crs.to_wkt())


def _column(values: list[Any], kind: str) -> np.ndarray:
    if kind in ("integer", "number"):
        return np.array([np.nan if v is None else float(v) for v in values], dtype="float64")
    return np.array([None if v is None else (v.isoformat() if hasattr(v, "isoformat") else str(v))
                     for v in values], dtype=object)


# ------------------------------------------------------------------------------------------ CityJSON


class _Vertices:
    """The shared vertex list of a CityJSON document (or one CityJSONSeq feature), quantised to mm."""

    def __init__(self, translate: np.ndarray) -> None:
        self.translate = translate
        self.index: dict[tuple[int, int, int], int] = {}
        self.list: list[tuple[int, int, int]] = []

    def ids(self, coords: np.ndarray) -> list[int]:
        q = np.rint((coords - self.translate) * 1000).astype(np.int64)
        out = []
        for v in map(tuple, q.tolist()):
            i = self.index.get(v)
            if i is None:
                i = self.index[v] = len(self.list)
                self.list.append(v)
            out.append(i)
        return out


def _surface(polygon: shapely.Polygon, vertices: _Vertices) -> list[list[int]]:
    rings = []
    for ring in [polygon.exterior, *polygon.interiors]:
        ids = vertices.ids(np.asarray(ring.coords)[:-1])
        rings.append(ids)
    return rings


def _geometry(geom: Any, surfaces: list | None, lod: str, vertices: _Vertices) -> dict[str, Any] | None:
    if geom is None or geom.is_empty:
        return None
    kind = geom.geom_type
    if kind in ("Point", "MultiPoint"):
        points = shapely.get_coordinates(geom, include_z=True)
        return {"type": "MultiPoint", "lod": lod, "boundaries": vertices.ids(points)}
    if kind in ("LineString", "MultiLineString"):
        lines = getattr(geom, "geoms", [geom])
        return {"type": "MultiLineString", "lod": lod,
                "boundaries": [vertices.ids(np.asarray(line.coords)) for line in lines]}
    polygons = list(getattr(geom, "geoms", [geom]))
    boundaries = [_surface(p, vertices) for p in polygons]
    solid = kind == "MultiPolygon" and is_closed_shell(geom)
    out: dict[str, Any] = {"type": "Solid" if solid else "MultiSurface", "lod": lod,
                           "boundaries": [boundaries] if solid else boundaries}
    if surfaces and len(surfaces) == len(polygons) and any(s is not None for s in surfaces):
        types = sorted({s for s in surfaces if s is not None})
        position = {s: i for i, s in enumerate(types)}
        values = [None if s is None else position[s] for s in surfaces]
        out["semantics"] = {"surfaces": [{"type": s} for s in types], "values": [values] if solid else values}
    return out


def _cityjson_type(object_class: str) -> str:
    if object_class in CITYJSON_TYPE:
        return CITYJSON_TYPE[object_class]
    if object_class in CONSTRUCTIVE:
        return "BuildingConstructiveElement"
    return object_class if object_class in CITYJSON_TYPES else "GenericCityObject"


def _attributes(row: Any) -> dict[str, Any]:
    attributes = row["attributes"]
    attributes = dict(json.loads(attributes) if isinstance(attributes, str) else attributes or {})
    for column in TYPED:
        value = row[column]
        if value is None:
            continue
        names = CITYJSON_NAMES.get(column, [column])
        if any(name in attributes for name in names) or column in attributes:
            continue  # the source's own attribute is there, as it was
        attributes[names[0]] = value.isoformat() if hasattr(value, "isoformat") else value
    if row["name"] is not None and "name" not in attributes:
        attributes["name"] = row["name"]
    if _cityjson_type(row["object_class"]) != row["object_class"] and "cim_class" not in attributes:
        attributes["cim_class"] = row["object_class"]
    return attributes


def _selection(t: CIMTables, dialect: str, layers: list[str], area: Any, dataset_id: int | None):
    co = t.city_object
    where = [co.c.layer.in_(layers), or_(co.c.valid_to.is_(None), co.c.valid_to > func.current_timestamp())]
    if dataset_id is not None:
        where.append(co.c.dataset_id == dataset_id)
    if area is not None:
        where.append(area_filter(t, dialect, area))
    return and_(*where)


def _objects(engine: Engine, t: CIMTables, layers: list[str], area: Any, dataset_id: int | None
             ) -> Iterator[list[tuple[Any, list[tuple], list[tuple]]]]:
    """Batches of (object row, [(level, geometry, surfaces, lod)], [(lod, level, geometry, surfaces)]), each
    root object followed by its exported parts (ordered by root, then id)."""
    co, g, other = t.city_object, t.city_object_geometry, t.city_object_other_lod
    dialect = engine.dialect.name
    as_wkb = func.AsBinary if dialect == "sqlite" else func.ST_AsBinary
    root = func.coalesce(co.c.root_id, co.c.id)
    columns = [co.c.id, co.c.uid, co.c.source_id, co.c.object_class, co.c.parent_id, co.c.name, co.c.attributes,
               *[co.c[c] for c in TYPED], root.label("root")]
    query = select(*columns).where(_selection(t, dialect, layers, area, dataset_id)).order_by(root, co.c.id)
    with engine.connect() as conn:
        result = conn.execution_options(yield_per=BATCH).execute(query).mappings()
        for rows in result.partitions(BATCH):
            ids = [r["id"] for r in rows]
            geometries: dict[int, list[tuple]] = {i: [] for i in ids}
            others: dict[int, list[tuple]] = {i: [] for i in ids}
            with engine.connect() as side:
                for r in side.execute(select(g.c.object_id, g.c.cim_level, as_wkb(g.c.geom).label("wkb"), g.c.surfaces,
                                             g.c.lod).where(g.c.object_id.in_(ids)).order_by(g.c.object_id, g.c.cim_level)):
                    geometries[r.object_id].append((r.cim_level, shapely.from_wkb(bytes(r.wkb)), _json(r.surfaces), r.lod))
                for r in side.execute(select(other.c.object_id, other.c.lod, other.c.cim_level,
                                             as_wkb(other.c.geom).label("wkb"), other.c.surfaces)
                                      .where(other.c.object_id.in_(ids)).order_by(other.c.object_id, other.c.lod)):
                    others[r.object_id].append((r.lod, r.cim_level, shapely.from_wkb(bytes(r.wkb)), _json(r.surfaces)))
            yield [(r, geometries[r["id"]], others[r["id"]]) for r in rows]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def _write_cityjson(engine: Engine, t: CIMTables, path: Path, seq: bool, layers: list[str], area: Any,
                    dataset_id: int | None, storage: CRSInfo, out_crs: CRSInfo, report: ExportReport,
                    progress: Callable[[int], None] | None) -> None:
    epsg = out_crs.epsg
    reference = (f"https://www.opengis.net/def/crs/EPSG/0/{epsg}" if epsg else out_crs.uri)
    header: dict[str, Any] = {"type": "CityJSON", "version": "2.0", "metadata": {"referenceSystem": reference}}

    def move(geom: Any) -> Any:
        if out_crs.uri == storage.uri or geom is None:
            return geom
        return shapely.transform(geom, lambda c: np.column_stack(
            [*transform(storage, out_crs, c[:, 0], c[:, 1])[:2], c[:, 2]]), include_z=True)

    vertices: _Vertices | None = None
    city_objects: dict[str, Any] = {}  # one document, or the current CityJSONSeq feature
    keys: dict[int, str] = {}  # db id → key, for parents and children
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    out = path.open("w", encoding="utf-8")
    feature_root: Any = None

    def flush_feature() -> None:
        nonlocal city_objects, vertices, feature_root
        if not city_objects:
            return
        root_key = keys[feature_root]
        doc = {"type": "CityJSONFeature", "id": root_key, "CityObjects": city_objects,
               "vertices": [list(v) for v in vertices.list]}
        out.write(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n")
        city_objects = {}
        vertices = _Vertices(vertices.translate)

    with out:
        for batch in _objects(engine, t, layers, area, dataset_id):
            for row, geoms, others in batch:
                geoms = [(level, move(geom), surfaces, lod) for level, geom, surfaces, lod in geoms]
                others = [(lod, level, move(geom), surfaces) for lod, level, geom, surfaces in others]
                if vertices is None:
                    first = next((geom for _l, geom, _s, _lod in geoms if geom is not None), None)
                    start = shapely.get_coordinates(first, include_z=True)[0] if first is not None else np.zeros(3)
                    vertices = _Vertices(np.floor(start))
                    header["transform"] = {"scale": [0.001, 0.001, 0.001], "translate": vertices.translate.tolist()}
                    if seq:
                        header["metadata"]["title"] = "Benxi CIM export"
                        out.write(json.dumps({**header, "CityObjects": {}, "vertices": []}, ensure_ascii=False) + "\n")
                if seq and row["root"] != feature_root:
                    flush_feature()
                    feature_root = row["root"]
                key = row["source_id"] if dataset_id is not None and row["source_id"] else row["uid"]
                keys[row["id"]] = key
                obj: dict[str, Any] = {"type": _cityjson_type(row["object_class"])}
                attributes = _attributes(row)
                if attributes:
                    obj["attributes"] = attributes
                parts = []
                for level, geom, surfaces, lod in geoms:
                    part = _geometry(geom, surfaces, lod or NOMINAL_LOD.get(level, "3"), vertices)
                    if part is not None:
                        parts.append(part)
                        report.geometries += 1
                        c = shapely.get_coordinates(geom, include_z=True)
                        lo, hi = np.minimum(lo, c.min(axis=0)), np.maximum(hi, c.max(axis=0))
                for lod, _level, geom, surfaces in others:
                    part = _geometry(geom, surfaces, lod, vertices)
                    if part is not None:
                        parts.append(part)
                        report.geometries += 1
                if parts:
                    obj["geometry"] = parts
                parent = keys.get(row["parent_id"]) if row["parent_id"] is not None else None
                if parent is not None and parent in city_objects:
                    obj["parents"] = [parent]
                    city_objects[parent].setdefault("children", []).append(key)
                city_objects[key] = obj
                report.objects += 1
                report.counts[row["object_class"]] = report.counts.get(row["object_class"], 0) + 1
            if progress is not None:
                progress(report.objects)
        if seq:
            if vertices is None:  # nothing selected: the header alone
                out.write(json.dumps({**header, "CityObjects": {}, "vertices": []}, ensure_ascii=False) + "\n")
            else:
                flush_feature()
            return
        if vertices is not None and np.isfinite(lo).all():
            header["metadata"]["geographicalExtent"] = [*np.round(lo, 3).tolist(), *np.round(hi, 3).tolist()]
        doc = {**header, "CityObjects": city_objects, "vertices": [list(v) for v in (vertices.list if vertices else [])]}
        json.dump(doc, out, ensure_ascii=False, separators=(",", ":"))
