"""The CityGML reader against the real sample files (CityGML 2.0 and 3.0 FZK-Haus, the TUM building) and
small hand-written files for the mappings and every error path. Expected counts and areas are computed
from the files here, independently of the reader."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import shapely
from lxml import etree

from cim.ingest.citygml import read_citygml
from cim.ingest.model import ReadError, SourceFile, SourceObject

from .conftest import SHARED

DATA = SHARED / "datasets/citygml"
FZK2 = DATA / "fzk_haus_lod2_citygml2.gml"
FZK3 = DATA / "fzk_haus_lod3_citygml2.gml"
TUM = DATA / "tum_main_entrance_lod2_citygml3.gml"
FZK2_V3 = DATA / "fzk_haus_lod2_citygml3.gml"
SAMPLES = [FZK2, FZK3, TUM, FZK2_V3]
FZK_ID = "UUID_d281adfc-4901-0f52-540b-4cc1a9325f82"

NS2 = ('xmlns:core="http://www.opengis.net/citygml/2.0" xmlns:bldg="http://www.opengis.net/citygml/building/2.0" '
       'xmlns:tran="http://www.opengis.net/citygml/transportation/2.0" '
       'xmlns:frn="http://www.opengis.net/citygml/cityfurniture/2.0" '
       'xmlns:gen="http://www.opengis.net/citygml/generics/2.0" xmlns:gml="http://www.opengis.net/gml" '
       'xmlns:xlink="http://www.w3.org/1999/xlink"')
NS3 = ('xmlns="http://www.opengis.net/citygml/3.0" xmlns:bldg="http://www.opengis.net/citygml/building/3.0" '
       'xmlns:con="http://www.opengis.net/citygml/construction/3.0" '
       'xmlns:gen="http://www.opengis.net/citygml/generics/3.0" xmlns:gml="http://www.opengis.net/gml/3.2" '
       'xmlns:xlink="http://www.w3.org/1999/xlink"')
SQUARE = "0 0 0 10 0 0 10 10 0 0 10 0 0 0 0"


def read_all(path: Path) -> tuple[SourceFile, list[SourceObject]]:
    source = read_citygml(path)
    return source, list(source.objects)


def citygml2(tmp_path: Path, members: str, srs: str = "EPSG:25832", name: str = "model.gml") -> Path:
    """A small CityGML 2.0 file: the envelope on line 3, then the members as given."""
    path = tmp_path / name
    path.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<core:CityModel {NS2}>\n'
                    f'<gml:boundedBy><gml:Envelope srsName="{srs}" srsDimension="3"><gml:lowerCorner>0 0 0'
                    f'</gml:lowerCorner><gml:upperCorner>10 10 10</gml:upperCorner></gml:Envelope></gml:boundedBy>\n'
                    f'{members}\n</core:CityModel>\n', encoding="utf-8")
    return path


def polygon2(pos_list: str, gid: str | None = None, dimension: str = ' srsDimension="3"') -> str:
    ident = f' gml:id="{gid}"' if gid else ""
    return (f'<gml:Polygon{ident}>\n<gml:exterior><gml:LinearRing>\n<gml:posList{dimension}>{pos_list}</gml:posList>\n'
            '</gml:LinearRing></gml:exterior>\n</gml:Polygon>')


def building2(body: str, gid: str = "B1") -> str:
    return f'<core:cityObjectMember>\n<bldg:Building gml:id="{gid}">\n{body}\n</bldg:Building>\n</core:cityObjectMember>'


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), start=1) if needle in line)


def rings(polygon: shapely.Polygon) -> list[np.ndarray]:
    return [np.asarray(polygon.exterior.coords)] + [np.asarray(r.coords) for r in polygon.interiors]


def area3d(polygon: shapely.Polygon) -> float:
    """A planar 3D polygon's area (Newell's method): shapely's area is the plan view's."""

    def ring_area(c: np.ndarray) -> float:
        return float(np.linalg.norm(np.cross(c[:-1], c[1:]).sum(axis=0)) / 2)

    r = [c - np.asarray(polygon.exterior.coords)[0] for c in rings(polygon)]
    return ring_area(r[0]) - sum(ring_area(c) for c in r[1:])


def is_closed_shell(geom: shapely.MultiPolygon, decimals: int = 3) -> bool:
    """Every directed edge, after rounding, is walked once the other way by another face."""
    edges: Counter[tuple] = Counter()
    for polygon in geom.geoms:
        for ring in rings(polygon):
            points = [tuple(p) for p in np.round(ring, decimals)]
            edges.update((a, b) for a, b in itertools.pairwise(points) if a != b)
    return bool(edges) and all(edges[(b, a)] == n for (a, b), n in edges.items())


def assert_valid_3d(geom: shapely.MultiPolygon) -> None:
    """3D faces, closed rings of ≥ 4 finite positions, valid when laid flat in their own plane."""
    assert geom.geom_type == "MultiPolygon" and shapely.has_z(geom)
    for polygon in geom.geoms:
        for ring in rings(polygon):
            assert ring.shape[1] == 3 and len(ring) >= 4 and np.isfinite(ring).all()
            assert (ring[0] == ring[-1]).all()
        exterior = rings(polygon)[0]
        normal = np.cross(exterior[:-1] - exterior[0], exterior[1:] - exterior[0]).sum(axis=0)
        keep = [k for k in range(3) if k != int(np.argmax(np.abs(normal)))]
        flat = shapely.Polygon(exterior[:, keep], [r[:, keep] for r in rings(polygon)[1:]])
        assert flat.is_valid, shapely.is_valid_reason(flat)


def ring_positions(ring: etree._Element) -> np.ndarray:
    """A ring's positions read straight from the XML (posList or pos elements)."""
    text = " ".join(t for t in ring.xpath(".//*[local-name()='posList' or local-name()='pos']/text()"))
    return np.array(text.split(), dtype=float).reshape(-1, 3)


