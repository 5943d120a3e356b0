"""Central settlement: periods, netting, invariants, statements, re-runs (real PostgreSQL).

The test database is shared by the whole run, and a run settles every unsettled
posting up to its period's end. So each test settles periods of its own year in the
distant past (`fresh_year`: after every year used so far, so periods close in
calendar order), makes its own agencies, and scopes its assertions to them. Most
tests settle the worked example of tests/support/settlement.py (three libraries,
four loans, nets worked out by hand).
"""

from __future__ import annotations

import asyncio
import csv
import datetime
import io
import json
from pathlib import Path

import asyncpg
import pytest
from pypdf import PdfReader

import settlement.run as run_module
from app.cli import run_command
from schemas.money import Money
from schemas.settings import Settings
from settlement import periods
from settlement.ledger import CENTRE, post_charge, reverse
from settlement.netting import InvariantViolation, compute, invariants
from settlement.periods import Period
from settlement.record import SettlementError, SettlementResult, open_scope
from settlement.run import reproduce, scheduled_settlement, settle
from settlement.statement_csv import _money_sql
from settlement.statement_model import (
    CSV_HEADER,
    GENERATED_LABEL,
    attachment_name,
    file_stem,
    statement_name,
    statements_dir,
    summary_name,
)
from settlement.statement_pdf import fit
from tests.support.agencies import sql_agencies
from tests.support.money import SHANGHAI, at, cny
from tests.support.names import agency_symbol, unique
from tests.support.settlement import (
    after,
    charge,
    fresh_year,
    half_subsidy,
    libraries,
    no_subsidy,
    worked_example,
)

# --------------------------------------------------------------------------
# reading what a run wrote
# --------------------------------------------------------------------------

def nets(result: SettlementResult, symbols: list[str]) -> dict[str, str]:
    out = {}
    for s in result.statements:
        if s.symbol in symbols:
            [t] = s.totals
            out[s.symbol] = Money(t.net, t.currency).amount_text()
    return out


def read_csv(path: Path) -> tuple[list[str], list[list[str]], list[list[str]]]:
    """(header, statement lines, everything after them)."""
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    rows = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"), newline="")))
    header, body = rows[0], rows[1:]
    cut = body.index([])
    return header, body[:cut], body[cut + 1:]


def no_files(directory: Path) -> bool:
    return not directory.exists() or not any(p.is_file() for p in directory.rglob("*"))


def pdf_text(path: Path) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(str(path)).pages)


# --------------------------------------------------------------------------
# periods and small pieces
# --------------------------------------------------------------------------

def test_periods_follow_the_consortium_calendar() -> None:
    p = Period.parse("2026-12")
    assert (p.first_day, p.last_day) == (datetime.date(2026, 12, 1), datetime.date(2026, 12, 31))
    assert str(p.next()) == "2027-01" and str(p.previous()) == "2026-11"
    assert str(Period.parse("2026-01").previous()) == "2025-12"
    assert Period.parse("2024-02").last_day == datetime.date(2024, 2, 29)
    # 2026-11-30 16:00 UTC is already December 1st in Shanghai.
    instant = datetime.datetime(2026, 11, 30, 16, 0, tzinfo=datetime.UTC)
    assert str(Period.containing(instant, "Asia/Shanghai")) == "2026-12"
    assert str(Period.containing(instant, "Europe/Berlin")) == "2026-11"
    assert Period.parse("2026-11").ends_at("Asia/Shanghai") == instant
    assert Period.parse("2026-11").has_ended(instant, "Asia/Shanghai")
    assert not Period.parse("2026-11").has_ended(instant - datetime.timedelta(seconds=1),
                                                 "Asia/Shanghai")
    assert str(periods.resolve("current", instant, "Asia/Shanghai")) == "2026-12"
    assert str(periods.resolve(" 2026-10 ", instant, "Asia/Shanghai")) == "2026-10"
    for bad in ("2026-13", "2026-1", "26-10", "last"):
        with pytest.raises(ValueError, match="YYYY-MM"):
            periods.resolve(bad, instant, "Asia/Shanghai")


