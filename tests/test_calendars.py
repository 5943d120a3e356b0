"""Settlement calendars: monthly, bi-monthly, quarterly and annual periods (issue 17).

The pure tests hold `Period` of every calendar to the consortium's calendar; the
database tests (real PostgreSQL, shared: each settles periods of its own fresh year,
see tests/support/settlement.py) settle a quarter and a year, switch calendar at a
boundary and are refused off one, and run the scheduler with a quarterly calendar.
"""

from __future__ import annotations

import datetime
import random
import re
import typing

import asyncpg
import pytest
from pypdf import PdfReader

from infra.migrations import load_migrations
from schemas.settings import Settings
from schemas.settings import Settlement as SettlementSettings
from settlement import ledger, periods
from settlement.calendar import PERIOD_PATTERN, Calendar
from settlement.periods import Period, conflict, just_ended, resolve
from settlement.record import SettlementError, SettlementResult
from settlement.run import scheduled_settlement, settle
from settlement.statement_model import statement_name, statements_dir, summary_name
from tests.support.money import SHANGHAI, at
from tests.support.settlement import after, charge, fresh_year, libraries, no_subsidy

M, B, Q, A = Calendar.MONTHLY, Calendar.BIMONTHLY, Calendar.QUARTERLY, Calendar.ANNUAL
D = datetime.date


# --------------------------------------------------------------------------
# Period, pure
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "kind", "first", "last"), [
    ("2026-10", M, D(2026, 10, 1), D(2026, 10, 31)),
    ("2024-02", M, D(2024, 2, 1), D(2024, 2, 29)),
    ("2026-B1", B, D(2026, 1, 1), D(2026, 2, 28)),
    ("2024-B1", B, D(2024, 1, 1), D(2024, 2, 29)),
    ("2026-B3", B, D(2026, 5, 1), D(2026, 6, 30)),
    ("2026-B6", B, D(2026, 11, 1), D(2026, 12, 31)),
    ("2026-Q1", Q, D(2026, 1, 1), D(2026, 3, 31)),
    ("2026-Q2", Q, D(2026, 4, 1), D(2026, 6, 30)),
    ("2026-Q4", Q, D(2026, 10, 1), D(2026, 12, 31)),
    ("2026", A, D(2026, 1, 1), D(2026, 12, 31)),
])
def test_a_period_name_says_its_calendar_and_days(name: str, kind: Calendar, first: D,
                                                  last: D) -> None:
    p = Period.parse(name)
    assert (p.kind, p.first_day, p.last_day) == (kind, first, last)
    assert p.name == str(p) == name
    assert p.span == f"{name} ({first} .. {last})"
    assert p.starts_at("Asia/Shanghai") == datetime.datetime(
        first.year, first.month, 1, tzinfo=SHANGHAI)
    assert p.ends_at("Asia/Shanghai") == datetime.datetime.combine(
        last + datetime.timedelta(days=1), datetime.time(), SHANGHAI)


@pytest.mark.parametrize("kind", list(Calendar))
def test_every_period_of_a_year_round_trips_and_tiles_it(kind: Calendar) -> None:
    p = Period(2026, 1, kind)
    seen = []
    while p.year == 2026:
        assert Period.parse(p.name) == p
        assert re.fullmatch(PERIOD_PATTERN, p.name)
        seen.append(p)
        assert p.next().first_day == p.last_day + datetime.timedelta(days=1)
        assert p.next().previous() == p
        p = p.next()
    assert len(seen) == {M: 12, B: 6, Q: 4, A: 1}[kind] == kind.per_year
    assert (seen[0].first_day, seen[-1].last_day) == (D(2026, 1, 1), D(2026, 12, 31))
    # Every day of the year lies in exactly one of them, the one `of` names.
    day = D(2026, 1, 1)
    while day.year == 2026:
        assert [s for s in seen if s.first_day <= day <= s.last_day] == [Period.of(day, kind)]
        day += datetime.timedelta(days=1)


def test_next_and_previous_cross_years() -> None:
    assert str(Period.parse("2026-12").next()) == "2027-01"
    assert str(Period.parse("2027-01").previous()) == "2026-12"
    assert str(Period.parse("2026-B6").next()) == "2027-B1"
    assert str(Period.parse("2027-B1").previous()) == "2026-B6"
    assert str(Period.parse("2026-Q4").next()) == "2027-Q1"
    assert str(Period.parse("2027-Q1").previous()) == "2026-Q4"
    assert str(Period.parse("2026").next()) == "2027"
    assert str(Period.parse("2026").previous()) == "2025"
    assert str(Period.parse("2026-Q2").next()) == "2026-Q3"


