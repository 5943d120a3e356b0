"""Fee schedules: the file format, quotes for every service kind, dates, pages, maximumCosts."""

from __future__ import annotations

import datetime
from pathlib import Path

import asyncpg
import pytest

from app.cli import run_command
from schemas.money import Money
from schemas.settings import Settings
from settlement.fees import (
    FeeError,
    count_pages,
    fee_to_charge,
    load_fees,
    max_cost_problem,
    pages_of,
    parse_fees,
    quote,
    quotes,
)
from tests.support.agencies import sql_agencies
from tests.support.money import cny
from tests.support.paths import DOCS

D = datetime.date


async def _schedule(pool: asyncpg.Pool) -> tuple[str, str]:
    nstl, nlc = await sql_agencies(pool, "国家科技图书文献中心", "国家图书馆")
    text = f"""
currency = "CNY"
[[fee]]
supplier = "{nstl}"
service_kind = "DocumentDelivery"
effective_from = 2026-01-01
effective_to = 2026-06-30
base = "2.00"
per_page = "0.30"
assumed_pages = 12

[[fee]]
supplier = "{nstl}"
service_kind = "DocumentDelivery"
effective_from = 2026-07-01
base = "2.00"
per_page = "0.25"

[[fee]]
supplier = "{nlc}"
service_kind = "BookLoan"
effective_from = 2026-01-01
effective_to = 2026-12-31
service_fee = "20.00"
courier_fee = "18.00"

[[fee]]
supplier = "{nlc}"
service_kind = "PayPerView"
effective_from = 2026-01-01
per_article = "8.00"

[[fee]]
supplier = "{nlc}"
service_kind = "EBookLoan"
effective_from = 2026-01-01
per_loan = "5.00"

[[fee]]
supplier = "{nlc}"
service_kind = "ProxySearch"
effective_from = 2026-01-01
flat = "10.00"
per_hour = "60.00"
assumed_hours = 2
"""
    async with pool.acquire() as conn:
        report = await load_fees(conn, text, file_name="fees.toml")
    assert report.entries == 6 and set(report.suppliers) == {nstl, nlc}
    assert report.superseded == 0
    return nstl, nlc


async def test_quote_for_each_service_kind(pool: asyncpg.Pool) -> None:
    nstl, nlc = await _schedule(pool)
    day = D(2026, 3, 15)
    async with pool.acquire() as conn:
        # DocumentDelivery: base + per page; unknown pages use the entry's assumed_pages.
        assert await quote(conn, nstl, "DocumentDelivery", pages=9, on=day) == cny("4.70")
        assert await quote(conn, nstl, "DocumentDelivery", pages=None, on=day) == cny("5.60")
        assert await quote(conn, nstl, "DocumentDelivery", pages=1, on=day) == cny("2.30")
        # BookLoan: service fee + courier fee, pages do not matter.
        assert await quote(conn, nlc, "BookLoan", pages=300, on=day) == cny("38.00")
        assert await quote(conn, nlc, "PayPerView", on=day) == cny("8.00")
        assert await quote(conn, nlc, "EBookLoan", on=day) == cny("5.00")
        # ProxySearch: flat + per hour; unknown hours use assumed_hours (2).
        assert await quote(conn, nlc, "ProxySearch", hours=1.5, on=day) == cny("100.00")
        assert await quote(conn, nlc, "ProxySearch", hours=None, on=day) == cny("130.00")
        # No schedule for this supplier and kind: None, not zero.
        assert await quote(conn, nstl, "BookLoan", on=day) is None
        both = await quotes(conn, [nstl, nlc], "DocumentDelivery", pages=10, on=day)
        assert both == {nstl: cny("5.00")}


async def test_per_hour_rounds_half_up_to_the_fen(pool: asyncpg.Pool) -> None:
    (sup,) = await sql_agencies(pool, "代查馆")
    text = f"""[[fee]]
supplier = "{sup}"
service_kind = "ProxySearch"
effective_from = 2026-01-01
per_hour = "0.05"
"""
    async with pool.acquire() as conn:
        await load_fees(conn, text, file_name="f.toml")
        day = D(2026, 1, 1)
        # 5 fen * 0.1 h = 0.5 fen -> 1 fen (half up); 5 * 0.3 = 1.5 -> 2 fen.
        assert await quote(conn, sup, "ProxySearch", hours=0.1, on=day) == cny("0.01")
        assert await quote(conn, sup, "ProxySearch", hours=0.3, on=day) == cny("0.02")
        assert await quote(conn, sup, "ProxySearch", hours=0.0, on=day) == cny("0.00")


