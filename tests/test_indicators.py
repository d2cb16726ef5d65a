"""The dashboard's indicators against the running server on both backends, checked against SQL written here
independently (per dialect), and the dashboard page in headless Chromium."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from datetime import UTC, datetime

import pytest
from sqlalchemy import text

from .conftest import AUTH_HEADERS
from .test_browser import open_page

CURRENT = "valid_from <= :now AND (valid_to IS NULL OR valid_to > :now)"


def sql(server, query: str) -> list[tuple]:
    engine = server.db.engine()
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(query), {"now": datetime.now(UTC)})]
    finally:
        engine.dispose()


def attr(server, key: str) -> str:
    return f"attributes->>'{key}'" if server.db.backend == "postgis" else f"json_extract(attributes, '$.{key}')"


def values(doc: dict, measure: str) -> dict[tuple[str, str], float]:
    return {(r["area"], r["category"]): r["value"] for r in doc["rows"] if r["measure"] == measure}


def close(got: dict, want: dict, rounded_to: float) -> None:
    """Same keys, values equal up to the indicator's rounding (0: exact counts)."""
    assert set(got) == set(want), (sorted(set(got) ^ set(want)))[:10]
    for k, v in want.items():
        assert abs(got[k] - v) <= rounded_to / 2 + 1e-9 * abs(v), (k, got[k], v)


def test_buildings_per_district_match_sql(server, http):
    doc = http.get("/indicators/buildings", params={"by": "district"}).json()
    assert doc["by"] == "district" and doc["computed_at"] and doc["data_versions"]["buildings"] >= 1
    where = f"layer = 'buildings' AND object_class = 'Building' AND {CURRENT}"
    rows = sql(server, f"SELECT district, coalesce(usage, '未知'), count(*), sum(ST_Area(geom) * coalesce(floors, 1)) "
                       f"FROM city_object WHERE {where} GROUP BY district, coalesce(usage, '未知')")
    close(values(doc, "count"), {(d, u): n for d, u, n, _ in rows}, 0)
    close(values(doc, "floor_area_m2"), {(d, u): a for d, u, _, a in rows}, 0.1)
    decades: dict = defaultdict(int)
    for d, y, n in sql(server, f"SELECT district, year_built, count(*) FROM city_object WHERE {where} "
                               "GROUP BY district, year_built"):
        decades[(d, "未知" if y is None else f"{int(y) // 10 * 10}s")] += n
    close(values(doc, "count_by_decade"), dict(decades), 0)
    # demolished buildings do not count
    ended = sql(server, "SELECT count(*) FROM city_object WHERE layer = 'buildings' AND valid_to IS NOT NULL")[0][0]
    total = sql(server, "SELECT count(*) FROM city_object WHERE layer = 'buildings' AND object_class = 'Building'")[0][0]
    assert ended > 0 and sum(values(doc, "count").values()) == total - ended


def test_pipelines_and_manholes_match_sql(server, http):
    doc = http.get("/indicators/pipelines").json()
    for measure, column in (("length_km_by_kind", "pipe_kind"), ("length_km_by_material", "material")):
        rows = sql(server, f"SELECT district, {column}, sum(ST_Length(geom)) / 1000 FROM city_object "
                           f"WHERE layer = 'pipelines' AND {CURRENT} GROUP BY district, {column}")
        close(values(doc, measure), {(d, c): v for d, c, v in rows}, 1e-3)
    nodes = http.get("/indicators/pipe-nodes").json()
    manholes = sql(server, f"SELECT district, pipe_kind, count(*) FROM city_object WHERE layer = 'pipe-nodes' "
                           f"AND {attr(server, 'node_type')} = 'manhole' AND {CURRENT} GROUP BY district, pipe_kind")
    km = {(d, k): v for d, k, v in sql(server, f"SELECT district, pipe_kind, sum(ST_Length(geom)) / 1000 "
                                               f"FROM city_object WHERE layer = 'pipelines' AND {CURRENT} "
                                               "GROUP BY district, pipe_kind")}
    close(values(nodes, "manholes"), {(d, k): n for d, k, n in manholes}, 0)
    close(values(nodes, "manholes_per_km"), {(d, k): n / km[(d, k)] for d, k, n in manholes}, 1e-3)
    assert any(v > 0 for v in values(nodes, "manholes_per_km").values())


