"""Loss and damage claims, the transaction's side (issue 19): which transactions may be
claimed on, the audit trail of every step, and the final state a settled claim leaves.

The claim itself, its workflow and its money are settlement's (settlement/claims.py);
this module, above it, locks the transaction, hands settlement the loan's facts, and
writes what dispatch owns in the same PostgreSQL transaction: the audit row, the state,
and the ISO 18626 news to both sides.

A claim is made on a loan the supplier has sent (returnable, and Loaned, Received,
Overdue, Recalled, ShippedReturn, or already completed). A lost item cannot be claimed
once the supplier has it back (LoanCompleted); a damaged one can (found on check-in).

The final state when a claim is settled (the issue: "a clear final state"):
- lost: CompletedWithoutReturn, ISO 18626's end of a loan that does not come back, from
  any state of a loan still out (as if the supplier had said it; the requester is told
  by a StatusChange from the hub, the supplier by a Notification);
- damaged and shipped back (ShippedReturn): LoanCompleted, the item is back;
- otherwise the state is kept (a damaged item still with the reader comes back as any
  loan does; a completed loan stays completed), and the audit row notes the claim.
Opening, accepting and contesting change no state; each is an audit row.
"""

from __future__ import annotations

import datetime
import enum
import json
from typing import Any

from broker.dispatch import messages, sql, store
from broker.dispatch.desk import Desk
from broker.dispatch.store import Txn
from broker.states import Event, State, iso_status, next_state
from infra.database import Connection
from infra.outbox import Outgoing, enqueue
from schemas.iso18626_codes import Action, ReasonForMessage
from schemas.money import Money
from settlement import claims
from settlement.claims import Claim, ClaimRefused, Kind, Loan, Place, Refusal, Side, Step

# The transaction by its hub id, locked like dispatch locks it for a message.
TXN_BY_ID = f"SELECT {sql.TXN_COLUMNS} FROM ill_transaction WHERE id = $1 FOR UPDATE"

# A loan the supplier has sent: claims can be made.
ON_LOAN = frozenset({State.LOANED, State.RECEIVED, State.OVERDUE, State.RECALLED,
                     State.SHIPPED_RETURN})
CLAIMABLE = ON_LOAN | {State.LOAN_COMPLETED, State.COMPLETED_WITHOUT_RETURN}


class ClaimEvent(enum.StrEnum):
    """A claim's step, as the transaction's audit log names it."""

    OPENED = "claim opened"
    ACCEPTED = "claim accepted"
    CONTESTED = "claim contested"
    SETTLED = "claim settled"


def final_state(kind: Kind, state: State) -> State:
    """The state a settled claim leaves the transaction in (module doc)."""
    if kind is Kind.LOST and state in ON_LOAN:
        target = next_state(True, state, Event.STATUS_COMPLETED_WITHOUT_RETURN)
    elif kind is Kind.DAMAGED and state is State.SHIPPED_RETURN:
        target = next_state(True, state, Event.STATUS_LOAN_COMPLETED)
    else:
        return state
    if not isinstance(target, State):  # the state tables changed under this module
        raise TypeError(f"a {kind} claim cannot close a loan that is {state}")
    return target


def loan_of(txn: Txn) -> Loan:
    """The loan's facts for settlement: its sides, and the item as requested."""
    request = txn.request_body()["request"]
    biblio = request.get("bibliographicInfo") or {}
    publication = request.get("publicationInfo") or {}
    item_type = publication.get("publicationType")
    return Loan(transaction_id=txn.id, requester=txn.requester,
                supplier=txn.current_supplier, service_kind=txn.service_kind,
                title=biblio.get("title") or None,
                item_type=item_type if isinstance(item_type, str) and item_type else None)


async def _locked(conn: Connection, transaction_id: str) -> Txn:
    row = await conn.fetchrow(TXN_BY_ID, transaction_id)
    if row is None:
        raise ClaimRefused(Refusal.NO_TRANSACTION, f"no transaction {transaction_id}")
    return Txn.from_row(row)


async def _audit(conn: Connection, at: datetime.datetime, txn: Txn, actor: str,
                 event: ClaimEvent, to_state: State, c: Claim) -> None:
    detail: dict[str, Any] = {"claim": c.id, "kind": c.kind.value, "where": c.place.value,
                              "state": c.state.value, "total": c.total.amount_text(),
                              "currency": c.total.currency}
    if c.payer is not None:
        detail.update(payer=c.payer.value, posting=c.charge_posting,
                      reversal=c.reversal_posting,
                      settled=(c.settled_amount or Money.zero(c.total.currency)).amount_text())
    await conn.execute(sql.AUDIT, txn.id, at, actor, event.value, txn.state, to_state, None,
                       json.dumps(detail, ensure_ascii=False))


