"""Open vocabularies (ISO 18626 `type_schemeValuePair` values) spelt the one way the
hub's model spells them.

ISO 18626 leaves these lists open (Annex B, "Open Codes", kept at
http://illtransactions.org/opencode/2017/), and systems send them in any case: ReShare
sends loan conditions in lowercase (`watchlibraryuseonly`), bibliographic id codes as
`issn`. A value that matches a known code but for case (and surrounding blanks) is
written as the list spells it; any other value is kept exactly as sent, never replaced
by a default: an unknown serviceLevel stays what the requester asked for (routing
treats a level it does not know as normal, `broker/dispatch/desk.py`).

Bibliographic item id codes are *not* rewritten: the hub compares them without regard to
case where it reads them (`broker/holdings.py identifiers_of`), and passes them on as
sent. Only a peer whose profile needs the standard spelling gets it, on the way out
(`ids.item_id_codes_upper`).

The lists are those of CrossLink's ISO 18626 package (`iso18626/opencodes.go`), which
follow the maintenance agency's open code lists.
"""

from __future__ import annotations

import re
from typing import Any

from broker.profiles.model import Changes, Work

SERVICE_LEVELS = ("Express", "Normal", "Rush", "SecondaryMail", "Standard", "Urgent")
LOAN_CONDITIONS = ("LibraryUseOnly", "NoReproduction", "SignatureRequired",
                   "SpecCollSupervReq", "WatchLibraryUseOnly")
FORMATS = ("PDF", "Printed", "PaperCopy")
DELIVERY_METHODS = ("Mail", "Email", "FTP", "URL")
PUBLICATION_TYPES = (
    "ArchiveMaterial", "Article", "AudioBook", "Book", "Chapter", "ConferenceProc", "Game",
    "GovernmentPubl", "Image", "Journal", "Manuscript", "Map", "Movie", "MusicRecording",
    "MusicScore", "Newspaper", "Patent", "Report", "SoundRecording", "Thesis")
ITEM_ID_CODES = ("ISBN", "ISSN", "ISMN")
STANDARD_SERVICE_LEVEL = "Standard"

_CURRENCY = re.compile(r"[A-Za-z]{3}")

_REQUEST = "request"
_SUPPLYING = "supplyingAgencyMessage"


def canonical(value: str, codes: tuple[str, ...]) -> str | None:
    """The list's spelling of `value` when it is one of `codes` but for case; else None."""
    wanted = value.strip().casefold()
    return next((c for c in codes if c.casefold() == wanted), None)


def _fix(where: dict[str, Any] | None, key: str, path: str,
         spell: Any) -> Changes:
    """Respell `where[key]` (a string, or a list of strings) with `spell`."""
    if where is None or key not in where:
        return []
    value = where[key]
    if isinstance(value, list):
        changes: Changes = []
        for i, item in enumerate(value):
            if isinstance(item, str) and (new := spell(item)) is not None and new != item:
                value[i] = new
                changes.append(f"{path}.{key}[{i}]: {item!r} -> {new!r}")
        return changes
    if isinstance(value, str) and (new := spell(value)) is not None and new != value:
        where[key] = new
        return [f"{path}.{key}: {value!r} -> {new!r}"]
    return []


def _codes(codes: tuple[str, ...]) -> Any:
    return lambda value: canonical(value, codes)


def _objects(value: Any) -> list[dict[str, Any]]:
    """An element that may be one object or an array of them (1.2 and 2021 differ)."""
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, dict)]
    return []


def service_level(work: Work) -> Changes:
    if work.kind == _REQUEST:
        return _fix(work.part("serviceInfo"), "serviceLevel", "serviceInfo",
                    _codes(SERVICE_LEVELS))
    if work.kind == _SUPPLYING:
        return _fix(work.part("retryInfo"), "serviceLevel", "retryInfo",
                    _codes(SERVICE_LEVELS))
    return []


def loan_condition(work: Work) -> Changes:
    spell = _codes(LOAN_CONDITIONS)
    if work.kind == _REQUEST:
        return _fix(work.part("serviceInfo"), "loanCondition", "serviceInfo", spell)
    if work.kind == _SUPPLYING:
        return [*_fix(work.part("deliveryInfo"), "loanCondition", "deliveryInfo", spell),
                *_fix(work.part("retryInfo"), "loanCondition", "retryInfo", spell)]
    return []


