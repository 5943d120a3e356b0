"""Settlement runs: close a period, net it, write the statements, deliver them (§4, §5).

`settle(pool, settings, "2026-10")` settles a period whose end has passed:

1. Under one advisory lock for all settlement (so concurrent `settle` calls, also
   from several hub processes, produce one run; the others wait, then find the
   period closed and return the same result), the period goes `closing`.
2. A run row is written that takes every ledger posting dated on or before the
   period's last day that no earlier run settled, as a range: the highest posting
   id committed now and the cutoff, minus the previous run's range
   (schemas/migrations/0010_settlement_speed.sql), and committed: from here on the
   run's figures are fixed.
3. Netting (settlement/netting.py), in SQL, and at the same time the statement
   lines stream from PostgreSQL into one CSV file per agency
   (settlement/statements.py); the invariants are checked and the run aborts (its
   rows removed, the period open again with the reason) if one fails.
4. Statements: the totals under each agency's lines, the PDFs, the centre summary,
   all in a scratch directory.
5. One transaction stores the run record (totals, invariants, files and checksums),
   queues the `ill.finance` messages (`settlement.<period>`, `statement.<symbol>`)
   in the AMQP outbox and the e-mails in the mail outbox, and closes the period;
   then the files move into `<data_dir>/statements/<period>/`.

A closed period never changes. Settling it again recomputes its figures from its
postings and compares them with the stored record, checks its files against the
stored checksums and rewrites any that are missing or damaged (byte for byte: the
files carry the run's generation time, not the time of the re-run), and returns
the stored result without queueing anything. A run that died half way leaves the
period `closing` with an unclosed run; the next attempt removes it and starts again.

`settle(..., dry_run=True)` (and `--period current --dry-run`) previews the open
period: the same netting over the postings a run would take now, in a read-only
transaction, with nothing written.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from infra.locks import Lock, try_session_lock, unlock
from infra.outbox import Outgoing, enqueue
from infra.topology import FINANCE
from schemas.money import Money
from schemas.settings import Settings
from schemas.symbols import split_symbol
from settlement import periods
from settlement.common import CENTRE
from settlement.netting import (
    NO_RUN_CUTOFF,
    NO_RUN_MAX,
    InvariantViolation,
    Netting,
    Scope,
    compute,
    invariants,
    require,
)
from settlement.periods import CLOSED, Period
from settlement.statements import (
    NAME_MAX,
    FileInfo,
    StatementLines,
    StatementMeta,
    SummaryData,
    SummaryRow,
    Totals,
    amount,
    attachment_name,
    clean_text,
    file_info,
    render_statement_pdf,
    render_summary_pdf,
    statement_name,
    stream_statement_lines,
    summary_name,
    write_summary_csv,
)

log = logging.getLogger(__name__)

# One advisory lock (Lock.SETTLEMENT) for every settlement run: runs of different
# periods would compete for the same unsettled postings, so they never overlap either.
# When the lead wires a setting: the hub's scheduler runs scheduled_settlement on
# this cron (consortium time zone); any time after the period's end will do.
DEFAULT_CRON = "15 0 1 * *"
MAX_ATTACHMENT_BYTES = 10 * 2**20
PDF_INLINE_LINES = 20_000
# The statement lines are streamed from PostgreSQL in this many shares of the period's
# dates at once, each on its own pooled connection, while the netting runs next to
# them: PostgreSQL's sorting and formatting is most of the work (bench/settlement.py).
STATEMENT_STREAMS = 2
LOCK_POLL_SECONDS = 0.2


class SettlementError(RuntimeError):
    """A run that cannot be made (not ended, out of order, no longer reproducible)."""


@dataclass(frozen=True)
class AgencyStatement:
    symbol: str
    name: str
    finance_email: str | None
    totals: tuple[Totals, ...]
    files: tuple[FileInfo, ...] = ()
    mail_id: int | None = None


@dataclass
class SettlementResult:
    period: str
    date_from: datetime.date
    cutoff: datetime.date
    state: str                      # closed, or the period's state in a preview
    run_id: int | None
    created: bool                   # this call settled the period
    reproduced: bool                # a closed period, recomputed and compared
    dry_run: bool
    generated_at: str | None
    postings: int
    late_postings: int
    entries: int
    statements: list[AgencyStatement]
    totals: dict[str, dict[str, int]]
    by_rule: list[tuple[str, str, int, int]]
    by_budget: list[tuple[str, str, str, str, int]]
    invariants: dict[str, Any]
    files: list[FileInfo] = field(default_factory=list)
    directory: Path | None = None
    restored: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def statement(self, symbol: str) -> AgencyStatement:
        return next(s for s in self.statements if s.symbol == symbol)


def statements_dir(settings: Settings, period: Period | str) -> Path:
    return Path(settings.data_dir) / "statements" / str(period)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


# --------------------------------------------------------------------------
# entry points
# --------------------------------------------------------------------------

async def settle(pool: asyncpg.Pool, settings: Settings, period: str | Period, *,
                 now: datetime.datetime | None = None, dry_run: bool = False,
                 centre_email: str | None = None, pdf: bool = True, wait: bool = True,
                 verify: bool = False, workers: int = STATEMENT_STREAMS,
                 pdf_workers: int | None = None,
                 max_attachment_bytes: int = MAX_ATTACHMENT_BYTES,
                 progress: Callable[[str], None] | None = None) -> SettlementResult | None:
    """Settle `period` ('YYYY-MM' or 'current'), or preview it with dry_run.

    Returns None only with wait=False when another run holds the settlement lock.
    Raises ValueError for a malformed period, SettlementError when it cannot be
    settled, InvariantViolation when the figures do not add up (nothing is closed).
    """
    now = now or _now()
    tz = settings.timezone
    p = period if isinstance(period, Period) else periods.resolve(period, now, tz)
    say = progress or (lambda _m: None)
    if dry_run:
        return await preview(pool, settings, p, progress=say)
    if pool.get_max_size() < 2:
        raise SettlementError("settling needs a pool of at least 2 connections (one holds "
                              "the settlement lock)")
    if not p.has_ended(now, tz):
        raise SettlementError(
            f"period {p} has not ended yet (it ends {p.ends_at(tz):%Y-%m-%d %H:%M} {tz}); "
            "use --dry-run to preview it")
    while True:
        async with pool.acquire() as lock:
            if await try_session_lock(lock, Lock.SETTLEMENT):
                return await _locked(pool, lock, settings, p, centre_email=centre_email,
                                     pdf=pdf, verify=verify, workers=workers,
                                     pdf_workers=pdf_workers,
                                     max_attachment_bytes=max_attachment_bytes, progress=say)
        if not wait:
            return None
        # Waiting without holding a pooled connection: a run in progress needs several.
        await asyncio.sleep(LOCK_POLL_SECONDS)


async def _locked(pool: asyncpg.Pool, lock: asyncpg.Connection, settings: Settings,
                  p: Period, *, centre_email: str | None, pdf: bool, verify: bool,
                  workers: int, pdf_workers: int | None, max_attachment_bytes: int,
                  progress: Callable[[str], None]) -> SettlementResult:
    say = progress
    try:
        st = await periods.state(lock, p)
        if st.state == CLOSED:
            return await reproduce(pool, settings, p, verify=verify, workers=workers,
                                   pdf_workers=pdf_workers, progress=say)
        later = await periods.later_closed(lock, p)
        if later:
            raise SettlementError(
                f"period {p} comes before the closed period {later}: it is not settled "
                "any more; its late postings land in the next open period")
        return await _run(pool, lock, settings, p, centre_email=centre_email, pdf=pdf,
                          workers=workers, pdf_workers=pdf_workers,
                          max_attachment_bytes=max_attachment_bytes, progress=say)
    finally:
        await unlock(lock, Lock.SETTLEMENT)


async def scheduled_settlement(pool: asyncpg.Pool, settings: Settings,
                               now: datetime.datetime | None = None, *,
                               centre_email: str | None = None) -> str | None:
    """For the hub's scheduler: settle the previous period once its end has passed.

    Returns the period settled by this call, or None (already closed, or another hub
    process is settling right now: the lock is tried, not waited for).
    """
    now = now or _now()
    p = Period.containing(now, settings.timezone).previous()
    async with pool.acquire() as conn:
        if (await periods.state(conn, p)).state == CLOSED:
            return None
        if await periods.later_closed(conn, p):
            return None
    result = await settle(pool, settings, p, now=now, centre_email=centre_email, wait=False)
    if result is None or not result.created:
        return None
    log.info("settlement %s closed: run %s, %d agencies, %d postings", p, result.run_id,
             len(result.statements), result.postings)
    return p.name


# --------------------------------------------------------------------------
# preview
# --------------------------------------------------------------------------

async def preview(pool: asyncpg.Pool, settings: Settings, p: Period, *,
                  progress: Callable[[str], None]) -> SettlementResult:
    """What a run for `p` would settle now (or, for a closed period, its stored run)."""
    async with pool.acquire() as conn:
        st = await periods.state(conn, p)
        if st.state == CLOSED:
            return await _stored(conn, settings, p, reproduced=False)
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            t = time.monotonic()
            netting = await compute(conn, await open_scope(conn, p))
            record, _problems = invariants(netting)
            names = await _agencies(conn, netting.symbols)
    progress(f"preview of {p}: {netting.postings:,} postings netted in "
             f"{time.monotonic() - t:.1f}s")
    return SettlementResult(
        period=p.name, date_from=p.first_day, cutoff=p.last_day, state=st.state, run_id=None,
        created=False, reproduced=False, dry_run=True, generated_at=None,
        postings=netting.postings, late_postings=netting.late_postings,
        entries=netting.entries,
        statements=[AgencyStatement(s, names[s][0], names[s][1], _totals(netting, s))
                    for s in netting.symbols],
        totals=netting.totals(), by_rule=_rules(netting), by_budget=_budgets(netting),
        invariants=record)


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

async def _previous(conn: asyncpg.Connection, cutoff: datetime.date | None
                    ) -> tuple[int, datetime.date]:
    """(posting_max, cutoff) of the latest closed run, or of the latest one before
    `cutoff`: the region a run's own region is taken minus."""
    row = await conn.fetchrow(
        """SELECT posting_max, cutoff FROM settlement_run
           WHERE closed_at IS NOT NULL AND ($1::date IS NULL OR cutoff < $1)
           ORDER BY cutoff DESC LIMIT 1""", cutoff)
    return (row["posting_max"], row["cutoff"]) if row else (NO_RUN_MAX, NO_RUN_CUTOFF)


