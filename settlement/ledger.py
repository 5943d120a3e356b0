"""The ledger: double-entry, integer minor units, append-only (ARCHITECTURE §3.4 rule 7, §4).

Billable events. A posting is made for one ILL transaction and one billable event,
and is keyed by (transaction id, event): a redelivered message, a repeated status
or a second hub process posting the same key posts nothing and gets the first
posting back. The events are the supplier statuses that deliver:

    CopyCompleted   DocumentDelivery, PayPerView (the article delivered), ProxySearch
                    (the search report delivered), and a CopyOrLoan supplied as a copy
    Loaned          BookLoan, EBookLoan (access to the e-book granted), and a
                    CopyOrLoan supplied as a loan; a later Loaned (the answer to a
                    Renew) has the same key and so is never charged again

Nothing else costs anything: RequestReceived, ExpectToSupply, WillSupply,
RetryPossible, Unfilled, renewals, returns and overdue notices post nothing, and a
cancellation before the billable event costs nothing (`reverse` finds no charge
and returns None). A cancellation or refund after it is a reversal: a new posting
with the original's entries negated, whose subsidy goes back to the budgets it
came from. Nothing in the ledger is ever updated or deleted (the database refuses
it); a correction is a reversal plus a new charge under a new event key.

Accounts and signs. Every entry belongs to an owner (an agency symbol, or CENTRE
for the centre's own account) and one account; a positive amount is owed to the
owner by the centre, a negative amount is owed by the owner to the centre (the
centre clears everything: each library settles one net amount with it). A charge
of fee F with subsidy S posts

    supplier   receivable       +F   earned as supplier
    requester  payable          -F   owed as requester for the service
    requester  subsidy          +S   paid by the centre on the requester's behalf
    CENTRE     subsidy_expense  -S   the centre's subsidy outlay

so the requester's net is -(F - S) = minus the patron share P, which the requesting
library collects from its reader. Zero amounts are left out (an unsubsidised charge
has two entries; a zero fee none). The entries of every posting sum to zero (a
posting that would not is refused before writing, LedgerError, and `check` checks it),
hence an agency's balance is its net position against the centre and all agencies'
positions sum to minus the centre's.

The fee posted is the supplier's deliveryCosts if it sent one, else the frozen
quote (settlement.fees.fee_to_charge). How much of it is logistics (the shipping
legs of a loan, settlement/fee_logistics.py) is posted with it (`logistics`, default
0; settlement.fees.logistics_to_charge): subsidy rules with `part = "logistics"` work
on that part alone, and it always lies between 0 and the fee (`check`).

A fee above the quote (or above the request's maximumCosts) is refused with
`ChargeAboveQuote` / `ChargeAboveMaxCost` (`error_value` is ready for an ISO 18626
UnrecognisedDataValue answer) and flagged: one flag (infra/flags.py) whose kind is
the refusal's `flag_kind` and whose facts are the charge's, with its event
`flag.<kind>`. The flag is written on the caller's
connection outside post_charge's own savepoint; a caller that rolls its work back on
refusal (the intake does) should call `record_flag(conn, exc)` afterwards so the flag
stays. Either way a refused charge is flagged once (keyed by transaction, event and fee).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from infra.database import Connection, fetch_one
from infra.flags import FlagKind, raise_flag
from schemas.money import Money
from settlement.calendar import DEFAULT_TZ, local_date
from settlement.subsidy import Grant, give_back, grant, rules_version

BILLABLE_STATUSES: frozenset[str] = frozenset({"CopyCompleted", "Loaned"})
REVERSAL_SUFFIX = "/reversal"
ACCOUNTS = ("receivable", "payable", "subsidy", "subsidy_expense")
# The owner of the centre's own accounts; not an agency symbol (those always have a ':').
CENTRE = "CENTRE"


def billable_event(status: str) -> str | None:
    """The ledger event for a supplier status, or None if the status costs nothing."""
    return status if status in BILLABLE_STATUSES else None


class LedgerError(RuntimeError):
    """The ledger refuses to write a posting that breaks double entry (a bug, never input)."""


class ChargeRefused(Exception):
    """A charge the hub will not post; `error_value` is meant for an ISO 18626 error."""

    reason = "refused"
    error_type = "UnrecognisedDataValue"
    flag_kind: ClassVar[FlagKind]     # each subclass's kind of flag

    def __init__(self, detail: str, *, transaction_id: str, event: str, requester: str,
                 supplier: str, fee: Money, limit: Money | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.transaction_id = transaction_id
        self.event = event
        self.requester = requester
        self.supplier = supplier
        self.fee = fee
        self.limit = limit

    @property
    def error_value(self) -> str:
        return (f"supplyingAgencyMessage.deliveryInfo.deliveryCosts: {self.detail} "
                f"(transaction {self.transaction_id}); the charge is refused and flagged")

    @property
    def facts(self) -> dict[str, Any]:
        """What the flag keeps of the refusal, structured."""
        facts: dict[str, Any] = {
            "event": self.event, "requester": self.requester, "supplier": self.supplier,
            "reason": self.reason, "fee_minor": self.fee.minor,
            "limit_minor": self.limit.minor if self.limit is not None else None,
            "currency": self.fee.currency}
        if self.limit is not None and self.limit.currency != self.fee.currency:
            facts["limit_currency"] = self.limit.currency
        return facts


class ChargeAboveQuote(ChargeRefused):
    reason = "above_quote"
    # The quote is the supplier's fee schedule applied to the request.
    flag_kind = FlagKind.CHARGE_ABOVE_SCHEDULE


class ChargeAboveMaxCost(ChargeRefused):
    reason = "above_max_cost"
    flag_kind = FlagKind.CHARGE_ABOVE_MAX_COST


class ChargeCurrencyMismatch(ChargeRefused):
    reason = "currency_mismatch"
    flag_kind = FlagKind.CHARGE_CURRENCY_MISMATCH


@dataclass(frozen=True)
class Entry:
    owner: str
    account: str
    amount: Money


@dataclass(frozen=True)
class PostingResult:
    posting_id: int
    transaction_id: str
    event: str
    kind: str                      # charge | reversal
    requester: str
    supplier: str
    service_kind: str
    title: str | None
    fee: Money                     # negative in a reversal, as are subsidy and patron_share
    subsidy: Money
    patron_share: Money
    quote: Money | None
    entries: tuple[Entry, ...]
    grants: tuple[Grant, ...]
    notes: tuple[str, ...]
    subsidy_version: int | None
    reverses: int | None
    local_date: datetime.date
    logistics: Money               # the shipping part of the fee (0 if none), signed as it
    # True when this call posted nothing because the key was already posted.
    duplicate: bool = field(default=False, compare=False)


async def _lock_key(conn: Connection, transaction_id: str, event: str) -> None:
    # Held to the end of the caller's transaction: a concurrent post of the same key
    # waits here, then finds the first posting instead of racing it to the unique key.
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 7))",
                       f"ledger\x1f{transaction_id}\x1f{event}")


def _refusal(*, transaction_id: str, event: str, requester: str, supplier: str, fee: Money,
             quote: Money | None, max_cost: Money | None) -> ChargeRefused | None:
    common: dict[str, Any] = {"transaction_id": transaction_id, "event": event,
                              "requester": requester, "supplier": supplier, "fee": fee}
    for limit, what in ((quote, "the quote"), (max_cost, "maximumCosts")):
        if limit is not None and limit.currency != fee.currency:
            return ChargeCurrencyMismatch(
                f"charge {fee} is not in the currency of {what} {limit}", limit=limit, **common)
    if quote is not None and fee.minor > quote.minor:
        return ChargeAboveQuote(f"charge {fee} is above the quote {quote} made for this "
                                "request", limit=quote, **common)
    if max_cost is not None and fee.minor > max_cost.minor:
        return ChargeAboveMaxCost(f"charge {fee} is above the request's maximumCosts "
                                  f"{max_cost}", limit=max_cost, **common)
    return None


async def record_flag(conn: Connection, exc: ChargeRefused, *,
                      now: datetime.datetime | None = None) -> bool:
    """Keep a refused charge on record: one flag about the supplier, with the charge's
    facts, and its event. Idempotent: a redelivery (the same transaction, event and fee)
    does not flag twice; True if this call flagged it. `now` defaults to the database's."""
    return await raise_flag(
        conn, exc.flag_kind, exc.supplier, exc.detail,
        key=f"{exc.transaction_id}:{exc.event}:{exc.fee.minor}:{exc.fee.currency}",
        transaction_id=exc.transaction_id, facts=exc.facts, now=now)


