"""Charges: subsidy rules and budgets, and the append-only double-entry ledger (real DB).

Every test makes its own agencies (fresh symbols) and budget names, and posts with the
subsidy version it loaded, so tests sharing the run's database never see each other.
"""

from __future__ import annotations

import asyncio
import datetime
from pathlib import Path

import asyncpg
import pytest

from app.cli import run_command
from infra.flags import FlagKind, of_transaction
from schemas.money import Money
from schemas.settings import Settings
from settlement.fees import load_fees, pages_of, quote
from settlement.ledger import (
    CENTRE,
    ChargeAboveMaxCost,
    ChargeAboveQuote,
    ChargeCurrencyMismatch,
    Entry,
    PostingResult,
    balance,
    billable_event,
    check,
    entries,
    post_charge,
    record_flag,
    reverse,
    reverse_transaction,
)
from settlement.subsidy import (
    SubsidyError,
    SubsidyRules,
    budgets_report,
    load_subsidy,
)
from tests.support.agencies import sql_agencies
from tests.support.money import at, cny
from tests.support.names import budget_name, txn_id
from tests.support.paths import DOCS

# --------------------------------------------------------------------------
# posting a charge
# --------------------------------------------------------------------------

async def charge(conn: asyncpg.Connection, version: int | None, requester: str, supplier: str,
                 fee: str, *, kind: str = "BookLoan", event: str = "Loaned",
                 on: datetime.datetime | None = None, quote_: str | None = None,
                 transaction: str | None = None, title: str | None = None) -> PostingResult:
    """Post `fee` (yuan) as a charge, by default a book loan on 2026-10-15."""
    return await post_charge(
        conn, transaction_id=transaction or txn_id(), event=event, requester=requester,
        supplier=supplier, service_kind=kind, fee=cny(fee),
        quote=cny(quote_) if quote_ else None, on=on or at("2026-10-15"), title=title,
        subsidy_version=version)


# --------------------------------------------------------------------------
# the worked example
# --------------------------------------------------------------------------

async def test_a_west_member_borrows_from_the_national_library_subsidised_twice(
        pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str], settings: Settings) -> None:
    """A west member borrows a book from the national library, subsidised twice."""
    lzu, nlc, pku = await sql_agencies(pool, "兰州大学图书馆", "国家图书馆", "北京大学图书馆")
    west, support, centre = budget_name("west"), budget_name("support"), budget_name("centre")
    async with pool.acquire() as conn:
        await load_fees(conn, f"""[[fee]]
supplier = "{nlc}"
service_kind = "BookLoan"
effective_from = 2026-01-01
service_fee = "20.00"
courier_fee = "18.00"
""", file_name="fees.toml")
        version = await load_subsidy(conn, f"""
[groups]
west = ["{lzu}"]
members = ["group:west", "{pku}"]
[[budget]]
name = "{west}"
per = "requester"
period = "month"
amount = "100.00"
[[budget]]
name = "{support}"
per = "requester"
period = "month"
amount = "300.00"
[[budget]]
name = "{centre}"
per = "global"
period = "month"
amount = "20000.00"
[[rule]]
name = "west support"
when = {{ requester = ["group:west"] }}
fixed = "2.00"
budgets = ["{west}"]
[[rule]]
name = "reader support"
when = {{ requester = ["group:members"] }}
percent = 50
cap = "20.00"
budgets = ["{support}", "{centre}"]
""", "subsidy.toml")
        request = {"request": {"bibliographicInfo": {"title": "敦煌学研究"}}}
        assert pages_of(request) is None
        q = await quote(conn, nlc, "BookLoan", pages=None, on=datetime.date(2026, 10, 15))
        assert q == cny("38.00")
        txn = txn_id()
        result = await post_charge(
            conn, transaction_id=txn, event="Loaned", requester=lzu, supplier=nlc,
            service_kind="BookLoan", fee=q, quote=q, on=at("2026-10-15", "10:30"),
            title="敦煌学研究", subsidy_version=version)
    # fee 38.00; "west support" gives 2.00, leaving 36.00; "reader support" gives 50 % of
    # 36.00 = 18.00 (under its 20.00 cap); subsidy 20.00, patron share 18.00.
    assert (result.fee, result.subsidy, result.patron_share) == (
        cny("38.00"), cny("20.00"), cny("18.00"))
    assert [(g.rule, g.granted) for g in result.grants] == [
        ("west support", 200), ("reader support", 1800)]
    assert result.entries == (
        Entry(nlc, "receivable", cny("38.00")),
        Entry(lzu, "payable", cny("-38.00")),
        Entry(lzu, "subsidy", cny("20.00")),
        Entry(CENTRE, "subsidy_expense", cny("-20.00")),
    )
    assert sum(e.amount.minor for e in result.entries) == 0
    assert result.title == "敦煌学研究" and result.local_date == datetime.date(2026, 10, 15)

    async with pool.acquire() as conn:
        bal = await balance(conn, lzu, datetime.date(2026, 10, 1), datetime.date(2026, 10, 31))
        assert bal.closing == (cny("-18.00"),)          # LZU owes the centre the patron share
        assert bal.patron_share == (cny("18.00"),)
        assert (await balance(conn, nlc, None, None)).closing == (cny("38.00"),)
        report = {(b.name, b.requester): b for b in await budgets_report(conn, "2026-10")}
        assert report[(west, lzu)].spent == cny("2.00")
        assert report[(support, lzu)].remaining == cny("282.00")
        assert report[(centre, "")].spent == cny("18.00")
        assert await check(conn) == []

    assert await run_command(settings, ["ledger", "show", lzu, "--from", "2026-10-01",
                                        "--to", "2026-10-31"]) == 0
    out = capsys.readouterr().out
    assert "兰州大学图书馆" in out and "敦煌学研究" in out and "国家图书馆" in out
    assert "-38.00 CNY" in out and "+20.00 CNY" in out
    assert "closing balance   -18.00 CNY" in out