async def open_scope(conn: asyncpg.Connection, p: Period) -> Scope:
    """The postings a run for `p` started now would take (for previews)."""
    prev_max, prev_cutoff = await _previous(conn, None)
    return Scope(p.first_day, p.last_day, prev_max=prev_max, prev_cutoff=prev_cutoff)


async def _take_postings(conn: asyncpg.Connection, p: Period, generated: datetime.datetime
                         ) -> tuple[int, Scope]:
    """The run's row, with the range of postings it takes (0010_settlement_speed.sql)."""
    async with conn.transaction():
        # SHARE waits for every transaction that is inserting postings right now and
        # holds off new ones until this commits (milliseconds): all ids up to the
        # maximum read here are committed, and every later posting's id is larger.
        await conn.execute("LOCK TABLE ledger_posting IN SHARE MODE")
        posting_max = await conn.fetchval("SELECT coalesce(max(id), 0) FROM ledger_posting")
        prev_max, prev_cutoff = await _previous(conn, p.last_day)
        run_id = await conn.fetchval(
            """INSERT INTO settlement_run (period, date_from, cutoff, started_at,
                                           generated_at, posting_max)
               VALUES ($1, $2, $3, now(), $4, $5) RETURNING id""",
            p.name, p.first_day, p.last_day, generated, posting_max)
    return run_id, Scope(p.first_day, p.last_day, run_id, posting_max, prev_max, prev_cutoff)