def test_file_names_are_stable_and_safe() -> None:
    assert file_stem("CALIS:100010") == "CALIS_100010"
    assert file_stem("ISIL:CN-SHL") == "ISIL_CN-SHL"
    assert statement_name("CALIS:100010", "2026-10", "csv") == \
        "statement-CALIS_100010-2026-10.csv"
    assert summary_name("2026-10", "pdf") == "centre-summary-2026-10.pdf"
    assert attachment_name("statement-CALIS_100010-2026-10.pdf") == \
        "馆际互借结算对账单-CALIS_100010-2026-10.pdf"
    assert fit("短", 50, 7) == "短"
    assert fit("敦煌学研究" * 10, 35, 7).endswith("…") and len(fit("敦煌学研究" * 10, 35, 7)) < 6


async def test_amounts_in_sql_match_money(pool: asyncpg.Pool) -> None:
    cases = [(3800, "CNY"), (-5, "CNY"), (0, "CNY"), (-1850, "USD"), (1200, "JPY"),
             (-7, "KRW"), (123456789012, "CNY")]
    sql = _money_sql("v.m", "v.c")
    got = await pool.fetch(f"SELECT {sql} AS t FROM unnest($1::bigint[], $2::text[]) "
                           "WITH ORDINALITY AS v(m, c, i) ORDER BY i",
                           [m for m, _ in cases], [c for _, c in cases])
    assert [r["t"] for r in got] == [Money(m, c).amount_text() for m, c in cases]


# --------------------------------------------------------------------------
# netting, invariants, statements
# --------------------------------------------------------------------------

async def test_three_libraries_net_as_worked_by_hand(pool: asyncpg.Pool,
                                                     settings: Settings) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.created and result.state == "closed"
    assert nets(result, [pku, fdu, lzu]) == {pku: "26.00", fdu: "5.00", lzu: "-2.00"}
    by = {s.symbol: s.totals[0] for s in result.statements}
    assert (by[pku].earned, by[pku].owed, by[pku].subsidy, by[pku].direction) == (
        3800, 1200, 0, "receive")
    assert (by[fdu].earned, by[fdu].owed, by[fdu].subsidy, by[fdu].patron) == (
        2000, 3000, 1500, 1500)
    assert (by[lzu].earned, by[lzu].owed, by[lzu].subsidy, by[lzu].patron, by[lzu].direction) \
        == (1200, 2800, 1400, 1400, "pay")
    assert (by[pku].lines, by[pku].as_supplier, by[pku].as_requester) == (3, 2, 1)
    # Only these four postings are dated in this year: the run is exactly them.
    assert result.postings == 4 and result.late_postings == 0
    assert result.entries == 4 * 2 + 3 * 2        # three subsidised postings have 4 entries
    t = result.totals["CNY"]
    assert (t["net"], t["centre"], t["toReceive"], t["toPay"]) == (2900, -2900, 3100, 200)
    assert result.by_rule == [("读者补贴 reader support", "CNY", 2900, 3)]
    assert result.invariants["ok"] is True
    inv = result.invariants
    assert inv["entriesBalance"] == {"ok": True, "unbalancedPostings": 0,
                                     "sumByCurrency": {"CNY": "0.00"}}
    assert inv["netsSumToMinusCentre"]["byCurrency"]["CNY"] == {
        "agencyNets": "29.00", "centrePosition": "-29.00", "subsidyPosted": "29.00",
        "subsidyGranted": "29.00"}
    every = inv["everyEntryInOneStatement"]
    assert every["ok"] and every["statements"] == 3 and every["statementLines"] == 8
    assert every["linesWritten"] == 8
    assert every["entriesInStatements"] == 11 and every["entriesInCentreSummary"] == 3

    # The run record holds the same, and every posting is in exactly one run.
    run = await pool.fetchrow("SELECT * FROM settlement_run WHERE period = $1", period)
    assert run["id"] == result.run_id and run["closed_at"] is not None
    assert json.loads(run["invariants"]) == result.invariants
    assert await pool.fetchval("SELECT state FROM settlement_period WHERE period = $1",
                               period) == "closed"
    assert await pool.fetchval(
        """SELECT count(*) FROM settlement_item s JOIN ledger_posting p ON p.id = s.posting_id
           WHERE p.requester = ANY($1::text[])""", [pku, fdu, lzu]) == 4
    stored = {r["owner"]: r["net_minor"] for r in await pool.fetch(
        "SELECT owner, net_minor FROM settlement_net WHERE run_id = $1", result.run_id)}
    assert stored == {pku: 2600, fdu: 500, lzu: -200, CENTRE: -2900}


