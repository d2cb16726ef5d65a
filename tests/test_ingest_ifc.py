"""The IFC reader on real files: the FZK house (IFC4, ArchiCAD), IfcOpenHouse (IFC4, millimetres) and a
stormwater network (IFC 4.3), plus files derived from them (georeferenced, IFC2x3, broken) to reach the
paths the samples do not: every class count, the parent tree, meshes, footprints, units, georeferencing
and each way a file can be unreadable.

Each sample is read once per module (reading the FZK house triangulates 24,000 triangles).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import ifcopenshell
import ifcopenshell.api
import ifcopenshell.api.owner.settings
import numpy as np
import pytest
import shapely

from cim.geometry import face_problems, is_closed_shell
from cim.ingest.ifc import read_ifc
from cim.ingest.model import ReadError, SourceFile, SourceObject

ROOT = Path(__file__).resolve().parent.parent
DATASETS = ROOT.parent / "shared" / "datasets"
FZK = DATASETS / "ifc" / "AC20-FZK-Haus.ifc"
OPEN_HOUSE = DATASETS / "ifc" / "IfcOpenHouse_IFC4.ifc"
DRAINAGE = DATASETS / "ifc43" / "DrainageSystem-1-2.hdr-IFC4X3_ADD2.ifc"

# what is really in the files (counted with ifcopenshell, see the report)
FZK_CLASSES = {"Building": 1, "Storey": 2, "Space": 7, "Wall": 13, "Slab": 2, "Roof": 2, "Door": 5, "Window": 11,
               "Stair": 1, "Beam": 4, "Member": 42, "Railing": 2}
OPEN_HOUSE_CLASSES = {"Building": 1, "Storey": 1, "Wall": 4, "Roof": 3, "Door": 1, "Window": 5, "Stair": 1,
                      "Footing": 1, "Member": 20, "Plate": 5}
DRAINAGE_CLASSES = {"PipeSegment": 6, "PipeNode": 7}

SURFACES = {"Wall": "WallSurface", "Roof": "RoofSurface", "Slab": "FloorSurface", "Door": "Door", "Window": "Window",
            "Space": "InteriorSpace"}


class Read:
    """A file read once: the SourceFile and its objects as a list (the iterator can be consumed only once)."""

    def __init__(self, path: Path, threads: int = 2) -> None:
        self.source: SourceFile = read_ifc(path, threads=threads)
        self.objects: list[SourceObject] = list(self.source.objects)
        self.by_id = {o.source_id: o for o in self.objects}

    def of(self, object_class: str) -> list[SourceObject]:
        return [o for o in self.objects if o.object_class == object_class]

    def mesh(self, obj: SourceObject) -> shapely.MultiPolygon:
        return next(g[1] for g in obj.geometries if g[1].geom_type == "MultiPolygon")


@pytest.fixture(scope="module")
def fzk() -> Read:
    return Read(FZK)


@pytest.fixture(scope="module")
def house() -> Read:
    return Read(OPEN_HOUSE)


@pytest.fixture(scope="module")
def drainage() -> Read:
    return Read(DRAINAGE)


@pytest.fixture(scope="module")
def samples(fzk, house, drainage) -> dict[str, Read]:
    return {"fzk": fzk, "house": house, "drainage": drainage}


# --- counts and classes --------------------------------------------------------------------------------


@pytest.mark.parametrize("name,expected", [("fzk", FZK_CLASSES), ("house", OPEN_HOUSE_CLASSES),
                                           ("drainage", DRAINAGE_CLASSES)])
def test_counts_per_class(samples, name, expected):
    read = samples[name]
    assert dict(Counter(o.object_class for o in read.objects)) == expected
    assert read.source.metadata["classes"] == expected and read.source.metadata["count"] == sum(expected.values())
    assert len(read.by_id) == len(read.objects)  # GlobalIds are unique


def test_ifc_classes_behind_the_cim_classes(fzk, house):
    """The brief's "4 slabs" of the FZK house are 2 floor slabs and 2 roof slabs (PredefinedType ROOF);
    IfcOpenHouse's 2 slabs are the roof's parts."""
    slabs = [o for o in fzk.objects if o.attributes["ifc_class"] == "IfcSlab"]
    assert sorted((o.object_class, o.attributes["PredefinedType"]) for o in slabs) == [
        ("Roof", "ROOF"), ("Roof", "ROOF"), ("Slab", "BASESLAB"), ("Slab", "FLOOR")]
    assert {o.attributes["ifc_class"] for o in fzk.of("Wall")} == {"IfcWallStandardCase"}
    assert Counter(o.attributes["ifc_class"] for o in house.of("Roof")) == {"IfcRoof": 1, "IfcSlab": 2}
    assert house.of("Stair")[0].attributes["ifc_class"] == "IfcStairFlight"
    for o in fzk.objects:
        assert o.attributes["GlobalId"] == o.source_id


# --- the tree ------------------------------------------------------------------------------------------


def test_parents_come_first(samples):
    for read in samples.values():
        seen: set[str] = set()
        for obj in read.objects:
            assert obj.parent is None or obj.parent in seen, (obj.object_class, obj.name)
            seen.add(obj.source_id)


def test_fzk_hierarchy(fzk):
    (building,) = fzk.of("Building")
    assert building.parent is None and building.name == "FZK-Haus"
    storeys = fzk.of("Storey")
    assert [s.name for s in storeys] == ["Erdgeschoss", "Dachgeschoss"]  # by elevation
    assert all(s.parent == building.source_id for s in storeys)
    storey_ids = {s.source_id for s in storeys}
    for cls in ("Wall", "Space", "Slab", "Roof", "Stair", "Beam", "Member", "Railing"):
        assert all(o.parent in storey_ids for o in fzk.of(cls)), cls
    for cls in ("Door", "Window"):
        for o in fzk.of(cls):
            assert fzk.by_id[o.parent].object_class == "Wall", o.name
    # both upper-floor windows sit in upper-floor walls
    upper = storeys[1].source_id
    assert sum(fzk.by_id[fzk.by_id[w.parent].parent].source_id == upper for w in fzk.of("Window")) == 2


def test_open_house_hierarchy(house):
    """IfcOpenHouse's door fills an opening of its wall; its windows sit in openings too but the file never
    says so (no IfcRelFillsElement), so their parent falls back to the storey. Roof slabs are parts of the
    IfcRoof, a window's mullions and glazing parts of the window."""
    (storey,) = house.of("Storey")
    assert storey.parent == house.of("Building")[0].source_id
    (door,) = house.of("Door")
    assert house.by_id[door.parent].object_class == "Wall"
    assert all(w.parent == storey.source_id for w in house.of("Window"))
    roof = next(r for r in house.of("Roof") if r.attributes["ifc_class"] == "IfcRoof")
    assert roof.parent == storey.source_id and roof.geometries == []  # its slabs carry the shape
    assert all(r.parent == roof.source_id for r in house.of("Roof") if r is not roof)
    window_ids = {w.source_id for w in house.of("Window")}
    assert all(p.parent in window_ids for p in house.of("Member") + house.of("Plate"))


