"""A tile cache on disk for vector and raster tiles, keyed by the layers' data versions.

Layout (``cim.tile_cache_dir``, by default ``tiles/cache/ogc/``)::

    {collection}/{kind}/{tileMatrixSet}/{version}/{tileMatrix}/{tileRow}/{tileCol}.{ext}

``kind`` is ``mvt`` for vector tiles or ``map-{style}`` for raster map tiles; ``version`` a digest of
everything the tile's bytes depend on (database id, the layers' data versions from
:mod:`cim.db.versions`, this software's tile format, the tile settings). A write to a layer gives it a new
version, so every later request misses the old entries; the first tile written under a new version removes
the other versions of that collection, kind and tile matrix set.

Files hold the bytes as sent: an ``.mvt.gz`` file is gzip-compressed (served as is to clients that accept
gzip). A tile without data (204) is an empty file named ``{tileCol}.empty``, never an empty ``.mvt.gz``
(which a static server would send as a broken gzip body).

``{collection}/{kind}/{tileMatrixSet}/current`` is a symbolic link to the version folder of the data as it
is now, kept there by :meth:`TileCache.publish` (the app's workers, every ``cim.tile_cache_links_s``): a
front web server maps ``/collections/{c}/tiles/{tms}/{z}/{row}/{col}`` to
``{c}/mvt/{tms}/current/{z}/{row}/{col}.mvt.gz`` without knowing versions (``cim deploy nginx``,
:mod:`cim.tiles.front`). The link is swapped atomically (a new link renamed over it), then the other
versions are removed. Writes go to a temporary file in the tile's folder and
are renamed into place, so a reader sees a whole tile or none, and workers writing the same tile at once
each install a complete copy. A cache that cannot be written (full, read-only, not a folder) never fails
a request: the tile is served uncached and a warning is logged (once a minute per kind of failure).
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

__all__ = ["CURRENT", "CachedTile", "TileCache", "TileKey"]

LOG = logging.getLogger("cim.tiles.cache")
WARN_EVERY = 60.0  # seconds between two warnings about the same failure
CURRENT = "current"  # the link to the current version folder (never a version: those are hex digests)
EMPTY = "empty"  # the extension of a tile without data


@dataclass(frozen=True)
class TileKey:
    """Where one tile of one data version lives in the cache."""

    collection: str
    kind: str  # "mvt" or "map-{style}"
    tms: str
    version: str  # a digest: see the module docstring
    matrix: str
    row: int
    col: int
    ext: str  # "mvt.gz", "mvt", "png", "jpeg", "webp"

    def relative(self) -> Path:
        return Path(self.collection, self.kind, self.tms, self.version, self.matrix, str(self.row),
                    f"{self.col}.{self.ext}")

    @property
    def lookup(self) -> str:
        """The kind of tile, as lookups are counted: ``vector`` or ``raster``."""
        return "vector" if self.kind.startswith("mvt") else "raster"


@dataclass(frozen=True)
class CachedTile:
    data: bytes  # b"": a tile without data
    gzipped: bool


class TileCache:
    """The cache under ``root`` (``None``: disabled, every lookup misses and nothing is written)."""

    def __init__(self, root: Path | None, counter: Callable[[str, bool], None] | None = None) -> None:
        self.root = root
        self.counter = counter  # called with (kind, hit) on every lookup of the server (cim.api.metrics)
        self._warned: dict[str, float] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def path(self, key: TileKey) -> Path:
        assert self.root is not None
        return self.root / key.relative()

    def get(self, key: TileKey) -> CachedTile | None:
        """The cached tile, or ``None`` on a miss (or a cache that cannot be read)."""
        if self.root is None:
            return None
        found = self._read(key)
        if self.counter is not None:
            self.counter(key.lookup, found is not None)
        return found

    def _read(self, key: TileKey) -> CachedTile | None:
        for k in (key, replace(key, ext=EMPTY)):  # a tile with data is the common case: looked up first
            try:
                with open(self.path(k), "rb") as fh:
                    return CachedTile(fh.read(), k.ext.endswith(".gz"))
            except (FileNotFoundError, NotADirectoryError):  # not cached (or a cache that cannot hold it: see put)
                continue
            except OSError as exc:
                self._warn(exc, "read")
                return None
        return None

    def contains(self, key: TileKey) -> bool:
        return self.root is not None and (self.path(key).is_file() or self.path(replace(key, ext=EMPTY)).is_file())

    def put(self, key: TileKey, data: bytes) -> bool:
        """Store a tile atomically; False (and a logged warning) when the cache cannot take it."""
        if self.root is None:
            return False
        target = self.path(key if data else replace(key, ext=EMPTY))
        version_dir = self.root / key.collection / key.kind / key.tms / key.version
        try:
            new_version = not version_dir.exists()
            target.parent.mkdir(parents=True, exist_ok=True)
            if new_version:
                self._drop_other_versions(version_dir)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, target)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        except FileNotFoundError:
            # another worker dropped this version's folder (the data changed meanwhile): nothing to keep
            return False
        except OSError as exc:
            self._warn(exc, "write")
            return False
        return True

    def publish(self, collection: str, kind: str, tms: str, version: str) -> bool:
        """Point ``{collection}/{kind}/{tms}/current`` at ``version`` (the data as it is now); True when the
        link moved (the other versions are then removed). Never raises: a cache that cannot be written is
        warned about, and the front server then finds no tiles and asks the app."""
        if self.root is None:
            return False
        version_dir = self.root / collection / kind / tms / version
        link = version_dir.parent / CURRENT
        try:
            if os.readlink(link) == version:
                return False
        except OSError:  # no link yet
            pass
        try:
            version_dir.mkdir(parents=True, exist_ok=True)
            tmp = version_dir.parent / f".{CURRENT}.{os.getpid()}.{threading.get_ident()}.tmp"
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            os.symlink(version, tmp)  # relative: the cache folder may be mounted elsewhere by the front server
            os.replace(tmp, link)
            self._drop_other_versions(version_dir)
        except OSError as exc:
            self._warn(exc, "write")  # one warning a minute for a cache that cannot be written, links or tiles
            return False
        return True

    def _drop_other_versions(self, version_dir: Path) -> None:
        """Entries of older data versions are never read again: remove them (never the version ``current``
        points at: a request that read the data just before it changed may still be writing its tile)."""
        try:
            linked = os.readlink(version_dir.parent / CURRENT)
        except OSError:
            linked = None
        for other in version_dir.parent.iterdir():
            if other == version_dir or other.name in (CURRENT, linked) or other.name.startswith("."):
                continue
            if other.is_dir() and not other.is_symlink():
                shutil.rmtree(other, ignore_errors=True)

    def _warn(self, exc: OSError, action: str) -> None:
        reason = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
        now = time.monotonic()
        with self._lock:
            if now - self._warned.get(f"{action}:{reason}", -WARN_EVERY) < WARN_EVERY:
                return
            self._warned[f"{action}:{reason}"] = now
        LOG.warning("tile cache %s cannot %s tiles (%s: %s): serving them uncached", self.root, action, reason,
                    exc.strerror or exc)
