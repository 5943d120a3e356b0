"""Prepaid deposit accounts (issue 17), an option per agency as NLM's EFTS has them.

An agency with a deposit account pays money in ahead (`topup`). Its charges draw the
balance down as they are posted, before any run: the *available* balance is the
deposit plus the agency's ledger net of the postings no closed run has settled yet
(negative when it owes, ledger signs). When a run closes, `net_run` nets each of its
statements against the deposit instead of asking for cash:

    to_centre  the deposit pays what it can (a drawdown, at most the deposit balance);
               the rest stays due as usual
    to_agency  the amount is credited to the deposit, and the statement is paid (the
               centre owes the agency no transfer: EFTS credits the account)

Either way the statement gets a payment of source `deposit` keyed `deposit:<due id>`
and a `deposit` event in its history, so its state (paid, part paid) and the centre's
aging read the same as for money that moved through a bank. The available balance
does not change at the close: what the run settles leaves the unsettled net and
enters the deposit, as the same amount.

`sweep_low_balances` alerts an agency whose available balance is below its threshold
(the account's own, or settings.payments.deposit_low_minor): a `deposit.<symbol>`
message on ill.finance and a mail to its finance contact, once per fall below the
threshold. The alert is cleared when the balance is seen at or above the threshold
again (by a top-up, a credit, or a later sweep), and only then may the next fall alert.

Tables (migration 0025, all append-only): deposit_account, deposit_closure,
deposit_movement, deposit_alert, deposit_alert_cleared. Reads `agency` (names and
finance e-mails) and the ledger's entries; writes statements' payments and events
only through settlement/dues.py.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass, field, replace
from typing import Any

from infra.database import Connection, fetch_one
from infra.locks import Lock, keyed_transaction_lock
from infra.mailqueue import enqueue_mail
from infra.outbox import Outgoing, enqueue
from schemas.money import Money
from schemas.settings import Payments, Settings
from schemas.wire import FINANCE
from settlement import dues
from settlement.record import previous_region


class MovementKind(enum.StrEnum):
    TOPUP = "topup"          # the agency paid money in
    DRAWDOWN = "drawdown"    # a statement to the centre paid from the deposit
    CREDIT = "credit"        # a statement from the centre paid into the deposit
    REFUND = "refund"        # money paid back to the agency


class AlertStep(enum.Enum):
    ALERT = "alert"          # fell below the threshold, not alerted yet for this fall
    CLEAR = "clear"          # back at or above the threshold after an alert


class DepositError(ValueError):
    """A deposit operation that cannot be done (no account, closed, too much...)."""


@dataclass(frozen=True)
class Account:
    agency: str
    currency: str
    low_minor: int | None            # None: settings.payments.deposit_low_minor
    opened_by: str
    opened_at: datetime.datetime
    closed_at: datetime.datetime | None

    @property
    def closed(self) -> bool:
        return self.closed_at is not None


@dataclass(frozen=True)
class DepositBalance:
    """An agency's deposit and what its unsettled charges have already drawn on it."""

    agency: str
    deposit: Money                   # the sum of the movements
    unsettled: Money                 # ledger net of postings no closed run settled
    threshold: Money
    closed: bool = False

    @property
    def currency(self) -> str:
        return self.deposit.currency

    @property
    def available(self) -> Money:
        return self.deposit + self.unsettled

    @property
    def low(self) -> bool:
        return not self.closed and self.available.minor < self.threshold.minor

    def to_json(self) -> dict[str, Any]:
        return {"agency": self.agency, "currencyCode": self.currency,
                "deposit": self.deposit.amount_text(),
                "unsettled": self.unsettled.amount_text(),
                "available": self.available.amount_text(),
                "threshold": self.threshold.amount_text(), "low": self.low,
                "closed": self.closed}


@dataclass(frozen=True)
class Movement:
    id: int
    agency: str
    kind: MovementKind
    amount: Money                    # + into the deposit, - out of it
    reference: str | None
    due_id: int | None
    source_key: str | None
    actor: str
    at: datetime.datetime
    # True when this call moved nothing: its source_key was recorded before.
    duplicate: bool = field(default=False, compare=False)


