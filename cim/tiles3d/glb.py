"""Binary glTF 2.0 (GLB) for 3D Tiles 1.1 content, with per-vertex feature ids (``EXT_mesh_features``) and a
property table per primitive (``EXT_structural_metadata``) so that picking a triangle names its CIM object.

Written directly with numpy and ``struct``: a tile is one node, one mesh, a primitive per layer and colour, and
the container format is small; this keeps the per-tile cost (the on-demand path too) to a few array copies.
Binary layout rules followed (glTF 2.0 §4.4, EXT_structural_metadata "Binary Data Storage"): every buffer
view starts on an 8-byte boundary of the buffer and the BIN chunk's data on an 8-byte boundary of the file
(the JSON chunk is padded with spaces to end there), and the BIN chunk is padded with zeros to a multiple
of 8 bytes.

Size: normals are signed bytes (``KHR_mesh_quantization``, required: CesiumJS and the Khronos validator
support it), and a layer's triangles are split into one glTF primitive per colour, whose material carries
it instead of ``COLOR_0`` (all of a layer's primitives name its one property table): 20 bytes a vertex
instead of 32. Positions stay float32 (a leaf may span kilometres; 16-bit positions
would lose centimetres there) and feature ids float32 (vertex attributes are 4-byte aligned anyway).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cim.tiles3d.specs import LayerSpec, Property

__all__ = ["NO_DATA", "Primitive", "SCHEMA_ID", "glb_bytes", "metadata_schema"]

SCHEMA_ID = "benxi_cim"
# The property table's "no value" markers (3D Metadata noData): optional numbers and strings
NO_DATA: dict[str, Any] = {"FLOAT64": -9999.0, "INT32": -2147483648, "STRING": ""}

_FLOAT, _BYTE, _UBYTE, _USHORT, _UINT = 5126, 5120, 5121, 5123, 5125
_ARRAY_BUFFER, _ELEMENT_ARRAY_BUFFER = 34962, 34963
_GLB_MAGIC, _JSON_CHUNK, _BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942


@dataclass
class Primitive:
    """One layer's triangles in a tile (glTF axes, float32) and its features' property values."""

    spec: LayerSpec
    positions: np.ndarray  # (n, 3) float32, y-up
    normals: np.ndarray  # (n, 3) float32, unit
    colours: np.ndarray  # (n, 4) uint8
    feature_ids: np.ndarray  # (n,) feature index into the property table
    triangles: np.ndarray  # (m, 3)
    values: dict[str, list[Any]]  # property name → one value per feature (None: no value)
    double_sided: bool = True


def metadata_schema(specs: list[LayerSpec]) -> dict[str, Any]:
    """The EXT_structural_metadata schema: one class per layer, its properties typed."""
    classes = {}
    for spec in specs:
        props = {}
        for p in spec.properties:
            d: dict[str, Any] = {"description": p.description} if p.description else {}
            if p.kind == "STRING":
                d["type"] = "STRING"
            else:
                d.update(type="SCALAR", componentType=p.kind)
            if p.source == "uid":
                d["required"] = True
            else:
                d["noData"] = NO_DATA[p.kind]
            props[p.name] = d
        classes[spec.metadata_class] = {"name": spec.title, "properties": props}
    return {"id": SCHEMA_ID, "name": "Benxi CIM objects", "classes": classes}


@dataclass
class _Buffer:
    """The BIN chunk under construction and the JSON objects that describe it."""

    parts: list[bytes] = field(default_factory=list)
    length: int = 0
    views: list[dict[str, Any]] = field(default_factory=list)
    accessors: list[dict[str, Any]] = field(default_factory=list)

    def view(self, data: bytes, target: int | None = None) -> int:
        pad = (-self.length) % 8
        if pad:
            self.parts.append(b"\0" * pad)
            self.length += pad
        v: dict[str, Any] = {"buffer": 0, "byteOffset": self.length, "byteLength": len(data)}
        if target is not None:
            v["target"] = target
        self.parts.append(data)
        self.length += len(data)
        self.views.append(v)
        return len(self.views) - 1

    def normals(self, unit: np.ndarray) -> int:
        """Unit normals as KHR_mesh_quantization's normalized signed bytes (4 bytes a vertex instead of 12: the
        x, y, z bytes and one of padding, since vertex attributes are 4-byte aligned); within 0.5° of the
        float normals, plenty for flat faces' shading."""
        q = np.zeros((len(unit), 4), dtype=np.int8)
        q[:, :3] = np.clip(np.round(np.asarray(unit, dtype=np.float64) * 127.0), -127, 127)
        view = self.view(q.tobytes(), _ARRAY_BUFFER)
        self.views[view]["byteStride"] = 4
        self.accessors.append({"bufferView": view, "componentType": _BYTE, "count": int(len(unit)), "type": "VEC3",
                               "normalized": True})
        return len(self.accessors) - 1

    def accessor(self, array: np.ndarray, component: int, kind: str, target: int | None,
                 normalized: bool = False, bounds: bool = False) -> int:
        a: dict[str, Any] = {"bufferView": self.view(np.ascontiguousarray(array).tobytes(), target),
                             "componentType": component, "count": int(len(array)), "type": kind}
        if normalized:
            a["normalized"] = True
        if bounds:
            a["min"] = [float(v) for v in array.min(axis=0)]
            a["max"] = [float(v) for v in array.max(axis=0)]
        self.accessors.append(a)
        return len(self.accessors) - 1