# --------------------------------------------------------------------------
# subsidy rules
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("rule", "fee", "subsidy"), [
    ("percent = 50", "20.00", "10.00"),
    ('fixed = "3.00"', "20.00", "3.00"),
    ('percent = 50\nfixed = "2.00"\ncap = "8.00"', "20.00", "8.00"),   # 12.00 capped
    ('percent = 50\nfixed = "2.00"', "10.00", "7.00"),
    ("percent = 12.5", "0.33", "0.04"),          # 4.125 fen, rounded down
    ('fixed = "30.00"', "20.00", "20.00"),       # never more than the fee
    ('percent = 100\ncap = "15.00"', "20.00", "15.00"),
    ("percent = 0", "20.00", "0.00"),
])
async def test_each_kind_of_subsidy_rule_grants_its_share(
        pool: asyncpg.Pool, rule: str, fee: str, subsidy: str) -> None:
    req, sup = await sql_agencies(pool, "读者馆", "供应馆")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f'[[rule]]\nname = "r"\nwhen = {{ requester = ["{req}"] }}'
                                     f"\n{rule}\n", "s.toml")
        r = await charge(conn, v, req, sup, fee)
    assert r.subsidy == cny(subsidy)
    assert r.patron_share == cny(fee) - cny(subsidy)
    assert r.patron_share.minor >= 0


async def test_stacking_order_is_file_order_on_the_remaining_share(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "叠加馆", "供应馆")
    fixed = f'[[rule]]\nname = "fixed"\nwhen = {{ requester = ["{req}"] }}\nfixed = "5.00"\n'
    half = f'[[rule]]\nname = "half"\nwhen = {{ requester = ["{req}"] }}\npercent = 50\n'
    everything = (f'[[rule]]\nname = "all"\nwhen = {{ requester = ["{req}"] }}\n'
                  "percent = 100\n")
    async with pool.acquire() as conn:
        a = await charge(conn, await load_subsidy(conn, fixed + half), req, sup, "20.00")
        b = await charge(conn, await load_subsidy(conn, half + fixed), req, sup, "20.00")
        c = await charge(conn, await load_subsidy(conn, everything + fixed), req, sup, "20.00")
    # fixed first: 5.00, then half of the remaining 15.00 = 7.50.
    assert [(g.rule, g.granted) for g in a.grants] == [("fixed", 500), ("half", 750)]
    assert a.subsidy == cny("12.50")
    # half first: 10.00, then 5.00 of the remaining 10.00.
    assert [(g.rule, g.granted) for g in b.grants] == [("half", 1000), ("fixed", 500)]
    assert b.subsidy == cny("15.00")
    # a 100 % rule leaves nothing for later rules; the patron share is zero, not negative.
    assert [(g.rule, g.granted) for g in c.grants] == [("all", 2000)]
    assert c.patron_share == cny("0.00")


