#!/usr/bin/env python3
"""Settlement at scale: netting and statements for N ledger transactions across M agencies.

    .venv/bin/python bench/settlement.py [--transactions 10000000] [--agencies 1000]
        [--pdf sample|all|none] [--pdf-sample 40] [--workers 2] [--pdf-workers 2] [--keep]

Creates a scratch database `illhub_bench_<random>` (through --admin-url), migrates
it, and generates the ledger set-based, straight into ledger_posting, ledger_entry
and subsidy_grant (INSERT ... SELECT generate_series, two connections at once):
one posting per transaction, 99 % dated in the settled month and 1 % in the month
before (late, never settled), a quarter subsidised 50 % by one of two rules against
a global monthly budget, one in 199 a reversal of the transaction before it; fees
from 5.00 to 125.00, higher for suppliers further down the list, so that some
agencies pay and others receive. Bulk-load practice: the secondary indexes and
foreign keys of the three tables are dropped before the load and re-created
afterwards, which validates every row against them; the primary keys and CHECK
constraints stay on throughout.

Then it times one real settlement run (`settlement.run.settle`, the same code the
CLI and the scheduler use) with CSV statements for every agency, then the PDFs
separately (a sample, extrapolated, or all of them), and prints seconds and peak
memory (resource.getrusage: this process, and the PDF worker processes). The
PostgreSQL server's own memory is not in these figures. On a shared machine the
seconds depend on what else runs, so the CPU seconds the run used are printed too:
this process's, and its PostgreSQL backends' (read from /proc when the server is on
this machine), with the load average before the run. The netting and the streaming
of the statement lines run at the same time: their phase figures overlap. The
database is dropped at the end unless --keep.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import resource
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import asyncpg

from app.cli.finance import render_text
from bench import loop
from infra.database import create_database, drop_database, with_database
from infra.migrations import migrate
from schemas.settings import Settings
from settlement.periods import Period
from settlement.record import SettlementResult
from settlement.run import settle
from settlement.statement_csv import STATEMENT_STREAMS
from settlement.statement_model import StatementMeta, statements_dir
from settlement.statement_pdf import render_pdfs

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PERIOD = Period.parse("2026-10")
BATCH = 500_000
KINDS = ("DocumentDelivery", "BookLoan", "PayPerView", "EBookLoan", "ProxySearch")
TABLES = ("ledger_posting", "ledger_entry", "subsidy_grant")
TARGET_SECONDS = 60
TARGET_MB = 512
PHASES = {"items": "taking the postings (a range)",
          "netting": "netting, while the lines stream",
          "csv": "statement lines streamed into the files",
          "statements": "CSV files complete (totals, later streams appended)",
          "summary": "centre summary", "close": "closing transaction"}

T0 = time.perf_counter()


def say(message: str) -> None:
    print(f"[{time.perf_counter() - T0:7.1f}s] {message}", file=sys.stderr, flush=True)


def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024      # KiB on Linux


def backend_cpu(pids: list[int]) -> float | None:
    """CPU seconds used so far by these PostgreSQL backends (None: not on this machine)."""
    total = 0.0
    try:
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    return total


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


# Columns of posting g, from its source transaction src (= g, or g - 1 for a reversal).
POSTINGS = f"""
INSERT INTO ledger_posting (id, transaction_id, event, kind, requester, supplier, service_kind,
    title, currency, fee_minor, subsidy_minor, patron_share_minor, quote_minor,
    subsidy_version, reverses, reason, occurred_at, local_date, posted_at)
SELECT g, 'B' || a.src, t.event || CASE WHEN a.rev THEN '/reversal' ELSE '' END,
       CASE WHEN a.rev THEN 'reversal' ELSE 'charge' END,
       'BENCH:L' || lpad((t.r + 1)::text, 4, '0'), 'BENCH:L' || lpad((t.s + 1)::text, 4, '0'),
       t.kind, t.title, 'CNY', a.sign * t.fee, a.sign * t.sub, a.sign * (t.fee - t.sub),
       t.fee, $3, CASE WHEN a.rev THEN a.src END,
       CASE WHEN a.rev THEN '读者取消 cancelled by the reader' END,
       (d.day + time '10:00' + (g % 36000) * interval '1 second') AT TIME ZONE 'Asia/Shanghai',
       d.day, now()
