"""One typed settings object from ``config.yml`` and the environment.

``config.yml`` holds two kinds of configuration: our own section ``cim:`` (database, storage CRS, demo,
serving) and pygeoapi's usual sections (``server``, ``metadata``, ``resources``...) which the API layer
passes on to pygeoapi. Environment variables ``CIM_*`` override the ``cim:`` section, e.g.
``CIM_DATABASE_URL``, ``CIM_STORAGE_CRS``, ``CIM_PORT``.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def config_path() -> Path:
    """The config file: ``$CIM_CONFIG`` or ``config.yml`` in the working directory, else the project's."""
    if env := os.environ.get("CIM_CONFIG"):
        return Path(env)
    local = Path.cwd() / "config.yml"
    return local if local.exists() else PROJECT_ROOT / "config.yml"


def load_config_file(path: Path | None = None) -> dict[str, Any]:
    """Read the whole YAML config file (both our section and pygeoapi's)."""
    path = path or config_path()
    if not path.exists():
        return {}
    with path.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the top level must be a mapping")
    return data


class DemoSettings(BaseModel):
    """Defaults of ``cim demo``."""

    size: int = 5000
    seed: int = 20261128
    # 平山区, the urban core of Benxi, in CGCS2000 geographic (lon, lat).
    center_lon: float = 123.77
    center_lat: float = 41.30


class QualityRules(BaseModel):
    """The rule set every load is checked against (数据治理). Each rule rejects the objects that break it
    (the whole file with ``--strict``) and is reported with the objects and reasons."""

    geometry_required: bool = True  # an object without any geometry (an IFC element without a body) is rejected
    geometry_valid: bool = True  # every polygon, line and point valid and finite
    # classes whose 3D geometry must be a closed shell where the source says it is a solid
    closed_solids: list[str] = Field(default_factory=lambda: ["Building", "BuildingPart"])
    # close a solid open only at its flat base (LOD1 extrusions without a ground face) with that face,
    # reported as a repair; off → such solids fail closed_solids
    repair_open_bases: bool = True
    crs_required: bool = True  # a file without a CRS loads only with --crs or --anchor
    required_attributes: dict[str, list[str]] = Field(default_factory=dict)  # class → typed properties
    code_lists: dict[str, list[str]] = Field(default_factory=dict)  # typed property → allowed values


class IngestSettings(BaseModel):
    """``cim load``: quality rules and the field mappings of survey tables."""

    rules: QualityRules = Field(default_factory=QualityRules)
    # 管线点 / 管线段 survey tables: our property → the field names departments use for it (first found)
    survey_points: dict[str, list[str]] = Field(default_factory=dict)
    survey_segments: dict[str, list[str]] = Field(default_factory=dict)
    # pipe kind names (管线种类) → code, for tables that spell the kind out
    pipe_kind_names: dict[str, str] = Field(default_factory=dict)


class TileLayerSettings(BaseModel):
    """One collection's vector tiles; unset fields take the values of :class:`TilesSettings`."""

    min_zoom: int | None = Field(default=None, ge=0, le=24)
    max_zoom: int | None = Field(default=None, ge=0, le=24)
    max_features: int | None = Field(default=None, ge=1)
    # Attributes by zoom: from zoom Z on (up to the next key), these properties (the layer's typed properties,
    # "*" for all of them, or keys of its other attributes). The feature's id is always there.
    properties: dict[int, list[str]] | None = None


class TilesSettings(BaseModel):
    """Vector tiles (OGC API – Tiles, MVT). Zoom levels are WebMercatorQuad's; the matrices of the other tile
    matrix sets are mapped to the WebMercatorQuad zoom of the nearest scale (CGCS2000TiandituQuad level n is
    zoom n, WorldCRS84Quad level n is zoom n + 1)."""

    tile_matrix_sets: list[str] = Field(
        default_factory=lambda: ["WebMercatorQuad", "WorldCRS84Quad", "CGCS2000TiandituQuad"])
    extent: int = Field(default=4096, ge=256)  # MVT tile coordinates per tile side (the finest grid)
    buffer: int = Field(default=64, ge=0)  # MVT units kept beyond the tile's edges
    min_zoom: int = Field(default=0, ge=0, le=24)
    max_zoom: int = Field(default=18, ge=0, le=24)  # clients over-zoom beyond it
    # at most this many features per tile: the largest (area, then length; points by id) are kept
    max_features: int = Field(default=10_000, ge=1)
    # simplification: geometry snapped to a grid of this many pixels (of a 256-pixel tile), from zoom Z on;
    # the tile's MVT extent is then 256 / pixels (0: ``extent``)
    simplify: dict[int, float] = Field(default_factory=lambda: {0: 0.25, 13: 0.125, 15: 0.0})
    # too small to see, left out: polygons of less than min_size² pixels (of a 256-pixel tile) of area, lines
    # shorter than min_size pixels; points are always kept
    min_size: float = Field(default=0.5, ge=0)
    max_age: int = Field(default=60, ge=0)  # Cache-Control max-age of tiles and tileset documents, seconds
    # tile packages (cim tiles package, the cim-tiles-package process): at most this many tiles per package
    package_max_tiles: int = Field(default=50_000, ge=1)
    layers: dict[str, TileLayerSettings] = Field(default_factory=dict)
    raster: RasterTileSettings = Field(default_factory=lambda: RasterTileSettings())


