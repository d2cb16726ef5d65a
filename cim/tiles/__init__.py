"""Tiles of the CIM layers: vector tiles (Mapbox Vector Tiles) and raster map tiles served by OGC API – Tiles.

- :mod:`cim.tiles.grid`: tile matrix sets as the database sees them (integer SRIDs, x/y order), the tile
  frames a request addresses, the WebMercatorQuad zoom of any tile matrix, and tile limits from an extent;
- :mod:`cim.tiles.mvt`: the tile itself, built in SQL on PostGIS (``ST_AsMVT``) and in Python on
  SpatiaLite (shapely + mapbox-vector-tile), same features and attributes on both;
- :mod:`cim.tiles.tilesets`: the OGC tileset documents, TileJSON and tile matrix set lists;
- :mod:`cim.tiles.raster`: map tiles of the registered COGs (hillshade, Terrain-RGB, orthophoto) by rio-tiler;
- :mod:`cim.tiles.cache`: the tile cache on disk, keyed by the layers' data versions;
- :mod:`cim.tiles.seed`: filling the cache ahead of requests (``cim tiles seed``);
- :mod:`cim.tiles.endpoints`: the HTTP routes (ETag, conditional GET, OGC exceptions).

The tile matrix sets themselves are defined once, in :mod:`cim.crs.tms`.
"""
