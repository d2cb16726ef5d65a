"""The CIM database schema: a compact generic city-object model in the spirit of 3DCityDB v5.

One ``city_object`` row per object of any class (building, storey, wall, pipe segment, manhole...), with
typed columns for the attributes queries filter on and JSON for the rest; a 2D footprint that every
spatial query filters on (spatially indexed); and the 3D geometry stored whole, once per CIM level, in
``city_object_geometry``. Tables are built for the storage CRS chosen at ``cim db init``.

CIM levels (城市信息模型分级): 1 terrain and surface, 2 massing (≈ LOD1), 3 exterior with roofs (≈ LOD2),
4 detailed exterior (≈ LOD3), 5 storeys and spaces, 6 components, 7 component parts.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from geoalchemy2 import Geometry
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    SmallInteger,
    String,
    Table,
    Text,
)
from sqlalchemy.dialects.postgresql import JSONB

from cim.crs import crs84_srid

# SQLite only auto-assigns "INTEGER PRIMARY KEY" (the rowid alias), not BIGINT.
BigId = BigInteger().with_variant(Integer(), "sqlite")
Json = JSON().with_variant(JSONB(), "postgresql")

LAYERS: dict[str, str] = {
    "buildings": "Buildings (建筑)",
    "building-components": "Building components (建筑构件: storeys, spaces, walls, slabs, doors, windows)",
    "pipelines": "Pipelines (地下管线)",
    "pipe-nodes": "Pipe nodes (管线点: 检查井, 阀门, junctions)",
    "roads": "Roads (道路)",
    "bridges": "Bridges (桥梁)",
    "terrain": "Terrain (地形)",
    # city operations (城市运行管理服务): written through the API and `cim tracks load`, not by `cim load`
    "cases": "Cases of the city operations platform (城运案件: 部件/事件)",
    "vehicle-tracks": "Vehicle GPS tracks (车辆轨迹: sanitation, construction waste), one per vehicle and day",
    "vehicle-positions": "Last known position of each vehicle (车辆最新位置)",
}
# layers that hold operations data rather than the city model (left out of model exports)
OPS_LAYERS = ("cases", "vehicle-tracks", "vehicle-positions")

# Class → layer. Any other class may be stored; these are the ones the service knows by name.
CLASS_LAYER: dict[str, str] = {
    "Building": "buildings",
    "BuildingPart": "buildings",
    "Storey": "building-components",
    "Space": "building-components",
    "Wall": "building-components",
    "Slab": "building-components",
    "Roof": "building-components",
    "Door": "building-components",
    "Window": "building-components",
    "Stair": "building-components",
    "PipeSegment": "pipelines",
    "PipeNode": "pipe-nodes",
    "Road": "roads",
    "Bridge": "bridges",
    "TINRelief": "terrain",
    "Case": "cases",
    "VehicleTrack": "vehicle-tracks",
    "VehiclePosition": "vehicle-positions",
}

# 管线种类 (pipeline kinds, GB/T codes): 给水, 雨水, 污水 (排水 PS split), 燃气, 热力, 电力, 通信.
PIPE_KINDS: dict[str, str] = {
    "JS": "给水 water supply",
    "YS": "雨水 storm water",
    "WS": "污水 sewage",
    "RQ": "燃气 gas",
    "RL": "热力 district heating",
    "DL": "电力 power",
    "TX": "通信 telecom",
}

CIM_LEVELS = range(1, 8)


@dataclass(frozen=True)
class CIMTables:
    """The schema's tables, built for one storage SRID."""

    metadata: MetaData
    meta: Table
    dataset: Table
    import_run: Table
    city_object: Table
    city_object_geometry: Table
    raster_layer: Table
    layer_version: Table
    city_object_other_lod: Table
    case_history: Table


