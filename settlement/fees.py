"""Fee schedules per supplier and service kind, and the quote made when dispatch picks a supplier.

A fee file (TOML, documented with an example in docs/fees.example.toml) lists
`[[fee]]` entries, each for one supplier, one service kind and one date range
(`effective_from` .. `effective_to`, consortium-local dates, both inclusive;
no `effective_to` = open-ended). What an entry charges depends on its kind:

    DocumentDelivery  base + per_page * pages        (pages unknown: assumed_pages, default 10)
    BookLoan          service_fee + courier_fee (+ logistics, below)
    PayPerView        per_article
    EBookLoan         per_loan
    ProxySearch       flat + per_hour * hours        (hours unknown: assumed_hours, default 1)

Amounts are decimal strings in the entry's currency ("0.30"); the hub keeps integer
minor units (fen) and never passes an amount through a float. Per-hour fees are
rounded half up to the minor unit.

Logistics (issue 19): a BookLoan entry, or a DocumentDelivery entry for a CopyOrLoan
supplied as a loan, may also price the outbound and return legs by zone
(`logistics`, `return_leg`: settlement/fee_logistics.py); its quote then has parts
(`quote_parts` -> Quote: service, outbound, return, total). An unknown zone is priced
as national, unknown items as 1; `quote` stays the total.

Loading is all or nothing: every problem is an error naming the entry (fee[N],
counted from 1 in file order, with its supplier and kind) and the field, and
nothing is stored unless the whole file is valid. A load replaces the active
schedules of every supplier the file names (all of its kinds); earlier rows are
kept, marked superseded, for the record. Two entries of one supplier and kind may
not overlap in time; a gap means "no schedule" on those days.

Which fee is charged (ARCHITECTURE §3.4 rule 7): the quote is computed and frozen
on the transaction when dispatch picks the supplier (`quote`, or `quotes` for a
whole rota at once); a supplier whose quote is above the request's
`billingInfo.maximumCosts` is not used (`max_cost_problem`). The fee charged is the
supplier's `deliveryCosts` if it sent one, otherwise the quote (`fee_to_charge`);
`settlement.ledger.post_charge` refuses a fee above the quote.
"""

from __future__ import annotations

import datetime
import itertools
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg

from infra.database import Connection
from infra.locks import Lock, transaction_lock
from schemas.money import DEFAULT_CURRENCY, Money
from schemas.rulefile import (
    SERVICE_KINDS,
    RuleFileError,
    check_date_range,
    check_keys,
    is_int,
    optional_text,
    parse_amount,
    parse_choice,
    parse_currency,
    parse_date,
    parse_decimal,
    parse_field,
    parse_toml,
    tables,
    unknown_key,
)
from schemas.symbols import split_symbol
from schemas.zones import Zone, zone_between
from settlement.claim_terms import CLAIM_FIELDS, CLAIM_KIND, parse_claim_terms
from settlement.fee_logistics import (
    LOGISTICS_KEYS,
    LOGISTICS_KINDS,
    LegPrices,
    Quote,
    parse_logistics,
)

DEFAULT_ASSUMED_PAGES = 10
DEFAULT_ASSUMED_HOURS = Decimal(1)

_TOP_KEYS = ("description", "currency", "fee")
_COMMON_KEYS = ("supplier", "service_kind", "effective_from", "effective_to", "currency", "note")
KIND_FIELDS: dict[str, tuple[str, ...]] = {
    "DocumentDelivery": ("base", "per_page", "assumed_pages"),
    "BookLoan": ("service_fee", "courier_fee"),
    "PayPerView": ("per_article",),
    "EBookLoan": ("per_loan",),
    "ProxySearch": ("flat", "per_hour", "assumed_hours"),
}
# Of each kind's amount fields at least one must be given.
_REQUIRED_ONE_OF: dict[str, tuple[str, ...]] = {
    "DocumentDelivery": ("base", "per_page"),
    "BookLoan": ("service_fee", "courier_fee"),
    "PayPerView": ("per_article",),
    "EBookLoan": ("per_loan",),
    "ProxySearch": ("flat", "per_hour"),
}


class FeeError(ValueError):
    """A fee file that cannot be loaded; the message names the entry and the field."""


