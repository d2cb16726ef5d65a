"""Cases (城运案件) of the city operations platform: checked, versioned writes with optimistic locking.

A case is a city object of the layer ``cases`` (class ``Case``): its location is the footprint (a point in
the storage CRS), its reported time the start of its validity (a closed or cancelled case's validity ends
when it was closed), type code and status are typed columns, and every write bumps its ``revision`` — the
number clients send back in ``If-Match``. A write succeeds only against the revision it was based on
(compare-and-set in one UPDATE), so of two concurrent edits of the same revision exactly one wins. Every
version, the first and a deletion included, is kept in ``case_history``.

Nothing here knows HTTP: errors are :class:`CaseError` with a status and the reasons.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from functools import lru_cache
from http import HTTPStatus
from typing import Any

import jsonschema
import numpy as np
import shapely
from geoalchemy2 import WKBElement
from sqlalchemy import Connection, func, select
from sqlalchemy.exc import IntegrityError

from cim.crs import crs84_srid
from cim.crs.registry import CRS84_URI, UnknownCRS, default_registry
from cim.crs.transform import OutsideArea, swap_axes, transform
from cim.db.models import CIMTables
from cim.db.versions import bump

LAYER = "cases"
CLASS = "Case"
DATASET = "城市运行管理服务平台"  # the operations platform: the lineage of every case


@dataclass(frozen=True)
class CaseType:
    """One code of the case classification, and which CIM objects the overlay links a case of it to."""

    kind: str  # 部件 (a managed component) or 事件 (an event)
    zh: str
    en: str
    pipe_layer: str | None = None  # pipe-nodes or pipelines: the nearest of them is the related object
    pipe_kind: str | None = None  # of this 管线种类 (None: any kind)


# A subset of the GB/T 30428.2 部件/事件 classification (大类 2 digits + 小类 2 digits), prefixed BJ (部件)
# or SJ (事件) because both classifications number from 0101. The cover codes are the 部件编码 small classes
# the pipe nodes carry (cim.demo.networks.COVER_CLASS). README.md has the table.
CASE_TYPES: dict[str, CaseType] = {
    "BJ0101": CaseType("部件", "上水井盖", "water supply manhole cover", "pipe-nodes", "JS"),
    "BJ0102": CaseType("部件", "污水井盖", "sewage manhole cover", "pipe-nodes", "WS"),
    "BJ0103": CaseType("部件", "雨水井盖", "storm-water manhole cover", "pipe-nodes", "YS"),
    "BJ0104": CaseType("部件", "电力井盖", "power cable manhole cover", "pipe-nodes", "DL"),
    "BJ0106": CaseType("部件", "通信井盖", "telecom manhole cover", "pipe-nodes", "TX"),
    "BJ0108": CaseType("部件", "燃气井盖", "gas valve cover", "pipe-nodes", "RQ"),
    "BJ0109": CaseType("部件", "热力井盖", "district-heating manhole cover", "pipe-nodes", "RL"),
    "SJ0101": CaseType("事件", "暴露垃圾", "exposed garbage"),
    "SJ0102": CaseType("事件", "积存垃圾渣土", "accumulated garbage or muck"),
    "SJ0301": CaseType("事件", "施工废弃料", "construction waste dumped"),
    "SJ0401": CaseType("事件", "路面塌陷", "road surface collapse", "pipelines", None),
    "SJ0402": CaseType("事件", "供水管道破裂", "water main burst", "pipelines", "JS"),
    "SJ0403": CaseType("事件", "燃气泄漏", "gas leak", "pipelines", "RQ"),
    "SJ0404": CaseType("事件", "排水管道堵塞", "sewer blockage", "pipelines", "WS"),
    "SJ0405": CaseType("事件", "道路积水", "road flooding", "pipe-nodes", "YS"),
    "SJ0406": CaseType("事件", "供热管道泄漏", "district-heating pipe leak", "pipelines", "RL"),
}

# The case workflow of digital city management (数字化城市管理: 上报 → 立案 → 派遣 → 处置 → 核查 → 结案).
CASE_STATUSES: dict[str, str] = {
    "reported": "上报",
    "registered": "立案",
    "dispatched": "派遣",
    "processing": "处置中",
    "resolved": "已处置 (awaiting verification)",
    "closed": "结案",
    "cancelled": "作废",
}
ENDED = {"closed", "cancelled"}  # a case in these states is no longer current: its validity ends

# Properties the service writes itself: accepted in a request (a GET → PUT round trip) and ignored.
READ_ONLY = {"class", "cim_level", "name", "district", "revision", "min_z", "max_z", "valid_from", "valid_to",
             "related"}
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
FUTURE_SLACK = timedelta(minutes=5)  # phones' clocks run a little ahead
CST = timezone(timedelta(hours=8))  # case numbers are dated in China Standard Time


class CaseError(ValueError):
    """A write refused: the HTTP status it maps to and the reasons (each names the field)."""

    def __init__(self, status: int, code: str, reasons: list[str]) -> None:
        super().__init__("; ".join(reasons))
        self.status, self.code, self.reasons = status, code, reasons


def invalid(*reasons: str) -> CaseError:
    return CaseError(HTTPStatus.BAD_REQUEST, "InvalidParameterValue", list(reasons))


@lru_cache(maxsize=1)
def case_schema() -> dict[str, Any]:
    """The JSON Schema of a case as clients send it (a GeoJSON Feature with a Point)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Case (城运案件)",
        "type": "object",
        "required": ["type", "geometry", "properties"],
        "properties": {
            "type": {"const": "Feature"},
            "id": {"type": "string", "pattern": ID_PATTERN},
            "crs": {"type": "string", "description": "CRS of the geometry (else Content-Crs, else CRS84)"},
            "geometry": {
                "type": "object", "required": ["type", "coordinates"],
                "properties": {"type": {"const": "Point"},
                               "coordinates": {"type": "array", "minItems": 2, "maxItems": 3,
                                               "items": {"type": "number"}}},
            },
            "properties": {
                "type": "object",
                "required": ["case_type", "case_status", "reported_at"],
                "properties": {
                    "case_type": {"enum": list(CASE_TYPES), "description": "案件类型代码"},
                    "case_status": {"enum": list(CASE_STATUSES), "description": "案件状态"},
                    "reported_at": {"type": "string", "format": "date-time", "description": "上报时间 (RFC 3339)"},
                    "description": {"type": "string", "maxLength": 2000, "description": "问题描述"},
                    "address": {"type": "string", "maxLength": 128, "description": "地址"},
                },
                "additionalProperties": {"type": ["string", "number", "integer", "boolean", "null"]},
            },
        },
    }


