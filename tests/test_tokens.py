"""API tokens (accounts/tokens.py) and `run.py token` against the real database.

The CLI runs as a user runs it: `run.py` in a child process (tests/support/cli.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from accounts import people, tokens
from accounts.audit import Actor
from accounts.people import Person
from accounts.roles import Grant
from accounts.tokens import Scope, TokenError, TokenRefused, principal_for_token
from app.cli import run_command
from schemas.settings import Settings
from tests.support.agencies import sql_agencies
from tests.support.cli import run
from tests.support.names import unique

BY = Actor.cli("test")
TOKEN = re.compile(r"^illhub_[A-Za-z0-9_-]{43}$", re.M)


async def staff(pool: asyncpg.Pool, role: str = "library_staff") -> tuple[Person, str]:
    [a] = await sql_agencies(pool, "令牌测试图书馆", province="湖南")
    async with pool.acquire() as conn:
        person = await people.add(conn, BY, login=unique("tok-user-"),
                                  display_name="测试 令牌")
        await people.grant(conn, BY, person, Grant.parse(role, f"agency:{a}"))
    return person, a


async def test_a_token_is_stored_only_as_its_hash_and_acts_for_its_person(
        pool: asyncpg.Pool) -> None:
    person, agency = await staff(pool)
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        made = await tokens.create(conn, BY, person, label="ILLiad 同步",
                                   scopes=frozenset({Scope.TRANSACTIONS_READ}), now=now)
        assert TOKEN.fullmatch(made.token)
        stored = await conn.fetchrow("SELECT * FROM api_token WHERE id = $1", made.id)
        assert stored["token_hash"] == hashlib.sha256(made.token.encode()).digest()
        tables = [r["tablename"] for r in await conn.fetch(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        for table in tables:
            assert await conn.fetchval(f'SELECT count(*) FROM "{table}" t '
                                       "WHERE strpos(t::text, $1) > 0", made.token) == 0
        who = await principal_for_token(conn, made.token, now)
        assert who.principal.login == person.login and who.token_id == made.id
        assert who.reach(Scope.TRANSACTIONS_READ).agencies == {agency}
        assert who.reach(Scope.STATEMENTS_READ).nothing  # not in the token's scopes
        # last_used_at moves at most once a minute.
        used = await conn.fetchval("SELECT last_used_at FROM api_token WHERE id = $1",
                                   made.id)
        assert used == now
        await principal_for_token(conn, made.token, now + timedelta(seconds=30))
        assert await conn.fetchval("SELECT last_used_at FROM api_token WHERE id = $1",
                                   made.id) == now
        await principal_for_token(conn, made.token, now + timedelta(minutes=2))
        assert await conn.fetchval("SELECT last_used_at FROM api_token WHERE id = $1",
                                   made.id) == now + timedelta(minutes=2)


async def test_revoked_expired_and_disabled_tokens_are_refused_with_the_reason(
        pool: asyncpg.Pool) -> None:
    person, _ = await staff(pool)
    now = datetime.now(UTC)
    scopes = frozenset({Scope.TRANSACTIONS_READ})
    async with pool.acquire() as conn:
        short = await tokens.create(conn, BY, person, label="短期", scopes=scopes, now=now,
                                    days=1)
        await principal_for_token(conn, short.token, now + timedelta(hours=23))
        with pytest.raises(TokenRefused, match="expired"):
            await principal_for_token(conn, short.token, now + timedelta(days=1))
        gone = await tokens.create(conn, BY, person, label="收回", scopes=scopes, now=now)
        await tokens.revoke(conn, BY, gone.id, now)
        with pytest.raises(TokenRefused, match="revoked"):
            await principal_for_token(conn, gone.token, now)
        with pytest.raises(TokenError, match="already revoked"):
            await tokens.revoke(conn, BY, gone.id, now)
        with pytest.raises(TokenRefused, match="unknown"):
            await principal_for_token(conn, "illhub_" + "A" * 43, now)
        live = await tokens.create(conn, BY, person, label="停用", scopes=scopes, now=now)
        await people.set_enabled(conn, BY, person, False)
        with pytest.raises(TokenRefused, match="disabled"):
            await principal_for_token(conn, live.token, now)


async def test_a_token_is_refused_scopes_its_person_cannot_use(pool: asyncpg.Pool) -> None:
    person, _ = await staff(pool, "finance")
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        with pytest.raises(TokenError, match="view_transactions"):
            await tokens.create(conn, BY, person, label="x", now=now,
                                scopes=frozenset({Scope.TRANSACTIONS_READ}))
        with pytest.raises(TokenError, match="--days"):
            await tokens.create(conn, BY, person, label="x", now=now, days=0,
                                scopes=frozenset({Scope.STATEMENTS_READ}))
    with pytest.raises(TokenError, match="unknown scope 'ledger:write'"):
        tokens.parse_scopes("statements:read,ledger:write")
    assert tokens.parse_scopes(" budgets:read , statements:read") == {
        Scope.BUDGETS_READ, Scope.STATEMENTS_READ}


async def test_token_cli_creates_lists_and_revokes_and_audits_without_the_token(
        settings: Settings, pool: asyncpg.Pool) -> None:
    person, _ = await staff(pool)
    code, out, err = await run(settings, "token", "create", person.login,
                               "--label", "馆际系统 sync", "--scope",
                               "transactions:read,statements:read", "--days", "30")
    assert code == 0, err
    [token] = TOKEN.findall(out)
    token_id = int(re.search(r"token (\d+) for", out)[1])  # type: ignore[index]
    async with pool.acquire() as conn:
        who = await principal_for_token(conn, token, datetime.now(UTC))
    assert who.principal.login == person.login
    assert who.scopes == {Scope.TRANSACTIONS_READ, Scope.STATEMENTS_READ}

    code, listed, err = await run(settings, "token", "list", person.login)
    assert code == 0, err
    assert "馆际系统 sync" in listed and "active" in listed and token not in listed

    code, out, err = await run(settings, "token", "revoke", str(token_id))
    assert code == 0 and "revoked" in out, err
    code, listed, _ = await run(settings, "token", "list", person.login)
    assert "revoked" in listed
    code, _, err = await run(settings, "token", "revoke", str(token_id))
    assert code == 1 and "already revoked" in err

    audited = await pool.fetch(
        "SELECT action, login, before::text, after::text FROM people_audit "
        "WHERE target = $1 AND action LIKE 'token.%' ORDER BY id", person.login)
    assert [r["action"] for r in audited] == ["token.create", "token.revoke"]
    assert all(r["login"].startswith("cli:") for r in audited)
    after_create = json.loads(audited[0]["after"])
    assert after_create["id"] == token_id and after_create["label"] == "馆际系统 sync"
    assert all(token not in (r["before"] or "") + (r["after"] or "") for r in audited)
    assert token not in err


async def test_token_cli_refuses_bad_input_with_a_clear_message(
        settings: Settings, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    """In this process (run_command: the parser and command run.py uses), to save the
    seconds a child `run.py` takes to start; the test above runs the real thing."""
    person, _ = await staff(pool)

    async def token(*args: str) -> tuple[int, str, str]:
        code = await run_command(settings, ["token", *args])
        out, err = capsys.readouterr()
        return code, out, err

    code, _, err = await token("create", person.login, "--label", "x", "--scope", "everything")
    assert code == 2 and "unknown scope 'everything'" in err
    code, _, err = await token("create", "nobody-" + unique(), "--label", "x", "--scope",
                               "transactions:read")
    assert code == 1 and "no account" in err
    code, _, err = await token("create", person.login, "--label", " ", "--scope",
                               "transactions:read")
    assert code == 1 and "label" in err
    code, out, err = await token("create", person.login, "--label", "x", "--scope",
                                 "statements:read,budgets:read")
    assert code == 0 and TOKEN.search(out), err  # library staff may read their finance
    code, _, err = await token("revoke", "999999999")
    assert code == 1 and "no token 999999999" in err