@dataclass(frozen=True)
class FeeTerms:
    """One schedule entry, in minor units."""

    entry: int
    supplier: str
    service_kind: str
    currency: str
    effective_from: datetime.date
    effective_to: datetime.date | None
    fixed_minor: int = 0
    per_page_minor: int = 0
    per_hour_minor: int = 0
    assumed_pages: int | None = None
    assumed_hours: Decimal | None = None
    outbound: LegPrices | None = None      # logistics: None = shipping not priced
    return_leg: LegPrices | None = None
    terms: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def label(self) -> str:
        return f"fee[{self.entry}] ({self.supplier} {self.service_kind})"

    def applies_on(self, day: datetime.date) -> bool:
        return self.effective_from <= day and (self.effective_to is None
                                               or day <= self.effective_to)

    def quote(self, *, pages: int | None = None, hours: float | Decimal | None = None,
              zone: Zone | None = None, items: int | None = None,
              loan: bool | None = None) -> Money:
        """The fee for one request; unknown pages or hours use the entry's assumption.
        The total of `quote_parts` (an entry without logistics: its service fee)."""
        return self.quote_parts(pages=pages, hours=hours, zone=zone, items=items,
                                loan=loan).total

    def quote_parts(self, *, pages: int | None = None, hours: float | Decimal | None = None,
                    zone: Zone | None = None, items: int | None = None,
                    loan: bool | None = None) -> Quote:
        """The fee for one request in its parts. The legs are priced when the supply is
        shipped: `loan` (default: a BookLoan entry; pass True for a CopyOrLoan supplied
        as a loan) and the entry prices logistics. An unknown `zone` is priced as
        national, unknown `items` as 1."""
        service = Money(self._service_minor(pages, hours), self.currency)
        none = Money.zero(self.currency)
        shipped = self.service_kind == "BookLoan" if loan is None else loan
        if not shipped or self.outbound is None:
            return Quote(service, none, none)
        if items is not None and (not is_int(items) or items < 1):
            raise ValueError(f"items must be a whole number, 1 or more, got {items!r}")
        n = items if items is not None else 1
        where = zone if zone is not None else Zone.NATIONAL
        back = self.return_leg.price(where, n) if self.return_leg is not None else 0
        return Quote(service, Money(self.outbound.price(where, n), self.currency),
                     Money(back, self.currency), zone=where, items=n)

    def _service_minor(self, pages: int | None, hours: float | Decimal | None) -> int:
        total = self.fixed_minor
        if self.per_page_minor:
            if pages is not None and pages < 0:
                raise ValueError(f"pages must not be negative, got {pages}")
            n = pages if pages is not None else (self.assumed_pages or DEFAULT_ASSUMED_PAGES)
            total += self.per_page_minor * n
        if self.per_hour_minor:
            h = _hours(hours) if hours is not None else (self.assumed_hours
                                                         or DEFAULT_ASSUMED_HOURS)
            total += int((self.per_hour_minor * h).to_integral_value(ROUND_HALF_UP))
        return total


@dataclass(frozen=True)
class LoadReport:
    load_id: int
    entries: int
    suppliers: tuple[str, ...]
    superseded: int          # active schedules of those suppliers that this load replaced

    def lines(self) -> list[str]:
        return [f"fee load {self.load_id}: {self.entries} schedule entr"
                f"{'y' if self.entries == 1 else 'ies'} for {len(self.suppliers)} supplier"
                f"{'' if len(self.suppliers) == 1 else 's'} "
                f"({self.superseded} earlier entr{'y' if self.superseded == 1 else 'ies'} "
                "replaced)"]


# --------------------------------------------------------------------------
# Parsing (pure)
# --------------------------------------------------------------------------

def parse_fees(text: str) -> list[FeeTerms]:
    """Validate a fee file; FeeError names the entry and field of the first problem."""
    try:
        data = parse_toml(text)
        check_keys(data, _TOP_KEYS, "top level")
        optional_text(data, "description", "")
        default_currency = parse_field("", "currency", parse_currency,
                                       data.get("currency", DEFAULT_CURRENCY))
        if data.get("fee") in (None, []):
            raise FeeError("no [[fee]] entries")
        entries = [_parse_entry(i, e, default_currency) for i, e in tables(data, "fee")]
    except RuleFileError as exc:
        raise FeeError(str(exc)) from exc
    _check_overlaps(entries)
    return entries


