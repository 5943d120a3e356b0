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


async def fold(pool: asyncpg.Pool) -> bool:
    """Fold the changes committed so far; False if another hub is folding right now."""
    async with pool.acquire() as conn, conn.transaction():
        if not await try_transaction_lock(conn, Lock.COUNTS):
            return False
        await conn.execute(sql.FOLD_SCORECARDS)
        await conn.execute(sql.FOLD_SUPPLIER_DAYS)
    return True
