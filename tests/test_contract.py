"""The contract is live: every inbound message gets the right ISO 18626 confirmation.

A real agency user publishes to the real broker; the hub runs in this event loop.
"""

from __future__ import annotations

import asyncio
import json

import aio_pika

from broker.intake import Inbound, Intake
from illclient.client import AgencyClient
from schemas.settings import Settings
from tests.support import messages
from tests.support.servers import eventually


def _header(received) -> dict:
    return received.content["confirmationHeader"]


async def test_valid_request_is_confirmed_ok(settings: Settings, hub, make_agency) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        body = messages.request(symbol, request_id="R-1")
        await lib.send("request", body)
        got = await lib.receive()
    assert got.kind == "requestConfirmation"
    assert _header(got)["messageStatus"] == "OK"
    assert _header(got)["requestingAgencyRequestId"] == "R-1"
    assert got.correlation_id == "R-1"


async def test_a_body_that_is_not_json_is_refused_and_dead_lettered(
        settings: Settings, hub, make_agency, pool) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        mid = await lib.send("request", b"\x00not json at all")
        got = await lib.receive()
    assert _header(got)["messageStatus"] == "ERROR"
    assert got.content["errorData"]["errorType"] == "BadlyFormedMessage"
    assert "not valid UTF-8" in got.content["errorData"]["errorValue"] or \
        "not JSON" in got.content["errorData"]["errorValue"]
    row = await pool.fetchrow("SELECT reason FROM dead_letter WHERE message_id = $1", mid)
    assert row and "BadlyFormedMessage" in row["reason"]
    await _assert_in_hub_dead(settings, mid)


async def test_schema_violation_names_the_field(settings: Settings, hub, make_agency) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        bad = messages.request(symbol, service_type="Photocopy")
        await lib.send("request", bad)
        got = await lib.receive()
        assert got.content["errorData"]["errorType"] == "UnrecognisedDataValue"
        assert "request.serviceInfo.serviceType" in got.content["errorData"]["errorValue"]
        assert "Photocopy" in got.content["errorData"]["errorValue"]

        await lib.send("request", {"orderForm": {"x": 1}})
        got = await lib.receive()
        assert got.content["errorData"]["errorType"] == "UnrecognisedDataElement"
        assert "orderForm" in got.content["errorData"]["errorValue"]

        missing = messages.request(symbol)
        del missing["request"]["header"]["requestingAgencyRequestId"]
        await lib.send("request", missing)
        got = await lib.receive()
        assert got.kind == "requestConfirmation"
        assert _header(got)["messageStatus"] == "ERROR"
        assert "requestingAgencyRequestId" in got.content["errorData"]["errorValue"]


async def test_confirmation_type_follows_message_type(settings: Settings, hub,
                                                      make_agency) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        await lib.send("requestingAgencyMessage", {"requestingAgencyMessage": {
            "header": {"requestingAgencyId": messages.agency_id(symbol),
                       "supplyingAgencyId": messages.agency_id(symbol),
                       "timestamp": messages.now(), "requestingAgencyRequestId": "R-9"},
            "action": "Teleport"}})
        got = await lib.receive()
    assert got.kind == "requestingAgencyMessageConfirmation"
    assert got.content["errorData"]["errorType"] == "UnrecognisedDataValue"
    assert "action" in got.content["errorData"]["errorValue"]


async def test_a_header_naming_another_agency_is_refused(
        settings: Settings, hub, make_agency) -> None:
    alice, pw = await make_agency()
    bob, _ = await make_agency()
    async with AgencyClient(settings, alice, pw) as lib:
        await lib.send("request", messages.request(bob))  # claims to be bob
        got = await lib.receive()
    assert got.content["errorData"]["errorType"] == "UnrecognisedDataValue"
    value = got.content["errorData"]["errorValue"]
    assert "requestingAgencyId" in value and bob in value and alice in value


