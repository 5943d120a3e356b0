"""Dispatch end to end: real broker, real database, every agency its own broker user."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from broker.dispatch.explain import explain
from broker.dispatch.policies import load_policy
from schemas.settings import Settings
from tests.support import messages
from tests.support.messages import requester_action, supplier_message
from tests.support.network import ISSN, start, state_of


async def test_a_copy_goes_to_the_same_city_supplier_first_and_completes(network, pool) -> None:
    req, sh = network["req"], network["sh"]
    told = await start(network, "C-1")
    assert told.content["header"]["supplyingAgencyId"] == messages.agency_id(sh.symbol)
    fwd = await sh.next("request")  # same city first
    assert fwd.content["header"]["requestingAgencyRequestId"] == "C-1"
    assert fwd.content["bibliographicInfo"]["title"] == "中国图书馆学报"
    assert fwd.headers["hub-transaction-id"].startswith("ILL-")
    assert fwd.message_id == f"{fwd.headers['hub-transaction-id']}/forward/1"

    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "C-1", "WillSupply", "RequestResponse", answerYesNo="Y"))
    await sh.confirmed()
    await req.status("WillSupply")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "C-1", "CopyCompleted"))
    await sh.confirmed()
    await req.status("CopyCompleted")
    await req.send("requestingAgencyMessage", requester_action(req.symbol, sh.symbol, "C-1",
                                                               "Received"))
    await req.confirmed()
    got = await sh.next("requestingAgencyMessage")
    assert got.content["action"] == "Received"
    assert await state_of(pool, req.symbol, "C-1") == "CopyCompleted"
    card = await pool.fetchrow("SELECT * FROM scorecard WHERE supplier = $1", sh.symbol)
    assert card["forwarded"] == 1 and card["filled"] == 1 and card["open_requests"] == 0


async def test_loan_lifecycle_with_renew(network, pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "L-1", service_type="Loan", title="红楼梦")
    await sh.next("request")

    async def supplier_says(status: str, reason: str = "StatusChange", **info: Any) -> None:
        await sh.send("supplyingAgencyMessage", supplier_message(
            sh.symbol, req.symbol, "L-1", status, reason, **info))
        await sh.confirmed()
        await req.status(status, reason)

    async def requester_does(action: str) -> None:
        await req.send("requestingAgencyMessage",
                       requester_action(req.symbol, sh.symbol, "L-1", action))
        await req.confirmed()
        assert (await sh.next("requestingAgencyMessage")).content["action"] == action

    await supplier_says("Loaned")
    await requester_does("Received")
    await requester_does("Renew")
    await supplier_says("Loaned", "RenewResponse", answerYesNo="Y")
    await requester_does("ShippedReturn")
    await supplier_says("LoanCompleted")
    assert await state_of(pool, req.symbol, "L-1") == "LoanCompleted"
    trail = await pool.fetch(
        """SELECT event, from_state, to_state FROM audit_log a JOIN ill_transaction t
           ON t.id = a.transaction_id WHERE t.request_id = 'L-1' AND t.requester = $1
           ORDER BY a.id""", req.symbol)
    assert [(r["event"], r["to_state"]) for r in trail] == [
        ("request", "New"), ("forward", "ExpectToSupply"), ("status:Loaned", "Loaned"),
        ("action:Received", "Received"), ("action:Renew", "Received"),
        ("status:Loaned", "Received"), ("action:ShippedReturn", "ShippedReturn"),
        ("status:LoanCompleted", "LoanCompleted")]


async def test_unfilled_moves_to_next_supplier(network, pool) -> None:
    req, sh, js = network["req"], network["sh"], network["js"]
    await start(network, "U-1")
    await sh.next("request")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "U-1", "Unfilled", "RequestResponse", answerYesNo="N",
        reasonUnfilled="NotOnShelf"))
    await sh.confirmed()
    note = await req.status("ExpectToSupply", "Notification")
    assert "NotOnShelf" in note.content["messageInfo"]["note"]
    fwd = await js.next("request")  # same province next
    assert fwd.message_id.endswith("/forward/2")
    await js.send("supplyingAgencyMessage", supplier_message(
        js.symbol, req.symbol, "U-1", "CopyCompleted"))
    await js.confirmed()
    await req.status("CopyCompleted")
    rota = await pool.fetch("""SELECT e.supplier, e.outcome FROM rota_entry e JOIN ill_transaction t
                               ON t.id = e.transaction_id WHERE t.request_id = 'U-1'
                               AND t.requester = $1 ORDER BY position""", req.symbol)
    assert [(r["supplier"], r["outcome"]) for r in rota] == [
        (sh.symbol, "unfilled"), (js.symbol, "supplied"), (network["bj"].symbol, "pending")]


async def test_silent_supplier_is_cancelled_and_skipped(network, hub, pool) -> None:
    req, sh, js = network["req"], network["sh"], network["js"]
    await start(network, "S-1", service_level="Rush")
    await sh.next("request")
    deadline = await pool.fetchval("SELECT deadline_at FROM ill_transaction WHERE "
                                   "request_id = 'S-1' AND requester = $1", req.symbol)
    assert timedelta(hours=23) < deadline - datetime.now(UTC) <= timedelta(hours=24)
    # Drive the clock: just before the deadline nothing happens, just after it moves on.
    # (Other tests' transactions share the database: look at this one's state.)
    await hub.dispatcher.sweep_deadlines(hub.pool, now=deadline - timedelta(seconds=1))
    assert await pool.fetchval("SELECT supplier FROM ill_transaction WHERE request_id = 'S-1' "
                               "AND requester = $1", req.symbol) == sh.symbol
    assert await hub.dispatcher.sweep_deadlines(hub.pool, now=deadline + timedelta(seconds=1)) >= 1
    cancel = await sh.next("requestingAgencyMessage")
    assert cancel.content["action"] == "Cancel"
    note = await req.status("ExpectToSupply", "Notification")
    assert "did not answer" in note.content["messageInfo"]["note"]
    await js.next("request")
    card = await pool.fetchrow("SELECT timed_out, open_requests FROM scorecard "
                               "WHERE supplier = $1", sh.symbol)
    assert card["timed_out"] == 1 and card["open_requests"] == 0
    # The silent supplier waking up late is told it is no longer the supplier.
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "S-1", "WillSupply"))
    err = await sh.confirmed(ok=False)
    assert "not the current supplier" in err.content["errorData"]["errorValue"]


async def test_end_of_rota_is_unfilled(network, pool) -> None:
    req = network["req"]
    await start(network, "E-1")
    for key in ("sh", "js", "bj"):
        party = network[key]
        await party.next("request")
        await party.send("supplyingAgencyMessage", supplier_message(
            party.symbol, req.symbol, "E-1", "Unfilled", reasonUnfilled="NotHeld"))
        await party.confirmed()
        if key != "bj":
            await req.status("ExpectToSupply", "Notification")
    final = await req.status("Unfilled")
    assert "no other supplier" in final.content["messageInfo"]["note"]
    assert await state_of(pool, req.symbol, "E-1") == "Unfilled"


async def test_a_request_nobody_holds_is_unfilled_at_once(network, pool) -> None:
    req = network["req"]
    await req.send("request", messages.request(req.symbol, request_id="N-1", issn="0000-0019"))
    await req.confirmed()
    final = await req.status("Unfilled")
    assert "no supplier" in final.content["messageInfo"]["note"]


async def test_requester_cancels_mid_flight(network, pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "X-1")
    await sh.next("request")
    await req.send("requestingAgencyMessage",
                   requester_action(req.symbol, sh.symbol, "X-1", "Cancel", "读者不需要了"))
    await req.confirmed()
    cancel = await sh.next("requestingAgencyMessage")
    assert cancel.content["action"] == "Cancel" and cancel.content["note"] == "读者不需要了"
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "X-1", "Cancelled", "CancelResponse", answerYesNo="Y"))
    await sh.confirmed()
    await req.status("Cancelled", "CancelResponse")
    assert await state_of(pool, req.symbol, "X-1") == "Cancelled"


async def test_duplicate_request_id_gets_the_same_confirmation(network, pool) -> None:
    req = network["req"]
    body = messages.request(req.symbol, request_id="D-1", issn=ISSN)
    await req.send("request", body)
    first = await req.confirmed()
    await req.status("ExpectToSupply")
    await req.send("request", body)  # new message_id, same requestingAgencyRequestId
    again = await req.confirmed()
    assert again.content == first.content
    assert again.headers["hub-transaction-id"] == first.headers["hub-transaction-id"]
    assert await pool.fetchval("SELECT count(*) FROM ill_transaction WHERE requester = $1 "
                               "AND request_id = 'D-1'", req.symbol) == 1


async def test_same_patron_same_item_while_open_is_refused(network) -> None:
    req = network["req"]
    await start(network, "P-1")
    await req.send("request", messages.request(req.symbol, request_id="P-2", issn=ISSN))
    err = await req.confirmed(ok=False)
    assert "duplicate of open request 'P-1'" in err.content["errorData"]["errorValue"]


async def test_transitions_the_state_model_forbids_are_refused_and_change_nothing(
        network, pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "F-1")
    await sh.next("request")
    await req.send("requestingAgencyMessage",
                   requester_action(req.symbol, sh.symbol, "F-1", "Renew"))
    err = await req.confirmed(ok=False)
    assert err.content["errorData"]["errorType"] == "UnsupportedActionType"
    assert "'Renew' is not allowed while the request is ExpectToSupply" in \
        err.content["errorData"]["errorValue"]
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "F-1", "Loaned"))  # a copy cannot be loaned
    err = await sh.confirmed(ok=False)
    assert err.content["errorData"]["errorType"] == "UnrecognisedDataValue"
    assert "statusInfo.status: 'Loaned'" in err.content["errorData"]["errorValue"]
    assert await state_of(pool, req.symbol, "F-1") == "ExpectToSupply"
    # A third party cannot touch the transaction.
    bj = network["bj"]
    await bj.send("supplyingAgencyMessage", supplier_message(
        bj.symbol, req.symbol, "F-1", "CopyCompleted"))
    err = await bj.confirmed(ok=False)
    assert "not the current supplier" in err.content["errorData"]["errorValue"]
    assert await state_of(pool, req.symbol, "F-1") == "ExpectToSupply"


async def test_status_request_is_answered_by_the_hub(network) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "Q-1")
    await sh.next("request")
    await req.send("requestingAgencyMessage",
                   requester_action(req.symbol, sh.symbol, "Q-1", "StatusRequest"))
    await req.confirmed()
    await req.status("ExpectToSupply", "StatusRequestResponse")
    assert sh.client.inbox.empty()


async def test_a_closed_supplier_and_a_used_up_daily_cap_are_skipped(network, pool) -> None:
    req, sh, js, bj = network["req"], network["sh"], network["js"], network["bj"]
    await load_policy(pool, f"""
