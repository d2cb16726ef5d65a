"""cim.geometry: the 3D surface checks behind the quality rules, on hand-built shells."""

from __future__ import annotations

import numpy as np
import shapely

from cim.geometry import close_open_base, consistently_oriented, is_closed_shell


def prism(outline: shapely.Polygon, z0: float, z1: float, ground: bool = True, roof: bool = True
          ) -> shapely.MultiPolygon:
    """An extruded outline as outward-facing faces (holes give inner walls)."""
    outline = shapely.geometry.polygon.orient(outline, 1.0)  # exterior anticlockwise, holes clockwise
    faces = []
    for ring in [outline.exterior, *outline.interiors]:
        c = np.asarray(ring.coords)
        for (x0, y0), (x1, y1) in zip(c[:-1], c[1:], strict=True):
            faces.append(shapely.Polygon([(x0, y0, z0), (x1, y1, z0), (x1, y1, z1), (x0, y0, z1)]))
    lift = lambda ring, z: [(x, y, z) for x, y in np.asarray(ring.coords)]  # noqa: E731
    if roof:
        faces.append(shapely.Polygon(lift(outline.exterior, z1), [lift(r, z1) for r in outline.interiors]))
    if ground:
        down = shapely.geometry.polygon.orient(outline, -1.0)
        faces.append(shapely.Polygon(lift(down.exterior, z0), [lift(r, z0) for r in down.interiors]))
    return shapely.MultiPolygon(faces)


COURTYARD = shapely.Polygon([(0, 0), (30, 0), (30, 20), (0, 20)], [[(10, 5), (20, 5), (20, 15), (10, 15)]])


def test_closed_prism_is_closed_and_oriented():
    shell = prism(COURTYARD, 100.0, 112.5)
    assert is_closed_shell(shell) and consistently_oriented(shell)
    assert close_open_base(shell) == (shell, 0)


def test_open_base_closed_with_a_face_that_keeps_the_courtyard_open():
    shell = prism(COURTYARD, 100.0, 112.5, ground=False)
    assert not is_closed_shell(shell)
    closed, added = close_open_base(shell)
    assert added == 1 and is_closed_shell(closed) and consistently_oriented(closed)
    ground = closed.geoms[-1]
    assert shapely.force_2d(ground).equals(COURTYARD) and len(ground.interiors) == 1
    assert set(shapely.get_coordinates(ground, include_z=True)[:, 2]) == {100.0}


def test_base_corners_a_centimetre_apart_are_snapped():
    shell = prism(shapely.box(0, 0, 8, 6), 0.02, 9.0, ground=False)
    # one wall's bottom corner 5 mm higher than its neighbour's at the same corner (as in Delft's model)
    wall = shell.geoms[1]
    c = shapely.get_coordinates(wall, include_z=True)
    c[(c[:, 2] == 0.02) & (c[:, 0] == 8) & (c[:, 1] == 0)] += (0, 0, 0.005)
    shell = shapely.MultiPolygon([shell.geoms[0], shapely.Polygon(c), *list(shell.geoms)[2:]])
    closed, added = close_open_base(shell)
    assert added == 1 and is_closed_shell(closed) and consistently_oriented(closed)
    assert shapely.get_coordinates(closed, include_z=True)[:, 2].min() == 0.02


def test_other_openings_are_not_repaired():
    open_roof = prism(shapely.box(0, 0, 8, 6), 0.0, 9.0, roof=False)
    assert close_open_base(open_roof) == (open_roof, 0)
    missing_wall = shapely.MultiPolygon(list(prism(shapely.box(0, 0, 8, 6), 0.0, 9.0, ground=False).geoms)[1:])
    assert close_open_base(missing_wall) == (missing_wall, 0)
    big_step = prism(shapely.box(0, 0, 8, 6), 0.0, 9.0, ground=False)
    c = shapely.get_coordinates(big_step.geoms[0], include_z=True)
    c[c[:, 2] == 0.0] += (0, 0, 0.05)  # a 5 cm step: not a flat base
    stepped = shapely.MultiPolygon([shapely.Polygon(c), *list(big_step.geoms)[1:]])
    assert close_open_base(stepped) == (stepped, 0)