@dataclass(frozen=True)
class Netted:
    """One statement of a run netted against a deposit."""

    due_id: int
    agency: str
    reference: str
    kind: MovementKind               # drawdown or credit
    amount: Money                    # positive: what the deposit paid, or was credited
    deposit_after: Money
    outstanding_after: Money         # what the statement still asks in cash
    movement_id: int


@dataclass(frozen=True)
class Alert:
    id: int
    balance: DepositBalance
    mail_id: int | None


# --------------------------------------------------------------------------
# named statements
# --------------------------------------------------------------------------


INSERT_ACCOUNT = """INSERT INTO deposit_account (agency, currency, low_balance_minor, opened_by)
    VALUES ($1, $2, $3, $4)
    ON CONFLICT (agency) DO NOTHING
    RETURNING agency"""

SELECT_ACCOUNTS = """SELECT a.agency, a.currency, a.low_balance_minor, a.opened_by,
        a.opened_at, c.closed_at
    FROM deposit_account a LEFT JOIN deposit_closure c USING (agency)
    WHERE $1::text IS NULL OR a.agency = $1
    ORDER BY a.agency"""

INSERT_CLOSURE = """INSERT INTO deposit_closure (agency, reason, closed_by)
    VALUES ($1, $2, $3)"""

# The balances of one account or all: the deposit, and the ledger net of the postings
# outside the latest closed run's region ($2 posting_max, $3 cutoff; regions nest, so
# that region is every posting any closed run settled: migration 0010,
# settlement.record.previous_region). A posting dated after the cutoff, or committed
# after the run took its postings, is unsettled whatever its date.
SELECT_BALANCES = """SELECT a.agency, a.currency, a.low_balance_minor,
        c.closed_at IS NOT NULL AS closed,
        coalesce((SELECT sum(m.amount_minor) FROM deposit_movement m
                  WHERE m.agency = a.agency), 0)::bigint AS deposit_minor,
        coalesce((SELECT sum(e.amount_minor) FROM ledger_entry e
                  WHERE e.owner = a.agency AND e.currency = a.currency
                    AND (e.local_date > $3 OR e.posting_id > $2)), 0)::bigint
            AS unsettled_minor
    FROM deposit_account a LEFT JOIN deposit_closure c USING (agency)
    WHERE $1::text IS NULL OR a.agency = $1
    ORDER BY a.agency"""

SELECT_DEPOSIT = """SELECT coalesce(sum(amount_minor), 0)::bigint FROM deposit_movement
    WHERE agency = $1"""

MOVEMENT_COLUMNS = "id, agency, currency, kind, amount_minor, reference, due_id, source_key, " \
                   "actor, at"

INSERT_MOVEMENT = f"""INSERT INTO deposit_movement (agency, currency, kind, amount_minor,
        reference, due_id, source_key, actor)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (source_key) DO NOTHING
    RETURNING {MOVEMENT_COLUMNS}"""

SELECT_MOVEMENT_BY_KEY = f"SELECT {MOVEMENT_COLUMNS} FROM deposit_movement WHERE source_key = $1"

SELECT_MOVEMENT_OF_DUE = f"SELECT {MOVEMENT_COLUMNS} FROM deposit_movement WHERE due_id = $1"

SELECT_MOVEMENTS = f"""SELECT {MOVEMENT_COLUMNS} FROM deposit_movement WHERE agency = $1
    ORDER BY id"""

# The agency's latest alert, and whether it has been cleared since.
SELECT_LAST_ALERT = """SELECT a.id, a.threshold_minor, c.alert_id IS NOT NULL AS cleared
    FROM deposit_alert a LEFT JOIN deposit_alert_cleared c ON c.alert_id = a.id
    WHERE a.agency = $1
    ORDER BY a.id DESC LIMIT 1"""

INSERT_ALERT = """INSERT INTO deposit_alert (agency, currency, available_minor,
        deposit_minor, threshold_minor, mail_id)
    VALUES ($1, $2, $3, $4, $5, $6)
    RETURNING id"""

INSERT_CLEARED = """INSERT INTO deposit_alert_cleared (alert_id, available_minor)
    VALUES ($1, $2)
    ON CONFLICT (alert_id) DO NOTHING"""

