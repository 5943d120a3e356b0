"""`run.py claims open|list|show|accept|contest|settle`: loss and damage claims on book
loans (issue 19; the rules: settlement/claims.py, the transaction's side:
broker/claims.py).

The centre's ILL desk records what a library reports (by phone, mail or its ILL
system's note), the other side's answer, and the settlement, which charges the
responsible party through the ledger and closes the transaction.
"""

from __future__ import annotations

import argparse
import json

from app.cli.commands import EXIT_USAGE, Command, fail, table
from app.cli.finance_actions import parse_amount, parse_day, today
from broker import claims as desk_claims
from broker.dispatch.desk import Desk
from infra.database import connect
from schemas.money import Money
from schemas.settings import Settings
from settlement import claims
from settlement.claims import Claim, ClaimRefused, Kind, Place, Side, Step


def _money(m: Money | None) -> str:
    return f"{m.amount_text()} {m.currency}" if m is not None else ""


def _show_lines(c: Claim) -> list[str]:
    lines = [f"claim {c.id}: {c.kind} {c.place} on {c.happened_on}, reported by "
             f"{c.reported_by} ({c.party(c.reported_by)}) — {c.state}",
             f"  transaction {c.transaction_id}: {c.title or '-'} ({c.item_type or 'item'}); "
             f"requester {c.requester}, supplier {c.supplier}",
             f"  replacement {_money(c.replacement)} ({c.replacement_source}) + processing fee "
             f"{_money(c.fee)} = {_money(c.total)}; {c.responsible} responsible",
             f"  evidence: {c.evidence}",
             f"  opened by {c.opened_by} at {c.opened_at.isoformat(timespec='seconds')}"]
    if c.answer is not None:
        lines.append(f"  {c.answer} by {c.answered_by}: {c.answer_note or '-'}")
    if c.payer is not None:
        lines.append(f"  settled by {c.settled_by}: {c.payer} pays {_money(c.settled_amount)}"
                     f" (event {c.event}, posting {c.charge_posting or '-'}"
                     + (f", loan fee reversed by posting {c.reversal_posting}"
                        if c.reversal_posting else "") + f") {c.settle_note or ''}".rstrip())
    return lines


