"""People's sign-in over real HTTP (web/signin.py): sessions and their expiry, CSRF,
sign-out everywhere, the failed-sign-in throttle for people, addresses and agencies
(POST /iso18626 Basic, FTP), the operators' pages by reach, and `run.py user`.

Every client is an aiohttp session with its own cookie jar, like a browser. Each test
makes its own accounts (logins carry the run id); throttle counters the tests leave
on 127.0.0.1 are cleared after each test, as the suite shares one database.
"""

from __future__ import annotations

import asyncio
import base64
import ftplib
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from accounts import people
from accounts.audit import Actor
from accounts.roles import Grant
from app.hub import Hub
from infra import throttle
from infra.throttle import KeyKind
from schemas.settings import Settings
from tests.support.agencies import MakeAgency
from tests.support.cli import run
from tests.support.delivery import try_login
from tests.support.names import RUN_ID, unique
from tests.support.operators import put_transaction
from web.app import make_app

HTML = {"Accept": "text/html"}
PASSWORD = "a long password 馆际互借 16"
LOCKED = ("This account is locked after too many wrong passwords; ask an operator to unlock "
          "it (run.py user unlock LOGIN).")


@pytest.fixture(autouse=True)
async def forget_the_address(pool: asyncpg.Pool) -> AsyncIterator[None]:
    """This test's wrong passwords from 127.0.0.1 must not lock out the next test."""
    yield
    async with pool.acquire() as conn:
        await throttle.unlock(conn, throttle.key(KeyKind.ADDRESS, "127.0.0.1"))


async def person(pool: asyncpg.Pool, *grants: str, password: str = PASSWORD) -> str:
    """A new account with a password and `grants` (`role@scope`); returns its login."""
    async with pool.acquire() as conn:
        p = await people.add(conn, Actor.cli("tests"), login=unique(f"si{RUN_ID}"),
                             display_name="测试 Person", password=password)
        for g in grants:
            role, _, scope = g.partition("@")
            await people.grant(conn, Actor.cli("tests"), p, Grant.parse(role, scope or None))
    return p.login


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@asynccontextmanager
async def server(settings: Settings, pool: asyncpg.Pool,
                 clock: Callable[[], datetime] | None = None) -> AsyncIterator[str]:
    """The hub's HTTP app (make_app) on a real port; yields its base URL."""
    srv = TestServer(make_app(settings, pool, clock=clock), host="127.0.0.1")
    await srv.start_server()
    try:
        yield str(srv.make_url("")).rstrip("/")
    finally:
        await srv.close()


@asynccontextmanager
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def sign_in(http: aiohttp.ClientSession, base: str, login: str,
                  password: str = PASSWORD, status: int = 303, nxt: str = "/account") -> str:
    async with http.post(f"{base}/signin", allow_redirects=False, headers=HTML,
                         data={"login": login, "password": password, "next": nxt}) as resp:
        body = await resp.text()
        assert resp.status == status, body
        return body


async def status_of(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url, headers=HTML, allow_redirects=False) as resp:
        return resp.status


async def csrf_of(http: aiohttp.ClientSession, base: str) -> str:
    async with http.get(f"{base}/account", headers=HTML) as resp:
        found = re.search(r'name="csrf" value="([^"]+)"', await resp.text())
    assert found
    return found.group(1)


async def audit_actions(pool: asyncpg.Pool, login: str) -> list[tuple[str, str | None]]:
    rows = await pool.fetch("SELECT action, after::text FROM people_audit WHERE login = $1 "
                            "ORDER BY id", login)
    return [(r["action"], r["after"]) for r in rows]


# ---- sign-in, sessions, CSRF -------------------------------------------------------