SELECT_ALERTS = """SELECT a.id, a.agency, a.currency, a.available_minor, a.deposit_minor,
        a.threshold_minor, a.mail_id, a.at, c.at AS cleared_at
    FROM deposit_alert a LEFT JOIN deposit_alert_cleared c ON c.alert_id = a.id
    WHERE $1::text IS NULL OR a.agency = $1
    ORDER BY a.id"""

SELECT_CONTACT = "SELECT name, finance_email FROM agency WHERE symbol = $1"


def _movement(r: Any, *, duplicate: bool = False) -> Movement:
    return Movement(id=r["id"], agency=r["agency"], kind=MovementKind(r["kind"]),
                    amount=Money(r["amount_minor"], r["currency"]), reference=r["reference"],
                    due_id=r["due_id"], source_key=r["source_key"], actor=r["actor"],
                    at=r["at"], duplicate=duplicate)


def _account(r: Any) -> Account:
    return Account(agency=r["agency"], currency=r["currency"],
                   low_minor=r["low_balance_minor"], opened_by=r["opened_by"],
                   opened_at=r["opened_at"], closed_at=r["closed_at"])


# --------------------------------------------------------------------------
# the rules, pure
# --------------------------------------------------------------------------

def deposit_share(direction: dues.Direction, deposit_minor: int, outstanding_minor: int) -> int:
    """What a deposit pays of a statement (to_centre: what it holds, at most the
    outstanding amount), or is credited with (to_agency: all that is outstanding)."""
    if direction is dues.Direction.TO_CENTRE:
        return max(0, min(deposit_minor, outstanding_minor))
    return max(0, outstanding_minor)


def alert_step(balance: DepositBalance, alerted: bool) -> AlertStep | None:
    """What a look at the balance does: alert a new fall below the threshold, clear the
    alert of a fall that is over, or nothing (`alerted`: an alert not cleared yet)."""
    if balance.closed:
        return None
    if balance.low:
        return None if alerted else AlertStep.ALERT
    return AlertStep.CLEAR if alerted else None


def low_balance_mail(b: DepositBalance, name: str, today: datetime.date) -> tuple[str, str]:
    """The alert's subject and text, in Chinese and English like the statements' mail."""
    c = b.currency
    available, threshold = f"{b.available.amount_text()} {c}", f"{b.threshold.amount_text()} {c}"
    deposit, unsettled = f"{b.deposit.amount_text()} {c}", f"{b.unsettled.amount_text()} {c}"
    subject = f"馆际互借预付款余额不足 ILL deposit balance low — {name}"
    zh = (f"{name}（{b.agency}）：截至 {today}，贵馆在馆际互借中心的预付款可用余额为 "
          f"{available}，低于提醒额度 {threshold}。\n"
          f"预付款余额 {deposit}，尚未结算的费用净额 {unsettled}。\n"
          "请及时充值；结算时预付款不足的部分将按结算单另行收取。")
    en = (f"{name} ({b.agency}): on {today} the available balance of your deposit with the "
          f"ILL centre is {available}, below the alert threshold of {threshold}.\n"
          f"Deposit {deposit}; charges not yet settled, net {unsettled}.\n"
          "Please top up your deposit; what the deposit cannot pay at settlement is asked "
          "for by the statement as usual.")
    return subject, f"{zh}\n\n{en}\n"


def low_balance_message(b: DepositBalance, alert_id: int, today: datetime.date) -> Outgoing:
    """The alert on ill.finance: `deposit.<symbol>`."""
    return Outgoing(exchange=FINANCE, routing_key=f"deposit.{b.agency}",
                    body={"kind": "deposit_low", "alertId": alert_id,
                          "date": today.isoformat(), **b.to_json()},
                    message_type="deposit_low", correlation_id=f"deposit-alert-{alert_id}",
                    headers={"agency": b.agency})


# --------------------------------------------------------------------------
# accounts and balances
# --------------------------------------------------------------------------


async def _lock_account(conn: Connection, agency: str) -> None:
    """One writer per agency's deposit at a time (movements, alerts): the balance read
    under it is the balance the write changes."""
    await keyed_transaction_lock(conn, Lock.DEPOSIT_ACCOUNT, agency)

