"""`run.py pull-slips SYMBOL`: a supplier's pull slips and shipping labels as a PDF.

Exit 0 written (or mailed, or mailed already that day), 1 `--mail` for a supplier with
no e-mail address, 2 bad input: a date that is not YYYY-MM-DD, no such agency, or one
that is not a supplier.
"""

from __future__ import annotations

import argparse
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from app.cli.commands import EXIT_USAGE, Command, fail
from broker.pull_slip_mail import send_pull_slips, slip_path
from broker.pull_slip_pdf import LABEL_SIZE, render
from broker.pull_slips import NotASupplier, pull_list
from infra.database import create_pool
from schemas.settings import Settings


async def pull_slips(settings: Settings, args: argparse.Namespace) -> int:
    zone = ZoneInfo(settings.timezone)
    now = datetime.now(UTC)
    try:
        day = date.fromisoformat(args.date) if args.date else now.astimezone(zone).date()
    except ValueError:
        return fail(f"--date {args.date!r}: want YYYY-MM-DD, e.g. 2026-12-01", EXIT_USAGE)
    if args.mail and args.out:
        return fail("--mail writes the day's file in the data directory: leave out --out",
                    EXIT_USAGE)
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        async with pool.acquire() as conn:
            try:
                pull = await pull_list(conn, args.symbol, day, zone, now)
            except NotASupplier as exc:
                return fail(str(exc), EXIT_USAGE)
        if args.mail:
            if not pull.supplier_email:
                return fail(f"{args.symbol} has no e-mail address to mail its pull slips "
                            "to")
            if not pull.loans:
                print(f"{args.symbol}: no loans to pull on {day}; nothing mailed")
                return 0
            sent = await send_pull_slips(pool, settings, day, suppliers=[args.symbol],
                                         now=now)
            if not sent:
                print(f"{args.symbol}: the pull slips of {day} were mailed already "
                      f"(once a day); the file is {slip_path(settings, day, args.symbol)}")
                return 0
            print(f"{args.symbol}: {sent[0].loans} loan(s) to pull on {day}; "
                  f"{sent[0].path} mailed to {pull.supplier_email}")
            return 0
    finally:
        await pool.close()
    out = Path(args.out) if args.out else slip_path(settings, day, args.symbol)
    done = render(pull, out, zone)
    print(f"{args.symbol}: {len(pull.loans)} loan(s) to pull on {day}; {out} "
          f"({done.pages} page(s) of {LABEL_SIZE[0] / 72 * 25.4:.0f} x "
          f"{LABEL_SIZE[1] / 72 * 25.4:.0f} mm)")
    for loan in pull.loans:
        print(f"  {loan.call_number or '-':<16} {loan.transaction_id}  {loan.title}")
    return 0


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("symbol", help="the supplier, e.g. ISIL:CN-SHL")
    p.add_argument("--date", help="the consortium-local day, YYYY-MM-DD (default today): "
                                  "loans forwarded before its end and not yet answered")
    p.add_argument("--out", metavar="FILE",
                   help="where to write the PDF (default <data dir>/pull-slips/DATE/"
                        "SYMBOL.pdf)")
    p.add_argument("--mail", action="store_true",
                   help="also mail it to the supplier, as the hub's daily job does (once "
                        "per supplier and day)")


COMMANDS = [
    Command("pull-slips", "a supplier's loans to pull today: pull slips and shipping "
            "labels (PDF, 100x150 mm), the transaction id as a barcode", pull_slips,
            _arguments),
]
