"""The production front: a real nginx, configured by `cim deploy nginx`, in front of a real `cim serve`.

Who answered is read from nginx's access log (``$upstream_addr`` is ``-`` when nginx sent a cached file
itself, the app's address when it proxied). Both backends: the cache's ``current`` links follow the
database's data versions (a case written through the API).
"""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import mapbox_vector_tile
import morecantile
import pytest

from .conftest import AUTH_HEADERS, BACKENDS, DEMO_SEED, DemoDB, Server, free_port, run_cim, start_server, stop_server

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx (scripts/install.sh: nginx-light)")

WM = morecantile.tms.get("WebMercatorQuad")
CENTRE = (123.77, 41.30)
LINKS_S = 0.3  # cim.tile_cache_links_s of the app under test
GZIP = {"Accept-Encoding": "gzip"}
# what must be the same whoever answers
SAME = ("content-type", "content-encoding", "etag", "cache-control", "vary")

WRAPPER = """worker_processes 1;
{user}
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 256; }}
http {{
  log_format front '$request_uri $status $upstream_addr';
  access_log {prefix}/access.log front;
  client_body_temp_path {prefix}/body;
  proxy_temp_path {prefix}/proxy;
  fastcgi_temp_path {prefix}/fastcgi;
  uwsgi_temp_path {prefix}/uwsgi;
  scgi_temp_path {prefix}/scgi;
  include {prefix}/cim.conf;
}}
"""


@dataclass
class Front:
    url: str
    app: Server
    cache: Path
    prefix: Path
    process: subprocess.Popen

    def log(self) -> list[tuple[str, str, str]]:
        path = self.prefix / "access.log"
        return [tuple(line.split(" ", 2)) for line in path.read_text().splitlines()] if path.exists() else []

    def who(self, before: int) -> list[str]:
        """Who answered the requests after the first ``before`` log lines: "nginx" or "app"."""
        deadline = time.monotonic() + 3
        while len(self.log()) <= before and time.monotonic() < deadline:  # written once the answer is sent
            time.sleep(0.02)
        return ["nginx" if upstream == "-" else "app" for _, _, upstream in self.log()[before:]]