async def _run(pool: asyncpg.Pool, lock: asyncpg.Connection, settings: Settings, p: Period, *,
               centre_email: str | None, pdf: bool, workers: int, pdf_workers: int | None,
               max_attachment_bytes: int, progress: Callable[[str], None]) -> SettlementResult:
    tz = settings.timezone
    timings: dict[str, float] = {}
    clock = time.monotonic()

    def lap(name: str, since: float | None = None) -> float:
        nonlocal clock
        now = time.monotonic()
        timings[name] = round(now - (clock if since is None else since), 3)
        clock = now
        return timings[name]

    await _discard_unclosed(lock)
    await periods.mark_closing(lock, p)
    generated = _now().astimezone(ZoneInfo(tz)).replace(microsecond=0)
    generated_at = generated.isoformat()
    run_id: int | None = None
    closed = False
    scratch: Path | None = None
    lines_task: asyncio.Task[StatementLines] | None = None
    try:
        run_id, scope = await _take_postings(lock, p, generated)
        progress(f"run {run_id} for {p}: postings up to id {scope.posting_max:,} dated up to "
                 f"{p.last_day}, beyond those of the run before, taken in {lap('items'):.1f}s")
        names = await _agencies(lock, None)
        directory = statements_dir(settings, p)
        scratch = directory / f".run-{run_id}.tmp"
        await asyncio.to_thread(_fresh_dir, scratch)

        # The statement lines stream while the netting runs: neither needs the other
        # until the totals go under the lines. The lock's connection is taken from the
        # pool; the streams take theirs first, the netting's queries share the rest.
        started = time.monotonic()
        streamed: dict[str, float] = {}

        async def lines() -> StatementLines:
            out = await stream_statement_lines(
                pool.acquire, scope, tz, {s: n for s, (n, _e) in names.items()}, scratch,
                p.name, streams=max(1, min(workers, pool.get_max_size() - 1)),
                progress=progress)
            streamed["csv"] = time.monotonic() - started
            return out

        lines_task = asyncio.create_task(lines())
        netting = await compute(pool, scope, connections=pool.get_max_size() - 1)
        record, problems = invariants(netting)
        progress(f"netting: {len(netting.symbols):,} agencies, {netting.entries:,} entries in "
                 f"{lap('netting', started):.1f}s; invariants "
                 f"{'hold' if not problems else 'VIOLATED'}")
        require(record, problems)

        async with lock.transaction():
            await _store_figures(lock, run_id, netting, names)
        metas = _metas(netting, names, p, run_id, generated_at, settings.hub_symbol)
        streamed_lines = await lines_task
        lines_task = None
        csvs = await asyncio.to_thread(streamed_lines.finish, metas)
        written = streamed_lines.lines
        timings["csv"] = round(streamed.get("csv", 0.0), 3)
        lap("statements", started)
        progress(f"CSV statements: {len(csvs):,} files, {written:,} lines; lines streamed in "
                 f"{timings['csv']:.1f}s, files complete after {timings['statements']:.1f}s")
        files = await _write_files(p, run_id, metas, netting, record, scratch, csvs, written,
                                   pdf=pdf, pdf_workers=pdf_workers, timings=timings,
                                   progress=progress, names=names, generated_at=generated_at,
                                   centre=settings.hub_symbol)
        clock = time.monotonic()
        record["everyEntryInOneStatement"]["linesWritten"] = written
        if written != record["everyEntryInOneStatement"]["statementLines"]:
            record["everyEntryInOneStatement"]["ok"] = record["ok"] = False
            raise InvariantViolation([f"{written} statement lines written, "
                                      f"{record['everyEntryInOneStatement']['statementLines']} "
                                      "expected"], record)

        summary_files = files.pop(CENTRE)
        statements = [AgencyStatement(m.symbol, m.name, names[m.symbol][1], m.totals,
                                      tuple(files[m.symbol])) for m in metas]
        body = _settlement_message(p, run_id, generated_at, netting, record, summary_files,
                                   statements)
        async with lock.transaction():
            statements = await _close(lock, p, run_id, netting, record, body, summary_files,
                                      statements, scratch, centre=settings.hub_symbol,
                                      centre_email=centre_email,
                                      max_attachment_bytes=max_attachment_bytes)
        closed = True
        lap("close")
        await asyncio.to_thread(_publish_files, scratch, directory)
        scratch = None
        progress(f"period {p} closed: run {run_id}, files in {directory}")
    except BaseException as exc:
        if lines_task is not None:
            lines_task.cancel()
            with contextlib.suppress(BaseException):
                (await lines_task).discard()
        if not closed:
            with contextlib.suppress(Exception):
                await _abandon(lock, p, run_id, f"{type(exc).__name__}: {exc}")
        if scratch is not None and not closed:
            await asyncio.to_thread(shutil.rmtree, scratch, True)
        raise
    return SettlementResult(
        period=p.name, date_from=p.first_day, cutoff=p.last_day, state=CLOSED, run_id=run_id,
        created=True, reproduced=False, dry_run=False, generated_at=generated_at,
        postings=netting.postings, late_postings=netting.late_postings,
        entries=netting.entries, statements=statements, totals=netting.totals(),
        by_rule=_rules(netting), by_budget=_budgets(netting), invariants=record,
        files=summary_files, directory=directory, timings=timings, summary=body)


