"""ISO 18626 1.2 <-> 2021: the mapping table, as data, and the JSON changes it makes.

The hub has one internal form of a message, the JSON of `schemas/iso18626.py`, in which
1.2's spelling is the contract wherever the two versions differ. `TABLE` says, for every
element that is not the same in both XSDs, how it travels:

- from a 2021 document into that JSON (`from_2021`: the 1.2 names and places; what 1.2
  cannot hold kept as 2021 has it),
- from the JSON into a 1.2 or a 2021 document (`to_version`).

An element of one version that the other has no place for travels in the *note form*:
one line per value, `[ISO 18626 <version>] <path>: <value>`, appended to the message's
note (`NOTE_PLACE`). Elements that are the same in both versions (same occurrence, type,
values and order) map to themselves and are not in the table; a test checks the XSDs'
element sets against the table, and `docs/iso18626-versions.md` is generated from it
(`python -m schemas.iso18626_versions docs/iso18626-versions.md`).

Two JSON conventions go with it (ARCHITECTURE §3.3):

- `<element>@scheme`, beside an open value, holds its `scheme` attribute
  (`"bibliographicRecordIdentifierCode": "patronReference",
  "bibliographicRecordIdentifierCode@scheme": "RESHARE"`); for an array of values, an array
  of schemes in step with it (null where a value has none).
- `hubExtensions.iso2021` keeps, under the element's path, every occurrence of an element
  that 2021 repeats and 1.2 (hence the JSON contract) has once, when a 2021 document
  carried more than one: `deliveryInfo.itemId` is the first, and
  `hubExtensions.iso2021.deliveryInfo.itemId` all of them.
"""

from __future__ import annotations

import copy
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, TypeAlias

from schemas.iso18626_xsd import element_shapes

SCHEME = "@scheme"
EXTENSIONS = "hubExtensions"
KEPT_2021 = "iso2021"

NOTE_LINE = "[ISO 18626 {version}] {path}: {value}"
NOTE_LINE_RE = re.compile(r"^\[ISO 18626 (1\.2|2021)\] ([A-Za-z0-9_.\[\]]+): (.*)$")

# Where each message carries the note form: its note, or for a confirmation (which has
# none) its first errorData's errorValue.
NOTE_PLACE = {
    "request": "serviceInfo.note",
    "supplyingAgencyMessage": "messageInfo.note",
    "requestingAgencyMessage": "note",
    "requestConfirmation": "errorData.errorValue",
    "supplyingAgencyMessageConfirmation": "errorData.errorValue",
    "requestingAgencyMessageConfirmation": "errorData.errorValue",
}


class Way(StrEnum):
    """How an element of one version is written in a document of the other."""

    SAME = "as it is"
    RENAMED = "renamed"                # under the other version's name and place
    FIRST = "first, rest as notes"     # as many as the target allows, the rest note lines
    ALL = "all"                        # every occurrence (the JSON's one and those kept)
    NOTE = "note"                      # note lines
    EMPTY = "written empty"            # required in the target: written empty when absent
    DROPPED = "dropped"                # not sent; the row says why nothing is lost
    SCHEME_DROPPED = "scheme dropped"  # the value is sent, its scheme attribute cannot be
    REFUSED = "refused"                # values the target has no code for: not writable


@dataclass(frozen=True)
class Row:
    """One element (or a family, by `*` pattern) that differs between 1.2 and 2021.

    `v12`/`v2021`: its path in each version (None: that version has no such element).
    `to12`: how a 2021 occurrence reaches a 1.2 document; `to2021` the other way.
    `json`: how the hub's JSON holds it. `many2021`: 2021 allows it more than once.
    `max12`: how many 1.2 allows (for FIRST). `why`: the reason, for the document.
    """

    v12: str | None
    v2021: str | None
    to12: Way | None
    to2021: Way | None
    json: str
    why: str
    many2021: bool = False
    max12: int = 1

    @property
    def label(self) -> str:
        return self.v12 or self.v2021 or ""


R = Row
W = Way
SAM = "supplyingAgencyMessage"
_DELIVERY = f"{SAM}.deliveryInfo"

