"""Finance reports (issue 17 item 7): the cash position and subsidy outlay per period,
and an agency's account since its last zero balance; their CSV and PDF.

Pure tests build the reports from hand-made rows; the pg test settles a period of its
own fresh year (tests/support/settlement.py), records partial payments, and reads the
reports back, scoped to its own agencies and run.
"""

from __future__ import annotations

import csv
import datetime
import io
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from pypdf import PdfReader

from app.cli import run_command
from schemas.money import Money
from schemas.settings import Settings
from settlement import dues
from settlement.dues import Direction, PaymentSource, Position
from settlement.finance_report_files import (
    account_document,
    cash_document,
    csv_bytes,
    write_pdf,
)
from settlement.finance_reports import (
    BudgetMonth,
    DueSum,
    LineKind,
    Move,
    Outlay,
    PaymentRow,
    ReportError,
    RunInfo,
    agency_account,
    cash_report,
    fetch_agency_account,
    fetch_cash_report,
    months_between,
    since_last_zero,
    used_percent,
)
from settlement.ledger import EntryLine, balance
from settlement.run import settle
from settlement.subsidy import load_subsidy
from tests.support.money import at, cny
from tests.support.names import budget_name
from tests.support.settlement import after, charge, fresh_year, libraries

D = datetime.date


def move(day: str, minor: int, kind: LineKind = LineKind.CHARGE_AS_SUPPLIER) -> Move:
    return Move(D.fromisoformat(day), kind, f"T-{day}-{minor}", Money(minor, "CNY"))


def entry(day: str, account: str, minor: int, kind: str = "charge",
          currency: str = "CNY", title: str | None = "书") -> EntryLine:
    return EntryLine(D.fromisoformat(day), f"ILL-{day}-{account}", "Loaned", kind, account,
                     Money(minor, currency), "T:OTHER", "其他馆", "BookLoan", title)


def due(due_id: int, direction: Direction, minor: int, issued: str = "2030-04-01",
        currency: str = "CNY") -> Position:
    day = D.fromisoformat(issued)
    return Position(due_id, 7, "2030-03", "T:A", direction, Money(minor, currency),
                    f"ILL-2030-03-R7-ABC-{currency}-{due_id}", day, day, day,
                    Money(0, currency), Money(minor, currency), Money(0, currency), None)


def payment(pid: int, direction: Direction, minor: int, paid_on: str) -> PaymentRow:
    return PaymentRow(pid, 1, Money(minor, "CNY"), D.fromisoformat(paid_on), direction,
                      "ILL-2030-03-R7-ABC-CNY", "2030-03", PaymentSource.BANK, "BANK-1")


# --------------------------------------------------------------------------
# the running balance and its last zero
# --------------------------------------------------------------------------

def test_the_account_starts_after_the_last_zero() -> None:
    moves = [move("2030-03-01", -1000), move("2030-03-02", 1000),
             Move(D(2030, 3, 3), LineKind.STATEMENT_ISSUED, "R", Money(0, "CNY")),
             move("2030-03-04", -500), move("2030-03-05", 200)]
    s = since_last_zero(moves, "CNY")
    # Zero after the 2nd line, and still zero after the statement (it changes nothing).
    assert s.zero_on == D(2030, 3, 3)
    assert s.earlier_lines == 3
    assert [line.move.effect.minor for line in s.lines] == [-500, 200]
    assert [line.balance.minor for line in s.lines] == [-500, -300]
    assert s.balance == Money(-300, "CNY")


def test_an_account_never_zero_starts_at_the_beginning() -> None:
    s = since_last_zero([move("2030-03-01", -1000), move("2030-03-02", 999)], "CNY")
    assert s.zero_on is None and s.earlier_lines == 0
    assert [line.balance.minor for line in s.lines] == [-1000, -1]


def test_an_account_ending_at_zero_lists_nothing() -> None:
    s = since_last_zero([move("2030-03-01", -1000), move("2030-03-09", 1000)], "CNY")
    assert s.lines == () and s.zero_on == D(2030, 3, 9) and s.earlier_lines == 2
    assert s.balance == Money(0, "CNY")
    assert since_last_zero([], "CNY").balance == Money(0, "CNY")


