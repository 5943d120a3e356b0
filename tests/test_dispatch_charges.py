"""Dispatch with fee schedules: quotes frozen at routing, maximumCosts, charges on delivery.

The `priced` network (tests/support/network.py): Shanghai charges 60.00 per copy,
Nanjing 12.00 + 0.50 a page, Beijing 8.00.
"""

from __future__ import annotations

import json
from typing import Any

from infra.flags import FlagKind, of_transaction
from settlement.ledger import check
from tests.support import messages
from tests.support.cli import run
from tests.support.messages import supplier_message
from tests.support.network import ISSN, start, state_of


async def _txn(pool, requester: str, request_id: str) -> Any:
    return await pool.fetchrow("SELECT * FROM ill_transaction WHERE requester = $1 AND "
                               "request_id = $2", requester, request_id)


async def test_supplier_above_max_cost_is_skipped(priced, pool) -> None:
    req, sh, bj = priced["req"], priced["sh"], priced["bj"]
    await start(priced, "M-1", max_cost="50.00")  # Shanghai's 60.00 is too dear
    fwd = await bj.next("request")  # same tier as Nanjing, and cheaper
    assert fwd.content["header"]["requestingAgencyRequestId"] == "M-1"
    txn = await _txn(pool, req.symbol, "M-1")
    assert txn["quote_minor"] == 800
    nanjing = await pool.fetchval("SELECT quote_minor FROM rota_entry WHERE transaction_id = $1"
                                  " AND supplier = $2", txn["id"], priced["js"].symbol)
    assert nanjing == 1200 + 9 * 50  # pages 12-20: 9 pages at 0.50
    excluded = await pool.fetchval("SELECT reason FROM rota_excluded WHERE transaction_id = $1"
                                   " AND supplier = $2", txn["id"], sh.symbol)
    assert "60.00" in excluded and "50.00" in excluded  # why Shanghai was left out
    assert sh.client.inbox.empty()


async def test_named_supplier_above_max_cost_offers_a_retry(priced, pool) -> None:
    req, sh = priced["req"], priced["sh"]
    body = messages.request(req.symbol, request_id="M-2", issn=ISSN, supplier=sh.symbol,
                            max_cost="50.00")
    await req.send("request", body)
    await req.confirmed()
    offer = await req.status("RetryPossible", "RequestResponse")
    info = offer.content["messageInfo"]
    assert info["reasonRetry"] == "CostExceedsMaxCost"
    assert info["offeredCosts"] == {"currencyCode": "CNY", "monetaryValue": "60.00"}
    assert sh.client.inbox.empty()  # nothing was sent to the supplier

    retry = messages.request(req.symbol, request_id="M-3", issn=ISSN, supplier=sh.symbol,
                             max_cost="60.00")
    retry["request"]["serviceInfo"].update(
        {"requestType": "Retry", "requestingAgencyPreviousRequestId": "M-2"})
    await req.send("request", retry)
    await req.confirmed()
    await req.status("ExpectToSupply")
    assert (await sh.next("request")).content["header"]["requestingAgencyRequestId"] == "M-3"
    assert await state_of(pool, req.symbol, "M-2") == "Cancelled"


async def test_copy_completed_posts_the_charge_once(priced, pool) -> None:
    req, bj = priced["req"], priced["bj"]
    await start(priced, "CH-1", max_cost="9.00")  # only Beijing (8.00) fits
    await bj.next("request")
    done = supplier_message(bj.symbol, req.symbol, "CH-1", "CopyCompleted")
    await bj.client.send("supplyingAgencyMessage", done, message_id="cc-1")
    await bj.client.send("supplyingAgencyMessage", done, message_id="cc-1")  # redelivery
    await bj.confirmed()
    await req.status("CopyCompleted")
    txn = await _txn(pool, req.symbol, "CH-1")
    rows = await pool.fetch("SELECT * FROM ledger_posting WHERE transaction_id = $1",
                            txn["id"])
    assert len(rows) == 1
    assert rows[0]["fee_minor"] == 800 and rows[0]["event"] == "CopyCompleted"
    assert rows[0]["supplier"] == bj.symbol and rows[0]["title"] == "中国图书馆学报"
    async with pool.acquire() as conn:
        assert await check(conn) == []


async def test_charge_above_the_quote_is_refused_and_flagged(priced, pool) -> None:
    req, bj = priced["req"], priced["bj"]
    await start(priced, "CH-2", max_cost="9.00")
    await bj.next("request")
    done = supplier_message(bj.symbol, req.symbol, "CH-2", "CopyCompleted")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "sentVia": "FTP",
        "deliveryCosts": {"currencyCode": "CNY", "monetaryValue": "15.00"}}
    await bj.send("supplyingAgencyMessage", done)
    err = await bj.confirmed(ok=False)
    value = err.content["errorData"]["errorValue"]
    assert "deliveryCosts" in value and "15.00" in value
    txn = await _txn(pool, req.symbol, "CH-2")
    assert txn["state"] == "ExpectToSupply"  # the transaction did not advance
    assert await pool.fetchval("SELECT count(*) FROM ledger_posting WHERE transaction_id = $1",
                               txn["id"]) == 0
    assert len(await of_transaction(pool, txn["id"])) == 1


