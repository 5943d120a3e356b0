"""The audit of people's actions: append-only in PostgreSQL, read by `run.py audit` and
the `/audit` page (real HTTP, a real session of a real account)."""

from __future__ import annotations

import html
import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestClient, TestServer

from accounts import people
from accounts.audit import Actor, record
from accounts.people import Person
from accounts.roles import Grant
from accounts.sessions import Method, open_session
from app.cli import run_command
from schemas.settings import Settings
from tests.support.agencies import sql_agencies
from tests.support.cli import run
from tests.support.names import unique
from tests.support.operators import HTML, get_page, rows_of
from web.app import make_app
from web.auth import COOKIE, lifetimes

TEST = Actor.cli("test")


async def person_with(pool: asyncpg.Pool, role: str, scope: str | None,
                      by: Actor = TEST) -> Person:
    async with pool.acquire() as conn:
        person = await people.add(conn, by, login=unique("audit-user-"),
                                  display_name="审计 测试")
        await people.grant(conn, by, person, Grant.parse(role, scope))
    return person


async def session_cookie(settings: Settings, pool: asyncpg.Pool, person: Person) -> str:
    async with pool.acquire() as conn:
        return await open_session(conn, person.id, method=Method.PASSWORD, source="test",
                                  now=datetime.now(UTC), lifetimes=lifetimes(settings))


@asynccontextmanager
async def signed_in(settings: Settings, pool: asyncpg.Pool, person: Person | None
                    ) -> AsyncIterator[TestClient]:
    client = TestClient(TestServer(make_app(settings, pool)))
    await client.start_server()
    if person is not None:
        client.session.cookie_jar.update_cookies(
            {COOKIE: await session_cookie(settings, pool, person)})
    try:
        yield client
    finally:
        await client.close()


async def a_grant_and_its_revocation(pool: asyncpg.Pool) -> tuple[Actor, Person, str]:
    """A library's account granted, then revoked, by an operator at the command line."""
    [library] = await sql_agencies(pool, "审计图书馆", province="甘肃")
    by = Actor.cli(unique("admin"))
    target = await person_with(pool, "library_staff", f"agency:{library}", by)
    async with pool.acquire() as conn:
        await people.grant(conn, by, target, Grant.parse("finance", f"agency:{library}"))
        await people.revoke(conn, by, target, Grant.parse("finance", f"agency:{library}"))
    return by, target, library


async def test_the_audit_table_refuses_update_delete_and_truncate(pool: asyncpg.Pool) -> None:
    login = unique("append-")
    async with pool.acquire() as conn:
        await record(conn, Actor.cli(login), "test.append", login, after={"名字": "张三"})
        for statement in ("UPDATE people_audit SET action = 'x' WHERE target = $1",
                          "DELETE FROM people_audit WHERE target = $1",
                          "TRUNCATE people_audit"):
            # In a transaction rolled back whatever happens: a TRUNCATE let through must
            # not take the shared database's audit with it.
            with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
                async with conn.transaction():
                    await conn.execute(statement, *([login] if "$1" in statement else []))
        row = await conn.fetchrow("SELECT action, after FROM people_audit WHERE target = $1",
                                  login)
    assert row["action"] == "test.append" and json.loads(row["after"]) == {"名字": "张三"}


async def test_run_py_audit_shows_a_grant_with_its_before_and_after(
        settings: Settings, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    by, target, library = await a_grant_and_its_revocation(pool)
    code, out, err = await run(settings, "audit", "--login", by.login, "--action", "person.",
                               "--json")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["action"] for r in rows] == ["person.revoke", "person.grant", "person.grant",
                                           "person.add"]  # newest first
    revoked, granted = rows[0], rows[1]
    assert revoked["target"] == granted["target"] == target.login
    assert revoked["before"] == {"grant": f"finance @ agency {library}"}
    assert revoked["after"] is None
    assert granted["after"] == {"grant": f"finance @ agency {library}"}
    assert revoked["source"] == "cli" and revoked["person_id"] is None

    # The table, in this process (what run.py would print), with --since and --limit.
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    code = await run_command(settings, ["audit", "--login", by.login, "--action",
                                        "person.grant", "--since", "2000-01-01",
                                        "--limit", "1"])
    out = capsys.readouterr().out
    assert code == 0 and "person.grant" in out and "person.revoke" not in out
    assert f'{{"grant": "finance @ agency {library}"}}' in out
    assert out.count("person.grant") == 1
    assert await run_command(settings, ["audit", "--since", "yesterday"]) == 2
    assert "--since" in capsys.readouterr().err
    assert await run_command(settings, ["audit", "--login", by.login, "--since",
                                        tomorrow]) == 0
    assert by.login not in capsys.readouterr().out.split("\n", 2)[-1]