async def test_csv_statement_opens_with_the_right_columns(pool: asyncpg.Pool,
                                                         settings: Settings) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None
    directory = statements_dir(settings, period)
    assert result.directory == directory
    header, lines, rest = read_csv(directory / statement_name(lzu, period, "csv"))
    assert header == list(CSV_HEADER)
    assert header[0] == "日期 Date" and "题名 Title" in header and "净额 Net" in header
    assert len(lines) == 3 and all(len(r) == len(header) for r in lines)
    rows = [dict(zip(header, r, strict=True)) for r in lines]
    assert [r["日期 Date"] for r in rows] == [f"{year}-03-10", f"{year}-03-15",
                                            f"{year}-03-31"]
    first = rows[0]
    assert first["对方馆 Counterpart"] == fdu and first["对方馆名称 Counterpart name"] == \
        "复旦大学图书馆"
    assert first["题名 Title"] == "红楼梦版本研究" and first["角色 Role"] == "requester"
    assert first["服务类型 Service kind"] == "DocumentDelivery"
    assert (first["费用 Fee"], first["补贴 Subsidy"], first["读者自付 Patron share"],
            first["净额 Net"], first["币种 Currency"]) == ("20.00", "10.00", "10.00",
                                                           "-10.00", "CNY")
    assert first["本馆 Agency"] == lzu and first["交易号 Transaction ID"].startswith("ILL-")
    supplied = rows[1]
    assert supplied["角色 Role"] == "supplier" and supplied["净额 Net"] == "12.00"
    assert supplied["补贴 Subsidy"] == "" and supplied["题名 Title"] == "西夏文献"
    # A title Excel would run as a formula is defused.
    assert rows[2]["题名 Title"] == "'=HYPERLINK(1)"
    assert sum(Money.from_decimal(r["净额 Net"]).minor for r in rows) == -200
    # Totals under the lines, then who/what/when; the generation time is the last line.
    labels = [r[0] for r in rest if r]
    assert labels[:3] == ["作为供应馆应收 Earned as supplier", "作为申请馆应付 Owed as requester",
                          "净额 Net amount"]
    net_row = next(r for r in rest if r and r[0] == "净额 Net amount")
    assert net_row[12] == "-2.00" and "to pay" in net_row[14]
    assert ["本馆 Agency", lzu, "兰州大学图书馆"] in rest
    assert rest[-1] == [GENERATED_LABEL, result.generated_at]

    _h, sup_lines, _r = read_csv(directory / statement_name(pku, period, "csv"))
    assert [r[4] for r in sup_lines] == ["supplier", "requester", "supplier"]
    summary = (directory / summary_name(period, "csv")).read_bytes()
    assert summary.startswith(b"\xef\xbb\xbf")
    srows = list(csv.reader(io.StringIO(summary.decode("utf-8-sig"), newline="")))
    mine = {r[0]: r for r in srows[1:] if r and r[0] in (pku, fdu, lzu)}
    assert mine[pku][1] == "北京大学图书馆" and mine[pku][11] == "26.00"
    assert mine[lzu][11] == "-2.00" and mine[lzu][12] == "应付 to pay"
    assert any(r[:2] == ["", "读者补贴 reader support"] and r[4] == "29.00" for r in srows)
    assert any(r and r[0].startswith("中心头寸") and r[11] == "-29.00" for r in srows)
    assert any(r and r[0].startswith("分录平衡") and r[1] == "成立 holds" for r in srows)