FROM generate_series($1::bigint, $2::bigint) AS g
CROSS JOIN LATERAL (SELECT g % 199 = 0 AS rev, CASE WHEN g % 199 = 0 THEN g - 1 ELSE g END AS src,
                           CASE WHEN g % 199 = 0 THEN -1 ELSE 1 END AS sign) a
CROSS JOIN LATERAL (SELECT CASE WHEN g % 100 = 7 THEN date '2026-09-01' + (g % 30)::int
                                ELSE date '2026-10-01' + (g % 31)::int END AS day) d
CROSS JOIN LATERAL (
    SELECT a.src % {{agencies}} AS r,
           (a.src % {{agencies}} + 1 + (a.src / {{agencies}}) % ({{agencies}} - 1))
               % {{agencies}} AS s,
           (ARRAY{list(KINDS)!r})[a.src % 5 + 1] AS kind,
           CASE WHEN a.src % 5 IN (1, 3) THEN 'Loaned' ELSE 'CopyCompleted' END AS event,
           (ARRAY['敦煌学研究', '红楼梦版本研究', 'Journal of Library Science',
                  '四库全书总目提要', '中国图书馆学报'])[a.src % 5 + 1]
               || ' 第' || (a.src % 997) || '卷' AS title,
           f.fee, CASE WHEN (a.src / {{agencies}}) % 4 = 0 THEN f.fee / 2 ELSE 0 END AS sub
    FROM (SELECT 500 + (a.src * 7919) % 7500
                 + 5000 * ((a.src % {{agencies}} + 1 + (a.src / {{agencies}}) % ({{agencies}} - 1))
                           % {{agencies}}) / {{agencies}} AS fee) f) t
"""

ENTRIES = """
INSERT INTO ledger_entry (posting_id, transaction_id, owner, account, amount_minor, currency,
                          local_date, posted_at)
SELECT p.id, p.transaction_id, x.owner, x.account, x.amount, p.currency, p.local_date, p.posted_at
FROM ledger_posting p
CROSS JOIN LATERAL (VALUES (p.supplier, 'receivable', p.fee_minor),
                           (p.requester, 'payable', -p.fee_minor),
                           (p.requester, 'subsidy', p.subsidy_minor),
                           ('CENTRE', 'subsidy_expense', -p.subsidy_minor))
     AS x(owner, account, amount)
WHERE p.id BETWEEN $1 AND $2 AND x.amount <> 0
"""

GRANTS = """
INSERT INTO subsidy_grant (posting_id, position, rule, wanted_minor, granted_minor, budgets, note)
SELECT p.id, 1, CASE WHEN right(p.requester, 4)::int <= $3 / 2 THEN 'reader support'
                     ELSE 'west support' END,
       p.subsidy_minor, p.subsidy_minor,
       ARRAY[CASE WHEN p.local_date < date '2026-10-01' THEN $4::bigint ELSE $5::bigint END],
       CASE WHEN p.kind = 'reversal' THEN 'reversal of grant 1' END
