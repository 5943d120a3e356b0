"""Actions from the requester (requestingAgencyMessage): answered by the hub
(StatusRequest, a Cancel while a retry is on offer) or relayed to the current supplier
(ARCHITECTURE §3.4 rule 5). A Notification (a note) is allowed in every state and
changes none; with no supplier to tell, it is kept in the audit trail."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from broker import violations
from broker.dispatch import loans, messages, shipping, sql, store
from broker.dispatch.desk import Desk
from broker.dispatch.shipping import Leg, Shipment, ShippingError
from broker.dispatch.store import Txn
from broker.intake import Context, Outcome, Refusal
from broker.states import EntryOutcome, Event, State, allowed_events, iso_status, next_state
from infra.database import Connection
from infra.outbox import Outgoing
from schemas import jsontext
from schemas.iso18626 import RequestingAgencyMessage
from schemas.iso18626_codes import Action, ErrorType, MessageType, ReasonForMessage

log = logging.getLogger(__name__)


async def from_requester(desk: Desk, conn: Connection, ctx: Context) -> Outcome:
    msg = ctx.message_as(RequestingAgencyMessage)
    txn = await store.find(conn, ctx.sender, msg.header.requesting_agency_request_id,
                           MessageType.REQUESTING_AGENCY_MESSAGE)
    event = Event.of_action(msg.action)
    target = next_state(txn.returnable, txn.state, event)
    if not isinstance(target, State):  # None: not allowed (ADVANCE is for suppliers only)
        allowed = [e.iso for e in allowed_events(txn.returnable, txn.state)
                   if not e.is_status]
        raise Refusal(ErrorType.UNSUPPORTED_ACTION_TYPE,
                      f"requestingAgencyMessage.action: {str(msg.action)!r} is not allowed "
                      f"while the request is {txn.state} (allowed: {', '.join(allowed)})",
                      txn.id)
    now = desk.clock()
    if msg.action == Action.STATUS_REQUEST:
        answer = messages.to_requester(desk, txn, ReasonForMessage.STATUS_REQUEST_RESPONSE,
                                       iso_status(txn.state), now, supplier=txn.supplier)
        await store.audit(conn, desk.clock(), txn.id, ctx.sender, event, txn.state,
                          txn.state, ctx.message_id, {})
        return Outcome(outgoing=[answer], transaction_id=txn.id)
    # The parcel of a ShippedReturn, checked before anything is written.
    parcel = _return_parcel(ctx, txn) if msg.action == Action.SHIPPED_RETURN else None
    detail: dict[str, Any] = {"note": msg.note} if msg.note else {}
    if msg.action == Action.CANCEL and txn.state == State.RETRY_POSSIBLE:
        out = await _cancel_retry(desk, conn, txn, msg.note, now)
    elif msg.action == Action.NOTIFICATION and not _supplier_has_it(txn):
        # A note for a supplier that never got the request (nobody could supply it, or
        # the hub itself offered the retry): kept here, since nobody can be told.
        detail["relayed"] = "no: no supplier has the request"
        log.info("Notification from %s on %s: no supplier has the request; kept in the "
                 "audit trail", ctx.sender, txn.id)
        out = []
    else:
        if msg.action == Action.CANCEL:
            await conn.execute(sql.SET_CANCEL_REQUESTED, txn.id, now)
            await violations.check_cancellation_rate(conn, ctx.sender, now)
        if target != txn.state:
            await store.set_state(conn, txn, target, now)
        relayed = ctx.raw
        if msg.action == Action.SHIPPED_RETURN:
            await loans.returned(conn, txn.id, now, in_transit=True)
        if parcel is not None:
            await loans.shipped(conn, txn.id, Leg.BACK, parcel, ctx.sender, ctx.message_id,
                                now)
            detail["shipping"] = parcel.extension()
            # Whatever the supplier's transport: hubExtensions and the note's line.
            relayed = jsontext.copied(ctx.raw)
            shipping.with_shipment(relayed["requestingAgencyMessage"], parcel, "note")
        out = [messages.relay_to_supplier(txn, relayed, ctx.message_id)]
    out.append(messages.event(txn, txn.state, target, event, now))
    await store.audit(conn, desk.clock(), txn.id, ctx.sender, event, txn.state, target,
                      ctx.message_id, detail)
    return Outcome(outgoing=out, transaction_id=txn.id)


def _return_parcel(ctx: Context, txn: Txn) -> Shipment | None:
    """The parcel a ShippedReturn says the requester sent (broker/dispatch/shipping.py)."""
    try:
        return shipping.from_requester(ctx.raw["requestingAgencyMessage"])
    except ShippingError as problem:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, str(problem), txn.id) from problem


def _supplier_has_it(txn: Txn) -> bool:
    """Whether a supplier was sent the request (rota_position is set by a forward only)."""
    return txn.supplier is not None and txn.rota_position is not None


async def _cancel_retry(desk: Desk, conn: Connection, txn: Txn, note: str | None,
                        now: datetime) -> list[Outgoing]:
    """The supplier already stopped and waits for a retry: the hub closes it now."""
    out: list[Outgoing] = []
    await store.set_state(conn, txn, State.CANCELLED, now)
    if txn.rota_position is not None:  # not when the hub itself offered the retry
        await store.close_entry(conn, txn, EntryOutcome.CANCELLED, now)
        await store.score(conn, txn.supplier, open_requests=-1)
        out.append(messages.to_supplier_action(desk, txn, Action.CANCEL, now, note))
    out.append(messages.to_requester(desk, txn, ReasonForMessage.CANCEL_RESPONSE,
                                     State.CANCELLED, now, supplier=txn.supplier, answer="Y"))
    return out