async def test_effective_date_boundaries(pool: asyncpg.Pool) -> None:
    nstl, nlc = await _schedule(pool)
    async with pool.acquire() as conn:
        async def dd(day: D) -> Money | None:
            return await quote(conn, nstl, "DocumentDelivery", pages=10, on=day)

        assert await dd(D(2025, 12, 31)) is None                 # before the first entry
        assert await dd(D(2026, 1, 1)) == cny("5.00")            # first day, inclusive
        assert await dd(D(2026, 6, 30)) == cny("5.00")           # last day, inclusive
        assert await dd(D(2026, 7, 1)) == cny("4.50")            # the new price
        assert await dd(D(2099, 1, 1)) == cny("4.50")            # open-ended
        assert await quote(conn, nlc, "BookLoan", on=D(2026, 12, 31)) == cny("38.00")
        assert await quote(conn, nlc, "BookLoan", on=D(2027, 1, 1)) is None


async def test_reload_replaces_the_suppliers_schedules(pool: asyncpg.Pool) -> None:
    nstl, nlc = await _schedule(pool)
    text = f"""[[fee]]
supplier = "{nstl}"
service_kind = "PayPerView"
effective_from = 2026-01-01
per_article = "9.50"
"""
    async with pool.acquire() as conn:
        report = await load_fees(conn, text, file_name="again.toml")
        assert report.superseded == 2        # nstl's two DocumentDelivery entries
        day = D(2026, 8, 1)
        assert await quote(conn, nstl, "DocumentDelivery", pages=3, on=day) is None
        assert await quote(conn, nstl, "PayPerView", on=day) == cny("9.50")
        # A supplier the file does not name keeps its schedules.
        assert await quote(conn, nlc, "PayPerView", on=day) == cny("8.00")
        kept = await conn.fetchval("SELECT count(*) FROM fee_schedule WHERE supplier = $1",
                                   nstl)
        assert kept == 3                     # the old rows stay, marked superseded


def _one(body: str, supplier: str = "NSTL:CN") -> str:
    return f'[[fee]]\nsupplier = "{supplier}"\n{body}\n'


@pytest.mark.parametrize(("text", "message"), [
    ("currency = 'CNY'\n", "no [[fee]] entries"),
    ("[[fee]\n", "not valid TOML"),
    ("curency = 'CNY'\n[[fee]]\n", "did you mean 'currency'"),
    (_one('service_kind = "DocumentDelivery"\neffective_from = 2026-01-01\nbase = "1.00"\n'
          'per_pge = "0.30"'),
     "fee[1] (NSTL:CN DocumentDelivery): per_pge: unknown key; did you mean 'per_page'"),
    (_one('service_kind = "BookLoan"\neffective_from = 2026-01-01\nper_page = "0.30"'),
     "fee[1] (NSTL:CN BookLoan): per_page: is a field of DocumentDelivery, not of BookLoan"),
    (_one('service_kind = "BookLoan"\neffective_from = 2026-01-01\nservice_fee = 10'),
     "fee[1] (NSTL:CN BookLoan): service_fee: 10 must be an amount written as a decimal "
     "string"),
    (_one('service_kind = "BookLoan"\neffective_from = 2026-01-01\nservice_fee = "1.005"'),
     "service_fee: '1.005' has 3 decimal places; CNY allows at most 2"),
    (_one('service_kind = "BookLoan"\neffective_from = 2026-01-01\nservice_fee = "-1.00"'),
     "service_fee: '-1.00' is negative"),
    (_one('service_kind = "BookLoan"\neffective_from = 2026-01-01'),
     "fee[1] (NSTL:CN BookLoan): service_fee / courier_fee: give at least one of them"),
    (_one('service_kind = "PayPerView"\neffective_from = 2026-01-01'),
     "fee[1] (NSTL:CN PayPerView): per_article: is required"),
    (_one('service_kind = "EBookLoan"\nper_loan = "5.00"'),
     "fee[1] (NSTL:CN EBookLoan): effective_from: is required"),
    (_one('service_kind = "EBookLoan"\nper_loan = "5.00"\neffective_from = 2026-02-30'),
     "not valid TOML: Invalid date or datetime (at line 5"),
    (_one('service_kind = "EBookLoan"\nper_loan = "5.00"\neffective_from = "2026-02-30"'),
     "fee[1] (NSTL:CN EBookLoan): effective_from: '2026-02-30' is not a calendar date"),
    (_one('service_kind = "EBookLoan"\nper_loan = "5.00"\neffective_from = 2026-02-01\n'
          'effective_to = 2026-01-31'),
     "fee[1] (NSTL:CN EBookLoan): effective_to: 2026-01-31 is before effective_from"),
    (_one('service_kind = "Photocopy"\nper_loan = "5.00"'),
     "fee[1] (NSTL:CN): service_kind: 'Photocopy' is not one of DocumentDelivery"),
    (_one('service_kind = "PayPerView"\neffective_from = 2026-01-01\nper_article = "1"',
          supplier="no-colon"),
     "fee[1]: supplier: 'no-colon' is not an agency symbol"),
    (_one('service_kind = "PayPerView"\neffective_from = 2026-01-01\nper_article = "1"\n'
          'currency = "yuan"'), "fee[1] (NSTL:CN PayPerView): currency:"),
    (_one('service_kind = "DocumentDelivery"\neffective_from = 2026-01-01\nper_page = "1"\n'
          'assumed_pages = 0'), "assumed_pages: 0 must be a whole number of pages"),
    (_one('service_kind = "EBookLoan"\neffective_from = 2026-01-01\nper_loan = "5.00"')
     + _one('service_kind = "EBookLoan"\neffective_from = 2026-06-01\nper_loan = "6.00"'),
     "fee[2] (NSTL:CN EBookLoan): effective_from: its dates overlap fee[1] (NSTL:CN "
     "EBookLoan)"),
])
def test_fee_file_errors_name_entry_and_field(text: str, message: str) -> None:
    with pytest.raises(FeeError) as err:
        parse_fees(text)
    assert message in str(err.value)


