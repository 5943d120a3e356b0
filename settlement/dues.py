"""A statement's life after the run (issue 17): what it asks to be paid, payments
against it, reminders, and the centre's position by agency and age.

A closed run issues one *due* per agency and currency whose net is not zero
(`issue`, in the run's closing transaction): `to_centre` when the agency owes the
centre, `to_agency` when the centre owes it. Nothing about a due is ever updated; its
state is computed from the append-only rows of migration 0021:

    due        issued, not yet paid in full, not past its due date
    part_paid  some paid, not past its due date
    overdue    past its due date with something outstanding beyond what is disputed
    disputed   past its due date, but all that is outstanding is under open dispute
    paid       nothing outstanding

Every change writes a `statement_event` row and a message on `ill.finance`
(`payment.<symbol>`, `reminder.<symbol>`), in the same transaction as the change.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.database import Connection
from infra.locks import Lock, keyed_transaction_lock
from infra.mailqueue import enqueue_mail
from infra.outbox import Outgoing, enqueue
from schemas.money import Money
from schemas.settings import Payments
from schemas.wire import FINANCE


class Direction(enum.StrEnum):
    TO_CENTRE = "to_centre"    # the agency pays the centre
    TO_AGENCY = "to_agency"    # the centre pays the agency


class PaymentSource(enum.StrEnum):
    MANUAL = "manual"          # recorded by finance staff (CLI, page, API)
    BANK = "bank"              # read from the bank's statement (camt.053/054)
    DEPOSIT = "deposit"        # drawn from (or credited to) a prepaid deposit


class DueState(enum.StrEnum):
    DUE = "due"
    PART_PAID = "part_paid"
    OVERDUE = "overdue"
    DISPUTED = "disputed"
    PAID = "paid"


class EventKind(enum.StrEnum):
    ISSUED = "issued"
    PAYMENT = "payment"
    PAID = "paid"
    REMINDER = "reminder"
    OVERDUE = "overdue"
    DISPUTED = "disputed"
    DISPUTE_ACCEPTED = "dispute_accepted"
    DISPUTE_REJECTED = "dispute_rejected"
    DEPOSIT = "deposit"


# Days since issue; the last bucket is open-ended.
AGING_BUCKETS: tuple[tuple[str, int, int | None], ...] = (
    ("0-30", 0, 30), ("31-60", 31, 60), ("61-90", 61, 90), ("90+", 91, None))


class PaymentRefused(ValueError):
    """A payment that cannot be recorded against a due; the message says why."""


@dataclass(frozen=True)
class Position:
    """One due and what is left of it (a row of the `statement_position` view)."""

    due_id: int
    run_id: int
    period: str
    agency: str
    direction: Direction
    amount: Money
    reference: str
    issued_on: datetime.date
    due_on: datetime.date
    dispute_until: datetime.date
    paid: Money
    outstanding: Money
    disputed: Money
    last_paid_on: datetime.date | None

    @property
    def currency(self) -> str:
        return self.amount.currency

    @property
    def dunnable(self) -> Money:
        """What may be asked for: the outstanding amount beyond what is under dispute."""
        return Money(max(0, self.outstanding.minor - self.disputed.minor), self.currency)

    def state(self, today: datetime.date) -> DueState:
        if self.outstanding.minor == 0:
            return DueState.PAID
        if today > self.due_on:
            return DueState.OVERDUE if self.dunnable.minor > 0 else DueState.DISPUTED
        return DueState.PART_PAID if self.paid.minor > 0 else DueState.DUE

    def days_overdue(self, today: datetime.date) -> int:
        return max(0, (today - self.due_on).days) if self.outstanding.minor else 0

    def age(self, today: datetime.date) -> int:
        return max(0, (today - self.issued_on).days)

    def to_json(self, today: datetime.date) -> dict[str, Any]:
        return {"dueId": self.due_id, "runId": self.run_id, "period": self.period,
                "agency": self.agency, "direction": self.direction.value,
                "currencyCode": self.currency, "amount": self.amount.amount_text(),
                "paid": self.paid.amount_text(), "outstanding": self.outstanding.amount_text(),
                "disputed": self.disputed.amount_text(), "reference": self.reference,
                "issuedOn": self.issued_on.isoformat(), "dueOn": self.due_on.isoformat(),
                "disputeUntil": self.dispute_until.isoformat(),
                "state": self.state(today).value}


# --------------------------------------------------------------------------
# named statements
# --------------------------------------------------------------------------

POSITION_COLUMNS = """due_id, run_id, period, agency, currency, direction, amount_minor,
    reference, issued_on, due_on, dispute_until, paid_minor, outstanding_minor,
    disputed_minor, last_paid_on"""

SELECT_POSITIONS = f"""SELECT {POSITION_COLUMNS} FROM statement_position
    WHERE ($1::text IS NULL OR agency = $1)
      AND ($2::bigint IS NULL OR run_id = $2)
      AND (NOT $3::boolean OR outstanding_minor > 0)
    ORDER BY issued_on, agency, currency, due_id"""

SELECT_POSITION = f"SELECT {POSITION_COLUMNS} FROM statement_position WHERE due_id = $1"

SELECT_BY_REFERENCE = f"""SELECT {POSITION_COLUMNS} FROM statement_position
    WHERE reference = upper($1)"""

# The run's nets that ask for money, with the finance contact of each agency.
SELECT_RUN_NETS = """SELECT n.owner AS agency, n.currency, n.net_minor, a.finance_email, a.name
    FROM settlement_net n JOIN agency a ON a.symbol = n.owner
    WHERE n.run_id = $1 AND n.owner <> 'CENTRE' AND n.net_minor <> 0
    ORDER BY n.owner, n.currency"""

INSERT_DUE = """INSERT INTO statement_due (run_id, period, agency, currency, direction,
        amount_minor, reference, issued_on, due_on, dispute_until)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
    ON CONFLICT (run_id, agency, currency) DO NOTHING
    RETURNING id"""


INSERT_PAYMENT = """INSERT INTO statement_payment (due_id, amount_minor, paid_on,
        bank_reference, source, source_key, actor)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (source_key) DO NOTHING
    RETURNING id"""

INSERT_EVENT = """INSERT INTO statement_event (due_id, kind, stage, amount_minor, detail,
        actor)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6)
    ON CONFLICT (due_id, kind, stage) WHERE stage IS NOT NULL DO NOTHING
    RETURNING id"""

SELECT_EVENTS = """SELECT id, kind, stage, amount_minor, detail, actor, at
    FROM statement_event WHERE due_id = $1 ORDER BY id"""


def _position(r: Any) -> Position:
    cur = r["currency"]
    return Position(
        due_id=r["due_id"], run_id=r["run_id"], period=r["period"], agency=r["agency"],
        direction=Direction(r["direction"]), amount=Money(r["amount_minor"], cur),
        reference=r["reference"], issued_on=r["issued_on"], due_on=r["due_on"],
        dispute_until=r["dispute_until"], paid=Money(int(r["paid_minor"]), cur),
        outstanding=Money(int(r["outstanding_minor"]), cur),
        disputed=Money(int(r["disputed_minor"]), cur), last_paid_on=r["last_paid_on"])


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------

async def positions(conn: Connection, *, agency: str | None = None, run_id: int | None = None,
                    open_only: bool = False) -> list[Position]:
    rows = await conn.fetch(SELECT_POSITIONS, agency, run_id, open_only)
    return [_position(r) for r in rows]


async def position(conn: Connection, due_id: int) -> Position | None:
    row = await conn.fetchrow(SELECT_POSITION, due_id)
    return _position(row) if row is not None else None


async def by_reference(conn: Connection, reference: str) -> Position | None:
    row = await conn.fetchrow(SELECT_BY_REFERENCE, reference.strip())
    return _position(row) if row is not None else None


@dataclass(frozen=True)
class Event:
    id: int
    kind: EventKind
    stage: str | None
    amount_minor: int | None
    detail: dict[str, Any]
    actor: str
    at: datetime.datetime


async def history(conn: Connection, due_id: int) -> list[Event]:
    return [Event(r["id"], EventKind(r["kind"]), r["stage"], r["amount_minor"],
                  json.loads(r["detail"]), r["actor"], r["at"])
            for r in await conn.fetch(SELECT_EVENTS, due_id)]


# --------------------------------------------------------------------------
# issuing, at the close of a run
# --------------------------------------------------------------------------

def reference_for(period: str, run_id: int, agency: str, currency: str) -> str:
    """The reference a payer quotes, e.g. ILL-2026-10-R12-A3F9C1-CNY: the period, the run,
    a key of the agency's symbol and the currency ([A-Z0-9-], at most 35 characters, as
    ISO 20022 remittance fields allow)."""
    key = hashlib.sha256(agency.encode()).hexdigest()[:6].upper()
    text = f"ILL-{period}-R{run_id}-{key}-{currency}".upper()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in text)[:35]


async def issue(conn: Connection, run_id: int, period: str, *, rules: Payments,
                today: datetime.date) -> list[Position]:
    """One due per agency and currency of the run with a net not zero; idempotent (a
    second call issues nothing new). Called in the run's closing transaction."""
    issued: list[int] = []
    for r in await conn.fetch(SELECT_RUN_NETS, run_id):
        net = int(r["net_minor"])
        direction = Direction.TO_AGENCY if net > 0 else Direction.TO_CENTRE
        due_id = await conn.fetchval(
            INSERT_DUE, run_id, period, r["agency"], r["currency"], direction.value, abs(net),
            reference_for(period, run_id, r["agency"], r["currency"]), today,
            today + datetime.timedelta(days=rules.due_days),
            today + datetime.timedelta(days=rules.dispute_days))
        if due_id is not None:
            await _event(conn, due_id, EventKind.ISSUED, actor="settlement", amount=abs(net),
                         detail={"direction": direction.value})
            issued.append(due_id)
    return [p for p in await positions(conn, run_id=run_id) if p.due_id in issued]