# --- attributes ----------------------------------------------------------------------------------------


def test_attributes(fzk):
    for wall in fzk.of("Wall"):
        psets = wall.attributes["psets"]
        assert "Pset_WallCommon" in psets and "id" not in psets["Pset_WallCommon"]
        assert psets["BaseQuantities"]["Height"] > 0
    door = next(d for d in fzk.of("Door") if d.name == "Haustuer")
    assert door.attributes["OverallHeight"] > 1.9 and door.attributes["Tag"]
    space_names = {s.attributes.get("LongName") for s in fzk.of("Space")}
    assert {"Schlafzimmer", "Bad", "Küche", "Galerie"} <= space_names
    json.dumps([o.attributes for o in fzk.objects])  # every attribute is JSON
    json.dumps([o.typed for o in fzk.objects])


def test_building_and_storeys(fzk):
    (building,) = fzk.of("Building")
    assert building.typed["floors"] == 2
    assert building.typed["year_built"] == 2008  # Pset_BuildingCommon.YearOfConstruction
    assert building.typed["height"] == pytest.approx(6.318, abs=0.01)  # ground floor to the ridge
    assert building.geometries == [] and not building.solid
    # the footprint is the roof's outline: 12 × 10 m of walls under a 0.5 m overhang
    assert building.footprint.geom_type == "Polygon" and building.footprint.is_valid
    assert building.footprint.area == pytest.approx(13 * 11, abs=0.01)
    ground, upper = fzk.of("Storey")
    assert (ground.attributes["elevation"], upper.attributes["elevation"]) == (0.0, 2.7)
    assert ground.typed["height"] == pytest.approx(2.7)
    assert upper.typed["height"] == pytest.approx(6.318 - 2.7, abs=0.01)
    assert ground.footprint.area == pytest.approx(12 * 10, abs=0.01)  # the ground-floor walls' outline
    assert ground.geometries == [] and upper.geometries == []


