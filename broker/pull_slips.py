"""The loans a supplier must pull from its shelves: its pull list for a day (issue 19).

A loan is to be pulled once the hub has forwarded it to the supplier and until the
supplier answers it: the transaction waits on that supplier (ExpectToSupply, or
WillSupply after it said yes; a RequestReceived keeps ExpectToSupply), it is a book
loan (service kind BookLoan) or a CopyOrLoan the supplier may answer with a loan, it is
not closed (Loaned, Unfilled, Cancelled and the rest have left the list), and the
requester has not asked to cancel it (a book pulled for a cancelled request goes back
to the shelf). The day counts the loans forwarded before its end (consortium-local):
a list printed in the morning holds everything still waiting.

What a slip shows comes from the request as received: title, author, edition, the
ISBN, the call number the requester found in the supplier's catalogue (supplierInfo
callNumber, that supplier's first), and where to ship: the request's
requestedDeliveryInfo physicalAddress when it gave one (the lowest sortOrder), else the
requester's address on file (broker/agency_addresses.py). Patrons' names never go on a
slip: the book travels library to library.

broker/pull_slip_pdf.py draws the PDF, broker/pull_slip_mail.py mails it daily.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import date, datetime, time, timedelta
from enum import StrEnum
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from broker.agency_addresses import PostalAddress, of_agencies
from broker.states import AWAITING_SUPPLIER
from infra.database import Connection
from schemas.iso18626_codes import ServiceKind, ServiceType

__all__ = ["AddressFrom", "Loan", "NotASupplier", "PullList", "day_end", "pull_list",
           "suppliers_to_pull"]

_AWAITING = ", ".join(f"'{s}'" for s in sorted(AWAITING_SUPPLIER))


def _to_pull(end: str) -> str:
    """The rule of the module docstring, written once; `end`: the end of the day."""
    return f"""
FROM ill_transaction t
JOIN rota_entry e ON e.transaction_id = t.id AND e.position = t.rota_position
JOIN agency r ON r.symbol = t.requester
WHERE t.closed_at IS NULL AND t.state IN ({_AWAITING}) AND t.cancel_requested_at IS NULL
  AND (t.service_kind = '{ServiceKind.BOOK_LOAN}'
       OR t.service_type = '{ServiceType.COPY_OR_LOAN}')
  AND t.returnable IS NOT false
  AND e.forwarded_at < {end}"""


PULL_LOANS = f"""
SELECT t.id, t.request_id, t.requester, r.name AS requester_name, t.service_type, t.state,
       t.request, t.due_at, e.forwarded_at
{_to_pull("$2")} AND t.supplier = $1
ORDER BY e.forwarded_at, t.id"""

# Every enabled supplier with a loan to pull (the daily mail's round).
PULL_SUPPLIERS = f"""
SELECT DISTINCT t.supplier
{_to_pull("$1")} AND t.supplier IN (SELECT symbol FROM agency WHERE enabled)
ORDER BY t.supplier"""

SUPPLIER = "SELECT symbol, name, email, roles, enabled FROM agency WHERE symbol = $1"


class NotASupplier(LookupError):
    """No such agency, or one that supplies nothing."""


class AddressFrom(StrEnum):
    """Where a loan's shipping address came from."""

    REQUEST = "request"   # requestedDeliveryInfo physicalAddress
    ON_FILE = "on file"   # the requester's agency_address
    NONE = "none"         # neither: the label says so


@dataclass(frozen=True)
class Loan:
    """One loan to pull, with what its slip and label print."""

    transaction_id: str
    request_id: str
    requester: str
    requester_name: str
    title: str
    author: str | None
    edition: str | None
    call_number: str | None
    isbn: str | None
    service_type: str
    state: str
    forwarded_at: datetime
    due_at: datetime | None
    deliver_to: PostalAddress | None
    address_from: AddressFrom


@dataclass(frozen=True)
class PullList:
    """A supplier's loans to pull on a day, in shelf order (call number, then title)."""

    supplier: str
    supplier_name: str
    supplier_email: str | None
    ship_from: PostalAddress | None  # the supplier's address on file
    day: date
    generated_at: datetime
    loans: tuple[Loan, ...]


def day_end(day: date, zone: ZoneInfo) -> datetime:
    """The first instant after `day`, consortium-local."""
    return datetime.combine(day + timedelta(days=1), time(0), tzinfo=zone)


