"""Vehicle GPS tracks: `cim tracks load` and POST /vehicle-tracks/fixes, then read as collections."""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timedelta

import numpy as np

from cim.crs.gcj import wgs84_to_gcj02
from tests.conftest import run_cim

LON, LAT = 123.768, 41.299


def route(n: int, start: datetime, lon=LON, lat=LAT, step_s=30):
    """n fixes heading north-east, WGS 84, times in China Standard Time (no zone: as terminals send them)."""
    return [(start + timedelta(seconds=step_s * i), lon + 0.0002 * i, lat + 0.0001 * i, 20.0 + i) for i in range(n)]


def write_csv(path, vehicle, fixes, gcj=True, header="车牌号,定位时间,经度,纬度,速度,车辆类型"):
    lines = [header]
    for t, lon, lat, speed in fixes:
        x, y = (wgs84_to_gcj02(lon, lat) if gcj else (lon, lat))
        lines.append(f"{vehicle},{t:%Y-%m-%d %H:%M:%S},{float(x):.9f},{float(y):.9f},{speed},环卫")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def items(http, layer, **params):
    return http.get(f"/collections/{layer}/items", params={"f": "json", "limit": 1000, **params}).json()


def test_cli_load_gcj02_csv_then_tracks_per_day_and_last_position(http, server, tmp_path):
    vehicle = f"辽E{uuid.uuid4().hex[:5].upper()}"
    day1 = route(20, datetime(2026, 12, 4, 23, 55))  # crosses midnight (CST): two tracks of 10 fixes
    path = write_csv(tmp_path / "gps.csv", vehicle, day1)
    proc = run_cim("tracks", "load", str(path), "--crs", "urn:benxi-cim:crs:GCJ-02", env=server.db.env)
    assert proc.returncode == 0, proc.stderr
    assert "20 fixes, 1 vehicles, 2 tracks" in proc.stdout
    tracks = sorted(items(http, "vehicle-tracks", name=vehicle)["features"], key=lambda f: f["id"])
    assert [f["id"] for f in tracks] == [f"{vehicle}-20261204", f"{vehicle}-20261205"]
    first, second = tracks
    assert first["geometry"]["type"] == "LineString" and first["properties"]["usage"] == "环卫"
    assert first["properties"]["fixes"] == 10 and second["properties"]["fixes"] == 10
    all_coords = np.array(first["geometry"]["coordinates"] + second["geometry"]["coordinates"])
    expect = np.array([(lon, lat) for _, lon, lat, _ in day1])
    assert np.abs(all_coords - expect).max() < 1e-7  # GCJ-02 removed exactly
    times = first["properties"]["times"] + second["properties"]["times"]
    assert times[0] == "2026-12-04T15:55:00Z" and times == sorted(times) and len(times) == 20
    assert first["properties"]["valid_from"] == "2026-12-04T15:55:00Z"
    # datetime: only the track driven then
    at = items(http, "vehicle-tracks", name=vehicle, datetime="2026-12-04T15:57:00Z")["features"]
    assert [f["id"] for f in at] == [f"{vehicle}-20261204"]
    pos = http.get(f"/collections/vehicle-positions/items/{vehicle}", params={"f": "json"}).json()
    assert pos["properties"]["time"] == times[-1] and pos["properties"]["speed_kmh"] == 39.0
    assert np.abs(np.array(pos["geometry"]["coordinates"]) - expect[-1]).max() < 1e-7


