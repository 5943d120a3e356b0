"""The accounts' base (issue 16): roles as data, accounts and grants with their audit,
server-side sessions, the shared sign-in throttle."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from accounts import people
from accounts.audit import Actor, read
from accounts.roles import (
    ROLE_PERMISSIONS,
    ROLE_SCOPES,
    Grant,
    GrantError,
    Permission,
    Principal,
    Role,
    ScopeKind,
)
from accounts.sessions import (
    Lifetimes,
    Method,
    close_all,
    close_session,
    csrf_ok,
    open_session,
    session_of,
)
from infra import throttle
from infra.throttle import KeyKind, Limits
from tests.support.agencies import sql_agencies
from tests.support.database import check_list

CLI = Actor.cli("tester")
T0 = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)


# --------------------------------------------------------------------------
# Roles (pure)
# --------------------------------------------------------------------------


def test_the_tables_know_exactly_the_roles_and_scopes() -> None:
    assert check_list("role_grant_role_check", "role") == {r.value for r in Role}
    assert check_list("role_grant_scope_kind_check", "scope_kind") == \
        {k.value for k in ScopeKind}
    assert set(ROLE_PERMISSIONS) == set(ROLE_SCOPES) == set(Role)
    assert ROLE_PERMISSIONS[Role.OPERATOR] == frozenset(Permission)
    assert Permission.ACT_ON_TRANSACTIONS not in ROLE_PERMISSIONS[Role.AUDITOR]


@pytest.mark.parametrize(("role", "scope", "error"), [
    ("library_staff", None, "library_staff can be granted over agency, not consortium"),
    ("operator", "region:北京", "operator can be granted over consortium, not region"),
    ("finance", "agency:", "scope 'agency:': say consortium, region:PROVINCE or agency:SYMBOL"),
    ("boss", None, "unknown role 'boss'"),
])
def test_impossible_grants_say_why(role: str, scope: str | None, error: str) -> None:
    with pytest.raises(GrantError) as caught:
        Grant.parse(role, scope)
    assert str(caught.value).startswith(error)


def test_reach_is_the_union_of_the_grants_that_carry_the_permission() -> None:
    who = Principal(1, "li", "李明", frozenset({
        Grant.parse("library_staff", "agency:CALIS:100010"),
        Grant.parse("regional_admin", "region:上海"),
        Grant.parse("finance", "agency:CALIS:200020")}))
    see = who.reach(Permission.VIEW_TRANSACTIONS)
    assert (see.everything, see.regions, see.agencies) == \
        (False, frozenset({"上海"}), frozenset({"CALIS:100010"}))
    assert see.covers("CALIS:999", "上海") and not see.covers("CALIS:999", "北京")
    money = who.reach(Permission.VIEW_FINANCE)
    assert money.agencies == {"CALIS:100010", "CALIS:200020"}
    assert who.reach(Permission.MANAGE_PEOPLE).nothing
    operator = Principal(2, "ops", "运营", frozenset({Grant.parse("operator", "consortium")}))
    assert operator.reach(Permission.MANAGE_PEOPLE).everything
    assert operator.reach(Permission.VIEW_FINANCE).sql_args() == (True, [], [])


# --------------------------------------------------------------------------
# Accounts and grants, audited
# --------------------------------------------------------------------------


async def test_an_account_its_grants_and_the_audit_of_each_change(pool: asyncpg.Pool) -> None:
    login = f"li-{secrets.token_hex(3)}"
    [symbol] = await sql_agencies(pool, "申请馆", province="湖北")
    async with pool.acquire() as conn:
        person = await people.add(conn, CLI, login=login.upper(), display_name="李明",
                                  email="li@example.edu.cn", password="correct horse 电池")
        assert person.login == login and person.password_hash and \
            "correct horse" not in person.password_hash
        assert await people.check_password(person, "correct horse 电池")
        assert not await people.check_password(person, "wrong password!!")
        with pytest.raises(people.AccountError, match="already an account"):
            await people.add(conn, CLI, login=login, display_name="again")
        with pytest.raises(people.AccountError, match="at least 12 characters"):
            await people.set_password(conn, CLI, person, "short")
        staff = Grant.parse("library_staff", f"agency:{symbol}")
        await people.grant(conn, CLI, person, staff)
        await people.grant(conn, CLI, person, Grant.parse("regional_admin", "region:湖北"))
        with pytest.raises(people.AccountError, match="no agency NOPE:1"):
            await people.grant(conn, CLI, person, Grant.parse("library_staff", "agency:NOPE:1"))
        with pytest.raises(people.AccountError, match="no agency is registered"):
            await people.grant(conn, CLI, person, Grant.parse("regional_admin", "region:火星"))
        who = await people.principal(conn, person)
        assert who.roles == {Role.LIBRARY_STAFF, Role.REGIONAL_ADMIN}
        assert await people.revoke(conn, CLI, person, staff)
        assert not await people.revoke(conn, CLI, person, staff)
        await people.set_enabled(conn, CLI, person, False)
        trail = await read(conn, login=CLI.login, limit=1000)
        mine = [(r["action"], r["target"]) for r in reversed(trail) if r["target"] == login]
        assert mine == [("person.add", login), ("person.grant", login),
                        ("person.grant", login), ("person.revoke", login),
                        ("person.disable", login)]
        assert all("correct horse" not in str(dict(r)) for r in trail)
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("UPDATE people_audit SET login = 'x' WHERE target = $1", login)


# --------------------------------------------------------------------------
# Sessions
# --------------------------------------------------------------------------


async def test_sessions_expire_idle_and_absolute_and_sign_out_everywhere(
        pool: asyncpg.Pool) -> None:
    limits = Lifetimes(idle=timedelta(minutes=30), absolute=timedelta(hours=2))
    async with pool.acquire() as conn:
        person = await people.add(conn, CLI, login=f"s-{secrets.token_hex(3)}",
                                  display_name="会话", password="long enough pass")
        one = await open_session(conn, person.id, method=Method.PASSWORD, source="127.0.0.1",
                                 now=T0, lifetimes=limits)
        assert await conn.fetchval("SELECT count(*) FROM web_session WHERE id_hash = $1",
                                   one.encode()) == 0  # only the hash is stored
        seen = await session_of(conn, one, now=T0 + timedelta(minutes=29), lifetimes=limits)
        assert seen is not None and seen.person_id == person.id
        # One character changed (to another one: a token may start with "x" itself,
        # one run in 64; a CI run met it).
        forged = ("y" if seen.csrf_token[0] == "x" else "x") + seen.csrf_token[1:]
        assert csrf_ok(seen, seen.csrf_token) and not csrf_ok(seen, None) and \
            not csrf_ok(seen, forged)
        # Used every 29 minutes, it lives until the absolute limit, not a minute more.
        at = T0 + timedelta(minutes=29)
        while at < T0 + timedelta(hours=2) - timedelta(minutes=29):
            at += timedelta(minutes=29)
            assert await session_of(conn, one, now=at, lifetimes=limits) is not None
        assert await session_of(conn, one, now=T0 + timedelta(hours=2, seconds=1),
                                lifetimes=limits) is None
        # Idle for longer than 30 minutes: gone.
        two = await open_session(conn, person.id, method=Method.PASSWORD, source="x",
                                 now=T0, lifetimes=limits)
        assert await session_of(conn, two, now=T0 + timedelta(minutes=31),
                                lifetimes=limits) is None
        # Sign-out, and sign-out everywhere; a disabled person has no session.
        three = await open_session(conn, person.id, method=Method.OIDC, source="x", now=T0,
                                   lifetimes=limits)
        four = await open_session(conn, person.id, method=Method.OIDC, source="x", now=T0,
                                  lifetimes=limits)
        await close_session(conn, three, T0)
        assert await session_of(conn, three, now=T0, lifetimes=limits) is None
        assert await session_of(conn, four, now=T0, lifetimes=limits) is not None
        assert await close_all(conn, person.id, T0) >= 1
        assert await session_of(conn, four, now=T0, lifetimes=limits) is None
        five = await open_session(conn, person.id, method=Method.OIDC, source="x", now=T0,
                                  lifetimes=limits)
        await people.set_enabled(conn, CLI, person, False)
        assert await session_of(conn, five, now=T0, lifetimes=limits) is None
        assert await session_of(conn, "not-a-session", now=T0, lifetimes=limits) is None


# --------------------------------------------------------------------------
# Throttle
# --------------------------------------------------------------------------


async def test_twenty_failures_lock_an_account_until_unlocked(pool: asyncpg.Pool) -> None:
    limits = Limits(limit=20, window=timedelta(hours=1), lock_for=timedelta(minutes=15))
    which = throttle.key(KeyKind.ACCOUNT, f"Lock-{secrets.token_hex(3)}")
    async with pool.acquire() as conn:
        for n in range(19):
            assert not await throttle.fail(conn, which, T0 + timedelta(seconds=n), limits)
        assert await throttle.locked_until(conn, which, T0) is None
        assert await throttle.fail(conn, which, T0 + timedelta(seconds=20), limits)
        # An account stays locked (no time runs it out) until an operator unlocks it.
        assert await throttle.locked_until(conn, which, T0 + timedelta(days=30)) is not None
        assert await throttle.unlock(conn, which)
        assert await throttle.locked_until(conn, which, T0) is None
        assert not await throttle.unlock(conn, which)


async def test_an_address_lock_runs_out_and_old_failures_are_forgotten(
        pool: asyncpg.Pool) -> None:
    limits = Limits(limit=3, window=timedelta(minutes=10), lock_for=timedelta(minutes=15))
    which = throttle.key(KeyKind.ADDRESS, f"198.51.100.{secrets.randbelow(250)}")
    async with pool.acquire() as conn:
        await throttle.succeed(conn, which)
        assert not await throttle.fail(conn, which, T0, limits)
        assert not await throttle.fail(conn, which, T0 + timedelta(minutes=1), limits)
        # Eleven minutes after the first failure the window starts again.
        assert not await throttle.fail(conn, which, T0 + timedelta(minutes=11), limits)
        assert not await throttle.fail(conn, which, T0 + timedelta(minutes=12), limits)
        assert await throttle.fail(conn, which, T0 + timedelta(minutes=13), limits)
        assert await throttle.locked_until(conn, which, T0 + timedelta(minutes=20)) is not None
        assert await throttle.locked_until(conn, which, T0 + timedelta(minutes=29)) is None
        await throttle.succeed(conn, which)
        assert await conn.fetchval("SELECT count(*) FROM login_throttle WHERE key = $1",
                                   which) == 0