async def post_charge(conn: Connection, *, transaction_id: str, event: str,
                      requester: str, supplier: str, service_kind: str, fee: Money,
                      quote: Money | None, on: datetime.datetime, title: str | None = None,
                      max_cost: Money | None = None, tz: str | ZoneInfo = DEFAULT_TZ,
                      subsidy_version: int | None = None,
                      subsidised: bool = True,
                      logistics: Money | None = None) -> PostingResult:
    """Post the charge for one billable event, with its subsidy; idempotent per
    (transaction_id, event). Raises ChargeRefused (and flags it) for a fee above the
    quote or maximumCosts. Uses the latest subsidy version unless one is given;
    `subsidised=False` grants nothing whatever the rules say (a loss claim's replacement
    cost is no ILL fee: a rule without a service-kind condition would match it).
    `logistics`: how much of the fee is shipping (None: none), between 0 and the fee."""
    if not transaction_id or not event:
        raise ValueError("transaction_id and event must not be empty")
    if event.endswith(REVERSAL_SUFFIX):
        raise ValueError(f"event {event!r}: the suffix {REVERSAL_SUFFIX} is kept for reversals")
    if fee.minor < 0:
        raise ValueError(f"fee {fee} is negative; a refund is a reversal")
    shipping = logistics if logistics is not None else Money.zero(fee.currency)
    if shipping.currency != fee.currency or not 0 <= shipping.minor <= fee.minor:
        raise ValueError(f"logistics part {shipping} must be in the fee's currency and lie "
                         f"between 0 and the fee {fee}")
    day = local_date(on, tz)
    async with conn.transaction():
        await _lock_key(conn, transaction_id, event)
        found = await conn.fetchval(
            "SELECT id FROM ledger_posting WHERE transaction_id = $1 AND event = $2",
            transaction_id, event)
        if found is not None:
            return await _result(conn, found, duplicate=True)
        refusal = _refusal(transaction_id=transaction_id, event=event, requester=requester,
                           supplier=supplier, fee=fee, quote=quote, max_cost=max_cost)
        if refusal is None:
            rules, version = ((await rules_version(conn, subsidy_version))
                              if subsidised else (None, None))
            grants, notes = ((await grant(conn, rules, requester=requester, supplier=supplier,
                                          service_kind=service_kind, fee=fee, day=day,
                                          logistics=shipping))
                             if rules is not None else ([], []))
            subsidy = Money(sum(g.granted for g in grants), fee.currency)
            entries = [Entry(supplier, "receivable", fee), Entry(requester, "payable", -fee),
                       Entry(requester, "subsidy", subsidy),
                       Entry(CENTRE, "subsidy_expense", -subsidy)]
            posting_id = await _write(
                conn, transaction_id=transaction_id, event=event, kind="charge",
                requester=requester, supplier=supplier, service_kind=service_kind, title=title,
                fee=fee, subsidy=subsidy, quote=quote, version=version, reverses=None,
                reason=None, notes=notes, on=on, day=day, entries=entries, grants=grants,
                logistics=shipping)
            return await _result(conn, posting_id)
    # Outside our savepoint, so that raising does not undo the flag with it.
    if refusal is None:
        raise LedgerError(f"charge {transaction_id} {event}: neither posted nor refused")
    await record_flag(conn, refusal)
    raise refusal