def by_agency(issued: Sequence[Position]) -> dict[str, list[Position]]:
    out: dict[str, list[Position]] = {}
    for p in issued:
        out.setdefault(p.agency, []).append(p)
    return out


async def lock_due(conn: Connection, due_id: int) -> None:
    """Taken before a payment, a dispute or a deposit changes what a due asks: one writer
    per due, to the end of the caller's transaction."""
    await keyed_transaction_lock(conn, Lock.STATEMENT_DUE, str(due_id))


# --------------------------------------------------------------------------
# payments
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class PaymentResult:
    payment_id: int | None       # None: the source_key was recorded before (a re-import)
    position: Position

    @property
    def duplicate(self) -> bool:
        return self.payment_id is None


async def record_payment(conn: Connection, due_id: int, amount: Money, *,
                         paid_on: datetime.date, source: PaymentSource, actor: str,
                         bank_reference: str | None = None, source_key: str | None = None,
                         today: datetime.date | None = None) -> PaymentResult:
    """Record money moved against a due: partial payments add up; more than is outstanding,
    another currency, or nothing at all is refused (PaymentRefused). A payment whose
    source_key was recorded before records nothing (duplicate)."""
    async with conn.transaction():
        await lock_due(conn, due_id)
        before = await position(conn, due_id)
        if before is not None and source_key is not None and await _recorded(conn, source_key):
            return PaymentResult(None, before)
        problem = _payment_problem(before, due_id, amount, paid_on)
        if problem is not None or before is None:
            raise PaymentRefused(problem or f"no statement due {due_id}")
        payment_id = await conn.fetchval(INSERT_PAYMENT, due_id, amount.minor, paid_on,
                                         bank_reference, source.value, source_key, actor)
        if payment_id is None:
            return PaymentResult(None, before)
        after = await position(conn, due_id)
        if after is None:
            raise PaymentRefused(f"statement due {due_id} vanished")
        detail = {"paymentId": payment_id, "paidOn": paid_on.isoformat(),
                  "bankReference": bank_reference, "source": source.value,
                  "outstanding": after.outstanding.amount_text()}
        await _event(conn, due_id, EventKind.PAYMENT, actor=actor, amount=amount.minor,
                     detail=detail)
        if after.outstanding.minor == 0:
            await _event(conn, due_id, EventKind.PAID, actor=actor, amount=after.amount.minor,
                         detail={"paidOn": paid_on.isoformat()})
        await enqueue(conn, [finance_message("payment", after, today or paid_on,
                                      {"payment": {"amount": amount.amount_text(),
                                                   **detail}})])
        return PaymentResult(payment_id, after)


