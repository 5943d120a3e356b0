"""The official ISO 18626 XSDs (vendored in `schemas/xsd/`, see its README): loading them,
and every element they define as a path with its shape.

The converter (`schemas/iso18626_xml.py`) takes element order, repetition and leaf types
from here; the 1.2 <-> 2021 mapping table (`schemas/iso18626_versions.py`) is checked
against `element_shapes()`, so that no element of either version goes unmapped.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import xmlschema

XSD_DIR = Path(__file__).resolve().parent / "xsd"
XSD_FILES = {"1.2": "ISO-18626-v1_2.xsd", "2021": "ISO-18626-2021-2.xsd"}
VERSIONS = tuple(XSD_FILES)
ROOT = "ISO18626Message"
XS = "{http://www.w3.org/2001/XMLSchema}"


@cache
def schema(version: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD_DIR / XSD_FILES[version]))


def elements(decl: Any) -> dict[str, Any]:
    """Child element declarations of a complex element, by local name, in XSD order."""
    content = getattr(decl.type, "content", None)
    if content is None or not hasattr(content, "iter_elements"):
        return {}
    return {child.local_name: child for child in content.iter_elements()}


def has_scheme(decl: Any) -> bool:
    """Whether an element is an open value that may carry a `scheme` attribute
    (type_schemeValuePair in both XSDs)."""
    attributes = getattr(decl.type, "attributes", None) or {}
    return any(str(name).endswith("}scheme") or name == "scheme" for name in attributes)


@dataclass(frozen=True)
class Shape:
    """What an element is in one XSD: how often it occurs, what it holds."""

    min: int
    max: int | None            # None: unbounded
    kind: str                  # element (has children), scheme, text, code, bool, int, ...
    values: tuple[str, ...] = ()    # a closed code list's values
    minimum: int | None = None      # an integer's lower bound, if any
    children: tuple[str, ...] = ()  # child elements in XSD order

    def differs(self, other: Shape) -> bool:
        """Whether the two versions of one element differ in anything a reader notices:
        occurrence, type, code values, bounds, or the order of the children both have."""
        common = set(self.children) & set(other.children)
        mine = [c for c in self.children if c in common]
        theirs = [c for c in other.children if c in common]
        return (self.min, self.max, self.kind, self.values, self.minimum, mine) != \
            (other.min, other.max, other.kind, other.values, other.minimum, theirs)

    def describe(self) -> str:
        """`0..1 scheme`, `1..n element`: for the versions document."""
        top = "n" if self.max is None else str(self.max)
        bound = "" if self.minimum is None else f" ≥ {self.minimum}"
        return f"{self.min}..{top} {self.kind}{bound}"


def _leaf_kind(decl: Any) -> tuple[str, tuple[str, ...], int | None]:
    t = decl.type
    if has_scheme(decl):
        return "scheme", (), None
    if not t.is_simple():
        return "text", (), None
    values = tuple(str(v) for v in (getattr(t, "enumeration", None) or ()))
    if values:
        return "code", values, None
    types = decl.schema.maps.types
    for builtin, label in (("boolean", "bool"), ("integer", "int"), ("decimal", "decimal"),
                           ("dateTime", "dateTime")):
        if t.is_derived(types[f"{XS}{builtin}"]):
            low = getattr(t, "min_value", None)
            return label, (), int(low) if label == "int" and low is not None else None
    return "text", (), None


@cache
def element_shapes(version: str) -> dict[str, Shape]:
    """Every element of one XSD, by path from the message type
    (`supplyingAgencyMessage.deliveryInfo.sentVia`), in document order."""
    found: dict[str, Shape] = {}

    def walk(decl: Any, path: str) -> None:
        for name, child in elements(decl).items():
            where = f"{path}.{name}" if path else name
            grand = elements(child)
            if grand:
                shape = Shape(child.min_occurs, child.max_occurs, "element",
                              children=tuple(grand))
            else:
                kind, values, minimum = _leaf_kind(child)
                shape = Shape(child.min_occurs, child.max_occurs, kind, values, minimum)
            found[where] = shape
            walk(child, where)

    walk(schema(version).elements[ROOT], "")
    return found
