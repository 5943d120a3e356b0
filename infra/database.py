"""PostgreSQL: connections and pools, scratch databases (migrations: infra/migrations.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# A connection to run statements on, usually inside the caller's transaction: one of
# asyncpg's own (`connect`) or one borrowed from a pool (`async with pool.acquire()`).
# asyncpg hands out a PoolConnectionProxy for the latter; it forwards every call to its
# Connection (and passes isinstance(x, asyncpg.Connection)), but asyncpg-stubs types the
# two apart, so a function that takes either says so with this alias.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# What a page or an API answer may spend on its queries before PostgreSQL stops them.
READ_TIMEOUT = "15s"


async def read_snapshot(pool: asyncpg.Pool, work: Callable[[Connection], Awaitable[Any]],
                        *, timeout: str = READ_TIMEOUT) -> Any:
    """Run `work` in one consistent, read-only snapshot with a statement timeout (the
    pages and the API: every figure on one answer agrees with the others)."""
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                        readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = '{timeout}'")
        return await work(conn)


class NoRowError(RuntimeError):
    """A statement that returns a row by its form (an aggregate without GROUP BY, an
    INSERT ... RETURNING of a row that is always inserted) returned none."""


async def fetch_one(db: Connection | asyncpg.Pool, query: str, *args: object) -> asyncpg.Record:
    """The row of a statement that always returns one; NoRowError if it returned none."""
    row = await db.fetchrow(query, *args)
    if row is None:
        raise NoRowError(f"no row from a statement that always returns one: "
                         f"{' '.join(query.split()[:8])} ...")
    return row


async def connect(dsn: str) -> asyncpg.Connection:
    return await asyncpg.connect(dsn)


class PooledConnection(asyncpg.Connection):
    """A connection of the hub's pools. Nothing session-level is ever left on one (every
    SET is SET LOCAL, every LISTEN has a connection of its own, advisory locks are
    transaction-level or, settlement's, released in a `finally`), so a release skips
    asyncpg's reset statement (RESET ALL, UNLISTEN *, ...): one round trip less per
    transaction. asyncpg still rolls back a transaction left open."""

    def get_reset_query(self) -> str:
        return ""


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                      generic_plans: bool = False) -> asyncpg.Pool:
    """A pool of the hub's connections. `generic_plans`: its connections plan each prepared
    statement once and keep that plan (PostgreSQL's plan_cache_mode force_generic_plan),
    for a pool that runs the same few statements over and over (the intake, issue 20).
    PostgreSQL plans anew when a table's statistics change (ANALYZE, VACUUM); left to
    choose, it planned the routing read afresh for nearly every request, a third of that
    statement's cost, because its estimates for a generic plan come out dearer on paper."""
    settings = {"plan_cache_mode": "force_generic_plan"} if generic_plans else None
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     connection_class=PooledConnection,
                                     server_settings=settings)
    if pool is None:  # asyncpg's type says it may be; it is not, once awaited
        raise RuntimeError(f"asyncpg created no pool for {dsn!r}")
    return pool


def with_database(url: str, name: str) -> str:
    """`url` with its database replaced by `name` (user, host and query kept)."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


async def create_database(url: str, *, replace: bool = False) -> None:
    """Create the database `url` names (UTF8, from template0), connecting to `postgres` on
    the same server; with `replace`, drop an existing one first. For scratch databases
    (benchmarks, the demo, the chaos harness, tests)."""
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        name = urlsplit(url).path.lstrip("/")
        if replace:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
    finally:
        await admin.close()


async def drop_database(url: str) -> None:
    """Drop the database `url` names if it exists, ending its sessions (WITH FORCE)."""
    admin = await asyncpg.connect(with_database(url, "postgres"))
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{urlsplit(url).path.lstrip("/")}" '
                            "WITH (FORCE)")
    finally:
        await admin.close()