# --- geometry ------------------------------------------------------------------------------------------


def _signed_volume(mesh: shapely.MultiPolygon) -> float:
    tri = shapely.get_coordinates(mesh, include_z=True).reshape(-1, 4, 3)[:, :3]
    tri = tri - tri.reshape(-1, 3).mean(axis=0)  # map coordinates are large: centre first
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6)


@pytest.mark.parametrize("name", ["fzk", "house", "drainage"])
def test_meshes(samples, name):
    """Every mesh: a MultiPolygon Z of triangles, valid in each face's own plane, one semantic type per
    polygon, at level 6 (spaces 5), closed and facing outwards where the body is a solid."""
    read = samples[name]
    meshes = 0
    for obj in read.objects:
        for level, geom, surfaces in obj.geometries:
            if geom.geom_type != "MultiPolygon":
                continue
            meshes += 1
            assert shapely.has_z(geom) and not geom.is_empty
            assert shapely.get_num_coordinates(geom) == 4 * len(geom.geoms)  # triangles
            problems, _degenerate = face_problems(geom)
            assert problems == [], (obj.object_class, obj.name, problems[:3])
            assert level == (5 if obj.object_class == "Space" else 6)
            expected = SURFACES.get(obj.object_class)
            if expected is not None:
                assert surfaces == [expected] * len(geom.geoms)
            elif surfaces is not None:
                assert len(surfaces) == len(geom.geoms)
            if obj.solid:
                assert is_closed_shell(geom), (obj.object_class, obj.name)
                assert _signed_volume(geom) > 0, (obj.object_class, obj.name)  # counter-clockwise outside
    assert meshes == sum(1 for o in read.objects if any(g[1].geom_type == "MultiPolygon" for g in o.geometries))
    assert meshes > 0


def test_every_shape_triangulated(fzk, house):
    for read in (fzk, house):
        assert all(not o.errors for o in read.objects)
    shaped = {"Building", "Storey"}
    assert all(o.geometries for o in fzk.objects if o.object_class not in shaped)
    # IfcOpenHouse's IfcRoof and windows are aggregates without a body of their own
    bodiless = {o.attributes["ifc_class"] for o in house.objects if not o.geometries}
    assert bodiless == {"IfcBuilding", "IfcBuildingStorey", "IfcRoof", "IfcWindow"}


def test_window_parts_are_window_surfaces(house):
    for part in house.of("Member") + house.of("Plate"):
        (level, _mesh, surfaces) = part.geometries[0]
        assert level == 6 and set(surfaces) == {"Window"}


def test_walls_inside_their_building_footprint(fzk, house):
    for read in (fzk, house):
        minx, miny, maxx, maxy = read.of("Building")[0].footprint.bounds
        for wall in read.of("Wall"):
            wx0, wy0, wx1, wy1 = read.mesh(wall).bounds
            assert minx - 0.5 <= wx0 and wx1 <= maxx + 0.5 and miny - 0.5 <= wy0 and wy1 <= maxy + 0.5


def test_threads_do_not_change_the_result(house):
    one = Read(OPEN_HOUSE, threads=1)
    assert [o.source_id for o in one.objects] == [o.source_id for o in house.objects]
    for a, b in zip(one.objects, house.objects, strict=True):
        assert [g[1].wkb for g in a.geometries] == [g[1].wkb for g in b.geometries]


# --- units and georeferencing --------------------------------------------------------------------------


def test_fzk_site_georeferencing(fzk):
    meta = fzk.source.metadata
    assert fzk.source.kind == "ifc" and fzk.source.crs is None and fzk.source.local
    assert meta["georeferencing"] == "IfcSite"
    lon, lat, height = meta["site_lonlat"]
    # RefLatitude (49, 6, 1, 566000), RefLongitude (8, 26, 11, 540400)
    assert lon == pytest.approx(8 + 26 / 60 + 11.5404 / 3600, abs=1e-9) and lon == pytest.approx(8.4365, abs=1e-4)
    assert lat == pytest.approx(49 + 6 / 60 + 1.566 / 3600, abs=1e-9) and lat == pytest.approx(49.1004, abs=1e-4)
    assert height == 110.0
    assert meta["true_north_deg"] == pytest.approx(-50.0, abs=1e-6)  # TrueNorth (0.766, 0.643)
    assert meta["schema"] == "IFC4" and meta["application"] == "ARCHICAD-64 20.0.0"
    assert meta["project"] == "Projekt-FZK-Haus" and meta["length_unit_scale"] == 1.0
    assert meta["site"]["Name"] == "Gelaende" and "Pset_SiteCommon" in meta["site"]["psets"]