async def reverse(conn: Connection, *, transaction_id: str, event: str, reason: str,
                  on: datetime.datetime, tz: str | ZoneInfo = DEFAULT_TZ
                  ) -> PostingResult | None:
    """Reverse the charge posted for (transaction_id, event): a new posting negating it,
    its subsidy returned to its budgets. None if nothing was charged (a cancellation
    before supply costs nothing); a second call returns the first reversal."""
    day = local_date(on, tz)
    async with conn.transaction():
        await _lock_key(conn, transaction_id, event)
        orig = await conn.fetchrow(
            "SELECT * FROM ledger_posting WHERE transaction_id = $1 AND event = $2 "
            "AND kind = 'charge'", transaction_id, event)
        if orig is None:
            return None
        done = await conn.fetchval("SELECT id FROM ledger_posting WHERE reverses = $1",
                                   orig["id"])
        if done is not None:
            return await _result(conn, done, duplicate=True)
        first = await _result(conn, orig["id"])
        back = [Grant(g.position, g.rule, -g.wanted, -g.granted, g.budgets,
                      f"reversal of grant {g.position}", g.part) for g in first.grants]
        await give_back(conn, first.grants)
        posting_id = await _write(
            conn, transaction_id=transaction_id, event=event + REVERSAL_SUFFIX,
            kind="reversal", requester=first.requester, supplier=first.supplier,
            service_kind=first.service_kind, title=first.title, fee=-first.fee,
            subsidy=-first.subsidy, quote=first.quote, version=first.subsidy_version,
            reverses=first.posting_id, reason=reason, notes=[reason], on=on, day=day,
            entries=[Entry(e.owner, e.account, -e.amount) for e in first.entries],
            grants=back, logistics=-first.logistics)
        return await _result(conn, posting_id)