def ground_area_in_file(path: Path) -> float:
    """The plan area of the file's GroundSurface polygons (shoelace on the raw positions, holes subtracted)."""

    def shoelace(c: np.ndarray) -> float:
        # relative to the first vertex: on raw UTM values (~10^6 m) the products cancel catastrophically
        x, y = c[:, 0] - c[0, 0], c[:, 1] - c[0, 1]
        return abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))) / 2

    tree = etree.parse(str(path))
    total = 0.0
    for boundary in tree.xpath("//*[local-name()='GroundSurface']//*[local-name()='exterior' or "
                               "local-name()='interior']"):
        sign = 1 if etree.QName(boundary).localname == "exterior" else -1
        total += sign * shoelace(ring_positions(boundary))
    return total


def surfaces(obj: SourceObject, level: int) -> Counter[str | None]:
    geometry = next(g for g in obj.geometries if g[0] == level)
    return Counter(geometry[2] or [None] * len(geometry[1].geoms))


# ---------------------------------------------------------------------------------------------------------
# the sample files


def test_fzk_lod2_citygml2():
    source, objects = read_all(FZK2)
    assert source.kind == "citygml" and source.crs.to_epsg() == 25832
    assert source.metadata["citygml_version"] == "2.0"
    assert source.metadata["srs_name"] == "urn:adv:crs:ETRS89_UTM32*DE_DHHN92_NH"
    assert source.metadata["vertical_crs"] == "EPSG:5783"
    assert source.metadata["objects"] == 1 and source.metadata["objects_by_class"] == {"Building": 1}
    assert source.metadata["extent"] == [457842, 5439083, 111.8, 457854, 5439093, 118.317669]
    [house] = objects
    assert (house.source_id, house.object_class, house.parent, house.name) == (FZK_ID, "Building", None,
                                                                               "AC14-FZK-Haus")
    assert [g[0] for g in house.geometries] == [3] and house.geometries[0][3] == "2"
    # the lod2Solid references the 7 boundary polygons by gml:id: each is counted once
    assert surfaces(house, 3) == {"WallSurface": 4, "RoofSurface": 2, "GroundSurface": 1}
    geometry = house.geometries[0][1]
    assert_valid_3d(geometry)
    assert house.solid and is_closed_shell(geometry)
    assert house.footprint.geom_type == "Polygon" and not shapely.has_z(house.footprint)
    assert house.footprint.area == pytest.approx(ground_area_in_file(FZK2)) and house.footprint.area == 120
    assert house.typed == {"address": "Spöcker Straße 4711, 76344 Eggenstein-Leopoldshafen", "height": 6.52,
                           "floors": 2, "year_built": 2020, "usage": "1000"}
    a = house.attributes
    assert a["address"] == {"street": "Spöcker Straße", "number": "4711", "postcode": "76344",
                            "locality": "Eggenstein-Leopoldshafen"}
    assert (a["measuredHeight"], a["function"], a["class"], a["roofType"], a["storeysBelowGround"]) == (
        "6.52", "1000", "1000", "1030", "0")
    assert (a["ConstructionMethod"], a["IsLandmarked"], a["GrossPlannedArea"]) == ("New Building", "NO", 120.0)
    assert house.errors == []