def _parse_entry(i: int, raw: Mapping[str, Any], default_currency: str) -> FeeTerms:
    supplier, kind = _supplier_and_kind(i, raw)
    where = f"fee[{i}] ({supplier} {kind})"
    ships = kind in LOGISTICS_KINDS
    allowed = (*_COMMON_KEYS, *KIND_FIELDS[kind], *(LOGISTICS_KEYS if ships else ()))
    if kind == CLAIM_KIND:  # loss and damage claims: settlement/claim_terms.py
        allowed = (*allowed, *CLAIM_FIELDS)
    for key in raw:
        if key in LOGISTICS_KEYS and not ships:
            raise FeeError(f"{where}: {key}: nothing is shipped for {kind}; logistics prices "
                           "BookLoan, and DocumentDelivery for a CopyOrLoan supplied as a loan")
        if key not in allowed:
            others = [k for k, fields in KIND_FIELDS.items() if key in fields]
            if others:
                raise FeeError(f"{where}: {key}: is a field of {', '.join(others)}, not of "
                               f"{kind} (fields of {kind}: {', '.join(KIND_FIELDS[kind])})")
            raise FeeError(unknown_key(where, key, allowed))
    currency = parse_field(where, "currency", parse_currency, raw.get("currency", default_currency))
    if "effective_from" not in raw:
        raise FeeError(f"{where}: effective_from: is required (the first day it applies, "
                       "YYYY-MM-DD)")
    start = parse_field(where, "effective_from", parse_date, raw["effective_from"])
    end = (parse_field(where, "effective_to", parse_date, raw["effective_to"])
           if "effective_to" in raw else None)
    check_date_range(start, end, where, ("effective_from", "effective_to"))
    note = optional_text(raw, "note", where)
    outbound, return_leg = parse_logistics(raw, currency, where)
    # A loan priced by its shipping alone (no service fee) is a whole BookLoan entry.
    amounts = _amounts(raw, kind, currency, where,
                       enough=kind == "BookLoan" and outbound is not None)
    assumed_pages, assumed_hours = _assumptions(raw, where)

    def minor(key: str) -> int:
        return amounts[key].minor if key in amounts else 0

    fixed = {"DocumentDelivery": minor("base"),
             "BookLoan": minor("service_fee") + minor("courier_fee"),
             "PayPerView": minor("per_article"), "EBookLoan": minor("per_loan"),
             "ProxySearch": minor("flat")}[kind]
    terms: dict[str, Any] = {"supplier": supplier, "service_kind": kind, "currency": currency,
                             "effective_from": start.isoformat()}
    if end is not None:
        terms["effective_to"] = end.isoformat()
    terms.update({k: v.amount_text() for k, v in amounts.items()})
    if assumed_pages is not None:
        terms["assumed_pages"] = assumed_pages
    if assumed_hours is not None:
        terms["assumed_hours"] = str(assumed_hours)
    if outbound is not None:
        terms["logistics"] = outbound.to_terms(currency)
        if return_leg is not None:
            terms["return_leg"] = (True if return_leg == outbound
                                   else return_leg.to_terms(currency))
    terms.update(parse_claim_terms(raw, currency, where))
    if note:
        terms["note"] = note
    return FeeTerms(entry=i, supplier=supplier, service_kind=kind, currency=currency,
                    effective_from=start, effective_to=end, fixed_minor=fixed,
                    per_page_minor=minor("per_page"), per_hour_minor=minor("per_hour"),
                    assumed_pages=assumed_pages, assumed_hours=assumed_hours,
                    outbound=outbound, return_leg=return_leg, terms=terms)


def _supplier_and_kind(i: int, raw: Mapping[str, Any]) -> tuple[str, str]:
    """An entry's supplier and service kind, which name it in every later message."""
    supplier = raw.get("supplier")
    if supplier is None:
        raise FeeError(f"fee[{i}]: supplier: is required (the supplying agency's symbol)")
    try:
        split_symbol(supplier)
    except ValueError as exc:
        raise FeeError(f"fee[{i}]: supplier: {supplier!r} is not an agency symbol: "
                       f"{exc}") from exc
    kind = raw.get("service_kind")
    if kind is None:
        raise FeeError(f"fee[{i}] ({supplier}): service_kind: is required "
                       f"(one of {', '.join(SERVICE_KINDS)})")
    return supplier, parse_field(f"fee[{i}] ({supplier})", "service_kind", parse_choice, kind,
                                 SERVICE_KINDS)