async def open_account(conn: Connection, agency: str, currency: str, low_minor: int | None,
                       actor: str) -> Account:
    """Open the agency's deposit account; DepositError if it has one (open or closed) or
    is not a known agency. `low_minor` None: the settings' threshold applies."""
    if low_minor is not None and low_minor < 0:
        raise DepositError(f"a low-balance threshold cannot be negative ({low_minor})")
    Money(0, currency)  # ValueError naming a code that is not ISO 4217
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM agency WHERE symbol = $1", agency) is None:
            raise DepositError(f"no agency {agency!r}")
        if await conn.fetchval(INSERT_ACCOUNT, agency, currency, low_minor, actor) is None:
            raise DepositError(f"{agency} already has a deposit account")
        return await account(conn, agency)


async def accounts(conn: Connection) -> list[Account]:
    return [_account(r) for r in await conn.fetch(SELECT_ACCOUNTS, None)]


async def account(conn: Connection, agency: str) -> Account:
    """The agency's deposit account, open or closed; DepositError if it has none."""
    row = await conn.fetchrow(SELECT_ACCOUNTS, agency)
    if row is None:
        raise DepositError(f"{agency} has no deposit account (run.py deposit open)")
    return _account(row)


async def _open(conn: Connection, agency: str, currency: str | None = None) -> Account:
    acct = await account(conn, agency)
    if acct.closed:
        raise DepositError(f"the deposit account of {agency} is closed")
    if currency is not None and currency != acct.currency:
        raise DepositError(f"the deposit account of {agency} is in {acct.currency}, "
                           f"not {currency}")
    return acct


async def balances(conn: Connection, *, rules: Payments,
                   agency: str | None = None) -> list[DepositBalance]:
    """The balance of every deposit account (or of one agency's)."""
    return await _balances(conn, agency, rules.deposit_low_minor)


async def _balances(conn: Connection, agency: str | None,
                    default_low_minor: int) -> list[DepositBalance]:
    prev_max, prev_cutoff = await previous_region(conn, None)
    return [DepositBalance(
        agency=r["agency"], deposit=Money(r["deposit_minor"], r["currency"]),
        unsettled=Money(r["unsettled_minor"], r["currency"]),
        threshold=Money(default_low_minor if r["low_balance_minor"] is None
                        else r["low_balance_minor"], r["currency"]),
        closed=r["closed"]) for r in await conn.fetch(SELECT_BALANCES, agency, prev_max,
                                                      prev_cutoff)]


async def balance(conn: Connection, agency: str, *, rules: Payments) -> DepositBalance:
    """The agency's deposit, its unsettled charges, what is available, and whether that
    is low; DepositError if it has no deposit account."""
    found = await balances(conn, rules=rules, agency=agency)
    if not found:
        raise DepositError(f"{agency} has no deposit account (run.py deposit open)")
    return found[0]


async def movements(conn: Connection, agency: str) -> list[Movement]:
    return [_movement(r) for r in await conn.fetch(SELECT_MOVEMENTS, agency)]


# --------------------------------------------------------------------------
# money in and out
# --------------------------------------------------------------------------

async def topup(conn: Connection, agency: str, amount: Money, reference: str | None,
                actor: str, source_key: str | None = None) -> Movement:
    """Money the agency paid into its deposit. Idempotent by `source_key` (a bank entry
    imported twice is one top-up: the first movement comes back, `duplicate`). Clears a
    low-balance alert the top-up ends."""
    if amount.minor <= 0:
        raise DepositError(f"a top-up must be above zero, not {amount}")
    async with conn.transaction():
        await _lock_account(conn, agency)
        if source_key is not None:
            found = await conn.fetchrow(SELECT_MOVEMENT_BY_KEY, source_key)
            if found is not None:
                return _checked_duplicate(found, agency, amount, source_key)
        await _open(conn, agency, amount.currency)
        moved = await _move(conn, agency, MovementKind.TOPUP, amount, reference=reference,
                            actor=actor, source_key=source_key)
        await _clear_if_over(conn, agency)
        return moved


def _checked_duplicate(found: Any, agency: str, amount: Money, source_key: str) -> Movement:
    first = _movement(found, duplicate=True)
    if (first.agency, first.amount) != (agency, amount):
        raise DepositError(f"source key {source_key!r} was recorded as {first.amount} for "
                           f"{first.agency}, not {amount} for {agency}")
    return first


