"""Loss and damage claims on book loans (issue 19, item 3): who pays, what, the workflow,
the ledger charge in the next statement, and the transaction's final state.

The first tests are pure. The others drive a real loan through the hub (RabbitMQ and
PostgreSQL: tests/support/network.py), then claim on it with a desk whose clock stands
in a year of the test's own (`fresh_year`), so the claim's charge lands in a settlement
run of that year, and each test settles its year before it ends (`sweep`).
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest

from app.cli import run_command
from broker import claims as desk_claims
from broker.dispatch.desk import Desk
from broker.states import State as TxnState
from schemas.money import Money
from schemas.settings import Settings
from settlement import claims, ledger
from settlement.claim_terms import ClaimTerms
from settlement.claims import (
    Claim,
    ClaimRefused,
    Kind,
    Place,
    Refusal,
    Side,
    State,
    Step,
    amounts,
    check_move,
    claim_mail,
    responsible,
)
from settlement.fees import FeeError, load_fees, parse_fees
from settlement.run import settle as settle_run
from settlement.statement_csv import read_statement_lines
from settlement.statement_model import CSV_HEADER, statement_name
from tests.support.messages import requester_action, supplier_message
from tests.support.money import at, cny
from tests.support.network import Network, start, state_of
from tests.support.settlement import after, fresh_year, half_subsidy, sweep

# --------------------------------------------------------------------------
# pure
# --------------------------------------------------------------------------


def test_the_responsible_party_is_whoever_had_the_item() -> None:
    assert responsible(Place.OUT) is Side.SUPPLIER     # the supplier or its carrier
    assert responsible(Place.READER) is Side.REQUESTER
    assert responsible(Place.BACK) is Side.REQUESTER   # the requester ships it back


def test_the_workflow_allows_open_then_accept_or_contest_then_settle() -> None:
    for state, step in ((State.OPENED, Step.ACCEPTED), (State.OPENED, Step.CONTESTED),
                        (State.ACCEPTED, Step.SETTLED), (State.CONTESTED, Step.SETTLED)):
        check_move(state, step)
    for state, step, code in ((State.OPENED, Step.SETTLED, Refusal.WRONG_STEP),
                              (State.ACCEPTED, Step.CONTESTED, Refusal.WRONG_STEP),
                              (State.CONTESTED, Step.ACCEPTED, Refusal.WRONG_STEP),
                              (State.SETTLED, Step.SETTLED, Refusal.ALREADY_SETTLED)):
        with pytest.raises(ClaimRefused) as refused:
            check_move(state, step)
        assert refused.value.code is code


TERMS = ClaimTerms("CNY", {"book": 15000, "thesis": 30000, "default": 10000}, 2000)


def test_the_amount_is_the_declared_value_or_the_schedule_default_plus_the_fee() -> None:
    declared = amounts(cny("180.00"), TERMS, "Book")
    assert (declared.replacement, declared.fee, declared.source) == (
        cny("180.00"), cny("20.00"), "declared")
    assert declared.total == cny("200.00")
    by_type = amounts(None, TERMS, "thesis")   # the type as the request spells it, any case
    assert (by_type.replacement, by_type.total, by_type.source) == (
        cny("300.00"), cny("320.00"), "schedule")
    assert amounts(None, TERMS, "Map").replacement == cny("100.00")   # the default
    assert amounts(None, TERMS, None).replacement == cny("100.00")
    # A declared value needs no schedule (and then no fee).
    assert amounts(cny("50.00"), None, None).total == cny("50.00")
    for declared_value, terms, code in (
            (None, None, Refusal.NO_REPLACEMENT_COST),
            (None, ClaimTerms("CNY", {"book": 100}, 0), Refusal.NO_REPLACEMENT_COST),
            (Money.from_decimal("50.00", "USD"), TERMS, Refusal.BAD_AMOUNT),
            (cny("0.00"), TERMS, Refusal.BAD_AMOUNT)):
        with pytest.raises(ClaimRefused) as refused:
            amounts(declared_value, terms, "Map")
        assert refused.value.code is code


def _fee_file(extra: str, kind: str = "BookLoan", amount: str = 'service_fee = "10.00"') -> str:
    return (f'[[fee]]\nsupplier = "CALIS:100010"\nservice_kind = "{kind}"\n'
            f"effective_from = 2026-01-01\n{amount}\n{extra}\n")


def test_a_book_loan_schedule_carries_replacement_costs_and_a_claim_fee() -> None:
    [entry] = parse_fees(_fee_file('replacement_cost = { Book = "150.00", default = '
                                   '"100.00" }\nclaim_fee = "20.00"'))
    assert entry.terms["replacement_cost"] == {"Book": "150.00", "default": "100.00"}
    assert entry.terms["claim_fee"] == "20.00"
    terms = ClaimTerms.from_terms(entry.terms, entry.currency)
    assert terms.replacement("BOOK") == cny("150.00") and terms.fee == cny("20.00")
    [flat] = parse_fees(_fee_file('replacement_cost = "90.00"'))
    assert ClaimTerms.from_terms(flat.terms, "CNY").replacement("Score") == cny("90.00")
    assert ClaimTerms.from_terms(flat.terms, "CNY").fee == cny("0.00")


@pytest.mark.parametrize(("text", "message"), [
    (_fee_file('claim_fee = "5.00"', "DocumentDelivery", 'base = "1.00"'), "claim_fee"),
    (_fee_file("claim_fee = 5"), "claim_fee: 5 must be an amount"),
    (_fee_file('replacement_cost = { Book = "-1.00" }'), "replacement_cost.Book"),
    (_fee_file('replacement_cost = { Book = "1.00", book = "2.00" }'), "same item type"),
    (_fee_file("replacement_cost = {}"), "replacement_cost: give an amount"),
])
def test_claim_terms_are_validated_with_the_schedule(text: str, message: str) -> None:
    with pytest.raises(FeeError, match=message):
        parse_fees(text)


def test_a_lost_claim_closes_the_loan_without_return_and_a_damaged_one_when_back() -> None:
    final = desk_claims.final_state
    for state in (TxnState.LOANED, TxnState.RECEIVED, TxnState.OVERDUE, TxnState.RECALLED,
                  TxnState.SHIPPED_RETURN):
        assert final(Kind.LOST, state) is TxnState.COMPLETED_WITHOUT_RETURN
    assert final(Kind.LOST, TxnState.COMPLETED_WITHOUT_RETURN) is \
        TxnState.COMPLETED_WITHOUT_RETURN
    assert final(Kind.DAMAGED, TxnState.SHIPPED_RETURN) is TxnState.LOAN_COMPLETED
    # Still with the reader: it comes back as any loan does; completed stays completed.
    assert final(Kind.DAMAGED, TxnState.RECEIVED) is TxnState.RECEIVED
    assert final(Kind.DAMAGED, TxnState.LOAN_COMPLETED) is TxnState.LOAN_COMPLETED


def _claim(**kw: Any) -> Claim:
    values: dict[str, Any] = dict(
        id=7, transaction_id="ILL-X", requester="CALIS:1", supplier="CALIS:2",
        service_kind="BookLoan", title="红楼梦", item_type="Book", kind=Kind.LOST,
        place=Place.BACK, happened_on=datetime.date(2026, 3, 9), evidence="快递遗失",
        reported_by=Side.SUPPLIER, declared=None, replacement=cny("150.00"),
        fee=cny("20.00"), replacement_source="schedule", opened_by="cli",
        opened_at=datetime.datetime(2026, 3, 9, tzinfo=datetime.UTC), answer=None,
        answered_by=None, answer_note=None, payer=None, settled_amount=None,
        charge_posting=None, reversal_posting=None, settled_by=None, settle_note=None,
        settled_at=None)
    values.update(kw)
    return Claim(**values)


def test_the_mail_says_it_in_chinese_and_english_at_every_step() -> None:
    subject, text = claim_mail(_claim())
    assert "遗失" in subject and "lost-item claim 7" in subject and "opened" in subject
    assert "《红楼梦》" in text and "寄还途中" in text and "in transit back" in text
    assert "170.00 CNY" in text and "申请馆" in text and "the requester" in text
    _s, settled = claim_mail(_claim(answer=Step.CONTESTED, answer_note="包装完好",
                                    payer=Side.REQUESTER, settled_amount=cny("60.00")))
    assert "已结案" in settled and "60.00 CNY" in settled and "next settlement period" in settled
    assert claims.claim_title(_claim()) == "遗失赔偿 lost-item claim 7: 红楼梦"


# --------------------------------------------------------------------------
# with the hub: a real loan
# --------------------------------------------------------------------------

async def _loan(network: Network, request_id: str, *, returned: bool,
                title: str = "红楼梦版本研究") -> str:
    """A book loan driven through the hub: Loaned, Received, and ShippedReturn if
    `returned`; returns its transaction id."""
    req, sh = network["req"], network["sh"]
    await start(network, request_id, service_type="Loan", title=title,
                publicationInfo={"publicationType": "Book"})
    fwd = await sh.next("request")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, request_id, "Loaned"))
    await sh.confirmed()
    await req.status("Loaned")
    for action in ("Received", "ShippedReturn") if returned else ("Received",):
        await req.send("requestingAgencyMessage",
                       requester_action(req.symbol, sh.symbol, request_id, action))
        await req.confirmed()
        assert (await sh.next("requestingAgencyMessage")).content["action"] == action
    txn: str = fwd.headers["hub-transaction-id"]
    return txn


async def _schedule(pool: asyncpg.Pool, supplier: str, year: int) -> None:
    """The supplier's book loans in the test's year only (dispatch, quoting today, finds
    none, so the loan itself posts nothing): replacement costs and a claim fee."""
    async with pool.acquire() as conn:
        await load_fees(conn, f"""
