"""ISO 18626 as XML (the standard's own wire form, §5.2) <-> the hub's JSON form.

The JSON form mirrors the XML element names (ARCHITECTURE §3.3), so the mapping
is generic: the official XSDs (vendored in `schemas/xsd/`, see its README) give
element order, which elements may repeat and which leaves are booleans or
integers; the JSON models in `schemas/iso18626.py` say which elements the JSON
contract spells as arrays. No field is translated by hand.

Accepted: schema versions 1.2 (2017) and 2021 (XSD "2021-2"), namespace
http://illtransactions.org/2013/iso18626. A document is validated against the
version it names in `version` and, when that fails, against the other one
(senders often name 1.2 and send 2021 elements, or name nothing).

Leniencies, each one for what real ILL systems send and each documented in the
README: an empty optional element (`<answerYesNo />`, `<offeredCosts />`, or one
whose whole content is empty) counts as absent; a document in no namespace is
read as if in the ISO 18626 one; `version` is accepted unqualified as well as
qualified (`ill:version`); the `scheme` attribute of open code values has no
place in the JSON form and is not kept. Anything else the XSD does not allow is
refused with an ISO 18626 errorType and an errorValue naming the element by its
path (`request.header.timestamp: ...`).
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, TypeAlias

import xmlschema
from lxml import etree
from pydantic import BaseModel

from schemas.iso18626 import MESSAGE_MODELS, NAMESPACE, MessageError
from schemas.iso18626_codes import ErrorType, MessageType

XSD_DIR = Path(__file__).resolve().parent / "xsd"
XSD_FILES = {"1.2": "ISO-18626-v1_2.xsd", "2021": "ISO-18626-2021-2.xsd"}
VERSIONS = tuple(XSD_FILES)
ROOT = "ISO18626Message"
_XS = "{http://www.w3.org/2001/XMLSchema}"
_VERSION_ATTR = f"{{{NAMESPACE}}}version"

# No DTDs, no entities, no network: a peer's document is untrusted input.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          dtd_validation=False, huge_tree=False, remove_comments=True,
                          remove_pis=True)


@cache
def schema(version: str) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD_DIR / XSD_FILES[version]))


def version_of(declared: str | None) -> str | None:
    """The XSD a declared `version` attribute means; None when it names none we know."""
    value = (declared or "").strip()
    if value.startswith(("2021", "1.3")):
        return "2021"
    if value in {"1.0", "1.1", "1.2"} or value.startswith("1.2"):
        return "1.2"
    return None


class XmlMessageError(MessageError):
    """Why an XML document is not acceptable, plus what is known of it for the answer."""

    def __init__(self, error_type: ErrorType, error_value: str, *,
                 kind: MessageType | None = None, version: str = "1.2",
                 header: dict[str, Any] | None = None) -> None:
        super().__init__(error_type, error_value)
        self.kind = kind
        self.version = version
        self.header = header
        self.progress = 0  # how far into the document validation got (elements before)


@dataclass
class XmlMessage:
    """A valid ISO 18626 XML document in the hub's JSON form."""

    kind: MessageType
    body: dict[str, Any]          # {kind: {...}}, as on the AMQP wire
    version: str                  # the XSD it validated against
    declared: str                 # what the document said, for answering in kind
    leniencies: list[str] = field(default_factory=list)

    @property
    def content(self) -> dict[str, Any]:
        inner: dict[str, Any] = self.body[str(self.kind)]  # what read_xml put there
        return inner


# --------------------------------------------------------------------------
# XML -> JSON
# --------------------------------------------------------------------------