async def test_a_refused_charge_is_one_flag_with_its_facts_and_one_event(priced, pool) -> None:
    req, bj = priced["req"], priced["bj"]
    await start(priced, "CH-4", max_cost="9.00")
    await bj.next("request")
    done = supplier_message(bj.symbol, req.symbol, "CH-4", "CopyCompleted")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(),
        "deliveryCosts": {"currencyCode": "CNY", "monetaryValue": "15.00"}}
    for _ in range(2):  # refused again when the supplier sends it again
        await bj.send("supplyingAgencyMessage", done)
        await bj.confirmed(ok=False)
    txn = await _txn(pool, req.symbol, "CH-4")
    [flag] = await of_transaction(pool, txn["id"])
    assert (flag.kind, flag.subject) == (FlagKind.CHARGE_ABOVE_SCHEDULE, bj.symbol)
    assert flag.facts == {"event": "CopyCompleted", "requester": req.symbol,
                          "supplier": bj.symbol, "reason": "above_quote", "fee_minor": 1500,
                          "limit_minor": 800, "currency": "CNY"}
    events = await pool.fetch(
        """SELECT routing_key, body FROM outbox
           WHERE routing_key LIKE 'flag.%' AND headers->>'hub-transaction-id' = $1""",
        txn["id"])
    assert [e["routing_key"] for e in events] == ["flag.charge_above_schedule"]
    body = json.loads(events[0]["body"])
    assert (body["flag"], body["kind"], body["facts"]) == (flag.id, flag.kind, flag.facts)


async def test_an_operator_refunds_a_charge_once_and_the_ledger_still_checks(
        priced, pool, settings) -> None:
    req, bj = priced["req"], priced["bj"]
    await start(priced, "CH-3", max_cost="9.00")
    await bj.next("request")
    await bj.send("supplyingAgencyMessage",
                  supplier_message(bj.symbol, req.symbol, "CH-3", "CopyCompleted"))
    await bj.confirmed()
    await req.status("CopyCompleted")
    txn = await _txn(pool, req.symbol, "CH-3")
    code, out, err = await run(settings, "ledger", "reverse", txn["id"], "--reason", "读者投诉")
    assert code == 0, err
    assert "-8.00" in out and "读者投诉" in out
    code, _, err = await run(settings, "ledger", "reverse", txn["id"], "--reason", "again")
    assert code == 1 and "reversed already" in err
    code, out, err = await run(settings, "ledger", "check")
    assert code == 0, out + err
    code, out, _ = await run(settings, "ledger", "show", bj.symbol)
    assert code == 0 and txn["id"] in out


# --------------------------------------------------------------------------
# Costs in messageInfo.offeredCosts (issue 15, failure 6, its generic part). By the
# standard offeredCosts is an offer (a retry's price, a condition; 2021 moved it into
# retryInfo), the charge is deliveryInfo.deliveryCosts: a supplier that sends only
# offeredCosts on its billable status is billed the quote. A system that bills in
# offeredCosts (Alma) has its peer profile copy it into deliveryCosts at the edge.
# --------------------------------------------------------------------------


def offered(bj: str, req: str, request_id: str, amount: str) -> dict[str, Any]:
    """Alma's way: the charge in messageInfo.offeredCosts, no deliveryCosts."""
    return supplier_message(bj, req, request_id, "CopyCompleted",
                            offeredCosts={"currencyCode": "CNY", "monetaryValue": amount},
                            note=f"Cost: {amount} CNY")


async def test_offered_costs_alone_are_an_offer_and_the_quote_is_billed(priced, pool) -> None:
    req, bj = priced["req"], priced["bj"]
    await start(priced, "OC-1", max_cost="9.00")
    await bj.next("request")
    await bj.send("supplyingAgencyMessage", offered(bj.symbol, req.symbol, "OC-1", "15.00"))
    await bj.confirmed()  # not refused as above the quote: it is not a charge
    relayed = await req.status("CopyCompleted")
    assert relayed.content["messageInfo"]["offeredCosts"]["monetaryValue"] == "15.00"
    txn = await _txn(pool, req.symbol, "OC-1")
    [posting] = await pool.fetch("SELECT fee_minor FROM ledger_posting "
                                 "WHERE transaction_id = $1", txn["id"])
    assert posting["fee_minor"] == 800  # Beijing's quote, not the offer
    assert await of_transaction(pool, txn["id"]) == []


async def test_delivery_costs_are_the_charge_beside_offered_costs(priced, pool) -> None:
    # What an Alma supplier's message is once its profile has copied the charge.
    req, bj = priced["req"], priced["bj"]
    await start(priced, "OC-2", max_cost="9.00")
    await bj.next("request")
    both = offered(bj.symbol, req.symbol, "OC-2", "7.50")
    both["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(),
        "deliveryCosts": {"currencyCode": "CNY", "monetaryValue": "7.50"}}
    await bj.send("supplyingAgencyMessage", both)
    await bj.confirmed()
    await req.status("CopyCompleted")
    txn = await _txn(pool, req.symbol, "OC-2")
    assert await pool.fetchval("SELECT fee_minor FROM ledger_posting "
                               "WHERE transaction_id = $1", txn["id"]) == 750
