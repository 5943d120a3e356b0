"""ISO 18626 as XML (the standard's own wire form, §5.2) <-> the hub's JSON form.

The JSON form mirrors the XML element names (ARCHITECTURE §3.3), so the mapping
is generic: the official XSDs (vendored in `schemas/xsd/`, see its README) give
element order, which elements may repeat and which leaves are booleans or
integers; the JSON models in `schemas/iso18626.py` say which elements the JSON
contract spells as arrays. No field is translated by hand: where the two versions
differ, the mapping table (data, below) says how.

Accepted: schema versions 1.2 (2017) and 2021 (XSD "2021-2"), namespace
http://illtransactions.org/2013/iso18626. A document is validated against the
version it names in `version` and, when that fails, against the other one
(senders often name 1.2 and send 2021 elements, or name nothing).

Leniencies, each one for what real ILL systems send and each documented in the
README: an empty optional element (`<answerYesNo />`, `<offeredCosts />`, or one
whose whole content is empty) counts as absent, and so does an empty element that
only the other version has (ReShare's `<authorId></authorId>` in a 1.2 request); a
1.2 header without `multipleItemRequestId` (an erratum) or, in a request, without
`supplyingAgencyId` (ReShare: the hub chooses) is read as if they were there, empty;
a Notification (supplyingAgencyMessage) may leave its status empty or out, and its
`lastChange` or whole `statusInfo` with it ("no change": Alma, Rapido, mod-rs), and so
may a CancelResponse with its answerYesNo (mod-rs declines a cancel so);
a document in no namespace is read as if in the ISO 18626 one; `version` and
`scheme` are accepted unqualified as well as qualified (`ill:version`). Anything
else the XSD does not allow is refused with an ISO 18626 errorType and an errorValue
naming the element by its path (`request.header.timestamp: ...`).

The `scheme` attribute of an open value is kept, beside the value, as
`<element>@scheme` (see `schemas/iso18626_versions.py`), and written back out.

Where 1.2 and 2021 differ, `schemas/iso18626_versions.py` has the mapping table: a
2021 document is read into 1.2's names and places (`from_2021`), and the JSON is
made ready for the target version before it is written (`to_version`): renamed and
moved elements, repetitions, and the note form for what the target has no element for.
"""

from __future__ import annotations

import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, TypeAlias

import xmlschema
from lxml import etree
from pydantic import BaseModel

from schemas.iso18626 import MESSAGE_MODELS, NAMESPACE, MessageError
from schemas.iso18626_codes import ErrorType, MessageType, ReasonForMessage, YesNo
from schemas.iso18626_versions import SCHEME, Occurrence, from_2021, occurrences, put, to_version
from schemas.iso18626_xsd import ROOT, VERSIONS, XS, XSD_DIR, XSD_FILES, has_scheme, schema
from schemas.iso18626_xsd import elements as _elements

# The XSD names have lived here before schemas/iso18626_xsd.py; they stay importable.
__all__ = ["NAMESPACE", "ROOT", "VERSIONS", "XSD_DIR", "XSD_FILES", "XmlMessage",
           "XmlMessageError", "XmlOut", "read_xml", "schema", "to_xml", "version_of"]

_VERSION_ATTR = f"{{{NAMESPACE}}}version"
_SCHEME_ATTR = f"{{{NAMESPACE}}}scheme"

# No DTDs, no entities, no network: a peer's document is untrusted input.
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          dtd_validation=False, huge_tree=False, remove_comments=True,
                          remove_pis=True)


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
    # (version, whether a 1.2 request may lack supplyingAgencyId): a document that says
    # 1.2 gets that leniency at once; one that names no version only when no version
    # reads it as it is.
    attempts = [(version, version == wanted == "1.2") for version in order]
    if wanted is None:
        attempts.append(("1.2", True))
    best: XmlMessageError | None = None
    for version, lenient in attempts:
        tree = _copy(root)
        pruned = _Pruned()
        _prune_empty(tree, schema(version).elements[ROOT], _other_root(version), pruned)
        erratum = version == "1.2" and _add_multiple_item_request_id(tree)
        chooses = lenient and _add_supplying_agency_id(tree)
        unchanged = _stand_in_for_no_status(tree)
        if lenient and not chooses and wanted is None:
            continue  # the same document as in the attempt without the leniency
        if tree.get(_VERSION_ATTR) is None:
            tree.set(_VERSION_ATTR, declared)
        problem = _first_problem(version, tree, kind)
        if problem is None:
            if kind is None:
                raise XmlMessageError(ErrorType.BADLY_FORMED_MESSAGE,
                                      "the document's root element is not a message type")
            body = _to_json(tree, schema(version))
            _drop_stand_ins(body, unchanged)
            if version == "2021":
                body = {str(kind): from_2021(str(kind), body[str(kind)])}
            notes = [*leniencies, *pruned.notes(version)]
            if erratum:
                notes.append("header.multipleItemRequestId missing (1.2 erratum) accepted")
            if chooses:
                notes.append("request header.supplyingAgencyId missing (1.2) accepted: "
                             "the hub chooses")
            if unchanged:
                notes.append(f"{_reason_of(tree)} without {' and '.join(unchanged)} "
                             "accepted: no change of status")
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