async def test_pdf_statements_show_the_totals(pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None
    directory = statements_dir(settings, period)
    lzu_pdf = pdf_text(directory / statement_name(lzu, period, "pdf"))
    assert "兰州大学图书馆" in lzu_pdf and "馆际互借结算对账单" in lzu_pdf
    assert "红楼梦版本研究" in lzu_pdf and "复旦大学图书馆" in lzu_pdf
    assert "Net amount to pay to the centre" in lzu_pdf and "2.00 CNY" in lzu_pdf
    assert "应付净额" in lzu_pdf and "28.00" in lzu_pdf and "14.00" in lzu_pdf
    assert result.generated_at in lzu_pdf
    pku_pdf = pdf_text(directory / statement_name(pku, period, "pdf"))
    assert "Net amount to receive from the centre" in pku_pdf and "26.00 CNY" in pku_pdf
    summary = pdf_text(directory / summary_name(period, "pdf"))
    assert "中心结算汇总" in summary and "北京大学图书馆" in summary
    assert "-29.00 CNY" in summary and "读者补贴 reader support" in summary
    assert "VIOLATED" not in summary and "成立 holds" in summary
    assert PdfReader(str(directory / statement_name(fdu, period, "pdf"))).metadata.title \
        == f"结算对账单 Statement {fdu} {period}"


async def test_rerun_reproduces_the_closed_period(pool: asyncpg.Pool,
                                                  settings: Settings) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year, emails=True)
    first = await settle(pool, settings, period, now=after(period))
    assert first is not None and first.created
    directory = statements_dir(settings, period)
    names = sorted(p.name for p in directory.iterdir())
    assert len(names) == 2 * 3 + 2 and not any(n.endswith(".tmp") for n in names)
    before = {n: (directory / n).read_bytes() for n in names}
    outbox = await pool.fetchval("SELECT count(*) FROM outbox WHERE message_id LIKE $1",
                                 f"%:{period}:{first.run_id}%")
    mails = await pool.fetchval("SELECT count(*) FROM mail_outbox WHERE recipients[1] LIKE "
                                "'finance-%' AND kind = 'settlement_statement'")

    again = await settle(pool, settings, period, now=after(period) + datetime.timedelta(days=40))
    assert again is not None and not again.created and again.reproduced
    assert again.run_id == first.run_id and again.generated_at == first.generated_at
    assert nets(again, [pku, fdu, lzu]) == nets(first, [pku, fdu, lzu])
    assert again.totals == first.totals and again.invariants == first.invariants
    assert again.by_rule == first.by_rule and again.files == first.files
    assert [(s.symbol, s.totals, s.files) for s in again.statements] == \
        [(s.symbol, s.totals, s.files) for s in first.statements]
    assert {n: (directory / n).read_bytes() for n in names} == before
    # Nothing is sent twice.
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE message_id LIKE $1",
                               f"%:{period}:{first.run_id}%") == outbox == 1 + 3
    assert await pool.fetchval("SELECT count(*) FROM mail_outbox WHERE recipients[1] LIKE "
                               "'finance-%' AND kind = 'settlement_statement'") == mails
    assert await pool.fetchval("SELECT count(*) FROM settlement_run WHERE period = $1",
                               period) == 1

    # Lost and damaged files come back byte for byte (the generation time is the run's).
    csv_name = statement_name(lzu, period, "csv")
    pdf_name = statement_name(pku, period, "pdf")
    (directory / csv_name).unlink()
    (directory / pdf_name).write_bytes(b"%PDF-1.4 damaged")
    restored = await reproduce(pool, settings, Period.parse(period))
    assert sorted(restored.restored) == sorted([csv_name, pdf_name])
    assert {n: (directory / n).read_bytes() for n in names} == before
    # verify=True regenerates everything and compares it with the checksums on record.
    checked = await reproduce(pool, settings, Period.parse(period), verify=True)
    assert checked.restored == [] and checked.files == first.files
    assert sorted(p.name for p in directory.iterdir()) == names