def read_xml(raw: bytes) -> XmlMessage:
    """Parse, normalise, validate and convert one ISO18626Message; XmlMessageError if not."""
    try:
        root = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                              f"body is not well-formed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    # lxml-stubs' DocInfo lacks `doctype` (lxml has had it since 2.0).
    if docinfo.doctype or docinfo.internalDTD is not None:  # type: ignore[union-attr]
        # ISO 18626 has no DTD; one in a peer's document can only be an entity trick.
        raise XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                              "a DOCTYPE declaration is not allowed in an ISO 18626 message")
    leniencies: list[str] = []
    if etree.QName(root).namespace is None and etree.QName(root).localname == ROOT:
        _into_namespace(root)
        leniencies.append("no namespace: read as http://illtransactions.org/2013/iso18626")
    qname = etree.QName(root)
    if qname.localname != ROOT or qname.namespace != NAMESPACE:
        raise XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                              f"root element is {_clark_show(root.tag)}; expected {ROOT} in "
                              f"namespace {NAMESPACE}")
    declared = root.get(_VERSION_ATTR)
    if declared is None and root.get("version") is not None:
        declared = root.attrib.pop("version")
        root.set(_VERSION_ATTR, declared)
        leniencies.append("unqualified version attribute accepted")
    declared = declared or ""
    if _qualify_scheme(root):
        leniencies.append("unqualified scheme attribute accepted")
    kind = _kind_of(root)
    wanted = version_of(declared)
    order = [wanted] if wanted else []
    order += [v for v in VERSIONS if v not in order]
    best: XmlMessageError | None = None
    for version in order:
        tree = _copy(root)
        pruned = _prune_empty(tree, schema(version).elements[ROOT])
        erratum = version == "1.2" and _add_multiple_item_request_id(tree)
        if tree.get(_VERSION_ATTR) is None:
            tree.set(_VERSION_ATTR, declared)
        problem = _first_problem(version, tree, kind)
        if problem is None:
            body = _to_json(tree, schema(version))
            notes = [*leniencies]
            if pruned:
                notes.append(f"{pruned} empty optional element(s) read as absent")
            if erratum:
                notes.append("header.multipleItemRequestId missing (1.2 erratum) accepted")
            if kind is None:
                raise XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                                      "the document's root element is not a message type")
            return XmlMessage(kind=kind, body=body, version=version, declared=declared,
                              leniencies=notes)
        # The sender's own version has the useful complaint; when it named none, the
        # version under which the document went further is the one it meant.
        if best is None or (not wanted and problem.progress > best.progress):
            best = problem
    if best is None:
        raise XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                              "no ISO 18626 version this hub knows could read the document")
    best.header = _salvage_header(root, kind)
    raise best


def _add_multiple_item_request_id(tree: etree._Element) -> bool:
    """1.2 made header.multipleItemRequestId mandatory by mistake (the 2021 XSD's
    change history says so); most 1.2 senders leave it out. Supply it empty."""
    message = next((c for c in tree if isinstance(c.tag, str)), None)
    header = message.find(f"{{{NAMESPACE}}}header") if message is not None else None
    if header is None or header.find(f"{{{NAMESPACE}}}multipleItemRequestId") is not None:
        return False
    timestamp = header.find(f"{{{NAMESPACE}}}timestamp")
    if timestamp is None:
        return False
    timestamp.addprevious(etree.Element(f"{{{NAMESPACE}}}multipleItemRequestId"))
    return True


def _qualify_scheme(root: etree._Element) -> bool:
    changed = False
    for el in root.iter():
        if isinstance(el.tag, str) and "scheme" in el.attrib:
            el.set(f"{{{NAMESPACE}}}scheme", el.attrib.pop("scheme"))
            changed = True
    return changed


def _into_namespace(root: etree._Element) -> None:
    for el in root.iter():
        if isinstance(el.tag, str) and etree.QName(el).namespace is None:
            el.tag = f"{{{NAMESPACE}}}{el.tag}"


def _copy(root: etree._Element) -> etree._Element:
    return etree.fromstring(etree.tostring(root), _PARSER)


def _kind_of(root: etree._Element) -> MessageType | None:
    children = [c for c in root if isinstance(c.tag, str)]
    if len(children) == 1:
        name = etree.QName(children[0]).localname
        if name in MessageType.__members__.values():
            return MessageType(name)
    return None


def _elements(decl: Any) -> dict[str, Any]:
    """Child element declarations of a complex element, by local name, in XSD order."""
    content = getattr(decl.type, "content", None)
    if content is None or not hasattr(content, "iter_elements"):
        return {}
    return {child.local_name: child for child in content.iter_elements()}


def _deep_empty(el: etree._Element) -> bool:
    return all(not (e.text or "").strip() for e in el.iter() if isinstance(e.tag, str))


def _prune_empty(el: etree._Element, decl: Any) -> int:
    """Drop empty optional elements (a common vendor habit); returns how many."""
    known = _elements(decl)
    removed = 0
    for child in list(el):
        if not isinstance(child.tag, str):
            # A comment or processing instruction: lxml gives it a function as tag, which
            # lxml-stubs does not know (it types `tag` as str).
            continue  # type: ignore[unreachable]
        child_decl = known.get(etree.QName(child).localname)
        if child_decl is None:
            continue
        removed += _prune_empty(child, child_decl)
        if child_decl.min_occurs == 0 and _deep_empty(child):
            el.remove(child)
            removed += 1
    return removed


