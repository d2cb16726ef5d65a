"""Pipeline survey tables (管线点 / 管线段) → pipe nodes and pipe segments.

Departments deliver pipeline surveys (地下管线探测, CJJ 61) as CSV, Shapefile, GeoJSON or GeoPackage tables
with Chinese field names. Which field means what is configured in config.yml (``cim.ingest.survey_points``
and ``survey_segments``: our property → the names used for it, first found wins), so a new department's
spelling is a config change, not a code change. A table is a points table when it has a point number and
coordinates (a Point geometry, or X/Y fields — X is the northing in Chinese surveys), a segments table when
it names start and end points; a segments table without geometry is drawn between its points (loaded
earlier in the same run or dataset). The WNTR network GeoJSON maps the same way (``name``,
``start_node_name``, ``diameter`` in metres).

Every source field is also kept in the object's attributes under its own name, for traceability.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
import pyogrio
import pyogrio.raw
import shapely
from pyproj import CRS

from cim.ingest.model import ReadError, SourceFile, SourceObject
from cim.settings import IngestSettings


# plain vector features (``--layer``): the CIM class of each layer, and attribute names → typed columns
LAYER_CLASS = {"buildings": "Building", "building-components": "BuildingComponent", "pipelines": "PipeSegment",
               "pipe-nodes": "PipeNode", "roads": "Road", "bridges": "Bridge", "terrain": "TINRelief"}
FEATURE_FIELDS: dict[str, tuple[tuple[str, ...], type]] = {
    "source_id": (("id", "ID", "fid", "FID", "osm_id", "@id", "OBJECTID", "objectid", "编号", "要素编号"), str),
    "name": (("name", "NAME", "名称", "建筑名称", "道路名称"), str),
    "height": (("height", "HEIGHT", "measuredHeight", "高度", "建筑高度"), float),
    "floors": (("floors", "FLOORS", "storeys", "building:levels", "层数", "地上层数"), int),
    "usage": (("usage", "function", "building", "用途", "建筑用途"), str),
    "year_built": (("year_built", "yearOfConstruction", "start_date", "建成年份", "建造年代"), int),
    "address": (("address", "addr:full", "地址"), str),
    "district": (("district", "行政区"), str),
}


def read_table(path: Path, settings: IngestSettings, layer: str | None = None) -> SourceFile:
    """Open a survey table (or every layer of a GeoPackage: points layers first). A table that is neither
    a points nor a segments table loads as plain features of ``layer`` (``cim load --layer``): the class
    of that layer, typed columns from common attribute names, the geometry as the footprint (and as the
    CIM3 geometry when it has heights)."""
    path = Path(path)
    if not path.is_file():
        raise ReadError(f"{path}: no such file")
    if path.suffix.lower() == ".csv":
        fields, records = _read_csv(path)
        layers = [(path.name, fields, records, [None] * len(records), None)]  # CSV line 1 is the header
    else:
        layers = []
        try:
            names = [name for name, _ in pyogrio.list_layers(path)]
            for name in names:
                meta, _fids, wkb, data = pyogrio.raw.read(path, layer=name)
                fields = list(meta["fields"])
                records = [{f: _plain(data[i][k]) for i, f in enumerate(fields)} for k in range(len(wkb))]
                crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
                layers.append((f"{path.name}:{name}", fields, records, shapely.from_wkb(wkb), crs))
        except pyogrio.errors.DataSourceError as exc:
            raise ReadError(f"{path}: not a readable vector file ({exc})") from None
    kinds = [_kind(fields, settings, name, layer if any(g is not None for g in geoms) else None,
                   {g.geom_type for g in geoms if g is not None and not g.is_empty})
             if records else "features" for name, fields, records, geoms, _crs in layers]
    order = sorted(range(len(layers)), key=lambda i: kinds[i] != "points")  # nodes before segments
    crs_found = next((layers[i][4] for i in order if layers[i][4] is not None), None)

    def objects() -> Iterator[SourceObject]:
        for i in order:
            name, fields, records, geoms, _crs = layers[i]
            first = 2 if path.suffix.lower() == ".csv" else 1
            if kinds[i] == "features":
                columns = {prop: next((f for f in names if f in fields), None)
                           for prop, (names, _type) in FEATURE_FIELDS.items()}
                for row_no, (record, geom) in enumerate(zip(records, geoms, strict=True), start=first):
                    yield _feature(record, geom, columns, LAYER_CLASS.get(layer or "", "Feature"),
                                   f"{name} row {row_no}")
                continue
            mapping = settings.survey_points if kinds[i] == "points" else settings.survey_segments
            columns = {prop: next((f for f in names if f in fields), None) for prop, names in mapping.items()}
            make = _point if kinds[i] == "points" else _segment
            for row_no, (record, geom) in enumerate(zip(records, geoms, strict=True), start=first):
                yield make(record, geom, columns, settings, f"{name} row {row_no}")

    extent = None
    all_geoms = [g for _n, _f, _r, geoms, _c in layers if geoms is not None for g in geoms if g is not None]
    if all_geoms:
        bounds = shapely.total_bounds(np.asarray(all_geoms, dtype=object))
        if np.isfinite(bounds).all():
            coords = shapely.get_coordinates(np.asarray(all_geoms, dtype=object), include_z=True)
            z = coords[:, 2][np.isfinite(coords[:, 2])]
            low, high = (float(z.min()), float(z.max())) if z.size else (0.0, 0.0)
            extent = [float(bounds[0]), float(bounds[1]), low, float(bounds[2]), float(bounds[3]), high]
    return SourceFile(crs_found, "survey" if "features" not in kinds else "vector", objects(),
                      {"tables": {layers[i][0]: kinds[i] for i in order},
                       "rows": sum(len(layer[2]) for layer in layers), "extent": extent})


def _kind(fields: list[str], settings: IngestSettings, name: str, layer: str | None = None,
          geometry_types: set[str] | None = None) -> str:
    def has(mapping: dict[str, list[str]], prop: str) -> bool:
        return any(f in fields for f in mapping.get(prop, []))

    types = geometry_types or set()
    if (has(settings.survey_segments, "start") and has(settings.survey_segments, "end")
            and types <= {"LineString", "MultiLineString"}):
        return "segments"
    if has(settings.survey_points, "source_id") and types <= {"Point"}:
        return "points"
    if layer is not None:
        return "features"
    raise ReadError(f"{name}: neither a 管线点 table (a point number field) nor a 管线段 table (start and end "
                    f"point fields); its fields are {', '.join(fields)} — map them in config.yml "
                    "(cim.ingest.survey_points / survey_segments), or give --layer to load its geometries as "
                    "plain features of that layer")


def _read_csv(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    raw = path.read_bytes()
    for encoding in ("utf-8-sig", "gb18030"):  # exports from Chinese desktop GIS are often GBK
        try:
            text = raw.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:  # pragma: no cover - gb18030 decodes any byte string
        raise ReadError(f"{path}: neither UTF-8 nor GB18030 text")
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        raise ReadError(f"{path}: empty CSV (no header line)")
    records = []
    for line_no, record in enumerate(reader, start=2):
        if None in record:
            raise ReadError(f"{path}:{line_no}: more values than the header has fields")
        records.append({k: (v.strip() if isinstance(v, str) else v) for k, v in record.items()})
    return list(reader.fieldnames), records


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def _get(record: dict[str, Any], columns: dict[str, str | None], prop: str) -> Any:
    column = columns.get(prop)
    value = record.get(column) if column else None
    return None if value in ("", None) or (isinstance(value, float) and np.isnan(value)) else value


def _number(value: Any, where: str, name: str, errors: list[str]) -> float | None:
    if value is None:
        return None
    try:
        return float(str(value).replace(",", ""))
    except ValueError:
        errors.append(f"{where}: {name} {value!r} is not a number")
        return None


def _pipe_kind(value: Any, settings: IngestSettings, point_id: str | None) -> str | None:
    if value is not None:
        text = str(value).strip()
        return settings.pipe_kind_names.get(text, text.upper() if text.isascii() else text)
    if point_id:  # point numbers usually start with the kind's code: JS0123
        prefix = re.match(r"[A-Za-z]+", point_id)
        if prefix and prefix.group(0).upper() in settings.rules.code_lists.get("pipe_kind", []):
            return prefix.group(0).upper()
    return None


def _date(value: Any) -> date | None:
    if value is None:
        return None
    if isinstance(value, date):
        return value
    numbers = [int(n) for n in re.findall(r"\d+", str(value))]
    if not numbers or not 1900 <= numbers[0] <= 2100:
        return None
    year, month, day = (numbers + [1, 1])[:3]
    try:
        return date(year, month, day)
    except ValueError:
        return date(year, 1, 1)


def _point(record: dict[str, Any], geom: Any, columns: dict[str, str | None], settings: IngestSettings,
           where: str) -> SourceObject:
    errors: list[str] = []
    source_id = str(_get(record, columns, "source_id") or where)
    ground = _number(_get(record, columns, "ground_z"), where, "地面高程", errors)
    depth = _number(_get(record, columns, "depth_m"), where, "埋深", errors)
    if geom is not None and not geom.is_empty and geom.geom_type != "Point":
        errors.append(f"{where}: a {geom.geom_type} where a point was expected")
        x = y = None
    elif geom is not None and not geom.is_empty:
        x, y = geom.x, geom.y
    else:
        north = _number(_get(record, columns, "x_north"), where, "X", errors)
        east = _number(_get(record, columns, "y_east"), where, "Y", errors)
        if north is None or east is None:
            errors.append(f"{where}: no coordinates (X = northing, Y = easting)")
            x = y = None
        else:
            x, y = east, north
    feature, appurtenance = _get(record, columns, "feature"), _get(record, columns, "appurtenance")
    obj = SourceObject(source_id=source_id, object_class="PipeNode", errors=errors,
                       name=f"{appurtenance or feature or '管线点'} {source_id}",
                       attributes={k: _plain(v) for k, v in record.items() if v not in ("", None)})
    obj.typed = {"pipe_kind": _pipe_kind(_get(record, columns, "pipe_kind"), settings, source_id),
                 "depth_m": depth, "owner": _get(record, columns, "owner")}
    if x is not None:
        obj.footprint = shapely.Point(x, y)
        if ground is not None:
            obj.geometries = [(3, shapely.Point(x, y, ground), None)]
    return obj


def _segment(record: dict[str, Any], geom: Any, columns: dict[str, str | None], settings: IngestSettings,
             where: str) -> SourceObject:
    errors: list[str] = []
    start, end = _get(record, columns, "start"), _get(record, columns, "end")
    if start is None or end is None:
        errors.append(f"{where}: no start or end point number")
    kind = _pipe_kind(_get(record, columns, "pipe_kind"), settings, str(start) if start else None)
    source_id = str(record.get("name") or f"{kind or ''}:{start}-{end}")
    size = _get(record, columns, "diameter_mm")
    diameter = None
    attributes = {k: _plain(v) for k, v in record.items() if v not in ("", None)}
    if size is not None:
        numbers = [float(n) for n in re.findall(r"\d+(?:\.\d+)?", str(size))]
        if not numbers:
            errors.append(f"{where}: 管径 {size!r} has no number")
        else:
            diameter = numbers[0]
            if len(numbers) > 1:  # 方沟 / 管块: width × height
                attributes["断面尺寸"] = str(size)
            if diameter < 10:  # metres (WNTR, EPANET exports): no municipal pipe is under 10 mm
                diameter *= 1000.0
    depths = [d for d in (_number(_get(record, columns, "start_depth"), where, "起点埋深", errors),
                          _number(_get(record, columns, "end_depth"), where, "终点埋深", errors)) if d is not None]
    obj = SourceObject(source_id=source_id, object_class="PipeSegment", errors=errors,
                       name=f"{kind or ''}管 DN{int(diameter)}" if diameter else None, attributes=attributes)
    obj.typed = {"pipe_kind": kind, "diameter_mm": diameter, "material": _get(record, columns, "material"),
                 "owner": _get(record, columns, "owner"), "laid_date": _date(_get(record, columns, "laid_date")),
                 "depth_m": round(sum(depths) / len(depths), 3) if depths else None}
    obj.ends = (str(start), str(end)) if start is not None and end is not None else None
    obj.end_heights = (_number(_get(record, columns, "start_z"), where, "起点高程", errors),
                       _number(_get(record, columns, "end_z"), where, "终点高程", errors))
    if geom is not None and not geom.is_empty:
        line = geom if geom.geom_type == "LineString" else shapely.line_merge(geom)
        if line.geom_type != "LineString":
            errors.append(f"{where}: a {geom.geom_type} that is not one line")
        else:
            obj.footprint = shapely.force_2d(line)
            obj.geometries = [(3, line, None)] if shapely.has_z(line) else [(0, line, None)]
    return obj


def _feature(record: dict[str, Any], geom: Any, columns: dict[str, str | None], object_class: str,
             where: str) -> SourceObject:
    errors: list[str] = []
    typed: dict[str, Any] = {}
    for prop, (_names, kind) in FEATURE_FIELDS.items():
        value = _get(record, columns, prop)
        if value is None or prop in ("source_id", "name"):
            continue
        try:
            typed[prop] = kind(float(value)) if kind is int else kind(value)
        except (TypeError, ValueError):
            if prop == "year_built" and _date(value) is not None:  # OSM start_date "1965-03"
                typed[prop] = _date(value).year
            else:
                errors.append(f"{where}: {columns[prop]} {value!r} is not a {kind.__name__}")
    source_id = _get(record, columns, "source_id")
    name = _get(record, columns, "name")
    obj = SourceObject(source_id=str(source_id) if source_id is not None else where, object_class=object_class,
                       name=str(name) if name is not None else None, typed=typed, errors=errors,
                       attributes={k: _plain(v) for k, v in record.items() if v not in ("", None)})
    if geom is None or geom.is_empty:
        return obj  # the geometry_present rule names it
    obj.footprint = shapely.force_2d(geom)
    if shapely.has_z(geom):
        obj.geometries = [(3, geom, None)]
    return obj