async def suppliers_to_pull(conn: Connection, day: date, zone: ZoneInfo) -> list[str]:
    """The enabled suppliers with a loan to pull on `day`."""
    return [r["supplier"] for r in await conn.fetch(PULL_SUPPLIERS, day_end(day, zone))]


async def pull_list(conn: Connection, supplier: str, day: date, zone: ZoneInfo,
                    now: datetime) -> PullList:
    """The loans `supplier` must pull on `day` (see the module docstring)."""
    who = await conn.fetchrow(SUPPLIER, supplier)
    if who is None:
        raise NotASupplier(f"no agency {supplier}")
    if "supplier" not in who["roles"]:
        raise NotASupplier(f"{supplier} is not a supplier (roles {','.join(who['roles'])})")
    rows = await conn.fetch(PULL_LOANS, supplier, day_end(day, zone))
    on_file = await of_agencies(conn, [supplier, *{r["requester"] for r in rows}])
    loans = [_loan(r, supplier, on_file.get(r["requester"])) for r in rows]
    loans.sort(key=lambda x: (x.call_number is None, x.call_number or "", x.title,
                              x.transaction_id))
    return PullList(supplier=supplier, supplier_name=who["name"], supplier_email=who["email"],
                    ship_from=on_file.get(supplier), day=day, generated_at=now,
                    loans=tuple(loans))


def _loan(row: asyncpg.Record, supplier: str, on_file: PostalAddress | None) -> Loan:
    request: dict[str, Any] = json.loads(row["request"]).get("request", {})
    bib = _object(request.get("bibliographicInfo"))
    asked = _delivery_address(request)
    contact = _text(_object(request.get("requestingAgencyInfo")), "contactName")
    if asked is not None:
        # The request says where; who takes it and their phone come from the file.
        deliver_to: PostalAddress | None = replace(
            asked, recipient=contact or (on_file.recipient if on_file else None),
            phone=on_file.phone if on_file else None)
        source = AddressFrom.REQUEST
    elif on_file is not None:
        deliver_to, source = on_file, AddressFrom.ON_FILE
    else:
        deliver_to, source = None, AddressFrom.NONE
    return Loan(
        transaction_id=row["id"], request_id=row["request_id"], requester=row["requester"],
        requester_name=row["requester_name"], title=_text(bib, "title") or "(无题名 no title)",
        author=_text(bib, "author"), edition=_text(bib, "edition"),
        call_number=_call_number(request, supplier), isbn=_isbn(bib),
        service_type=row["service_type"], state=row["state"],
        forwarded_at=row["forwarded_at"], due_at=row["due_at"], deliver_to=deliver_to,
        address_from=source)


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _objects(value: Any) -> list[dict[str, Any]]:
    """A repeatable element: an array, or (from a lenient sender) one object."""
    items = value if isinstance(value, list) else [value]
    return [x for x in items if isinstance(x, dict)]


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    return value.strip() or None if isinstance(value, str) else None


def _isbn(bib: dict[str, Any]) -> str | None:
    for item in _objects(bib.get("bibliographicItemId")):
        if (_text(item, "bibliographicItemIdentifierCode") or "").upper() == "ISBN":
            return _text(item, "bibliographicItemIdentifier")
    return None


def _call_number(request: dict[str, Any], supplier: str) -> str | None:
    """The supplier's own entry's call number first, then any the requester gave."""
    scheme, _, value = supplier.partition(":")
    entries = _objects(request.get("supplierInfo"))
    for entry in entries:
        code = _object(entry.get("supplierCode"))
        if code.get("agencyIdType") == scheme and code.get("agencyIdValue") == value:
            if found := _text(entry, "callNumber"):
                return found
    return next((n for e in entries if (n := _text(e, "callNumber"))), None)


def _delivery_address(request: dict[str, Any]) -> PostalAddress | None:
    """The first physicalAddress of requestedDeliveryInfo, by sortOrder."""
    def order(info: dict[str, Any]) -> int:
        try:
            return int(info.get("sortOrder", 0))
        except (TypeError, ValueError):
            return 0

    for info in sorted(_objects(request.get("requestedDeliveryInfo")), key=order):
        physical = _object(_object(info.get("address")).get("physicalAddress"))
        if physical and (address := PostalAddress.from_iso(physical)) is not None:
            return address
    return None