def test_roads_per_grid_cell_match_sql(server, http):
    doc = http.get("/indicators/roads", params={"by": "grid", "cell": 500}).json()
    assert doc["cell_size_m"] == 500
    rows = sql(server, f"SELECT ST_X(ST_Centroid(geom)), ST_Y(ST_Centroid(geom)), {attr(server, '道路等级')}, "
                       f"ST_Area(geom) FROM city_object WHERE layer = 'roads' AND {CURRENT}")
    count: dict = defaultdict(int)
    area: dict = defaultdict(float)
    for x, y, grade, a in rows:
        cell = (f"{int(x // 500)},{int(y // 500)}", grade)
        count[cell] += 1
        area[cell] += a
    assert len({c for c, _ in count}) > 4
    close(values(doc, "count"), dict(count), 0)
    close(values(doc, "area_m2"), dict(area), 0.1)
    city = http.get("/indicators/roads", params={"by": "city"}).json()
    assert sum(values(city, "count").values()) == len(rows)


def test_csv_carries_the_same_rows_and_time_stamps(http):
    doc = http.get("/indicators/buildings").json()
    r = http.get("/indicators/buildings", params={"f": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    table = list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))
    assert {(t["area"], t["measure"], t["category"], float(t["value"])) for t in table} == \
        {(x["area"], x["measure"], x["category"], x["value"]) for x in doc["rows"]}
    assert {t["computed_at"] for t in table} == {doc["computed_at"]} and all(t["data_changed_at"] for t in table)