async def _recorded(conn: Connection, source_key: str) -> bool:
    found = await conn.fetchval("SELECT 1 FROM statement_payment WHERE source_key = $1",
                                source_key)
    return found is not None


def _payment_problem(p: Position | None, due_id: int, amount: Money,
                     paid_on: datetime.date) -> str | None:
    """Why a payment cannot be recorded, checked in a fixed order; None if it can."""
    if p is None:
        return f"no statement due {due_id}"
    if amount.minor <= 0:
        return f"a payment must be above zero, not {amount.amount_text()}"
    if amount.currency != p.currency:
        return (f"statement {p.reference} is in {p.currency}; a payment in "
                f"{amount.currency} cannot be recorded against it")
    if amount.minor > p.outstanding.minor:
        return (f"statement {p.reference}: {amount.amount_text()} {amount.currency} is more "
                f"than the {p.outstanding.amount_text()} outstanding")
    if paid_on < p.issued_on - datetime.timedelta(days=366):
        return f"payment date {paid_on} is more than a year before the statement was issued"
    return None


# --------------------------------------------------------------------------
# reminders and overdue notices
# --------------------------------------------------------------------------

def reminder_stage(p: Position, today: datetime.date, rules: Payments) -> str | None:
    """Which reminder a due has earned today, or None. 'before' once, `remind_days_before`
    days ahead of the due date; 'overdue-1' the day after, then one every
    `overdue_every_days`. A due whose outstanding amount is all under open dispute, or
    a payment the centre owes, is not dunned."""
    if p.direction is not Direction.TO_CENTRE or p.dunnable.minor == 0:
        return None
    if today > p.due_on:
        n = (today - p.due_on).days - 1
        return f"overdue-{n // rules.overdue_every_days + 1}"
    if (p.due_on - today).days <= rules.remind_days_before:
        return "before"
    return None


