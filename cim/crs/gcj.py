"""GCJ-02 and BD-09, the offset coordinate systems of Chinese web maps (Gaode/AMap, Tencent; Baidu).

GCJ-02 is WGS 84 plus a published, reverse-engineered polynomial offset evaluated on x = lon − 105,
y = lat − 35 and scaled by the Krasovsky ellipsoid; it applies only inside a China bounding box (outside
it, coordinates are left as they are, as every implementation does). BD-09 is GCJ-02 plus a further
rotation-and-shift. The inverses have no closed form: the one-step inverse that most libraries ship is
metres wrong, so we iterate the forward function to a fixed point (w ← w − (F(w) − g)), which converges to
about 1e-9 m in a few steps (../shared/CRS-NOTES.md).

All functions take and return numpy arrays (or scalars) of longitude and latitude in degrees.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CHINA_BBOX", "in_china", "wgs84_to_gcj02", "gcj02_to_wgs84", "gcj02_to_bd09", "bd09_to_gcj02",
           "wgs84_to_bd09", "bd09_to_wgs84"]

_A = 6378245.0  # Krasovsky 1940 semi-major axis
_EE = 0.00669342162296594323  # its first eccentricity squared
_X_PI = np.pi * 3000.0 / 180.0
# (min lon, min lat, max lon, max lat) of the region where the offset applies
CHINA_BBOX = (72.004, 0.8293, 137.8347, 55.8271)
_TOLERANCE_DEG = 1e-12
_MAX_ITERATIONS = 30


def in_china(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """True where the offset applies."""
    lon, lat = np.asarray(lon, dtype=float), np.asarray(lat, dtype=float)
    return (lon >= CHINA_BBOX[0]) & (lon <= CHINA_BBOX[2]) & (lat >= CHINA_BBOX[1]) & (lat <= CHINA_BBOX[3])


_CHUNK = 1 << 16  # points per block: the temporaries stay in the CPU cache


def _offset(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The GCJ-02 offset (dlon, dlat) in degrees at WGS 84 (lon, lat), block by block."""
    if lon.size <= _CHUNK:
        return _offset_block(lon, lat)
    dlon, dlat = np.empty_like(lon), np.empty_like(lat)
    for i in range(0, lon.size, _CHUNK):
        dlon[i:i + _CHUNK], dlat[i:i + _CHUNK] = _offset_block(lon[i:i + _CHUNK], lat[i:i + _CHUNK])
    return dlon, dlat


def _triple(s: np.ndarray) -> np.ndarray:
    """sin(3a) from sin(a): one multiply-add instead of another sine."""
    return s * (3.0 - 4.0 * s * s)


def _offset_block(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = lon - 105.0, lat - 35.0
    sqrt_abs_x = np.sqrt(np.abs(x))
    s2x = np.sin((2.0 * np.pi) * x)
    s_x3 = np.sin((np.pi / 3.0) * x)
    s_y3 = np.sin((np.pi / 3.0) * y)
    six_x = 20.0 * _triple(s2x) + 20.0 * s2x  # 20 sin(6πx) + 20 sin(2πx)
    dlat = (-100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * sqrt_abs_x
            + (six_x + 20.0 * _triple(s_y3) + 40.0 * s_y3
               + 160.0 * np.sin((np.pi / 12.0) * y) + 320.0 * np.sin((np.pi / 30.0) * y)) * (2.0 / 3.0))
    dlon = (300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * sqrt_abs_x
            + (six_x + 20.0 * _triple(s_x3) + 40.0 * s_x3
               + 150.0 * np.sin((np.pi / 12.0) * x) + 300.0 * np.sin((np.pi / 30.0) * x)) * (2.0 / 3.0))
    rad_lat = np.radians(lat)
    sin_lat = np.sin(rad_lat)
    magic = 1.0 - _EE * sin_lat * sin_lat
    sqrt_magic = np.sqrt(magic)
    dlat *= 180.0 / ((_A * (1.0 - _EE)) * np.pi) * (magic * sqrt_magic)
    dlon *= 180.0 / (_A * np.pi) * sqrt_magic / np.cos(rad_lat)
    return dlon, dlat


def _as_arrays(lon, lat) -> tuple[np.ndarray, np.ndarray, bool]:
    scalar = np.ndim(lon) == 0 and np.ndim(lat) == 0
    return np.atleast_1d(np.asarray(lon, dtype=float)), np.atleast_1d(np.asarray(lat, dtype=float)), scalar


def _out(lon: np.ndarray, lat: np.ndarray, scalar: bool):
    return (float(lon[0]), float(lat[0])) if scalar else (lon, lat)


def _wgs84_to_gcj02(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    dlon, dlat = _offset(lon, lat)
    return lon + dlon, lat + dlat


def wgs84_to_gcj02(lon, lat):
    """WGS 84 → GCJ-02 (identity outside :data:`CHINA_BBOX`)."""
    lon, lat, scalar = _as_arrays(lon, lat)
    glon, glat = _wgs84_to_gcj02(lon, lat)
    inside = in_china(lon, lat)
    return _out(np.where(inside, glon, lon), np.where(inside, glat, lat), scalar)


def _gcj02_to_bd09(lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    z = np.hypot(lon, lat) + 0.00002 * np.sin(lat * _X_PI)
    theta = np.arctan2(lat, lon) + 0.000003 * np.cos(lon * _X_PI)
    return z * np.cos(theta) + 0.0065, z * np.sin(theta) + 0.006


def gcj02_to_bd09(lon, lat):
    """GCJ-02 → BD-09 (Baidu's bd09ll); identity outside :data:`CHINA_BBOX` like GCJ-02."""
    lon, lat, scalar = _as_arrays(lon, lat)
    blon, blat = _gcj02_to_bd09(lon, lat)
    inside = in_china(lon, lat)
    return _out(np.where(inside, blon, lon), np.where(inside, blat, lat), scalar)


def _invert(forward, lon: np.ndarray, lat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Solve forward(w) = (lon, lat) by fixed-point iteration, starting from w = (lon, lat)."""
    wlon, wlat = lon.copy(), lat.copy()
    for _ in range(_MAX_ITERATIONS):
        flon, flat = forward(wlon, wlat)
        elon, elat = flon - lon, flat - lat
        wlon -= elon
        wlat -= elat
        if max(np.abs(elon).max(initial=0.0), np.abs(elat).max(initial=0.0)) < _TOLERANCE_DEG:
            break
    return wlon, wlat


def _inverse(forward, lon, lat):
    """Invert ``forward`` where it applies (inside China), leaving other points as they are."""
    lon, lat, scalar = _as_arrays(lon, lat)
    inside = in_china(lon, lat)
    out_lon, out_lat = lon.copy(), lat.copy()
    out_lon[inside], out_lat[inside] = _invert(forward, lon[inside], lat[inside])
    return _out(out_lon, out_lat, scalar)


def gcj02_to_wgs84(lon, lat):
    """GCJ-02 → WGS 84, the exact inverse (iterated to 1e-12°, about 0.1 µm)."""
    return _inverse(_wgs84_to_gcj02, lon, lat)


def bd09_to_gcj02(lon, lat):
    """BD-09 → GCJ-02, the exact inverse."""
    return _inverse(_gcj02_to_bd09, lon, lat)


def wgs84_to_bd09(lon, lat):
    """WGS 84 → BD-09."""
    return gcj02_to_bd09(*wgs84_to_gcj02(lon, lat))


def bd09_to_wgs84(lon, lat):
    """BD-09 → WGS 84, the exact inverse."""
    return gcj02_to_wgs84(*bd09_to_gcj02(lon, lat))
