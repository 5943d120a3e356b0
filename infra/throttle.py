"""Throttling of failed sign-ins, shared by every hub process (table `login_throttle`).

One counter per key: `account:<login>` (a person), `address:<ip>` (a client),
`agency:<symbol>` (an agency's password on `POST /iso18626` Basic auth and on the FTP
drop). Failures within `window` count; at `limit` the key is locked until an operator
unlocks it (`unlock`) or, for addresses and agencies, until `lock_for` has passed. A
success clears the key. The row is updated in one statement, so several hub processes
counting the same key never lose a failure.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from infra.database import Connection
from schemas.settings import Settings

FAIL = """INSERT INTO login_throttle AS t (key, failures, first_failed_at)
          VALUES ($1, 1, $2)
          ON CONFLICT (key) DO UPDATE SET
              failures = CASE WHEN t.first_failed_at < $2::timestamptz - $3::interval
                              THEN 1 ELSE t.failures + 1 END,
              first_failed_at = CASE WHEN t.first_failed_at < $2::timestamptz - $3::interval
                                     THEN $2 ELSE t.first_failed_at END
          RETURNING failures"""
LOCK = "UPDATE login_throttle SET locked_until = $2 WHERE key = $1"
LOCKED = "SELECT locked_until FROM login_throttle WHERE key = $1 AND locked_until > $2"
CLEAR = "DELETE FROM login_throttle WHERE key = $1"
# An account stays locked until an operator unlocks it: a far-future lock.
FOREVER = timedelta(days=36_500)


class KeyKind(StrEnum):
    ACCOUNT = "account"
    ADDRESS = "address"
    AGENCY = "agency"


def key(kind: KeyKind, value: str) -> str:
    return f"{kind.value}:{value.lower() if kind is KeyKind.ACCOUNT else value}"


@dataclass(frozen=True)
class Limits:
    limit: int                 # failures within the window that lock
    window: timedelta
    lock_for: timedelta        # how long an address or agency stays locked


def limits(settings: Settings, kind: KeyKind) -> Limits:
    """The `accounts` settings' limits for keys of `kind` (one place for every caller:
    people's sign-in, POST /iso18626, the FTP drop)."""
    a = settings.accounts
    window = timedelta(minutes=a.failure_window_minutes)
    if kind is KeyKind.ACCOUNT:
        return Limits(a.account_failures, window, FOREVER)
    if kind is KeyKind.ADDRESS:
        return Limits(a.address_failures, window, timedelta(minutes=a.address_lock_minutes))
    return Limits(a.agency_failures, window, timedelta(minutes=a.agency_lock_minutes))


async def first_lock(conn: Connection, keys: Iterable[str], now: datetime) -> datetime | None:
    """The latest lock among `keys`; None when none of them is locked."""
    found = [until for k in keys if (until := await locked_until(conn, k, now)) is not None]
    return max(found, default=None)


async def locked_until(conn: Connection, which: str, now: datetime) -> datetime | None:
    until: datetime | None = await conn.fetchval(LOCKED, which, now)
    return until


async def fail(conn: Connection, which: str, now: datetime, limits: Limits) -> bool:
    """Count a failure; returns whether the key is locked now."""
    failures = int(await conn.fetchval(FAIL, which, now, limits.window))
    if failures < limits.limit:
        return False
    lock = FOREVER if which.startswith(KeyKind.ACCOUNT.value + ":") else limits.lock_for
    await conn.execute(LOCK, which, now + lock)
    return True


async def succeed(conn: Connection, which: str) -> None:
    await conn.execute(CLEAR, which)


async def unlock(conn: Connection, which: str) -> bool:
    """An operator's unlock; returns whether there was anything to clear."""
    return str(await conn.execute(CLEAR, which)).endswith(" 1")
