"""An SRU searchRetrieve response, and the availability its records tell.

Parsed with lxml, safely: no DTD, no entities, no network (a catalogue's answer is
untrusted input like any message). Elements are found by local name, so SRU 1.1/1.2
(http://www.loc.gov/zing/srw/) and 2.0 (docs.oasis-open.org) answers read alike, and so
do ISO 20775 documents with or without their namespace.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from lxml import etree

from broker.catalogue.config import CatalogueConfig, Reader
from broker.policy import Availability

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          remove_comments=True, remove_pis=True)
_MARC = "http://www.loc.gov/MARC21/slim"
# ISO 20775 availabilityStatus codes.
_ISO_AVAILABLE, _ISO_NOT, _ISO_POSSIBLY = "1", "2", "3"


class SruError(Exception):
    """The catalogue answered, but not with records: a diagnostic, or not SRU at all."""


@dataclass(frozen=True)
class SruAnswer:
    count: int  # numberOfRecords: how many the server found
    records: list[etree._Element]  # the recordData contents it sent


def _children(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str) and etree.QName(c).localname == name]


def _descendants(el: etree._Element, name: str) -> list[etree._Element]:
    return [c for c in el.iter() if isinstance(c.tag, str)
            and etree.QName(c).localname == name]


def _text(el: etree._Element | None) -> str:
    return "".join(str(t) for t in el.itertext()).strip() if el is not None else ""


def parse_response(body: bytes) -> SruAnswer:
    try:
        root = etree.fromstring(body, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise SruError(f"not XML: {exc}") from exc
    if etree.QName(root).localname != "searchRetrieveResponse":
        raise SruError(f"not an SRU searchRetrieveResponse but <{etree.QName(root).localname}>")
    for diag in _descendants(root, "diagnostic"):
        if any(etree.QName(a).localname == "recordData" for a in diag.iterancestors()):
            continue  # a surrogate diagnostic for one record: read with the records
        uri = _text(next(iter(_children(diag, "uri")), None))
        message = _text(next(iter(_children(diag, "message")), None))
        details = _text(next(iter(_children(diag, "details")), None))
        raise SruError("SRU diagnostic " + uri.rsplit("/", 1)[-1]
                       + (f" {message}" if message else "") + (f" ({details})" if details else ""))
    counts = _children(root, "numberOfRecords")
    try:
        count = int(_text(counts[0])) if counts else 0
    except ValueError as exc:
        raise SruError(f"numberOfRecords {_text(counts[0])!r} is not a number") from exc
    records: list[etree._Element] = []
    for data in _descendants(root, "recordData"):
        inner = [c for c in data if isinstance(c.tag, str)]
        if inner:
            records.append(inner[0])
        elif data.text and data.text.strip():
            # recordPacking "string": the record is escaped text inside recordData.
            try:
                records.append(etree.fromstring(data.text.strip().encode(), _PARSER))
            except etree.XMLSyntaxError as exc:
                raise SruError(f"a record packed as a string is not XML: {exc}") from exc
    if count and not records:
        raise SruError(f"{count} record(s) found but none sent")
    return SruAnswer(count=count, records=records)


def availability(config: CatalogueConfig, answer: SruAnswer, asked: str) -> Availability:
    """What the records say of the item; `asked` names the identifiers for the reason."""
    if answer.count == 0:
        # Not proof that it is not there: the catalogue may index it differently.
        return Availability(None, f"checked: no record for {asked}")
    if config.reader is Reader.MARC:
        return _marc(config, answer.records)
    return _iso20775(answer.records)


def _marc(config: CatalogueConfig, records: list[etree._Element]) -> Availability:
    tag, code = config.item_tag
    statuses: list[str] = []
    marc_records = 0
    for record in records:
        if etree.QName(record).localname == "collection":
            found = _children(record, "record")
        else:
            found = [record]
        for r in found:
            if etree.QName(r).localname != "record":
                continue
            marc_records += 1
            for df in _children(r, "datafield"):
                if df.get("tag") != tag:
                    continue
                sub = [s for s in _children(df, "subfield") if s.get("code") == code]
                statuses.append(_text(sub[0]) if sub else "")
    if not marc_records:
        raise SruError(f"no MARCXML record ({_MARC}) in the answer; is the record schema "
                       f"{config.record_schema!r} MARCXML?")
    if not statuses:
        return Availability(None, f"checked: the record has no items ({config.item_field})")
    on_shelf = sum(1 for s in statuses if config.available(s))
    return _counted(on_shelf, Counter(s or "no status" for s in statuses
                                      if not config.available(s)), len(statuses), "items")


def _counted(on_shelf: int, others: Counter[str], total: int, what: str) -> Availability:
    if on_shelf:
        return Availability(True, f"checked: available ({on_shelf} of {total} {what} on shelf)")
    if len(others) == 1:
        status = next(iter(others))
        return Availability(False, f"checked: not available (all {total} {what} {status})")
    shown = ", ".join(f"{n} {s}" for s, n in others.most_common())
    return Availability(False, f"checked: not available (none of {total} {what} on shelf: "
                               f"{shown})")


_ISO_WORDS = {_ISO_NOT: "not available", _ISO_POSSIBLY: "possibly available", "0": "unknown"}


def _iso20775(records: list[etree._Element]) -> Availability:
    holdings = [h for r in records for h in _descendants(r, "holding")]
    if not holdings:
        raise SruError("no ISO 20775 <holding> in the answer; is the record schema ISO 20775?")
    codes: list[str] = []
    summary_total = summary_available = 0
    for holding in holdings:
        copies = _descendants(holding, "copyInformation")
        copy_codes = [_text(next(iter(_descendants(c, "availabilityStatus")), None)) or "0"
                      for c in copies]
        if any(code != "0" for code in copy_codes):
            codes += copy_codes
            continue
        # No status per copy: the summary's counts, where it gives them.
        for summary in _descendants(holding, "copiesSummary"):
            total = _int(_text(next(iter(_children(summary, "copiesCount")), None)))
            available = [_int(_text(a)) for a in _descendants(summary, "availableCount")]
            if total is not None and available and available[0] is not None:
                summary_total += total
                summary_available += available[0]
    if summary_total:
        codes += [_ISO_AVAILABLE] * summary_available
        codes += [_ISO_NOT] * max(summary_total - summary_available, 0)
    if not codes:
        return Availability(None, "checked: the holdings give no availability")
    on_shelf = codes.count(_ISO_AVAILABLE)
    if not on_shelf and any(c in (_ISO_POSSIBLY, "0") for c in codes):
        return Availability(None, f"checked: availability unknown ({len(codes)} copies, "
                                  f"{codes.count(_ISO_POSSIBLY)} possibly available)")
    return _counted(on_shelf, Counter(_ISO_WORDS.get(c, c) for c in codes
                                      if c != _ISO_AVAILABLE), len(codes), "copies")


def _int(text: str) -> int | None:
    return int(text) if text.isdigit() else None
