"""case-overlay against expectations computed here, independently: objects read over the API in CRS84,
projected with pyproj to EPSG:4550, distances and containment with shapely."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from pyproj import Geod, Transformer
from shapely.geometry import shape

from .conftest import wait_for_job

URL = "/processes/case-overlay/execution"
ITEMS = "/collections/cases/items"
RADIUS = 50.0
TO_GK = Transformer.from_crs("OGC:CRS84", "EPSG:4550", always_xy=True)
TO_LL = Transformer.from_crs("EPSG:4550", "OGC:CRS84", always_xy=True)


def gk(geom):
    return shapely.transform(geom, lambda xy: np.column_stack(TO_GK.transform(xy[:, 0], xy[:, 1])))


def features_near(http, layer, x, y, reach, **params):
    """Objects of a layer whose footprints come within ``reach`` m of (x, y): bbox in CRS84, geometry in GK."""
    lon0, lat0 = TO_LL.transform(x - reach - 5, y - reach - 5)
    lon1, lat1 = TO_LL.transform(x + reach + 5, y + reach + 5)
    body = http.get(f"/collections/{layer}/items", params={"f": "json", "limit": 10000,
                                                           "bbox": f"{lon0},{lat0},{lon1},{lat1}", **params}).json()
    return [(f["id"], gk(shape(f["geometry"])), f["properties"]) for f in body["features"]]


def nearest(candidates, point, radius):
    best = min(((g.distance(point), uid) for uid, g, _ in candidates), default=None)
    return best if best is not None and best[0] <= radius else None


def post_case(http, x, y, case_type):
    lon, lat = TO_LL.transform(x, y)
    r = http.post(ITEMS, json={"type": "Feature", "geometry": {"type": "Point", "coordinates": [lon, lat]},
                               "properties": {"case_type": case_type, "case_status": "reported",
                                              "reported_at": "2026-12-05T09:00:00+08:00"}})
    assert r.status_code == 201, r.text
    return r.headers["location"].rsplit("/", 1)[1]


def run(http, **inputs):
    r = http.post(URL, json={"inputs": inputs})
    assert r.status_code == 200, r.text[:500]
    return r.json()


@pytest.fixture
def js_node(http):
    """A water-supply node (a valve or hydrant) of the demo, in GK."""
    body = http.get("/collections/pipe-nodes/items", params={"f": "json", "pipe_kind": "JS", "limit": 50,
                                                             "bbox": "123.765,41.295,123.775,41.302"}).json()
    f = body["features"][len(body["features"]) // 2]
    return f["id"], gk(shape(f["geometry"]))


def test_manhole_cover_case_finds_nearest_node_of_its_kind(http, js_node):
    uid, node = js_node
    x, y = node.x + 4.0, node.y + 3.0  # 5 m from the node
    case_id = post_case(http, x, y, "BJ0101")
    result = run(http, ids=[case_id], radius_m=RADIUS)
    got = result["cases"][0]
    assert got["id"] == case_id and got["case_type_name"] == "上水井盖"
    point = shapely.Point(x, y)
    expect = nearest(features_near(http, "pipe-nodes", x, y, RADIUS, pipe_kind="JS"), point, RADIUS)
    assert expect is not None and expect[0] <= 5.0 + 1e-6
    pipe = got["related"]["pipe_node"]
    assert pipe["id"] == expect[1] and pipe["pipe_kind"] == "JS"
    assert abs(pipe["distance_m"] - expect[0]) < 0.01
    assert pipe["href"].endswith(f"/collections/pipe-nodes/items/{expect[1]}")
    assert "pipe_segment" not in got["related"]  # a cover case names a node, not a segment
    road = nearest(features_near(http, "roads", x, y, RADIUS), point, RADIUS)
    if road is None:
        assert "road" not in got["related"]
    else:
        assert got["related"]["road"]["id"] == road[1] and abs(got["related"]["road"]["distance_m"] - road[0]) < 0.01


def test_burst_main_finds_nearest_segment_of_its_kind(http, js_node):
    _, node = js_node
    x, y = node.x - 6.0, node.y + 2.5
    case_id = post_case(http, x, y, "SJ0402")
    got = run(http, ids=[case_id])["cases"][0]  # default radius (config): 50 m
    expect = nearest(features_near(http, "pipelines", x, y, RADIUS, pipe_kind="JS"), shapely.Point(x, y), RADIUS)
    seg = got["related"]["pipe_segment"]
    assert seg["id"] == expect[1] and abs(seg["distance_m"] - expect[0]) < 0.01 and seg["pipe_kind"] == "JS"
    assert "pipe_node" not in got["related"]


def test_case_inside_a_modelled_building_names_building_storey_space(http):
    storeys = http.get("/collections/building-components/items",
                       params={"f": "json", "class": "Storey", "limit": 1}).json()["features"]
    building = storeys[0]["properties"]["root"]
    parts = http.get("/collections/building-components/items",
                     params={"f": "json", "root": building, "limit": 10000}).json()["features"]
    spaces = [(f["id"], gk(shape(f["geometry"])), f["properties"]) for f in parts if f["properties"]["class"] == "Space"]
    # a point inside the first space, well away from its walls
    _, space_geom, _ = spaces[0]
    point = space_geom.buffer(-0.3).representative_point()
    case_id = post_case(http, point.x, point.y, "SJ0101")
    got = run(http, ids=[case_id])["cases"][0]["related"]
    b = http.get(f"/collections/buildings/items/{building}", params={"f": "json"}).json()
    assert gk(shape(b["geometry"])).intersects(point)
    assert got["building"]["id"] == building and got["building"]["distance_m"] == 0
    lowest = lambda items: min(items, key=lambda it: (it[2]["min_z"], it[0]))[0]  # noqa: E731
    storey_list = [(f["id"], gk(shape(f["geometry"])), f["properties"]) for f in parts if f["properties"]["class"] == "Storey"]
    assert got["storey"]["id"] == lowest([s for s in storey_list if s[1].intersects(point)])
    assert got["space"]["id"] == lowest([s for s in spaces if s[1].intersects(point)])
    # an event type with no pipe kind: no pipe relation at all
    assert "pipe_node" not in got and "pipe_segment" not in got


def test_viewpoint_looks_north_at_the_case_from_45_degrees(http, js_node):
    _, node = js_node
    case_id = post_case(http, node.x + 1, node.y + 1, "BJ0101")
    got = run(http, ids=[case_id])["cases"][0]
    v = got["viewpoint"]
    assert (v["heading"], v["pitch"], v["roll"]) == (0.0, -45.0, 0.0)
    target = v["target"]
    lon, lat = TO_LL.transform(node.x + 1, node.y + 1)
    assert abs(target["longitude"] - lon) < 1e-8 and abs(target["latitude"] - lat) < 1e-8
    az, _, dist = Geod(ellps="GRS80").inv(v["longitude"], v["latitude"], target["longitude"], target["latitude"])
    assert abs(az) < 0.1  # the camera is due south of the case, looking north
    horizontal = v["range_m"] * 2 ** -0.5
    assert abs(dist - horizontal) < 0.05 * horizontal  # GK scale and grid convergence: a few per mille
    assert abs((v["height"] - target["height"]) - horizontal) < 0.01
    assert 100 < target["height"] < 600  # the valley floor, from the DEM (+ geoid warning without a grid)
    assert "warning" in v


def test_adhoc_points_in_gcj02_and_async_batch(http, js_node):
    from cim.crs.gcj import wgs84_to_gcj02

    _, node = js_node
    lon, lat = TO_LL.transform(node.x + 4.0, node.y + 3.0)
    glon, glat = wgs84_to_gcj02(lon, lat)
    feats = [{"type": "Feature", "id": "p1", "geometry": {"type": "Point", "coordinates": [float(glon), float(glat)]},
              "properties": {"case_type": "BJ0101"}}]
    sync = run(http, features=feats, crs="urn:benxi-cim:crs:GCJ-02")["cases"][0]
    assert sync["id"] == "p1" and abs(sync["location"]["lon"] - lon) < 1e-8
    # the same batch as an asynchronous job
    r = http.post(URL, json={"inputs": {"features": feats, "crs": "urn:benxi-cim:crs:GCJ-02"}},
                  headers={"Prefer": "respond-async"})
    assert r.status_code == 201, r.text[:300]
    job = r.headers["location"]
    _, results = wait_for_job(http, job, timeout=60)
    got = http.get(results, params={"f": "json"}).json()
    assert got["cases"][0]["related"] == sync["related"]


def test_related_link_of_a_case(http, js_node):
    _, node = js_node
    case_id = post_case(http, node.x + 2, node.y, "BJ0101")
    f = http.get(f"{ITEMS}/{case_id}", params={"f": "json"}).json()
    href = next(link["href"] for link in f["links"] if link["rel"] == "related")
    one = http.get(href)
    assert one.status_code == 200
    assert one.json()["related"] == run(http, ids=[case_id])["cases"][0]["related"]
    assert one.json()["related"]["pipe_node"]["href"].startswith(str(http.base_url).rstrip("/"))
    assert http.get(f"{ITEMS}/no-such-case/related").status_code == 404


@pytest.mark.parametrize("inputs,fragment", [
    ({"ids": [f"x{i}" for i in range(10_001)]}, "at most 10,000"),
    ({"ids": ["no-such-case"]}, "no such cases"),
    ({"ids": ["a"], "features": []}, "exactly one"),
    ({"features": [{"type": "Feature", "geometry": {"type": "LineString", "coordinates": []}}]}, "Point"),
    ({"features": [{"type": "Feature", "geometry": {"type": "Point", "coordinates": [123.77, 41.3]},
                    "properties": {"case_type": "XX"}}]}, "unknown code"),
    ({"ids": ["a"], "radius_m": -1}, "radius_m"),
    ({"ids": ["a"], "colour": "red"}, "unknown inputs"),
])
def test_bad_overlay_requests(http, inputs, fragment):
    r = http.post(URL, json={"inputs": inputs})
    assert r.status_code == 400, r.text[:300]
    assert fragment in r.json()["description"]
