"""The demo after its settlement run (issue 17): the libraries' bank accounts, what the
bank reported as paid, the centre's payment file and a short aging table.

The demo's libraries get domestic (CN) accounts made from their symbols, as the
centre would have them on file; some libraries that owe the centre pay in full and
some in part, as a bank statement would show, so the aging table has all kinds.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable

import asyncpg

from infra.database import Connection
from schemas.money import Money
from schemas.settings import Settings
from settlement import bank_accounts, dues
from settlement.calendar import local_date
from settlement.dues import Direction, PaymentSource
from settlement.pain001 import FileFormat, make_file, payments_dir

# The demo centre's own account and its bank's CNAPS code (made-up numbers of the right
# shape: an account number, and a 12-digit code whose first three digits name the bank).
CENTRE_ACCOUNT = "110060149018170012345"
CENTRE_BANK_CODE = "104100000004"
# A few banks' CNAPS prefixes (first three digits: the bank), for the libraries' accounts.
BANKS = (("102", "中国工商银行 ICBC"), ("103", "中国农业银行 ABC"), ("104", "中国银行 BOC"),
         ("105", "中国建设银行 CCB"))
TOP = 5


def demo_account(symbol: str) -> tuple[str, str, str]:
    """(account number, CNAPS code, bank name) for a demo library, stable per symbol."""
    digest = hashlib.sha256(symbol.encode()).hexdigest()
    digits = str(int(digest[:16], 16)).rjust(19, "0")[:19]
    prefix, bank = BANKS[int(digest[16], 16) % len(BANKS)]
    return "6222" + digits[4:], prefix + digits[:9], bank


async def after_the_run(settings: Settings, pool: asyncpg.Pool, run_id: int,
                        out: Callable[[str], None]) -> list[str]:
    """Accounts, payments as the bank reports them, the payment file, the aging table;
    the lines for the demo's summary."""
    now = datetime.datetime.now(datetime.UTC)
    today = local_date(now, settings.timezone)
    async with pool.acquire() as conn:
        issued = await dues.positions(conn, run_id=run_id)
        names = {r["symbol"]: r["name"] for r in await conn.fetch(
            "SELECT symbol, name FROM agency WHERE symbol = ANY($1::text[])",
            [p.agency for p in issued])}
        for p in issued:
            number, code, bank = demo_account(p.agency)
            await bank_accounts.set_account(conn, p.agency, names[p.agency], actor="demo",
                                            account_id=number, bank_code=code,
                                            bank_name=bank, country="CN")
        paid = await _bank_reports(conn, issued, today)
        out(f"  payments: {len(issued)} statements ask to be paid; the bank reported "
            f"{paid} payment(s) in")
        made = await make_file(conn, settings.payments, run_id=run_id,
                               fmt=FileFormat(settings.payments.pain001_version),
                               execution_date=today + datetime.timedelta(days=1),
                               directory=payments_dir(settings), actor="demo", now=now)
        aging = [r for r in await dues.aging(conn, today)
                 if r.agency in {p.agency for p in issued}]
    sums = ", ".join(f"{m.amount_text()} {c}" for c, m in sorted(made.control_sums.items()))
    lines = [f"payment file    {made.path} ({made.format.value}, validated against the "
             f"ISO 20022 XSD): {len(made.payments)} transfers from the centre, {sums}"]
    return lines + aging_lines(aging)


async def _bank_reports(conn: Connection, issued: list[dues.Position],
                        today: datetime.date) -> int:
    """Every other library that owes pays in full, every fourth half of it: as a bank
    statement would report, quoting the reference."""
    owing = [p for p in issued if p.direction is Direction.TO_CENTRE]
    n = 0
    for i, p in enumerate(owing):
        if i % 4 == 3:
            continue
        amount = p.amount.minor if i % 2 == 0 else max(1, p.amount.minor // 2)
        await dues.record_payment(conn, p.due_id, Money(amount, p.currency), paid_on=today,
                                  source=PaymentSource.BANK, actor="demo",
                                  bank_reference=f"DEMO-{p.due_id}",
                                  source_key=f"demo:{p.due_id}")
        n += 1
    return n


def aging_lines(rows: list[dues.AgingRow]) -> list[str]:
    """The aging table in short: totals per age, and the libraries owing the most."""
    if not rows:
        return ["aging          nothing outstanding"]
    heads = [b[0] for b in dues.AGING_BUCKETS]
    out = []
    for cur in sorted({r.currency for r in rows}):
        mine = [r for r in rows if r.currency == cur]
        owed = [sum(r.owed_to_centre[i] for r in mine) for i in range(len(heads))]
        by_centre = sum(r.by_centre_minor for r in mine)
        cells = "  ".join(f"{h} days {Money(v, cur).amount_text()}"
                          for h, v in zip(heads, owed, strict=True))
        out.append(f"aging ({cur})    owed to the centre: {cells}; owed by the centre "
                   f"{Money(by_centre, cur).amount_text()}")
        for r in sorted(mine, key=lambda r: -r.to_centre_minor)[:TOP]:
            if r.to_centre_minor:
                out.append(f"                {r.agency:<24} owes "
                           f"{Money(r.to_centre_minor, cur).amount_text():>10} {cur}")
    return out
