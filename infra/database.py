"""PostgreSQL: connection pools and the numbered SQL migrations in schemas/migrations/."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from infra.locks import Lock, session_lock, unlock

# A connection to run statements on, usually inside the caller's transaction: one of
# asyncpg's own (`connect`) or one borrowed from a pool (`async with pool.acquire()`).
# asyncpg hands out a PoolConnectionProxy for the latter; it forwards every call to its
# Connection (and passes isinstance(x, asyncpg.Connection)), but asyncpg-stubs types the
# two apart, so a function that takes either says so with this alias.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy

# The SQL is part of the contracts (schemas/); this module only applies it.
MIGRATIONS_DIR = Path(str(resources.files("schemas") / "migrations"))
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


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


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        m = _NAME.match(path.name)
        if not m:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_name.sql")
        found.append(Migration(int(m.group(1)), m.group(2), path.read_text("utf-8")))
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise ValueError(f"two migration files share a version number: {versions}")
    return found


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


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size,
                                     connection_class=PooledConnection)
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


async def ensure_database(dsn: str, report: Callable[[str], None] = print) -> None:
    """Create the database named in `dsn` if it does not exist (first run on a new server)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        parts = urlsplit(dsn)
        name = parts.path.lstrip("/")
        admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
        try:
            report(f"creating database {name}")
            await admin.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
        except asyncpg.DuplicateDatabaseError:
            pass  # another process created it meanwhile
        finally:
            await admin.close()
    else:
        await conn.close()


async def migrate(dsn: str, *, report: Callable[[str], None] = print) -> list[int]:
    """Apply missing migrations in order; safe to run twice or from two processes at once.

    Returns the versions this call applied. A migration file edited after it was
    applied is refused (checksum mismatch): write a new migration instead.
    """
    migrations = load_migrations()
    await ensure_database(dsn, report)
    conn = await asyncpg.connect(dsn)
    applied_now: list[int] = []
    try:
        await session_lock(conn, Lock.MIGRATE)
        try:
            await conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migration (
                       version    integer PRIMARY KEY,
                       name       text NOT NULL,
                       checksum   text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            rows = await conn.fetch("SELECT version, checksum FROM schema_migration")
            done = {r["version"]: r["checksum"] for r in rows}
            for mig in migrations:
                if mig.version in done:
                    if done[mig.version] != mig.checksum:
                        raise MigrationError(
                            f"migration {mig.version:04d}_{mig.name} was changed after it "
                            "was applied; add a new migration instead"
                        )
                    continue
                report(f"applying migration {mig.version:04d}_{mig.name}")
                async with conn.transaction():
                    await conn.execute(mig.sql)
                    await conn.execute(
                        "INSERT INTO schema_migration (version, name, checksum) VALUES ($1,$2,$3)",
                        mig.version, mig.name, mig.checksum,
                    )
                applied_now.append(mig.version)
        finally:
            await unlock(conn, Lock.MIGRATE)
    finally:
        await conn.close()
    return applied_now