def test_open_house_is_local_and_in_metres(house):
    """IfcOpenHouse is modelled in millimetres and not georeferenced: metres out, nothing to anchor on."""
    meta = house.source.metadata
    assert house.source.crs is None and house.source.local
    assert meta["georeferencing"] is None and "site_lonlat" not in meta
    assert meta["length_unit_scale"] == 0.001
    south = next(w for w in house.of("Wall") if w.name == "South wall")
    assert house.mesh(south).bounds == pytest.approx((-5.0, -0.18, 5.0, 0.18), abs=1e-6)
    z = shapely.get_coordinates(house.mesh(south), include_z=True)[:, 2]
    assert (z.min(), z.max()) == pytest.approx((0.0, 3.0))
    assert house.of("Building")[0].typed == {"floors": 1, "height": pytest.approx(5.78, abs=0.01)}


@pytest.fixture(scope="module")
def map_converted(tmp_path_factory) -> Read:
    """IfcOpenHouse with an IfcMapConversion to ETRS89 / UTM 32N, turned 30°; Scale omitted, so the
    millimetre model must be scaled by the units' ratio."""
    model = ifcopenshell.open(OPEN_HOUSE)
    (context,) = model.by_type("IfcGeometricRepresentationContext", include_subtypes=False)
    crs = model.create_entity("IfcProjectedCRS", Name="EPSG:25832")
    model.create_entity("IfcMapConversion", SourceCRS=context, TargetCRS=crs, Eastings=458_000.0,
                        Northings=5_438_000.0, OrthogonalHeight=110.0, XAxisAbscissa=math.cos(math.radians(30)),
                        XAxisOrdinate=math.sin(math.radians(30)))
    path = tmp_path_factory.mktemp("ifc") / "open_house_utm32.ifc"
    model.write(str(path))
    return Read(path)


def test_map_conversion(map_converted, house):
    source = map_converted.source
    assert source.crs.to_epsg() == 25832 and not source.local
    assert source.metadata["georeferencing"] == "IfcMapConversion"
    assert source.metadata["map_conversion"]["scale"] == pytest.approx(0.001)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    for obj in house.objects:
        placed = map_converted.by_id[obj.source_id]
        for (level, local, _), (level2, mapped, _) in zip(obj.geometries, placed.geometries, strict=True):
            assert level == level2
            xyz = shapely.get_coordinates(local, include_z=True)
            expected = np.column_stack([458_000 + c * xyz[:, 0] - s * xyz[:, 1], 5_438_000 + s * xyz[:, 0] + c * xyz[:, 1],
                                        110 + xyz[:, 2]])
            assert np.allclose(shapely.get_coordinates(mapped, include_z=True), expected, atol=1e-6)
    building = map_converted.of("Building")[0]
    assert building.footprint.area == pytest.approx(house.of("Building")[0].footprint.area, rel=1e-6)
    assert building.typed["height"] == pytest.approx(house.of("Building")[0].typed["height"], abs=1e-6)


# --- pipes (IFC 4.3) -----------------------------------------------------------------------------------


def test_drainage_network(drainage):
    meta = drainage.source.metadata
    assert meta["schema"] == "IFC4X3" and meta["schema_identifier"] == "IFC4X3_ADD2"
    assert meta["georeferencing"] is None and drainage.source.crs is None
    # ETRS-GK25 map coordinates without a declared CRS: not a local model (--crs or --anchor places it)
    assert not drainage.source.local and meta["coordinates"] == "projected, CRS not declared"
    assert meta["extent"][0] == pytest.approx(24_525_622.6, abs=0.1)
    assert meta["facilities"] == [{"ifc_class": "IfcRoad", "GlobalId": "2ILMIFeML4kuJNR205ddNU",
                                   "Name": "Sammalammintie"}]
    assert all(o.parent is None for o in drainage.objects)  # contained in the road, which is no object


