"""Violations and quality flags: the rules that decide when dispatch raises one.

The CALIS report names what the centre found late or not at all: suppliers
charging above their schedule, suppliers that miss deadlines again and again,
copies "delivered" without a usable file, loans not returned, and requesters who
cancel unusually often. The rules here (thresholds, windows, what counts) detect
the last three; a refused charge is flagged by the ledger (settlement/ledger.py)
and a copy without a file by dispatch (broker/dispatch/supplier.py). Each flag is
kept by infra/flags.py, the one store: a row in `flag` and an event `flag.<kind>`
on `ill.events`, in the same transaction as what caused it, once per condition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from infra.database import Connection, fetch_one
from infra.flags import FlagKind, raise_flag


@dataclass(frozen=True)
class Thresholds:
    deadline_breaches: int = 3            # timed-out forwards of one supplier in `window`
    cancellation_rate: float = 0.3        # share of one requester's requests in `window`
    cancellation_min_requests: int = 10   # below this, a rate says nothing
    overdue_grace: timedelta = timedelta(days=1)
    window: timedelta = timedelta(days=30)


async def check_deadline_breaches(conn: Connection, supplier: str, now: datetime,
                                  limits: Thresholds = Thresholds()) -> None:
    breaches = await conn.fetchval(
        """SELECT count(*) FROM rota_entry WHERE supplier = $1 AND outcome = 'timed_out'
           AND answered_at > $2""", supplier, now - limits.window)
    if breaches >= limits.deadline_breaches:
        await raise_flag(conn, FlagKind.DEADLINE_BREACHES, supplier,
                         f"{supplier} let {breaches} requests pass their deadline in the last "
                         f"{limits.window.days} days",
                         key=f"{supplier}:{now.date().isoformat()}",
                         facts={"breaches": breaches, "window_days": limits.window.days},
                         now=now)


async def check_cancellation_rate(conn: Connection, requester: str, now: datetime,
                                  limits: Thresholds = Thresholds()) -> None:
    row = await fetch_one(
        conn,
        """SELECT count(*) AS total,
                  count(*) FILTER (WHERE cancel_requested_at IS NOT NULL
                                   OR state = 'Cancelled') AS cancelled
           FROM ill_transaction WHERE requester = $1 AND created_at > $2""",
        requester, now - limits.window)
    total, cancelled = row["total"], row["cancelled"]
    if total >= limits.cancellation_min_requests and \
            cancelled / total > limits.cancellation_rate:
        await raise_flag(conn, FlagKind.CANCELLATION_RATE, requester,
                         f"{requester} cancelled {cancelled} of its {total} requests in the "
                         f"last {limits.window.days} days ({cancelled / total:.0%})",
                         key=f"{requester}:{now.date().isoformat()}",
                         facts={"cancelled": cancelled, "requests": total,
                                "window_days": limits.window.days},
                         now=now)


async def sweep_overdue_loans(conn: Connection, now: datetime,
                              limits: Thresholds = Thresholds()) -> int:
    """Flag every open loan past its due date (plus grace) once; returns how many."""
    rows = await conn.fetch(
        """SELECT id, requester, supplier, due_at FROM ill_transaction
           WHERE due_at < $1 AND closed_at IS NULL
             AND state IN ('Loaned', 'Received', 'Overdue', 'Recalled')
             AND NOT flag_raised($2, id)
           LIMIT 500""", now - limits.overdue_grace, FlagKind.LOAN_OVERDUE.value)
    for r in rows:
        await raise_flag(conn, FlagKind.LOAN_OVERDUE, r["requester"],
                         f"loan from {r['supplier']} was due {r['due_at']:%Y-%m-%d} and is "
                         "not returned", key=r["id"], transaction_id=r["id"],
                         facts={"supplier": r["supplier"], "due_at": r["due_at"].isoformat()},
                         now=now)
    return len(rows)
