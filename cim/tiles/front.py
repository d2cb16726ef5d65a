"""The tile cache served by a front web server (nginx): the ``current`` links it reads, and its configuration.

Through the app a cached tile costs ~1.5 ms of a Python worker (routing, address and limits checks, a
version read, the file); nginx sends the same file in ~0.1 ms (bench/README.md). So in production nginx
answers cached tiles of the **public** collections itself and proxies everything else to the app:

- :class:`CurrentLinks` (a thread in each app worker, every ``cim.tile_cache_links_s`` seconds) points
  ``{collection}/mvt/{tms}/current`` at the version folder of the data as it is now, for the public
  collections and for the anonymous combined tiles (``_tiles/mvt-{public collections}/{tms}/current``);
  restricted collections get no link. A write to a layer is seen by the next pass: nginx serves the old
  tiles for at most that long after it (clients hold them ``cim.tiles.max_age`` seconds anyway), then
  misses until the app has built the new version's tiles.
- :func:`nginx_config` (``cim deploy nginx``) writes the ``map``s, ``upstream`` and ``server`` block:
  ``/collections/{public}/tiles/{tms}/{z}/{row}/{col}`` and ``/tiles/{tms}/{z}/{row}/{col}`` from the
  cache's files when the request has no query, no credentials (``X-API-Key``, ``Authorization``: the app
  checks them, and answers 401 for bad ones), no ``If-None-Match`` (the app answers 304 from one key read)
  and accepts gzip (the files are gzip: other clients get the app's decompressed answer); a missing file
  (not cached yet, or a new data version) goes to the app, which builds and stores it. Answers carry the
  app's headers: ``Content-Type``, ``Content-Encoding: gzip``, ``Vary``, ``Cache-Control``, and the ETag
  of :func:`cim.tiles.endpoints.tile_etag` (the version is the name of the folder ``current`` resolves
  to: ``$realpath_root``, read before the file is opened, so a link swapped in between gives an older
  ETag with newer bytes, never the reverse). An empty tile is a 204, as from the app. The app sends no
  CORS headers on tiles, so neither does nginx.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cim.tiles.endpoints import DATASET, VectorTileEndpoints, dataset_kind

__all__ = ["CurrentLinks", "FrontConfig", "nginx_config", "public_collections"]

LOG = logging.getLogger("cim.tiles.front")


def public_collections(collections: Iterable[str], restricted: Iterable[str], auth_enabled: bool) -> list[str]:
    """The collections anyone may read (configuration order): the only ones a front server may serve."""
    hidden = {c.lower() for c in restricted} if auth_enabled else set()
    return [c for c in collections if c.lower() not in hidden]


class CurrentLinks:
    """Keeps the cache's ``current`` links at the data versions of the public collections' tiles."""

    def __init__(self, tiles: VectorTileEndpoints, public: list[str], every_s: float) -> None:
        self.tiles, self.public, self.every_s = tiles, public, every_s
        self._failed_at = -60.0

    def refresh(self) -> int:
        """One pass; the number of links that moved."""
        tiles, cache = self.tiles, self.tiles.cache
        engine, t = tiles.database()
        moved = 0
        with engine.connect() as conn:
            versions = {c: tiles._versions(conn, t, tiles.collections[c]) for c in self.public}
            links = [(c, "mvt", tiles.tile_version(conn, versions[c])) for c in self.public]
            links.append((DATASET, dataset_kind(self.public), tiles.dataset_version(conn, self.public, versions)))
        for collection, kind, version in links:
            for tms in tiles.sets:
                moved += cache.publish(collection, kind, tms, version)
        return moved

    def start(self) -> threading.Thread:
        """The daemon thread that refreshes every ``every_s`` seconds (a failed pass is logged, at most once
        a minute, and tried again)."""
        thread = threading.Thread(target=self._run, name="cim-tile-cache-links", daemon=True)
        thread.start()
        return thread

    def _run(self) -> None:
        while True:
            try:
                self.refresh()
            except Exception as exc:  # the database is down or busy: the links stay, the app still checks
                if time.monotonic() - self._failed_at > 60:
                    self._failed_at = time.monotonic()
                    LOG.warning("tile cache links not refreshed (%s: %s); retrying every %s s",
                                type(exc).__name__, exc, self.every_s)
            time.sleep(self.every_s)


@dataclass(frozen=True)
class FrontConfig:
    """What the front server's configuration is generated from."""

    app: str  # the app's address as the front server reaches it: host:port
    cache_dir: Path  # the tile cache folder as the front server sees it
    public: list[str]  # public collections with vector tiles (configuration order)
    tile_matrix_sets: list[str]
    max_age: int  # cim.tiles.max_age
    max_body_bytes: int  # cim.limits.max_body_bytes
    listen: str = "80"
    server_name: str = "_"
    source: str = "config.yml"


