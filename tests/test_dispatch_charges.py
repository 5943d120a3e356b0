"""Dispatch with fee schedules: quotes frozen at routing, maximumCosts, charges on delivery."""

from __future__ import annotations

from typing import Any

import pytest

from settlement.fees import load_fees
from settlement.ledger import check
from tests import messages
from tests.test_dispatch import (
    ISSN,
    Party,
    network,  # noqa: F401 - the fixture
    start,
    state_of,
    supplier_message,
)


@pytest.fixture
async def priced(network, pool) -> dict[str, Party]:  # noqa: F811
    """Shanghai charges 60.00 per copy, Nanjing 12.00 + 0.50/page, Beijing 8.00."""
    sh, js, bj = network["sh"].symbol, network["js"].symbol, network["bj"].symbol
    async with pool.acquire() as conn:
        await load_fees(conn, f"""
currency = "CNY"
[[fee]]
supplier = "{sh}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "60.00"
[[fee]]
supplier = "{js}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "12.00"
per_page = "0.50"
[[fee]]
supplier = "{bj}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "8.00"
""", file_name="test-fees.toml")
    return network


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
    assert await pool.fetchval("SELECT count(*) FROM charge_flag WHERE transaction_id = $1",
                               txn["id"]) == 1


async def test_operator_refund_check_and_show_through_the_cli(priced, pool, settings) -> None:
    from tests.test_cli import run

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