async def test_matching_on_kind_supplier_and_requester_groups(pool: asyncpg.Pool) -> None:
    r1, r2, shl, other = await sql_agencies(pool, "成员甲", "非成员", "上海图书馆", "别馆")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f"""
[groups]
shl = ["{shl}"]
readers = ["{r1}"]
[[rule]]
name = "shl loans"
when = {{ service_kind = ["BookLoan"], supplier = ["group:shl"], requester = ["group:readers"] }}
percent = 100
""")
        hit = await charge(conn, v, r1, shl, "25.00")
        wrong_kind = await charge(conn, v, r1, shl, "5.00", kind="DocumentDelivery",
                                  event="CopyCompleted")
        wrong_supplier = await charge(conn, v, r1, other, "25.00")
        wrong_requester = await charge(conn, v, r2, shl, "25.00")
    assert hit.subsidy == cny("25.00")
    for r in (wrong_kind, wrong_supplier, wrong_requester):
        assert r.subsidy == cny("0.00") and r.grants == ()
        assert [e.account for e in r.entries] == ["receivable", "payable"]


async def test_promotion_window_boundaries_are_consortium_local(pool: asyncpg.Pool) -> None:
    req, shl = await sql_agencies(pool, "促销读者馆", "上海图书馆")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f"""
[[rule]]
name = "free October"
when = {{ date_from = 2026-10-01, date_to = 2026-10-31, supplier = ["{shl}"] }}
percent = 100
""")
        cases = [
            (at("2026-09-30", "23:59:59"), "0.00"),   # the day before: not yet
            (at("2026-10-01", "00:00"), "25.00"),     # first day (2026-09-30 16:00 UTC)
            (at("2026-10-31", "23:59:59"), "25.00"),  # last day, inclusive
            (at("2026-11-01", "00:00"), "0.00"),      # the day after
            # 2026-10-31 17:00 UTC is already November in Shanghai.
            (datetime.datetime(2026, 10, 31, 17, 0, tzinfo=datetime.UTC), "0.00"),
            (datetime.datetime(2026, 9, 30, 16, 0, tzinfo=datetime.UTC), "25.00"),
        ]
        got = [(await charge(conn, v, req, shl, "25.00", on=on)).subsidy for on, _ in cases]
    assert got == [cny(s) for _, s in cases]


async def test_budget_exhaustion_mid_month(pool: asyncpg.Pool) -> None:
    r1, r2, sup = await sql_agencies(pool, "甲馆", "乙馆", "供应馆")
    name = budget_name("monthly")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f"""
[[budget]]
name = "{name}"
per = "requester"
period = "month"
amount = "25.00"
[[rule]]
name = "support"
when = {{ requester = ["{r1}", "{r2}"] }}
percent = 100
budgets = ["{name}"]
""")
        days = ["2026-10-03", "2026-10-09", "2026-10-14", "2026-10-20"]
        got = [await charge(conn, v, r1, sup, "10.00", on=at(d)) for d in days]
        other = await charge(conn, v, r2, sup, "10.00", on=at("2026-10-21"))
        november = await charge(conn, v, r1, sup, "10.00", on=at("2026-11-01", "00:00"))
        rows = {(b.requester, b.period): b for b in await budgets_report(conn, "2026-10")
                if b.name == name}
    assert [r.subsidy for r in got] == [cny("10.00"), cny("10.00"), cny("5.00"), cny("0.00")]
    # The request that exhausts the budget gets what is left; later ones get nothing;
    # all of them are charged and say why.
    assert got[2].grants[0].wanted == 1000 and got[2].grants[0].granted == 500
    assert got[2].notes == (f"rule 'support': budget '{name}' ({r1}, 2026-10) has 5.00 CNY "
                            "left; granted 5.00 CNY of 10.00 CNY",)
    assert "has 0.00 CNY left; granted 0.00 CNY of 10.00 CNY" in got[3].notes[0]
    assert got[3].patron_share == cny("10.00") and got[3].fee == cny("10.00")
    assert other.subsidy == cny("10.00")             # another requester: its own budget
    assert november.subsidy == cny("10.00")          # a new month, a new budget
    assert rows[(r1, "2026-10")].spent == cny("25.00")
    assert rows[(r1, "2026-10")].remaining == cny("0.00")
    assert rows[(r2, "2026-10")].spent == cny("10.00")


