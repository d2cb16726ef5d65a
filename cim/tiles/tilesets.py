"""The documents of OGC API – Tiles (Part 1) for vector tiles, and TileJSON 3.0.0.

- the tilesets list of a collection (``/collections/{id}/tiles``, ``tileSet-item``s);
- a tileset (``/collections/{id}/tiles/{tms}``): the OGC TileSet metadata with ``tileMatrixSetLimits``
  computed from the layer's extent, for the matrices of the layer's zoom range (clients such as GDAL
  and QGIS fetch tiles within them; every other tile is a 404), and the layer's attributes;
- TileJSON 3.0.0 for the same tileset (``?f=tilejson``; its ``minzoom``/``maxzoom`` are the set's matrix ids);
- the dataset's combined tilesets (``/tiles``, ``/tiles/{tms}``): one MVT holding one layer per collection
  (all of them, or a ``collections=a,b`` selection), limits and extent the union of the layers';
- the tile matrix sets list and definitions (``/tileMatrixSets``), from :mod:`cim.crs.tms`.

Pure functions of their inputs: no database, no HTTP.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Date, DateTime, Float, Integer, SmallInteger

from cim.crs import tms as registry
from cim.crs.registry import CRS84_URI
from cim.db.models import LAYERS, CIMTables
from cim.db.queries import LINKS, PROPERTY_COLUMN
from cim.tiles.grid import Limits, TileSet, web_mercator_zoom
from cim.tiles.mvt import ID_PROPERTY, LayerRules

VECTOR_TILE = "application/vnd.mapbox-vector-tile"
TILEJSON = "application/vnd.mapbox.tile+json"
JSON = "application/json"
REL = "http://www.opengis.net/def/rel/ogc/1.0/"
TILE_TEMPLATE = "{tileMatrix}/{tileRow}/{tileCol}"

CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/core",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tileset",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/tilesets-list",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/dataset-tilesets",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/geodata-selection",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/mvt",
]


@dataclass(frozen=True)
class LayerState:
    """What the documents need to know about the layer's data now."""

    version: int
    extent_crs84: tuple[float, float, float, float] | None  # None: an empty layer
    limits: list[Limits]  # per matrix of the zoom range that has data


def _link(rel: str, media_type: str, href: str, title: str, templated: bool = False) -> dict[str, Any]:
    link: dict[str, Any] = {"rel": rel, "type": media_type, "title": title, "href": href}
    if templated:
        link["templated"] = True
    return link


def title_of(layer: str) -> str:
    return LAYERS.get(layer, layer)


def tileset_url(base: str, collection: str, ts: TileSet) -> str:
    return f"{base}/collections/{collection}/tiles/{ts.id}"


def _tileset_links(base: str, collection: str, ts: TileSet) -> list[dict[str, Any]]:
    url = tileset_url(base, collection, ts)
    return [
        _link("self", JSON, url, f"{collection} vector tiles in {ts.id}"),
        _link("alternate", TILEJSON, f"{url}?f=tilejson", "TileJSON 3.0.0"),
        _link(f"{REL}tiling-scheme", JSON, f"{base}/tileMatrixSets/{ts.id}", f"{ts.id} definition"),
        _link("item", VECTOR_TILE, f"{url}/{TILE_TEMPLATE}", "Mapbox vector tile", templated=True),
        _link(f"{REL}geodata", JSON, f"{base}/collections/{collection}", title_of(collection)),
    ]


def _tms_fields(ts: TileSet) -> dict[str, Any]:
    out: dict[str, Any] = {"dataType": "vector", "crs": str(ts.tms.crs.srs)}
    if ts.tms.uri:
        out["tileMatrixSetURI"] = str(ts.tms.uri)
    return out


def tileset_list(base: str, collection: str, layer: str, sets: list[TileSet]) -> dict[str, Any]:
    url = f"{base}/collections/{collection}/tiles"
    return {
        "links": [_link("self", JSON, url, f"{collection} tilesets"),
                  _link(f"{REL}geodata", JSON, f"{base}/collections/{collection}", title_of(layer))],
        "tilesets": [{"title": f"{title_of(layer)} – {ts.id}", **_tms_fields(ts),
                      "links": [link for link in _tileset_links(base, collection, ts)
                                if link["rel"] in ("self", f"{REL}tiling-scheme", "item")]}
                     for ts in sets],
    }


