"""Hypothesis property tests over HTTP, on both backends: CQL2 filters (text and JSON) select exactly what the
same expression selects when evaluated in Python over every building, random filter text is a 200 or a 400
(never a 5xx), and the ``bbox`` parameter (antimeridian-crossing, inverted, out-of-range boxes included)
answers what shapely answers on the buildings' CRS84 footprints, or a 400."""

from __future__ import annotations

import json

import httpx
import pytest
import shapely
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import AUTH_HEADERS

ITEMS = "/collections/buildings/items"
PROPERTY = settings(max_examples=40, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
CITY = (123.70, 41.25, 123.84, 41.35)  # around the demo city (its buildings lie inside)


@pytest.fixture(scope="module")
def client(server):
    with httpx.Client(base_url=server.url, timeout=60, headers=AUTH_HEADERS) as c:
        yield c


@pytest.fixture(scope="module")
def buildings(client) -> dict[str, dict]:
    """Every building: its properties and its CRS84 footprint."""
    body = client.get(ITEMS, params={"f": "json", "limit": 10000}).json()
    assert body["numberReturned"] == body["numberMatched"] > 100
    return {f["id"]: {**f["properties"], "_geom": shapely.geometry.shape(f["geometry"])} for f in body["features"]}


def ids(client, **params) -> tuple[int, set[str]]:
    r = client.get(ITEMS, params={"f": "json", "limit": 10000, **params})
    if r.status_code != 200:
        return r.status_code, set()
    body = r.json()
    assert body["numberMatched"] == body["numberReturned"], body.get("numberMatched")
    return 200, {f["id"] for f in body["features"]}


# --- CQL2: random expressions, rendered as text and as JSON, evaluated in Python with SQL's 3-valued logic ----
USAGES = ["residential", "office", "education", "commercial", "industrial", "nope"]
FIELDS = {"floors": st.integers(0, 40), "year_built": st.integers(1950, 2030),
          "height": st.floats(0, 150, allow_nan=False).map(lambda v: round(v, 2)),
          "usage": st.sampled_from(USAGES)}
OPS = {"=": lambda a, b: a == b, "<>": lambda a, b: a != b, "<": lambda a, b: a < b,
       "<=": lambda a, b: a <= b, ">": lambda a, b: a > b, ">=": lambda a, b: a >= b}


@st.composite
def comparison(draw):
    field = draw(st.sampled_from(sorted(FIELDS)))
    if draw(st.booleans()) and field == "usage":
        return ("in", field, draw(st.lists(FIELDS[field], min_size=1, max_size=3, unique=True)))
    if draw(st.booleans()) and field != "usage":
        return ("between", field, *sorted(draw(st.lists(FIELDS[field], min_size=2, max_size=2))))
    op = draw(st.sampled_from(["=", "<>"] if field == "usage" else sorted(OPS)))
    return ("cmp", op, field, draw(FIELDS[field]))


EXPRESSIONS = st.recursive(comparison(), lambda inner: st.one_of(
    st.tuples(st.just("and"), inner, inner), st.tuples(st.just("or"), inner, inner),
    st.tuples(st.just("not"), inner)), max_leaves=5)


def literal(v) -> str:
    return f"'{v}'" if isinstance(v, str) else repr(v)


def as_text(e) -> str:
    kind = e[0]
    if kind == "cmp":
        return f"{e[2]} {e[1]} {literal(e[3])}"
    if kind == "in":
        return f"{e[1]} IN ({', '.join(map(literal, e[2]))})"
    if kind == "between":
        return f"{e[1]} BETWEEN {literal(e[2])} AND {literal(e[3])}"
    if kind == "not":
        return f"NOT ({as_text(e[1])})"
    return f"({as_text(e[1])}) {kind.upper()} ({as_text(e[2])})"


def as_json(e) -> dict:
    kind = e[0]
    if kind == "cmp":
        return {"op": e[1], "args": [{"property": e[2]}, e[3]]}
    if kind == "in":
        return {"op": "in", "args": [{"property": e[1]}, e[2]]}
    if kind == "between":
        return {"op": "between", "args": [{"property": e[1]}, e[2], e[3]]}
    return {"op": kind, "args": [as_json(a) for a in e[1:]]}


def evaluate(e, props: dict):
    """True, False or None (SQL's unknown, for a null property)."""
    kind = e[0]
    if kind == "cmp":
        v = props.get(e[2])
        return None if v is None else OPS[e[1]](v, e[3])
    if kind == "in":
        v = props.get(e[1])
        return None if v is None else v in e[2]
    if kind == "between":
        v = props.get(e[1])
        return None if v is None else e[2] <= v <= e[3]
    if kind == "not":
        v = evaluate(e[1], props)
        return None if v is None else not v
    a, b = evaluate(e[1], props), evaluate(e[2], props)
    if kind == "and":
        return False if False in (a, b) else (None if None in (a, b) else True)
    return True if True in (a, b) else (None if None in (a, b) else False)


@PROPERTY
@given(EXPRESSIONS)
def test_cql2_text_and_json_select_what_the_expression_selects(client, buildings, expr):
    want = {uid for uid, props in buildings.items() if evaluate(expr, props) is True}
    status, by_text = ids(client, filter=as_text(expr))
    assert status == 200, as_text(expr)
    status, by_json = ids(client, filter=json.dumps(as_json(expr)), **{"filter-lang": "cql2-json"})
    assert status == 200, as_json(expr)
    assert by_text == by_json == want, as_text(expr)


# what a URL can carry: no surrogates (not encodable) and no control characters
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=60)