def test_second_load_merges_and_older_fix_does_not_move_position(http, server, tmp_path):
    vehicle = f"辽E{uuid.uuid4().hex[:5].upper()}"
    a = route(5, datetime(2026, 12, 5, 9, 0))
    b = route(5, datetime(2026, 12, 5, 8, 0), lon=LON + 0.01)  # earlier the same day
    run_cim("tracks", "load", str(write_csv(tmp_path / "a.csv", vehicle, a, gcj=False)), env=server.db.env, check=True)
    run_cim("tracks", "load", str(write_csv(tmp_path / "b.csv", vehicle, b, gcj=False)), env=server.db.env, check=True)
    (track,) = items(http, "vehicle-tracks", name=vehicle)["features"]
    assert track["properties"]["fixes"] == 10
    assert track["properties"]["times"][0] == "2026-12-05T00:00:00Z"  # 08:00 CST, from the second file
    assert abs(track["geometry"]["coordinates"][0][0] - (LON + 0.01)) < 1e-7
    pos = http.get(f"/collections/vehicle-positions/items/{vehicle}", params={"f": "json"}).json()
    assert pos["properties"]["time"] == "2026-12-05T01:02:00Z"  # still the 09:02 fix of the first file


def test_bad_rows_named_by_line_nothing_loaded(http, server, tmp_path):
    vehicle = f"辽E{uuid.uuid4().hex[:5].upper()}"
    good = write_csv(tmp_path / "good.csv", vehicle, route(3, datetime(2026, 12, 5, 10, 0)), gcj=False)
    bad = tmp_path / "bad.csv"
    bad.write_text("vehicle_id,time,lon,lat,speed\n"
                   f"{vehicle},2026-12-05T10:00:00+08:00,123.77,41.30,10\n"
                   f"{vehicle},yesterday,123.77,41.30,10\n"
                   f"{vehicle},2026-12-05T10:01:00+08:00,123.77,41.30,-5\n"
                   f"{vehicle},2026-12-05T10:02:00+08:00,116.39,39.91,10\n"
                   f"{vehicle},2026-12-05T10:03:00+08:00,123.77,,10\n", encoding="utf-8")
    before = items(http, "vehicle-positions")["numberMatched"]
    proc = run_cim("tracks", "load", str(good), str(bad), env=server.db.env)
    assert proc.returncode == 1
    msg = " ".join(proc.stderr.split())
    assert "nothing loaded" in msg and "bad.csv" in msg
    assert "line 3: time 'yesterday'" in msg and "line 4: speed -5" in msg and "line 6: missing lat" in msg
    assert items(http, "vehicle-positions")["numberMatched"] == before  # the good file was not kept either
    assert not items(http, "vehicle-tracks", name=vehicle)["features"]
    # the row outside the city is named once the others are fixed
    fixed = bad.read_text(encoding="utf-8").replace("yesterday", "2026-12-05T09:59:00+08:00").replace(
        ",-5\n", ",5\n").replace("123.77,,10", "123.77,41.3,10")
    bad.write_text(fixed, encoding="utf-8")
    proc = run_cim("tracks", "load", str(bad), env=server.db.env)
    assert proc.returncode == 1 and "line 5: lon 116.390000, lat 39.910000 outside the city" in " ".join(proc.stderr.split())


def test_http_post_json_fixes(http):
    vehicle = f"辽E{uuid.uuid4().hex[:5].upper()}"
    fixes = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
              "properties": {"vehicle_id": vehicle, "time": f"{t:%Y-%m-%dT%H:%M:%S}+08:00", "speed": s,
                             "vehicle_type": "渣土"}}
             for t, lon, lat, s in route(4, datetime(2026, 12, 5, 11, 0))]
    r = http.post("/vehicle-tracks/fixes", json={"type": "FeatureCollection", "features": fixes})
    assert r.status_code == 201, r.text
    assert r.json() == {"fixes": 4, "vehicles": 1, "tracks": 1}
    (track,) = items(http, "vehicle-tracks", name=vehicle)["features"]
    assert track["properties"]["usage"] == "渣土" and len(track["geometry"]["coordinates"]) == 4
    fixes[2]["properties"]["speed"] = "fast"
    r = http.post("/vehicle-tracks/fixes", content=json.dumps(fixes), headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "item 2: speed 'fast' is not a number" in r.json()["description"]
    r = http.post("/vehicle-tracks/fixes", content="vehicle_id,time\nx,1\n", headers={"Content-Type": "text/csv"})
    assert r.status_code == 400 and "line 1: no column for lon, lat, speed" in r.json()["description"]
