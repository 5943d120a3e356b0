"""`run.py copyright`: the copyright counts of copy requests, for an audit (issue 19).

  run.py copyright report [--year Y] [--requester SYMBOL] [--csv FILE]
  run.py copyright purge                 delete declarations older than keep_years

The report has one line per requesting library, journal and year: the copy requests
recorded, those counted towards the limit (recent issues), the limit in force, and what
the hub did past it (routed to the pay-per-view supplier, held, flagged), and how many
came without an accepted declaration (broker/copyright.py). `--csv` writes the same as a
CSV file Excel opens with its Chinese intact (the statements' form).
"""

from __future__ import annotations

import argparse
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from app.cli.commands import (
    EXIT_USAGE,
    ConnectedActions,
    connected_command,
    fail,
    table,
)
from broker import copyright
from infra.database import Connection
from schemas.settings import Settings
from settlement.statement_csv import csv_head, csv_line
from settlement.statement_model import clean_text

HEADER = ("年份 Year", "申请馆 Requester", "期刊 Journal", "复制请求 Copies",
          "计入限额 Counted", "限额 Limit", "转付费供应 Routed", "暂停 Held", "标记 Flagged",
          "无声明 Undeclared")
_TEXT_MAX = 200



def _cells(r: copyright.ReportRow) -> tuple[object, ...]:
    return (r.year, r.requester, r.journal, r.copies, r.counted,
            "-" if r.limit is None else r.limit, r.routed, r.held, r.flagged, r.undeclared)


def _write(path: Path, data: bytes) -> str | None:
    """Write the file (a few kilobytes: no thread needed); what went wrong, or None."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


async def _report(settings: Settings, args: argparse.Namespace,
                  conn: Connection) -> int:
    if args.year is not None and not 1000 <= args.year <= 9999:
        return fail(f"--year {args.year}: a four-digit year", EXIT_USAGE)
    requester = args.requester.strip() if args.requester else None
    rows = await copyright.report(conn, year=args.year, requester=requester)
    if args.csv:
        data = csv_head(HEADER) + b"".join(
            csv_line([clean_text(str(c), _TEXT_MAX) if isinstance(c, str) else c
                      for c in _cells(r)]) for r in rows)
        problem = _write(Path(args.csv), data)
        if problem:
            return fail(f"--csv {args.csv}: {problem}", EXIT_USAGE)
        print(f"{len(rows)} line(s) written to {args.csv}")
        return 0
    if not rows:
        print("no copy requests recorded" + (f" in {args.year}" if args.year else "")
              + (f" for {requester}" if requester else ""))
        return 0
    table(HEADER, [_cells(r) for r in rows], right=(0, 3, 4, 5, 6, 7, 8, 9))
    return 0


async def _purge(settings: Settings, args: argparse.Namespace,
                 conn: Connection) -> int:
    today = datetime.now(ZoneInfo(settings.timezone)).date()
    deleted = await copyright.purge_declarations(conn, settings, today)
    print(f"{deleted} declaration(s) older than {settings.copyright.keep_years} years deleted")
    return 0


def _report_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--year", type=int, help="the calendar year of the requests (default: all)")
    p.add_argument("--requester", help="one requesting library's symbol")
    p.add_argument("--csv", metavar="FILE", help="write a CSV file (UTF-8 with BOM, for Excel)")


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


# name: (help, run, arguments)
ACTIONS: ConnectedActions = {
    "report": ("copies per requesting library, journal and year: counts, the limit, what "
               "was done", _report, _report_arguments),
    "purge": ("delete copyright declarations older than settings.copyright.keep_years",
              _purge, _no_arguments),
}


COMMANDS = [connected_command("copyright", "copyright on copies: the counts per library "
                              "and journal for an audit, the purge of old declarations",
                              ACTIONS)]
