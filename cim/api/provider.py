"""pygeoapi feature provider over one layer of the CIM database.

pygeoapi builds a provider object on every request, so everything expensive (the engine and its pool,
the tables, transformers) lives in process-wide caches and construction is cheap. The provider is
declared to pygeoapi with the default CRS84 storage CRS: we transform bboxes and output ourselves
(pygeoapi 0.24's own CRS handling is wrong for EPSG:4550, ../shared/CRS-NOTES.md); footprints are
transformed and encoded as GeoJSON in the database.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from datetime import datetime
from typing import Any

import shapely
from pygeoapi.provider.base import (
    BaseProvider,
    ProviderConnectionError,
    ProviderInvalidQueryError,
    ProviderItemNotFoundError,
    ProviderQueryError,
)
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from cim.api.limits import unavailable
from cim.crs import crs84_srid
from cim.crs.registry import CRS84_URI, default_registry
from cim.crs.transform import query_area
from cim.db.engine import CIMDatabaseError, open_engine
from cim.db.models import LAYERS, CIMTables
from cim.db.queries import (
    FeatureQuery,
    count_features,
    layer_properties,
    select_feature,
    select_features,
    to_utc,
)
from cim.db.schema import read_meta, tables_for
from cim.settings import get_settings

LOGGER = logging.getLogger(__name__)

FIELD_TYPES: dict[str, dict[str, str]] = {
    "name": {"type": "string"}, "class": {"type": "string"}, "cim_level": {"type": "integer"},
    "district": {"type": "string"}, "usage": {"type": "string"}, "floors": {"type": "integer"},
    "height": {"type": "number"}, "year_built": {"type": "integer"}, "address": {"type": "string"},
    "parent": {"type": "string"}, "root": {"type": "string"}, "pipe_kind": {"type": "string"},
    "diameter_mm": {"type": "number"}, "material": {"type": "string"}, "depth_m": {"type": "number"},
    "owner": {"type": "string"}, "laid_date": {"type": "string", "format": "date"},
    "source_id": {"type": "string"}, "min_z": {"type": "number"}, "max_z": {"type": "number"},
    "case_type": {"type": "string"}, "case_status": {"type": "string"}, "revision": {"type": "integer"},
    "valid_from": {"type": "string", "format": "date-time"}, "valid_to": {"type": "string", "format": "date-time"},
}


_OPENED: dict[str, tuple[Engine, CIMTables, str]] = {}  # url → engine, tables, database id
_OPENING = threading.Lock()


def database(url: str) -> tuple[Engine, CIMTables]:
    """The process-wide engine and tables for ``url``: one bounded pool per worker and a statement timeout
    (``cim.limits``; :mod:`cim.api.limits` answers what they raise). Opened once even when a cold worker's
    first requests all ask at the same time (each would have opened a pool of its own)."""
    opened = _OPENED.get(url)
    if opened is None:
        with _OPENING:
            opened = _OPENED.get(url) or _open(url)
    return opened[0], opened[1]


def _open(url: str) -> tuple[Engine, CIMTables, str]:
    from cim.api import metrics

    settings = get_settings()
    limits = settings.limits
    engine = open_engine(url, pool_size=limits.pool_size, max_overflow=limits.max_overflow,
                         pool_timeout=limits.pool_timeout_s, statement_timeout_ms=limits.statement_timeout_ms)
    metrics.watch_pool(engine, "primary" if url == settings.database_url else "replica")
    tables = tables_for(engine)
    # read now, not inside a request that already holds a connection (a second one per request deadlocks
    # a pool that every request holds one of)
    with engine.connect() as conn:
        db_id = str(read_meta(conn).get("database_id", ""))
    _OPENED[url] = (engine, tables, db_id)
    return _OPENED[url]


def close_databases() -> None:
    """Close every engine :func:`database` opened in this process (``cim serve``, before its workers start)."""
    with _OPENING:
        for engine, _, _ in _OPENED.values():
            engine.dispose()
        _OPENED.clear()


def read_database() -> tuple[Engine, CIMTables]:
    """The engine for read-only requests: the replica (``read_database_url``) when there is one. Every
    GET route reads through this; a replica lags the primary by its replay delay."""
    settings = get_settings()
    return database(settings.read_database_url or settings.database_url)


def write_database() -> tuple[Engine, CIMTables]:
    """The engine for requests that write (and must read their own writes): always the primary."""
    return database(get_settings().database_url)


def database_id(provider: "CIMProvider") -> str:
    """The id written into the database at ``cim db init`` (read when the engine was opened)."""
    for engine, _, db_id in _OPENED.values():
        if engine is provider.engine:
            return db_id
    with provider.engine.connect() as conn:  # an engine opened elsewhere (a provider_def database_url)
        return str(read_meta(conn).get("database_id", ""))


class CIMProvider(BaseProvider):
    """Features of one CIM layer (``data:`` in the resource's provider definition)."""

    def __init__(self, provider_def: dict[str, Any]) -> None:
        super().__init__(provider_def)
        self.layer = str(provider_def["data"])
        if self.layer not in LAYERS:
            raise ProviderConnectionError(f"unknown CIM layer {self.layer!r}; known: {', '.join(LAYERS)}")
        self.id_field = "id"
        self.title_field = "name"
        try:
            url = provider_def.get("database_url")
            self.engine, self.tables = database(url) if url else read_database()
        except CIMDatabaseError as exc:
            raise ProviderConnectionError(str(exc)) from None
        self.dialect = self.engine.dialect.name
        self.storage_srid = self.tables.city_object.c.geom.type.srid
        self._fields = {p: FIELD_TYPES[p] for p in layer_properties(self.layer)}

    def get_fields(self) -> dict[str, dict[str, str]]:
        return self._fields

    # ------------------------------------------------------------------ queries
    def query(self, offset: int = 0, limit: int = 10, resulttype: str = "results", bbox: list | None = None,
              datetime_: str | None = None, properties: list | None = None, sortby: list | None = None,
              select_properties: list | None = None, skip_geometry: bool = False, q: str | None = None,
              filterq: Any = None, **kwargs: Any) -> dict[str, Any]:
        if filterq is not None:
            raise ProviderInvalidQueryError(user_msg="filter: supported on the GeoJSON output (f=json), not here")
        query = FeatureQuery(
            self.layer,
            area=self._bbox_area(bbox) if bbox else None,
            time=parse_interval(datetime_) if datetime_ else None,
            equals=self._equals(properties or []),
            sortby=[(s["property"], s["order"] != "-") for s in (sortby or [])],
            limit=limit,
            offset=offset,
            with_geometry=not skip_geometry,
            output_srid=crs84_srid(self.storage_srid),
            select=select_properties or None,
        )
        try:
            with self.engine.connect() as conn:
                matched = conn.execute(count_features(self.tables, self.dialect, query)).scalar_one()
                rows = [] if resulttype == "hits" else conn.execute(
                    select_features(self.tables, self.dialect, query)).mappings().all()
        except SQLAlchemyError as exc:
            if unavailable(exc):  # a 503, by cim.api.limits
                raise
            LOGGER.exception("query failed")
            raise ProviderQueryError(user_msg="query failed in the CIM database") from exc
        features = [self._feature(r, skip_geometry) for r in rows]
        return {"type": "FeatureCollection", "features": features, "numberMatched": matched,
                "numberReturned": len(features)}

    def get(self, identifier: str, **kwargs: Any) -> dict[str, Any]:
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select_feature(self.tables, self.dialect, self.layer, str(identifier),
                                                  crs84_srid(self.storage_srid))).mappings().first()
        except SQLAlchemyError as exc:
            if unavailable(exc):
                raise
            LOGGER.exception("get failed")
            raise ProviderQueryError(user_msg="query failed in the CIM database") from exc
        if row is None:
            raise ProviderItemNotFoundError(user_msg=f"no feature {identifier!r} in {self.layer}")
        return self._feature(row, False)

    # ------------------------------------------------------------------ helpers
    def _bbox_area(self, bbox: list[float]) -> shapely.Geometry:
        """A CRS84 bbox as a polygon in the storage CRS, edges densified (not just two corners)."""
        if len(bbox) == 6:
            bbox = [bbox[0], bbox[1], bbox[3], bbox[4]]
        minx, miny, maxx, maxy = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (minx, miny, maxx, maxy)) or miny > maxy:
            raise ProviderInvalidQueryError(user_msg="bbox: four finite numbers, miny <= maxy")
        reg = default_registry()
        return query_area((minx, miny, maxx, maxy), reg.resolve(CRS84_URI), reg.epsg(self.storage_srid))

    def _equals(self, properties: list[tuple[str, str]]) -> dict[str, Any]:
        return typed_equals(self._fields, properties)

    def _feature(self, row: Any, skip_geometry: bool) -> dict[str, Any]:
        geometry = None if skip_geometry or row.get("geometry") is None else json.loads(row["geometry"])
        return {"type": "Feature", "id": row["uid"], "geometry": geometry, "properties": json.loads(row["properties"])}