@dataclass
class Case:
    """A checked case, its location in the storage CRS."""

    uid: str | None
    case_type: str
    case_status: str
    reported_at: datetime
    x: float
    y: float
    attributes: dict[str, Any]  # description and any other property the platform sends
    address: str | None = None
    reported_crs: str = CRS84_URI


def _reasons(errors: list[jsonschema.ValidationError]) -> list[str]:
    out = []
    for e in sorted(errors, key=lambda e: list(e.absolute_path)):
        where = "/".join(str(p) for p in e.absolute_path) or "(feature)"
        if e.validator == "enum":
            out.append(f"{where}: {e.instance!r} is not one of {', '.join(map(str, e.validator_value))}")
        else:
            out.append(f"{where}: {e.message}")
    return out


def parse_time(value: str, where: str) -> datetime:
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"{where}: not an RFC 3339 date-time: {value!r}") from None
    if t.tzinfo is None:
        raise invalid(f"{where}: give the time zone (e.g. +08:00 or Z): {value!r}")
    return t.astimezone(UTC)


def parse_case(doc: Any, content_crs: str | None, storage_srid: int, city_bbox: tuple[float, float, float, float],
               uid: str | None = None) -> Case:
    """A case from a client's GeoJSON Feature, checked against the schema, the code lists and the city's area.

    Args:
        doc: the parsed request body.
        content_crs: the ``Content-Crs`` header's CRS (without <>), if any; a ``crs`` member must agree.
        storage_srid: the database's storage CRS.
        city_bbox: CRS84 (west, south, east, north): a location outside is refused.
        uid: the id in the URL (PUT): the body's ``id``, if given, must be the same.
    """
    validator = jsonschema.Draft202012Validator(case_schema())
    errors = _reasons(list(validator.iter_errors(doc)))
    if errors:
        raise invalid(*errors)
    props = dict(doc["properties"])
    if uid is not None and doc.get("id") not in (None, uid):
        raise invalid(f"id: {doc['id']!r} differs from the id in the URL {uid!r}")
    crs_text = doc.get("crs")
    if crs_text and content_crs and crs_text != content_crs:
        raise invalid(f"crs: {crs_text!r} differs from the Content-Crs header {content_crs!r}")
    try:
        src = default_registry().resolve(crs_text or content_crs or CRS84_URI)
    except UnknownCRS as exc:
        raise invalid(f"crs: {exc}") from None
    if src.dimension != 2 and not src.uri.endswith("CRS84h") or src.pyproj_crs.is_geocentric:
        raise invalid(f"crs: {src.uri} is not a 2D CRS a location can be given in")
    a, b = doc["geometry"]["coordinates"][:2]
    x0, y0 = swap_axes(src, np.array([float(a)]), np.array([float(b)]))
    reg = default_registry()
    try:
        lon, lat, _ = transform(src, reg.resolve(CRS84_URI), x0, y0)
        w, s, e, n = city_bbox
        if not (w <= lon[0] <= e and s <= lat[0] <= n):
            raise invalid(f"geometry: lon {lon[0]:.6f}, lat {lat[0]:.6f} is outside the city "
                          f"(lon {w}..{e}, lat {s}..{n})")
        x, y, _ = transform(src, reg.epsg(storage_srid), x0, y0)
    except OutsideArea as exc:
        raise invalid(f"geometry: {exc}") from None
    reported = parse_time(props.pop("reported_at"), "properties/reported_at")
    if reported > datetime.now(UTC) + FUTURE_SLACK:
        raise invalid(f"properties/reported_at: {reported.isoformat()} is in the future")
    attrs = {k: v for k, v in props.items() if k not in READ_ONLY and k not in ("case_type", "case_status", "address")}
    attrs["reported_at"] = reported.strftime("%Y-%m-%dT%H:%M:%SZ")
    attrs["reported_location"] = {"crs": src.uri, "coordinates": [float(a), float(b)]}
    return Case(uid or doc.get("id"), props["case_type"], props["case_status"], reported, float(x[0]), float(y[0]),
                attrs, props.get("address"), src.uri)




