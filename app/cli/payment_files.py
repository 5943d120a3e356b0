"""`run.py payments account ...` and `run.py payments file ...`: agencies' bank accounts
and the file of the centre's outgoing payments for its bank (issue 17).

    payments account set SYMBOL --holder NAME (--iban X [--bic B] | --account N
                         --bank-code C) [--bank-name NAME] [--country CN]
    payments account show [SYMBOL] [--json]        (numbers masked)
    payments account remove SYMBOL
    payments file (--run N | --period P) [--format pain001|csv] [--execution-date D]
                  [--out DIR] [--again]

Account numbers are printed masked ('**** 6789'); the full number is only in the
bank file. The file's format is `pain001` (the version in
settings.payments.pain001_version) or `csv`.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from zoneinfo import ZoneInfo

from app.cli.commands import EXIT_USAGE, fail, table
from app.cli.finance_actions import Action, money_text, parse_day, today
from infra.database import connect
from schemas.settings import Settings
from settlement import bank_accounts, pain001
from settlement.bank_accounts import BankAccount, BankAccountError, CentreAccountMissing
from settlement.pain001 import FileFormat, NothingToPay, PaymentFileError

# --------------------------------------------------------------------------
# payments account set | show | remove
# --------------------------------------------------------------------------


async def _account(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        if args.account_action == "set":
            try:
                a = await bank_accounts.set_account(
                    conn, args.symbol, args.holder, actor=args.actor, iban=args.iban,
                    bic=args.bic, account_id=args.account, bank_code=args.bank_code,
                    bank_name=args.bank_name, country=args.country)
            except BankAccountError as exc:
                return fail(f"{args.symbol}: {exc}", EXIT_USAGE)
            print(f"{a.agency}: account set, {a}")
            return 0
        if args.account_action == "remove":
            if not await bank_accounts.remove_account(conn, args.symbol, actor=args.actor):
                return fail(f"{args.symbol} has no bank account to remove", EXIT_USAGE)
            print(f"{args.symbol}: bank account removed")
            return 0
        found = await bank_accounts.all_current(conn)
    finally:
        await conn.close()
    shown = [a for s, a in found.items() if args.symbol in (None, s)]
    if args.symbol is not None and not shown:
        return fail(f"{args.symbol} has no bank account", EXIT_USAGE)
    _show(shown, as_json=args.json)
    return 0


def _show(accounts: list[BankAccount], *, as_json: bool) -> None:
    if as_json:
        print(json.dumps([a.to_json() for a in accounts], ensure_ascii=False, indent=2))
        return
    table(["agency", "holder", "scheme", "account", "bank code", "bank", "country",
           "changed by", "changed at"],
          [(a.agency, a.holder, a.scheme.value, a.masked, a.bank_code or "",
            a.bank_name or "", a.country, a.changed_by or "",
            a.changed_at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M")
            if a.changed_at else "") for a in accounts])
    if not accounts:
        print("no bank accounts on file")


def _account_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="account_action", required=True, metavar="ACTION")
    s = sub.add_parser("set", help="set an agency's account (kept with its history)")
    s.add_argument("symbol", help="the agency's symbol, e.g. CALIS:100010")
    s.add_argument("--holder", required=True,
                   help="the account holder's name as the bank has it (Chinese allowed)")
    which = s.add_mutually_exclusive_group(required=True)
    which.add_argument("--iban", help="an IBAN (spaces allowed)")
    which.add_argument("--account", help="a domestic account number (CN: 8 to 32 digits)")
    s.add_argument("--bic", help="the BIC of an IBAN account's bank")
    s.add_argument("--bank-code", help="a domestic account's bank code (CN: CNAPS, 12 "
                                       "digits)")
    s.add_argument("--bank-name", help="the bank's (branch's) name, e.g. 中国工商银行北京分行")
    s.add_argument("--country", help="ISO 3166 country of a domestic account (default CN)")
    s.add_argument("--actor", default="cli", help="who sets it (kept in the history)")
    show = sub.add_parser("show", help="agencies' current accounts (numbers masked)")
    show.add_argument("symbol", nargs="?", help="one agency only")
    show.add_argument("--json", action="store_true")
    r = sub.add_parser("remove", help="the agency has no account from now on")
    r.add_argument("symbol")
    r.add_argument("--actor", default="cli", help="who removes it (kept in the history)")


# --------------------------------------------------------------------------
# payments file
# --------------------------------------------------------------------------

def file_format(settings: Settings, name: str) -> FileFormat:
    """`pain001` is the version the consortium's bank takes (settings); `csv` the CSV."""
    return FileFormat.CSV if name == "csv" else FileFormat(settings.payments.pain001_version)


async def _file(settings: Settings, args: argparse.Namespace) -> int:
    try:
        day = parse_day(args.execution_date, "--execution-date", today(settings))
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    fmt = file_format(settings, args.format)
    conn = await connect(settings.database_url)
    try:
        run_id = args.run
        if args.period is not None:
            run_id = await pain001.run_of_period(conn, args.period)
            if run_id is None:
                return fail(f"period {args.period!r} has no closed settlement run",
                            EXIT_USAGE)
        try:
            made = await pain001.make_file(
                conn, settings.payments, run_id=run_id, fmt=fmt, execution_date=day,
                directory=args.out or pain001.payments_dir(settings), actor=args.actor,
                now=datetime.datetime.now(ZoneInfo(settings.timezone)), again=args.again)
        except CentreAccountMissing as exc:
            return fail(str(exc), EXIT_USAGE)
        except NothingToPay as exc:
            _left_out(exc.left_out)
            return fail(str(exc))
        except PaymentFileError as exc:
            return fail(str(exc))
    finally:
        await conn.close()
    print(made.path)
    print(f"{fmt.value} file {made.message_id}: {len(made.payments)} payment(s), "
          f"execution date {day}")
    for currency, total in made.control_sums.items():
        print(f"  control sum {currency} {money_text(total.minor, currency)}")
    _left_out(made.left_out)
    print("nothing is marked paid: record the payments from the bank statement or with "
          "`run.py payments record`")
    return 0


def _left_out(left: tuple[pain001.LeftOut, ...]) -> None:
    if not left:
        return
    print(f"left out ({len(left)}):")
    table(["reference", "agency", "outstanding", "why"],
          [(x.due.reference, x.due.agency,
            f"{money_text(x.due.outstanding.minor, x.due.currency)} {x.due.currency}",
            x.reason) for x in left], right=(2,))
    if any(x.reason.startswith("already in") for x in left):
        print("(--again pays those again, e.g. after the bank refused the earlier file)")


def _file_arguments(p: argparse.ArgumentParser) -> None:
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--run", type=int, help="pay what the centre owes from this run")
    which.add_argument("--period", help="... from this period's run, YYYY-MM")
    p.add_argument("--format", choices=["pain001", "csv"], default="pain001",
                   help="pain001: ISO 20022 (the version in settings.payments."
                        "pain001_version); csv: one row per payment")
    p.add_argument("--execution-date", help="the date the bank is to pay, YYYY-MM-DD "
                                            "(default: today)")
    p.add_argument("--out", type=Path, help="write the file here (default: "
                                                  "<data_dir>/payments)")
    p.add_argument("--again", action="store_true",
                   help="also pay statements an earlier file already pays")
    p.add_argument("--actor", default="cli", help="who makes the file (kept with it)")


ACTIONS: list[Action] = [
    Action("account", "agencies' bank accounts: set, show (masked), remove", _account,
           _account_arguments),
    Action("file", "the centre's outgoing payments as a pain.001 or CSV file for its bank",
           _file, _file_arguments),
]