async def test_a_rule_is_limited_by_all_its_budgets_and_falls_back(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "多预算馆", "供应馆")
    promo, own, pot = budget_name("promo"), budget_name("own"), budget_name("pot")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f"""
[[budget]]
name = "{promo}"
per = "global"
period = "total"
amount = "12.00"
[[budget]]
name = "{own}"
per = "requester"
period = "month"
amount = "100.00"
[[budget]]
name = "{pot}"
per = "global"
period = "month"
amount = "6.00"
[[rule]]
name = "promotion"
when = {{ requester = ["{req}"] }}
percent = 100
budgets = ["{promo}"]
[[rule]]
name = "ordinary"
when = {{ requester = ["{req}"] }}
percent = 50
budgets = ["{own}", "{pot}"]
""")
        first = await charge(conn, v, req, sup, "10.00")
        second = await charge(conn, v, req, sup, "10.00")
        third = await charge(conn, v, req, sup, "10.00")
        assert await check(conn) == []
    assert first.subsidy == cny("10.00")
    # The promotion has 2.00 left; the ordinary rule takes half of the remaining 8.00.
    assert [(g.rule, g.granted) for g in second.grants] == [("promotion", 200),
                                                            ("ordinary", 400)]
    # The promotion is empty; the ordinary rule wants 5.00 but the global pot has 2.00
    # left, although the requester's own budget has plenty: the smallest remainder wins.
    assert [(g.rule, g.wanted, g.granted) for g in third.grants] == [
        ("promotion", 1000, 0), ("ordinary", 500, 200)]
    assert third.patron_share == cny("8.00")
    assert any(f"budget '{pot}' (global, 2026-10) has 2.00 CNY left" in n for n in third.notes)


async def test_fifty_concurrent_postings_never_overdraw(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "并发馆", "供应馆")
    pot, own = budget_name("pot"), budget_name("own")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f"""
[[budget]]
name = "{pot}"
per = "global"
period = "month"
amount = "100.00"
[[budget]]
name = "{own}"
per = "requester"
period = "month"
amount = "500.00"
[[rule]]
name = "all of it"
when = {{ requester = ["{req}"] }}
percent = 100
budgets = ["{own}", "{pot}"]
""")

    async def one(i: int) -> PostingResult:
        async with pool.acquire() as c:
            return await charge(c, v, req, sup, "7.00", transaction=f"{txn_id()}-{i}")

    results = await asyncio.gather(*(one(i) for i in range(50)))
    granted = sorted((r.subsidy.minor for r in results), reverse=True)
    assert sum(granted) == 10000                     # the pot, to the last fen, no more
    assert granted[:14] == [700] * 14 and granted[14] == 200 and set(granted[15:]) == {0}
    assert all(r.fee == cny("7.00") for r in results)   # everyone was still charged
    async with pool.acquire() as conn:
        spent = await conn.fetchval(
            "SELECT spent_minor FROM subsidy_budget WHERE name = $1", pot)
        assert spent == 10000
        assert await check(conn) == []


async def test_concurrent_charges_and_reversals_share_budgets(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "混合并发馆", "供应馆")
    a_name, z_name = budget_name("a"), budget_name("z")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f"""
[[budget]]
name = "{z_name}"
per = "global"
period = "total"
amount = "60.00"
[[budget]]
name = "{a_name}"
per = "requester"
period = "total"
amount = "80.00"
[[rule]]
name = "half"
when = {{ requester = ["{req}"] }}
percent = 50
budgets = ["{z_name}", "{a_name}"]
""")
    first = [f"{txn_id()}-{i}" for i in range(20)]

    async def post(t: str) -> PostingResult:
        async with pool.acquire() as c:
            return await charge(c, v, req, sup, "10.00", transaction=t)

    async def undo(t: str) -> PostingResult | None:
        async with pool.acquire() as c:
            return await reverse(c, transaction_id=t, event="Loaned", reason="refund",
                                 on=at("2026-10-20"))

    await asyncio.gather(*(post(t) for t in first))
    later = [f"{txn_id()}-{i}" for i in range(20)]
    await asyncio.gather(*(undo(t) for t in first[:10]), *(post(t) for t in later))
    async with pool.acquire() as conn:
        assert await check(conn) == []
        standing = await conn.fetchval(
            "SELECT sum(subsidy_minor) FROM ledger_posting WHERE transaction_id = ANY($1)",
            first + later)
        spent = await conn.fetch("SELECT spent_minor FROM subsidy_budget WHERE name = ANY($1)",
                                 [a_name, z_name])
    assert [r[0] for r in spent] == [standing, standing] and standing <= 6000


async def test_fee_in_another_currency_gets_no_subsidy(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "外币馆", "供应馆")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f'[[rule]]\nname = "r"\nwhen = {{ requester = ["{req}"] }}'
                                     "\npercent = 100\n")
        r = await post_charge(conn, transaction_id=txn_id(), event="CopyCompleted",
                              requester=req, supplier=sup, service_kind="PayPerView",
                              fee=Money(1500, "USD"), quote=Money(1500, "USD"),
                              on=at("2026-10-01"), subsidy_version=v)
    assert r.subsidy == Money(0, "USD") and "the fee is in USD" in r.notes[0]


