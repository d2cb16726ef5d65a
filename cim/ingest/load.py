"""``cim load``: files → checked, placed, traceable objects in the CIM database, all or nothing.

One call loads one or more files in one transaction: a failure (unreadable file, a file outside the
storage CRS's area, any rule failure with ``strict``) leaves the database as it was. Loading the same
file again replaces its objects by source id (the public uid is derived from dataset and source id, so
links stay valid); it never duplicates. Each file gets an ``import_run`` (file, SHA-256, size, reader,
placement, options, rule results, counts) under its ``dataset``, and a load report (JSON + console).
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from geoalchemy2.shape import to_shape
import shapely
from pyproj import CRS
from pyproj.exceptions import CRSError
from sqlalchemy import Connection, Engine, and_, delete, func, insert, select, update

from cim.db.models import CLASS_LAYER, LAYERS, CIMTables
from cim.db.schema import tables_for
from cim.db.writer import ObjectWriter
from cim.geometry import surface_footprint
from cim.ingest.model import ReadError, SourceFile, SourceObject
from cim.ingest.place import Anchor, Placement, PlacementError
from cim.ingest.rules import RuleSet
from cim.settings import get_settings

TYPED_COLUMNS = ("name", "usage", "floors", "height", "year_built", "district", "address", "pipe_kind",
                 "diameter_mm", "material", "depth_m", "owner", "laid_date")
BATCH = 2000  # objects per replace-then-write batch


class LoadError(Exception):
    """A load that wrote nothing; ``report`` says why (and, with --strict, which objects failed)."""

    def __init__(self, message: str, report: LoadReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class LoadOptions:
    """What ``cim load`` was asked to do (all optional)."""

    layer: str | None = None  # put every object in this layer instead of its class's
    crs: str | None = None  # the files' CRS when they declare none (or to override theirs)
    anchor: Anchor | None = None  # place the model's origin here (see cim.ingest.place)
    strict: bool = False  # any rule failure rejects the whole load
    dataset: str | None = None  # dataset name (default: the first file's name)
    defaults: dict[str, Any] = field(default_factory=dict)  # typed values for objects that lack them


@dataclass
class FileReport:
    path: str
    sha256: str
    size: int
    reader: str = ""
    import_run: int | None = None
    placement: dict[str, Any] = field(default_factory=dict)
    read: int = 0
    loaded: int = 0
    rejected: int = 0
    replaced: int = 0
    by_class: dict[str, int] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


@dataclass
class LoadReport:
    dataset: str
    strict: bool
    started: str
    finished: str = ""
    committed: bool = False
    files: list[FileReport] = field(default_factory=list)

    @property
    def loaded(self) -> int:
        return sum(f.loaded for f in self.files)

    @property
    def rejected(self) -> int:
        return sum(f.rejected for f in self.files)

    def as_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "strict": self.strict, "committed": self.committed,
                "started": self.started, "finished": self.finished, "loaded": self.loaded,
                "rejected": self.rejected, "files": [vars(f) for f in self.files]}


Reader = Callable[[Path], SourceFile]


def reader_for(path: Path) -> tuple[str, Reader]:
    """The reader for a file, by its name."""
    name = path.name.lower()
    if name.endswith((".city.json", ".cityjson", ".jsonl")):
        from cim.ingest.cityjson import read_cityjson

        return "cityjson", read_cityjson
    if name.endswith((".gml", ".citygml", ".xml")):
        from cim.ingest.citygml import read_citygml

        return "citygml", read_citygml
    if name.endswith(".ifc"):
        from cim.ingest.ifc import read_ifc

        return "ifc", read_ifc
    if name.endswith((".geojson", ".gpkg", ".shp", ".csv", ".fgb")):
        from cim.ingest.survey import read_table

        return "table", read_table
    if name.endswith(".json"):  # a CityJSON file not named .city.json
        from cim.ingest.cityjson import read_cityjson

        return "cityjson", read_cityjson
    raise ReadError(f"{path}: unknown file type (CityJSON .city.json/.jsonl, CityGML .gml, IFC .ifc, "
                    "tables .geojson/.gpkg/.shp/.csv/.fgb, rasters .tif)")


def file_digest(path: Path) -> tuple[str, int]:
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


def public_uid(dataset: str, source_id: str) -> str:
    """The stable public id of an ingested object: ``<dataset>-<source id>``, URL-safe, at most 64 chars."""
    prefix = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset)[:20].strip("_")
    if prefix != dataset[:20]:  # a name in Chinese: a short digest keeps datasets apart
        prefix = "ds" + hashlib.blake2b(dataset.encode(), digest_size=4).hexdigest()
    clean = re.sub(r"[^A-Za-z0-9_.-]+", "_", source_id).strip("_")
    uid = f"{prefix}-{clean}"
    if clean != source_id or len(uid) > 64:
        digest = hashlib.blake2b(source_id.encode(), digest_size=5).hexdigest()
        uid = f"{prefix}-{clean[:64 - len(prefix) - 12]}-{digest}"
    return uid


def load_files(engine: Engine, paths: Iterable[Path], options: LoadOptions | None = None,
               progress: Callable[[str, int], None] | None = None) -> LoadReport:
    """Load files into the CIM database in one transaction; the report says what happened.

    Raises:
        LoadError: nothing was written (a file could not be read or placed, or ``strict`` and a rule
            failed); its ``report`` holds the details.
    """
    options = options or LoadOptions()
    paths = [Path(p) for p in paths]
    if not paths:
        raise LoadError("no files to load")
    settings = get_settings()
    t = tables_for(engine)
    storage_srid = t.city_object.c.geom.type.srid
    dataset = options.dataset or re.sub(r"(\.city)?\.[^.]+$", "", paths[0].name)
    report = LoadReport(dataset, options.strict, datetime.now(UTC).isoformat())
    if options.layer is not None and options.layer not in LAYERS:
        raise LoadError(f"--layer: one of {', '.join(LAYERS)}, got {options.layer!r}", report)
    crs = None
    if options.crs:
        try:
            crs = CRS.from_user_input(options.crs)
        except CRSError as exc:
            raise LoadError(f"--crs: unknown CRS {options.crs!r} ({exc})", report) from None
    # raster files: (move into place, remove) — moved only if the transaction is about to commit
    finish: list[tuple[Callable[[], None], Callable[[], None]]] = []
    try:
        with engine.begin() as conn:
            dataset_id = _dataset(conn, t, dataset)
            shared: dict[str, Any] = {}  # what the files of one load share (the anchored origin)
            for path in paths:
                _load_one(conn, t, path, report, options, crs, dataset, dataset_id, storage_srid, settings,
                          progress, finish, shared)
            if options.strict and report.rejected:
                raise LoadError(f"--strict: {report.rejected} object(s) broke the quality rules; nothing loaded",
                                report)
            for move, _discard in finish:
                move()  # inside the transaction: a failure here rolls the database back
    except (ReadError, PlacementError, LoadError) as exc:
        for _move, discard in finish:
            discard()
        message = str(exc)
        if report.files and not isinstance(exc, LoadError):
            report.files[-1].error = message
            name = Path(report.files[-1].path).name
            message = message if name in message else f"{name}: {message}"
        report.finished = datetime.now(UTC).isoformat()
        raise LoadError(message, report) from None
    except BaseException:
        for _move, discard in finish:
            discard()
        raise
    report.committed = True
    report.finished = datetime.now(UTC).isoformat()
    return report


def _load_one(conn: Connection, t: CIMTables, path: Path, report: LoadReport, options: LoadOptions,
              crs: CRS | None, dataset: str, dataset_id: int, storage_srid: int, settings: Any,
              progress: Callable[[str, int], None] | None, finish: list, shared: dict[str, Any]) -> None:
    """One file of a load, with its import run (lineage)."""
    from cim.ingest.raster import is_raster, load_raster

    if not path.is_file():
        raise LoadError(f"{path}: no such file", report)
    digest, size = file_digest(path)
    fr = FileReport(str(path), digest, size)
    report.files.append(fr)
    run_id = conn.execute(insert(t.import_run).values(
        dataset_id=dataset_id, tool="cim load", started_at=datetime.now(UTC),
        params={"file": str(path), "sha256": digest, "size": size})).inserted_primary_key[0]
    fr.import_run = run_id
    if is_raster(path):
        fr.reader = "raster"
        finish.append(load_raster(conn, t, path, dataset_id, run_id, fr, settings, crs))
    else:
        _load_vector(conn, t, path, fr, options, crs, dataset, dataset_id, run_id, storage_srid, settings, progress,
                     shared)
    conn.execute(update(t.import_run).where(t.import_run.c.id == run_id).values(
        finished_at=datetime.now(UTC), counts=fr.by_class,
        params={"file": str(path), "sha256": digest, "size": size, "reader": fr.reader, "placement": fr.placement,
                "rules": {k: {"checked": v["checked"], "failed": v["failed"]} for k, v in fr.rules.items()},
                "options": {"layer": options.layer, "crs": options.crs, "strict": options.strict,
                            "anchor": None if options.anchor is None else vars(options.anchor),
                            "defaults": {k: str(v) for k, v in options.defaults.items()}}}))


def _dataset(conn: Connection, t: CIMTables, name: str) -> int:
    found = conn.execute(select(t.dataset.c.id).where(t.dataset.c.name == name)).scalar()
    if found is not None:
        return int(found)
    return int(conn.execute(insert(t.dataset).values(name=name, title=name, created_at=datetime.now(UTC)))
               .inserted_primary_key[0])


def _load_vector(conn: Connection, t: CIMTables, path: Path, fr: FileReport, options: LoadOptions, crs: CRS | None,
                 dataset: str, dataset_id: int, run_id: int, storage_srid: int, settings: Any,
                 progress: Callable[[str, int], None] | None, shared: dict[str, Any]) -> None:
    kind, reader = reader_for(path)
    fr.reader = kind
    source = reader(path, settings.ingest, options.layer) if kind == "table" else reader(path)
    fr.reader = source.kind
    rules = RuleSet(settings.ingest.rules)
    try:
        placement = Placement(source, storage_srid, crs, options.anchor, shared.get("origin"), shared.get("center"))
    except PlacementError as exc:
        rules.record("crs_required", path.name, str(exc))
        fr.rules = rules.as_dict()
        raise
    fr.placement = placement.describe()
    writer = ObjectWriter(conn, t, dataset_id, run_id)
    loaded: dict[str, tuple[int, int, str]] = {}  # source id → (db id, root db id, layer)
    nodes: dict[str, tuple[float, float, float]] = {}  # pipe nodes of this file, placed
    known_points = _points_lookup(conn, t, dataset_id)  # pipe nodes loaded before, in the storage CRS
    rejected: set[str] = set()
    seen: set[str] = set()  # every id of the file so far: a second object with one is rejected
    pending: list[tuple[dict[str, Any], list[tuple], list[tuple]]] = []
    by_class: Counter[str] = Counter()

    def write_pending() -> None:
        if not pending:
            return
        # replace by source id: the objects this file loaded before (their children go with them)
        ids = [row["source_id"] for row, _g, _o in pending]
        this_file = and_(t.city_object.c.dataset_id == dataset_id, t.city_object.c.source_id.in_(ids))
        # counted first: SQLite's rowcount leaves out rows its cascade (a building's parts) deleted
        fr.replaced += conn.execute(select(func.count()).select_from(t.city_object).where(this_file)).scalar() or 0
        conn.execute(delete(t.city_object).where(this_file))
        for row, geoms, others in pending:
            writer.add(row, geoms, others)
        pending.clear()

    for obj in source.objects:
        fr.read += 1
        duplicate = obj.source_id in seen
        seen.add(obj.source_id)
        if obj.parent is not None and obj.parent in rejected:
            rules.record("parent", obj.source_id, f"parent {obj.parent!r} was rejected")
            rejected.add(obj.source_id)
            fr.rejected += 1
            continue
        try:
            geoms = [(g[0], placement(g[1]), g[2], *(g[3:4] or [None])) for g in obj.geometries]
            others = [(lod, level, placement(g), s) for lod, level, g, s in obj.other_lods]
            footprint = placement(obj.footprint) if obj.footprint is not None else None
        except PlacementError as exc:
            rules.record("placed", obj.source_id, str(exc))
            fr.rules = rules.as_dict()
            raise
        if obj.ends is not None:
            geoms = _segment(obj, geoms, nodes, known_points)
        geoms = [g for g in geoms if g[1] is not None and shapely.has_z(g[1])]  # 2D: the footprint holds it
        if obj.object_class == "PipeNode" and geoms and not duplicate:
            nodes[obj.source_id] = tuple(shapely.get_coordinates(geoms[0][1], include_z=True)[0])
        typed = {**options.defaults, **{k: v for k, v in obj.typed.items() if v is not None}}
        geoms = rules.repair(obj, geoms)
        if not rules.check(obj, [(g[0], g[1]) for g in geoms], typed, footprint, duplicate):
            if not duplicate:  # the first object of that id stands (its parts load with it)
                rejected.add(obj.source_id)
            fr.rejected += 1
            continue
        if footprint is None and geoms:
            footprint = surface_footprint(max(geoms, key=lambda g: g[0])[1])
        if footprint is not None:
            footprint = shapely.force_2d(footprint)
            if footprint.geom_type in ("Polygon", "MultiPolygon") and not footprint.is_valid:
                footprint = shapely.make_valid(footprint)
        row = _row(obj, typed, geoms, footprint, options, dataset, loaded)
        row["id"] = writer.new_id()
        parent = loaded.get(obj.parent) if obj.parent else None
        if parent is not None:
            row["parent_id"], row["root_id"] = parent[0], parent[1]
        loaded[obj.source_id] = (row["id"], row.get("root_id") or row["id"], row["layer"])
        pending.append((row, [(g[0], g[1], g[2], g[3]) for g in geoms], others))
        by_class[row["object_class"]] += 1
        fr.loaded += 1
        if len(pending) >= BATCH:
            write_pending()
        if progress is not None and fr.read % 1000 == 0:
            progress(path.name, fr.read)
    write_pending()
    writer.finish()
    if placement.center is not None:  # files in degrees: the next ones use the same centre
        shared.setdefault("center", placement.center)
    elif placement.origin is not None and not source.local:
        shared.setdefault("origin", placement.origin)  # the next files of this load use the same frame
    # a root's CIM level is the highest level stored for it or any of its parts (an IFC building)
    co = t.city_object
    child = co.alias("child")
    highest = select(func.max(child.c.cim_level)).where(child.c.root_id == co.c.id).scalar_subquery()
    conn.execute(update(co).where(co.c.import_run_id == run_id, co.c.root_id.is_(None))
                 .values(cim_level=_greatest(conn, co.c.cim_level, highest)))
    fr.by_class = dict(by_class)
    fr.rules = rules.as_dict()


def _segment(obj: SourceObject, geoms: list[tuple], nodes: dict, known_points: Callable) -> list[tuple]:
    """A survey segment's pipe axis in the storage CRS: drawn between its end points when the table has no
    geometry, its heights from 起点高程/终点高程 or else from the end points (a 2D line is draped)."""
    ends = [nodes.get(e) or known_points(e) for e in obj.ends]
    line = next((g for g in geoms if g[1] is not None and g[1].geom_type == "LineString"), None)
    if line is None:
        missing = [e for e, xyz in zip(obj.ends, ends, strict=True) if xyz is None]
        if missing:
            obj.errors.append(f"end point(s) {', '.join(missing)} not found (load the 管点 table first)")
            return geoms
        xy = np.array([ends[0][:2], ends[1][:2]])
    else:
        xy = shapely.get_coordinates(line[1])
    z0 = obj.end_heights[0] if obj.end_heights[0] is not None else (ends[0][2] if ends[0] else None)
    z1 = obj.end_heights[1] if obj.end_heights[1] is not None else (ends[1][2] if ends[1] else None)
    if z0 is None or z1 is None:
        if line is not None and shapely.has_z(line[1]):
            return geoms
        obj.errors.append("no heights: neither 起点高程/终点高程 nor loaded end points")
        return geoms
    along = np.concatenate([[0.0], np.cumsum(np.hypot(*np.diff(xy, axis=0).T))])
    z = z0 + (z1 - z0) * (along / along[-1] if along[-1] > 0 else along)
    axis = shapely.LineString(np.column_stack([xy, z]))
    return [g for g in geoms if g is not line] + [(3, axis, None, None)]


def _greatest(conn: Connection, a: Any, b: Any) -> Any:
    """max(a, b) ignoring NULL b, in either dialect."""
    if conn.dialect.name == "sqlite":
        return func.max(a, func.coalesce(b, a))
    return func.greatest(a, b)


def _row(obj: SourceObject, typed: dict[str, Any], geoms: list[tuple], footprint: Any, options: LoadOptions,
         dataset: str, loaded: dict[str, tuple[int, int, str]]) -> dict[str, Any]:
    zs = [shapely.get_coordinates(g[1], include_z=True)[:, 2] for g in geoms if g[1] is not None and shapely.has_z(g[1])]
    z = np.concatenate(zs) if zs else np.empty(0)
    if obj.object_class == "PipeNode" and z.size and typed.get("depth_m"):  # a well reaches down its depth
        z = np.append(z, z.max() - float(typed["depth_m"]))
    parent_layer = loaded[obj.parent][2] if obj.parent in loaded else None
    layer = options.layer or CLASS_LAYER.get(obj.object_class) or (
        "building-components" if parent_layer in ("buildings", "building-components") else "other")
    attributes = dict(obj.attributes)
    row: dict[str, Any] = {
        "uid": public_uid(dataset, obj.source_id), "source_id": obj.source_id, "object_class": obj.object_class,
        "layer": layer, "cim_level": max((g[0] for g in geoms), default=1), "geom": footprint,
        "min_z": round(float(z.min()), 3) if z.size else None, "max_z": round(float(z.max()), 3) if z.size else None,
        "name": (obj.name or typed.get("name"))[:128] if (obj.name or typed.get("name")) else None,
    }
    for column in TYPED_COLUMNS:
        if column != "name" and typed.get(column) is not None:
            row[column] = typed[column]
    for key, value in typed.items():  # values without a typed column stay attributes
        if key not in TYPED_COLUMNS:
            attributes.setdefault(key, value)
    row["attributes"] = _jsonable(attributes) or None
    return row


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def _points_lookup(conn: Connection, t: CIMTables, dataset_id: int) -> Callable[[str], tuple[float, float, float] | None]:
    """Where a survey point of this dataset already in the database lies (x, y in the storage CRS, z):
    segments tables name their ends by point number."""
    co = t.city_object
    g = t.city_object_geometry
    cache: dict[str, tuple[float, float, float] | None] = {}

    def lookup(source_id: str) -> tuple[float, float, float] | None:
        if source_id not in cache:
            row = conn.execute(select(g.c.geom).join(co, co.c.id == g.c.object_id).where(
                co.c.dataset_id == dataset_id, co.c.source_id == source_id, co.c.object_class == "PipeNode")
                .order_by(g.c.cim_level.desc()).limit(1)).scalar()
            cache[source_id] = None if row is None else tuple(
                shapely.get_coordinates(to_shape(row), include_z=True)[0].tolist())
        return cache[source_id]

    return lookup
