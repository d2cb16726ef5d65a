"""The CRS registry and transformations: URIs, axis order, the check point, round trips, GCJ-02/BD-09 as
CRSs, the configured local systems, and every error case."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from cim.crs import gcj
from cim.crs.registry import BD09_URI, GCJ02_URI, CRSRegistry, UnknownCRS, default_registry
from cim.crs.transform import OutsideArea, swap_axes, transform, transform_bbox

REG = default_registry()  # config.yml: the defaults plus the two worked local systems
E_CHECK, N_CHECK = 564489.714, 4574176.348  # lon 123.77, lat 41.30 in EPSG:4550 (CRS-NOTES)


def test_check_point():
    for source in ("EPSG:4490", "OGC:CRS84", "EPSG:4326"):
        x, y, _ = transform(REG.resolve(source), REG.epsg(4550), 123.77, 41.30)
        assert float(x) == pytest.approx(E_CHECK, abs=1e-3) and float(y) == pytest.approx(N_CHECK, abs=1e-3)
    x, _, _ = transform(REG.resolve("EPSG:4490"), REG.epsg(4529), 123.77, 41.30)
    assert float(x) == pytest.approx(41_000_000 + E_CHECK, abs=1e-3)


@pytest.mark.parametrize("identifier,yx", [
    ("EPSG:4490", True), ("EPSG:4326", True), ("EPSG:4550", True), ("EPSG:4529", True), ("EPSG:4551", True),
    ("OGC:CRS84", False), ("http://www.opengis.net/def/crs/OGC/1.3/CRS84", False), ("EPSG:3857", False),
    (GCJ02_URI, False), (BD09_URI, False), ("EPSG:4550+5737", True),
])
def test_axis_order(identifier, yx):
    info = REG.resolve(identifier)
    assert info.yx is yx
    a, b = swap_axes(info, np.array([1.0]), np.array([2.0]))
    assert (a[0], b[0]) == ((2.0, 1.0) if yx else (1.0, 2.0))


@pytest.mark.parametrize("text", [
    "http://www.opengis.net/def/crs/EPSG/0/4490", "EPSG:4490", "epsg:4490", "urn:ogc:def:crs:EPSG::4490",
    "[EPSG:4490]", "https://www.opengis.net/def/crs/EPSG/0/4490",
])
def test_identifier_forms(text):
    assert REG.resolve(text).uri == "http://www.opengis.net/def/crs/EPSG/0/4490"


def test_compound_forms():
    a = REG.resolve("EPSG:4550+5737")
    b = REG.resolve("http://www.opengis.net/def/crs-compound?1=http://www.opengis.net/def/crs/EPSG/0/4550"
                    "&2=http://www.opengis.net/def/crs/EPSG/0/5737")
    assert a.uri == b.uri and a.dimension == 3


def test_unknown_crs_lists_supported():
    with pytest.raises(UnknownCRS) as info:
        REG.resolve("EPSG:2000")
    assert "EPSG:2000" in str(info.value) and GCJ02_URI in str(info.value)
    assert "http://www.opengis.net/def/crs/EPSG/0/4550" in info.value.supported
    with pytest.raises(UnknownCRS):
        REG.resolve("not a crs at all")


def test_invalid_configured_crs_is_reported():
    with pytest.raises(ValueError, match="EPSG:999999"):
        CRSRegistry(("EPSG:999999",))
    with pytest.raises(ValueError, match="bad-local"):
        CRSRegistry((), (("bad-local", "x", "+proj=nonsense"),))


def _points_in(*infos, n=7):
    """Points (lon/lat) around Benxi that lie inside the area of use of every CRS given."""
    lon, lat = np.meshgrid(np.linspace(123.3, 125.7, n), np.linspace(40.9, 41.6, n))
    lon, lat = lon.ravel(), lat.ravel()
    keep = np.ones(lon.size, dtype=bool)
    for info in infos:
        if info.area is not None:
            w, s, e, nn = info.area
            keep &= (lon >= w) & (lon <= e) & (lat >= s) & (lat <= nn)
    return lon[keep], lat[keep]


PAIRS = list(itertools.permutations(REG.uris, 2))


@pytest.mark.parametrize("src_uri,dst_uri", PAIRS)
def test_round_trip_every_pair(src_uri, dst_uri):
    src, dst = REG.resolve(src_uri), REG.resolve(dst_uri)
    crs84 = REG.resolve("OGC:CRS84")
    lon, lat = _points_in(src, dst)
    if lon.size == 0:
        pytest.skip("no overlap of the two areas of use near Benxi")
    h = np.full(lon.size, 200.0)
    # start in src: from lon/lat (WGS 84 ≈ CGCS2000) with a height
    x0, y0, z0 = transform(crs84, src, lon, lat, h if src.dimension == 3 or src.pyproj_crs.is_geocentric else None)
    z_in = z0 if z0 is not None else (h if dst.dimension == 3 or dst.pyproj_crs.is_geocentric else None)
    x1, y1, z1 = transform(src, dst, x0, y0, z_in)
    x2, y2, z2 = transform(dst, src, x1, y1, z1)
    assert np.isfinite(x1).all() and np.isfinite(y1).all()
    angular = src.geographic or src.offset is not None
    tol = 1e-9 if angular else 1e-3
    if "example-7param" in src_uri + dst_uri:  # PROJ inverts a Helmert to ~3 mm (negated parameters)
        tol = 1e-7 if angular else 1e-2
    assert np.abs(x2 - x0).max() <= tol and np.abs(y2 - y0).max() <= tol


def test_gcj02_and_bd09_are_crss():
    crs84, g, b = REG.resolve("OGC:CRS84"), REG.resolve(GCJ02_URI), REG.resolve(BD09_URI)
    lon, lat = np.array([123.77, 123.8]), np.array([41.30, 41.32])
    x, y, _ = transform(crs84, g, lon, lat)
    ref = gcj.wgs84_to_gcj02(lon, lat)
    assert np.allclose(x, ref[0], atol=1e-12) and np.allclose(y, ref[1], atol=1e-12)
    # EPSG:4550 → BD-09 → EPSG:4550
    e, n, _ = transform(crs84, REG.epsg(4550), lon, lat)
    bx, by, _ = transform(REG.epsg(4550), b, e, n)
    e2, n2, _ = transform(b, REG.epsg(4550), bx, by)
    assert np.abs(e2 - e).max() < 1e-6 and np.abs(n2 - n).max() < 1e-6
    with pytest.raises(OutsideArea, match="GCJ-02"):
        transform(crs84, g, np.array([2.35]), np.array([48.85]))


def test_local_systems_apply_their_parameters():
    g = REG.resolve("EPSG:4490")
    tm = REG.resolve("urn:benxi-cim:crs:local:example-tm-raised")
    helmert = REG.resolve("urn:benxi-cim:crs:local:example-7param")
    x, y, _ = transform(g, tm, 123.77, 41.30)
    assert 51_000 < float(x) < 53_000  # false easting 50 km, 0.02° east of the central meridian
    # the Helmert is applied, not skipped: shift the X translation by 10 m and the grid moves by ~10 m
    wkt = helmert.pyproj_crs.to_wkt("WKT2_2019")
    shifted = CRSRegistry((), (("shifted", "x", wkt.replace("-15.4", "-5.4")),)).resolve(
        "urn:benxi-cim:crs:local:shifted")
    a = np.array(transform(g, helmert, 123.77, 41.30)[:2], dtype=float).ravel()
    b = np.array(transform(g, shifted, 123.77, 41.30)[:2], dtype=float).ravel()
    assert 5.0 < float(np.hypot(*(a - b))) < 15.0


def test_outside_area_and_not_finite():
    crs84 = REG.resolve("OGC:CRS84")
    with pytest.raises(OutsideArea, match="4550"):
        transform(crs84, REG.epsg(4550), np.array([123.77, 2.35]), np.array([41.30, 48.85]))
    with pytest.raises(OutsideArea, match="finite"):
        transform(crs84, REG.epsg(4550), np.array([np.nan]), np.array([41.30]))
    with pytest.raises(OutsideArea, match="geocentric"):
        transform(REG.epsg(4978), crs84, np.array([-2.0e6]), np.array([4.0e6]))


def test_large_arrays_are_checked_too():
    crs84, gk = REG.resolve("OGC:CRS84"), REG.epsg(4550)
    lon = np.random.default_rng(1).uniform(123.5, 124.0, 5000)
    lat = np.full(5000, 41.3)
    x, _, _ = transform(crs84, gk, lon, lat)
    assert np.isfinite(x).all()
    lon[2500] = 126.0  # one point beyond the zone
    with pytest.raises(OutsideArea, match="1 coordinate"):
        transform(crs84, gk, lon, lat)
    e, n, _ = transform(crs84, gk, lon[:2500], lat[:2500])
    with pytest.raises(OutsideArea, match="target"):
        transform(gk, REG.epsg(4551), e, n)  # CM 126E zone starts at 124.5E


def test_bbox_is_densified():
    crs84, gk = REG.resolve("OGC:CRS84"), REG.epsg(4550)
    box = (122.6, 40.9, 123.4, 41.6)  # straddles the zone's central meridian, 123°E
    dense = transform_bbox(crs84, gk, box)
    corners_x, corners_y, _ = transform(crs84, gk, np.array([box[0], box[2], box[0], box[2]]),
                                        np.array([box[1], box[1], box[3], box[3]]))
    # the bottom parallel sags below its corners at the central meridian: two corners miss that strip
    assert dense[1] < corners_y.min() - 50.0  # 77 m here
    assert dense[3] >= corners_y.max() and dense[0] <= corners_x.min() and dense[2] >= corners_x.max()
