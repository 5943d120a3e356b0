"""Settlement runs: close a period, net it, check it, store it; closed periods reproduced (§4, §5).

This module decides what is settled and when; what a run writes and sends is in
settlement/outputs.py (files, ill.finance messages, mails), what it stores and how a
closed run is read back in record.py, the files' contents in statement_*.py.

`settle(pool, settings, "2026-10")` settles a period whose end has passed (a month, or
"2026-B5", "2026-Q4", "2026": any calendar's period, settlement/periods.py):

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
   (settlement/statement_csv.py); the invariants are checked and the run aborts (its
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
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from infra.database import Connection
from infra.locks import Lock, try_session_lock, unlock
from schemas.settings import Settings
from settlement import deposits, dues, periods
from settlement.dues import by_agency
from settlement.ledger import CENTRE
from settlement.netting import (
    Netting,
    Scope,
    compute,
    invariants,
    require,
    require_lines_written,
)
from settlement.outputs import (
    MAX_ATTACHMENT_BYTES,
    damaged,
    fresh_dir,
    mail_statements,
    mail_summary,
    publish_files,
    queue_messages,
    statement_metas,
    stream_lines,
    write_files,
)
from settlement.periods import CLOSED, Period
from settlement.record import (
    AgencyStatement,
    Names,
    SettlementError,
    SettlementResult,
    agency_names,
    delete_run,
    discard_unclosed,
    netted_result,
    open_scope,
    previous_region,
    run_scope,
    statement_names,
    store_figures,
    store_run,
    store_statement_files,
    stored_result,
    summary_body,
)
from settlement.statement_csv import STATEMENT_STREAMS, StatementLines
from settlement.statement_model import FileInfo, RunStamp, StatementMeta, statements_dir

log = logging.getLogger(__name__)

# One advisory lock (Lock.SETTLEMENT) for every settlement run: runs of different
# periods would compete for the same unsettled postings, so they never overlap either.
# When the lead wires a setting: the hub's scheduler runs scheduled_settlement on
# this cron (consortium time zone); any time after the period's end will do.
DEFAULT_CRON = "15 0 1 * *"
LOCK_POLL_SECONDS = 0.2


@dataclass(frozen=True)
class _Options:
    """How a run is made: settle's keyword arguments."""

    centre_email: str | None
    pdf: bool
    verify: bool
    workers: int
    pdf_workers: int | None
    max_attachment_bytes: int


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
    """Settle `period` (its name in any calendar, or 'current': the open period of the
    configured calendar), or preview it with dry_run.

    Returns None only with wait=False when another run holds the settlement lock.
    Raises ValueError for a malformed period, SettlementError when it cannot be
    settled, InvariantViolation when the figures do not add up (nothing is closed).
    """
    now = now or _now()
    tz = settings.timezone
    p = period if isinstance(period, Period) else periods.resolve(
        period, now, tz, periods.configured(settings))
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
    opts = _Options(centre_email=centre_email, pdf=pdf, verify=verify, workers=workers,
                    pdf_workers=pdf_workers, max_attachment_bytes=max_attachment_bytes)
    while True:
        async with pool.acquire() as lock:
            if await try_session_lock(lock, Lock.SETTLEMENT):
                return await _locked(pool, lock, settings, p, opts, say)
        if not wait:
            return None
        # Waiting without holding a pooled connection: a run in progress needs several.
        await asyncio.sleep(LOCK_POLL_SECONDS)


async def _locked(pool: asyncpg.Pool, lock: Connection, settings: Settings,
                  p: Period, opts: _Options, say: Callable[[str], None]) -> SettlementResult:
    try:
        st = await periods.state(lock, p)
        if st.state == CLOSED:
            return await reproduce(pool, settings, p, verify=opts.verify, workers=opts.workers,
                                   pdf_workers=opts.pdf_workers, progress=say)
        refused = await periods.refusal(lock, p)
        if refused:
            raise SettlementError(refused)
        return await _run(pool, lock, settings, p, opts, say)
    finally:
        await unlock(lock, Lock.SETTLEMENT)


async def scheduled_settlement(pool: asyncpg.Pool, settings: Settings,
                               now: datetime.datetime | None = None, *,
                               centre_email: str | None = None) -> str | None:
    """For the hub's scheduler (monthly): settle the period of the configured calendar
    that ended at the start of this month; in a month where none ended (quarterly:
    February, March, May ...) do nothing.

    Returns the period settled by this call, or None (none ended, already closed, in the
    way of a closed period, or another hub process is settling right now: the lock is
    tried, not waited for).
    """
    now = now or _now()
    p = periods.just_ended(now, settings.timezone, periods.configured(settings))
    if p is None:
        return None
    async with pool.acquire() as conn:
        if (await periods.state(conn, p)).state == CLOSED:
            return None
        refused = await periods.refusal(conn, p)
        if refused:
            # E.g. the calendar changed off a boundary: someone has to decide by hand.
            log.warning("scheduled settlement of %s skipped: %s", p, refused)
            return None
    result = await settle(pool, settings, p, now=now, centre_email=centre_email, wait=False)
    if result is None or not result.created:
        return None
    log.info("settlement %s closed: run %s, %d agencies, %d postings", p, result.run_id,
             len(result.statements), result.postings)
    return p.name