# ---------------------------------------------------------------------------------------------- writes
def dataset_id(conn: Connection, t: CIMTables, name: str = DATASET) -> int:
    """The dataset of the operations platform's objects, made on first use (safe against concurrent firsts)."""
    found = conn.execute(select(t.dataset.c.id).where(t.dataset.c.name == name)).scalar()
    if found is not None:
        return int(found)
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(t.dataset).values(name=name, title=name, source="operations platform API",
                                          created_at=datetime.now(UTC)).on_conflict_do_nothing())
    return int(conn.execute(select(t.dataset.c.id).where(t.dataset.c.name == name)).scalar_one())


def _point(t: CIMTables, x: float, y: float) -> WKBElement:
    srid = t.city_object.c.geom.type.srid
    return WKBElement(shapely.to_wkb(shapely.set_srid(shapely.Point(x, y), srid), include_srid=True), srid=srid,
                      extended=True)


def _values(t: CIMTables, case: Case, now: datetime) -> dict[str, Any]:
    return {"case_type": case.case_type, "case_status": case.case_status, "address": case.address,
            "name": CASE_TYPES[case.case_type].zh, "attributes": case.attributes, "geom": _point(t, case.x, case.y),
            "valid_from": case.reported_at, "valid_to": now if case.case_status in ENDED else None}


def _record(conn: Connection, t: CIMTables, uid: str, revision: int, operation: str, now: datetime,
            case: Case | None, previous: dict[str, Any] | None = None) -> None:
    """One version into the history: the case as it is after this change (a deletion repeats the last)."""
    if case is not None:
        props = {"case_type": case.case_type, "case_status": case.case_status, **case.attributes}
        if case.address is not None:
            props["address"] = case.address
        geom = _point(t, case.x, case.y)
    else:
        assert previous is not None
        props, geom = previous["properties"], previous["geom"]
    conn.execute(t.case_history.insert().values(case_uid=uid, revision=revision, operation=operation,
                                                changed_at=now, properties=props, geom=geom))


def new_uid(conn: Connection, t: CIMTables, now: datetime) -> str:
    """A case number for a case the platform sent without one: AJ + date + sequence (案件编号)."""
    prefix = f"AJ{now.astimezone(CST):%Y%m%d}-"
    co = t.city_object
    n = conn.execute(select(func.count()).where(co.c.layer == LAYER, co.c.uid.like(f"{prefix}%"))).scalar_one()
    return f"{prefix}{n + 1:06d}"