class RasterTileSettings(BaseModel):
    """Raster map tiles of the registered COGs (cim/tiles/raster.py). Zooms are WebMercatorQuad's."""

    min_zoom: int = Field(default=8, ge=0, le=24)
    # beyond the zoom whose pixels match the raster's cells, this many levels more (clients over-zoom after)
    overzoom: int = Field(default=2, ge=0, le=8)


class OpsSettings(BaseModel):
    """City operations (cim.ops): cases, their overlay on the CIM, vehicle tracks."""

    # CRS84 west, south, east, north: cases and GPS fixes outside are refused (本溪市 with a margin)
    city_bbox: tuple[float, float, float, float] = (123.5, 40.75, 125.85, 41.65)
    overlay_max_cases: int = Field(default=10_000, ge=1)  # cases in one case-overlay request
    overlay_radius_m: float = Field(default=50.0, gt=0)  # default search radius for related pipes and roads
    tracks_max_rows: int = Field(default=1_000_000, ge=1)  # GPS fixes in one load (file or HTTP body)


@pydantic_dataclass(frozen=True)
class Tiles3DSettings:
    """How 3D tilesets are cut and drawn (``cim.tiles3d``; ``cim 3dtiles build``). A frozen dataclass, so that
    its fields can be digested (``dataclasses.asdict``) into the tiles' build keys."""

    # generated tiles live under tiles/cache/ (not committed, tiles/README.md); --out puts them anywhere
    out_dir: Path = PROJECT_ROOT / "tiles" / "cache" / "3d"
    # a leaf tile holds at most this many objects (unless it is already min_cell_m wide)
    max_features: int = Field(default=400, ge=1)
    # cells are squares of 2^k metres aligned on the storage CRS's grid; never narrower than this (small
    # enough to split a dense block of building components; the tree is split in plan only, not by height)
    min_cell_m: float = Field(default=16.0, gt=0)
    # geometric error of a tile without content = this × the width of its cell or content (leaves: 0).
    # 0.2 lets a 1080-pixel-high viewer with Cesium's default 16-pixel limit open the leaves of a 512 m
    # cell from ~6 km, and a 100 m bridge's from ~1 km.
    error_per_metre: float = Field(default=0.2, gt=0)
    # sides of a pipe's tube and of a node's cylinder: 8 keeps a DN100 pipe round at street distance and
    # the network's content a third smaller than 12 (230,000 pipe objects: 544 MB with 12/16)
    tube_segments: int = Field(default=8, ge=3)
    node_segments: int = Field(default=12, ge=3)
    node_diameter_m: float = 1.0  # 检查井 well diameter when the node does not say (attributes.well_diameter_m)
    default_pipe_diameter_mm: float = 200.0  # a pipe without 管径
    default_node_depth_m: float = 1.0  # a node without 埋深
    rows_per_batch: int = Field(default=256, ge=1)  # rows read from the database at a time within one tile
    # mesh compression of the GLBs: "none", or "draco" (KHR_draco_mesh_compression: positions quantized to
    # draco_position_bits over each tile's extent, 16 bits ≈ 1 cm on a 512 m tile; normals 10 bits)
    compression: Literal["none", "draco"] = "none"
    draco_position_bits: int = Field(default=16, ge=8, le=30)


class TerrainSettings(BaseModel):
    """Quantized-mesh terrain of the DEM for Cesium (``/terrain``, ``cim terrain build``)."""

    raster: str | None = None  # the raster_layer to tile; None: the one named "dem", else the finest DEM
    grid_cells: int = Field(default=256, ge=8, le=1024)  # samples per tile side (+1) read from the DEM
    max_level: int | None = Field(default=None, ge=0, le=22)  # None: where the samples reach the DEM's cells
    min_error_m: float = Field(default=0.5, gt=0)  # height error of the deepest level (and the least of any)
    error_factor: float = Field(default=1.0, gt=0)  # × Cesium's per-level error (77,067 m / 2^level)
    max_age: int = Field(default=3600, ge=0)  # Cache-Control max-age of tiles and layer.json, seconds
    # pre-built tiles (`cim terrain build`); the server answers from them while they are current
    out_dir: Path = PROJECT_ROOT / "tiles" / "cache" / "terrain"


