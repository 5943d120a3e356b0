"""Prepaid deposit accounts (issue 17): top-ups, charges drawing the balance down, a run
netted against the deposit, low-balance alerts (settlement/deposits.py).

The pure rules first; then real PostgreSQL, where each test makes its own agencies and
settles periods of its own fresh year (tests/support/settlement.py), and scopes what it
asserts to its agencies (the sweep looks at every deposit account in the database).
"""

from __future__ import annotations

import datetime
import json
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy

import asyncpg
import pytest

from app.cli import run_command
from schemas.money import Money
from schemas.settings import Settings
from schemas.wire import FINANCE
from settlement import deposits, dues, ledger
from settlement.deposits import AlertStep, DepositBalance, DepositError, MovementKind
from settlement.run import settle
from tests.support.agencies import finance_email
from tests.support.database import check_list
from tests.support.money import at, cny
from tests.support.settlement import after, charge, fresh_year, libraries, no_subsidy, sweep

TODAY = datetime.date(2026, 5, 6)


def bal(deposit: str, unsettled: str, threshold: str = "100.00", *,
        closed: bool = False) -> DepositBalance:
    return DepositBalance("CALIS:1", cny(deposit), cny(unsettled), cny(threshold), closed)


# --------------------------------------------------------------------------
# the rules, pure
# --------------------------------------------------------------------------

def test_the_check_lists_exactly_the_movement_kinds() -> None:
    assert check_list("deposit_movement_kind", "kind") == {k.value for k in MovementKind}


def test_a_deposit_pays_what_it_holds_and_is_credited_in_full() -> None:
    to_centre, to_agency = dues.Direction.TO_CENTRE, dues.Direction.TO_AGENCY
    assert deposits.deposit_share(to_centre, 10_000, 3_000) == 3_000
    assert deposits.deposit_share(to_centre, 1_000, 2_500) == 1_000    # short: the rest due
    assert deposits.deposit_share(to_centre, 0, 2_500) == 0
    assert deposits.deposit_share(to_agency, 0, 5_500) == 5_500
    assert deposits.deposit_share(to_agency, 9_000, 5_500) == 5_500


def test_available_is_the_deposit_less_unsettled_charges() -> None:
    b = bal("150.00", "-60.00")
    assert b.available == cny("90.00") and b.low
    assert not bal("150.00", "-50.00").low              # at the threshold is not below it
    assert not bal("0.00", "-50.00", "0.00", closed=True).low
    assert bal("0.00", "30.00").available == cny("30.00")
    assert b.to_json()["available"] == "90.00" and b.to_json()["low"] is True


def test_one_alert_per_fall_below_the_threshold() -> None:
    low, fine = bal("50.00", "0.00"), bal("500.00", "0.00")
    assert deposits.alert_step(low, alerted=False) is AlertStep.ALERT
    assert deposits.alert_step(low, alerted=True) is None
    assert deposits.alert_step(fine, alerted=True) is AlertStep.CLEAR
    assert deposits.alert_step(fine, alerted=False) is None
    assert deposits.alert_step(bal("0.00", "-9.00", closed=True), alerted=False) is None


def test_the_alert_speaks_chinese_and_english() -> None:
    b = bal("150.00", "-60.00")
    subject, text = deposits.low_balance_mail(b, "北京大学图书馆", TODAY)
    assert subject.startswith("馆际互借预付款余额不足 ILL deposit balance low")
    assert "北京大学图书馆" in subject
    for needle in ("可用余额为 90.00 CNY", "提醒额度 100.00 CNY", "尚未结算的费用净额 -60.00 CNY",
                   "available balance of your deposit with the ILL centre is 90.00 CNY",
                   "threshold of 100.00 CNY", "2026-05-06"):
        assert needle in text, needle
    msg = deposits.low_balance_message(b, 7, TODAY)
    assert (msg.exchange, msg.routing_key, msg.message_type) == \
        (FINANCE, "deposit.CALIS:1", "deposit_low")
    body = json.loads(msg.encoded())
    assert body["alertId"] == 7 and body["available"] == "90.00" and body["date"] == "2026-05-06"


# --------------------------------------------------------------------------
# accounts and top-ups
# --------------------------------------------------------------------------

