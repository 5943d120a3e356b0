"""PostgreSQL for the tests: one database per run, migrated once, and scratch databases.

Every test of a run shares the run's database (`illhub_test_<run>`, dropped at the
end), so a test makes its own agencies, budgets and transactions and scopes its
checks to them (see README "Tests"). A test whose subject reads the whole database
(several hub processes sweeping every open transaction, migrations from scratch)
gets a scratch database of its own from `scratch_database`.

The fixtures are lazy: nothing connects until a test asks for `database_url` or
`pool`, so tests that need no server run where PostgreSQL is down (marker `pg`).
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import pytest

from infra.database import create_database, create_pool, drop_database, with_database
from infra.migrations import load_migrations, migrate
from tests.support.names import RUN_ID

PG_ADMIN = os.environ.get("ILLHUB_TEST_PG_ADMIN_URL",
                          "postgresql://postgres@127.0.0.1:5432/postgres")


def database_url_for(name: str) -> str:
    """The URL of database `name` on the test server."""
    return f"{PG_ADMIN.rsplit('/', 1)[0]}/{name}"


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    """The run's database, created and migrated on first use, dropped at the end."""
    name = f"illhub_test_{RUN_ID}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
    finally:
        await admin.close()
    url = database_url_for(name)
    await migrate(url, report=lambda _m: None)
    yield url
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    """A connection pool on the run's database, shared by every test."""
    p = await create_pool(database_url, max_size=8)
    yield p
    await p.close()


@asynccontextmanager
async def scratch_database(label: str, *, migrated: bool = True) -> AsyncIterator[str]:
    """A database of one test's own (`illhub_<label>_<token>`), dropped when it ends."""
    url = with_database(PG_ADMIN, f"illhub_{label}_{secrets.token_hex(3)}")
    await create_database(url, replace=True)
    try:
        if migrated:
            await migrate(url, report=lambda _m: None)
        yield url
    finally:
        await drop_database(url)


def check_list(constraint: str, column: str) -> set[str]:
    """The values a CHECK (`column` IN (...)) allows, as the newest migration that
    (re)defines `constraint` writes them: to hold a table's list against its enum."""
    newest = [m for m in load_migrations() if constraint in m.sql][-1]
    found = re.search(rf"ADD CONSTRAINT {constraint}\s+CHECK \({column} IN \((.*?)\)\)",
                      newest.sql, re.S)
    if found is None:
        raise AssertionError(f"no CHECK list in migration {newest.version:04d}_{newest.name}")
    return set(re.findall(r"'([^']*)'", found.group(1)))
