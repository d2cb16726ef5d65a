"""3D Tiles 1.1 tilesets built from the demo city, on both backends, checked from the outside:

- every tileset.json against the 3D Tiles 1.1 JSON schemas (offline, ../shared/specs/3d-tiles-1.1) and every
  GLB's metadata against the same Schema / PropertyTable schemas;
- every GLB through the Khronos glTF validator (npm gltf-validator, tests/js) with no error or warning;
- GLBs decoded with an independent reader (pygltflib) and placed with pyproj, not with our code: bounding
  regions contain their content, a building sits on its CGCS2000 footprint within 5 cm (with a geoid grid
  made here), feature ids name the right objects, pipes are tubes of their diameter around their axis and
  nodes cylinders of their depth;
- geometric errors fall with depth, each object is drawn exactly once (ADD);
- the command line: bad levels and empty levels are one-line errors (exit 1) and write nothing; builds
  resume, rebuilding only the tiles whose objects changed.
"""

from __future__ import annotations

import functools
import json
import math
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pygltflib
import pytest
import shapely
from pyproj import Transformer
from geoalchemy2.shape import to_shape
from sqlalchemy import select, update

from cim.db.schema import tables_for
from cim.tiles3d import NoGeometry, Tiles3DSettings, build_tileset
from cim.tiles3d.content import tile_content
from cim.tiles3d.geodesy import geodesy
from cim.tiles3d.quadtree import Cell
from cim.tiles3d.source import Selection
from cim.tiles3d.specs import check_request

from tests.conftest import ROOT, SHARED, geoid_anomaly, run_cim

SPECS = SHARED / "specs" / "3d-tiles-1.1"
VALIDATOR = ROOT / "tests" / "js" / "validate-gltf.mjs"
# small leaves, so that the demo city's tilesets have several levels (the network has 9,000 objects: it
# gets there with the default leaf size)
SETTINGS = Tiles3DSettings(max_features=60, min_cell_m=64.0)
NETWORK_SETTINGS = Tiles3DSettings()
BUILDS = {  # name → (layers, CIM level)
    "buildings-3": (["buildings"], 3),
    "network-3": (["pipelines", "pipe-nodes"], 3),
    "components-6": (["building-components"], 6),
    "components-5": (["building-components"], 5),
    "roads-2": (["roads"], 2),
    "bridges-3": (["bridges"], 3),
}
TO_ECEF = Transformer.from_crs("EPSG:4550", "EPSG:4978", always_xy=True)  # heights taken as ellipsoidal
ECEF_TO_GEODETIC = Transformer.from_crs("EPSG:4978", "EPSG:4979", always_xy=True)
GK_TO_LONLAT = Transformer.from_crs("EPSG:4550", "EPSG:4490", always_xy=True)
LONLAT_H_TO_ECEF = Transformer.from_crs("EPSG:4979", "EPSG:4978", always_xy=True)
ECEF_TO_GK = Transformer.from_crs("EPSG:4978", "EPSG:4550", always_xy=True)


@pytest.fixture(scope="module")
def engine(demo_db):
    e = demo_db.engine()
    yield e
    e.dispose()


@pytest.fixture(scope="module")
def built(demo_db, engine, tmp_path_factory) -> dict[str, Path]:
    """The demo city's tilesets (name → folder), built in-process once per backend."""
    root = tmp_path_factory.mktemp(f"3dtiles-{demo_db.backend}")
    out = {}
    for name, (layers, level) in BUILDS.items():
        settings = NETWORK_SETTINGS if name == "network-3" else SETTINGS
        report = build_tileset(engine, layers, level, out_dir=root / name, settings=settings)
        assert report.tiles > 0 and report.written == report.tiles
        out[name] = root / name
    return out


# --- reading tilesets and GLBs back, independently of cim.tiles3d ------------------------------------------------

def tiles(tile: dict, parent_transform: np.ndarray | None = None, depth: int = 0):
    """(tile, depth, absolute transform) for every tile of a tileset, root first."""
    local = np.array(tile.get("transform", np.eye(4).T.ravel().tolist()), dtype=float).reshape(4, 4).T
    absolute = local if parent_transform is None else parent_transform @ local
    yield tile, depth, absolute
    for child in tile.get("children", []):
        yield from tiles(child, absolute, depth + 1)


def load_tileset(folder: Path) -> dict:
    return json.loads((folder / "tileset.json").read_text(encoding="utf-8"))


def accessor(gltf: pygltflib.GLTF2, blob: bytes, index: int) -> np.ndarray:
    """An accessor's values (strided views and KHR_mesh_quantization's normalized bytes read as the spec says)."""
    a = gltf.accessors[index]
    view = gltf.bufferViews[a.bufferView]
    dtype = np.dtype({5126: "<f4", 5120: "i1", 5121: "u1", 5123: "<u2", 5125: "<u4"}[a.componentType])
    width = {"SCALAR": 1, "VEC3": 3, "VEC4": 4}[a.type]
    start = (view.byteOffset or 0) + (a.byteOffset or 0)
    stride = view.byteStride or dtype.itemsize * width
    rows = np.frombuffer(blob, dtype="u1", count=stride * (a.count - 1) + dtype.itemsize * width, offset=start)
    arr = np.lib.stride_tricks.as_strided(rows, shape=(a.count, dtype.itemsize * width), strides=(stride, 1))
    arr = np.ascontiguousarray(arr).view(dtype).reshape(a.count, width)
    if a.normalized and a.componentType == 5120:
        arr = np.maximum(arr / 127.0, -1.0)
    return arr if width > 1 else arr.ravel()