async def test_open_and_top_up(pool: asyncpg.Pool, settings: Settings) -> None:
    [lib] = await libraries(pool, "清华大学图书馆")
    async with pool.acquire() as conn:
        acct = await deposits.open_account(conn, lib, "CNY", 50_000, "test")
        assert (acct.currency, acct.low_minor, acct.closed) == ("CNY", 50_000, False)
        with pytest.raises(DepositError, match="already has a deposit account"):
            await deposits.open_account(conn, lib, "CNY", None, "test")
        with pytest.raises(DepositError, match="no agency"):
            await deposits.open_account(conn, "CALIS:NOSUCH", "CNY", None, "test")
        first = await deposits.topup(conn, lib, cny("800.00"), "汇款 2026-001", "test",
                                     source_key="bank:E1")
        again = await deposits.topup(conn, lib, cny("800.00"), "汇款 2026-001", "test",
                                     source_key="bank:E1")
        assert not first.duplicate and again.duplicate and again.id == first.id
        with pytest.raises(DepositError, match=r"was recorded as 800\.00 CNY"):
            await deposits.topup(conn, lib, cny("80.00"), None, "test", source_key="bank:E1")
        await deposits.topup(conn, lib, cny("200.00"), None, "test")
        with pytest.raises(DepositError, match="in CNY, not USD"):
            await deposits.topup(conn, lib, Money(100, "USD"), None, "test")
        with pytest.raises(DepositError, match="above zero"):
            await deposits.topup(conn, lib, cny("0.00"), None, "test")
        b = await deposits.balance(conn, lib, rules=settings.payments)
        assert (b.deposit, b.unsettled, b.available, b.threshold, b.low) == \
            (cny("1000.00"), cny("0.00"), cny("1000.00"), cny("500.00"), False)
        moved = await deposits.movements(conn, lib)
        assert [(m.kind, m.amount, m.reference) for m in moved] == [
            (MovementKind.TOPUP, cny("800.00"), "汇款 2026-001"),
            (MovementKind.TOPUP, cny("200.00"), None)]
        # Append-only, like the ledger.
        with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
            await conn.execute("UPDATE deposit_movement SET amount_minor = 1 WHERE id = $1",
                               first.id)
        # Refunded to zero, then closed for good.
        with pytest.raises(DepositError, match="refund it first"):
            await deposits.close_account(conn, lib, "退出 leaving", "test")
        with pytest.raises(DepositError, match=r"holds 1000.00 CNY; 1000.01 CNY"):
            await deposits.refund(conn, lib, cny("1000.01"), None, "test")
        await deposits.refund(conn, lib, cny("1000.00"), "退款", "test")
        closed = await deposits.close_account(conn, lib, "退出 leaving", "test")
        assert closed.closed
        with pytest.raises(DepositError, match="is closed"):
            await deposits.topup(conn, lib, cny("1.00"), None, "test")


async def test_without_its_own_threshold_the_setting_applies(pool: asyncpg.Pool,
                                                             settings: Settings) -> None:
    [lib] = await libraries(pool, "南京大学图书馆")
    async with pool.acquire() as conn:
        await deposits.open_account(conn, lib, "CNY", None, "test")
        b = await deposits.balance(conn, lib, rules=settings.payments)
        assert b.threshold == Money(settings.payments.deposit_low_minor, "CNY")
        changed = settings.payments.model_copy(update={"deposit_low_minor": 123})
        b = await deposits.balance(conn, lib, rules=changed)
        assert b.threshold == Money(123, "CNY")


# --------------------------------------------------------------------------
# charges, and the run
# --------------------------------------------------------------------------