def start_nginx(prefix: Path, conf: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    prefix.mkdir(parents=True, exist_ok=True)
    (prefix / "cim.conf").write_text(conf.replace("listen 80;", f"listen 127.0.0.1:{port};"))
    user = "user root;" if os.geteuid() == 0 else ""  # workers must read the test's private temp folders
    (prefix / "nginx.conf").write_text(WRAPPER.format(prefix=prefix, user=user))
    check = subprocess.run(["nginx", "-t", "-c", str(prefix / "nginx.conf"), "-p", str(prefix)],
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    proc = subprocess.Popen(["nginx", "-c", str(prefix / "nginx.conf"), "-p", str(prefix), "-g", "daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=open(prefix / "stderr.log", "w"))
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"nginx did not start:\n{(prefix / 'stderr.log').read_text()}")
        time.sleep(0.1)


@pytest.fixture(scope="module", params=BACKENDS)
def front(request, new_database, tmp_path_factory) -> Iterator[Front]:
    """A small demo city, `cim serve` (links every LINKS_S) and nginx configured by `cim deploy nginx`."""
    db = DemoDB(request.param, new_database(request.param), tmp_path_factory.mktemp(f"front-{request.param}"))
    run_cim("db", "init", env=db.env, check=True)
    run_cim("demo", "--size", "120", "--seed", str(DEMO_SEED), env=db.env, check=True)
    env = {"CIM_TILE_CACHE_LINKS_S": str(LINKS_S)}
    app = start_server(db, env, log_name="front-app.log")
    try:
        port = app.url.rsplit(":", 1)[1]
        conf = run_cim("deploy", "nginx", "--app", f"127.0.0.1:{port}", env={**db.env, **env}, check=True).stdout
        proc, url = start_nginx(db.data_dir / "nginx", conf)
        try:
            yield Front(url, app, db.data_dir / "tile-cache", db.data_dir / "nginx", proc)
        finally:
            proc.terminate()
            proc.wait(10)
    finally:
        stop_server(app)


@pytest.fixture
def client(front) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=front.url, timeout=60) as c:
        yield c


def tile_url(collection: str, z: int, lon: float = CENTRE[0], lat: float = CENTRE[1]) -> tuple[str, morecantile.Tile]:
    t = WM.tile(lon, lat, z)
    return f"/collections/{collection}/tiles/WebMercatorQuad/{t.z}/{t.y}/{t.x}", t


def raw(client: httpx.Client, url: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """The answer with its body as sent (not decoded)."""
    r = client.send(client.build_request("GET", url, headers=GZIP if headers is None else headers), stream=True)
    r._content = b"".join(r.iter_raw())  # the bytes on the wire
    r.close()
    return r


def ids_in(body: bytes, layer: str) -> set[str]:
    doc = mapbox_vector_tile.decode(gzip.decompress(body))
    return {f["properties"]["id"] for f in doc.get(layer, {}).get("features", [])}


def cached(front: Front, collection: str, tile: morecantile.Tile, kind: str = "mvt") -> list[Path]:
    """The tile's files in the version folders (not through the ``current`` link)."""
    return sorted(p for p in (front.cache / collection / kind / "WebMercatorQuad").glob(f"*/{tile.z}/{tile.y}/{tile.x}.*")
                  if p.parts[-4] != "current")


# ---------------------------------------------------------------------------------------------- tests


def test_a_miss_fills_the_cache_then_nginx_sends_the_same_tile(front, client):
    url, tile = tile_url("buildings", 16)
    n = len(front.log())
    first = raw(client, url)
    assert first.status_code == 200 and front.who(n) == ["app"]
    (path,) = cached(front, "buildings", tile)
    assert path.parent.parent.parent.name == os.readlink(path.parent.parent.parent.parent / "current")
    second = raw(client, url)
    assert second.status_code == 200 and front.who(n + 1) == ["nginx"]
    assert second.content == first.content == path.read_bytes() and ids_in(second.content, "buildings")
    assert {h: second.headers.get(h) for h in SAME} == {h: first.headers.get(h) for h in SAME}
    assert second.headers["content-encoding"] == "gzip" and second.headers["content-type"] == \
        "application/vnd.mapbox-vector-tile"
    # a client without gzip gets the app's decompressed answer, same validator
    n = len(front.log())
    plain = client.get(url, headers={"Accept-Encoding": "identity"})
    assert front.who(n) == ["app"] and "content-encoding" not in plain.headers
    assert plain.content == gzip.decompress(first.content) and plain.headers["etag"] == first.headers["etag"]
    # revalidation: 304 (from the app: one key read), whichever server gave the ETag
    again = client.get(url, headers={**GZIP, "If-None-Match": second.headers["etag"]})
    assert again.status_code == 304 and again.headers["etag"] == first.headers["etag"]
    # queries (f=, unknown parameters) are the app's to check
    n = len(front.log())
    assert client.get(url, params={"f": "mvt"}).status_code == 200
    assert client.get(url, params={"bogus": "1"}).status_code == 400
    assert front.who(n) == ["app", "app"]


def test_an_empty_tile_is_204_from_either(front, client):
    doc = client.get("/collections/buildings/tiles/WebMercatorQuad").json()
    lim = next(x for x in doc["tileMatrixSetLimits"] if x["tileMatrix"] == "18")
    for row in range(lim["minTileRow"], lim["maxTileRow"] + 1):
        url = f"/collections/buildings/tiles/WebMercatorQuad/18/{row}/{lim['minTileCol']}"
        n = len(front.log())
        first = raw(client, url)
        if first.status_code == 204:
            break
    else:
        pytest.fail("no empty tile on the limits' first column")
    assert front.who(n) == ["app"]
    second = raw(client, url)
    assert second.status_code == 204 and second.content == b"" and front.who(n + 1) == ["nginx"]
    assert second.headers["etag"] == first.headers["etag"] and "content-encoding" not in second.headers
    assert second.headers["cache-control"] == first.headers["cache-control"]


def test_a_case_written_is_served_by_nginx_after_the_link_moves(front, client):
    lon, lat = 123.7712, 41.3003
    url, tile = tile_url("cases", 15, lon, lat)
    first_id = f"T-{uuid.uuid4().hex[:10]}"

    def write(uid: str) -> None:
        body = {"type": "Feature", "id": uid, "geometry": {"type": "Point", "coordinates": [lon, lat]},
                "properties": {"case_type": "BJ0101", "case_status": "reported",
                               "reported_at": "2026-12-05T08:30:00+08:00", "description": "井盖缺失"}}
        r = client.post("/collections/cases/items", json=body, headers=AUTH_HEADERS)
        assert r.status_code == 201, r.text

    def served(uid: str, timeout: float = 15) -> httpx.Response:
        """nginx's answer once it holds ``uid`` (the link moved, the app rebuilt the tile, nginx sent it)."""
        deadline = time.monotonic() + timeout
        while True:
            n = len(front.log())
            r = raw(client, url)
            if r.status_code == 200 and uid in ids_in(r.content, "cases") and front.who(n) == ["nginx"]:
                return r
            assert time.monotonic() < deadline, f"nginx never served {uid}: {r.status_code} {front.log()[-5:]}"
            time.sleep(LINKS_S / 2)

    write(first_id)
    before = served(first_id)
    second_id = f"T-{uuid.uuid4().hex[:10]}"
    write(second_id)
    after = served(second_id)  # not the old tile forever: the new version, from nginx again
    assert ids_in(after.content, "cases") >= {first_id, second_id}
    assert after.headers["etag"] != before.headers["etag"]
    assert len(cached(front, "cases", tile)) == 1  # the old version's folder is gone
    # a client holding the old tile revalidates into the new one
    assert client.get(url, headers={**GZIP, "If-None-Match": before.headers["etag"]}).status_code == 200


def test_restricted_layers_never_come_from_nginx(front, client):
    url, tile = tile_url("pipelines", 16)
    keyed = raw(client, url, {**GZIP, **AUTH_HEADERS})
    assert keyed.status_code == 200 and ids_in(keyed.content, "pipelines")
    assert cached(front, "pipelines", tile)  # the app cached it...
    assert not (front.cache / "pipelines" / "mvt" / "WebMercatorQuad" / "current").exists()  # ...with no link
    n = len(front.log())
    for path in (url, url.replace("pipelines", "buildings/../pipelines"), url.replace("pipelines", "Pipelines"),
                 f"/tiles/WebMercatorQuad/{tile.z}/{tile.y}/{tile.x}?collections=pipelines"):
        r = client.get(path, headers=GZIP)
        assert r.status_code in (401, 404), (path, r.status_code)
        assert b"pipe_kind" not in r.content
    assert set(front.who(n)) == {"app"}
    # a bad key never gets a public tile from the cache either: the app checks it (401)
    public, _ = tile_url("buildings", 16)
    raw(client, public)
    assert client.get(public, headers={**GZIP, "X-API-Key": "wrong"}).status_code == 401


def test_combined_tiles_anonymous_from_nginx_keyed_from_the_app(front, client):
    t = WM.tile(*CENTRE, 15)
    url = f"/tiles/WebMercatorQuad/{t.z}/{t.y}/{t.x}"
    n = len(front.log())
    first, second = raw(client, url), raw(client, url)
    assert front.who(n) == ["app", "nginx"] and first.status_code == 200
    assert second.content == first.content and second.headers["etag"] == first.headers["etag"]
    layers = set(mapbox_vector_tile.decode(gzip.decompress(second.content)))
    assert "buildings" in layers and not layers & {"pipelines", "pipe-nodes"}
    n = len(front.log())
    keyed = raw(client, url, {**GZIP, **AUTH_HEADERS})
    assert front.who(n) == ["app"] and "pipelines" in mapbox_vector_tile.decode(gzip.decompress(keyed.content))
    assert keyed.headers["etag"] != first.headers["etag"]


def test_tile_cache_lookups_are_counted_in_metrics(front, client):
    def counts() -> dict[str, float]:
        text = httpx.get(f"{front.app.url}/metrics", timeout=30).text
        return {r: sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith("cim_tile_cache_total{") and 'kind="vector"' in line and f'result="{r}"' in line)
                for r in ("hit", "miss")}

    url, _ = tile_url("roads", 15)
    before = counts()
    direct = f"{front.app.url}{url}"
    httpx.get(direct, timeout=30)
    httpx.get(direct, timeout=30)
    after = counts()
    assert after["miss"] == before["miss"] + 1 and after["hit"] == before["hit"] + 1


def test_generated_config_lists_public_collections_only(front):
    conf = (front.prefix / "cim.conf").read_text()
    assert "buildings" in conf and "pipelines" not in conf and "pipe\\-nodes" not in conf and "pipe-nodes" not in conf