FROM ledger_posting p
WHERE p.id BETWEEN $1 AND $2 AND p.subsidy_minor <> 0
"""


class SettlementBenchError(RuntimeError):
    """The settlement run did not do what a fresh scratch database makes certain."""


async def generate(url: str, n: int, agencies: int) -> None:
    """The agencies, a subsidy version and budgets, then the ledger, bulk-loaded."""
    conn = await asyncpg.connect(url)
    try:
        version, budgets = await _seed(conn, agencies)
        saved = await _drop_for_load(conn)
    finally:
        await conn.close()
    await _load(url, n, agencies, version, budgets)
    conn = await asyncpg.connect(url)
    try:
        await _restore_after_load(conn, n, saved)
        await _finish_ledger(conn)
    finally:
        await conn.close()


async def _seed(conn: asyncpg.Connection, agencies: int) -> tuple[int, list[int]]:
    """The agencies, and the subsidy version and budgets (2026-09, 2026-10) grants cite."""
    await conn.execute(
        """INSERT INTO agency (symbol, name, roles, password_hash, province, city)
           SELECT 'BENCH:L' || lpad(g::text, 4, '0'),
                  (ARRAY['北京', '上海', '兰州', '广州', '武汉'])[g % 5 + 1]
                      || '第' || g || '大学图书馆', ARRAY['requester', 'supplier'], 'x',
                  '北京', '北京'
           FROM generate_series(1, $1) g""", agencies)
    version = await conn.fetchval(
        "INSERT INTO subsidy_version (source, normalised) VALUES ('# bench', '{}') "
        "RETURNING version")
    budgets = [await conn.fetchval(
        "INSERT INTO subsidy_budget (name, requester, period, currency, limit_minor) "
        "VALUES ('bench-centre', '', $1, 'CNY', 1000000000000000) RETURNING id", m)
        for m in ("2026-09", "2026-10")]
    return version, budgets


async def _drop_for_load(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    """Drop the secondary indexes and constraints of TABLES (and the settled-range
    trigger) for the bulk load; returns their definitions, to re-create them after."""
    saved = await conn.fetch(
        """SELECT 'c' AS kind, conrelid::regclass::text AS tbl, conname AS name,
                  pg_get_constraintdef(oid) AS def
           FROM pg_constraint WHERE conrelid = ANY($1::regclass[]) AND contype IN ('f', 'u')
           UNION ALL
           SELECT 'i', tablename, indexname, indexdef FROM pg_indexes
           WHERE tablename = ANY($2::text[])
             AND indexname NOT IN (SELECT conname FROM pg_constraint)""",
        list(TABLES), list(TABLES))
    for r in saved:
        if r["kind"] == "c":
            await conn.execute(f'ALTER TABLE {r["tbl"]} DROP CONSTRAINT "{r["name"]}"')
        else:
            await conn.execute(f'DROP INDEX "{r["name"]}"')
    say(f"dropped {len(saved)} secondary indexes and constraints for the load")
    # No settlement run exists yet, so the check that no posting enters a settled
    # range has nothing to find; off for the bulk load, like the indexes.
    await conn.execute("ALTER TABLE ledger_posting DISABLE TRIGGER ledger_posting_not_settled")
    return saved


async def _load(url: str, n: int, agencies: int, version: int, budgets: list[int]) -> None:
    """Postings 1..n with their entries and grants, BATCH at a time on two connections."""
    sql = POSTINGS.replace("{agencies}", str(agencies))
    queue: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for s in range(1, n + 1, BATCH):
        queue.put_nowait((s, min(n, s + BATCH - 1)))
    done = 0

    async def worker() -> None:
        nonlocal done
        c = await asyncpg.connect(url)
        try:
            while not queue.empty():
                lo, hi = queue.get_nowait()
                async with c.transaction():
                    await c.execute(sql, lo, hi, version)
                    await c.execute(ENTRIES, lo, hi)
                    await c.execute(GRANTS, lo, hi, agencies, budgets[0], budgets[1])
                done += hi - lo + 1
                say(f"  generated {done:,} of {n:,} transactions")
        finally:
            await c.close()

    await asyncio.gather(worker(), worker())


async def _restore_after_load(conn: asyncpg.Connection, n: int,
                              saved: list[asyncpg.Record]) -> None:
    """Re-create what _drop_for_load dropped (indexes, then UNIQUE, then FOREIGN KEY
    constraints, which validates every row), and move the posting id sequence past n."""
    await conn.execute("SET maintenance_work_mem = '512MB'")
    await conn.execute("SELECT setval('ledger_posting_id_seq', $1)", n)
    t = time.perf_counter()
    for kind in ("i", "UNIQUE", "FOREIGN"):
        for r in saved:
            if r["kind"] == "i" and kind == "i":
                await conn.execute(r["def"])
            elif r["kind"] == "c" and r["def"].startswith(kind):
                await conn.execute(f'ALTER TABLE {r["tbl"]} ADD CONSTRAINT "{r["name"]}" '
                                   f'{r["def"]}')
    say(f"re-created and validated the indexes and constraints in "
        f"{time.perf_counter() - t:.1f}s")
    await conn.execute("ALTER TABLE ledger_posting ENABLE TRIGGER ledger_posting_not_settled")


async def _finish_ledger(conn: asyncpg.Connection) -> None:
    """Budgets spent (and limited) to what was granted, VACUUM ANALYZE, and the counts."""
    await conn.execute(
        """UPDATE subsidy_budget b SET spent_minor = g.total, limit_minor = g.total
           FROM (SELECT bid, sum(granted_minor) AS total
                 FROM subsidy_grant, unnest(budgets) AS bid GROUP BY bid) g
           WHERE g.bid = b.id""")
    t = time.perf_counter()
    for table in TABLES:
        await conn.execute(f"VACUUM ANALYZE {table}")
    say(f"VACUUM ANALYZE in {time.perf_counter() - t:.1f}s")
    row = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM ledger_posting) AS p, (SELECT count(*) FROM "
        "ledger_entry) AS e, (SELECT count(*) FROM subsidy_grant) AS g, "
        "pg_size_pretty(pg_database_size(current_database())) AS size")
    say(f"ledger: {row['p']:,} postings, {row['e']:,} entries, {row['g']:,} subsidy "
        f"grants; database {row['size']}")


async def measure(transactions: int = 10_000_000, agencies: int = 1_000, pdf: str = "sample",
                  *, pdf_sample: int = 40, workers: int = STATEMENT_STREAMS, pdf_workers: int = 2,
                  keep: bool = False, admin_url: str = ADMIN,
                  report: list[str] | None = None) -> dict[str, float | int | str]:
    """One settlement benchmark in a scratch database: its figures (for `python -m bench`).

    Progress goes to stderr. `report` (if given) receives the run's text report.
    """
    if pdf not in ("sample", "all", "none"):
        raise ValueError(f"pdf: {pdf!r} is not one of sample, all, none")
    run = secrets.token_hex(3)
    db = f"illhub_bench_{run}"
    url = with_database(admin_url, db)
    await create_database(url)
    data_dir = Path(tempfile.mkdtemp(prefix="illhub-bench-settlement-"))
    settings = Settings().updated(database__url=url, data_dir=str(data_dir),
                                  amqp__name_prefix=f"bench{run}.", hub_symbol="BENCH:CENTRE")
    say(f"scratch database {db}, files in {data_dir}")
    out: dict[str, float | int | str] = {
        "bench": "settlement", "transactions": transactions, "agencies": agencies}
    try:
        await migrate(url, report=lambda m: None)
        t = time.perf_counter()
        await generate(url, transactions, agencies)
        say(f"data generated in {time.perf_counter() - t:.1f}s (not part of the figures)")
        run_seconds = await _settle_and_render(url, settings, workers, pdf, pdf_sample,
                                               pdf_workers, out, report)
        peak = rss_mb()
        ok = run_seconds <= TARGET_SECONDS and peak <= TARGET_MB
        out.update({"peak_mb": round(peak), "target_seconds": TARGET_SECONDS,
                    "target_mb": TARGET_MB, "result": "pass" if ok else "FAIL"})
        return out
    finally:
        if keep:
            say(f"kept database {db} and {data_dir}")
        else:
            await drop_database(url)
            shutil.rmtree(data_dir, ignore_errors=True)
            say(f"dropped {db}")


class _Timed(NamedTuple):
    """The measured run: its result, seconds, and this process's peak RSS before and after."""
    result: SettlementResult
    seconds: float
    rss_before: float
    rss_after: float


