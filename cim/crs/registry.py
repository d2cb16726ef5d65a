"""The coordinate reference systems the service knows, by URI, with their axis order and area of use.

Every part of the service resolves CRS identifiers here: OGC URIs (``http://www.opengis.net/def/crs/EPSG/0/
4490``, ``.../OGC/1.3/CRS84``), compound URIs (``http://www.opengis.net/def/crs-compound?1=…&2=…``), URNs
(``urn:ogc:def:crs:EPSG::4490``), CURIEs (``[EPSG:4490]``) and ``EPSG:4490`` / ``EPSG:4550+5737``.

GCJ-02 and BD-09 are first-class CRSs in our own namespace (``urn:benxi-cim:crs:GCJ-02``, ``…:BD-09``):
WGS 84 longitude/latitude plus the Chinese web-map offsets of :mod:`cim.crs.gcj`. The city's local
systems come from config.yml (``cim.local_crs``) as WKT2 or PROJ strings, under ``urn:benxi-cim:crs:local:ID``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from pyproj import CRS
from pyproj.exceptions import CRSError

OGC_DEF = "http://www.opengis.net/def/crs"
CRS84_URI = f"{OGC_DEF}/OGC/1.3/CRS84"
CRS84H_URI = f"{OGC_DEF}/OGC/0/CRS84h"
NAMESPACE = "urn:benxi-cim:crs:"
GCJ02_URI = f"{NAMESPACE}GCJ-02"
BD09_URI = f"{NAMESPACE}BD-09"

# The defaults of issue #4; config.yml's ``cim.crs`` may list others (any EPSG code PROJ knows).
DEFAULT_CRS: tuple[str, ...] = (
    "OGC:CRS84", "OGC:CRS84h", "EPSG:4326", "EPSG:4490", "EPSG:4480", "EPSG:4479", "EPSG:4550", "EPSG:4551",
    "EPSG:4529", "EPSG:3857", "EPSG:4978", "EPSG:4550+5737", GCJ02_URI, BD09_URI,
)

Offset = Literal["gcj02", "bd09"]


class UnknownCRS(ValueError):
    """An identifier that is not one of the supported CRSs."""

    def __init__(self, identifier: str, supported: list[str]) -> None:
        super().__init__(f"unsupported CRS {identifier!r}; supported: {', '.join(supported)}")
        self.identifier = identifier
        self.supported = supported


@dataclass(frozen=True)
class CRSInfo:
    """One supported CRS.

    ``pyproj_crs`` is what pyproj transforms with (for GCJ-02/BD-09: WGS 84 lon/lat, before the offset);
    ``yx`` says whether the CRS's own first axis is northing/latitude (EPSG:4490, 4326, 4550): the API
    writes and reads coordinates in that order, everything inside the service uses x/y.
    """

    uri: str
    name: str
    pyproj_crs: CRS
    yx: bool
    dimension: int
    geographic: bool
    offset: Offset | None = None
    area: tuple[float, float, float, float] | None = None  # lon/lat bounds of its area of use
    # For a CRS with 1985 National Height Datum heights: the height-anomaly grid (None: not configured)
    geoid_grid: str | None = None
    # Its EPSG code when it has one (found once here: pyproj's to_epsg() can take 10 ms)
    epsg: int | None = None

    @property
    def normal_heights(self) -> bool:
        """Heights in the 1985 National Height Datum (EPSG:5737), which need a geoid grid to reach the ellipsoid."""
        crs = self.pyproj_crs
        return crs.is_compound and any(sub.to_epsg() == 5737 for sub in crs.sub_crs_list[1:])

    @property
    def ellipsoidal_heights(self) -> bool:
        """3D with heights on (or coordinates about) the ellipsoid: geographic 3D or geocentric."""
        crs = self.pyproj_crs
        return crs.is_geocentric or (crs.is_geographic and len(crs.axis_info) == 3)

    @property
    def key(self) -> str:
        """The identifier transformers are cached by."""
        return self.pyproj_crs.to_wkt() if self.offset is None else f"{self.offset}:{self.pyproj_crs.to_wkt()}"


def _epsg_uri(code: str) -> str:
    return f"{OGC_DEF}/EPSG/0/{code}"


def canonical_uri(identifier: str) -> str:
    """The OGC URI form of an identifier (unchanged when it is already canonical or ours)."""
    text = identifier.strip()
    if text.startswith("[") and text.endswith("]"):  # safe CURIE
        text = text[1:-1]
    if text.startswith(NAMESPACE):
        return text
    if text.startswith(f"{OGC_DEF}-compound"):
        parts = [canonical_uri(v) for _, v in sorted(parse_qsl(urlsplit(text).query))]
        return f"{OGC_DEF}-compound?" + "&".join(f"{i}={p}" for i, p in enumerate(parts, 1))
    m = re.fullmatch(r"(?:https?://www\.opengis\.net/def/crs/)?(OGC|EPSG)(?:/[\d.]+/|:(?:[\d.]*:)?)([\w.+-]+)",
                     text, flags=re.IGNORECASE)
    if m is None:
        m = re.fullmatch(r"urn:ogc:def:crs:(OGC|EPSG):[\d.]*:([\w.+-]+)", text, flags=re.IGNORECASE)
    if m is None:
        return text
    authority, code = m.group(1).upper(), m.group(2)
    if authority == "OGC":
        if code.upper() == "CRS84":
            return CRS84_URI
        if code.upper() == "CRS84H":
            return CRS84H_URI
        return f"{OGC_DEF}/OGC/0/{code}"
    if "+" in code:
        horizontal, vertical = code.split("+", 1)
        return f"{OGC_DEF}-compound?1={_epsg_uri(horizontal)}&2={_epsg_uri(vertical)}"
    return _epsg_uri(code)


def _info(uri: str, definition: str | None = None, name: str | None = None) -> CRSInfo:
    if uri in (GCJ02_URI, BD09_URI):
        base = CRS.from_user_input("OGC:CRS84")
        label = "GCJ-02 (火星坐标, AMap/Tencent)" if uri == GCJ02_URI else "BD-09 (Baidu bd09ll)"
        from cim.crs.gcj import CHINA_BBOX

        return CRSInfo(uri, label, base, yx=False, dimension=2, geographic=True,
                       offset="gcj02" if uri == GCJ02_URI else "bd09", area=CHINA_BBOX)
    if definition is not None:
        crs = CRS.from_user_input(definition)
    elif uri == CRS84_URI:
        crs = CRS.from_user_input("OGC:CRS84")
    elif uri == CRS84H_URI:
        crs = CRS.from_user_input("OGC:CRS84h")
    elif uri.startswith(f"{OGC_DEF}-compound?"):
        codes = [p.rsplit("/", 1)[-1] for _, p in sorted(parse_qsl(urlsplit(uri).query))]
        crs = CRS.from_user_input("EPSG:" + "+".join(codes))
    elif uri.startswith(f"{OGC_DEF}/EPSG/0/"):
        crs = CRS.from_epsg(int(uri.rsplit("/", 1)[-1]))
    else:
        raise CRSError(f"not a CRS URI: {uri}")
    first = crs.axis_info[0].direction if crs.axis_info else "east"
    area = crs.area_of_use.bounds if crs.area_of_use else None
    if area is None and crs.is_compound:
        sub = crs.sub_crs_list[0]
        area = sub.area_of_use.bounds if sub.area_of_use else None
    epsg = int(uri.rsplit("/", 1)[-1]) if uri.startswith(f"{OGC_DEF}/EPSG/0/") else None
    return CRSInfo(uri, name or crs.name, crs, yx=first in ("north", "south"), dimension=len(crs.axis_info),
                   geographic=crs.is_geographic, area=area, epsg=epsg)


def info_for(crs: CRS) -> CRSInfo:
    """A CRSInfo for any pyproj CRS (a source file's), whether or not the service publishes it."""
    code = crs.to_epsg(min_confidence=90)
    if code is not None:
        return _info(f"{OGC_DEF}/EPSG/0/{code}")
    wkt = crs.to_wkt()
    digest = hashlib.blake2b(wkt.encode(), digest_size=8).hexdigest()
    return _info(f"urn:benxi-cim:crs:wkt:{digest}", definition=wkt, name=crs.name)


class CRSRegistry:
    """The supported CRSs: the defaults (or config's list) plus the configured local systems."""

    def __init__(self, identifiers: tuple[str, ...] = DEFAULT_CRS,
                 local: tuple[tuple[str, str, str], ...] = (), geoid_grid: str | None = None) -> None:
        self._by_uri: dict[str, CRSInfo] = {}
        if geoid_grid is not None and not Path(geoid_grid).is_file():
            raise ValueError(f"geoid grid {geoid_grid!r} (config cim.geoid_grid) does not exist")
        for identifier in identifiers:
            uri = canonical_uri(identifier)
            try:
                info = _info(uri)
            except CRSError as exc:
                raise ValueError(f"configured CRS {identifier!r} is not valid: {exc}") from None
            if info.normal_heights and geoid_grid is not None:
                info = replace(info, geoid_grid=str(Path(geoid_grid).resolve()))
            self._by_uri[uri] = info
        for local_id, name, definition in local:
            uri = f"{NAMESPACE}local:{local_id}"
            try:
                self._by_uri[uri] = _info(uri, definition, name)
            except CRSError as exc:
                raise ValueError(f"local CRS {local_id!r} in config.yml is not valid: {exc}") from None

    @property
    def uris(self) -> list[str]:
        return list(self._by_uri)

    def resolve(self, identifier: str) -> CRSInfo:
        """The CRS an identifier names; :class:`UnknownCRS` (listing the supported ones) otherwise."""
        uri = canonical_uri(identifier)
        if uri not in self._by_uri and identifier.strip() in self._by_uri:
            uri = identifier.strip()
        try:
            return self._by_uri[uri]
        except KeyError:
            raise UnknownCRS(identifier, self.uris) from None

    def epsg(self, code: int) -> CRSInfo:
        return self.resolve(f"EPSG:{code}")


@lru_cache(maxsize=1)
def default_registry() -> CRSRegistry:
    """The registry configured in config.yml (built once per process)."""
    from cim.settings import get_settings

    s = get_settings()
    return CRSRegistry(tuple(s.crs or DEFAULT_CRS), tuple((c.id, c.name, c.definition) for c in s.local_crs),
                       None if s.geoid_grid is None else str(s.geoid_grid))
