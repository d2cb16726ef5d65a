"""Raster map tiles (OGC API – Tiles, PNG/JPEG/WebP) against the running server on both backends.

Expectations come from outside the tile code: heights from the DEM read whole with rasterio (each tile
pixel's centre projected into the DEM's grid with pyproj), orthophoto pixels from rio-tiler reading the COG
directly, tile positions from morecantile, documents from the OGC schemas (offline copy in ../shared/specs).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from urllib.parse import urlparse

import morecantile
import numpy as np
import pytest
import rasterio
from pyproj import Transformer
from rasterio.errors import NotGeoreferencedWarning
from rasterio.io import MemoryFile
from rio_tiler.io import Reader

from cim.crs import tms as tms_registry

from .test_tiles import OPENAPI, TMS_SCHEMAS, assert_valid, schema_validator

SETS = ("WebMercatorQuad", "WorldCRS84Quad", "CGCS2000TiandituQuad")
ORTHO, DTM, DSM = "colorado_hro_orthophoto_15cm", "lidar_dtm_2m_epsg26918", "lidar_dsm_2m_epsg26918"
REL = "http://www.opengis.net/def/rel/ogc/1.0/"


@pytest.fixture
def http(raster_server):
    import httpx

    with httpx.Client(base_url=raster_server.url, timeout=60) as client:
        yield client


def decode(content: bytes) -> np.ndarray:
    """An image's bands (PNG, JPEG, WebP) as decoded by GDAL."""
    with warnings.catch_warnings(), MemoryFile(content) as mem:
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # a tile image has no geotransform
        with mem.open() as img:
            return img.read()


def cog(raster_db, name: str) -> Path:
    return raster_db.data_dir / ("dem.cog.tif" if name == "dem" else f"rasters/{name}.cog.tif")


def finest_tile(http, collection: str, tms_id: str, style: str | None = None) -> tuple[morecantile.Tile, dict]:
    """The tile at the raster's centre in the finest matrix without over-zoom (two below the deepest, or the
    set's deepest where it stops earlier: Tianditu's level 18 is coarser than the orthophoto)."""
    prefix = f"/collections/{collection}" + (f"/styles/{style}" if style else "")
    doc = http.get(f"{prefix}/map/tiles/{tms_id}").json()
    deepest = str(tms_registry.get(tms_id).tileMatrices[-1].id)
    limits = doc["tileMatrixSetLimits"]
    lim = limits[-1] if limits[-1]["tileMatrix"] == deepest or len(limits) < 3 else limits[-3]
    (w, s), (e, n) = doc["boundingBox"]["lowerLeft"], doc["boundingBox"]["upperRight"]
    tile = tms_registry.get(tms_id).tile((w + e) / 2, (s + n) / 2, int(lim["tileMatrix"]))
    return tile, doc


def pixel_centres(tms_id: str, tile: morecantile.Tile) -> tuple[np.ndarray, np.ndarray]:
    """x/y of the 256 × 256 pixel centres in the set's CRS (lon/lat order for the geographic sets)."""
    b = tms_registry.get(tms_id).xy_bounds(tile)
    step_x, step_y = (b.right - b.left) / 256, (b.top - b.bottom) / 256
    return np.meshgrid(b.left + (np.arange(256) + 0.5) * step_x, b.top - (np.arange(256) + 0.5) * step_y)


# ---------------------------------------------------------------------------------------------- DEM