def item_format(work: Work) -> Changes:
    spell = _codes(FORMATS)
    if work.kind == _REQUEST:
        info = work.part("serviceInfo")
        return [*_fix(info, "preferredFormat", "serviceInfo", spell),
                *_fix(info, "itemFormat", "serviceInfo", spell)]
    if work.kind == _SUPPLYING:
        info = work.part("deliveryInfo")
        return [*_fix(info, "deliveredFormat", "deliveryInfo", spell),
                *_fix(info, "itemFormat", "deliveryInfo", spell),
                *_fix(work.part("retryInfo"), "itemFormat", "retryInfo", spell)]
    return []


def publication_type(work: Work) -> Changes:
    if work.kind != _REQUEST:
        return []
    return _fix(work.part("publicationInfo"), "publicationType", "publicationInfo",
                _codes(PUBLICATION_TYPES))


def delivery_method(work: Work) -> Changes:
    spell = _codes(DELIVERY_METHODS)
    if work.kind == _REQUEST:
        changes: Changes = []
        for i, wanted in enumerate(_objects(work.inner.get("requestedDeliveryInfo"))):
            changes += _fix(wanted, "deliveryMethod", f"requestedDeliveryInfo[{i}]", spell)
        return changes
    if work.kind == _SUPPLYING:
        info = work.part("deliveryInfo")
        return [*_fix(info, "sentVia", "deliveryInfo", spell),
                *_fix(info, "deliveryMethod", "deliveryInfo", spell),
                *_fix(work.part("retryInfo"), "deliveryMethod", "retryInfo", spell)]
    return []


def _currency_code(value: str) -> str | None:
    stripped = value.strip()
    return stripped.upper() if _CURRENCY.fullmatch(stripped) else None


def currency(work: Work) -> Changes:
    """ISO 4217 codes are upper case: `cny` -> `CNY` in every amount of the message."""
    places: list[tuple[Any, str]] = []
    if work.kind == _REQUEST:
        billing = work.part("billingInfo")
        places.append(((billing or {}).get("maximumCosts"), "billingInfo.maximumCosts"))
    elif work.kind == _SUPPLYING:
        places += [((work.part("messageInfo") or {}).get("offeredCosts"),
                    "messageInfo.offeredCosts"),
                   ((work.part("deliveryInfo") or {}).get("deliveryCosts"),
                    "deliveryInfo.deliveryCosts"),
                   ((work.part("retryInfo") or {}).get("offeredCosts"), "retryInfo.offeredCosts"),
                   ((work.part("shippingInfo") or {}).get("insuranceCosts"),
                    "shippingInfo.insuranceCosts")]
    changes: Changes = []
    for value, path in places:
        for costs in _objects(value):
            changes += _fix(costs, "currencyCode", path, _currency_code)
    return changes


def service_level_standard(work: Work) -> Changes:
    """Outbound, for systems that know only the listed levels: any other is Standard."""
    if work.kind != _REQUEST:
        return []
    info = work.part("serviceInfo")
    level = (info or {}).get("serviceLevel")
    if info is None or not isinstance(level, str) or canonical(level, SERVICE_LEVELS):
        return []
    info["serviceLevel"] = STANDARD_SERVICE_LEVEL
    return [f"serviceInfo.serviceLevel: {level!r} -> {STANDARD_SERVICE_LEVEL!r}"]


def item_id_codes_upper(work: Work) -> Changes:
    """Outbound: ISBN/ISSN/ISMN in upper case; ids under other codes are left out."""
    info = work.part("bibliographicInfo") if work.kind == _REQUEST else None
    ids = (info or {}).get("bibliographicItemId")
    if info is None or not isinstance(ids, list):
        return []
    kept: list[Any] = []
    changes: Changes = []
    for item in ids:
        code = item.get("bibliographicItemIdentifierCode") if isinstance(item, dict) else None
        known = canonical(code, ITEM_ID_CODES) if isinstance(code, str) else None
        if known is None:
            changes.append(f"bibliographicInfo.bibliographicItemId: {code!r} left out")
            continue
        if known != code:
            item = {**item, "bibliographicItemIdentifierCode": known}
            changes.append(f"bibliographicInfo.bibliographicItemId: {code!r} -> {known!r}")
        kept.append(item)
    if changes:
        if kept:
            info["bibliographicItemId"] = kept
        else:
            del info["bibliographicItemId"]
    return changes
