"""What people do to statements from the pages and the API (issue 17): record a payment,
open a dispute of a line, resolve a dispute. One place for both doors, so a page and an
API call do exactly the same, and are audited the same.

Settlement decides (`dues.record_payment`, `disputes.open_dispute`, `disputes.resolve`:
they write the history, the `ill.finance` messages and the mail); here the person's
right to act is checked, their input parsed, and every attempt, done or refused, goes
into the audit of people's actions (accounts/audit.py) with the person and where they
came from. A refusal is an `ActionRefused` carrying the HTTP status to answer with and,
for a dispute, settlement's refusal code.

Settling (payments, resolutions) needs `settle_accounts` over the whole consortium
(accounts/roles.py `CONSORTIUM_ONLY`): a library's own finance officer never records a
payment against, or resolves a dispute of, its own statement.
"""

from __future__ import annotations

import datetime
import logging
from typing import Any

import asyncpg

from accounts import audit
from accounts.roles import Permission, Principal
from schemas.money import Money
from schemas.rulefile import parse_amount
from settlement import disputes, dues
from settlement.disputes import Channel, Dispute, DisputeRefused, Outcome, Refusal
from settlement.dues import PaymentResult, Position

log = logging.getLogger(__name__)

SETTLE_REFUSED = ("only the centre's finance office or an operator, over the whole "
                  "consortium, may record payments and resolve disputes; a library's "
                  "finance officer never settles its own statements")

# The HTTP status of each refusal: 404 what is not there, 409 what the statement's or
# the dispute's state forbids now, 422 what is wrong with the request itself.
REFUSAL_STATUS: dict[Refusal, int] = {
    Refusal.NO_STATEMENT: 404,
    Refusal.NO_DISPUTE: 404,
    Refusal.WINDOW_CLOSED: 409,
    Refusal.ALREADY_DISPUTED: 409,
    Refusal.ALREADY_REVERSED: 409,
    Refusal.ALREADY_RESOLVED: 409,
    Refusal.NOT_YOUR_STATEMENT: 422,
    Refusal.NO_REASON: 422,
    Refusal.NOT_A_LINE: 422,
    Refusal.NOT_A_CHARGE: 422,
    Refusal.NOT_THE_REQUESTER: 422,
    Refusal.NOTHING_TO_DISPUTE: 422,
    Refusal.BAD_CORRECTION: 422,
}


class ActionRefused(Exception):
    """An action that was not done: the status to answer with, and why."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def may_settle(who: Principal) -> bool:
    return who.reach(Permission.SETTLE_ACCOUNTS).everything


def amount_of(text: str | None, currency: str, what: str = "amount") -> Money:
    """A decimal amount in the statement's currency ("1250.00"); 400 says what is wrong."""
    try:
        return parse_amount(text if text is not None else "", currency)
    except ValueError as exc:
        raise ActionRefused(400, f"{what}: {exc}") from None


def day_of(text: str | None, default: datetime.date, what: str = "date") -> datetime.date:
    if not text:
        return default
    try:
        return datetime.date.fromisoformat(text.strip())
    except ValueError:
        raise ActionRefused(400, f"{what} {text!r} is not a date YYYY-MM-DD") from None


async def _audited(pool: asyncpg.Pool, actor: audit.Actor, action: str, target: str,
                   before: dict[str, Any], after: dict[str, Any]) -> None:
    async with pool.acquire() as conn:
        await audit.record(conn, actor, action, target, before=before, after=after)
    log.info("%s by %s on %s: %s", action, actor.login, target, after.get("outcome"))


def _state(p: Position, today: datetime.date) -> dict[str, Any]:
    return {"outstanding": p.outstanding.amount_text(), "disputed": p.disputed.amount_text(),
            "state": p.state(today).value}