def property_table(gltf: pygltflib.GLTF2, blob: bytes, index: int) -> dict[str, list]:
    ext = gltf.extensions["EXT_structural_metadata"]
    table = ext["propertyTables"][index]
    cls = ext["schema"]["classes"][table["class"]]
    out = {}

    def view(i):
        v = gltf.bufferViews[i]
        return blob[v.byteOffset or 0:(v.byteOffset or 0) + v.byteLength]

    for name, prop in table["properties"].items():
        definition = cls["properties"][name]
        if definition["type"] == "STRING":
            data = view(prop["values"])
            offsets = np.frombuffer(view(prop["stringOffsets"]), dtype="<u4")
            out[name] = [data[a:b].decode("utf-8") for a, b in zip(offsets[:-1], offsets[1:])]
        else:
            dtype = {"FLOAT64": "<f8", "INT32": "<i4"}[definition["componentType"]]
            out[name] = np.frombuffer(view(prop["values"]), dtype=dtype).tolist()
        assert len(out[name]) == table["count"]
    return out


def glb_json(path: Path) -> dict:
    """The JSON chunk of a GLB, read by the format's definition (glTF 2.0, 4.4)."""
    data = path.read_bytes()
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    assert chunk_type == 0x4E4F534A
    # EXT_structural_metadata: binary data 8-byte aligned (the BIN chunk's data starts on an 8-byte boundary)
    bin_length, bin_type = struct.unpack_from("<II", data, 20 + chunk_length)
    assert bin_type == 0x004E4942 and (28 + chunk_length) % 8 == 0 and bin_length % 8 == 0
    doc = json.loads(data[20:20 + chunk_length])
    assert all(v.get("byteOffset", 0) % 8 == 0 for v in doc["bufferViews"])
    return doc


def decode(path: Path) -> list[dict]:
    """Each layer of a GLB (its glTF primitives, one per colour, merged by the property table they name):
    positions (glTF axes), normals, feature ids, triangles, layer, table, colours (RGBA per vertex)."""
    st = path.stat()
    return _decode(str(path), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=2048)
def _decode(path: str, _mtime: int, _size: int) -> list[dict]:
    gltf = pygltflib.GLTF2.load_from_bytes(Path(path).read_bytes())
    blob = gltf.binary_blob()
    by_table: dict[int, dict] = {}
    for prim in gltf.meshes[0].primitives:
        features = prim.extensions["EXT_mesh_features"]["featureIds"][0]
        positions = accessor(gltf, blob, prim.attributes.POSITION).astype(float)
        fids = accessor(gltf, blob, prim.attributes._FEATURE_ID_0).astype(int)
        assert features["featureCount"] == len(np.unique(fids))
        colour = np.array(gltf.materials[prim.material].pbrMetallicRoughness.baseColorFactor) * 255
        layer = by_table.setdefault(features["propertyTable"], {
            "positions": [], "normals": [], "fids": [], "triangles": [], "colours": [], "offset": 0,
            "layer": features["label"], "table": property_table(gltf, blob, features["propertyTable"])})
        assert layer["layer"] == features["label"]
        layer["positions"].append(positions)
        layer["normals"].append(accessor(gltf, blob, prim.attributes.NORMAL).astype(float))
        layer["fids"].append(fids)
        layer["triangles"].append(accessor(gltf, blob, prim.indices).reshape(-1, 3).astype(np.int64) + layer["offset"])
        layer["colours"].append(np.broadcast_to(np.round(colour), (len(positions), 4)))
        layer["offset"] += len(positions)
    out = []
    for layer in by_table.values():
        merged = {k: np.concatenate(layer[k]) for k in ("positions", "normals", "fids", "triangles", "colours")}
        out.append({**merged, "layer": layer["layer"], "table": layer["table"],
                    "feature_count": len(layer["table"]["uid"])})
    return out


