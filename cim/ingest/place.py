"""Putting source coordinates into the storage CRS: by CRS transformation, or at an anchor.

Three cases, decided once per file:

- **transform**: the file has a CRS (or ``--crs`` gives one): its horizontal part is transformed to the
  storage CRS with :mod:`cim.crs` (area-of-use checked: a Dutch model does not silently land in Benxi).
  Heights are kept as the file gives them; the lineage records the file's vertical datum.
- **anchor** (``--anchor lon,lat,height,rotation``): a model in metres (an unreferenced IFC, or any
  projected file moved on purpose) is placed so that its origin lands at the CGCS2000 longitude/latitude
  and the 1985 height given, its +Y axis turned ``rotation`` degrees clockwise from grid north. The
  origin is the file's own (0, 0, 0) for local models, and the centre of its extent at its lowest height
  for projected ones. Offsets are applied in the storage grid: the Gauss-Krüger scale at Benxi differs
  from 1 by < 6e-5 (6 cm per km), well inside a building's survey tolerance.
- **site**: an IFC whose site carries latitude/longitude is anchored there (with its true north).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from pyproj import CRS, Transformer

from cim.crs.registry import CRS84_URI, default_registry, info_for
from cim.crs.transform import OutsideArea, transform
from cim.ingest.model import SourceFile


class PlacementError(ValueError):
    """The file cannot be placed (no CRS, outside the storage CRS's area, anchor on degrees...)."""


@dataclass(frozen=True)
class Anchor:
    """Where a model's origin goes: CGCS2000 lon/lat (degrees), 1985 height (m), rotation (degrees clockwise
    from grid north to the model's +Y axis)."""

    lon: float
    lat: float
    height: float = 0.0
    rotation: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Anchor:
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            raise PlacementError(f"--anchor: numbers lon,lat[,height[,rotation]], got {text!r}") from None
        if not 2 <= len(values) <= 4 or not all(math.isfinite(v) for v in values):
            raise PlacementError(f"--anchor: lon,lat[,height[,rotation]], got {text!r}")
        if not (-180 <= values[0] <= 180 and -90 <= values[1] <= 90):
            raise PlacementError(f"--anchor: longitude then latitude in degrees, got {text!r}")
        return cls(*values)


class Placement:
    """Moves coordinates of one source file into the storage CRS; call it on shapely geometries."""

    def __init__(self, source: SourceFile, storage_srid: int, crs: Any = None, anchor: Anchor | None = None,
                 origin: tuple[float, float, float] | None = None,
                 center: tuple[float, float, float] | None = None) -> None:
        """``origin``: the anchored origin of an earlier file of the same load (its files share one frame);
        ``center``: the lon/lat/height centre of an earlier file in degrees of the same load."""
        reg = default_registry()
        self.storage = reg.epsg(storage_srid)
        self.source_crs = crs if crs is not None else source.crs
        self.anchor = anchor
        self.origin: tuple[float, float, float] | None = None
        if anchor is None and source.local and source.metadata.get("site_lonlat"):
            lon, lat, height = (list(source.metadata["site_lonlat"]) + [0.0])[:3]
            self.anchor = Anchor(lon, lat, height or 0.0, float(source.metadata.get("true_north_deg") or 0.0))
            self.mode = "site"
        elif self.anchor is not None:
            self.mode = "anchor"
        elif self.source_crs is not None:
            self.mode = "transform"
        else:
            raise PlacementError("the file declares no CRS: give --crs, or --anchor to place it")
        self._local = None
        self.center: tuple[float, float, float] | None = None
        if self.mode in ("anchor", "site"):
            if self.source_crs is not None and self.source_crs.is_geographic:
                # lon/lat data elsewhere on Earth: first into metres around its own centre (azimuthal
                # equidistant: distances and bearings from the centre kept), then anchored like a model
                e = source.metadata.get("extent")
                if center is None and not e:
                    raise PlacementError("--anchor on a file in degrees needs its extent; this file has none")
                # the files of one load share the centre (and so stay where they are to each other)
                self.center = center or ((e[0] + e[3]) / 2, (e[1] + e[4]) / 2, e[2])
                lon0, lat0, _z0 = self.center
                local = CRS.from_proj4(f"+proj=aeqd +lat_0={lat0} +lon_0={lon0} +x_0=0 +y_0=0 +ellps=WGS84 +units=m")
                self._local = Transformer.from_crs(self.source_crs, local, always_xy=True)
                origin = (0.0, 0.0, self.center[2])
            if source.local:
                self.origin = (0.0, 0.0, 0.0)
            elif origin is not None:
                self.origin = origin
            elif source.metadata.get("extent"):
                e = source.metadata["extent"]
                self.origin = ((e[0] + e[3]) / 2, (e[1] + e[4]) / 2, e[2])
            try:
                x, y, _ = transform(reg.resolve(CRS84_URI), self.storage, np.array([self.anchor.lon]),
                                    np.array([self.anchor.lat]))
            except OutsideArea:
                where = "the model's site (IfcSite latitude/longitude)" if self.mode == "site" else "--anchor"
                raise PlacementError(
                    f"{where} at lon {self.anchor.lon:.6f}, lat {self.anchor.lat:.6f} lies outside the storage "
                    f"CRS's area ({self.storage.uri}); to place the model in the city, use "
                    "--anchor lon,lat,height,rotation") from None
            self.anchor_xy = (float(x[0]), float(y[0]))
            theta = math.radians(self.anchor.rotation)
            # offsets in metres: a projected CRS in US feet (a WNTR network in EPSG:3547) is scaled
            unit = 1.0
            if self.source_crs is not None and self.source_crs.axis_info and self._local is None:
                unit = self.source_crs.axis_info[0].unit_conversion_factor or 1.0
            self._cos, self._sin = math.cos(theta) * unit, math.sin(theta) * unit
        else:
            horizontal = self.source_crs.sub_crs_list[0] if self.source_crs.is_compound else self.source_crs
            self.source_info = info_for(horizontal)

    def describe(self) -> dict[str, Any]:
        """For the load report and the lineage."""
        out: dict[str, Any] = {"mode": self.mode, "storage_crs": self.storage.uri,
                               "source_crs": None if self.source_crs is None else self.source_crs.to_string()}
        if self.anchor is not None:
            out["anchor"] = {"lon": self.anchor.lon, "lat": self.anchor.lat, "height": self.anchor.height,
                             "rotation_deg": self.anchor.rotation}
            out["origin"] = self.origin
            if self.center is not None:
                out["local_projection"] = {"aeqd_center_lonlat": list(self.center[:2])}
        else:
            out["heights"] = "kept as in the file (its vertical datum, not converted to 1985)"
        return out

    def __call__(self, geom: Any) -> Any:
        if geom is None:
            return None
        return shapely.transform(geom, self._coords, include_z=bool(shapely.has_z(geom)))

    def _coords(self, xyz: np.ndarray) -> np.ndarray:
        if self.mode == "transform":
            z = xyz[:, 2] if xyz.shape[1] == 3 else None
            try:
                x, y, _ = transform(self.source_info, self.storage, xyz[:, 0], xyz[:, 1])
            except OutsideArea as exc:
                raise PlacementError(f"{exc}: the file lies outside the storage CRS's area; "
                                     "to place it in the city anyway, use --anchor lon,lat,height,rotation") from None
            out = np.column_stack([x, y] if z is None else [x, y, z])
            return out
        if self._local is not None:
            x, y = self._local.transform(xyz[:, 0], xyz[:, 1])
            xyz = np.column_stack([x, y, *([xyz[:, 2]] if xyz.shape[1] == 3 else [])])
        if self.origin is None:  # a projected file without a known extent: its first coordinate
            self.origin = (float(xyz[0, 0]), float(xyz[0, 1]), float(xyz[0, 2]) if xyz.shape[1] == 3 else 0.0)
        dx, dy = xyz[:, 0] - self.origin[0], xyz[:, 1] - self.origin[1]
        out = np.empty_like(xyz)
        out[:, 0] = self.anchor_xy[0] + dx * self._cos + dy * self._sin
        out[:, 1] = self.anchor_xy[1] - dx * self._sin + dy * self._cos
        if xyz.shape[1] == 3:
            out[:, 2] = xyz[:, 2] - self.origin[2] + self.anchor.height
        return out