def test_agency_account_orders_kinds_and_signs_payments() -> None:
    account = agency_account(
        "T:A", "北京大学图书馆",
        [entry("2030-03-02", "payable", -3000), entry("2030-03-02", "subsidy", 1000),
         entry("2030-03-05", "receivable", 800),
         entry("2030-03-07", "receivable", -800, kind="reversal"),
         entry("2030-03-08", "payable", 500, kind="reversal"),
         entry("2030-03-08", "subsidy", -100, kind="reversal"),
         entry("2030-03-09", "receivable", 4200, currency="USD")],
        [due(1, Direction.TO_CENTRE, 1600, issued="2030-04-01")],
        # Given out of order: the payment on 04-01 goes after the statement of that day.
        [payment(2, Direction.TO_CENTRE, 500, "2030-04-20"),
         payment(1, Direction.TO_CENTRE, 1000, "2030-04-01")])
    cny_part = account.section("CNY")
    assert [(line.move.kind, line.balance.minor) for line in cny_part.lines] == [
        (LineKind.CHARGE_AS_REQUESTER, -3000), (LineKind.SUBSIDY, -2000),
        (LineKind.CHARGE_AS_SUPPLIER, -1200), (LineKind.REVERSAL_AS_SUPPLIER, -2000),
        (LineKind.REVERSAL_AS_REQUESTER, -1500), (LineKind.SUBSIDY_REVERSAL, -1600),
        (LineKind.STATEMENT_ISSUED, -1600), (LineKind.PAYMENT_RECEIVED, -600),
        (LineKind.PAYMENT_RECEIVED, -100)]
    assert cny_part.zero_on is None and cny_part.balance == Money(-100, "CNY")
    usd = account.section("USD")
    assert usd.balance == Money(4200, "USD") and usd.zero_on is None


def test_a_payment_sent_by_the_centre_brings_a_positive_balance_down() -> None:
    account = agency_account(
        "T:A", "复旦大学图书馆", [entry("2030-03-02", "receivable", 2600)],
        [due(1, Direction.TO_AGENCY, 2600)],
        [payment(1, Direction.TO_AGENCY, 1000, "2030-04-02")])
    s = account.section("CNY")
    assert [(line.move.kind, line.move.effect.minor, line.balance.minor)
            for line in s.lines] == [
        (LineKind.CHARGE_AS_SUPPLIER, 2600, 2600), (LineKind.STATEMENT_ISSUED, 0, 2600),
        (LineKind.PAYMENT_SENT, -1000, 1600)]
    assert s.balance == Money(1600, "CNY")


def test_an_entry_of_the_centres_account_is_refused() -> None:
    with pytest.raises(ReportError, match="subsidy_expense"):
        agency_account("T:A", "x", [entry("2030-03-02", "subsidy_expense", -100)], [], [])


# --------------------------------------------------------------------------
# the cash position and the subsidy against budget
# --------------------------------------------------------------------------

JAN = RunInfo(11, "2030-01", D(2030, 1, 1), D(2030, 1, 31))
FEB_MAR = RunInfo(12, "2030-02/03", D(2030, 2, 1), D(2030, 3, 31))
Q2 = RunInfo(13, "2030-Q2", D(2030, 4, 1), D(2030, 6, 30))


def cash_rows() -> tuple[list[DueSum], list[Outlay], list[BudgetMonth]]:
    sums = [DueSum(11, "CNY", Direction.TO_CENTRE, 10000, 10000),
            DueSum(11, "CNY", Direction.TO_AGENCY, 7000, 3000),
            DueSum(12, "CNY", Direction.TO_CENTRE, 5000, 1234),
            DueSum(12, "CNY", Direction.TO_AGENCY, 2000, 0),
            DueSum(13, "USD", Direction.TO_CENTRE, 900, 0)]
    outlays = [Outlay(11, "CNY", 3000), Outlay(12, "CNY", 3000), Outlay(13, "CNY", 0)]
    budgets = [BudgetMonth("monthly", "2030-01", "CNY", 3000, 1000),
               BudgetMonth("monthly", "2030-02", "CNY", 3000, 3000),
               BudgetMonth("monthly", "2030-03", "CNY", 3000, 0),
               BudgetMonth("promo", "2030-03", "CNY", 0, 0),
               BudgetMonth("monthly", "2030-03", "USD", 900, 900),
               BudgetMonth("monthly", "2030-07", "CNY", 3000, 3000)]
    return sums, outlays, budgets