def to_ecef(positions_gltf: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """glTF y-up positions → ECEF: the y-up → z-up turn 3D Tiles apply, then the tile transform."""
    p = positions_gltf
    zup = np.column_stack([p[:, 0], -p[:, 2], p[:, 1], np.ones(len(p))])
    return (zup @ transform.T)[:, :3]


def leaf_contents(folder: Path):
    """(tile, absolute transform, decoded primitives) of every tile with content."""
    for tile, _, transform in tiles(load_tileset(folder)["root"]):
        if "content" in tile:
            yield tile, transform, decode(folder / tile["content"]["uri"])


def drawn_objects(folder: Path) -> dict[str, tuple[np.ndarray, dict]]:
    """uid → (ECEF vertices of that feature, its property values), over the whole tileset."""
    out: dict[str, tuple[np.ndarray, dict]] = {}
    for _, transform, prims in leaf_contents(folder):
        for prim in prims:
            ecef = to_ecef(prim["positions"], transform)
            for fid, uid in enumerate(prim["table"]["uid"]):
                assert uid not in out, f"{uid} drawn twice"
                values = {k: v[fid] for k, v in prim["table"].items()}
                out[uid] = (ecef[prim["fids"] == fid], values)
    return out


# --- the tileset documents ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def schema_registry():
    referencing = pytest.importorskip("referencing")
    from referencing.jsonschema import DRAFT202012

    if not (SPECS / "tileset.schema.json").is_file():
        pytest.skip(f"3D Tiles 1.1 schemas not found in {SPECS}")
    base = "https://schemas.local/3d-tiles-1.1/"
    # every schema file loaded up front, under the URI its relative $refs resolve against: offline
    resources = [(base + path.relative_to(SPECS).as_posix(),
                  referencing.Resource.from_contents(json.loads(path.read_text(encoding="utf-8")),
                                                     default_specification=DRAFT202012))
                 for path in SPECS.rglob("*.schema.json")]
    return base, referencing.Registry().with_resources(resources).crawl()


def schema_validator(schema_registry, name: str):
    from jsonschema import Draft202012Validator

    base, registry = schema_registry
    return Draft202012Validator({"$ref": base + name}, registry=registry)


def test_tilesets_validate_against_3d_tiles_schema(built, schema_registry):
    validator = schema_validator(schema_registry, "tileset.schema.json")
    for name, folder in built.items():
        doc = load_tileset(folder)
        errors = sorted(validator.iter_errors(doc), key=lambda e: e.path)
        assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
        assert doc["asset"]["version"] == "1.1"
        assert doc["root"]["refine"] == "ADD"
    # the validator really checks: a broken document fails
    bad = load_tileset(built["buildings-3"])
    bad["root"]["boundingVolume"] = {"region": [0, 1]}
    assert list(validator.iter_errors(bad))


def test_glb_metadata_validates_against_3d_metadata_schemas(built, schema_registry):
    schema_check = schema_validator(schema_registry, "Schema/schema.schema.json")
    table_check = schema_validator(schema_registry, "PropertyTable/propertyTable.schema.json")
    for folder in built.values():
        for tile, _, _ in tiles(load_tileset(folder)["root"]):
            if "content" not in tile:
                continue
            gltf = glb_json(folder / tile["content"]["uri"])
            assert set(gltf["extensionsUsed"]) == {"EXT_mesh_features", "EXT_structural_metadata",
                                                   "KHR_mesh_quantization"}
            assert gltf["extensionsRequired"] == ["KHR_mesh_quantization"]  # the byte normals
            ext = gltf["extensions"]["EXT_structural_metadata"]
            assert not list(schema_check.iter_errors(ext["schema"]))
            for table in ext["propertyTables"]:
                assert not list(table_check.iter_errors(table)), table["class"]
                assert table["class"] in ext["schema"]["classes"]


def test_geometric_error_falls_with_depth_and_content_is_in_leaves(built):
    for name, folder in built.items():
        doc = load_tileset(folder)
        assert doc["geometricError"] > doc["root"]["geometricError"] > 0
        depths = []

        def walk(tile: dict) -> None:
            children = tile.get("children", [])
            if not children:
                assert "content" in tile and tile["geometricError"] == 0, name
            else:
                assert "content" not in tile, f"{name}: ADD with content in the leaves only"
            for child in children:
                assert child["geometricError"] < tile["geometricError"], name
                walk(child)

        walk(doc["root"])
        depths = [d for _, d, _ in tiles(doc["root"])]
        if name in ("buildings-3", "network-3"):
            assert max(depths) >= 3, f"{name}: the small leaves should make a deeper tree"


def test_bounding_volumes_contain_their_content(built):
    for name, folder in built.items():
        doc = load_tileset(folder)

        def check(tile: dict, transform: np.ndarray) -> list[float]:
            region = tile["boundingVolume"]["region"]
            w, s, e, n, hmin, hmax = region
            assert w < e and s < n and hmin <= hmax
            for child in tile.get("children", []):
                cw, cs, ce, cn, chmin, chmax = check(child, transform @ np.array(
                    child.get("transform", np.eye(4).T.ravel().tolist())).reshape(4, 4).T)
                assert w <= cw and s <= cs and e >= ce and n >= cn and hmin <= chmin and hmax >= chmax, name
            if "content" in tile:
                ecef = np.concatenate([to_ecef(p["positions"], transform)
                                       for p in decode(folder / tile["content"]["uri"])])
                lon, lat, h = ECEF_TO_GEODETIC.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
                lon, lat = np.radians(lon), np.radians(lat)
                assert (lon >= w).all() and (lon <= e).all() and (lat >= s).all() and (lat <= n).all(), name
                assert (h >= hmin).all() and (h <= hmax).all(), name
                # and tightly: the region is the content's extent plus a margin of a few cm
                assert float(h.min()) - hmin < 0.05 and hmax - float(h.max()) < 0.05
            return region

        root = doc["root"]
        check(root, np.array(root.get("transform", np.eye(4).T.ravel().tolist())).reshape(4, 4).T)


def test_vertices_are_tile_relative_and_float32_safe(built):
    for folder in built.values():
        for _tile, transform, prims in leaf_contents(folder):
            assert np.linalg.norm(transform[:3, 3]) > 6.3e6  # the transform carries the ECEF position
            rotation = transform[:3, :3]
            assert np.allclose(rotation.T @ rotation, np.eye(3), atol=1e-12)  # ENU axes, no scaling
            for p in prims:
                assert np.abs(p["positions"]).max() < 20_000  # metres from the tile centre, not ECEF
                # signed-byte normals: unit within the rounding of each component to 1/127
                assert np.allclose(np.linalg.norm(p["normals"], axis=1), 1.0, atol=1.5e-2)


def test_triangles_face_outwards(built):
    """glTF front faces are counter-clockwise: every triangle's winding agrees with its vertex normals, and
    a building's roof faces up and its ground faces down."""
    for folder in built.values():
        for _, _, prims in leaf_contents(folder):
            for p in prims:
                pos, tri = p["positions"], p["triangles"]
                a, b, c = pos[tri[:, 0]], pos[tri[:, 1]], pos[tri[:, 2]]
                winding = np.cross(b - a, c - a)
                assert (np.einsum("ij,ij->i", winding, p["normals"][tri[:, 0]]) > 0).all()
    for _, _, prims in leaf_contents(built["buildings-3"]):
        for p in prims:
            for fid in range(0, p["feature_count"], 7):
                mine = p["fids"] == fid
                up = p["positions"][mine][:, 1]  # glTF y is up
                normals_up = p["normals"][mine][:, 1]
                bottom, top = normals_up[np.isclose(up, up.min(), atol=0.01)], normals_up[np.isclose(up, up.max(), atol=0.01)]
                assert (bottom < -0.99).any() and not (bottom > 0.5).any()  # the ground face looks down
                assert (top > 0.5).any() and not (top < -0.5).any()  # the roof up (walls are horizontal normals)


# --- glTF validity ---------------------------------------------------------------------------------------------

def test_every_glb_passes_the_khronos_validator(built):
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the glTF validator runs on node)")
    if not (ROOT / "tests" / "js" / "node_modules" / "gltf-validator").is_dir():
        pytest.fail("the glTF validator is not installed: run scripts/install.sh (npm ci in tests/js)")
    paths = sorted(str(p) for folder in built.values() for p in folder.rglob("*.glb"))
    assert len(paths) >= 10
    proc = subprocess.run([node, str(VALIDATOR), *paths], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    reports = json.loads(proc.stdout)
    assert len(reports) == len(paths)
    for report in reports:
        problems = [m for m in report["messages"] if m["severity"] <= 1]
        assert report["errors"] == 0 and report["warnings"] == 0, f"{report['path']}: {problems[:5]}"
        # what remains are notes about extensions the validator does not know, and the property table's
        # buffer views that only those extensions use
        assert {m["code"] for m in report["messages"]} <= {"UNSUPPORTED_EXTENSION", "UNUSED_OBJECT"}


# --- what the tiles show --------------------------------------------------------------------------------------

def test_each_object_drawn_once_and_ids_name_the_right_objects(built, engine):
    t = tables_for(engine)
    co = t.city_object
    for name in ("buildings-3", "network-3", "components-6"):
        layers, level = BUILDS[name]
        objects = drawn_objects(built[name])
        with engine.connect() as conn:
            rows = conn.execute(select(co.c.uid, co.c.layer, co.c.object_class, co.c.geom, co.c.height,
                                       co.c.diameter_mm, co.c.pipe_kind, co.c.valid_to)
                                .where(co.c.layer.in_(layers))).all()
        expected = {}
        for r in rows:
            if r.valid_to is not None:
                continue
            expected[r.uid] = r
        if name == "components-6":  # only CIM6 objects (no fallback for components; storeys are not drawn)
            with engine.connect() as conn:
                six = set(conn.execute(select(co.c.uid).join(t.city_object_geometry,
                                                             t.city_object_geometry.c.object_id == co.c.id)
                                       .where(co.c.layer == "building-components",
                                              t.city_object_geometry.c.cim_level == 6)).scalars())
            expected = {k: v for k, v in expected.items() if k in six}
        assert set(objects) == set(expected), name
        footprints = {uid: None if r.geom is None else to_shape(r.geom) for uid, r in expected.items()}
        for uid, (ecef, values) in objects.items():
            row = expected[uid]
            assert values["class"] == row.object_class
            if "height" in values and row.height is not None:
                assert values["height"] == pytest.approx(row.height)
            if "diameter_mm" in values and row.diameter_mm is not None:
                assert values["diameter_mm"] == pytest.approx(row.diameter_mm)
                assert values["pipe_kind"] == row.pipe_kind
            assert len(ecef), f"{uid} has no vertices"
            # the feature's vertices stand on that object's footprint
            x, y, _ = ECEF_TO_GK.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
            fp = footprints[uid]
            if fp is not None:
                minx, miny, maxx, maxy = fp.buffer(1.5).bounds  # tubes and cylinders reach past their axis
                assert minx <= float(np.mean(x)) <= maxx and miny <= float(np.mean(y)) <= maxy, uid


def test_components_at_cim5_are_spaces_not_the_storeys_around_them(built, engine):
    co = tables_for(engine).city_object
    with engine.connect() as conn:
        spaces = set(conn.execute(select(co.c.uid).where(co.c.object_class == "Space")).scalars())
    drawn = drawn_objects(built["components-5"])
    assert set(drawn) == spaces and {v["class"] for _, v in drawn.values()} == {"Space"}


def test_known_building_sits_on_its_footprint_with_geoid_heights(demo_db, engine, geoid_grid, tmp_path):
    report = build_tileset(engine, ["buildings"], 2, out_dir=tmp_path / "b2", settings=SETTINGS,
                           geoid_grid=str(geoid_grid))
    assert report.warnings == []
    doc = load_tileset(tmp_path / "b2")
    assert doc["extras"]["cim"]["height_warning"] is None
    co = tables_for(engine).city_object
    with engine.connect() as conn:
        row = conn.execute(select(co.c.uid, co.c.min_z, co.c.max_z, co.c.geom)
                           .where(co.c.layer == "buildings", co.c.valid_to.is_(None)).order_by(co.c.id).limit(1)).one()
    footprint = to_shape(row.geom)
    objects = drawn_objects(tmp_path / "b2")
    ecef, values = objects[row.uid]
    assert values["uid"] == row.uid
    corners = shapely.get_coordinates(footprint.exterior)[:-1]
    lon, lat = GK_TO_LONLAT.transform(corners[:, 0], corners[:, 1])
    for z in (row.min_z, row.max_z):  # ground and roof corners (a flat CIM2 roof)
        h = z + geoid_anomaly(lon, lat)
        want = np.column_stack(LONLAT_H_TO_ECEF.transform(lon, lat, h))
        gaps = np.linalg.norm(want[:, None, :] - ecef[None, :, :], axis=2).min(axis=1)
        assert gaps.max() < 0.05, f"{row.uid}: corner off by {gaps.max():.3f} m"


def test_without_geoid_grid_heights_pass_through_and_the_tileset_says_so(built, engine):
    doc = load_tileset(built["buildings-3"])
    assert "12.7 m" in doc["extras"]["cim"]["height_warning"]
    t = tables_for(engine)
    co = t.city_object
    with engine.connect() as conn:
        row = conn.execute(select(co.c.uid, co.c.min_z, co.c.geom).where(co.c.layer == "buildings",
                                                                           co.c.valid_to.is_(None))
                           .order_by(co.c.id.desc()).limit(1)).one()
    ecef, _ = drawn_objects(built["buildings-3"])[row.uid]
    corners = shapely.get_coordinates(to_shape(row.geom).exterior)[:-1]
    want = np.column_stack(TO_ECEF.transform(corners[:, 0], corners[:, 1], np.full(len(corners), row.min_z)))
    gaps = np.linalg.norm(want[:, None, :] - ecef[None, :, :], axis=2).min(axis=1)
    assert gaps.max() < 0.05


def test_pipes_are_tubes_of_their_diameter_and_nodes_cylinders_of_their_depth(built, engine):
    t = tables_for(engine)
    co, g = t.city_object, t.city_object_geometry
    objects = drawn_objects(built["network-3"])
    with engine.connect() as conn:
        pipes = conn.execute(select(co.c.uid, co.c.diameter_mm, g.c.geom).join(g, g.c.object_id == co.c.id)
                             .where(co.c.layer == "pipelines", g.c.cim_level == 3).order_by(co.c.id).limit(40)).all()
        nodes = conn.execute(select(co.c.uid, co.c.depth_m, g.c.geom).join(g, g.c.object_id == co.c.id)
                             .where(co.c.layer == "pipe-nodes", g.c.cim_level == 3).order_by(co.c.id).limit(40)).all()
    assert pipes and nodes
    for uid, diameter, geom in pipes:
        axis = shapely.get_coordinates(to_shape(geom), include_z=True)
        a, b = (np.array(TO_ECEF.transform(*p)) for p in axis[[0, -1]])
        ecef, values = objects[uid]
        assert values["diameter_mm"] == diameter
        d = (b - a) / np.linalg.norm(b - a)
        w = ecef - a
        along = w @ d
        radial = np.linalg.norm(w - np.outer(along, d), axis=1)
        side = radial > 1e-3  # leave out the caps' centres
        assert np.allclose(radial[side], diameter / 2000, atol=2e-3), uid  # the caps' rims too: same radius
        assert along.min() == pytest.approx(0, abs=2e-3) and along.max() == pytest.approx(np.linalg.norm(b - a), abs=2e-3)
    for uid, depth, geom in nodes:
        top = shapely.get_coordinates(to_shape(geom), include_z=True)[0]
        ecef, values = objects[uid]
        lon, lat, h = ECEF_TO_GEODETIC.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
        assert float(h.max()) == pytest.approx(top[2], abs=5e-3) and float(h.min()) == pytest.approx(top[2] - depth, abs=5e-3)
        x, y, _ = ECEF_TO_GK.transform(ecef[:, 0], ecef[:, 1], ecef[:, 2])
        radius = np.hypot(x - top[0], y - top[1]).max()
        assert radius == pytest.approx(SETTINGS.node_diameter_m / 2, abs=5e-3)


def test_one_tile_on_demand_is_the_file_the_build_wrote(built, engine, demo_db):
    folder = built["buildings-3"]
    state = json.loads((folder / "build-state.json").read_text())
    address = sorted(state["tiles"])[0]
    t = tables_for(engine)
    specs = check_request(["buildings"], 3)
    sel = Selection(tuple(specs), 3)
    geo = geodesy(4550, 5737, None)
    with engine.connect() as conn:
        content = tile_content(conn, t, sel, Cell.parse(address), geo, SETTINGS, params=state_params(folder))
    assert content is not None
    glb = (folder / f"content/{address}.glb").read_bytes()
    assert content.glb == glb
    assert content.region == state["tiles"][address]["region"]


def state_params(folder: Path) -> str:
    return json.loads((folder / "build-state.json").read_text())["params"]


# --- errors, the command line, resuming ----------------------------------------------------------------------------

def test_bad_cim_level_is_a_clear_cli_error(demo_db, tmp_path):
    proc = run_cim("3dtiles", "build", "--layer", "buildings", "--cim-level", "6", "--out", str(tmp_path / "x"),
                   env=demo_db.env)
    assert proc.returncode == 1
    message = " ".join(proc.stderr.split())
    assert "CIM level 6" in message and "'buildings'" in message and "CIM2–4" in message
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "x").exists()