@pytest.mark.parametrize(("text", "message"), [
    ("[[rule]]\nname = 'r'\nprecent = 5\n", "rule[1] 'r': precent: unknown key; did you mean "
                                             "'percent'"),
    ("[[rule]]\nname = 'r'\n", "rule[1] 'r': percent / fixed: give at least one of them"),
    ("[[rule]]\nname = 'r'\npercent = 101\n", "rule[1] 'r': percent: 101 must be a number "
                                               "from 0 to 100"),
    ("[[rule]]\nname = 'r'\npercent = 12.345\n", "percent: 12.345 has more than 2 decimals"),
    ("[[rule]]\nname = 'r'\nfixed = 3\n", "rule[1] 'r': fixed: 3 must be an amount written"),
    ("[[rule]]\nname = 'r'\nfixed = '3.00'\ncap = '-1.00'\n", "rule[1] 'r': cap: '-1.00' is "
                                                              "negative"),
    ("[[rule]]\nname = 'r'\nfixed = '1.00'\nbudgets = ['nope']\n",
     "rule[1] 'r': budgets: unknown budget 'nope'"),
    ("[[rule]]\nname = 'r'\nfixed = '1.00'\nwhen = { supplier = ['group:x'] }\n",
     "rule[1] 'r': when.supplier: unknown group 'x'"),
    ("[[rule]]\nname = 'r'\nfixed = '1.00'\nwhen = { requester = [] }\n",
     "rule[1] 'r': when.requester: must be a non-empty list"),
    ("[[rule]]\nname = 'r'\nfixed = '1.00'\nwhen = { service_kind = ['Photocopy'] }\n",
     "when.service_kind: 'Photocopy' is not one of"),
    ("[[rule]]\nname = 'r'\nfixed = '1.00'\nwhen = { date_from = 2026-10-02, "
     "date_to = 2026-10-01 }\n", "when.date_to: 2026-10-01 is before date_from 2026-10-02"),
    ("[[rule]]\nname = 'r'\nfixed = '1.00'\nwhen = { day = 1 }\n", "when.day: unknown key"),
    ("[[rule]]\nname = 'r'\nfixed = '1.00'\n[[rule]]\nname = 'r'\nfixed = '2.00'\n",
     "rule[2] 'r': name: duplicate of rule[1]"),
    ("[[budget]]\nname = 'b'\nper = 'library'\nperiod = 'month'\namount = '1.00'\n",
     "budget[1] 'b': per: 'library' must be \"requester\""),
    ("[[budget]]\nname = 'b'\nper = 'global'\nperiod = 'week'\namount = '1.00'\n",
     "budget[1] 'b': period: 'week' must be \"month\""),
    ("[[budget]]\nname = 'b'\nper = 'global'\nperiod = 'month'\n",
     "budget[1] 'b': amount: is required"),
    ("[groups]\na = ['group:b']\nb = ['group:a']\n", "groups: a: groups include each other in "
                                                     "a cycle: a -> b -> a"),
    ("[groups]\na = ['not a symbol']\n", "groups: a: 'not a symbol' is not an agency symbol"),
    ("[subsidy]\n", "top level: subsidy: unknown key"),
    ("rule = 1\n", "rule: must be an array of tables"),
])
def test_subsidy_file_errors_name_rule_and_field(text: str, message: str) -> None:
    with pytest.raises(SubsidyError) as err:
        SubsidyRules.from_toml(text)
    assert message in str(err.value)


def test_example_subsidy_file_parses_and_round_trips() -> None:
    rules = SubsidyRules.from_toml((DOCS / "subsidy.example.toml").read_text("utf-8"))
    assert [r.name for r in rules.rules] == ["SHL free book loans, October", "west support",
                                             "reader support"]
    assert SubsidyRules.from_dict(rules.to_dict()) == rules