def property_types(t: CIMTables, layer: str, rules: LayerRules) -> dict[str, dict[str, Any]]:
    """JSON-schema types of the attributes the tiles carry (at some zoom)."""
    co = t.city_object
    out: dict[str, dict[str, Any]] = {ID_PROPERTY: {"type": "string", "description": "the feature's id (items API)"}}
    attrs = rules.all_attributes()
    for name in attrs.typed:
        if name in LINKS:
            out[name] = {"type": "string", "description": f"id of the {name} object"}
            continue
        col_type = co.c[PROPERTY_COLUMN.get(name, name)].type
        if isinstance(col_type, (SmallInteger, Integer)):
            out[name] = {"type": "integer"}
        elif isinstance(col_type, Float):
            out[name] = {"type": "number"}
        elif isinstance(col_type, DateTime):
            out[name] = {"type": "string", "format": "date-time"}
        elif isinstance(col_type, Date):
            out[name] = {"type": "string", "format": "date"}
        else:
            out[name] = {"type": "string"}
    for key in attrs.extra:
        out[key] = {"description": "an attribute of the object, where it has one"}
    return out


def _zoom_matrices(ts: TileSet, rules: LayerRules) -> list[str]:
    return [m for m in ts.matrix_ids() if rules.min_zoom <= web_mercator_zoom(ts, m) <= rules.max_zoom]


def tileset(base: str, collection: str, ts: TileSet, rules: LayerRules, state: LayerState,
            props: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The OGC TileSet metadata of one collection in one tile matrix set."""
    matrices = _zoom_matrices(ts, rules)
    doc: dict[str, Any] = {
        "title": f"{title_of(rules.layer)} – {ts.id}",
        "description": f"Mapbox vector tiles of {collection} (one layer named {collection!r}); "
                       "empty tiles within the limits are 204 No Content",
        **_tms_fields(ts),
        "links": _tileset_links(base, collection, ts),
        "tileMatrixSetLimits": [lim.as_json() for lim in state.limits],
        "version": str(state.version),
        "mediaTypes": [VECTOR_TILE],
        "layers": [{
            "id": collection,
            "title": title_of(rules.layer),
            "dataType": "vector",
            "featureType": collection,
            "propertiesSchema": {"type": "object", "properties": props},
            "links": [_link(f"{REL}geodata", JSON, f"{base}/collections/{collection}", title_of(rules.layer))],
        }],
    }
    if matrices:
        doc["layers"][0]["minTileMatrix"], doc["layers"][0]["maxTileMatrix"] = matrices[0], matrices[-1]
    if ts.tms.crs.srs.endswith("/4490"):
        doc["epoch"] = 2000.0  # CGCS2000's coordinate epoch
    if state.extent_crs84 is not None:
        w, s, e, n = state.extent_crs84
        doc["boundingBox"] = {"lowerLeft": [w, s], "upperRight": [e, n], "crs": CRS84_URI}
        if state.limits:
            first = state.limits[0]
            doc["centerPoint"] = {"coordinates": [(w + e) / 2, (s + n) / 2], "crs": CRS84_URI,
                                  "tileMatrix": first.matrix}
    return doc


def tilejson(base: str, collection: str, ts: TileSet, rules: LayerRules, state: LayerState,
             props: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """TileJSON 3.0.0 of the same tileset (zoom numbers are the set's matrix ids; ``crs`` is an extension)."""
    matrices = _zoom_matrices(ts, rules)
    zooms = [int(m) for m in matrices] or [int(ts.matrix_ids()[0])]
    fields = {name: _TILEJSON_TYPES.get(p.get("type"), "String or Number") for name, p in props.items()}
    doc: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": f"{collection} ({ts.id})",
        "description": title_of(rules.layer),
        "version": "1.0.0",
        "scheme": "xyz",
        "tiles": [f"{tileset_url(base, collection, ts)}/{{z}}/{{y}}/{{x}}"],
        "minzoom": min(zooms),
        "maxzoom": max(zooms),
        "vector_layers": [{"id": collection, "description": title_of(rules.layer), "fields": fields,
                           "minzoom": min(zooms), "maxzoom": max(zooms)}],
        "crs": str(ts.tms.crs.srs),
        "tileMatrixSet": f"{base}/tileMatrixSets/{ts.id}",
    }
    if state.extent_crs84 is not None:
        w, s, e, n = state.extent_crs84
        doc["bounds"] = [w, s, e, n]
        doc["center"] = [(w + e) / 2, (s + n) / 2, min(max(zooms), min(zooms) + 2)]
    return doc


_TILEJSON_TYPES = {"integer": "Number", "number": "Number", "string": "String", "boolean": "Boolean"}


def tile_matrix_sets(base: str) -> dict[str, Any]:
    """The list of every registered tile matrix set (``/tileMatrixSets``)."""
    items = []
    for tms_id in registry.tile_matrix_sets().list():
        t = registry.get(tms_id)
        item: dict[str, Any] = {"id": tms_id, "title": t.title or tms_id, "crs": str(t.crs.srs),
                                "links": [_link("self", JSON, f"{base}/tileMatrixSets/{tms_id}", f"{tms_id} definition")]}
        if t.uri:
            item["uri"] = str(t.uri)
        items.append(item)
    return {"tileMatrixSets": items,
            "links": [_link("self", JSON, f"{base}/tileMatrixSets", "Tile matrix sets")]}


def tile_matrix_sets_html(doc: dict[str, Any]) -> str:
    """The list as a plain HTML page (no scripts, nothing from the internet)."""
    items = "".join(f'<li><a href="{html.escape(i["links"][0]["href"])}">{html.escape(i["id"])}</a>: '
                    f'{html.escape(i["title"])} ({html.escape(i["crs"])})</li>' for i in doc["tileMatrixSets"])
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>Tile matrix sets</title></head>'
            f"<body><h1>Tile matrix sets</h1><ul>{items}</ul></body></html>")