async def _settle_and_render(url: str, settings: Settings, workers: int, pdf: str,
                             pdf_sample: int, pdf_workers: int,
                             out: dict[str, float | int | str],
                             report: list[str] | None) -> float:
    """The timed run, the PDFs and the re-run, on one pool; returns the run's seconds."""
    pids: list[int] = []

    async def remember(conn: asyncpg.Connection) -> None:
        pids.append(conn.get_server_pid())

    # Every connection opened up front, so that their backends' CPU can be summed.
    pool = await asyncpg.create_pool(url, min_size=workers + 4, max_size=workers + 4,
                                     init=remember)
    try:
        now = PERIOD.ends_at(settings.timezone) + datetime.timedelta(minutes=15)
        timed = await _timed_settle(pool, settings, now, workers, pids, out)
        directory = statements_dir(settings, PERIOD)
        _record_run(timed, directory, out)
        if pdf != "none":
            await _render_pdfs(_metas(timed.result, settings), directory, pdf, pdf_sample,
                               pdf_workers, out)
        await _rerun(pool, settings, now, workers, timed.result, out)
        if report is not None:
            report.append(render_text(timed.result))
    finally:
        await pool.close()
    return timed.seconds


async def _timed_settle(pool: asyncpg.Pool, settings: Settings, now: datetime.datetime,
                        workers: int, pids: list[int],
                        out: dict[str, float | int | str]) -> _Timed:
    """The measured settlement run (netting and CSV statements) and the CPU it used."""
    rss_before = rss_mb()
    load = os.getloadavg()[0]
    say(f"settling {PERIOD}: netting + CSV statements for every agency (load "
        f"average {load:.1f}) ...")
    pg_before, py_before = backend_cpu(pids), own_cpu()
    t = time.perf_counter()
    result = await settle(pool, settings, PERIOD, now=now, pdf=False, workers=workers,
                          progress=lambda m: say("  " + m))
    run_seconds = time.perf_counter() - t
    pg_after, py_after = backend_cpu(pids), own_cpu()
    out.update({"load_before": round(load, 2),
                "cpu_seconds_python": round(py_after - py_before, 1)})
    if pg_before is not None and pg_after is not None:
        out["cpu_seconds_postgres"] = round(pg_after - pg_before, 1)
    rss_run = rss_mb()
    if result is None or not result.created:
        got = "None" if result is None else f"run {result.run_id}, made by an earlier call"
        raise SettlementBenchError(
            f"settling {PERIOD} in a fresh scratch database made no new run (got {got})")
    return _Timed(result, run_seconds, rss_before, rss_run)