def test_cash_position_per_run_and_its_total() -> None:
    sums, outlays, budgets = cash_rows()
    report = cash_report([Q2, FEB_MAR, JAN], sums, outlays, budgets)
    cny_part = report.section("CNY")
    assert [r.run.run_id for r in cny_part.rows] == [11, 12, 13]     # period order
    jan, feb, q2 = cny_part.rows
    assert (jan.figures.outstanding_in, jan.figures.outstanding_out, jan.cumulative) == (
        0, 4000, 7000)
    assert (feb.figures.outstanding_in, feb.figures.outstanding_out, feb.cumulative) == (
        3766, 2000, 8234)
    assert q2.figures.cash == 0 and q2.cumulative == 8234
    t = cny_part.total
    assert (t.to_centre, t.by_centre, t.received, t.paid_out) == (15000, 9000, 11234, 3000)
    assert cny_part.position == 8234 and cny_part.brought_forward == 0
    # Every run has a row in every currency, zero where it had nothing.
    assert [r.figures.to_centre for r in report.section("USD").rows] == [0, 0, 900]


def test_cash_position_brings_earlier_runs_forward() -> None:
    sums, outlays, budgets = cash_rows()
    report = cash_report([JAN, FEB_MAR, Q2], sums, outlays, budgets,
                         date_from=D(2030, 2, 15), date_to=D(2030, 3, 31))
    part = report.section("CNY")
    assert [r.run.run_id for r in part.rows] == [12]
    assert part.brought_forward == 7000 and part.rows[0].cumulative == 8234
    assert part.position == 8234
    assert part.total.received == 1234     # the brought-forward run is not in the total
    with pytest.raises(ReportError):
        cash_report([JAN], [], [], [], date_from=D(2030, 2, 1), date_to=D(2030, 1, 1))


def test_subsidy_outlay_against_the_budgets_of_the_months_covered() -> None:
    sums, outlays, budgets = cash_rows()
    report = cash_report([JAN, FEB_MAR, Q2], sums, outlays, budgets)
    jan, feb_mar, q2 = report.section("CNY").outlays
    assert jan.months == ("2030-01",) and jan.outlay_minor == 3000
    [monthly] = jan.budgets
    assert (monthly.limit_minor, monthly.spent_minor, monthly.used_percent) == (
        3000, 1000, Decimal("33.3"))
    assert feb_mar.months == ("2030-02", "2030-03")
    monthly, promo = feb_mar.budgets
    assert (monthly.name, monthly.months, monthly.limit_minor, monthly.spent_minor) == (
        "monthly", ("2030-02", "2030-03"), 6000, 3000)
    assert monthly.used_percent == Decimal("50.0")
    assert promo.used_percent is None                      # a zero limit: no percentage
    assert q2.months == ("2030-04", "2030-05", "2030-06") and q2.budgets == ()
    assert report.section("CNY").total_outlay == 6000
    [usd] = report.section("USD").outlays[1].budgets       # budgets match the currency
    assert usd.used_percent == Decimal("100.0")


def test_months_and_percentages() -> None:
    assert months_between(D(2029, 11, 15), D(2030, 2, 1)) == (
        "2029-11", "2029-12", "2030-01", "2030-02")
    assert months_between(D(2030, 1, 1), D(2030, 12, 31))[-1] == "2030-12"
    with pytest.raises(ReportError):
        months_between(D(2030, 2, 1), D(2030, 1, 31))
    assert used_percent(2, 3) == Decimal("66.7")
    assert used_percent(1, 8) == Decimal("12.5")
    assert used_percent(5, 0) is None


# --------------------------------------------------------------------------
# the files
# --------------------------------------------------------------------------

def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_csv_is_excel_safe_as_the_statements() -> None:
    account = agency_account(
        "T:A", "=北京大学图书馆", [entry("2030-03-02", "payable", -250, title="=HYPERLINK(1)"),
                               entry("2030-03-03", "receivable", 100, title="@SUM(A1)")],
        [], [])
    data = csv_bytes(account_document(account, generated_at="2030-04-01T09:00:00+08:00",
                                      centre="中心"))
    assert data.startswith(b"\xef\xbb\xbf")
    rows = csv_rows(data)
    cells = [c for r in rows for c in r]
    assert any(c.startswith("'=北京大学图书馆") for c in cells)
    assert "'=HYPERLINK(1)" in cells and "'@SUM(A1)" in cells
    assert not any(c[:1] in ("=", "+", "@") for c in cells)
    # Amounts are decimal text, negative ones not guarded.
    [first] = [r for r in rows if r[:1] == ["2030-03-02"]]
    assert first[7:10] == ["-2.50", "-2.50", "CNY"]
    assert rows[-1][0] == "生成时间 Generated at"