def tile_matrix_set(tms_id: str) -> dict[str, Any]:
    """One definition as OGC Two Dimensional Tile Matrix Set 2.0 JSON (``KeyError`` for an unknown id)."""
    return json.loads(registry.get(tms_id).model_dump_json(exclude_none=True))


def _param(name: str, description: str, schema: dict[str, Any], where: str = "path") -> dict[str, Any]:
    return {"name": name, "in": where, "required": where == "path", "description": description, "schema": schema}


def openapi_paths(collections: list[str], tile_matrix_sets: list[str]) -> dict[str, Any]:
    """OpenAPI 3.0 paths of the tile routes (pygeoapi documents only its own routes)."""
    tms = _param("tileMatrixSetId", "Tile matrix set", {"type": "string", "enum": tile_matrix_sets})
    address = [tms, _param("tileMatrix", "Tile matrix (zoom level) id", {"type": "string", "pattern": "^[0-9]+$"}),
               _param("tileRow", "Row, from the top", {"type": "integer", "minimum": 0}),
               _param("tileCol", "Column, from the left", {"type": "integer", "minimum": 0})]
    errors = {"400": {"description": "Malformed tile address or query (OGC exception JSON)"},
              "404": {"description": "Unknown collection or tile matrix set, or a tile outside the tileset's "
                                     "tileMatrixSetLimits (OGC exception JSON)"}}
    json_ok = {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}}

    def get(op_id: str, summary: str, params: list[dict[str, Any]], responses: dict[str, Any],
            tag: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "operationId": op_id, "tags": [tag], "parameters": params,
                        "responses": {**responses, **errors}}}

    paths: dict[str, Any] = {
        "/tileMatrixSets": get("getTileMatrixSetsList", "Tile matrix sets", [], {"200": json_ok}, "tiles"),
        "/tileMatrixSets/{tileMatrixSetId}": get(
            "getTileMatrixSet", "A tile matrix set (OGC TMS 2.0)",
            [_param("tileMatrixSetId", "Tile matrix set", {"type": "string"})], {"200": json_ok}, "tiles"),
    }
    f_tileset = _param("f", "json: OGC tileset metadata; tilejson: TileJSON 3.0.0",
                       {"type": "string", "enum": ["json", "tilejson"], "default": "json"}, "query")
    selection = _param("collections", "Collections to include, one MVT layer each (comma-separated; default all)",
                       {"type": "array", "items": {"type": "string", "enum": collections}}, "query")
    paths["/tiles"] = get("getDatasetTileSetsList", "Combined vector tilesets of all collections", [],
                          {"200": json_ok}, "tiles")
    paths["/tiles/{tileMatrixSetId}"] = get("getDatasetTileSet", "Combined vector tileset", [tms, f_tileset, selection],
                                            {"200": json_ok}, "tiles")
    paths["/tiles/{tileMatrixSetId}/{tileMatrix}/{tileRow}/{tileCol}"] = get(
        "getDatasetTile", "A Mapbox vector tile with one layer per collection", [*address, selection],
        {"200": {"description": "The tile (gzip-encoded when the client accepts it)",
                 "content": {VECTOR_TILE: {"schema": {"type": "string", "format": "binary"}}}},
         "204": {"description": "No feature in this tile"},
         "304": {"description": "Not modified (If-None-Match)"}}, "tiles")
    for c in collections:
        base = f"/collections/{c}/tiles"
        paths[base] = get(f"getTileSetsList.{c}", f"Vector tilesets of {c}", [], {"200": json_ok}, c)
        paths[f"{base}/{{tileMatrixSetId}}"] = get(f"getTileSet.{c}", f"Vector tileset of {c}", [tms, f_tileset],
                                                   {"200": json_ok}, c)
        paths[f"{base}/{{tileMatrixSetId}}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"] = get(
            f"getTile.{c}", f"A Mapbox vector tile of {c} (layer {c!r})", address,
            {"200": {"description": "The tile (gzip-encoded when the client accepts it)",
                     "content": {VECTOR_TILE: {"schema": {"type": "string", "format": "binary"}}}},
             "204": {"description": "No feature in this tile"},
             "304": {"description": "Not modified (If-None-Match)"}}, c)
    return paths


