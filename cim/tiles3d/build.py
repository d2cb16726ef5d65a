"""Pre-built 3D Tiles 1.1 tilesets from the CIM database: ``cim 3dtiles build``.

A build plans the quadtree from the objects' positions (16 bytes per object), then builds the leaves one
at a time, streaming each leaf's objects from the database: memory is bounded by the largest tile, not by
the city. It is resumable and incremental: ``build-state.json`` beside ``tileset.json`` records, per
tile, a digest of everything its content was made from (its objects as stored, and the build parameters);
a tile whose digest is unchanged and whose file is still there is not rebuilt. Every file is written to
a temporary name and renamed into place, so an interrupted build leaves only whole files, and a server
reading the folder never sees a half-written tile. ``tileset.json`` is replaced last, then the tiles no
longer in the tree are removed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from cim.db.schema import read_meta, tables_for
from cim.tiles3d.content import build_tile
from cim.tiles3d.errors import NoGeometry, Tiles3DError
from cim.tiles3d.geodesy import Geodesy, geodesy
from cim.tiles3d.quadtree import Cell, plan
from cim.tiles3d.source import Selection, fingerprint, levels_present, plan_points, read_tile
from cim.tiles3d.specs import Tiles3DSettings, check_request
from cim.tiles3d.tileset import LeafTile, content_uri, tileset_document

__all__ = ["BuildProgress", "BuildReport", "build_tileset", "default_out_dir"]

# Bump when the content written for the same inputs changes (mesh, GLB layout, metadata): every tile of an
# existing tileset is then rebuilt.
FORMAT_VERSION = 3  # 2: feature id labels are identifiers (the class id, not the layer); 3: byte normals,
#   a primitive per colour (no COLOR_0)
STATE_FILE = "build-state.json"
STATE_SAVE_SECONDS = 10.0


@dataclass
class BuildProgress:
    """Where a build is (passed to the progress callback after every tile)."""

    total: int
    done: int = 0
    written: int = 0
    unchanged: int = 0
    empty: int = 0
    objects: int = 0
    bytes: int = 0
    stage: str = "tiles"


@dataclass
class BuildReport:
    """What a build did."""

    out_dir: Path
    tileset: Path
    layers: list[str]
    cim_level: int
    tiles: int  # tiles with content in the tileset
    written: int  # built this time
    unchanged: int  # kept from an earlier build
    empty: int  # leaves whose objects drew nothing
    removed: int  # stale tiles deleted
    objects: int
    features: dict[str, int]
    bytes: int  # total size of the content files
    depth: int
    seconds: float
    levels: dict[str, dict[int, int]] = field(default_factory=dict)  # objects drawn per layer and CIM level
    warnings: list[str] = field(default_factory=list)


def default_out_dir(layers: list[str], cim_level: int, settings: Tiles3DSettings) -> Path:
    return settings.out_dir / "+".join(layers) / f"cim{cim_level}"


def _atomic_write(path: Path, data: bytes, durable: bool = False) -> None:
    """Write to a temporary name, then rename: readers see the old file or the new one, never a part.

    ``durable`` also syncs to disk first (tileset.json, the build state). Tiles are not synced (7 ms each):
    after a power loss a tile may be short, and the next build sees its size differ from the state's and
    rebuilds it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _locked(out_dir: Path) -> Iterator[None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".build.lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Tiles3DError(f"another build is writing {out_dir}") from None
        yield


def _code_digest() -> str:
    """A digest of the modules that shape a tile's bytes: changing them rebuilds every tile (FORMAT_VERSION
    says so on purpose; this catches the changes nobody bumped it for)."""
    from cim.tiles3d import content, geodesy as geodesy_module, glb, mesh, source, specs

    h = hashlib.sha256()
    for module in (content, geodesy_module, glb, mesh, source, specs):
        h.update(Path(module.__file__).read_bytes())
    return h.hexdigest()


def _params_key(sel: Selection, geo: Geodesy, settings: Tiles3DSettings, srids: tuple[int, int | None]) -> str:
    """Everything besides the objects that a tile's bytes depend on."""
    grid = None
    if geo.geoid_grid:
        st = Path(geo.geoid_grid).stat()
        grid = [str(Path(geo.geoid_grid).resolve()), st.st_size, st.st_mtime_ns]
    draw = {k: v for k, v in asdict(settings).items() if k not in ("out_dir", "max_features", "min_cell_m",
                                                                    "error_per_metre", "rows_per_batch")}
    key = {"format": FORMAT_VERSION, "code": _code_digest(), "layers": sel.layers, "cim_level": sel.cim_level, "fallback": sel.fallback,
           "srids": list(srids), "geoid_grid": grid, "draw": draw}
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()


def _load_state(path: Path, params: str) -> dict[str, dict[str, Any]]:
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(state, dict) or state.get("params") != params:
        return {}
    tiles = state.get("tiles")
    return tiles if isinstance(tiles, dict) else {}


def _save_state(path: Path, params: str, tiles: dict[str, dict[str, Any]]) -> None:
    _atomic_write(path, json.dumps({"format": FORMAT_VERSION, "params": params, "tiles": tiles},
                                   separators=(",", ":")).encode(), durable=True)


def _no_geometry_message(sel: Selection, present: dict[str, dict[int, int]], where: str) -> str:
    parts = []
    for spec in sel.specs:
        low, high = sel.window(spec)
        wanted = f"CIM{high}" if low == high else f"CIM{low}–{high}"
        stored = present.get(spec.layer) or {}
        have = ", ".join(f"CIM{lv} ({n:,})" for lv, n in sorted(stored.items())) or "none"
        parts.append(f"layer {spec.layer!r} has no geometry at {wanted}{where} (levels stored: {have})")
    return "; ".join(parts) + ": no tileset written"


def build_tileset(engine: Engine, layers: list[str], cim_level: int, *, out_dir: Path | None = None,
                  area: Any = None, fallback: bool = True, settings: Tiles3DSettings | None = None,
                  geoid_grid: str | None = None, force: bool = False,
                  progress: Callable[[BuildProgress], None] | None = None) -> BuildReport:
    """Build (or bring up to date) the tileset of ``layers`` at ``cim_level``.

    Args:
        area: only objects whose footprint intersects this shapely geometry (storage CRS).
        fallback: draw objects lacking the level with their highest lower level (layers that allow it).
        geoid_grid: the height anomaly grid for 1985 heights → ellipsoidal heights (None: heights passed
            through unchanged, and the tileset says so).
        force: rebuild every tile even when its inputs did not change.

    Raises:
        Tiles3DError: an unknown layer, a level the layer has no tilesets at, nothing to draw (the message
            names the levels stored), or another build writing the same folder.
    """
    started = time.perf_counter()
    settings = settings or Tiles3DSettings()
    specs = check_request(layers, cim_level)
    t = tables_for(engine)
    with engine.connect() as conn:
        meta = read_meta(conn)
    srids = (int(meta["storage_srid"]), int(meta["vertical_srid"]) if meta.get("vertical_srid") else None)
    geo = geodesy(srids[0], srids[1], geoid_grid)
    sel = Selection(tuple(specs), cim_level, fallback, area)

    x, y = plan_points(engine, t, sel)
    if not len(x):
        with engine.connect() as conn:
            present = levels_present(conn, t, sel)
        raise NoGeometry(_no_geometry_message(sel, present, " in the bbox" if area is not None else ""))
    tree = plan(x, y, settings.max_features, settings.min_cell_m)
    del x, y
    leaves = sorted(tree.leaves(), key=lambda n: n.cell)
    out_dir = Path(out_dir or default_out_dir(sel.layers, cim_level, settings))
    params = _params_key(sel, geo, settings, srids)
    state_path = out_dir / STATE_FILE
    report_levels: dict[str, dict[int, int]] = {s.layer: {} for s in specs}

    with _locked(out_dir):
        for junk in out_dir.rglob(".*.tmp"):  # left by a build that was killed while writing
            junk.unlink(missing_ok=True)
        previous = {} if force else _load_state(state_path, params)
        tiles: dict[str, dict[str, Any]] = {}
        status = BuildProgress(total=len(leaves))
        saved_at = time.monotonic()
        with engine.connect() as conn, _saving_on_interrupt(state_path, params, previous, tiles):
            for node in leaves:
                cell = node.cell
                assert cell is not None
                rows = [r for batch in read_tile(conn, t, sel, cell, settings.rows_per_batch) for r in batch]
                for r in rows:
                    counts = report_levels[r.layer]
                    counts[r.cim_level] = counts.get(r.cim_level, 0) + 1
                digest = fingerprint(rows, params)
                path = out_dir / content_uri(cell)
                before = previous.get(cell.address)
                if (before is not None and before.get("inputs") == digest and path.is_file()
                        and path.stat().st_size == before.get("bytes")):
                    tiles[cell.address] = before
                    status.unchanged += 1
                    status.bytes += int(before["bytes"])
                else:
                    content = build_tile(_chunks(rows, settings.rows_per_batch), sel, cell, geo, settings, digest) \
                        if rows else None
                    if content is None:
                        path.unlink(missing_ok=True)
                        status.empty += 1
                    else:
                        _atomic_write(path, content.glb)
                        tiles[cell.address] = {"inputs": digest, "bytes": len(content.glb), "region": content.region,
                                               "transform": content.transform, "features": content.features,
                                               "vertices": content.vertices, "triangles": content.triangles}
                        status.written += 1
                        status.bytes += len(content.glb)
                status.done += 1
                status.objects += len(rows)
                del rows
                if progress:
                    progress(status)
                if time.monotonic() - saved_at > STATE_SAVE_SECONDS:
                    _save_state(state_path, params, {**previous, **tiles})
                    saved_at = time.monotonic()

        version = hashlib.sha256("".join(f"{a}:{v['inputs']}" for a, v in sorted(tiles.items())).encode()).hexdigest()
        extras = {"cim": {
            "layers": sel.layers, "cim_level": cim_level, "fallback": fallback,
            "storage_crs": f"EPSG:{srids[0]}" + (f"+{srids[1]}" if srids[1] else ""),
            "heights": ("ellipsoidal, from 1985 normal heights with geoid grid " + Path(geoid_grid).name
                        if geo.height_warning is None and geoid_grid else "as stored"),
            "height_warning": geo.height_warning,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"), "as_of": sel.as_of.isoformat(),
            "objects": status.objects, "levels": {k: {str(lv): n for lv, n in v.items()} for k, v in report_levels.items()},
            "quadtree": {"crs": f"EPSG:{srids[0]}", "cell": "k/ix/iy: [ix·2^k, (ix+1)·2^k) × [iy·2^k, (iy+1)·2^k) m",
                         "assignment": "centre of the footprint's bounding box",
                         "max_features": settings.max_features, "min_cell_m": settings.min_cell_m},
        }}
        doc = tileset_document(tree, {a: LeafTile(v["region"], v["transform"]) for a, v in tiles.items()},
                               settings.error_per_metre, version, extras)
        if doc is None:
            _save_state(state_path, params, {})
            raise NoGeometry(f"the objects of {', '.join(sel.layers)} at CIM{cim_level} drew no triangles "
                             f"(degenerate or unsupported geometry): no tileset written")
        if progress:
            status.stage = "tileset"
            progress(status)
        tileset_path = out_dir / "tileset.json"
        _atomic_write(tileset_path, json.dumps(doc, ensure_ascii=False, indent=1).encode("utf-8"), durable=True)
        _save_state(state_path, params, tiles)
        removed = _remove_stale(out_dir, {content_uri(Cell.parse(a)) for a in tiles})

    features: dict[str, int] = {}
    for v in tiles.values():
        for layer, n in v["features"].items():
            features[layer] = features.get(layer, 0) + n
    warnings = [geo.height_warning] if geo.height_warning else []
    return BuildReport(out_dir, tileset_path, sel.layers, cim_level, len(tiles), status.written, status.unchanged,
                       status.empty, removed, status.objects, features, status.bytes, _depth(doc["root"]),
                       time.perf_counter() - started, report_levels, warnings)


@contextmanager
def _saving_on_interrupt(path: Path, params: str, previous: dict, tiles: dict) -> Iterator[None]:
    """On an interruption (Ctrl-C, an error), record the tiles written so far: the next build keeps them."""
    try:
        yield
    except BaseException:
        _save_state(path, params, {**previous, **tiles})
        raise


def _chunks(rows: list, size: int):
    for i in range(0, len(rows), size):
        yield rows[i:i + size]


def _depth(tile: dict[str, Any]) -> int:
    return 1 + max((_depth(c) for c in tile.get("children", [])), default=0)


def _remove_stale(out_dir: Path, keep: set[str]) -> int:
    """Delete content files (and empty folders) that the tileset no longer refers to."""
    content = out_dir / "content"
    removed = 0
    if not content.is_dir():
        return 0
    for path in sorted(content.rglob("*.glb")):
        if path.relative_to(out_dir).as_posix() not in keep:
            path.unlink(missing_ok=True)
            removed += 1
    for folder in sorted((p for p in content.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    return removed