class ApiKey(BaseModel):
    """One API key, stored as the SHA-256 of the key (keys are long random strings, so a fast hash is enough:
    there is nothing to brute-force), never the key itself."""

    name: str  # who: written to the audit log
    roles: list[str]
    sha256: str = Field(pattern=r"^[0-9a-fA-F]{64}$")


class PathRule(BaseModel):
    """Roles needed for request paths matching ``pattern`` (fnmatch, ``*`` crosses ``/``), e.g. a package
    or tileset holding every layer under a name that does not say so."""

    pattern: str
    roles: list[str]


class AuthSettings(BaseModel):
    """Who may read what (cim.api.auth). Anonymous requests read the collections not listed in
    ``restricted``; credentials are an API key (``X-API-Key``) or a JWT (``Authorization: Bearer``)."""

    enabled: bool = True
    roles: dict[str, str] = Field(default_factory=dict)  # role → what it is for (keys and tokens must use these)
    restricted: dict[str, list[str]] = Field(default_factory=dict)  # collection → roles that may read it
    write_roles: list[str] = Field(default_factory=lambda: ["operations"])  # POST/PUT/PATCH/DELETE
    # POSTs that only read (process executions), unless the process is one of write_processes
    read_posts: list[str] = Field(default_factory=lambda: ["/processes/*/execution"])
    write_processes: list[str] = Field(default_factory=list)
    paths: list[PathRule] = Field(default_factory=list)
    # routes that serve every collection unless ``collections=`` selects some (combined tiles): an
    # unprivileged request without a selection gets the collections it may read
    combined_paths: list[str] = Field(default_factory=lambda: ["/tiles", "/tiles/*"])
    # routes whose JSON shows objects of other collections (a case's related pipe node, a process's or job's
    # results): objects linking to a collection the client may not read are left out, and the rest audited
    derived_paths: list[str] = Field(default_factory=lambda: ["/processes/*/execution", "/jobs/*",
                                                              "/collections/*/items/*/related"])
    keys: list[ApiKey] = Field(default_factory=list)
    # JWT bearer tokens: the HMAC secret, from the environment (CIM_AUTH__JWT_SECRET); none: no tokens accepted
    jwt_secret: str | None = Field(default=None, repr=False)
    jwt_algorithms: list[str] = Field(default_factory=lambda: ["HS256"])
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    jwt_roles_claim: str = "roles"
    audit_database: bool = True  # audit entries into the database (audit_log); always to the "cim.audit" log


class LocalCRS(BaseModel):
    """A city's own coordinate system (城市独立坐标系); its parameters come from the operator, never from code."""

    id: str
    name: str
    definition: str  # WKT2 (e.g. a BOUNDCRS to EPSG:4490 for a 7-parameter system) or a PROJ string


class LimitsSettings(BaseModel):
    """What one request may cost the database and the workers (``cim.limits``; environment
    ``CIM_LIMITS__STATEMENT_TIMEOUT_MS`` etc.). Past a limit the answer is a 4xx, or a 503 with Retry-After,
    never a hung worker. They apply to the HTTP service only: ``cim load`` and builds run unbounded."""

    statement_timeout_ms: int = Field(default=30_000, ge=0)  # per SQL statement of a request (0: none)
    pool_size: int = Field(default=5, ge=1)  # database connections kept per worker
    max_overflow: int = Field(default=5, ge=0)  # more opened under load, closed again when idle
    pool_timeout_s: float = Field(default=5.0, gt=0)  # wait for a connection this long, then 503
    retry_after_s: int = Field(default=5, ge=1)  # Retry-After of the 503s
    max_body_bytes: int = Field(default=64_000_000, ge=1)  # request bodies (process inputs, uploads): 413 beyond; 1M points to coordinate-transform are ~27 MB
    max_ids: int = Field(default=1000, ge=1)  # ids=a,b,c on items: 400 beyond
    max_export_km2: float = Field(default=400.0, gt=0)  # area of a cim-download bbox: 400 beyond


class JobsSettings(BaseModel):
    """Asynchronous process jobs (cim.api.jobs; ``CIM_JOBS__RETENTION_S``). Synchronous executions are never
    stored."""

    # a job, its result file and its access list are removed this long after the job's last change (finished,
    # dismissed, or started by a worker that has died since)
    retention_s: float = Field(default=86_400.0, gt=0)


