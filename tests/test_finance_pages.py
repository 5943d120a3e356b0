"""Finance pages (/fin): settled statements with their CSV and PDF, the centre's summary
and subsidy budgets, each person seeing the agencies their role reaches.

Two provinces of this test's own: 甲 holds libraries A and B, 乙 holds C. A real
settlement run writes the files; the hub's HTTP app serves them (real aiohttp server).
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import quote

import asyncpg
import pytest
from aiohttp.test_utils import TestServer

from schemas.settings import Settings
from settlement.run import settle
from settlement.statement_model import statement_name, summary_name
from settlement.subsidy import load_subsidy
from tests.support.agencies import sql_agencies
from tests.support.money import at
from tests.support.names import budget_name
from tests.support.operators import rows_of
from tests.support.people import make_person, signed_in
from tests.support.settlement import after, charge, fresh_year
from web.app import make_app


@dataclass
class Settled:
    base_url: str
    period: str
    a: str
    b: str
    c: str
    province: str
    budget: str


@pytest.fixture
async def settled(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[Settled]:
    year = await fresh_year(pool)
    period = f"{year}-05"
    tag = secrets.token_hex(3)
    p1, p2 = f"甲省{tag}", f"乙省{tag}"
    a, b = await sql_agencies(pool, "甲省图书馆 A", "甲省大学图书馆 B", province=p1, city="甲")
    (c,) = await sql_agencies(pool, "乙省图书馆 C", province=p2, city="乙")
    name = budget_name("reader-support")
    async with pool.acquire() as conn:
        version = await load_subsidy(conn, f"""
[[budget]]
name = "{name}"
per = "requester"
period = "month"
amount = "100.00"
[[rule]]
name = "half"
when = {{ requester = ["{a}", "{c}"] }}
percent = 50
budgets = ["{name}"]
""")
    await charge(pool, version, a, b, "30.00", at(f"{period}-03"), title="敦煌学研究（第一卷）")
    await charge(pool, version, c, a, "12.00", at(f"{period}-10"), title="西夏文献")
    await charge(pool, version, b, c, "8.00", at(f"{period}-20"), title="红楼梦版本研究")
    await settle(pool, settings, period, now=after(period))
    server = TestServer(make_app(settings, pool))
    await server.start_server()
    try:
        yield Settled(str(server.make_url("")).rstrip("/"), period, a, b, c, p1, name)
    finally:
        await server.close()


def statement_rows(page: str) -> set[str]:
    section = page.split('id="statement-table"', 1)[1].split("</table>", 1)[0]
    return {attrs["data-symbol"] or "" for attrs, _ in rows_of("<table>" + section).rows
            if attrs.get("data-symbol")}


def budget_rows(page: str) -> set[str]:
    section = page.split('id="budget-table"', 1)[1].split("</table>", 1)[0]
    return {attrs["data-symbol"] or "" for attrs, _ in rows_of("<table>" + section).rows
            if "data-symbol" in attrs}


def file_path(period: str, name: str) -> str:
    return f"/fin/files/{period}/{quote(name)}"


async def test_a_librarys_finance_officer_sees_and_downloads_only_its_own(
        settings: Settings, pool: asyncpg.Pool, settled: Settled) -> None:
    s = settled
    officer = await make_person(pool, f"finance@agency:{s.a}", name="甲馆财务")
    async with signed_in(s.base_url, pool, settings, officer) as browser:
        page = await browser.get(f"/fin/?period={s.period}")
        assert statement_rows(page) == {s.a}
        assert 'id="summary"' not in page
        mine = statement_name(s.a, s.period, "csv")
        body, headers = await browser.get_bytes(file_path(s.period, mine))
        assert headers["Content-Type"] == "text/csv; charset=utf-8"
        text = body.decode("utf-8")
        assert text.startswith("\ufeff") and "敦煌学研究（第一卷）" in text
        pdf, _ = await browser.get_bytes(file_path(s.period, statement_name(s.a, s.period,
                                                                            "pdf")))
        assert pdf.startswith(b"%PDF")
        # Another library's file and the centre's summary: as if they did not exist.
        theirs, _ = await browser.get_bytes(
            file_path(s.period, statement_name(s.b, s.period, "csv")), 404)
        nothing, _ = await browser.get_bytes(file_path(s.period, "statement-nobody.csv"), 404)
        assert theirs.replace(statement_name(s.b, s.period, "csv").encode(), b"x") == \
            nothing.replace(b"statement-nobody.csv", b"x")
        await browser.get_bytes(file_path(s.period, summary_name(s.period, "csv")), 404)
        await browser.get_bytes(file_path(s.period, "..%2F..%2Fsecrets"), 404)
        assert budget_rows(page) == {s.a}
    async with signed_in(s.base_url, pool, settings,
                         await make_person(pool, f"library_staff@agency:{s.b}")) as browser:
        page = await browser.get(f"/lib/statements?period={s.period}")
        assert statement_rows(page) == {s.b}
        await browser.get_bytes(file_path(s.period, statement_name(s.b, s.period, "pdf")))
        await browser.get_bytes(file_path(s.period, mine), 404)


async def test_the_centres_finance_officer_sees_every_agency_and_the_summary(
        settings: Settings, pool: asyncpg.Pool, settled: Settled) -> None:
    s = settled
    officer = await make_person(pool, "finance@consortium", name="中心财务")
    async with signed_in(s.base_url, pool, settings, officer) as browser:
        page = await browser.get(f"/fin/?period={s.period}")
        assert {s.a, s.b, s.c} <= statement_rows(page)
        assert 'id="summary-table"' in page
        summary, _ = await browser.get_bytes(file_path(s.period, summary_name(s.period, "csv")))
        assert "甲省大学图书馆 B" in summary.decode("utf-8")
        await browser.get_bytes(file_path(s.period, statement_name(s.c, s.period, "pdf")))
        assert {s.a, s.c} <= budget_rows(page)
        assert "100.00" in page and "94.00" in page      # C: 100.00 less half of 12.00


async def test_a_regional_administrator_sees_only_its_provinces_agencies(
        settings: Settings, pool: asyncpg.Pool, settled: Settled) -> None:
    s = settled
    admin = await make_person(pool, f"regional_admin@region:{s.province}")
    async with signed_in(s.base_url, pool, settings, admin) as browser:
        page = await browser.get(f"/fin/?period={s.period}")
        assert statement_rows(page) == {s.a, s.b}
        assert budget_rows(page) == {s.a}
        await browser.get_bytes(file_path(s.period, statement_name(s.b, s.period, "csv")))
        await browser.get_bytes(file_path(s.period, statement_name(s.c, s.period, "csv")), 404)
        lib = await browser.get(f"/lib/?agency={quote(s.a)}")
        assert s.a in lib
        await browser.get(f"/lib/?agency={quote(s.c)}", 404)


async def test_finance_pages_need_the_permission(
        settings: Settings, pool: asyncpg.Pool, settled: Settled) -> None:
    s = settled
    nobody = await make_person(pool)
    async with signed_in(s.base_url, pool, settings, nobody) as browser:
        await browser.get("/fin/", 403)
        await browser.get_bytes(file_path(s.period, statement_name(s.a, s.period, "csv")), 403)
    officer = await make_person(pool, f"finance@agency:{s.a}")
    async with signed_in(s.base_url, pool, settings, officer) as browser:
        body = await browser.get("/fin/?period=2026-13", 400)
        assert "YYYY-MM" in body
        await browser.get("/lib/", 403)         # finance is no transaction reach