TABLE: tuple[Row, ...] = (
    # request: header
    R("request.header.supplyingAgencyId", "request.header.supplyingAgencyId", W.EMPTY, W.SAME,
      "header.supplyingAgencyId; absent when the hub chooses",
      "Required in 1.2, optional in 2021 (the requester may leave the choice to the hub). "
      "Written empty for 1.2; a 1.2 request without it is accepted (ReShare sends none)."),
    R("request.header.multipleItemRequestId", "request.header.multipleItemRequestId",
      W.EMPTY, W.SAME, "header.multipleItemRequestId",
      "Required in 1.2 by an erratum that 2021 corrected. Written empty for 1.2; a 1.2 "
      "header without it is accepted."),
    R("request.header.supplyingAgencyRequestId", None, None, W.NOTE,
      "header.supplyingAgencyRequestId",
      "The 2021 request header has no supplyingAgencyRequestId (a retry names the earlier "
      "request in serviceInfo.requestingAgencyPreviousRequestId)."),
    R(None, "*.header.consortialId", W.NOTE, None, "header.consortialId",
      "New in 2021, in the request and requestingAgencyMessage headers: the consortium "
      "the request is made under. 1.2 has no element for it."),
    # request: bibliographic and publication data
    R(None, "request.bibliographicInfo.authorId", W.NOTE, None, "bibliographicInfo.authorId",
      "New in 2021 (an ISNI)."),
    R("request.bibliographicInfo.volume", "request.bibliographicInfo.volume", W.FIRST, W.ALL,
      "bibliographicInfo.volume (the first); all of them in "
      "hubExtensions.iso2021.bibliographicInfo.volume when there are more",
      "Repeatable in 2021, once in 1.2.", many2021=True),
    R("request.bibliographicInfo.bibliographicItemId",
      "request.bibliographicInfo.bibliographicItemId", W.SAME, W.SAME,
      "bibliographicInfo.bibliographicItemId (array)",
      "Its two children come in the other order (1.2: identifier, code; 2021: code, "
      "identifier). Each version's order is written."),
    R(None, "request.publicationInfo.publisherId", W.NOTE, None, "publicationInfo.publisherId",
      "New in 2021 (an ISNI)."),
    # request: service and delivery wishes
    R("request.serviceInfo", "request.serviceInfo", W.SAME, W.SAME, "serviceInfo",
      "Optional in 1.2, required in 2021. The hub refuses a request without "
      "serviceInfo.serviceType (it routes by it), so every request it forwards has one."),
    R("request.serviceInfo.preferredFormat", "request.serviceInfo.itemFormat",
      W.RENAMED, W.RENAMED, "serviceInfo.preferredFormat",
      "2021 replaced preferredFormat with the shared itemFormat element, at the same place."),
    R("request.serviceInfo.requestSubType", "request.serviceInfo.requestSubType",
      W.FIRST, W.ALL, "serviceInfo.requestSubType (array)",
      "At most 3 in 1.2, any number in 2021 (there are five values).",
      many2021=True, max12=3),
    R(None, "request.serviceInfo.preferredEdition", W.NOTE, None,
      "serviceInfo.preferredEdition",
      "New in 2021 (anyEdition, in both versions, is deprecated in 2021 in its favour)."),
    R(None, "request.serviceInfo.loanCondition", W.NOTE, None,
      "serviceInfo.loanCondition (array)",
      "New in 2021: loan conditions the requester accepts in advance."),
    R(None, "request.requestedDeliveryInfo.deliveryMethod", W.NOTE, None,
      "requestedDeliveryInfo[].deliveryMethod",
      "New in 2021: how the requester wants the item delivered."),
    R(None, "request.requestedDeliveryInfo.courierName", W.NOTE, None,
      "requestedDeliveryInfo[].courierName", "New in 2021."),
    R("*.sortOrder", "*.sortOrder", W.SAME, W.SAME, "sortOrder (supplierInfo, "
      "requestedDeliveryInfo)",
      "2021 allows 0 and above only; the hub's model takes only those, from either version."),
    R("*.physicalAddress.region", "*.physicalAddress.region", W.SAME, W.SCHEME_DROPPED,
      "physicalAddress.region, and region@scheme",
      "An open value with a scheme in 1.2, a plain string in 2021: the text maps both "
      "ways, a 1.2 scheme has no place in 2021."),
    # confirmations
    R("*.confirmationHeader.multipleItemRequestId", None, None, W.DROPPED,
      "confirmationHeader.multipleItemRequestId",
      "Not in 2021 confirmation headers. A confirmation answers one hop and the hub writes "
      "its own, so nothing a partner sent is lost."),
    R("*.errorData", "*.errorData", W.FIRST, W.ALL,
      "errorData (the first); all of them in hubExtensions.iso2021.errorData when there "
      "are more",
      "Repeatable in 2021, once in 1.2: the further ones go to the first one's errorValue "
      "as note lines.", many2021=True),
    R("*.action", "*.action", W.REFUSED, W.SAME, "action",
      "2021 adds the actions HoldReturn and Lost, for which 1.2 has no code: such a "
      "message cannot be written for a 1.2 peer (its outbox row is refused and flagged). "
      "The hub's model does not take them yet."),
    # supplyingAgencyMessage and requestingAgencyMessage headers
    R("*AgencyMessage.header.multipleItemRequestId", None, None, W.NOTE,
      "header.multipleItemRequestId",
      "Not in the 2021 headers of supplyingAgencyMessage and requestingAgencyMessage; "
      "required (empty allowed) in 1.2, where it is written empty when absent."),
    R(f"{SAM}.header.requestingAgencyAuthentication", None, None, W.DROPPED,
      "none: removed on receipt",
      "Credentials: the hub removes them from every message it receives and never "
      "forwards them (2021 allows them only in request and requestingAgencyMessage)."),
    # supplyingAgencyMessage: the retry offer
    R(f"{SAM}.messageInfo.offeredCosts", f"{SAM}.retryInfo.offeredCosts", W.RENAMED,
      W.RENAMED, "messageInfo.offeredCosts (the first); all of them stay in "
      "retryInfo.offeredCosts when there are more",
      "2021 moved it into retryInfo and made it repeatable: in a CostExceedsMaxCost retry, "
      "the price the requester is asked to accept. Any further one is a note line in "
      "1.2.", many2021=True),
    R(f"{SAM}.messageInfo.retryAfter", f"{SAM}.retryInfo.retryAfter", W.RENAMED, W.RENAMED,
      "messageInfo.retryAfter", "Moved into retryInfo in 2021."),
    R(f"{SAM}.messageInfo.retryBefore", f"{SAM}.retryInfo.retryBefore", W.RENAMED,
      W.RENAMED, "messageInfo.retryBefore", "Moved into retryInfo in 2021."),
    R(None, f"{SAM}.retryInfo", W.NOTE, None, "retryInfo (as in 2021)",
      "New in 2021: on what terms a retry could be filled (loanCondition, edition, "
      "itemFormat, volume, serviceType, serviceLevel, deliveryMethod, courierName, "
      "paymentMethod). Its offeredCosts, retryAfter and retryBefore map to messageInfo "
      "(rows above); the rest travels as note lines."),
    R(f"{SAM}.statusInfo.status", f"{SAM}.statusInfo.status", W.REFUSED, W.SAME,
      "statusInfo.status",
      "2021 adds HoldReturn and ReleaseHoldReturn, for which 1.2 has no code (refused as "
      "for actions). The hub's model does not take them yet."),
    # supplyingAgencyMessage: the delivery
    R(f"{_DELIVERY}.itemId", f"{_DELIVERY}.itemId", W.FIRST, W.ALL,
      "deliveryInfo.itemId (the first: the file an FTP delivery names); all of them in "
      "hubExtensions.iso2021.deliveryInfo.itemId when there are more",
      "Repeatable in 2021, once in 1.2.", many2021=True),
    R(f"{_DELIVERY}.sentVia", f"{_DELIVERY}.deliveryMethod", W.RENAMED, W.RENAMED,
      "deliveryInfo.sentVia",
      "Renamed in 2021. The hub reads sentVia (an FTP delivery), whichever version the "
      "supplier speaks."),
    R(f"{_DELIVERY}.loanCondition", f"{_DELIVERY}.loanCondition", W.FIRST, W.ALL,
      "deliveryInfo.loanCondition (the first); all of them in "
      "hubExtensions.iso2021.deliveryInfo.loanCondition when there are more",
      "Repeatable in 2021, once in 1.2.", many2021=True),
    R(f"{_DELIVERY}.deliveredFormat", f"{_DELIVERY}.itemFormat", W.RENAMED, W.RENAMED,
      "deliveryInfo.deliveredFormat", "Renamed in 2021."),
    R(f"{_DELIVERY}.deliveryCosts", f"{_DELIVERY}.deliveryCosts", W.FIRST, W.ALL,
      "deliveryInfo.deliveryCosts (the first: what the hub bills); all of them in "
      "hubExtensions.iso2021.deliveryInfo.deliveryCosts when there are more",
      "Repeatable in 2021, once in 1.2.", many2021=True),
    R(None, f"{_DELIVERY}.URL", W.NOTE, None, "deliveryInfo.URL",
      "New in 2021: where an electronic item can be fetched."),
    R(None, f"{_DELIVERY}.address", W.NOTE, None, "deliveryInfo.address",
      "New in 2021: where the item was sent."),
    R(None, f"{_DELIVERY}.serviceType", W.NOTE, None, "deliveryInfo.serviceType",
      "New in 2021: what was supplied (Copy or Loan)."),
    R(None, f"{_DELIVERY}.paymentMethod", W.NOTE, None, "deliveryInfo.paymentMethod",
      "New in 2021."),
    R(None, f"{SAM}.shippingInfo", W.NOTE, None, "shippingInfo (as in 2021)",
      "New in 2021: courier, tracking ids, insurance."),
)


