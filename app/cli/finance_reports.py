"""`run.py payments report ...`: reports for finance staff (issue 17).

    run.py payments report cash [--from DATE] [--to DATE] [--format text|csv|pdf] [--out FILE]
    run.py payments report agency SYMBOL [--format text|csv|pdf] [--out FILE]

`cash`: the centre's cash position and subsidy outlay against budget per period;
`agency`: one agency's account with the centre since its balance was last zero.
Text goes to stdout unless --out is given; CSV to stdout or the file; a PDF needs
--out (binary on a terminal helps nobody).
"""

from __future__ import annotations

import argparse
import datetime
import enum
import sys
from pathlib import Path
from typing import TextIO

from app.cli.commands import EXIT_USAGE, fail, table
from app.cli.finance_actions import Action, parse_day
from infra.database import connect
from schemas.settings import Settings
from settlement.calendar import zone
from settlement.finance_report_files import (
    ReportDocument,
    account_document,
    cash_document,
    csv_bytes,
    write_pdf,
)
from settlement.finance_reports import ReportError, fetch_agency_account, fetch_cash_report
from settlement.statement_model import GENERATED_LABEL


class Format(enum.StrEnum):
    TEXT = "text"
    CSV = "csv"
    PDF = "pdf"


def generated_at(settings: Settings) -> str:
    """Now in the consortium's time zone, as the reports print it."""
    return datetime.datetime.now(zone(settings.timezone)).isoformat(timespec="seconds")


def print_text(doc: ReportDocument, out: TextIO | None = None) -> None:
    """The report as aligned text tables."""
    out = out or sys.stdout
    print(doc.title, file=out)
    for line in doc.lines:
        print(line, file=out)
    for t in doc.tables:
        print(f"\n{t.title}", file=out)
        table(t.header, t.rows, right=tuple(sorted(t.numeric)), out=out)
    for n in doc.notes:
        print(f"\n注 Note: {n}", file=out)
    print(f"\n{GENERATED_LABEL} {doc.generated_at}  {doc.centre}", file=out)


def emit(doc: ReportDocument, fmt: Format, out: Path | None) -> int:
    """Write the report as asked; 0, or the usage error's exit code."""
    if fmt is Format.PDF:
        if out is None:
            return fail("--format pdf needs --out FILE", EXIT_USAGE)
        write_pdf(doc, out)
    elif fmt is Format.CSV:
        data = csv_bytes(doc)
        if out is None:
            sys.stdout.flush()
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        else:
            out.write_bytes(data)
    elif out is None:
        print_text(doc)
    else:
        with out.open("w", encoding="utf-8") as f:
            print_text(doc, f)
    if out is not None:
        print(f"{doc.title}: written to {out}", file=sys.stderr)
    return 0


def _day(text: str | None, what: str) -> datetime.date | None:
    """An optional date option: None when not given (the report is open that way)."""
    return None if text is None else parse_day(text, what, datetime.date.min)


async def _report(settings: Settings, args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else None
    if out is not None and not out.parent.is_dir():
        return fail(f"--out {args.out}: no directory {out.parent}", EXIT_USAGE)
    fmt = Format(args.format)
    if fmt is Format.PDF and out is None:
        return fail("--format pdf needs --out FILE", EXIT_USAGE)
    stamp, centre = generated_at(settings), settings.payments.centre_name
    if args.report == "cash":
        try:
            first = _day(args.date_from, "--from")
            last = _day(args.date_to, "--to")
        except ValueError as exc:
            return fail(str(exc), EXIT_USAGE)
        conn = await connect(settings.database_url)
        try:
            report = await fetch_cash_report(conn, date_from=first, date_to=last)
        except ReportError as exc:
            return fail(str(exc), EXIT_USAGE)
        finally:
            await conn.close()
        return emit(cash_document(report, generated_at=stamp, centre=centre), fmt, out)
    conn = await connect(settings.database_url)
    try:
        account = await fetch_agency_account(conn, args.symbol)
    except ReportError as exc:
        return fail(str(exc), EXIT_USAGE)
    finally:
        await conn.close()
    return emit(account_document(account, generated_at=stamp, centre=centre), fmt, out)


def _output_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=[f.value for f in Format], default=Format.TEXT.value,
                   help="text (default), csv (Excel-safe, as the statements) or pdf")
    p.add_argument("--out", metavar="FILE", help="write to FILE (a PDF needs it)")


def _report_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="report", required=True, metavar="REPORT")
    cash = sub.add_parser("cash", help="the centre's cash position and subsidy outlay "
                                       "against budget, per settlement run")
    cash.add_argument("--from", dest="date_from", metavar="DATE",
                      help="only runs ending on or after DATE (YYYY-MM-DD); earlier runs' "
                           "cash is brought forward")
    cash.add_argument("--to", dest="date_to", metavar="DATE",
                      help="only runs starting on or before DATE (YYYY-MM-DD)")
    _output_arguments(cash)
    agency = sub.add_parser("agency", help="one agency's account with the centre since its "
                                           "balance was last zero")
    agency.add_argument("symbol", metavar="SYMBOL", help="the agency, e.g. CALIS:100010")
    _output_arguments(agency)


ACTIONS: list[Action] = [
    Action("report", "finance reports: cash position and subsidy per period (cash), an "
           "agency's account since its last zero balance (agency)", _report,
           _report_arguments),
]