async def _list(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        found = await claims.claims(conn, agency=args.agency, transaction_id=args.transaction,
                                    open_only=args.open)
    finally:
        await conn.close()
    if args.json:
        print(json.dumps([c.to_json() for c in found], ensure_ascii=False, indent=2))
        return 0
    table(["id", "transaction", "kind", "where", "requester", "supplier", "total", "state",
           "payer", "settled"],
          [(c.id, c.transaction_id, c.kind.value, c.place.value, c.requester, c.supplier,
            _money(c.total), c.state.value, c.payer.value if c.payer else "",
            _money(c.settled_amount)) for c in found], right=(0, 6, 9))
    return 0


async def _show(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        c = await claims.claim(conn, args.claim)
    finally:
        await conn.close()
    if c is None:
        return fail(f"no claim {args.claim}", EXIT_USAGE)
    print(json.dumps(c.to_json(), ensure_ascii=False, indent=2) if args.json
          else "\n".join(_show_lines(c)))
    return 0


async def _open(settings: Settings, desk: Desk, args: argparse.Namespace) -> int:
    try:
        declared = (parse_amount(args.declared_value, settings.currency)
                    if args.declared_value is not None else None)
    except ValueError as exc:
        return fail(f"--declared-value: {exc}", EXIT_USAGE)
    try:
        happened = parse_day(args.when, "--when", today(settings))
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    conn = await connect(settings.database_url)
    try:
        c = await desk_claims.open_claim(
            desk, conn, args.transaction, kind=Kind(args.kind), place=Place(args.where),
            happened_on=happened, evidence=args.evidence, reported_by=Side(args.by),
            declared=declared, actor=args.actor)
    finally:
        await conn.close()
    print(f"claim {c.id} opened: {c.kind} {c.place}, {_money(c.total)} "
          f"({_money(c.replacement)} + fee {_money(c.fee)}), {c.responsible} responsible")
    return 0


async def _answer(settings: Settings, desk: Desk, args: argparse.Namespace) -> int:
    step = Step.ACCEPTED if args.action == "accept" else Step.CONTESTED
    conn = await connect(settings.database_url)
    try:
        c = await desk_claims.answer(desk, conn, args.claim, step, actor=args.actor,
                                     note=args.note if step is Step.ACCEPTED else args.reason)
    finally:
        await conn.close()
    print(f"claim {c.id} {c.state}")
    return 0


async def _settle(settings: Settings, desk: Desk, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        amount = None
        if args.amount is not None:
            found = await claims.claim(conn, args.claim)
            try:
                amount = parse_amount(args.amount, found.total.currency if found
                                      else settings.currency)
            except ValueError as exc:
                return fail(f"--amount: {exc}", EXIT_USAGE)
        c = await desk_claims.settle(desk, conn, args.claim, actor=args.actor, note=args.note,
                                     payer=Side(args.payer) if args.payer else None,
                                     amount=amount)
    finally:
        await conn.close()
    print(f"claim {c.id} settled: the {c.payer} pays {_money(c.settled_amount)}"
          + (f" (posting {c.charge_posting}, event {c.event}, in the next settlement run)"
             if c.charge_posting else "")
          + (f"; the loan fee is reversed (posting {c.reversal_posting})"
             if c.reversal_posting else ""))
    return 0


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = sub.add_parser("list", help="claims, open and settled")
    ls.add_argument("--agency", help="where this agency is requester or supplier")
    ls.add_argument("--transaction", help="of this transaction")
    ls.add_argument("--open", action="store_true", help="only claims not settled yet")
    ls.add_argument("--json", action="store_true")
    sh = sub.add_parser("show", help="one claim, its steps and its postings")
    sh.add_argument("claim", type=int)
    sh.add_argument("--json", action="store_true")
    op = sub.add_parser("open", help="report a loaned item lost or damaged")
    op.add_argument("transaction", help="the loan's transaction id (ILL-...)")
    op.add_argument("--kind", required=True, choices=[k.value for k in Kind])
    op.add_argument("--where", required=True, choices=[w.value for w in Place],
                    help="in transit out, with the reader, in transit back")
    op.add_argument("--when", help="the day it happened, YYYY-MM-DD (default: today)")
    op.add_argument("--by", required=True, choices=[s.value for s in Side],
                    help="which side reports it")
    op.add_argument("--evidence", required=True, help="what happened and what shows it")
    op.add_argument("--declared-value", help="the item's declared value, e.g. 180.00 "
                    "(default: the supplier's schedule by item type)")
    op.add_argument("--actor", default="cli")
    ac = sub.add_parser("accept", help="the other side accepts the claim")
    ac.add_argument("claim", type=int)
    ac.add_argument("--note", default="")
    ac.add_argument("--actor", default="cli")
    co = sub.add_parser("contest", help="the other side contests it; the centre decides")
    co.add_argument("claim", type=int)
    co.add_argument("--reason", required=True)
    co.add_argument("--actor", default="cli")
    st = sub.add_parser("settle", help="settle: charge the responsible party through the "
                        "ledger and close the loan")
    st.add_argument("claim", type=int)
    st.add_argument("--payer", choices=[s.value for s in Side],
                    help="who pays: required for a contested claim (the centre decides)")
    st.add_argument("--amount", help="a contested claim: the amount decided, e.g. 60.00")
    st.add_argument("--note", default="")
    st.add_argument("--actor", default="cli")


async def claims_command(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "list":
        return await _list(settings, args)
    if args.action == "show":
        return await _show(settings, args)
    desk = Desk.create(settings)
    try:
        if args.action == "open":
            return await _open(settings, desk, args)
        if args.action == "settle":
            return await _settle(settings, desk, args)
        return await _answer(settings, desk, args)
    except ClaimRefused as exc:
        return fail(f"{exc.code}: {exc.message}", EXIT_USAGE)
    finally:
        await desk.catalogues.close()


COMMANDS = [Command("claims", "loss and damage claims on loans: open, list, show, accept, "
                    "contest, settle", claims_command, _arguments)]