def _wire_path(xpath: str | None) -> str:
    """`/ill:ISO18626Message/ill:request/ill:header` -> `request.header`."""
    if not xpath:
        return ROOT
    parts = [re.sub(r"^[^:]*:", "", p) for p in xpath.strip("/").split("/") if p]
    parts = [re.sub(r"\[\d+\]$", "", p) for p in parts]
    if parts and parts[0] == ROOT:
        parts = parts[1:]
    return ".".join(parts) or ROOT


def _clark_show(tag: str) -> str:
    q = etree.QName(tag)
    return f"{q.localname!r} in namespace {q.namespace}" if q.namespace else \
        f"{q.localname!r} in no namespace"


def _names(expected: Any) -> str:
    names = []
    for particle in expected or []:
        name = getattr(particle, "local_name", None) or getattr(particle, "name", None)
        if name:
            names.append(re.sub(r"^\{[^}]*\}", "", str(name)))
    return ", ".join(dict.fromkeys(names))


def _first_problem(version: str, tree: etree._Element,
                   kind: MessageType | None) -> XmlMessageError | None:
    error = next(iter(schema(version).iter_errors(tree)), None)
    if error is None:
        return None
    problem = _describe(version, error, kind)
    at = getattr(error, "invalid_child", None)
    if at is None:
        at = getattr(error, "elem", None)
    order = [e for e in tree.iter() if isinstance(e.tag, str)]
    problem.progress = next((i for i, e in enumerate(order) if e is at), 0)
    return problem


def _describe(version: str, error: Any, kind: MessageType | None) -> XmlMessageError:
    path = _wire_path(error.path)
    where = f"(ISO 18626 {version} XSD)"
    invalid = getattr(error, "invalid_child", None)
    obj = getattr(error, "obj", None)
    if invalid is not None and isinstance(invalid.tag, str):
        name = etree.QName(invalid).localname
        expected = _names(getattr(error, "expected", None))
        parent = _elements(_decl_at(version, path))
        if name in parent:
            return XmlMessageError(
                ErrorType.BADLY_FORMED_MESSAGE,
                f"{path}.{name}: not allowed at this position {where}"
                + (f"; expected {expected} here" if expected else ""),
                kind=kind, version=version)
        return XmlMessageError(
            ErrorType.UNRECOGNISED_DATA_ELEMENT,
            f"{path}.{name}: no such element in {path.rsplit('.', 1)[-1]} {where}"
            + (f"; expected {expected} here" if expected else ""), kind=kind, version=version)
    if getattr(error, "expected", None) and invalid is None and \
            "not complete" in str(error.reason or ""):
        missing = _names(error.expected)
        return XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                               f"{path}.{missing.split(', ')[0]}: required element missing "
                               f"{where}", kind=kind, version=version)
    if isinstance(obj, str) or obj is None:
        text = (obj or "").strip() if isinstance(obj, str) else ""
        reason = str(error.reason or error.message)
        if "attribute" in reason and path == ROOT:
            return XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                                   f"{ROOT}: {reason} {where}", kind=kind, version=version)
        if not text:
            return XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                                   f"{path}: required element is empty {where}",
                                   kind=kind, version=version)
        allowed = re.search(r"value must be one of (\[.*\])", reason)
        if allowed:
            values = ", ".join(re.findall(r"'([^']*)'", allowed.group(1)))
            return XmlMessageError(ErrorType.UNRECOGNISED_DATA_VALUE,
                                   f"{path}: {text!r} is not one of {values} {where}",
                                   kind=kind, version=version)
        decl = _decl_at(version, path)
        expected_type = _type_name(decl)
        return XmlMessageError(ErrorType.UNRECOGNISED_DATA_VALUE,
                               f"{path}: {text[:80]!r} is not a valid {expected_type} {where}",
                               kind=kind, version=version)
    return XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                           f"{path}: {error.reason} {where}", kind=kind, version=version)


def _decl_at(version: str, path: str) -> Any:
    decl = schema(version).elements[ROOT]
    if path == ROOT:
        return decl
    for part in path.split("."):
        found = _elements(decl).get(part)
        if found is None:
            return None
        decl = found
    return decl