def test_layer_without_geometry_at_the_level_writes_nothing(demo_db, engine, tmp_path):
    proc = run_cim("3dtiles", "build", "--layer", "pipelines", "--cim-level", "2", "--out", str(tmp_path / "p"),
                   env=demo_db.env)
    assert proc.returncode == 1
    message = " ".join(proc.stderr.split())
    assert "'pipelines' has no geometry at CIM2" in message and "CIM3" in message
    assert not (tmp_path / "p").exists() and not list(tmp_path.rglob("*.glb"))
    with pytest.raises(NoGeometry, match="no geometry at CIM4"):
        build_tileset(engine, ["buildings"], 4, out_dir=tmp_path / "b4", fallback=False, settings=SETTINGS)
    assert not list(tmp_path.rglob("*.glb"))


def test_cli_builds_a_tileset_and_a_second_run_keeps_every_tile(demo_db, tmp_path):
    out = tmp_path / "bridges"
    first = run_cim("3dtiles", "build", "--layer", "bridges", "--cim-level", "3", "--out", str(out), env=demo_db.env)
    assert first.returncode == 0, first.stderr
    assert (out / "tileset.json").is_file() and list(out.rglob("*.glb"))
    assert "geoid grid" in first.stderr  # the height warning
    assert load_tileset(out)["extras"]["cim"]["height_warning"]
    second = run_cim("3dtiles", "build", "--layer", "bridges", "--cim-level", "3", "--out", str(out), env=demo_db.env)
    assert second.returncode == 0
    text_out = " ".join(second.stdout.split())
    assert "built │ 0" in text_out


