"""How items pages are delivered, over HTTP on both backends: validators keyed on the layers' data
versions (304 without running the query, a new ETag after a write), large pages streamed, numberMatched
counted only up to the configured limit."""

from __future__ import annotations

import httpx
import pytest

from cim.db.schema import tables_for
from cim.db.versions import bump

from .conftest import start_server, stop_server

BUILDINGS = "/collections/buildings/items"
COMPONENTS = "/collections/building-components/items"


def _bump(server, layer: str) -> None:
    engine = server.db.engine()
    try:
        with engine.begin() as conn:
            bump(conn, tables_for(engine), [layer])
    finally:
        engine.dispose()


@pytest.mark.parametrize("path", [BUILDINGS, f"{BUILDINGS}/BX-BLD-0000001"])
def test_etag_follows_the_layer_version(http, server, path):
    params = {"f": "json", "limit": 20}
    if path != BUILDINGS:
        path = f"{BUILDINGS}/{http.get(BUILDINGS, params={'f': 'json', 'limit': 1}).json()['features'][0]['id']}"
        params = {"f": "json"}
    first = http.get(path, params=params)
    etag = first.headers["etag"]
    assert etag.startswith('W/"')  # weak: the body's timeStamp differs between answers
    assert http.get(path, params=params, headers={"If-None-Match": etag}).status_code == 304
    _bump(server, "roads")  # another layer changed: still the same
    assert http.get(path, params=params, headers={"If-None-Match": etag}).status_code == 304
    _bump(server, "buildings")  # this layer changed: a full answer, a new validator
    again = http.get(path, params=params, headers={"If-None-Match": etag})
    assert again.status_code == 200 and again.headers["etag"] != etag
    assert again.json()["id" if path != BUILDINGS else "numberReturned"] == \
        first.json()["id" if path != BUILDINGS else "numberReturned"]


def test_components_revalidate_when_buildings_change(http, server):
    """A component shows its building's uid (``root``): a write to the buildings layer is a change too."""
    params = {"f": "json", "limit": 5}
    etag = http.get(COMPONENTS, params=params).headers["etag"]
    _bump(server, "buildings")
    assert http.get(COMPONENTS, params=params, headers={"If-None-Match": etag}).status_code == 200


def _walk(client: httpx.Client, url: str, params: dict) -> list[str]:
    seen: list[str] = []
    while url:
        body = client.get(url, params=params if not seen else None).json()
        seen += [f["id"] for f in body["features"]]
        url = next((link["href"] for link in body["links"] if link["rel"] == "next"), None)
    return seen


def test_large_pages_are_streamed(http):
    """Above 1,000 features a page streams from a server-side cursor (chunked, no Content-Length) and holds
    exactly what smaller pages hold, with the same links and counts."""
    layer = "/collections/pipelines/items"
    total = http.get(layer, params={"f": "json", "limit": 1}).json()["numberMatched"]
    assert total > 1600, "the demo needs more pipes for this test"
    r = http.get(layer, params={"f": "json", "limit": 1500})
    assert r.status_code == 200 and "content-length" not in r.headers
    assert r.headers["transfer-encoding"] == "chunked"
    body = r.json()
    assert body["numberReturned"] == 1500 and body["numberMatched"] == total
    small = []
    url, params = layer, {"f": "json", "limit": 500}
    for _ in range(3):
        page = http.get(url, params=params).json()
        small += [f["id"] for f in page["features"]]
        url, params = next(link["href"] for link in page["links"] if link["rel"] == "next"), None
    assert [f["id"] for f in body["features"]] == small
    # its next link (written after the streamed rows) continues where the small pages do
    nxt = next(link["href"] for link in body["links"] if link["rel"] == "next")
    rest = http.get(nxt).json()
    assert rest["numberReturned"] == min(1500, total - 1500)
    assert rest["features"][0]["id"] == http.get(url).json()["features"][0]["id"]


def test_count_stops_at_count_limit(server, http):
    """CIM_COUNT_LIMIT=100: a larger match omits numberMatched; a page holding every match still says how
    many; following next links still walks every feature."""
    other = start_server(server.db, {"CIM_COUNT_LIMIT": "100"}, "server-countlimit.log")
    try:
        with httpx.Client(base_url=other.url, timeout=30) as client:
            big = client.get(BUILDINGS, params={"f": "json", "limit": 10}).json()
            assert "numberMatched" not in big and big["numberReturned"] == 10
            bbox = "123.765,41.295,123.775,41.302"
            whole = client.get(BUILDINGS, params={"f": "json", "limit": 1000, "bbox": bbox}).json()
            n = whole["numberReturned"]
            assert 0 < n <= 100 and whole["numberMatched"] == n
            pages = client.get(BUILDINGS, params={"f": "json", "limit": 3, "bbox": bbox}).json()
            assert pages["numberMatched"] == n  # counted: n is under the limit
            assert sorted(_walk(client, BUILDINGS, {"f": "json", "limit": 7})) == \
                sorted(_walk(http, BUILDINGS, {"f": "json", "limit": 100}))
    finally:
        stop_server(other)


def test_a_dropped_connection_costs_no_request(server, http):
    """PostgreSQL ends the server's sessions while its pool holds them (as a restart does): the next requests
    (items, and an item by id) still answer 200, the read retried once on a new connection."""
    if server.db.backend != "postgis":
        pytest.skip("PostGIS sessions only")
    from .test_engine import _terminate

    one = http.get(BUILDINGS, params={"f": "json", "limit": 1}).json()["features"][0]["id"]
    for _ in range(3):
        assert _terminate(server.db.url, "cim") >= 1
        assert http.get(BUILDINGS, params={"f": "json", "limit": 5}).status_code == 200
        assert _terminate(server.db.url, "cim") >= 1
        assert http.get(f"{BUILDINGS}/{one}", params={"f": "json"}).status_code == 200


def test_number_matched_follows_the_layer_version(server, http):
    """numberMatched is counted once per filter and kept until the layer changes: after a write that
    removes a matching building, the same first and deep pages count one less."""
    bbox = "123.765,41.295,123.785,41.31"
    params = {"f": "json", "limit": 2, "bbox": bbox}
    first = http.get(BUILDINGS, params=params).json()
    n = first["numberMatched"]
    assert n > 2
    deep = http.get(next(link["href"] for link in first["links"] if link["rel"] == "next")).json()
    assert deep["numberMatched"] == n
    victim = first["features"][0]["id"]
    engine = server.db.engine()
    try:
        t = tables_for(engine)
        with engine.begin() as conn:
            row = conn.execute(t.city_object.select().where(t.city_object.c.uid == victim)).mappings().one()
            conn.execute(t.city_object.update().where(t.city_object.c.id == row["id"])
                         .values(layer="buildings-removed"))
            bump(conn, t, ["buildings"])
        try:
            assert http.get(BUILDINGS, params=params).json()["numberMatched"] == n - 1
            assert http.get(deep["links"][0]["href"]).json()["numberMatched"] == n - 1
        finally:
            with engine.begin() as conn:
                conn.execute(t.city_object.update().where(t.city_object.c.id == row["id"]).values(layer="buildings"))
                bump(conn, t, ["buildings"])
    finally:
        engine.dispose()
    assert http.get(BUILDINGS, params=params).json()["numberMatched"] == n