def test_pipe_segments(drainage):
    diameters = Counter()
    for pipe in drainage.of("PipeSegment"):
        (l3, axis, s3), (l6, mesh, s6) = pipe.geometries
        assert (l3, l6, s3, s6) == (3, 6, None, None)
        assert axis.geom_type == "LineString" and shapely.has_z(axis) and len(axis.coords) == 2
        # the axis spans the tube: its length is the mesh's extent along it
        ends = np.asarray(axis.coords)
        length = float(np.linalg.norm(ends[1] - ends[0]))  # in 3D: shapely's length is the plan length
        along = (shapely.get_coordinates(mesh, include_z=True) - ends[0]) @ ((ends[1] - ends[0]) / length)
        assert length == pytest.approx(along.max() - along.min(), abs=0.01)
        assert 3.0 < length < 26.0
        assert pipe.typed["diameter_mm"] > 0 and pipe.typed["pipe_kind"] == "YS"  # IfcDistributionSystem STORMWATER
        assert pipe.attributes["diameter_source"] == "Pset_PipeSegmentTypeCommon.InnerDiameter"
        assert pipe.attributes["axis_source"] == "Axis representation"
        assert pipe.solid
        diameters[(pipe.typed["diameter_mm"], pipe.typed["material"])] += 1
    # 4 concrete pipes ("betoni", category "concrete") of 400 mm, 2 PVC pipes of 239 mm
    assert diameters == {(400.0, "混凝土"): 4, (239.0, "PVC"): 2}
    concrete = next(p for p in drainage.of("PipeSegment") if p.typed["material"] == "混凝土")
    assert concrete.attributes["materials"] == [{"Name": "betoni", "Category": "concrete"}]


def test_manholes(drainage):
    for node in drainage.of("PipeNode"):
        (l3, point, _), (l6, mesh, _) = node.geometries
        assert (l3, l6) == (3, 6)
        assert point.geom_type == "Point" and shapely.has_z(point)
        xyz = shapely.get_coordinates(mesh, include_z=True)
        assert point.z == pytest.approx(xyz[:, 2].max())  # the top (rim)
        assert point.x == pytest.approx((xyz[:, 0].min() + xyz[:, 0].max()) / 2)
        assert node.attributes["PredefinedType"] == "MANHOLE" and node.typed["pipe_kind"] == "YS"
        rim = node.attributes["psets"]["imPset_DistributionChamberElementCommon"]["RimElevation"]
        assert point.z == pytest.approx(rim, abs=0.05)
        assert node.attributes["classification"][0]["code"] == "312200"


# --- IFC2x3 --------------------------------------------------------------------------------------------


