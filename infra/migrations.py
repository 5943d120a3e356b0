"""The numbered SQL migrations of schemas/migrations/, applied under an advisory lock.

Each file is applied once, in order, in a transaction of its own, and recorded with its
checksum; a file changed after it was applied is refused (write a new one instead).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from infra.locks import Lock, session_lock, unlock

# The SQL is part of the contracts (schemas/); this module only applies it.
MIGRATIONS_DIR = Path(str(resources.files("schemas") / "migrations"))
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    pass


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