async def refund(conn: Connection, agency: str, amount: Money, reference: str | None,
                 actor: str) -> Movement:
    """Money paid back to the agency out of its deposit (at most the deposit)."""
    if amount.minor <= 0:
        raise DepositError(f"a refund must be above zero, not {amount}")
    async with conn.transaction():
        await _lock_account(conn, agency)
        await _open(conn, agency, amount.currency)
        held = Money(await conn.fetchval(SELECT_DEPOSIT, agency), amount.currency)
        if amount.minor > held.minor:
            raise DepositError(f"the deposit of {agency} holds {held}; {amount} cannot be "
                               "refunded")
        return await _move(conn, agency, MovementKind.REFUND, -amount, reference=reference,
                           actor=actor)


async def close_account(conn: Connection, agency: str, reason: str, actor: str) -> Account:
    """Close the account (for good); its deposit must be refunded to zero first."""
    if not reason.strip():
        raise DepositError("say why the deposit account is closed")
    async with conn.transaction():
        await _lock_account(conn, agency)
        acct = await _open(conn, agency)
        held = Money(await conn.fetchval(SELECT_DEPOSIT, agency), acct.currency)
        if held.minor != 0:
            raise DepositError(f"the deposit of {agency} still holds {held}: refund it first")
        await conn.execute(INSERT_CLOSURE, agency, reason.strip(), actor)
        return await account(conn, agency)


async def _move(conn: Connection, agency: str, kind: MovementKind, amount: Money, *,
                reference: str | None, actor: str, due_id: int | None = None,
                source_key: str | None = None) -> Movement:
    row = await conn.fetchrow(INSERT_MOVEMENT, agency, amount.currency, kind.value,
                              amount.minor, reference, due_id, source_key, actor)
    if row is None:  # only a concurrent writer of the same key, which the lock rules out
        raise DepositError(f"source key {source_key!r} was recorded meanwhile")
    return _movement(row)


# --------------------------------------------------------------------------
# a run netted against the deposits
# --------------------------------------------------------------------------

async def net_run(conn: Connection, run_id: int, today: datetime.date,
                  actor: str = "settlement") -> list[Netted]:
    """Net the run's statements against the deposits of their agencies (open accounts in
    the statement's currency): see the module's docstring. Each statement is netted
    once: a second call does nothing. Called in the run's closing transaction."""
    open_accounts = {a.agency: a for a in await accounts(conn) if not a.closed}
    done: list[Netted] = []
    for p in await dues.positions(conn, run_id=run_id):
        acct = open_accounts.get(p.agency)
        if acct is None or acct.currency != p.currency:
            continue
        netted = await _net_due(conn, p.due_id, today, actor)
        if netted is not None:
            done.append(netted)
    return done


async def _net_due(conn: Connection, due_id: int, today: datetime.date,
                   actor: str) -> Netted | None:
    async with conn.transaction():
        # The due's lock first (as record_payment takes it), so that no payment recorded
        # meanwhile makes the share more than is outstanding; then the deposit's.
        await dues.lock_due(conn, due_id)
        p = await dues.position(conn, due_id)
        if p is None:
            raise DepositError(f"no statement due {due_id}")
        await _lock_account(conn, p.agency)
        if await conn.fetchrow(SELECT_MOVEMENT_OF_DUE, due_id) is not None:
            return None
        held = int(await conn.fetchval(SELECT_DEPOSIT, p.agency))
        share = Money(deposit_share(p.direction, held, p.outstanding.minor), p.currency)
        if share.minor == 0:
            return None
        kind = (MovementKind.DRAWDOWN if p.direction is dues.Direction.TO_CENTRE
                else MovementKind.CREDIT)
        moved = await _move(conn, p.agency, kind,
                            -share if kind is MovementKind.DRAWDOWN else share,
                            reference=p.reference, actor=actor, due_id=due_id)
        paid = await dues.record_payment(
            conn, due_id, share, paid_on=today, source=dues.PaymentSource.DEPOSIT,
            actor=actor, source_key=f"deposit:{due_id}", today=today)
        if paid.duplicate:
            raise DepositError(f"statement {p.reference} has a deposit payment but had no "
                               "deposit movement")
        after = Money(held + moved.amount.minor, p.currency)
        await dues.record_event(conn, due_id, dues.EventKind.DEPOSIT, actor=actor,
                                amount=share.minor,
                                detail={"movementId": moved.id, "movement": kind.value,
                                        "depositBefore": Money(held, p.currency).amount_text(),
                                        "depositAfter": after.amount_text(),
                                        "outstanding":
                                            paid.position.outstanding.amount_text()})
        if kind is MovementKind.CREDIT:
            await _clear_if_over(conn, p.agency)
        return Netted(due_id=due_id, agency=p.agency, reference=p.reference, kind=kind,
                      amount=share, deposit_after=after,
                      outstanding_after=paid.position.outstanding, movement_id=moved.id)