async def test_charges_draw_the_available_balance_down_as_they_are_posted(
        pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    requester, supplier = await libraries(pool, "武汉大学图书馆", "中山大学图书馆")
    v = await no_subsidy(pool)
    async with pool.acquire() as conn:
        await deposits.open_account(conn, requester, "CNY", 0, "test")
        await deposits.open_account(conn, supplier, "CNY", 0, "test")
        await deposits.topup(conn, requester, cny("100.00"), None, "test")
    await charge(pool, v, requester, supplier, "30.00", at(f"{year}-03-02"))
    # Dated in a later month, or in no period anyone has settled: unsettled all the same.
    await charge(pool, v, requester, supplier, "5.50", at(f"{year}-07-09"))
    await charge(pool, v, requester, supplier, "7.00", at(f"{year}-03-03"), currency="USD")
    async with pool.acquire() as conn:
        b = await deposits.balance(conn, requester, rules=settings.payments)
        s = await deposits.balance(conn, supplier, rules=settings.payments)
    assert (b.deposit, b.unsettled, b.available) == (cny("100.00"), cny("-35.50"),
                                                     cny("64.50"))
    assert (s.deposit, s.unsettled, s.available) == (cny("0.00"), cny("35.50"), cny("35.50"))
    await sweep(pool, settings, year)


async def test_a_run_nets_its_statements_against_the_deposits(
        pool: asyncpg.Pool, settings: Settings) -> None:
    year = await fresh_year(pool)
    period = f"{year}-03"
    rich, poor, supplier, cash = await libraries(
        pool, "浙江大学图书馆", "西藏大学图书馆", "上海图书馆", "四川大学图书馆")
    v = await no_subsidy(pool)
    async with pool.acquire() as conn:
        await deposits.open_account(conn, rich, "CNY", 0, "test")
        await deposits.open_account(conn, poor, "CNY", 0, "test")
        await deposits.open_account(conn, supplier, "CNY", 0, "test")
        await deposits.topup(conn, rich, cny("100.00"), None, "test")
        await deposits.topup(conn, poor, cny("10.00"), None, "test")
    await charge(pool, v, rich, supplier, "30.00", at(f"{year}-03-02"))
    await charge(pool, v, poor, supplier, "25.00", at(f"{year}-03-05"))
    await charge(pool, v, cash, supplier, "12.00", at(f"{year}-03-06"))   # no deposit
    # Next month's charge is not this run's: it stays unsettled, drawing on the deposit.
    await charge(pool, v, rich, supplier, "4.00", at(f"{year}-04-02"))
    async with pool.acquire() as conn:
        before = await deposits.balance(conn, rich, rules=settings.payments)
    assert before.available == cny("66.00")

    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.run_id is not None
    async with pool.acquire() as conn:
        # run.py nets in the run's closing transaction; a second call does nothing.
        assert await deposits.net_run(conn, result.run_id, after(period).date()) == []
        by_agency = {p.agency: p for p in await dues.positions(conn, run_id=result.run_id)}
        bal_of = {a: await deposits.balance(conn, a, rules=settings.payments)
                  for a in (rich, poor, supplier)}
        payments = await conn.fetch(
            "SELECT due_id, amount_minor, source, source_key FROM statement_payment "
            "WHERE due_id = ANY($1::bigint[]) ORDER BY due_id",
            [p.due_id for p in by_agency.values()])
        history = await dues.history(conn, by_agency[poor].due_id)
        moved = await deposits.movements(conn, poor)
        assert await ledger.check(conn) == []
    day = after(period).date()
    # Paid in full from the deposit; the available balance is what it was before the run.
    assert by_agency[rich].outstanding == cny("0.00")
    assert by_agency[rich].state(day) is dues.DueState.PAID
    assert (bal_of[rich].deposit, bal_of[rich].unsettled, bal_of[rich].available) == \
        (cny("70.00"), cny("-4.00"), cny("66.00"))
    # Short: the deposit pays what it holds, the rest stays due.
    assert (by_agency[poor].paid, by_agency[poor].outstanding) == (cny("10.00"), cny("15.00"))
    assert by_agency[poor].state(day) is dues.DueState.PART_PAID
    assert bal_of[poor].deposit == cny("0.00")
    # The supplier is credited, and the centre owes it no transfer.
    assert by_agency[supplier].direction is dues.Direction.TO_AGENCY
    assert by_agency[supplier].outstanding == cny("0.00")
    assert bal_of[supplier].deposit == cny("67.00")
    # No deposit, nothing netted.
    assert (by_agency[cash].paid, by_agency[cash].outstanding) == (cny("0.00"), cny("12.00"))
    assert {(r["due_id"], r["amount_minor"], r["source"], r["source_key"]) for r in payments} \
        == {(by_agency[a].due_id, m, "deposit", f"deposit:{by_agency[a].due_id}")
            for a, m in ((rich, 3000), (poor, 1000), (supplier, 6700))}
    assert [m.kind for m in moved] == [MovementKind.TOPUP, MovementKind.DRAWDOWN]
    assert (moved[1].amount, moved[1].due_id, moved[1].reference) == \
        (cny("-10.00"), by_agency[poor].due_id, by_agency[poor].reference)
    [event] = [e for e in history if e.kind is dues.EventKind.DEPOSIT]
    assert event.amount_minor == 1000 and event.detail["depositAfter"] == "0.00"
    assert event.detail["outstanding"] == "15.00"


# --------------------------------------------------------------------------
# low-balance alerts
# --------------------------------------------------------------------------

async def _mails(pool: asyncpg.Pool, to: str) -> list[EmailMessage]:
    rows = await pool.fetch("SELECT raw FROM mail_outbox WHERE kind = 'deposit_low' "
                            "AND recipients = ARRAY[$1] ORDER BY id", to)
    found = [message_from_bytes(r["raw"], policy=default_policy) for r in rows]
    return [m for m in found if isinstance(m, EmailMessage)]


async def _sweep(pool: asyncpg.Pool, settings: Settings, agency: str) -> list[deposits.Alert]:
    async with pool.acquire() as conn:
        sent = await deposits.sweep_low_balances(conn, settings, TODAY)
    return [a for a in sent if a.balance.agency == agency]


async def test_the_low_balance_alert_goes_once_per_fall(pool: asyncpg.Pool,
                                                        settings: Settings) -> None:
    year = await fresh_year(pool)
    lib, other = await libraries(pool, "厦门大学图书馆", "山东大学图书馆", emails=True)
    v = await no_subsidy(pool)
    async with pool.acquire() as conn:
        await deposits.open_account(conn, lib, "CNY", 10_000, "test")
        await deposits.topup(conn, lib, cny("150.00"), None, "test")
    assert await _sweep(pool, settings, lib) == []
    await charge(pool, v, lib, other, "60.00", at(f"{year}-03-02"))      # 90.00 < 100.00
    [alert] = await _sweep(pool, settings, lib)
    assert alert.balance.available == cny("90.00") and alert.mail_id is not None
    assert await _sweep(pool, settings, lib) == []                          # not again
    await charge(pool, v, lib, other, "5.00", at(f"{year}-03-03"))        # still low
    assert await _sweep(pool, settings, lib) == []

    [mail] = await _mails(pool, finance_email(lib))
    assert str(mail["Subject"]).startswith("馆际互借预付款余额不足 ILL deposit balance low")
    body = mail.get_body(("plain",))
    assert body is not None
    text = body.get_content()
    assert "厦门大学图书馆" in text and "90.00 CNY" in text and "ILL centre" in text
    messages = await pool.fetch(
        "SELECT exchange, message_type, body FROM outbox WHERE routing_key = $1 ORDER BY id",
        f"deposit.{lib}")
    assert [(m["exchange"], m["message_type"]) for m in messages] == \
        [(FINANCE, "deposit_low")]
    assert json.loads(messages[0]["body"])["available"] == "90.00"

    # A top-up back above the threshold ends this fall at once; the next fall alerts.
    async with pool.acquire() as conn:
        await deposits.topup(conn, lib, cny("50.00"), None, "test")         # 135.00
    await charge(pool, v, lib, other, "40.00", at(f"{year}-03-04"))       # 95.00
    [second] = await _sweep(pool, settings, lib)
    assert second.balance.available == cny("95.00")
    # A rise the sweep sees (the library earned as a supplier) ends a fall too.
    await charge(pool, v, other, lib, "20.00", at(f"{year}-03-05"))       # 115.00
    assert await _sweep(pool, settings, lib) == []
    await charge(pool, v, lib, other, "30.00", at(f"{year}-03-06"))       # 85.00
    [third] = await _sweep(pool, settings, lib)
    assert third.balance.available == cny("85.00")

    async with pool.acquire() as conn:
        sent = await deposits.alerts(conn, lib)
    assert [(a.available, a.cleared_at is not None) for a in sent] == [
        (cny("90.00"), True), (cny("95.00"), True), (cny("85.00"), False)]
    assert len(await _mails(pool, finance_email(lib))) == 3
    assert await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = $1",
                               f"deposit.{lib}") == 3
    await sweep(pool, settings, year)


