"""From the storage CRS (EPSG:4550 + 1985 normal heights) to the globe 3D Tiles draw on, and tile frames.

3D Tiles place content in ECEF (EPSG:4978) with ``region`` volumes in radians and heights above the
ellipsoid. Two facts shape this module (../shared/CRS-NOTES.md):

- **Heights.** The database holds 1985 National Height Datum normal heights (EPSG:5737); the globe needs
  ellipsoidal heights, h = H + ζ (height anomaly, ≈ 12.7 m at Benxi). The conversion goes through
  :mod:`cim.crs` with the operator's geoid grid (``cim.geoid_grid``, or ``--geoid-grid``). Without a grid
  the heights are passed through unchanged, so content sits ~12.7 m too low against an ellipsoid-based
  terrain; every tileset built so records :data:`cim.crs.transform.NO_GEOID_WARNING` in its ``extras``.
  No grid of the 1985 datum's height anomaly (CQG2000) is available offline here. Debian's proj-data
  ships EGM96 (``/usr/share/proj/egm96_15.gtx``, N = 12.67 m at Benxi): given as the grid it removes the
  12.7 m offset, leaving the (unmeasured here) difference between the 1985 datum and EGM96, expected to
  be decimetres; an operator's CQG2000 grid is the right one.
- **Precision.** ECEF coordinates at Benxi are ~4×10⁶ m, where float32 keeps 0.25–0.5 m. Vertices are
  stored relative to a tile frame: east-north-up axes at the tile's centre, the tile ``transform`` being
  that frame's ENU→ECEF matrix. Within a tile (a few km at most) float32 then keeps well under 1 mm.

CGCS2000 and WGS 84 are taken as the same datum (PROJ's "ballpark"; ~0.7 m of plate motion at Benxi
since 2000.0, and 0.1 mm between the ellipsoids), as everywhere in the service.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from pyproj import Transformer

from cim.crs import transformer
from cim.crs.registry import CRSRegistry
from cim.crs.transform import height_warning, transform

__all__ = ["Geodesy", "LocalFrame", "geodesy"]

GEOGRAPHIC_3D = "EPSG:4480"  # CGCS2000 lon/lat/ellipsoidal height


class Geodesy:
    """Storage coordinates (x = easting, y = northing, z = normal height) → geodetic → ECEF, in arrays."""

    def __init__(self, storage_srid: int, vertical_srid: int | None, geoid_grid: str | None = None) -> None:
        source = f"EPSG:{storage_srid}+{vertical_srid}" if vertical_srid else f"EPSG:{storage_srid}"
        registry = CRSRegistry((source, GEOGRAPHIC_3D), geoid_grid=geoid_grid)
        self.source = registry.resolve(source)
        self.geographic = registry.resolve(GEOGRAPHIC_3D)
        self.geoid_grid = geoid_grid
        self.storage_srid = storage_srid
        geodetic = self.source.pyproj_crs.geodetic_crs
        self.geographic_srid = (geodetic.to_epsg() if geodetic is not None else None) or 4490
        # What every output must say about its heights (None when they are right)
        self.height_warning: str | None = height_warning(self.source, self.geographic)

    def geodetic(self, x, y, z) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Longitude, latitude (degrees) and ellipsoidal height of storage coordinates."""
        if self.source.geoid_grid:
            lon, lat, h = transform(self.source, self.geographic, x, y, z)
            return lon, lat, h
        # No grid: heights pass through (what PROJ does for EPSG:4550+5737 → 4480 too); the horizontal
        # transformer by EPSG codes is found in 0.3 ms, the compound one from WKT in ~1 s.
        lon, lat = transformer(self.storage_srid, self.geographic_srid).transform(np.asarray(x, dtype=float),
                                                                                   np.asarray(y, dtype=float))
        return np.asarray(lon), np.asarray(lat), np.asarray(z, dtype=float)

    def geodetic_of_ecef(self, ecef: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Longitude, latitude (degrees) and ellipsoidal height of ECEF points (n, 3)."""
        ecef = np.asarray(ecef, dtype=float)
        lon, lat, h = _cartesian().transform(ecef[:, 0], ecef[:, 1], ecef[:, 2], direction="INVERSE")
        return np.asarray(lon), np.asarray(lat), np.asarray(h)

    def ecef(self, lon, lat, h) -> np.ndarray:
        """ECEF (n, 3) of geodetic coordinates in degrees and metres."""
        X, Y, Z = _cartesian().transform(np.asarray(lon, dtype=float), np.asarray(lat, dtype=float),
                                         np.asarray(h, dtype=float))
        return np.column_stack([X, Y, Z])


@lru_cache(maxsize=1)
def _cartesian() -> Transformer:
    """Geodetic (degrees) ↔ geocentric on the WGS 84 ellipsoid, as EPSG:4978 and 3D Tiles viewers define it.

    The same numbers as ``EPSG:4480 → EPSG:4978`` in PROJ (a "ballpark" datum step, then this
    conversion), without the operation search that costs ~2 s per direction and process.
    """
    return Transformer.from_pipeline("+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
                                     "+step +proj=cart +ellps=WGS84")


@lru_cache(maxsize=8)
def geodesy(storage_srid: int, vertical_srid: int | None, geoid_grid: str | None = None) -> Geodesy:
    """The conversion for a database's CRSs, built once per process (PROJ set-up costs ~1 s)."""
    return Geodesy(storage_srid, vertical_srid, geoid_grid)


def enu_rotation(lon_deg: float, lat_deg: float) -> np.ndarray:
    """3×3 matrix whose columns are the east, north and up unit vectors (ECEF) at a geodetic position."""
    lon, lat = np.radians(lon_deg), np.radians(lat_deg)
    sl, cl, sp, cp = np.sin(lon), np.cos(lon), np.sin(lat), np.cos(lat)
    east = [-sl, cl, 0.0]
    north = [-sp * cl, -sp * sl, cp]
    up = [cp * cl, cp * sl, sp]
    return np.column_stack([east, north, up])


@dataclass(frozen=True)
class LocalFrame:
    """East-north-up axes at a point: what a tile's vertices are stored in.

    ``transform`` is the 3D Tiles tile transform (column-major ENU→ECEF). glTF is y-up and 3D Tiles turn
    it z-up when rendering (x, y, z)_glTF → (x, −z, y), so a vertex at (e, n, u) is written to glTF as
    (e, u, −n): :meth:`to_gltf`.
    """

    origin: np.ndarray  # ECEF (3,)
    rotation: np.ndarray  # columns e, n, u

    @classmethod
    def at(cls, geo: Geodesy, x: float, y: float, z: float = 0.0) -> LocalFrame:
        """The frame at storage coordinates (x, y, normal height z)."""
        lon, lat, h = geo.geodetic(np.array([x]), np.array([y]), np.array([z]))
        origin = geo.ecef(lon, lat, h)[0]
        return cls(origin, enu_rotation(float(lon[0]), float(lat[0])))

    def local(self, ecef: np.ndarray) -> np.ndarray:
        """ECEF (n, 3) → east, north, up (n, 3) metres from the origin (float64)."""
        return (np.asarray(ecef, dtype=float) - self.origin) @ self.rotation

    def to_ecef(self, enu: np.ndarray) -> np.ndarray:
        """East, north, up (n, 3) → ECEF (n, 3)."""
        return np.asarray(enu, dtype=float) @ self.rotation.T + self.origin

    @property
    def transform(self) -> list[float]:
        """The 4×4 ENU→ECEF matrix in column-major order (a 3D Tiles tile ``transform``)."""
        m = np.eye(4)
        m[:3, :3] = self.rotation
        m[:3, 3] = self.origin
        return [float(v) for v in m.T.ravel()]

    @staticmethod
    def to_gltf(enu: np.ndarray) -> np.ndarray:
        """ENU (n, 3) → glTF's y-up axes (e, u, −n)."""
        enu = np.asarray(enu)
        return np.column_stack([enu[:, 0], enu[:, 2], -enu[:, 1]])

    @staticmethod
    def from_gltf(xyz: np.ndarray) -> np.ndarray:
        """glTF (x, y, z) → ENU (x, −z, y), as a 3D Tiles viewer applies it."""
        xyz = np.asarray(xyz)
        return np.column_stack([xyz[:, 0], -xyz[:, 2], xyz[:, 1]])
