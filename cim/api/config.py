"""The effective pygeoapi configuration and OpenAPI document, written before the server starts.

pygeoapi reads both from files named by ``PYGEOAPI_CONFIG`` / ``PYGEOAPI_OPENAPI`` when its app module is
imported, so ``cim serve`` (or a test) calls :func:`prepare` first: it takes pygeoapi's sections of
config.yml, sets the public URL, and fills each collection's extents from the database.
"""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine

from cim.crs import transformer
from cim.db.queries import extent_statements, to_utc
from cim.db.schema import tables_for
from cim.settings import Settings, config_path, get_settings, load_config_file
from cim.tiles.raster import raster_layers
from cim.tiles.tilesets import map_openapi_paths, openapi_paths
from cim.web import STATIC_URL, TEMPLATES_DIR



def layer_extents(engine: Engine) -> dict[str, dict[str, Any]]:
    """pygeoapi ``extents`` (CRS84 bbox, validity interval) of every layer with data."""
    t = tables_for(engine)
    srid = t.city_object.c.geom.type.srid
    to_crs84 = transformer(srid, "OGC:CRS84")
    out: dict[str, dict[str, Any]] = {}
    from cim.db.models import LAYERS

    with engine.connect() as conn:
        for layer in LAYERS:
            bstmt, tstmt = extent_statements(t, engine.dialect.name, layer)
            b = conn.execute(bstmt).one()
            if b[0] is None:
                continue
            minx, miny, maxx, maxy = to_crs84.transform_bounds(*b, densify_pts=21)
            extent: dict[str, Any] = {"spatial": {"bbox": [round(minx, 7), round(miny, 7), round(maxx, 7), round(maxy, 7)],
                                                  "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}}
            begin, end = conn.execute(tstmt).one()
            if begin is not None:
                # datetime objects: YAML timestamps, which pygeoapi expects (not quoted strings)
                extent["temporal"] = {"begin": to_utc(begin), "end": None if end is None else to_utc(end),
                                      "trs": "http://www.opengis.net/def/uom/ISO-8601/0/Gregorian"}
            out[layer] = extent
    return out


def pygeoapi_config(settings: Settings, engine: Engine) -> dict[str, Any]:
    """pygeoapi's sections of config.yml, completed for this server and database."""
    cfg = copy.deepcopy(load_config_file(config_path()))
    cfg.pop("cim", None)
    server = cfg.setdefault("server", {})
    server["bind"] = {"host": settings.host, "port": settings.port}
    server["url"] = settings.url
    server.setdefault("limits", {})
    server.setdefault("templates", {}).setdefault("path", str(TEMPLATES_DIR))  # corrected pygeoapi templates
    server["map"] = {"url": f"{settings.url}{STATIC_URL}/blank-tile.png",
                     "attribution": (server.get("map") or {}).get("attribution", "")}
    # Asynchronous process jobs (city-wide downloads): pygeoapi runs them in a thread of the worker that
    # accepted them; job records (TinyDB, file-locked) and results are files that every worker reads.
    # Synchronous executions are not jobs, and jobs expire (cim.api.jobs).
    jobs = settings.data_dir / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    server["manager"] = {"name": "cim.api.jobs.CIMJobManager", "connection": str(jobs / "jobs.json"),
                         "output_dir": str(jobs), "retention_s": settings.jobs.retention_s}
    extents = layer_extents(engine)
    # an empty layer (no cases yet): the extent of the city model's data, where its objects will be
    boxes = [e["spatial"]["bbox"] for e in extents.values()]
    city = ([min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes)]
            if boxes else [123.5, 41.0, 124.0, 41.5])
    resources = cfg.setdefault("resources", {})
    for name, res in resources.items():
        for p in res.get("providers", []):
            if p.get("name") == "cim.api.provider.CIMProvider":
                layer = p.get("data")
                # our vector tiles (cim.tiles.endpoints): OGC API - Tiles' link from the collection
                res.setdefault("links", []).append(
                    {"type": "application/json", "rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-vector",
                     "title": "Vector tiles (Mapbox Vector Tiles)", "href": f"{settings.url}/collections/{name}/tiles"})
                if layer in extents:
                    res["extents"] = extents[layer]
                else:  # an empty layer: pygeoapi needs an extent
                    res.setdefault("extents", {"spatial": {"bbox": city}})
    resources.update(raster_resources(settings, engine, set(resources)))
    return cfg


RASTER_TITLES = {"dem": "数字高程模型 DEM (digital elevation model)", "dsm": "数字表面模型 DSM (digital surface model)",
                 "orthophoto": "正射影像 (orthophoto)"}


def raster_resources(settings: Settings, engine: Engine, taken: set[str]) -> dict[str, Any]:
    """A collection per registered raster: pygeoapi's rasterio coverage provider (OGC API – Coverages) over
    its COG, linked to our map tiles (cim.tiles.endpoints.RasterTileEndpoints)."""
    t = tables_for(engine)
    with engine.connect() as conn:
        layers = raster_layers(conn, t, settings.data_dir)
    out: dict[str, Any] = {}
    for layer in layers:
        if layer.name in taken:  # a vector collection has the name: its map tiles stay reachable by URL
            continue
        bbox = transformer(layer.srid, "OGC:CRS84").transform_bounds(*layer.bounds, densify_pts=21)
        out[layer.name] = {
            "type": "collection",
            "title": f"{layer.name}: {RASTER_TITLES.get(layer.kind, layer.kind)}",
            "description": f"{RASTER_TITLES.get(layer.kind, layer.kind)}, {layer.resolution:g} units per cell, "
                           f"EPSG:{layer.srid} (Cloud-Optimized GeoTIFF); map tiles in "
                           f"{', '.join(settings.tiles.tile_matrix_sets)}",
            "keywords": [layer.kind, "raster"],
            "links": [{"type": "application/json", "rel": "http://www.opengis.net/def/rel/ogc/1.0/tilesets-map",
                       "title": "Map tiles", "href": f"{settings.url}/collections/{layer.name}/map/tiles"}],
            "extents": {"spatial": {"bbox": [round(float(v), 7) for v in bbox],
                                    "crs": "http://www.opengis.net/def/crs/OGC/1.3/CRS84"}},
            "providers": [{"type": "coverage", "name": "cim.api.coverage.CIMRasterioProvider", "data": str(layer.path),
                           "format": {"name": "GTiff", "mimetype": "image/tiff"}}],
        }
    return out


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "style": "form", "explode": False,
            "description": description, "schema": schema}