# ---------------------------------------------------------------------------------------------- dataset


@dataclass(frozen=True)
class DatasetLayer:
    """One collection of a combined tileset: its tiling rules, data state and attribute types."""

    collection: str
    rules: LayerRules
    state: LayerState
    props: dict[str, dict[str, Any]]


def _selection_query(selection: list[str] | None) -> str:
    return "" if not selection else "?collections=" + ",".join(selection)


def dataset_tileset_url(base: str, ts: TileSet) -> str:
    return f"{base}/tiles/{ts.id}"


def _dataset_links(base: str, ts: TileSet, selection: list[str] | None) -> list[dict[str, Any]]:
    url, query = dataset_tileset_url(base, ts), _selection_query(selection)
    return [
        _link("self", JSON, f"{url}{query}", f"combined vector tiles in {ts.id}"),
        _link("alternate", TILEJSON, f"{url}?f=tilejson" + (f"&{query[1:]}" if query else ""), "TileJSON 3.0.0"),
        _link(f"{REL}tiling-scheme", JSON, f"{base}/tileMatrixSets/{ts.id}", f"{ts.id} definition"),
        _link("item", VECTOR_TILE, f"{url}/{TILE_TEMPLATE}{query}", "Mapbox vector tile, one layer per collection",
              templated=True),
    ]


def dataset_tileset_list(base: str, sets: list[TileSet]) -> dict[str, Any]:
    """The dataset's tilesets list (``/tiles``): one combined tileset per tile matrix set."""
    return {
        "links": [_link("self", JSON, f"{base}/tiles", "Combined vector tilesets"),
                  _link(f"{REL}data", JSON, f"{base}/collections", "The collections")],
        "tilesets": [{"title": f"Benxi CIM – all layers – {ts.id}", **_tms_fields(ts),
                      "links": [link for link in _dataset_links(base, ts, None)
                                if link["rel"] in ("self", f"{REL}tiling-scheme", "item")]}
                     for ts in sets],
    }


def _union_limits(layers: list[DatasetLayer]) -> list[Limits]:
    """Per matrix, the rectangle covering every layer's limits (in the set's matrix order)."""
    by_matrix: dict[str, Limits] = {}
    for layer in layers:
        for lim in layer.state.limits:
            old = by_matrix.get(lim.matrix)
            by_matrix[lim.matrix] = lim if old is None else Limits(
                lim.matrix, min(old.min_row, lim.min_row), max(old.max_row, lim.max_row),
                min(old.min_col, lim.min_col), max(old.max_col, lim.max_col))
    return sorted(by_matrix.values(), key=lambda x: int(x.matrix))