# --------------------------------------------------------------------------
# low-balance alerts
# --------------------------------------------------------------------------

async def _clear_if_over(conn: Connection, agency: str) -> None:
    """After money came in: clear the agency's open alert if the available balance is
    back at the threshold that alert was sent for (no settings needed: it is on the
    alert). Under the account's lock, in the caller's transaction."""
    last = await conn.fetchrow(SELECT_LAST_ALERT, agency)
    if last is None or last["cleared"]:
        return
    [b] = await _balances(conn, agency, last["threshold_minor"])
    b = replace(b, threshold=Money(last["threshold_minor"], b.currency))
    if alert_step(b, alerted=True) is AlertStep.CLEAR:
        await conn.execute(INSERT_CLEARED, last["id"], b.available.minor)


async def sweep_low_balances(conn: Connection, settings: Settings,
                             today: datetime.date) -> list[Alert]:
    """Alert every open deposit account whose available balance is below its threshold
    and that has not been alerted for this fall yet; clear the alerts of those that
    rose again. Each alert (row, finance message, mail) in one transaction; safe for
    several hub processes (the account's lock)."""
    sent: list[Alert] = []
    for acct in await accounts(conn):
        if acct.closed:
            continue
        async with conn.transaction():
            await _lock_account(conn, acct.agency)
            b = await balance(conn, acct.agency, rules=settings.payments)
            last = await conn.fetchrow(SELECT_LAST_ALERT, acct.agency)
            alerted = last is not None and not last["cleared"]
            step = alert_step(b, alerted)
            if step is AlertStep.CLEAR and last is not None:
                await conn.execute(INSERT_CLEARED, last["id"], b.available.minor)
            elif step is AlertStep.ALERT:
                sent.append(await _alert(conn, b, today))
    return sent


async def _alert(conn: Connection, b: DepositBalance, today: datetime.date) -> Alert:
    contact = await fetch_one(conn, SELECT_CONTACT, b.agency)
    mail_id = None
    if contact["finance_email"]:
        subject, text = low_balance_mail(b, contact["name"] or b.agency, today)
        mail_id = await enqueue_mail(conn, contact["finance_email"], subject, text,
                                     kind="deposit_low")
    alert_id: int = await conn.fetchval(
        INSERT_ALERT, b.agency, b.currency, b.available.minor, b.deposit.minor,
        b.threshold.minor, mail_id)
    await enqueue(conn, [low_balance_message(b, alert_id, today)])
    return Alert(alert_id, b, mail_id)


@dataclass(frozen=True)
class AlertRow:
    id: int
    agency: str
    available: Money
    deposit: Money
    threshold: Money
    mail_id: int | None
    at: datetime.datetime
    cleared_at: datetime.datetime | None


async def alerts(conn: Connection, agency: str | None = None) -> list[AlertRow]:
    """The alerts sent, oldest first, with when each was cleared."""
    return [AlertRow(r["id"], r["agency"], Money(r["available_minor"], r["currency"]),
                     Money(r["deposit_minor"], r["currency"]),
                     Money(r["threshold_minor"], r["currency"]), r["mail_id"], r["at"],
                     r["cleared_at"]) for r in await conn.fetch(SELECT_ALERTS, agency)]


__all__ = [
    "Account", "Alert", "AlertRow", "AlertStep", "DepositBalance", "DepositError",
    "Movement", "MovementKind", "Netted", "account", "accounts", "alert_step", "alerts",
    "balance", "balances", "close_account", "deposit_share", "low_balance_mail",
    "low_balance_message", "movements", "net_run", "open_account", "refund",
    "sweep_low_balances", "topup",
]