def document_our_parameters(oas: dict[str, Any], layers: list[str]) -> None:
    """Describe the items parameters our own routes answer (pygeoapi documents only its own): output and
    filter CRSs, CQL2 filters, ids, keyset page tokens, the CIM level of the geometry, JSON-FG."""
    from cim.api.features import output_crs_uris

    MAX_IDS = get_settings().limits.max_ids

    crs_list = {"type": "string", "enum": output_crs_uris()}
    ours = [
        _query("crs", "Output CRS (default CRS84), in its own axis order", crs_list),
        _query("bbox-crs", "CRS of bbox (default CRS84)", crs_list),
        _query("datetime", "Objects valid at some time in this instant or interval (RFC 3339, '..' open)",
               {"type": "string"}),
        _query("filter", "CQL2 filter on the queryables (text or JSON)", {"type": "string"}),
        _query("filter-lang", "Language of filter", {"type": "string", "enum": ["cql2-text", "cql2-json"],
                                                      "default": "cql2-text"}),
        _query("filter-crs", "CRS of the filter's geometries (default CRS84)", crs_list),
        _query("ids", f"Only these feature ids (comma-separated, at most {MAX_IDS})",
               {"type": "array", "items": {"type": "string"}, "maxItems": MAX_IDS}),
        _query("after", "Page token of a next link: features after this position", {"type": "integer", "minimum": 0}),
        _query("before", "Page token of a prev link: features before this position",
               {"type": "integer", "minimum": 1}),
    ]
    level = _query("cim_level", "Geometry: the object's 3D geometry at the highest CIM level stored up to this "
                   "one (default: the 2D footprint)", {"type": "integer", "minimum": 1, "maximum": 7})
    formats = {"type": "string", "enum": ["json", "jsonfg", "html", "jsonld", "csv"], "default": "json"}
    f = _query("f", "Output format: GeoJSON (json), JSON-FG (jsonfg), HTML, JSON-LD or CSV", formats)
    for layer in layers:
        for path, extra in ((f"/collections/{layer}/items", ours), (f"/collections/{layer}/items/{{featureId}}", [])):
            op = oas.get("paths", {}).get(path, {}).get("get")
            if op is None:
                continue
            replaced = {q["name"] for q in [*extra, level, f]}
            kept = [q for q in op.get("parameters", []) if q.get("name") not in replaced
                    and not q.get("$ref", "").endswith(("/crs", "/bbox-crs", "/f"))]
            op["parameters"] = kept + [f, level] + (extra if extra else [ours[0]])


def prepare(settings: Settings, engine: Engine) -> tuple[Path, Path]:
    """Write the effective config and OpenAPI document; point pygeoapi's environment variables at them."""
    from pygeoapi.openapi import get_oas

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = settings.data_dir / "pygeoapi-config.yml"
    oas_path = settings.data_dir / "pygeoapi-openapi.yml"
    cfg = pygeoapi_config(settings, engine)
    cfg_path.write_text(yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False), encoding="utf-8")
    oas = get_oas(cfg)
    ours = [name for name, res in cfg.get("resources", {}).items()
            if any(p.get("name") == "cim.api.provider.CIMProvider" for p in res.get("providers", []))]
    document_our_parameters(oas, ours)
    oas.setdefault("paths", {}).update(openapi_paths(ours, settings.tiles.tile_matrix_sets))  # cim.tiles routes
    with engine.connect() as conn:
        rasters = {r.name: r.styles for r in raster_layers(conn, tables_for(engine), settings.data_dir)}
    oas["paths"].update(map_openapi_paths(rasters, settings.tiles.tile_matrix_sets))
    from cim.api.cases import openapi_paths as ops_paths

    for path, ops in ops_paths().items():  # case PATCH, history, related; GPS fixes
        oas["paths"].setdefault(path, {}).update(ops)
    from cim.api.openapi import correct

    correct(oas)  # media types and responses pygeoapi documents wrongly (found by tests/test_fuzz.py)
    oas_path.write_text(yaml.safe_dump(oas, allow_unicode=True, sort_keys=False), encoding="utf-8")
    os.environ["PYGEOAPI_CONFIG"] = str(cfg_path)
    os.environ["PYGEOAPI_OPENAPI"] = str(oas_path)
    return cfg_path, oas_path
