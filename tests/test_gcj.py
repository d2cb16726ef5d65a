"""GCJ-02 and BD-09: forward against the published formula computed independently, exact inverses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from cim.crs import gcj


def _published_gcj02(lon: float, lat: float) -> tuple[float, float]:
    """The widely published scalar formula, written out in plain math (the reference)."""
    a, ee, pi = 6378245.0, 0.00669342162296594323, math.pi
    x, y = lon - 105.0, lat - 35.0
    t_lat = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    t_lat += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    t_lat += (20.0 * math.sin(y * pi) + 40.0 * math.sin(y / 3.0 * pi)) * 2.0 / 3.0
    t_lat += (160.0 * math.sin(y / 12.0 * pi) + 320 * math.sin(y * pi / 30.0)) * 2.0 / 3.0
    t_lon = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    t_lon += (20.0 * math.sin(6.0 * x * pi) + 20.0 * math.sin(2.0 * x * pi)) * 2.0 / 3.0
    t_lon += (20.0 * math.sin(x * pi) + 40.0 * math.sin(x / 3.0 * pi)) * 2.0 / 3.0
    t_lon += (150.0 * math.sin(x / 12.0 * pi) + 300.0 * math.sin(x / 30.0 * pi)) * 2.0 / 3.0
    rad = lat / 180.0 * pi
    magic = 1 - ee * math.sin(rad) ** 2
    sq = math.sqrt(magic)
    d_lat = (t_lat * 180.0) / ((a * (1 - ee)) / (magic * sq) * pi)
    d_lon = (t_lon * 180.0) / (a / sq * math.cos(rad) * pi)
    return lon + d_lon, lat + d_lat


def _published_bd09(lon: float, lat: float) -> tuple[float, float]:
    x_pi = math.pi * 3000.0 / 180.0
    z = math.sqrt(lon * lon + lat * lat) + 0.00002 * math.sin(lat * x_pi)
    theta = math.atan2(lat, lon) + 0.000003 * math.cos(lon * x_pi)
    return z * math.cos(theta) + 0.0065, z * math.sin(theta) + 0.006


def _random_china(n: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(73.0, 135.0, n), rng.uniform(18.0, 53.5, n)


def test_forward_matches_published_formula():
    lon, lat = _random_china(2000)
    glon, glat = gcj.wgs84_to_gcj02(lon, lat)
    blon, blat = gcj.gcj02_to_bd09(glon, glat)
    for i in range(len(lon)):
        rg = _published_gcj02(lon[i], lat[i])
        rb = _published_bd09(*rg)
        assert glon[i] == pytest.approx(rg[0], abs=1e-12) and glat[i] == pytest.approx(rg[1], abs=1e-12)
        assert blon[i] == pytest.approx(rb[0], abs=1e-12) and blat[i] == pytest.approx(rb[1], abs=1e-12)


def test_offset_at_benxi_is_about_half_a_kilometre():
    lon, lat = gcj.wgs84_to_gcj02(123.77, 41.30)
    dx = (lon - 123.77) * 111320 * math.cos(math.radians(41.30))
    dy = (lat - 41.30) * 110574
    assert 400 < math.hypot(dx, dy) < 700


def test_identity_outside_china():
    lon = np.array([2.35, -74.0, 151.2])
    lat = np.array([48.85, 40.7, -33.9])
    for f in (gcj.wgs84_to_gcj02, gcj.gcj02_to_wgs84, gcj.gcj02_to_bd09, gcj.bd09_to_gcj02):
        out_lon, out_lat = f(lon, lat)
        assert np.array_equal(out_lon, lon) and np.array_equal(out_lat, lat)


def test_inverses_are_exact_over_100000_points():
    lon, lat = _random_china(100_000, seed=11)
    glon, glat = gcj.wgs84_to_gcj02(lon, lat)
    back_lon, back_lat = gcj.gcj02_to_wgs84(glon, glat)
    assert max(np.abs(back_lon - lon).max(), np.abs(back_lat - lat).max()) <= 1e-8
    blon, blat = gcj.wgs84_to_bd09(lon, lat)
    back_lon, back_lat = gcj.bd09_to_wgs84(blon, blat)
    assert max(np.abs(back_lon - lon).max(), np.abs(back_lat - lat).max()) <= 1e-8


def test_scalars_in_scalars_out():
    lon, lat = gcj.bd09_to_wgs84(*gcj.wgs84_to_bd09(123.77, 41.30))
    assert isinstance(lon, float) and lon == pytest.approx(123.77, abs=1e-9) and lat == pytest.approx(41.30, abs=1e-9)