def _add_supplying_agency_id(tree: etree._Element) -> bool:
    """A 1.2 request header must name a supplier, empty or not; current ReShare leaves
    the element out ("the supplying Agency details get filled out later", mod-rs). Supply
    it empty, which means: the hub chooses."""
    message = next((c for c in tree if isinstance(c.tag, str)), None)
    if message is None or etree.QName(message).localname != MessageType.REQUEST:
        return False
    header = message.find(f"{{{NAMESPACE}}}header")
    if header is None or header.find(f"{{{NAMESPACE}}}supplyingAgencyId") is not None:
        return False
    empty = etree.Element(f"{{{NAMESPACE}}}supplyingAgencyId")
    for name in ("agencyIdType", "agencyIdValue"):
        etree.SubElement(empty, f"{{{NAMESPACE}}}{name}")
    header.insert(0, empty)
    return True


# What stands in, for validation only, for the status a Notification may leave out.
_STAND_INS = {"status": "RequestReceived", "lastChange": "1970-01-01T00:00:00Z"}


def _reason_of(tree: etree._Element) -> str:
    """A supplyingAgencyMessage's reasonForMessage ('' for any other message)."""
    message = next((c for c in tree if isinstance(c.tag, str)), None)
    if message is None or \
            etree.QName(message).localname != MessageType.SUPPLYING_AGENCY_MESSAGE:
        return ""
    return (message.findtext(f"{{{NAMESPACE}}}messageInfo/{{{NAMESPACE}}}reasonForMessage")
            or "").strip()


def _may_leave_status_out(message: etree._Element, reason: str) -> bool:
    """A Notification, or a CancelResponse whose answerYesNo says what happened."""
    if reason == ReasonForMessage.NOTIFICATION:
        return True
    answer = message.findtext(f"{{{NAMESPACE}}}messageInfo/{{{NAMESPACE}}}answerYesNo")
    return reason == ReasonForMessage.CANCEL_RESPONSE and \
        (answer or "").strip() in (YesNo.Y, YesNo.N)


def _stand_in_for_no_status(tree: etree._Element) -> list[str]:
    """A supplyingAgencyMessage whose reasonForMessage is Notification carries a note and
    changes no status (ARCHITECTURE §3.4); Alma and Rapido leave `status` empty or out,
    mod-rs leaves out `lastChange`, and its CancelResponse declining a cancel has no
    statusInfo at all. Both XSDs require them: stand-ins are put in for the validation
    and taken out of the JSON again. Returns what stood in (statusInfo, or status and/or
    lastChange)."""
    message = next((c for c in tree if isinstance(c.tag, str)), None)
    if message is None or not _may_leave_status_out(message, _reason_of(tree)):
        return []
    info = message.find(f"{{{NAMESPACE}}}statusInfo")
    if info is None:
        after = message.find(f"{{{NAMESPACE}}}messageInfo")
        if after is None:
            return []
        info = etree.Element(f"{{{NAMESPACE}}}statusInfo")
        after.addnext(info)
        for name, text in _STAND_INS.items():
            etree.SubElement(info, f"{{{NAMESPACE}}}{name}").text = text
        return ["statusInfo"]
    stood: list[str] = []
    for name, text in _STAND_INS.items():
        found = info.find(f"{{{NAMESPACE}}}{name}")
        if found is not None and (found.text or "").strip():
            continue
        if found is None:
            found = etree.Element(f"{{{NAMESPACE}}}{name}")
            if name == "status":
                info.insert(0, found)
            else:
                info.append(found)
        found.text = text
        stood.append(name)
    return stood


def _drop_stand_ins(body: dict[str, Any], stood: list[str]) -> None:
    inner = body.get(MessageType.SUPPLYING_AGENCY_MESSAGE)
    if not stood or not isinstance(inner, dict):
        return
    if stood == ["statusInfo"]:
        inner.pop("statusInfo", None)
        return
    info = inner.get("statusInfo")
    if isinstance(info, dict):
        for name in stood:
            info.pop(name, None)


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


def _deep_empty(el: etree._Element) -> bool:
    return all(not (e.text or "").strip() for e in el.iter() if isinstance(e.tag, str))


@dataclass
class _Pruned:
    optional: int = 0   # empty optional elements removed
    foreign: int = 0    # empty elements only the other version has, removed

    def notes(self, version: str) -> list[str]:
        other = next(v for v in VERSIONS if v != version)
        return ([f"{self.optional} empty optional element(s) read as absent"]
                * bool(self.optional)
                + [f"{self.foreign} empty element(s) of ISO 18626 {other} only read as absent"]
                * bool(self.foreign))


def _other_root(version: str) -> Any:
    return schema(next(v for v in VERSIONS if v != version)).elements[ROOT]


