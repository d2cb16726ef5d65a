"""Corrections to the OpenAPI document pygeoapi generates, found by fuzzing it (tests/test_fuzz.py).

Every format an operation's `f` parameter offers is documented as a media type of its 200 response (pygeoapi
lists JSON-LD, schema+json, TileJSON, CoverageJSON formats it serves but not their media types),
/conformance and /collections get their own OGC responses instead of the landing page's, and /schema and
/queryables are documented as the JSON Schema documents they are, and a process's output in every media type it
can have (GeoPackage or FlatGeobuf, MBTiles or PMTiles).
"""

from __future__ import annotations

from typing import Any

FEATURES = "https://schemas.opengis.net/ogcapi/features/part1/1.0/openapi/ogcapi-features-1.yaml"
# the media types of the OGC API - Features part 1 responses pygeoapi refers to (that file, offline copy in
# ../shared/specs/ogc): a $ref'd response cannot take extra media types, so those are written out inline
_FEATURES_RESPONSES = {"LandingPage": "application/json", "ConformanceDeclaration": "application/json",
                       "Collections": "application/json", "Collection": "application/json",
                       "Features": "application/geo+json", "Feature": "application/geo+json",
                       "InvalidParameter": "application/json"}
_OWN_RESPONSE = {"/conformance": "ConformanceDeclaration", "/collections": "Collections"}
# what `?f=` serves, as the Content-Type the server sends
_MEDIA_TYPES = {"html": "text/html", "jsonld": "application/ld+json", "tilejson": "application/vnd.mapbox.tile+json",
                "jsonfg": "application/vnd.ogc.fg+json", "csv": "text/csv"}


def _formats(op: dict, oas: dict) -> list[str]:
    for param in op.get("parameters", []):
        if "$ref" in param and param["$ref"].startswith("#/components/parameters/"):
            param = oas.get("components", {}).get("parameters", {}).get(param["$ref"].rsplit("/", 1)[1], {})
        if param.get("name") == "f" and param.get("in") == "query":
            return list(param.get("schema", {}).get("enum", []))
    return []


def _inline(response: dict) -> dict:
    ref = response.get("$ref", "")
    name = ref.rsplit("/", 1)[-1]
    if not ref.startswith(FEATURES + "#/components/responses/") or name not in _FEATURES_RESPONSES:
        return response
    media = _FEATURES_RESPONSES[name]
    return {"description": name, "content": {
        media: {"schema": {"$ref": f"{ref}/content/{media.replace('/', '~1')}/schema"}},
        "text/html": {"schema": {"type": "string"}}}}


def process_media_types() -> dict[str, list[str]]:
    """Every media type a process's raw output can have (pygeoapi documents one per process: the first)."""
    from cim.api.downloads import FORMATS as DOWNLOADS
    from cim.api.tile_packages import MEDIA_TYPES as PACKAGES

    return {"cim-download": [mime for _, mime, _ in DOWNLOADS.values()], "cim-tiles-package": list(PACKAGES.values())}


def correct(oas: dict[str, Any]) -> None:
    """Fix the generated document in place."""
    for process, media_types in process_media_types().items():
        ok = oas.get("paths", {}).get(f"/processes/{process}/execution", {}).get("post", {}).get("responses", {}).get("200")
        if ok and isinstance(ok.get("content"), dict) and ok["content"]:
            schema = next(iter(ok["content"].values())).get("schema", {"type": "string"})
            for media in media_types:
                ok["content"].setdefault(media, {"schema": schema})
    components = oas.get("components", {}).get("responses", {})
    queryables = components.get("Queryables", {}).get("content", {})
    if queryables:  # pygeoapi serves /schema and /queryables as JSON Schema documents (application/schema+json),
        # documented as its old {"queryables": [...]} list
        document = {"type": "object", "required": ["properties"],
                    "properties": {"type": {"type": "string"}, "properties": {"type": "object"}}}
        queryables.clear()
        queryables.update({media: {"schema": document} for media in ("application/schema+json", "application/json")})
        queryables["text/html"] = {"schema": {"type": "string"}}
    for path, item in oas.get("paths", {}).items():
        op = item.get("get") if isinstance(item, dict) else None
        if not op or "200" not in op.get("responses", {}):
            continue
        ok = op["responses"]["200"]
        if path in _OWN_RESPONSE:  # pygeoapi 0.24 refers both to the landing page's response
            ok = {"$ref": f"{FEATURES}#/components/responses/{_OWN_RESPONSE[path]}"}
        extra = [_MEDIA_TYPES[f] for f in _formats(op, oas) if f in _MEDIA_TYPES]
        if path.endswith("/coverage"):  # pygeoapi's coverage default is CoverageJSON, documented as GeoJSON
            extra.append("application/prs.coverage+json")
        if extra:
            ok = _inline(ok)
            content = ok.get("content")
            if content is not None:
                for media in extra:
                    content.setdefault(media, {"schema": {"type": "string"} if media.startswith("text/") else {}})
        op["responses"]["200"] = ok
        if "application/ld+json" in extra and "400" in op["responses"]:  # errors come in the asked format too
            bad = _inline(op["responses"]["400"])
            if bad.get("content") is not None:
                bad["content"].setdefault("application/ld+json", {"schema": {}})
            op["responses"]["400"] = bad
