"""Heights: 1985 National Height Datum ↔ ellipsoidal heights through a geoid grid the test makes itself,
and a clear warning wherever no grid is configured (never silently 12 m wrong)."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from pyproj import Transformer

from cim.crs.registry import CRSRegistry
from cim.crs.transform import height_warning, needs_geoid, transform

E, N = 564489.714, 4574176.348  # lon 123.77, lat 41.30


def anomaly(lon, lat):
    """The made-up height anomaly the grid holds: ~12.7 m at Benxi, varying linearly (bilinear-exact)."""
    return 12.7 + 0.5 * (np.asarray(lon) - 123.0) - 0.3 * (np.asarray(lat) - 41.0)


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """A GTX grid (lower-left origin, rows south to north, big-endian float32) over Benxi."""
    lat0, lon0, step, rows, cols = 40.5, 123.0, 0.1, 15, 30
    lat = lat0 + step * np.arange(rows)[:, None]
    lon = lon0 + step * np.arange(cols)[None, :]
    path = tmp_path_factory.mktemp("geoid") / "benxi_test.gtx"
    with open(path, "wb") as fh:
        fh.write(struct.pack(">4d2i", lat0, lon0, step, step, rows, cols))
        fh.write(anomaly(lon, lat).astype(">f4").tobytes())
    return path


def test_normal_to_ellipsoidal_heights(grid):
    reg = CRSRegistry(geoid_grid=str(grid))
    compound, crs84h, ecef = reg.resolve("EPSG:4550+5737"), reg.resolve("OGC:CRS84h"), reg.resolve("EPSG:4978")
    assert needs_geoid(compound, crs84h) and height_warning(compound, crs84h) is None
    lon, lat, h = transform(compound, crs84h, np.array([E]), np.array([N]), np.array([100.0]))
    assert float(lon[0]) == pytest.approx(123.77, abs=1e-8) and float(lat[0]) == pytest.approx(41.30, abs=1e-8)
    assert float(h[0]) == pytest.approx(100.0 + float(anomaly(123.77, 41.30)), abs=1e-3)
    back = transform(crs84h, compound, lon, lat, h)
    assert float(back[0][0]) == pytest.approx(E, abs=1e-3) and float(back[2][0]) == pytest.approx(100.0, abs=1e-3)
    x, y, z = transform(compound, ecef, np.array([E]), np.array([N]), np.array([100.0]))
    want = Transformer.from_crs(4480, 4978, always_xy=True).transform(123.77, 41.30, 100.0 + float(anomaly(123.77, 41.30)))
    assert np.allclose([float(x[0]), float(y[0]), float(z[0])], want, atol=1e-3)


def test_without_grid_every_such_output_says_so(http):
    body = {"inputs": {"source_crs": "EPSG:4550+5737", "target_crs": "EPSG:4978", "axis_order": "xy",
                       "coordinates": [[E, N, 100.0]]}}
    r = http.post("/processes/coordinate-transform/execution", json=body)
    assert r.status_code == 200
    assert any("geoid grid" in w and "12.7 m" in w for w in r.json()["warnings"])
    plain = http.post("/processes/coordinate-transform/execution", json={"inputs": {
        "source_crs": "EPSG:4490", "target_crs": "EPSG:4550", "coordinates": [[41.3, 123.77]]}})
    assert "warnings" not in plain.json()


def test_missing_grid_file_is_a_configuration_error(tmp_path):
    with pytest.raises(ValueError, match="geoid grid"):
        CRSRegistry(geoid_grid=str(tmp_path / "nope.gtx"))
