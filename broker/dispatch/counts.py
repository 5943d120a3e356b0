"""Folding the counters' change rows into their totals (migration 0016, sql.py).

Scorecards and the suppliers' requests of the day are bumped by inserting change
rows, so concurrent intake batches never wait on one another for them. Every hub
schedules the fold; the advisory lock lets one of them do it per tick. Readers see
totals plus changes either way, so how often it runs only bounds the change tables.
"""

from __future__ import annotations

import asyncpg

from broker.dispatch import sql
from infra.locks import Lock, try_transaction_lock

# How often a hub folds (seconds): the change tables stay a few hundred rows at most.
FOLD_SECONDS = 1.0
# How often a hub vacuums the change tables (seconds). A fold deletes what it moved, and
# the dead rows stay in the tables' pages, which every routing read scans, until a
# vacuum: autovacuum visits a database once a minute at best (autovacuum_naptime), so
# the tables would hold a minute of requests' changes (and, with autovacuum off,
# everything since the start: the benchmark's CALIS year slowed down as they grew,
# issue 20). Not at every fold: a vacuum updates the tables' statistics, which makes
# every connection plan routing's statements again.
VACUUM_SECONDS = 10.0


async def fold(pool: asyncpg.Pool) -> bool:
    """Fold the changes committed so far; False if another hub is folding right now."""
    async with pool.acquire() as conn, conn.transaction():
        if not await try_transaction_lock(conn, Lock.COUNTS):
            return False
        await conn.execute(sql.FOLD_SCORECARDS)
        await conn.execute(sql.FOLD_SUPPLIER_DAYS)
    return True


async def vacuum(pool: asyncpg.Pool) -> None:
    """Remove the change tables' dead rows (outside a transaction: VACUUM needs that)."""
    async with pool.acquire() as conn:
        await conn.execute(sql.VACUUM_CHANGES)