def test_cli_bbox_limits_the_tileset(demo_db, engine, tmp_path):
    t = tables_for(engine)
    co = t.city_object
    with engine.connect() as conn:
        rows = conn.execute(select(co.c.uid, co.c.geom).where(co.c.layer == "buildings", co.c.valid_to.is_(None))).all()
    footprints = {uid: to_shape(geom) for uid, geom in rows}
    centre = shapely.MultiPolygon(list(footprints.values())).centroid
    lon, lat = GK_TO_LONLAT.transform(centre.x, centre.y)
    bbox = (lon - 0.002, lat - 0.002, lon + 0.002, lat + 0.002)
    out = tmp_path / "bbox"
    proc = run_cim("3dtiles", "build", "--layer", "buildings", "--cim-level", "2", "--out", str(out),
                   "--bbox", ",".join(f"{v:.6f}" for v in bbox), env=demo_db.env)
    assert proc.returncode == 0, proc.stderr
    drawn = set(drawn_objects(out))
    to_gk = Transformer.from_crs("EPSG:4490", "EPSG:4550", always_xy=True)
    ring = [to_gk.transform(x, y) for x, y in shapely.box(*bbox).exterior.coords]
    area = shapely.Polygon(ring)
    want = {uid for uid, fp in footprints.items() if fp.intersects(area)}
    assert drawn == want and 0 < len(drawn) < len(footprints)
    bad = run_cim("3dtiles", "build", "--layer", "buildings", "--cim-level", "2", "--bbox", "1,2,3",
                  "--out", str(tmp_path / "bad"), env=demo_db.env)
    assert bad.returncode == 1 and "--bbox" in bad.stderr


