"""Errors of 3D tileset building: each one a sentence the command line prints as it is."""

from __future__ import annotations

__all__ = ["BadLevel", "NoGeometry", "Tiles3DError", "UnknownLayer"]


class Tiles3DError(ValueError):
    """A tileset cannot be built as asked."""


class UnknownLayer(Tiles3DError):
    """A layer that has no 3D tilesets."""


class BadLevel(Tiles3DError):
    """A CIM level the layer's tilesets are not built at."""


class NoGeometry(Tiles3DError):
    """Nothing to draw: no object of the layers has geometry at that level (within the bbox)."""