async def test_sign_in_show_the_account_and_sign_out(settings: Settings,
                                                     pool: asyncpg.Pool) -> None:
    login = await person(pool, "auditor@consortium")
    async with server(settings, pool) as base, browser() as http:
        assert await status_of(http, f"{base}/account") == 302
        form = await (await http.get(f"{base}/signin?next=/ops/", headers=HTML)).text()
        assert 'name="login"' in form and 'value="/ops/"' in form
        await sign_in(http, base, login)
        async with http.get(f"{base}/account", headers=HTML) as resp:
            page = await resp.text()
        assert f'id="login">{login}<' in page and "auditor @ consortium" in page
        assert 'action="/signout"' in page and 'action="/signout/everywhere"' in page
        async with http.post(f"{base}/signout", data={"csrf": await csrf_of(http, base)},
                             allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/signin"
        assert await status_of(http, f"{base}/account") == 302
    actions = await audit_actions(pool, login)
    assert [a for a, _ in actions][-2:] == ["person.signin", "person.signout"]
    assert all(PASSWORD not in (after or "") for _, after in actions)
    source = await pool.fetchval("SELECT source FROM people_audit WHERE login = $1 AND "
                                 "action = 'person.signin'", login)
    assert source == "127.0.0.1"


async def test_idle_and_absolute_expiry(settings: Settings, pool: asyncpg.Pool) -> None:
    login = await person(pool, "auditor@consortium")
    clock = Clock()
    async with server(settings, pool, clock) as base, browser() as http:
        await sign_in(http, base, login)
        clock.now += timedelta(minutes=29)             # idle limit 30 min: still in
        assert await status_of(http, f"{base}/account") == 200
        clock.now += timedelta(minutes=31)             # 31 min since last seen: out
        assert await status_of(http, f"{base}/account") == 302
        await sign_in(http, base, login)
        for _ in range(11 * 3):                        # busy, never idle, for 11 h
            clock.now += timedelta(minutes=20)
            assert await status_of(http, f"{base}/account") == 200
        clock.now += timedelta(hours=1, minutes=1)     # past 12 h since sign-in: out,
        assert await status_of(http, f"{base}/account") == 302   # however busy


async def test_sign_out_everywhere_ends_another_clients_session(
        settings: Settings, pool: asyncpg.Pool) -> None:
    login = await person(pool, "auditor@consortium")
    async with server(settings, pool) as base, browser() as laptop, browser() as phone:
        await sign_in(http=laptop, base=base, login=login)
        await sign_in(http=phone, base=base, login=login)
        async with laptop.post(f"{base}/signout/everywhere", allow_redirects=False,
                               data={"csrf": await csrf_of(laptop, base)}) as resp:
            assert resp.status == 303
        assert await status_of(phone, f"{base}/account") == 302
        assert await status_of(laptop, f"{base}/account") == 302
    assert ("person.signout_everywhere", '{"sessions": 2}') in await audit_actions(pool, login)


async def test_a_post_without_the_csrf_token_is_refused(settings: Settings,
                                                        pool: asyncpg.Pool) -> None:
    login = await person(pool, "auditor@consortium")
    async with server(settings, pool) as base, browser() as http:
        await sign_in(http, base, login)
        for path, data in (("/signout", {}), ("/signout/everywhere", {"csrf": "forged"})):
            async with http.post(f"{base}{path}", data=data, allow_redirects=False) as resp:
                assert resp.status == 403
                assert "CSRF" in await resp.text()
        assert await status_of(http, f"{base}/account") == 200   # still signed in
        async with http.post(f"{base}/signout/everywhere", allow_redirects=False,
                             data={"csrf": await csrf_of(http, base)}) as resp:
            assert resp.status == 303
        assert await status_of(http, f"{base}/account") == 302


# ---- throttling ----------------------------------------------------------------------

async def test_twenty_wrong_passwords_lock_the_account_until_an_operator_unlocks_it(
        settings: Settings, pool: asyncpg.Pool) -> None:
    login = await person(pool, "auditor@consortium")
    async with server(settings, pool) as base, browser() as http:
        for _ in range(19):
            assert "Wrong login or password" in await sign_in(http, base, login, "guess!",
                                                              status=401)
        assert LOCKED in await sign_in(http, base, login, "guess!", status=423)
        # The 21st attempt, with the right password: refused, with the clear message.
        page = await sign_in(http, base, login, PASSWORD, status=423)
        assert LOCKED in page
        assert await status_of(http, f"{base}/account") == 302
        code, out, err = await run(settings, "user", "unlock", login)
        assert code == 0, err
        assert "unlocked" in out
        await sign_in(http, base, login)
        assert await status_of(http, f"{base}/account") == 200
    actions = await audit_actions(pool, login)
    failed = [after for action, after in actions if action == "person.signin_failed"]
    assert len(failed) == 21 and '"account locked"' in failed[-1]
    assert all(PASSWORD not in (after or "") and "guess!" not in (after or "")
               for _, after in actions)
    assert await pool.fetchval(
        "SELECT count(*) FROM people_audit WHERE action = 'throttle.unlock' AND target = $1 "
        "AND login LIKE 'cli:%'", login) == 1


async def test_an_address_over_its_limit_gets_429_with_retry_after(
        settings: Settings, pool: asyncpg.Pool) -> None:
    s = settings.updated(accounts__address_failures=3, accounts__address_lock_minutes=5)
    login = await person(pool, "auditor@consortium")
    async with server(s, pool) as base, browser() as http:
        for _ in range(2):
            await sign_in(http, base, f"nobody-{RUN_ID}", "guess!", status=401)
        await sign_in(http, base, f"nobody-{RUN_ID}", "guess!", status=429)
        async with http.post(f"{base}/signin", allow_redirects=False, data={
                "login": login, "password": PASSWORD}) as resp:
            assert resp.status == 429               # the right password too, from here
            assert 250 < int(resp.headers["Retry-After"]) <= 300
        code, _, err = await run(s, "user", "unlock", "--address", "127.0.0.1")
        assert code == 0, err
        await sign_in(http, base, login)


def _basic(symbol: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{symbol}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}", "Content-Type": "application/xml"}


async def test_iso18626_basic_and_ftp_logins_lock_an_agency(
        settings: Settings, pool: asyncpg.Pool, make_agency: MakeAgency) -> None:
    s = settings.updated(accounts__agency_failures=3, ftp__login_failure_delay=0)
    symbol, password = await make_agency(roles=("requester", "supplier"))
    hub = Hub(s)
    await hub.start()
    try:
        assert hub.http is not None and hub.ftp is not None
        url = f"{hub.http.base_url}/iso18626"
        async with aiohttp.ClientSession() as http:
            for _ in range(3):
                async with http.post(url, data=b"<x/>", headers=_basic(symbol, "wrong")) as r:
                    assert r.status == 401
            async with http.post(url, data=b"<x/>", headers=_basic(symbol, password)) as r:
                assert r.status == 429
                assert int(r.headers["Retry-After"]) > 0
            # The same counter locks the FTP drop.
            assert await asyncio.to_thread(try_login, hub.ftp, symbol, password) == "530"
            code, _, err = await run(s, "user", "unlock", "--agency", symbol)
            assert code == 0, err
            async with http.post(url, data=b"<x/>", headers=_basic(symbol, password)) as r:
                assert r.status == 200                 # in: the XML is refused, in XML
            # FTP failures lock it too, and a lock answers 530 with its own reason.
            for _ in range(3):
                assert await asyncio.to_thread(try_login, hub.ftp, symbol, "wrong") == "530"
            reply = await asyncio.to_thread(_ftp_reply, hub, symbol, password)
            assert reply.startswith("530") and "too many failed logins" in reply
            async with http.post(url, data=b"<x/>", headers=_basic(symbol, password)) as r:
                assert r.status == 429
            await run(s, "user", "unlock", "--agency", symbol)
            assert await asyncio.to_thread(try_login, hub.ftp, symbol, password) == "ok"
    finally:
        await hub.stop()


def _ftp_reply(hub: Hub, user: str, password: str) -> str:
    assert hub.ftp is not None
    ftp = ftplib.FTP(timeout=10, encoding="utf-8")
    ftp.connect(hub.ftp.host, hub.ftp.port)
    try:
        ftp.login(user, password)
    except ftplib.error_perm as exc:
        return str(exc)
    finally:
        ftp.close()
    return "230"


# ---- the operators' pages by reach ---------------------------------------------------

async def test_library_staff_get_403_on_the_dashboard_and_404_for_others_transactions(
        settings: Settings, pool: asyncpg.Pool, make_agency: MakeAgency) -> None:
    mine, _ = await make_agency(roles=("requester",))
    other, _ = await make_agency(roles=("requester",))
    own_txn = await put_transaction(pool, mine, "Cancelled")
    other_txn = await put_transaction(pool, other, "Cancelled")
    login = await person(pool, f"library_staff@agency:{mine}")
    async with server(settings, pool) as base, browser() as http:
        await sign_in(http, base, login)
        assert await status_of(http, f"{base}/ops/") == 403
        assert await status_of(http, f"{base}/ops/t/{own_txn}") == 200
        assert await status_of(http, f"{base}/ops/t/{other_txn}") == 404
        assert await status_of(http, f"{base}/ops/t/ILL-NO-SUCH-ONE") == 404
        assert await status_of(http, f"{base}/ops/a/{other}") == 404
        assert await status_of(http, f"{base}/ops/search?q={other_txn}") == 404


async def test_a_regional_admin_sees_only_its_regions_agencies(
        settings: Settings, pool: asyncpg.Pool, make_agency: MakeAgency) -> None:
    here, there = f"省{RUN_ID}甲", f"省{RUN_ID}乙"
    near, _ = await make_agency(roles=("requester",), province=here, city="一")
    far, _ = await make_agency(roles=("requester",), province=there, city="二")
    near_txn = await put_transaction(pool, near, "Cancelled")
    far_txn = await put_transaction(pool, far, "Cancelled")
    login = await person(pool, f"regional_admin@region:{here}")
    async with server(settings, pool) as base, browser() as http:
        await sign_in(http, base, login)
        async with http.get(f"{base}/ops/", headers=HTML) as resp:
            assert resp.status == 200
            dash = await resp.text()
        assert f'data-symbol="{near}"' in dash and f'data-symbol="{far}"' not in dash
        symbols = set(re.findall(r'data-symbol="([^"]+)"', dash))
        regions = await pool.fetch("SELECT DISTINCT province FROM agency WHERE symbol = "
                                   "ANY($1)", list(symbols))
        assert {r["province"] for r in regions} == {here}
        assert await status_of(http, f"{base}/ops/a/{near}") == 200
        assert await status_of(http, f"{base}/ops/a/{far}") == 404
        assert await status_of(http, f"{base}/ops/t/{near_txn}") == 200
        assert await status_of(http, f"{base}/ops/t/{far_txn}") == 404


# ---- run.py user -----------------------------------------------------------------------

async def test_the_user_commands(settings: Settings, pool: asyncpg.Pool,
                                 make_agency: MakeAgency, tmp_path: Path) -> None:
    symbol, _ = await make_agency(roles=("requester",))
    login = f"cli-{RUN_ID}-{unique('u')}".lower()
    secret = tmp_path / "pw"
    secret.write_text(PASSWORD + "\n", encoding="utf-8")
    code, out, err = await run(settings, "user", "add", login, "--name", "图书馆员 Li",
                               "--password-file", str(secret), "--role", "library_staff",
                               "--scope", f"agency:{symbol}")
    assert code == 0, err
    assert f"library_staff @ agency {symbol}" in out
    code, out, _ = await run(settings, "user", "list")
    assert code == 0 and login in out and "图书馆员 Li" in out
    assert (await run(settings, "user", "grant", login, "auditor"))[0] == 0
    assert (await run(settings, "user", "revoke", login, "auditor"))[0] == 0
    async with server(settings, pool) as base, browser() as http:
        await sign_in(http, base, login)
        assert (await run(settings, "user", "signout", login))[1].startswith(f"{login}: 1")
        assert await status_of(http, f"{base}/account") == 302
        assert (await run(settings, "user", "disable", login))[0] == 0
        await sign_in(http, base, login, status=403)
        assert (await run(settings, "user", "enable", login))[0] == 0
        secret.write_text("another long password 二\n", encoding="utf-8")
        assert (await run(settings, "user", "password", login, "--password-file",
                          str(secret)))[0] == 0
        await sign_in(http, base, login, "another long password 二")
    for args, want_code, want in (
            (("grant", login, "librarian"), 2, "unknown role"),
            (("grant", login, "library_staff", "agency"), 2, "scope"),
            (("grant", login, "library_staff", "agency:NO:SUCH"), 1, "no agency"),
            (("grant", f"nobody-{RUN_ID}", "auditor"), 1, "no account"),
            (("add", login, "--name", "again"), 1, "already"),
            (("password", login), 2, "--password-file"),
            (("unlock",), 2, "unlock one thing")):
        code, _, err = await run(settings, "user", *args)
        assert code == want_code and err.startswith("error: ") and want in err, (args, err)
    short = tmp_path / "short"
    short.write_text("short\n", encoding="utf-8")
    code, _, err = await run(settings, "user", "password", login, "--password-file",
                             str(short))
    assert code == 1 and "at least 12" in err
    rows = await pool.fetch("SELECT login, source, action FROM people_audit WHERE target = $1 "
                            "AND login LIKE 'cli:%' ORDER BY id", login)
    assert [r["action"] for r in rows] == [
        "person.add", "person.grant", "person.grant", "person.revoke",
        "person.signout_everywhere", "person.disable", "person.enable", "person.password"]
    assert {r["source"] for r in rows} == {"cli"}
