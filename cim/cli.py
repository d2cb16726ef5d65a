"""The ``cim`` command: database set-up, the demo city, serving, and a summary of what is stored."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Annotated, Optional

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from cim.db.engine import CIMDatabaseError, is_spatialite, open_engine, safe_url, spatialite_path
from cim.settings import Settings, config_path, get_settings

app = typer.Typer(help="Benxi CIM platform: CIM database, demo city and OGC API service.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
db_app = typer.Typer(help="Create and upgrade the CIM database schema.", no_args_is_help=True)
app.add_typer(db_app, name="db")
tracks_app = typer.Typer(help="Vehicle GPS tracks (车辆轨迹).", no_args_is_help=True)
app.add_typer(tracks_app, name="tracks")
err = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)

DatabaseOpt = Annotated[Optional[str], typer.Option("--database", "-d", envvar="CIM_DATABASE_URL",
                                                   help="Database URL (default: config.yml)")]


def _settings(database: str | None) -> Settings:
    try:
        s = get_settings()
    except (yaml.YAMLError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        _fail(f"invalid configuration in {config_path()}: {' '.join(str(exc).split())}")
    return s.model_copy(update={"database_url": database}) if database else s


def _fail(message: str) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)


@db_app.command("init")
def db_init(database: DatabaseOpt = None,
            to: Annotated[Optional[int], typer.Option(help="Create this schema version (default: latest)")] = None) -> None:
    """Create the CIM schema in a new SpatiaLite file or an empty PostGIS database (idempotent)."""
    from cim.db import schema

    s = _settings(database)
    path = spatialite_path(s.database_url) if is_spatialite(s.database_url) else None
    created = path is not None and not path.exists()
    try:
        engine = open_engine(s.database_url, create=True)
        try:
            before = schema.schema_version(engine)
            version = schema.init(engine, s.storage_crs, s.vertical_crs, to=to or schema.HEAD)
        finally:
            engine.dispose()
    except Exception as exc:
        if created:  # nothing half-created
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
        _fail(str(exc) if isinstance(exc, CIMDatabaseError) else f"db init failed at {safe_url(s.database_url)}: {exc}")
    if before:
        out.print(f"{safe_url(s.database_url)} is already a CIM database (schema version {version})")
    else:
        out.print(f"created CIM schema version {version} at {safe_url(s.database_url)} "
                  f"(storage CRS EPSG:{s.storage_crs}, heights EPSG:{s.vertical_crs})")


@db_app.command("upgrade")
def db_upgrade(database: DatabaseOpt = None,
               to: Annotated[Optional[int], typer.Option(help="Upgrade to this version (default: latest)")] = None) -> None:
    """Apply pending schema versions, all in one transaction."""
    from cim.db import schema

    s = _settings(database)
    try:
        engine = open_engine(s.database_url)
        try:
            before, after = schema.upgrade(engine, to or schema.HEAD)
        finally:
            engine.dispose()
    except CIMDatabaseError as exc:
        _fail(str(exc))
    if before == after:
        out.print(f"schema is up to date (version {after})")
    else:
        out.print(f"upgraded schema from version {before} to {after}")


@app.command()
def demo(database: DatabaseOpt = None,
         size: Annotated[Optional[int], typer.Option(min=1, max=5_000_000, help="Number of buildings")] = None,
         seed: Annotated[Optional[int], typer.Option(help="Random seed (same seed, same city)")] = None,
         interiors: Annotated[Optional[int], typer.Option(min=0, help="Buildings with full interiors")] = None,
         skip_if_present: Annotated[bool, typer.Option(help="Do nothing if the same demo is already there")] = False,
         ) -> None:
    """Generate the Benxi demo city (平山区) into the CIM database, replacing an earlier demo."""
    from cim import demo as demo_mod
    from cim.db.schema import tables_for

    s = _settings(database)
    size = size or s.demo.size
    seed = s.demo.seed if seed is None else seed
    t0 = time.perf_counter()
    try:
        engine = open_engine(s.database_url)
        tables_for(engine)  # a clear message if the schema is missing or old
        if skip_if_present:
            present = demo_mod.existing_demo(engine)
            if present and present.get("size") == size and present.get("seed") == seed and s.dem_path.exists():
                out.print(f"the demo city ({size:,} buildings, seed {seed}) is already in {safe_url(s.database_url)}")
                return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with Progress(*columns, console=err, disable=not err.is_terminal) as bar:
            tasks = {"buildings": bar.add_task("buildings", total=size),
                     "infrastructure": bar.add_task("roads, bridges, pipes", total=None)}

            def progress(kind: str, n: int) -> None:
                if kind in tasks:
                    bar.update(tasks[kind], completed=n)

            result = demo_mod.generate(engine, size=size, seed=seed, center=(s.demo.center_lon, s.demo.center_lat),
                                       data_dir=s.data_dir, vertical_srid=s.vertical_crs, progress=progress,
                                       interiors=interiors)
        engine.dispose()
    except CIMDatabaseError as exc:
        _fail(str(exc))
    elapsed = time.perf_counter() - t0
    total = sum(result.counts.values())
    out.print(f"demo city written: {total:,} objects ({size:,} buildings) in {elapsed:.1f} s "
              f"to {safe_url(s.database_url)}; DEM {result.dem_path}")
    _print_counts({("", k): v for k, v in sorted(result.counts.items())}, "objects written")


@app.command()
def info(database: DatabaseOpt = None) -> None:
    """Show the database, its schema version, storage CRS and objects per layer and class."""
    from cim.db import schema

    s = _settings(database)
    try:
        engine = open_engine(s.database_url)
        with engine.connect() as conn:
            meta = schema.read_meta(conn)
        if not meta:
            _fail(f"not a CIM database: {safe_url(s.database_url)} (run `cim db init` first)")
        counts = schema.object_counts(engine)
        engine.dispose()
    except CIMDatabaseError as exc:
        _fail(str(exc))
    out.print(f"database       {safe_url(s.database_url)} ({'SpatiaLite' if is_spatialite(s.database_url) else 'PostGIS'})")
    out.print(f"schema version {meta['schema_version']}")
    out.print(f"storage CRS    EPSG:{meta['storage_srid']} (heights EPSG:{meta['vertical_srid']})")
    _print_counts(counts, "objects")


def _print_counts(counts: dict[tuple[str, str], int], title: str) -> None:
    table = Table(title=title)
    table.add_column("layer")
    table.add_column("class")
    table.add_column("count", justify="right")
    for (layer, cls), n in sorted(counts.items()):
        table.add_row(layer, cls, f"{n:,}")
    table.add_row("[b]total", "", f"[b]{sum(counts.values()):,}")
    out.print(table)


@app.command()
def serve(database: DatabaseOpt = None,
          host: Annotated[Optional[str], typer.Option(help="Bind address")] = None,
          port: Annotated[Optional[int], typer.Option(min=1, max=65535)] = None,
          workers: Annotated[Optional[int], typer.Option(min=1, max=64)] = None) -> None:
    """Serve the OGC API (pygeoapi over the CIM database) with uvicorn."""
    import uvicorn

    from cim.api.config import prepare
    from cim.db.schema import tables_for

    s = _settings(database)
    updates = {k: v for k, v in {"host": host, "port": port, "workers": workers}.items() if v is not None}
    s = s.model_copy(update=updates)
    # Prometheus metrics summed over the workers (cim.api.metrics): a folder per instance, emptied at each start,
    # before anything here imports the metrics
    metrics_dir = Path(os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", str(s.data_dir / "metrics" / str(s.port))))
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir(parents=True)
    try:
        engine = open_engine(s.database_url)
        tables_for(engine)
        prepare(s, engine)
        engine.dispose()
    except CIMDatabaseError as exc:
        _fail(str(exc))
    from cim.api.provider import close_databases

    close_databases()  # the OpenAPI document opened the service's pools here: the workers open their own
    # the workers read these through get_settings()
    os.environ["CIM_DATABASE_URL"] = s.database_url
    os.environ["CIM_HOST"], os.environ["CIM_PORT"] = s.host, str(s.port)
    reads = f", reads from {safe_url(s.read_database_url)}" if s.read_database_url else ""
    err.print(f"serving {safe_url(s.database_url)}{reads} at {s.url} ({s.workers} worker(s))")
    # uvicorn supervises the workers (a dead one is replaced); each builds its own app and pool after the fork
    uvicorn.run("cim.api.app:create_app", factory=True, host=s.host, port=s.port, workers=s.workers,
                loop="uvloop", http="httptools", log_level="warning", access_log=False,
                timeout_keep_alive=s.keep_alive_s, timeout_graceful_shutdown=30)


@app.command()
def transform(
    source: Annotated[str, typer.Option("--from", help="Source CRS: URI or EPSG:code (e.g. EPSG:4490, OGC:CRS84)")],
    target: Annotated[str, typer.Option("--to", help="Target CRS (e.g. EPSG:4550, urn:benxi-cim:crs:GCJ-02)")],
    file: Annotated[Optional[Path], typer.Argument(help="GeoJSON file ('-' for standard input)")] = None,
    point: Annotated[Optional[list[str]], typer.Option(help="A position 'x,y' or 'x,y,z' (repeatable)")] = None,
    axis_order: Annotated[str, typer.Option(help="'crs': each CRS's own axis order (EPSG:4490 lat,lon); 'xy'")] = "crs",
) -> None:
    """Transform GeoJSON or positions between any two supported CRSs; writes JSON to standard output."""
    import json

    from cim.api.processes import run_transform
    from cim.crs.geojson import InvalidInput
    from cim.crs.registry import UnknownCRS
    from cim.crs.transform import OutsideArea

    data: dict = {"source_crs": source, "target_crs": target, "axis_order": axis_order}
    where = "--point"
    if point:
        try:
            data["coordinates"] = [[float(v) for v in p.split(",")] for p in point]
        except ValueError:
            _fail(f"--point: expected numbers 'x,y' or 'x,y,z', got {point!r}")
    elif file is not None:
        where = "standard input" if str(file) == "-" else str(file)
        try:
            text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
            data["geometry"] = json.loads(text)
        except OSError as exc:
            _fail(f"{where}: {exc.strerror or exc}")
        except json.JSONDecodeError as exc:
            _fail(f"{where}: not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})")
    else:
        _fail("give a GeoJSON file (or '-') or --point")
    try:
        result = run_transform(data)
    except (InvalidInput, UnknownCRS, OutsideArea) as exc:
        _fail(f"{where}: {exc}")
    out.print_json(json.dumps(result.get("geometry", result.get("coordinates")), ensure_ascii=False))


@app.command()
def load(paths: Annotated[list[Path], typer.Argument(help="Files: CityJSON (.city.json, .jsonl), CityGML (.gml), "
                                                        "IFC (.ifc), survey tables (.csv .geojson .gpkg .shp), "
                                                        "rasters (.tif)")],
         database: DatabaseOpt = None,
         layer: Annotated[Optional[str], typer.Option(help="Put every object in this layer")] = None,
         crs: Annotated[Optional[str], typer.Option(help="The files' CRS when they declare none, e.g. EPSG:4550")] = None,
         anchor: Annotated[Optional[str], typer.Option(
             help="Place the model's origin at lon,lat[,height[,rotation]] (CGCS2000 degrees, 1985 m, degrees "
                  "clockwise from north)")] = None,
         strict: Annotated[bool, typer.Option(help="Reject the whole load on any quality-rule failure")] = False,
         dataset: Annotated[Optional[str], typer.Option(help="Dataset name (default: the first file's name)")] = None,
         set_: Annotated[Optional[list[str]], typer.Option("--set", help="A value for objects that lack it, "
                                                           "e.g. --set pipe_kind=JS (repeatable)")] = None,
         report: Annotated[Optional[Path], typer.Option(help="Write the load report (JSON) here")] = None) -> None:
    """Load files into the CIM database: checked against the quality rules, all or nothing, traceable."""
    import json

    from cim.ingest.load import LoadError, LoadOptions, load_files
    from cim.ingest.place import Anchor, PlacementError

    s = _settings(database)
    defaults: dict[str, str] = {}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            _fail(f"--set: key=value, got {item!r}")
        defaults[key.strip()] = value.strip()
    try:
        options = LoadOptions(layer=layer, crs=crs, anchor=Anchor.parse(anchor) if anchor else None, strict=strict,
                              dataset=dataset, defaults=defaults)
    except PlacementError as exc:
        _fail(str(exc))
    result = None
    failure = None
    try:
        engine = open_engine(s.database_url)
        columns = [TextColumn("{task.description}"), TextColumn("{task.completed:,} objects"), TimeElapsedColumn()]
        with Progress(*columns, console=err, disable=not err.is_terminal) as bar:
            tasks: dict[str, int] = {}

            def progress(name: str, n: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=None)
                bar.update(tasks[name], completed=n)

            result = load_files(engine, paths, options, progress)
        engine.dispose()
    except CIMDatabaseError as exc:
        _fail(str(exc))
    except LoadError as exc:
        failure = exc
        result = exc.report
    if result is not None:
        _print_load_report(result)
        target = report or s.data_dir / "reports" / f"load-{result.dataset}-{result.started[:19].replace(':', '')}.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(result.as_dict(), ensure_ascii=False, indent=2, default=str), encoding="utf-8")
        out.print(f"load report: {target}")
    if failure is not None:
        _fail(f"nothing loaded: {failure}")


@app.command()
def export(path: Annotated[Path, typer.Argument(help="Output file: .city.json (CityJSON 2.0), .jsonl (CityJSONSeq), "
                                                     ".gpkg (GeoPackage) or .fgb (FlatGeobuf)")],
           database: DatabaseOpt = None,
           layers: Annotated[Optional[str], typer.Option(help="Comma-separated layers (default: all)")] = None,
           bbox: Annotated[Optional[str], typer.Option(help="min lon,min lat,max lon,max lat (CRS84)")] = None,
           crs: Annotated[Optional[str], typer.Option(help="Output CRS (default: the storage CRS, EPSG:4550)")] = None,
           dataset: Annotated[Optional[str], typer.Option(help="Only this dataset's objects (CityJSON keys are then "
                                                         "their source ids)")] = None,
           cim_level: Annotated[Optional[int], typer.Option(help="GeoPackage/FlatGeobuf: the geometry at this CIM "
                                                           "level instead of the footprint")] = None) -> None:
    """Export objects of chosen layers within a bbox, for round trips and offline work."""
    from cim.export import ExportError
    from cim.export import export as run_export

    s = _settings(database)
    box = None
    if bbox:
        try:
            box = tuple(float(v) for v in bbox.split(","))
        except ValueError:
            _fail(f"--bbox: four numbers min lon,min lat,max lon,max lat, got {bbox!r}")
        if len(box) != 4:
            _fail(f"--bbox: four numbers min lon,min lat,max lon,max lat, got {bbox!r}")
    if cim_level is not None and not 1 <= cim_level <= 7:
        _fail("--cim-level: 1 to 7")
    try:
        engine = open_engine(s.database_url)
        with Progress(TextColumn("export"), TextColumn("{task.completed:,} objects"), TimeElapsedColumn(),
                      console=err, disable=not err.is_terminal) as bar:
            task = bar.add_task("export", total=None)
            report = run_export(engine, path, [v.strip() for v in layers.split(",")] if layers else None, box, crs,
                                dataset, cim_level, progress=lambda n: bar.update(task, completed=n))
        engine.dispose()
    except (CIMDatabaseError, ExportError) as exc:
        _fail(str(exc))
    table = Table(title=f"{report.path} ({report.format}, {report.crs})")
    table.add_column("layer" if report.format in ("GPKG", "FlatGeobuf") else "class")
    table.add_column("objects", justify="right")
    for name, n in sorted(report.counts.items()):
        table.add_row(name, f"{n:,}")
    table.add_row("total", f"{report.objects:,}")
    out.print(table)


def _print_load_report(report) -> None:
    table = Table(title=f"load into dataset {report.dataset!r}" + (" (strict)" if report.strict else ""))
    for col in ("file", "reader", "read", "loaded", "rejected", "replaced"):
        table.add_column(col, justify="left" if col in ("file", "reader") else "right")
    for f in report.files:
        table.add_row(Path(f.path).name, f.reader, f"{f.read:,}", f"{f.loaded:,}", f"{f.rejected:,}", f"{f.replaced:,}")
    out.print(table)
    for f in report.files:
        failed = {k: v for k, v in f.rules.items() if v["failed"]}
        if not failed:
            continue
        rules = Table(title=f"{Path(f.path).name}: quality rule failures")
        for col in ("rule", "checked", "failed", "first objects"):
            rules.add_column(col)
        for name, r in failed.items():
            rules.add_row(name, f"{r['checked']:,}", f"{r['failed']:,}",
                          "; ".join(f"{o['source_id']}: {o['reason']}" for o in r["objects"][:3]))
        out.print(rules)


tiles3d_app = typer.Typer(help="3D Tiles 1.1 tilesets built from the CIM database.", no_args_is_help=True)
app.add_typer(tiles3d_app, name="3dtiles")


@tiles3d_app.command("build")
def tiles3d_build(
    layer: Annotated[list[str], typer.Option(help="Layer(s): buildings, building-components, pipelines, pipe-nodes, "
                                                  "roads, bridges (repeatable or comma-separated: one tileset)")],
    cim_level: Annotated[int, typer.Option(help="CIM level: buildings, roads, bridges 2-4; building-components 5-7; "
                                                "pipelines and pipe-nodes 2-6")],
    database: DatabaseOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: "
                                                    "tiles/cache/3d/LAYERS/cimN)")] = None,
    bbox: Annotated[Optional[str], typer.Option(help="Only objects in min lon,min lat,max lon,max lat (CRS84)")] = None,
    fallback: Annotated[bool, typer.Option(" /--exact", help="--exact: draw only objects stored at that very level "
                                           "(default: a lower level where the object lacks it)")] = True,
    max_features: Annotated[Optional[int], typer.Option(min=1, help="Objects per leaf tile at most")] = None,
    geoid_grid: Annotated[Optional[Path], typer.Option(help="Height anomaly grid (1985 heights → ellipsoid; "
                                                       "default: config cim.geoid_grid)")] = None,
    force: Annotated[bool, typer.Option(help="Rebuild every tile, even those whose inputs did not change")] = False,
) -> None:
    """Build (or bring up to date) a 3D Tiles 1.1 tileset of one or more layers at a CIM level."""
    from dataclasses import replace

    from rich.progress import TimeRemainingColumn

    from cim.tiles3d import Tiles3DError, build_tileset

    s = _settings(database)
    layers = [v.strip() for item in layer for v in item.split(",") if v.strip()]
    settings = s.tiles3d
    if max_features:
        settings = replace(settings, max_features=max_features)
    grid = geoid_grid or s.geoid_grid
    if grid is not None and not Path(grid).is_file():
        _fail(f"--geoid-grid: {grid} does not exist")
    area = None
    if bbox:
        area = _storage_area(bbox, s.storage_crs)
    try:
        engine = open_engine(s.database_url)
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"),
                   TextColumn("{task.fields[objects]:,} objects"), TextColumn("{task.fields[megabytes]:,.1f} MB"),
                   TextColumn("({task.fields[unchanged]:,} unchanged)"), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=err, disable=not err.is_terminal) as bar:
            task = bar.add_task("3D tiles " + "+".join(layers), total=None, objects=0, megabytes=0.0, unchanged=0)

            def progress(p) -> None:
                bar.update(task, total=p.total, completed=p.done, objects=p.objects, megabytes=p.bytes / 1e6,
                           unchanged=p.unchanged)
                if p.stage == "tileset":
                    bar.update(task, description="tileset.json")

            report = build_tileset(engine, layers, cim_level, out_dir=out_dir, area=area, fallback=fallback,
                                   settings=settings, geoid_grid=None if grid is None else str(grid), force=force,
                                   progress=progress)
        engine.dispose()
    except (CIMDatabaseError, Tiles3DError) as exc:
        _fail(str(exc))
    table = Table(title=f"{report.tileset} (3D Tiles 1.1, {'+'.join(report.layers)} at CIM{report.cim_level})",
                  show_header=False)
    table.add_column("what")
    table.add_column("value", justify="right")
    rows = [("tiles with content", f"{report.tiles:,}"), ("built", f"{report.written:,}"),
            ("unchanged (kept)", f"{report.unchanged:,}"), ("empty cells", f"{report.empty:,}"),
            ("stale tiles removed", f"{report.removed:,}"), ("tree depth", str(report.depth)),
            ("objects", f"{report.objects:,}"), ("content size", f"{report.bytes / 1e6:,.1f} MB"),
            ("time", f"{report.seconds:.1f} s")]
    for name, levels in report.levels.items():
        rows.append((f"{name} drawn at", ", ".join(f"CIM{lv}: {n:,}" for lv, n in sorted(levels.items()))))
    for k, v in rows:
        table.add_row(k, v)
    out.print(table)
    for warning in report.warnings:
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


terrain_app = typer.Typer(help="Quantized-mesh terrain (Cesium) of the DEM.", no_args_is_help=True)
app.add_typer(terrain_app, name="terrain")


@terrain_app.command("build")
def terrain_build(
    database: DatabaseOpt = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default: config "
                                                    "cim.terrain.out_dir, tiles/cache/terrain)")] = None,
    max_level: Annotated[Optional[int], typer.Option(min=0, max=22, help="Deepest level (default: where the "
                                                     "samples reach the DEM's resolution)")] = None,
    geoid_grid: Annotated[Optional[Path], typer.Option(help="Height anomaly grid (1985 heights → ellipsoid; "
                                                       "default: config cim.geoid_grid)")] = None,
) -> None:
    """Pre-build the terrain tiles (layer.json + {z}/{x}/{y}.terrain) that `cim serve` answers /terrain from."""
    from cim.tiles3d import Tiles3DError
    from cim.tiles3d.terrain import build_terrain

    s = _settings(database)
    settings = s.terrain.model_copy(update={"max_level": max_level}) if max_level is not None else s.terrain
    grid = geoid_grid or s.geoid_grid
    if grid is not None and not Path(grid).is_file():
        _fail(f"--geoid-grid: {grid} does not exist")
    try:
        engine = open_engine(s.database_url)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, disable=not err.is_terminal) as bar:
            task = bar.add_task("terrain tiles", total=None)
            report = build_terrain(engine, settings, s.data_dir, None if grid is None else str(grid), out_dir,
                                   progress=lambda done, total: bar.update(task, total=total, completed=done))
        engine.dispose()
    except (CIMDatabaseError, Tiles3DError) as exc:
        _fail(str(exc))
    out.print(f"{report.out_dir}: {report.tiles:,} tiles (levels 0–{report.max_level}) of the DEM "
              f"{report.dem!r}, {report.bytes / 1e6:,.1f} MB, {report.seconds:.1f} s")
    for warning in report.warnings:
        err.print(f"[bold yellow]warning:[/] {warning}", highlight=False)


@tiles3d_app.command("package")
def tiles3d_package(
    target: Annotated[Path, typer.Argument(help="The archive to write (.3tz)")],
    source: Annotated[Optional[Path], typer.Option("--from", help="A built tileset folder (default: the folder "
                                                   "`cim 3dtiles build` wrote for --layer and --cim-level)")] = None,
    layer: Annotated[Optional[list[str]], typer.Option(help="Layer(s) of the tileset, as given to the build")] = None,
    cim_level: Annotated[Optional[int], typer.Option(help="CIM level of the tileset")] = None,
) -> None:
    """Write a built tileset as one 3D Tiles archive (3TZ: a zip with an index) for offline use."""
    from cim.tiles3d import Tiles3DError, check_request
    from cim.tiles3d.archive import write_3tz
    from cim.tiles3d.build import default_out_dir

    if target.suffix.lower() != ".3tz":
        _fail(f"{target}: a 3D Tiles archive must have the .3tz extension")
    if source is None:
        layers = [v.strip() for item in layer or [] for v in item.split(",") if v.strip()]
        if not layers or cim_level is None:
            _fail("give the tileset: --from FOLDER, or --layer and --cim-level as given to `cim 3dtiles build`")
        try:
            check_request(layers, cim_level)
        except Tiles3DError as exc:
            _fail(str(exc))
        source = default_out_dir(layers, cim_level, get_settings().tiles3d)
    try:
        count = write_3tz(source, target)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    out.print(f"{target}: {count:,} files of {source} ({target.stat().st_size / 1e6:,.1f} MB)")


def _storage_area(bbox: str, storage_srid: int):
    """A CRS84 --bbox as a polygon in the storage CRS (a clear error when it is malformed or outside)."""
    from cim.crs.registry import default_registry
    from cim.crs.transform import OutsideArea, query_area

    try:
        box = tuple(float(v) for v in bbox.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[1] > box[3]:
        _fail(f"--bbox: four numbers min lon,min lat,max lon,max lat, got {bbox!r}")
    registry = default_registry()
    try:
        area = query_area(box, registry.resolve("OGC:CRS84"), registry.epsg(storage_srid))
    except OutsideArea as exc:
        _fail(f"--bbox: {exc}")
    if area.is_empty:
        _fail(f"--bbox {bbox} lies outside the storage CRS's area (EPSG:{storage_srid})")
    return area


def main() -> None:  # pragma: no cover
    app()



tiles_app = typer.Typer(help="Vector and raster tiles: offline packages and the tile cache.", no_args_is_help=True)
app.add_typer(tiles_app, name="tiles")


@tiles_app.command("package")
def tiles_package(
    bbox: Annotated[str, typer.Option(help="min lon,min lat,max lon,max lat (CRS84)")],
    zooms: Annotated[str, typer.Option(help="Zoom range MIN-MAX (or one zoom): the tile matrix set's matrix ids")],
    output: Annotated[Path, typer.Option("--output", "-o", help="The package file (.mbtiles or .pmtiles)")],
    layers: Annotated[Optional[str], typer.Option(help="Comma-separated layers, one MVT layer each (default: the "
                                                       "city model's, without operations layers), or one raster: "
                                                       "NAME or NAME:STYLE (e.g. dem:terrain-rgb)")] = None,
    tms: Annotated[str, typer.Option("--tms", help="Tile matrix set (PMTiles: WebMercatorQuad only)")] = "WebMercatorQuad",
    fmt: Annotated[Optional[str], typer.Option("--format", help="mbtiles or pmtiles (default: from the file name)")] = None,
    database: DatabaseOpt = None,
) -> None:
    """Package the tiles of a bbox, zoom range and layers as MBTiles 1.3 or PMTiles v3."""
    from cim.db.models import LAYERS, OPS_LAYERS
    from cim.db.schema import tables_for
    from cim.tiles.package import PackageError, PackageRequest, build, iter_layers, parse_zooms

    s = _settings(database)
    try:
        box = tuple(float(v) for v in bbox.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        _fail(f"--bbox: four numbers min lon,min lat,max lon,max lat, got {bbox!r}")
    fmt = fmt or output.suffix.lstrip(".").lower()
    try:
        lo, hi = parse_zooms(zooms)
        chosen = iter_layers(layers) if layers else [x for x in LAYERS if x not in OPS_LAYERS]
        request = PackageRequest(box, lo, hi, chosen, tms, fmt)  # type: ignore[arg-type]
        engine = open_engine(s.database_url)
        t = tables_for(engine)
        with Progress(TextColumn("tiles"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err, disable=not err.is_terminal) as bar:
            task = bar.add_task("tiles", total=None)
            report = build(engine, t, request, output, s.tiles, s.data_dir,
                           progress=lambda done, total: bar.update(task, completed=done, total=total))
        engine.dispose()
    except (CIMDatabaseError, PackageError) as exc:
        _fail(f"{output}: {exc}")
    out.print(f"{report.path}: {report.format}, {report.tiles:,} tiles with data of {report.addressed:,} "
              f"({report.size / 1e6:,.2f} MB)")


@tiles_app.command("seed")
def tiles_seed(
    bbox: Annotated[str, typer.Option(help="Area: min lon,min lat,max lon,max lat (CRS84)")],
    zooms: Annotated[str, typer.Option(help="Tile matrix ids of each set: 12-16 or 14,15")],
    tms: Annotated[Optional[str], typer.Option(help="Tile matrix sets, comma-separated (default: all served)")] = None,
    collections: Annotated[Optional[str], typer.Option(help="Collections, comma-separated: vector layers and "
                                                       "rasters by name (default: every vector collection and raster)")
                           ] = None,
    raster_format: Annotated[Optional[str], typer.Option("--format", help="Raster tiles: png, jpeg or webp "
                                                         "(default: each style's first, png)")] = None,
    workers: Annotated[int, typer.Option(min=1, max=32, help="Tiles built at once")] = 2,
    database: DatabaseOpt = None,
) -> None:
    """Fill the tile cache for an area and zoom range; tiles cached for the current data are skipped, so a
    second run resumes an interrupted one."""
    from cim.db.schema import tables_for
    from cim.settings import load_config_file
    from cim.tiles.cache import TileCache
    from cim.tiles.endpoints import RasterTileEndpoints, VectorTileEndpoints
    from cim.tiles.raster import raster_layers
    from cim.tiles.seed import parse_matrices, plan, seed, vector_collections

    s = _settings(database)
    if not s.tile_cache:
        _fail("the tile cache is off (cim.tile_cache: false): nothing to seed")
    try:
        box = tuple(float(v) for v in bbox.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or box[0] >= box[2] or box[1] >= box[3]:
        _fail(f"--bbox: four numbers min lon,min lat,max lon,max lat, got {bbox!r}")
    try:
        matrices = parse_matrices(zooms)
    except ValueError as exc:
        _fail(str(exc))
    if raster_format is not None and raster_format not in ("png", "jpeg", "webp"):
        _fail(f"--format: png, jpeg or webp, got {raster_format!r}")
    try:
        engine = open_engine(s.database_url)
        t = tables_for(engine)
    except CIMDatabaseError as exc:
        _fail(str(exc))

    def database_fn():
        return engine, t

    cache = TileCache(s.tile_cache_dir)
    vector = VectorTileEndpoints(database_fn, vector_collections(load_config_file(config_path())), s.url, s.tiles,
                                 cache)
    rasters = RasterTileEndpoints(database_fn, s.url, s.data_dir, s.tiles, cache)
    set_ids = [v.strip() for v in tms.split(",")] if tms else list(vector.sets)
    unknown = [v for v in set_ids if v not in vector.sets]
    if unknown:
        _fail(f"--tms: {', '.join(unknown)} not served; tile matrix sets: {', '.join(vector.sets)}")
    if collections:
        names = [v.strip() for v in collections.split(",") if v.strip()]
    else:
        with engine.connect() as conn:
            names = list(vector.collections) + [r.name for r in raster_layers(conn, t, s.data_dir)]
    try:
        jobs = plan(engine, t, vector, rasters, names, [vector.sets[i] for i in set_ids], matrices, box,
                    raster_format)
    except ValueError as exc:
        _fail(str(exc))
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("tiles"),
               TimeElapsedColumn()]
    started = time.monotonic()
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(f"seeding {cache.root}", total=len(jobs))
        report = seed(database_fn, vector, rasters, jobs, workers, advance=lambda: bar.advance(task))
    engine.dispose()
    out.print(f"{len(jobs):,} tiles: {report.built:,} built, {report.empty:,} empty, {report.skipped:,} already "
              f"cached, {len(report.failed):,} failed, {report.uncached:,} not cached "
              f"({time.monotonic() - started:.1f} s)", highlight=False)
    for line in report.failed[:20]:
        err.print(f"[bold red]failed:[/] {line}", highlight=False)
    if report.failed:
        raise typer.Exit(1)


@tracks_app.command("load")
def tracks_load(files: Annotated[list[Path], typer.Argument(help="GPS fixes: CSV (header: vehicle_id, time, lon, "
                                                                 "lat, speed[, heading, vehicle_type]) or JSON")],
                crs: Annotated[Optional[str], typer.Option(help="CRS of the coordinates (default CRS84; "
                                                                "urn:benxi-cim:crs:GCJ-02 for Gaode terminals)")] = None,
                database: DatabaseOpt = None) -> None:
    """Load GPS fixes into vehicle-tracks (a line per vehicle and day) and vehicle-positions, all files or
    nothing; bad rows are named by file and line."""
    from cim.db.schema import tables_for
    from cim.ops.tracks import TrackError, load_file

    s = _settings(database)
    try:
        engine = open_engine(s.database_url)
        t = tables_for(engine)
        with engine.connect() as conn:
            conn.execution_options(write_lock=True)
            with conn.begin():
                results = [load_file(conn, t, f, crs, s.ops.city_bbox, s.ops.tracks_max_rows) for f in files]
        engine.dispose()
    except CIMDatabaseError as exc:
        _fail(str(exc))
    except TrackError as exc:
        _fail(f"nothing loaded: {exc}")
    for f, r in zip(files, results):
        out.print(f"{f}: {r.fixes:,} fixes, {r.vehicles} vehicles, {r.tracks} tracks (vehicle, day)")



auth_app = typer.Typer(help="API keys, tokens and the audit log (cim.auth in config.yml).", no_args_is_help=True)
app.add_typer(auth_app, name="auth")


@auth_app.command("new-key")
def auth_new_key(name: Annotated[str, typer.Option(help="Who holds the key (written to the audit log)")],
                 role: Annotated[list[str], typer.Option(help="Role(s) of cim.auth.roles (repeatable)")]) -> None:
    """Make a random API key: prints the key (give it to its holder; it is not stored) and the entry for
    cim.auth.keys in config.yml (its SHA-256)."""
    import secrets

    from cim.api.auth import key_hash

    roles = get_settings().auth.roles
    if roles and (unknown := set(role) - set(roles)):
        _fail(f"--role: {', '.join(sorted(unknown))} not in cim.auth.roles ({', '.join(roles)})")
    key = secrets.token_urlsafe(32)
    out.print(f"key: {key}", highlight=False)
    out.print("cim.auth.keys entry:", highlight=False)
    out.print(f"  - {{name: {name}, roles: [{', '.join(role)}], sha256: {key_hash(key)}}}", highlight=False, markup=False)


@auth_app.command("audit")
def auth_audit(database: DatabaseOpt = None,
               limit: Annotated[int, typer.Option(min=1, help="Newest entries to show")] = 50,
               principal: Annotated[Optional[str], typer.Option(help="Only this key name or token subject")] = None) -> None:
    """The newest audit entries: writes, reads of restricted collections, refusals."""
    from cim.db.audit import read_entries
    from cim.db.schema import tables_for

    s = _settings(database)
    try:
        engine = open_engine(s.database_url)
        tables_for(engine)
        with engine.connect() as conn:
            rows = read_entries(conn, principal=principal, limit=limit)
        engine.dispose()
    except CIMDatabaseError as exc:
        _fail(str(exc))
    table = Table(title="audit log (newest first)")
    for col in ("at", "principal", "action", "method", "path", "collections", "status"):
        table.add_column(col)
    for r in rows:
        table.add_row(str(r["at"])[:19], r["principal"], r["action"], r["method"],
                      r["path"] + (f"?{r['query']}" if r["query"] else ""), ",".join(r["collections"] or []),
                      str(r["status"]))
    out.print(table)


deploy_app = typer.Typer(help="Configuration of the servers around the service.", no_args_is_help=True)
app.add_typer(deploy_app, name="deploy")


@deploy_app.command("nginx")
def deploy_nginx(
    app_address: Annotated[Optional[str], typer.Option("--app", help="The app (cim serve) as nginx reaches it, "
                                                       "host:port (default: cim.host:cim.port)")] = None,
    listen: Annotated[str, typer.Option(help="nginx's listen parameters")] = "80",
    server_name: Annotated[str, typer.Option(help="nginx's server_name")] = "_",
    cache_dir: Annotated[Optional[Path], typer.Option(help="The tile cache folder as nginx sees it (default: "
                                                      "cim.tile_cache_dir)")] = None,
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write here (default: standard "
                                                   "output)")] = None,
) -> None:
    """The nginx front (http context, e.g. /etc/nginx/conf.d/cim.conf): cached tiles of the public collections
    from the tile cache's files, everything else proxied to the app (docs/deployment.md)."""
    from cim.settings import load_config_file
    from cim.tiles.front import FrontConfig, nginx_config, public_collections
    from cim.tiles.seed import vector_collections

    s = _settings(None)
    if not s.tile_cache or not s.tile_cache_links_s:
        _fail("the tile cache or its links are off (cim.tile_cache, cim.tile_cache_links_s): nothing for nginx "
              "to serve")
    collections = vector_collections(load_config_file(config_path()))
    try:
        text = nginx_config(FrontConfig(
            app=app_address or f"{s.host}:{s.port}", cache_dir=(cache_dir or s.tile_cache_dir).absolute(),
            public=public_collections(collections, s.auth.restricted, s.auth.enabled),
            tile_matrix_sets=list(s.tiles.tile_matrix_sets), max_age=s.tiles.max_age,
            max_body_bytes=s.limits.max_body_bytes, listen=listen, server_name=server_name,
            source=str(config_path())))
    except ValueError as exc:
        _fail(str(exc))
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        err.print(f"wrote {output}", highlight=False)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
