"""Issue 17: a statement's life after the run: dues, payments, reminders, disputes,
adjustments in the next run, and aging; the ledger check holds at every step."""

from __future__ import annotations

import datetime
import json

import asyncpg
import pytest

from app.cli import run_command
from broker.intake import Inbound, Intake
from schemas.money import Money
from schemas.settings import Payments, Settings
from settlement import disputes, dues, ledger
from settlement.disputes import Channel, DisputeRefused, Outcome, Refusal
from settlement.dues import Direction, DueState, PaymentRefused, PaymentSource
from settlement.reconcile import Outcome as ImportOutcome
from settlement.reconcile import import_file
from settlement.run import settle
from tests.support.agencies import finance_email
from tests.support.camt import build, ntry, tx
from tests.support.money import at
from tests.support.settlement import (
    after,
    charge,
    fresh_year,
    libraries,
    no_subsidy,
    sweep,
)

RULES = Payments(due_days=30, dispute_days=14, remind_days_before=7, overdue_every_days=14)


async def ledger_ok(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        assert await ledger.check(conn) == []


async def due_of(pool: asyncpg.Pool, run_id: int, agency: str) -> dues.Position:
    async with pool.acquire() as conn:
        found = [p for p in await dues.positions(conn, run_id=run_id) if p.agency == agency]
    assert len(found) == 1, found
    return found[0]


def cny(text: str) -> Money:
    return Money.from_decimal(text, "CNY")


# --------------------------------------------------------------------------
# pure
# --------------------------------------------------------------------------

def _position(**kw: object) -> dues.Position:
    base: dict[str, object] = dict(
        due_id=1, run_id=1, period="1901-03", agency="CALIS:A", direction=Direction.TO_CENTRE,
        amount=cny("50.00"), reference="ILL-1901-03-R1-ABCDEF-CNY",
        issued_on=datetime.date(1901, 4, 1), due_on=datetime.date(1901, 5, 1),
        dispute_until=datetime.date(1901, 4, 15), paid=cny("0.00"),
        outstanding=cny("50.00"), disputed=cny("0.00"), last_paid_on=None)
    base.update(kw)
    return dues.Position(**base)  # type: ignore[arg-type]


def test_state_follows_payments_dates_and_disputes() -> None:
    p = _position()
    assert p.state(datetime.date(1901, 4, 2)) is DueState.DUE
    assert _position(paid=cny("10.00"), outstanding=cny("40.00")).state(
        datetime.date(1901, 4, 2)) is DueState.PART_PAID
    assert p.state(datetime.date(1901, 5, 2)) is DueState.OVERDUE
    all_disputed = _position(disputed=cny("50.00"))
    assert all_disputed.state(datetime.date(1901, 5, 2)) is DueState.DISPUTED
    assert all_disputed.dunnable == cny("0.00")
    assert _position(outstanding=cny("0.00"), paid=cny("50.00")).state(
        datetime.date(1901, 9, 1)) is DueState.PAID


def test_reminder_stages() -> None:
    p = _position()
    assert dues.reminder_stage(p, datetime.date(1901, 4, 20), RULES) is None
    assert dues.reminder_stage(p, datetime.date(1901, 4, 24), RULES) == "before"
    assert dues.reminder_stage(p, datetime.date(1901, 5, 2), RULES) == "overdue-1"
    assert dues.reminder_stage(p, datetime.date(1901, 5, 15), RULES) == "overdue-1"
    assert dues.reminder_stage(p, datetime.date(1901, 5, 16), RULES) == "overdue-2"
    # Nothing to dun: all disputed, or money the centre owes.
    assert dues.reminder_stage(_position(disputed=cny("50.00")), datetime.date(1901, 5, 2),
                               RULES) is None
    assert dues.reminder_stage(_position(direction=Direction.TO_AGENCY),
                               datetime.date(1901, 5, 2), RULES) is None


def test_aging_buckets_by_days_since_issue() -> None:
    day = datetime.date(1901, 8, 1)
    rows = dues.aging_rows([
        _position(issued_on=datetime.date(1901, 7, 20), due_on=datetime.date(1901, 8, 19)),
        _position(due_id=2, issued_on=datetime.date(1901, 5, 10),
                  due_on=datetime.date(1901, 6, 9), outstanding=cny("20.00")),
        _position(due_id=3, agency="CALIS:B", direction=Direction.TO_AGENCY,
                  issued_on=datetime.date(1901, 1, 1), due_on=datetime.date(1901, 1, 31)),
    ], day)
    a, b = rows
    assert a.agency == "CALIS:A" and a.owed_to_centre == (5000, 0, 2000, 0)
    assert a.overdue_minor == 2000
    assert b.owed_by_centre == (0, 0, 0, 5000) and b.to_centre_minor == 0
    assert [dues.bucket_of(n) for n in (0, 30, 31, 60, 61, 90, 91, 400)] == [0, 0, 1, 1, 2, 2,
                                                                              3, 3]


def test_references_are_bank_safe() -> None:
    ref = dues.reference_for("1901-03", 12, "CALIS:北大", "CNY")
    assert ref.startswith("ILL-1901-03-R12-") and ref.endswith("-CNY")
    assert len(ref) <= 35 and ref == ref.upper()
    assert all(c.isalnum() or c == "-" for c in ref) and ref.isascii()


# --------------------------------------------------------------------------
# with PostgreSQL
# --------------------------------------------------------------------------

async def _two_loans(pool: asyncpg.Pool, year: int) -> tuple[str, str, str, int, int]:
    """A borrows twice from B in March, unsubsidised: A owes 50.00, B earns 50.00."""
    a, b = await libraries(pool, "兰州大学图书馆", "北京大学图书馆", emails=True)
    v = await no_subsidy(pool)
    first = await charge(pool, v, a, b, "30.00", at(f"{year}-03-05"), title="敦煌学研究")
    second = await charge(pool, v, a, b, "20.00", at(f"{year}-03-12"), title="西夏文献",
                          kind="DocumentDelivery", event="CopyCompleted")
    return f"{year}-03", a, b, first, second


async def test_lifecycle_part_payment_reminder_dispute_adjustment_aging(
        pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    period, a, b, _first, second = await _two_loans(pool, year)
    run1 = await settle(pool, settings, period, now=after(period))
    await ledger_ok(pool)
    owed, earned = await due_of(pool, run1.run_id or 0, a), await due_of(pool, run1.run_id or 0, b)
    assert (owed.direction, owed.amount) == (Direction.TO_CENTRE, cny("50.00"))
    assert (earned.direction, earned.amount) == (Direction.TO_AGENCY, cny("50.00"))
    issued = owed.issued_on
    assert owed.due_on == issued + datetime.timedelta(days=settings.payments.due_days)
    message = json.loads(await pool.fetchval(
        "SELECT body FROM outbox WHERE routing_key = $1 AND message_type = 'statement' "
        "AND correlation_id = $2", f"statement.{a}", period))
    assert message["payments"] == [{
        "reference": owed.reference, "direction": "to_centre", "amount": "50.00",
        "currencyCode": "CNY", "dueOn": owed.due_on.isoformat(),
        "disputeUntil": owed.dispute_until.isoformat()}]

    async with pool.acquire() as conn:
        # part payment
        paid = await dues.record_payment(conn, owed.due_id, cny("10.00"), paid_on=issued,
                                         source=PaymentSource.MANUAL, actor="finance",
                                         bank_reference="BOC-001")
        assert paid.position.outstanding == cny("40.00")
        assert paid.position.state(issued) is DueState.PART_PAID
        with pytest.raises(PaymentRefused, match=r"more than the 40\.00 outstanding"):
            await dues.record_payment(conn, owed.due_id, cny("40.01"), paid_on=issued,
                                      source=PaymentSource.MANUAL, actor="finance")
        with pytest.raises(PaymentRefused, match="in CNY"):
            await dues.record_payment(conn, owed.due_id, Money(100, "USD"), paid_on=issued,
                                      source=PaymentSource.MANUAL, actor="finance")
        # reminder before the due date, once however often the sweep runs
        before = owed.due_on - datetime.timedelta(days=3)
        sent = await dues.send_reminders(conn, RULES, before)
        ours = [(p.agency, stage) for p, stage in sent if p.agency in (a, b)]
        assert ours == [(a, "before")]
        again = await dues.send_reminders(conn, RULES, before)
        assert [p for p, _ in again if p.agency in (a, b)] == []
        mail = await conn.fetchval(
            "SELECT count(*) FROM mail_outbox WHERE kind = 'payment_reminder' "
            "AND $1 = ANY(recipients)", finance_email(a))
        assert mail == 1

        # a dispute of the 20.00 line: not dunned while open
        d = await disputes.open_dispute(conn, reference=owed.reference, posting_id=second,
                                        agency=a, reason="复印件缺页 pages missing",
                                        actor="lzu-finance", channel=Channel.API,
                                        today=issued)
        assert d.amount == cny("20.00") and d.open and d.supplier == b
        now = await dues.position(conn, owed.due_id)
        assert now is not None and now.disputed == cny("20.00")
        assert now.dunnable == cny("20.00")
        late = owed.due_on + datetime.timedelta(days=1)
        sent = await dues.send_reminders(conn, RULES, late)
        overdue = [p for p, stage in sent if p.agency == a and stage == "overdue-1"]
        assert overdue and overdue[0].dunnable == cny("20.00")
        notices = await conn.fetch(
            "SELECT routing_key, body FROM outbox WHERE routing_key = ANY($1::text[]) "
            "AND message_type = 'dispute'", [f"dispute.{a}", f"dispute.{b}"])
        assert {r["routing_key"] for r in notices} == {f"dispute.{a}", f"dispute.{b}"}

        # accepted: reversed in the next (open) period, the closed run unchanged
        closed_before = await conn.fetch(
            "SELECT owner, net_minor FROM settlement_net WHERE run_id = $1 ORDER BY owner",
            run1.run_id)
        done = await disputes.resolve(conn, d.id, outcome=Outcome.ACCEPTED,
                                      reason="供应馆确认 supplier agrees", actor="centre",
                                      on=after(period), tz=settings.timezone)
        assert done.outcome is Outcome.ACCEPTED and done.adjustment == cny("20.00")
        assert done.reversal_posting is not None
        with pytest.raises(DisputeRefused) as refused:
            await disputes.resolve(conn, d.id, outcome=Outcome.REJECTED, reason="again",
                                   actor="centre", on=after(period))
        assert refused.value.code is Refusal.ALREADY_RESOLVED
        assert await conn.fetch(
            "SELECT owner, net_minor FROM settlement_net WHERE run_id = $1 ORDER BY owner",
            run1.run_id) == closed_before
        still = await dues.position(conn, owed.due_id)
        assert still is not None and still.outstanding == cny("40.00")
        assert still.disputed == cny("0.00")
    await ledger_ok(pool)

    # the adjustment lands in the next run: A is owed 20.00, B pays 20.00 back
    nxt = f"{year}-04"
    run2 = await settle(pool, settings, nxt, now=after(nxt))
    await ledger_ok(pool)
    a2, b2 = await due_of(pool, run2.run_id or 0, a), await due_of(pool, run2.run_id or 0, b)
    assert (a2.direction, a2.amount) == (Direction.TO_AGENCY, cny("20.00"))
    assert (b2.direction, b2.amount) == (Direction.TO_CENTRE, cny("20.00"))

    # the bank's camt.053 marks the rest paid: A's rest and B's return in, the centre's
    # transfers to B (run 1) and A (run 2) out; a second import of the file changes nothing
    day = issued.isoformat()
    statement = build("camt.053.001.08", [
        ntry("40.00", "CRDT", ref="B-1", booked=day, details=[
            tx("40.00", party="兰州大学图书馆", ustrd=[f"ILL 结算 {owed.reference}"])]),
        ntry("20.00", "CRDT", ref="B-2", booked=day, details=[tx("20.00", e2e=b2.reference)]),
        ntry("50.00", "DBIT", ref="B-3", booked=day, details=[
            tx("50.00", party="北京大学图书馆", e2e=earned.reference)]),
        ntry("20.00", "DBIT", ref="B-4", booked=day, details=[tx("20.00",
                                                                strd=a2.reference)]),
    ], msg_id=f"LIFE-{year}")
    async with pool.acquire() as conn:
        first = await import_file(conn, statement, file_name="stmt.xml", actor="finance",
                                  today=issued)
        assert (first.count(ImportOutcome.MATCHED), first.count(ImportOutcome.UNMATCHED)) \
            == (4, 0)
        again = await import_file(conn, statement, file_name="stmt.xml", actor="finance",
                                  today=issued)
        assert again.already_imported
        for p in (owed, earned, a2, b2):
            now = await dues.position(conn, p.due_id)
            assert now is not None and now.state(issued) is DueState.PAID, now
        rows = [r for r in await dues.aging(conn, issued) if r.agency in (a, b)]
        assert rows == []
        kinds = [e.kind.value for e in await dues.history(conn, owed.due_id)]
        assert kinds == ["issued", "payment", "reminder", "disputed", "overdue",
                         "dispute_accepted", "payment", "paid"]
    await ledger_ok(pool)


async def test_dispute_checks_in_order(pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    period, a, b, first, _second = await _two_loans(pool, year)
    run = await settle(pool, settings, period, now=after(period))
    owed = await due_of(pool, run.run_id or 0, a)
    earned = await due_of(pool, run.run_id or 0, b)
    day = owed.issued_on

    async def refused(**kw: object) -> Refusal:
        args: dict[str, object] = dict(reference=owed.reference, posting_id=first, agency=a,
                                       reason="wrong", actor="x", channel=Channel.CLI,
                                       today=day)
        args.update(kw)
        async with pool.acquire() as conn:
            with pytest.raises(DisputeRefused) as exc:
                await disputes.open_dispute(conn, **args)  # type: ignore[arg-type]
        return exc.value.code

    assert await refused(reference="ILL-NOPE") is Refusal.NO_STATEMENT
    assert await refused(agency=b) is Refusal.NOT_YOUR_STATEMENT
    assert await refused(today=owed.dispute_until + datetime.timedelta(days=1)) \
        is Refusal.WINDOW_CLOSED
    assert await refused(reason="  ") is Refusal.NO_REASON
    assert await refused(posting_id=first + 10**9) is Refusal.NOT_A_LINE
    assert await refused(reference=earned.reference, agency=b) is Refusal.NOT_THE_REQUESTER
    async with pool.acquire() as conn:
        d = await disputes.open_dispute(conn, reference=owed.reference, posting_id=first,
                                        agency=a, reason="not received", actor="x",
                                        channel=Channel.CLI, today=day)
    assert await refused() is Refusal.ALREADY_DISPUTED
    async with pool.acquire() as conn:
        with pytest.raises(DisputeRefused) as exc:
            await disputes.resolve(conn, d.id, outcome=Outcome.ACCEPTED, reason="half",
                                   actor="c", on=after(period), corrected_fee=cny("30.00"))
        assert exc.value.code is Refusal.BAD_CORRECTION
        part = await disputes.resolve(conn, d.id, outcome=Outcome.ACCEPTED, reason="half",
                                      actor="c", on=after(period), corrected_fee=cny("12.00"))
        assert part.adjustment == cny("18.00") and part.charge_posting is not None
        body = json.loads(await conn.fetchval(
            "SELECT body FROM outbox WHERE routing_key = $1 AND message_type = 'dispute' "
            "ORDER BY id DESC LIMIT 1", f"dispute.{b}"))
        assert body["state"] == "accepted" and body["dispute"]["adjustment"] == "18.00"
    await ledger_ok(pool)
    await sweep(pool, settings, year)


async def test_appended_only(pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    period, a, _b, _f, _s = await _two_loans(pool, year)
    run = await settle(pool, settings, period, now=after(period))
    owed = await due_of(pool, run.run_id or 0, a)
    async with pool.acquire() as conn:
        for sql in ("UPDATE statement_due SET amount_minor = 1 WHERE id = $1",
                    "DELETE FROM statement_event WHERE due_id = $1"):
            with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
                await conn.execute(sql, owed.due_id)


async def test_payments_cli_lists_records_and_ages(pool: asyncpg.Pool, settings: Settings,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    year = await fresh_year(pool)
    period, a, _b, _f, _s = await _two_loans(pool, year)
    run = await settle(pool, settings, period, now=after(period))
    owed = await due_of(pool, run.run_id or 0, a)
    assert await run_command(settings, ["payments", "record", owed.reference, "12.5",
                                        "--bank-reference", "ICBC-9"]) == 0
    assert "outstanding 37.50 (part_paid)" in capsys.readouterr().out
    assert await run_command(settings, ["payments", "record", owed.reference, "99"]) == 2
    assert "more than the 37.50 outstanding" in capsys.readouterr().err
    assert await run_command(settings, ["payments", "record", "ILL-NONE", "1"]) == 2
    assert await run_command(settings, ["payments", "aging", "--agency", a, "--json"]) == 0
    aged = json.loads(capsys.readouterr().out)
    assert aged["agencies"][0]["owedToCentre"]["0-30"] == "37.50"
    assert await run_command(settings, ["payments", "history", owed.reference]) == 0
    assert "payment" in capsys.readouterr().out


async def test_a_library_disputes_a_line_over_amqp(pool: asyncpg.Pool,
                                                   settings: Settings) -> None:
    """Through the real intake: gate, dispute and answer in one transaction."""
    year = await fresh_year(pool)
    period, a, b, first, _second = await _two_loans(pool, year)
    run = await settle(pool, settings, period, now=after(period))
    owed = await due_of(pool, run.run_id or 0, a)
    intake = Intake(settings)
    # The intake hears only enabled agencies (test agencies are made disabled, so that
    # no other test's routing picks them); enabled for this test only.
    await pool.execute("UPDATE agency SET enabled = true WHERE symbol = ANY($1::text[])",
                       [a, b])
    try:
        await _dispute_over_amqp(pool, intake, owed, a, b, first)
    finally:
        await pool.execute("UPDATE agency SET enabled = false WHERE symbol = ANY($1::text[])",
                           [a, b])


async def _dispute_over_amqp(pool: asyncpg.Pool, intake: Intake, owed: dues.Position, a: str,
                             b: str, first: int) -> None:

    async def send(body: object, message_id: str, sender: str = a) -> str:
        return await intake.process(pool, Inbound(
            body=json.dumps(body, ensure_ascii=False).encode(), sender=sender,
            message_id=message_id, routing_key="financeDispute",
            content_type="application/json", message_type="financeDispute"))

    async def answer(message_id: str, to: str = a) -> dict[str, object]:
        row = await pool.fetchrow(
            "SELECT body, message_type FROM outbox WHERE routing_key = $1 "
            "AND correlation_id = $2", to, message_id)
        assert row["message_type"] == "financeDisputeAnswer"
        got: dict[str, object] = json.loads(row["body"])["disputeAnswer"]
        return got

    good = {"dispute": {"reference": owed.reference, "postingId": first,
                        "reason": "图书未收到 book never arrived"}}
    assert await send(good, f"d1-{a}") == "ok"
    opened = await answer(f"d1-{a}")
    assert opened["status"] == "opened" and opened["amount"] == "30.00"
    assert await send(good, f"d1-{a}") == "duplicate"          # same message_id: once
    assert await send(good, f"d2-{a}") == "error"              # same line again
    assert (await answer(f"d2-{a}"))["error"] == {
        "code": "already_disputed",
        "message": f"line {first} of {owed.reference} is disputed already"}
    bad = {"dispute": {"reference": owed.reference, "postingId": "x", "reason": "r"}}
    assert await send(bad, f"d3-{a}") == "error"
    refused = await answer(f"d3-{a}")
    assert refused["error"]["code"] == "badly_formed"  # type: ignore[index]
    assert "dispute.postingId" in refused["error"]["message"]  # type: ignore[index]
    assert await send(good, f"d4-{b}", sender=b) == "error"    # not b's statement
    assert (await answer(f"d4-{b}", b))["error"]["code"] == "not_your_statement"  # type: ignore[index]
    async with pool.acquire() as conn:
        found = await disputes.disputes(conn, agency=a)
    assert [(d.posting_id, d.channel) for d in found] == [(first, Channel.AMQP)]
