"""A loan's parcel as data (issue 19 item 1): carrier, tracking number, date sent and
parcel count of each leg, read from the message that says it was sent.

Where ISO 18626 has the field the hub reads it there: the supplier's Loaned carries
`deliveryInfo.dateSent`, `sentVia` and `itemId`, and (2021) `shippingInfo.courierName`
and `trackingId`. What the standard has no element for (the parcel count; anything on
the requester's ShippedReturn, a requestingAgencyMessage with only a note) travels in
the hub's documented extension object (ARCHITECTURE §3.3):

    "hubExtensions": {"shipping": {"carrier": "中国邮政 EMS",
                                   "trackingNumber": "EA123456789CN",
                                   "shippedOn": "2026-12-01", "parcels": 1}}

An XML partner has no `hubExtensions` (the XSDs have no place for it), so the same data
also travels as one line of the message's note, the *shipping line*:

    [ILL Hub] shipping: carrier=中国邮政 EMS; tracking=EA123456789CN; shipped=2026-12-01; parcels=1

The hub reads it from a note as it reads hubExtensions (hubExtensions first), and writes
it into the note of the message it relays, so either side learns the whole parcel
whichever transport it uses. Pure: no I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import date, datetime
from enum import StrEnum
from typing import Any

SHIPPING = "shipping"
EXTENSIONS = "hubExtensions"
LINE_PREFIX = "[ILL Hub] shipping: "
_LINE_KEYS = {"carrier": "carrier", "tracking": "tracking_number", "shipped": "shipped_on",
              "parcels": "parcels"}
_EXTENSION_KEYS = {"carrier": "carrier", "trackingNumber": "tracking_number",
                   "shippedOn": "shipped_on", "parcels": "parcels"}
_TRACKING = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/-]{0,63}")
MAX_CARRIER = 100
MAX_PARCELS = 99


class Leg(StrEnum):
    OUT = "out"     # supplier to requester (the Loaned)
    BACK = "back"   # requester to supplier (the ShippedReturn)


class ShippingError(ValueError):
    """Shipping data that cannot be used; `element` names where it was."""

    def __init__(self, element: str, message: str) -> None:
        super().__init__(f"{element}: {message}")
        self.element = element


@dataclass(frozen=True)
class Shipment:
    carrier: str | None = None
    tracking_number: str | None = None
    shipped_on: date | None = None
    parcels: int | None = None
    sent_via: str | None = None
    item_id: str | None = None

    @property
    def empty(self) -> bool:
        return all(v is None for v in (self.carrier, self.tracking_number, self.shipped_on,
                                       self.parcels, self.sent_via, self.item_id))

    def extension(self) -> dict[str, Any]:
        """`hubExtensions.shipping` of this parcel (only what is known)."""
        out: dict[str, Any] = {}
        for wire, name in _EXTENSION_KEYS.items():
            value = getattr(self, name)
            if value is not None:
                out[wire] = value.isoformat() if isinstance(value, date) else value
        return out

    def line(self) -> str:
        """The shipping line of a note (empty parts left out)."""
        parts = []
        for key, name in _LINE_KEYS.items():
            value = getattr(self, name)
            if value is not None:
                parts.append(f"{key}={value.isoformat() if isinstance(value, date) else value}")
        return LINE_PREFIX + "; ".join(parts)

    def describe(self) -> str:
        """One line for operators (explain, the transaction page)."""
        bits = [self.carrier or "carrier unknown",
                f"tracking {self.tracking_number}" if self.tracking_number else "no tracking",
                f"sent {self.shipped_on.isoformat()}" if self.shipped_on else "date unknown"]
        if self.parcels is not None:
            bits.append(f"{self.parcels} parcel{'s' if self.parcels != 1 else ''}")
        if self.sent_via:
            bits.append(f"via {self.sent_via}")
        if self.item_id:
            bits.append(f"item {self.item_id}")
        return ", ".join(bits)


def from_supplier(inner: dict[str, Any]) -> Shipment | None:
    """The outbound parcel of a supplier's Loaned (`inner`: the supplyingAgencyMessage's
    content as received); None if it says nothing of one."""
    kind = "supplyingAgencyMessage"
    delivery = _table(inner.get("deliveryInfo"), f"{kind}.deliveryInfo")
    shipping = _table(inner.get("shippingInfo"), f"{kind}.shippingInfo")
    values = _from_note(_note(inner.get("messageInfo")), f"{kind}.messageInfo.note")
    tracking = shipping.get("trackingId")
    iso = {
        "carrier": (shipping.get("courierName"), f"{kind}.shippingInfo.courierName"),
        "tracking_number": (tracking[0] if isinstance(tracking, list) and tracking
                            else tracking, f"{kind}.shippingInfo.trackingId"),
        "shipped_on": (delivery.get("dateSent"), f"{kind}.deliveryInfo.dateSent"),
    }
    for name, (value, element) in iso.items():
        if value not in (None, "", []):
            values[name] = (value, element)
    values.update(_from_extension(inner, kind))
    method = delivery.get("sentVia") or delivery.get("deliveryMethod")
    item_id = delivery.get("itemId")
    shipment = _checked(values)
    shipment = replace(shipment, sent_via=_text(method, f"{kind}.deliveryInfo.sentVia", 50),
                       item_id=_text(item_id, f"{kind}.deliveryInfo.itemId", 200))
    return None if shipment.empty else shipment


def from_requester(inner: dict[str, Any]) -> Shipment | None:
    """The parcel of a requester's ShippedReturn (`inner`: the requestingAgencyMessage's
    content): hubExtensions.shipping, else the note's shipping line; None if neither."""
    kind = "requestingAgencyMessage"
    values = _from_note(_note(inner), f"{kind}.note")
    values.update(_from_extension(inner, kind))
    shipment = _checked(values)
    return None if shipment.empty else shipment


