"""The MapLibre style of the city (``/map/style.json``), drawn from our combined vector tiles only.

Offline by design: one vector source (the combined tileset's TileJSON), no base map, no glyphs and no
sprites (so no text labels or icons: nothing a client would fetch from elsewhere). Layers, bottom to top:
terrain, roads (filled by grade, outlined), bridges, pipelines (lines by 管线种类, the colours of CJJ 61's
customary drawing convention), pipe nodes (circles), buildings (extruded by height, coloured by use)
and, close in, the building components' outlines; on top the operations layers (vehicle tracks and
positions, the platform's cases).

Pure function of the public URL and the tile settings: no database, no HTTP.
"""

from __future__ import annotations

from typing import Any

from cim.tiles.mvt import LayerRules

SOURCE = "cim"
TILE_MATRIX_SET = "WebMercatorQuad"  # MapLibre draws Web Mercator only
BACKGROUND = "#f2efe9"

# 管线种类 → colour (the usual colours of Chinese pipeline maps: water blue, rain/sewage brown, gas pink,
# heat orange, power red, telecom green)
PIPE_COLOURS = {"JS": "#0070c0", "YS": "#7f6000", "WS": "#843c0c", "RQ": "#ff00ff", "RL": "#ed7d31",
                "DL": "#ff0000", "TX": "#00b050"}
USAGE_COLOURS = {"residential": "#e8c39e", "commercial": "#f4a582", "office": "#92c5de", "education": "#b8e186",
                 "medical": "#f1b6da", "public": "#c2a5cf", "industrial": "#bababa"}
ROAD_COLOURS = {"主干路": "#ffffff", "次干路": "#fdf6e3", "支路": "#f5f5f5"}


def _match(prop: str, colours: dict[str, str], default: str) -> list[Any]:
    expr: list[Any] = ["match", ["get", prop]]
    for value, colour in colours.items():
        expr += [value, colour]
    return [*expr, default]


def _zooms(rules: dict[str, LayerRules], collection: str) -> dict[str, int]:
    """MapLibre's minzoom of a style layer: the tiles' own (maxzoom is left open: MapLibre over-zooms)."""
    r = rules.get(collection)
    return {} if r is None else {"minzoom": r.min_zoom}


def city_style(base_url: str, rules: dict[str, LayerRules]) -> dict[str, Any]:
    """The MapLibre style (v8) over the served collections (``rules``: collection → its tile rules)."""
    base = base_url.rstrip("/")
    layers: list[dict[str, Any]] = [{"id": "background", "type": "background",
                                     "paint": {"background-color": BACKGROUND}}]

    def add(collection: str, layer: dict[str, Any]) -> None:
        if collection in rules:
            layers.append({"source": SOURCE, "source-layer": collection, **_zooms(rules, collection), **layer})

    add("terrain", {"id": "terrain", "type": "fill", "paint": {"fill-color": "#dfe8d2", "fill-opacity": 0.6}})
    add("roads", {"id": "roads", "type": "fill",
                  "paint": {"fill-color": _match("道路等级", ROAD_COLOURS, "#f5f5f5")}})
    add("roads", {"id": "roads-edge", "type": "line",
                  "paint": {"line-color": "#b0a99f", "line-width": ["interpolate", ["linear"], ["zoom"], 12, 0.3, 18, 1.5]}})
    add("bridges", {"id": "bridges", "type": "fill", "paint": {"fill-color": "#c9c3b8", "fill-outline-color": "#7d766c"}})
    add("pipelines", {"id": "pipelines", "type": "line",
                      "layout": {"line-cap": "round", "line-join": "round"},
                      "paint": {"line-color": _match("pipe_kind", PIPE_COLOURS, "#666666"),
                                "line-width": ["interpolate", ["linear"], ["zoom"], 12, 0.5, 18, 3]}})
    add("pipe-nodes", {"id": "pipe-nodes", "type": "circle",
                       "paint": {"circle-color": _match("pipe_kind", PIPE_COLOURS, "#666666"),
                                 "circle-radius": ["interpolate", ["linear"], ["zoom"], 14, 1.5, 18, 4],
                                 "circle-stroke-color": "#ffffff", "circle-stroke-width": 0.5}})
    add("buildings", {"id": "buildings", "type": "fill-extrusion",
                      "paint": {"fill-extrusion-color": _match("usage", USAGE_COLOURS, "#d9d0c9"),
                                # height arrives from zoom 15 (cim.tiles.layers.buildings.properties); before
                                # it, floors × 3 m, or a low block
                                "fill-extrusion-height": ["coalesce", ["get", "height"],
                                                          ["*", 3, ["coalesce", ["get", "floors"], 3]]],
                                "fill-extrusion-base": 0, "fill-extrusion-opacity": 0.9}})
    add("building-components", {"id": "building-components", "type": "line",
                                "filter": ["==", ["get", "class"], "Storey"],
                                "paint": {"line-color": "#5b5b5b", "line-width": 0.5, "line-opacity": 0.6}})
    # city operations, on top: vehicles' tracks and positions, the platform's cases
    add("vehicle-tracks", {"id": "vehicle-tracks", "type": "line",
                           "paint": {"line-color": "#2b8cbe", "line-width": 1.5, "line-dasharray": [2, 1]}})
    add("vehicle-positions", {"id": "vehicle-positions", "type": "circle",
                              "paint": {"circle-color": "#2b8cbe", "circle-radius": 4,
                                        "circle-stroke-color": "#ffffff", "circle-stroke-width": 1}})
    add("cases", {"id": "cases", "type": "circle",
                  "paint": {"circle-color": "#d7191c", "circle-radius": 5,
                            "circle-stroke-color": "#ffffff", "circle-stroke-width": 1.5}})
    return {
        "version": 8,
        "name": "Benxi CIM city",
        "metadata": {"benxi-cim:tileMatrixSet": TILE_MATRIX_SET},
        "center": [123.77, 41.30],
        "zoom": 15,
        "pitch": 45,
        "sources": {SOURCE: {"type": "vector", "url": f"{base}/tiles/{TILE_MATRIX_SET}?f=tilejson",
                             "attribution": "Benxi CIM"}},
        "layers": layers,
    }