@pytest.fixture
def small_city(request, new_database, tmp_path):
    """A separate 40-building demo city (this test changes its data)."""
    from tests.conftest import DemoDB

    backend = request.param
    db = DemoDB(backend, new_database(backend), tmp_path / "data")
    run_cim("db", "init", env=db.env, check=True)
    run_cim("demo", "--size", "40", "--seed", "7", env=db.env, check=True)
    return db


@pytest.mark.parametrize("small_city", ["spatialite", "postgis"], indirect=True)
def test_resume_rebuilds_only_changed_or_missing_tiles(small_city, tmp_path):
    engine = small_city.engine()
    settings = Tiles3DSettings(max_features=8, min_cell_m=16.0)
    out = tmp_path / "b"
    first = build_tileset(engine, ["buildings"], 2, out_dir=out, settings=settings)
    assert first.tiles >= 3 and first.written == first.tiles
    assert not list(out.rglob("*.tmp"))

    again = build_tileset(engine, ["buildings"], 2, out_dir=out, settings=settings)
    assert (again.written, again.unchanged) == (0, first.tiles)

    # a lost file is rebuilt, and only it
    victim = sorted(out.rglob("*.glb"))[0]
    victim.unlink()
    after_loss = build_tileset(engine, ["buildings"], 2, out_dir=out, settings=settings)
    assert (after_loss.written, after_loss.unchanged) == (1, first.tiles - 1) and victim.is_file()

    # one building renamed: only its tile is rebuilt, and it shows the new name
    version_before = load_tileset(out)["asset"]["tilesetVersion"]
    t = tables_for(engine)
    co = t.city_object
    with engine.begin() as conn:
        uid = conn.execute(select(co.c.uid).where(co.c.layer == "buildings", co.c.valid_to.is_(None))
                           .order_by(co.c.id).limit(1)).scalar_one()
        conn.execute(update(co).where(co.c.uid == uid).values(name="改名后的楼"))
    changed = build_tileset(engine, ["buildings"], 2, out_dir=out, settings=settings)
    assert (changed.written, changed.unchanged) == (1, first.tiles - 1)
    assert drawn_objects(out)[uid][1]["name"] == "改名后的楼"
    assert load_tileset(out)["asset"]["tilesetVersion"] != version_before

    # an interrupted build keeps what it finished: the next one builds only the rest
    class Stop(Exception):
        pass

    def stop_after_two(p) -> None:
        if p.done == 2:
            raise Stop

    fresh = tmp_path / "interrupted"
    with pytest.raises(Stop):
        build_tileset(engine, ["buildings"], 2, out_dir=fresh, settings=settings, progress=stop_after_two)
    assert not (fresh / "tileset.json").exists() and len(list(fresh.rglob("*.glb"))) == 2
    resumed = build_tileset(engine, ["buildings"], 2, out_dir=fresh, settings=settings)
    assert (resumed.written, resumed.unchanged) == (first.tiles - 2, 2)
    assert not list(fresh.rglob("*.tmp"))

    # a forced build rebuilds everything; the tileset is the same
    before = (out / "tileset.json").read_text()
    forced = build_tileset(engine, ["buildings"], 2, out_dir=out, settings=settings, force=True)
    assert forced.written == first.tiles
    assert json.loads(before)["root"] == load_tileset(out)["root"]
    engine.dispose()


def test_region_radians_are_at_benxi(built):
    w, s, e, n, hmin, hmax = load_tileset(built["buildings-3"])["root"]["boundingVolume"]["region"]
    assert math.degrees(w) == pytest.approx(123.77, abs=0.1) and math.degrees(s) == pytest.approx(41.30, abs=0.1)
    assert 0 < hmin < hmax < 1000