def build_tables(srid: int) -> CIMTables:
    """New table objects for storage CRS EPSG:``srid``.

    DDL must use fresh objects: GeoAlchemy2 edits a Table's index list while creating it, differently per
    dialect, so a Table once created on SpatiaLite would then create no GiST index on PostGIS.
    """
    md = MetaData()

    meta = Table(
        "cim_meta",
        md,
        Column("key", String(64), primary_key=True),
        Column("value", Text, nullable=False),
    )

    dataset = Table(
        "dataset",
        md,
        Column("id", Integer, primary_key=True),
        Column("name", String(128), nullable=False, unique=True),
        Column("title", Text),
        Column("source", Text, comment="where the data came from"),
        Column("licence", Text),
        Column("source_crs", String(64)),
        Column("created_at", DateTime(timezone=True), nullable=False),
    )

    import_run = Table(
        "import_run",
        md,
        Column("id", Integer, primary_key=True),
        Column("dataset_id", Integer, ForeignKey("dataset.id", ondelete="CASCADE"), nullable=False),
        Column("tool", String(64), nullable=False, comment="e.g. 'cim demo', 'cim ingest cityjson'"),
        Column("params", Json),
        Column("started_at", DateTime(timezone=True), nullable=False),
        Column("finished_at", DateTime(timezone=True)),
        Column("counts", Json, comment="objects written per class"),
    )

    city_object = Table(
        "city_object",
        md,
        Column("id", BigId, primary_key=True),
        Column("uid", String(64), nullable=False, unique=True, comment="stable public id"),
        Column("source_id", String(128), comment="IFC GlobalId, gml:id, CityJSON id, 部件编码"),
        Column("object_class", String(32), nullable=False),
        Column("layer", String(32), nullable=False),
        Column("cim_level", SmallInteger, nullable=False, comment="highest CIM level stored (1-7)"),
        Column("parent_id", BigId, ForeignKey("city_object.id", ondelete="CASCADE")),
        Column("root_id", BigId, ForeignKey("city_object.id", ondelete="CASCADE")),
        # hot attributes, typed
        Column("name", String(128)),
        Column("usage", String(32), comment="用途"),
        Column("floors", SmallInteger),
        Column("height", Float, comment="m above ground"),
        Column("year_built", SmallInteger),
        Column("district", String(32), comment="行政区"),
        Column("address", String(128)),
        Column("pipe_kind", String(8), comment="管线种类: JS YS WS RQ RL DL TX"),
        Column("diameter_mm", Float, comment="管径"),
        Column("material", String(32), comment="材质"),
        Column("depth_m", Float, comment="埋深"),
        Column("owner", String(64), comment="权属单位"),
        Column("laid_date", Date, comment="埋设日期"),
        Column("case_type", String(16), comment="案件类型代码 (cim.ops.cases.CASE_TYPES)"),
        Column("case_status", String(16), comment="案件状态 (cim.ops.cases.CASE_STATUSES)"),
        Column("revision", Integer, comment="version of an object edited in place (cases): optimistic locking"),
        Column("attributes", Json, comment="every other attribute"),
        # 2D footprint (what spatial filters use), height envelope
        Column("geom", Geometry("GEOMETRY", srid=srid, spatial_index=True)),
        # the footprint in the storage CRS's own longitude/latitude (EPSG:4490 for EPSG:4550), kept equal to
        # ST_Transform(geom, ...) by a trigger (schema v8): items in CRS84/4490/4326 and tiles read it instead
        # of an inverse Gauss-Krüger projection per row and request (~40 µs a footprint, bench/README.md)
        Column("geom_lonlat", Geometry("GEOMETRY", srid=crs84_srid(srid), spatial_index=False)),
        # for vector tiles (schema v10), set by the same trigger on PostGIS, NULL on SpatiaLite (whose tiles are
        # built in Python): the footprint in Web Mercator (WebMercatorQuad tiles read it instead of projecting
        # every footprint of every tile), and its minimum clearance (GEOS; storage units) where it is a valid
        # (multi)polygon: moving no vertex by less than half of it can make the polygon invalid, so a tile
        # whose grid cell is well under it snaps the footprint to its grid without a clipper (cim.tiles.mvt)
        Column("geom_webmercator", Geometry("GEOMETRY", srid=3857, spatial_index=False)),
        Column("clearance", Float),
        Column("min_z", Float),
        Column("max_z", Float),
        # validity time and lineage
        Column("valid_from", DateTime(timezone=True), nullable=False),
        Column("valid_to", DateTime(timezone=True)),
        Column("dataset_id", Integer, ForeignKey("dataset.id", ondelete="CASCADE"), nullable=False),
        Column("import_run_id", Integer, ForeignKey("import_run.id", ondelete="SET NULL")),
        Index("ix_city_object_layer_id", "layer", "id"),
        Index("ix_city_object_class", "object_class"),
        Index("ix_city_object_parent", "parent_id"),
        Index("ix_city_object_root", "root_id"),
        Index("ix_city_object_source_id", "source_id"),
        Index("ix_city_object_dataset", "dataset_id"),
    )

    city_object_geometry = Table(
        "city_object_geometry",
        md,
        Column("object_id", BigId, ForeignKey("city_object.id", ondelete="CASCADE"), nullable=False),
        Column("cim_level", SmallInteger, nullable=False),
        # MultiPolygon Z (surfaces), LineString Z (pipes) or Point Z (nodes), whole per level
        Column("geom", Geometry("GEOMETRYZ", srid=srid, dimension=3, spatial_index=False), nullable=False),
        Column("surfaces", Json, comment="semantic type of each polygon: GroundSurface, WallSurface, RoofSurface..."),
        Column("lod", String(8), comment="the source's LOD label this geometry came from (CityJSON '2.2', CityGML '3')"),
        PrimaryKeyConstraint("object_id", "cim_level"),
    )

    raster_layer = Table(
        "raster_layer",
        md,
        Column("id", Integer, primary_key=True),
        Column("name", String(64), nullable=False, unique=True),
        Column("kind", String(16), nullable=False, comment="dem, dsm, orthophoto"),
        Column("path", Text, nullable=False, comment="Cloud-Optimized GeoTIFF"),
        Column("srid", Integer, nullable=False),
        Column("vertical_srid", Integer),
        Column("resolution", Float, nullable=False),
        Column("minx", Float, nullable=False),
        Column("miny", Float, nullable=False),
        Column("maxx", Float, nullable=False),
        Column("maxy", Float, nullable=False),
        Column("object_id", BigId, ForeignKey("city_object.id", ondelete="CASCADE"),
               comment="its coverage in the terrain layer"),
        Column("dataset_id", Integer, ForeignKey("dataset.id", ondelete="CASCADE"), nullable=False),
    )

    # Bumped in the transaction of every write to a layer: what ETags and tile caches are keyed on, read
    # before the data (a reader never labels new data with an old version).
    layer_version = Table(
        "layer_version",
        md,
        Column("layer", String(32), primary_key=True),
        Column("version", BigInteger, nullable=False),
        Column("changed_at", DateTime(timezone=True), nullable=False),
    )

    # Source LODs that another LOD of the same object supersedes at the same CIM level (CityJSON LOD1.2
    # when LOD1.3 is stored at CIM2): kept verbatim so that nothing a file brought is lost on export.
    city_object_other_lod = Table(
        "city_object_other_lod",
        md,
        Column("object_id", BigId, ForeignKey("city_object.id", ondelete="CASCADE"), nullable=False),
        Column("lod", String(8), nullable=False),
        Column("cim_level", SmallInteger, nullable=False),
        Column("geom", Geometry("GEOMETRYZ", srid=srid, dimension=3, spatial_index=False), nullable=False),
        Column("surfaces", Json),
        PrimaryKeyConstraint("object_id", "lod"),
    )

    # Every version of every case (城运案件), the first included; a deletion leaves a last version marked
    # "delete". Cases themselves are city objects of the layer "cases".
    case_history = Table(
        "case_history",
        md,
        Column("id", BigId, primary_key=True),
        Column("case_uid", String(64), nullable=False),
        Column("revision", Integer, nullable=False),
        Column("operation", String(8), nullable=False, comment="create, replace, update, delete"),
        Column("changed_at", DateTime(timezone=True), nullable=False),
        Column("properties", Json, nullable=False, comment="the case's properties as of this version"),
        Column("geom", Geometry("POINT", srid=srid, spatial_index=False)),
        Index("ix_case_history_case", "case_uid", "revision", unique=True),
    )

    return CIMTables(md, meta, dataset, import_run, city_object, city_object_geometry, raster_layer, layer_version,
                     city_object_other_lod, case_history)


@lru_cache(maxsize=8)
def cim_tables(srid: int) -> CIMTables:
    """The tables for storage CRS EPSG:``srid``, for queries and writes (cached: one MetaData per SRID)."""
    return build_tables(srid)
