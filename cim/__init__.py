"""Benxi CIM platform: the CIM database, its OGC API data interface, tiling and coordinate services."""

__version__ = "0.1.0"