def typed_equals(fields: dict[str, dict[str, str]], pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Property = value filters of a layer, values converted to the property's type (400 if they cannot be)."""
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name not in fields:
            continue
        kind = fields[name]["type"]
        try:
            if fields[name].get("format") == "date-time":  # PostGIS: a text value against timestamptz was a 500
                kind = "date-time"
                out[name] = to_utc(datetime.fromisoformat(value))
            else:
                out[name] = int(value) if kind == "integer" else float(value) if kind == "number" else value
        except ValueError:
            raise ProviderInvalidQueryError(user_msg=f"{name} must be a {kind}") from None
    return out


def parse_interval(value: str) -> tuple[datetime | None, datetime | None]:
    """An OGC datetime (instant, closed or open interval) as (start, end) in UTC."""
    def parse(part: str, end: bool) -> datetime | None:
        if part in ("", ".."):
            return None
        try:
            if len(part) == 10:  # a date: the whole day
                d = datetime.fromisoformat(part)
                return to_utc(d.replace(hour=23, minute=59, second=59) if end else d)
            return to_utc(datetime.fromisoformat(part))
        except ValueError:
            raise ProviderInvalidQueryError(user_msg=f"invalid datetime {part!r}") from None

    if "/" in value:
        start, end = value.split("/", 1)
        return parse(start, False), parse(end, True)
    instant_start, instant_end = parse(value, False), parse(value, True)
    return instant_start, instant_end
