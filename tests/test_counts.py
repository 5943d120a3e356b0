"""The counters' change rows (broker/dispatch/counts.py): folded into the totals, and the
dead rows folds leave vacuumed away, so the tables routing reads for every request stay
a few pages (issue 20: without it they grew by every request since autovacuum's last
visit, and the benchmark's CALIS year slowed down as they did)."""

from __future__ import annotations

from broker.dispatch.counts import fold, vacuum
from infra.database import create_pool
from tests.support.database import scratch_database

SUPPLIERS = 50


async def test_folds_move_the_changes_and_the_vacuum_lets_their_space_be_used_again() -> None:
    async with scratch_database("counts") as url:
        pool = await create_pool(url, max_size=2)
        try:
            # Only the hub's vacuum here: autovacuum coming by would make the test moot.
            await pool.execute("ALTER TABLE scorecard_change SET (autovacuum_enabled = false)")
            await pool.execute(
                """INSERT INTO agency (symbol, name, roles, password_hash)
                   SELECT 'CALIS:S' || g, '图书馆 ' || g, ARRAY['supplier'], 'x'
                   FROM generate_series(1, $1) g""", SUPPLIERS)

            async def forwarded(n: int) -> int:
                """n forwards spread over the suppliers; the change table's size after."""
                await pool.execute(
                    """INSERT INTO scorecard_change (supplier, forwarded, open_requests)
                       SELECT 'CALIS:S' || (1 + g % $2), 1, 1 FROM generate_series(1, $1) g""",
                    n, SUPPLIERS)
                return int(await pool.fetchval(
                    "SELECT pg_relation_size('scorecard_change')"))

            grown = await forwarded(5000)
            assert await fold(pool)
            assert await pool.fetchval("SELECT count(*) FROM scorecard_change") == 0
            assert await pool.fetchval("SELECT sum(forwarded) FROM scorecard") == 5000
            assert await pool.fetchval(
                "SELECT forwarded FROM scorecard WHERE supplier = 'CALIS:S1'") == 100

            await vacuum(pool)
            # The next changes fill the pages the folded ones left: no growth.
            assert await forwarded(5000) == grown
            assert await fold(pool)
            # Without a vacuum in between, they cannot: the table grows.
            assert await forwarded(5000) > grown
            assert await fold(pool)
            assert await pool.fetchval("SELECT sum(forwarded) FROM scorecard") == 15000
        finally:
            await pool.close()