async def reverse_transaction(conn: Connection, *, transaction_id: str, reason: str,
                              on: datetime.datetime, tz: str | ZoneInfo = DEFAULT_TZ
                              ) -> list[PostingResult]:
    """Reverse every charge of a transaction (a cancellation or refund after supply);
    an empty list if nothing was charged."""
    events = await conn.fetch(
        "SELECT event FROM ledger_posting WHERE transaction_id = $1 AND kind = 'charge' "
        "ORDER BY id", transaction_id)
    out = []
    for r in events:
        result = await reverse(conn, transaction_id=transaction_id, event=r["event"],
                               reason=reason, on=on, tz=tz)
        if result is None:
            raise LedgerError(f"charge {transaction_id} {r['event']} found, but not reversed")
        out.append(result)
    return out


async def _write(conn: Connection, *, transaction_id: str, event: str, kind: str,
                 requester: str, supplier: str, service_kind: str, title: str | None,
                 fee: Money, subsidy: Money, quote: Money | None, version: int | None,
                 reverses: int | None, reason: str | None, notes: Sequence[str],
                 on: datetime.datetime, day: datetime.date, entries: Sequence[Entry],
                 grants: Sequence[Grant], logistics: Money | None = None) -> int:
    entries = [e for e in entries if e.amount.minor != 0]
    # Double entry, TigerBeetle style: refuse to write anything that does not balance.
    totals: dict[str, int] = {}
    for e in entries:
        totals[e.amount.currency] = totals.get(e.amount.currency, 0) + e.amount.minor
    if any(v != 0 for v in totals.values()):
        raise LedgerError(f"unbalanced posting {entries}")
    if sum(g.granted for g in grants) != subsidy.minor:
        raise LedgerError(f"the grants sum to {sum(g.granted for g in grants)}, the posting's "
                          f"subsidy is {subsidy}")
    patron = fee - subsidy
    posting_id: int = await conn.fetchval(
        """INSERT INTO ledger_posting (transaction_id, event, kind, requester, supplier,
               service_kind, title, currency, fee_minor, subsidy_minor, patron_share_minor,
               quote_minor, subsidy_version, reverses, reason, notes, occurred_at, local_date,
               logistics_minor)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,
                   $17, $18, $19)
           RETURNING id""",
        transaction_id, event, kind, requester, supplier, service_kind, title, fee.currency,
        fee.minor, subsidy.minor, patron.minor, quote.minor if quote is not None else None,
        version, reverses, reason, list(notes), on, day,
        logistics.minor if logistics is not None else 0)
    await conn.executemany(
        """INSERT INTO ledger_entry (posting_id, transaction_id, owner, account, amount_minor,
                                     currency, local_date)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(posting_id, transaction_id, e.owner, e.account, e.amount.minor, e.amount.currency,
          day) for e in entries])
    await conn.executemany(
        """INSERT INTO subsidy_grant (posting_id, position, rule, wanted_minor, granted_minor,
                                      budgets, note, part)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
        [(posting_id, g.position, g.rule, g.wanted, g.granted, list(g.budgets), g.note,
          g.part) for g in grants])
    return posting_id