def _union_extent(layers: list[DatasetLayer]) -> tuple[float, float, float, float] | None:
    boxes = [x.state.extent_crs84 for x in layers if x.state.extent_crs84 is not None]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))


def dataset_tileset(base: str, ts: TileSet, layers: list[DatasetLayer], selection: list[str] | None,
                    ) -> dict[str, Any]:
    """The OGC TileSet metadata of the combined tiles of some collections in one tile matrix set."""
    limits = _union_limits(layers)
    doc: dict[str, Any] = {
        "title": f"Benxi CIM – {', '.join(x.collection for x in layers)} – {ts.id}",
        "description": "Mapbox vector tiles with one layer per collection, named by its id, drawn in this "
                       "order; empty tiles within the limits are 204 No Content",
        **_tms_fields(ts),
        "links": _dataset_links(base, ts, selection),
        "tileMatrixSetLimits": [lim.as_json() for lim in limits],
        "version": ",".join(f"{x.collection}:{x.state.version}" for x in layers),
        "mediaTypes": [VECTOR_TILE],
        "layers": [],
    }
    for x in layers:
        layer: dict[str, Any] = {
            "id": x.collection, "title": title_of(x.rules.layer), "dataType": "vector", "featureType": x.collection,
            "propertiesSchema": {"type": "object", "properties": x.props},
            "links": [_link(f"{REL}geodata", JSON, f"{base}/collections/{x.collection}", title_of(x.rules.layer))],
        }
        matrices = _zoom_matrices(ts, x.rules)
        if matrices:
            layer["minTileMatrix"], layer["maxTileMatrix"] = matrices[0], matrices[-1]
        if x.state.extent_crs84 is not None:
            w, s, e, n = x.state.extent_crs84
            layer["boundingBox"] = {"lowerLeft": [w, s], "upperRight": [e, n], "crs": CRS84_URI}
        doc["layers"].append(layer)
    if ts.tms.crs.srs.endswith("/4490"):
        doc["epoch"] = 2000.0
    extent = _union_extent(layers)
    if extent is not None:
        w, s, e, n = extent
        doc["boundingBox"] = {"lowerLeft": [w, s], "upperRight": [e, n], "crs": CRS84_URI}
        if limits:
            doc["centerPoint"] = {"coordinates": [(w + e) / 2, (s + n) / 2], "crs": CRS84_URI,
                                  "tileMatrix": limits[0].matrix}
    return doc


def dataset_tilejson(base: str, ts: TileSet, layers: list[DatasetLayer], selection: list[str] | None,
                     ) -> dict[str, Any]:
    """TileJSON 3.0.0 of the combined tiles: one ``vector_layers`` entry per collection, with its zooms."""
    vector_layers = []
    for x in layers:
        zooms = [int(m) for m in _zoom_matrices(ts, x.rules)] or [int(ts.matrix_ids()[0])]
        fields = {name: _TILEJSON_TYPES.get(p.get("type"), "String or Number") for name, p in x.props.items()}
        vector_layers.append({"id": x.collection, "description": title_of(x.rules.layer), "fields": fields,
                              "minzoom": min(zooms), "maxzoom": max(zooms)})
    doc: dict[str, Any] = {
        "tilejson": "3.0.0",
        "name": f"Benxi CIM ({ts.id})",
        "description": ", ".join(title_of(x.rules.layer) for x in layers),
        "version": "1.0.0",
        "scheme": "xyz",
        "tiles": [f"{dataset_tileset_url(base, ts)}/{{z}}/{{y}}/{{x}}{_selection_query(selection)}"],
        "minzoom": min(v["minzoom"] for v in vector_layers),
        "maxzoom": max(v["maxzoom"] for v in vector_layers),
        "vector_layers": vector_layers,
        "crs": str(ts.tms.crs.srs),
        "tileMatrixSet": f"{base}/tileMatrixSets/{ts.id}",
    }
    extent = _union_extent(layers)
    if extent is not None:
        w, s, e, n = extent
        doc["bounds"] = [w, s, e, n]
        doc["center"] = [(w + e) / 2, (s + n) / 2, min(doc["maxzoom"], max(doc["minzoom"], 14))]
    return doc