async def test_subsidy_load_and_the_budgets_report_through_the_cli(
        pool: asyncpg.Pool, settings: Settings, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    req, sup = await sql_agencies(pool, "报表图书馆", "供应馆")
    own, pot = budget_name("own"), budget_name("pot")
    path = tmp_path / "subsidy.toml"
    path.write_text(f"""
[[budget]]
name = "{own}"
per = "requester"
period = "month"
amount = "50.00"
[[budget]]
name = "{pot}"
per = "global"
period = "total"
amount = "1000.00"
[[rule]]
name = "r"
when = {{ requester = ["{req}"] }}
percent = 100
budgets = ["{own}", "{pot}"]
""", "utf-8")
    assert await run_command(settings, ["subsidy", "load", str(path)]) == 0
    assert "2 budget(s)" in capsys.readouterr().out
    async with pool.acquire() as conn:
        await charge(conn, None, req, sup, "12.00", on=at("2026-12-05"))
    assert await run_command(settings, ["budgets", "--period", "2026-12"]) == 0
    out = capsys.readouterr().out
    own_line = next(line for line in out.splitlines() if line.startswith(own))
    assert "报表图书馆" in own_line and "50.00 CNY" in own_line and "38.00 CNY" in own_line
    assert "24%" in own_line
    pot_line = next(line for line in out.splitlines() if line.startswith(pot))
    assert "(global)" in pot_line and "total" in pot_line and "988.00 CNY" in pot_line
    assert await run_command(settings, ["budgets", "--period", "2026-13"]) == 1
    assert "error: period '2026-13'" in capsys.readouterr().err
    path.write_text("[[rule]]\nname = 'x'\n", "utf-8")
    assert await run_command(settings, ["subsidy", "load", str(path)]) == 1
    assert "percent / fixed" in capsys.readouterr().err


# --------------------------------------------------------------------------
# the ledger
# --------------------------------------------------------------------------

def test_only_copy_completed_and_loaned_are_billable() -> None:
    assert billable_event("CopyCompleted") == "CopyCompleted"
    assert billable_event("Loaned") == "Loaned"
    for status in ("RequestReceived", "ExpectToSupply", "WillSupply", "Unfilled",
                   "RetryPossible", "Cancelled", "LoanCompleted", "Overdue"):
        assert billable_event(status) is None


async def test_the_same_event_posts_once(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "重投馆", "供应馆")
    name = budget_name()
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f"""
[[budget]]
name = "{name}"
per = "global"
period = "total"
amount = "100.00"
[[rule]]
name = "r"
when = {{ requester = ["{req}"] }}
percent = 50
budgets = ["{name}"]
""")
        txn = txn_id()
        first = await charge(conn, v, req, sup, "10.00", event="CopyCompleted", transaction=txn,
                             kind="DocumentDelivery")
        # A redelivered CopyCompleted, even one claiming another fee, posts nothing.
        again = await charge(conn, v, req, sup, "99.00", event="CopyCompleted", transaction=txn,
                             kind="DocumentDelivery")
    assert not first.duplicate and again.duplicate
    assert again == first

    # Redelivered to several hub processes at once: still one posting.
    async def one() -> PostingResult:
        async with pool.acquire() as c:
            return await charge(c, v, req, sup, "10.00", event="CopyCompleted",
                                transaction=txn + "-c", kind="DocumentDelivery")

    results = await asyncio.gather(*(one() for _ in range(6)))
    assert len({r.posting_id for r in results}) == 1
    assert sum(not r.duplicate for r in results) == 1
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM ledger_posting WHERE transaction_id "
                                   "= ANY($1::text[])", [txn, txn + "-c"]) == 2
        assert await conn.fetchval("SELECT spent_minor FROM subsidy_budget WHERE name = $1",
                                   name) == 1000


async def test_charge_above_quote_is_refused_and_flagged(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "超价馆", "供应馆")
    txn = txn_id()
    async with pool.acquire() as conn:
        for _ in range(2):                          # a redelivery flags once
            with pytest.raises(ChargeAboveQuote) as err:
                await charge(conn, None, req, sup, "35.00", quote_="30.00", transaction=txn)
        assert err.value.error_type == "UnrecognisedDataValue"
        assert err.value.error_value == (
            "supplyingAgencyMessage.deliveryInfo.deliveryCosts: charge 35.00 CNY is above the "
            f"quote 30.00 CNY made for this request (transaction {txn}); the charge is "
            "refused and flagged")
        flagged = await of_transaction(conn, txn)
        assert [(f.kind, f.subject, f.facts["reason"], f.facts["fee_minor"],
                 f.facts["limit_minor"]) for f in flagged] == [
            (FlagKind.CHARGE_ABOVE_SCHEDULE, sup, "above_quote", 3500, 3000)]
        assert await conn.fetchval("SELECT count(*) FROM ledger_posting WHERE transaction_id "
                                   "= $1", txn) == 0

        # A caller that rolls its work back on refusal keeps the flag with record_flag.
        txn2 = txn_id()
        with pytest.raises(ChargeAboveMaxCost) as refused:
            async with conn.transaction():
                await post_charge(conn, transaction_id=txn2, event="Loaned", requester=req,
                                  supplier=sup, service_kind="BookLoan", fee=cny("20.00"),
                                  quote=None, max_cost=cny("15.00"), on=at("2026-10-01"))
        assert await of_transaction(conn, txn2) == []
        await record_flag(conn, refused.value)
        [flag] = await of_transaction(conn, txn2)
        assert (flag.kind, flag.facts["reason"]) == (FlagKind.CHARGE_ABOVE_MAX_COST,
                                                     "above_max_cost")

        txn3 = txn_id()
        with pytest.raises(ChargeCurrencyMismatch):
            await post_charge(conn, transaction_id=txn3, event="Loaned", requester=req,
                              supplier=sup, service_kind="BookLoan", fee=Money(100, "USD"),
                              quote=cny("30.00"), on=at("2026-10-01"))
        [flag] = await of_transaction(conn, txn3)
        assert flag.kind == FlagKind.CHARGE_CURRENCY_MISMATCH
        assert (flag.facts["currency"], flag.facts["limit_currency"]) == ("USD", "CNY")
        # At the quote, or below it (the supplier's deliveryCosts), is fine.
        assert (await charge(conn, None, req, sup, "30.00", quote_="30.00")).fee == cny("30.00")
        assert (await charge(conn, None, req, sup, "12.00", quote_="30.00")).fee == cny("12.00")


