"""`run.py fees | subsidy | budgets | ledger | settle`: money, for finance staff and operators."""

from __future__ import annotations

import argparse
import datetime
import io
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from app.cli.commands import Command, fail, table
from broker.agencies import name_of
from infra.database import Connection, connect, create_pool
from schemas.money import Money, signed
from schemas.rulefile import parse_date, read_input
from schemas.settings import Settings
from settlement import ledger
from settlement.calendar import check_period, period_of
from settlement.fees import FeeError, load_fees
from settlement.ledger import CENTRE
from settlement.netting import InvariantViolation
from settlement.record import SettlementError, SettlementResult
from settlement.run import settle
from settlement.statement_csv import STATEMENT_STREAMS
from settlement.statement_model import amount
from settlement.subsidy import BudgetRow, SubsidyError, budgets_report, load_subsidy, rules_version


async def _load_file(settings: Settings, path: str,
                     load: Callable[[Connection, str, str], Awaitable[list[str]]]
                     ) -> int:
    """Read an operator's file and load it in one go: 0 loaded (what was loaded is
    printed), 1 nothing loaded (the error, naming the entry and field, on stderr)."""
    try:
        text = read_input(path)
    except ValueError as exc:
        return fail(str(exc))
    conn = await connect(settings.database_url)
    try:
        lines = await load(conn, text, Path(path).name)
    except (FeeError, SubsidyError) as exc:
        return fail(f"{path}: {exc}; nothing loaded")
    finally:
        await conn.close()
    for line in lines:
        print(line)
    return 0


async def _load_fees(conn: Connection, text: str, name: str) -> list[str]:
    return list((await load_fees(conn, text, file_name=name)).lines())


async def _load_subsidy(conn: Connection, text: str, name: str) -> list[str]:
    version = await load_subsidy(conn, text, name)
    rules, _ = await rules_version(conn, version)
    if rules is None:
        raise SubsidyError(f"subsidy version {version} was stored but cannot be read back")
    return [f"subsidy version {version} ({rules.version_label}) loaded from {name}: "
            f"{len(rules.rules)} rule(s), {len(rules.budgets)} budget(s); postings use it "
            "from now on"]


async def fees(settings: Settings, args: argparse.Namespace) -> int:
    return await _load_file(settings, args.file, _load_fees)


async def subsidy(settings: Settings, args: argparse.Namespace) -> int:
    return await _load_file(settings, args.file, _load_subsidy)


def _load_arguments(example: str) -> Callable[[argparse.ArgumentParser], None]:
    def arguments(p: argparse.ArgumentParser) -> None:
        sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        sub.add_parser("load", help=f"validate and load a file (TOML; {example})"
                       ).add_argument("file")
    return arguments


async def budgets(settings: Settings, args: argparse.Namespace) -> int:
    """Limit, spent and remaining of every budget in a period."""
    period = args.period
    if period is None or period == "current":
        period = period_of(datetime.datetime.now(ZoneInfo(settings.timezone)).date())
    try:
        check_period(period)
    except ValueError as exc:
        return fail(str(exc))
    conn = await connect(settings.database_url)
    try:
        rows = await budgets_report(conn, period)
    finally:
        await conn.close()
    if not rows:
        print(f"no subsidy budgets in use for {period}")
        return 0
    print(f"subsidy budgets, period {period}")

    def used(b: BudgetRow) -> str:
        return f"{100 * b.spent.minor / b.limit.minor:.0f}%" if b.limit.minor else "-"

    table(("budget", "requester", "period", "limit", "spent", "remaining", "used"),
          [(b.name, (f"{b.requester} {b.requester_name or ''}".strip() if b.requester
                     else "(global)"), b.period, str(b.limit), str(b.spent), str(b.remaining),
            used(b)) for b in rows], right=(3, 4, 5, 6))
    return 0


def _budgets_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", help="YYYY-MM (default: the current month; budgets renew "
                   "monthly whatever the settlement calendar)")


async def ledger_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "check":
        return await _ledger_check(settings)
    if args.action == "show":
        return await _ledger_show(settings, args.symbol, args.date_from, args.date_to)
    return await _ledger_reverse(settings, args.transaction, args.reason)


async def _ledger_check(settings: Settings) -> int:
    """0 all invariants hold, 1 problems (listed)."""
    conn = await connect(settings.database_url)
    try:
        problems = await ledger.check(conn)
        size = await ledger.size(conn)
    finally:
        await conn.close()
    for p in problems:
        print(p)
    if problems:
        return fail(f"{len(problems)} ledger problem(s) found")
    print(f"ledger ok: {size.postings} postings, {size.entries} entries and "
          f"{size.budget_rows} budget rows checked; every transaction balances, no budget is "
          "below zero")
    return 0