def _type_name(decl: Any) -> str:
    if decl is None:
        return "value"
    t = decl.type
    base = t if t.is_simple() else getattr(t, "content", t)
    primitive = getattr(base, "primitive_type", None) or base
    name = getattr(primitive, "local_name", None) or "value"
    return {"dateTime": "xs:dateTime such as 2024-05-01T08:30:00Z",
            "decimal": "xs:decimal such as 12.50", "boolean": "xs:boolean (true or false)",
            }.get(name, f"xs:{name}")


def _leaf_kind(decl: Any) -> str:
    """'bool', 'int' or 'text': how a leaf's value is spelt in JSON."""
    t = decl.type
    if not t.is_simple():
        return "text"
    for builtin, label in (("boolean", "bool"), ("integer", "int")):
        if t.is_derived(decl.schema.maps.types[f"{_XS}{builtin}"]):
            return label
    return "text"


def _json_leaf(text: str | None, decl: Any) -> Any:
    value = text or ""
    kind = _leaf_kind(decl)
    if kind == "bool":
        return value.strip() in ("true", "1")
    if kind == "int":
        return int(value.strip())
    return value


def _shape(model: type[BaseModel] | None, name: str) -> tuple[bool | None, type[BaseModel] | None]:
    """Whether the JSON contract spells element `name` as an array, and its model."""
    if model is None:
        return None, None
    for fname, info in model.model_fields.items():
        if (info.alias or fname) == name:
            return _analyse(info.annotation)
    return None, None


def _analyse(annotation: Any) -> tuple[bool, type[BaseModel] | None]:
    is_list = False
    pending = [annotation]
    sub: type[BaseModel] | None = None
    while pending:
        ann = pending.pop()
        origin = typing.get_origin(ann)
        if origin is list:
            is_list = True
        if origin in (typing.Union, types.UnionType, list, typing.Annotated):
            pending.extend(a for a in typing.get_args(ann))
        elif isinstance(ann, type) and issubclass(ann, BaseModel):
            sub = ann
    return is_list, sub


def _to_json(root: etree._Element, xsd: xmlschema.XMLSchema) -> dict[str, Any]:
    message = next(c for c in root if isinstance(c.tag, str))
    kind = MessageType(etree.QName(message).localname)
    decl = xsd.elements[str(kind)]
    return {str(kind): _element_json(message, decl, MESSAGE_MODELS[kind]) or {}}


def _element_json(el: etree._Element, decl: Any, model: type[BaseModel] | None) -> Any:
    known = _elements(decl)
    if not known:
        return _json_leaf(el.text, decl)
    out: dict[str, Any] = {}
    for child in el:
        if not isinstance(child.tag, str) or _deep_empty(child):
            continue  # an empty required element (1.2's request supplyingAgencyId) = absent
        name = etree.QName(child).localname
        child_decl = known[name]
        is_list, sub = _shape(model, name)
        if is_list is None:  # not in the JSON models: the XSD decides
            is_list = child_decl.max_occurs is None or child_decl.max_occurs > 1
        value = _element_json(child, child_decl, sub)
        if is_list:
            out.setdefault(name, []).append(value)
        elif name in out:  # repeated although the JSON contract has one: the model refuses
            previous = out[name]
            out[name] = [*(previous if isinstance(previous, list) else [previous]), value]
        else:
            out[name] = value
    return out


def _salvage_header(root: etree._Element, kind: MessageType | None) -> dict[str, Any] | None:
    """The header of an invalid document as raw JSON, so an ERROR answer can echo its ids."""
    message = next((c for c in root if isinstance(c.tag, str)), None)
    if message is None or kind is None:
        return None
    header = next((c for c in message if isinstance(c.tag, str)
                   and etree.QName(c).localname == "header"), None)
    if header is None:
        return None
    loose = _loose(header)
    return loose if isinstance(loose, dict) else None  # <header>text</header> has no ids


# An element as loose JSON: its text, or its child elements by local name.
_Loose: TypeAlias = "str | dict[str, _Loose] | None"


def _loose(el: etree._Element) -> _Loose:
    children = [c for c in el if isinstance(c.tag, str)]
    if not children:
        return (el.text or "").strip() or None
    return {etree.QName(c).localname: _loose(c) for c in children}


# --------------------------------------------------------------------------
# JSON -> XML
# --------------------------------------------------------------------------


@dataclass
class XmlOut:
    data: bytes
    dropped: list[str]   # JSON fields the target XSD has no element for (not sent)


