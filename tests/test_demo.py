"""`run.py demo`, small and fast: the summary it prints agrees with the hub's database.

The demo runs in this process against the real servers, with its own database,
name prefix and agency symbols (so it never meets a user's demo or another test),
and keeps them (--keep) so the test can compare; the test removes them afterwards.
"""

from __future__ import annotations

import asyncio
import re
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest

from app import demo
from app.demo_report import DELIVERED, LateLoan, LoanFacts, LostLoan, loans_line
from broker.states import TERMINAL
from infra.database import with_database
from schemas.settings import Settings
from settlement import claims, ledger
from settlement.claims import Kind, Place, Side
from sim.clock import SimClock
from sim.mishaps import LoanMishaps, Mishap
from sim.network import load_network
from tests.support.tls import AMQPS_BASE, MachineTls


def test_mishaps_one_late_loan_and_one_lost_chosen_by_the_seed() -> None:
    for seed in range(6):
        m = LoanMishaps(seed, SimClock(3600))
        # The first lend gets the short due date; others meanwhile do not.
        assert m.short_due("A", "1") and not m.short_due("B", "2")
        got = [m.loaned("B", "2"), m.loaned("A", "1"), m.loaned("C", "3"), m.loaned("D", "4")]
        assert got[1] is not None and got[1].mishap is Mishap.LATE
        lost = [k for k, c in m.chosen.items() if c.mishap is Mishap.LOST]
        assert lost == [[("B", "2"), ("C", "3")][m.lost_ordinal - 1]]
        assert not m.short_due("E", "5")    # one late loan only
    assert {LoanMishaps(seed, SimClock(1)).lost_ordinal for seed in range(20)} == {1, 2}
    small = LoanMishaps(7, SimClock(1))
    small.plan(30)     # a small run may have two loans: the lost one is the first other
    assert small.lost_ordinal == 1


def test_loans_line() -> None:
    facts = LoanFacts(12, [LateLoan("CALIS:PKU", 3, 0.9)],
                      [LostLoan(1, "settled", "170.00 CNY", "兰州大学图书馆")])
    assert loans_line(facts) == ("12 loaned, 1 returned late (3 days, borrower trust 0.90), "
                                 "1 lost in transit back: claim 1 settled, 170.00 CNY "
                                 "charged to 兰州大学图书馆")
    assert loans_line(LoanFacts(1, missing=["no loan in this run to be lost"])) == (
        "1 loaned (no loan in this run to be lost)")


@pytest.fixture
async def small_demo(settings: Settings, run_id: str):
    opts = demo.DemoOptions(
        requests=30, requesters=8, suppliers=6, speed=86_400, days=3, seed=7, keep=True,
        book_loans=0.6,  # enough loans for one late and one lost (sim/mishaps.py)
        database=f"illhub_test_{run_id}_demo", prefix=f"{settings.amqp.name_prefix}demo.",
        symbol_tag=f"T{run_id}-demo", progress_seconds=5)
    lines: list[str] = []
    try:
        summary = await asyncio.wait_for(demo.run(settings, opts, out=lines.append), 150)
        conn = await asyncpg.connect(with_database(settings.database_url, opts.database))
        try:
            yield summary, lines, conn, Path(settings.data_dir) / "demo", opts
        finally:
            await conn.close()
    finally:
        await demo.teardown(settings, opts)


