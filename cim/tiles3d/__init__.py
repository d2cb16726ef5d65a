"""3D Tiles 1.1 from the CIM database: tilesets of buildings, building components, pipelines and pipe nodes,
roads and bridges at a chosen CIM level, with GLB content that names each CIM object (feature ids and a
property table) and vertices relative to their tile's east-north-up frame.

Modules by concern: :mod:`~cim.tiles3d.specs` (layers, levels, properties, settings),
:mod:`~cim.tiles3d.geodesy` (storage CRS and 1985 heights → ellipsoid and ECEF, tile frames),
:mod:`~cim.tiles3d.quadtree` (the tiles), :mod:`~cim.tiles3d.source` (the SQL),
:mod:`~cim.tiles3d.mesh` (geometry → triangles), :mod:`~cim.tiles3d.glb` (GLB with EXT_mesh_features and
EXT_structural_metadata), :mod:`~cim.tiles3d.content` (one tile, reusable on demand),
:mod:`~cim.tiles3d.tileset` (tileset JSON) and :mod:`~cim.tiles3d.build` (pre-built, resumable tilesets).
"""

from cim.tiles3d.build import BuildProgress, BuildReport, build_tileset
from cim.tiles3d.content import TileContent, tile_content
from cim.tiles3d.errors import BadLevel, NoGeometry, Tiles3DError, UnknownLayer
from cim.tiles3d.quadtree import Cell
from cim.tiles3d.source import Selection
from cim.tiles3d.specs import LAYER_SPECS, Tiles3DSettings, check_request

__all__ = ["LAYER_SPECS", "BadLevel", "BuildProgress", "BuildReport", "Cell", "NoGeometry", "Selection", "TileContent",
           "Tiles3DError", "Tiles3DSettings", "UnknownLayer", "build_tileset", "check_request", "tile_content"]