def test_cached_until_the_data_changes(server, http):
    first = http.get("/indicators/cases")
    etag = first.headers["etag"]
    assert http.get("/indicators/cases", headers={"If-None-Match": etag}).status_code == 304
    again = http.get("/indicators/cases").json()
    assert again["computed_at"] == first.json()["computed_at"]  # served from the cache
    before = sum(v for (a, c), v in values(again, "open_by_type").items() if c == "BJ0103")
    case = {"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.7712, 41.3003]},
            "properties": {"case_type": "BJ0103", "case_status": "reported",
                           "reported_at": datetime.now(UTC).isoformat(timespec="seconds")}}
    assert http.post("/collections/cases/items", json=case).status_code == 201
    changed = http.get("/indicators/cases", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.headers["etag"] != etag
    doc = changed.json()
    assert sum(v for (a, c), v in values(doc, "open_by_type").items() if c == "BJ0103") == before + 1
    assert values(doc, "open_by_age")  # reported just now: under a day
    assert any(c == "<1天" for (_, c) in values(doc, "open_by_age"))
    want = sql(server, "SELECT count(*) FROM city_object WHERE layer = 'cases' AND valid_from <= :now "
                       "AND (case_status IS NULL OR case_status NOT IN ('closed', 'cancelled'))")[0][0]
    assert sum(values(doc, "open_by_type").values()) == want


@pytest.mark.parametrize("params,status", [({"by": "street"}, 400), ({"by": "grid", "cell": 5}, 400),
                                           ({"cell": "wide"}, 400), ({"f": "xml"}, 400), ({"color": "red"}, 400)])
def test_bad_requests(http, params, status):
    r = http.get("/indicators/buildings", params=params)
    assert r.status_code == status and r.json()["code"] == "InvalidParameterValue"
    assert http.get("/indicators/nothing").status_code == 404


def test_restricted_indicators_need_a_pipeline_role(anon, http):
    listed = {i["id"] for i in anon.get("/indicators").json()["indicators"]}
    assert listed == {"buildings", "roads", "cases", "vehicle-tracks"}
    assert {i["id"] for i in http.get("/indicators").json()["indicators"]} >= listed | {"pipelines", "pipe-nodes"}
    for name in ("pipelines", "pipe-nodes"):
        assert anon.get(f"/indicators/{name}", params={"f": "csv"}).status_code == 401
    assert anon.get("/indicators/buildings").status_code == 200


def _check_dashboard(report: dict, http, want: set[str]) -> None:
    assert not report["console"] and not report["failed"], (report["console"], report["failed"])
    dash = report["report"]
    assert not dash["errors"] and set(dash["indicators"]) == want
    by_chart = {(c["indicator"], c["measure"]): c for c in dash["charts"]}
    for name in want:
        doc = http.get(f"/indicators/{name}").json()
        for measure in doc["measures"]:
            chart = by_chart[(name, measure)]
            assert chart["inked"] > 0.01, (name, measure)  # the canvas has drawn bars, axes, legend
            drawn = {(a, d["label"]): d["data"][i] for d in chart["datasets"] for i, a in enumerate(chart["labels"])}
            assert {k: v for k, v in drawn.items() if v} == {k: v for k, v in values(doc, measure).items() if v}


def test_dashboard_draws_every_indicator_a_client_may_read(server, http, tmp_path):
    wait = "window.cimDashboard && window.cimDashboard.ready && window.cimDashboard"
    page = open_page(f"{server.url}/dashboard", tmp_path / "a", AUTH_HEADERS, wait)
    _check_dashboard(page, http, {"buildings", "pipelines", "pipe-nodes", "roads", "cases", "vehicle-tracks"})
    assert any("/cim-static/chart.js/chart.umd.min.js" in u for u in page["requests"])
    assert all(u.startswith(server.url) or u.startswith("data:") or u.startswith("blob:") for u in page["requests"])
    anonymous = open_page(f"{server.url}/dashboard", tmp_path / "b", None, wait)
    _check_dashboard(anonymous, http, {"buildings", "roads", "cases", "vehicle-tracks"})
    assert "pipelines" not in anonymous["dom"]


def test_road_coverage_by_vehicle_tracks(server, http):
    """A vehicle driven along one road today and along another ten days ago: the first road is covered,
    the second not (a week's tracks count); checked against shapely on the GeoJSON of both layers."""
    import uuid
    from datetime import timedelta

    import shapely
    from shapely.geometry import shape

    roads = http.get("/collections/roads/items", params={"f": "json", "limit": 10000}).json()["features"]
    fresh_road, old_road = roads[len(roads) // 3], roads[2 * len(roads) // 3]
    now = datetime.now(UTC)

    def drive(road, when):
        p = shape(road["geometry"]).representative_point()
        vehicle = f"辽E{uuid.uuid4().hex[:5].upper()}"
        fixes = [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [p.x + 1e-6 * i, p.y]},
                  "properties": {"vehicle_id": vehicle, "time": (when + timedelta(seconds=30 * i)).isoformat(),
                                 "speed": 5.0}} for i in range(3)]
        r = http.post("/vehicle-tracks/fixes", json={"type": "FeatureCollection", "features": fixes})
        assert r.status_code == 201, r.text

    drive(fresh_road, now - timedelta(hours=2))
    drive(old_road, now - timedelta(days=10))
    doc = http.get("/indicators/vehicle-tracks", params={"by": "city"}).json()
    assert doc["data_versions"]["vehicle-tracks"] >= 1
    tracks = http.get("/collections/vehicle-tracks/items", params={"f": "json", "limit": 10000}).json()["features"]
    since = now - timedelta(days=7)
    recent = [shape(t["geometry"]) for t in tracks
              if datetime.fromisoformat(t["properties"]["valid_to"].replace("Z", "+00:00")) >= since]
    assert recent
    lines = shapely.union_all(recent)
    covered = [r for r in roads if shape(r["geometry"]).intersects(lines)]
    ids = {r["id"] for r in covered}
    assert fresh_road["id"] in ids and old_road["id"] not in ids
    km: dict = defaultdict(float)
    total: dict = defaultdict(float)
    for r in roads:
        grade = r["properties"]["道路等级"]
        total[grade] += r["properties"]["length_m"] / 1000
        if r["id"] in ids:
            km[grade] += r["properties"]["length_m"] / 1000
    close(values(doc, "covered_km"), {("本溪市", g): km.get(g, 0.0) for g in total}, 1e-3)
    close(values(doc, "coverage_pct"), {("本溪市", g): 100 * km.get(g, 0.0) / total[g] for g in total}, 0.1)
