"""What a 3D Tiles tileset can be built from: the layers, their CIM levels and the properties every feature
carries, plus the build settings.

The build settings (:class:`Tiles3DSettings`) are configured in ``config.yml`` (``cim.tiles3d``) and live in
:mod:`cim.settings`; they are re-exported here.
"""

from __future__ import annotations

from dataclasses import dataclass

from cim.settings import Tiles3DSettings
from cim.tiles3d.errors import BadLevel, UnknownLayer

__all__ = ["LAYER_SPECS", "LayerSpec", "Property", "Tiles3DSettings", "check_request"]

@dataclass(frozen=True)
class Property:
    """One column of a layer's property table (EXT_structural_metadata).

    ``source`` is a typed column of ``city_object`` (``uid``, ``object_class``...), ``parent``/``root`` (the
    linked object's uid), ``cim_level`` (the level of the geometry drawn), or ``attributes.KEY``.
    """

    name: str
    kind: str  # "STRING", "FLOAT64", "INT32"
    source: str
    description: str = ""


_STR, _F64, _I32 = "STRING", "FLOAT64", "INT32"
_COMMON = (
    Property("uid", _STR, "uid", "Stable public id of the CIM object (the OGC API feature id)"),
    Property("class", _STR, "object_class", "CIM object class"),
    Property("name", _STR, "name", "Name"),
    Property("cim_level", _I32, "cim_level", "CIM level of the geometry shown"),
)


@dataclass(frozen=True)
class LayerSpec:
    """A layer that 3D tilesets are built from.

    ``levels`` are the CIM levels a tileset of the layer can show. With ``fallback`` an object without
    geometry at the requested level is drawn with its highest stored level below it (within ``levels``):
    a CIM3 city shows LOD1 massing where no roof model exists. Building components have no fallback: their
    levels hold different objects (CIM5 storeys and spaces, CIM6 walls, slabs, doors...), not coarser
    versions of the same ones.
    """

    layer: str
    metadata_class: str  # EXT_structural_metadata class id
    title: str
    levels: tuple[int, ...]
    fallback: bool
    properties: tuple[Property, ...]
    colour: tuple[int, int, int] = (200, 200, 200)
    # classes stored in the layer but not drawn: a storey is the envelope of its spaces, slabs and walls,
    # and drawn it would hide them
    hidden_classes: tuple[str, ...] = ()


LAYER_SPECS: dict[str, LayerSpec] = {s.layer: s for s in (
    LayerSpec("buildings", "building", "Building (建筑)", (2, 3, 4), True, _COMMON + (
        Property("usage", _STR, "usage", "用途"),
        Property("height", _F64, "height", "Height above ground, m"),
        Property("floors", _I32, "floors", "层数"),
        Property("year_built", _I32, "year_built", "建成年份"),
        Property("district", _STR, "district", "行政区"),
        Property("address", _STR, "address", "地址"),
    ), (222, 214, 196)),
    LayerSpec("building-components", "building_component", "Building component (建筑构件)", (5, 6, 7), False,
              _COMMON + (
        Property("parent", _STR, "parent", "uid of the object it belongs to"),
        Property("root", _STR, "root", "uid of its building"),
        Property("usage", _STR, "attributes.usage", "Space usage"),
        Property("component", _STR, "attributes.构件", "构件类型"),
    ), (214, 208, 190), hidden_classes=("Storey",)),
    LayerSpec("pipelines", "pipe_segment", "Pipe segment (管线段)", (2, 3, 4, 5, 6), True, _COMMON + (
        Property("pipe_kind", _STR, "pipe_kind", "管线种类 (JS YS WS RQ RL DL TX)"),
        Property("diameter_mm", _F64, "diameter_mm", "管径, mm"),
        Property("material", _STR, "material", "材质"),
        Property("depth_m", _F64, "depth_m", "埋深, m"),
        Property("owner", _STR, "owner", "权属单位"),
        Property("laid_date", _STR, "laid_date", "埋设日期"),
    )),
    LayerSpec("pipe-nodes", "pipe_node", "Pipe node (管线点)", (2, 3, 4, 5, 6), True, _COMMON + (
        Property("pipe_kind", _STR, "pipe_kind", "管线种类"),
        Property("depth_m", _F64, "depth_m", "埋深, m"),
        Property("node_type", _STR, "attributes.node_type", "点性 (manhole, valve, end...)"),
        Property("code", _STR, "source_id", "部件编码 / 点号"),
        Property("owner", _STR, "owner", "权属单位"),
    )),
    LayerSpec("roads", "road", "Road (道路)", (2, 3, 4), True, _COMMON + (
        Property("district", _STR, "district", "行政区"),
        Property("grade", _STR, "attributes.道路等级", "道路等级"),
    ), (110, 110, 115)),
    LayerSpec("bridges", "bridge", "Bridge (桥梁)", (2, 3, 4), True, _COMMON + (
        Property("height", _F64, "height", "Height, m"),
        Property("year_built", _I32, "year_built", "建成年份"),
        Property("district", _STR, "district", "行政区"),
    ), (185, 180, 170)),
)}

# 管线 colours after the usual Chinese utility-map convention (CJJ 61): water blue, drainage brown, gas
# yellow, heat orange, power red, telecom green.
PIPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "JS": (0, 112, 255), "YS": (150, 100, 40), "WS": (110, 70, 30), "RQ": (255, 200, 0),
    "RL": (255, 120, 0), "DL": (230, 30, 30), "TX": (0, 170, 70),
}
# building components by class (CIM5-7), so that a storey's parts read apart without styling
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "Storey": (225, 225, 225), "Space": (196, 214, 232), "Wall": (232, 228, 216), "Slab": (170, 170, 170),
    "Roof": (176, 84, 64), "Door": (150, 110, 80), "Window": (120, 170, 210), "Stair": (150, 150, 150),
}
SURFACE_COLOURS: dict[str, tuple[int, int, int]] = {
    "RoofSurface": (176, 84, 64), "GroundSurface": (120, 120, 120), "TrafficArea": (110, 110, 115),
    "Window": (120, 170, 210), "Door": (150, 110, 80),
}


def check_request(layers: list[str], cim_level: int) -> list[LayerSpec]:
    """The specs of ``layers`` at ``cim_level``, or a clear error naming what is allowed."""
    if not layers:
        raise UnknownLayer("give at least one layer")
    specs = []
    for layer in layers:
        spec = LAYER_SPECS.get(layer)
        if spec is None:
            extra = " (terrain is served as quantized-mesh, not as 3D Tiles)" if layer == "terrain" else ""
            raise UnknownLayer(f"no 3D tilesets for layer {layer!r}{extra}; layers: {', '.join(LAYER_SPECS)}")
        if cim_level not in spec.levels:
            others = [s.layer for s in LAYER_SPECS.values() if cim_level in s.levels]
            hint = f"; CIM{cim_level} tilesets exist for {', '.join(others)}" if others else ""
            raise BadLevel(f"CIM level {cim_level} is not available for layer {layer!r}: its 3D tilesets are "
                           f"built at CIM{spec.levels[0]}–{spec.levels[-1]}{hint}")
        specs.append(spec)
    return specs