async def preview(pool: asyncpg.Pool, settings: Settings, p: Period, *,
                  progress: Callable[[str], None]) -> SettlementResult:
    """What a run for `p` would settle now (or, for a closed period, its stored run)."""
    async with pool.acquire() as conn:
        st = await periods.state(conn, p)
        if st.state == CLOSED:
            return await stored_result(conn, settings, p, reproduced=False)
        async with conn.transaction(readonly=True, isolation="repeatable_read"):
            t = time.monotonic()
            netting = await compute(conn, await open_scope(conn, p))
            record, _problems = invariants(netting)
            names = await agency_names(conn, netting.symbols)
    progress(f"preview of {p}: {netting.postings:,} postings netted in "
             f"{time.monotonic() - t:.1f}s")
    return netted_result(
        p, netting, state=st.state, run_id=None, created=False, dry_run=True, generated_at=None,
        statements=[AgencyStatement(s, names[s][0], names[s][1], netting.totals_of(s))
                    for s in netting.symbols],
        invariants=record)


async def _net(pool: asyncpg.Pool, scope: Scope) -> Netting:
    """The netting of a run on the pool, leaving one connection (the lock's)."""
    return await compute(pool, scope, connections=pool.get_max_size() - 1)


# --------------------------------------------------------------------------
# the run
# --------------------------------------------------------------------------

async def _take_postings(conn: Connection, p: Period, generated: datetime.datetime
                         ) -> tuple[int, Scope]:
    """The run's row, with the range of postings it takes (0010_settlement_speed.sql)."""
    async with conn.transaction():
        # SHARE waits for every transaction that is inserting postings right now and
        # holds off new ones until this commits (milliseconds): all ids up to the
        # maximum read here are committed, and every later posting's id is larger.
        await conn.execute("LOCK TABLE ledger_posting IN SHARE MODE")
        posting_max = await conn.fetchval("SELECT coalesce(max(id), 0) FROM ledger_posting")
        prev_max, prev_cutoff = await previous_region(conn, p.last_day)
        run_id = await conn.fetchval(
            """INSERT INTO settlement_run (period, date_from, cutoff, started_at,
                                           generated_at, posting_max)
               VALUES ($1, $2, $3, now(), $4, $5) RETURNING id""",
            p.name, p.first_day, p.last_day, generated, posting_max)
    return run_id, Scope(p.first_day, p.last_day, run_id, posting_max, prev_max, prev_cutoff)


async def _run(pool: asyncpg.Pool, lock: Connection, settings: Settings, p: Period,
               opts: _Options, progress: Callable[[str], None]) -> SettlementResult:
    run = _Run(pool, lock, settings, p, opts, progress)
    await discard_unclosed(lock)
    await periods.mark_closing(lock, p)
    generated = _now().astimezone(ZoneInfo(settings.timezone)).replace(microsecond=0)
    try:
        return await run.close(generated)
    except BaseException as exc:
        await run.fail(exc)
        raise


