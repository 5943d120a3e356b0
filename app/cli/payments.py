"""`run.py payments ...`: what finance staff do after a run (issue 17).

One command, its actions gathered from the modules that own them: this module's
list, record, aging, remind and history; `app/cli/payment_files.py` (file);
`app/cli/bank_import.py` (import); `app/cli/finance_reports.py` (report). Each publishes
`ACTIONS`, a list of `Action`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Sequence
from typing import Any

import asyncpg

from app.cli import bank_import, finance_reports, payment_files
from app.cli.commands import EXIT_USAGE, Command, fail, table
from app.cli.finance_actions import Action, money_text, parse_amount, parse_day, today
from infra.database import connect
from schemas.settings import Settings
from settlement import dues

# --------------------------------------------------------------------------
# list, record, aging, remind, history
# --------------------------------------------------------------------------

async def _list(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        found = await dues.positions(conn, agency=args.agency, run_id=args.run,
                                     open_only=args.open)
    finally:
        await conn.close()
    day = today(settings)
    if args.json:
        print(json.dumps([p.to_json(day) for p in found], ensure_ascii=False, indent=2))
        return 0
    table(["due", "period", "agency", "reference", "direction", "amount", "paid",
           "outstanding", "disputed", "due on", "state"],
          [(p.due_id, p.period, p.agency, p.reference, p.direction.value,
            f"{p.amount.amount_text()} {p.currency}", p.paid.amount_text(),
            p.outstanding.amount_text(), p.disputed.amount_text(), p.due_on,
            p.state(day).value) for p in found], right=(0, 5, 6, 7, 8))
    return 0


def _list_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--agency", help="only this agency's statements (its symbol)")
    p.add_argument("--run", type=int, help="only this settlement run's statements")
    p.add_argument("--open", action="store_true", help="only what is not paid in full")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")


async def _record(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        p = await dues.by_reference(conn, args.reference)
        if p is None:
            return fail(f"no statement with reference {args.reference!r} "
                        "(run.py payments list shows them)", EXIT_USAGE)
        try:
            amount = parse_amount(args.amount, p.currency)
            paid_on = parse_day(args.date, "--date", today(settings))
        except ValueError as exc:
            return fail(str(exc), EXIT_USAGE)
        try:
            result = await dues.record_payment(
                conn, p.due_id, amount, paid_on=paid_on, source=dues.PaymentSource.MANUAL,
                actor=args.actor, bank_reference=args.bank_reference, today=today(settings))
        except dues.PaymentRefused as exc:
            return fail(str(exc), EXIT_USAGE)
    finally:
        await conn.close()
    after = result.position
    print(f"{after.reference}: {amount.amount_text()} {after.currency} recorded on {paid_on}; "
          f"paid {after.paid.amount_text()} of {after.amount.amount_text()}, outstanding "
          f"{after.outstanding.amount_text()} ({after.state(today(settings)).value})")
    return 0


def _record_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference", help="the statement's reference, as the payer quoted it")
    p.add_argument("amount", help="in the statement's currency, e.g. 1250.00")
    p.add_argument("--date", help="when the money moved, YYYY-MM-DD (default: today)")
    p.add_argument("--bank-reference", help="the bank's reference for the transfer")
    p.add_argument("--actor", default="cli", help="who records it (kept in the history)")


async def _aging(settings: Settings, args: argparse.Namespace) -> int:
    day = parse_day(args.date, "--date", today(settings))
    conn = await connect(settings.database_url)
    try:
        rows = await dues.aging(conn, day, agency=args.agency)
    finally:
        await conn.close()
    if args.json:
        print(json.dumps(aging_json(rows, day), ensure_ascii=False, indent=2))
        return 0
    print_aging(rows, day)
    return 0


def aging_json(rows: Sequence[dues.AgingRow], day: datetime.date) -> dict[str, Any]:
    names = [b[0] for b in dues.AGING_BUCKETS]
    return {"date": day.isoformat(), "buckets": names, "agencies": [
        {"agency": r.agency, "currencyCode": r.currency,
         "owedToCentre": dict(zip(names, [money_text(v, r.currency) for v in
                                          r.owed_to_centre], strict=True)),
         "owedByCentre": dict(zip(names, [money_text(v, r.currency) for v in
                                          r.owed_by_centre], strict=True)),
         "overdue": money_text(r.overdue_minor, r.currency),
         "disputed": money_text(r.disputed_minor, r.currency)} for r in rows]}


def print_aging(rows: Sequence[dues.AgingRow], day: datetime.date, out: Any = None) -> None:
    """The aging table: owed to the centre by age (days since issue), owed by it, overdue."""
    out = out or sys.stdout
    names = [b[0] for b in dues.AGING_BUCKETS]
    body = [(r.agency, r.currency, *[money_text(v, r.currency) for v in r.owed_to_centre],
             money_text(r.by_centre_minor, r.currency), money_text(r.overdue_minor, r.currency),
             money_text(r.disputed_minor, r.currency)) for r in rows]
    totals: dict[str, list[int]] = {}
    for r in rows:
        t = totals.setdefault(r.currency, [0] * (len(names) + 3))
        for i, v in enumerate((*r.owed_to_centre, r.by_centre_minor, r.overdue_minor,
                               r.disputed_minor)):
            t[i] += v
    body += [("total", cur, *[money_text(v, cur) for v in t]) for cur, t in totals.items()]
    print(f"aging on {day} (owed to the centre by days since issue)", file=out)
    table(["agency", "cur", *names, "owed by centre", "overdue", "disputed"], body,
          right=tuple(range(2, len(names) + 5)), out=out)
    if not rows:
        print("nothing outstanding", file=out)


async def _remind(settings: Settings, args: argparse.Namespace) -> int:
    day = parse_day(args.date, "--date", today(settings))
    conn = await connect(settings.database_url)
    try:
        sent = await dues.send_reminders(conn, settings.payments, day, actor=args.actor)
    finally:
        await conn.close()
    for p, stage in sent:
        print(f"{p.reference} {p.agency}: {stage}, {p.dunnable.amount_text()} {p.currency}")
    print(f"{len(sent)} reminder(s) sent for {day}")
    return 0


def _remind_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", help="remind as of this date, YYYY-MM-DD (default: today)")
    p.add_argument("--actor", default="cli")


async def _history(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        p = await dues.by_reference(conn, args.reference)
        if p is None:
            return fail(f"no statement with reference {args.reference!r}", EXIT_USAGE)
        events = await dues.history(conn, p.due_id)
    finally:
        await conn.close()
    table(["at", "event", "stage", "amount", "by", "detail"],
          [(e.at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M"), e.kind.value,
            e.stage or "", "" if e.amount_minor is None else money_text(e.amount_minor,
                                                                       p.currency),
            e.actor, json.dumps(e.detail, ensure_ascii=False)) for e in events], right=(3,))
    return 0


def _aging_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--date", help="age as of this date, YYYY-MM-DD (default: today)")
    p.add_argument("--agency", help="one agency only")
    p.add_argument("--json", action="store_true")


def _reference_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("reference")


ACTIONS: list[Action] = [
    Action("list", "statements issued by runs: amount, paid, outstanding, state", _list,
           _list_arguments),
    Action("record", "record a payment against a statement (partial payments add up)",
           _record, _record_arguments),
    Action("aging", "the centre's position: owed to it and by it, by agency and age", _aging,
           _aging_arguments),
    Action("remind", "send the reminders and overdue notices due today (idempotent)",
           _remind, _remind_arguments),
    Action("history", "a statement's history: issued, payments, reminders, disputes",
           _history, _reference_argument),
]


# The modules publishing more actions import Action from this one: imported after it.


def all_actions() -> list[Action]:
    return [*ACTIONS, *finance_reports.ACTIONS, *bank_import.ACTIONS, *payment_files.ACTIONS]


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    for a in all_actions():
        a.arguments(sub.add_parser(a.name, help=a.help))


async def payments_command(settings: Settings, args: argparse.Namespace) -> int:
    chosen = {a.name: a for a in all_actions()}[args.action]
    try:
        return await chosen.run(settings, args)
    except (OSError, asyncpg.PostgresConnectionError) as exc:
        return fail(f"cannot reach the database: {exc}")


COMMANDS = [Command("payments", "after a run: statements' payments, reminders, aging, bank "
                    "files and reconciliation", payments_command, _arguments)]
