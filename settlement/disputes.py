"""Disputes of statement lines (issue 17): a library contests one line of a statement
within the window; the centre accepts (the charge is reversed, or charged again at a
corrected fee, in the open period) or rejects it with a reason.

A line is one ledger posting the run settled. Only the requester of a charge can
dispute it: it is the library asked to pay (a supplier that thinks it earned more has
a charge missing, which is not a dispute of a line). What a dispute contests is the
line's effect on the requester's net, its patron share (fee minus subsidy); while the
dispute is open that amount is not dunned (dues.Position.dunnable).

Accepting never changes the closed run: the reversal (and the corrected charge) are
new postings dated when the dispute is resolved, so the next run carries them and
the ledger still balances (a posting can never enter a closed run's region: the
trigger of migration 0010). Both sides, the requester and the supplier, are told by a
message on `ill.finance` (`dispute.<symbol>`) and by mail in Chinese and English.
"""

from __future__ import annotations

import datetime
import enum
from dataclasses import dataclass
from typing import Any

from infra.database import Connection
from infra.locks import Lock, keyed_transaction_lock
from schemas.money import Money
from settlement import dues, ledger
from settlement.calendar import DEFAULT_TZ
from settlement.notices import tell_both
from settlement.record import run_scope

REASON_MAX = 2000


class Channel(enum.StrEnum):
    AMQP = "amqp"
    API = "api"
    PAGE = "page"
    CLI = "cli"


