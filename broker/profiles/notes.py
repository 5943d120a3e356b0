"""Conventions that ILL systems write into ISO 18626 notes, read and written at the edge.

ISO 18626 has no element for several things systems need to say, so they say them in the
free-text note. The hub's model has one way to say each (the element where the standard
has one, else a plain word a person can read too), and each profile's adjustments
translate between that and the peer's convention:

- ReShare numbers every note it sends, `#seq:N#` at its end
  (mod-rs `ProtocolMessageBuildingService.buildNote`), and marks loan-condition steps
  with `#ReShare...#` specials (mod-rs `iso18626/NoteSpecials.groovy`).
- Alma (and ILLiad) staff answer a supplier's conditions with a note `ACCEPT` or
  `REJECT`; a supplier's Unfilled note starting `DUPLICATE` means the request is a
  duplicate (CrossLink `broker/shim/shim.go`).
- CrossLink writes what Alma cannot read from elements into the note: the shipping
  address (`#SHIP_TO#` ... `#ST_END#`), the return address (`#RETURN_TO#` ...
  `#RT_END#`), loan condition and cost (`Condition: `, `Cost: `), a URL (`URL: `) and an
  Unfilled forwarded as a notification (`Status: Unfilled`).

The hub's model for a requester's answer to loan conditions: a Notification whose note
starts with the word ACCEPT is an acceptance; a rejection is a Cancel (note `REJECT`),
which the hub relays to the supplier like any Cancel.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from broker.profiles.model import Changes, Work

SEQ = re.compile(r"#seq:([0-9]+)#")
LAST_SEQ = re.compile(r"#lastSeq:[0-9-]+#")
SHIP_TO, SHIP_TO_END = "#SHIP_TO#", "#ST_END#"
RETURN_TO, RETURN_TO_END = "#RETURN_TO#", "#RT_END#"
CONDITION_PREFIX, COST_PREFIX, URL_PREFIX = "Condition: ", "Cost: ", "URL: "
FIELD_SEPARATOR = ", "
ACCEPT, REJECT, DUPLICATE = "ACCEPT", "REJECT", "DUPLICATE"
RESHARE_AGREE = "#ReShareLoanConditionAgreeResponse#"
RESHARE_ADD_CONDITION = "#ReShareAddLoanCondition#"
RESHARE_AWAITING = "#ReShareSupplierAwaitingConditionConfirmation#"
RESHARE_ASSUMED = "#ReShareSupplierConditionsAssumedAgreed#"
AWAITING_TEXT = "Conditions pending approval, please respond ACCEPT or REJECT"
ASSUMED_TEXT = "Supplier assumes approval of conditions unless REJECT is sent"

_EDGE_NON_WORD = re.compile(r"^\W+|\W+$")
_COST = re.compile(r"Cost: ([0-9]+(?:\.[0-9]+)?) ([A-Za-z]{3})\b")
_CONDITION = re.compile(r"Condition: ([^,\n]+)")
_ACCEPTED = re.compile(rf"^{ACCEPT}(?:\s+|$)")
# Where each message type keeps its note.
_NOTE_AT: dict[str, str | None] = {"request": "serviceInfo",
                                   "supplyingAgencyMessage": "messageInfo",
                                   "requestingAgencyMessage": None}


def _holder(work: Work, create: bool = False) -> dict[str, Any] | None:
    if work.kind not in _NOTE_AT:
        return None
    parent = _NOTE_AT[work.kind]
    if parent is None:
        return work.inner
    return work.ensure(parent) if create else work.part(parent)


def note_of(work: Work) -> str | None:
    holder = _holder(work)
    note = (holder or {}).get("note")
    return note if isinstance(note, str) else None


def set_note(work: Work, note: str | None) -> None:
    """Write the message's note; None or blank removes it (ISO 18626: no note)."""
    holder = _holder(work, create=bool(note and note.strip()))
    if holder is None:
        return
    if note is None or not note.strip():
        holder.pop("note", None)
    else:
        holder["note"] = note


def _changed(work: Work, before: str | None, after: str | None, what: str) -> Changes:
    if after == before:
        return []
    set_note(work, after)
    return [f"{what}: note {_brief(before)} -> {_brief(after)}"]


def _brief(note: str | None) -> str:
    if note is None or not note.strip():
        return "(none)"
    return repr(note if len(note) <= 60 else note[:57] + "...")


# --------------------------------------------------------------------------
# Inbound
# --------------------------------------------------------------------------


def strip_seq(work: Work) -> Changes:
    """ReShare's `#seq:N#` (and `#lastSeq:N#`) out of the note; N kept on the side."""
    note = note_of(work)
    if note is None or "#" not in note:
        return []
    numbers = SEQ.findall(note)
    if numbers:
        work.note_seq = int(numbers[-1])
    stripped = LAST_SEQ.sub("", SEQ.sub("", note)).strip()
    return _changed(work, note, stripped or None, "ReShare order marker removed")


