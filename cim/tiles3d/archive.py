"""3D Tiles archives (3TZ): a tileset folder as one file for planners to take offline.

A 3TZ is a zip archive (3D Tiles Archive Format 1.3, the format of CesiumGS/3d-tiles-tools and the
``MAXAR_content_3tz`` extension) with ``tileset.json`` at its root, every file's local header carrying its
sizes and CRC, and a last entry ``@3dtilesIndex1@`` (stored, no comment): 24 bytes per other file, the MD5
of its path and the offset of its local header, sorted by the MD5 read as two little-endian 64-bit
integers, so that a reader finds any tile with a binary search instead of reading the central directory.

Files are stored uncompressed: GLB tiles barely compress, and stored entries can be read in place.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zipfile
from collections.abc import Iterable
from pathlib import Path

__all__ = ["INDEX_NAME", "MEDIA_TYPE", "index_key", "tileset_files", "write_3tz"]

INDEX_NAME = "@3dtilesIndex1@"
MEDIA_TYPE = "application/vnd.maxar.archive.3tz+zip"
# what a built tileset folder holds besides the tileset: build bookkeeping, not for planners
_SKIPPED = {"build-state.json", "served.json", "package.3tz"}


def index_key(md5: bytes) -> tuple[int, int]:
    """The order of the index: the hash as two little-endian unsigned 64-bit integers."""
    return struct.unpack("<QQ", md5)


def tileset_files(folder: Path) -> list[str]:
    """The files of a built tileset that belong in its archive (relative, forward slashes, sorted)."""
    if not (folder / "tileset.json").is_file():
        raise FileNotFoundError(f"{folder}: no tileset.json (build the tileset first: cim 3dtiles build)")
    out = []
    for path in folder.rglob("*"):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and rel not in _SKIPPED and not any(p.startswith(".") for p in rel.split("/")):
            out.append(rel)
    return sorted(out, key=lambda r: (r != "tileset.json", r))


def write_3tz(folder: Path, target: Path, files: Iterable[str] | None = None) -> int:
    """Write the tileset in ``folder`` to the 3TZ ``target`` (atomically); returns the number of files."""
    names = list(files) if files is not None else tileset_files(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name in names:
                if ".3tz" in name:
                    raise ValueError(f"{name}: a path inside a 3TZ must not contain '.3tz'")
                zf.write(folder / name, name)
            entries = []
            for info in zf.infolist():
                md5 = hashlib.md5(info.filename.lstrip("/").encode("utf-8")).digest()
                entries.append((index_key(md5), md5, info.header_offset))
            entries.sort()
            index = b"".join(md5 + struct.pack("<Q", offset) for _, md5, offset in entries)
            zf.writestr(zipfile.ZipInfo(INDEX_NAME, date_time=(1980, 1, 1, 0, 0, 0)), index,
                        compress_type=zipfile.ZIP_STORED)
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return len(names)