@PROPERTY
@given(st.one_of(TEXT, st.builds(lambda a, b: f"{a} {b}", st.sampled_from(["floors", "name", "height", "x"]), TEXT)))
def test_random_filter_text_is_200_or_400(client, text):
    for lang in ("cql2-text", "cql2-json"):
        r = client.get(ITEMS, params={"f": "json", "limit": 5, "filter": text, "filter-lang": lang})
        assert r.status_code in (200, 400), (lang, text, r.status_code, r.text[:300])
        if r.status_code == 400:
            assert r.json()["code"]


# --- bbox ---------------------------------------------------------------------------------------------------
LONS = st.floats(-180, 180, allow_nan=False)
LATS = st.floats(-90, 90, allow_nan=False)
CITY_LON = st.floats(CITY[0], CITY[2], allow_nan=False)
CITY_LAT = st.floats(CITY[1], CITY[3], allow_nan=False)


def expected(buildings, box, tolerance=1e-6) -> tuple[set[str], set[str]]:
    """Buildings intersecting the CRS84 box (two boxes when it crosses the antimeridian), and those within
    ``tolerance`` degrees (~10 cm) of its edge, which the storage-CRS query may count either way."""
    x0, y0, x1, y1 = box
    parts = [shapely.box(x0, y0, 180, y1), shapely.box(-180, y0, x1, y1)] if x0 > x1 else [shapely.box(*box)]
    area = shapely.union_all(parts)
    edge = area.boundary.buffer(tolerance)
    hit = {uid for uid, p in buildings.items() if p["_geom"].intersects(area)}
    near = {uid for uid, p in buildings.items() if p["_geom"].intersects(edge)}
    return hit, near


@PROPERTY
@given(st.one_of(st.tuples(CITY_LON, CITY_LAT, CITY_LON, CITY_LAT), st.tuples(LONS, LATS, LONS, LATS)))
def test_bbox_answers_what_shapely_answers_or_400(client, buildings, box):
    x0, y0, x1, y1 = box
    status, got = ids(client, bbox=",".join(map(repr, box)))
    if y0 > y1:  # south above north: no box
        assert status == 400
        return
    assert status == 200, box
    hit, near = expected(buildings, box)
    assert hit - near <= got <= hit | near, box


@PROPERTY
@given(CITY_LON, CITY_LAT, st.floats(0.001, 0.05), st.floats(-179.99, -0.01))
def test_antimeridian_box_equals_its_two_halves(client, buildings, lon, lat, dy, east_end):
    """A box from inside the city across 180° to ``east_end``: the city east of ``lon`` (the western half,
    -180..east_end, holds no building)."""
    box = (lon, lat, east_end, min(lat + dy, 90))
    status, got = ids(client, bbox=",".join(map(repr, box)))
    assert status == 200, box
    status, east = ids(client, bbox=",".join(map(repr, (lon, lat, 180.0, box[3]))))
    assert status == 200 and got == east