def _fresh_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)


def _publish_files(scratch: Path, directory: Path) -> None:
    for f in scratch.iterdir():
        os.replace(f, directory / f.name)
    scratch.rmdir()


async def _discard_unclosed(conn: asyncpg.Connection) -> None:
    """Remove what runs that died half way left behind (their periods stay 'closing'
    until settled again). Only called under the settlement lock, so no run is alive."""
    for r in await conn.fetch(
            "SELECT id, period FROM settlement_run WHERE closed_at IS NULL ORDER BY id"):
        log.warning("settlement %s: removing run %s left unfinished by an earlier attempt",
                    r["period"], r["id"])
        await _delete_run(conn, r["id"])


async def _delete_run(conn: asyncpg.Connection, run_id: int) -> None:
    async with conn.transaction():
        for tbl in ("settlement_statement", "settlement_net"):
            await conn.execute(f"DELETE FROM {tbl} WHERE run_id = $1", run_id)
        await conn.execute("DELETE FROM settlement_run WHERE id = $1 AND closed_at IS NULL",
                           run_id)


async def _abandon(conn: asyncpg.Connection, p: Period, run_id: int | None, error: str) -> None:
    if run_id is not None:
        await _delete_run(conn, run_id)
    await periods.mark_failed(conn, p, error)
    log.error("settlement %s failed, nothing closed: %s", p, error)


async def _agencies(conn: asyncpg.Connection, symbols: list[str] | None
                    ) -> dict[str, tuple[str, str | None]]:
    """Name and finance e-mail by symbol, as statements print them: of `symbols`, or of
    every agency (a run streams its lines before it knows which agencies it has)."""
    rows = await conn.fetch("SELECT symbol, name, finance_email FROM agency "
                            "WHERE $1::text[] IS NULL OR symbol = ANY($1::text[])", symbols)
    found = {r["symbol"]: (clean_text(r["name"], NAME_MAX) or r["symbol"], r["finance_email"])
             for r in rows}
    if symbols is None:
        return found
    return {s: found.get(s, (s, None)) for s in symbols}


def _totals(netting: Netting, symbol: str) -> tuple[Totals, ...]:
    return tuple(Totals(a.currency, a.lines, a.as_supplier, a.as_requester, a.late, a.earned,
                        a.owed, a.subsidy, a.patron, a.net) for a in netting.of(symbol))


def _rules(netting: Netting) -> list[tuple[str, str, int, int]]:
    return [(r.rule, r.currency, r.granted, r.postings) for r in netting.by_rule]


def _budgets(netting: Netting) -> list[tuple[str, str, str, str, int]]:
    return [(b.name, b.requester, b.period, b.currency, b.granted) for b in netting.by_budget]


def _metas(netting: Netting, names: dict[str, tuple[str, str | None]], p: Period, run_id: int,
           generated_at: str, centre: str) -> list[StatementMeta]:
    return [StatementMeta(symbol=s, name=names[s][0], period=p.name, run_id=run_id,
                          date_from=p.first_day.isoformat(), cutoff=p.last_day.isoformat(),
                          generated_at=generated_at, centre=centre,
                          totals=_totals(netting, s)) for s in netting.symbols]


async def _store_figures(conn: asyncpg.Connection, run_id: int, netting: Netting,
                         names: dict[str, tuple[str, str | None]]) -> None:
    rows = [(run_id, a.symbol, a.currency, a.lines, a.as_supplier, a.as_requester, a.late,
             a.earned, a.owed, a.subsidy, a.patron, a.net, a.entries) for a in netting.agencies]
    rows += [(run_id, CENTRE, c, 0, 0, 0, 0, 0, 0, 0, 0, v, netting.centre_entries.get(c, 0))
             for c, v in sorted(netting.centre.items())]
    await conn.copy_records_to_table(
        "settlement_net", records=rows,
        columns=["run_id", "owner", "currency", "lines", "as_supplier", "as_requester", "late",
                 "earned_minor", "owed_minor", "subsidy_minor", "patron_minor", "net_minor",
                 "entries"])
    await conn.copy_records_to_table(
        "settlement_statement",
        records=[(run_id, s, names[s][0], names[s][1], netting.lines_of(s))
                 for s in netting.symbols],
        columns=["run_id", "agency", "name", "finance_email", "lines"])


def _summary_data(p: Period, run_id: int, generated_at: str, centre: str, netting: Netting,
                  names: dict[str, tuple[str, str | None]], record: dict[str, Any]
                  ) -> SummaryData:
    return SummaryData(
        period=p.name, run_id=run_id, date_from=p.first_day.isoformat(),
        cutoff=p.last_day.isoformat(), generated_at=generated_at, centre=centre,
        rows=tuple(SummaryRow(a.symbol, names[a.symbol][0],
                              Totals(a.currency, a.lines, a.as_supplier, a.as_requester,
                                     a.late, a.earned, a.owed, a.subsidy, a.patron, a.net))
                   for a in netting.agencies),
        totals=netting.totals(), by_rule=tuple(_rules(netting)),
        by_budget=tuple(_budgets(netting)), invariants=record, postings=netting.postings,
        late_postings=netting.late_postings, entries=netting.entries)