def _column(buf: _Buffer, prop: Property, values: list[Any]) -> dict[str, Any]:
    """One property table column: its values (and string offsets) as buffer views."""
    if prop.kind == "STRING":
        encoded = [("" if v is None else str(v)).encode("utf-8") for v in values]
        offsets = np.concatenate([[0], np.cumsum([len(e) for e in encoded])]).astype("<u4")
        return {"values": buf.view(b"".join(encoded)), "stringOffsets": buf.view(offsets.tobytes())}
    dtype = {"FLOAT64": "<f8", "INT32": "<i4"}[prop.kind]
    arr = np.array([NO_DATA[prop.kind] if v is None else v for v in values], dtype=dtype)
    return {"values": buf.view(arr.tobytes())}


def _has_values(prop: Property, values: list[Any]) -> bool:
    """False for a column holding no value at all: it is left out of the table (readers then see the class's
    no-data value), since a glTF buffer view cannot be empty."""
    if prop.source == "uid":
        return True
    return any(v is not None and v != "" for v in values)


def glb_bytes(primitives: list[Primitive], extras: dict[str, Any] | None = None,
              draco_position_bits: int | None = None) -> bytes:
    """A GLB holding the primitives (one mesh, one node at the origin of the tile frame).

    With ``draco_position_bits`` every primitive is compressed with KHR_draco_mesh_compression (positions
    quantized to that many bits over the primitive's extent, normals to 10 bits; colours and feature ids
    lossless).
    """
    if not primitives or not any(len(p.triangles) for p in primitives):
        raise ValueError("a tile's glTF needs at least one triangle")
    buf = _Buffer()
    gltf_primitives, materials, tables = [], [], []
    for p in primitives:
        if not len(p.triangles):
            continue
        count = len(next(iter(p.values.values()))) if p.values else 0
        table_index = len(tables)
        tables.append({"name": p.spec.layer, "class": p.spec.metadata_class, "count": count,
                       "properties": {prop.name: _column(buf, prop, p.values[prop.name]) for prop in p.spec.properties
                                      if _has_values(prop, p.values[prop.name])}})
        # one glTF primitive per colour (walls, roofs, ground faces; pipes by kind), all naming the layer's
        # property table: the colour is the material's, not 4 bytes per vertex (COLOR_0 and baseColorFactor are
        # both linear, so the shading is the same). With Draco one primitive per layer keeps COLOR_0: Draco
        # compresses the colours well, and splitting made the tiles 36 % larger (more, smaller meshes).
        parts = [(None, p)] if draco_position_bits else _by_colour(p)
        for rgba, part in parts:
            draco = None
            n = len(part.positions)
            if draco_position_bits:
                attributes, indices, draco = _draco_primitive(buf, part, draco_position_bits)
                base_colour = [1.0, 1.0, 1.0, 1.0]
            else:
                attributes = {
                    "POSITION": buf.accessor(part.positions.astype("<f4"), _FLOAT, "VEC3", _ARRAY_BUFFER, bounds=True),
                    "NORMAL": buf.normals(part.normals),
                    # FLOAT holds integer ids exactly up to 2^24 (glTF has no 32-bit integer vertex attributes)
                    "_FEATURE_ID_0": buf.accessor(part.feature_ids.astype("<f4"), _FLOAT, "SCALAR", _ARRAY_BUFFER),
                }
                index_type, index_dtype = (_USHORT, "<u2") if n <= 65535 else (_UINT, "<u4")
                indices = buf.accessor(part.triangles.astype(index_dtype).ravel(), index_type, "SCALAR",
                                       _ELEMENT_ARRAY_BUFFER)
                base_colour = [round(float(c) / 255, 6) for c in rgba]
            materials.append({"name": p.spec.layer, "doubleSided": p.double_sided,
                              "pbrMetallicRoughness": {"baseColorFactor": base_colour, "metallicFactor": 0.0,
                                                       "roughnessFactor": 0.9}})
            gltf_primitives.append({
                "attributes": attributes, "indices": indices, "material": len(materials) - 1, "mode": 4,
                # a label must be an identifier (^[a-zA-Z_][a-zA-Z0-9_]*$): CesiumJS names a shader field after
                # it, and "pipe-nodes" failed to compile there
                "extensions": {"EXT_mesh_features": {"featureIds": [
                    {"featureCount": int(len(np.unique(part.feature_ids))), "attribute": 0,
                     "propertyTable": table_index, "label": p.spec.metadata_class}]}},
            })
            if draco is not None:
                gltf_primitives[-1]["extensions"]["KHR_draco_mesh_compression"] = draco
    required = ["KHR_draco_mesh_compression"] if draco_position_bits else ["KHR_mesh_quantization"]
    used = ["EXT_mesh_features", "EXT_structural_metadata", *required]
    doc: dict[str, Any] = {
        "asset": {"version": "2.0", "generator": "Benxi CIM (cim.tiles3d)"},
        "extensionsUsed": used,
        "extensions": {"EXT_structural_metadata": {
            "schema": metadata_schema([p.spec for p in primitives if len(p.triangles)]),
            "propertyTables": tables}},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": gltf_primitives}],
        "materials": materials,
        "accessors": buf.accessors,
        "bufferViews": buf.views,
        # the BIN chunk is padded to 8 bytes (EXT_structural_metadata); the buffer says so, or the chunk
        # would be longer than the buffer (a glTF validator warning)
        "buffers": [{"byteLength": buf.length + (-buf.length) % 8}],
    }
    doc["extensionsRequired"] = required
    if extras:
        doc["asset"]["extras"] = extras
    return _pack(doc, b"".join(buf.parts))