[[fee]]
supplier = "{supplier}"
service_kind = "BookLoan"
effective_from = {year}-01-01
effective_to = {year}-12-31
service_fee = "10.00"
replacement_cost = {{ Book = "150.00", default = "100.00" }}
claim_fee = "20.00"
""")


def _desk(settings: Settings, when: datetime.datetime) -> Desk:
    clock: Callable[[], datetime.datetime] = lambda: when  # noqa: E731
    return Desk.create(settings, clock)


def _lines(directory: Any, symbol: str, period: str, txn: str) -> list[dict[str, str]]:
    rows = read_statement_lines(directory / statement_name(symbol, period, "csv"))
    return [r for r in (dict(zip(CSV_HEADER, row, strict=True)) for row in rows)
            if r["交易号 Transaction ID"] == txn]


async def _trail(pool: asyncpg.Pool, txn: str) -> list[tuple[str, str, str]]:
    return [(r["event"], r["from_state"], r["to_state"]) for r in await pool.fetch(
        "SELECT event, from_state, to_state FROM audit_log WHERE transaction_id = $1 "
        "ORDER BY id", txn)]


async def test_a_book_lost_in_transit_back_is_charged_to_the_requester_in_the_next_run(
        network: Network, pool: asyncpg.Pool, settings: Settings) -> None:
    req, sh = network["req"], network["sh"]
    year = await fresh_year(pool)
    try:
        await _schedule(pool, sh.symbol, year)
        # A subsidy for the requester's fees: a claim must not draw on it.
        await half_subsidy(pool, req.symbol)
        txn = await _loan(network, "CL-BACK", returned=True)
        assert await state_of(pool, req.symbol, "CL-BACK") == "ShippedReturn"
        await pool.execute("UPDATE agency SET finance_email = 'finance@' || "
                           "translate(symbol, ':', '-') || '.example.cn' WHERE symbol = ANY($1)",
                           [req.symbol, sh.symbol])
        desk = _desk(settings, at(f"{year}-03-10", "10:00"))
        async with pool.acquire() as conn:
            opened = await desk_claims.open_claim(
                desk, conn, txn, kind=Kind.LOST, place=Place.BACK,
                happened_on=datetime.date(year, 3, 8), reported_by=Side.SUPPLIER,
                evidence="顺丰运单 SF1234567890 显示包裹丢失 parcel lost by the courier",
                declared=None, actor="sh-desk")
            assert (opened.replacement, opened.fee, opened.total) == (
                cny("150.00"), cny("20.00"), cny("170.00"))
            assert opened.responsible is Side.REQUESTER and opened.state is State.OPENED
            assert opened.title == "红楼梦版本研究" and opened.item_type == "Book"
            with pytest.raises(ClaimRefused) as twice:   # one lost claim per loan
                await desk_claims.open_claim(
                    desk, conn, txn, kind=Kind.LOST, place=Place.BACK,
                    happened_on=datetime.date(year, 3, 8), reported_by=Side.REQUESTER,
                    evidence="again", declared=None, actor="req-desk")
            assert twice.value.code is Refusal.ALREADY_CLAIMED
            with pytest.raises(ClaimRefused) as early:   # not before an answer
                await desk_claims.settle(desk, conn, opened.id, actor="centre", note="")
            assert early.value.code is Refusal.WRONG_STEP
            await desk_claims.answer(desk, conn, opened.id, Step.ACCEPTED, actor="req-desk",
                                     note="读者承认 the requester agrees")
            done = await desk_claims.settle(desk, conn, opened.id, actor="centre", note="")
            # Idempotent: settled once, posted once.
            with pytest.raises(ClaimRefused) as again:
                await desk_claims.settle(desk, conn, opened.id, actor="centre", note="")
            assert again.value.code is Refusal.ALREADY_SETTLED
            postings = await ledger.postings(conn, txn)
            assert await ledger.check(conn) == []
        assert done.state is State.SETTLED and done.payer is Side.REQUESTER
        assert done.settled_amount == cny("170.00")
        [charge] = postings
        assert charge.posting_id == done.charge_posting and charge.event == f"Claim/{done.id}"
        assert (charge.requester, charge.supplier, charge.fee) == (
            req.symbol, sh.symbol, cny("170.00"))
        assert charge.subsidy == cny("0.00") and charge.local_date == datetime.date(year, 3, 10)

        # The transaction's final state, with the claim in its trail; both sides told.
        assert await state_of(pool, req.symbol, "CL-BACK") == "CompletedWithoutReturn"
        trail = await _trail(pool, txn)
        assert trail[-3:] == [("claim opened", "ShippedReturn", "ShippedReturn"),
                              ("claim accepted", "ShippedReturn", "ShippedReturn"),
                              ("claim settled", "ShippedReturn", "CompletedWithoutReturn")]
        told = await req.status("CompletedWithoutReturn", "StatusChange")
        assert f"claim {done.id} settled" in told.content["messageInfo"]["note"]
        note = await sh.next("requestingAgencyMessage")
        assert note.content["action"] == "Notification"
        finance = await pool.fetch(
            "SELECT routing_key, convert_from(body, 'UTF8')::jsonb AS body FROM outbox "
            "WHERE message_id LIKE $1 ORDER BY id", f"claim:{done.id}:%")
        assert [r["routing_key"] for r in finance] == [
            f"claim.{s}" for _ in ("opened", "accepted", "settled")
            for s in (req.symbol, sh.symbol)]
        assert json.loads(finance[-1]["body"])["claim"]["chargePosting"] == charge.posting_id
        published = await pool.fetchrow("SELECT * FROM loan_claim_settled WHERE claim_id = $1",
                                         done.id)
        assert (published["kind"], published["payer"], published["amount_minor"]) == (
            "lost", "requester", 17000)
        mails = await pool.fetchval("SELECT count(*) FROM mail_outbox WHERE kind = 'claim' "
                                    "AND transaction_id = $1", txn)
        assert mails == 6   # both finance contacts, at each of the three steps

        # The next run carries it: a line on both statements.
        period = f"{year}-03"
        result = await settle_run(pool, settings, period, now=after(period))
        assert result is not None
        [owed] = _lines(result.directory, req.symbol, period, txn)
        [earned] = _lines(result.directory, sh.symbol, period, txn)
        assert owed["事件 Event"] == earned["事件 Event"] == f"Claim/{done.id}"
        assert owed["题名 Title"] == f"遗失赔偿 lost-item claim {done.id}: 红楼梦版本研究"
        assert (owed["角色 Role"], owed["费用 Fee"], owed["补贴 Subsidy"], owed["净额 Net"]) == (
            "requester", "170.00", "0.00", "-170.00")
        assert (earned["角色 Role"], earned["净额 Net"]) == ("supplier", "170.00")
        async with pool.acquire() as conn:
            assert await ledger.check(conn) == []
    finally:
        await sweep(pool, settings, year)


async def test_a_contested_damage_claim_is_decided_by_the_centre(
        network: Network, pool: asyncpg.Pool, settings: Settings) -> None:
    req, sh = network["req"], network["sh"]
    year = await fresh_year(pool)
    try:
        txn = await _loan(network, "CL-DMG", returned=False)
        desk = _desk(settings, at(f"{year}-05-06"))
        async with pool.acquire() as conn:
            # No schedule: the declared value says what it is worth (and no fee).
            opened = await desk_claims.open_claim(
                desk, conn, txn, kind=Kind.DAMAGED, place=Place.READER,
                happened_on=datetime.date(year, 5, 2), reported_by=Side.SUPPLIER,
                evidence="读者归还前书脊破损 spine torn", declared=cny("80.00"),
                actor="sh-desk")
            assert opened.total == cny("80.00") and opened.replacement_source == "declared"
            with pytest.raises(ClaimRefused) as other:   # one open claim at a time
                await desk_claims.open_claim(
                    desk, conn, txn, kind=Kind.LOST, place=Place.READER,
                    happened_on=datetime.date(year, 5, 2), reported_by=Side.REQUESTER,
                    evidence="x", declared=cny("80.00"), actor="req-desk")
            assert other.value.code is Refusal.ALREADY_OPEN
            with pytest.raises(ClaimRefused) as no_reason:
                await desk_claims.answer(desk, conn, opened.id, Step.CONTESTED,
                                         actor="req-desk", note=" ")
            assert no_reason.value.code is Refusal.NO_EVIDENCE
            await desk_claims.answer(desk, conn, opened.id, Step.CONTESTED, actor="req-desk",
                                     note="借出时已有破损 damaged when lent")
            with pytest.raises(ClaimRefused) as undecided:
                await desk_claims.settle(desk, conn, opened.id, actor="centre", note="")
            assert undecided.value.code is Refusal.NEEDS_PAYER
            done = await desk_claims.settle(
                desk, conn, opened.id, actor="centre", note="修复费 repair only",
                payer=Side.REQUESTER, amount=cny("30.00"))
            [charge] = await ledger.postings(conn, txn)
        assert done.payer is Side.REQUESTER and done.settled_amount == cny("30.00")
        assert charge.fee == cny("30.00") and charge.title == \
            f"损坏赔偿 damaged-item claim {done.id}: 红楼梦版本研究"
        # Still with the reader: the loan goes on; the claim is in the trail.
        assert await state_of(pool, req.symbol, "CL-DMG") == "Received"
        assert (await _trail(pool, txn))[-1] == ("claim settled", "Received", "Received")
        await req.status("Loaned", "Notification")   # ISO status of Received
        assert (await sh.next("requestingAgencyMessage")).content["action"] == "Notification"
    finally:
        await sweep(pool, settings, year)


async def test_a_book_lost_in_transit_out_costs_the_requester_nothing(
        network: Network, pool: asyncpg.Pool, settings: Settings) -> None:
    req, sh = network["req"], network["sh"]
    year = await fresh_year(pool)
    try:
        await _schedule(pool, sh.symbol, year)
        txn = await _loan(network, "CL-OUT", returned=False)
        desk = _desk(settings, at(f"{year}-07-03"))
        async with pool.acquire() as conn:
            # The loan's own fee, as dispatch posts it, in the test's year.
            await ledger.post_charge(
                conn, transaction_id=txn, event="Loaned", requester=req.symbol,
                supplier=sh.symbol, service_kind="BookLoan", fee=cny("10.00"), quote=None,
                on=at(f"{year}-07-01"), title="红楼梦版本研究")
            opened = await desk_claims.open_claim(
                desk, conn, txn, kind=Kind.LOST, place=Place.OUT,
                happened_on=datetime.date(year, 7, 2), reported_by=Side.REQUESTER,
                evidence="包裹未送达 never arrived", declared=None, actor="req-desk")
            assert opened.responsible is Side.SUPPLIER and opened.total == cny("170.00")
            await desk_claims.answer(desk, conn, opened.id, Step.ACCEPTED, actor="sh-desk",
                                     note="")
            done = await desk_claims.settle(desk, conn, opened.id, actor="centre", note="")
            postings = await ledger.postings(conn, txn)
        # Nothing charged for the claim; the loan fee goes back to the requester.
        assert done.payer is Side.SUPPLIER and done.settled_amount == cny("0.00")
        assert done.charge_posting is None
        assert [(p.event, p.fee) for p in postings] == [
            ("Loaned", cny("10.00")), ("Loaned/reversal", cny("-10.00"))]
        assert done.reversal_posting == postings[1].posting_id
        assert await state_of(pool, req.symbol, "CL-OUT") == "CompletedWithoutReturn"
        await req.status("CompletedWithoutReturn", "StatusChange")
    finally:
        await sweep(pool, settings, year)


async def test_the_cli_opens_settles_and_refuses_clearly(
        network: Network, pool: asyncpg.Pool, settings: Settings,
        capsys: pytest.CaptureFixture[str]) -> None:
    req = network["req"]
    year = await fresh_year(pool)
    try:
        # A copy is no loan.
        await start(network, "CL-COPY", patron_id="P-COPY")
        copy = (await network["sh"].next("request")).headers["hub-transaction-id"]
        txn = await _loan(network, "CL-CLI", returned=False)
        base = ["claims", "open", "--kind", "lost", "--where", "reader", "--by",
                "requester", "--evidence", "读者遗失 lost by the reader"]
        for argv, expected in (
                ([*base[:2], "ILL-NOSUCH", *base[2:]], "no_transaction"),
                ([*base[:2], copy, *base[2:]], "not_a_loan"),
                ([*base[:2], txn, *base[2:], "--declared-value", "12.345"], "--declared-value"),
                ([*base[:2], txn, *base[2:], "--when", "2026-13-01"], "--when"),
                ([*base[:2], txn, *base[2:]], "no_replacement_cost")):
            assert await run_command(settings, argv) == 2, argv
            assert expected in capsys.readouterr().err
        when = f"{year}-01-05"
        assert await run_command(settings, [*base[:2], txn, *base[2:], "--when", when,
                                            "--declared-value", "66.00"]) == 0
        assert "claim" in capsys.readouterr().out
        [c] = await _claims_of(pool, txn)
        assert await run_command(settings, ["claims", "contest", str(c.id), "--reason",
                                            "书未丢 not lost"]) == 0
        assert await run_command(settings, ["claims", "settle", str(c.id), "--payer",
                                            "supplier"]) == 0
        assert "supplier pays 0.00 CNY" in capsys.readouterr().out
        assert await run_command(settings, ["claims", "settle", str(c.id), "--payer",
                                            "supplier"]) == 2
        assert "already_settled" in capsys.readouterr().err
        assert await run_command(settings, ["claims", "show", str(c.id)]) == 0
        shown = capsys.readouterr().out
        assert "contested by cli: 书未丢 not lost" in shown and "supplier pays" in shown
        assert await run_command(settings, ["claims", "list", "--agency", req.symbol,
                                            "--json"]) == 0
        listed = json.loads(capsys.readouterr().out)
        assert [(x["claimId"], x["state"], x["payer"]) for x in listed] == [
            (c.id, "settled", "supplier")]
        assert await state_of(pool, req.symbol, "CL-CLI") == "CompletedWithoutReturn"
    finally:
        await sweep(pool, settings, year)


async def _claims_of(pool: asyncpg.Pool, txn: str) -> list[Claim]:
    async with pool.acquire() as conn:
        return await claims.claims(conn, transaction_id=txn)