class Settings(BaseSettings):
    """Everything the service needs to know, validated once."""

    # CIM_LIMITS__POOL_SIZE=10 sets limits.pool_size
    # CIM_AUTH__JWT_SECRET sets auth.jwt_secret (nested sections by "__")
    model_config = SettingsConfigDict(env_prefix="CIM_", extra="ignore", env_nested_delimiter="__")

    # A SpatiaLite file (sqlite:///var/cim.sqlite, the embedded default) or PostGIS
    # (postgresql+psycopg://user:password@host:port/db).
    database_url: str = "sqlite:///var/cim.sqlite"
    # Read-only requests go here when set (a PostgreSQL streaming replica); writes always to database_url.
    read_database_url: str = ""
    # CGCS2000 / 3-degree Gauss-Krueger CM 123E; x = easting, y = northing in the database.
    storage_crs: int = 4550
    # 1985 National Height Datum: heights in the database are normal heights.
    vertical_crs: int = 5737
    host: str = "127.0.0.1"
    port: int = 5000
    workers: int = 1  # uvicorn worker processes (about one per core: measured figures in docs/deployment.md)
    keep_alive_s: int = Field(default=5, ge=1)  # idle HTTP keep-alive; above the balancer's, never below
    log_format: str = Field(default="json", pattern="^(json|text)$")  # the service's logs on standard error
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    jobs: JobsSettings = Field(default_factory=JobsSettings)
    # Public URL of the service; derived from host and port when empty.
    public_url: str = ""
    # Where generated files go (DEM COG, effective pygeoapi config, OpenAPI document).
    data_dir: Path = Field(default=PROJECT_ROOT / "var")
    demo: DemoSettings = Field(default_factory=DemoSettings)
    ingest: IngestSettings = Field(default_factory=IngestSettings)
    tiles: TilesSettings = Field(default_factory=TilesSettings)
    ops: OpsSettings = Field(default_factory=OpsSettings)
    tiles3d: Tiles3DSettings = Field(default_factory=Tiles3DSettings)
    terrain: TerrainSettings = Field(default_factory=TerrainSettings)
    # The tile cache (vector and raster tiles, keyed by the layers' data versions; cim/tiles/cache.py);
    # tile_cache false: every tile is built on request.
    tile_cache: bool = True
    # (its own folder beside the pre-built 3D Tiles and terrain of tiles/cache/3d and tiles/cache/terrain)
    tile_cache_dir: Path = Field(default=PROJECT_ROOT / "tiles" / "cache" / "ogc")
    # Every this many seconds each worker points the cache's `current` links at the data versions of the
    # public collections' tiles, which a front nginx serves (`cim deploy nginx`, cim/tiles/front.py); after a
    # write, the front serves the old tiles at most this long. 0: no links (no front).
    tile_cache_links_s: float = Field(default=2.0, ge=0)
    # numberMatched on items pages: an exact count per request, or (False) omitted where counting a large
    # layer costs too much; paging links do not depend on it. Counting stops at count_limit: beyond it
    # numberMatched is omitted (a page that holds every match is counted for free).
    count_matched: bool = True
    count_limit: int = Field(default=100_000, ge=1)
    # counts kept per worker, each until its layer's data version changes (0: count every request)
    count_cache_size: int = Field(default=4096, ge=0)
    # Supported CRSs (None: the defaults of cim.crs.registry.DEFAULT_CRS) and the local systems.
    crs: list[str] | None = None
    local_crs: list[LocalCRS] = Field(default_factory=list)
    # Height anomaly of the 1985 National Height Datum above the CGCS2000 ellipsoid (a PROJ grid: GTX or
    # GeoTIFF), supplied by the operator. Without it, heights between EPSG:5737 and ellipsoidal CRSs are
    # passed through unchanged (about 12.7 m wrong at Benxi) and every such output says so.
    geoid_grid: Path | None = None
    auth: AuthSettings = Field(default_factory=AuthSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Explicit arguments beat the environment, which beats config.yml.
        return (init_settings, env_settings, _ConfigFileSource(settings_cls))

    @property
    def url(self) -> str:
        """The public base URL of the API."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")

    @property
    def dem_path(self) -> Path:
        """The demo DEM, a Cloud-Optimized GeoTIFF beside the database."""
        return self.data_dir / "dem.cog.tif"


class _ConfigFileSource(PydanticBaseSettingsSource):
    """The ``cim:`` section of config.yml; relative paths resolve against the config file's folder."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = config_path()
        section = dict(load_config_file(path).get("cim") or {})
        for key in ("data_dir", "geoid_grid", "tile_cache_dir"):
            if section.get(key):
                section[key] = (path.parent / section[key]).resolve()
        for key in ("tiles3d", "terrain"):
            if isinstance(section.get(key), dict) and section[key].get("out_dir"):
                section[key] = {**section[key], "out_dir": (path.parent / section[key]["out_dir"]).resolve()}
        url = section.get("database_url", "")
        if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
            section["database_url"] = "sqlite:///" + str((path.parent / url[len("sqlite:///") :]).resolve())
        return section


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (read once)."""
    return Settings()