_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def _alternatives(names: list[str]) -> str:
    for name in names:
        if not _NAME.match(name):
            raise ValueError(f"{name!r}: the front server maps only ids of letters, digits, '.', '_' and '-'")
    return "|".join(re.escape(n) for n in names)


def nginx_config(c: FrontConfig) -> str:
    """The nginx configuration (http context: ``/etc/nginx/conf.d/cim.conf``) of the front, as described in
    the module docstring."""
    cache = str(c.cache_dir).rstrip("/")
    if any(ch in cache for ch in ' ;"{}$\'\\'):
        raise ValueError(f"tile cache folder {cache!r}: spaces, quotes, '$', ';', braces or backslashes in it "
                         "cannot be written into an nginx configuration")
    tms = _alternatives(c.tile_matrix_sets)
    etag = 'W/"$cim_tile_version-$cim_z-$cim_row-$cim_col"'  # cim.tiles.endpoints.tile_etag
    proxy = """        proxy_pass http://cim_app;
        include /etc/nginx/proxy_params;
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_read_timeout 300s;"""
    address = r"(?<cim_z>[0-9]+)/(?<cim_row>[0-9]+)/(?<cim_col>[0-9]+)$"
    tile_body = f"""        error_page 418 = @cim_app;
        if ($cim_static = 0) {{ return 418; }}
        # the version, read before the file is opened (no link yet, before the app's first pass: empty, and
        # nginx logs that realpath failed; there is no file either, so the app answers)
        set $cim_tile_dir $realpath_root;
        try_files /$cim_z/$cim_row/$cim_col.mvt.gz @cim_tile_miss;
        types {{ }}
        default_type application/vnd.mapbox-vector-tile;
        etag off;
        add_header ETag '{etag}';
        add_header Cache-Control "public, max-age={c.max_age}";
        add_header Content-Encoding gzip;
        add_header Vary Accept-Encoding;"""
    locations = []
    if c.public:
        locations.append(f"""    # vector tiles of the public collections, from the cache ({cache})
    location ~ "^/collections/(?<cim_c>{_alternatives(c.public)})/tiles/(?<cim_tms>{tms})/{address}" {{
        root {cache}/$cim_c/mvt/$cim_tms/current;
{tile_body}
    }}
    # the combined tiles an anonymous client gets (every public collection)
    location ~ "^/tiles/(?<cim_tms>{tms})/{address}" {{
        root {cache}/{DATASET}/{dataset_kind(c.public)}/$cim_tms/current;
{tile_body}
    }}
    # not a tile with data in the version folder: a tile without data is a 204, as from the app (looked up
    # only here, so a tile with data costs no second lookup); anything else is the app's to build
    location @cim_tile_miss {{
        if (-f $cim_tile_dir/$cim_z/$cim_row/$cim_col.empty) {{
            add_header ETag '{etag}';
            add_header Cache-Control "public, max-age={c.max_age}";
            return 204;
        }}
{proxy}
    }}""")
    maps = ""
    if c.public:
        maps = """# served from the cache's files only when the client takes gzip and sends no query, credentials or
# If-None-Match; anything else is the app's (which checks credentials and validators)
map $http_accept_encoding $cim_gzip {
    "~*gzip" 1;
    default 0;
}
map "$request_method|$cim_gzip|$http_x_api_key|$http_authorization|$http_if_none_match|$args" $cim_static {
    "GET|1||||" 1;
    "HEAD|1||||" 1;
    default 0;
}
# the data version: the name of the folder the cache's `current` link resolves to
map $cim_tile_dir $cim_tile_version {
    "~/(?<cim_v>[0-9a-f]{32})$" $cim_v;
    default "";
}
"""
    return f"""# The front of the Benxi CIM service: generated by `cim deploy nginx` from {c.source}. Generate it again
# after changing the collections, cim.auth.restricted, the tile matrix sets, the tile cache folder or
# max_age. Cached tiles of the public collections come from the tile cache's files; everything else,
# restricted collections always, is proxied to the app (docs/deployment.md, cim/tiles/front.py).
# Include it in nginx's http context (Debian: /etc/nginx/conf.d/cim.conf).

upstream cim_app {{
    server {c.app};
    keepalive 32;
}}

{maps}
server {{
    listen {c.listen};
    server_name {c.server_name};
    client_max_body_size {c.max_body_bytes};

{chr(10).join(locations)}

    location / {{
{proxy}
    }}
    location @cim_app {{
{proxy}
    }}
}}
"""