async def _result(conn: Connection, posting_id: int, *,
                  duplicate: bool = False) -> PostingResult:
    p = await conn.fetchrow("SELECT * FROM ledger_posting WHERE id = $1", posting_id)
    if p is None:
        raise LedgerError(f"no posting {posting_id}")
    cur = p["currency"]
    entries = await conn.fetch(
        "SELECT owner, account, amount_minor, currency FROM ledger_entry WHERE posting_id = $1 "
        "ORDER BY id", posting_id)
    grants = await conn.fetch(
        "SELECT * FROM subsidy_grant WHERE posting_id = $1 ORDER BY position", posting_id)
    return PostingResult(
        posting_id=p["id"], transaction_id=p["transaction_id"], event=p["event"],
        kind=p["kind"], requester=p["requester"], supplier=p["supplier"],
        service_kind=p["service_kind"], title=p["title"], fee=Money(p["fee_minor"], cur),
        subsidy=Money(p["subsidy_minor"], cur),
        patron_share=Money(p["patron_share_minor"], cur),
        quote=Money(p["quote_minor"], cur) if p["quote_minor"] is not None else None,
        entries=tuple(Entry(e["owner"], e["account"], Money(e["amount_minor"], e["currency"]))
                      for e in entries),
        grants=tuple(Grant(g["position"], g["rule"], g["wanted_minor"], g["granted_minor"],
                           tuple(g["budgets"]), g["note"], g["part"]) for g in grants),
        notes=tuple(p["notes"]), subsidy_version=p["subsidy_version"],
        reverses=p["reverses"], local_date=p["local_date"],
        logistics=Money(p["logistics_minor"], cur), duplicate=duplicate)


async def postings(conn: Connection, transaction_id: str) -> list[PostingResult]:
    """Every posting of one ILL transaction, oldest first (for explain and statements)."""
    ids = await conn.fetch("SELECT id FROM ledger_posting WHERE transaction_id = $1 "
                           "ORDER BY id", transaction_id)
    return [await _result(conn, r["id"]) for r in ids]


# --------------------------------------------------------------------------
# Invariants
# --------------------------------------------------------------------------

