"""The operators' pages over real HTTP against the real database (and, once, a real hub).

The database is shared by every test of the run, so figures that are global (all
requests of the last 30 days) are checked against SQL run right before the page is
fetched, and figures that belong to this test's own agencies are checked against
the numbers the test itself created.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import asyncpg
import pytest
from pydantic import ValidationError

from infra.flags import FlagKind, raise_flag
from schemas.settings import Settings
from tests.support.agencies import MakeAgency
from tests.support.operators import (
    HTML,
    OPERATOR,
    PASSWORD,
    get_page,
    operator_network,
    ops_client,
    pct,
    put_transaction,
    row_for,
    rows_of,
    sign_in,
    unfilled_then_copied,
)
from web.auth import COOKIE
from web.operators.data import REQUESTER_LIMIT

PutBudget = Callable[..., Awaitable[None]]


@pytest.fixture
async def put_budget(pool: asyncpg.Pool) -> AsyncIterator[PutBudget]:
    """Insert subsidy budget rows by hand (figures for the pages); deleted when the test ends.

    Such a row has spending but no grants behind it, which `ledger check` rightly
    reports: left in the shared database it would fail every later whole-ledger check.
    """
    made: list[tuple[str, str, str]] = []

    async def put(name: str, requester: str, period: str, *, limit_minor: int,
                  spent_minor: int) -> None:
        await pool.execute(
            """INSERT INTO subsidy_budget (name, requester, period, currency, limit_minor,
                                           spent_minor) VALUES ($1, $2, $3, 'CNY', $4, $5)""",
            name, requester, period, limit_minor, spent_minor)
        made.append((name, requester, period))

    yield put
    for name, requester, period in made:
        await pool.execute("DELETE FROM subsidy_budget WHERE name = $1 AND requester = $2 "
                           "AND period = $3", name, requester, period)


# ---- tests ---------------------------------------------------------------------------

def test_the_shared_operators_password_is_gone() -> None:
    # A deployment that still sets it is told what replaced it, not left on a default.
    with pytest.raises(ValidationError, match=r"run\.py user add"):
        Settings().updated(operators__password="the old shared password")


async def test_the_pages_refuse_anyone_without_a_valid_session(
        settings: Settings, pool: asyncpg.Pool) -> None:
    async with ops_client(settings, pool) as client:
        for path in ("/ops/", "/ops/t/ILL-20250101-0000000000", "/ops/search?q=x"):
            async with client.get(path, headers=HTML, allow_redirects=False) as resp:
                assert resp.status == 302
                assert resp.headers["Location"].startswith("/signin?next=/ops/")
            async with client.get(path, headers={"Accept": "application/json"},
                                  allow_redirects=False) as resp:
                assert resp.status == 401
        async with client.get("/ops", allow_redirects=False) as resp:
            assert resp.status == 301 and resp.headers["Location"] == "/ops/"
        # Made-up cookies are not sessions, nor is a signed-out one.
        await sign_in(client)
        good = client.session.cookie_jar.filter_cookies(client.make_url("/"))[COOKIE].value
        async with client.post("/signout", data={"csrf": await _csrf(client)},
                               allow_redirects=False) as resp:
            assert resp.status == 303
        for cookie in ("yes", good[:-1] + ("A" if good[-1] != "A" else "B"), good):
            async with client.get("/ops/", headers={**HTML, "Cookie": f"{COOKIE}={cookie}"},
                                  allow_redirects=False) as resp:
                assert resp.status == 302, cookie


async def _csrf(client: Any) -> str:
    page = await get_page(client, "/account")
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found, page
    return found.group(1)


async def test_wrong_password_is_401_with_the_form_again(
        settings: Settings, pool: asyncpg.Pool) -> None:
    async with ops_client(settings, pool) as client:
        page = await get_page(client, "/signin?next=/ops/")
        assert 'type="password"' in page and 'action="/signin"' in page
        async with client.post("/signin", data={"login": OPERATOR, "password": "guess",
                                                "next": "/ops/"},
                               allow_redirects=False) as resp:
            assert resp.status == 401
            assert "Wrong login or password" in await resp.text()
            assert COOKIE not in resp.cookies
        await sign_in(client)  # a success clears the account's count


async def test_sign_in_sets_a_lax_http_only_cookie_and_sign_out_clears_it(
        settings: Settings, pool: asyncpg.Pool) -> None:
    async with ops_client(settings, pool) as client:
        # `next` brings the operator back, but only to a path on this server.
        async with client.post("/signin", allow_redirects=False, data={
                "login": OPERATOR, "password": PASSWORD, "next": "/ops/search?q=abc"}) as resp:
            assert resp.status == 303
            assert resp.headers["Location"] == "/ops/search?q=abc"
            morsel = resp.cookies[COOKIE]
            assert morsel["httponly"] is True
            assert morsel["samesite"] == "Lax"
            assert morsel["path"] == "/"
            assert int(morsel["max-age"]) == 12 * 3600
        for evil in ("https://evil.example/", "//evil.example/ops/", "/ops/\\x", "ops/"):
            async with client.post("/signin", allow_redirects=False, data={
                    "login": OPERATOR, "password": PASSWORD, "next": evil}) as resp:
                assert resp.headers["Location"] == "/account", evil
        async with client.get("/ops/", headers=HTML, allow_redirects=False) as resp:
            assert resp.status == 200
            csp = resp.headers["Content-Security-Policy"]
            assert "default-src 'none'" in csp and "script-src" not in csp
            assert resp.headers["Cache-Control"] == "no-store"
        async with client.get("/signin?next=/ops/", headers=HTML,
                              allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/ops/"
        async with client.post("/signout", data={"csrf": await _csrf(client)},
                               allow_redirects=False) as resp:
            assert resp.status == 303 and resp.headers["Location"] == "/signin"
        async with client.get("/ops/", headers=HTML, allow_redirects=False) as resp:
            assert resp.status == 302


async def test_dashboard_figures_match_the_database(
        settings: Settings, pool: asyncpg.Pool, make_agency: MakeAgency,
        put_budget: PutBudget) -> None:
    req, _ = await make_agency(name="清华大学图书馆", roles=("requester",))
    s1, _ = await make_agency(name="北京大学图书馆", roles=("supplier",))
    s2, _ = await make_agency(name="中国科学院文献情报中心", roles=("supplier",))
    now = datetime.now(UTC)
    # This requester: 3 filled (turnarounds 0.5 h, 3 h, 30 h), 1 unfilled, 2 cancelled,
    # 2 open; one more 40 days ago that is outside the window.
    for hours in (0.5, 3, 30):
        await put_transaction(pool, req, "CopyCompleted", supplier=s1,
                              forwarded=now - timedelta(hours=hours + 1),
                              answered=now - timedelta(hours=1))
    await put_transaction(pool, req, "Unfilled")
    await put_transaction(pool, req, "Cancelled")
    await put_transaction(pool, req, "Cancelled")
    await put_transaction(pool, req, "ExpectToSupply", supplier=s2,
                          forwarded=now - timedelta(hours=2))
    await put_transaction(pool, req, "WillSupply", supplier=s2,
                          forwarded=now - timedelta(hours=2))
    await put_transaction(pool, req, "CopyCompleted", created=now - timedelta(days=40))
    # Supplier scorecards as dispatch keeps them.
    await pool.executemany(
        """INSERT INTO scorecard_total (supplier, forwarded, filled, unfilled, timed_out,
                                        turnaround_total, open_requests)
           VALUES ($1, $2, $3, $4, $5, $6, $7)""",
        [(s1, 10, 6, 2, 2, 6 * 5 * 3600.0, 0), (s2, 3, 0, 0, 1, 0.0, 2)])
    today = now.astimezone(ZoneInfo(settings.timezone)).date()
    await pool.execute("INSERT INTO supplier_day_total (supplier, day, forwarded) "
                       "VALUES ($1, $2, 4)", s2, today)
    period = today.strftime("%Y-%m")
    await put_budget("本馆补贴 ops-test", req, period, limit_minor=50000, spent_minor=12345)
    async with pool.acquire() as conn:
        await raise_flag(conn, FlagKind.CHARGE_ABOVE_SCHEDULE, s1,
                         "fee 99.00 CNY above the quote 50.00 CNY",
                         key=f"ILL-T-FLAGGED:{s1}", transaction_id="ILL-T-FLAGGED",
                         facts={"event": "CopyCompleted", "requester": req, "supplier": s1,
                                "reason": "above quote", "fee_minor": 9900,
                                "limit_minor": 5000, "currency": "CNY"})
    await pool.execute("INSERT INTO dead_letter (sender, reason, body) VALUES ($1, $2, $3)",
                       req, "not JSON: ops test", b"\xff")

    async with ops_client(settings, pool) as client:
        await sign_in(client)
        # Global figures, computed here independently, right before the page is drawn.
        zone = ZoneInfo(settings.timezone)
        since = datetime.combine(today - timedelta(days=29), datetime.min.time(), zone)
        txns = await pool.fetch("SELECT state, created_at FROM ill_transaction "
                                "WHERE created_at >= $1", since)
        supplied = {"CopyCompleted", "Loaned", "Received", "Overdue", "Recalled",
                    "ShippedReturn", "LoanCompleted", "CompletedWithoutReturn"}
        filled = sum(t["state"] in supplied for t in txns)
        decided = filled + sum(t["state"] in ("Unfilled", "Cancelled") for t in txns)
        today_count = sum(t["created_at"].astimezone(zone).date() == today for t in txns)
        open_count = await pool.fetchval(
            "SELECT count(*) FROM ill_transaction WHERE closed_at IS NULL")
        dead_open = await pool.fetchval(
            "SELECT count(*) FROM dead_letter WHERE replayed_at IS NULL")
        hist = [0] * 9
        for e in await pool.fetch(
                """SELECT s.answered_at, (SELECT min(forwarded_at) FROM rota_entry r
                                          WHERE r.transaction_id = s.transaction_id) AS first
                   FROM rota_entry s WHERE s.outcome = 'supplied' AND s.answered_at >= $1""",
                since):
            h = (e["answered_at"] - e["first"]).total_seconds() / 3600
            hist[sum(h >= edge for edge in (1, 2, 4, 8, 24, 48, 72, 168))] += 1

        # Whether this test's requester and budget make the dashboard's bounded lists
        # (busiest requesters first; budgets most used first), ranked independently.
        counts = await pool.fetch("SELECT requester, count(*) AS n FROM ill_transaction "
                                  "WHERE created_at >= $1 GROUP BY requester", since)
        req_listed = sum((-c["n"], c["requester"]) < (-8, req) for c in counts) \
            < REQUESTER_LIMIT
        budgets = await pool.fetch("SELECT name, requester, period, limit_minor, spent_minor "
                                   "FROM subsidy_budget WHERE period IN ($1, 'total')", period)
        mine = (-12345 / 50000, "本馆补贴 ops-test", req, period)
        budget_listed = sum(
            (-(b["spent_minor"] / b["limit_minor"] if b["limit_minor"] else 1), b["name"],
             b["requester"], b["period"]) < mine for b in budgets) < 100

        page = await get_page(client, "/ops/")
        agency_pages = {s: await get_page(client, f"/ops/a/{s}") for s in (req, s1, s2)}
        await get_page(client, "/ops/a/T0:NOBODY", 404)

    text = " ".join(" ".join(rows_of(page).text).split())
    assert "Dashboard 运营概览" in text
    assert re.search(r'id="kpi-requests">' + str(len(txns)) + "<", page)
    assert f'id="fill-rate">{pct(filled, decided)}<' in page
    assert f'id="kpi-open">{open_count}<' in page
    assert f'id="kpi-dead">{dead_open}<' in page
    # The volume chart's last bar is today.
    assert f"<title>{today:%m-%d}: {today_count}</title>" in page
    # The turnaround histogram, bucket by bucket.
    for label, n in zip(("<1 h", "1–2 h", "2–4 h", "4–8 h", "8–24 h", "1–2 d", "2–3 d",
                         "3–7 d", "≥7 d"), hist, strict=True):
        assert f"<title>{label.replace('<', '&lt;')}: {n}</title>" in page, label
    assert hist[0] >= 1 and hist[2] >= 1 and hist[5] >= 1  # ours: 0.5 h, 3 h, 30 h

    # Suppliers: fill rate = filled / (filled + unfilled + timed out); mean turnaround 5 h.
    assert row_for(page, s1, "supplier-table") == [
        "北京大学图书馆", s1, "10", "6", "2", pct(6, 10), "5.0 h", "2", "0", "0"]
    assert row_for(page, s2, "supplier-table") == [
        "中国科学院文献情报中心", s2, "3", "0", "0", "0.0 %", "—", "1", "2", "4"]
    # This requester: 8 requests in the window (not the old one).
    req_row = ["清华大学图书馆", req, "8", "3", "1", "2", pct(2, 8), "2"]
    assert row_for(agency_pages[req], req, "requester-table") == req_row
    if req_listed:
        assert row_for(page, req, "requester-table") == req_row
    budget_row = ["本馆补贴 ops-test", f"清华大学图书馆 {req}", period, "500.00 CNY",
                  "123.45 CNY", "376.55 CNY", "24.7 %"]
    for body, listed in ((agency_pages[req], True), (page, budget_listed)):
        budget = [cells for _, cells in rows_of(body).rows if cells and cells[0] ==
                  "本馆补贴 ops-test"]
        assert budget == ([budget_row] if listed else [])
    # The agency pages carry the same rows as the dashboard.
    assert row_for(agency_pages[s1], s1, "supplier-table") == row_for(page, s1,
                                                                      "supplier-table")
    assert "Recent transactions" in agency_pages[s1] and "no traffic" not in agency_pages[s1]
    # The charge flags table has the charge's facts; its detail is on the transaction page.
    charges = page.split('id="flags"', 1)[1].split("</table>", 1)[0]
    [flagged] = [cells[1:] for _, cells in rows_of("<table>" + charges).rows
                 if "ILL-T-FLAGGED" in cells]
    assert flagged == ["ILL-T-FLAGGED", s1, req, "above quote", "99.00 CNY", "50.00 CNY"]
    assert "not JSON: ops test" in page


async def test_real_dispatch_on_the_dashboard_and_transaction_page(
        settings: Settings, pool: asyncpg.Pool, make_agency: MakeAgency) -> None:
    async with operator_network(settings, pool, make_agency) as net:
        txn_id = await unfilled_then_copied(net, "OPS-1")
        # unsafe=True: keep cookies for an IP address host (127.0.0.1).
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            await sign_in(http, net.base_url)
            base = net.base_url
            dash = await get_page(http, base + "/ops/")
            page = await get_page(http, f"{base}/ops/t/{txn_id}")
            req_page = await get_page(http, f"{base}/ops/a/{net.req.symbol}")
            # The search box: a request id or a transaction id leads to the page.
            for q in ("OPS-1", txn_id, txn_id.lower()):
                async with http.get(f"{base}/ops/search", params={"q": q}, headers=HTML,
                                    allow_redirects=False) as resp:
                    assert resp.status == 303
                    assert resp.headers["Location"] == f"/ops/t/{txn_id}"
            await get_page(http, f"{base}/ops/search?q=NO-SUCH-REQUEST", 404)

    # Dashboard rows for this network's agencies come from the hub's own bookkeeping.
    assert row_for(dash, net.city.symbol, "supplier-table")[:8] == [
        "南京图书馆", net.city.symbol, "1", "0", "1", "0.0 %", "—", "0"]
    js_row = row_for(dash, net.prov.symbol, "supplier-table")
    assert js_row[:6] == ["苏州大学图书馆", net.prov.symbol, "1", "1", "0", "100.0 %"]
    assert js_row[7:] == ["0", "0", "1"]  # no breaches, no load, one forwarded today
    assert row_for(req_page, net.req.symbol, "requester-table") == [
        "南京大学图书馆", net.req.symbol, "1", "1", "0", "0", "0.0 %", "0"]

    # The transaction page: facts, rota with reasons, exclusion, audit trail.
    assert '<span class="badge" id="txn-state">CopyCompleted</span>' in page
    assert "中国图书馆学报" in page and "OPS-1" in page
    rota = await pool.fetch("SELECT supplier, tier, reasons, outcome FROM rota_entry "
                            "WHERE transaction_id = $1 ORDER BY position", txn_id)
    assert [r["supplier"] for r in rota] == [net.city.symbol, net.prov.symbol, net.nat.symbol]
    rota_rows = [cells for _, cells in rows_of(page.split('id="rota-table"')[1]
                                               .split("</table>")[0]).rows][1:]
    assert [r[5] for r in rota_rows] == ["unfilled", "supplied", "pending"]
    assert [r[2] for r in rota_rows] == ["1 · same city", "2 · same province", "3 · national"]
    for entry, cells in zip(rota, rota_rows, strict=True):
        assert entry["reasons"] and all(r in cells[8] for r in entry["reasons"]), cells
    excluded = rows_of(page.split('id="excluded-table"')[1].split("</table>")[0]).rows[1:]
    assert [cells for _, cells in excluded] == [
        [f"万方数据 Wanfang Data {net.dear.symbol}",
         "quote 80.00 CNY above maximumCosts 50.00"]]
    # Suzhou's quote (12.00 + 9 pages x 0.50) is frozen on the rota and charged.
    assert rota_rows[1][4] == "16.50 CNY"
    ledger = rows_of(page.split('id="ledger-table"')[1].split("</table>")[0]).rows[1:]
    assert [c[1:4] for _, c in ledger] == [["CopyCompleted", "charge", "16.50 CNY"]]
    audit = await pool.fetch("SELECT event, from_state, to_state FROM audit_log "
                             "WHERE transaction_id = $1 ORDER BY id", txn_id)
    audit_rows = rows_of(page.split('id="audit-table"')[1].split("</table>")[0]).rows[1:]
    assert [(c[2], c[3]) for _, c in audit_rows] == [
        (a["event"], f"{a['from_state'] or '—'} → {a['to_state'] or '—'}") for a in audit]
    events = [a["event"] for a in audit]
    assert events[:2] == ["request", "forward"] and "status:Unfilled" in events
    assert events[-1] == "status:CopyCompleted"
    assert "reasonUnfilled: NotOnShelf" in page
    # Patron data never reaches the operators' pages.
    assert "zhangsan@example.edu.cn" not in page and "张三" not in page


async def test_unknown_transaction_is_404(settings: Settings, pool: asyncpg.Pool) -> None:
    async with ops_client(settings, pool) as client:
        await sign_in(client)
        page = await get_page(client, "/ops/t/ILL-19990101-NOSUCHTXN0", 404)
        assert "Unknown transaction" in page and "ILL-19990101-NOSUCHTXN0" in page
        page = await get_page(client, "/ops/t/%3Cb%3Ebold%3C%2Fb%3E", 404)
        assert "<b>bold</b>" not in page and "&lt;b&gt;bold&lt;/b&gt;" in page


async def test_hostile_names_are_escaped(settings: Settings, pool: asyncpg.Pool,
                                         make_agency: MakeAgency) -> None:
    hostile = "<script>alert('x')</script> 恶意图书馆 & Co"
    escaped = "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; 恶意图书馆 &amp; Co"
    bad, _ = await make_agency(name=hostile, roles=("requester", "supplier"))
    txn_id = await put_transaction(pool, bad, "ExpectToSupply", supplier=bad,
                                   title='"><img src=x onerror=alert(1)>',
                                   forwarded=datetime.now(UTC))
    await pool.execute("UPDATE rota_entry SET reasons = $2 WHERE transaction_id = $1",
                       txn_id, ["<b>reason</b>"])
    await pool.execute(
        """INSERT INTO rota_excluded (transaction_id, supplier, reason)
           VALUES ($1, '<i>x</i>', '</td><script>1</script>')""", txn_id)
    await pool.execute(
        """INSERT INTO audit_log (transaction_id, actor, event, detail)
           VALUES ($1, '<svg onload=alert(1)>', 'status:<x>', $2::jsonb)""",
        txn_id, json.dumps({"note": "<script>alert(2)</script>"}))
    await pool.execute("INSERT INTO scorecard_total (supplier, forwarded, open_requests) "
                       "VALUES ($1, 1, 1)", bad)
    async with ops_client(settings, pool) as client:
        await sign_in(client)
        dash = await get_page(client, "/ops/")
        page = await get_page(client, f"/ops/t/{txn_id}")
    for body in (dash, page):
        assert "<script" not in body and "<img" not in body and "<svg onload" not in body
        assert escaped in body
    assert row_for(dash, bad, "supplier-table")[0] == hostile
    assert "&lt;b&gt;reason&lt;/b&gt;" in page
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in page
    assert "&lt;/td&gt;&lt;script&gt;1&lt;/script&gt;" in page
    assert "note: &lt;script&gt;alert(2)&lt;/script&gt;" in page