async def test_load_is_all_or_nothing(pool: asyncpg.Pool) -> None:
    (sup,) = await sql_agencies(pool, "半途而废馆")
    good = _one('service_kind = "EBookLoan"\neffective_from = 2026-01-01\nper_loan = "5.00"',
                supplier=sup)
    unknown = "T000000:NOBODY"
    bad = _one('service_kind = "EBookLoan"\neffective_from = 2026-01-01\nper_loan = "5.00"',
               supplier=unknown)
    async with pool.acquire() as conn:
        with pytest.raises(FeeError, match=rf"fee\[2\] \({unknown} EBookLoan\): supplier: "
                                           "no agency"):
            await load_fees(conn, good + bad, file_name="bad.toml")
        assert await conn.fetchval("SELECT count(*) FROM fee_schedule WHERE supplier = $1",
                                   sup) == 0


@pytest.mark.parametrize(("pages", "estimated", "expected"), [
    ("12-20", None, 9),
    ("5", None, 1),
    ("1-3,7", None, 4),
    ("1-5, 3-8", None, 8),          # overlapping ranges count once
    ("pp. 12–20", None, 9),         # en dash and a "pp." prefix
    ("1-3，7-8", None, 5),           # Chinese comma
    ("iv-x", "30", 30),             # unreadable: falls back to estimatedNoPages
    ("20-12", None, None),
    (None, "16", 16),
    (None, None, None),
    (None, "lots", None),
])
def test_pages_are_read_from_pages_requested_else_the_estimate(
        pages: str | None, estimated: str | None, expected: int | None) -> None:
    info = {k: v for k, v in (("pagesRequested", pages), ("estimatedNoPages", estimated)) if v}
    request = {"header": {}, "bibliographicInfo": info}
    assert pages_of({"request": request}) == expected
    assert pages_of(request) == expected


def test_a_plain_page_range_is_counted() -> None:
    assert count_pages("1") == 1 and count_pages("1-100") == 100 and count_pages("") is None


def test_maximum_costs_limit_the_quote_and_delivery_costs_win() -> None:
    q = cny("30.00")
    assert max_cost_problem(q, cny("30.00")) is None             # equal is allowed
    assert max_cost_problem(q, cny("50.00")) is None
    assert max_cost_problem(q, None) is None                     # no limit given
    assert max_cost_problem(None, cny("1.00")) is None           # no schedule: no quote
    assert max_cost_problem(q, cny("29.99")) == \
        "quote 30.00 CNY is above maximumCosts 29.99 CNY"
    assert "different currencies" in (max_cost_problem(q, Money(3000, "USD")) or "")
    assert fee_to_charge(cny("12.00"), q) == cny("12.00")        # deliveryCosts wins
    assert fee_to_charge(None, q) == q                           # else the quote
    assert fee_to_charge(None, None) is None                     # nothing to charge


async def test_fees_load_reports_the_load_and_names_a_bad_field(
        settings: Settings, pool: asyncpg.Pool, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    (sup,) = await sql_agencies(pool, "命令行馆")
    path = tmp_path / "fees.toml"
    path.write_text(_one('service_kind = "EBookLoan"\neffective_from = 2026-01-01\n'
                         'per_loan = "5.00"', supplier=sup), "utf-8")
    assert await run_command(settings, ["fees", "load", str(path)]) == 0
    assert "1 schedule entry for 1 supplier" in capsys.readouterr().out
    path.write_text(_one('service_kind = "EBookLoan"\neffective_from = 2026-01-01\n'
                         'per_loan = 5', supplier=sup), "utf-8")
    assert await run_command(settings, ["fees", "load", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: fee[1] ({sup} EBookLoan): per_loan:")
    assert "nothing loaded" in err
    assert await run_command(settings, ["fees", "load", str(tmp_path / "missing.toml")]) == 1
    assert "cannot read" in capsys.readouterr().err


def test_the_documented_fee_file_covers_every_service_kind() -> None:
    entries = parse_fees((DOCS / "fees.example.toml").read_text("utf-8"))
    assert {e.service_kind for e in entries} == {"DocumentDelivery", "BookLoan", "PayPerView",
                                                 "EBookLoan", "ProxySearch"}