def _prune_empty(el: etree._Element, decl: Any, other: Any, pruned: _Pruned) -> None:
    """Drop empty optional elements (a common vendor habit), and empty elements that the
    other version has at this place (`other`: its declaration of `el`, or None)."""
    known = _elements(decl)
    theirs = _elements(other) if other is not None else {}
    for child in list(el):
        if not isinstance(child.tag, str):
            # A comment or processing instruction: lxml gives it a function as tag, which
            # lxml-stubs does not know (it types `tag` as str).
            continue  # type: ignore[unreachable]
        name = etree.QName(child).localname
        child_decl = known.get(name)
        if child_decl is None:
            if name in theirs and _deep_empty(child):
                el.remove(child)
                pruned.foreign += 1
            continue
        _prune_empty(child, child_decl, theirs.get(name), pruned)
        if child_decl.min_occurs == 0 and _deep_empty(child):
            el.remove(child)
            pruned.optional += 1


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
        if t.is_derived(decl.schema.maps.types[f"{XS}{builtin}"]):
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
    found: dict[str, list[Occurrence]] = {}
    as_list: dict[str, bool] = {}
    for child in el:
        if not isinstance(child.tag, str) or _deep_empty(child):
            continue  # an empty required element (1.2's request supplyingAgencyId) = absent
        name = etree.QName(child).localname
        child_decl = known[name]
        is_list, sub = _shape(model, name)
        if is_list is None:  # not in the JSON models: the XSD decides
            is_list = child_decl.max_occurs is None or child_decl.max_occurs > 1
        as_list[name] = is_list
        # Repeated although the JSON contract has one: an array, which the model refuses
        # unless the versions table keeps it (a 2021 repetition).
        found.setdefault(name, []).append((_element_json(child, child_decl, sub),
                                           child.get(_SCHEME_ATTR) or None))
    out: dict[str, Any] = {}
    for name, occurs in found.items():
        put(out, name, occurs, as_list=as_list[name])
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
    noted: list[str] = field(default_factory=list)  # sent as note lines (versions table)


def to_xml(body: dict[str, Any], version: str = "1.2", *, validate: bool = True) -> XmlOut:
    """The ISO18626Message for a JSON body `{kind: {...}}`, in XSD order for `version`.

    Elements the other version has are written as the versions table says (renamed,
    moved, or as note lines, listed in `noted`). Fields that cannot be sent (the hub's
    `hubExtensions`, fields of neither XSD, what the table drops) are listed in
    `dropped`. Required elements missing from the JSON are written empty when the XSD
    allows an empty value (1.2's request header wants `supplyingAgencyId` and
    `multipleItemRequestId`). The `<element>@scheme` of an open value becomes its
    `scheme` attribute.
    """
    if version not in XSD_FILES:
        raise ValueError(f"ISO 18626 version {version!r}; known: {', '.join(VERSIONS)}")
    (kind, inner), = body.items()
    xsd = schema(version)
    # None is the default namespace's prefix in lxml; lxml-stubs' nsmap allows only str keys.
    root = etree.Element(f"{{{NAMESPACE}}}{ROOT}",
                         nsmap={None: NAMESPACE, "ill": NAMESPACE})  # type: ignore[dict-item]
    root.set(_VERSION_ATTR, version)
    bridged = to_version(kind, inner, version)
    dropped = [*bridged.dropped]
    message = etree.SubElement(root, f"{{{NAMESPACE}}}{kind}")
    _fill(message, xsd.elements[kind], bridged.inner, kind, dropped)
    if validate:
        problem = _first_problem(version, root, MessageType(kind))
        if problem is not None:
            raise XmlMessageError(problem.error_type, problem.error_value,
                                  kind=MessageType(kind), version=version)
    data = etree.tostring(root, xml_declaration=True, encoding="UTF-8")
    return XmlOut(data=data, dropped=dropped, noted=bridged.noted)


def _fill(el: etree._Element, decl: Any, value: dict[str, Any], path: str,
          dropped: list[str]) -> None:
    known = _elements(decl)
    for name in value:
        if value[name] is None:
            continue
        base = name.removesuffix(SCHEME)
        if base not in known or (base != name and (value.get(base) is None
                                                   or not has_scheme(known[base]))):
            dropped.append(f"{path}.{name}")
    for name, child_decl in known.items():
        occurs = occurrences(value, name)
        if not occurs:
            if child_decl.min_occurs > 0 and _emptyable(child_decl) and \
                    not _in_choice(decl, name):
                _fill(etree.SubElement(el, f"{{{NAMESPACE}}}{name}"), child_decl, {},
                      f"{path}.{name}", dropped)
            continue
        for item, scheme in occurs:
            child = etree.SubElement(el, f"{{{NAMESPACE}}}{name}")
            if _elements(child_decl):
                _fill(child, child_decl, item if isinstance(item, dict) else {},
                      f"{path}.{name}", dropped)
                continue
            child.text = _xml_text(item)
            if scheme is not None and has_scheme(child_decl):
                child.set(_SCHEME_ATTR, scheme)


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