def _record_run(timed: _Timed, directory: Path, out: dict[str, float | int | str]) -> None:
    """Say what the run did, and put its figures and phase seconds into `out`."""
    result = timed.result
    csv_bytes = sum(f.stat().st_size for f in directory.glob("statement-*.csv"))
    lines = int(result.invariants["everyEntryInOneStatement"]["linesWritten"])
    say(f"RUN DONE in {timed.seconds:.1f}s: {result.postings:,} postings, "
        f"{result.entries:,} entries, {len(result.statements):,} agencies, "
        f"{csv_bytes / 2**20:,.0f} MB of CSV; peak RSS {timed.rss_after:.0f} MB "
        f"(before the run {timed.rss_before:.0f} MB)")
    say(f"  phases: {result.timings}")
    say(f"  invariants: {'all hold' if result.invariants.get('ok') else 'VIOLATED'}")
    out.update({"seconds": round(timed.seconds, 2), "postings": result.postings,
                "entries": result.entries, "statements": len(result.statements),
                "statement_lines": lines, "statement_bytes": csv_bytes,
                "invariants": "hold" if result.invariants.get("ok") else "VIOLATED"})
    for phase, seconds in result.timings.items():
        out[f"seconds_{phase}"] = seconds


def _metas(result: SettlementResult, settings: Settings) -> list[StatementMeta]:
    """What the PDF renderer needs of each agency's statement."""
    return [StatementMeta(symbol=s.symbol, name=s.name, period=PERIOD.name,
                          run_id=result.run_id or 0, date_from=str(result.date_from),
                          cutoff=str(result.cutoff), generated_at=result.generated_at or "",
                          centre=settings.hub_symbol, totals=s.totals)
            for s in result.statements]


