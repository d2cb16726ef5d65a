"""OGC API – 3D GeoVolumes (/3dgeovolumes) and the links from the Features collections, against the running
server on both backends: 3D containers with CRS84h extents that hold their tilesets, links a client can
follow to a valid tileset, and exceptions for what does not exist."""

from __future__ import annotations

import math

import pytest

from tests import test_3dtiles
from tests.test_3dtiles import schema_validator

# the offline 3D Tiles schemas, shared with tests/test_3dtiles.py (its schema_registry fixture)
tiles_schemas = test_3dtiles.schema_registry

REL = "http://www.opengis.net/def/rel/ogc/1.0/3d-geovolumes"
CONTAINERS = ["buildings", "building-components", "pipelines", "pipe-nodes", "roads", "bridges"]


def test_landing_page_and_conformance(http):
    landing = http.get("/3dgeovolumes").json()
    rels = {link["rel"]: link["href"] for link in landing["links"]}
    assert rels["data"].endswith("/3dgeovolumes/collections")
    assert http.get(rels["conformance"]).status_code == 200
    ours = http.get("/3dgeovolumes/conformance").json()["conformsTo"]
    assert "https://www.opengis.net/spec/ogcapi-geovolumes-1/1.0/conf/core" in ours
    assert "https://www.opengis.net/spec/ogcapi-geovolumes-1/1.0/conf/3d-tiles" in ours
    # and the service's own conformance declaration says so too
    assert "https://www.opengis.net/spec/ogcapi-geovolumes-1/1.0/conf/core" in http.get("/conformance").json()["conformsTo"]


def test_collections_are_3d_containers_with_3d_extents(http):
    doc = http.get("/3dgeovolumes/collections").json()
    assert [c["id"] for c in doc["collections"]] == CONTAINERS  # terrain is quantized-mesh, not a 3D container
    for c in doc["collections"]:
        assert c["collectionType"] == "3d-container"
        bbox = c["extent"]["spatial"]["bbox"][0]
        assert c["extent"]["spatial"]["crs"] == "http://www.opengis.net/def/crs/OGC/0/CRS84h"
        assert len(bbox) == 6
        west, south, low, east, north, high = bbox
        assert 123.5 < west < east < 124.1 and 41.1 < south < north < 41.5  # Benxi
        assert -100 < low <= high < 1000
        tilesets = [link for link in c["links"] if link["rel"] == REL]
        assert tilesets and all(link["type"] == "application/3dtiles+json" for link in tilesets)
        content = c["content"]
        assert all(x["rel"] == "original" and x["type"] == "application/json+3dtiles" for x in content)
        assert sum(1 for x in content if x.get("default")) == 1
        assert {x["href"] for x in content} == {link["href"] for link in tilesets}
        assert http.get(f"/3dgeovolumes/collections/{c['id']}").json() == c


@pytest.mark.parametrize("container", ["buildings", "pipe-nodes"])
def test_links_lead_to_valid_tilesets_inside_the_extent(http, container, tiles_schemas):
    c = http.get(f"/3dgeovolumes/collections/{container}").json()
    default = next(x for x in c["content"] if x.get("default"))
    r = http.get(default["href"])
    assert r.status_code == 200
    doc = r.json()
    assert not list(schema_validator(tiles_schemas, "tileset.schema.json").iter_errors(doc))
    west, south, low, east, north, high = c["extent"]["spatial"]["bbox"][0]
    w, s, e, n, hmin, hmax = doc["root"]["boundingVolume"]["region"]
    eps = 1e-6  # degrees (~0.1 m)
    assert west - eps <= math.degrees(w) and math.degrees(e) <= east + eps
    assert south - eps <= math.degrees(s) and math.degrees(n) <= north + eps
    if container == "buildings":  # solids of their stored heights (pipes and wells reach below their axes)
        assert low - 0.05 <= hmin and hmax <= high + 0.05
    archive = next(link for link in c["links"] if link["rel"] == "enclosure" and link["href"] ==
                   default["href"].replace("tileset.json", "package.3tz"))
    assert archive["type"] == "application/vnd.maxar.archive.3tz+zip"


def test_features_collections_link_to_their_geovolume_and_tilesets(http):
    c = http.get("/collections/buildings", params={"f": "json"}).json()
    links = [link for link in c["links"] if link["rel"] == REL]
    hrefs = {link["href"].split("127.0.0.1")[-1].split(":", 1)[-1] for link in links}
    assert any(h.endswith("/3dgeovolumes/collections/buildings") for h in hrefs)
    assert sum(h.endswith("/tileset.json") for h in hrefs) == 3  # CIM2–4
    geovolume = next(link["href"] for link in links if link["type"] == "application/json")
    assert http.get(geovolume).json()["id"] == "buildings"
    listing = http.get("/collections", params={"f": "json"}).json()["collections"]
    with_links = {c["id"] for c in listing if any(link["rel"] == REL for link in c["links"])}
    assert with_links == set(CONTAINERS)
    # the features themselves are untouched
    assert http.get("/collections/buildings/items", params={"limit": 1, "f": "json"}).status_code == 200


@pytest.mark.parametrize("path, status", [
    ("/3dgeovolumes/collections/terrain", 404),
    ("/3dgeovolumes/collections/nowhere", 404),
    ("/3dgeovolumes/collections?bbox=1,2,3,4", 400),
    ("/3dgeovolumes/collections/buildings?f=html", 400),
])
def test_bad_requests_are_ogc_exceptions(http, path, status):
    r = http.get(path)
    assert r.status_code == status
    body = r.json()
    assert body["code"] and body["description"]
