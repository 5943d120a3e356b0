"""The deadline sweep: a supplier silent past its deadline is sent a Cancel and skipped
(ARCHITECTURE §3.4 rule 4); one whose requester asked to cancel is cancelled. After
them, loans past their stages (broker/dispatch/loans.py): reminders, Overdue, recalls."""

from __future__ import annotations

from datetime import datetime

import asyncpg

from broker import violations
from broker.dispatch import loans, messages, rota, store
from broker.dispatch.desk import Desk, iso
from broker.dispatch.store import Txn
from broker.states import EntryOutcome, HubEvent, State
from infra.database import Connection
from infra.locks import Lock, try_transaction_lock
from infra.outbox import Outgoing, enqueue
from schemas.iso18626_codes import Action, ReasonForMessage


async def sweep_deadlines(desk: Desk, pool: asyncpg.Pool, now: datetime | None = None,
                          batch: int = 100) -> int:
    """Cancel silent suppliers past their deadline and move on; returns how many.

    Safe with several hub processes: one sweeper per tick (advisory lock) and the
    rows themselves taken with SKIP LOCKED, so a transaction an intake is working
    on is left for the next tick.
    """
    now = now or desk.clock()
    handled = 0
    while True:
        async with pool.acquire() as conn, conn.transaction():
            if not await try_transaction_lock(conn, Lock.DEADLINE_SWEEP):
                return handled
            due = await store.past_deadline(conn, now, batch)
            out: list[Outgoing] = []
            for txn in due:
                # The next supplier's deadline runs from now, not from the sweep's start:
                # under load a batch of timeouts can take seconds.
                out += await _deadline_passed(desk, conn, txn, desk.clock())
            await enqueue(conn, out)
        handled += len(due)
        if len(due) < batch:
            async with pool.acquire() as conn, conn.transaction():
                if await try_transaction_lock(conn, Lock.DEADLINE_SWEEP):
                    await violations.sweep_overdue_loans(conn, now)
                    # Due dates kept: reminders, Overdue, recalls (not counted here).
                    await loans.sweep_loans(desk, conn, now)
            return handled


async def _deadline_passed(desk: Desk, conn: Connection, txn: Txn,
                           now: datetime) -> list[Outgoing]:
    if txn.cancel_requested_at:
        return await _cancelled(desk, conn, txn, now)
    await store.close_entry(conn, txn, EntryOutcome.TIMED_OUT, now)
    await store.score(conn, txn.supplier, timed_out=1, open_requests=-1)
    await violations.check_deadline_breaches(conn, txn.current_supplier, now)
    deadline = iso(txn.deadline_at) if txn.deadline_at else None
    await store.audit(conn, desk.clock(), txn.id, "hub", HubEvent.DEADLINE, txn.state,
                      txn.state, None, {"supplier": txn.supplier, "deadline": deadline})
    out = [messages.to_supplier_action(desk, txn, Action.CANCEL, now,
                                       "deadline passed without an answer; the hub has "
                                       "passed this request to another supplier")]
    out += await rota.advance(desk, conn, txn, now, f"{txn.supplier} did not answer by "
                              f"{deadline}")
    return out


async def _cancelled(desk: Desk, conn: Connection, txn: Txn,
                     now: datetime) -> list[Outgoing]:
    """The requester asked to cancel and the supplier did not answer: the hub cancels."""
    await store.close_entry(conn, txn, EntryOutcome.CANCELLED, now)
    await store.score(conn, txn.supplier, open_requests=-1)
    await store.set_state(conn, txn, State.CANCELLED, now)
    await store.audit(conn, desk.clock(), txn.id, "hub", HubEvent.DEADLINE, txn.state,
                      State.CANCELLED, None, {"supplier": txn.supplier, "cancelRequested": True})
    return [messages.to_requester(desk, txn, ReasonForMessage.CANCEL_RESPONSE, State.CANCELLED,
                                  now, supplier=txn.supplier, answer="Y",
                                  note=f"{txn.supplier} did not answer the cancellation "
                                       "by its deadline; the hub cancelled the request"),
            messages.event(txn, txn.state, State.CANCELLED, HubEvent.DEADLINE, now)]