version = "test-closed-cap"
[groups]
east = ["{js.symbol}"]
[[rule]]
name = "Shanghai closed for stocktaking"
closed = {{ weekdays = ["Mon","Tue","Wed","Thu","Fri","Sat","Sun"], suppliers = ["{sh.symbol}"] }}
[[rule]]
name = "east cap"
daily_cap = {{ "group:east" = 1 }}
""", "test.toml")
    try:
        await start(network, "K-1")
        await js.next("request")  # Shanghai is closed: Nanjing first
        await req.send("request", messages.request(req.symbol, request_id="K-2", issn=ISSN,
                                                   patron="王五", patron_id="P-0002"))
        await req.confirmed()
        await req.status("ExpectToSupply")
        await bj.next("request")  # Nanjing's daily cap of 1 is used up
        txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE request_id = 'K-2' "
                                  "AND requester = $1", req.symbol)
        text = "\n".join(await _explain(pool, txn))
        assert "closed" in text and "Shanghai closed for stocktaking" in text
        assert "daily cap 1" in text or "cap" in text
        assert f"1. {bj.symbol}" in text
        assert "audit trail:" in text and "forward" in text
    finally:
        # Versions are history (transactions refer to them): later tests get a fresh one.
        await load_policy(pool, 'version = "no rules"', "reset.toml")


async def _explain(pool, txn: str) -> list[str]:
    async with pool.acquire() as conn:
        return await explain(conn, txn)


async def test_explain_lists_the_rota_with_tiers_and_reasons(network, pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "XP-1")
    await sh.next("request")
    txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE request_id = 'XP-1' "
                              "AND requester = $1", req.symbol)
    text = "\n".join(await _explain(pool, txn))
    assert f"request 'XP-1' from {req.symbol}" in text
    assert f"1. {sh.symbol}  tier 1" in text and "same city" in text
    assert f"2. {network['js'].symbol}  tier 3" in text and "other province 江苏" in text
    assert "request" in text and "None" not in text
    with pytest.raises(LookupError):
        await _explain(pool, "ILL-NOPE")


async def test_state_changes_are_published_on_ill_events(settings: Settings, network) -> None:
    conn = await aio_pika.connect(settings.amqp.url.get_secret_value())
    async with conn:
        ch = await conn.channel()
        events = await ch.get_exchange(settings.name("ill.events"), ensure=False)
        queue = await ch.declare_queue(exclusive=True)
        await queue.bind(events, routing_key="transaction.#")
        await start(network, "EV-1")
        seen = []
        async with queue.iterator(timeout=10) as it:
            async for msg in it:
                await msg.ack()
                seen.append((msg.routing_key, json.loads(msg.body)))
                if msg.routing_key == "transaction.ExpectToSupply":
                    break
    _key, body = seen[-1]
    assert body["requester"] == network["req"].symbol
    assert body["supplier"] == network["sh"].symbol and body["event"] == "forward"


async def test_retry_possible_then_retry_continues_with_that_supplier(network, pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "RT-1", max_cost="10.00")
    await sh.next("request")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "RT-1", "RetryPossible", "RequestResponse", answerYesNo="N",
        reasonRetry="CostExceedsMaxCost",
        offeredCosts={"currencyCode": "CNY", "monetaryValue": "25.00"}))
    await sh.confirmed()
    offer = await req.status("RetryPossible")
    assert offer.content["messageInfo"]["reasonRetry"] == "CostExceedsMaxCost"
    # The requester accepts the higher cost with a Retry request.
    retry = messages.request(req.symbol, request_id="RT-2", issn=ISSN, max_cost="30.00")
    retry["request"]["serviceInfo"].update(
        {"requestType": "Retry", "requestingAgencyPreviousRequestId": "RT-1"})
    await req.send("request", retry)
    await req.confirmed()
    await req.status("ExpectToSupply")
    fwd = await sh.next("request")  # the same supplier gets the retried request
    assert fwd.content["header"]["requestingAgencyRequestId"] == "RT-2"
    assert await state_of(pool, req.symbol, "RT-1") == "Cancelled"
    assert await state_of(pool, req.symbol, "RT-2") == "ExpectToSupply"


async def test_retry_possible_then_cancel(network, pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "RC-1")
    await sh.next("request")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "RC-1", "RetryPossible", reasonRetry="NotCurrentlyAvailable"))
    await sh.confirmed()
    await req.status("RetryPossible")
    await req.send("requestingAgencyMessage",
                   requester_action(req.symbol, sh.symbol, "RC-1", "Cancel"))
    await req.confirmed()
    await req.status("Cancelled", "CancelResponse")
    assert (await sh.next("requestingAgencyMessage")).content["action"] == "Cancel"
    assert await state_of(pool, req.symbol, "RC-1") == "Cancelled"


async def test_a_retry_of_a_request_not_waiting_for_one_is_refused(network) -> None:
    req = network["req"]
    await start(network, "RN-1")
    retry = messages.request(req.symbol, request_id="RN-2", issn=ISSN, patron_id="P-9")
    retry["request"]["serviceInfo"].update(
        {"requestType": "Retry", "requestingAgencyPreviousRequestId": "RN-1"})
    await req.send("request", retry)
    err = await req.confirmed(ok=False)
    assert "is ExpectToSupply, not RetryPossible" in err.content["errorData"]["errorValue"]
