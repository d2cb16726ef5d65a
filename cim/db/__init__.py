"""The CIM database: engines, schema, versioned migrations and bulk writing."""

from cim.db.engine import CIMDatabaseError, open_engine, safe_url

__all__ = ["CIMDatabaseError", "open_engine", "safe_url"]