async def test_demo_summary_agrees_with_the_database(small_demo) -> None:
    summary, lines, conn, data, opts = small_demo
    text = "\n".join(lines)
    assert "fill rate" in text and "suppliers tried" in text and "turnaround" in text
    assert not summary.problems, summary.problems
    assert summary.open == 0

    # Every request reached a terminal state.
    assert await conn.fetchval("SELECT count(*) FROM ill_transaction "
                               "WHERE NOT state = ANY($1)", list(TERMINAL)) == 0
    # Requests: one per transaction not superseded by a Retry; each new request the
    # hub accepted is one of them.
    rows = await conn.fetch(
        """SELECT state FROM ill_transaction t WHERE NOT EXISTS (
               SELECT 1 FROM audit_log a WHERE a.transaction_id = t.id AND a.event = 'retried')""")
    assert summary.requests == len(rows)
    assert 30 - summary.refused <= summary.requests <= 30
    filled = sum(r["state"] in DELIVERED for r in rows)
    assert summary.filled == filled > 0
    assert 0 < summary.fill_rate <= 1
    assert summary.fill_rate == pytest.approx(filled / len(rows))
    assert summary.filled + summary.unfilled + summary.cancelled == summary.requests
    forwards = await conn.fetchval("SELECT count(*) FROM rota_entry WHERE outcome <> 'pending'")
    assert summary.suppliers_tried == pytest.approx(forwards / len(rows))
    assert summary.turnaround is not None and 0 < summary.turnaround[0] <= summary.turnaround[1]

    # Holdings that learn (issue 18): NotHeld for listed items by half of the run (30
    # requests to accurate suppliers see one or two; the full demo shows the fall).
    first, second = summary.not_held_halves
    assert first + second == summary.not_held
    learned = "the hub learned" if second < first else "no fewer"
    assert (f"NotHeld for listed items: {first} in the first half, {second} in the second "
            f"({learned}") in text
    assert (await conn.fetchval("SELECT count(*) FROM holding_answer WHERE not_held "
                                "AND reason = 'NotHeld'")) >= summary.not_held

    # Mail: every mail the hub sent is a .eml file; one link per delivered copy.
    eml = sorted((data / "mail").glob("*.eml"))
    sent = await conn.fetchval("SELECT count(*) FROM mail_outbox WHERE sent_at IS NOT NULL")
    assert len(eml) == sent == summary.mails_on_disk == summary.mails_sent > 0
    assert await conn.fetchval("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL") == 0
    grants = await conn.fetchval("SELECT count(*) FROM download_grant")
    assert summary.patron_mails == grants == summary.grants
    mails = [message_from_bytes(p.read_bytes(), policy=default_policy) for p in eml]
    # The late loan's reminder and overdue notice are mailed too (issue 19).
    assert any("Loan overdue" in str(m["Subject"]) for m in mails)
    mail = next(m for m in mails if "文献传递" in str(m["Subject"]))
    assert re.search(r"/d/[A-Za-z0-9_-]{20,}", mail.get_body(("plain",)).get_content())

    # Downloads: the readers' clicks are the gateway's records, never beyond a limit.
    assert summary.downloads == await conn.fetchval("SELECT count(*) FROM download") > 0
    assert await conn.fetchval("SELECT count(*) FROM download_grant WHERE used > max_downloads"
                               ) == 0

    # Money: the ledger balances and the summary's totals are the ledger's.
    assert await ledger.check(conn) == [] == summary.ledger_problems
    fees = await conn.fetchval("SELECT coalesce(sum(fee_minor), 0) FROM ledger_posting")
    assert summary.fees_minor == fees > 0
    assert summary.postings == await conn.fetchval("SELECT count(*) FROM ledger_posting")
    assert sum(n for _, _, n in summary.nets) == -summary.centre_minor
    assert summary.centre_minor == -summary.subsidy_minor

    # Loans (issue 19): one sent back late, one lost in transit back and claimed; the
    # loans line adds up with the loan table, and the claim is in both statements.
    loans = summary.loans
    assert loans is not None and not loans.missing, loans
    assert loans.loaned == await conn.fetchval("SELECT count(*) FROM loan") >= 2
    late = await conn.fetch("SELECT days_late FROM loan WHERE days_late > 0")
    # One loan is made late on purpose; under a heavy load a second may come back late too
    # (sim/mishaps.py): at least one, and the line says how many.
    assert [d.days for d in loans.late] == [r["days_late"] for r in late] and len(late) >= 1
    assert 0 < loans.late[0].trust < 1
    assert await conn.fetchval("SELECT count(*) FROM audit_log WHERE event = 'loan overdue'"
                               ) >= 1
    [lost] = await claims.claims(conn)
    assert (lost.kind, lost.place, lost.payer) == (Kind.LOST, Place.BACK, Side.REQUESTER)
    assert lost.settled_amount is not None and lost.settled_amount.minor > 0
    assert await conn.fetchval("SELECT state FROM ill_transaction WHERE id = $1",
                               lost.transaction_id) == "CompletedWithoutReturn"
    payer = await conn.fetchval("SELECT name FROM agency WHERE symbol = $1", lost.requester)
    amount = f"{lost.settled_amount.amount_text()} {lost.settled_amount.currency}"
    line = next(x for x in lines if x.startswith("  loans "))
    assert line == f"  loans           {loans_line(loans)}", line
    assert line.startswith(f"  loans           {loans.loaned} loaned, {len(late)} returned "
                           f"late ({late[0]['days_late']} days, borrower trust "
                           f"{loans.late[0].trust:.2f}"), line
    assert line.endswith(f"1 lost in transit back: claim {lost.id} settled, {amount} charged "
                         f"to {payer}"), line
    for symbol in (lost.requester, lost.supplier):
        [statement] = (data / "statements").glob(f"*/statement-{symbol.replace(':', '_')}-*.csv")
        rows = [r for r in statement.read_text(encoding="utf-8").splitlines()
                if f"Claim/{lost.id}" in r]
        assert len(rows) == 1 and lost.settled_amount.amount_text() in rows[0], rows

    # The network chosen: 8 requesters and 6 suppliers (a university may be both),
    # registered under this test's symbol tag.
    network = load_network(seed=opts.seed, requesters=8, suppliers=6, tag=opts.symbol_tag)
    assert {r["symbol"] for r in await conn.fetch("SELECT symbol FROM agency")} == {
        a.symbol for a in network.agencies}
    assert len(network.requesters) == 8 and len(network.suppliers) == 6