def reshare_specials(work: Work) -> Changes:
    """ReShare's loan-condition specials as the hub's model says them."""
    note = note_of(work)
    if note is None or "#ReShare" not in note:
        return []
    if work.kind == "requestingAgencyMessage" and note.lstrip().startswith(RESHARE_AGREE):
        rest = note.replace(RESHARE_AGREE, "").strip()
        return _changed(work, note, f"{ACCEPT} {rest}".strip(), "ReShare acceptance")
    if work.kind != "supplyingAgencyMessage":
        return []
    stripped = note.strip()
    if stripped == RESHARE_AWAITING:
        return _changed(work, note, AWAITING_TEXT, "ReShare awaiting conditions")
    if stripped == RESHARE_ASSUMED:
        return _changed(work, note, ASSUMED_TEXT, "ReShare conditions assumed agreed")
    if RESHARE_ADD_CONDITION in note:
        return _changed(work, note, note.replace(RESHARE_ADD_CONDITION, "").strip() or None,
                        "ReShare condition marker removed")
    return []


def accept_reject(work: Work) -> Changes:
    """A requester's Notification saying only ACCEPT or REJECT (any case): an acceptance
    of the supplier's conditions, or a rejection, which is a Cancel to the supplier."""
    if work.kind != "requestingAgencyMessage" or work.inner.get("action") != "Notification":
        return []
    note = note_of(work)
    if note is None:
        return []
    word = _EDGE_NON_WORD.sub("", LAST_SEQ.sub("", SEQ.sub("", note))).upper()
    if word == ACCEPT:
        return _changed(work, note, ACCEPT, "acceptance of loan conditions")
    if word == REJECT:
        work.inner["action"] = "Cancel"
        set_note(work, REJECT)
        return [f"rejection of loan conditions: action Notification -> Cancel, note "
                f"{_brief(note)} -> {REJECT!r}"]
    return []


def duplicate(work: Work) -> Changes:
    """An Unfilled whose note starts with DUPLICATE: reasonUnfilled Duplicate."""
    if work.kind != "supplyingAgencyMessage":
        return []
    status = (work.part("statusInfo") or {}).get("status")
    note = note_of(work)
    info = work.part("messageInfo")
    if status != "Unfilled" or note is None or info is None or \
            not note.lstrip().upper().startswith(DUPLICATE):
        return []
    before = info.get("reasonUnfilled")
    if before == "Duplicate":
        return []
    info["reasonUnfilled"] = "Duplicate"
    return [f"messageInfo.reasonUnfilled: {before!r} -> 'Duplicate' (note {_brief(note)})"]


def _block(note: str, begin: str, end: str) -> list[str] | None:
    start = note.find(begin)
    if start < 0:
        return None
    stop = note.find(end, start)
    body = note[start + len(begin):stop if stop >= 0 else len(note)]
    return [line.strip() for line in body.splitlines() if line.strip()]


def parse_address(lines: list[str]) -> tuple[str | None, dict[str, str]]:
    """A label as CrossLink writes it (`MarshalAddress`): [name,] line1, [line2,]
    `locality, region, postalCode`, [country]. Of the lines before the place line, one
    is line1; of two or more the first is the name (CrossLink writes one whenever it
    knows it), then line1 and line2. Returns (name, physicalAddress)."""
    place = next((i for i in range(len(lines) - 1, -1, -1) if ", " in lines[i]), None)
    before = lines if place is None else lines[:place]
    after = [] if place is None else lines[place + 1:]
    address: dict[str, str] = {}
    name = None
    if len(before) >= 2:  # CrossLink writes the name whenever it knows one
        name, address["line1"] = before[0], before[1]
        if len(before) > 2:
            address["line2"] = ", ".join(before[2:])
    elif before:
        address["line1"] = before[0]
    if place is not None:
        parts = lines[place].split(", ")
        if len(parts) >= 3:
            address["locality"], address["region"] = parts[0], parts[1]
            address["postalCode"] = ", ".join(parts[2:])
        elif any(ch.isdigit() for ch in parts[1]):
            address["locality"], address["postalCode"] = parts
        else:
            address["locality"], address["region"] = parts
    if after:
        address["country"] = after[0]
    return name, address


def _has_physical(value: Any) -> bool:
    return any(isinstance(v, dict) and isinstance(v.get("address"), dict)
               and "physicalAddress" in v["address"]
               for v in (value if isinstance(value, list) else [value]))