@pytest.mark.slow
def test_memory_stays_bounded_by_the_tile_not_the_city(new_database, tmp_path):
    """A 4,000-building city's pipe network (~46,000 objects): the build's peak allocations (tracemalloc
    sees numpy's too) stay a small fraction of the content it writes."""
    import tracemalloc

    from tests.conftest import DemoDB

    db = DemoDB("spatialite", new_database("spatialite"), tmp_path / "data")
    run_cim("db", "init", env=db.env, check=True)
    run_cim("demo", "--size", "4000", "--seed", "11", "--interiors", "0", env=db.env, check=True)
    engine = db.engine()
    build_tileset(engine, ["bridges"], 3, out_dir=tmp_path / "warm")  # one-off set-up outside the measure
    tracemalloc.start()
    try:
        report = build_tileset(engine, ["pipelines", "pipe-nodes"], 3, out_dir=tmp_path / "net")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        engine.dispose()
    assert report.objects > 30_000 and report.bytes > 50e6
    assert peak < 48e6 and peak < report.bytes / 4, f"peak {peak / 1e6:.1f} MB for {report.bytes / 1e6:.0f} MB written"


def test_build_settings_come_from_config_yml(demo_db, tmp_path):
    """cim.tiles3d in config.yml: out_dir relative to the file, leaf size; the defaults when it is absent."""
    import yaml

    from cim.settings import Settings

    config = yaml.safe_load((ROOT / "config.yml").read_text(encoding="utf-8"))
    assert Settings().tiles3d == Tiles3DSettings(), "config.yml's tiles3d section must state the defaults"
    config["cim"]["tiles3d"] = {"out_dir": "built3d", "max_features": 1}
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    proc = run_cim("3dtiles", "build", "--layer", "bridges", "--cim-level", "3",
                   env={**demo_db.env, "CIM_CONFIG": str(path)})
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "built3d" / "bridges" / "cim3" / "tileset.json").read_text())
    assert doc["extras"]["cim"]["quadtree"]["max_features"] == 1
    config["cim"]["tiles3d"] = {"max_features": 0}
    path.write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    bad = run_cim("3dtiles", "build", "--layer", "bridges", "--cim-level", "3", env={**demo_db.env, "CIM_CONFIG": str(path)})
    assert bad.returncode == 1 and "max_features" in bad.stderr and "config.yml" in bad.stderr


