"""OGC API – Features Part 3: CQL2 text and JSON filters over HTTP on both backends, with filter-crs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from sqlalchemy import text

from cim.crs import gcj
from cim.crs.registry import default_registry
from cim.crs.transform import transform

ITEMS = "/collections/buildings/items"
BBOX84 = (123.765, 41.295, 123.775, 41.302)


def ids(http, **params) -> set[str]:
    r = http.get(ITEMS, params={"f": "json", "limit": 10000, **params})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["numberMatched"] == body["numberReturned"]
    return {f["id"] for f in body["features"]}


def db_ids(server, where: str, **params) -> set[str]:
    engine = server.db.engine()
    with engine.connect() as conn:
        out = set(conn.execute(text(f"SELECT uid FROM city_object WHERE layer = 'buildings' AND {where}"),
                               params).scalars())
    engine.dispose()
    return out


@pytest.fixture(scope="module")
def a_building(server):
    """A building's uid and an interior point of it, in CRS84."""
    engine = server.db.engine()
    fn = "ST_AsText" if engine.dialect.name == "postgresql" else "AsText"
    with engine.connect() as conn:
        uid, wkt = conn.execute(text(f"SELECT uid, {fn}(geom) FROM city_object WHERE object_class = 'Building' "
                                     "ORDER BY uid LIMIT 1 OFFSET 40")).one()
    engine.dispose()
    p = shapely.from_wkt(wkt).representative_point()
    reg = default_registry()
    lon, lat, _ = transform(reg.epsg(4550), reg.resolve("OGC:CRS84"), np.array([p.x]), np.array([p.y]))
    return uid, float(lon[0]), float(lat[0]), (p.x, p.y)


def test_attribute_comparisons(http, server):
    assert ids(http, filter="floors > 10") == db_ids(server, "floors > 10") != set()
    assert ids(http, filter="name LIKE '%小区%' AND year_built >= 2000") == db_ids(
        server, "name LIKE '%小区%' AND year_built >= 2000")
    assert ids(http, filter="usage IN ('office','education')") == db_ids(server, "usage IN ('office','education')")
    # AND binds tighter than OR; NOT of a parenthesised AND (pygeofilter's own text grammar got both wrong)
    w = "usage = 'office' OR usage = 'education' AND floors > 10"
    assert ids(http, filter=w) == db_ids(server, w) != db_ids(server, "(usage = 'office' OR usage = 'education') AND floors > 10")
    assert ids(http, filter="NOT (floors > 5 AND floors < 20)") == db_ids(server, "NOT (floors > 5 AND floors < 20)")
    assert ids(http, filter="floors BETWEEN 5 AND 7") == db_ids(server, "floors BETWEEN 5 AND 7") != set()


def test_s_intersects_point_in_each_filter_crs(http, a_building):
    uid, lon, lat, (e, n) = a_building
    assert ids(http, filter=f"S_INTERSECTS(geometry, POINT({lon} {lat}))") == {uid}
    assert ids(http, filter=f"S_INTERSECTS(geometry, POINT({lat} {lon}))", **{"filter-crs": "EPSG:4490"}) == {uid}
    assert ids(http, filter=f"S_INTERSECTS(geometry, POINT({n} {e}))",
               **{"filter-crs": "http://www.opengis.net/def/crs/EPSG/0/4550"}) == {uid}
    glon, glat = gcj.wgs84_to_gcj02(lon, lat)
    assert ids(http, filter=f"S_INTERSECTS(geometry, POINT({glon} {glat}))",
               **{"filter-crs": "urn:benxi-cim:crs:GCJ-02"}) == {uid}


def test_bbox_and_polygon_literals_match_the_bbox_parameter(http):
    want = ids(http, bbox=",".join(map(str, BBOX84)))
    assert want
    assert ids(http, filter=f"S_INTERSECTS(geometry, BBOX({','.join(map(str, BBOX84))}))") == want
    x0, y0, x1, y1 = BBOX84
    poly = f"POLYGON(({x0} {y0},{x1} {y0},{x1} {y1},{x0} {y1},{x0} {y0}))"
    assert ids(http, filter=f"S_INTERSECTS(geometry, {poly})") == want
    inside = ids(http, filter=f"S_WITHIN(geometry, {poly})")
    assert inside and inside < want


def test_cql2_json(http, server):
    f = {"op": "and", "args": [
        {"op": ">", "args": [{"property": "floors"}, 5]},
        {"op": "s_intersects", "args": [{"property": "geometry"}, {"bbox": list(BBOX84)}]}]}
    got = ids(http, filter=json.dumps(f), **{"filter-lang": "cql2-json"})
    assert got == ids(http, filter="floors > 5", bbox=",".join(map(str, BBOX84)))


@pytest.mark.parametrize("params,fragment", [
    ({"filter": "floors >"}, "not valid cql2-text"),
    ({"filter": "nope = 1"}, "unknown properties nope"),
    ({"filter": "floors > 1", "filter-lang": "ecql"}, "filter-lang"),
    ({"filter": "S_INTERSECTS(geometry, POINT(1 2))", "filter-crs": "EPSG:2000"}, "filter-crs"),
    ({"filter": "S_INTERSECTS(geometry, POINT(2.35 48.85))"}, "outside the area"),
    ({"filter": "{not json", "filter-lang": "cql2-json"}, "not valid cql2-json"),
    ({"filter-crs": "EPSG:4490"}, "without filter"),
    ({"filter": "name = 'x'; DROP TABLE city_object; --"}, "not valid cql2-text"),
])
def test_bad_filters_are_400(http, server, params, fragment):
    r = http.get(ITEMS, params={"f": "json", **params})
    assert r.status_code == 400, r.text
    assert fragment in r.json()["description"]
    assert db_ids(server, "1 = 1")  # the table is still there


def test_queryables_and_conformance(http):
    q = http.get("/collections/buildings/queryables", params={"f": "json"}).json()
    assert q["properties"]["floors"]["type"] == "integer" and "name" in q["properties"]
    conf = set(http.get("/conformance", params={"f": "json"}).json()["conformsTo"])
    assert {"http://www.opengis.net/spec/ogcapi-features-3/1.0/conf/filter",
            "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
            "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"} <= conf


def test_bbox_crs_gcj02(http, a_building):
    """A Gaode-map client sends its viewport in GCJ-02: the building under it is found."""
    uid, lon, lat, _ = a_building
    glon, glat = gcj.wgs84_to_gcj02(lon, lat)
    d = 0.00002  # about 2 m
    got = ids(http, bbox=f"{glon - d},{glat - d},{glon + d},{glat + d}", **{"bbox-crs": "urn:benxi-cim:crs:GCJ-02"})
    assert uid in got and len(got) <= 3