def address_blocks_in(work: Work) -> Changes:
    """`#SHIP_TO#`/`#RETURN_TO#` blocks also as elements, where the message has none.

    The note keeps the block (verbatim, for the people reading it); the element is what
    systems read. A request's block becomes requestedDeliveryInfo's physical address (its
    name requestingAgencyInfo's name, when that has none), a supplier message's becomes
    returnInfo."""
    note = note_of(work)
    if note is None or "#" not in note:
        return []
    if work.kind == "request" and not _has_physical(work.inner.get("requestedDeliveryInfo")):
        lines = _block(note, SHIP_TO, SHIP_TO_END)
        if lines:
            name, address = parse_address(lines)
            wanted = work.inner.get("requestedDeliveryInfo")
            rows = wanted if isinstance(wanted, list) else []
            work.inner["requestedDeliveryInfo"] = [
                *rows, {"address": {"physicalAddress": address}}]
            changes = [f"requestedDeliveryInfo: physical address from the note's {SHIP_TO} "
                       "block"]
            if name and not (work.part("requestingAgencyInfo") or {}).get("name"):
                work.ensure("requestingAgencyInfo")["name"] = name
                changes.append(f"requestingAgencyInfo.name from the note's {SHIP_TO} block")
            return changes
    if work.kind == "supplyingAgencyMessage" and "returnInfo" not in work.inner:
        lines = _block(note, RETURN_TO, RETURN_TO_END)
        if lines:
            name, address = parse_address(lines)
            work.inner["returnInfo"] = {**({"name": name} if name else {}),
                                        "physicalAddress": address}
            return [f"returnInfo: from the note's {RETURN_TO} block"]
    return []


def _costs(match: re.Match[str]) -> dict[str, str] | None:
    try:
        value = Decimal(match.group(1))
    except InvalidOperation:
        return None
    return {"currencyCode": match.group(2).upper(), "monetaryValue": format(value, "f")}


def condition_cost_in(work: Work) -> Changes:
    """`Condition: X` and `Cost: 12.50 USD` in a note also as elements, where absent."""
    note = note_of(work)
    if note is None:
        return []
    changes: Changes = []
    cost = _COST.search(note)
    if work.kind == "request" and cost:
        billing = work.ensure("billingInfo")
        if "maximumCosts" not in billing and (costs := _costs(cost)):
            billing["maximumCosts"] = costs
            changes.append(f"billingInfo.maximumCosts from the note's {COST_PREFIX.strip()}")
    if work.kind == "supplyingAgencyMessage":
        info = work.part("messageInfo")
        if cost and info is not None and "offeredCosts" not in info and (costs := _costs(cost)):
            info["offeredCosts"] = costs
            changes.append(f"messageInfo.offeredCosts from the note's {COST_PREFIX.strip()}")
        condition = _CONDITION.search(note)
        delivery = work.part("deliveryInfo")
        if condition and delivery is not None and not delivery.get("loanCondition"):
            delivery["loanCondition"] = condition.group(1).strip()
            changes.append("deliveryInfo.loanCondition from the note's "
                           f"{CONDITION_PREFIX.strip()}")
    return changes


# --------------------------------------------------------------------------
# Outbound
# --------------------------------------------------------------------------


def add_seq(work: Work) -> Changes:
    """`#seq:N#` at the end of the note, N counting this peer's messages of the
    transaction (mod-rs reads it with `(.*)#seq:(\\d+)#$` and keeps the last one)."""
    if work.seq is None or work.kind not in _NOTE_AT:
        return []
    if work.kind == "request" and work.part("serviceInfo") is None:
        return []  # a request without serviceInfo has nowhere to carry a note
    note = note_of(work) or ""
    marker = f"#seq:{work.seq}#"
    set_note(work, note + marker)
    work.seq_used = True
    return [f"note numbered {marker}"]


def accept_to_reshare(work: Work) -> Changes:
    """An acceptance (Notification, note ACCEPT ...) as ReShare reads one: its note starts
    with #ReShareLoanConditionAgreeResponse# (mod-rs
    ActionResponderISO18626NotificationService)."""
    if work.kind != "requestingAgencyMessage" or work.inner.get("action") != "Notification":
        return []
    note = note_of(work)
    if note is None or not _ACCEPTED.match(note.strip().upper()):
        return []
    rest = note.strip()[len(ACCEPT):].strip()
    return _changed(work, note, f"{RESHARE_AGREE}{' ' + rest if rest else ''}",
                    "acceptance as ReShare's special")


def _money(costs: Any) -> str | None:
    if not isinstance(costs, dict):
        return None
    value, code = costs.get("monetaryValue"), costs.get("currencyCode")
    if value in (None, ""):
        return None
    return f"{value} {code}" if code else str(value)


def _prepend(work: Work, parts: list[str], what: str) -> Changes:
    if not parts:
        return []
    note = note_of(work)
    joined = FIELD_SEPARATOR.join(parts)
    return _changed(work, note, f"{joined}{FIELD_SEPARATOR}{note}" if note else joined, what)