def test_draco_compressed_tiles_validate_and_decode_to_the_same_mesh(demo_db, engine, built, tmp_path):
    """cim.tiles3d.compression = draco: every GLB passes the Khronos validator with no error, and decodes
    (DracoPy, the reference decoder's Python binding) to the uncompressed build's triangles within the
    quantization, with the same feature ids, colours and normals."""
    import DracoPy

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed (the glTF validator runs on node)")
    plain_dir = built["buildings-3"]
    out = tmp_path / "draco"
    from dataclasses import replace

    build_tileset(engine, ["buildings"], 3, out_dir=out, settings=replace(SETTINGS, compression="draco"))
    paths = sorted(out.rglob("*.glb"))
    assert len(paths) == len(list(plain_dir.rglob("*.glb"))) >= 5
    proc = subprocess.run([node, str(VALIDATOR), *map(str, paths)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    for report in json.loads(proc.stdout):
        assert report["errors"] == 0, f"{report['path']}: {report['messages'][:5]}"
    compressed = sum(p.stat().st_size for p in paths)
    plain = sum(p.stat().st_size for p in plain_dir.rglob("*.glb"))
    assert compressed < 0.7 * plain, (compressed, plain)
    for path in paths:
        doc = glb_json(path)
        assert doc["extensionsRequired"] == ["KHR_draco_mesh_compression"]
        raw = path.read_bytes()
        (json_len,) = struct.unpack_from("<I", raw, 12)
        blob = raw[20 + json_len + 8:]
        # Draco: one primitive per layer (colours an attribute); uncompressed: one per layer and colour,
        # merged back per layer by decode()
        references = decode(plain_dir / path.relative_to(out))
        assert len(doc["meshes"][0]["primitives"]) == len(references)
        for prim, ref in zip(doc["meshes"][0]["primitives"], references):
            ext = prim["extensions"]["KHR_draco_mesh_compression"]
            view = doc["bufferViews"][ext["bufferView"]]
            mesh = DracoPy.decode(blob[view["byteOffset"]:view["byteOffset"] + view["byteLength"]])
            by_id = {a["unique_id"]: a["data"] for a in mesh.attributes}
            pos = by_id[ext["attributes"]["POSITION"]]
            fid = by_id[ext["attributes"]["_FEATURE_ID_0"]].ravel()
            assert doc["accessors"][prim["attributes"]["POSITION"]]["count"] == len(pos)
            assert "COLOR_0" in prim["attributes"]
            ref_pos, ref_fid, ref_tri = ref["positions"], ref["fids"], ref["triangles"]
            tri = mesh.faces
            assert len(tri) == len(ref_tri)
            step = (ref_pos.max(0) - ref_pos.min(0)).max() / (2 ** 16 - 1)
            # the same triangles: each decoded one has an uncompressed one of the same feature whose corners
            # are within the quantization step of its own
            for feature in np.unique(ref_fid):
                a = pos[tri[fid[tri[:, 0]] == feature]]  # (k, 3, 3)
                b = ref_pos[ref_tri[ref_fid[ref_tri[:, 0]] == feature]]
                assert len(a) == len(b)
                ca, cb = a.mean(axis=1), b.mean(axis=1)
                nearest = np.argmin(np.linalg.norm(ca[:, None, :] - cb[None, :, :], axis=2), axis=1)
                corner_gap = np.abs(np.sort(a, axis=1) - np.sort(b[nearest], axis=1)).max()
                assert corner_gap <= 2 * step or np.linalg.norm(ca - cb[nearest], axis=1).max() <= 2 * step


def test_vertex_data_is_compact_and_colours_are_materials(built):
    """Normals are KHR_mesh_quantization bytes (4 bytes a vertex); there is no COLOR_0: a layer's triangles
    are one primitive per colour, whose material has it (buildings' walls and roofs, pipes by kind), and all
    of a layer's primitives name its property table."""
    for folder in built.values():
        for path in sorted(folder.rglob("*.glb")):
            gltf = pygltflib.GLTF2.load_from_bytes(path.read_bytes())
            colours_per_table: dict[int, set] = {}
            for prim in gltf.meshes[0].primitives:
                normal = gltf.accessors[prim.attributes.NORMAL]
                assert (normal.componentType, normal.normalized) == (5120, True)
                assert gltf.bufferViews[normal.bufferView].byteStride == 4
                assert prim.attributes.COLOR_0 is None
                base = tuple(gltf.materials[prim.material].pbrMetallicRoughness.baseColorFactor)
                table = prim.extensions["EXT_mesh_features"]["featureIds"][0]["propertyTable"]
                assert base not in colours_per_table.setdefault(table, set()), f"{path}: a colour split in two"
                colours_per_table[table].add(base)
            assert len(colours_per_table) == len(gltf.extensions["EXT_structural_metadata"]["propertyTables"])
    # a CIM3 building: walls in the layer's colour, roofs in the roof colour, in one tile
    walls, roof = (222, 214, 196), (176, 84, 64)
    found = set()
    for _, _, layers in leaf_contents(built["buildings-3"]):
        for layer in layers:
            for fid in range(0, len(layer["table"]["uid"]), 5):
                found |= {tuple(int(v) for v in c[:3]) for c in np.unique(layer["colours"][layer["fids"] == fid], axis=0)}
    assert {walls, roof} <= found
    road = pygltflib.GLTF2.load_from_bytes(next(built["roads-2"].rglob("*.glb")).read_bytes())
    assert road.materials[0].pbrMetallicRoughness.baseColorFactor == pytest.approx([110 / 255, 110 / 255, 115 / 255, 1],
                                                                                 abs=1e-5)


def refinement_problems(folder: Path, doc: dict) -> list[str]:
    """What breaks the tileset's refinement, walked root to leaves (a tile's ``refine`` is inherited):

    - ADD: a tile's content is drawn together with its ancestors', so no object may appear in a tile and in
      one of its ancestors (it would be drawn twice);
    - REPLACE: a tile's content stands in for its parent's, so the objects below a tile must be objects its
      parent shows, inside its parent's region.
    """
    problems: list[str] = []

    def uids(tile: dict) -> set[str]:
        if "content" not in tile:
            return set()
        return {uid for prim in decode(folder / tile["content"]["uri"]) for uid in prim["table"]["uid"]}

    def walk(tile: dict, refine: str, above: set[str], parent: dict | None) -> set[str]:
        refine = tile.get("refine", refine)
        mine = uids(tile)
        where = tile.get("content", {}).get("uri", "an inner tile")
        if refine == "ADD" and mine & above:
            problems.append(f"ADD: {where} draws {sorted(mine & above)[:3]} again, already drawn above it")
        below = set(mine)
        for child in tile.get("children", []):
            below |= walk(child, refine, above | mine, tile)
        if refine == "REPLACE" and parent is not None and "content" in parent:
            missing = below - uids(parent)
            if missing:
                problems.append(f"REPLACE: {where} holds {sorted(missing)[:3]}, which its parent does not show")
            w, s, e, n, lo, hi = parent["boundingVolume"]["region"]
            cw, cs, ce, cn, clo, chi = tile["boundingVolume"]["region"]
            if not (w <= cw and s <= cs and ce <= e and cn <= n and lo <= clo and chi <= hi):
                problems.append(f"REPLACE: {where} reaches outside its parent's region")
        return below

    walk(doc["root"], doc["root"]["refine"], set(), None)
    return problems


def test_refinement_matches_what_the_children_hold(built):
    """Every tileset we build (buildings, components at CIM5 and 6, the pipe network, roads, bridges) refines
    by ADD with content in the leaves: no object is drawn twice along any root-to-leaf path, and every
    object of the layer is drawn exactly once in the whole tree."""
    for name, folder in built.items():
        doc = load_tileset(folder)
        assert doc["root"]["refine"] == "ADD" and not any("refine" in t for t, d, _ in tiles(doc["root"]) if d)
        assert refinement_problems(folder, doc) == [], name
        counts: dict[str, int] = {}
        for _, _, prims in leaf_contents(folder):
            for prim in prims:
                for uid in prim["table"]["uid"]:
                    counts[uid] = counts.get(uid, 0) + 1
        assert counts and max(counts.values()) == 1, f"{name}: drawn more than once"
    # the check can fail: a leaf's content also given to its parent is drawn twice under ADD, and under
    # REPLACE a parent showing only some of its children's objects does not stand in for them
    doc = load_tileset(built["buildings-3"])
    parent = next(t for t, _, _ in tiles(doc["root"]) if t.get("children") and "content" in t["children"][0])
    parent["content"] = dict(parent["children"][0]["content"])
    assert any(p.startswith("ADD:") for p in refinement_problems(built["buildings-3"], doc))
    parent["refine"] = "REPLACE"
    assert parent.get("children")[1:] and any(p.startswith("REPLACE:")
                                                for p in refinement_problems(built["buildings-3"], doc))