async def test_missing_user_id_goes_to_dead_letters(settings: Settings, hub, make_agency,
                                                    pool) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        mid = await lib.send("request", messages.request(symbol), user_id=None)

        async def dead_recorded() -> bool:
            return bool(await pool.fetchval(
                "SELECT reason FROM dead_letter WHERE message_id = $1", mid))

        await eventually(dead_recorded)
        assert lib.inbox.empty()  # nobody to answer: the sender is unknown
    reason = await pool.fetchval("SELECT reason FROM dead_letter WHERE message_id = $1", mid)
    assert "no user_id" in reason
    await _assert_in_hub_dead(settings, mid)


async def test_a_wrong_content_type_is_a_badly_formed_message(
        settings: Settings, hub, make_agency) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        await lib.send("request", messages.request(symbol), content_type="text/plain")
        got = await lib.receive()
    assert got.content["errorData"]["errorType"] == "BadlyFormedMessage"
    assert "content_type is 'text/plain'" in got.content["errorData"]["errorValue"]


async def test_a_message_without_message_id_is_answered_with_an_error(
        settings: Settings, make_agency, pool) -> None:
    # aiormq invents a message_id on every publish, so drive intake directly with what
    # another client library could deliver; the answer is written to the real outbox.
    symbol, _ = await make_agency()
    body = json.dumps(messages.request(symbol, request_id="R-no-id")).encode()
    outcome = await Intake(settings).process(pool, Inbound(
        body=body, sender=symbol, message_id=None, routing_key="request",
        content_type="application/json", message_type="request", correlation_id="R-no-id"))
    assert outcome == "error"
    row = await pool.fetchrow("SELECT body FROM outbox WHERE routing_key = $1 "
                              "AND correlation_id = 'R-no-id'", symbol)
    answer = json.loads(row["body"])["requestConfirmation"]
    assert answer["errorData"]["errorType"] == "BadlyFormedMessage"
    assert "message_id is missing" in answer["errorData"]["errorValue"]


async def test_redelivered_message_id_is_absorbed(settings: Settings, hub, make_agency,
                                                  pool) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        body = messages.request(symbol, request_id="R-dup")
        await lib.send("request", body, message_id="same-id")
        await lib.send("request", body, message_id="same-id")
        # The marker carries the same correlation_id, so it shares the duplicate's intake
        # shard and is applied after it (order holds within a shard, not across them).
        await lib.send("request", messages.request(symbol), message_id="marker",
                       correlation_id="R-dup")
        confirmations = []
        while len(confirmations) < 2:
            got = await lib.receive()
            if got.kind == "requestConfirmation":
                confirmations.append(got)
        marker = confirmations[1]
        # The duplicate produced nothing: the next message we see is the marker's answer.
        assert _header(marker)["requestingAgencyRequestId"] != "R-dup"
    assert await pool.fetchval(
        "SELECT count(*) FROM inbox WHERE sender = $1 AND message_id = 'same-id'", symbol) == 1


async def test_oversized_body_refused_before_parsing(settings: Settings, hub, make_agency,
                                                     pool) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        huge = b"[" * (settings.intake.max_message_bytes + 10)  # would explode a naive parser
        await lib.send("request", huge)
        got = await lib.receive()
    assert "limit is" in got.content["errorData"]["errorValue"]


async def _assert_in_hub_dead(settings: Settings, message_id: str | None) -> None:
    conn = await aio_pika.connect(settings.amqp.url.get_secret_value())
    async with conn:
        ch = await conn.channel()
        queue = await ch.get_queue(settings.name("hub.dead"), ensure=False)
        for _ in range(100):
            msg = await queue.get(fail=False, timeout=5)
            if msg is None:
                await asyncio.sleep(0.05)
                continue
            await msg.ack()
            if msg.headers.get("x-illhub-original-message-id") == message_id:
                assert msg.headers["x-illhub-reason"]
                return
        raise AssertionError(f"{message_id} not found in hub.dead")