async def test_demo_with_tls_encrypts_every_transport(settings: Settings, run_id: str,
                                                      vhost: str,
                                                      machine_tls: MachineTls) -> None:
    """`run.py demo --tls` with the broker's TLS listener and verified PostgreSQL: the
    suppliers upload over FTPS, readers verify https:// links, mail goes by STARTTLS,
    and the summary says each transport is encrypted."""
    s = settings.updated(amqp__url=f"{AMQPS_BASE}/{quote(vhost, safe='')}",
                         amqp__ca_file=str(machine_tls.ca), database__tls="verify-full",
                         database__ca_file=str(machine_tls.ca))
    opts = demo.DemoOptions(
        requests=12, requesters=4, suppliers=4, speed=86_400, days=2, seed=11, keep=True,
        tls=True, database=f"illhub_test_{run_id}_tlsdemo",
        prefix=f"{settings.amqp.name_prefix}tlsdemo.", symbol_tag=f"T{run_id}-tls",
        progress_seconds=5)
    lines: list[str] = []
    try:
        summary = await asyncio.wait_for(demo.run(s, opts, out=lines.append), 150)
        assert not summary.problems and summary.open == 0, summary.problems
        assert summary.transports == [
            "HTTPS (download links, /iso18626, pages)", "FTPS (cleartext logins refused)",
            "SMTP starttls", "AMQPS", "PostgreSQL TLS verify-full"]
        assert any(line.startswith("  transport       HTTPS") for line in lines)
        assert summary.downloads > 0 and summary.grants > 0
        texts = [message_from_bytes(p.read_bytes(), policy=default_policy)
                 .get_body(("plain",)).get_content()
                 for p in sorted((Path(s.data_dir) / "demo" / "mail").glob("*.eml"))]
        links = [t for t in texts if "/d/" in t]
        assert links and all(re.search(r"https://127\.0\.0\.1:\d+/d/", t) for t in links)
    finally:
        await demo.teardown(s, opts)
