"""API tokens for the REST API (table `api_token`).

A token acts for its person: the person's grants decide which agencies it reaches
(`Principal.reach`), and the token's scopes narrow that to the kinds of data it may
read, and the few things it may do (dispute a statement line, settle accounts): a
token made for reading never writes. It is shown once, when made (`illhub_` and 43
URL-safe characters: 256 random bits); the table keeps only its SHA-256, so a copy of
the database opens nothing, and a lookup by hash leaks nothing through timing about a
token an attacker could steer.
It is refused once revoked, past its expiry, or when its person is disabled.

Making and revoking a token are audited (accounts/audit.py) with its id, label and
scopes, never the token itself.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

import asyncpg

from accounts import people
from accounts.audit import Actor, record
from accounts.people import Person
from accounts.roles import NO_REACH, Permission, Principal, Reach
from infra.database import Connection

PREFIX = "illhub_"
TOKEN_BYTES = 32
MAX_TOKEN_LENGTH = 200      # longer is no token of ours: not even hashed
MAX_DAYS = 3660
TOUCH_EVERY = timedelta(minutes=1)

INSERT = """INSERT INTO api_token (token_hash, person_id, label, scopes, created_at, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6) RETURNING id"""
BY_HASH = """SELECT id, person_id, scopes, expires_at, revoked_at, last_used_at
             FROM api_token WHERE token_hash = $1"""
# At most once a minute: a busy client does not write a row per call.
TOUCH = """UPDATE api_token SET last_used_at = $2::timestamptz
           WHERE id = $1
             AND (last_used_at IS NULL OR last_used_at < $2::timestamptz - $3::interval)"""
LISTING = """SELECT t.id, p.login, t.label, t.scopes, t.created_at, t.expires_at,
                    t.revoked_at, t.last_used_at
             FROM api_token t JOIN person p ON p.id = t.person_id
             WHERE $1::bigint IS NULL OR t.person_id = $1
             ORDER BY t.id"""
BY_ID = """SELECT t.id, p.login, t.label, t.scopes, t.created_at, t.expires_at,
                  t.revoked_at, t.last_used_at
           FROM api_token t JOIN person p ON p.id = t.person_id WHERE t.id = $1"""
REVOKE = "UPDATE api_token SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL"


class Scope(StrEnum):
    """What a token may read or do (the API's routes each need one)."""

    TRANSACTIONS_READ = "transactions:read"
    STATEMENTS_READ = "statements:read"
    BUDGETS_READ = "budgets:read"
    STATEMENTS_DISPUTE = "statements:dispute"    # open disputes of statement lines
    STATEMENTS_SETTLE = "statements:settle"      # record payments, resolve disputes


# The permission of the token's person each scope reads (or acts) under.
SCOPE_PERMISSION: dict[Scope, Permission] = {
    Scope.TRANSACTIONS_READ: Permission.VIEW_TRANSACTIONS,
    Scope.STATEMENTS_READ: Permission.VIEW_FINANCE,
    Scope.BUDGETS_READ: Permission.VIEW_FINANCE,
    Scope.STATEMENTS_DISPUTE: Permission.DISPUTE_STATEMENTS,
    Scope.STATEMENTS_SETTLE: Permission.SETTLE_ACCOUNTS,
}


class TokenError(ValueError):
    """A token that cannot be made or revoked; the message says why."""


class TokenRefused(Exception):
    """A bearer token that opens nothing; the message says why (never the token)."""


@dataclass(frozen=True)
class NewToken:
    id: int
    token: str                  # shown once; never stored, logged or audited
    expires_at: datetime | None


@dataclass(frozen=True)
class TokenInfo:
    id: int
    login: str
    label: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None

    def state(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"


@dataclass(frozen=True)
class TokenPrincipal:
    """The person a token acts for, and the scopes it was given."""

    token_id: int
    principal: Principal
    scopes: frozenset[Scope]

    def reach(self, scope: Scope) -> Reach:
        """The agencies `scope` reaches: the person's reach of its permission, or none."""
        if scope not in self.scopes:
            return NO_REACH
        return self.principal.reach(SCOPE_PERMISSION[scope])


def parse_scopes(text: str) -> frozenset[Scope]:
    """`transactions:read,statements:read` (CLI form); TokenError names a wrong one."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    if not names:
        raise TokenError("a token needs at least one scope: " + ", ".join(Scope))
    unknown = [n for n in names if n not in {s.value for s in Scope}]
    if unknown:
        raise TokenError(f"unknown scope {unknown[0]!r}: one of {', '.join(Scope)}")
    return frozenset(Scope(n) for n in names)


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check_new(person: Person, who: Principal, label: str, scopes: frozenset[Scope],
               days: int | None) -> None:
    if not person.enabled:
        raise TokenError(f"{person.login} is disabled: a token of theirs would open nothing")
    if not label.strip() or len(label) > 200:
        raise TokenError("a token needs a label (at most 200 characters) saying what uses it")
    if days is not None and not 1 <= days <= MAX_DAYS:
        raise TokenError(f"--days must be between 1 and {MAX_DAYS}")
    for scope in sorted(scopes):
        permission = SCOPE_PERMISSION[scope]
        if who.reach(permission).nothing:
            raise TokenError(f"{person.login} holds no role that may {permission.value}: "
                             f"scope {scope} would reach nothing")


async def create(conn: Connection, by: Actor, person: Person, *, label: str,
                 scopes: frozenset[Scope], now: datetime, days: int | None = None
                 ) -> NewToken:
    """A new token for `person`; the only time the token itself is seen."""
    _check_new(person, await people.principal(conn, person), label, scopes, days)
    token = PREFIX + secrets.token_urlsafe(TOKEN_BYTES)
    expires = now + timedelta(days=days) if days is not None else None
    names = sorted(s.value for s in scopes)
    async with conn.transaction():
        token_id = await conn.fetchval(INSERT, hash_token(token), person.id, label.strip(),
                                       names, now, expires)
        await record(conn, by, "token.create", person.login, after={
            "id": token_id, "label": label.strip(), "scopes": names, "expires_at": expires})
    return NewToken(token_id, token, expires)


def _info(row: asyncpg.Record) -> TokenInfo:
    return TokenInfo(row["id"], row["login"], row["label"], tuple(row["scopes"]),
                     row["created_at"], row["expires_at"], row["revoked_at"],
                     row["last_used_at"])


async def listing(conn: Connection, person: Person | None = None) -> list[TokenInfo]:
    """Every token (of one person, if given), oldest first; never the token itself."""
    rows = await conn.fetch(LISTING, person.id if person else None)
    return [_info(r) for r in rows]


async def revoke(conn: Connection, by: Actor, token_id: int, now: datetime) -> TokenInfo:
    """Revoke a token at once (every hub process reads the same row)."""
    async with conn.transaction():
        row = await conn.fetchrow(BY_ID + " FOR UPDATE OF t", token_id)
        if row is None:
            raise TokenError(f"there is no token {token_id}")
        info = _info(row)
        if info.revoked_at is not None:
            raise TokenError(f"token {token_id} was already revoked at "
                             f"{info.revoked_at.isoformat()}")
        await conn.execute(REVOKE, token_id, now)
        await record(conn, by, "token.revoke", info.login,
                     before={"id": token_id, "label": info.label, "revoked_at": None},
                     after={"id": token_id, "label": info.label, "revoked_at": now})
    return info


async def principal_for_token(conn: Connection, token: str, now: datetime) -> TokenPrincipal:
    """The person a bearer token acts for; TokenRefused says why it opens nothing."""
    if not token.startswith(PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        raise TokenRefused("not an ILL Hub API token (they start with illhub_)")
    row = await conn.fetchrow(BY_HASH, hash_token(token))
    if row is None:
        raise TokenRefused("unknown token")
    if row["revoked_at"] is not None:
        raise TokenRefused(f"this token was revoked at {row['revoked_at'].isoformat()}")
    if row["expires_at"] is not None and row["expires_at"] <= now:
        raise TokenRefused(f"this token expired at {row['expires_at'].isoformat()}")
    person = await people.get(conn, row["person_id"])
    if person is None or not person.enabled:
        raise TokenRefused("the account this token acts for is disabled")
    if row["last_used_at"] is None or row["last_used_at"] < now - TOUCH_EVERY:
        await conn.execute(TOUCH, row["id"], now, TOUCH_EVERY)
    return TokenPrincipal(row["id"], await people.principal(conn, person),
                          frozenset(Scope(s) for s in row["scopes"] if s in set(Scope)))


__all__ = ["PREFIX", "SCOPE_PERMISSION", "NewToken", "Scope", "TokenError", "TokenInfo",
           "TokenPrincipal", "TokenRefused", "create", "listing", "parse_scopes",
           "principal_for_token", "revoke"]
