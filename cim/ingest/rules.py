"""Quality rules (数据治理) every load is checked against; the rule set lives in config.yml (``cim.ingest.rules``).

Each object either passes every rule or is rejected with the rules it broke and why; a load report counts
checks and failures per rule and names the objects. ``--strict`` turns any failure into a rejected file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import shapely

from cim.geometry import Faces, close_open_base, consistently_oriented, face_problems, is_closed_shell
from cim.ingest.model import SourceObject
from cim.settings import QualityRules

MAX_LISTED = 200  # objects named per rule in a report (the counts are always complete)

DESCRIPTIONS = {
    "readable": "the reader could decode the object (attributes, geometry)",
    "crs_required": "the file has a CRS, or --crs / --anchor says where it is",
    "placed": "the coordinates lie inside the storage CRS's area",
    "unique_ids": "no other object of the file has the same id",
    "geometry_present": "the object has a geometry (or a footprint)",
    "geometry_valid": "geometries are finite, non-empty, and no face crosses itself in its own plane",
    "closed_solids": "solids of the configured classes close a volume (every edge shared by two faces)",
    "required_attributes": "the configured classes carry their required properties",
    "code_lists": "coded properties (pipe kind, material) take a value from the configured list",
    "parent": "the object's parent was loaded",
}


@dataclass
class RuleResult:
    name: str
    checked: int = 0
    failed: int = 0
    objects: list[dict[str, str]] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)

    def fail(self, source_id: str, reason: str) -> None:
        self.failed += 1
        if len(self.objects) < MAX_LISTED:
            self.objects.append({"source_id": source_id, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": DESCRIPTIONS.get(self.name, ""), "checked": self.checked,
                               "failed": self.failed, "objects": self.objects}
        if self.notes:
            out["notes"] = self.notes
        return out


class RuleSet:
    """The configured rules, with their running results for one load."""

    def __init__(self, rules: QualityRules) -> None:
        self.rules = rules
        self.results = {name: RuleResult(name) for name in DESCRIPTIONS}
        # what repair() learnt about the current object's geometries (by id; cleared by check())
        self._faces: dict[int, Faces] = {}
        self._closed: set[int] = set()

    def record(self, rule: str, source_id: str, reason: str | None) -> bool:
        """Count one check of ``rule``; a reason means it failed. True when it passed."""
        result = self.results[rule]
        result.checked += 1
        if reason is not None:
            result.fail(source_id, reason)
            return False
        return True

    def repair(self, obj: SourceObject, geometries: list[tuple]) -> list[tuple]:
        """The object's (level, geometry, surfaces, lod) list with open-based solids closed, where the rule
        set asks for it; each repair is counted in the closed_solids notes."""
        if not (self.rules.repair_open_bases and obj.solid and obj.object_class in self.rules.closed_solids):
            return geometries
        out = []
        for level, geom, surfaces, *rest in geometries:
            if _is_shell(geom):
                faces = self._faces[id(geom)] = Faces(geom)
                if is_closed_shell(geom, faces=faces):
                    self._closed.add(id(geom))  # check() need not find it out again
                    out.append((level, geom, surfaces, *rest))
                    continue
            closed, added = close_open_base(geom, faces=self._faces.get(id(geom)))
            if added:
                self._closed.add(id(closed))
                notes = self.results["closed_solids"].notes
                notes["open base closed with a ground face (repaired)"] = notes.get(
                    "open base closed with a ground face (repaired)", 0) + 1
                if surfaces is not None:
                    surfaces = list(surfaces) + ["GroundSurface"] * added
            out.append((level, closed, surfaces, *rest))
        return out

    def check(self, obj: SourceObject, geometries: list[tuple[int, Any]], typed: dict[str, Any],
              footprint: Any = None, duplicate: bool = False) -> bool:
        """Check one placed object against every rule (all are checked, so the report is complete);
        True when it may be loaded. ``duplicate``: an object of the file before this one had its id."""
        ok = self.record("readable", obj.source_id, "; ".join(obj.errors) if obj.errors else None)
        ok &= self.record("unique_ids", obj.source_id,
                          f"{obj.object_class} id {obj.source_id!r} appears again (the first one is kept)"
                          if duplicate else None)
        if self.rules.geometry_required:
            ok &= self.record("geometry_present", obj.source_id,
                              None if geometries or footprint is not None else f"{obj.object_class} without geometry")
        faces = {id(geom): self._faces.get(id(geom)) or Faces(geom) for _level, geom in geometries if _is_shell(geom)}
        if self.rules.geometry_valid:
            problems: list[str] = []
            degenerate = 0
            for level, geom in geometries:
                found, n = face_problems(geom, faces=faces.get(id(geom)))
                problems += [f"CIM{level}: {p}" for p in found]
                degenerate += n
            if degenerate:
                notes = self.results["geometry_valid"].notes
                notes["degenerate faces ignored"] = notes.get("degenerate faces ignored", 0) + degenerate
            ok &= self.record("geometry_valid", obj.source_id, "; ".join(problems[:5]) if problems else None)
        if obj.solid and obj.object_class in self.rules.closed_solids:
            shells = [(level, geom) for level, geom in geometries if geom is not None and geom.geom_type == "MultiPolygon"]
            open_levels = [f"CIM{level}" for level, geom in shells
                           if id(geom) not in self._closed and not is_closed_shell(geom, faces=faces.get(id(geom)))]
            ok &= self.record("closed_solids", obj.source_id,
                              f"not closed at {', '.join(open_levels)}" if open_levels else None)
            flipped = sum(1 for level, geom in shells
                          if f"CIM{level}" not in open_levels
                          and not consistently_oriented(geom, faces=faces.get(id(geom))))
            if flipped:  # closed, but some faces turned inside out: kept, and counted
                notes = self.results["closed_solids"].notes
                notes["closed but inconsistently oriented (kept)"] = notes.get(
                    "closed but inconsistently oriented (kept)", 0) + flipped
        required = self.rules.required_attributes.get(obj.object_class)
        if required:
            missing = [name for name in required if typed.get(name) in (None, "")]
            ok &= self.record("required_attributes", obj.source_id,
                              f"missing {', '.join(missing)}" if missing else None)
        for name, allowed in self.rules.code_lists.items():
            if typed.get(name) is not None:
                value = str(typed[name])
                ok &= self.record("code_lists", obj.source_id,
                                  None if value in allowed else f"{name} {value!r} is not in the code list")
        self._faces.clear()
        self._closed.clear()
        return ok

    def as_dict(self) -> dict[str, Any]:
        return {name: r.as_dict() for name, r in self.results.items() if r.checked or r.failed}

    @property
    def failures(self) -> int:
        return sum(r.failed for r in self.results.values())


def _is_shell(geom: Any) -> bool:
    return geom is not None and geom.geom_type == "MultiPolygon" and not geom.is_empty and bool(shapely.has_z(geom))
