"""Outbound ISO 18626 over HTTP: the hub POSTs to XML peers through its outbox."""

from __future__ import annotations

import json
import re
import secrets

import pytest

from broker.agencies import AgencyError, NewAgency, add
from infra.outbox import Outgoing, enqueue
from schemas.iso18626_xml import read_xml
from schemas.wire import EVENTS, OUTBOUND
from tests.support import messages
from tests.support.iso18626_peer import HubClient, XmlPeer
from tests.support.names import agency_symbol
from tests.support.servers import eventually


@pytest.fixture
async def xml_library(hub, make_agency, pool):
    """A requester whose ILL system is an XML peer; its server is not started."""
    symbol, password = await make_agency(f"PEER-{secrets.token_hex(3)}", roles=("requester",))
    peer = XmlPeer()
    await pool.execute("UPDATE agency SET iso18626_url = $2 WHERE symbol = $1", symbol,
                       peer.url)
    yield HubClient(hub.http.base_url, symbol, password), peer
    await peer.stop()


async def outbox(pool, symbol: str) -> list[dict]:
    return [dict(r) for r in await pool.fetch(
        """SELECT id, message_id, transport, attempts, last_error, published_at, peer_status
           FROM outbox WHERE routing_key = $1 ORDER BY id""", symbol)]


async def unfilled_requests(library: HubClient, n: int) -> None:
    """Requests nobody holds: each one makes the hub send the library an Unfilled."""
    for i in range(n):
        await library.send(messages.request(library.symbol, request_id=f"D-{i}", issn=None,
                                            title=f"无人收藏之书 {i}", patron_id=f"P{i}"))


async def test_a_peer_down_then_up_gets_every_message_once_in_order(xml_library, pool) -> None:
    library, peer = xml_library
    await unfilled_requests(library, 3)  # its own POSTs work while its server is down

    async def tried_and_failed() -> bool:
        rows = await outbox(pool, library.symbol)
        return len(rows) == 3 and rows[0]["attempts"] >= 1

    await eventually(tried_and_failed)
    rows = await outbox(pool, library.symbol)
    assert all(r["transport"] == "iso18626-http" and r["published_at"] is None for r in rows)
    assert "ClientConnectorError" in rows[0]["last_error"]
    # Order: nothing after the first undelivered message went ahead of it.
    assert [r["attempts"] for r in rows[1:]] == [0, 0]

    await peer.start()
    # Time passes: the backoff is over (no waiting in tests for its seconds).
    await pool.execute("UPDATE outbox SET available_at = now() WHERE routing_key = $1",
                       library.symbol)

    async def all_delivered() -> bool:
        return all(r["peer_status"] == "OK" for r in await outbox(pool, library.symbol))

    await eventually(all_delivered)
    rows = await outbox(pool, library.symbol)
    assert [g.message_id for g in peer.received] == [r["message_id"] for r in rows]
    assert [g.content["header"]["requestingAgencyRequestId"] for g in peer.received] == [
        "D-0", "D-1", "D-2"]
    assert {g.content["statusInfo"]["status"] for g in peer.received} == {"Unfilled"}
    answer = await pool.fetchval("SELECT peer_answer FROM outbox WHERE id = $1", rows[0]["id"])
    assert read_xml(answer.encode()).content["confirmationHeader"]["messageStatus"] == "OK"


async def test_a_peer_error_is_flagged_and_dead_lettered_not_retried(xml_library, pool) -> None:
    library, peer = xml_library
    await peer.start()
    peer.refuse.add("E-1")
    await library.send(messages.request(library.symbol, request_id="E-1", issn=None,
                                        title="拒收之书", patron_id="P-E"))
    await library.send(messages.request(library.symbol, request_id="E-2", issn=None,
                                        title="照收之书", patron_id="P-F"))

    async def both_settled() -> bool:
        rows = await outbox(pool, library.symbol)
        return len(rows) == 2 and all(r["published_at"] is not None for r in rows)

    await eventually(both_settled)
    refused, accepted = await outbox(pool, library.symbol)
    # Refused once and closed, never retried; the next message was not held up by it.
    assert (refused["peer_status"], refused["attempts"]) == ("ERROR", 1)
    assert (accepted["peer_status"], accepted["attempts"]) == ("OK", 1)
    assert "UnrecognisedDataValue: bibliographicInfo: 不认识这本书" in refused["last_error"]
    assert [g.message_id for g in peer.received] == [refused["message_id"],
                                                      accepted["message_id"]]
    flag = await pool.fetchrow("SELECT * FROM flag WHERE kind = 'peer_error' AND subject = $1",
                               library.symbol)
    assert flag is not None and refused["message_id"] in flag["detail"]
    assert flag["transaction_id"] and flag["transaction_id"].startswith("ILL-")
    dead = await pool.fetchrow("SELECT * FROM dead_letter WHERE message_id = $1",
                               refused["message_id"])
    assert dead["sender"] is None and dead["routing_key"] == library.symbol
    assert "refused it: peer answered ERROR" in dead["reason"]
    assert json.loads(dead["properties"])["direction"] == "outbound"


async def test_a_2021_peer_gets_2021_documents(xml_library, pool) -> None:
    library, peer = xml_library
    peer.version = "2021"
    await pool.execute("UPDATE agency SET iso18626_version = '2021' WHERE symbol = $1",
                       library.symbol)
    await peer.start()
    await unfilled_requests(library, 1)
    got = await peer.next("supplyingAgencyMessage")
    assert got.message.version == "2021"
    assert got.message.declared == "2021"
    assert b"multipleItemRequestId" not in got.raw  # 1.2 would have it, empty


def test_agency_add_checks_the_peer_url_and_version() -> None:
    base = {"symbol": "ISIL:US-ABC", "name": "ABC", "roles": ("requester",),
            "password": "long-enough"}
    bad_url = re.escape("--iso18626-url 'ftp://ill.abc.edu' is not")
    with pytest.raises(AgencyError, match=bad_url):
        NewAgency(**base, iso18626_url="ftp://ill.abc.edu").check()
    with pytest.raises(AgencyError, match=re.escape("--iso18626-version must be one of 1.2, 2021")):
        NewAgency(**base, iso18626_url="https://ill.abc.edu/x", iso18626_version="1.3").check()


async def test_an_agency_added_as_peer_gets_its_outbox_rows_over_http(settings, pool) -> None:
    symbol = agency_symbol(f"ADD-{secrets.token_hex(3)}")
    await add(settings, pool, NewAgency(symbol=symbol, name="XML 图书馆", roles=("supplier",),
                                        password="long-enough",
                                        iso18626_url="https://ill.example.edu/iso18626",
                                        iso18626_version="2021"))
    try:
        row = await pool.fetchrow("SELECT iso18626_url, iso18626_version FROM agency "
                                  "WHERE symbol = $1", symbol)
        assert tuple(row) == ("https://ill.example.edu/iso18626", "2021")
        async with pool.acquire() as conn, conn.transaction():
            await enqueue(conn, [Outgoing(OUTBOUND, symbol, {"x": 1}),
                                 Outgoing(EVENTS, symbol, {"x": 2})])
            transports = [r["transport"] for r in await conn.fetch(
                "SELECT transport FROM outbox WHERE routing_key = $1 ORDER BY id", symbol)]
            assert transports == ["iso18626-http", "amqp"]  # events are not the peer's
            raise _Rollback
    except _Rollback:
        pass
    finally:
        await pool.execute("UPDATE agency SET enabled = false WHERE symbol = $1", symbol)


class _Rollback(Exception):
    pass