async def open_claim(desk: Desk, conn: Connection, transaction_id: str, *, kind: Kind,
                     place: Place, happened_on: datetime.date, evidence: str,
                     reported_by: Side, declared: Money | None, actor: str) -> Claim:
    """Open a claim on a loan; ClaimRefused (with its code) says why not."""
    now = desk.clock()
    async with conn.transaction():
        txn = await _locked(conn, transaction_id)
        if txn.returnable is not True:
            raise ClaimRefused(Refusal.NOT_A_LOAN,
                               f"transaction {txn.id} is a {txn.service_type} request "
                               f"({txn.service_kind}) not supplied as a loan: only a loaned "
                               "item can be lost or damaged")
        if txn.state not in CLAIMABLE or txn.supplier is None:
            raise ClaimRefused(Refusal.NOT_ON_LOAN,
                               f"transaction {txn.id} is {txn.state}: nothing was sent yet")
        if kind is Kind.LOST and txn.state is State.LOAN_COMPLETED:
            raise ClaimRefused(Refusal.RETURNED_ALREADY,
                               f"transaction {txn.id} is LoanCompleted: the supplier has the "
                               "item back (claim it damaged if it is)")
        c = await claims.open_claim(conn, loan_of(txn), kind=kind, place=place,
                                    happened_on=happened_on, evidence=evidence,
                                    reported_by=reported_by, declared=declared, actor=actor,
                                    today=desk.today(now))
        await _audit(conn, now, txn, actor, ClaimEvent.OPENED, txn.state, c)
        return c


async def answer(desk: Desk, conn: Connection, claim_id: int, step: Step, *, actor: str,
                 note: str) -> Claim:
    """Accept or contest a claim, with the transaction's audit row."""
    async with conn.transaction():
        txn = await _locked(conn, await _transaction_of(conn, claim_id))
        c = await claims.answer(conn, claim_id, step, actor=actor, note=note)
        event = ClaimEvent.ACCEPTED if step is Step.ACCEPTED else ClaimEvent.CONTESTED
        await _audit(conn, desk.clock(), txn, actor, event, txn.state, c)
        return c


async def settle(desk: Desk, conn: Connection, claim_id: int, *, actor: str, note: str,
                 payer: Side | None = None, amount: Money | None = None) -> Claim:
    """Settle a claim (settlement posts the money) and close the transaction as the
    claim says: its final state, the audit row, news to both sides and on ill.events."""
    now = desk.clock()
    async with conn.transaction():
        txn = await _locked(conn, await _transaction_of(conn, claim_id))
        c = await claims.settle(conn, claim_id, actor=actor, note=note, on=now, payer=payer,
                                amount=amount, tz=desk.settings.timezone)
        target = final_state(c.kind, txn.state)
        if target != txn.state:
            await store.set_state(conn, txn, target, now)
        await _audit(conn, now, txn, actor, ClaimEvent.SETTLED, target, c)
        await enqueue(conn, _news(desk, txn, c, target, now))
        return c


def _news(desk: Desk, txn: Txn, c: Claim, target: State,
          now: datetime.datetime) -> list[Outgoing]:
    """What the two sides' ILL systems hear: the requester the new status (from the hub,
    on the supplier's behalf), the supplier a Notification; and the domain event."""
    paid = c.settled_amount or Money.zero(c.total.currency)
    note = (f"claim {c.id} settled: item {c.kind} ({c.place}); {c.payer} pays "
            f"{paid.amount_text()} {paid.currency} in the next settlement run")
    out = [messages.to_supplier_action(desk, txn, Action.NOTIFICATION, now, note)]
    if target == txn.state:
        return [*out, messages.to_requester(desk, txn, ReasonForMessage.NOTIFICATION,
                                            iso_status(txn.state), now, supplier=txn.supplier,
                                            note=note)]
    event = (Event.STATUS_COMPLETED_WITHOUT_RETURN if target is State.COMPLETED_WITHOUT_RETURN
             else Event.STATUS_LOAN_COMPLETED)
    return [*out, messages.to_requester(desk, txn, ReasonForMessage.STATUS_CHANGE,
                                        iso_status(target), now, supplier=txn.supplier,
                                        note=note),
            messages.event(txn, txn.state, target, event, now)]


async def _transaction_of(conn: Connection, claim_id: int) -> str:
    c = await claims.claim(conn, claim_id)
    if c is None:
        raise ClaimRefused(Refusal.NO_CLAIM, f"no claim {claim_id}")
    return c.transaction_id


__all__ = ["CLAIMABLE", "ClaimEvent", "answer", "final_state", "loan_of", "open_claim",
           "settle"]