# --------------------------------------------------------------------------
# run.py deposit
# --------------------------------------------------------------------------

async def test_the_deposit_command(pool: asyncpg.Pool, settings: Settings,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    [lib] = await libraries(pool, "吉林大学图书馆", emails=True)
    assert await run_command(settings, ["deposit", "open", lib, "--low", "500.00"]) == 0
    assert await run_command(settings, ["deposit", "open", lib]) == 2
    assert "already has a deposit account" in capsys.readouterr().err
    assert await run_command(settings, ["deposit", "topup", lib, "12.345"]) == 2
    assert "12.345" in capsys.readouterr().err
    assert await run_command(settings, ["deposit", "topup", "CALIS:NOSUCH", "1.00"]) == 2
    assert "no deposit account" in capsys.readouterr().err
    assert await run_command(settings, ["deposit", "topup", lib, "300.00",
                                        "--reference", "汇款单 7"]) == 0
    assert "available 300.00 CNY (alert below 500.00 CNY) LOW" in capsys.readouterr().out
    assert await run_command(settings, ["deposit", "show", lib]) == 0
    out = capsys.readouterr().out
    assert "deposit 300.00 CNY" in out and "汇款单 7" in out and "topup" in out
    assert await run_command(settings, ["deposit", "list", "--json"]) == 0
    [listed] = [b for b in json.loads(capsys.readouterr().out) if b["agency"] == lib]
    assert (listed["available"], listed["low"]) == ("300.00", True)
    assert await run_command(settings, ["deposit", "alerts"]) == 0
    assert "1 low-balance alert(s) sent" in capsys.readouterr().out
    assert len(await _mails(pool, finance_email(lib))) == 1
    assert await run_command(settings, ["deposit", "alerts"]) == 0
    assert len(await _mails(pool, finance_email(lib))) == 1