def test_containing_follows_the_calendar_and_the_time_zone() -> None:
    # 2026-12-31 16:00 UTC is already 2027-01-01 in Shanghai, still 2026 in Berlin.
    instant = datetime.datetime(2026, 12, 31, 16, 0, tzinfo=datetime.UTC)
    expected = {M: ("2027-01", "2026-12"), B: ("2027-B1", "2026-B6"),
                Q: ("2027-Q1", "2026-Q4"), A: ("2027", "2026")}
    for kind, (shanghai, berlin) in expected.items():
        assert str(Period.containing(instant, "Asia/Shanghai", kind)) == shanghai
        assert str(Period.containing(instant, "Europe/Berlin", kind)) == berlin
        assert str(resolve("current", instant, "Asia/Shanghai", kind)) == shanghai
        # A name is a name whatever the calendar.
        assert str(resolve(" 2026-Q3 ", instant, "Asia/Shanghai", kind)) == "2026-Q3"
    assert Period.containing(instant, "Asia/Shanghai") == Period.parse("2027-01")
    assert Period.of(D(2026, 8, 15), B) == Period.parse("2026-B4")


def test_periods_order_by_time() -> None:
    for kind in Calendar:
        ps = [Period(y, n, kind) for y in (2025, 2026, 2027) for n in range(1, kind.per_year + 1)]
        shuffled = ps[:]
        random.Random(17).shuffle(shuffled)
        assert sorted(shuffled) == ps
        assert ps[0] < ps[-1] and ps[-1] > ps[0] and ps[0] <= ps[0]
    # Periods of different calendars that do not overlap order by time too (as text,
    # '2026-Q1' would come after '2026-12').
    assert Period.parse("2026-12") < Period.parse("2027-Q1") < Period.parse("2027-04")
    assert Period.parse("2026-Q1") < Period.parse("2026-12")
    assert max(Period.parse(n) for n in ("2026-Q1", "2026-12", "2026-B3")) == \
        Period.parse("2026-12")