def test_fzk_lod3_doors_and_windows_are_children_of_the_house():
    source, objects = read_all(FZK3)
    tree = etree.parse(str(FZK3))
    count = lambda name: int(tree.xpath(f"count(//*[local-name()='{name}'])"))
    assert (count("Door"), count("Window")) == (2, 11)
    assert Counter(o.object_class for o in objects) == {"Building": 1, "Door": 2, "Window": 11}
    house, openings = objects[0], objects[1:]
    assert house.object_class == "Building" and house.parent is None
    assert {o.parent for o in openings} == {FZK_ID}
    names = Counter(o.name for o in openings if o.object_class == "Door")
    assert names == {"Door West": 1, "Door South": 1}
    for opening in openings:
        [(level, geometry, types, lod)] = opening.geometries
        assert (level, lod) == (4, "3") and not opening.solid and opening.footprint is None
        assert types == [opening.object_class] * len(geometry.geoms)
        assert_valid_3d(geometry)
    # the house at CIM4: its boundary surfaces, and the 13 opening polygons its lod3Solid closes over
    assert [g[0] for g in house.geometries] == [4]
    in_surfaces = {name: int(tree.xpath(
        f"count(//*[local-name()='{name}']//*[local-name()='Polygon'][not(ancestor::*[local-name()='opening'])])"))
        for name in ("WallSurface", "RoofSurface", "GroundSurface")}
    assert surfaces(house, 4) == {**in_surfaces, "Window": 11, "Door": 2}
    geometry = house.geometries[0][1]
    assert len(geometry.geoms) == int(tree.xpath("count(//*[local-name()='Polygon'])"))
    assert_valid_3d(geometry)
    # the roof overhangs (0.5 m beyond the walls) are in the RoofSurfaces but not in the solid: the LoD3
    # geometry is an open surface model, not a solid; without them the rest closes
    walls = shapely.box(457842, 5439083, 457854, 5439093).buffer(1e-6)
    inside = [p for p in geometry.geoms if walls.contains(shapely.force_2d(p))]
    assert len(geometry.geoms) - len(inside) == 2
    assert not house.solid and not is_closed_shell(geometry) and is_closed_shell(shapely.MultiPolygon(inside))
    assert house.footprint.area == pytest.approx(ground_area_in_file(FZK3))
    assert house.typed["height"] == 6.52 and house.typed["address"].startswith("Spöcker Straße 4711")
    assert source.metadata["objects"] == 14


def test_tum_citygml3():
    source, objects = read_all(TUM)
    assert source.crs.to_epsg() == 25832 and source.metadata["citygml_version"] == "3.0"
    assert source.metadata["vertical_crs"] == "EPSG:7837"  # DE_DHHN2016_NH
    [building] = objects
    assert (building.source_id, building.object_class) == ("DEBY_LOD2_4959457", "Building")
    assert [g[0] for g in building.geometries] == [3]
    assert surfaces(building, 3) == {"WallSurface": 14, "RoofSurface": 2, "GroundSurface": 1}
    geometry = building.geometries[0][1]
    assert_valid_3d(geometry)
    assert sum(len(p.interiors) for p in geometry.geoms) == 2  # a courtyard: holes in the ground and roof
    assert building.solid and is_closed_shell(geometry)
    assert building.footprint.area == pytest.approx(ground_area_in_file(TUM))
    assert len(building.footprint.interiors) == 1
    assert building.typed == {"address": "Arcisstraße 21, München, Germany", "height": 19.408, "floors": 4,
                              "usage": "31001_3020"}
    a = building.attributes
    assert a["heights"] == [{"highReference": "highestRoofEdge", "lowReference": "lowestGroundPoint",
                             "status": "measured", "value": "19.408", "uom": "urn:adv:uom:m"}]
    assert a["Gemeindeschluessel"] == "09162000" and a["HoeheDach"] == "534.450"  # string attributes stay text
    assert a["externalReference"] == [{"targetResource": "DEBYvAAAAABTMIyA",
                                       "informationSystem": "http://repository.gdi-de.org/schemas/adv/citygml/"
                                                            "fdv/art.htm#_9100"}]