def _ifc2x3(path: Path, map_conversion: bool) -> Path:
    """A small IFC2x3 building in millimetres: two storeys, a wall with a door in an opening, a site at
    Benxi's latitude; optionally georeferenced with the 2x3 property sets ePSet_MapConversion/ProjectedCRS."""
    model = ifcopenshell.api.run("project.create_file", version="IFC2X3")
    org = model.create_entity("IfcOrganization", Name="cim tests")
    user = model.create_entity("IfcPersonAndOrganization", model.create_entity("IfcPerson", FamilyName="Test"), org)
    app = model.create_entity("IfcApplication", org, "1.0", "cim tests", "cim-tests")
    # IFC2x3 requires an owner history on every rooted entity (settings are global: restored below)
    settings = ifcopenshell.api.owner.settings
    saved = settings.get_user, settings.get_application
    settings.get_user = lambda _f: user
    settings.get_application = lambda _f: app
    run = ifcopenshell.api.run
    project = run("root.create_entity", model, ifc_class="IfcProject", name="2x3 test")
    run("unit.assign_unit", model, length={"is_metric": True, "raw": "MILLIMETERS"})
    context = run("context.add_context", model, context_type="Model")
    body = run("context.add_context", model, context_type="Model", context_identifier="Body",
               target_view="MODEL_VIEW", parent=context)
    site = run("root.create_entity", model, ifc_class="IfcSite", name="Site")
    site.RefLatitude, site.RefLongitude, site.RefElevation = (41, 17, 36, 0), (123, 46, 12, 0), 180_000.0
    building = run("root.create_entity", model, ifc_class="IfcBuilding", name="B")
    run("aggregate.assign_object", model, relating_object=project, products=[site])
    run("aggregate.assign_object", model, relating_object=site, products=[building])

    def place(product, x=0.0, y=0.0, z=0.0):
        matrix = np.eye(4)
        matrix[:3, 3] = (x, y, z)
        run("geometry.edit_object_placement", model, product=product, matrix=matrix, is_si=False)

    storeys = []
    for i in range(2):
        storey = run("root.create_entity", model, ifc_class="IfcBuildingStorey", name=f"S{i}")
        storey.Elevation = 3000.0 * i
        place(storey, z=3000.0 * i)
        run("aggregate.assign_object", model, relating_object=building, products=[storey])
        storeys.append(storey)

    def box(ifc_class, name, length, height, thickness, x=0.0, y=0.0):
        product = run("root.create_entity", model, ifc_class=ifc_class, name=name)
        rep = run("geometry.add_wall_representation", model, context=body, length=length, height=height,
                  thickness=thickness)
        run("geometry.assign_representation", model, product=product, representation=rep)
        place(product, x, y)
        return product

    wall = box("IfcWallStandardCase", "W", 5.0, 3.0, 0.2)
    opening = box("IfcOpeningElement", None, 1.0, 2.0, 0.6, x=2000.0, y=-200.0)
    door = box("IfcDoor", "D", 1.0, 2.0, 0.05, x=2000.0, y=50.0)
    run("spatial.assign_container", model, relating_structure=storeys[0], products=[wall, door])
    run("feature.add_feature", model, feature=opening, element=wall)
    run("feature.add_filling", model, opening=opening, element=door)
    if map_conversion:
        for name, properties in (
                ("ePSet_MapConversion", {"Eastings": 564_489.714, "Northings": 4_574_176.348, "OrthogonalHeight": 180.0,
                                         "XAxisAbscissa": 1.0, "XAxisOrdinate": 0.0, "Scale": 0.001}),
                ("ePSet_ProjectedCRS", {"Name": "EPSG:4550"})):
            pset = run("pset.add_pset", model, product=project, name=name)
            run("pset.edit_pset", model, pset=pset, properties=properties)
    settings.get_user, settings.get_application = saved
    model.write(str(path))
    return path


@pytest.fixture(scope="module")
def ifc2x3(tmp_path_factory) -> Read:
    return Read(_ifc2x3(tmp_path_factory.mktemp("ifc") / "small_2x3.ifc", map_conversion=False))


def test_ifc2x3(ifc2x3):
    meta = ifc2x3.source.metadata
    assert meta["schema"] == "IFC2X3" and meta["length_unit_scale"] == 0.001
    assert dict(Counter(o.object_class for o in ifc2x3.objects)) == {"Building": 1, "Storey": 2, "Wall": 1, "Door": 1}
    (door,) = ifc2x3.of("Door")
    (wall,) = ifc2x3.of("Wall")
    assert door.parent == wall.source_id and wall.parent == ifc2x3.of("Storey")[0].source_id
    assert [s.attributes["elevation"] for s in ifc2x3.of("Storey")] == [0.0, 3.0]  # 3000 mm
    assert ifc2x3.of("Building")[0].typed == {"floors": 2, "height": 3.0}
    assert meta["site_lonlat"] == pytest.approx([123 + 46 / 60 + 12 / 3600, 41 + 17 / 60 + 36 / 3600, 180.0])
    assert ifc2x3.source.local and meta["georeferencing"] == "IfcSite"
    assert ifc2x3.mesh(wall).bounds == pytest.approx((0.0, 0.0, 5.0, 0.2))
    assert wall.solid and is_closed_shell(ifc2x3.mesh(wall))  # the door's opening is cut and the shell closed


def test_ifc2x3_map_conversion(tmp_path, ifc2x3):
    read = Read(_ifc2x3(tmp_path / "small_2x3_cgcs2000.ifc", map_conversion=True))
    assert read.source.crs.to_epsg() == 4550 and not read.source.local
    assert read.source.metadata["georeferencing"] == "ePSet_MapConversion"
    (wall,) = read.of("Wall")
    assert read.mesh(wall).bounds == pytest.approx((564_489.714, 4_574_176.348, 564_494.714, 4_574_176.548))
    z = shapely.get_coordinates(read.mesh(wall), include_z=True)[:, 2]
    assert (z.min(), z.max()) == pytest.approx((180.0, 183.0))


# --- unreadable files ----------------------------------------------------------------------------------


def _derived(tmp_path: Path, source: Path, name: str, old: str, new: str) -> Path:
    text = source.read_text(encoding="latin-1")
    assert old in text
    path = tmp_path / name
    path.write_text(text.replace(old, new, 1), encoding="latin-1")
    return path