def _as_date(value: str | None, what: str) -> datetime.date | None:
    try:
        return None if value is None else parse_date(value)
    except ValueError as exc:
        raise ValueError(f"{what}: {exc}") from exc


def _money_list(ms: Sequence[Money]) -> str:
    return ", ".join(f"{signed(m)} {m.currency}" for m in ms) or "0"


async def _ledger_show(settings: Settings, symbol: str, date_from: str | None,
                       date_to: str | None) -> int:
    """Entries and balance of an agency (CENTRE for the centre's own account)."""
    try:
        start, end = _as_date(date_from, "--from"), _as_date(date_to, "--to")
    except ValueError as exc:
        return fail(str(exc))
    if start and end and end < start:
        return fail(f"--to {end} is before --from {start}")
    conn = await connect(settings.database_url)
    try:
        name = (await name_of(conn, symbol) if symbol != CENTRE
                else "the centre (subsidy outlay)")
        if name is None:
            return fail(f"no agency {symbol!r} is registered")
        lines = await ledger.entries(conn, symbol, start, end)
        bal = await ledger.balance(conn, symbol, start, end)
    finally:
        await conn.close()
    span = f"{start or 'beginning'} .. {end or 'today'}"
    print(f"{symbol}  {name}")
    print(f"ledger entries {span}")
    if lines:
        table(("date", "transaction", "event", "account", "amount", "counterpart",
               "service", "title"),
              [(e.local_date, e.transaction_id, e.event, e.account,
                f"{signed(e.amount)} {e.amount.currency}",
                f"{e.counterpart} {e.counterpart_name or ''}".strip(), e.service_kind,
                e.title or "") for e in lines], right=(4,))
    else:
        print("(no entries)")
    print()
    if start:
        print(f"opening balance   {_money_list(bal.opening)}")
    for account, m in bal.by_account:
        print(f"  {account:<16}{signed(m):>12} {m.currency}")
    if symbol != CENTRE and any(a in ("payable", "subsidy") for a, _ in bal.by_account):
        print(f"patron share collected from readers: "
              f"{', '.join(str(m) for m in bal.patron_share)}")
    print(f"movement          {_money_list(bal.movement)}  ({bal.postings} postings)")
    meaning = ("negative: the centre's subsidy outlay" if symbol == CENTRE else
               f"positive: the centre owes {symbol}; negative: {symbol} owes the centre")
    print(f"closing balance   {_money_list(bal.closing)}  ({meaning})")
    return 0


async def _ledger_reverse(settings: Settings, transaction: str, reason: str) -> int:
    conn = await connect(settings.database_url)
    try:
        async with conn.transaction():
            done = await ledger.reverse_transaction(
                conn, transaction_id=transaction, reason=reason,
                on=datetime.datetime.now(datetime.UTC))
    finally:
        await conn.close()
    if not done:
        return fail(f"nothing to reverse: transaction {transaction} has no charges")
    if all(p.duplicate for p in done):
        return fail(f"nothing to reverse: the charges of {transaction} were reversed already")
    for posting in done:
        print(f"reversed {posting.event}: {signed(posting.fee)} {posting.fee.currency} "
              f"({reason})")
    return 0


def _ledger_arguments(p: argparse.ArgumentParser) -> None:
    lsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lsub.add_parser("check", help="verify the ledger's invariants (exit 1 on any problem)")
    ls = lsub.add_parser("show", help="an agency's entries and balance (CENTRE for the centre)")
    ls.add_argument("symbol")
    ls.add_argument("--from", dest="date_from", help="YYYY-MM-DD")
    ls.add_argument("--to", dest="date_to", help="YYYY-MM-DD")
    lr = lsub.add_parser("reverse", help="refund a transaction's charges with reversing entries")
    lr.add_argument("transaction")
    lr.add_argument("--reason", required=True)


async def settle_period(settings: Settings, args: argparse.Namespace) -> int:
    """0 done, 1 error (said why)."""
    def say(message: str) -> None:
        print(f"  {datetime.datetime.now():%H:%M:%S} {message}", file=sys.stderr, flush=True)

    try:
        pool = await create_pool(settings.database_url, min_size=1,
                                 max_size=STATEMENT_STREAMS + 3)
    except (OSError, asyncpg.PostgresError) as exc:
        return fail(f"cannot reach the database: {exc}")
    try:
        result = await settle(pool, settings, args.period, dry_run=args.dry_run,
                              centre_email=settings.settlement.centre_finance_email,
                              progress=say)
    except InvariantViolation as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return fail(f"settlement aborted, nothing closed: {exc}")
    except (ValueError, SettlementError) as exc:
        return fail(str(exc))
    finally:
        await pool.close()
    if result is None:
        return fail("another settlement run holds the lock; try again later")
    print(render_text(result))
    return 0