async def test_late_charge_lands_in_the_next_period(pool: asyncpg.Pool,
                                                    settings: Settings) -> None:
    year = await fresh_year(pool)
    nlc, shl = await libraries(pool, "国家图书馆", "上海图书馆")
    v = await half_subsidy(pool, shl)
    september, october = f"{year}-09", f"{year}-10"
    original = await charge(pool, v, shl, nlc, "40.00", at(f"{year}-09-05"), title="四库全书")
    closed = await settle(pool, settings, september, now=after(september))
    assert closed is not None and nets(closed, [nlc, shl]) == {nlc: "40.00", shl: "-20.00"}

    # Arriving after September closed: a charge dated September 28th, an October charge,
    # and the refund (reversal) of the September loan, made in October.
    late = await charge(pool, v, shl, nlc, "10.00", at(f"{year}-09-28"), title="永乐大典")
    await charge(pool, v, nlc, shl, "6.00", at(f"{year}-10-03"), title="申报")
    async with pool.acquire() as conn:
        posting = await conn.fetchrow("SELECT transaction_id, event FROM ledger_posting "
                                      "WHERE id = $1", original)
        undo = await reverse(conn, transaction_id=posting["transaction_id"],
                             event=posting["event"], reason="图书损坏退款 damaged, refunded",
                             on=at(f"{year}-10-20"))
    assert undo is not None

    # September never changes: a re-run reproduces it, the late charge is not in it.
    again = await settle(pool, settings, september, now=after(october))
    assert again is not None and not again.created
    assert nets(again, [nlc, shl]) == {nlc: "40.00", shl: "-20.00"}
    assert await pool.fetchval("SELECT run_id FROM settlement_item WHERE posting_id = $1",
                               late) is None

    result = await settle(pool, settings, october, now=after(october))
    assert result is not None and result.created and result.late_postings == 1
    # NLC: +10.00 (late) -6.00 (owed) -40.00 (refund) = -36.00; SHL: -5.00 +6.00 +20.00.
    assert nets(result, [nlc, shl]) == {nlc: "-36.00", shl: "21.00"}
    assert result.statement(nlc).totals[0].late == 1
    assert await pool.fetchval("SELECT r.period FROM settlement_item s JOIN settlement_run r "
                               "ON r.id = s.run_id WHERE s.posting_id = $1", late) == october
    _h, lines, _r = read_csv(statements_dir(settings, october) /
                             statement_name(shl, october, "csv"))
    by_title = {r[8]: r for r in lines}
    late_line = by_title["永乐大典"]
    assert late_line[0] == f"{year}-09-28"                   # its original date
    assert late_line[14].startswith(f"迟到入账 late: dated in {september}, posted ")
    refund = by_title["四库全书"]
    assert refund[3] == "Loaned/reversal" and refund[9] == "-40.00" and refund[12] == "20.00"
    assert f"冲正 reversal of posting {original} dated {year}-09-05" in refund[14]
    assert "damaged, refunded" in refund[14]
    assert by_title["申报"][14] == ""


async def test_concurrent_settle_gives_one_run(pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)

    async def one() -> SettlementResult:
        result = await settle(pool, settings, period, now=after(period))
        assert result is not None
        return result

    results = await asyncio.gather(*(one() for _ in range(3)))
    assert sum(r.created for r in results) == 1
    assert len({r.run_id for r in results}) == 1
    assert all(nets(r, [pku, fdu, lzu]) == {pku: "26.00", fdu: "5.00", lzu: "-2.00"}
               for r in results)
    assert await pool.fetchval("SELECT count(*) FROM settlement_run WHERE period = $1",
                               period) == 1
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = $1",
                               f"settlement.{period}") == 1


async def test_a_posting_being_written_when_the_run_starts_is_in_it(pool: asyncpg.Pool,
                                                                    settings: Settings) -> None:
    """The run's range ends at the highest posting id committed when it starts. A posting
    still being written may have a lower id than one already committed: the run waits
    for it, so it is not left behind inside the range, settled by no run."""
    year = await fresh_year(pool)
    nlc, shl = await libraries(pool, "国家图书馆", "上海图书馆")
    v = await no_subsidy(pool)
    period = f"{year}-07"
    async with pool.acquire() as writer:
        tx = writer.transaction()
        await tx.start()
        await post_charge(writer, transaction_id=f"ILL-{unique('S')}", event="Loaned",
                          requester=shl, supplier=nlc, service_kind="BookLoan",
                          fee=cny("2.50"), quote=None, on=at(f"{year}-07-31", "23:00"),
                          subsidy_version=v)
        # A later id, committed first.
        await charge(pool, v, shl, nlc, "10.00", at(f"{year}-07-01"))
        run = asyncio.create_task(settle(pool, settings, period, now=after(period)))
        await asyncio.sleep(0.5)
        assert not run.done()          # waiting for the first posting's transaction
        await tx.commit()
    result = await run
    assert result is not None and result.postings == 2
    assert nets(result, [nlc, shl]) == {nlc: "12.50", shl: "-12.50"}