class Outcome(enum.StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class Refusal(enum.StrEnum):
    """Why a dispute cannot be opened or resolved, in the order the checks run."""

    NO_STATEMENT = "no_statement"
    NOT_YOUR_STATEMENT = "not_your_statement"
    WINDOW_CLOSED = "window_closed"
    NO_REASON = "no_reason"
    NOT_A_LINE = "not_a_line"
    NOT_A_CHARGE = "not_a_charge"
    NOT_THE_REQUESTER = "not_the_requester"
    NOTHING_TO_DISPUTE = "nothing_to_dispute"
    ALREADY_REVERSED = "already_reversed"
    ALREADY_DISPUTED = "already_disputed"
    NO_DISPUTE = "no_dispute"
    ALREADY_RESOLVED = "already_resolved"
    BAD_CORRECTION = "bad_correction"


class DisputeRefused(ValueError):
    def __init__(self, code: Refusal, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Dispute:
    id: int
    due_id: int
    reference: str
    posting_id: int
    transaction_id: str
    event: str
    agency: str                 # the requester, who disputes
    supplier: str
    amount: Money               # the line's effect on the requester's net
    reason: str
    opened_by: str
    channel: Channel
    opened_at: datetime.datetime
    outcome: Outcome | None
    adjustment: Money | None
    resolution: str | None
    resolved_by: str | None
    resolved_at: datetime.datetime | None
    reversal_posting: int | None
    charge_posting: int | None

    @property
    def open(self) -> bool:
        return self.outcome is None

    def to_json(self) -> dict[str, Any]:
        return {
            "disputeId": self.id, "reference": self.reference, "postingId": self.posting_id,
            "transactionId": self.transaction_id, "event": self.event, "agency": self.agency,
            "supplier": self.supplier, "amount": self.amount.amount_text(),
            "currencyCode": self.amount.currency, "reason": self.reason,
            "openedBy": self.opened_by, "channel": self.channel.value,
            "openedAt": self.opened_at.isoformat(),
            "state": self.outcome.value if self.outcome else "open",
            "adjustment": self.adjustment.amount_text() if self.adjustment else None,
            "resolution": self.resolution, "resolvedBy": self.resolved_by,
            "resolvedAt": self.resolved_at.isoformat() if self.resolved_at else None,
            "reversalPosting": self.reversal_posting, "chargePosting": self.charge_posting}


# --------------------------------------------------------------------------
# named statements
# --------------------------------------------------------------------------

SELECT_DISPUTES = """SELECT s.id, s.due_id, d.reference, s.posting_id, p.transaction_id,
        p.event, s.agency, p.supplier, s.amount_minor, d.currency, s.reason, s.opened_by,
        s.channel, s.opened_at, r.outcome, r.adjustment_minor, r.reason AS resolution,
        r.resolved_by, r.resolved_at, r.reversal_posting, r.charge_posting
    FROM statement_dispute s
    JOIN statement_due d ON d.id = s.due_id
    JOIN ledger_posting p ON p.id = s.posting_id
    LEFT JOIN dispute_resolution r ON r.dispute_id = s.id
    WHERE ($1::bigint IS NULL OR s.id = $1)
      AND ($2::text IS NULL OR s.agency = $2 OR p.supplier = $2)
      AND (NOT $3::boolean OR r.dispute_id IS NULL)
    ORDER BY s.id"""

# The posting, if it is a line of the run: in the run's region (migration 0010).
SELECT_LINE = """SELECT id, transaction_id, event, kind, requester, supplier, currency,
        fee_minor, subsidy_minor, patron_share_minor, quote_minor, service_kind, title
    FROM ledger_posting
    WHERE id = $1 AND id <= $2 AND local_date <= $3 AND (id > $4 OR local_date > $5)"""

SELECT_REVERSAL = "SELECT id FROM ledger_posting WHERE reverses = $1"

INSERT_DISPUTE = """INSERT INTO statement_dispute (due_id, posting_id, agency, amount_minor,
        reason, opened_by, channel)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (due_id, posting_id) DO NOTHING
    RETURNING id"""

INSERT_RESOLUTION = """INSERT INTO dispute_resolution (dispute_id, outcome, adjustment_minor,
        reason, resolved_by, reversal_posting, charge_posting)
    VALUES ($1, $2, $3, $4, $5, $6, $7)"""




def _dispute(r: Any) -> Dispute:
    cur = r["currency"]
    return Dispute(
        id=r["id"], due_id=r["due_id"], reference=r["reference"], posting_id=r["posting_id"],
        transaction_id=r["transaction_id"], event=r["event"], agency=r["agency"],
        supplier=r["supplier"], amount=Money(r["amount_minor"], cur), reason=r["reason"],
        opened_by=r["opened_by"], channel=Channel(r["channel"]), opened_at=r["opened_at"],
        outcome=Outcome(r["outcome"]) if r["outcome"] else None,
        adjustment=(Money(r["adjustment_minor"], cur) if r["outcome"] else None),
        resolution=r["resolution"], resolved_by=r["resolved_by"],
        resolved_at=r["resolved_at"], reversal_posting=r["reversal_posting"],
        charge_posting=r["charge_posting"])


async def disputes(conn: Connection, *, agency: str | None = None,
                   open_only: bool = False) -> list[Dispute]:
    """Disputes where the agency is the requester or the supplier (all, without one)."""
    return [_dispute(r) for r in await conn.fetch(SELECT_DISPUTES, None, agency, open_only)]


async def dispute(conn: Connection, dispute_id: int) -> Dispute | None:
    row = await conn.fetchrow(SELECT_DISPUTES, dispute_id, None, False)
    return _dispute(row) if row is not None else None


# --------------------------------------------------------------------------
# opening
# --------------------------------------------------------------------------

async def open_dispute(conn: Connection, *, reference: str, posting_id: int, agency: str,
                       reason: str, actor: str, channel: Channel,
                       today: datetime.date) -> Dispute:
    """Open a dispute of one line; DisputeRefused (with its code) says why not."""
    reason = reason.strip()
    async with conn.transaction():
        p = await dues.by_reference(conn, reference)
        if p is None:
            raise DisputeRefused(Refusal.NO_STATEMENT, f"no statement with reference "
                                 f"{reference!r}")
        await dues.lock_due(conn, p.due_id)
        line = await _check_open(conn, p, posting_id, agency, reason, today)
        amount = int(line["patron_share_minor"])
        dispute_id = await conn.fetchval(INSERT_DISPUTE, p.due_id, posting_id, agency, amount,
                                         reason, actor, channel.value)
        if dispute_id is None:
            raise DisputeRefused(Refusal.ALREADY_DISPUTED,
                                 f"line {posting_id} of {p.reference} is disputed already")
        opened = await dispute(conn, dispute_id)
        if opened is None:
            raise DisputeRefused(Refusal.NO_DISPUTE, f"dispute {dispute_id} vanished")
        await dues.record_event(conn, p.due_id, dues.EventKind.DISPUTED, actor=actor,
                                amount=amount, detail={"disputeId": dispute_id,
                                                       "postingId": posting_id,
                                                       "reason": reason})
        await _tell_both(conn, opened, today)
        return opened


async def _check_open(conn: Connection, p: dues.Position, posting_id: int, agency: str,
                      reason: str, today: datetime.date) -> Any:
    """The checks of a new dispute, in order; the line's row when all pass."""
    if p.agency != agency:
        raise DisputeRefused(Refusal.NOT_YOUR_STATEMENT,
                             f"statement {p.reference} is {p.agency}'s, not {agency}'s")
    if today > p.dispute_until:
        raise DisputeRefused(Refusal.WINDOW_CLOSED,
                             f"statement {p.reference} could be disputed until "
                             f"{p.dispute_until}; it is {today}")
    if not reason:
        raise DisputeRefused(Refusal.NO_REASON, "a dispute needs a reason")
    if len(reason) > REASON_MAX:
        raise DisputeRefused(Refusal.NO_REASON,
                             f"the reason is {len(reason)} characters; at most {REASON_MAX}")
    scope = await run_scope(conn, p.run_id)
    line = await conn.fetchrow(SELECT_LINE, posting_id, scope.posting_max, scope.cutoff,
                               scope.prev_max, scope.prev_cutoff)
    if line is None or agency not in (line["requester"], line["supplier"]) \
            or line["currency"] != p.currency:
        raise DisputeRefused(Refusal.NOT_A_LINE,
                             f"posting {posting_id} is not a line of statement {p.reference}")
    if line["kind"] != "charge":
        raise DisputeRefused(Refusal.NOT_A_CHARGE,
                             f"line {posting_id} is a {line['kind']}, not a charge")
    if line["requester"] != agency:
        raise DisputeRefused(Refusal.NOT_THE_REQUESTER,
                             f"line {posting_id}: {agency} supplied it; only the requester "
                             f"{line['requester']} can dispute a charge")
    if int(line["patron_share_minor"]) <= 0:
        raise DisputeRefused(Refusal.NOTHING_TO_DISPUTE,
                             f"line {posting_id} costs {agency} nothing (fully subsidised)")
    if await conn.fetchval(SELECT_REVERSAL, posting_id) is not None:
        raise DisputeRefused(Refusal.ALREADY_REVERSED,
                             f"line {posting_id} has been reversed already")
    return line


# --------------------------------------------------------------------------
# resolving
# --------------------------------------------------------------------------

async def resolve(conn: Connection, dispute_id: int, *, outcome: Outcome, reason: str,
                  actor: str, on: datetime.datetime, corrected_fee: Money | None = None,
                  tz: str = DEFAULT_TZ) -> Dispute:
    """Accept (reverse the charge; with `corrected_fee`, charge it again at that fee) or
    reject a dispute, with the reason; once only."""
    reason = reason.strip()
    async with conn.transaction():
        await keyed_transaction_lock(conn, Lock.DISPUTE, str(dispute_id))
        d = await dispute(conn, dispute_id)
        if d is None:
            raise DisputeRefused(Refusal.NO_DISPUTE, f"no dispute {dispute_id}")
        if not d.open:
            raise DisputeRefused(Refusal.ALREADY_RESOLVED,
                                 f"dispute {dispute_id} was {d.outcome} by {d.resolved_by}")
        if not reason:
            raise DisputeRefused(Refusal.NO_REASON, "a resolution needs a reason")
        if outcome is Outcome.REJECTED and corrected_fee is not None:
            raise DisputeRefused(Refusal.BAD_CORRECTION, "a rejected dispute corrects nothing")
        await dues.lock_due(conn, d.due_id)
        reversal, charge, adjustment = None, None, 0
        if outcome is Outcome.ACCEPTED:
            reversal, charge, adjustment = await _adjust(conn, d, reason, corrected_fee, on, tz)
        await conn.execute(INSERT_RESOLUTION, dispute_id, outcome.value, adjustment, reason,
                           actor, reversal, charge)
        done = await dispute(conn, dispute_id)
        if done is None:
            raise DisputeRefused(Refusal.NO_DISPUTE, f"dispute {dispute_id} vanished")
        kind = (dues.EventKind.DISPUTE_ACCEPTED if outcome is Outcome.ACCEPTED
                else dues.EventKind.DISPUTE_REJECTED)
        await dues.record_event(conn, d.due_id, kind, actor=actor, amount=adjustment or None,
                                detail={"disputeId": dispute_id, "reason": reason,
                                        "reversalPosting": reversal,
                                        "chargePosting": charge})
        await _tell_both(conn, done, on.date())
        return done


async def _adjust(conn: Connection, d: Dispute, reason: str, corrected: Money | None,
                  on: datetime.datetime, tz: str) -> tuple[int, int | None, int]:
    """The ledger side of an accepted dispute: (reversal posting, new charge posting,
    what the requester is credited in minor units)."""
    original = next((r for r in await ledger.postings(conn, d.transaction_id)
                     if r.posting_id == d.posting_id), None)
    if original is None:
        raise DisputeRefused(Refusal.NOT_A_LINE, f"posting {d.posting_id} is gone")
    if corrected is not None and (corrected.currency != original.fee.currency
                                  or not 0 <= corrected.minor < original.fee.minor):
        raise DisputeRefused(Refusal.BAD_CORRECTION,
                             f"the corrected fee must be below the charged "
                             f"{original.fee.amount_text()} {original.fee.currency} and not "
                             f"negative, in {original.fee.currency}")
    why = f"dispute {d.id} accepted: {reason}"
    reversed_ = await ledger.reverse(conn, transaction_id=d.transaction_id, event=d.event,
                                     reason=why, on=on, tz=tz)
    if reversed_ is None or reversed_.duplicate:
        raise DisputeRefused(Refusal.ALREADY_REVERSED,
                             f"line {d.posting_id} has been reversed already")
    credited = original.patron_share.minor
    charge_id = None
    if corrected is not None and corrected.minor > 0:
        again = await ledger.post_charge(
            conn, transaction_id=d.transaction_id, event=f"{d.event}/dispute-{d.id}",
            requester=original.requester, supplier=original.supplier,
            service_kind=original.service_kind, fee=corrected, quote=original.quote,
            on=on, title=original.title, tz=tz)
        charge_id = again.posting_id
        credited -= again.patron_share.minor
    return reversed_.posting_id, charge_id, max(credited, 0)


# --------------------------------------------------------------------------
# telling both sides
# --------------------------------------------------------------------------

async def _tell_both(conn: Connection, d: Dispute, today: datetime.date) -> None:
    await tell_both(conn, kind="dispute", state=d.outcome.value if d.outcome else "opened",
                    sides=(d.agency, d.supplier), payload=d.to_json(), ident=d.id,
                    correlation_id=d.reference, headers={"dispute-id": d.id},
                    mail=dispute_mail(d))


def dispute_mail(d: Dispute) -> tuple[str, str]:
    """Subject and text of a dispute's mail, in Chinese and English."""
    money = f"{d.amount.amount_text()} {d.amount.currency}"
    line = (f"结算单 {d.reference}，记账号 {d.posting_id}（交易 {d.transaction_id}），金额 {money}",
            f"statement {d.reference}, posting {d.posting_id} (transaction "
            f"{d.transaction_id}), amount {money}")
    if d.outcome is None:
        subject = f"馆际互借结算争议已提出 ILL settlement dispute opened {d.reference}"
        zh = f"{d.agency} 对{line[0]}提出争议。理由：{d.reason}"
        en = f"{d.agency} disputes {line[1]}. Reason: {d.reason}"
        tail = ("争议处理完毕前，该金额不予催缴。",
                "The amount is not asked for while the dispute is open.")
    elif d.outcome is Outcome.ACCEPTED:
        adj = f"{d.adjustment.amount_text() if d.adjustment else '0'} {d.amount.currency}"
        subject = f"馆际互借结算争议已接受 ILL settlement dispute accepted {d.reference}"
        zh = f"对{line[0]}的争议已接受：{d.resolution}"
        en = f"The dispute of {line[1]} is accepted: {d.resolution}"
        tail = (f"调整金额 {adj} 将计入下一结算期。",
                f"The adjustment of {adj} is posted into the next settlement period.")
    else:
        subject = f"馆际互借结算争议已驳回 ILL settlement dispute rejected {d.reference}"
        zh = f"对{line[0]}的争议已驳回：{d.resolution}"
        en = f"The dispute of {line[1]} is rejected: {d.resolution}"
        tail = ("该金额须按原结算单支付。", "The amount is due as the statement says.")
    return subject, f"{zh}\n{tail[0]}\n\n{en}\n{tail[1]}\n"


__all__ = ["Channel", "Dispute", "DisputeRefused", "Outcome", "Refusal", "dispute",
           "dispute_mail", "disputes", "open_dispute", "resolve"]