def url_out(work: Work) -> Changes:
    """A copy sent by URL: `URL: <itemId>` leads the note (Alma shows notes, not URLs)."""
    if work.kind != "supplyingAgencyMessage":
        return []
    delivery = work.part("deliveryInfo") or {}
    method = delivery.get("sentVia") or delivery.get("deliveryMethod")
    item = delivery.get("itemId") or delivery.get("URL")
    note = note_of(work) or ""
    if method != "URL" or not isinstance(item, str) or URL_PREFIX in note:
        return []
    return _prepend(work, [f"{URL_PREFIX}{item}"], "URL in the note")


def condition_cost_out(work: Work) -> Changes:
    """Loan condition and cost written into the note as `Condition: X, Cost: 12.50 USD`
    (a supplier message), a request's maximum cost as a `Cost:` line."""
    note = note_of(work) or ""
    if work.kind == "request":
        maximum = _money((work.part("billingInfo") or {}).get("maximumCosts"))
        if maximum is None or COST_PREFIX in note or work.part("serviceInfo") is None:
            return []
        line = f"{COST_PREFIX}{maximum}"
        return _changed(work, note or None, f"{note}\n{line}" if note else line,
                        "maximum cost in the note")
    if work.kind != "supplyingAgencyMessage":
        return []
    parts: list[str] = []
    condition = (work.part("deliveryInfo") or {}).get("loanCondition")
    if isinstance(condition, str) and condition and CONDITION_PREFIX not in note:
        parts.append(f"{CONDITION_PREFIX}{condition}")
    offered = _money((work.part("messageInfo") or {}).get("offeredCosts"))
    if offered and COST_PREFIX not in note:
        parts.append(f"{COST_PREFIX}{offered}")
    return _prepend(work, parts, "loan condition and cost in the note")


def address_label(name: str | None, address: dict[str, Any]) -> list[str]:
    """An address as label lines, the layout `parse_address` reads back."""
    lines = [x for x in (name, address.get("line1"), address.get("line2"))
             if isinstance(x, str) and x]
    place = [x for x in (address.get("locality"), address.get("region"),
                         address.get("postalCode")) if isinstance(x, str) and x]
    if place:
        lines.append(", ".join(place))
    if isinstance(address.get("country"), str) and address["country"]:
        lines.append(address["country"])
    return lines


def _append_block(work: Work, begin: str, end: str, lines: list[str], what: str) -> Changes:
    note = note_of(work)
    block = "\n".join([begin, *lines, end]) + "\n"
    return _changed(work, note, f"{note}\n{block}" if note else block, what)


def address_blocks_out(work: Work) -> Changes:
    """A request's shipping address as a `#SHIP_TO#` block in its note; a Loaned
    message's return address (returnInfo) as a `#RETURN_TO#` block."""
    note = note_of(work) or ""
    if work.kind == "request" and SHIP_TO not in note and work.part("serviceInfo") is not None:
        for wanted in work.inner.get("requestedDeliveryInfo") or []:
            physical = ((wanted or {}).get("address") or {}).get("physicalAddress") \
                if isinstance(wanted, dict) else None
            if isinstance(physical, dict):
                name = (work.part("requestingAgencyInfo") or {}).get("name")
                return _append_block(work, SHIP_TO, SHIP_TO_END,
                                     address_label(name if isinstance(name, str) else None,
                                                   physical), "shipping address in the note")
        return []
    if work.kind != "supplyingAgencyMessage" or RETURN_TO in note or \
            (work.part("statusInfo") or {}).get("status") != "Loaned":
        return []
    returning = work.part("returnInfo")
    physical = (returning or {}).get("physicalAddress")
    if not isinstance(physical, dict):
        return []
    name = (returning or {}).get("name")
    return _append_block(work, RETURN_TO, RETURN_TO_END,
                         address_label(name if isinstance(name, str) else None, physical),
                         "return address in the note")


def unfilled_out(work: Work) -> Changes:
    """An Unfilled sent as a Notification (the rota moves on) says so in its note."""
    if work.kind != "supplyingAgencyMessage":
        return []
    info = work.part("messageInfo") or {}
    if (work.part("statusInfo") or {}).get("status") != "Unfilled" or \
            info.get("reasonForMessage") != "Notification":
        return []
    parts = ["Status: Unfilled"]
    if isinstance(info.get("reasonUnfilled"), str) and info["reasonUnfilled"]:
        parts.append(f"Reason: {info['reasonUnfilled']}")
    note = note_of(work)
    joined = FIELD_SEPARATOR.join(parts)
    return _changed(work, note, f"{note}{FIELD_SEPARATOR}{joined}" if note else joined,
                    "Unfilled in the note")
