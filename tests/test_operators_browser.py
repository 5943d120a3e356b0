"""The operators' pages in a real browser: headless Chromium (Debian's `chromium`).

The test drives Chromium over the DevTools protocol with nothing but aiohttp's
websocket client (no Python browser library, none that downloads its own
browser): Chromium starts with `--remote-debugging-port=0` and writes the port it
chose to `DevToolsActivePort` in its profile directory. Like a person, the test
opens the dashboard, is sent to the sign-in form, types the password, clicks
"Sign in", reads what the dashboard shows, opens a transaction page and reads it
too. Screenshots are kept in `test-artifacts/` (gitignored): `dashboard.png` (the
1280 x 1800 window a person sees first), `dashboard-full.png` (the whole page) and
`transaction.png`.

Skipped only when /usr/bin/chromium is missing (`.ci/setup` installs it).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from schemas.settings import Settings
from tests.support.agencies import MakeAgency
from tests.support.operators import (
    OPERATOR,
    PASSWORD,
    operator_network,
    unfilled_then_copied,
)
from tests.support.paths import ROOT

CHROMIUM = os.environ.get("ILLHUB_TEST_CHROMIUM", "/usr/bin/chromium")
BINARY = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.skipif(
    BINARY is None,
    reason=f"{CHROMIUM} not found: install Debian's chromium package (bash .ci/setup does)")


class DevTools:
    """A minimal Chrome DevTools Protocol client: one browser, one page (flat session)."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.waiters: list[tuple[str, asyncio.Future[dict[str, Any]]]] = []
        self.session: str | None = None
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self.pending:
                fut = self.pending.pop(data["id"])
                if not fut.done():
                    if "error" in data:
                        fut.set_exception(RuntimeError(f"CDP error: {data['error']}"))
                    else:
                        fut.set_result(data.get("result", {}))
            elif "method" in data:
                for method, fut in list(self.waiters):
                    if method == data["method"] and not fut.done():
                        fut.set_result(data.get("params", {}))
                        self.waiters.remove((method, fut))
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("DevTools connection closed"))

    async def call(self, method: str, timeout: float = 30.0, *, browser: bool = False,
                   **params: Any) -> dict[str, Any]:
        ident = next(self.ids)
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ident] = fut
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if self.session and not browser:
            message["sessionId"] = self.session
        await self.ws.send_str(json.dumps(message))
        return await asyncio.wait_for(fut, timeout)

    def expect(self, method: str) -> asyncio.Future[dict[str, Any]]:
        """Register interest in an event *before* the action that causes it."""
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters.append((method, fut))
        return fut

    async def open_page(self) -> None:
        target = await self.call("Target.createTarget", browser=True, url="about:blank")
        attached = await self.call("Target.attachToTarget", browser=True,
                                   targetId=target["targetId"], flatten=True)
        self.session = attached["sessionId"]
        await self.call("Page.enable")
        await self.call("Emulation.setDeviceMetricsOverride", width=1280, height=1800,
                        deviceScaleFactor=1, mobile=False)

    async def goto(self, url: str) -> None:
        loaded = self.expect("Page.loadEventFired")
        result = await self.call("Page.navigate", url=url)
        assert not result.get("errorText"), f"{url}: {result['errorText']}"
        await asyncio.wait_for(loaded, 30)

    async def js(self, expression: str) -> Any:
        result = await self.call("Runtime.evaluate", expression=expression,
                                 returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise AssertionError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def click(self, selector: str) -> None:
        """A real mouse click in the middle of the element (not element.click())."""
        box = await self.js(f"(() => {{ const r = document.querySelector({json.dumps(selector)})"
                            f".getBoundingClientRect(); return [r.x + r.width / 2, "
                            f"r.y + r.height / 2]; }})()")
        x, y = box
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            await self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left",
                            clickCount=1)

    async def type_into(self, selector: str, text: str) -> None:
        await self.js(f"document.querySelector({json.dumps(selector)}).focus()")
        await self.call("Input.insertText", text=text)

    async def screenshot(self, path: Path, *, full: bool = False) -> None:
        """The 1280 x 1800 window, or (full) the whole page."""
        if not full:
            shot = await self.call("Page.captureScreenshot", format="png")
            await asyncio.to_thread(save, path, base64.b64decode(shot["data"]))
            return
        metrics = await self.call("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        height = min(int(size["height"]) + 1, 16000)
        await self.call("Emulation.setDeviceMetricsOverride", width=1280, height=height,
                        deviceScaleFactor=1, mobile=False)
        shot = await self.call("Page.captureScreenshot", format="png",
                               captureBeyondViewport=True)
        await self.call("Emulation.setDeviceMetricsOverride", width=1280, height=1800,
                        deviceScaleFactor=1, mobile=False)
        await asyncio.to_thread(save, path, base64.b64decode(shot["data"]))


def save(path: Path, content: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path) -> AsyncIterator[DevTools]:
    profile = tmp_path / "chromium-profile"
    profile.mkdir()
    log = (tmp_path / "chromium.log").open("wb")
    assert BINARY is not None
    proc = await asyncio.create_subprocess_exec(
        BINARY, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--remote-debugging-port=0",
        "--remote-allow-origins=*", "--window-size=1280,1800", "about:blank",
        stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log)
    session: aiohttp.ClientSession | None = None
    tools: DevTools | None = None
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(300):
            if port_file.exists() and len(port_file.read_text().splitlines()) >= 2:
                break
            if proc.returncode is not None:
                break
            await asyncio.sleep(0.1)
        if not port_file.exists():
            log.flush()
            raise AssertionError("Chromium did not open its DevTools port: "
                                 + (tmp_path / "chromium.log").read_text(errors="replace")[-2000:])
        port, path = port_file.read_text().splitlines()[:2]
        session = aiohttp.ClientSession()
        ws = await session.ws_connect(f"ws://127.0.0.1:{port}{path}", max_msg_size=0)
        tools = DevTools(ws)
        await tools.open_page()
        yield tools
    finally:
        if tools is not None:
            with contextlib.suppress(Exception):
                await tools.call("Browser.close", timeout=5, browser=True)
            await tools.ws.close()
            tools.reader.cancel()
        if session is not None:
            await session.close()
        if proc.returncode is None:
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()


async def test_an_operator_signs_in_and_reads_the_dashboard(
        settings: Settings, pool: asyncpg.Pool, make_agency: MakeAgency,
        tmp_path: Path) -> None:
    async with operator_network(settings, pool, make_agency) as net:
        txn_id = await unfilled_then_copied(net, "BROWSER-1")
        base = net.base_url
        async with chromium(tmp_path) as browser:
            # Not signed in: the dashboard sends the browser to the sign-in form.
            await browser.goto(f"{base}/ops/")
            assert await browser.js("location.pathname") == "/signin"
            assert await browser.js("document.querySelector('h1').innerText") == \
                "Sign in 登录"

            # A wrong password first, as people do.
            await browser.type_into("#login", OPERATOR)
            await browser.type_into("#password", "not the password")
            loaded = browser.expect("Page.loadEventFired")
            await browser.click("#sign-in")
            await asyncio.wait_for(loaded, 30)
            assert await browser.js("location.pathname") == "/signin"
            assert "Wrong login or password" in await browser.js("document.body.innerText")

            # The form keeps the login; the password is typed again.
            assert await browser.js("document.getElementById('login').value") == OPERATOR
            await browser.type_into("#password", PASSWORD)
            loaded = browser.expect("Page.loadEventFired")
            await browser.click("#sign-in")
            await asyncio.wait_for(loaded, 30)
            assert await browser.js("location.pathname") == "/ops/"
            # The session cookie is not readable by scripts (HttpOnly).
            assert "illhub_session" not in await browser.js("document.cookie")

            # What the dashboard shows, computed from the DB right now.
            filled, decided = await fill_figures(pool, settings)
            seen = await browser.js("""(() => ({
                title: document.title,
                h1: document.querySelector('h1').innerText,
                h2: [...document.querySelectorAll('h2')].map(h => h.innerText),
                fill: document.getElementById('fill-rate').innerText,
                suppliers: [...document.querySelectorAll('#supplier-table tbody tr')]
                    .map(tr => [...tr.cells].map(c => c.innerText)),
                charts: document.querySelectorAll('svg.chart').length,
            }))()""")
            assert seen["title"] == "Dashboard · ILL Hub"
            assert seen["h1"] == "Dashboard 运营概览"
            for heading in ("Volume 请求量", "Turnaround 周转时间", "Fill rate 满足率",
                            "Open requests by state 处理中", "Suppliers 供应馆"):
                assert heading in seen["h2"], seen["h2"]
            assert seen["fill"] == f"{filled / decided * 100:.1f} %"
            assert seen["charts"] == 3
            by_symbol = {row[1]: row for row in seen["suppliers"]}
            assert by_symbol[net.city.symbol][0] == "南京图书馆"
            assert by_symbol[net.prov.symbol][0] == "苏州大学图书馆"
            assert by_symbol[net.prov.symbol][5] == "100.0 %"
            await browser.screenshot(ARTIFACTS / "dashboard.png")
            await browser.screenshot(ARTIFACTS / "dashboard-full.png", full=True)

            # The search box leads to the transaction page.
            await browser.type_into("input[name=q]", "BROWSER-1")
            loaded = browser.expect("Page.loadEventFired")
            await browser.click("header form[role=search] button")
            await asyncio.wait_for(loaded, 30)
            assert await browser.js("location.pathname") == f"/ops/t/{txn_id}"
            page = await browser.js("""(() => ({
                h1: document.querySelector('h1').innerText,
                state: document.getElementById('txn-state').innerText,
                rota: [...document.querySelectorAll('#rota-table tbody tr')]
                    .map(tr => [...tr.cells].map(c => c.innerText)),
                audit: [...document.querySelectorAll('#audit-table tbody tr')]
                    .map(tr => tr.cells[2].innerText),
                excluded: document.getElementById('excluded-table').innerText,
            }))()""")
            assert page["h1"] == f"Transaction 事务 {txn_id}"
            assert page["state"] == "CopyCompleted"
            assert [r[5] for r in page["rota"]] == ["unfilled", "supplied", "pending"]
            assert "南京图书馆" in page["rota"][0][1] and "tier 1" in page["rota"][0][8]
            assert page["audit"][:2] == ["request", "forward"]
            assert page["audit"][-1] == "status:CopyCompleted"
            assert "above maximumCosts" in page["excluded"]
            await browser.screenshot(ARTIFACTS / "transaction.png", full=True)

            # The header leads to the account page, whose form signs out (with its
            # CSRF token); the dashboard then asks for a sign-in again.
            loaded = browser.expect("Page.loadEventFired")
            await browser.click("#account")
            await asyncio.wait_for(loaded, 30)
            assert await browser.js("document.getElementById('login').innerText") == OPERATOR
            loaded = browser.expect("Page.loadEventFired")
            await browser.click("#sign-out")
            await asyncio.wait_for(loaded, 30)
            assert await browser.js("location.pathname") == "/signin"
            await browser.goto(f"{base}/ops/")
            assert await browser.js("location.pathname") == "/signin"

    png = (ARTIFACTS / "dashboard.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000


async def fill_figures(pool: asyncpg.Pool, settings: Settings) -> tuple[int, int]:
    """Filled and decided requests of the last 30 consortium-local days."""
    row = await pool.fetchrow(
        """SELECT count(*) FILTER (WHERE state = ANY($2::text[])) AS filled,
                  count(*) FILTER (WHERE state = ANY($2::text[])
                                   OR state IN ('Unfilled', 'Cancelled')) AS decided
           FROM ill_transaction
           WHERE created_at >= ((now() AT TIME ZONE $1)::date - 29)::timestamp AT TIME ZONE $1""",
        settings.timezone, ["CopyCompleted", "Loaned", "Received", "Overdue", "Recalled",
                            "ShippedReturn", "LoanCompleted", "CompletedWithoutReturn"])
    return row["filled"], row["decided"]