def test_csv_guards_a_cell_that_starts_with_a_formula() -> None:
    account = agency_account(
        "T:A", "北京大学图书馆", [entry("2030-03-02", "payable", -250)], [],
        [PaymentRow(1, 1, Money(100, "CNY"), D(2030, 4, 1), Direction.TO_CENTRE,
                    "ILL-2030-03-R7-ABC-CNY", "2030-03", PaymentSource.BANK, "=cmd|'/c calc'")])
    doc = account_document(account, generated_at="now", centre="中心")
    cells = [c for r in csv_rows(csv_bytes(doc)) for c in r]
    assert not any(c.startswith("=") for c in cells)
    # In the detail: the bank reference is inside the text, which starts with the period.
    assert any("=cmd" in c for c in cells)
    guarded = agency_account("T:A", "x", [entry("2030-03-02", "payable", -1)], [], [])
    row = [r for r in csv_rows(csv_bytes(account_document(
        guarded, generated_at="now", centre="=centre"))) if r[:1] == ["中心 Centre"]]
    assert row == [["中心 Centre", "'=centre"]]


def test_cash_csv_and_pdf(tmp_path: Path) -> None:
    sums, outlays, budgets = cash_rows()
    doc = cash_document(cash_report([JAN, FEB_MAR, Q2], sums, outlays, budgets),
                        generated_at="2030-07-01T09:00:00+08:00", centre="CALIS 管理中心")
    rows = csv_rows(csv_bytes(doc))
    [total] = [r for r in rows if r[:1] == ["合计 Total"] and r[-1] == "CNY"
               and len(r) == 11]
    assert total[3:10] == ["150.00", "90.00", "112.34", "30.00", "37.66", "60.00", "82.34"]
    assert ["2030-02/03", "12", "2030-02 2030-03", "预算 Budget monthly", "", "60.00",
            "30.00", "50.0", "CNY"] in rows
    info = write_pdf(doc, tmp_path / "cash.pdf")
    assert info.bytes > 1000
    text = "\n".join(p.extract_text() for p in PdfReader(str(tmp_path / "cash.pdf")).pages)
    assert "中心现金头寸" in text and "82.34" in text and "2030-07-01T09:00:00+08:00" in text


def test_a_long_account_pdf_spans_pages(tmp_path: Path) -> None:
    lines = [entry(f"2030-03-{1 + i % 28:02d}", "receivable", 100 + i) for i in range(700)]
    account = agency_account("T:A", "北京大学图书馆", lines, [], [])
    write_pdf(account_document(account, generated_at="now", centre="中心"),
              tmp_path / "a.pdf")
    reader = PdfReader(str(tmp_path / "a.pdf"))
    assert len(reader.pages) > 5
    assert "北京大学图书馆" in reader.pages[0].extract_text()


# --------------------------------------------------------------------------
# from a settled period (real PostgreSQL)
# --------------------------------------------------------------------------

