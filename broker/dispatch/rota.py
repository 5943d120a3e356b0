"""Moving along a transaction's rota: forward to a supplier, advance to the next one
when a supplier gives up or stays silent, finish Unfilled when none is left."""

from __future__ import annotations

from datetime import datetime, timedelta

from broker.dispatch import messages, sql, store
from broker.dispatch.desk import Desk, iso
from broker.dispatch.store import Txn
from broker.states import HubEvent, State
from infra.database import Connection
from infra.outbox import Outgoing
from schemas.iso18626_codes import ReasonForMessage


async def advance(desk: Desk, conn: Connection, txn: Txn, now: datetime,
                  why: str) -> list[Outgoing]:
    """Forward to the next pending supplier that is still enabled, or finish Unfilled."""
    nxt = await conn.fetchrow(sql.NEXT_POSITION, txn.id, txn.rota_position or 0)
    if nxt is None:
        return await finish_unfilled(desk, conn, txn, now, f"{why}; no other supplier "
                                     "left in the rota", actor="hub")
    return await forward(desk, conn, txn, nxt["position"], now, note=why)


async def forward(desk: Desk, conn: Connection, txn: Txn, position: int,
                  now: datetime, note: str | None, first: bool = False) -> list[Outgoing]:
    deadline = now + timedelta(hours=desk.deadline_hours(txn.service_level))
    supplier = await conn.fetchval(sql.FORWARD.text, *sql.FORWARD.args({
        "id": txn.id, "position": position, "now": now, "deadline": deadline,
        "today": desk.today(now), "at": desk.clock(), "from_state": txn.state,
        "deadline_text": iso(deadline)}))
    return messages.forwarded(desk, txn, txn.state, supplier, position, now, note, first)


async def finish_unfilled(desk: Desk, conn: Connection, txn: Txn, now: datetime,
                          why: str, actor: str) -> list[Outgoing]:
    await store.set_state(conn, txn, State.UNFILLED, now)
    await store.audit(conn, desk.clock(), txn.id, actor, HubEvent.ROTA_EXHAUSTED, txn.state,
                      State.UNFILLED, None, {"why": why})
    return [messages.to_requester(desk, txn, ReasonForMessage.STATUS_CHANGE, State.UNFILLED,
                                  now, supplier=None, note=why,
                                  reason_unfilled="NoSupplierAvailable"),
            messages.event(txn, txn.state, State.UNFILLED, HubEvent.ROTA_EXHAUSTED, now)]
