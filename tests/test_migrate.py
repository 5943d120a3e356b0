"""Migrations: recorded, idempotent, safe from two processes at once."""

from __future__ import annotations

import asyncio

import asyncpg

from infra.database import MigrationError, load_migrations, migrate
from tests.conftest import PG_ADMIN, RUN_ID


async def _fresh_db(suffix: str) -> str:
    name = f"illhub_test_{RUN_ID}_{suffix}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


async def _drop(url: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_migrate_twice_applies_once() -> None:
    url = await _fresh_db("twice")
    try:
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
    finally:
        await _drop(url)


async def test_migrate_concurrently() -> None:
    url = await _fresh_db("concurrent")
    try:
        results = await asyncio.gather(*(migrate(url, report=lambda _m: None) for _ in range(4)))
        applied = sorted(v for r in results for v in r)
        # Every migration applied exactly once, by whichever runner got the lock first.
        assert applied == [m.version for m in load_migrations()]
    finally:
        await _drop(url)


async def test_changed_migration_is_refused(monkeypatch) -> None:
    url = await _fresh_db("changed")
    try:
        await migrate(url, report=lambda _m: None)
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("UPDATE schema_migration SET checksum = 'x' WHERE version = 1")
        finally:
            await conn.close()
        try:
            await migrate(url, report=lambda _m: None)
        except MigrationError as exc:
            assert "was changed after it was applied" in str(exc)
        else:
            raise AssertionError("a changed migration must be refused")
    finally:
        await _drop(url)