async def record_payment(pool: asyncpg.Pool, who: Principal, actor: audit.Actor,
                         due: Position, amount: Money, *, paid_on: datetime.date,
                         bank_reference: str | None, today: datetime.date) -> PaymentResult:
    """A manual payment against a due, by the centre."""
    if not may_settle(who):
        raise ActionRefused(403, SETTLE_REFUSED)
    bank_reference = (bank_reference or "").strip()[:140] or None
    asked = {"amount": amount.amount_text(), "currency": amount.currency,
             "paidOn": paid_on.isoformat(), "bankReference": bank_reference}
    try:
        async with pool.acquire() as conn, conn.transaction():
            result = await dues.record_payment(
                conn, due.due_id, amount, paid_on=paid_on, source=dues.PaymentSource.MANUAL,
                actor=who.login, bank_reference=bank_reference, today=today)
            await audit.record(conn, actor, "statement.payment", due.reference,
                               before=_state(due, today),
                               after={**asked, **_state(result.position, today),
                                      "paymentId": result.payment_id, "outcome": "done"})
    except dues.PaymentRefused as exc:
        await _audited(pool, actor, "statement.payment", due.reference, _state(due, today),
                       {**asked, "outcome": "refused", "error": str(exc)})
        raise ActionRefused(422, str(exc)) from None
    return result


async def open_dispute(pool: asyncpg.Pool, who: Principal, actor: audit.Actor,
                       due: Position, *, posting_id: int, reason: str, channel: Channel,
                       today: datetime.date) -> Dispute:
    """A dispute of one line, for the agency whose statement it is (the caller has checked
    that agency is in the person's `dispute_statements` reach)."""
    asked = {"postingId": posting_id, "reason": reason, "channel": channel.value}
    try:
        async with pool.acquire() as conn, conn.transaction():
            opened = await disputes.open_dispute(
                conn, reference=due.reference, posting_id=posting_id, agency=due.agency,
                reason=reason, actor=who.login, channel=channel, today=today)
            await audit.record(conn, actor, "statement.dispute", due.reference,
                               before=_state(due, today),
                               after={**asked, "disputeId": opened.id, "outcome": "done"})
    except DisputeRefused as exc:
        await _audited(pool, actor, "statement.dispute", due.reference, _state(due, today),
                       {**asked, "outcome": "refused", "error": exc.message,
                        "code": exc.code.value})
        raise ActionRefused(REFUSAL_STATUS[exc.code], exc.message, exc.code.value) from None
    return opened


async def resolve(pool: asyncpg.Pool, who: Principal, actor: audit.Actor, d: Dispute, *,
                  outcome: Outcome, reason: str, corrected_fee: Money | None,
                  on: datetime.datetime, tz: str) -> Dispute:
    """Accept (with an optional corrected fee) or reject a dispute, by the centre."""
    if not may_settle(who):
        raise ActionRefused(403, SETTLE_REFUSED)
    asked = {"outcome": outcome.value, "reason": reason,
             "correctedFee": corrected_fee.amount_text() if corrected_fee else None}
    before = {"reference": d.reference, "postingId": d.posting_id, "state": "open"
              if d.open else str(d.outcome)}
    try:
        async with pool.acquire() as conn, conn.transaction():
            done = await disputes.resolve(conn, d.id, outcome=outcome, reason=reason,
                                          actor=who.login, on=on, corrected_fee=corrected_fee,
                                          tz=tz)
            await audit.record(conn, actor, "dispute.resolve", str(d.id), before=before,
                               after={**asked, "adjustment": done.adjustment.amount_text()
                                      if done.adjustment else None, "outcome": "done"})
    except DisputeRefused as exc:
        await _audited(pool, actor, "dispute.resolve", str(d.id), before,
                       {**asked, "outcome": "refused", "error": exc.message,
                        "code": exc.code.value})
        raise ActionRefused(REFUSAL_STATUS[exc.code], exc.message, exc.code.value) from None
    return done


__all__ = ["REFUSAL_STATUS", "SETTLE_REFUSED", "ActionRefused", "amount_of", "day_of",
           "may_settle", "open_dispute", "record_payment", "resolve"]