def rows_for(path: str, version: str) -> list[Row]:
    """The rows whose pattern for `version` matches `path` or one of its ancestors."""
    found = []
    for row in TABLE:
        pattern = row.v12 if version == "1.2" else row.v2021
        if pattern is None:
            continue
        parts = path.split(".")
        if any(fnmatchcase(".".join(parts[:n]), pattern) for n in range(1, len(parts) + 1)):
            found.append(row)
    return found


# --------------------------------------------------------------------------
# The JSON: occurrences of an element, with their schemes
# --------------------------------------------------------------------------

# One occurrence of an element: its JSON value and its scheme (None: none).
Occurrence: TypeAlias = tuple[Any, str | None]


def occurrences(container: dict[str, Any], key: str) -> list[Occurrence]:
    value = container.get(key)
    if value is None:
        return []
    schemes = container.get(key + SCHEME)
    if isinstance(value, list):
        aligned = schemes if isinstance(schemes, list) else [None] * len(value)
        aligned = [s if isinstance(s, str) else None for s in aligned]
        aligned += [None] * (len(value) - len(aligned))
        return list(zip(value, aligned, strict=False))
    return [(value, schemes if isinstance(schemes, str) else None)]


def put(container: dict[str, Any], key: str, occurs: list[Occurrence], *,
        as_list: bool = False) -> None:
    """Write occurrences back: one as a value, several (or `as_list`) as an array."""
    container.pop(key, None)
    container.pop(key + SCHEME, None)
    if not occurs:
        return
    schemes = [s for _, s in occurs]
    if len(occurs) == 1 and not as_list:
        container[key] = occurs[0][0]
        if schemes[0] is not None:
            container[key + SCHEME] = schemes[0]
        return
    container[key] = [v for v, _ in occurs]
    if any(s is not None for s in schemes):
        container[key + SCHEME] = schemes