def test_fzk_citygml2_and_citygml3_give_the_same_surfaces():
    _, [v2] = read_all(FZK2)
    _, [v3] = read_all(FZK2_V3)
    assert v3.source_id == v2.source_id and v3.solid and is_closed_shell(v3.geometries[0][1])

    def areas(obj: SourceObject) -> dict[str, float]:
        _, geometry, types, _ = obj.geometries[0]
        out: dict[str, float] = {}
        for polygon, kind in zip(geometry.geoms, types, strict=True):
            out[kind] = out.get(kind, 0.0) + area3d(polygon)
        return out

    a2, a3 = areas(v2), areas(v3)
    assert a2.keys() == a3.keys() == {"WallSurface", "RoofSurface", "GroundSurface"}
    for kind in a2:
        assert a3[kind] == pytest.approx(a2[kind], abs=0.01)
    assert a2["GroundSurface"] == pytest.approx(120)
    # 3.0 writes height and year differently (con:height, con:dateOfConstruction): same typed values
    assert v3.typed == v2.typed
    assert v3.footprint.equals(v2.footprint)


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_sample_polygon_is_a_valid_3d_face(path):
    source, objects = read_all(path)
    assert source.crs.to_epsg() == 25832
    for obj in objects:
        assert obj.errors == []
        for level, geometry, types, _ in obj.geometries:
            assert level in (2, 3, 4)
            assert types is None or len(types) == len(geometry.geoms)
            assert_valid_3d(geometry)


# ---------------------------------------------------------------------------------------------------------
# mappings, on small files