def _amounts(raw: Mapping[str, Any], kind: str, currency: str, where: str, *,
             enough: bool = False) -> dict[str, Money]:
    """The amount fields of an entry's kind that it gives (at least one of those required,
    unless the entry is `enough` without: a loan priced by its logistics)."""
    need = _REQUIRED_ONE_OF[kind]
    if not enough and not any(k in raw for k in need):
        hint = " (or price the courier by zone with logistics)" if kind == "BookLoan" else ""
        raise FeeError(f"{where}: {need[0]}: is required" if len(need) == 1 else
                       f"{where}: {' / '.join(need)}: give at least one of them{hint}")
    return {key: parse_field(where, key, parse_amount, raw[key], currency)
            for key in KIND_FIELDS[kind] if key in raw and not key.startswith("assumed_")}


def _assumptions(raw: Mapping[str, Any], where: str) -> tuple[int | None, Decimal | None]:
    """assumed_pages and assumed_hours: what a quote uses when the request does not say."""
    assumed_pages = assumed_hours = None
    if "assumed_pages" in raw:
        n = raw["assumed_pages"]
        if not is_int(n) or n < 1:
            raise FeeError(f"{where}: assumed_pages: {n!r} must be a whole number of pages, "
                           "1 or more")
        assumed_pages = n
    if "assumed_hours" in raw:
        assumed_hours = parse_field(where, "assumed_hours", _hours, raw["assumed_hours"])
        if assumed_hours <= 0:
            raise FeeError(f"{where}: assumed_hours: must be more than 0")
    return assumed_pages, assumed_hours


def _hours(value: Any) -> Decimal:
    h = parse_decimal(value, "is not a number of hours")
    if not h.is_finite() or h < 0:
        raise ValueError(f"{value!r} is not a number of hours (0 or more)")
    return h


def _check_overlaps(entries: Sequence[FeeTerms]) -> None:
    by_key: dict[tuple[str, str], list[FeeTerms]] = {}
    for e in entries:
        by_key.setdefault((e.supplier, e.service_kind), []).append(e)
    for same in by_key.values():
        same.sort(key=lambda e: e.effective_from)
        for prev, nxt in itertools.pairwise(same):
            if prev.effective_to is None or nxt.effective_from <= prev.effective_to:
                first, second = sorted((prev, nxt), key=lambda e: e.entry)
                span = (f"{prev.effective_from} .. "
                        f"{prev.effective_to or 'open-ended'}")
                raise FeeError(f"{second.label}: effective_from: its dates overlap "
                               f"{first.label} ({span} and {nxt.effective_from} .. "
                               f"{nxt.effective_to or 'open-ended'}); one supplier and kind "
                               "may have only one fee on any day")


# --------------------------------------------------------------------------
# Storage and quotes
# --------------------------------------------------------------------------

async def load_fees(conn: Connection, text: str, *,
                    file_name: str | None = None) -> LoadReport:
    """Validate and store a fee file, all or nothing; raises FeeError naming entry and field."""
    entries = parse_fees(text)
    suppliers = sorted({e.supplier for e in entries})
    rows = await conn.fetch("SELECT symbol, 'supplier' = ANY(roles) AS supplies FROM agency "
                            "WHERE symbol = ANY($1::text[])", suppliers)
    known = {r["symbol"]: r["supplies"] for r in rows}
    for e in entries:
        if e.supplier not in known:
            raise FeeError(f"{e.label}: supplier: no agency {e.supplier!r} is registered "
                           "(add it with `run.py agency add` first)")
        if not known[e.supplier]:
            raise FeeError(f"{e.label}: supplier: agency {e.supplier!r} does not have the "
                           "supplier role")
    async with conn.transaction():
        await transaction_lock(conn, Lock.FEES)
        load_id = await conn.fetchval(
            "INSERT INTO fee_load (file_name, source, entries) VALUES ($1, $2, $3) RETURNING id",
            file_name, text, len(entries))
        superseded = await conn.fetchval(
            """WITH s AS (UPDATE fee_schedule SET superseded_by = $1
                          WHERE supplier = ANY($2::text[]) AND superseded_by IS NULL
                          RETURNING 1)
               SELECT count(*) FROM s""", load_id, suppliers)
        await conn.executemany(
            """INSERT INTO fee_schedule (load_id, entry, supplier, service_kind, currency,
                   effective_from, effective_to, fixed_minor, per_page_minor, per_hour_minor,
                   assumed_pages, assumed_hours, terms)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13::jsonb)""",
            [(load_id, e.entry, e.supplier, e.service_kind, e.currency, e.effective_from,
              e.effective_to, e.fixed_minor, e.per_page_minor, e.per_hour_minor,
              e.assumed_pages, e.assumed_hours, _json(e.terms)) for e in entries])
        await conn.executemany(_INSERT_LEG, [
            (load_id, e.entry, leg, p.city_minor, p.province_minor, p.national_minor,
             p.per_extra_item_minor)
            for e in entries
            for leg, p in (("outbound", e.outbound), ("return", e.return_leg)) if p is not None])
    return LoadReport(load_id=load_id, entries=len(entries), suppliers=tuple(suppliers),
                      superseded=superseded)


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