async def send_reminders(conn: Connection, rules: Payments, today: datetime.date, *,
                         actor: str = "scheduler") -> list[tuple[Position, str]]:
    """Remind every due that has earned a reminder today and has not had it; idempotent,
    safe for several hub processes (a stage is recorded once: a unique index)."""
    sent: list[tuple[Position, str]] = []
    for p in await positions(conn, open_only=True):
        stage = reminder_stage(p, today, rules)
        if stage is None:
            continue
        async with conn.transaction():
            await lock_due(conn, p.due_id)
            current = await position(conn, p.due_id)
            if current is None or reminder_stage(current, today, rules) != stage:
                continue
            kind = EventKind.OVERDUE if stage.startswith("overdue") else EventKind.REMINDER
            detail = {"dunned": current.dunnable.amount_text(),
                      "disputed": current.disputed.amount_text(),
                      "daysOverdue": current.days_overdue(today)}
            if await _event(conn, p.due_id, kind, actor=actor, stage=stage,
                            amount=current.dunnable.minor, detail=detail) is None:
                continue
            await enqueue(conn, [finance_message("reminder", current, today,
                                          {"stage": stage, **detail})])
            email = await conn.fetchval("SELECT finance_email FROM agency WHERE symbol = $1",
                                        p.agency)
            if email:
                subject, text = reminder_mail(current, stage, today)
                await enqueue_mail(conn, email, subject, text, kind="payment_reminder")
            sent.append((current, stage))
    return sent


def reminder_mail(p: Position, stage: str, today: datetime.date) -> tuple[str, str]:
    """The reminder's subject and text, in Chinese and English like the statements' mail."""
    money = f"{p.dunnable.amount_text()} {p.currency}"
    if stage == "before":
        subject = f"馆际互借结算付款提醒 ILL settlement payment reminder {p.reference}"
        zh = f"贵馆 {p.period} 结算单（参考号 {p.reference}）应付 {money}，到期日 {p.due_on}。"
        en = (f"Your ILL settlement statement for {p.period} (reference {p.reference}) asks "
              f"{money}, due on {p.due_on}.")
    else:
        subject = f"馆际互借结算逾期通知 ILL settlement overdue notice {p.reference}"
        zh = (f"贵馆 {p.period} 结算单（参考号 {p.reference}）已逾期 "
              f"{p.days_overdue(today)} 天，尚欠 {money}。")
        en = (f"Your ILL settlement statement for {p.period} (reference {p.reference}) is "
              f"{p.days_overdue(today)} days overdue: {money} outstanding.")
    tail_zh = "付款时请注明参考号。如有争议的金额，在争议处理完毕前不会催缴。"
    tail_en = ("Please quote the reference with your payment. An amount under dispute is "
               "not asked for while the dispute is open.")
    if p.disputed.minor:
        tail_en += f" Under dispute: {p.disputed.amount_text()} {p.currency}."
        tail_zh += f" 争议金额：{p.disputed.amount_text()} {p.currency}。"
    return subject, f"{zh}\n{tail_zh}\n\n{en}\n{tail_en}\n"