async def _write_files(p: Period, run_id: int, metas: list[StatementMeta], netting: Netting,
                       record: dict[str, Any], scratch: Path, csvs: dict[str, FileInfo],
                       written: int, *, pdf: bool, pdf_workers: int | None,
                       timings: dict[str, float], progress: Callable[[str], None],
                       names: dict[str, tuple[str, str | None]], generated_at: str,
                       centre: str) -> dict[str, list[FileInfo]]:
    """The PDFs and the centre summary next to the CSV statements in `scratch`: every
    file of the run by agency (CENTRE: the summary)."""
    files: dict[str, list[FileInfo]] = {s: [f] for s, f in csvs.items()}
    if pdf and metas:
        t = time.monotonic()
        pdfs = await render_pdfs(metas, scratch, pdf_workers=pdf_workers, progress=progress)
        for s, f in pdfs.items():
            files[s].append(f)
        timings["pdf"] = round(time.monotonic() - t, 3)
        progress(f"PDF statements: {len(pdfs):,} files in {timings['pdf']:.1f}s")
    t = time.monotonic()
    record["everyEntryInOneStatement"]["linesWritten"] = written
    data = _summary_data(p, run_id, generated_at, centre, netting, names, record)
    summary = [await asyncio.to_thread(write_summary_csv, scratch / summary_name(p.name, "csv"),
                                       data)]
    if pdf:
        summary.append(await asyncio.to_thread(
            render_summary_pdf, str(scratch / summary_name(p.name, "pdf")), data))
    files[CENTRE] = summary
    timings["summary"] = round(time.monotonic() - t, 3)
    return files


async def render_pdfs(metas: list[StatementMeta], directory: Path, *,
                      pdf_workers: int | None = None,
                      progress: Callable[[str], None] | None = None) -> dict[str, FileInfo]:
    """Render every agency's PDF from its CSV in `directory`; worker processes when large."""
    total = sum(m.lines for m in metas)
    if pdf_workers is None:
        pdf_workers = 0 if total < PDF_INLINE_LINES else max(1, os.cpu_count() or 1)
    jobs = [(str(directory / statement_name(m.symbol, m.period, "csv")),
             str(directory / statement_name(m.symbol, m.period, "pdf")), m) for m in metas]
    out: dict[str, FileInfo] = {}
    if pdf_workers == 0:
        for csv_path, pdf_path, meta in jobs:
            out[meta.symbol] = await asyncio.to_thread(render_statement_pdf, csv_path, pdf_path,
                                                       meta)
        return out
    loop = asyncio.get_running_loop()
    executor: Executor = ProcessPoolExecutor(max_workers=pdf_workers,
                                             mp_context=get_context("spawn"))
    try:
        futures = {meta.symbol: loop.run_in_executor(executor, render_statement_pdf, c, pth,
                                                     meta) for c, pth, meta in jobs}
        done = 0
        for symbol, fut in futures.items():
            out[symbol] = await fut
            done += 1
            if progress and done % 100 == 0:
                progress(f"PDF statements: {done:,} of {len(jobs):,}")
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
    return out


# --------------------------------------------------------------------------
# closing: run record, messages, mail
# --------------------------------------------------------------------------

def _money_json(minor: int, currency: str) -> str:
    return Money(minor, currency).amount_text()


