"""Tile matrix sets: the OGC ones, Tianditu's CGCS2000 quad and our EPSG:4550 set, checked against the
formulas and against the OGC API – Tiles JSON schema (offline copy in ../shared/specs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import yaml
from jsonschema import Draft202012Validator
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from cim.crs import tms
from cim.crs.registry import default_registry
from cim.crs.transform import transform

from .conftest import SHARED

SCHEMA_DIR = SHARED / "specs/ogc/schemas.opengis.net/ogcapi/tiles/part1/1.0/openapi/schemas/tms"


def test_registry_lists_the_four_sets():
    assert set(tms.tile_matrix_sets().list()) == {"WebMercatorQuad", "WorldCRS84Quad", "CGCS2000TiandituQuad",
                                                  "BenxiGK123Quad"}
    with pytest.raises(KeyError, match="known: "):
        tms.get("NoSuchQuad")


def test_tianditu_matrices():
    t = tms.get("CGCS2000TiandituQuad")
    assert t.crs.to_epsg() == 4490 and t.minzoom == 1 and t.maxzoom == 18
    metres_per_degree = 2 * math.pi * 6378137.0 / 360
    for m in t.tileMatrices:
        n = int(m.id)
        assert m.cellSize == pytest.approx(0.703125 / 2 ** (n - 1))
        assert m.scaleDenominator == pytest.approx(m.cellSize * metres_per_degree / 0.00028)
        assert (m.matrixWidth, m.matrixHeight) == (2 ** n, 2 ** (n - 1))
        assert list(m.pointOfOrigin) == [90.0, -180.0] and m.tileWidth == m.tileHeight == 256


def test_tianditu_tiles_follow_the_c_scheme_formula():
    t = tms.get("CGCS2000TiandituQuad")
    rng = np.random.default_rng(3)
    for lon, lat in zip(rng.uniform(123.3, 125.8, 50), rng.uniform(40.8, 41.6, 50), strict=True):
        for n in (1, 8, 15, 18):
            span = 256 * 0.703125 / 2 ** (n - 1)
            tile = t.tile(lon, lat, n)
            assert (tile.x, tile.y) == (math.floor((lon + 180) / span), math.floor((90 - lat) / span))


def test_benxi_gk_set_is_aligned_and_covers_benxi():
    t = tms.get("BenxiGK123Quad")
    assert t.crs.to_epsg() == 4550
    reg = default_registry()
    e, n, _ = transform(reg.resolve("EPSG:4490"), reg.epsg(4550), 123.77, 41.30)
    tile = t.tile(123.77, 41.30, 10)
    b = t.xy_bounds(tile)
    assert b.left <= float(e) < b.right and b.bottom <= float(n) < b.top
    assert (b.right - b.left, b.top - b.bottom) == (250.0, 250.0) and b.left % 250 == 0 and b.bottom % 250 == 0
    level0 = t.xy_bounds(t.tile(123.77, 41.30, 0))
    assert (level0.left, level0.top) == (400000.0, 4700000.0)


@pytest.mark.parametrize("path", sorted((Path(tms.TMS_DIR)).glob("*.json")), ids=lambda p: p.name)
def test_definitions_validate_against_ogc_schema(path):
    def retrieve(uri: str) -> Resource:
        path = Path(urlparse(uri).path)
        return DRAFT202012.create_resource(yaml.safe_load(path.read_text(encoding="utf-8")))

    root = yaml.safe_load((SCHEMA_DIR / "tileMatrixSet.yaml").read_text(encoding="utf-8"))
    schema = {"$id": (SCHEMA_DIR / "tileMatrixSet.yaml").resolve().as_uri(), **root}
    registry = Registry(retrieve=retrieve)
    errors = list(Draft202012Validator(schema, registry=registry).iter_errors(json.loads(path.read_text())))
    assert errors == []