_LIMIT = 50
_CHECKS: tuple[tuple[str, str], ...] = (
    ("transaction {0} does not balance in {1}: its entries sum to {2}",
     """SELECT transaction_id, currency, sum(amount_minor) FROM ledger_entry
        GROUP BY transaction_id, currency HAVING sum(amount_minor) <> 0"""),
    ("posting {0} does not balance in {1}: its entries sum to {2}",
     """SELECT posting_id, currency, sum(amount_minor) FROM ledger_entry
        GROUP BY posting_id, currency HAVING sum(amount_minor) <> 0"""),
    ("posting {0}: its entries ({1}) do not match its fee {2} and subsidy {3} in {4}",
     """SELECT p.id,
               coalesce(string_agg(e.owner || ' ' || e.account || ' ' || e.amount_minor
                                   || ' ' || e.currency, ', ' ORDER BY e.id), 'none'),
               p.fee_minor, p.subsidy_minor, p.currency
        FROM ledger_posting p LEFT JOIN ledger_entry e ON e.posting_id = p.id
        GROUP BY p.id
        HAVING coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'receivable'
                        AND e.owner = p.supplier), 0) <> p.fee_minor
            OR coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'payable'
                        AND e.owner = p.requester), 0) <> -p.fee_minor
            OR coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'subsidy'
                        AND e.owner = p.requester), 0) <> p.subsidy_minor
            OR coalesce(sum(e.amount_minor) FILTER (WHERE e.account = 'subsidy_expense'
                        AND e.owner = 'CENTRE'), 0) <> -p.subsidy_minor
            OR bool_or(e.currency <> p.currency)"""),
    ("posting {0}: its subsidy grants sum to {1}, its subsidy is {2}",
     """SELECT p.id, coalesce(sum(g.granted_minor), 0), p.subsidy_minor
        FROM ledger_posting p LEFT JOIN subsidy_grant g ON g.posting_id = p.id
        GROUP BY p.id HAVING coalesce(sum(g.granted_minor), 0) <> p.subsidy_minor"""),
    ("charge {0}: fee {1}, subsidy {2}, patron share {3}: none may be negative",
     """SELECT id, fee_minor, subsidy_minor, patron_share_minor FROM ledger_posting
        WHERE kind = 'charge' AND (fee_minor < 0 OR subsidy_minor < 0
                                   OR patron_share_minor < 0)"""),
    ("reversal {0} does not mirror charge {1} of the same transaction",
     """SELECT r.id, o.id FROM ledger_posting r JOIN ledger_posting o ON o.id = r.reverses
        WHERE r.transaction_id <> o.transaction_id OR o.kind <> 'charge'
           OR r.fee_minor <> -o.fee_minor OR r.subsidy_minor <> -o.subsidy_minor
           OR r.currency <> o.currency OR r.requester <> o.requester
           OR r.supplier <> o.supplier OR r.logistics_minor <> -o.logistics_minor"""),
    ("posting {0}: its logistics part {1} is not between 0 and its fee {2}",
     """SELECT id, logistics_minor, fee_minor FROM ledger_posting
        WHERE abs(logistics_minor) > abs(fee_minor)
           OR (logistics_minor <> 0 AND sign(logistics_minor) <> sign(fee_minor))"""),
    ("posting {0}: its grants on the logistics part sum to {1}, more than that part {2}",
     """SELECT p.id, sum(g.granted_minor), p.logistics_minor
        FROM ledger_posting p JOIN subsidy_grant g ON g.posting_id = p.id
        WHERE g.part = 'logistics'
        GROUP BY p.id HAVING abs(sum(g.granted_minor)) > abs(p.logistics_minor)"""),
    ("budget {0} '{1}' ({2}, {3}): spent {4} of {5}: below zero or overdrawn",
     """SELECT id, name, coalesce(nullif(requester, ''), 'global'), period, spent_minor,
               limit_minor
        FROM subsidy_budget WHERE spent_minor < 0 OR spent_minor > limit_minor"""),
    ("budget {0} '{1}': spent {2}, but its grants sum to {3}",
     """SELECT b.id, b.name, b.spent_minor, coalesce(g.total, 0)
        FROM subsidy_budget b
        LEFT JOIN (SELECT bid, sum(granted_minor) AS total
                   FROM subsidy_grant, unnest(budgets) AS bid GROUP BY bid) g ON g.bid = b.id
        WHERE b.spent_minor <> coalesce(g.total, 0)"""),
    ("the whole ledger does not balance in {0}: all entries sum to {1}",
     """SELECT currency, sum(amount_minor) FROM ledger_entry
        GROUP BY currency HAVING sum(amount_minor) <> 0"""),
)


@dataclass(frozen=True)
class LedgerSize:
    postings: int
    entries: int
    budget_rows: int


async def size(conn: Connection) -> LedgerSize:
    row = await fetch_one(
        conn,
        "SELECT (SELECT count(*) FROM ledger_posting) AS postings, "
        "(SELECT count(*) FROM ledger_entry) AS entries, "
        "(SELECT count(*) FROM subsidy_budget) AS budget_rows")
    return LedgerSize(**dict(row))


async def check(conn: Connection) -> list[str]:
    """The ledger's invariants; every problem found, as a sentence (empty = all good)."""
    problems: list[str] = []
    for message, sql in _CHECKS:
        rows = await conn.fetch(f"{sql} LIMIT {_LIMIT + 1}")
        problems += [message.format(*r.values()) for r in rows[:_LIMIT]]
        if len(rows) > _LIMIT:
            problems.append(f"... and more like the above ({message.split(' ', 1)[0]})")
    return problems


# --------------------------------------------------------------------------
# Balances and entries of one owner
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class EntryLine:
    local_date: datetime.date
    transaction_id: str
    event: str
    kind: str
    account: str
    amount: Money
    counterpart: str
    counterpart_name: str | None
    service_kind: str
    title: str | None


@dataclass(frozen=True)
class Balance:
    symbol: str
    date_from: datetime.date | None
    date_to: datetime.date | None
    opening: tuple[Money, ...]                  # per currency, before date_from
    by_account: tuple[tuple[str, Money], ...]   # movement in the window
    movement: tuple[Money, ...]
    closing: tuple[Money, ...]
    postings: int

    @property
    def patron_share(self) -> tuple[Money, ...]:
        """What the requester collected from its readers in the window (payable + subsidy)."""
        out: dict[str, int] = {}
        for account, m in self.by_account:
            if account in ("payable", "subsidy"):
                out[m.currency] = out.get(m.currency, 0) - m.minor
        return tuple(Money(v, c) for c, v in sorted(out.items()))


