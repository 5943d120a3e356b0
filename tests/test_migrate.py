"""Migrations: recorded, idempotent, safe from two processes at once.

Each test migrates an empty scratch database of its own (PostgreSQL, marker `pg`).
"""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from infra.migrations import MigrationError, load_migrations, migrate
from tests.support.database import scratch_database

pytestmark = pytest.mark.pg  # scratch databases, without the run's database fixture


async def test_migrating_twice_applies_each_migration_once() -> None:
    async with scratch_database("migrate_twice", migrated=False) as url:
        first = await migrate(url, report=lambda _m: None)
        second = await migrate(url, report=lambda _m: None)
        assert first == [m.version for m in load_migrations()]
        assert second == []
        conn = await asyncpg.connect(url)
        try:
            versions = await conn.fetch("SELECT version FROM schema_migration ORDER BY 1")
            assert [r[0] for r in versions] == first
        finally:
            await conn.close()


async def test_four_concurrent_runners_apply_each_migration_once() -> None:
    async with scratch_database("migrate_concurrent", migrated=False) as url:
        results = await asyncio.gather(*(migrate(url, report=lambda _m: None) for _ in range(4)))
        applied = sorted(v for r in results for v in r)
        # Every migration applied exactly once, by whichever runner got the lock first.
        assert applied == [m.version for m in load_migrations()]


async def test_a_migration_changed_after_it_was_applied_is_refused() -> None:
    async with scratch_database("migrate_changed", migrated=False) as url:
        await migrate(url, report=lambda _m: None)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE schema_migration SET checksum = 'x' WHERE version = 1")
        finally:
            await conn.close()
        with pytest.raises(MigrationError, match="was changed after it was applied"):
            await migrate(url, report=lambda _m: None)