# ---------------------------------------------------------------------------------------------- map tiles

MAP_CONFORMANCE = [
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/png",
    "http://www.opengis.net/spec/ogcapi-tiles-1/1.0/conf/jpeg",
]
STYLE_TITLES = {"hillshade": "Hillshade (grey relief, lit from the north-west)",
                "terrain-rgb": "Terrain-RGB heights (Mapbox encoding: -10000 + (R·65536 + G·256 + B)·0.1 m)",
                "visual": "The image as captured"}


def map_tiles_url(base: str, collection: str, style: str | None) -> str:
    """``/collections/{c}/map/tiles`` (the default style) or ``/collections/{c}/styles/{style}/map/tiles``."""
    return f"{base}/collections/{collection}" + (f"/styles/{style}" if style else "") + "/map/tiles"


def _map_links(base: str, collection: str, style: str | None, ts: TileSet, media_types: dict[str, str],
               ) -> list[dict[str, Any]]:
    url = f"{map_tiles_url(base, collection, style)}/{ts.id}"
    links = [_link("self", JSON, url, f"{collection} map tiles in {ts.id}"),
             _link("alternate", TILEJSON, f"{url}?f=tilejson", "TileJSON 3.0.0"),
             _link(f"{REL}tiling-scheme", JSON, f"{base}/tileMatrixSets/{ts.id}", f"{ts.id} definition")]
    links += [_link("item", mt, f"{url}/{TILE_TEMPLATE}?f={f}", f"{f.upper()} map tile", templated=True)
              for f, mt in media_types.items()]
    links.append(_link(f"{REL}geodata", JSON, f"{base}/collections/{collection}", collection))
    return links


def map_tileset_list(base: str, collection: str, style: str | None, sets: list[TileSet],
                     media_types: dict[str, str]) -> dict[str, Any]:
    url = map_tiles_url(base, collection, style)
    return {
        "links": [_link("self", JSON, url, f"{collection} map tilesets"),
                  _link(f"{REL}geodata", JSON, f"{base}/collections/{collection}", collection)],
        "tilesets": [{"title": f"{collection} – {ts.id}", "dataType": "map", "crs": str(ts.tms.crs.srs),
                      **({"tileMatrixSetURI": str(ts.tms.uri)} if ts.tms.uri else {}),
                      "links": [x for x in _map_links(base, collection, style, ts, media_types)
                                if x["rel"] in ("self", f"{REL}tiling-scheme", "item")]}
                     for ts in sets],
    }


def map_tileset(base: str, collection: str, style: str, default: bool, ts: TileSet, media_types: dict[str, str],
                version: int, extent_crs84: tuple[float, float, float, float], tile_limits: list[Limits],
                ) -> dict[str, Any]:
    """The OGC TileSet metadata of a raster's map tiles in one tile matrix set and style."""
    doc: dict[str, Any] = {
        "title": f"{collection} – {style} – {ts.id}",
        "description": f"{STYLE_TITLES.get(style, style)}; tiles without data within the limits are 204 No Content",
        "dataType": "map",
        "crs": str(ts.tms.crs.srs),
        **({"tileMatrixSetURI": str(ts.tms.uri)} if ts.tms.uri else {}),
        "links": _map_links(base, collection, None if default else style, ts, media_types),
        "tileMatrixSetLimits": [lim.as_json() for lim in tile_limits],
        "version": str(version),
        "mediaTypes": list(media_types.values()),
        "style": {"id": style, "title": STYLE_TITLES.get(style, style)},
    }
    if ts.tms.crs.srs.endswith("/4490"):
        doc["epoch"] = 2000.0
    w, s, e, n = extent_crs84
    doc["boundingBox"] = {"lowerLeft": [w, s], "upperRight": [e, n], "crs": CRS84_URI}
    if tile_limits:
        doc["centerPoint"] = {"coordinates": [(w + e) / 2, (s + n) / 2], "crs": CRS84_URI,
                              "tileMatrix": tile_limits[-1].matrix}
    return doc


