"""Coordinate transformation between any two supported CRSs, on numpy arrays.

Inside the service coordinates are always x/y (longitude/latitude, easting/northing); a CRS's own axis
order is applied only at the API edge with :func:`swap_axes`. Transformers are built once per pair and
cached. GCJ-02/BD-09 are handled by going through WGS 84 longitude/latitude (the offsets are defined on
it; PROJ treats WGS 84 and CGCS2000 as the same, a ~0.7 m gap at Benxi, ../shared/CRS-NOTES.md).
Points outside the area of use of either CRS raise :class:`OutsideArea`; so does any result that is not
finite. Nothing returns ``inf`` or ``NaN``.
"""

from __future__ import annotations


import numpy as np
from pyproj import CRS, Transformer

from cim.crs import built_once as _built_once, gcj, thread_cheap
from cim.crs.registry import CRS84_URI, CRSInfo

AREA_MARGIN_DEG = 0.05  # GK zones and national extents are used a little beyond their official edges


class OutsideArea(ValueError):
    """Coordinates outside a CRS's area of use (or not transformable)."""


@_built_once
def _transformer(src_wkt: str, dst_wkt: str) -> Transformer:
    return thread_cheap(Transformer.from_crs(CRS.from_wkt(src_wkt), CRS.from_wkt(dst_wkt), always_xy=True))


@_built_once
def _to_lonlat(src_wkt: str) -> Transformer:
    return thread_cheap(Transformer.from_crs(CRS.from_wkt(src_wkt), CRS.from_user_input("OGC:CRS84"), always_xy=True))


def pyproj_transformer(src: CRSInfo, dst: CRSInfo) -> Transformer:
    """The cached pyproj transformer between the two CRSs' pyproj parts (x/y order)."""
    return _transformer(src.pyproj_crs.to_wkt(), dst.pyproj_crs.to_wkt())