class _Run:
    """One run of a period under the settlement lock: its steps and what they share
    (the phase timings, and what `fail` has to remove)."""

    def __init__(self, pool: asyncpg.Pool, lock: Connection, settings: Settings,
                 p: Period, opts: _Options, progress: Callable[[str], None]) -> None:
        self.pool, self.lock, self.settings, self.p, self.opts = pool, lock, settings, p, opts
        self.say = progress
        self.directory = statements_dir(settings, p)
        self.timings: dict[str, float] = {}
        self.clock = time.monotonic()
        self.run_id: int | None = None
        self.scratch: Path | None = None
        self.closed = False

    def lap(self, name: str, since: float | None = None) -> float:
        now = time.monotonic()
        self.timings[name] = round(now - (self.clock if since is None else since), 3)
        self.clock = now
        return self.timings[name]

    async def close(self, generated: datetime.datetime) -> SettlementResult:
        p, lock = self.p, self.lock
        run_id, scope = await _take_postings(lock, p, generated)
        self.run_id = run_id
        self.say(f"run {run_id} for {p}: postings up to id {scope.posting_max:,} dated up to "
                 f"{p.last_day}, beyond those of the run before, taken in "
                 f"{self.lap('items'):.1f}s")
        names = await agency_names(lock, None)
        self.scratch = scratch = self.directory / f".run-{run_id}.tmp"
        await asyncio.to_thread(fresh_dir, scratch)
        stamp = RunStamp.of(p, run_id, generated.isoformat(), self.settings.hub_symbol)
        netting, record, metas, csvs = await self._statements(scope, names, stamp, scratch)
        files = await write_files(stamp, metas, netting, names, record, scratch, csvs,
                                  pdf=self.opts.pdf, pdf_workers=self.opts.pdf_workers,
                                  timings=self.timings, progress=self.say)
        self.clock = time.monotonic()
        summary_files = files.pop(CENTRE)
        statements = [AgencyStatement(m.symbol, m.name, names[m.symbol][1], m.totals,
                                      tuple(files[m.symbol])) for m in metas]
        body = summary_body(p, run_id, stamp.generated_at, netting, record, summary_files,
                            statements)
        async with lock.transaction():
            # What each statement asks to be paid, from the run's date (issue 17): before
            # the messages and mails, which quote each one's reference and due date.
            issued = await dues.issue(lock, run_id, p.name, rules=self.settings.payments,
                                      today=generated.date())
            statements = await _close(lock, p, run_id, netting, record, body, summary_files,
                                      statements, scratch, centre=self.settings.hub_symbol,
                                      opts=self.opts, issued=by_agency(issued))
            # Statements of agencies with a prepaid deposit paid from (or into) it.
            await deposits.net_run(lock, run_id, generated.date())
        self.closed = True
        self.lap("close")
        await asyncio.to_thread(publish_files, scratch, self.directory)
        self.scratch = None
        self.say(f"period {p} closed: run {run_id}, files in {self.directory}")
        return netted_result(
            p, netting, state=CLOSED, run_id=run_id, created=True, dry_run=False,
            generated_at=stamp.generated_at, statements=statements, invariants=record,
            files=summary_files, directory=self.directory, timings=self.timings, summary=body)

    async def _statements(self, scope: Scope, names: Names, stamp: RunStamp, scratch: Path
                          ) -> tuple[Netting, dict[str, Any], list[StatementMeta],
                                     dict[str, FileInfo]]:
        """The netting, checked and stored, while the statement lines stream into their
        CSV files (neither needs the other until the totals go under the lines)."""
        # The lock's connection is taken from the pool; the streams take theirs first,
        # the netting's queries share the rest.
        started = time.monotonic()
        streamed: dict[str, float] = {}

        async def lines() -> StatementLines:
            out = await stream_lines(self.pool, scope, self.settings.timezone, names, scratch,
                                     self.p.name, workers=self.opts.workers,
                                     progress=self.say)
            streamed["csv"] = time.monotonic() - started
            return out

        task = asyncio.create_task(lines())
        try:
            netting = await _net(self.pool, scope)
            record, problems = invariants(netting)
            self.say(f"netting: {len(netting.symbols):,} agencies, {netting.entries:,} entries "
                     f"in {self.lap('netting', started):.1f}s; invariants "
                     f"{'hold' if not problems else 'VIOLATED'}")
            require(record, problems)
            async with self.lock.transaction():
                await store_figures(self.lock, stamp.run_id, netting, names)
            statement_lines = await task
        except BaseException:
            task.cancel()
            with contextlib.suppress(BaseException):
                (await task).discard()
            raise
        metas = statement_metas(netting, names, stamp)
        csvs = await asyncio.to_thread(statement_lines.finish, metas)
        written = statement_lines.lines
        self.timings["csv"] = round(streamed.get("csv", 0.0), 3)
        self.lap("statements", started)
        self.say(f"CSV statements: {len(csvs):,} files, {written:,} lines; lines streamed in "
                 f"{self.timings['csv']:.1f}s, files complete after "
                 f"{self.timings['statements']:.1f}s")
        require_lines_written(record, written)
        return netting, record, metas, csvs

    async def fail(self, exc: BaseException) -> None:
        """A run that failed before it closed leaves nothing: no rows, no files."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            await _abandon(self.lock, self.p, self.run_id, f"{type(exc).__name__}: {exc}")
        if self.scratch is not None:
            await asyncio.to_thread(shutil.rmtree, self.scratch, True)


async def _close(conn: Connection, p: Period, run_id: int, netting: Netting,
                 record: dict[str, Any], body: dict[str, Any], summary: list[FileInfo],
                 statements: list[AgencyStatement], scratch: Path, *, centre: str,
                 opts: _Options, issued: Mapping[str, Sequence[dues.Position]]
                 ) -> list[AgencyStatement]:
    """The closing transaction: run record, outbox messages, mail, period closed."""
    await store_run(conn, run_id, netting, record, body, summary, len(statements))
    await queue_messages(conn, p, run_id, body, statements, issued)
    out = await mail_statements(conn, p, statements, scratch, centre=centre,
                                max_attachment_bytes=opts.max_attachment_bytes,
                                issued=issued)
    await store_statement_files(conn, run_id, out)
    if opts.centre_email:
        await mail_summary(conn, p, opts.centre_email, body, summary, scratch,
                           max_attachment_bytes=opts.max_attachment_bytes)
    await periods.mark_closed(conn, p)
    return out


async def _abandon(conn: Connection, p: Period, run_id: int | None, error: str) -> None:
    if run_id is not None:
        await delete_run(conn, run_id)
    await periods.mark_failed(conn, p, error)
    log.error("settlement %s failed, nothing closed: %s", p, error)


# --------------------------------------------------------------------------
# closed periods: the stored run, reproduced
# --------------------------------------------------------------------------

async def reproduce(pool: asyncpg.Pool, settings: Settings, p: Period, *, verify: bool = False,
                    workers: int = STATEMENT_STREAMS, pdf_workers: int | None = None,
                    progress: Callable[[str], None] | None = None) -> SettlementResult:
    """A closed period's run: figures recomputed from its postings and compared with the
    record; files checked against their checksums, missing or damaged ones rewritten (all
    of them regenerated and compared with verify=True). Nothing is queued again."""
    say = progress or (lambda _m: None)
    async with pool.acquire() as conn:
        result = await stored_result(conn, settings, p, reproduced=True)
        run_id = result.run_id
        if run_id is None:
            raise SettlementError(f"period {p} is closed but its run has no id")
        # The run's own names decide, so that the same files come out again.
        names = await statement_names(conn, run_id)
        scope = await run_scope(conn, run_id)
    netting = await _net(pool, scope)
    _compare(result, netting)
    say(f"period {p} is closed (run {run_id}): figures reproduced from its "
        f"{netting.postings:,} postings")

    directory = statements_dir(settings, p)
    expected = list(result.files) + [f for s in result.statements for f in s.files]
    if not expected:
        return result
    bad = await asyncio.to_thread(damaged, directory, expected)
    if not bad and not verify:
        return result
    stamp = RunStamp.of(p, run_id, result.generated_at or "", settings.hub_symbol)
    scratch = directory / f".reproduce-{run_id}-{os.getpid()}.tmp"
    await asyncio.to_thread(fresh_dir, scratch)
    try:
        made = await _remake(pool, settings, stamp, result, netting, scope, names, scratch,
                             workers=workers, pdf_workers=pdf_workers, progress=say)
        differ = [f.name for f in expected if made.get(f.name) != f]
        if differ:
            raise SettlementError(
                f"closed run {run_id} of {p} no longer reproduces its files: "
                f"{', '.join(differ[:5])} differ from the checksums on record")
        for name in bad:
            await asyncio.to_thread(os.replace, scratch / name, directory / name)
        result.restored = sorted(bad)
        if bad:
            say(f"restored {len(bad)} missing or damaged file(s) of {p}")
    finally:
        await asyncio.to_thread(shutil.rmtree, scratch, True)
    return result


async def _remake(pool: asyncpg.Pool, settings: Settings, stamp: RunStamp,
                  result: SettlementResult, netting: Netting, scope: Scope, names: Names,
                  scratch: Path, *, workers: int, pdf_workers: int | None,
                  progress: Callable[[str], None]) -> dict[str, FileInfo]:
    """A closed run's files written again into `scratch`, by name."""
    metas = statement_metas(netting, names, stamp)
    record = dict(result.invariants)
    record["everyEntryInOneStatement"] = dict(record["everyEntryInOneStatement"])
    # The run's own choices decide, so that the same files come out again.
    has_pdf = any(f.name.endswith(".pdf") for f in result.files)
    streamed = await stream_lines(pool, scope, settings.timezone, names, scratch, stamp.period,
                                  workers=workers, progress=progress)
    csvs = await asyncio.to_thread(streamed.finish, metas)
    require_lines_written(record, streamed.lines)
    files = await write_files(stamp, metas, netting, names, record, scratch, csvs, pdf=has_pdf,
                              pdf_workers=pdf_workers, timings={}, progress=progress)
    return {f.name: f for fs in files.values() for f in fs}


def _compare(stored: SettlementResult, netting: Netting) -> None:
    recomputed = {(s, t.currency): t for s in netting.symbols for t in netting.totals_of(s)}
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
    if (netting.rule_rows(), netting.budget_rows()) != (stored.by_rule, stored.by_budget):
        problems.append("subsidy outlay by rule or budget differs")
    if problems:
        raise SettlementError(f"closed run {stored.run_id} of {stored.period} does not "
                              "reproduce: " + "; ".join(problems))


__all__ = ["DEFAULT_CRON", "LOCK_POLL_SECONDS", "preview", "reproduce", "scheduled_settlement",
           "settle"]
