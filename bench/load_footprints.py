"""Load building footprints from a vector file into a CIM database through ObjectWriter (the ingest path).

The same-work peer of `ogr2ogr -f PostgreSQL` in bench/demo_load.py: read a FlatGeobuf with pyogrio,
write one Building object per feature. Usage: load_footprints.py DATABASE_URL FILE
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pyogrio  # noqa: E402
import shapely  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from cim.db import schema  # noqa: E402
from cim.db.engine import open_engine  # noqa: E402
from cim.db.writer import ObjectWriter  # noqa: E402


def main(url: str, path: str) -> None:
    engine = open_engine(url, create=True)
    schema.init(engine, 4550, 5737)
    t = schema.tables_for(engine)
    t0 = time.perf_counter()
    _meta, _fids, wkb, fields = pyogrio.raw.read(path)
    geoms = shapely.from_wkb(wkb)
    names = _meta["fields"].tolist()
    cols = {n: fields[i] for i, n in enumerate(names)}
    with engine.begin() as conn:
        ds = conn.execute(insert(t.dataset).values(name="footprints", created_at=datetime.now(UTC))
                          .returning(t.dataset.c.id)).scalar_one()
        run = conn.execute(insert(t.import_run).values(dataset_id=ds, tool="bench", started_at=datetime.now(UTC))
                           .returning(t.import_run.c.id)).scalar_one()
        w = ObjectWriter(conn, t, ds, run)
        for i, g in enumerate(geoms):
            w.add({"uid": str(cols["uid"][i]), "object_class": "Building", "layer": "buildings", "cim_level": 2,
                   "name": cols["name"][i], "usage": cols["usage"][i], "floors": int(cols["floors"][i]),
                   "height": float(cols["height"][i]), "year_built": int(cols["year_built"][i]),
                   "district": cols["district"][i], "address": cols["address"][i], "geom": g})
        w.finish()
    print(f"{len(geoms)} {time.perf_counter() - t0:.3f}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