@pytest.mark.parametrize(("bad", "said"), [
    ("2026-Q5", r"no quarter 5; its quarters \(YYYY-Qn\) are 2026-Q1 \.\. 2026-Q4"),
    ("2026-Q0", r"no quarter 0"),
    ("2026-B7", r"no two-month period 7; its two-month periods \(YYYY-Bn\) are 2026-B1 "
                r"\.\. 2026-B6"),
    ("2026-B0", r"no two-month period 0"),
    ("2026-13", r"no month 13; its months \(YYYY-MM\) are 2026-01 \.\. 2026-12"),
    ("2026-00", r"no month 00"),
    ("0000", r"no year 0000"),
    ("2026-Q01", r"not a settlement period: say YYYY-MM"),
    ("2026-q1", r"not a settlement period: say YYYY-MM"),
    ("2026-1", r"YYYY-Q1\.\.YYYY-Q4 \(a quarter\) or YYYY \(a calendar year\)"),
    ("26-10", r"YYYY-B1\.\.YYYY-B6"),
    ("Q1-2026", r"not a settlement period"),
    ("2026-H1", r"not a settlement period"),
    ("", r"not a settlement period"),
])
def test_bad_names_are_refused_saying_why(bad: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        Period.parse(bad)
    assert periods.period_or_none(bad) is None
    # The table's CHECK is about the shape (a year 0000 cannot be a date anyway).
    assert not re.fullmatch(PERIOD_PATTERN, bad) or bad == "0000"


def test_the_migration_checks_the_same_names() -> None:
    newest = [m for m in load_migrations() if "settlement_period_period_check" in m.sql][-1]
    assert f"CHECK (period ~ '{PERIOD_PATTERN}')" in newest.sql


def test_the_setting_offers_every_calendar() -> None:
    annotation = SettlementSettings.model_fields["calendar"].annotation
    assert set(typing.get_args(annotation)) == {c.value for c in Calendar}
    assert SettlementSettings().calendar == "monthly"
    assert periods.configured(Settings(settlement={"calendar": "quarterly"})) is Q
    with pytest.raises(ValueError, match="calendar"):
        SettlementSettings(calendar="weekly")  # type: ignore[arg-type]


def test_budgets_stay_monthly() -> None:
    assert Period.parse("2026-Q1").budget_month == "2026-03"
    assert Period.parse("2026-B3").budget_month == "2026-06"
    assert Period.parse("2026").budget_month == "2026-12"
    assert Period.parse("2026-10").budget_month == "2026-10"


def test_the_scheduler_settles_the_period_that_just_ended() -> None:
    def ended(day: str, kind: Calendar) -> str | None:
        p = just_ended(at(day, "00:15"), "Asia/Shanghai", kind)
        return None if p is None else p.name

    assert ended("2027-02-01", M) == "2027-01"
    assert ended("2027-01-01", M) == "2026-12"
    assert ended("2027-04-01", Q) == "2027-Q1"
    assert ended("2027-04-20", Q) == "2027-Q1"      # a late scheduler, same month
    assert ended("2027-01-01", Q) == "2026-Q4"
    assert [ended(f"2027-{m:02d}-01", Q) for m in (2, 3, 5, 6, 8, 9, 11, 12)] == [None] * 8
    assert ended("2027-03-01", B) == "2027-B1"
    assert ended("2027-04-01", B) is None
    assert ended("2027-01-01", B) == "2026-B6"
    assert ended("2027-01-01", A) == "2026"
    assert ended("2027-02-01", A) is None
    # Local time decides: 2027-03-31 16:30 UTC is April 1st in Shanghai.
    instant = datetime.datetime(2027, 3, 31, 16, 30, tzinfo=datetime.UTC)
    assert str(just_ended(instant, "Asia/Shanghai", Q)) == "2027-Q1"
    assert just_ended(instant, "Europe/Berlin", Q) is None


def test_a_period_may_not_overlap_or_precede_a_closed_one() -> None:
    def p(name: str) -> Period:
        return Period.parse(name)

    said = conflict(p("2026-Q4"), [p("2026-10")])
    assert said is not None
    assert "2026-Q4 (2026-10-01 .. 2026-12-31) overlaps the closed period 2026-10 " \
           "(2026-10-01 .. 2026-10-31)" in said
    said = conflict(p("2026-10"), [p("2026-Q4")])
    assert said is not None and "2026-10" in said and "closed period 2026-Q4" in said
    said = conflict(p("2026"), [p("2026-10"), p("2026-11")])
    assert said is not None and "closed periods 2026-10" in said and "2026-11 (" in said
    said = conflict(p("2026-Q3"), [p("2026-10"), p("2026-B6")])
    assert said == ("period 2026-Q3 comes before the closed period 2026-B6: it is not "
                    "settled any more; its late postings land in the next open period")
    # At a boundary, any calendar may follow; a period is no conflict to itself.
    assert conflict(p("2027-Q1"), []) is None
    assert conflict(p("2026-Q4"), [p("2026-Q4")]) is None


# --------------------------------------------------------------------------
# settling, real PostgreSQL
# --------------------------------------------------------------------------

async def run_region(pool: asyncpg.Pool, period: str) -> asyncpg.Record:
    row = await pool.fetchrow(
        """SELECT r.id, r.date_from, r.cutoff, r.posting_max, p.date_from AS p_from,
                  p.date_to AS p_to, p.state
           FROM settlement_run r JOIN settlement_period p USING (period)
           WHERE r.period = $1 AND r.closed_at IS NOT NULL""", period)
    assert row is not None, f"no closed run of {period}"
    return row


async def settled_by(pool: asyncpg.Pool, posting_ids: list[int]) -> dict[int, int | None]:
    rows = await pool.fetch(
        "SELECT p.id, i.run_id FROM unnest($1::bigint[]) AS p(id) "
        "LEFT JOIN settlement_item i ON i.posting_id = p.id", posting_ids)
    return {r["id"]: r["run_id"] for r in rows}


def net_of(result: SettlementResult, symbol: str) -> int:
    [t] = result.statement(symbol).totals
    return t.net


async def state_of(pool: asyncpg.Pool, name: str) -> str:
    async with pool.acquire() as conn:
        return (await periods.state(conn, Period.parse(name))).state


async def assert_ledger_holds(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await ledger.check(conn) == []


async def test_a_quarter_is_settled_in_one_run(pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    v = await no_subsidy(pool)
    pku, fdu = await libraries(pool, "北京大学图书馆", "复旦大学图书馆")
    inside = [await charge(pool, v, fdu, pku, "10.00", at(f"{year}-01-02")),
              await charge(pool, v, fdu, pku, "20.00", at(f"{year}-02-14")),
              await charge(pool, v, pku, fdu, "4.50", at(f"{year}-03-31", "23:59"))]
    april = await charge(pool, v, fdu, pku, "99.00", at(f"{year}-04-01", "00:00"))
    q1 = f"{year}-Q1"
    with pytest.raises(SettlementError, match="has not ended yet"):
        await settle(pool, settings, q1, now=at(f"{year}-03-31", "23:59"))
    result = await settle(pool, settings, q1, now=after(q1), pdf=False)
    assert result is not None and result.created
    assert (result.period, result.date_from, result.cutoff) == (
        q1, D(year, 1, 1), D(year, 3, 31))
    assert result.invariants["ok"]
    assert (net_of(result, pku), net_of(result, fdu)) == (2550, -2550)
    region = await run_region(pool, q1)
    assert (region["date_from"], region["cutoff"], region["p_from"], region["p_to"],
            region["state"]) == (D(year, 1, 1), D(year, 3, 31), D(year, 1, 1),
                                 D(year, 3, 31), "closed")
    # The region: every posting up to posting_max dated up to the cutoff; April's is not
    # in it although its id is smaller than posting_max.
    assert max(inside) <= region["posting_max"] and april <= region["posting_max"]
    assert await settled_by(pool, [*inside, april]) == {
        **dict.fromkeys(inside, region["id"]), april: None}
    await assert_ledger_holds(pool)
    # Settling it again reproduces the run; its name is a statement directory.
    again = await settle(pool, settings, q1, now=after(q1))
    assert again is not None and again.reproduced and again.run_id == region["id"]


async def test_a_year_is_settled_in_one_run(pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    v = await no_subsidy(pool)
    nlc, lzu = await libraries(pool, "国家图书馆", "兰州大学图书馆")
    inside = [await charge(pool, v, lzu, nlc, "12.00", at(f"{year}-01-01", "00:00")),
              await charge(pool, v, lzu, nlc, "8.00", at(f"{year}-07-01")),
              await charge(pool, v, nlc, lzu, "5.00", at(f"{year}-12-31", "23:59"))]
    later = await charge(pool, v, lzu, nlc, "1.00", at(f"{year + 1}-01-01", "00:00"))
    result = await settle(pool, settings, str(year), now=after(str(year)))
    assert result is not None and result.created
    assert (result.date_from, result.cutoff) == (D(year, 1, 1), D(year, 12, 31))
    assert (net_of(result, nlc), net_of(result, lzu)) == (1500, -1500)
    # The statements print the period's name and its dates.
    directory = statements_dir(settings, str(year))
    csv_text = (directory / statement_name(lzu, str(year), "csv")).read_text("utf-8-sig")
    assert f"结算期 Period,{year},{year}-01-01 .. {year}-12-31," in csv_text
    pdf = "\n".join(page.extract_text() for page in PdfReader(
        str(directory / statement_name(lzu, str(year), "pdf"))).pages)
    assert f"Period {year}: {year}-01-01 .. {year}-12-31" in pdf
    summary = "\n".join(page.extract_text() for page in PdfReader(
        str(directory / summary_name(str(year), "pdf"))).pages)
    assert f"summary {year}" in summary and f"{year}-01-01 .. {year}-12-31" in summary
    region = await run_region(pool, str(year))
    assert (region["cutoff"], region["p_from"], region["p_to"]) == (
        D(year, 12, 31), D(year, 1, 1), D(year, 12, 31))
    assert await settled_by(pool, [*inside, later]) == {
        **dict.fromkeys(inside, region["id"]), later: None}
    # Any month of the settled year is refused now, naming both periods.
    with pytest.raises(SettlementError, match=rf"period {year}-12 \({year}-12-01 .. "
                                              rf"{year}-12-31\) overlaps the closed period "
                                              rf"{year} \({year}-01-01"):
        await settle(pool, settings, f"{year}-12", now=after(str(year)))
    await assert_ledger_holds(pool)


async def test_the_calendar_changes_only_at_a_boundary(pool: asyncpg.Pool,
                                                       settings: Settings) -> None:
    year = await fresh_year(pool)
    v = await no_subsidy(pool)
    pku, fdu = await libraries(pool, "北京大学图书馆", "复旦大学图书馆")
    october = await charge(pool, v, fdu, pku, "10.00", at(f"{year}-10-05"))
    await settle(pool, settings, f"{year}-10", now=after(f"{year}-10"), pdf=False)
    # Off a boundary: the quarter overlaps the closed October, and is refused by name.
    november = await charge(pool, v, fdu, pku, "3.00", at(f"{year}-11-05"))
    with pytest.raises(SettlementError) as refused:
        await settle(pool, settings, f"{year}-Q4", now=after(f"{year}-Q4"), pdf=False)
    assert f"period {year}-Q4 ({year}-10-01 .. {year}-12-31) overlaps the closed period " \
           f"{year}-10 ({year}-10-01 .. {year}-10-31)" in str(refused.value)
    assert await state_of(pool, f"{year}-Q4") == "open"
    # ... and so is a quarter before it.
    with pytest.raises(SettlementError, match=f"period {year}-Q3 comes before the closed "
                                              f"period {year}-10"):
        await settle(pool, settings, f"{year}-Q3", now=after(f"{year}-Q4"))
    # Monthly to the end of the year, then quarterly from the boundary on.
    await settle(pool, settings, f"{year}-11", now=after(f"{year}-12"), pdf=False)
    await settle(pool, settings, f"{year}-12", now=after(f"{year}-12"), pdf=False)
    february = await charge(pool, v, fdu, pku, "7.00", at(f"{year + 1}-02-05"))
    quarterly = settings.model_copy(update={"settlement": settings.settlement.model_copy(
        update={"calendar": "quarterly"})})
    q1 = f"{year + 1}-Q1"
    # 'current' is the quarter now; once it ended, it is settled by name.
    preview = await settle(pool, quarterly, "current", now=at(f"{year + 1}-02-20"),
                           dry_run=True)
    assert preview is not None and preview.period == q1
    result = await settle(pool, quarterly, q1, now=after(q1), pdf=False)
    assert result is not None and result.created and result.date_from == D(year + 1, 1, 1)
    runs = {p: (await run_region(pool, p))["id"]
            for p in (f"{year}-10", f"{year}-11", q1)}
    assert await settled_by(pool, [october, november, february]) == {
        october: runs[f"{year}-10"], november: runs[f"{year}-11"], february: runs[q1]}
    await assert_ledger_holds(pool)


async def test_the_table_refuses_overlapping_closed_periods(pool: asyncpg.Pool,
                                                            settings: Settings) -> None:
    year = await fresh_year(pool)
    v = await no_subsidy(pool)
    pku, fdu = await libraries(pool, "北京大学图书馆", "复旦大学图书馆")
    await charge(pool, v, fdu, pku, "1.00", at(f"{year}-05-05"))
    await settle(pool, settings, f"{year}-B3", now=after(f"{year}-B3"), pdf=False)
    async with pool.acquire() as conn:
        with pytest.raises(asyncpg.ExclusionViolationError):
            await conn.execute(
                "INSERT INTO settlement_period (period, date_from, date_to, state, closed_at) "
                "VALUES ($1, $2, $3, 'closed', now())",
                f"{year}-06", D(year, 6, 1), D(year, 6, 30))
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO settlement_period (period, date_from, date_to) VALUES ($1, $2, $3)",
                f"{year}-Q5", D(year, 1, 1), D(year, 1, 2))
        # An open row may overlap (a refused attempt leaves none, but a failed one may).
        tr = conn.transaction()
        await tr.start()
        await conn.execute(
            "INSERT INTO settlement_period (period, date_from, date_to) VALUES ($1, $2, $3)",
            f"{year}-Q2", D(year, 4, 1), D(year, 6, 30))
        await tr.rollback()


async def test_the_quarterly_scheduler_settles_in_the_month_after_a_quarter(
        pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    v = await no_subsidy(pool)
    pku, fdu = await libraries(pool, "北京大学图书馆", "复旦大学图书馆")
    january = await charge(pool, v, fdu, pku, "6.00", at(f"{year}-01-20"))
    march = await charge(pool, v, pku, fdu, "2.00", at(f"{year}-03-03"))
    quarterly = settings.model_copy(update={"settlement": settings.settlement.model_copy(
        update={"calendar": "quarterly"})})
    # February 1st: no quarter ended in January; nothing is settled (monthly would
    # settle January).
    assert await scheduled_settlement(pool, quarterly, at(f"{year}-02-01", "00:15")) is None
    for name in (f"{year}-01", f"{year}-Q1", f"{year - 1}-Q4"):
        assert await state_of(pool, name) == "open"
    assert await settled_by(pool, [january]) == {january: None}
    # April 1st: the first quarter.
    assert await scheduled_settlement(pool, quarterly, at(f"{year}-04-01", "00:15")) == \
        f"{year}-Q1"
    region = await run_region(pool, f"{year}-Q1")
    assert (region["date_from"], region["cutoff"]) == (D(year, 1, 1), D(year, 3, 31))
    assert await settled_by(pool, [january, march]) == dict.fromkeys(
        [january, march], region["id"])
    assert await scheduled_settlement(pool, quarterly, at(f"{year}-04-01", "01:00")) is None
    assert await scheduled_settlement(pool, quarterly, at(f"{year}-05-01", "00:15")) is None
    await assert_ledger_holds(pool)
