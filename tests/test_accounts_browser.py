"""People sign in in a real browser and each sees what their grants reach (issue 16,
"Done when": the browser tests).

Headless Chromium driven over the DevTools protocol (the client of
tests/test_operators_browser.py), a real OpenID provider (`oidc-provider` on Node.js,
tests/support/oidc.py) and the hub's HTTP app as make_app builds it. Like a person:
open a page, be sent to the sign-in form, follow "Sign in with the consortium's
account", type the login at the provider's form, come back signed in; type passwords,
click buttons, read what the page says.

One Chromium, one provider and one hub serve every test of this module (the `world`
fixture; the provider's accounts are fixed when it starts, so the fixture makes all
the agencies and people up front); each test clears the browser's cookies (the hub's
and the provider's) and signs its person in afresh. Two provinces of this module's own:
`here` holds the libraries `mine` and `near`, `there` holds `theirs`; a real
settlement run gives each a statement.

How a status is read: the pages' Content-Security-Policy rightly forbids a script's
fetch, so the test asks the browser's Navigation Timing entry of the page it shows
(`responseStatus`), which a CSP does not govern.

Screenshots in test-artifacts/: accounts-signin.png (the hub's sign-in form),
accounts-provider.png (the provider's form), accounts-operator.png (the operator's
dashboard), accounts-staff.png (the library's own transaction), accounts-staff-404.png
(another library's transaction, by URL), accounts-finance.png (a library's finance
officer's statements), accounts-region.png (a regional administrator's dashboard),
accounts-csrf-403.png (a form from another origin, refused), accounts-locked.png (the
21st, correct password refused).
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from accounts import people, tokens
from accounts.audit import Actor
from accounts.roles import Grant
from accounts.tokens import Scope
from infra import throttle
from infra.throttle import KeyKind
from schemas.settings import Settings
from settlement.run import settle
from settlement.statement_model import statement_name, summary_name
from tests.support.agencies import sql_agencies
from tests.support.cli import run
from tests.support.money import at
from tests.support.names import RUN_ID, unique
from tests.support.oidc import Idp, hub_app, needs_node, oidc_provider
from tests.support.operators import put_transaction
from tests.support.settlement import after, charge, fresh_year
from tests.test_operators_browser import ARTIFACTS, DevTools, chromium
from tests.test_operators_browser import pytestmark as needs_chromium
from web.oidc import CALLBACK_PATH

# Skipped without Chromium (as the operators' browser test) or Node.js.
pytestmark = [needs_chromium, needs_node]

BY = Actor.cli("tests")
PASSWORD = "a long password 馆际互借 16"
LOCKED = ("This account is locked after too many wrong passwords; ask an operator to unlock "
          "it (run.py user unlock LOGIN).")
WRONG = "Wrong login or password."
CSRF_REFUSED = "this form did not come from a page of this hub"


@dataclass
class World:
    """The servers, the browser and what the fixture made; shared by the module's tests."""

    settings: Settings
    pool: asyncpg.Pool
    browser: DevTools
    idp: Idp
    base: str
    here: str                   # a province: `mine` and `near`
    there: str                  # another: `theirs`
    mine: str
    near: str
    theirs: str
    own_txn: str                # requested by `mine`
    near_txn: str
    other_txn: str              # requested by `theirs`
    period: str                 # settled: a statement for each of the three
    logins: dict[str, str] = field(default_factory=dict)   # role -> login at the provider
    downloads: Path = Path()

    async def fresh(self) -> DevTools:
        """The browser without anyone's cookies: nobody is signed in, at the hub or at
        the provider."""
        await self.browser.goto("about:blank")
        await self.browser.call("Network.clearBrowserCookies")
        return self.browser


