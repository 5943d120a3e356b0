"""Server-side sessions (table `web_session`): idle and absolute expiry, CSRF token,
sign-out everywhere.

The cookie carries 32 random bytes (URL-safe); the table keeps only their SHA-256, so
a copy of the database opens no session. Every hub process reads the same table, so
a session works on all of them and a sign-out ends it on all of them.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from infra.database import Connection

CREATE = """INSERT INTO web_session (id_hash, person_id, csrf_token, created_at, last_seen_at,
                                     expires_at, source, method)
            VALUES ($1, $2, $3, $4, $4, $5, $6, $7)"""
# Valid: not revoked, before its absolute expiry, seen within the idle limit, and its
# person still enabled. Touching it moves last_seen_at (at most once a minute).
VALID = """SELECT s.person_id, s.csrf_token, s.created_at, s.method, s.last_seen_at
           FROM web_session s JOIN person p ON p.id = s.person_id
           WHERE s.id_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2::timestamptz
             AND s.last_seen_at > $2::timestamptz - $3::interval AND p.enabled"""
TOUCH = """UPDATE web_session SET last_seen_at = $2
           WHERE id_hash = $1 AND last_seen_at < $2::timestamptz - interval '1 minute'"""
REVOKE = "UPDATE web_session SET revoked_at = $2 WHERE id_hash = $1 AND revoked_at IS NULL"
REVOKE_ALL = """UPDATE web_session SET revoked_at = $2
                WHERE person_id = $1 AND revoked_at IS NULL"""


class Method(StrEnum):
    PASSWORD = "password"
    OIDC = "oidc"


@dataclass(frozen=True)
class Lifetimes:
    idle: timedelta
    absolute: timedelta


@dataclass(frozen=True)
class Session:
    person_id: int
    csrf_token: str
    created_at: datetime
    method: Method


def _hash(cookie: str) -> bytes:
    return hashlib.sha256(cookie.encode()).digest()


async def open_session(conn: Connection, person_id: int, *, method: Method, source: str,
                       now: datetime, lifetimes: Lifetimes) -> str:
    """A new session; returns the cookie value (shown to the browser only)."""
    cookie = secrets.token_urlsafe(32)
    await conn.execute(CREATE, _hash(cookie), person_id, secrets.token_urlsafe(32), now,
                       now + lifetimes.absolute, source, method.value)
    return cookie


async def session_of(conn: Connection, cookie: str | None, *, now: datetime,
                     lifetimes: Lifetimes) -> Session | None:
    if not cookie or len(cookie) > 100:
        return None
    key = _hash(cookie)
    row = await conn.fetchrow(VALID, key, now, lifetimes.idle)
    if row is None:
        return None
    await conn.execute(TOUCH, key, now)
    return Session(row["person_id"], row["csrf_token"], row["created_at"],
                   Method(row["method"]))


def csrf_ok(session: Session, given: str | None) -> bool:
    return given is not None and secrets.compare_digest(session.csrf_token, given)


async def close_session(conn: Connection, cookie: str, now: datetime) -> None:
    await conn.execute(REVOKE, _hash(cookie), now)


async def close_all(conn: Connection, person_id: int, now: datetime) -> int:
    """Sign out everywhere: every open session of the person; returns how many."""
    status = await conn.execute(REVOKE_ALL, person_id, now)
    return int(status.rsplit(" ", 1)[1])