async def _render_pdfs(metas: list[StatementMeta], directory: Path, pdf: str, pdf_sample: int,
                       pdf_workers: int, out: dict[str, float | int | str]) -> None:
    """The PDF statements, timed apart from the run: all, or a sample (then extrapolated)."""
    if not metas:
        return
    chosen = metas if pdf == "all" else metas[:: max(1, len(metas) // pdf_sample)]
    chosen_lines = sum(m.lines for m in chosen)
    say(f"PDF statements for {len(chosen):,} agencies ({chosen_lines:,} lines) with "
        f"{pdf_workers} worker processes ...")
    t = time.perf_counter()
    await render_pdfs(chosen, directory, pdf_workers=pdf_workers,
                      progress=lambda m: say("  " + m))
    pdf_seconds = time.perf_counter() - t
    all_lines = sum(m.lines for m in metas)
    estimate = all_lines / max(1, chosen_lines) * pdf_seconds
    say(f"PDF DONE in {pdf_seconds:.1f}s: {chosen_lines / pdf_seconds:,.0f} "
        f"lines/s; all {len(metas):,} agencies ({all_lines:,} lines) would take "
        f"{estimate:,.0f}s; peak RSS of one worker "
        f"{rss_mb(resource.RUSAGE_CHILDREN):.0f} MB")
    out.update({"pdf": pdf, "pdf_agencies": len(chosen),
                "pdf_seconds": round(pdf_seconds, 2),
                "pdf_all_seconds_estimate": round(estimate, 1),
                "peak_mb_pdf_worker": round(rss_mb(resource.RUSAGE_CHILDREN))})


async def _rerun(pool: asyncpg.Pool, settings: Settings, now: datetime.datetime, workers: int,
                 result: SettlementResult, out: dict[str, float | int | str]) -> None:
    """Settle the closed period again: figures recomputed and compared, files checked."""
    t = time.perf_counter()
    again = await settle(pool, settings, PERIOD, now=now, pdf=False, workers=workers)
    if again is None or again.created or again.run_id != result.run_id:
        got = ("None" if again is None else
               f"run {again.run_id}{', newly made' if again.created else ''}")
        raise SettlementBenchError(
            f"re-running the closed period {PERIOD} did not return its run {result.run_id} "
            f"(got {got})")
    rerun = time.perf_counter() - t
    say(f"re-run of the closed period (figures recomputed and compared, files checked "
        f"against their checksums) in {rerun:.1f}s")
    out["seconds_rerun"] = round(rerun, 2)


async def main(args: argparse.Namespace) -> int:
    report: list[str] = []
    m = await measure(args.transactions, args.agencies, args.pdf, pdf_sample=args.pdf_sample,
                      workers=args.workers, pdf_workers=args.pdf_workers, keep=args.keep,
                      admin_url=args.admin_url, report=report)
    print()
    print("=" * 72)
    print(f"settlement benchmark: {args.transactions:,} transactions, {args.agencies:,} "
          "agencies, this machine")
    print(f"  netting + CSV statements (one run):  {m['seconds']:8.1f} s   "
          f"(target <= {TARGET_SECONDS} s)")
    for key, value in m.items():
        if key.startswith("seconds_") and key != "seconds_rerun":
            phase = key[len("seconds_"):]
            print(f"      {phase:<10} {value:8.1f} s   {PHASES.get(phase, '')}")
    print(f"  CPU used by the run: this process {m['cpu_seconds_python']} s, PostgreSQL "
          f"{m.get('cpu_seconds_postgres', '?')} s (load average before: {m['load_before']})")
    print(f"  statement lines / bytes:             {m['statement_lines']:,} / "
          f"{int(m['statement_bytes']) / 2**20:,.0f} MB")
    if "pdf_seconds" in m:
        print(f"  PDF statements ({m['pdf']}, {m['pdf_agencies']} agencies): "
              f"{m['pdf_seconds']:8.1f} s  (all: ~{m['pdf_all_seconds_estimate']} s)")
    print(f"  re-run of the closed period:         {m['seconds_rerun']:8.1f} s")
    print(f"  peak RSS, this process:              {m['peak_mb']:8} MB  "
          f"(target <= {TARGET_MB} MB)")
    if "peak_mb_pdf_worker" in m:
        print(f"  peak RSS, largest PDF worker:        {m['peak_mb_pdf_worker']:8} MB")
    print(f"  result: {m['result']}")
    print("=" * 72)
    print()
    text = report[0].splitlines() if report else []
    print("\n".join([*text[:8], "  ...", *text[-24:]]))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=10_000_000)
    parser.add_argument("--agencies", type=int, default=1000)
    parser.add_argument("--pdf", choices=("sample", "all", "none"), default="sample")
    parser.add_argument("--pdf-sample", type=int, default=40,
                        help="how many agencies' PDFs to render with --pdf sample")
    parser.add_argument("--workers", type=int, default=STATEMENT_STREAMS,
                        help="statement streams from PostgreSQL at once")
    parser.add_argument("--pdf-workers", type=int, default=2,
                        help="PDF worker processes")
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    parser.add_argument("--admin-url", default=ADMIN)
    # On uvloop where installed, like the hub process that runs scheduled settlements
    # (and `python -m bench`): the statement stream's reads cost less CPU there.
    sys.exit(loop.run(main(parser.parse_args())))