def test_parts_roads_furniture_generics_and_generated_ids(tmp_path):
    members = "\n".join([
        '<core:cityObjectMember><bldg:Building>',  # no gml:id: an id from the file position
        '<gml:name>Main</gml:name><bldg:function>1010</bldg:function><bldg:function>1020</bldg:function>',
        '<bldg:measuredHeight uom="m">7.5</bldg:measuredHeight>',
        '<gen:intAttribute name="units"><gen:value>12</gen:value></gen:intAttribute>',
        '<gen:doubleAttribute name="ratio"><gen:value>0.25</gen:value></gen:doubleAttribute>',
        '<gen:dateAttribute name="surveyed"><gen:value>2024-05-01</gen:value></gen:dateAttribute>',
        ('<gen:genericAttributeSet name="owner"><gen:stringAttribute name="name"><gen:value>City</gen:value>'
         '</gen:stringAttribute></gen:genericAttributeSet>'),
        '<gen:stringAttribute name="function"><gen:value>shadowed</gen:value></gen:stringAttribute>',
        (f'<bldg:lod1Solid><gml:Solid><gml:exterior><gml:CompositeSurface><gml:surfaceMember>{polygon2(SQUARE)}'
         '</gml:surfaceMember></gml:CompositeSurface></gml:exterior></gml:Solid></bldg:lod1Solid>'),
        '<bldg:consistsOfBuildingPart><bldg:BuildingPart><bldg:storeysAboveGround>3</bldg:storeysAboveGround>',
        # an unclosed ring (the first position is not repeated): closed by the reader
        ('<bldg:lod2MultiSurface><gml:MultiSurface><gml:surfaceMember>'
         f'{polygon2("0 0 5 4 0 5 4 4 5")}</gml:surfaceMember></gml:MultiSurface></bldg:lod2MultiSurface>'),
        '</bldg:BuildingPart></bldg:consistsOfBuildingPart>',
        '</bldg:Building></core:cityObjectMember>',
        '<core:cityObjectMember><tran:Road gml:id="R1"><tran:function>1000</tran:function>',
        (f'<tran:lod1MultiSurface><gml:MultiSurface><gml:surfaceMember>{polygon2(SQUARE)}</gml:surfaceMember>'
         '</gml:MultiSurface></tran:lod1MultiSurface>'),
        ('<tran:trafficArea><tran:TrafficArea gml:id="TA1"><tran:lod2MultiSurface><gml:MultiSurface>'
         f'<gml:surfaceMember>{polygon2(SQUARE)}</gml:surfaceMember></gml:MultiSurface></tran:lod2MultiSurface>'
         '</tran:TrafficArea></tran:trafficArea>'),
        '</tran:Road></core:cityObjectMember>',
        '<core:cityObjectMember><tran:Track gml:id="T1"/></core:cityObjectMember>',
        ('<core:cityObjectMember><frn:CityFurniture gml:id="F1"><frn:lod2Geometry><gml:MultiSurface>'
         f'<gml:surfaceMember>{polygon2(SQUARE)}</gml:surfaceMember></gml:MultiSurface></frn:lod2Geometry>'
         '<frn:lod2ImplicitRepresentation/></frn:CityFurniture></core:cityObjectMember>'),
        '<core:cityObjectMember xlink:href="#elsewhere"/>',
    ])
    source, objects = read_all(citygml2(tmp_path, members))
    by_id = {o.source_id: o for o in objects}
    assert list(by_id) == ["Building#1", "Building#1/BuildingPart#1", "R1", "T1", "F1"]
    main, part, road, track, furniture = objects
    assert (main.name, main.typed["usage"], main.typed["height"], main.solid) == ("Main", "1010", 7.5, True)
    assert main.attributes["function"] == ["1010", "1020"]
    assert main.attributes["gen:function"] == "shadowed"  # a generic attribute never hides a CityGML one
    assert (main.attributes["units"], main.attributes["ratio"], main.attributes["surveyed"]) == (12, 0.25,
                                                                                                  "2024-05-01")
    assert main.attributes["owner"] == {"name": "City"}
    assert [(g[0], g[2], g[3]) for g in main.geometries] == [(2, None, "1")]
    assert (part.object_class, part.parent, part.typed, part.solid) == ("BuildingPart", "Building#1",
                                                                        {"floors": 3}, False)
    ring = np.asarray(part.geometries[0][1].geoms[0].exterior.coords)
    assert ring.tolist() == [[0, 0, 5], [4, 0, 5], [4, 4, 5], [0, 0, 5]]
    assert main.footprint is None and part.footprint is None  # no GroundSurface: the loader derives them
    assert road.object_class == "Road" and road.typed == {"usage": "1000"}
    assert [(g[0], g[2]) for g in road.geometries] == [(2, None), (3, ["TrafficArea"])]
    assert (track.object_class, track.attributes["citygml_class"], track.geometries) == ("Road", "Track", [])
    assert furniture.object_class == "CityFurniture" and [g[0] for g in furniture.geometries] == [3]
    assert source.metadata["city_object_members"] == 5 and source.metadata["objects"] == 5
    assert source.metadata["objects_by_class"] == {"Building": 1, "BuildingPart": 1, "Road": 2, "CityFurniture": 1}
    assert source.metadata["not_read"] == ["lod2ImplicitRepresentation"]


