"""Tilesets served on demand: built into a cache folder the first time they are asked for, and brought up
to date when the data they show changes.

One folder per collection and CIM level under ``<data dir>/3dtiles/``, written by the same
:func:`~cim.tiles3d.build.build_tileset` as ``cim 3dtiles build`` (so an on-demand tile is byte for byte the
pre-built one). ``served.json`` beside ``tileset.json`` records the key the folder was built for: the
database id and the data versions of the layers (:mod:`cim.db.versions`), plus everything else that shapes
the bytes (the tile code, the settings, the geoid grid). A request whose key differs rebuilds first, and
the rebuild is incremental: only tiles whose objects changed are written again (the build's own per-tile
digests). Checking costs one key read per layer and a small file read.

Several workers share the folder: a blocking ``flock`` lets one of them rebuild while the others wait and
then find the key current. Every file is renamed into place, so a reader never sees half a tile.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from collections.abc import Iterator

from sqlalchemy import Engine

from cim.tiles3d.archive import write_3tz
from cim.tiles3d.build import FORMAT_VERSION, _atomic_write, _code_digest, build_tileset
from cim.tiles3d.errors import NoGeometry
from cim.tiles3d.specs import Tiles3DSettings

__all__ = ["ServedTileset", "served_key"]

STATE = "served.json"
PACKAGE = "package.3tz"


def served_key(database_id: str, versions: dict[str, int], settings: Tiles3DSettings, geoid_grid: str | None) -> str:
    """The cache key: what the data is (database, layer versions) and what draws it (code, settings, grid)."""
    grid = None
    if geoid_grid:
        st = Path(geoid_grid).stat()
        grid = [str(Path(geoid_grid).resolve()), st.st_size, st.st_mtime_ns]
    draw = {k: str(v) for k, v in asdict(settings).items() if k != "out_dir"}
    key = [database_id, sorted(versions.items()), FORMAT_VERSION, _code_digest(), draw, grid]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()


@contextmanager
def _exclusive(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".serve.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocking: the others wait for the one rebuilding
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class ServedTileset:
    """One collection's tileset at one CIM level, in its cache folder."""

    folder: Path
    layers: tuple[str, ...]
    cim_level: int
    settings: Tiles3DSettings
    geoid_grid: str | None = None

    def _state(self) -> dict[str, Any]:
        try:
            state = json.loads((self.folder / STATE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return state if isinstance(state, dict) else {}

    def current(self, key: str) -> bool:
        state = self._state()
        return state.get("key") == key and (state.get("empty") is not None or (self.folder / "tileset.json").is_file())

    def ensure(self, engine: Engine, key: str) -> Path:
        """The folder, built for ``key``; raises :class:`NoGeometry` when there is nothing to draw."""
        state = self._state()
        if state.get("key") != key or not (state.get("empty") or (self.folder / "tileset.json").is_file()):
            with _exclusive(self.folder):
                state = self._state()  # another worker may have rebuilt it meanwhile
                if state.get("key") != key or not (state.get("empty") or (self.folder / "tileset.json").is_file()):
                    state = self._build(engine, key)
        if state.get("empty"):
            raise NoGeometry(state["empty"])
        return self.folder

    def _build(self, engine: Engine, key: str) -> dict[str, Any]:
        (self.folder / PACKAGE).unlink(missing_ok=True)
        try:
            build_tileset(engine, list(self.layers), self.cim_level, out_dir=self.folder, settings=self.settings,
                          geoid_grid=self.geoid_grid)
            state: dict[str, Any] = {"key": key}
        except NoGeometry as exc:
            (self.folder / "tileset.json").unlink(missing_ok=True)
            state = {"key": key, "empty": str(exc)}
        _atomic_write(self.folder / STATE, json.dumps(state).encode(), durable=True)
        return state

    def package(self, engine: Engine, key: str) -> Path:
        """The tileset as a 3TZ archive, written once per key."""
        self.ensure(engine, key)
        target = self.folder / PACKAGE
        marker = self.folder / ".package-key"
        if target.is_file() and _read(marker) == key:
            return target
        with _exclusive(self.folder):
            if not (target.is_file() and _read(marker) == key):
                if self._state().get("key") != key:  # rebuilt for newer data while we waited: ours is gone
                    self._build(engine, key)
                write_3tz(self.folder, target)
                _atomic_write(marker, key.encode())
        return target


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return None


def cache_root(data_dir: Path) -> Path:
    return Path(os.fspath(data_dir)) / "3dtiles"
