"""The Benxi demo city: a deterministic district around 平山区 in CGCS2000, streamed into the CIM database.

``generate`` writes, in one transaction (all or nothing): the terrain (a DEM as a Cloud-Optimized GeoTIFF
and its coarse TIN), street-aligned buildings of varied shapes with CIM2 massing and CIM3 roofs, a few
buildings with full interiors (CIM5–6), roads, bridges over the Taizi River, and the pipe network of seven
kinds with its nodes. Memory stays bounded at any size: blocks are planned one at a time and objects are
flushed in batches.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from sqlalchemy import Engine, delete, insert, select, update

from cim.db.schema import tables_for
from cim.db.versions import bump, raster_key
from cim.db.writer import ObjectWriter
from cim.demo.interiors import interior_parts
from cim.demo.layout import Frame, StreetGrid, terrain_height
from cim.demo.networks import ADMIN_CODE, Networks, district_of
from cim.demo.plan import USAGE_LABEL, PlannedBuilding, block_kind, plan_block
from cim.demo.terrain import coarse_tin, write_dem
from cim.geom3d import extrude, gable

DATASET = "benxi-demo"
Progress = Callable[[str, int], None]


@dataclass
class DemoResult:
    counts: dict[str, int]
    dataset_id: int
    import_run_id: int
    dem_path: Path
    bounds: tuple[float, float, float, float]


def existing_demo(engine: Engine) -> dict[str, Any] | None:
    """Parameters of the demo already in the database (None if there is none)."""
    t = tables_for(engine)
    with engine.connect() as conn:
        row = conn.execute(
            select(t.import_run.c.params, t.import_run.c.counts)
            .join(t.dataset, t.dataset.c.id == t.import_run.c.dataset_id)
            .where(t.dataset.c.name == DATASET, t.import_run.c.finished_at.is_not(None))
            .order_by(t.import_run.c.id.desc())
        ).first()
    return None if row is None else {**(row.params or {}), "counts": row.counts}


def _structure(floors: int) -> str:
    return "砖混" if floors <= 6 else ("框架" if floors <= 11 else "剪力墙")


def generate(engine: Engine, *, size: int, seed: int, center: tuple[float, float], data_dir: Path,
             vertical_srid: int = 5737, progress: Progress | None = None, interiors: int | None = None) -> DemoResult:
    """Generate the demo city with ``size`` buildings, replacing an earlier demo in the same database."""
    if size < 1:
        raise ValueError("--size must be at least 1")
    progress = progress or (lambda _kind, _n: None)
    t = tables_for(engine)
    srid = t.city_object.c.geom.type.srid
    frame = Frame.at(center[0], center[1], srid)
    grid = StreetGrid.for_size(size, seed)

    # Pass 1: which blocks are built (nearest the centre first); only their order is kept.
    order = grid.blocks_by_distance()
    kinds: list[str] = []
    total = 0
    for rank, (bi, bj) in enumerate(order.tolist()):
        if total >= size:
            break
        kind = _block_kind(grid, bi, bj, rank, seed)
        total += len(plan_block(grid.block_bounds(bi, bj), kind, seed, bi, bj))
        kinds.append(kind)
    if total < size:
        raise ValueError(f"the grid holds only {total} buildings; this should not happen (size {size})")
    chosen = order[: len(kinds)]
    used = np.zeros((grid.n_cols, grid.n_rows), dtype=bool)
    used[chosen[:, 0], chosen[:, 1]] = True

    # The DEM covers the built blocks with a margin; written beside the final file, moved in on commit.
    corners_u = np.concatenate([grid.u_lines[chosen[:, 0]], grid.u_lines[chosen[:, 0] + 1]])
    corners_v = np.concatenate([grid.v_lines[chosen[:, 1]], grid.v_lines[chosen[:, 1] + 1]])
    cu, cv = np.meshgrid([corners_u.min() - 600, corners_u.max() + 600], [corners_v.min() - 600, corners_v.max() + 600])
    e, n = frame.to_world(cu.ravel(), cv.ravel())
    bounds = (float(np.floor(e.min())), float(np.floor(n.min())), float(np.ceil(e.max())), float(np.ceil(n.max())))
    data_dir.mkdir(parents=True, exist_ok=True)
    dem_path = data_dir / "dem.cog.tif"
    fd, tmp_name = tempfile.mkstemp(prefix=".dem-", suffix=".tif", dir=data_dir)
    os.close(fd)
    tmp_dem = Path(tmp_name)
    try:
        progress("terrain", 0)
        dem = write_dem(tmp_dem, frame, bounds, srid, vertical_srid)
        with engine.begin() as conn:
            conn.execute(delete(t.dataset).where(t.dataset.c.name == DATASET))
            now = datetime.now(UTC)
            dataset_id = conn.execute(insert(t.dataset).values(
                name=DATASET, title="本溪市平山区 demo city (generated)", created_at=now,
                source=f"cim demo --size {size} --seed {seed}", licence="CC0-1.0 (generated data)",
                source_crs=f"EPSG:{srid}+{vertical_srid}",
            ).returning(t.dataset.c.id)).scalar_one()
            run_id = conn.execute(insert(t.import_run).values(
                dataset_id=dataset_id, tool="cim demo", started_at=now,
                params={"size": size, "seed": seed, "center": list(center)},
            ).returning(t.import_run.c.id)).scalar_one()
            w = ObjectWriter(conn, t, dataset_id, run_id)

            terrain_fp = shapely.box(dem["minx"], dem["miny"], dem["maxx"], dem["maxy"])
            tin = coarse_tin(tmp_dem)
            zs = shapely.get_coordinates(tin, include_z=True)[:, 2]
            terrain_id = w.add({
                "uid": "BX-TERRAIN-DEM", "object_class": "TINRelief", "layer": "terrain", "cim_level": 1,
                "name": "太子河谷地形 (DEM)", "attributes": {"raster": dem_path.name, "resolution_m": dem["resolution"],
                                                        "高程基准": "1985国家高程基准", "vertical_crs": f"EPSG:{vertical_srid}"},
                "geom": terrain_fp, "min_z": round(float(zs.min()), 3), "max_z": round(float(zs.max()), 3),
                "valid_from": datetime(2020, 1, 1, tzinfo=UTC),  # the survey the DEM stands for
            }, [(1, tin, ["TINRelief"] * len(tin.geoms))])
            w.flush()
            conn.execute(insert(t.raster_layer).values(
                name="dem", kind="dem", path=dem_path.name, srid=srid, vertical_srid=vertical_srid,
                resolution=dem["resolution"], minx=dem["minx"], miny=dem["miny"], maxx=dem["maxx"],
                maxy=dem["maxy"], object_id=terrain_id, dataset_id=dataset_id))
            bump(conn, t, [raster_key("dem")])

            n_interiors = interiors if interiors is not None else max(3, size // 2000)
            written = 0
            for (bi, bj), kind in zip(chosen.tolist(), kinds):
                plans = plan_block(grid.block_bounds(bi, bj), kind, seed, bi, bj)
                rng = np.random.default_rng([seed, 13, bi, bj])
                for k, b in enumerate(plans):
                    if written >= size:
                        break
                    written += 1
                    with_interior = (n_interiors > 0 and b.shape == "rect" and b.usage in ("office", "education")
                                     and b.floors <= 8)
                    n_interiors -= with_interior
                    _add_building(w, frame, grid, b, written, bi, bj, k, rng, with_interior)
                    if written % 1000 == 0:
                        progress("buildings", written)
            progress("buildings", written)

            count = 0
            for obj, geoms in Networks(grid, frame, used, seed).objects():
                w.add(obj, geoms)
                count += 1
                if count % 5000 == 0:
                    progress("infrastructure", count)
            counts = dict(w.finish())
            conn.execute(update(t.import_run).where(t.import_run.c.id == run_id).values(
                finished_at=datetime.now(UTC), counts=counts))
            # inside the transaction: a failure here rolls the database back too
            os.replace(tmp_dem, dem_path)
        return DemoResult(counts, dataset_id, run_id, dem_path, bounds)
    finally:
        tmp_dem.unlink(missing_ok=True)


def _block_kind(grid: StreetGrid, bi: int, bj: int, rank: int, seed: int) -> str:
    u0, v0, u1, v1 = grid.block_bounds(bi, bj)
    return block_kind(bi, bj, rank, float(np.hypot((u0 + u1) / 2, (v0 + v1) / 2)), seed)


_YEARS = {"residential": (1975, 2023), "commercial": (1992, 2024), "office": (1985, 2022),
          "industrial": (1958, 2008), "education": (1965, 2020), "medical": (1970, 2019), "public": (1970, 2018)}


def _add_building(w: ObjectWriter, frame: Frame, grid: StreetGrid, b: PlannedBuilding, number: int, bi: int, bj: int,
                  k: int, rng: np.random.Generator, with_interior: bool) -> None:
    e, n = frame.to_world(b.ring[:, 0], b.ring[:, 1])
    holes = [np.column_stack(frame.to_world(h[:, 0], h[:, 1])) for h in b.holes]
    footprint = shapely.Polygon(np.column_stack([e, n]), holes)
    ground = round(float(terrain_height(*b.centre)), 3)
    height = b.height
    lo, hi = _YEARS[b.usage]
    year = int(rng.integers(lo, hi + 1))
    district = district_of(*b.centre)
    street = grid.name("v", bj)
    valid_to = None
    if b.usage == "residential" and year < 1990 and rng.random() < 0.03:  # 棚户区改造: demolished
        valid_to = datetime(int(rng.integers(2012, 2020)), 6, 30, tzinfo=UTC)
    attrs: dict[str, Any] = {"用途": USAGE_LABEL[b.usage], "shape": b.shape, "roof": b.roof,
                             "storey_height": b.storey_height, "结构": _structure(b.floors),
                             "行政区划代码": ADMIN_CODE[district], "ground_elevation": ground}
    if valid_to is not None:
        attrs["status"] = "demolished (棚户区改造)"
    geoms = [(2, *extrude(footprint, ground, ground + height))]
    level = 2
    if b.roof == "gable":
        p = np.column_stack([e, n])[:4]
        geoms.append((3, *gable(p, ground, ground + b.floors * b.storey_height, ground + height)))
        level = 3
    if with_interior:
        level = 6
    bid = w.add({
        "uid": f"BX-BLD-{number:07d}", "object_class": "Building", "layer": "buildings", "cim_level": level,
        "name": b.name, "usage": b.usage, "floors": b.floors, "height": height, "year_built": year,
        "district": district, "address": f"辽宁省本溪市{district}{street}{2 * bi + 1}号{k + 1}栋",
        "attributes": attrs, "geom": footprint, "min_z": ground, "max_z": round(ground + height, 3),
        "valid_from": datetime(year, 1, 1, tzinfo=UTC), "valid_to": valid_to,
    }, geoms)
    if not with_interior:
        return
    ids: dict[str | None, int] = {None: bid}
    prefix = f"BX-BLD-{number:07d}"
    for part in interior_parts(b, frame, ground):
        if "opens_into" in part.attributes:
            part.attributes["opens_into"] = f"{prefix}-{part.attributes['opens_into']}"
        ids[part.key] = w.add({
            "uid": f"{prefix}-{part.key}", "object_class": part.object_class,
            "layer": "building-components", "cim_level": part.cim_level, "name": part.name,
            "parent_id": ids[part.parent], "root_id": bid, "district": district,
            "attributes": part.attributes, "geom": part.footprint,
            "min_z": round(part.min_z, 3), "max_z": round(part.max_z, 3),
            "valid_from": datetime(year, 1, 1, tzinfo=UTC),
        }, [(part.cim_level, *part.solid)])