@pytest.fixture(scope="module")
async def world(database_url: str, pool: asyncpg.Pool,
                tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    tmp = tmp_path_factory.mktemp("accounts-browser")
    # The `settings` fixture's values (it is per test; this world is per module).
    settings = Settings(database={"url": database_url}, hub_symbol=f"T{RUN_ID}:HUB",
                        http={"port": 0}, accounts={"address_failures": 100_000},
                        data_dir=str(tmp / "var"))
    tag = secrets.token_hex(3)
    here, there = f"江苏{tag}", f"北京{tag}"
    mine, near = await sql_agencies(pool, "南京大学图书馆", "苏州大学图书馆", province=here)
    (theirs,) = await sql_agencies(pool, "北京大学图书馆", province=there)
    own_txn = await put_transaction(pool, mine, "Unfilled", title="图书馆学通讯")
    near_txn = await put_transaction(pool, near, "Cancelled", title="江苏图书馆学报")
    other_txn = await put_transaction(pool, theirs, "Unfilled", title="情报学报")
    period = await settled_period(pool, settings, mine, near, theirs)
    logins = {role: f"{role}-{tag}" for role in ("ops", "staff", "finance", "region")}
    accounts = {
        logins["ops"]: {"name": "运营 王", "groups": ["ill-operators"]},
        logins["staff"]: {"name": "馆员 李", "groups": ["ill-staff"], "illhub_agency": mine},
        logins["finance"]: {"name": "财务 赵", "groups": ["ill-finance"],
                            "illhub_agency": mine},
        logins["region"]: {"name": "省中心 孙", "groups": ["ill-region"],
                           "illhub_region": here},
    }
    async with oidc_provider() as idp:
        configured = idp.configure(settings, provision=True)
        server = TestServer(hub_app(configured, pool), host="127.0.0.1")
        await server.start_server()
        try:
            base = f"http://127.0.0.1:{server.port}"
            await idp.start([base + CALLBACK_PATH], accounts)
            async with chromium(tmp) as browser:
                downloads = tmp / "downloads"
                await browser.call("Browser.setDownloadBehavior", browser=True,
                                   behavior="allow", downloadPath=str(downloads))
                yield World(configured, pool, browser, idp, base, here, there, mine, near,
                            theirs, own_txn, near_txn, other_txn, period, logins, downloads)
        finally:
            await server.close()
    print(f"\nprovider started in {idp.started_in:.2f} s")


async def settled_period(pool: asyncpg.Pool, settings: Settings, mine: str, near: str,
                         theirs: str) -> str:
    """A period of its own year, settled by a real run: each library has a statement."""
    period = f"{await fresh_year(pool)}-05"
    await charge(pool, None, mine, theirs, "30.00", at(f"{period}-03"), title="敦煌学研究")
    await charge(pool, None, theirs, near, "12.00", at(f"{period}-10"), title="西夏文献")
    await charge(pool, None, near, mine, "8.00", at(f"{period}-20"), title="红楼梦版本研究")
    await settle(pool, settings, period, now=after(period))
    return period


# ---- driving the browser -------------------------------------------------------------

async def status(browser: DevTools) -> int:
    """The HTTP status of the page the browser shows (its Navigation Timing entry)."""
    return int(await browser.js(
        "performance.getEntriesByType('navigation')[0].responseStatus"))


async def open_page(browser: DevTools, url: str) -> int:
    """Navigate to `url` (typed into the address bar); the status of the page it shows,
    which must be `url` itself (no redirect)."""
    await browser.goto(url)
    assert await browser.js("location.href") == url
    return await status(browser)


async def submit(browser: DevTools, selector: str) -> int:
    """Click a form's button and wait for the page it leads to; that page's status."""
    loaded = browser.expect("Page.loadEventFired")
    await browser.click(selector)
    await asyncio.wait_for(loaded, 30)
    return await status(browser)


async def text(browser: DevTools) -> str:
    return str(await browser.js("document.body.innerText"))


async def sign_in_at_provider(browser: DevTools, login: str, shot: Path | None = None) -> None:
    """From the hub's sign-in form: the provider's link, its form, and back."""
    loaded = browser.expect("Page.loadEventFired")
    await browser.click("#sign-in-oidc")
    await asyncio.wait_for(loaded, 30)
    assert await browser.js("document.querySelector('input[name=login]') !== null"), \
        await text(browser)
    if shot is not None:
        await browser.screenshot(shot)
    await browser.type_into("input[name=login]", login)
    await browser.type_into("input[name=password]", "any password")
    assert await submit(browser, "button[type=submit]") == 200, await text(browser)


async def sign_in_through_provider(w: World, path: str, role: str) -> DevTools:
    """Open `path` signed out, be sent to the hub's sign-in form, sign in as the
    provider's `role` account, and be back at `path`."""
    browser = await w.fresh()
    await browser.goto(w.base + path)
    assert await browser.js("location.pathname") == "/signin"
    await sign_in_at_provider(browser, w.logins[role])
    assert await browser.js("location.href") == w.base + path, await text(browser)
    return browser


async def symbols_shown(browser: DevTools) -> set[str]:
    """Every agency symbol the page's rows are marked with (`data-symbol`)."""
    found = await browser.js(
        "[...document.querySelectorAll('[data-symbol]')].map(e => e.dataset.symbol)")
    return set(found)


# ---- 1. the consortium's operator ----------------------------------------------------

async def test_an_operator_signs_in_through_the_provider_and_sees_everything(
        world: World) -> None:
    w = world
    browser = await w.fresh()
    await browser.goto(f"{w.base}/ops/")
    assert await browser.js("location.pathname") == "/signin"
    await browser.screenshot(ARTIFACTS / "accounts-signin.png")
    await sign_in_at_provider(browser, w.logins["ops"], ARTIFACTS / "accounts-provider.png")
    assert await browser.js("location.href") == f"{w.base}/ops/"
    assert await browser.js("document.querySelector('h1').innerText") == "Dashboard 运营概览"
    # The session cookie is the hub's, HttpOnly: no script reads it.
    assert "illhub_session" not in await browser.js("document.cookie")
    assert {w.mine, w.near, w.theirs} <= await symbols_shown(browser)
    await browser.screenshot(ARTIFACTS / "accounts-operator.png")
    for txn, title in ((w.other_txn, "情报学报"), (w.own_txn, "图书馆学通讯")):
        assert await open_page(browser, f"{w.base}/ops/t/{txn}") == 200
        assert title in await text(browser)
    assert await open_page(browser, f"{w.base}/ops/a/{w.theirs}") == 200


# ---- 2. a library's ILL staff ----------------------------------------------------------

async def test_a_librarys_staff_sees_its_own_and_404_for_anothers_by_url_and_by_api(
        world: World) -> None:
    w = world
    browser = await sign_in_through_provider(w, f"/lib/t/{w.own_txn}", "staff")
    assert w.own_txn in await text(browser)
    await browser.screenshot(ARTIFACTS / "accounts-staff.png", full=True)

    # Another library's transaction, by URL: not found, exactly like an unknown one.
    assert await open_page(browser, f"{w.base}/lib/t/{w.other_txn}") == 404
    assert "情报学报" not in await text(browser)
    await browser.screenshot(ARTIFACTS / "accounts-staff-404.png")
    assert await open_page(browser, f"{w.base}/ops/t/{w.other_txn}") == 404
    assert "情报学报" not in await text(browser)
    # Nor the consortium's dashboard: not a library's permission.
    assert await open_page(browser, f"{w.base}/ops/") == 403

    # By API: a token of this person (the account the provider's sign-in provisioned).
    async with w.pool.acquire() as conn:
        person = await people.find(conn, w.logins["staff"])
        assert person is not None
        made = await tokens.create(conn, BY, person, label="馆际系统 ILL system",
                                   scopes=frozenset({Scope.TRANSACTIONS_READ}),
                                   now=await conn.fetchval("SELECT now()"))
    bearer = {"Authorization": f"Bearer {made.token}"}
    async with aiohttp.ClientSession(headers=bearer) as http:
        async with http.get(f"{w.base}/api/v1/transactions/{w.other_txn}") as resp:
            assert resp.status == 404
            assert resp.content_type == "application/problem+json"
            problem = await resp.json(content_type=None)
        assert problem["status"] == 404 and w.other_txn in problem["detail"]
        async with http.get(f"{w.base}/api/v1/transactions/{w.own_txn}") as resp:
            assert resp.status == 200, await resp.text()
            own = await resp.json()
        assert own["id"] == w.own_txn and own["requester"] == w.mine


# ---- 3. a library's finance officer ---------------------------------------------------

async def test_a_librarys_finance_officer_sees_only_its_statements(world: World) -> None:
    w = world
    browser = await sign_in_through_provider(w, "/fin/", "finance")
    # The period is picked from the list and shown, as a person would.
    await browser.js(f"document.getElementById('period').value = {json.dumps(w.period)}")
    assert await submit(browser, "#period-form button") == 200
    assert await browser.js("location.search") == f"?period={w.period}"
    rows = await browser.js("[...document.querySelectorAll('#statement-table tr[data-symbol]')]"
                            ".map(tr => tr.dataset.symbol)")
    assert rows == [w.mine]
    assert await browser.js("document.getElementById('summary') === null")
    await browser.screenshot(ARTIFACTS / "accounts-finance.png", full=True)

    # Its own statement downloads (the CSV link, clicked).
    mine = statement_name(w.mine, w.period, "csv")
    await browser.click(f"a.file[data-file={json.dumps(mine)}]")
    csv = await downloaded(w.downloads / mine)
    assert csv.startswith("\ufeff") and "敦煌学研究" in csv

    # Another library's statement, by URL: 404; so is the centre's summary.
    for name in (statement_name(w.theirs, w.period, "csv"),
                 statement_name(w.near, w.period, "pdf"), summary_name(w.period, "csv")):
        assert await open_page(browser, f"{w.base}/fin/files/{w.period}/{name}") == 404
        assert "no statement file" in await text(browser)


async def downloaded(path: Path, timeout: float = 15.0) -> str:
    """The file Chromium saved (it writes `.crdownload` first and renames when done)."""
    for _ in range(int(timeout / 0.1)):
        if await asyncio.to_thread(path.is_file):
            return await asyncio.to_thread(path.read_text, encoding="utf-8")
        await asyncio.sleep(0.1)
    raise AssertionError(f"{path.name} was not downloaded")


# ---- 4. a regional administrator -------------------------------------------------------

async def test_a_regional_administrator_sees_only_its_region(world: World) -> None:
    w = world
    browser = await sign_in_through_provider(w, "/ops/", "region")
    shown = await symbols_shown(browser)
    assert {w.mine, w.near} <= shown and w.theirs not in shown
    provinces = await w.pool.fetch("SELECT DISTINCT province FROM agency WHERE symbol = ANY($1)",
                                   list(shown))
    assert {r["province"] for r in provinces} == {w.here}
    await browser.screenshot(ARTIFACTS / "accounts-region.png")

    # An agency of the region, from the dashboard's link; one of another province by URL.
    row = f"tr[data-symbol={json.dumps(w.near)}]"
    assert await submit(browser, f"{row} a[href^='/ops/a/']") == 200
    assert await browser.js("decodeURIComponent(location.pathname)") == f"/ops/a/{w.near}"
    assert "苏州大学图书馆" in await text(browser)
    assert await open_page(browser, f"{w.base}/ops/a/{w.mine}") == 200
    assert await open_page(browser, f"{w.base}/ops/a/{w.theirs}") == 404
    assert "北京大学图书馆" not in await text(browser)
    assert await open_page(browser, f"{w.base}/ops/t/{w.near_txn}") == 200
    assert await open_page(browser, f"{w.base}/ops/t/{w.other_txn}") == 404


# ---- 5. forms from another origin --------------------------------------------------------

async def test_a_form_from_another_origin_without_the_csrf_token_is_refused(
        world: World) -> None:
    """Another site on the same host (another port: the same *site* to the browser, so
    the SameSite=Lax cookie goes along, as it would from a sibling subdomain) posts to
    the hub. Only the session's CSRF token tells its forms from the hub's own."""
    w = world
    browser = await sign_in_through_provider(w, f"/lib/t/{w.own_txn}", "staff")
    async with other_origin(w.base, w.own_txn) as elsewhere:
        # Without the token: refused, and nothing happened.
        for button in ("#cancel-it", "#sign-out-everywhere"):
            await browser.goto(elsewhere.url)
            assert await submit(browser, button) == 403
            assert CSRF_REFUSED in await text(browser)
        await browser.screenshot(ARTIFACTS / "accounts-csrf-403.png")
        # The session still works; the account page shows the token its own forms carry.
        assert await open_page(browser, f"{w.base}/account") == 200
        assert await browser.js("document.getElementById('login').innerText") == \
            w.logins["staff"]
        token = await browser.js("document.querySelector("
                                 "'#sign-out-everywhere').form.elements.csrf.value")
        assert token

        # The same form with the token: done (signed out everywhere).
        elsewhere.csrf = str(token)
        await browser.goto(elsewhere.url)
        assert await submit(browser, "#sign-out-everywhere") == 200
        assert await browser.js("location.href") == f"{w.base}/signin"
    await browser.goto(f"{w.base}/account")
    assert await browser.js("location.pathname") == "/signin"


@dataclass
class OtherOrigin:
    url: str
    csrf: str | None = None     # put into its forms once the test knows it


@asynccontextmanager
async def other_origin(hub: str, txn: str) -> AsyncIterator[OtherOrigin]:
    """A page on another port of 127.0.0.1 with two forms aimed at the hub: cancel a
    transaction, sign out everywhere."""
    site = OtherOrigin("")

    async def page(_: web.Request) -> web.Response:
        hidden = (f'<input type="hidden" name="csrf" value="{html.escape(site.csrf)}">'
                  if site.csrf else "")
        body = f"""<!DOCTYPE html><meta charset="utf-8"><title>免费电子书 Free e-books</title>
<h1>免费电子书 Free e-books</h1>
<form method="post" action="{hub}/lib/t/{txn}/cancel">{hidden}
  <button id="cancel-it">领取 Claim yours</button></form>
<form method="post" action="{hub}/signout/everywhere">{hidden}
  <button id="sign-out-everywhere">更多 More</button></form>"""
        return web.Response(text=body, content_type="text/html")

    app = web.Application()
    app.router.add_get("/", page)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        site.url = f"http://127.0.0.1:{server.port}/"
        assert site.url.split(":")[2] != hub.split(":")[2]
        yield site
    finally:
        await server.close()


# ---- 6. wrong passwords ---------------------------------------------------------------

async def test_twenty_wrong_passwords_lock_the_account_and_the_21st_correct_is_refused(
        world: World) -> None:
    w = world
    async with w.pool.acquire() as conn:
        person = await people.add(conn, BY, login=unique(f"lock{RUN_ID}"),
                                  display_name="审计 周", password=PASSWORD)
        await people.grant(conn, BY, person, Grant.parse("auditor", "consortium"))
    try:
        await locked_out_then_unlocked(w, person.login)
    finally:
        # These 21 failures from 127.0.0.1 must not count against later tests.
        async with w.pool.acquire() as conn:
            await throttle.unlock(conn, throttle.key(KeyKind.ADDRESS, "127.0.0.1"))


async def locked_out_then_unlocked(w: World, login: str) -> None:
    browser = await w.fresh()
    await browser.goto(f"{w.base}/signin")
    await browser.type_into("#login", login)
    for attempt in range(1, 21):
        # The form comes back with the login kept; the password is typed again.
        await browser.type_into("#password", f"guess {attempt}")
        answer = await submit(browser, "#sign-in")
        shown = await text(browser)
        if attempt < 20:
            assert answer == 401 and WRONG in shown, (attempt, answer, shown)
            assert await browser.js("document.getElementById('login').value") == login
    # The 20th wrong password locked the account.
    assert answer == 423 and LOCKED in shown, (answer, shown)

    # The 21st attempt, with the right password: refused, with the clear message.
    await browser.goto(f"{w.base}/signin")
    await browser.type_into("#login", login)
    await browser.type_into("#password", PASSWORD)
    assert await submit(browser, "#sign-in") == 423
    message = await browser.js("({h1: document.querySelector('h1').innerText, "
                               "body: document.body.innerText})")
    assert message["h1"] == "Account locked 账户已锁定"
    assert LOCKED in message["body"] and "该账户因口令错误次数过多已被锁定" in message["body"]
    await browser.screenshot(ARTIFACTS / "accounts-locked.png")
    await browser.goto(f"{w.base}/account")
    assert await browser.js("location.pathname") == "/signin"   # not signed in

    # An operator unlocks it; the right password opens it again.
    code, out, err = await run(w.settings, "user", "unlock", login)
    assert code == 0 and "unlocked" in out, (code, out, err)
    await browser.type_into("#login", login)
    await browser.type_into("#password", PASSWORD)
    assert await submit(browser, "#sign-in") == 200
    assert await browser.js("location.pathname") == "/account"
    assert await browser.js("document.getElementById('login').innerText") == login