def test_citygml3_window_surfaces_and_filling_doors(tmp_path):
    wall = ("0 0 0 10 0 0 10 0 5 0 0 5 0 0 0", "2 0 1 2 0 3 4 0 3 4 0 1 2 0 1")
    path = tmp_path / "v3.gml"
    path.write_text(f"""<?xml version="1.0" encoding="UTF-8"?>
<CityModel {NS3}>
<cityObjectMember><bldg:Building gml:id="B">
<genericAttribute><gen:IntAttribute><gen:name>units</gen:name><gen:value>4</gen:value></gen:IntAttribute></genericAttribute>
<boundary><con:WallSurface gml:id="W"><lod3MultiSurface><gml:MultiSurface><gml:surfaceMember>
<gml:Polygon gml:id="WP"><gml:exterior><gml:LinearRing><gml:posList srsDimension="3">{wall[0]}</gml:posList>
</gml:LinearRing></gml:exterior><gml:interior><gml:LinearRing><gml:posList srsDimension="3">{wall[1]}</gml:posList>
</gml:LinearRing></gml:interior></gml:Polygon></gml:surfaceMember></gml:MultiSurface></lod3MultiSurface>
<con:fillingSurface><con:WindowSurface gml:id="WIN"><lod3MultiSurface><gml:MultiSurface><gml:surfaceMember>
<gml:Polygon gml:id="WINP"><gml:exterior><gml:LinearRing><gml:posList srsDimension="3">{wall[1]}</gml:posList>
</gml:LinearRing></gml:exterior></gml:Polygon></gml:surfaceMember></gml:MultiSurface></lod3MultiSurface>
</con:WindowSurface></con:fillingSurface>
</con:WallSurface></boundary>
<lod3MultiSurface><gml:MultiSurface srsName="urn:ogc:def:crs:EPSG::25832">
<gml:surfaceMember xlink:href="#WP"/><gml:surfaceMember xlink:href="#WINP"/></gml:MultiSurface></lod3MultiSurface>
<bldg:buildingConstructiveElement><bldg:BuildingConstructiveElement gml:id="CE">
<con:filling><con:Door gml:id="D"><lod3MultiSurface><gml:MultiSurface><gml:surfaceMember>
<gml:Polygon><gml:exterior><gml:LinearRing><gml:posList srsDimension="3">6 0 0 8 0 0 8 0 2 6 0 2 6 0 0</gml:posList>
</gml:LinearRing></gml:exterior></gml:Polygon></gml:surfaceMember></gml:MultiSurface></lod3MultiSurface>
</con:Door></con:filling></bldg:BuildingConstructiveElement></bldg:buildingConstructiveElement>
</bldg:Building></cityObjectMember>
</CityModel>
""", encoding="utf-8")
    source, objects = read_all(path)
    assert source.crs.to_epsg() == 25832 and source.metadata["citygml_version"] == "3.0"
    assert [(o.source_id, o.object_class, o.parent) for o in objects] == [("B", "Building", None),
                                                                          ("WIN", "Window", "B"), ("D", "Door", "B")]
    building, window, door = objects
    assert building.attributes["units"] == 4
    # the building's own multi-surface references the wall and window polygons: each once, typed by definer
    assert building.geometries[0][2] == ["WallSurface", "Window"]
    assert len(building.geometries[0][1].geoms[0].interiors) == 1
    assert window.attributes["citygml_class"] == "WindowSurface"
    assert [(g[0], g[2]) for g in window.geometries] == [(4, ["Window"])]
    assert [(g[0], g[2]) for g in door.geometries] == [(4, ["Door"])]
    assert source.metadata["not_read"] == ["BuildingConstructiveElement"]


@pytest.mark.parametrize(("srs_name", "epsg", "vertical"), [
    ("EPSG:25832", 25832, None),
    ("urn:ogc:def:crs:EPSG::25832", 25832, None),
    ("urn:ogc:def:crs:EPSG:6.12:25832", 25832, None),
    ("http://www.opengis.net/def/crs/EPSG/0/25832", 25832, None),
    ("urn:ogc:def:crs,crs:EPSG::25832,crs:EPSG::7837", 25832, "EPSG:7837"),
    (("http://www.opengis.net/def/crs-compound?1=http://www.opengis.net/def/crs/EPSG/0/25832&amp;"
      "2=http://www.opengis.net/def/crs/EPSG/0/5783"), 25832, "EPSG:5783"),
    ("EPSG:25832+5783", 25832, "EPSG:5783"),
    ("EPSG:5555", 25832, "EPSG:5783"),  # a registered compound: its horizontal part
    ("urn:adv:crs:ETRS89_UTM32*DE_DHHN92_NH", 25832, "EPSG:5783"),
    ("urn:adv:crs:ETRS89_UTM33*DE_DHHN2016_NH", 25833, "EPSG:7837"),
    ("urn:adv:crs:ETRS89_UTM32", 25832, None),
    ("EPSG:4550", 4550, None),  # CGCS2000 / 3-degree Gauss-Kruger CM 123E (Benxi)
])
def test_srs_name_forms(tmp_path, srs_name, epsg, vertical):
    source, objects = read_all(citygml2(tmp_path, building2(""), srs=srs_name))
    assert len(objects) == 1 and source.crs.to_epsg() == epsg and source.metadata.get("vertical_crs") == vertical
    assert not source.crs.is_compound


