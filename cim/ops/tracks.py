"""Vehicle GPS tracks (车辆轨迹): sanitation and construction-waste vehicles' fixes → two layers.

``vehicle-tracks``: one line per vehicle and day (China Standard Time), its vertices the fixes in time order;
the times and speeds of the vertices are in the properties (``times``, ``speeds_kmh``: the M values of a
LineStringM, which GeoJSON cannot carry); validity from the first to the last fix, so ``datetime`` selects the
tracks driven in an interval. ``vehicle-positions``: each vehicle's last fix.

Input: CSV (UTF-8 or GBK, a header row) or JSON (an array of objects, or a GeoJSON FeatureCollection of
Points), in WGS 84 / CGCS2000 lon/lat, GCJ-02 (a Gaode-based terminal) or any supported CRS. A load is all or
nothing: every bad row is named by its line (CSV) or index (JSON) and nothing is written. Loading fixes of
a vehicle and day that already has a track merges them (a fix at the same time is replaced).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from geoalchemy2 import WKBElement
from geoalchemy2.shape import to_shape
from sqlalchemy import Connection, delete, insert, select

from cim.crs.registry import CRS84_URI, UnknownCRS, default_registry
from cim.crs.transform import OutsideArea, swap_axes, transform
from cim.db.models import CIMTables
from cim.db.versions import bump
from cim.ops.cases import dataset_id

TRACKS, POSITIONS = "vehicle-tracks", "vehicle-positions"
DATASET = "车辆定位 (vehicle GPS)"
CST = timezone(timedelta(hours=8))  # times without a zone are China Standard Time, as terminals send them
MAX_SPEED_KMH = 150.0
MAX_ERRORS_LISTED = 50

# accepted column / key names (first found wins)
FIELDS: dict[str, tuple[str, ...]] = {
    "vehicle_id": ("vehicle_id", "vehicle", "plate", "车牌号", "车牌", "车辆编号"),
    "time": ("time", "timestamp", "gps_time", "datetime", "定位时间", "时间"),
    "lon": ("lon", "lng", "longitude", "x", "经度"),
    "lat": ("lat", "latitude", "y", "纬度"),
    "speed": ("speed", "speed_kmh", "速度"),
    "heading": ("heading", "direction", "course", "方向"),
    "vehicle_type": ("vehicle_type", "type", "车辆类型"),
}
REQUIRED = ("vehicle_id", "time", "lon", "lat", "speed")


class TrackError(ValueError):
    """A load refused: the file, and each bad row with its line (CSV) or index (JSON) and reason."""

    def __init__(self, source: str, problems: list[str], total: int | None = None) -> None:
        shown = problems[:MAX_ERRORS_LISTED]
        more = (total or len(problems)) - len(shown)
        super().__init__(f"{source}: " + "; ".join(shown) + (f"; … and {more} more" if more > 0 else ""))
        self.source, self.problems = source, problems


@dataclass
class Fixes:
    """Parsed fixes, columnar."""

    where: list[str] = field(default_factory=list)  # "line 7" / "item 3", for messages
    vehicle: list[str] = field(default_factory=list)
    vehicle_type: list[str | None] = field(default_factory=list)
    time: list[datetime] = field(default_factory=list)
    a: list[float] = field(default_factory=list)  # first coordinate as written (lon, or the CRS's first axis)
    b: list[float] = field(default_factory=list)
    speed: list[float] = field(default_factory=list)
    heading: list[float | None] = field(default_factory=list)


@dataclass
class LoadResult:
    fixes: int
    vehicles: int
    tracks: int


def _pick(row: dict[str, Any], name: str) -> Any:
    for key in FIELDS[name]:
        if key in row and row[key] not in (None, ""):
            return row[key]
    return None


def _time(value: Any) -> datetime:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)  # epoch seconds
    text = str(value).strip()
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00").replace("/", "-"))
    except ValueError:
        raise ValueError(f"time {text!r} is not a date-time (ISO 8601, e.g. 2026-12-05 08:30:00)") from None
    return (t.replace(tzinfo=CST) if t.tzinfo is None else t).astimezone(UTC)


def _number(value: Any, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {value!r} is not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} {value!r} is not a finite number")
    return v


def _add(fixes: Fixes, row: dict[str, Any], where: str, problems: list[str]) -> None:
    try:
        missing = [n for n in REQUIRED if _pick(row, n) is None]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        vehicle = str(_pick(row, "vehicle_id")).strip()
        if not vehicle or len(vehicle) > 48:
            raise ValueError("vehicle_id: 1 to 48 characters")
        t = _time(_pick(row, "time"))
        a, b = _number(_pick(row, "lon"), "lon"), _number(_pick(row, "lat"), "lat")
        speed = _number(_pick(row, "speed"), "speed")
        if not 0 <= speed <= MAX_SPEED_KMH:
            raise ValueError(f"speed {speed:g} km/h outside 0..{MAX_SPEED_KMH:g}")
        heading = _pick(row, "heading")
        heading = None if heading is None else _number(heading, "heading") % 360.0
    except ValueError as exc:
        problems.append(f"{where}: {exc}")
        return
    kind = _pick(row, "vehicle_type")
    fixes.where.append(where)
    fixes.vehicle.append(vehicle)
    fixes.vehicle_type.append(None if kind is None else str(kind))
    fixes.time.append(t)
    fixes.a.append(a)
    fixes.b.append(b)
    fixes.speed.append(speed)
    fixes.heading.append(heading)


def parse(data: bytes, source: str, kind: str | None = None, max_rows: int = 1_000_000) -> Fixes:
    """Fixes from CSV or JSON bytes (``kind`` 'csv' / 'json', else guessed from the first character).

    Raises TrackError naming every bad row (nothing is kept of a file with any)."""
    text = None
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    if text is None:
        raise TrackError(source, ["not UTF-8 or GBK text"])
    kind = kind or ("json" if text.lstrip()[:1] in ("[", "{") else "csv")
    fixes, problems = Fixes(), []
    if kind == "json":
        try:
            doc = json.loads(text)
        except ValueError as exc:
            raise TrackError(source, [f"not JSON ({exc})"]) from None
        items = doc.get("features") if isinstance(doc, dict) and doc.get("type") == "FeatureCollection" else doc
        if not isinstance(items, list):
            raise TrackError(source, ["JSON: an array of fixes or a GeoJSON FeatureCollection of Points"])
        if len(items) > max_rows:
            raise TrackError(source, [f"{len(items):,} fixes, at most {max_rows:,} in one load"])
        for i, item in enumerate(items):
            if isinstance(item, dict) and item.get("type") == "Feature":
                geom = item.get("geometry") or {}
                coords = geom.get("coordinates") if geom.get("type") == "Point" else None
                row = dict(item.get("properties") or {})
                if isinstance(coords, list) and len(coords) >= 2:
                    row["lon"], row["lat"] = coords[0], coords[1]
            elif isinstance(item, dict):
                row = item
            else:
                problems.append(f"item {i}: not an object")
                continue
            _add(fixes, row, f"item {i}", problems)
    else:
        reader = csv.DictReader(io.StringIO(text))
        if not reader.fieldnames:
            raise TrackError(source, ["CSV: no header row"])
        header = [h.strip() for h in reader.fieldnames]
        reader.fieldnames = header
        absent = [n for n in REQUIRED if not any(k in header for k in FIELDS[n])]
        if absent:
            raise TrackError(source, [f"line 1: no column for {', '.join(absent)} (e.g. "
                                      + ", ".join(FIELDS[n][0] for n in absent) + ")"])
        for n, row in enumerate(reader):
            if n >= max_rows:
                raise TrackError(source, [f"more than {max_rows:,} fixes in one load"])
            if None in row:
                problems.append(f"line {reader.line_num}: more values than columns")
                continue
            _add(fixes, {k: (v.strip() if isinstance(v, str) else v) for k, v in row.items()},
                 f"line {reader.line_num}", problems)
    if problems:
        raise TrackError(source, problems)
    if not fixes.vehicle:
        raise TrackError(source, ["no fixes"])
    return fixes


def _locate(fixes: Fixes, crs: str | None, storage_srid: int, city_bbox: tuple[float, float, float, float],
            source: str) -> tuple[np.ndarray, np.ndarray]:
    """Storage CRS x/y of the fixes; fixes outside the city are bad rows."""
    reg = default_registry()
    try:
        src = reg.resolve(crs or CRS84_URI)
    except UnknownCRS as exc:
        raise TrackError(source, [f"crs: {exc}"]) from None
    x0, y0 = swap_axes(src, np.asarray(fixes.a), np.asarray(fixes.b))
    try:
        lon, lat, _ = transform(src, reg.resolve(CRS84_URI), x0, y0, check_area=False)
    except OutsideArea as exc:
        raise TrackError(source, [str(exc)]) from None
    w, s, e, n = city_bbox
    outside = ~((lon >= w) & (lon <= e) & (lat >= s) & (lat <= n))
    if outside.any():
        raise TrackError(source, [f"{fixes.where[i]}: lon {lon[i]:.6f}, lat {lat[i]:.6f} outside the city "
                                  f"(lon {w}..{e}, lat {s}..{n})" for i in np.flatnonzero(outside)],
                         int(outside.sum()))
    x, y, _ = transform(reg.resolve(CRS84_URI), reg.epsg(storage_srid), lon, lat)
    return x, y


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _geom(t: CIMTables, g: shapely.Geometry) -> WKBElement:
    srid = t.city_object.c.geom.type.srid
    return WKBElement(shapely.to_wkb(shapely.set_srid(g, srid), include_srid=True), srid=srid, extended=True)


def load(conn: Connection, t: CIMTables, fixes: Fixes, crs: str | None, city_bbox: tuple[float, float, float, float],
         source: str) -> LoadResult:
    """Write the fixes inside the caller's transaction: tracks per vehicle and day (merged with what is
    there), last positions; bumps both layers' versions."""
    co = t.city_object
    srid = co.c.geom.type.srid
    x, y = _locate(fixes, crs, srid, city_bbox, source)
    ds = dataset_id(conn, t, DATASET)
    if conn.dialect.name == "postgresql":  # concurrent loads of the same vehicle merge one after the other
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('cim.ops.tracks'))")
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, (vehicle, when) in enumerate(zip(fixes.vehicle, fixes.time)):
        groups[(vehicle, when.astimezone(CST).strftime("%Y%m%d"))].append(i)
    for (vehicle, day), rows in groups.items():
        uid = f"{vehicle}-{day}"
        points: dict[datetime, tuple[float, float, float, float | None]] = {}
        old = conn.execute(select(co.c.attributes, co.c.geom, co.c.usage)
                           .where(co.c.layer == TRACKS, co.c.uid == uid)).first()
        kind = next((fixes.vehicle_type[i] for i in rows if fixes.vehicle_type[i]), None)
        if old is not None:
            coords = shapely.get_coordinates(to_shape(old.geom))
            attrs = old.attributes or {}
            for (px, py), ts, sp, hd in zip(coords, attrs.get("times", []), attrs.get("speeds_kmh", []),
                                            attrs.get("headings", [None] * len(coords))):
                points[datetime.fromisoformat(ts.replace("Z", "+00:00"))] = (float(px), float(py), sp, hd)
            kind = kind or old.usage
            conn.execute(delete(co).where(co.c.layer == TRACKS, co.c.uid == uid))
        for i in rows:
            points[fixes.time[i].replace(microsecond=0)] = (float(x[i]), float(y[i]), fixes.speed[i], fixes.heading[i])
        times = sorted(points)
        xy = [(points[k][0], points[k][1]) for k in times]
        geom = shapely.LineString(xy) if len(xy) > 1 else shapely.Point(xy[0])
        conn.execute(insert(co).values(
            uid=uid, object_class="VehicleTrack", layer=TRACKS, cim_level=1, name=vehicle, usage=kind,
            geom=_geom(t, geom), valid_from=times[0], valid_to=times[-1], dataset_id=ds,
            attributes={"vehicle_id": vehicle, "date": day, "fixes": len(times),
                        "length_m": round(float(geom.length), 1), "times": [_iso(k) for k in times],
                        "speeds_kmh": [points[k][2] for k in times], "headings": [points[k][3] for k in times]}))
    last: dict[str, int] = {}
    for i, (vehicle, when) in enumerate(zip(fixes.vehicle, fixes.time)):
        if vehicle not in last or when >= fixes.time[last[vehicle]]:
            last[vehicle] = i
    for vehicle, i in last.items():
        current = conn.execute(select(co.c.valid_from).where(co.c.layer == POSITIONS, co.c.uid == vehicle)).scalar()
        if current is not None:
            current = current.replace(tzinfo=UTC) if current.tzinfo is None else current
            if current > fixes.time[i]:
                continue  # an older fix does not move the vehicle back
            conn.execute(delete(co).where(co.c.layer == POSITIONS, co.c.uid == vehicle))
        conn.execute(insert(co).values(
            uid=vehicle, object_class="VehiclePosition", layer=POSITIONS, cim_level=1, name=vehicle,
            usage=fixes.vehicle_type[i], geom=_geom(t, shapely.Point(float(x[i]), float(y[i]))),
            valid_from=fixes.time[i], dataset_id=ds,
            attributes={"vehicle_id": vehicle, "time": _iso(fixes.time[i]), "speed_kmh": fixes.speed[i],
                        "heading": fixes.heading[i], "track": f"{vehicle}-{fixes.time[i].astimezone(CST):%Y%m%d}"}))
    bump(conn, t, [TRACKS, POSITIONS])
    return LoadResult(len(fixes.vehicle), len(last), len(groups))


def load_file(conn: Connection, t: CIMTables, path: Path, crs: str | None,
              city_bbox: tuple[float, float, float, float], max_rows: int) -> LoadResult:
    """Parse and load one file (CSV or JSON by its suffix) inside the caller's transaction."""
    kind = "json" if path.suffix.lower() in (".json", ".geojson") else "csv" if path.suffix.lower() == ".csv" else None
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TrackError(str(path), [f"cannot read ({exc.strerror})"]) from None
    return load(conn, t, parse(data, str(path), kind, max_rows), crs, city_bbox, str(path))


__all__ = ["LoadResult", "TrackError", "load", "load_file", "parse"]
