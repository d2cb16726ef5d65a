"""3D Tiles over HTTP, against running `cim serve` servers on both backends:

- on demand (/collections/{id}/3dtiles/{level}/…): tileset.json validates against the 3D Tiles 1.1 schemas,
  its GLBs pass the Khronos glTF validator, and both are byte for byte what `cim 3dtiles build` writes;
- ETag / Cache-Control / 304, and a data change (a write that bumps the layer's version) changes the ETag and
  the served content;
- bad requests are 4xx OGC exception JSON;
- 3TZ archives, downloaded and from `cim 3dtiles package`, read back through their own index (the 3D Tiles
  Archive Format's lookup, written here from the format's text, not with cim's code);
- the pre-built folder served as static files (/3dtiles/…).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import re
import shutil
import struct
import subprocess
import zipfile
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select

from cim.db.schema import tables_for
from cim.db.versions import bump
from tests import test_3dtiles
from tests.conftest import AUTH_HEADERS, run_cim, start_server, stop_server
from tests.test_3dtiles import VALIDATOR, decode, schema_validator, tiles

# the offline 3D Tiles schemas, shared with tests/test_3dtiles.py (its schema_registry fixture)
tiles_schemas = test_3dtiles.schema_registry

LEVELS = {"buildings": 3, "building-components": 6, "pipe-nodes": 3}
IDENTIFIER = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def fetch_tileset(http: httpx.Client, collection: str, level: int, folder: Path) -> dict:
    """Download a served tileset (tileset.json and every content file) into ``folder``."""
    base = f"/collections/{collection}/3dtiles/{level}"
    r = http.get(f"{base}/tileset.json")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tileset.json").write_bytes(r.content)
    doc = r.json()
    for tile, _, _ in tiles(doc["root"]):
        if "content" in tile:
            uri = tile["content"]["uri"]
            g = http.get(f"{base}/{uri}")
            assert g.status_code == 200 and g.headers["content-type"] == "model/gltf-binary", (uri, g.text[:200])
            (folder / uri).parent.mkdir(parents=True, exist_ok=True)
            (folder / uri).write_bytes(g.content)
    return doc


@pytest.fixture(scope="module")
def served(http_module, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("served3d")
    out = {}
    for collection, level in LEVELS.items():
        fetch_tileset(http_module, collection, level, root / collection)
        out[collection] = root / collection
    return out


@pytest.fixture(scope="module")
def http_module(server):
    with httpx.Client(base_url=server.url, timeout=120, headers=AUTH_HEADERS) as client:  # pipes need a role
        yield client


def content_uris(folder: Path) -> list[str]:
    doc = json.loads((folder / "tileset.json").read_text(encoding="utf-8"))
    return [t["content"]["uri"] for t, _, _ in tiles(doc["root"]) if "content" in t]


def test_on_demand_tilesets_validate_and_their_glbs_pass_the_khronos_validator(served, tiles_schemas):
    validator = schema_validator(tiles_schemas, "tileset.schema.json")
    paths = []
    for collection, folder in served.items():
        doc = json.loads((folder / "tileset.json").read_text(encoding="utf-8"))
        errors = list(validator.iter_errors(doc))
        assert not errors, f"{collection}: {errors[0].message}"
        assert doc["asset"]["version"] == "1.1"
        uris = content_uris(folder)
        assert uris, collection
        paths += [str(folder / u) for u in uris]
        # feature id labels are identifiers (CesiumJS names shader fields after them)
        for u in uris:
            for prim in decode(folder / u):
                assert IDENTIFIER.match(prim["layer"]), prim["layer"]
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the glTF validator runs on node)")
    proc = subprocess.run([node, str(VALIDATOR), *paths], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    assert len(reports) == len(paths)
    for report in reports:
        assert report["errors"] == 0 and report["warnings"] == 0, (report["path"], report["messages"][:5])


def test_on_demand_content_is_what_the_build_command_writes(served, demo_db, tmp_path):
    for collection, level in LEVELS.items():
        out = tmp_path / collection
        run_cim("3dtiles", "build", "--layer", collection, "--cim-level", str(level), "--out", str(out),
                env=demo_db.env, check=True)
        built = json.loads((out / "tileset.json").read_text(encoding="utf-8"))
        ours = json.loads((served[collection] / "tileset.json").read_text(encoding="utf-8"))
        assert ours["root"] == built["root"]  # the tree, volumes, errors and content URIs
        assert ours["asset"] == built["asset"]  # tilesetVersion: a digest of every tile's inputs
        assert sorted(content_uris(out)) == sorted(content_uris(served[collection]))
        for uri in content_uris(out):
            assert (out / uri).read_bytes() == (served[collection] / uri).read_bytes(), uri


def test_etag_cache_control_and_304(http, served):
    uri = content_uris(served["buildings"])[0]
    for path in ("/collections/buildings/3dtiles/3/tileset.json", f"/collections/buildings/3dtiles/3/{uri}"):
        r = http.get(path)
        assert r.status_code == 200
        etag = r.headers["etag"]
        assert etag.startswith('W/"') and "max-age=" in r.headers["cache-control"]
        again = http.get(path, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
        assert http.get(path, headers={"If-None-Match": 'W/"other"'}).status_code == 200
    # the query parameter CesiumJS appends (asset.tilesetVersion) is accepted
    assert http.get(f"/collections/buildings/3dtiles/3/{uri}?v=abc").status_code == 200
    # the levels of one layer have their own validators
    assert (http.get("/collections/buildings/3dtiles/2/tileset.json").headers["etag"]
            != http.get("/collections/buildings/3dtiles/3/tileset.json").headers["etag"])


def test_a_data_change_invalidates_the_served_tiles(http, served, demo_db, tmp_path):
    """A write (with its version bump, as every cim write path does) changes the ETag and the content."""
    folder = served["buildings"]
    uid, uri = None, None
    for u in content_uris(folder):
        table = decode(folder / u)[0]["table"]
        if table["uid"]:
            uid, uri = table["uid"][0], u
            break
    assert uid is not None
    path = f"/collections/buildings/3dtiles/3/{uri}"
    before = http.get(path)
    tileset_etag = http.get("/collections/buildings/3dtiles/3/tileset.json").headers["etag"]
    engine = demo_db.engine()
    t = tables_for(engine)
    co = t.city_object
    with engine.begin() as conn:
        old_name = conn.execute(select(co.c.name).where(co.c.uid == uid)).scalar_one()
        conn.execute(co.update().where(co.c.uid == uid).values(name="改名测试楼"))
        bump(conn, t, ["buildings"])
    try:
        after = http.get(path, headers={"If-None-Match": before.headers["etag"]})
        assert after.status_code == 200 and after.headers["etag"] != before.headers["etag"]
        (tmp_path / "after.glb").write_bytes(after.content)
        table = decode(tmp_path / "after.glb")[0]["table"]
        assert table["name"][table["uid"].index(uid)] == "改名测试楼"
        assert http.get("/collections/buildings/3dtiles/3/tileset.json").headers["etag"] != tileset_etag
        # other layers' tiles are not affected
        nodes = http.get("/collections/pipe-nodes/3dtiles/3/tileset.json")
        assert nodes.status_code == 200
    finally:
        with engine.begin() as conn:
            conn.execute(co.update().where(co.c.uid == uid).values(name=old_name))
            bump(conn, t, ["buildings"])
        engine.dispose()
    restored = http.get(path)
    assert restored.content == before.content  # same inputs, same bytes


@pytest.mark.parametrize("path, status", [
    ("/collections/buildings/3dtiles/9/tileset.json", 404),  # a level buildings have no tilesets at
    ("/collections/buildings/3dtiles/6/tileset.json", 404),
    ("/collections/building-components/3dtiles/3/tileset.json", 404),
    ("/collections/buildings/3dtiles/x/tileset.json", 404),
    ("/collections/terrain/3dtiles/3/tileset.json", 404),  # quantized-mesh, not 3D Tiles
    ("/collections/nowhere/3dtiles/3/tileset.json", 404),
    ("/collections/nowhere/3dtiles", 404),
    ("/collections/buildings/3dtiles/3/content/1/2/3.glb", 404),  # not in the tileset
    ("/collections/buildings/3dtiles/3/content/30/0/0.glb", 404),
    ("/collections/buildings/3dtiles/3/content/a/2/3.glb", 400),
    ("/collections/buildings/3dtiles/3/content/12/2/3.b3dm", 404),
    ("/collections/buildings/3dtiles/3/tileset.json?limit=3", 400),
    ("/collections/buildings/3dtiles/9/package.3tz", 404),
])
def test_bad_requests_are_ogc_exceptions(http, path, status):
    r = http.get(path)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["code"] and body["description"]


def test_level_messages_name_what_exists(http):
    body = http.get("/collections/buildings/3dtiles/6/tileset.json").json()
    assert "CIM2–4" in body["description"] and "building-components" in body["description"]
    listing = http.get("/collections/buildings/3dtiles").json()
    assert [t["cimLevel"] for t in listing["tilesets"]] == [2, 3, 4]


# --- 3TZ ------------------------------------------------------------------------------------------------------------

def read_3tz(path: Path, name: str) -> bytes:
    """One file of a 3TZ through its index (3D Tiles Archive Format 1.3: MD5 of the path, binary search,
    local file header at the offset, its name checked against hash collisions)."""
    data = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        last = zf.infolist()[-1]
        assert last.filename == "@3dtilesIndex1@" and last.compress_type == zipfile.ZIP_STORED and not last.comment
        index = zf.read(last)
    assert len(index) % 24 == 0
    entries = [(struct.unpack_from("<QQ", index, i), struct.unpack_from("<Q", index, i + 16)[0])
               for i in range(0, len(index), 24)]
    keys = [k for k, _ in entries]
    assert keys == sorted(keys)
    want = struct.unpack("<QQ", hashlib.md5(name.encode()).digest())
    i = bisect.bisect_left(keys, want)
    while i < len(keys) and keys[i] == want:
        offset = entries[i][1]
        sig, _, flags, method, _, _, crc, csize, usize, nlen, xlen = struct.unpack_from("<IHHHHHIIIHH", data, offset)
        assert sig == 0x04034B50
        if data[offset + 30:offset + 30 + nlen].decode() == name:
            assert method == 0 and not flags & 0x08 and csize == usize  # stored, sizes in the local header
            start = offset + 30 + nlen + xlen
            return data[start:start + usize]
        i += 1
    raise KeyError(name)


def check_3tz(path: Path, files: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        names = [i.filename for i in zf.infolist()]
    assert names[-1] == "@3dtilesIndex1@" and set(names[:-1]) == set(files)
    for name, content in files.items():
        assert read_3tz(path, name) == content, name
    with pytest.raises(KeyError):
        read_3tz(path, "content/0/0/0.glb")


def test_3tz_download_reads_back(http, tmp_path):
    folder = tmp_path / "served"
    fetch_tileset(http, "buildings", 3, folder)  # as served now (an earlier test rebuilt it)
    r = http.get("/collections/buildings/3dtiles/3/package.3tz")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/vnd.maxar.archive.3tz+zip"
    assert "buildings-cim3.3tz" in r.headers["content-disposition"]
    path = tmp_path / "buildings.3tz"
    path.write_bytes(r.content)
    files = {"tileset.json": (folder / "tileset.json").read_bytes()}
    files.update({u: (folder / u).read_bytes() for u in content_uris(folder)})
    check_3tz(path, files)
    assert http.get("/collections/buildings/3dtiles/3/package.3tz",
                    headers={"If-None-Match": r.headers["etag"]}).status_code == 304


# --- pre-built tilesets: the command line and static serving -------------------------------------------------------

@pytest.fixture(scope="module")
def prebuilt(demo_db, tmp_path_factory):
    """`cim 3dtiles build` into the configured folder (cim.tiles3d.out_dir), and a server publishing it."""
    folder = tmp_path_factory.mktemp("prebuilt3d")
    env = {"CIM_TILES3D": json.dumps({"out_dir": str(folder)})}  # cim.tiles3d.out_dir
    run_cim("3dtiles", "build", "--layer", "buildings", "--cim-level", "3", env={**demo_db.env, **env}, check=True)
    srv = start_server(demo_db, env, log_name="server-prebuilt3d.log")
    yield folder, srv
    stop_server(srv)


def test_prebuilt_tilesets_are_served_as_static_files(prebuilt):
    folder, srv = prebuilt
    tileset = folder / "buildings" / "cim3"
    with httpx.Client(base_url=srv.url, timeout=30, headers=AUTH_HEADERS) as client:
        r = client.get("/3dtiles/buildings/cim3/tileset.json")
        assert r.status_code == 200 and r.content == (tileset / "tileset.json").read_bytes()
        for uri in content_uris(tileset)[:5]:
            g = client.get(f"/3dtiles/buildings/cim3/{uri}")
            assert g.status_code == 200 and g.headers["content-type"] == "model/gltf-binary"
            assert g.content == (tileset / uri).read_bytes()
        again = client.get("/3dtiles/buildings/cim3/tileset.json", headers={"If-None-Match": r.headers["etag"]})
        assert again.status_code == 304
        missing = client.get("/3dtiles/buildings/cim9/tileset.json")
        assert missing.status_code == 404 and missing.json()["code"] == "NotFound"


def test_cli_package_writes_a_3tz_of_the_built_tileset(prebuilt, demo_db, tmp_path):
    folder, _ = prebuilt
    env = {**demo_db.env, "CIM_TILES3D": json.dumps({"out_dir": str(folder)})}
    target = tmp_path / "buildings-cim3.3tz"
    proc = run_cim("3dtiles", "package", str(target), "--layer", "buildings", "--cim-level", "3", env=env)
    assert proc.returncode == 0, proc.stderr
    tileset = folder / "buildings" / "cim3"
    files = {"tileset.json": (tileset / "tileset.json").read_bytes()}
    files.update({u: (tileset / u).read_bytes() for u in content_uris(tileset)})
    check_3tz(target, files)
    # errors name what is wrong, in one line, and write nothing
    not_built = run_cim("3dtiles", "package", str(tmp_path / "r.3tz"), "--layer", "roads", "--cim-level", "3", env=env)
    assert not_built.returncode == 1 and "no tileset.json" in not_built.stderr and "roads" in not_built.stderr
    bad_name = run_cim("3dtiles", "package", str(tmp_path / "r.zip"), "--from", str(tileset), env=env)
    assert bad_name.returncode == 1 and ".3tz" in bad_name.stderr
    bad_level = run_cim("3dtiles", "package", str(tmp_path / "b.3tz"), "--layer", "buildings", "--cim-level", "7",
                        env=env)
    assert bad_level.returncode == 1 and "CIM level 7" in bad_level.stderr
    assert not (tmp_path / "r.3tz").exists() and not (tmp_path / "b.3tz").exists()

