"""`run.py deposit ...`: prepaid deposit accounts (issue 17; settlement/deposits.py).

open, topup, refund, close, show, list and alerts (the low-balance sweep, now).
"""

from __future__ import annotations

import argparse
import datetime
import json

from app.cli.commands import (
    EXIT_USAGE,
    ConnectedActions,
    connected_command,
    fail,
    table,
)
from app.cli.finance_actions import parse_amount, today
from infra.database import Connection
from schemas.money import DEFAULT_CURRENCY, Money
from schemas.settings import Settings
from settlement import deposits
from settlement.deposits import DepositBalance, DepositError


def _money(m: Money) -> str:
    return f"{m.amount_text()} {m.currency}"


def balance_line(b: DepositBalance) -> str:
    state = " closed" if b.closed else (" LOW" if b.low else "")
    return (f"{b.agency}: deposit {_money(b.deposit)}, unsettled {_money(b.unsettled)}, "
            f"available {_money(b.available)} (alert below {_money(b.threshold)}){state}")


async def _open(settings: Settings, args: argparse.Namespace, conn: Connection) -> int:
    currency = args.currency.strip().upper()
    try:
        low = None if args.low is None else parse_amount(args.low, currency).minor
        acct = await deposits.open_account(conn, args.symbol, currency, low, args.actor)
    except ValueError as exc:  # DepositError too
        return fail(str(exc), EXIT_USAGE)
    b = await deposits.balance(conn, acct.agency, rules=settings.payments)
    print(f"deposit account opened in {acct.currency}; " + balance_line(b))
    return 0


async def _topup(settings: Settings, args: argparse.Namespace, conn: Connection) -> int:
    try:
        acct = await deposits.account(conn, args.symbol)
        amount = parse_amount(args.amount, acct.currency)
        moved = await deposits.topup(conn, args.symbol, amount, args.reference, args.actor,
                                     source_key=args.source_key)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    b = await deposits.balance(conn, args.symbol, rules=settings.payments)
    said = "already recorded" if moved.duplicate else "recorded"
    print(f"top-up {_money(moved.amount)} {said} (movement {moved.id}); " + balance_line(b))
    return 0


async def _refund(settings: Settings, args: argparse.Namespace, conn: Connection) -> int:
    try:
        acct = await deposits.account(conn, args.symbol)
        amount = parse_amount(args.amount, acct.currency)
        moved = await deposits.refund(conn, args.symbol, amount, args.reference, args.actor)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    b = await deposits.balance(conn, args.symbol, rules=settings.payments)
    print(f"refund {_money(-moved.amount)} recorded (movement {moved.id}); " + balance_line(b))
    return 0


async def _close(settings: Settings, args: argparse.Namespace, conn: Connection) -> int:
    try:
        acct = await deposits.close_account(conn, args.symbol, args.reason, args.actor)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    print(f"deposit account of {acct.agency} closed")
    return 0


async def _show(settings: Settings, args: argparse.Namespace, conn: Connection) -> int:
    try:
        b = await deposits.balance(conn, args.symbol, rules=settings.payments)
    except DepositError as exc:
        return fail(str(exc), EXIT_USAGE)
    moved = await deposits.movements(conn, args.symbol)
    if args.json:
        print(json.dumps({**b.to_json(), "movements": [
            {"id": m.id, "kind": m.kind.value, "amount": m.amount.amount_text(),
             "reference": m.reference, "dueId": m.due_id, "sourceKey": m.source_key,
             "actor": m.actor, "at": m.at.isoformat()} for m in moved]},
            ensure_ascii=False, indent=2))
        return 0
    print(balance_line(b))
    table(["id", "at", "kind", "amount", "reference", "by"],
          [(m.id, m.at.astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M"), m.kind.value,
            m.amount.amount_text(), m.reference or "", m.actor) for m in moved], right=(0, 3))
    return 0


async def _list(settings: Settings, args: argparse.Namespace, conn: Connection) -> int:
    found = await deposits.balances(conn, rules=settings.payments)
    if args.json:
        print(json.dumps([b.to_json() for b in found], ensure_ascii=False, indent=2))
        return 0
    table(["agency", "cur", "deposit", "unsettled", "available", "threshold", ""],
          [(b.agency, b.currency, b.deposit.amount_text(), b.unsettled.amount_text(),
            b.available.amount_text(), b.threshold.amount_text(),
            "closed" if b.closed else ("LOW" if b.low else "")) for b in found],
          right=(2, 3, 4, 5))
    if not found:
        print("no deposit accounts")
    return 0


async def _alerts(settings: Settings, args: argparse.Namespace, conn: Connection) -> int:
    sent = await deposits.sweep_low_balances(conn, settings, today(settings))
    for a in sent:
        mailed = "mailed" if a.mail_id is not None else "no finance e-mail"
        print(f"alert {a.id}: " + balance_line(a.balance) + f" ({mailed})")
    print(f"{len(sent)} low-balance alert(s) sent")
    return 0


def _symbol(p: argparse.ArgumentParser) -> None:
    p.add_argument("symbol", help="the agency's symbol, e.g. CALIS:100010")


def _actor(p: argparse.ArgumentParser) -> None:
    p.add_argument("--actor", default="cli", help="who does it (kept with the row)")


def _open_arguments(p: argparse.ArgumentParser) -> None:
    _symbol(p)
    p.add_argument("--currency", default=DEFAULT_CURRENCY, help="the deposit's currency")
    p.add_argument("--low", help="alert when the available balance falls below this, e.g. "
                                 "500.00 (default: the payments.deposit_low_minor setting)")
    _actor(p)


def _money_arguments(p: argparse.ArgumentParser) -> None:
    _symbol(p)
    p.add_argument("amount", help="in the deposit's currency, e.g. 5000.00")
    p.add_argument("--reference", help="the bank's or the payer's reference")
    _actor(p)


def _topup_arguments(p: argparse.ArgumentParser) -> None:
    _money_arguments(p)
    p.add_argument("--source-key", help="a key that makes the top-up once only (e.g. the "
                                        "bank entry's id): a second top-up with it records "
                                        "nothing")


def _close_arguments(p: argparse.ArgumentParser) -> None:
    _symbol(p)
    p.add_argument("--reason", required=True, help="why the account is closed")
    _actor(p)


def _show_arguments(p: argparse.ArgumentParser) -> None:
    _symbol(p)
    p.add_argument("--json", action="store_true")


def _json_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def _no_arguments(p: argparse.ArgumentParser) -> None:
    pass


# name: (help, run, arguments)
ACTIONS: ConnectedActions = {
    "open": ("open an agency's prepaid deposit account", _open, _open_arguments),
    "topup": ("record money the agency paid into its deposit", _topup, _topup_arguments),
    "refund": ("record money paid back out of the deposit", _refund, _money_arguments),
    "close": ("close a deposit account whose balance is zero", _close, _close_arguments),
    "show": ("one deposit: balance, unsettled charges, available, movements", _show,
             _show_arguments),
    "list": ("every deposit account, the low ones marked", _list, _json_argument),
    "alerts": ("send the low-balance alerts due now (once per fall below the threshold)",
               _alerts, _no_arguments),
}


COMMANDS = [connected_command("deposit", "prepaid deposit accounts: open, top up, balances, "
                    "low-balance alerts", ACTIONS)]