async def test_scheduled_settlement_runs_once_after_the_period(pool: asyncpg.Pool,
                                                               settings: Settings) -> None:
    year = await fresh_year(pool)
    period, *_ = await worked_example(pool, year)
    end = Period.parse(period).ends_at(SHANGHAI)
    # Before the end nothing happens (the previous period has no postings of ours), and
    # the period itself cannot be settled yet.
    with pytest.raises(SettlementError, match="has not ended yet"):
        await settle(pool, settings, period, now=end - datetime.timedelta(seconds=1))
    assert await periods.state(pool, Period.parse(period)) == periods.PeriodState(
        period, "open", None, None, 0, None)
    # Two hub processes' schedulers fire at once: one settles, the other finds it locked
    # or closed.
    got = await asyncio.gather(scheduled_settlement(pool, settings, end + datetime.timedelta(
        minutes=15)), scheduled_settlement(pool, settings, end + datetime.timedelta(minutes=15)))
    assert sorted(got, key=lambda x: x or "") == [None, period]
    assert await scheduled_settlement(pool, settings, end + datetime.timedelta(hours=1)) is None
    # An earlier period is not settled any more once a later one is closed.
    with pytest.raises(SettlementError, match="comes before the closed period"):
        await settle(pool, settings, f"{year}-01", now=end)