def _totals_json(totals: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [{"currencyCode": c, "agencies": t["agencies"],
             "earned": _money_json(t["earned"], c), "owed": _money_json(t["owed"], c),
             "subsidy": _money_json(t["subsidy"], c),
             "patronShare": _money_json(t["patron"], c),
             "agenciesReceive": _money_json(t["toReceive"], c),
             "agenciesPay": _money_json(t["toPay"], c),
             "netSum": _money_json(t["net"], c),
             "centrePosition": _money_json(t["centre"], c),
             "subsidyOutlay": _money_json(-t["centre"], c)} for c, t in totals.items()]


def _subsidy_json(netting: Netting) -> dict[str, Any]:
    return {"byRule": [{"rule": r.rule, "currencyCode": r.currency, "postings": r.postings,
                        "amount": _money_json(r.granted, r.currency)} for r in netting.by_rule],
            "byBudget": [{"budget": b.name, "requester": b.requester or None,
                          "budgetPeriod": b.period, "currencyCode": b.currency,
                          "amount": _money_json(b.granted, b.currency)}
                         for b in netting.by_budget]}


def _agency_id(symbol: str) -> dict[str, str]:
    try:
        scheme, value = split_symbol(symbol)
    except ValueError:
        scheme, _, value = symbol.partition(":")
    return {"agencyIdType": scheme, "agencyIdValue": value}


def _statement_message(p: Period, run_id: int, generated_at: str, s: AgencyStatement
                       ) -> dict[str, Any]:
    return {
        "period": p.name, "runId": run_id, "agency": s.symbol, "agencyId": _agency_id(s.symbol),
        "name": s.name, "dateFrom": p.first_day.isoformat(), "cutoff": p.last_day.isoformat(),
        "generatedAt": generated_at,
        "amounts": [{"currencyCode": t.currency, "net": _money_json(t.net, t.currency),
                     "direction": t.direction, "earned": _money_json(t.earned, t.currency),
                     "owed": _money_json(t.owed, t.currency),
                     "subsidy": _money_json(t.subsidy, t.currency),
                     "patronShare": _money_json(t.patron, t.currency)} for t in s.totals],
        "counts": {"lines": sum(t.lines for t in s.totals),
                   "asSupplier": sum(t.as_supplier for t in s.totals),
                   "asRequester": sum(t.as_requester for t in s.totals),
                   "late": sum(t.late for t in s.totals)},
        "files": [f.to_json() for f in s.files],
    }


def _settlement_message(p: Period, run_id: int, generated_at: str, netting: Netting,
                        record: dict[str, Any], summary: list[FileInfo],
                        statements: list[AgencyStatement]) -> dict[str, Any]:
    return {
        "period": p.name, "runId": run_id, "dateFrom": p.first_day.isoformat(),
        "cutoff": p.last_day.isoformat(), "generatedAt": generated_at,
        "agencyCount": len(statements), "postings": netting.postings,
        "latePostings": netting.late_postings, "entries": netting.entries,
        "totals": _totals_json(netting.totals()), "subsidy": _subsidy_json(netting),
        "invariants": record, "files": [f.to_json() for f in summary],
        "statements": [{"agency": s.symbol, "files": [f.to_json() for f in s.files]}
                       for s in statements],
    }


def _mail_text(p: Period, s: AgencyStatement, files: list[FileInfo], attached: bool,
               centre: str) -> str:
    zh, en = [], []
    for t in s.totals:
        c = t.currency
        zh.append({"receive": f"本期应收中心净额：{amount(t.net, c)} {c}",
                   "pay": f"本期应付中心净额：{amount(-t.net, c)} {c}",
                   "none": f"本期无需结算（{c}）"}[t.direction])
        zh.append(f"  作为供应馆应收 {amount(t.earned, c)}；作为申请馆应付 {amount(t.owed, c)}；"
                  f"中心补贴 {amount(t.subsidy, c)}；读者自付 {amount(t.patron, c)}"
                  f"（{t.lines} 行）")
        en.append({"receive": f"Net amount to receive from the centre: {amount(t.net, c)} {c}",
                   "pay": f"Net amount to pay to the centre: {amount(-t.net, c)} {c}",
                   "none": f"Nothing to settle ({c})"}[t.direction])
        en.append(f"  earned as supplier {amount(t.earned, c)}; owed as requester "
                  f"{amount(t.owed, c)}; subsidy paid by the centre {amount(t.subsidy, c)}; "
                  f"patron share {amount(t.patron, c)} ({t.lines} lines)")
    listing = "\n".join(f"  {attachment_name(f.name)}  SHA-256 {f.sha256}" for f in files)
    where_zh = ("明细见附件（CSV 可用 Excel 打开，PDF 可打印）：" if attached
                else "对账单文件较大，未随信附上，请向结算中心索取：")
    where_en = ("The itemised statement is attached (CSV opens in Excel; the PDF prints):"
                if attached else "The statement files are too large to attach; ask the "
                "settlement centre for them:")
    return (f"{s.name}（{s.symbol}）财务负责人：\n\n"
            f"馆际互借中心结算 {p}（{p.first_day} 至 {p.last_day}，"
            "含此前未结算的迟到入账）已完成。\n"
            + "\n".join(zh) + f"\n\n{where_zh}\n{listing}\n\n"
            + "-" * 64 + "\n\n"
            f"Dear finance officer of {s.name} ({s.symbol}),\n\n"
            f"the interlibrary loan settlement for {p} ({p.first_day} to {p.last_day}, "
            "including late postings not settled before) is closed.\n"
            + "\n".join(en) + f"\n\n{where_en}\n{listing}\n\n{centre}\n")


def _summary_mail_text(p: Period, body: dict[str, Any], files: list[FileInfo]) -> str:
    lines = [f"馆际互借中心结算汇总 {p} / ILL settlement summary {p}", "",
             f"{body['agencyCount']} 馆 agencies, {body['postings']} 笔记账 postings "
             f"({body['latePostings']} 迟到 late), {body['entries']} 分录 entries", ""]
    for t in body["totals"]:
        c = t["currencyCode"]
        lines += [f"{c}: 中心应付各馆 the centre pays {t['agenciesReceive']}; 各馆应付中心 the "
                  f"agencies pay {t['agenciesPay']}; 补贴支出 subsidy outlay {t['subsidyOutlay']}"]
    inv = body["invariants"]
    lines += ["", "不变式 invariants: " + ("全部成立 all hold" if inv.get("ok") else "VIOLATED"),
              ""] + [f"  {attachment_name(f.name)}  SHA-256 {f.sha256}" for f in files]
    return "\n".join(lines) + "\n"


async def _close(conn: asyncpg.Connection, p: Period, run_id: int, netting: Netting,
                 record: dict[str, Any], body: dict[str, Any], summary: list[FileInfo],
                 statements: list[AgencyStatement], scratch: Path, *, centre: str,
                 centre_email: str | None, max_attachment_bytes: int
                 ) -> list[AgencyStatement]:
    """The closing transaction: run record, outbox messages, mail, period closed."""
    generated_at = body["generatedAt"]
    await conn.execute(
        """UPDATE settlement_run SET closed_at = now(), postings = $2, entries = $3,
                  late_postings = $4, agencies = $5, totals = $6::jsonb, subsidy = $7::jsonb,
                  invariants = $8::jsonb, files = $9::jsonb, summary = $10::jsonb
           WHERE id = $1""",
        run_id, netting.postings, netting.entries, netting.late_postings, len(statements),
        json.dumps(body["totals"], ensure_ascii=False),
        json.dumps(body["subsidy"], ensure_ascii=False),
        json.dumps(record, ensure_ascii=False),
        json.dumps([f.to_json() for f in summary], ensure_ascii=False),
        json.dumps(body, ensure_ascii=False))
    messages = [Outgoing(exchange=FINANCE, routing_key=f"settlement.{p}", body=body,
                         message_type="settlement", correlation_id=p.name,
                         message_id=f"settlement:{p}:{run_id}",
                         headers={"period": p.name, "run-id": run_id})]
    messages += [Outgoing(exchange=FINANCE, routing_key=f"statement.{s.symbol}",
                          body=_statement_message(p, run_id, generated_at, s),
                          message_type="statement", correlation_id=p.name,
                          message_id=f"statement:{p}:{run_id}:{s.symbol}",
                          headers={"period": p.name, "run-id": run_id, "agency": s.symbol})
                 for s in statements]
    await enqueue(conn, messages)

    out: list[AgencyStatement] = []
    for s in statements:
        mail_id = None
        if s.finance_email:
            mail_id = await _mail(conn, s.finance_email,
                                  f"馆际互借结算对账单 ILL settlement statement {p} — {s.name}",
                                  list(s.files), scratch, max_attachment_bytes,
                                  lambda attached, s=s: _mail_text(p, s, list(s.files),
                                                                   attached, centre),
                                  kind="settlement_statement")
        out.append(AgencyStatement(s.symbol, s.name, s.finance_email, s.totals, s.files,
                                   mail_id))
    await conn.executemany(
        "UPDATE settlement_statement SET files = $3::jsonb, mail_id = $4 "
        "WHERE run_id = $1 AND agency = $2",
        [(run_id, s.symbol, json.dumps([f.to_json() for f in s.files]), s.mail_id)
         for s in out])
    if centre_email:
        await _mail(conn, centre_email, f"馆际互借中心结算汇总 ILL settlement summary {p}",
                    summary, scratch, max_attachment_bytes,
                    lambda _attached: _summary_mail_text(p, body, summary),
                    kind="settlement_summary")
    await periods.mark_closed(conn, p)
    return out


async def _mail(conn: asyncpg.Connection, to: str, subject: str, files: list[FileInfo],
                directory: Path, limit: int, text: Callable[[bool], str], *, kind: str) -> int:
    from infra.mailqueue import enqueue_mail

    attach = sum(f.bytes for f in files) <= limit
    attachments = []
    if attach:
        for f in files:
            mime = "text/csv" if f.name.endswith(".csv") else "application/pdf"
            content = await asyncio.to_thread((directory / f.name).read_bytes)
            attachments.append((attachment_name(f.name), content, mime))
    return await enqueue_mail(conn, to, subject, text(attach), attachments=attachments,
                              kind=kind)


# --------------------------------------------------------------------------
# closed periods: the stored run, reproduced
# --------------------------------------------------------------------------

async def _stored(conn: asyncpg.Connection, settings: Settings, p: Period, *,
                  reproduced: bool) -> SettlementResult:
    run = await conn.fetchrow("SELECT * FROM settlement_run WHERE period = $1", p.name)
    if run is None or run["closed_at"] is None:
        raise SettlementError(f"period {p} is closed but has no finished run")
    nets = await conn.fetch("SELECT * FROM settlement_net WHERE run_id = $1", run["id"])
    stmts = await conn.fetch("SELECT * FROM settlement_statement WHERE run_id = $1", run["id"])
    body = json.loads(run["summary"])
    by_agency: dict[str, list[Totals]] = {}
    for r in sorted(nets, key=lambda r: (r["owner"], r["currency"])):
        if r["owner"] != CENTRE:
            by_agency.setdefault(r["owner"], []).append(Totals(
                r["currency"], r["lines"], r["as_supplier"], r["as_requester"], r["late"],
                r["earned_minor"], r["owed_minor"], r["subsidy_minor"], r["patron_minor"],
                r["net_minor"]))
    statements = [AgencyStatement(
        s["agency"], s["name"], s["finance_email"], tuple(by_agency.get(s["agency"], ())),
        tuple(FileInfo.from_json(f) for f in json.loads(s["files"])), s["mail_id"])
        for s in sorted(stmts, key=lambda s: s["agency"])]
    totals: dict[str, dict[str, int]] = {}
    for t in body["totals"]:
        c = t["currencyCode"]

        def minor(v: str, c: str = c) -> int:
            return Money.from_decimal(v, c).minor

        totals[c] = {"agencies": t["agencies"], "earned": minor(t["earned"]),
                     "owed": minor(t["owed"]), "subsidy": minor(t["subsidy"]),
                     "patron": minor(t["patronShare"]), "toReceive": minor(t["agenciesReceive"]),
                     "toPay": minor(t["agenciesPay"]), "net": minor(t["netSum"]),
                     "centre": minor(t["centrePosition"]),
                     "granted": sum(minor(r["amount"]) for r in body["subsidy"]["byRule"]
                                    if r["currencyCode"] == c)}
    return SettlementResult(
        period=p.name, date_from=run["date_from"], cutoff=run["cutoff"], state=CLOSED,
        run_id=run["id"], created=False, reproduced=reproduced, dry_run=False,
        generated_at=body["generatedAt"], postings=run["postings"],
        late_postings=run["late_postings"], entries=run["entries"], statements=statements,
        totals=totals,
        by_rule=[(r["rule"], r["currencyCode"], Money.from_decimal(r["amount"],
                                                                  r["currencyCode"]).minor,
                  r["postings"]) for r in body["subsidy"]["byRule"]],
        by_budget=[(b["budget"], b["requester"] or "", b["budgetPeriod"], b["currencyCode"],
                    Money.from_decimal(b["amount"], b["currencyCode"]).minor)
                   for b in body["subsidy"]["byBudget"]],
        invariants=json.loads(run["invariants"]),
        files=[FileInfo.from_json(f) for f in json.loads(run["files"])],
        directory=statements_dir(settings, p), summary=body)


async def reproduce(pool: asyncpg.Pool, settings: Settings, p: Period, *, verify: bool = False,
                    workers: int = STATEMENT_STREAMS, pdf_workers: int | None = None,
                    progress: Callable[[str], None] | None = None) -> SettlementResult:
    """A closed period's run: figures recomputed from its postings and compared with the
    record; files checked against their checksums, missing or damaged ones rewritten (all
    of them regenerated and compared with verify=True). Nothing is queued again."""
    say = progress or (lambda _m: None)
    async with pool.acquire() as conn:
        result = await _stored(conn, settings, p, reproduced=True)
        names = {r["agency"]: (r["name"], r["finance_email"]) for r in await conn.fetch(
            "SELECT agency, name, finance_email FROM settlement_statement WHERE run_id = $1",
            result.run_id)}
        posting_max = await conn.fetchval(
            "SELECT posting_max FROM settlement_run WHERE id = $1", result.run_id)
        prev_max, prev_cutoff = await _previous(conn, result.cutoff)
    assert result.run_id is not None
    scope = Scope(result.date_from, result.cutoff, result.run_id, posting_max, prev_max,
                  prev_cutoff)
    netting = await compute(pool, scope, connections=pool.get_max_size() - 1)
    _compare(result, netting)
    say(f"period {p} is closed (run {result.run_id}): figures reproduced from its "
        f"{netting.postings:,} postings")

    directory = statements_dir(settings, p)
    expected = list(result.files) + [f for s in result.statements for f in s.files]
    if not expected:
        return result
    bad = await asyncio.to_thread(_damaged, directory, expected)
    if not bad and not verify:
        return result
    scratch = directory / f".reproduce-{result.run_id}-{os.getpid()}.tmp"
    await asyncio.to_thread(_fresh_dir, scratch)
    try:
        metas = _metas(netting, names, p, result.run_id, result.generated_at or "",
                       settings.hub_symbol)
        record = dict(result.invariants)
        record["everyEntryInOneStatement"] = dict(record["everyEntryInOneStatement"])
        # The run's own names and choices decide, so that the same files come out again.
        has_pdf = any(f.name.endswith(".pdf") for f in result.files)
        streamed = await stream_statement_lines(
            pool.acquire, scope, settings.timezone, {s: n for s, (n, _e) in names.items()},
            scratch, p.name, streams=max(1, min(workers, pool.get_max_size() - 1)),
            progress=say)
        csvs = await asyncio.to_thread(streamed.finish, metas)
        files = await _write_files(
            p, result.run_id, metas, netting, record, scratch, csvs, streamed.lines,
            pdf=has_pdf, pdf_workers=pdf_workers, timings={}, progress=say, names=names,
            generated_at=result.generated_at or "", centre=settings.hub_symbol)
        made = {f.name: f for fs in files.values() for f in fs}
        differ = [f.name for f in expected if made.get(f.name) != f]
        if differ:
            raise SettlementError(
                f"closed run {result.run_id} of {p} no longer reproduces its files: "
                f"{', '.join(differ[:5])} differ from the checksums on record")
        for name in bad:
            await asyncio.to_thread(os.replace, scratch / name, directory / name)
        result.restored = sorted(bad)
        if bad:
            say(f"restored {len(bad)} missing or damaged file(s) of {p}")
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    return result


def _damaged(directory: Path, expected: list[FileInfo]) -> list[str]:
    bad = []
    for f in expected:
        path = directory / f.name
        if not path.is_file() or path.stat().st_size != f.bytes or file_info(path) != f:
            bad.append(f.name)
    return bad


def _compare(stored: SettlementResult, netting: Netting) -> None:
    recomputed = {(s, t.currency): t for s in netting.symbols for t in _totals(netting, s)}
    on_record = {(s.symbol, t.currency): t for s in stored.statements for t in s.totals}
    problems = []
    if recomputed != on_record:
        changed = sorted(k for k in set(recomputed) | set(on_record)
                         if recomputed.get(k) != on_record.get(k))
        problems.append("agency figures differ for "
                        + ", ".join(f"{a} {c}" for a, c in changed[:5]))
    if (netting.postings, netting.entries) != (stored.postings, stored.entries):
        problems.append(f"{netting.postings} postings / {netting.entries} entries now, "
                        f"{stored.postings} / {stored.entries} on record")
    if netting.totals() != stored.totals:
        problems.append("currency totals differ")
    if (_rules(netting), _budgets(netting)) != (stored.by_rule, stored.by_budget):
        problems.append("subsidy outlay by rule or budget differs")
    if problems:
        raise SettlementError(f"closed run {stored.run_id} of {stored.period} does not "
                              "reproduce: " + "; ".join(problems))


__all__ = ["DEFAULT_CRON", "AgencyStatement", "SettlementError",
           "SettlementResult", "open_scope", "preview", "render_pdfs", "reproduce",
           "scheduled_settlement", "settle", "statements_dir"]