def beyond_iso(inner: dict[str, Any]) -> bool:
    """Whether a message gives parcel data outside ISO 18626's elements (hubExtensions or
    the note's shipping line): then the relay must carry it in both forms; what the
    standard's elements carry already travels both transports as it is."""
    ext = inner.get(EXTENSIONS)
    if isinstance(ext, dict) and ext.get(SHIPPING):
        return True
    holders = (inner, inner.get("messageInfo"))
    return any(line.startswith(LINE_PREFIX) for h in holders for line in _note(h).splitlines())


def with_shipment(inner: dict[str, Any], shipment: Shipment, note_key: str) -> None:
    """Write the parcel into a relayed message's content: hubExtensions.shipping, and the
    shipping line in its note (in `inner[note_key]`, a dict holding "note", or "note"
    itself for a requestingAgencyMessage), replacing a shipping line already there."""
    inner.setdefault(EXTENSIONS, {})[SHIPPING] = shipment.extension()
    holder = inner if note_key == "note" else inner.setdefault(note_key, {})
    note = holder.get("note") if isinstance(holder.get("note"), str) else ""
    kept = [line for line in (note or "").splitlines() if not line.startswith(LINE_PREFIX)]
    holder["note"] = "\n".join([*kept, shipment.line()])


# ---- reading -----------------------------------------------------------------------

_Found = dict[str, tuple[Any, str]]   # field -> (value as sent, element it came from)


def _table(value: Any, element: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ShippingError(element, "must be an object")
    return value


def _note(holder: Any) -> str:
    note = holder.get("note") if isinstance(holder, dict) else None
    return note if isinstance(note, str) else ""


def _from_extension(inner: dict[str, Any], kind: str) -> _Found:
    ext = _table(inner.get(EXTENSIONS), f"{kind}.{EXTENSIONS}")
    where = f"{kind}.{EXTENSIONS}.{SHIPPING}"
    shipping = _table(ext.get(SHIPPING), where)
    unknown = sorted(set(shipping) - set(_EXTENSION_KEYS))
    if unknown:
        raise ShippingError(f"{where}.{unknown[0]}", "unknown field (known: "
                            f"{', '.join(_EXTENSION_KEYS)})")
    return {_EXTENSION_KEYS[k]: (v, f"{where}.{k}") for k, v in shipping.items()
            if v is not None}


def _from_note(note: str, element: str) -> _Found:
    found: _Found = {}
    for line in note.splitlines():
        if not line.startswith(LINE_PREFIX):
            continue
        for part in line[len(LINE_PREFIX):].split(";"):
            if not part.strip():
                continue
            key, eq, value = part.partition("=")
            if not eq or key.strip() not in _LINE_KEYS:
                raise ShippingError(element, f"shipping line part {part.strip()!r}: want "
                                    f"key=value with a key of {', '.join(_LINE_KEYS)}")
            found[_LINE_KEYS[key.strip()]] = (value.strip(), f"{element} ({key.strip()})")
    return found


def _checked(found: _Found) -> Shipment:
    kw: dict[str, Any] = {}
    if "carrier" in found:
        kw["carrier"] = _text(*found["carrier"], MAX_CARRIER)
    if "tracking_number" in found:
        value, element = found["tracking_number"]
        text = _text(value, element, 64)
        if text is not None and not _TRACKING.fullmatch(text):
            raise ShippingError(element, f"{text!r} is not a tracking number (letters, "
                                "digits, blanks and . _ / -, at most 64)")
        kw["tracking_number"] = text
    if "shipped_on" in found:
        kw["shipped_on"] = _date(*found["shipped_on"])
    if "parcels" in found:
        value, element = found["parcels"]
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value.strip())
        if isinstance(value, bool) or not isinstance(value, int) \
                or not 1 <= value <= MAX_PARCELS:
            raise ShippingError(element, f"must be a whole number of parcels 1..{MAX_PARCELS}, "
                                f"not {value!r}")
        kw["parcels"] = value
    return Shipment(**kw)


def _text(value: Any, element: str, limit: int) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ShippingError(element, f"must be text, not {type(value).__name__}")
    text = " ".join(value.split())
    if not text:
        return None
    if len(text) > limit:
        raise ShippingError(element, f"at most {limit} characters, not {len(text)}")
    return text


def _date(value: Any, element: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        text = value.strip()
        try:
            return date.fromisoformat(text[:10]) if len(text) > 10 and text[10] == "T" \
                else date.fromisoformat(text)
        except ValueError:
            pass
    raise ShippingError(element, f"{value!r} is not a date (YYYY-MM-DD, or an ISO 8601 "
                        "date and time)")