def test_latitude_first_crs_positions_become_lon_lat(tmp_path):
    # EPSG:4326 / 4490 order positions latitude, longitude: the SourceFile wants x = longitude
    ring = "41.30 123.77 100 41.30 123.78 100 41.31 123.78 100 41.30 123.77 100"
    body = (f'<bldg:lod2MultiSurface><gml:MultiSurface><gml:surfaceMember>{polygon2(ring)}</gml:surfaceMember>'
            '</gml:MultiSurface></bldg:lod2MultiSurface>')
    source, [building] = read_all(citygml2(tmp_path, building2(body), srs="urn:ogc:def:crs:EPSG::4490"))
    assert source.crs.to_epsg() == 4490
    xyz = shapely.get_coordinates(building.geometries[0][1], include_z=True)
    assert xyz[0].tolist() == [123.77, 41.30, 100] and (xyz[:, 0] > 120).all() and (xyz[:, 1] < 42).all()
    assert source.metadata["extent"] == [0, 0, 0, 10, 10, 10]


def test_objects_stream_before_the_end_of_the_file(tmp_path):
    square = f"<bldg:lod2MultiSurface><gml:MultiSurface><gml:surfaceMember>{polygon2(SQUARE)}</gml:surfaceMember>" \
             "</gml:MultiSurface></bldg:lod2MultiSurface>"
    path = citygml2(tmp_path, building2(square, "first") + "\n" + building2(square, "second"))
    text = path.read_text()
    path.write_text(text[: text.index('gml:id="second"') + 40])  # the file is cut off in the second member
    source = read_citygml(path)
    objects = iter(source.objects)
    assert next(objects).source_id == "first"
    with pytest.raises(ReadError, match=rf"{path.name}: line \d+: not well-formed XML"):
        next(objects)


# ---------------------------------------------------------------------------------------------------------
# errors: ReadError naming the file and the line


def test_missing_file(tmp_path):
    with pytest.raises(ReadError, match=r"nothere\.gml: no such file"):
        read_citygml(tmp_path / "nothere.gml")


@pytest.mark.parametrize(("content", "line", "message"), [
    ("this is not XML\n", 1, "not well-formed XML"),
    ("", 1, "not well-formed XML"),
    ('<?xml version="1.0"?>\n<CityModel xmlns="http://www.opengis.net/citygml/2.0">\n<b>\n</CityModel>\n', 4,
     "not well-formed XML"),
    ('<?xml version="1.0"?>\n<html><body/></html>\n', 2, "not CityGML: the root element is 'html'"),
    ('<?xml version="1.0"?>\n\n<wfs:FeatureCollection xmlns:wfs="http://www.opengis.net/wfs/2.0"/>\n', 3,
     "not CityGML"),
    ('<?xml version="1.0"?>\n<CityModel xmlns="http://www.opengis.net/citygml/0.4"/>\n', 2, "CityGML 0.4; 2.0"),
])
def test_not_citygml(tmp_path, content, line, message):
    path = tmp_path / "broken.gml"
    path.write_text(content)
    with pytest.raises(ReadError, match=rf"broken\.gml: line {line}: {message}"):
        list(read_citygml(path).objects)


def test_unknown_srs_name_on_the_envelope(tmp_path):
    path = citygml2(tmp_path, building2(""), srs="urn:adv:crs:NOWHERE_UTM99")
    with pytest.raises(ReadError, match=r"model\.gml: line 3: unknown srsName 'urn:adv:crs:NOWHERE_UTM99'"):
        read_citygml(path)
    path = citygml2(tmp_path, building2(""), srs="EPSG:999999")
    with pytest.raises(ReadError, match=r"model\.gml: line 3: unknown srsName 'EPSG:999999' \(unknown EPSG code"):
        read_citygml(path)
    path = citygml2(tmp_path, building2(""), srs="WGS 84")  # a CRS name, not an identifier
    with pytest.raises(ReadError, match=r"line 3: unknown srsName 'WGS 84'"):
        read_citygml(path)


