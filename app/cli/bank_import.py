"""`run.py payments import FILE` and `run.py payments unmatched`: reconciliation from the
bank's camt.053/054 files (issue 17; settlement/reconcile.py does the work)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from app.cli.commands import EXIT_USAGE, fail, table
from app.cli.finance_actions import Action, parse_day, today
from infra.database import connect
from schemas.settings import Settings
from settlement import reconcile
from settlement.bank_accounts import mask
from settlement.camt import CamtError

# A statement file is a few MB even for a busy account; anything far larger is a mistake.
MAX_FILE_BYTES = 64 * 1024 * 1024


def read_file(path: Path) -> bytes:
    """The file's bytes (a CLI reads before it connects: blocking is fine here)."""
    with path.open("rb") as f:
        raw = f.read(MAX_FILE_BYTES + 1)
    if len(raw) > MAX_FILE_BYTES:
        raise ValueError(f"{path} is larger than {MAX_FILE_BYTES} bytes; a bank statement "
                         "file this large is not read")
    return raw


async def _import(settings: Settings, args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        raw = read_file(path)
    except OSError as exc:
        return fail(f"cannot read {path}: {exc.strerror or exc}", EXIT_USAGE)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    try:
        day = parse_day(args.date, "--date", today(settings))
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    conn = await connect(settings.database_url)
    try:
        report = await reconcile.import_file(
            conn, raw, file_name=path.name, actor=args.actor, today=day,
            dry_run=args.dry_run, centre_account=settings.payments.centre_account)
    except (CamtError, reconcile.ImportRefused) as exc:
        return fail(f"{path.name}: {exc}", EXIT_USAGE)
    finally:
        await conn.close()
    print_report(report)
    return 0


def _import_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", help="the bank's camt.053 statement or camt.054 notification (XML)")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would be matched and recorded; change nothing")
    p.add_argument("--date", help="today for the payments' messages, YYYY-MM-DD "
                   "(default: today)")
    p.add_argument("--actor", default="cli", help="who imports it (kept with the import)")


def print_report(report: reconcile.ImportReport, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    head = (f"{report.file_name}: {report.kind}.{report.version} {report.message_id}, "
            f"account {', '.join(mask(a) for a in report.account.split(', '))}")
    if report.already_imported:
        print(f"{head}\nalready imported (import {report.import_id}, the same bytes): "
              "nothing changed", file=out)
    elif report.dry_run:
        print(f"{head}\ndry run: nothing recorded", file=out)
    else:
        print(f"{head}\nimport {report.import_id}", file=out)
    print_items(report.items, out=out)
    counts = ", ".join(f"{report.count(o)} {o.value}" for o in reconcile.Outcome)
    print(f"{report.entries} transaction(s): {counts}", file=out)


def print_items(items: Sequence[reconcile.Item], *, out: TextIO,
                with_import: bool = False) -> None:
    rows = []
    for i in items:
        who = i.counterparty.name or ""
        if i.counterparty.account:
            who = f"{who} {mask(i.counterparty.account)}".strip()
        why = i.reason.value if i.reason else (i.matched_by.value if i.matched_by else "")
        row = [i.outcome.value, why, f"{i.amount.amount_text()} {i.amount.currency}",
               i.side.value, i.booked_on or "", i.reference or "", who,
               i.bank_reference or "", i.note]
        rows.append([i.import_id or "", *row] if with_import else row)
    headers = ["outcome", "reason / by", "amount", "side", "booked", "statement", "payer/payee",
               "bank ref", "note"]
    table(["import", *headers] if with_import else headers, rows,
          right=(3,) if with_import else (2,), out=out)


async def _unmatched(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        if args.import_id is not None and not await reconcile.import_exists(conn,
                                                                            args.import_id):
            return fail(f"no bank import {args.import_id}", EXIT_USAGE)
        items = await reconcile.unmatched(conn, args.import_id)
    finally:
        await conn.close()
    if not items:
        print("nothing unmatched")
        return 0
    print_items(items, out=sys.stdout, with_import=True)
    return 0


def _unmatched_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--import", dest="import_id", type=int, metavar="N",
                   help="only this import's (its number, as `payments import` printed it)")


ACTIONS: list[Action] = [
    Action("import", "read the bank's camt.053/054 file: match transactions to statements "
           "and record the payments (the same file twice changes nothing)", _import,
           _import_arguments),
    Action("unmatched", "bank transactions the imports could not match, with the reasons",
           _unmatched, _unmatched_arguments),
]
