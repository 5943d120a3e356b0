"""A network of libraries whose ILL systems speak different dialects: some over AMQP,
some over ISO 18626 HTTP with a peer profile (alma, reshare, ... ) and a schema version.

`Peers` makes them (real agencies, real XML peers, real AMQP clients) on a running hub;
`Side` is one of them, sending and receiving whatever its transport. Each test module
that uses it has a small fixture creating a `Peers` and closing it.
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import asyncpg

from app.hub import Hub
from broker.agencies import PeerChange, change
from illclient.client import AgencyClient
from schemas.iso18626_xml import XmlMessage, read_xml
from schemas.settings import Settings
from settlement.fees import load_fees
from tests.support.agencies import MakeAgency
from tests.support.hub import Party
from tests.support.iso18626_peer import HubClient, XmlPeer
from tests.support.messages import agency_id, now

FEES = """
currency = "CNY"
[[fee]]
supplier = "{supplier}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "9.50"
[[fee]]
supplier = "{supplier}"
service_kind = "BookLoan"
effective_from = 2020-01-01
service_fee = "15.00"
"""


class Side:
    """One library: an AMQP member, or an ISO 18626 HTTP peer with a profile."""

    def __init__(self, symbol: str, password: str, *, profile: str | None = None,
                 amqp: Party | None = None, http: HubClient | None = None,
                 peer: XmlPeer | None = None) -> None:
        self.symbol, self.password, self.profile = symbol, password, profile
        self.amqp, self.http, self.peer = amqp, http, peer

    @property
    def agency_id(self) -> dict[str, str]:
        return agency_id(self.symbol)

    async def send(self, body: dict[str, Any], ok: bool = True) -> dict[str, Any]:
        """Send a message (the hub's JSON form); returns the confirmation's content."""
        if self.http:
            return (await self.http.send(body, ok=ok)).content
        assert self.amqp
        await self.amqp.send(next(iter(body)), body)
        return (await self.amqp.confirmed(ok)).content

    async def post(self, raw: bytes, ok: bool = True) -> XmlMessage:
        """POST a document as the library's system wrote it; returns the confirmation."""
        assert self.http, "only an HTTP peer posts documents"
        status, answer = await self.http.post_raw(raw)
        assert status == 200, answer
        got = read_xml(answer)
        assert got.content["confirmationHeader"]["messageStatus"] == ("OK" if ok else "ERROR"), \
            got.body
        return got

    async def gets(self, kind: str) -> dict[str, Any]:
        if self.peer:
            return (await self.peer.next(kind)).content
        assert self.amqp
        return (await self.amqp.next(kind)).content

    async def status(self, status: str) -> dict[str, Any]:
        got = await self.gets("supplyingAgencyMessage")
        assert got["statusInfo"]["status"] == status, got
        return got

    def says(self, to: Side, rid: str, status: str, reason: str = "StatusChange",
             *, delivery: dict[str, Any] | None = None, **info: Any) -> dict[str, Any]:
        """A supplyingAgencyMessage from this supplier to `to` about `rid`."""
        body: dict[str, Any] = {
            "header": {"supplyingAgencyId": self.agency_id, "requestingAgencyId": to.agency_id,
                       "timestamp": now(), "requestingAgencyRequestId": rid},
            "messageInfo": {"reasonForMessage": reason, **info},
            "statusInfo": {"status": status, "lastChange": now()}}
        if delivery is not None:
            body["deliveryInfo"] = {"dateSent": now(), **delivery}
        return {"supplyingAgencyMessage": body}

    def does(self, to: Side, rid: str, action: str, note: str | None = None) -> dict[str, Any]:
        """A requestingAgencyMessage from this requester to supplier `to` about `rid`."""
        body: dict[str, Any] = {
            "header": {"supplyingAgencyId": to.agency_id, "requestingAgencyId": self.agency_id,
                       "timestamp": now(), "requestingAgencyRequestId": rid},
            "action": action}
        if note is not None:
            body["note"] = note
        return {"requestingAgencyMessage": body}


class Peers:
    """Libraries on one hub; `close()` stops their servers and clients."""

    def __init__(self, settings: Settings, hub: Hub, make_agency: MakeAgency,
                 pool: asyncpg.Pool) -> None:
        self.settings, self.hub, self.make_agency, self.pool = settings, hub, make_agency, pool
        self._peers: list[XmlPeer] = []
        self._clients: list[AgencyClient] = []

    async def library(self, label: str, role: str, *, profile: str | None = None,
                      version: str = "1.2") -> Side:
        """A library in Shanghai: AMQP when `profile` is None, else an HTTP peer of that
        profile (set with `agency set`, as an operator would) answering in `version`."""
        symbol, password = await self.make_agency(
            f"{label}-{secrets.token_hex(3)}", roles=(role,), province="上海", city="上海",
            name=f"{label} 图书馆")
        if profile is None:
            client = AgencyClient(self.settings, symbol, password)
            await client.connect()
            self._clients.append(client)
            return Side(symbol, password, amqp=Party(symbol, client))
        peer = await XmlPeer(version).start()
        self._peers.append(peer)
        await change(self.pool, symbol, PeerChange(profile=profile, iso18626_url=peer.url,
                                                   iso18626_version=version))
        return Side(symbol, password, profile=profile, peer=peer,
                    http=HubClient(self.hub.http.base_url, symbol, password, version))

    async def holds(self, supplier: Side, issn: str) -> None:
        await self.pool.execute("INSERT INTO holding (id_type, id_value, symbol) "
                                "VALUES ('issn', $1, $2)", issn, supplier.symbol)
        async with self.pool.acquire() as conn:
            await load_fees(conn, FEES.format(supplier=supplier.symbol),
                            file_name=f"fees-{supplier.symbol}.toml")

    async def close(self) -> None:
        for client in self._clients:
            await client.close()
        for peer in self._peers:
            await peer.stop()


async def trail(pool: asyncpg.Pool, requester: Side, rid: str) -> tuple[str, list[str]]:
    """The transaction's state and its audit events, in order."""
    txn = await pool.fetchrow("SELECT id, state FROM ill_transaction "
                              "WHERE requester = $1 AND request_id = $2", requester.symbol, rid)
    assert txn is not None, f"no transaction {rid} of {requester.symbol}"
    events = [r["event"] for r in await pool.fetch(
        "SELECT event FROM audit_log WHERE transaction_id = $1 ORDER BY id", txn["id"])]
    return txn["state"], events


async def charged(pool: asyncpg.Pool, requester: Side, rid: str) -> list[tuple[str, int]]:
    """The ledger's charges of the transaction: (event, fee in fen)."""
    return [(r["event"], r["fee_minor"]) for r in await pool.fetch(
        """SELECT p.event, p.fee_minor FROM ledger_posting p
           JOIN ill_transaction t ON t.id = p.transaction_id
           WHERE t.requester = $1 AND t.request_id = $2 AND p.kind = 'charge'
           ORDER BY p.id""", requester.symbol, rid)]


async def outbox_to(pool: asyncpg.Pool, side: Side) -> list[asyncpg.Record]:
    return list(await pool.fetch(
        """SELECT message_id, message_type, transport, published_at, peer_status, peer_answer
           FROM outbox WHERE routing_key = $1 AND exchange = 'ill.outbound' ORDER BY id""",
        side.symbol))


async def originals_from(pool: asyncpg.Pool, side: Side) -> list[dict[str, Any]]:
    """What `side` sent, as received (inbound_original), oldest first; adjustments decoded."""
    rows = await pool.fetch(
        """SELECT message_id, transport, profile, request_id, original, adjustments, note_seq
           FROM inbound_original WHERE sender = $1 ORDER BY received_at, message_id""",
        side.symbol)
    return [{**dict(r), "adjustments": json.loads(r["adjustments"])} for r in rows]
