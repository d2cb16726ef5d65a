"""City operations (城市运行管理服务): cases of the operations platform, their overlay on the CIM, vehicle tracks.

Cases and tracks are city objects of their own layers (``cases``, ``vehicle-tracks``, ``vehicle-positions``),
so every read path of the service (items, bbox, datetime, CQL2 filters, tiles) serves them unchanged; this
package holds what only they need: validated, versioned writes, the spatial overlay and GPS ingest.
"""