def _merge(first: list[Occurrence], more: list[Occurrence]) -> list[Occurrence]:
    """The JSON's own value(s) then those kept elsewhere, the kept list's first
    occurrence not repeated when it is the JSON's first (it was copied from there)."""
    if first and more and more[0] == first[0]:
        more = more[1:]
    return [*first, *more]


def _find(inner: dict[str, Any], rel: str, *, create: bool = False
          ) -> tuple[dict[str, Any] | None, str]:
    """The dict holding the element at `rel` (a path without the message type)."""
    *parents, key = rel.split(".")
    node: Any = inner
    for name in parents:
        if not isinstance(node, dict):
            return None, key
        if name not in node and create:
            node[name] = {}
        node = node.get(name)
    return (node, key) if isinstance(node, dict) else (None, key)


def _prune(inner: dict[str, Any], rel: str) -> None:
    """Remove the dicts on `rel`'s way that an element's removal left empty."""
    parents = rel.split(".")[:-1]
    while parents:
        holder, key = _find(inner, ".".join(parents))
        if holder is not None and holder.get(key) == {}:
            del holder[key]
        parents.pop()


def _walk(node: Any, path: str, shown: str) -> Iterator[tuple[dict[str, Any], str, str, str]]:
    """Every element in a JSON tree: (its dict, key, path without indices, path shown)."""
    if isinstance(node, list):
        for i, item in enumerate(node, 1):
            yield from _walk(item, path, f"{shown}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for key in list(node):
        if key.endswith(SCHEME) or (path.count(".") == 0 and key == EXTENSIONS):
            continue
        yield node, key, f"{path}.{key}", f"{shown}.{key}" if shown else key
        yield from _walk(node[key], f"{path}.{key}", f"{shown}.{key}" if shown else key)


def _matches(kind: str, inner: dict[str, Any], pattern: str
             ) -> list[tuple[dict[str, Any], str, str]]:
    """The elements of a message matching a table pattern: (dict, key, path shown)."""
    return [(holder, key, shown) for holder, key, path, shown in _walk(inner, kind, "")
            if fnmatchcase(path, pattern)]


def _rel(pattern: str) -> str:
    return pattern.split(".", 1)[1]


def _applies(kind: str, pattern: str | None) -> bool:
    """Whether a table pattern can match an element of message type `kind`."""
    return pattern is not None and fnmatchcase(kind, pattern.split(".", 1)[0])


def _leaves(node: dict[str, Any], prefix: str) -> list[str]:
    """The paths of the values (anything but an object) in a JSON object."""
    found = []
    for key, value in node.items():
        path = f"{prefix}.{key}" if prefix else key
        found += _leaves(value, path) if isinstance(value, dict) else [path]
    return found


def _kept(inner: dict[str, Any], *, take: bool) -> dict[str, Any]:
    """hubExtensions.iso2021 (created if missing unless `take`, which removes it)."""
    ext = inner.get(EXTENSIONS)
    if take:
        if not isinstance(ext, dict) or not isinstance(ext.get(KEPT_2021), dict):
            return {}
        kept: dict[str, Any] = ext.pop(KEPT_2021)
        if not ext:
            del inner[EXTENSIONS]
        return kept
    if not isinstance(ext, dict):
        ext = inner[EXTENSIONS] = {}
    made: dict[str, Any] = ext.setdefault(KEPT_2021, {})
    return made


# --------------------------------------------------------------------------
# 2021 document -> the hub's JSON
# --------------------------------------------------------------------------


def from_2021(kind: str, inner: dict[str, Any]) -> dict[str, Any]:
    """A 2021 document's JSON (as the converter read it) in the hub's form."""
    out = copy.deepcopy(inner)
    for row in TABLE:
        if row.v12 is None or row.v2021 is None or not _applies(kind, row.v2021):
            continue
        if row.to12 is Way.RENAMED:
            holder, key = _find(out, _rel(row.v2021))
            found = occurrences(holder, key) if holder is not None else []
            if not found or holder is None:
                continue
            put(holder, key, found if len(found) > 1 else [])   # the original, if it adds
            _prune(out, _rel(row.v2021))
            target, name = _find(out, _rel(row.v12), create=True)
            if target is not None:
                put(target, name, found[:1])
        elif row.to12 is Way.FIRST and row.max12 == 1:
            for holder, key, shown in _matches(kind, out, row.v2021):
                found = occurrences(holder, key)
                if len(found) > 1:
                    put(holder, key, found[:1])
                    kept, name = _find(_kept(out, take=False), shown, create=True)
                    if kept is not None:
                        put(kept, name, found, as_list=True)
    return out


# --------------------------------------------------------------------------
# The hub's JSON -> a 1.2 or 2021 document
# --------------------------------------------------------------------------


@dataclass
class Bridged:
    kind: str
    inner: dict[str, Any]
    dropped: list[str] = field(default_factory=list)   # paths not sent
    noted: list[str] = field(default_factory=list)     # paths sent as note lines


def note_lines(version: str, path: str, value: Any, scheme: Any = None) -> list[str]:
    """The note form of one element: a line per value (costs and agency ids whole)."""
    if isinstance(value, list):
        schemes = scheme if isinstance(scheme, list) else [None] * len(value)
        return [line for v, s in zip(value, schemes, strict=False)
                for line in note_lines(version, path, v, s)]
    if isinstance(value, dict) and not _unit(value):
        return [line for key in value if not key.endswith(SCHEME)
                for line in note_lines(version, f"{path}.{key}", value[key],
                                       value.get(key + SCHEME))]
    return [NOTE_LINE.format(version=version, path=path, value=_shown(value, scheme))]


def _unit(value: dict[str, Any]) -> bool:
    names = {k for k in value if not k.endswith(SCHEME)}
    return names in ({"currencyCode", "monetaryValue"}, {"agencyIdType", "agencyIdValue"})


def _shown(value: Any, scheme: Any) -> str:
    if isinstance(value, dict):
        if "monetaryValue" in value:
            text = f"{value['monetaryValue']} {value.get('currencyCode', '')}"
            inner_scheme = value.get("currencyCode" + SCHEME)
        else:
            text = f"{value.get('agencyIdType', '')}:{value.get('agencyIdValue', '')}"
            inner_scheme = value.get("agencyIdType" + SCHEME)
        return text if inner_scheme is None else f"{text} (scheme {inner_scheme})"
    if isinstance(value, bool):
        text = "true" if value else "false"
    else:
        text = " ".join(str(value).split())  # one line
    return text if scheme is None else f"{text} (scheme {scheme})"


def to_version(kind: str, inner: dict[str, Any], version: str) -> Bridged:
    """The hub's JSON of a message made ready for a `version` document: renamed, moved,
    repeated and note-form elements as the table says. Elements of neither version are
    left for the writer (which lists them as not sent)."""
    out = Bridged(kind, copy.deepcopy(inner))
    kept = _kept(out.inner, take=True)
    lines: list[str] = []
    for row in TABLE:
        if version == "1.2":
            _to_12(kind, row, out, kept, lines)
        else:
            _to_2021(kind, row, out, kept, lines)
    # Kept occurrences whose element is gone from the JSON have nowhere to go.
    out.dropped += [f"{kind}.{EXTENSIONS}.{KEPT_2021}.{path}" for path in _leaves(kept, "")]
    if lines:
        _add_note(kind, out, lines)
    return out


def _move(inner: dict[str, Any], src: str, dst: str
          ) -> tuple[dict[str, Any], str, list[Any]] | None:
    """A renamed element, either way: its values taken out of `src` (emptied holders
    pruned) and the place `dst` names (made when there is something to put there);
    None when there is nothing there and nothing to move."""
    holder, key = _find(inner, src)
    values = occurrences(holder, key) if holder is not None else []
    if holder is not None:
        put(holder, key, [])
        _prune(inner, src)
    target, name = _find(inner, dst, create=bool(values))
    return None if target is None else (target, name, values)


def _to_12(kind: str, row: Row, out: Bridged, kept: dict[str, Any], lines: list[str]) -> None:
    inner = out.inner
    if row.to12 is Way.RENAMED and row.v12 and row.v2021 and _applies(kind, row.v2021):
        src, dst = _rel(row.v2021), _rel(row.v12)
        moved = _move(inner, src, dst)
        if moved is None:
            return
        target, name, theirs = moved
        merged = _merge(occurrences(target, name), theirs)
        put(target, name, merged[:1])
        _noted(out, lines, "2021", src, merged[1:])
    elif row.to12 is Way.FIRST and row.v2021 and _applies(kind, row.v2021):
        for holder, key, shown, merged in _with_kept(kind, inner, kept, row.v2021):
            put(holder, key, merged[:row.max12], as_list=row.max12 > 1)
            _noted(out, lines, "2021", shown, merged[row.max12:])
    elif row.to12 is Way.NOTE and row.v2021 and _applies(kind, row.v2021):
        for holder, key, shown in _matches(kind, inner, row.v2021):
            _noted(out, lines, "2021", shown, occurrences(holder, key))
            put(holder, key, [])


def _to_2021(kind: str, row: Row, out: Bridged, kept: dict[str, Any],
             lines: list[str]) -> None:
    inner = out.inner
    if row.to2021 is Way.RENAMED and row.v12 and row.v2021 and _applies(kind, row.v12):
        src, dst = _rel(row.v12), _rel(row.v2021)
        moved = _move(inner, src, dst)
        if moved is None:
            return
        target, name, ours = moved
        merged = _merge(ours, occurrences(target, name))
        put(target, name, merged if row.many2021 else merged[:1])
        if len(merged) > 1 and not row.many2021:  # both spellings, and they differ
            out.dropped.append(f"{kind}.{dst}")
    elif row.to2021 is Way.ALL and row.v12 and _applies(kind, row.v12):
        for holder, key, _, merged in _with_kept(kind, inner, kept, row.v12):
            put(holder, key, merged)
    elif row.to2021 is Way.NOTE and row.v12 and _applies(kind, row.v12):
        for holder, key, shown in _matches(kind, inner, row.v12):
            _noted(out, lines, "1.2", shown, occurrences(holder, key))
            put(holder, key, [])
    elif row.to2021 is Way.DROPPED and row.v12 and _applies(kind, row.v12):
        for holder, key, shown in _matches(kind, inner, row.v12):
            out.dropped.append(f"{kind}.{shown}")
            put(holder, key, [])
    elif row.to2021 is Way.SCHEME_DROPPED and row.v12 and _applies(kind, row.v12):
        for holder, key, shown in _matches(kind, inner, row.v12):
            if holder.pop(key + SCHEME, None) is not None:
                out.dropped.append(f"{kind}.{shown}{SCHEME}")


def _with_kept(kind: str, inner: dict[str, Any], kept: dict[str, Any], pattern: str
               ) -> list[tuple[dict[str, Any], str, str, list[Occurrence]]]:
    """Each element matching `pattern` (in the JSON, or only among the occurrences kept in
    hubExtensions.iso2021) with all its occurrences: the JSON's, then those kept, which
    leave `kept`. One whose containing element is gone stays in `kept` (not sent)."""
    shown = [where for _, _, where in _matches(kind, inner, pattern)]
    shown += [where for _, _, where in _matches(kind, kept, pattern) if where not in shown]
    found = []
    for where in shown:
        holder, key = _find(inner, where)
        if holder is None:
            continue
        store, name = _find(kept, where)
        extra = occurrences(store, name) if store is not None else []
        if store is not None:
            put(store, name, [])
        found.append((holder, key, where, _merge(occurrences(holder, key), extra)))
    return found


def _noted(out: Bridged, lines: list[str], version: str, path: str,
           found: list[Occurrence]) -> None:
    for value, scheme in found:
        lines.extend(note_lines(version, path, value, scheme))
    if found:
        out.noted.append(f"{out.kind}.{path}")


def _add_note(kind: str, out: Bridged, lines: list[str]) -> None:
    place = NOTE_PLACE.get(kind)
    holder, key = _find(out.inner, place) if place else (None, "")
    if holder is None:
        # A message with no place for a note (a request without serviceInfo, say).
        out.dropped += out.noted
        out.noted = []
        return
    text = holder.get(key)
    holder[key] = "\n".join([text, *lines] if isinstance(text, str) and text else lines)


def read_note_lines(note: str | None) -> list[tuple[str, str, str]]:
    """The note-form lines in a note: (version, path, value)."""
    found = []
    for line in (note or "").splitlines():
        match = NOTE_LINE_RE.match(line)
        if match:
            found.append((match.group(1), match.group(2), match.group(3)))
    return found


# --------------------------------------------------------------------------
# The document: docs/iso18626-versions.md
# --------------------------------------------------------------------------

BEGIN = "<!-- generated from schemas/iso18626_versions.py: begin -->"
END = "<!-- generated from schemas/iso18626_versions.py: end -->"


def _cell(text: str | None) -> str:
    return "—" if not text else text.replace("|", "\\|")


def _way(way: Way | None, row: Row, target: str) -> str:
    if way is None:
        return "—"
    if way is Way.RENAMED:
        other = row.v12 if target == "1.2" else row.v2021
        more = " (the first; the rest as note lines)" if target == "1.2" and row.many2021 \
            else ""
        return f"as `{_rel(other or '')}`{more}"
    if way is Way.FIRST:
        return f"first {row.max12}, the rest as note lines" if row.max12 > 1 else \
            "the first; the rest as note lines"
    return str(way)


def _shape(path: str | None, version: str) -> str:
    if path is None:
        return "—"
    shapes = element_shapes(version)
    found = {shapes[p].describe() for p in shapes if fnmatchcase(p, path)}
    return ", ".join(sorted(found)) or "?"


def markdown() -> str:
    """The generated part of docs/iso18626-versions.md: the table, then every element
    that is the same in both versions."""
    out = ["| 1.2 | 2021 | in the hub's JSON | 2021 → 1.2 | 1.2 → 2021 | why |",
           "|---|---|---|---|---|---|"]
    for row in TABLE:
        v12 = f"`{row.v12}` ({_shape(row.v12, '1.2')})" if row.v12 else "—"
        v2021 = f"`{row.v2021}` ({_shape(row.v2021, '2021')})" if row.v2021 else "—"
        out.append(f"| {v12} | {v2021} | {_cell(row.json)} | {_way(row.to12, row, '1.2')} | "
                   f"{_way(row.to2021, row, '2021')} | {_cell(row.why)} |")
    out += ["", "Elements that are the same in both versions (same occurrence, type, values "
            "and order), each mapped to itself:", ""]
    for kind, paths in same_elements().items():
        out.append(f"- `{kind}`: " + ", ".join(f"`{p}`" for p in paths))
    return "\n".join(out) + "\n"


def same_elements() -> dict[str, list[str]]:
    """Per message type, the elements the table has no row for (identical in both)."""
    old, new = element_shapes("1.2"), element_shapes("2021")
    found: dict[str, list[str]] = {}
    for path, shape in old.items():
        if "." not in path or path not in new or shape.differs(new[path]) or \
                rows_for(path, "1.2") or rows_for(path, "2021"):
            continue
        kind, rel = path.split(".", 1)
        found.setdefault(kind, []).append(rel)
    return found


def uncovered() -> list[str]:
    """Elements that differ between the XSDs (or exist in one only) and have no row."""
    old, new = element_shapes("1.2"), element_shapes("2021")
    missing = []
    for path in dict.fromkeys([*old, *new]):
        if path in old and path in new and not old[path].differs(new[path]):
            continue
        if not (rows_for(path, "1.2") if path in old else []) and \
                not (rows_for(path, "2021") if path in new else []):
            missing.append(path)
    return missing


def rewrite(doc: Path) -> bool:
    """Put the generated part into `doc` between its markers; whether it changed."""
    text = doc.read_text(encoding="utf-8")
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    new = f"{head}{BEGIN}\n{markdown()}{END}{tail}"
    if new == text:
        return False
    doc.write_text(new, encoding="utf-8")
    return True


def generated_part(doc_text: str) -> str:
    return doc_text.partition(BEGIN)[2].partition(END)[0].lstrip("\n")


def _main(argv: Iterable[str]) -> int:
    paths = list(argv)
    if not paths:
        sys.stdout.write(markdown())
        return 0
    for name in paths:
        changed = rewrite(Path(name))
        sys.stdout.write(f"{name}: {'rewritten' if changed else 'up to date'}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main(sys.argv[1:]))
