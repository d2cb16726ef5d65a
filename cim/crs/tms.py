"""The tile matrix sets the service offers, registered once (morecantile), for the tiles and 3D layers.

OGC's WebMercatorQuad and WorldCRS84Quad come with morecantile; ours are OGC TMS 2.0 JSON documents in
``tiles/tms/`` (the one place they are defined):

- ``CGCS2000TiandituQuad``: the national CGCS2000 tiling of 天地图 (``c`` scheme): EPSG:4490, origin lat 90 /
  lon −180, 256-pixel tiles, levels 1–18, 2×1 tiles at level 1, cell size 0.703125 / 2^(n−1) degrees;
  scale denominators from the cell size and OGC's 0.28 mm pixel (Tianditu's published ones use 96 dpi).
- ``BenxiGK123Quad``: for local planners, in the storage CRS EPSG:4550: origin N 4,700,000 / E 400,000
  (top left), one 256 km tile of 1000 m cells at level 0 covering the CM 123E zone's part of Benxi, halving
  to 0.24 m at level 12. Tiles are square in metres and aligned to round coordinates (a level-10 tile is
  250 m × 250 m on a 250 m grid), which planners can overlay on the city's 1:500 map sheets.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import morecantile
from morecantile import TileMatrixSet

from cim.settings import PROJECT_ROOT

TMS_DIR = PROJECT_ROOT / "tiles" / "tms"
OGC_SETS = ("WebMercatorQuad", "WorldCRS84Quad")


@lru_cache(maxsize=1)
def tile_matrix_sets() -> morecantile.defaults.TileMatrixSets:
    """The immutable registry: OGC's sets we offer plus ours from ``tiles/tms/*.json``."""
    ours: dict[str, TileMatrixSet] = {}
    for path in sorted(Path(TMS_DIR).glob("*.json")):
        tms = TileMatrixSet.model_validate_json(path.read_text(encoding="utf-8"))
        ours[tms.id] = tms
    base = morecantile.defaults.TileMatrixSets({k: morecantile.tms.get(k) for k in OGC_SETS})
    return base.register(ours)


def get(tms_id: str) -> TileMatrixSet:
    """A tile matrix set by id (``KeyError`` listing the known ids otherwise)."""
    registry = tile_matrix_sets()
    if tms_id not in registry.list():
        raise KeyError(f"unknown tile matrix set {tms_id!r}; known: {', '.join(registry.list())}")
    return registry.get(tms_id)
