"""The audit trail (审计日志): who wrote what, and who read sensitive layers, when.

One row per audited request, written by the API's auth middleware (:mod:`cim.api.auth`) after the
response has gone out, in a transaction of its own, so auditing never delays or fails a request: an entry
that cannot be written is logged instead. The table lives in its own module because it is not city data:
no layer version, no lineage.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import (BigInteger, Column, Connection, DateTime, Index, Integer, MetaData, SmallInteger, String,
                        Table, Text, select)

from cim.db.models import Json

BigId = BigInteger().with_variant(Integer(), "sqlite")


@lru_cache(maxsize=1)
def audit_table() -> Table:
    """The ``audit_log`` table (no geometry, so one Table object serves DDL on both backends)."""
    return Table(
        "audit_log",
        MetaData(),
        Column("id", BigId, primary_key=True),
        Column("at", DateTime(timezone=True), nullable=False, comment="when the request arrived (UTC)"),
        Column("principal", String(128), nullable=False, comment="key name, token subject, or 'anonymous'"),
        Column("auth", String(16), nullable=False, comment="api-key, jwt, anonymous"),
        Column("roles", Json, comment="the principal's roles"),
        Column("action", String(8), nullable=False, comment="read, write, denied"),
        Column("method", String(8), nullable=False),
        Column("path", Text, nullable=False),
        Column("query", Text),
        Column("collections", Json, comment="the sensitive collections the request named"),
        Column("status", SmallInteger, nullable=False, comment="HTTP status of the response"),
        Column("client", String(64), comment="client address"),
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_principal", "principal", "at"),
    )


def write_entries(conn: Connection, entries: Sequence[dict[str, Any]]) -> None:
    """Insert audit entries (keys: the table's columns but ``id``)."""
    if entries:
        conn.execute(audit_table().insert(), list(entries))


def read_entries(conn: Connection, *, since: datetime | None = None, principal: str | None = None,
                 limit: int = 100) -> list[dict[str, Any]]:
    """The newest entries first, optionally since a time or for one principal."""
    a = audit_table()
    q = select(a).order_by(a.c.id.desc()).limit(limit)
    if since is not None:
        q = q.where(a.c.at >= since)
    if principal is not None:
        q = q.where(a.c.principal == principal)
    return [dict(r._mapping) for r in conn.execute(q)]