# A leg of the entry just stored by this load ($1), found by its place in the file ($2).
_INSERT_LEG = """INSERT INTO fee_logistics (schedule_id, leg, city_minor, province_minor,
                     national_minor, per_extra_item_minor)
                 SELECT id, $3, $4, $5, $6, $7 FROM fee_schedule
                 WHERE load_id = $1 AND entry = $2"""

# Which entry applies on a day is the rule of fee_terms_in_force (migrations 0014, 0028),
# the one dispatch reads too.
_ACTIVE = """SELECT * FROM fee_terms_in_force($2, $3) WHERE supplier = ANY($1::text[])"""

_AGENCY_PLACES = "SELECT symbol, province, city FROM agency WHERE symbol = ANY($1::text[])"


def fee_terms(row: asyncpg.Record) -> FeeTerms:
    """The terms of a `fee_terms_in_force` row. A row without the leg columns (a query
    selecting the columns of migration 0014 only) prices no shipping: the old quote."""
    return FeeTerms(entry=row["entry"], supplier=row["supplier"],
                    service_kind=row["service_kind"], currency=row["currency"],
                    effective_from=row["effective_from"], effective_to=row["effective_to"],
                    fixed_minor=row["fixed_minor"], per_page_minor=row["per_page_minor"],
                    per_hour_minor=row["per_hour_minor"], assumed_pages=row["assumed_pages"],
                    assumed_hours=row["assumed_hours"], outbound=_leg_of(row, "out"),
                    return_leg=_leg_of(row, "ret"))


def _leg_of(row: asyncpg.Record, prefix: str) -> LegPrices | None:
    if row.get(f"{prefix}_city_minor") is None:
        return None
    return LegPrices(city_minor=row[f"{prefix}_city_minor"],
                     province_minor=row[f"{prefix}_province_minor"],
                     national_minor=row[f"{prefix}_national_minor"],
                     per_extra_item_minor=row[f"{prefix}_per_extra_item_minor"])


async def zone_of_agencies(conn: Connection, requester: str, supplier: str) -> Zone:
    """The zone between two registered agencies, from their provinces and cities
    (an unknown agency or location counts as unknown: national)."""
    places = {r["symbol"]: (r["province"], r["city"])
              for r in await conn.fetch(_AGENCY_PLACES, [requester, supplier])}
    return zone_between(*places.get(requester, (None, None)),
                        *places.get(supplier, (None, None)))


async def schedule(conn: Connection, supplier: str, service_kind: str,
                   on: datetime.date) -> FeeTerms | None:
    """The schedule entry that applies on a consortium-local date, if any."""
    row = await conn.fetchrow(_ACTIVE, [supplier], service_kind, on)
    return fee_terms(row) if row else None


async def quote(conn: Connection, supplier: str, service_kind: str, *,
                pages: int | None = None, hours: float | None = None,
                on: datetime.date, zone: Zone | None = None, items: int | None = None,
                loan: bool | None = None) -> Money | None:
    """The supplier's fee for one request on a consortium-local date; None = no schedule."""
    parts = await quote_parts(conn, supplier, service_kind, pages=pages, hours=hours, on=on,
                              zone=zone, items=items, loan=loan)
    return parts.total if parts else None


async def quote_parts(conn: Connection, supplier: str, service_kind: str, *,
                      pages: int | None = None, hours: float | None = None,
                      on: datetime.date, zone: Zone | None = None, items: int | None = None,
                      loan: bool | None = None) -> Quote | None:
    """`quote` in its parts (service, outbound, return); None = no schedule."""
    terms = await schedule(conn, supplier, service_kind, on)
    return terms.quote_parts(pages=pages, hours=hours, zone=zone, items=items,
                             loan=loan) if terms else None