def create(conn: Connection, t: CIMTables, case: Case) -> tuple[str, int]:
    """Insert a new case (revision 1) inside the caller's transaction; (uid, revision).

    Raises CaseError 409 when the id is taken.
    """
    co = t.city_object
    now = datetime.now(UTC)
    ds = dataset_id(conn, t)
    if case.uid is None and conn.dialect.name == "postgresql":  # a new case number: count and insert together
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(hashtext('cim.ops.cases'))")
    uid = case.uid or new_uid(conn, t, now)
    if conn.execute(select(co.c.id).where(co.c.uid == uid)).first() is not None:
        raise CaseError(HTTPStatus.CONFLICT, "Conflict", [f"id: {uid!r} exists already (PUT replaces a case)"])
    try:  # a concurrent create of the same id got there between the check and here
        conn.execute(co.insert().values(uid=uid, object_class=CLASS, layer=LAYER, cim_level=1, revision=1,
                                        dataset_id=ds, **_values(t, case, now)))
    except IntegrityError:
        raise CaseError(HTTPStatus.CONFLICT, "Conflict", [f"id: {uid!r} exists already (PUT replaces a case)"]) from None
    _record(conn, t, uid, 1, "create", now, case)
    bump(conn, t, [LAYER])
    return uid, 1


def current(conn: Connection, t: CIMTables, uid: str) -> dict[str, Any] | None:
    """The stored case: revision, typed fields, attributes, location (storage CRS) — or None."""
    co = t.city_object
    row = conn.execute(select(co.c.revision, co.c.case_type, co.c.case_status, co.c.address, co.c.attributes,
                              func.ST_X(co.c.geom).label("x"), func.ST_Y(co.c.geom).label("y"), co.c.geom)
                       .where(co.c.layer == LAYER, co.c.uid == uid)).mappings().first()
    return None if row is None else dict(row)


def _based_on(conn: Connection, t: CIMTables, uid: str, if_match: int | None) -> dict[str, Any]:
    row = current(conn, t, uid)
    if row is None:
        raise CaseError(HTTPStatus.NOT_FOUND, "NotFound", [f"no case {uid!r}"])
    if if_match is None:
        raise CaseError(HTTPStatus.PRECONDITION_REQUIRED, "PreconditionRequired",
                        [f"If-Match: required; GET the case for its ETag (now revision {row['revision']})"])
    if if_match != row["revision"] and if_match != ANY:
        raise CaseError(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed",
                        [f"If-Match: revision {if_match} is stale; case {uid!r} is at revision {row['revision']}"])
    return row


def _compare_and_set(conn: Connection, t: CIMTables, uid: str, revision: int, values: dict[str, Any]) -> int:
    """UPDATE only if the case is still at ``revision`` (PostGIS re-checks after a concurrent writer commits)."""
    co = t.city_object
    done = conn.execute(co.update().where(co.c.layer == LAYER, co.c.uid == uid, co.c.revision == revision)
                        .values(revision=revision + 1, **values)).rowcount
    if not done:
        raise CaseError(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed",
                        [f"If-Match: case {uid!r} was changed by another request meanwhile"])
    return revision + 1


def replace(conn: Connection, t: CIMTables, uid: str, case: Case, if_match: int | None,
            operation: str = "replace") -> int:
    """Replace a case (PUT) written at revision ``if_match``; the new revision."""
    row = _based_on(conn, t, uid, if_match)
    now = datetime.now(UTC)
    case.uid = uid
    revision = _compare_and_set(conn, t, uid, row["revision"], _values(t, case, now))
    _record(conn, t, uid, revision, operation, now, case)
    bump(conn, t, [LAYER])
    return revision