def swap_axes(info: CRSInfo, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Between x/y order and the CRS's own order (a swap for lat/lon and north/east CRSs; symmetric)."""
    return (b, a) if info.yx else (a, b)


def _lonlat(info: CRSInfo, x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if info.offset is not None or info.geographic:
        return x, y  # already longitude/latitude (x/y order inside the service)
    t = _to_lonlat(info.pyproj_crs.to_wkt())
    if info.pyproj_crs.is_geocentric:
        if z is None:
            raise OutsideArea(f"{info.uri} is geocentric: give X, Y and Z")
        lon, lat, _ = t.transform(x, y, z)
        return lon, lat
    return t.transform(x, y)


def _check_area(info: CRSInfo, lon: np.ndarray, lat: np.ndarray, role: str) -> None:
    lon, lat = np.atleast_1d(lon), np.atleast_1d(lat)
    if info.area is None or lon.size == 0:
        return
    w, s, e, n = info.area
    outside = ~_inside(info.area, lon, lat)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise OutsideArea(f"{int(outside.sum())} coordinate(s) outside the area of use of the {role} CRS "
                          f"{info.uri} (lon {w}..{e}, lat {s}..{n}), e.g. lon {lon[i]:.6f}, lat {lat[i]:.6f}")


def _inside(area: tuple[float, float, float, float] | None, lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    if area is None:
        return np.ones(np.shape(lon), dtype=bool)
    w, s, e, n = area
    m = AREA_MARGIN_DEG
    return (lon >= w - m) & (lon <= e + m) & (lat >= s - m) & (lat <= n + m)


def _check_areas(src: CRSInfo, dst: CRSInfo, x: np.ndarray, y: np.ndarray, z: np.ndarray | None) -> None:
    """Raise OutsideArea unless every point lies in both CRSs' areas of use.

    Fast path for large arrays: the densified outline of the points' bounding box, in lon/lat, inside both
    areas means every point is (a point cannot leave the box's image). Otherwise every point is checked.
    """
    if x.size > 256 and src.offset is None and not src.pyproj_crs.is_geocentric:
        bx = np.concatenate([np.linspace(x.min(), x.max(), 21), np.full(21, x.max()),
                             np.linspace(x.max(), x.min(), 21), np.full(21, x.min())])
        by = np.concatenate([np.full(21, y.min()), np.linspace(y.min(), y.max(), 21), np.full(21, y.max()),
                             np.linspace(y.max(), y.min(), 21)])
        lon, lat = _lonlat(src, bx, by, None)
        if (np.isfinite(lon).all() and np.isfinite(lat).all() and _inside(src.area, lon, lat).all()
                and _inside(dst.area, lon, lat).all()):
            return
    lon, lat = _lonlat(src, x, y, z)
    _check_area(src, lon, lat, "source")
    if src.offset == "gcj02":
        lon, lat = gcj.gcj02_to_wgs84(lon, lat)
    elif src.offset == "bd09":
        lon, lat = gcj.bd09_to_wgs84(lon, lat)
    _check_area(dst, lon, lat, "target")


NO_GEOID_WARNING = ("no geoid grid is configured (config cim.geoid_grid): heights between the 1985 National "
                    "Height Datum and ellipsoidal heights were passed through unchanged, about 12.7 m wrong at Benxi")


def needs_geoid(src: CRSInfo, dst: CRSInfo) -> bool:
    """True when heights must go between normal (EPSG:5737) and ellipsoidal heights."""
    return (src.normal_heights and dst.ellipsoidal_heights) or (src.ellipsoidal_heights and dst.normal_heights)


def height_warning(src: CRSInfo, dst: CRSInfo) -> str | None:
    """What an output must say about its heights (None when they are right)."""
    if needs_geoid(src, dst) and not (src.geoid_grid or dst.geoid_grid):
        return NO_GEOID_WARNING
    return None


@_built_once
def _vgridshift(grid: str) -> Transformer:
    """lon/lat/H → lon/lat/h with h = H + N(lon, lat) from the grid (inverse: h → H)."""
    return Transformer.from_pipeline(
        "+proj=pipeline +step +proj=unitconvert +xy_in=deg +xy_out=rad "
        f"+step +proj=vgridshift +grids={grid} +multiplier=1 +step +proj=unitconvert +xy_in=rad +xy_out=deg")


_CGCS2000_2D = CRS.from_epsg(4490)
_CGCS2000_3D = CRS.from_epsg(4480)


def _via_geoid(src: CRSInfo, dst: CRSInfo, x: np.ndarray, y: np.ndarray, z: np.ndarray):
    """Normal ↔ ellipsoidal heights through the configured grid, horizontally through CGCS2000."""
    grid = src.geoid_grid or dst.geoid_grid
    shift = _vgridshift(grid)
    if src.normal_heights:
        horizontal = src.pyproj_crs.sub_crs_list[0]
        lon, lat = _transformer(horizontal.to_wkt(), _CGCS2000_2D.to_wkt()).transform(x, y)
        _, _, h = shift.transform(lon, lat, z)
        return _transformer(_CGCS2000_3D.to_wkt(), dst.pyproj_crs.to_wkt()).transform(lon, lat, h)
    lon, lat, h = _transformer(src.pyproj_crs.to_wkt(), _CGCS2000_3D.to_wkt()).transform(x, y, z)
    _, _, normal = shift.transform(lon, lat, h, direction="INVERSE")
    horizontal = dst.pyproj_crs.sub_crs_list[0]
    ex, ny = _transformer(_CGCS2000_2D.to_wkt(), horizontal.to_wkt()).transform(lon, lat)
    return ex, ny, normal


def transform(src: CRSInfo, dst: CRSInfo, x, y, z=None, *, check_area: bool = True):
    """Transform coordinates (x/y order) from ``src`` to ``dst``; returns (x, y, z) arrays (z None if not given)."""
    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    z = None if z is None else np.asarray(z, dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all() and (z is None or np.isfinite(z).all())):
        raise OutsideArea("coordinates must be finite numbers")
    if src.uri == dst.uri:
        return x, y, z
    if check_area and (src.area is not None or dst.area is not None):
        _check_areas(src, dst, x, y, z)
    if src.offset == "gcj02":
        x, y = gcj.gcj02_to_wgs84(x, y)
    elif src.offset == "bd09":
        x, y = gcj.bd09_to_wgs84(x, y)
    if z is not None and needs_geoid(src, dst) and (src.geoid_grid or dst.geoid_grid):
        x, y, z = _via_geoid(src, dst, x, y, z)
    elif src.pyproj_crs != dst.pyproj_crs:
        t = pyproj_transformer(src, dst)
        if z is not None:
            x, y, z = t.transform(x, y, z)
        else:
            x, y = t.transform(x, y)
    if dst.offset == "gcj02":
        x, y = gcj.wgs84_to_gcj02(x, y)
    elif dst.offset == "bd09":
        x, y = gcj.wgs84_to_bd09(x, y)
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if not (np.isfinite(x).all() and np.isfinite(y).all() and (z is None or np.isfinite(np.asarray(z)).all())):
        raise OutsideArea(f"coordinates cannot be transformed from {src.uri} to {dst.uri}")
    return x, y, (None if z is None else np.asarray(z, dtype=float))


def transform_bbox(src: CRSInfo, dst: CRSInfo, bbox: tuple[float, float, float, float], densify: int = 21,
                   ) -> tuple[float, float, float, float]:
    """A bbox (x/y order) transformed with densified edges, not just its two corners."""
    minx, miny, maxx, maxy = bbox
    t = np.linspace(0.0, 1.0, densify)
    xs = np.concatenate([minx + (maxx - minx) * t, np.full(densify, maxx), maxx - (maxx - minx) * t,
                         np.full(densify, minx)])
    ys = np.concatenate([np.full(densify, miny), miny + (maxy - miny) * t, np.full(densify, maxy),
                         maxy - (maxy - miny) * t])
    x, y, _ = transform(src, dst, xs, ys)
    return float(x.min()), float(y.min()), float(x.max()), float(y.max())


def bbox_polygon(bbox: tuple[float, float, float, float], src: CRSInfo, dst: CRSInfo, segments: int = 32):
    """A bbox given in ``src`` (x/y order) as a polygon in ``dst``, its edges densified first.

    Filters should intersect this polygon, not the box of two transformed corners (which misses the
    curvature: 570 m on a 60 × 70 km box, ../shared/CRS-NOTES.md).
    """
    import shapely

    minx, miny, maxx, maxy = bbox
    if minx == maxx and miny == maxy:  # a box of no extent is the point it is (GEOS cannot densify it)
        box = shapely.Point(minx, miny)
    elif minx == maxx or miny == maxy:  # ... or the line
        box = shapely.LineString([(minx, miny), (maxx, maxy)])
    else:
        box = shapely.box(minx, miny, maxx, maxy)
    if src.uri == dst.uri:
        return box
    if not isinstance(box, shapely.Point):
        box = shapely.segmentize(box, max(maxx - minx, maxy - miny) / segments)
    xy = shapely.get_coordinates(box)
    x, y, _ = transform(src, dst, xy[:, 0], xy[:, 1])
    return shapely.set_coordinates(box, np.column_stack([x, y]))


def clip_lonlat_bbox(bbox: tuple[float, float, float, float],
                     area: tuple[float, float, float, float] | None) -> list[tuple[float, float, float, float]]:
    """A CRS84 query bbox as boxes inside ``area`` (where the data can be); [] when they do not meet.

    ``minx > maxx`` crosses the antimeridian (OGC API – Features): two boxes. A query filter outside a
    CRS's area of use matches nothing; it is not an error.
    """
    minx, miny, maxx, maxy = bbox
    parts = [(minx, miny, maxx, maxy)] if minx <= maxx else [(minx, miny, 180.0, maxy), (-180.0, miny, maxx, maxy)]
    if area is None:
        return parts
    w, s, e, n = area
    out = []
    for a, b, c, d in parts:
        box = (max(a, w), max(b, s), min(c, e), min(d, n))
        if box[0] <= box[2] and box[1] <= box[3]:
            out.append(box)
    return out


def query_area(bbox: tuple[float, float, float, float], src: CRSInfo, dst: CRSInfo):
    """The part of ``dst`` a query bbox (x/y order in ``src``) selects: the one place bbox filters are made.

    A CRS84 bbox is clipped to ``dst``'s area of use (where the data is) and may cross the antimeridian; an
    empty polygon means it selects nothing. Other CRSs are transformed as given (``OutsideArea`` if they
    leave either area).
    """
    import shapely

    if src.uri != CRS84_URI:
        return bbox_polygon(bbox, src, dst)
    polygons = [bbox_polygon(b, src, dst) for b in clip_lonlat_bbox(bbox, dst.area)]
    return shapely.union_all(polygons) if polygons else shapely.Polygon()