async def test_dry_run_writes_nothing(pool: asyncpg.Pool, settings: Settings,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)

    async def counts() -> tuple[int, ...]:
        return tuple(await pool.fetchrow(
            """SELECT (SELECT count(*) FROM settlement_period), (SELECT count(*) FROM
                      settlement_run), (SELECT count(*) FROM settlement_item),
                      (SELECT count(*) FROM settlement_net), (SELECT count(*) FROM outbox),
                      (SELECT count(*) FROM mail_outbox)"""))

    before = await counts()
    result = await settle(pool, settings, period, now=after(period), dry_run=True)
    assert result is not None and result.dry_run and not result.created
    assert result.run_id is None and result.state == "open"
    assert nets(result, [pku, fdu, lzu]) == {pku: "26.00", fdu: "5.00", lzu: "-2.00"}
    assert result.invariants["ok"]
    # Previewing the month before it ends is what dry runs are for.
    early = await settle(pool, settings, period, now=at(f"{year}-03-20"), dry_run=True)
    assert early is not None and nets(early, [pku]) == {pku: "26.00"}
    assert await counts() == before
    assert no_files(Path(settings.data_dir))

    # The CLI: `settle --period current --dry-run` (today's open month) and errors.
    today = await charge(pool, None, pku, fdu, "3.50", datetime.datetime.now(SHANGHAI))
    assert today
    assert await run_command(settings, ["settle", "--period", "current", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("PREVIEW of ") and "nothing written" in out
    assert pku in out and fdu in out and "invariants:" in out
    assert await counts() == (before[0], before[1], before[2], before[3], before[4], before[5])
    assert await run_command(settings, ["settle", "--period", "current"]) == 1
    assert "has not ended yet" in capsys.readouterr().err
    assert await run_command(settings, ["settle", "--period", "2026-13", "--dry-run"]) == 1
    assert "YYYY-MM" in capsys.readouterr().err
    # Leave nothing of this year unsettled for the tests after this one.
    assert await settle(pool, settings, period, now=after(period)) is not None


async def test_settle_cli_reports_the_run(pool: asyncpg.Pool, settings: Settings,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    year = await fresh_year(pool)
    period, _pku, _fdu, lzu = await worked_example(pool, year)
    assert await run_command(settings, ["settle", "--period", period]) == 0
    out = capsys.readouterr().out
    assert f"settlement {period} ({year}-03-01 .. {year}-03-31): run" in out
    assert "closed now" in out and "北京大学图书馆" in out
    line = next(x for x in out.splitlines() if x.startswith(lzu))
    assert "-2.00" in line and "to pay" in line
    assert "entries balance: ok" in out and "every entry in exactly one statement: ok" in out
    assert summary_name(period, "csv") in out
    assert await run_command(settings, ["settle", "--period", period]) == 0
    assert "already closed by run" in capsys.readouterr().out
    # A closed period's record:
    assert await run_command(settings, ["settle", "--period", period, "--dry-run"]) == 0
    assert "already closed" in capsys.readouterr().out


async def test_statement_lines_survive_odd_symbols_and_text(pool: asyncpg.Pool,
                                                          settings: Settings) -> None:
    """A symbol CSV must quote, a library that supplies itself, control characters."""
    year = await fresh_year(pool)
    plain = (await libraries(pool, "国家图书馆"))[0]
    [odd] = await sql_agencies(pool, "=逗号,图书馆\x1e", symbols=[agency_symbol(unique("Q,X"))],
                               province="北京", city="北京")
    v = await half_subsidy(pool, odd)
    period = f"{year}-05"
    await charge(pool, v, odd, plain, "10.00", at(f"{year}-05-02"), title='敦煌,"学"\x1e研究')
    await charge(pool, v, odd, odd, "8.00", at(f"{year}-05-30"), title="自给 self")
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.invariants["ok"]
    directory = statements_dir(settings, period)
    _h, lines, rest = read_csv(directory / statement_name(odd, period, "csv"))
    assert [(r[4], r[5], r[15]) for r in lines] == [("requester", plain, odd),
                                                    ("both", odd, odd)]
    # The title keeps its comma and quotes, loses the control character; the name is
    # defused for Excel.
    assert lines[0][8] == '敦煌,"学" 研究' and lines[0][6] == "国家图书馆"
    assert lines[1][6] == "'=逗号,图书馆 "
    # Supplying itself: one line, fee 8.00, half of it subsidised, the net is the subsidy.
    assert lines[1][9:13] == ["8.00", "4.00", "4.00", "4.00"]
    assert ["本馆 Agency", odd, "'=逗号,图书馆 "] in rest
    _h, theirs, _r = read_csv(directory / statement_name(plain, period, "csv"))
    assert [(r[4], r[5], r[6]) for r in theirs] == [("supplier", odd, "'=逗号,图书馆 ")]
    checked = await reproduce(pool, settings, Period.parse(period), verify=True)
    assert checked.restored == [] and checked.files == result.files


async def test_nets_are_per_currency(pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    hku, pku = await libraries(pool, "香港大学图书馆", "北京大学图书馆")
    v = await no_subsidy(pool)
    period = f"{year}-06"
    await charge(pool, v, hku, pku, "25.00", at(f"{year}-06-01"))
    await charge(pool, v, pku, hku, "7.50", at(f"{year}-06-02"), currency="USD")
    await charge(pool, v, pku, hku, "0.00", at(f"{year}-06-03"), title="免费 free")
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.invariants["ok"]
    hk = {t.currency: (t.net, t.lines) for t in result.statement(hku).totals}
    assert hk == {"CNY": (-2500, 2), "USD": (750, 1)}        # the free loan is a line too
    assert set(result.totals) == {"CNY", "USD"}
    _h, lines, rest = read_csv(statements_dir(settings, period) /
                               statement_name(pku, period, "csv"))
    assert [(r[9], r[12], r[13]) for r in lines] == [("25.00", "25.00", "CNY"),
                                                     ("7.50", "-7.50", "USD"),
                                                     ("0.00", "0.00", "CNY")]
    assert [r[12:14] for r in rest if r and r[0] == "净额 Net amount"] == [
        ["25.00", "CNY"], ["-7.50", "USD"]]


async def test_a_small_pool_is_enough(pool: asyncpg.Pool, settings: Settings,
                                      database_url: str) -> None:
    """One connection holds the lock; the netting and the statements share the other."""
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)
    small = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    try:
        result = await asyncio.wait_for(settle(small, settings, period, now=after(period)), 60)
        assert result is not None and result.created
        assert nets(result, [pku, fdu, lzu]) == {pku: "26.00", fdu: "5.00", lzu: "-2.00"}
    finally:
        await small.close()
    tiny = await asyncpg.create_pool(database_url, min_size=1, max_size=1)
    try:
        with pytest.raises(SettlementError, match="at least 2 connections"):
            await settle(tiny, settings, period, now=after(period))
    finally:
        await tiny.close()


async def test_a_period_without_postings_closes_empty(pool: asyncpg.Pool,
                                                      settings: Settings) -> None:
    year = await fresh_year(pool)
    period = f"{year}-02"
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.created and result.statements == []
    assert result.postings == 0 and result.totals == {} and result.invariants["ok"]
    assert [f.name for f in result.files] == [summary_name(period, "csv"),
                                              summary_name(period, "pdf")]
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = $1",
                               f"settlement.{period}") == 1
    again = await settle(pool, settings, period, now=after(period))
    assert again is not None and again.reproduced and again.files == result.files


# --------------------------------------------------------------------------
# invariants
# --------------------------------------------------------------------------

async def test_invariants_catch_what_does_not_add_up(pool: asyncpg.Pool,
                                                     settings: Settings) -> None:
    year = await fresh_year(pool)
    period, *_ = await worked_example(pool, year)
    p = Period.parse(period)
    async with pool.acquire() as conn:
        netting = await compute(conn, await open_scope(conn, p))
    record, problems = invariants(netting)
    assert problems == [] and record["ok"]

    # An entry owned by nobody in the run, an unbalanced posting, a centre that paid
    # less than the agencies were credited: each is reported, with figures.
    netting.entry_sums[("T:GHOST", "CNY", "payable")] = (-100, 1)
    netting.entry_sums[(CENTRE, "CNY", "subsidy_expense")] = (-2800, 3)
    netting.centre["CNY"] = -2800
    netting.unbalanced_postings = 1
    record, problems = invariants(netting)
    assert not record["ok"] and not record["entriesBalance"]["ok"]
    assert record["entriesBalance"]["sumByCurrency"]["CNY"] == "0.00"
    assert not record["netsSumToMinusCentre"]["ok"]
    assert not record["everyEntryInOneStatement"]["ok"]
    assert "1 posting(s) whose entries do not sum to zero" in problems
    assert any("T:GHOST has 1 payable entr(ies) in CNY but no statement lines" in x
               for x in problems)
    assert any("the centre's position is -28.00" in x for x in problems)
    assert await settle(pool, settings, period, now=after(period)) is not None


async def test_a_run_whose_invariants_fail_closes_nothing(pool: asyncpg.Pool,
                                                          settings: Settings,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year, emails=True)

    def broken(netting):  # type: ignore[no-untyped-def]
        record, _ = invariants(netting)
        record["ok"] = False
        return record, ["the agencies' nets sum to 29.00, the centre's position is -28.00"]

    monkeypatch.setattr(run_module, "invariants", broken)
    outbox = await pool.fetchval("SELECT count(*) FROM outbox")
    with pytest.raises(InvariantViolation, match=r"centre's position is -28\.00"):
        await settle(pool, settings, period, now=after(period))
    state = await periods.state(pool, Period.parse(period))
    assert state.state == "open" and "InvariantViolation" in (state.last_error or "")
    assert await pool.fetchval("SELECT count(*) FROM settlement_run WHERE period = $1",
                               period) == 0
    assert await pool.fetchval(
        "SELECT count(*) FROM settlement_item s JOIN ledger_posting p ON p.id = s.posting_id "
        "WHERE p.supplier = ANY($1::text[])", [pku, fdu, lzu]) == 0
    assert await pool.fetchval("SELECT count(*) FROM outbox") == outbox
    assert no_files(statements_dir(settings, period))

    # Fixed, the next attempt settles normally.
    monkeypatch.undo()
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.created and result.invariants["ok"]
    state = await periods.state(pool, Period.parse(period))
    assert state.state == "closed" and state.attempts == 2 and state.last_error is None


async def test_a_run_that_died_half_way_is_redone(pool: asyncpg.Pool,
                                                  settings: Settings) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)
    p = Period.parse(period)
    # What a process killed after taking the postings leaves behind: the run's row with
    # its range, and the period closing.
    async with pool.acquire() as conn:
        await periods.mark_closing(conn, p)
        run = await conn.fetchval(
            "INSERT INTO settlement_run (period, date_from, cutoff, started_at, generated_at, "
            "posting_max) SELECT $1, $2, $3, now(), now(), max(id) FROM ledger_posting "
            "RETURNING id", period, p.first_day, p.last_day)
    assert (await periods.state(pool, p)).state == "closing"
    # Taken, a posting cannot be added to the run's range any more.
    with pytest.raises(asyncpg.RestrictViolationError,
                       match=f"falls into settlement run {run} of {period}"):
        async with pool.acquire() as conn:
            await conn.execute(
                "INSERT INTO ledger_posting (id, transaction_id, event, kind, requester, "
                "supplier, service_kind, currency, fee_minor, subsidy_minor, "
                "patron_share_minor, occurred_at, local_date) VALUES ($1, 'ILL-x', 'Loaned', "
                "'charge', $2, $2, 'BookLoan', 'CNY', 0, 0, 0, now(), $3)",
                -run, pku, p.last_day)
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.created and result.run_id != run
    assert nets(result, [pku, fdu, lzu]) == {pku: "26.00", fdu: "5.00", lzu: "-2.00"}
    assert await pool.fetchval("SELECT count(*) FROM settlement_run WHERE id = $1", run) == 0
