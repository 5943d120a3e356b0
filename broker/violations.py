"""Violations and quality flags: raised as they happen, once per condition.

The CALIS report names what the centre found late or not at all: suppliers
charging above their schedule, suppliers that miss deadlines again and again,
copies "delivered" without a usable file, loans not returned, and requesters who
cancel unusually often. Each becomes a row in `flag` and an event `flag.<kind>`
on `ill.events`, in the same transaction as what caused it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from infra.outbox import Outgoing, enqueue
from schemas.wire import EVENTS

KINDS = ("charge_above_schedule", "deadline_breaches", "copy_without_valid_file",
         "loan_overdue", "cancellation_rate", "peer_error")


@dataclass(frozen=True)
class Thresholds:
    deadline_breaches: int = 3            # timed-out forwards of one supplier in `window`
    cancellation_rate: float = 0.3        # share of one requester's requests in `window`
    cancellation_min_requests: int = 10   # below this, a rate says nothing
    overdue_grace: timedelta = timedelta(days=1)
    window: timedelta = timedelta(days=30)


async def raise_flag(conn: asyncpg.Connection, kind: str, subject: str, detail: str, *,
                     key: str, transaction_id: str | None = None,
                     now: datetime | None = None) -> bool:
    """Record the flag and publish its event, unless this condition was flagged before."""
    if kind not in KINDS:
        raise ValueError(f"unknown flag kind {kind!r} (known: {', '.join(KINDS)})")
    row = await conn.fetchrow(
        """INSERT INTO flag (kind, subject, transaction_id, detail, dedupe_key, raised_at)
           VALUES ($1, $2, $3, $4, $5, coalesce($6, now()))
           ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, raised_at""",
        kind, subject, transaction_id, detail, f"{kind}:{key}", now)
    if row is None:
        return False
    await enqueue(conn, [Outgoing(
        exchange=EVENTS, routing_key=f"flag.{kind}", message_type="flag",
        headers={"hub-transaction-id": transaction_id} if transaction_id else {},
        body={"flag": row["id"], "kind": kind, "subject": subject,
              "transactionId": transaction_id, "detail": detail,
              "raisedAt": row["raised_at"].isoformat()})])
    return True


async def check_deadline_breaches(conn: asyncpg.Connection, supplier: str, now: datetime,
                                  limits: Thresholds = Thresholds()) -> None:
    breaches = await conn.fetchval(
        """SELECT count(*) FROM rota_entry WHERE supplier = $1 AND outcome = 'timed_out'
           AND answered_at > $2""", supplier, now - limits.window)
    if breaches >= limits.deadline_breaches:
        await raise_flag(conn, "deadline_breaches", supplier,
                         f"{supplier} let {breaches} requests pass their deadline in the last "
                         f"{limits.window.days} days",
                         key=f"{supplier}:{now.date().isoformat()}", now=now)


async def check_cancellation_rate(conn: asyncpg.Connection, requester: str, now: datetime,
                                  limits: Thresholds = Thresholds()) -> None:
    row = await conn.fetchrow(
        """SELECT count(*) AS total,
                  count(*) FILTER (WHERE cancel_requested_at IS NOT NULL
                                   OR state = 'Cancelled') AS cancelled
           FROM ill_transaction WHERE requester = $1 AND created_at > $2""",
        requester, now - limits.window)
    total, cancelled = row["total"], row["cancelled"]
    if total >= limits.cancellation_min_requests and \
            cancelled / total > limits.cancellation_rate:
        await raise_flag(conn, "cancellation_rate", requester,
                         f"{requester} cancelled {cancelled} of its {total} requests in the "
                         f"last {limits.window.days} days ({cancelled / total:.0%})",
                         key=f"{requester}:{now.date().isoformat()}", now=now)


async def sweep_overdue_loans(conn: asyncpg.Connection, now: datetime,
                              limits: Thresholds = Thresholds()) -> int:
    """Flag every open loan past its due date (plus grace) once; returns how many."""
    rows = await conn.fetch(
        """SELECT id, requester, supplier, due_at FROM ill_transaction
           WHERE due_at < $1 AND closed_at IS NULL
             AND state IN ('Loaned', 'Received', 'Overdue', 'Recalled')
             AND NOT EXISTS (SELECT 1 FROM flag f WHERE f.dedupe_key = 'loan_overdue:' || id)
           LIMIT 500""", now - limits.overdue_grace)
    for r in rows:
        await raise_flag(conn, "loan_overdue", r["requester"],
                         f"loan from {r['supplier']} was due {r['due_at']:%Y-%m-%d} and is "
                         "not returned", key=r["id"], transaction_id=r["id"], now=now)
    return len(rows)


async def listing(pool: asyncpg.Pool, *, kind: str | None = None,
                  limit: int = 100) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT id, raised_at, kind, subject, transaction_id, detail FROM flag
           WHERE $1::text IS NULL OR kind = $1 ORDER BY id DESC LIMIT $2""", kind, limit)