def _by_colour(p: Primitive):
    """(colour, the primitive's triangles of that colour with only their vertices) per colour, in the order
    of the colours. A triangle's colour is its first vertex's (the mesh colours whole faces)."""
    key = np.ascontiguousarray(p.colours.astype(np.uint8)).view("<u4").ravel()
    tri_key = key[p.triangles[:, 0]]
    for k in np.unique(tri_key):
        tris = p.triangles[tri_key == k]
        used, local = np.unique(tris.ravel(), return_inverse=True)
        rgba = np.frombuffer(np.array([k], dtype="<u4").tobytes(), dtype=np.uint8)
        yield rgba, Primitive(p.spec, p.positions[used], p.normals[used], p.colours[used], p.feature_ids[used],
                              local.reshape(-1, 3), p.values, p.double_sided)


# DracoPy numbers attributes from the first generic one's id: the feature ids (generic, id 0), then colours,
# normals and positions
_DRACO_IDS = {"_FEATURE_ID_0": 0, "COLOR_0": 1, "NORMAL": 2, "POSITION": 3}


def _draco_primitive(buf: _Buffer, p: Primitive, position_bits: int) -> tuple[dict[str, int], int, dict[str, Any]]:
    """The primitive's attributes and indices as one KHR_draco_mesh_compression buffer view, and accessors
    (without buffer views) that describe what decoding gives."""
    import DracoPy

    data = DracoPy.encode(p.positions.astype(np.float64), p.triangles.astype(np.uint32),
                          quantization_bits=position_bits, compression_level=7,
                          normals=p.normals.astype(np.float64), normal_quantization_bits=10,
                          colors=p.colours.astype(np.uint8),
                          generic_attributes={0: p.feature_ids.astype(np.float32).reshape(-1, 1)})
    # Draco may merge or reorder vertices: the accessors describe the decoded mesh (a decode costs ~1 ms)
    decoded = DracoPy.decode(data)
    ids = {a["unique_id"]: a for a in decoded.attributes}
    positions = ids[_DRACO_IDS["POSITION"]]["data"]
    count, faces = len(positions), len(decoded.faces)

    def described(component: int, kind: str, **extra: Any) -> int:
        buf.accessors.append({"componentType": component, "count": count, "type": kind, **extra})
        return len(buf.accessors) - 1

    attributes = {
        "POSITION": described(_FLOAT, "VEC3", min=[float(v) for v in positions.min(0)],
                              max=[float(v) for v in positions.max(0)]),
        "NORMAL": described(_FLOAT, "VEC3"),
        "COLOR_0": described(_UBYTE, "VEC4", normalized=True),
        "_FEATURE_ID_0": described(_FLOAT, "SCALAR"),
    }
    buf.accessors.append({"componentType": _USHORT if count <= 65535 else _UINT, "count": faces * 3, "type": "SCALAR"})
    view = buf.view(data)
    return attributes, len(buf.accessors) - 1, {"bufferView": view, "attributes": dict(_DRACO_IDS)}


def _pack(doc: dict[str, Any], binary: bytes) -> bytes:
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    # the BIN chunk must start on an 8-byte boundary of the file (12-byte header + 8-byte chunk header
    # before the JSON), so that every buffer view, 8-aligned in the buffer, is 8-aligned in the file too and
    # a viewer can map FLOAT64 columns without copying
    text += b" " * ((-(20 + len(text))) % 8)
    binary += b"\0" * ((-len(binary)) % 8)
    total = 12 + 8 + len(text) + 8 + len(binary)
    return b"".join([struct.pack("<III", _GLB_MAGIC, 2, total), struct.pack("<II", len(text), _JSON_CHUNK), text,
                     struct.pack("<II", len(binary), _BIN_CHUNK), binary])
