"""Hypothesis property tests: CRS round trips over random points in Benxi (cim.crs.transform)."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from cim.crs.registry import GCJ02_URI, default_registry
import pytest

from cim.crs.transform import AREA_MARGIN_DEG, OutsideArea, transform

REG = default_registry()
LON = st.floats(123.3, 124.5, allow_nan=False)  # Benxi inside EPSG:4550's zone (121.5°E..124.5°E)
LAT = st.floats(40.7, 41.6, allow_nan=False)
PROPERTY = settings(max_examples=200, derandomize=True, deadline=None, database=None)


@PROPERTY
@given(LON, LAT)
def test_cgcs2000_to_gauss_kruger_and_back(lon, lat):
    x, y, _ = transform(REG.resolve("EPSG:4490"), REG.epsg(4550), lon, lat)
    assert 200_000 < float(x) < 800_000 and 4_000_000 < float(y) < 5_000_000  # a 3-degree zone at 123°E
    lon2, lat2, _ = transform(REG.epsg(4550), REG.resolve("EPSG:4490"), x, y)
    assert abs(float(lon2) - lon) < 1e-9 and abs(float(lat2) - lat) < 1e-9


@PROPERTY
@given(LON, LAT)
def test_cgcs2000_to_gcj02_and_back(lon, lat):
    glon, glat, _ = transform(REG.resolve("EPSG:4490"), REG.resolve(GCJ02_URI), lon, lat)
    offset_m = math.hypot((float(glon) - lon) * 111_320 * math.cos(math.radians(lat)), (float(glat) - lat) * 110_540)
    assert 50 < offset_m < 1_000  # GCJ-02 shifts Benxi by a few hundred metres, never zero
    lon2, lat2, _ = transform(REG.resolve(GCJ02_URI), REG.resolve("EPSG:4490"), glon, glat)
    assert abs(float(lon2) - lon) < 1e-7 and abs(float(lat2) - lat) < 1e-7  # ~1 cm


@PROPERTY
@given(LON, LAT)
def test_gauss_kruger_to_gcj02_and_back(lon, lat):
    x, y, _ = transform(REG.resolve("EPSG:4490"), REG.epsg(4550), lon, lat)
    glon, glat, _ = transform(REG.epsg(4550), REG.resolve(GCJ02_URI), x, y)
    x2, y2, _ = transform(REG.resolve(GCJ02_URI), REG.epsg(4550), glon, glat)
    assert abs(float(x2) - float(x)) < 0.01 and abs(float(y2) - float(y)) < 0.01


@PROPERTY
@given(st.floats(124.5 + AREA_MARGIN_DEG, 126.0, exclude_min=True, allow_nan=False), LAT)
def test_east_of_the_zone_is_refused_not_distorted(lon, lat):
    with pytest.raises(OutsideArea):  # Huanren lies east of 124.5°E (+ the margin): a clean error, never a far-off easting
        transform(REG.resolve("EPSG:4490"), REG.epsg(4550), lon, lat)