async def test_cancel_before_supply_costs_nothing(pool: asyncpg.Pool) -> None:
    txn = txn_id()
    async with pool.acquire() as conn:
        assert await reverse(conn, transaction_id=txn, event="Loaned", reason="cancelled",
                             on=at("2026-10-02")) is None
        assert await reverse_transaction(conn, transaction_id=txn, reason="cancelled",
                                         on=at("2026-10-02")) == []
        assert await conn.fetchval("SELECT count(*) FROM ledger_posting WHERE transaction_id "
                                   "= $1", txn) == 0


async def test_cancel_after_charge_reverses_and_returns_the_subsidy(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "退款馆", "供应馆")
    name = budget_name()
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f"""
[[budget]]
name = "{name}"
per = "requester"
period = "month"
amount = "8.00"
[[rule]]
name = "r"
when = {{ requester = ["{req}"] }}
percent = 100
budgets = ["{name}"]
""")
        txn = txn_id()
        first = await charge(conn, v, req, sup, "6.00", transaction=txn, title="红楼梦")
        short = await charge(conn, v, req, sup, "6.00")       # only 2.00 left for this one
        assert short.subsidy == cny("2.00")
        undo = await reverse(conn, transaction_id=txn, event="Loaned",
                             reason="requester cancelled after the loan was shipped",
                             on=at("2026-11-03"))
        assert undo is not None and undo.kind == "reversal"
        assert undo.reverses == first.posting_id and undo.event == "Loaned/reversal"
        assert undo.entries == tuple(Entry(e.owner, e.account, -e.amount)
                                     for e in first.entries)
        assert (undo.fee, undo.subsidy, undo.patron_share) == (
            cny("-6.00"), cny("-6.00"), cny("0.00"))
        assert undo.local_date == datetime.date(2026, 11, 3) and undo.title == "红楼梦"
        # The subsidy went back to October's budget, where it was drawn.
        assert await conn.fetchval(
            "SELECT spent_minor FROM subsidy_budget WHERE name = $1 AND period = '2026-10'",
            name) == 200
        again = await reverse(conn, transaction_id=txn, event="Loaned", reason="again",
                              on=at("2026-11-04"))
        assert again is not None and again.duplicate and again.posting_id == undo.posting_id
        assert await reverse_transaction(conn, transaction_id=txn, reason="again",
                                         on=at("2026-11-04")) == [again]
        # Both postings stay; the transaction nets to zero for everyone.
        for owner in (req, sup, CENTRE):
            lines = [e for e in await entries(conn, owner, None, None)
                     if e.transaction_id == txn]
            assert sum(e.amount.minor for e in lines) == 0
        assert await check(conn) == []
        # The refunded budget serves the next request of the same month.
        later = await charge(conn, v, req, sup, "6.00", on=at("2026-10-30"))
        assert later.subsidy == cny("6.00")