def to_xml(body: dict[str, Any], version: str = "1.2", *, validate: bool = True) -> XmlOut:
    """The ISO18626Message for a JSON body `{kind: {...}}`, in XSD order for `version`.

    Fields the target schema has no element for (the hub's `hubExtensions`, 2021-only
    elements in a 1.2 document) cannot be sent and are listed in `dropped`. Required
    elements missing from the JSON are written empty when the XSD allows an empty
    value (1.2's request header wants `supplyingAgencyId` and `multipleItemRequestId`).
    """
    if version not in XSD_FILES:
        raise ValueError(f"ISO 18626 version {version!r}; known: {', '.join(VERSIONS)}")
    (kind, inner), = body.items()
    xsd = schema(version)
    # None is the default namespace's prefix in lxml; lxml-stubs' nsmap allows only str keys.
    root = etree.Element(f"{{{NAMESPACE}}}{ROOT}",
                         nsmap={None: NAMESPACE, "ill": NAMESPACE})  # type: ignore[dict-item]
    root.set(_VERSION_ATTR, version)
    dropped: list[str] = []
    message = etree.SubElement(root, f"{{{NAMESPACE}}}{kind}")
    _fill(message, xsd.elements[kind], _bridge(kind, inner, version), kind, dropped)
    if validate:
        problem = _first_problem(version, root, MessageType(kind))
        if problem is not None:
            raise XmlMessageError(problem.error_type, problem.error_value,
                                  kind=MessageType(kind), version=version)
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return XmlOut(data=data, dropped=dropped)


def _fill(el: etree._Element, decl: Any, value: dict[str, Any], path: str,
          dropped: list[str]) -> None:
    known = _elements(decl)
    for name in value:
        if name not in known and value[name] is not None:
            dropped.append(f"{path}.{name}")
    for name, child_decl in known.items():
        given = value.get(name)
        if given is None or given == []:
            if child_decl.min_occurs > 0 and _emptyable(child_decl) and \
                    not _in_choice(decl, name):
                _fill(etree.SubElement(el, f"{{{NAMESPACE}}}{name}"), child_decl, {},
                      f"{path}.{name}", dropped)
            continue
        for item in given if isinstance(given, list) else [given]:
            child = etree.SubElement(el, f"{{{NAMESPACE}}}{name}")
            if _elements(child_decl):
                _fill(child, child_decl, item if isinstance(item, dict) else {},
                      f"{path}.{name}", dropped)
            else:
                child.text = _xml_text(item)


def _xml_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _emptyable(decl: Any) -> bool:
    known = _elements(decl)
    if known:
        return all(_emptyable(c) for c in known.values() if c.min_occurs > 0)
    t = decl.type
    base = t if t.is_simple() else getattr(t, "content", None)
    return base is not None and hasattr(base, "is_valid") and base.is_valid("")


def _in_choice(decl: Any, name: str) -> bool:
    content = getattr(decl.type, "content", None)
    for group in _groups(content):
        if group.model == "choice" and any(e.local_name == name for e in group.iter_elements()):
            return True
    return False


def _groups(group: Any) -> list[Any]:
    if group is None or not hasattr(group, "model"):
        return []
    found = [group]
    for item in group:
        found.extend(_groups(item))
    return found


# 2021 renamed or moved a few 1.2 elements; the JSON contract keeps 1.2's names.
_RENAMED_2021 = {"deliveryInfo": {"sentVia": "deliveryMethod", "deliveredFormat": "itemFormat"}}
_MOVED_2021 = {"messageInfo": ("retryInfo", ("offeredCosts", "retryAfter", "retryBefore"))}


def _bridge(kind: str, inner: dict[str, Any], version: str) -> dict[str, Any]:
    """The JSON contract's 1.2 spellings in 2021 form, when writing a 2021 document."""
    if version != "2021" or kind != MessageType.SUPPLYING_AGENCY_MESSAGE:
        return inner
    out = dict(inner)
    for parent, renames in _RENAMED_2021.items():
        if isinstance(out.get(parent), dict):
            part = dict(out[parent])
            for old, new in renames.items():
                if old in part and new not in part:
                    part[new] = part.pop(old)
            out[parent] = part
    for parent, (target, names) in _MOVED_2021.items():
        if isinstance(out.get(parent), dict):
            part = dict(out[parent])
            moved = {n: part.pop(n) for n in names if n in part}
            if moved:
                retry = dict(out.get(target) or {})
                for n, v in moved.items():
                    retry.setdefault(n, v)
                out[target] = retry
            out[parent] = part
    return out
