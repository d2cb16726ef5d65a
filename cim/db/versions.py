"""Per-layer data versions: every write to a layer bumps its version in the same transaction.

HTTP validators (ETag) and tile caches are keyed on them, so a cached answer is reused exactly as long as
the layer's data is unchanged, and checking costs one primary-key read instead of running the query.
Every write path in ``cim`` goes through :func:`bump` (the :class:`cim.db.writer.ObjectWriter` does it in
``finish``); writes made outside ``cim`` must call it too, or caches will serve the old data.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime

from sqlalchemy import ColumnElement, Connection, func, select

from cim.db.models import CIMTables


def bump(conn: Connection, t: CIMTables, layers: Iterable[str]) -> None:
    """Give each of ``layers`` a new version, inside the caller's transaction."""
    lv = t.layer_version
    now = datetime.now(UTC)
    for layer in sorted(set(layers)):
        done = conn.execute(lv.update().where(lv.c.layer == layer)
                            .values(version=lv.c.version + 1, changed_at=now)).rowcount
        if not done:
            conn.execute(lv.insert().values(layer=layer, version=1, changed_at=now))


def layer_version(conn: Connection, t: CIMTables, layer: str) -> int:
    """The layer's current version (0 for a layer never written)."""
    lv = t.layer_version
    return int(conn.execute(select(lv.c.version).where(lv.c.layer == layer)).scalar() or 0)


def version_columns(t: CIMTables, layers: Iterable[str]) -> list[ColumnElement[int]]:
    """The layers' versions as extra output columns (``_version_0``, …) of a query over their data: read in
    the same statement, so in the same snapshot as the rows (an ETag that matches the data exactly), and
    without a round trip of their own."""
    lv = t.layer_version
    return [func.coalesce(select(lv.c.version).where(lv.c.layer == layer).scalar_subquery(), 0)
            .label(f"_version_{i}") for i, layer in enumerate(layers)]
def raster_key(name: str) -> str:
    """The ``layer_version`` key of a registered raster (``raster:NAME``; the column holds 32 characters, so a
    longer name is shortened and hashed)."""
    key = f"raster:{name}"
    if len(key) <= 32:
        return key
    return f"raster:{name[:12]}~{hashlib.blake2b(name.encode(), digest_size=6).hexdigest()}"