def test_unknown_or_different_srs_name_on_a_geometry(tmp_path):
    def with_srs(srs: str) -> Path:
        body = (f'<bldg:lod2MultiSurface>\n<gml:MultiSurface srsName="{srs}">\n<gml:surfaceMember>'
                f'{polygon2(SQUARE)}</gml:surfaceMember></gml:MultiSurface></bldg:lod2MultiSurface>')
        return citygml2(tmp_path, building2(body, "B7"))

    path = with_srs("urn:ogc:def:crs:EPSG::25832")  # the file's CRS spelled differently: fine
    assert read_all(path)[1][0].geometries[0][0] == 3
    path = with_srs("EPSG:bogus")
    line = line_of(path, "EPSG:bogus")
    with pytest.raises(ReadError, match=rf"model\.gml: line {line} \(gml:id B7\): unknown srsName 'EPSG:bogus'"):
        list(read_citygml(path).objects)
    path = with_srs("EPSG:4326")
    with pytest.raises(ReadError, match=rf"line {line} \(gml:id B7\): srsName 'EPSG:4326' differs"):
        list(read_citygml(path).objects)


@pytest.mark.parametrize(("pos_list", "dimension", "message"), [
    ("0 0 0 1 0 0 1 1 0 0 0", ' srsDimension="3"', "11 values in a posList of dimension 3"),
    ("0 0 0 1 0 0 1 1 0 0 0 0 7", "", "13 values in a posList of dimension 3"),  # dimension 3 by default
    ("0 0 0 1 0 0 0 0 0", "", "a polygon with fewer than 4 positions"),  # 3 positions, closed
    ("0 0 0 1 0 0", "", "a polygon with fewer than 4 positions"),  # 2 positions, closed to 3
    ("", "", "a polygon with fewer than 4 positions"),
    ("0 0 0 1 0 x 1 1 0 0 0 0", "", "a position that is not a number"),
    ("0 0 0 1 0 0 1 1 0 0 0 0", ' srsDimension="4"', "srsDimension 4"),
])
def test_bad_polygons(tmp_path, pos_list, dimension, message):
    body = ('<bldg:lod2MultiSurface><gml:MultiSurface><gml:surfaceMember>\n'
            f'{polygon2(pos_list, "P9", dimension)}\n</gml:surfaceMember></gml:MultiSurface></bldg:lod2MultiSurface>')
    path = citygml2(tmp_path, building2(body))
    line = line_of(path, "<gml:posList")
    with pytest.raises(ReadError, match=rf"model\.gml: line {line} \(gml:id P9\): {message}"):
        list(read_citygml(path).objects)


def test_a_polygon_without_positions_in_pos_elements(tmp_path):
    body = ('<bldg:lod2MultiSurface><gml:MultiSurface><gml:surfaceMember>\n<gml:Polygon gml:id="P3">\n'
            '<gml:exterior><gml:LinearRing>\n<gml:pos>0 0 0</gml:pos>\n<gml:pos>1 0 0</gml:pos>\n'
            '<gml:pos>0 0 0</gml:pos>\n</gml:LinearRing></gml:exterior></gml:Polygon></gml:surfaceMember></gml:MultiSurface>'
            '</bldg:lod2MultiSurface>')
    path = citygml2(tmp_path, building2(body))
    line = line_of(path, "<gml:pos>0 0 0")
    with pytest.raises(ReadError, match=rf"line {line} \(gml:id P3\): a polygon with fewer than 4 positions"):
        list(read_citygml(path).objects)


def test_unresolved_reference_is_an_object_error(tmp_path):
    body = ('<bldg:lod2Solid><gml:Solid><gml:exterior><gml:CompositeSurface>'
            '<gml:surfaceMember xlink:href="#missing"/></gml:CompositeSurface></gml:exterior></gml:Solid>'
            '</bldg:lod2Solid>')
    _, [building] = read_all(citygml2(tmp_path, building2(body)))
    assert building.geometries == [] and not building.solid
    line = line_of(tmp_path / "model.gml", "#missing")
    assert building.errors == [f"line {line}: xlink:href '#missing' not found in this object"]
