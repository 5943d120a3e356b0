"""`run.py disputes list|open|resolve`: statement lines contested by libraries (issue 17).

Libraries usually dispute through an AMQP finance message, the API or the library's
pages; the CLI is the finance officer's tool, and opens a dispute for a library that
phoned or wrote in.
"""

from __future__ import annotations

import argparse
import datetime
import json

from app.cli.commands import EXIT_USAGE, Command, fail, table
from app.cli.finance_actions import parse_amount, today
from infra.database import connect
from schemas.settings import Settings
from settlement import disputes
from settlement.disputes import Channel, DisputeRefused, Outcome


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        found = await disputes.disputes(conn, agency=args.agency, open_only=args.open)
    finally:
        await conn.close()
    if args.json:
        print(json.dumps([d.to_json() for d in found], ensure_ascii=False, indent=2))
        return 0
    table(["id", "reference", "posting", "requester", "supplier", "amount", "state", "reason",
           "resolution"],
          [(d.id, d.reference, d.posting_id, d.agency, d.supplier,
            f"{d.amount.amount_text()} {d.amount.currency}",
            d.outcome.value if d.outcome else "open", d.reason, d.resolution or "")
           for d in found], right=(0, 2, 5))
    return 0


async def _open(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        d = await disputes.open_dispute(
            conn, reference=args.reference, posting_id=args.posting, agency=args.agency,
            reason=args.reason, actor=args.actor, channel=Channel.CLI, today=today(settings))
    except DisputeRefused as exc:
        return fail(f"{exc.code}: {exc.message}", EXIT_USAGE)
    finally:
        await conn.close()
    print(f"dispute {d.id} opened: line {d.posting_id} of {d.reference}, "
          f"{d.amount.amount_text()} {d.amount.currency} not dunned until it is resolved")
    return 0


async def _resolve(settings: Settings, args: argparse.Namespace) -> int:
    outcome = Outcome.ACCEPTED if args.action == "accept" else Outcome.REJECTED
    conn = await connect(settings.database_url)
    try:
        corrected = None
        if getattr(args, "corrected_fee", None) is not None:
            found = await disputes.dispute(conn, args.dispute)
            currency = found.amount.currency if found else settings.currency
            try:
                corrected = parse_amount(args.corrected_fee, currency)
            except ValueError as exc:
                return fail(f"--corrected-fee: {exc}", EXIT_USAGE)
        d = await disputes.resolve(conn, args.dispute, outcome=outcome, reason=args.reason,
                                   actor=args.actor, corrected_fee=corrected,
                                   on=datetime.datetime.now(datetime.UTC),
                                   tz=settings.timezone)
    except DisputeRefused as exc:
        return fail(f"{exc.code}: {exc.message}", EXIT_USAGE)
    finally:
        await conn.close()
    if d.outcome is Outcome.ACCEPTED:
        adj = d.adjustment.amount_text() if d.adjustment else "0"
        print(f"dispute {d.id} accepted: reversal posting {d.reversal_posting}"
              + (f", corrected charge posting {d.charge_posting}" if d.charge_posting else "")
              + f"; {d.agency} is credited {adj} {d.amount.currency} in the next run")
    else:
        print(f"dispute {d.id} rejected: {d.resolution}")
    return 0


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="disputes, open and resolved")
    ls.add_argument("--agency", help="where this agency is requester or supplier")
    ls.add_argument("--open", action="store_true", help="only open disputes")
    ls.add_argument("--json", action="store_true")
    op = sub.add_parser("open", help="dispute a line for a library (within the window)")
    op.add_argument("reference", help="the statement's reference")
    op.add_argument("posting", type=int, help="the line's posting id (记账号 Posting ID)")
    op.add_argument("--agency", required=True, help="the disputing library's symbol")
    op.add_argument("--reason", required=True)
    op.add_argument("--actor", default="cli")
    for name, helptext in (("accept", "accept: reverse the charge in the open period"),
                           ("reject", "reject, with the reason")):
        r = sub.add_parser(name, help=helptext)
        r.add_argument("dispute", type=int)
        r.add_argument("--reason", required=True)
        r.add_argument("--actor", default="cli")
        if name == "accept":
            r.add_argument("--corrected-fee", help="charge again at this lower fee instead "
                           "of cancelling the charge, e.g. 12.00")


async def disputes_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        return await _list(settings, args)
    if args.action == "open":
        return await _open(settings, args)
    return await _resolve(settings, args)


COMMANDS = [Command("disputes", "statement lines libraries contest: list, open, accept, reject",
                    disputes_command, _arguments)]