SOUTH_WALL = "#40=IFCWALLSTANDARDCASE('3g46_woBL6sugXeY5_WP6n',#5,'South wall',$,$,#65,#42,$,.STANDARD.);"


def test_missing_file(tmp_path):
    path = tmp_path / "nowhere.ifc"
    with pytest.raises(ReadError, match="no such file") as info:
        read_ifc(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("content", [b"hello, this is a text file\n", b"", b"PK\x03\x04zipped"])
def test_not_an_ifc_file(tmp_path, content):
    path = tmp_path / "renamed.ifc"
    path.write_bytes(content)
    with pytest.raises(ReadError, match="not an IFC file") as info:
        read_ifc(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(tmp_path, keep):
    """Cut anywhere, even at a line end: IfcOpenShell would open what is left without complaint."""
    data = OPEN_HOUSE.read_bytes()
    cut = data[: int(len(data) * keep)]
    path = tmp_path / "truncated.ifc"
    path.write_bytes(cut[: cut.rfind(b"\n") + 1] if keep > 0.9 else cut)
    with pytest.raises(ReadError, match="truncated") as info:
        read_ifc(path)
    assert str(path) in str(info.value)


def test_unsupported_schema(tmp_path):
    path = _derived(tmp_path, DRAINAGE, "rc3.ifc", "FILE_SCHEMA(('IFC4X3_ADD2'));", "FILE_SCHEMA(('IFC4X3_RC3'));")
    with pytest.raises(ReadError, match="Unsupported schema: IFC4X3_RC3") as info:
        read_ifc(path)
    assert str(path) in str(info.value)


def test_broken_reference_names_the_entity(tmp_path):
    path = _derived(tmp_path, OPEN_HOUSE, "dangling.ifc", SOUTH_WALL, SOUTH_WALL.replace("#65,#42", "#999999,#42"))
    with pytest.raises(ReadError) as info:
        read_ifc(path)
    message = str(info.value)
    assert str(path) in message and "#40 IfcWallStandardCase" in message and "#999999" in message


def test_entity_with_missing_attributes_is_reported_on_the_object(tmp_path):
    """A wall with too few attributes is readable but incomplete: the object carries the parser's warning
    (the loader's "readable" rule rejects it), the rest of the file loads."""
    path = _derived(tmp_path, OPEN_HOUSE, "short.ifc", SOUTH_WALL, SOUTH_WALL.replace(",#42,$,.STANDARD.);", ");"))
    read = Read(path)
    wall = next(w for w in read.of("Wall") if w.name == "South wall")
    assert wall.errors and "Expected 9 attribute values, found 6" in wall.errors[0]
    assert wall.geometries == []
    assert all(not o.errors for o in read.objects if o is not wall)
    assert "#40 IfcWallStandardCase" in read.source.metadata["parse_warnings"][0]


def test_shape_that_cannot_be_triangulated_is_reported_on_the_object(tmp_path):
    path = _derived(tmp_path, OPEN_HOUSE, "badtype.ifc", SOUTH_WALL, SOUTH_WALL.replace("#65,#42", "'oops',#42"))
    read = Read(path)
    wall = next(w for w in read.of("Wall") if w.name == "South wall")
    assert wall.geometries == [] and wall.errors and wall.errors[0].startswith("body not triangulated")
    assert sum(1 for o in read.objects if o.errors) == 1


def test_reads_after_spatialite_is_loaded():
    """SpatiaLite loads Debian's libraries process-wide (STACK-NOTES); IfcOpenShell's kernels must still work
    when the loader imports this reader after opening a SpatiaLite database."""
    script = (
        "import tempfile, pathlib\n"
        "from sqlalchemy import text\n"
        "from cim.db.engine import open_engine\n"
        "with tempfile.TemporaryDirectory() as d:\n"
        "    engine = open_engine(f'sqlite:///{d}/t.sqlite', create=True)\n"
        "    with engine.connect() as c:\n"
        "        c.execute(text('select spatialite_version()')).scalar()\n"
        "    from cim.ingest.ifc import read_ifc\n"
        f"    for p in [{str(OPEN_HOUSE)!r}, {str(DRAINAGE)!r}]:\n"
        "        print(sum(1 for o in read_ifc(pathlib.Path(p)).objects if o.geometries))\n"
        "    engine.dispose()\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["34", "13"]
