"""The assertions of the OGC API – Features Part 1 Core test suite (ETS), as a user would run them."""

from __future__ import annotations

import pytest

CORE = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/core"
GEOJSON = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/geojson"
OAS30 = "http://www.opengis.net/spec/ogcapi-features-1/1.0/conf/oas30"


def test_landing_page_links(http):
    body = http.get("/", params={"f": "json"}).json()
    rels = {link["rel"]: link for link in body["links"]}
    for rel in ("self", "service-desc", "conformance", "data"):
        assert rel in rels and rels[rel]["href"].startswith("http")
    assert http.get(rels["service-desc"]["href"]).status_code == 200


def test_conformance_declares_core_geojson_oas30(http):
    conf = set(http.get("/conformance", params={"f": "json"}).json()["conformsTo"])
    assert {CORE, GEOJSON, OAS30} <= conf


def test_collections_have_crs84_extents_and_items_links(http):
    body = http.get("/collections", params={"f": "json"}).json()
    checked = set()
    for c in body["collections"]:
        if c.get("itemType") != "feature":  # the rasters (DEM, orthophoto) are coverages with map tiles, no items
            continue
        spatial = c["extent"]["spatial"]
        assert spatial.get("crs", "http://www.opengis.net/def/crs/OGC/1.3/CRS84").endswith("CRS84")
        assert any(link["rel"] == "items" for link in c["links"])
        checked.add(c["id"])
    assert {"buildings", "roads", "pipelines", "cases"} <= checked


@pytest.mark.parametrize("limit", [1, 500, 10000])
def test_limits_min_mid_max(http, limit):
    body = http.get("/collections/pipe-nodes/items", params={"f": "json", "limit": limit}).json()
    assert body["numberReturned"] == min(limit, body["numberMatched"]) == len(body["features"])


def test_item_links_and_media_type(http):
    f = http.get("/collections/roads/items", params={"f": "json", "limit": 1}).json()["features"][0]
    r = http.get(f"/collections/roads/items/{f['id']}", params={"f": "json"})
    assert r.headers["content-type"].startswith("application/geo+json")
    rels = {link["rel"] for link in r.json()["links"]}
    assert {"self", "alternate", "collection"} <= rels


def test_unknown_collection_is_404(http):
    assert http.get("/collections/nope/items", params={"f": "json"}).status_code == 404
    assert http.get("/collections/nope", params={"f": "json"}).status_code == 404