def map_tilejson(base: str, collection: str, style: str, default: bool, ts: TileSet, fmt: str, version: int,
                 extent_crs84: tuple[float, float, float, float], tile_limits: list[Limits]) -> dict[str, Any]:
    """TileJSON 3.0.0 of the same tileset, tiles in ``fmt`` (``encoding: mapbox`` for Terrain-RGB)."""
    zooms = [int(x.matrix) for x in tile_limits] or [int(ts.matrix_ids()[0])]
    url = f"{map_tiles_url(base, collection, None if default else style)}/{ts.id}"
    w, s, e, n = extent_crs84
    doc: dict[str, Any] = {
        "tilejson": "3.0.0", "name": f"{collection} {style} ({ts.id})", "description": STYLE_TITLES.get(style, style),
        "version": "1.0.0", "scheme": "xyz", "tiles": [f"{url}/{{z}}/{{y}}/{{x}}?f={fmt}"],
        "minzoom": min(zooms), "maxzoom": max(zooms), "bounds": [w, s, e, n],
        "center": [(w + e) / 2, (s + n) / 2, max(zooms)], "tileSize": 256,
        "crs": str(ts.tms.crs.srs), "tileMatrixSet": f"{base}/tileMatrixSets/{ts.id}", "dataVersion": str(version),
    }
    if style == "terrain-rgb":
        doc["encoding"] = "mapbox"
    return doc


def map_openapi_paths(rasters: dict[str, tuple[str, ...]], tile_matrix_sets: list[str]) -> dict[str, Any]:
    """OpenAPI 3.0 paths of the rasters' map tile routes (raster name → its styles)."""
    tms = _param("tileMatrixSetId", "Tile matrix set", {"type": "string", "enum": tile_matrix_sets})
    address = [tms, _param("tileMatrix", "Tile matrix (zoom level) id", {"type": "string", "pattern": "^[0-9]+$"}),
               _param("tileRow", "Row, from the top", {"type": "integer", "minimum": 0}),
               _param("tileCol", "Column, from the left", {"type": "integer", "minimum": 0})]
    errors = {"400": {"description": "Malformed tile address or query (OGC exception JSON)"},
              "404": {"description": "Unknown collection, style or tile matrix set, or a tile outside the "
                                     "tileset's tileMatrixSetLimits (OGC exception JSON)"}}
    json_ok = {"description": "OK", "content": {JSON: {"schema": {"type": "object"}}}}
    image = {"200": {"description": "The map tile", "content": {
                 mt: {"schema": {"type": "string", "format": "binary"}}
                 for mt in ("image/png", "image/jpeg", "image/webp")}},
             "204": {"description": "No data in this tile"}, "304": {"description": "Not modified (If-None-Match)"}}

    def get(op_id: str, summary: str, params: list[dict[str, Any]], responses: dict[str, Any],
            tag: str) -> dict[str, Any]:
        return {"get": {"summary": summary, "operationId": op_id, "tags": [tag], "parameters": params,
                        "responses": {**responses, **errors}}}

    paths: dict[str, Any] = {}
    for name, styles in rasters.items():
        for style in (None, *styles):
            base = f"/collections/{name}" + (f"/styles/{style}" if style else "") + "/map/tiles"
            label = f"{name}" + (f" ({style})" if style else "")
            op = f"{name}" + (f".{style}" if style else "")
            f_tile = _param("f", "Image format", {"type": "string", "enum": ["png", "jpeg", "webp"]}, "query")
            f_set = _param("f", "json: OGC tileset metadata; tilejson: TileJSON 3.0.0",
                           {"type": "string", "enum": ["json", "tilejson"], "default": "json"}, "query")
            paths[base] = get(f"getMapTileSetsList.{op}", f"Map tilesets of {label}", [], {"200": json_ok}, name)
            paths[f"{base}/{{tileMatrixSetId}}"] = get(f"getMapTileSet.{op}", f"Map tileset of {label}",
                                                       [tms, f_set], {"200": json_ok}, name)
            paths[f"{base}/{{tileMatrixSetId}}/{{tileMatrix}}/{{tileRow}}/{{tileCol}}"] = get(
                f"getMapTile.{op}", f"A map tile of {label}", [*address, f_tile], image, name)
    return paths