def _settle_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--period", required=True, help="YYYY-MM (a month), YYYY-B1..B6 (two "
                   "months), YYYY-Q1..Q4 (a quarter), YYYY (a year), or 'current' (the open "
                   "period of settings.settlement.calendar; with --dry-run: what it would "
                   "settle to now)")
    p.add_argument("--dry-run", action="store_true", help="compute and show, write nothing")


def render_text(r: SettlementResult) -> str:
    """The report of a run or a preview."""
    out = io.StringIO()
    if r.dry_run:
        head = (f"PREVIEW of {r.period} (period {r.state}; nothing written): postings dated up "
                f"to {r.cutoff} not yet settled")
    elif r.created:
        head = f"settlement {r.period} ({r.date_from} .. {r.cutoff}): run {r.run_id} closed now"
    elif r.reproduced:
        head = (f"settlement {r.period} ({r.date_from} .. {r.cutoff}): already closed by run "
                f"{r.run_id}; figures reproduced, nothing sent again")
    else:
        head = (f"settlement {r.period} ({r.date_from} .. {r.cutoff}): already closed by run "
                f"{r.run_id}; its record")
    print(head, file=out)
    print(f"{r.postings:,} postings ({r.late_postings:,} late, dated before {r.date_from}), "
          f"{r.entries:,} entries, {len(r.statements):,} agencies", file=out)
    if r.generated_at:
        print(f"generated at {r.generated_at}", file=out)
    print(file=out)
    rows = []
    for s in r.statements:
        for t in s.totals:
            c = t.currency
            rows.append((s.symbol, s.name, t.lines, amount(t.earned, c), amount(t.owed, c),
                         amount(t.subsidy, c), amount(t.net, c), c,
                         {"receive": "to receive", "pay": "to pay", "none": "-"}[t.direction]))
    if rows:
        table(("agency", "name", "lines", "earned", "owed", "subsidy", "net", "cur", ""),
              rows, right=(2, 3, 4, 5, 6), out=out)
    else:
        print("(nothing to settle)", file=out)
    for c, sums in r.totals.items():
        print(f"\n{c}: agencies receive {amount(sums['toReceive'], c)}, agencies pay "
              f"{amount(sums['toPay'], c)}; sum of nets {amount(sums['net'], c)}; centre "
              f"position {amount(sums['centre'], c)} (subsidy outlay "
              f"{amount(-sums['centre'], c)})", file=out)
    if r.by_rule:
        print("\nsubsidy outlay by rule:", file=out)
        for rule, c, granted, n in r.by_rule:
            print(f"  {rule}: {amount(granted, c)} {c} ({n} postings)", file=out)
    if r.by_budget:
        print("subsidy outlay by budget (a grant counts against every budget its rule names):",
              file=out)
        for name, requester, period, c, granted in r.by_budget:
            print(f"  {name} ({requester or 'global'}, {period}): {amount(granted, c)} {c}",
                  file=out)
    inv = r.invariants
    print("\ninvariants:", file=out)
    for key, label in (("entriesBalance", "entries balance"),
                       ("netsSumToMinusCentre", "agency nets sum to minus the centre's position"),
                       ("everyEntryInOneStatement", "every entry in exactly one statement")):
        v = inv.get(key, {})
        print(f"  {label}: {'ok' if v.get('ok') else 'VIOLATED'}", file=out)
    for p in inv.get("everyEntryInOneStatement", {}).get("problems", []):
        print(f"    {p}", file=out)
    if r.directory is not None and not r.dry_run:
        print(f"\nfiles in {r.directory}:", file=out)
        for f in r.files:
            print(f"  {f.name}  {f.bytes:,} bytes  sha256 {f.sha256}", file=out)
        print(f"  and {sum(len(s.files) for s in r.statements):,} statement files", file=out)
        if r.restored:
            print(f"  restored: {', '.join(r.restored)}", file=out)
    return out.getvalue().rstrip("\n")


COMMANDS = [
    Command("fees", "load suppliers' fee schedules", fees,
            _load_arguments("docs/fees.example.toml")),
    Command("subsidy", "load subsidy rules and budgets", subsidy,
            _load_arguments("docs/subsidy.example.toml")),
    Command("budgets", "show subsidy budgets: limit, spent, remaining", budgets,
            _budgets_arguments),
    Command("ledger", "check, show and correct the ledger", ledger_command, _ledger_arguments),
    Command("settle", "net a period's charges: one amount per agency, statements, finance "
            "messages and mails", settle_period, _settle_arguments),
]
