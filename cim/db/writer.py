"""Bulk writing of city objects, batched and streamed, inside the caller's transaction.

Producers (the demo generator, the ingesters) hand over plain dicts with shapely geometries; the writer
turns each batch into EWKB in one vectorised call and sends it with COPY on PostGIS or an executemany
INSERT on SpatiaLite. Memory stays bounded by the batch size whatever the number of objects. Ids are
allocated here, before writing, so that children can reference parents written in the same batch.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from geoalchemy2 import WKBElement
from sqlalchemy import Connection, func, select, text

from cim.db.models import CIMTables
from cim.db.versions import bump

OBJECT_COLUMNS = (
    "id", "uid", "source_id", "object_class", "layer", "cim_level", "parent_id", "root_id",
    "name", "usage", "floors", "height", "year_built", "district", "address",
    "pipe_kind", "diameter_mm", "material", "depth_m", "owner", "laid_date", "attributes",
    "geom", "min_z", "max_z", "valid_from", "valid_to", "dataset_id", "import_run_id",
)
GEOMETRY_COLUMNS = ("object_id", "cim_level", "geom", "surfaces", "lod")
OTHER_LOD_COLUMNS = ("object_id", "lod", "cim_level", "geom", "surfaces")


class ObjectWriter:
    """Collects objects and their per-level 3D geometries and writes them in batches.

    Args:
        conn: an open connection inside a transaction (the caller commits or rolls back everything).
        tables: the CIM tables.
        dataset_id / import_run_id: lineage written on every object.
        batch_size: objects held before a flush.
    """

    def __init__(self, conn: Connection, tables: CIMTables, dataset_id: int, import_run_id: int,
                 batch_size: int = 5000) -> None:
        self.conn = conn
        self.t = tables
        self.srid = tables.city_object.c.geom.type.srid
        self.dataset_id = dataset_id
        self.import_run_id = import_run_id
        self.batch_size = batch_size
        self.valid_from = datetime.now(UTC)
        self.counts: Counter[str] = Counter()
        self.layers: set[str] = set()
        self._objects: list[dict[str, Any]] = []
        self._geoms: list[tuple[int, int, Any, list[str] | None, str | None]] = []
        self._other_lods: list[tuple[int, str, int, Any, list[str] | None]] = []
        self._postgis = conn.dialect.name == "postgresql"
        if self._postgis:
            # Ids are taken from the table's sequence in one block; no other writer may interleave.
            conn.execute(text("LOCK TABLE city_object IN EXCLUSIVE MODE"))
        self._next_id = (conn.execute(select(func.max(tables.city_object.c.id))).scalar() or 0) + 1

    def new_id(self) -> int:
        """Allocate the database id of an object about to be added."""
        oid = self._next_id
        self._next_id += 1
        return oid

    def add(self, obj: dict[str, Any], geometries: Sequence[tuple] = (),
            other_lods: Sequence[tuple[str, int, Any, list[str] | None]] = ()) -> int:
        """Queue one object (``id`` allocated if absent), its 3D geometries ``(cim_level, geom, surfaces)``
        or ``(cim_level, geom, surfaces, source_lod)``, and superseded source LODs
        ``(lod, cim_level, geom, surfaces)``."""
        if "id" not in obj:
            obj["id"] = self.new_id()
        self._objects.append(obj)
        for level, geom, surfaces, *lod in geometries:
            self._geoms.append((obj["id"], level, geom, surfaces, lod[0] if lod else None))
        for lod, level, geom, surfaces in other_lods:
            self._other_lods.append((obj["id"], lod, level, geom, surfaces))
        self.counts[obj["object_class"]] += 1
        self.layers.add(obj["layer"])
        if len(self._objects) >= self.batch_size:
            self.flush()
        return obj["id"]

    def flush(self) -> None:
        """Write everything queued."""
        if not self._objects and not self._geoms and not self._other_lods:
            return
        objects, geoms, others = self._objects, self._geoms, self._other_lods
        self._objects, self._geoms, self._other_lods = [], [], []
        footprints = _ewkb([o.get("geom") for o in objects], self.srid, hex_=self._postgis)
        geom_rows = [(oid, level, wkb, surfaces, lod) for (oid, level, _g, surfaces, lod), wkb
                     in zip(geoms, _ewkb([g[2] for g in geoms], self.srid, hex_=self._postgis))]
        other_rows = [(oid, lod, level, wkb, surfaces) for (oid, lod, level, _g, surfaces), wkb
                      in zip(others, _ewkb([g[3] for g in others], self.srid, hex_=self._postgis))]
        defaults = {"valid_from": self.valid_from, "dataset_id": self.dataset_id,
                    "import_run_id": self.import_run_id}
        if self._postgis:
            self._copy_postgis(objects, footprints, geom_rows, other_rows, defaults)
        else:
            self._insert_sqlite(objects, footprints, geom_rows, other_rows, defaults)

    def finish(self) -> Counter[str]:
        """Flush, bring the id sequence past the ids used, bump the written layers' versions, and return
        objects written per class."""
        self.flush()
        bump(self.conn, self.t, self.layers)
        if self._postgis:
            self.conn.execute(text(
                "SELECT setval(pg_get_serial_sequence('city_object', 'id'), "
                "(SELECT COALESCE(max(id), 0) + 1 FROM city_object), false)"))
        return self.counts

    def _copy_postgis(self, objects, footprints, geom_rows, other_rows, defaults) -> None:
        raw = self.conn.connection.driver_connection  # psycopg connection in the same transaction
        with raw.cursor() as cur:
            with cur.copy(f"COPY city_object ({', '.join(OBJECT_COLUMNS)}) FROM STDIN") as copy:
                for obj, wkb in zip(objects, footprints):
                    copy.write_row(_object_row(obj, wkb, defaults))
            for table, columns, rows in (("city_object_geometry", GEOMETRY_COLUMNS, geom_rows),
                                         ("city_object_other_lod", OTHER_LOD_COLUMNS, other_rows)):
                if not rows:
                    continue
                at = columns.index("surfaces")
                with cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        row = list(row)
                        row[at] = None if row[at] is None else json.dumps(row[at])
                        copy.write_row(row)

    def _insert_sqlite(self, objects, footprints, geom_rows, other_rows, defaults) -> None:
        rows = []
        for obj, wkb in zip(objects, footprints):
            row = {c: obj.get(c, defaults.get(c)) for c in OBJECT_COLUMNS}
            row["geom"] = None if wkb is None else WKBElement(wkb, srid=self.srid, extended=True)
            rows.append(row)
        self.conn.execute(self.t.city_object.insert(), rows)
        for table, columns, items in ((self.t.city_object_geometry, GEOMETRY_COLUMNS, geom_rows),
                                      (self.t.city_object_other_lod, OTHER_LOD_COLUMNS, other_rows)):
            if items:
                self.conn.execute(table.insert(), [
                    {**dict(zip(columns, item)), "geom": WKBElement(item[columns.index("geom")], srid=self.srid,
                                                                   extended=True)} for item in items])


_GEOM_AT = OBJECT_COLUMNS.index("geom")
_ATTRS_AT = OBJECT_COLUMNS.index("attributes")


def _object_row(obj: dict[str, Any], wkb: str | None, defaults: dict[str, Any]) -> list[Any]:
    row = [obj.get(c, defaults.get(c)) for c in OBJECT_COLUMNS]
    row[_GEOM_AT] = wkb
    attrs = row[_ATTRS_AT]
    row[_ATTRS_AT] = None if attrs is None else json.dumps(attrs, ensure_ascii=False)
    return row


def _ewkb(geoms: list[Any], srid: int, hex_: bool) -> list[Any]:
    """EWKB (with SRID, and Z where present) of many geometries in one vectorised call."""
    if not geoms:
        return []
    arr = np.asarray(geoms, dtype=object)
    arr = shapely.set_srid(arr, srid)
    return list(shapely.to_wkb(arr, hex=hex_, include_srid=True, output_dimension=3))