async def test_reports_after_a_run_and_partial_payments(
        pool: asyncpg.Pool, settings: Settings, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    year = await fresh_year(pool)
    period = f"{year}-03"
    pku, fdu, lzu = await libraries(pool, "北京大学图书馆", "复旦大学图书馆", "兰州大学图书馆")
    budget = budget_name("finance-report")
    async with pool.acquire() as conn:
        version = await load_subsidy(conn, f"""
[[budget]]
name = "{budget}"
per = "requester"
period = "month"
amount = "20.00"

[[rule]]
name = "兰大补贴 LZU support"
when = {{ requester = ["{lzu}"] }}
percent = 50
budgets = ["{budget}"]
""")
    # PKU owes 8.00, then earns 8.00 back: its balance is zero after 03-05.
    await charge(pool, version, pku, fdu, "8.00", at(f"{year}-03-02"))
    await charge(pool, version, fdu, pku, "8.00", at(f"{year}-03-05"))
    await charge(pool, version, lzu, pku, "30.00", at(f"{year}-03-10"), title="=HYPERLINK(1)")
    await charge(pool, version, pku, lzu, "12.00", at(f"{year}-03-20"))
    # PKU: +30 - 12 = +18.00; LZU: -30 + 15 (subsidy) + 12 = -3.00; FDU: 0, no statement.
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.run_id is not None
    async with pool.acquire() as conn:
        [lzu_due] = await dues.positions(conn, agency=lzu)
        [pku_due] = await dues.positions(conn, agency=pku)
        assert (lzu_due.direction, lzu_due.amount) == (Direction.TO_CENTRE, cny("3.00"))
        assert (pku_due.direction, pku_due.amount) == (Direction.TO_AGENCY, cny("18.00"))
        await dues.record_payment(conn, lzu_due.due_id, cny("1.00"),
                                  paid_on=lzu_due.issued_on, source=PaymentSource.MANUAL,
                                  actor="test")
        await dues.record_payment(conn, pku_due.due_id, cny("5.00"),
                                  paid_on=pku_due.issued_on, source=PaymentSource.BANK,
                                  actor="test", bank_reference="=BANK-REF")

        pku_account = await fetch_agency_account(conn, pku)
        s = pku_account.section("CNY")
        assert s.zero_on == D(year, 3, 5) and s.earlier_lines == 2
        assert [line.move.kind for line in s.lines] == [
            LineKind.CHARGE_AS_SUPPLIER, LineKind.CHARGE_AS_REQUESTER,
            LineKind.STATEMENT_ISSUED, LineKind.PAYMENT_SENT]
        ledger_net = (await balance(conn, pku, None, None)).closing[0]
        assert ledger_net == cny("18.00")
        assert s.balance == ledger_net - cny("5.00")

        lzu_section = (await fetch_agency_account(conn, lzu)).section("CNY")
        assert lzu_section.zero_on is None                     # never zero: from the start
        lzu_net = (await balance(conn, lzu, None, None)).closing[0]
        assert lzu_section.balance == lzu_net + cny("1.00") == cny("-2.00")
        with pytest.raises(ReportError):
            await fetch_agency_account(conn, "T:NO-SUCH-AGENCY")

        report = await fetch_cash_report(conn, date_from=D(year, 1, 1),
                                         date_to=D(year, 12, 31))
        # The run also settles what earlier tests left unsettled (their agencies' dues,
        # some paid from deposits when the run closed): count those apart.
        others = {d: await conn.fetchval(
            "SELECT coalesce(sum(p.amount_minor), 0) FROM statement_payment p "
            "JOIN statement_due d ON d.id = p.due_id WHERE d.run_id = $1 "
            "AND d.direction = $2 AND d.agency <> ALL($3::text[])",
            result.run_id, d, [pku, fdu, lzu]) for d in ("to_centre", "to_agency")}
    part = report.section("CNY")
    [row] = [r for r in part.rows if r.run.run_id == result.run_id]
    assert row.figures.received == 100 + others["to_centre"]
    assert row.figures.paid_out == 500 + others["to_agency"]
    assert row.figures.outstanding_in == row.figures.to_centre - row.figures.received
    assert row.figures.outstanding_out == row.figures.by_centre - row.figures.paid_out
    [outlay] = [o for o in part.outlays if o.run.run_id == result.run_id]
    assert outlay.months == (period,) and outlay.outlay_minor >= 1500
    [use] = [b for b in outlay.budgets if b.name == budget]
    assert (use.limit_minor, use.spent_minor, use.used_percent) == (2000, 1500,
                                                                    Decimal("75.0"))

    # The files, through the command.
    out_csv, out_pdf = tmp_path / "pku.csv", tmp_path / "pku.pdf"
    assert await run_command(settings, ["payments", "report", "agency", pku, "--format",
                                        "csv", "--out", str(out_csv)]) == 0
    data = out_csv.read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    cells = [c for r in csv_rows(data) for c in r]
    assert "'=HYPERLINK(1)" in cells
    assert not any(c.startswith("=") for c in cells)
    assert await run_command(settings, ["payments", "report", "agency", pku, "--format",
                                        "pdf", "--out", str(out_pdf)]) == 0
    text = "\n".join(p.extract_text() for p in PdfReader(str(out_pdf)).pages)
    assert "北京大学图书馆" in text
    assert await run_command(settings, ["payments", "report", "cash", "--from",
                                        f"{year}-01-01", "--format", "pdf"]) == 2
    assert await run_command(settings, ["payments", "report", "agency", "T:NOBODY"]) == 2
    assert await run_command(settings, ["payments", "report", "cash", "--from",
                                        "yesterday"]) == 2
    capsys.readouterr()
    assert await run_command(settings, ["payments", "report", "cash", "--from",
                                        f"{year}-01-01", "--to", f"{year}-12-31"]) == 0
    text = capsys.readouterr().out
    # The period's first line is its cash row (the subsidy table comes after).
    line = next(x for x in text.splitlines() if x.startswith(f"{period} "))
    assert f"{year}-03-01 .. {year}-03-31" in line
    cells = line.split()
    assert Money(row.figures.received, "CNY").amount_text() in cells
    assert Money(row.figures.paid_out, "CNY").amount_text() in cells
    assert budget in text
