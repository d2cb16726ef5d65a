"""`cim load` of the IFC and CityGML samples into both databases: counts per class as the files hold them,
the building → storey → space/element tree, pipes and manholes in their layers, repeated loads that change
nothing, and corrupt files that leave the database as it was."""

from __future__ import annotations

from collections import Counter

import pytest
from sqlalchemy import func, select

from cim.db import schema
from cim.ingest.load import LoadError, LoadOptions, load_files
from cim.ingest.place import Anchor

from .conftest import ROOT

DATASETS = ROOT.parent / "shared" / "datasets"
FZK_IFC = DATASETS / "ifc" / "AC20-FZK-Haus.ifc"
OPEN_HOUSE = DATASETS / "ifc" / "IfcOpenHouse_IFC4.ifc"
DRAINAGE = DATASETS / "ifc43" / "DrainageSystem-1-2.hdr-IFC4X3_ADD2.ifc"
FZK_LOD3 = DATASETS / "citygml" / "fzk_haus_lod3_citygml2.gml"
TUM = DATASETS / "citygml" / "tum_main_entrance_lod2_citygml3.gml"
HERE = Anchor(123.77, 41.30, 180.0, 0.0)


def classes(engine, dataset: str) -> Counter:
    t = schema.tables_for(engine)
    co, ds = t.city_object, t.dataset
    with engine.connect() as conn:
        return Counter(dict(conn.execute(
            select(co.c.object_class, func.count()).join(ds, ds.c.id == co.c.dataset_id)
            .where(ds.c.name == dataset).group_by(co.c.object_class)).all()))


def rows(engine) -> dict[str, int]:
    t = schema.tables_for(engine)
    with engine.connect() as conn:
        return {table.name: conn.execute(select(func.count()).select_from(table)).scalar()
                for table in (t.dataset, t.import_run, t.city_object, t.city_object_geometry)}


def test_fzk_house_ifc(db):
    """AC20-FZK-Haus: 13 walls, 4 slabs (2 floor slabs + 2 roof slabs, CIM class Roof by their
    PredefinedType ROOF), 5 doors, 11 windows, 7 spaces, 2 storeys; each element under its storey (doors and
    windows under the wall they fill), all under the building."""
    report = load_files(db, [FZK_IFC], LoadOptions(anchor=HERE, dataset="fzk"))
    assert report.rejected == 0
    got = classes(db, "fzk")
    assert (got["Wall"], got["Slab"] + got["Roof"], got["Door"], got["Window"], got["Space"], got["Storey"],
            got["Building"]) == (13, 4, 5, 11, 7, 2, 1)
    t = schema.tables_for(db)
    co = t.city_object
    parent = co.alias("parent")
    with db.connect() as conn:
        pairs = Counter(conn.execute(select(co.c.object_class, parent.c.object_class)
                                     .join(parent, parent.c.id == co.c.parent_id)).all())
        [building] = conn.execute(select(co.c.id, co.c.layer, co.c.cim_level).where(co.c.object_class == "Building")).all()
        roots = set(conn.execute(select(co.c.root_id).where(co.c.object_class != "Building")).scalars())
        layers = set(conn.execute(select(co.c.layer).where(co.c.object_class != "Building")).scalars())
        levels = dict(conn.execute(select(co.c.object_class, func.max(co.c.cim_level)).group_by(co.c.object_class)).all())
    assert pairs[("Storey", "Building")] == 2 and pairs[("Space", "Storey")] == 7
    assert pairs[("Wall", "Storey")] == 13 and pairs[("Door", "Wall")] == 5 and pairs[("Window", "Wall")] == 11
    assert roots == {building.id} and building.layer == "buildings" and layers == {"building-components"}
    assert (levels["Space"], levels["Wall"], building.cim_level) == (5, 6, 6)


def test_a_site_outside_the_city_needs_an_anchor(db):
    """The FZK house's IfcSite is in Karlsruhe: placing it there is refused with a message naming the site and
    --anchor, and nothing is written."""
    before = rows(db)
    with pytest.raises(LoadError, match=r"the model's site \(IfcSite latitude/longitude\) at lon 8\.4365\d+, lat "
                                        r"49\.1004\d+ lies outside the storage CRS's area .* use --anchor"):
        load_files(db, [FZK_IFC], LoadOptions(dataset="fzk"))
    assert rows(db) == before


def test_open_house_loads_whole(db):
    """IfcOpenHouse's roof and windows have no body of their own (their slabs, members and plates do):
    they load with their parts' plan view as footprint, and so do their parts."""
    report = load_files(db, [OPEN_HOUSE], LoadOptions(anchor=HERE, dataset="house"))
    assert report.rejected == 0
    assert classes(db, "house") == Counter({"Building": 1, "Storey": 1, "Wall": 4, "Roof": 3, "Door": 1,
                                            "Window": 5, "Stair": 1, "Footing": 1, "Member": 20, "Plate": 5})