# --------------------------------------------------------------------------
# aging: the centre's position by agency and age
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class AgingRow:
    agency: str
    currency: str
    owed_to_centre: tuple[int, ...]     # minor units per AGING_BUCKETS
    owed_by_centre: tuple[int, ...]
    overdue_minor: int                  # owed to the centre, past due, not disputed
    disputed_minor: int

    @property
    def to_centre_minor(self) -> int:
        return sum(self.owed_to_centre)

    @property
    def by_centre_minor(self) -> int:
        return sum(self.owed_by_centre)


def bucket_of(age_days: int) -> int:
    for i, (_, low, high) in enumerate(AGING_BUCKETS):
        if age_days >= low and (high is None or age_days <= high):
            return i
    raise ValueError(f"age {age_days} is in no bucket")


def aging_rows(open_positions: Sequence[Position], today: datetime.date) -> list[AgingRow]:
    """What is outstanding, per agency and currency, in aging buckets by days since issue."""
    acc: dict[tuple[str, str], list[list[int]]] = {}
    for p in open_positions:
        if p.outstanding.minor == 0:
            continue
        row = acc.setdefault((p.agency, p.currency), [[0] * len(AGING_BUCKETS),
                                                      [0] * len(AGING_BUCKETS), [0], [0]])
        side = 0 if p.direction is Direction.TO_CENTRE else 1
        row[side][bucket_of(p.age(today))] += p.outstanding.minor
        if p.state(today) is DueState.OVERDUE and p.direction is Direction.TO_CENTRE:
            row[2][0] += p.dunnable.minor
        row[3][0] += p.disputed.minor
    return [AgingRow(agency, cur, tuple(v[0]), tuple(v[1]), v[2][0], v[3][0])
            for (agency, cur), v in sorted(acc.items())]


async def aging(conn: Connection, today: datetime.date, *,
                agency: str | None = None) -> list[AgingRow]:
    return aging_rows(await positions(conn, agency=agency, open_only=True), today)


# --------------------------------------------------------------------------
# events and messages
# --------------------------------------------------------------------------

async def _event(conn: Connection, due_id: int, kind: EventKind, *, actor: str,
                 amount: int | None = None, stage: str | None = None,
                 detail: dict[str, Any] | None = None) -> int | None:
    event_id: int | None = await conn.fetchval(
        INSERT_EVENT, due_id, kind.value, stage, amount,
        json.dumps(detail or {}, ensure_ascii=False), actor)
    return event_id


async def record_event(conn: Connection, due_id: int, kind: EventKind, *, actor: str,
                       amount: int | None = None, detail: dict[str, Any] | None = None
                       ) -> int | None:
    """A change made elsewhere in settlement (a dispute, a deposit) in the due's history."""
    return await _event(conn, due_id, kind, actor=actor, amount=amount, detail=detail)


def finance_message(kind: str, p: Position, today: datetime.date,
                    extra: dict[str, Any]) -> Outgoing:
    """A message on ill.finance about one due: `<kind>.<agency symbol>`."""
    return Outgoing(exchange=FINANCE, routing_key=f"{kind}.{p.agency}",
                    body={"kind": kind, "statement": p.to_json(today), **extra},
                    message_type=kind, correlation_id=p.reference,
                    headers={"agency": p.agency, "reference": p.reference})


__all__ = [
    "AGING_BUCKETS", "AgingRow", "Direction", "DueState", "Event", "EventKind",
    "PaymentRefused", "PaymentResult", "PaymentSource", "Position", "aging", "aging_rows",
    "bucket_of", "by_agency", "by_reference", "finance_message", "history", "issue",
    "lock_due", "position",
    "positions", "record_event", "record_payment", "reference_for", "reminder_mail",
    "reminder_stage", "send_reminders",
]