async def test_ledger_rows_are_append_only(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "只增馆", "供应馆")
    async with pool.acquire() as conn:
        v = await load_subsidy(conn, f'[[rule]]\nname = "r"\nwhen = {{ requester = ["{req}"] }}'
                                     "\npercent = 50\n")
        r = await charge(conn, v, req, sup, "10.00")
        statements = [
            ("UPDATE ledger_entry SET amount_minor = amount_minor * 2 WHERE posting_id = $1",
             r.posting_id),
            ("DELETE FROM ledger_entry WHERE posting_id = $1", r.posting_id),
            ("UPDATE ledger_posting SET fee_minor = 0 WHERE id = $1", r.posting_id),
            ("DELETE FROM ledger_posting WHERE id = $1", r.posting_id),
            ("UPDATE subsidy_grant SET granted_minor = 0 WHERE posting_id = $1", r.posting_id),
            ("DELETE FROM subsidy_grant WHERE posting_id = $1", r.posting_id),
        ]
        for sql, arg in statements:
            with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
                await conn.execute(sql, arg)
        for table_name in ("ledger_entry", "ledger_posting", "subsidy_grant"):
            with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
                async with conn.transaction():
                    await conn.execute(f"TRUNCATE {table_name} CASCADE")
        again = await conn.fetch("SELECT amount_minor FROM ledger_entry WHERE posting_id = $1 "
                                 "ORDER BY id", r.posting_id)
        assert [x[0] for x in again] == [1000, -1000, 500, -500]


async def test_check_reports_an_unbalanced_transaction(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "坏账馆", "供应馆")
    async with pool.acquire() as conn:
        assert await check(conn) == []
        tr = conn.transaction()
        await tr.start()
        try:
            # Written behind the ledger's back (and rolled back, the database is shared).
            pid = await conn.fetchval(
                """INSERT INTO ledger_posting (transaction_id, event, kind, requester, supplier,
                       service_kind, currency, fee_minor, subsidy_minor, patron_share_minor,
                       occurred_at, local_date)
                   VALUES ('BAD-1', 'Loaned', 'charge', $1, $2, 'BookLoan', 'CNY', 1000, 0,
                           1000, now(), current_date) RETURNING id""", req, sup)
            await conn.execute(
                """INSERT INTO ledger_entry (posting_id, transaction_id, owner, account,
                                             amount_minor, currency, local_date)
                   VALUES ($1, 'BAD-1', $2, 'receivable', 1000, 'CNY', current_date)""",
                pid, sup)
            await conn.execute(
                "INSERT INTO subsidy_budget (name, requester, period, currency, limit_minor, "
                "spent_minor) VALUES ($1, '', 'total', 'CNY', 10, 5)", budget_name("bad"))
            problems = await check(conn)
        finally:
            await tr.rollback()
    assert "transaction BAD-1 does not balance in CNY: its entries sum to 1000" in problems
    assert any(p.startswith(f"posting {pid}: its entries") for p in problems)
    assert any("but its grants sum to" in p for p in problems)
    assert any(p.startswith("the whole ledger does not balance in CNY") for p in problems)


async def test_zero_fee_posts_no_entries(pool: asyncpg.Pool) -> None:
    req, sup = await sql_agencies(pool, "免费馆", "供应馆")
    async with pool.acquire() as conn:
        r = await charge(conn, None, req, sup, "0.00", quote_="0.00")
    assert r.entries == () and r.fee == cny("0.00") and not r.duplicate


async def test_ledger_show_prints_a_window_of_entries_and_check_says_ok(
        pool: asyncpg.Pool, settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    req, sup = await sql_agencies(pool, "复旦大学图书馆", "上海图书馆")
    async with pool.acquire() as conn:
        await charge(conn, None, req, sup, "25.00", title="《四库全书》选印本",
                     on=at("2026-09-30"))
        await charge(conn, None, req, sup, "8.00", title="鲁迅全集", kind="PayPerView",
                     event="CopyCompleted", on=at("2026-10-05"))
    assert await run_command(settings, ["ledger", "show", sup, "--from", "2026-10-01",
                                        "--to", "2026-10-31"]) == 0
    out = capsys.readouterr().out
    assert "上海图书馆" in out and "鲁迅全集" in out and "复旦大学图书馆" in out
    assert "《四库全书》" not in out                   # September is outside the window
    assert "opening balance   +25.00 CNY" in out
    assert "closing balance   +33.00 CNY" in out
    assert await run_command(settings, ["ledger", "show", "NOBODY:X"]) == 1
    assert "error: no agency 'NOBODY:X'" in capsys.readouterr().err
    assert await run_command(settings, ["ledger", "show", sup, "--from", "2026-10-31",
                                        "--to", "2026-10-01"]) == 1
    assert "is before --from" in capsys.readouterr().err
    assert await run_command(settings, ["ledger", "show", CENTRE]) == 0
    capsys.readouterr()
    assert await run_command(settings, ["ledger", "check"]) == 0
    assert capsys.readouterr().out.startswith("ledger ok:")