def _window(date_from: datetime.date | None, date_to: datetime.date | None
            ) -> tuple[str, list[Any]]:
    return ("($2::date IS NULL OR e.local_date >= $2) AND ($3::date IS NULL OR "
            "e.local_date <= $3)", [date_from, date_to])


async def entries(conn: Connection, symbol: str, date_from: datetime.date | None,
                  date_to: datetime.date | None) -> list[EntryLine]:
    """One owner's entries between two consortium-local dates (inclusive; None = open)."""
    where, args = _window(date_from, date_to)
    rows = await conn.fetch(
        f"""SELECT e.local_date, e.transaction_id, p.event, p.kind, e.account, e.amount_minor,
                   e.currency, p.service_kind, p.title,
                   CASE WHEN e.account = 'receivable' OR e.owner = 'CENTRE' THEN p.requester
                        ELSE p.supplier END AS counterpart
            FROM ledger_entry e JOIN ledger_posting p ON p.id = e.posting_id
            WHERE e.owner = $1 AND {where}
            ORDER BY e.local_date, e.id""", symbol, *args)
    names = {r["symbol"]: r["name"] for r in await conn.fetch(
        "SELECT symbol, name FROM agency WHERE symbol = ANY($1::text[])",
        list({r["counterpart"] for r in rows}))}
    return [EntryLine(r["local_date"], r["transaction_id"], r["event"], r["kind"],
                      r["account"], Money(r["amount_minor"], r["currency"]), r["counterpart"],
                      names.get(r["counterpart"]), r["service_kind"], r["title"]) for r in rows]


async def balance(conn: Connection, symbol: str, date_from: datetime.date | None,
                  date_to: datetime.date | None) -> Balance:
    """One owner's opening balance, movement by account, and closing balance."""
    where, args = _window(date_from, date_to)
    opening = await conn.fetch(
        """SELECT currency, sum(amount_minor) AS s FROM ledger_entry e
           WHERE owner = $1 AND $2::date IS NOT NULL AND local_date < $2
           GROUP BY currency""", symbol, date_from)
    moved = await conn.fetch(
        f"""SELECT account, currency, sum(amount_minor) AS s, count(DISTINCT posting_id) AS n
            FROM ledger_entry e WHERE owner = $1 AND {where}
            GROUP BY account, currency ORDER BY currency, account""", symbol, *args)
    n = await conn.fetchval(
        f"SELECT count(DISTINCT posting_id) FROM ledger_entry e WHERE owner = $1 AND {where}",
        symbol, *args)
    open_by = {r["currency"]: int(r["s"]) for r in opening}
    move_by: dict[str, int] = {}
    for r in moved:
        move_by[r["currency"]] = move_by.get(r["currency"], 0) + int(r["s"])
    currencies = sorted(set(open_by) | set(move_by))
    order = {a: i for i, a in enumerate(ACCOUNTS)}
    return Balance(
        symbol=symbol, date_from=date_from, date_to=date_to,
        opening=tuple(Money(open_by.get(c, 0), c) for c in currencies),
        by_account=tuple((r["account"], Money(int(r["s"]), r["currency"])) for r in sorted(
            moved, key=lambda r: (r["currency"], order.get(r["account"], 9)))),
        movement=tuple(Money(move_by.get(c, 0), c) for c in currencies),
        closing=tuple(Money(open_by.get(c, 0) + move_by.get(c, 0), c) for c in currencies),
        postings=n)


__all__ = [
    "ACCOUNTS", "BILLABLE_STATUSES", "CENTRE", "Balance", "ChargeAboveMaxCost",
    "ChargeAboveQuote", "ChargeCurrencyMismatch", "ChargeRefused", "Entry", "EntryLine",
    "LedgerError",
    "PostingResult", "balance", "billable_event", "check", "entries", "post_charge",
    "postings", "record_flag", "reverse", "reverse_transaction",
]
