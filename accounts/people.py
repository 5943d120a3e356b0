"""People's accounts and their grants (tables `person`, `role_grant`).

Every change is recorded in the audit of people's actions (accounts/audit.py) in the
same transaction: who did it (`by`), from where, and the before and after.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import asyncpg

from accounts.audit import Actor, record
from accounts.roles import Grant, GrantError, Principal, Role, ScopeKind
from infra.credentials import hash_password, verify_password
from infra.database import Connection

MIN_PASSWORD = 12

ADD = """INSERT INTO person (login, display_name, email, password_hash)
         VALUES ($1, $2, $3, $4) RETURNING id"""
BY_LOGIN = """SELECT id, login, display_name, email, password_hash, enabled,
                     oidc_issuer, oidc_subject
              FROM person WHERE login = $1"""
BY_ID = """SELECT id, login, display_name, email, password_hash, enabled,
                  oidc_issuer, oidc_subject
           FROM person WHERE id = $1"""
BY_SUBJECT = """SELECT id, login, display_name, email, password_hash, enabled,
                       oidc_issuer, oidc_subject
                FROM person WHERE oidc_issuer = $1 AND oidc_subject = $2"""
GRANTS = "SELECT role, scope_kind, scope FROM role_grant WHERE person_id = $1"
GRANT = """INSERT INTO role_grant (person_id, role, scope_kind, scope, granted_by)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING"""
REVOKE = """DELETE FROM role_grant
            WHERE person_id = $1 AND role = $2 AND scope_kind = $3 AND scope = $4"""
SET_ENABLED = "UPDATE person SET enabled = $2 WHERE id = $1"
SET_PASSWORD = "UPDATE person SET password_hash = $2 WHERE id = $1"
LINK_OIDC = "UPDATE person SET oidc_issuer = $2, oidc_subject = $3 WHERE id = $1"
LISTING = """SELECT p.id, p.login, p.display_name, p.email, p.enabled,
                    p.password_hash IS NOT NULL AS has_password,
                    p.oidc_subject IS NOT NULL AS has_oidc,
                    coalesce(array_agg(g.role || ' @ ' || CASE g.scope_kind
                        WHEN 'consortium' THEN 'consortium'
                        ELSE g.scope_kind || ' ' || g.scope END
                        ORDER BY g.role, g.scope) FILTER (WHERE g.role IS NOT NULL),
                        '{}') AS grants
             FROM person p LEFT JOIN role_grant g ON g.person_id = p.id
             GROUP BY p.id ORDER BY p.login"""
AGENCY_EXISTS = "SELECT EXISTS (SELECT 1 FROM agency WHERE symbol = $1)"
REGION_EXISTS = "SELECT EXISTS (SELECT 1 FROM agency WHERE province = $1)"


class AccountError(ValueError):
    """A change to accounts that cannot be made; the message says why."""


@dataclass(frozen=True)
class Person:
    id: int
    login: str
    display_name: str
    email: str | None
    password_hash: str | None
    enabled: bool
    oidc_issuer: str | None
    oidc_subject: str | None


def normal_login(login: str) -> str:
    value = login.strip().lower()
    if not value or any(c.isspace() for c in value) or len(value) > 200:
        raise AccountError(f"login {login!r}: one word, at most 200 characters")
    return value


def check_password_rules(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"a password needs at least {MIN_PASSWORD} characters")


def _person(row: asyncpg.Record | None) -> Person | None:
    return Person(**dict(row)) if row is not None else None


async def find(conn: Connection, login: str) -> Person | None:
    return _person(await conn.fetchrow(BY_LOGIN, normal_login(login)))


async def get(conn: Connection, person_id: int) -> Person | None:
    return _person(await conn.fetchrow(BY_ID, person_id))


async def by_subject(conn: Connection, issuer: str, subject: str) -> Person | None:
    return _person(await conn.fetchrow(BY_SUBJECT, issuer, subject))


async def principal(conn: Connection, person: Person) -> Principal:
    rows = await conn.fetch(GRANTS, person.id)
    grants = frozenset(Grant(Role(r["role"]), ScopeKind(r["scope_kind"]), r["scope"])
                       for r in rows)
    return Principal(person.id, person.login, person.display_name, grants)


async def add(conn: Connection, by: Actor, *, login: str, display_name: str,
              email: str | None = None, password: str | None = None) -> Person:
    """A new account (a password, or none for one that signs in by OIDC only)."""
    name = normal_login(login)
    if password is not None:
        check_password_rules(password)
    hashed = await asyncio.to_thread(hash_password, password) if password else None
    async with conn.transaction():
        if await conn.fetchval("SELECT 1 FROM person WHERE login = $1", name):
            raise AccountError(f"there is already an account {name!r}")
        person_id = await conn.fetchval(ADD, name, display_name, email, hashed)
        await record(conn, by, "person.add", name, after={
            "display_name": display_name, "email": email, "password": bool(password)})
    person = await get(conn, person_id)
    if person is None:
        raise RuntimeError(f"person {person_id} vanished after insert")
    return person


async def check_password(person: Person, password: str) -> bool:
    """Constant-time scrypt check, off the event loop; False without a password."""
    if person.password_hash is None:
        return False
    return await asyncio.to_thread(verify_password, password, person.password_hash)


async def set_password(conn: Connection, by: Actor, person: Person, password: str) -> None:
    check_password_rules(password)
    hashed = await asyncio.to_thread(hash_password, password)
    async with conn.transaction():
        await conn.execute(SET_PASSWORD, person.id, hashed)
        await record(conn, by, "person.password", person.login)


async def set_enabled(conn: Connection, by: Actor, person: Person, enabled: bool) -> None:
    async with conn.transaction():
        await conn.execute(SET_ENABLED, person.id, enabled)
        await record(conn, by, "person.enable" if enabled else "person.disable",
                     person.login, before={"enabled": person.enabled},
                     after={"enabled": enabled})


async def link_oidc(conn: Connection, by: Actor, person: Person, issuer: str,
                    subject: str) -> None:
    async with conn.transaction():
        await conn.execute(LINK_OIDC, person.id, issuer, subject)
        await record(conn, by, "person.link_oidc", person.login,
                     after={"issuer": issuer, "subject": subject})


async def _check_scope(conn: Connection, grant: Grant) -> None:
    if grant.scope_kind is ScopeKind.AGENCY and \
            not await conn.fetchval(AGENCY_EXISTS, grant.scope):
        raise AccountError(f"no agency {grant.scope}")
    if grant.scope_kind is ScopeKind.REGION and \
            not await conn.fetchval(REGION_EXISTS, grant.scope):
        raise AccountError(f"no agency is registered in the region {grant.scope!r}")


async def grant(conn: Connection, by: Actor, person: Person, what: Grant) -> None:
    await _check_scope(conn, what)
    async with conn.transaction():
        await conn.execute(GRANT, person.id, what.role.value, what.scope_kind.value,
                           what.scope, by.login)
        await record(conn, by, "person.grant", person.login, after={"grant": str(what)})


async def revoke(conn: Connection, by: Actor, person: Person, what: Grant) -> bool:
    async with conn.transaction():
        status = await conn.execute(REVOKE, person.id, what.role.value,
                                    what.scope_kind.value, what.scope)
        removed = status.endswith(" 1")
        if removed:
            await record(conn, by, "person.revoke", person.login, before={"grant": str(what)})
    return removed


async def listing(conn: Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(LISTING))


__all__ = ["AccountError", "GrantError", "Person", "add", "find", "get", "grant", "listing",
           "principal", "revoke", "set_enabled", "set_password"]