def as_feature(row: dict[str, Any], storage_srid: int) -> dict[str, Any]:
    """A stored case as the GeoJSON Feature a client would send (CRS84), for merge patches."""
    reg = default_registry()
    lon, lat, _ = transform(reg.epsg(storage_srid), reg.resolve(CRS84_URI), np.array([row["x"]]), np.array([row["y"]]))
    attrs = dict(row["attributes"] or {})
    attrs.pop("reported_location", None)
    props = {"case_type": row["case_type"], "case_status": row["case_status"], **attrs}
    if row["address"] is not None:
        props["address"] = row["address"]
    return {"type": "Feature", "geometry": {"type": "Point", "coordinates": [float(lon[0]), float(lat[0])]},
            "properties": props}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def update(conn: Connection, t: CIMTables, uid: str, patch: Any, content_crs: str | None, if_match: int | None,
           storage_srid: int, city_bbox: tuple[float, float, float, float]) -> int:
    """Apply a merge patch (PATCH) to a case written at revision ``if_match``; the new revision.

    A patch's geometry is in its own CRS (``crs`` member or Content-Crs); without one the location is kept.
    """
    if not isinstance(patch, dict):
        raise invalid("body: a JSON object (RFC 7396 merge patch)")
    row = _based_on(conn, t, uid, if_match)
    doc = as_feature(row, storage_srid)
    if "geometry" in patch or "crs" in patch:
        doc = merge_patch({k: v for k, v in doc.items() if k != "geometry"}, patch)
    else:
        doc = merge_patch(doc, patch)
        content_crs = None  # the kept location is written in CRS84
    case = parse_case(doc, content_crs, storage_srid, city_bbox, uid)
    keep = (row["attributes"] or {}).get("reported_location")
    if "geometry" not in patch and keep is not None:
        case.attributes["reported_location"] = keep
        case.x, case.y = float(row["x"]), float(row["y"])  # exactly as stored, not through CRS84 and back
    return replace(conn, t, uid, case, if_match, "update")


def delete(conn: Connection, t: CIMTables, uid: str, if_match: int | None) -> int:
    """Delete a case written at revision ``if_match``; its history stays, ending with a "delete" version."""
    row = _based_on(conn, t, uid, if_match)
    co = t.city_object
    now = datetime.now(UTC)
    done = conn.execute(co.delete().where(co.c.layer == LAYER, co.c.uid == uid,
                                          co.c.revision == row["revision"])).rowcount
    if not done:
        raise CaseError(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed",
                        [f"If-Match: case {uid!r} was changed by another request meanwhile"])
    last = conn.execute(select(t.case_history.c.properties, t.case_history.c.geom)
                        .where(t.case_history.c.case_uid == uid)
                        .order_by(t.case_history.c.revision.desc()).limit(1)).mappings().one()
    _record(conn, t, uid, row["revision"] + 1, "delete", now, None, dict(last))
    bump(conn, t, [LAYER])
    return row["revision"] + 1


def revision_of(conn: Connection, t: CIMTables, uid: str) -> int | None:
    co = t.city_object
    return conn.execute(select(co.c.revision).where(co.c.layer == LAYER, co.c.uid == uid)).scalar()


def history(conn: Connection, t: CIMTables, uid: str) -> list[dict[str, Any]]:
    """Every version of a case, oldest first, as GeoJSON Features in CRS84 (empty for an unknown case)."""
    h = t.case_history

    srid = crs84_srid(t.city_object.c.geom.type.srid)
    g = func.ST_Transform(h.c.geom, srid)
    geojson = func.AsGeoJSON(g, 9) if conn.dialect.name == "sqlite" else func.ST_AsGeoJSON(g, 9, 0)
    rows = conn.execute(select(h.c.revision, h.c.operation, h.c.changed_at, h.c.properties, geojson.label("geometry"))
                        .where(h.c.case_uid == uid).order_by(h.c.revision)).mappings().all()
    out = []
    for r in rows:
        changed = r["changed_at"]
        changed = (changed.replace(tzinfo=UTC) if changed.tzinfo is None else changed.astimezone(UTC))
        out.append({"type": "Feature", "id": f"{uid}@{r['revision']}",
                    "geometry": None if r["geometry"] is None else json.loads(r["geometry"]),
                    "properties": {**r["properties"], "case_id": uid, "revision": r["revision"],
                                   "operation": r["operation"], "changed_at": changed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}})
    return out


ANY = -1  # If-Match: * (any current revision)
ETAG_RE = re.compile(r'^(?:W/)?"r(\d+)(?:-[0-9a-f]+)?"$')


def etag_revision(header: str | None) -> int | None:
    """The revision an If-Match header names (our ETags are "r<revision>-<variant>"); None if absent.

    Raises CaseError 412 for a value that is not one of our ETags (it cannot match)."""
    if header is None or not header.strip():
        return None
    values = [v.strip() for v in header.split(",")]
    if values == ["*"]:
        return ANY
    for v in values:
        m = ETAG_RE.match(v)
        if m:
            return int(m.group(1))
    raise CaseError(HTTPStatus.PRECONDITION_FAILED, "PreconditionFailed",
                    [f"If-Match: {header!r} is not an ETag of this case"])