async def test_an_action_prefix_is_a_prefix_not_a_pattern(
        settings: Settings, pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]) -> None:
    """`_` and `%` in --action are characters, as typed (a LIKE would take them as
    wildcards: `probe_` matched `probeXa` too)."""
    by = Actor.cli(unique("prefix"))
    async with pool.acquire() as conn:
        for action in ("probe_a", "probeXa", "probe%b"):
            await record(conn, by, action, "t")
    for prefix, found in (("probe_", ["probe_a"]), ("probe%", ["probe%b"]),
                          ("probe", ["probe%b", "probeXa", "probe_a"])):
        assert await run_command(settings, ["audit", "--login", by.login, "--action", prefix,
                                            "--json"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert [json.loads(line)["action"] for line in lines] == found


async def test_the_audit_page_shows_the_grant_with_filters_and_paging(
        settings: Settings, pool: asyncpg.Pool) -> None:
    by, target, library = await a_grant_and_its_revocation(pool)
    auditor = await person_with(pool, "auditor", None)
    async with signed_in(settings, pool, auditor) as client:
        page = await get_page(client, f"/audit?login={quote(by.login)}&action=person.")
        assert "操作审计" in page and "Before 之前" in page
        rows = [cells for attrs, cells in rows_of(page).rows if "data-id" in attrs]
        assert [r[3] for r in rows] == ["person.revoke", "person.grant", "person.grant",
                                        "person.add"]
        revoked = rows[0]
        assert revoked[1] == by.login and revoked[2] == "cli" and revoked[4] == target.login
        assert revoked[5] == f'{{"grant": "finance @ agency {library}"}}' and revoked[6] == ""
        assert rows[1][6] == f'{{"grant": "finance @ agency {library}"}}'

        first = await get_page(client, f"/audit?login={quote(by.login)}&limit=3")
        assert len([a for a, _ in rows_of(first).rows if "data-id" in a]) == 3
        older = html.unescape(re.search(r'<a href="([^"]+)" id="older"', first)[1])  # type: ignore[index]
        rest = await get_page(client, older)
        assert [c[3] for a, c in rows_of(rest).rows if "data-id" in a] == ["person.add"]
        assert 'id="older"' not in rest

        today = datetime.now(UTC).date()
        none = await get_page(client, f"/audit?login={quote(by.login)}&until=2001-01-01")
        assert "no actions match" in none
        dated = await get_page(client, f"/audit?login={quote(by.login)}&since={today}")
        assert "person.revoke" in dated
        bad = await get_page(client, "/audit?since=31/12/2025", 400)
        assert "since: a date YYYY-MM-DD" in bad


async def test_the_audit_page_needs_view_audit_and_a_session(
        settings: Settings, pool: asyncpg.Pool) -> None:
    [library] = await sql_agencies(pool, "无权图书馆", province="甘肃")
    staff = await person_with(pool, "library_staff", f"agency:{library}")
    async with signed_in(settings, pool, staff) as client:
        async with client.get("/audit", headers=HTML) as resp:
            assert resp.status == 403
    async with signed_in(settings, pool, None) as client:
        async with client.get("/audit", headers=HTML, allow_redirects=False) as resp:
            assert resp.status == 302 and resp.headers["Location"].startswith("/signin")
        async with client.get("/audit") as resp:
            assert resp.status == 401


async def test_a_regional_auditor_sees_only_its_regions_people(
        settings: Settings, pool: asyncpg.Pool) -> None:
    region, elsewhere = unique("审计省"), unique("别省")
    [near] = await sql_agencies(pool, "本省图书馆", province=region)
    [far] = await sql_agencies(pool, "外省图书馆", province=elsewhere)
    by = Actor.cli(unique("regional"))
    ours = await person_with(pool, "library_staff", f"agency:{near}", by)
    theirs = await person_with(pool, "library_staff", f"agency:{far}", by)
    auditor = await person_with(pool, "auditor", f"region:{region}")
    async with signed_in(settings, pool, auditor) as client:
        page = await get_page(client, f"/audit?login={quote(by.login)}")
    targets = {cells[4] for attrs, cells in rows_of(page).rows if "data-id" in attrs}
    assert targets == {ours.login}
    assert theirs.login not in page
