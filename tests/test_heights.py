"""Heights: 1985 National Height Datum ↔ ellipsoidal heights through a geoid grid the test makes itself,
and a clear warning wherever no grid is configured (never silently 12 m wrong)."""

from __future__ import annotations

import numpy as np
import pytest
from pyproj import Transformer

from cim.crs.registry import CRSRegistry
from cim.crs.transform import height_warning, needs_geoid, transform

from .conftest import geoid_anomaly

E, N = 564489.714, 4574176.348  # lon 123.77, lat 41.30


def test_normal_to_ellipsoidal_heights(geoid_grid):
    reg = CRSRegistry(geoid_grid=str(geoid_grid))
    compound, crs84h, ecef = reg.resolve("EPSG:4550+5737"), reg.resolve("OGC:CRS84h"), reg.resolve("EPSG:4978")
    assert needs_geoid(compound, crs84h) and height_warning(compound, crs84h) is None
    lon, lat, h = transform(compound, crs84h, np.array([E]), np.array([N]), np.array([100.0]))
    assert float(lon[0]) == pytest.approx(123.77, abs=1e-8) and float(lat[0]) == pytest.approx(41.30, abs=1e-8)
    assert float(h[0]) == pytest.approx(100.0 + float(geoid_anomaly(123.77, 41.30)), abs=1e-3)
    back = transform(crs84h, compound, lon, lat, h)
    assert float(back[0][0]) == pytest.approx(E, abs=1e-3) and float(back[2][0]) == pytest.approx(100.0, abs=1e-3)
    x, y, z = transform(compound, ecef, np.array([E]), np.array([N]), np.array([100.0]))
    want = Transformer.from_crs(4480, 4978, always_xy=True).transform(123.77, 41.30, 100.0 + float(geoid_anomaly(123.77, 41.30)))
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