@pytest.mark.parametrize("collection, tms_id", [("dem", t) for t in SETS] + [(DTM, "WebMercatorQuad")])
def test_terrain_rgb_decodes_to_the_dem_heights(http, raster_db, collection, tms_id):
    tile, _ = finest_tile(http, collection, tms_id, "terrain-rgb")
    r = http.get(f"/collections/{collection}/styles/terrain-rgb/map/tiles/{tms_id}/{tile.z}/{tile.y}/{tile.x}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    rgba = decode(r.content).astype("int64")
    assert rgba.shape == (4, 256, 256)
    decoded = -10000 + (rgba[0] * 65536 + rgba[1] * 256 + rgba[2]) * 0.1
    with rasterio.open(cog(raster_db, collection)) as src:
        heights, transform, nodata, crs = src.read(1), src.transform, src.nodata, src.crs
    tms_crs = tms_registry.get(tms_id).crs.srs
    xs, ys = pixel_centres(tms_id, tile)
    ex, ny = Transformer.from_crs(tms_crs, crs.to_wkt(), always_xy=True).transform(xs, ys)
    cols, rows = (ex - transform.c) / transform.a, (ny - transform.f) / transform.e
    col, row = np.floor(cols).astype(int), np.floor(rows).astype(int)
    inside = (col >= 1) & (row >= 1) & (col < heights.shape[1] - 1) & (row < heights.shape[0] - 1)
    opaque = rgba[3] == 255
    check = opaque & inside
    assert check.sum() > 1000, "too few pixels with data to compare"
    expected = heights[row[check], col[check]]
    assert (expected != nodata).all()
    exact = np.abs(decoded[check] - expected) <= 0.05 + 1e-6  # Terrain-RGB's 0.1 m step, rounded
    # GDAL's warper may take the neighbouring cell for a pixel centre within a hair of a cell edge
    near = np.zeros_like(exact)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            near |= np.abs(decoded[check] - heights[row[check] + dr, col[check] + dc]) <= 0.05 + 1e-6
    assert near.all()
    assert exact.mean() > 0.97, exact.mean()
    # and no data is transparent, not a made-up height
    assert not (~opaque & inside & (heights[row.clip(0, heights.shape[0] - 1),
                                            col.clip(0, heights.shape[1] - 1)] != nodata)).any()


@pytest.mark.parametrize("tms_id", SETS)
def test_hillshade_shows_relief(http, tms_id):
    tile, _ = finest_tile(http, DSM, tms_id)
    base = f"/collections/{DSM}/map/tiles/{tms_id}/{tile.z}/{tile.y}/{tile.x}"
    png = decode(http.get(base).content)
    assert png.shape == (2, 256, 256)  # grey + alpha
    grey, alpha = png[0], png[1]
    shaded = grey[alpha == 255].astype(float)
    assert shaded.size > 256 * 256 // 4
    # a flat cell is sin(45°)·255 ≈ 180; buildings and their slopes spread it both ways
    assert 100 < np.median(shaded) < 230 and shaded.std() > 10 and shaded.min() < 120 and shaded.max() > 220
    for fmt, media in (("jpeg", "image/jpeg"), ("webp", "image/webp")):
        r = http.get(base, params={"f": fmt})
        assert r.status_code == 200 and r.headers["content-type"] == media
        other = decode(r.content)
        assert np.abs(other[0][alpha == 255].astype(float) - shaded).mean() < 6


def test_hillshade_is_lit_from_the_north_west(http, raster_db):
    """Slopes facing the light (north-west) are brighter than those facing away, per the DEM's gradient."""
    tile, _ = finest_tile(http, "dem", "WebMercatorQuad")
    png = decode(http.get(f"/collections/dem/map/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}").content)
    rgba = decode(http.get(f"/collections/dem/styles/terrain-rgb/map/tiles/WebMercatorQuad/{tile.z}/{tile.y}/"
                           f"{tile.x}").content).astype("int64")
    h = -10000 + (rgba[0] * 65536 + rgba[1] * 256 + rgba[2]) * 0.1
    d_row, d_col = np.gradient(h)
    toward_light = d_col + d_row  # height rising to the east and south: the slope faces north-west
    ok = (png[1] == 255) & (rgba[3] == 255)
    facing = ok & (toward_light > np.percentile(toward_light[ok], 80))
    away = ok & (toward_light < np.percentile(toward_light[ok], 20))
    assert png[0][facing].mean() > png[0][away].mean() + 5


# ---------------------------------------------------------------------------------------------- orthophoto


@pytest.mark.parametrize("tms_id", SETS)
def test_orthophoto_tiles_match_rio_tiler_reading_the_cog(http, raster_db, tms_id):
    tile, doc = finest_tile(http, ORTHO, tms_id)
    assert doc["style"]["id"] == "visual"
    with Reader(str(cog(raster_db, ORTHO)), tms=tms_registry.get(tms_id)) as src:
        ref = src.tile(tile.x, tile.y, tile.z, indexes=(1, 2, 3), resampling_method="bilinear",
                       reproject_method="bilinear")
    valid = ~np.ma.getmaskarray(ref.array).any(axis=0)
    assert valid.sum() > 1000
    url = f"/collections/{ORTHO}/map/tiles/{tms_id}/{tile.z}/{tile.y}/{tile.x}"
    png = decode(http.get(url).content)
    assert png.shape == (4, 256, 256)
    assert ((png[3] == 255) == valid).all()
    assert (png[:3][:, valid] == ref.array.data[:, valid]).all()  # PNG: lossless
    for fmt, tolerance in (("webp", 6.0), ("jpeg", 8.0)):  # quality 90; a shifted tile differs by tens
        r = http.get(url, params={"f": fmt})
        assert r.headers["content-type"] == f"image/{fmt}"
        img = decode(r.content)
        diff = np.abs(img[:3][:, valid].astype(float) - ref.array.data[:, valid].astype(float)).mean()
        assert diff < tolerance, (fmt, diff)


# ---------------------------------------------------------------------------------------------- documents


def test_raster_collections_conformance_and_links(http):
    ids = {c["id"] for c in http.get("/collections", params={"f": "json"}).json()["collections"]}
    assert {"dem", ORTHO, DTM, DSM, "buildings"} <= ids
    links = http.get("/collections/dem", params={"f": "json"}).json()["links"]
    maps = [x for x in links if x["rel"] == f"{REL}tilesets-map"]
    assert maps and urlparse(maps[0]["href"]).path == "/collections/dem/map/tiles"
    conformance = set(http.get("/conformance", params={"f": "json"}).json()["conformsTo"])
    assert {f"http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/{c}" for c in ("png", "jpeg")} <= conformance


@pytest.mark.parametrize("collection, style", [("dem", None), ("dem", "terrain-rgb"), (ORTHO, None)])
def test_tilesets_validate_and_lead_to_tiles(http, collection, style):
    prefix = f"/collections/{collection}" + (f"/styles/{style}" if style else "")
    listing = http.get(f"{prefix}/map/tiles").json()
    assert_valid(schema_validator(OPENAPI / "responses/tiles-core/rTileSetsList.yaml",
                                  ("content", "application/json", "schema")), listing)
    assert {t["links"][0]["href"].rsplit("/", 1)[1] for t in listing["tilesets"]} == set(SETS)
    tileset_schema = schema_validator(TMS_SCHEMAS / "tileSet.yaml")
    for tms_id in SETS:
        doc = http.get(f"{prefix}/map/tiles/{tms_id}").json()
        assert_valid(tileset_schema, doc)
        assert doc["dataType"] == "map"
        links = {(x["rel"], x["type"]): x for x in doc["links"]}
        assert links[(f"{REL}tiling-scheme", "application/json")]["href"].endswith(f"/tileMatrixSets/{tms_id}")
        tile, _ = finest_tile(http, collection, tms_id, style)
        lim = next(x for x in doc["tileMatrixSetLimits"] if x["tileMatrix"] == str(tile.z))
        assert lim["minTileRow"] <= tile.y <= lim["maxTileRow"] and lim["minTileCol"] <= tile.x <= lim["maxTileCol"]
        item = links[("item", "image/png")]
        assert item["templated"] is True
        href = urlparse(item["href"])
        path = href.path.format(tileMatrix=tile.z, tileRow=tile.y, tileCol=tile.x)
        r = http.get(f"{path}?{href.query}")
        assert r.status_code == 200 and r.headers["content-type"] == "image/png"
        beyond = href.path.format(tileMatrix=tile.z, tileRow=lim["maxTileRow"] + 1, tileCol=tile.x)
        assert http.get(beyond).status_code == 404
        # the limits cover exactly the zoom range: one matrix deeper is not a tile of it
        deepest = doc["tileMatrixSetLimits"][-1]["tileMatrix"]
        if str(int(deepest) + 1) in [str(m.id) for m in tms_registry.get(tms_id).tileMatrices]:
            assert http.get(href.path.format(tileMatrix=int(deepest) + 1, tileRow=0, tileCol=0)).status_code == 404


def test_tilejson_for_maplibre(http):
    doc = http.get("/collections/dem/styles/terrain-rgb/map/tiles/WebMercatorQuad", params={"f": "tilejson"}).json()
    assert doc["tilejson"] == "3.0.0" and doc["encoding"] == "mapbox" and doc["tileSize"] == 256
    w, s, e, n = doc["bounds"]
    tile = morecantile.tms.get("WebMercatorQuad").tile((w + e) / 2, (s + n) / 2, doc["maxzoom"] - 2)
    url = urlparse(doc["tiles"][0])
    r = http.get(url.path.format(z=tile.z, x=tile.x, y=tile.y) + "?" + url.query)
    assert r.status_code == 200 and decode(r.content).shape == (4, 256, 256)
    assert http.get("/collections/dem/map/tiles/WebMercatorQuad", params={"f": "tilejson"}).json()["minzoom"] == \
        doc["minzoom"]


# ---------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("path, status", [
    ("/collections/nope/map/tiles/WebMercatorQuad/15/12249/27649", 404),  # unknown collection
    ("/collections/nope/map/tiles", 404),
    ("/collections/nope/styles/hillshade/map/tiles/WebMercatorQuad", 404),
    ("/collections/dem/map/tiles/NoSuchQuad/15/12249/27649", 404),  # unknown tile matrix set
    ("/collections/dem/map/tiles/BenxiGK123Quad/10/0/0", 404),  # a set without map tiles
    ("/collections/dem/map/tiles/WebMercatorQuad/25/0/0", 404),  # no such tile matrix
    ("/collections/dem/map/tiles/WebMercatorQuad/21/0/0", 404),  # beyond the raster's zoom range
    ("/collections/dem/map/tiles/WebMercatorQuad/3/0/0", 404),  # below it
    ("/collections/dem/map/tiles/WebMercatorQuad/15/0/0", 404),  # outside the limits
    ("/collections/dem/map/tiles/WebMercatorQuad/15/99999/0", 404),  # beyond the matrix
    ("/collections/dem/map/tiles/CGCS2000TiandituQuad/0/0/0", 404),  # Tianditu starts at level 1
    ("/collections/dem/styles/nope/map/tiles/WebMercatorQuad/15/12249/27649", 404),  # unknown style
    (f"/collections/{ORTHO}/styles/terrain-rgb/map/tiles/WebMercatorQuad", 404),  # not a DEM
    ("/collections/dem/map/tiles/WebMercatorQuad/15/x/27649", 400),  # non-integer
    ("/collections/dem/map/tiles/WebMercatorQuad/15.5/12249/27649", 400),
    ("/collections/dem/map/tiles/WebMercatorQuad/15/-1/27649", 400),
    ("/collections/dem/map/tiles/WebMercatorQuad/15/12249/27649?f=gif", 400),
    ("/collections/dem/styles/terrain-rgb/map/tiles/WebMercatorQuad/15/12249/27649?f=jpeg", 400),  # lossy heights
    ("/collections/dem/map/tiles/WebMercatorQuad/15/12249/27649?bbox=1,2,3,4", 400),
    ("/collections/dem/map/tiles/WebMercatorQuad?f=xml", 400),
    ("/collections/dem/map/tiles?f=html", 400),
])
def test_errors_are_ogc_exceptions(http, path, status):
    r = http.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert_valid(schema_validator(OPENAPI / "schemas/common-core/exception.yaml"), body)
    assert body["code"] == ("NotFound" if status == 404 else "InvalidParameterValue")


def test_openapi_documents_the_map_tile_routes(http):
    paths = http.get("/openapi", params={"f": "json"}).json()["paths"]
    tile = paths["/collections/dem/styles/terrain-rgb/map/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"]
    assert {"200", "204", "400", "404"} <= set(tile["get"]["responses"])
    assert "image/png" in tile["get"]["responses"]["200"]["content"]
    assert f"/collections/{ORTHO}/map/tiles/{{tileMatrixSetId}}" in paths
