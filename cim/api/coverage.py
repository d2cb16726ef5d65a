"""The coverage provider of our rasters: pygeoapi's rasterio provider with its query parameters checked.

pygeoapi 0.24 passes a 6-number (3D) bbox through to the rasterio provider, which unpacks four values and
answered 500, as it did for an unknown bbox-crs, a bbox off the raster and a band named twice in ``properties``
(all found by tests/test_fuzz.py); our rasters are 2D, so such a bbox is a client error.
"""

from __future__ import annotations

from http import HTTPStatus

from pygeoapi.api import validate_bbox
from pyproj.exceptions import CRSError
from pygeoapi.provider.base import ProviderInvalidQueryError, ProviderQueryError
from pygeoapi.provider.rasterio_ import RasterioProvider
from starlette.datastructures import QueryParams
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send


class CIMRasterioProvider(RasterioProvider):
    def query(self, properties=None, subsets=None, bbox=None, bbox_crs=4326, datetime_=None, format_="json",
              **kwargs):
        if bbox and len(bbox) != 4:
            raise ProviderInvalidQueryError(user_msg="bbox: four numbers (minx,miny,maxx,maxy); the rasters are 2D")
        if properties and len(set(properties)) != len(properties):  # rasterio then failed to write them: a 500
            raise ProviderInvalidQueryError(user_msg="properties: each band at most once")
        try:
            return super().query(properties=properties or [], subsets=subsets or {}, bbox=bbox or [], bbox_crs=bbox_crs,
                                 datetime_=datetime_, format_=format_, **kwargs)
        except CRSError as err:
            raise ProviderInvalidQueryError(user_msg=f"bbox-crs: not a known CRS ({bbox_crs})") from err
        except ProviderQueryError as err:  # rasterio's mask: "Input shapes do not overlap raster", a 500 there
            if bbox:
                raise ProviderInvalidQueryError(user_msg="bbox: does not overlap the raster") from err
            raise


class CoverageBBox:
    """A coverage request's invalid bbox is a 400: pygeoapi 0.24's coverages API answers it with a 500
    (found by tests/test_fuzz.py), and the check sits before the provider is called."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].endswith("/coverage"):
            bbox = QueryParams(scope.get("query_string", b"")).get("bbox")
            if bbox is not None:
                try:
                    validate_bbox(bbox)
                except ValueError as err:
                    response = JSONResponse({"code": "InvalidParameterValue", "description": f"bbox: {err}"},
                                            status_code=HTTPStatus.BAD_REQUEST)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