def test_drainage_network_ifc43(db):
    """IFC 4.3 DrainageSystem: 6 pipe segments and 7 manholes become pipelines and pipe nodes."""
    load_files(db, [DRAINAGE], LoadOptions(anchor=HERE, dataset="drain"))
    assert classes(db, "drain") == Counter({"PipeNode": 7, "PipeSegment": 6})
    t = schema.tables_for(db)
    co = t.city_object
    with db.connect() as conn:
        got = conn.execute(select(co.c.object_class, co.c.layer, co.c.pipe_kind, co.c.diameter_mm)).all()
    assert {(r.object_class, r.layer) for r in got} == {("PipeSegment", "pipelines"), ("PipeNode", "pipe-nodes")}
    assert all(r.pipe_kind == "YS" for r in got)
    assert all(r.diameter_mm > 0 for r in got if r.object_class == "PipeSegment")


def test_citygml_lod3_and_citygml3(db):
    load_files(db, [FZK_LOD3], LoadOptions(anchor=HERE, dataset="lod3"))
    got = classes(db, "lod3")
    assert got["Building"] == 1 and got["Door"] >= 1 and got["Window"] >= 1
    load_files(db, [TUM], LoadOptions(anchor=Anchor(123.771, 41.30, 180.0, 0.0), dataset="tum"))
    assert classes(db, "tum") == Counter({"Building": 1})
    t = schema.tables_for(db)
    co, g = t.city_object, t.city_object_geometry
    with db.connect() as conn:
        levels = conn.execute(select(g.c.cim_level, g.c.lod).join(co, co.c.id == g.c.object_id)
                              .where(co.c.source_id == "DEBY_LOD2_4959457")).all()
    assert [tuple(r) for r in levels] == [(3, "2")]


def test_repeated_load_changes_nothing(db):
    first = load_files(db, [FZK_IFC, DRAINAGE], LoadOptions(anchor=HERE, dataset="bim"))
    before = rows(db)
    t = schema.tables_for(db)
    with db.connect() as conn:
        uids = set(conn.execute(select(t.city_object.c.uid)).scalars())
    again = load_files(db, [FZK_IFC, DRAINAGE], LoadOptions(anchor=HERE, dataset="bim"))
    after = rows(db)
    assert after["city_object"] == before["city_object"] and after["city_object_geometry"] == before["city_object_geometry"]
    assert after["import_run"] == before["import_run"] + 2  # lineage: one run per file and load
    assert sum(f.replaced for f in again.files) == first.loaded
    with db.connect() as conn:
        assert set(conn.execute(select(t.city_object.c.uid)).scalars()) == uids  # the same public ids


@pytest.mark.parametrize("name,cut,message", [
    ("broken.ifc", 0.5, "broken.ifc"),
    ("broken.gml", 0.6, "broken.gml"),
])
def test_corrupt_file_writes_nothing(db, tmp_path, name, cut, message):
    source = FZK_IFC if name.endswith(".ifc") else FZK_LOD3
    data = source.read_bytes()
    broken = tmp_path / name
    broken.write_bytes(data[:int(len(data) * cut)])
    load_files(db, [DRAINAGE], LoadOptions(anchor=HERE, dataset="keep"))
    before = rows(db)
    with pytest.raises(LoadError, match=message):
        # the good file first: it is rolled back with the broken one
        load_files(db, [DRAINAGE, broken], LoadOptions(anchor=HERE, dataset="bad"))
    assert rows(db) == before


def test_ifc_element_without_geometry_is_rejected_by_name(db, tmp_path):
    """A wall with no body: the geometry_present rule rejects it (named by GlobalId); the rest loads."""
    import ifcopenshell
    import ifcopenshell.api

    model = ifcopenshell.open(str(FZK_IFC))
    storey = model.by_type("IfcBuildingStorey")[0]
    wall = ifcopenshell.api.run("root.create_entity", model, ifc_class="IfcWall", name="no body")
    ifcopenshell.api.run("spatial.assign_container", model, products=[wall], relating_structure=storey)
    path = tmp_path / "bodiless.ifc"
    model.write(str(path))
    report = load_files(db, [path], LoadOptions(anchor=HERE, dataset="fzk"))
    f = report.files[0]
    assert f.rejected == 1 and f.loaded == 92
    assert f.rules["geometry_present"]["objects"] == [{"source_id": wall.GlobalId, "reason": "Wall without geometry"}]