async def quotes(conn: Connection, suppliers: Iterable[str], service_kind: str, *,
                 pages: int | None = None, hours: float | None = None,
                 on: datetime.date, zones: Mapping[str, Zone] | None = None,
                 items: int | None = None, loan: bool | None = None) -> dict[str, Money]:
    """`quote` for many suppliers in one query (a rota); suppliers without a schedule are
    absent. `zones`: each supplier's zone from the requester (absent: national)."""
    rows = await conn.fetch(_ACTIVE, list(suppliers), service_kind, on)
    return {r["supplier"]: fee_terms(r).quote(pages=pages, hours=hours,
                                              zone=(zones or {}).get(r["supplier"]),
                                              items=items, loan=loan) for r in rows}


# --------------------------------------------------------------------------
# The request side: pages, maximumCosts, the fee to charge
# --------------------------------------------------------------------------

_DASHES = str.maketrans({"–": "-", "—": "-", "−": "-", "～": "-", "~": "-", "－": "-",
                         "，": ",", "、": ",", ";": ",", "；": ","})
_RANGE = re.compile(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?")
_PREFIX = re.compile(r"^\s*(pp?\.?|pages?)\s*", re.IGNORECASE)


def count_pages(text: object) -> int | None:
    """Pages in an ISO 18626 `pagesRequested` value: "12-20" -> 9, "5" -> 1, "1-3,7" -> 4.

    Overlapping ranges count once; anything unreadable (roman numerals, "20-12") is None.
    """
    if not isinstance(text, str):
        return None
    cleaned = _PREFIX.sub("", text.translate(_DASHES)).strip().rstrip(",")
    if not cleaned:
        return None
    spans: list[tuple[int, int]] = []
    for part in cleaned.split(","):
        m = _RANGE.fullmatch(part)
        if not m:
            return None
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) else lo
        if lo < 1 or hi < lo:
            return None
        spans.append((lo, hi))
    spans.sort()
    total, end = 0, 0
    for lo, hi in spans:
        lo = max(lo, end + 1)
        if hi >= lo:
            total += hi - lo + 1
            end = hi
    return total


def pages_of(request_json: Mapping[str, Any]) -> int | None:
    """Pages asked for by an ISO 18626 request (the message, or its `request` part).

    `bibliographicInfo.pagesRequested` wins; otherwise `estimatedNoPages`; otherwise None.
    """
    req = request_json.get("request", request_json)
    info = req.get("bibliographicInfo") if isinstance(req, Mapping) else None
    if not isinstance(info, Mapping):
        return None
    pages = info.get("pagesRequested")
    if isinstance(pages, str):
        counted = count_pages(pages)
        if counted is not None:
            return counted
    estimated = info.get("estimatedNoPages")
    if isinstance(estimated, int) and not isinstance(estimated, bool):
        return estimated if estimated > 0 else None
    if isinstance(estimated, str) and estimated.strip().isdigit():
        n = int(estimated.strip())
        return n if n > 0 else None
    return None


def max_cost_problem(quote: Money | None, max_cost: Money | None) -> str | None:
    """Why a quote cannot be used under a request's maximumCosts; None if it can.

    No quote (no schedule) or no maximumCosts (no limit) is never a problem here;
    a quote in another currency than maximumCosts cannot be compared and is refused.
    """
    if quote is None or max_cost is None:
        return None
    if quote.currency != max_cost.currency:
        return (f"quote {quote} cannot be compared with maximumCosts {max_cost} "
                "(different currencies)")
    if quote.minor > max_cost.minor:
        return f"quote {quote} is above maximumCosts {max_cost}"
    return None


def fee_to_charge(delivery_costs: Money | None, quote: Money | None) -> Money | None:
    """The fee to post for a billable event: the supplier's deliveryCosts if it sent one,
    otherwise the frozen quote; None = nothing to charge (no schedule, no costs sent).

    A deliveryCosts above the quote is passed on as is, so that `post_charge` refuses
    and flags it rather than silently charging the quote.
    """
    return delivery_costs if delivery_costs is not None else quote


def logistics_to_charge(fee: Money | None, quote: Quote | None) -> Money | None:
    """The logistics part of a fee to post (`post_charge(..., logistics=)`): the frozen
    quote's logistics, never more than the fee. A supplier that charges less than the
    quote is taken to have cut its service fee first: the shipping was paid for."""
    if fee is None or quote is None or quote.logistics.minor == 0:
        return None
    if quote.logistics.currency != fee.currency:
        return None
    return Money(min(quote.logistics.minor, max(fee.minor, 0)), fee.currency)
