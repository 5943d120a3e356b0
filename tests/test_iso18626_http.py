"""POST /iso18626: ILL systems talking ISO 18626 XML over HTTP to the real hub.

Real servers throughout: the hub (RabbitMQ, PostgreSQL, its aiohttp server), AMQP
agencies with their own broker users, and XML peers played by small aiohttp servers.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from illclient.client import AgencyClient
from schemas.iso18626_codes import ErrorType
from schemas.iso18626_xml import read_xml, to_xml
from schemas.settings import Settings
from settlement.fees import load_fees
from tests.support import messages
from tests.support.hub import Party
from tests.support.iso18626_peer import HubClient, XmlPeer
from tests.support.messages import requester_action, supplier_message
from tests.support.paths import DATA
from tests.support.servers import eventually

ISSN = "1671-2838"
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
SAMPLES = DATA / "iso18626"


async def count(pool, sql: str, *args: Any) -> int:
    return await pool.fetchval(sql, *args)


@pytest.fixture
async def library(hub, make_agency, pool) -> HubClient:
    """A requesting library whose ILL system is an XML peer (down: no server yet)."""
    symbol, password = await make_agency(f"XML-{secrets.token_hex(3)}", roles=("requester",))
    return HubClient(hub.http.base_url, symbol, password)


def answer_of(raw: bytes) -> dict[str, Any]:
    got = read_xml(raw)
    return got.content


async def test_no_or_wrong_credentials_get_401_and_change_nothing(library, pool) -> None:
    doc = to_xml(messages.request(library.symbol, request_id="A-1")).data
    status, body = await library.post_raw(doc, auth=False)
    assert status == 401
    assert b"no credentials" in body
    wrong = HubClient(library.url.rsplit("/", 1)[0], library.symbol, "not-the-password")
    status, body = await wrong.post_raw(doc)
    assert status == 401
    assert b"do not match an enabled agency" in body
    assert await count(pool, "SELECT count(*) FROM inbox WHERE sender = $1",
                       library.symbol) == 0


async def test_request_is_confirmed_synchronously_and_once(library, pool) -> None:
    body = messages.request(library.symbol, request_id="H-1", issn=None, title="天工开物")
    doc = to_xml(body).data
    status, raw = await library.post_raw(doc)
    assert status == 200
    first = answer_of(raw)
    assert first["confirmationHeader"]["messageStatus"] == "OK"
    assert first["confirmationHeader"]["requestingAgencyRequestId"] == "H-1"
    # The same document again (the peer timed out, say): the same answer, nothing twice.
    status, raw = await library.post_raw(doc)
    assert status == 200
    again = answer_of(raw)
    assert again["confirmationHeader"]["messageStatus"] == "OK"
    assert again["confirmationHeader"]["requestingAgencyRequestId"] == "H-1"
    assert await count(pool, "SELECT count(*) FROM ill_transaction WHERE requester = $1",
                       library.symbol) == 1
    # The confirmation went back in the HTTP response, never to the outbox.
    assert await count(pool, "SELECT count(*) FROM outbox WHERE routing_key = $1 "
                       "AND message_type LIKE '%Confirmation'", library.symbol) == 0


async def test_credentials_in_the_message_work_and_are_not_kept(library, pool) -> None:
    body = messages.request(library.symbol, request_id="H-2", issn=None)
    body["request"]["header"]["requestingAgencyAuthentication"] = {
        "accountId": library.symbol, "securityCode": library.password}
    status, raw = await library.post_raw(to_xml(body).data, auth=False)
    assert status == 200
    assert answer_of(raw)["confirmationHeader"]["messageStatus"] == "OK"
    stored = await pool.fetchval("SELECT request::text FROM ill_transaction "
                                 "WHERE requester = $1 AND request_id = 'H-2'", library.symbol)
    inbox = await pool.fetchval("SELECT body::text FROM inbox WHERE sender = $1",
                                library.symbol)
    assert "requestingAgencyAuthentication" not in stored + inbox
    assert library.password not in stored + inbox
    body["request"]["header"]["requestingAgencyAuthentication"]["securityCode"] = "guess-1234"
    status, _ = await library.post_raw(to_xml(body).data, auth=False)
    assert status == 401


async def test_schema_errors_are_answered_naming_the_element(library, pool) -> None:
    doc = to_xml(messages.request(library.symbol, request_id="H-3")).data
    status, raw = await library.post_raw(doc.replace(b">Copy<", b">Photocopy<"))
    assert status == 200
    answer = answer_of(raw)
    assert answer["confirmationHeader"]["messageStatus"] == "ERROR"
    assert answer["confirmationHeader"]["requestingAgencyRequestId"] == "H-3"
    assert answer["errorData"]["errorType"] == ErrorType.UNRECOGNISED_DATA_VALUE
    assert answer["errorData"]["errorValue"].startswith(
        "request.serviceInfo.serviceType: 'Photocopy' is not one of Copy, Loan, CopyOrLoan")
    status, raw = await library.post_raw(b"<ISO18626Message><request>")
    assert status == 200
    broken = answer_of(raw)
    assert broken["errorData"]["errorType"] == ErrorType.BADLY_FORMED_MESSAGE
    assert broken["errorData"]["errorValue"].startswith("body is not well-formed XML")
    assert await count(pool, "SELECT count(*) FROM ill_transaction WHERE requester = $1",
                       library.symbol) == 0


async def test_hub_rules_answer_in_xml_too(library, pool) -> None:
    # Valid XML, but the header names someone else as the requester: intake refuses.
    body = messages.request("ISIL:CN-OTHER", request_id="H-4")
    status, raw = await library.post_raw(to_xml(body).data)
    answer = answer_of(raw)
    assert status == 200 and answer["confirmationHeader"]["messageStatus"] == "ERROR"
    assert answer["errorData"]["errorValue"].startswith(
        "request.header.requestingAgencyId: 'ISIL:CN-OTHER' is not the sending agency")


def agency_xml(symbol: str, indent: str = "\n                ") -> str:
    scheme, value = symbol.split(":")
    return f"<agencyIdType>{scheme}</agencyIdType>{indent}<agencyIdValue>{value}</agencyIdValue>"


def sample(name: str, **replace: str) -> bytes:
    """A published sample with its placeholders and agencies made ours."""
    raw = (SAMPLES / name).read_bytes()
    for old, new in replace.items():
        assert old.encode() in raw, old
        raw = raw.replace(old.encode(), new.encode())
    return raw


async def test_public_sample_requests_are_confirmed(library, settings: Settings, pool) -> None:
    # crosslink's illmock request (1.2) addressed to the hub: the hub chooses a supplier.
    raw = sample("modrs_illmockrequest.xml", **{
        agency_xml("DMMY:NIA1"): agency_xml(settings.hub_symbol),
        agency_xml("DMMY:NIA2"): agency_xml(library.symbol),
        "0001-01-01T00:00:00.000Z": messages.now()})
    status, answer = await library.post_raw(raw)
    assert status == 200, answer
    assert answer_of(answer)["confirmationHeader"]["messageStatus"] == "OK"
    # ReShare's patron request: no namespace, version "", empty elements everywhere.
    scheme, value = library.symbol.split(":")
    raw = sample("modrs_patronRequest.xml", **{
        'scheme="">ISIL<': f'scheme="">{scheme}<', "agencyIdValue_holder": value,
        "requestId_holder": "RS-2", "patronId_holder": "P-9"})
    status, answer = await library.post_raw(raw)
    assert answer_of(answer)["confirmationHeader"]["messageStatus"] == "OK"
    ids = [r["request_id"] for r in await pool.fetch(
        "SELECT request_id FROM ill_transaction WHERE requester = $1 ORDER BY created_at",
        library.symbol)]
    assert ids == ["DMMYNIA2-1", "RS-2"]
    # A supplier message with an empty lastChange: refused, naming it.
    raw = sample("modrs_supplyingAgencyMessage_loaned.xml", status_holder="Loaned")
    status, answer = await library.post_raw(raw)
    refused = answer_of(answer)
    assert refused["confirmationHeader"]["messageStatus"] == "ERROR"
    assert refused["errorData"]["errorValue"].startswith(
        "supplyingAgencyMessage.statusInfo.lastChange: required element is empty")

# --------------------------------------------------------------------------
# Mixed networks: one side an XML peer, the other an AMQP agency.
# --------------------------------------------------------------------------


class Side:
    """One party of a transaction, whichever transport its ILL system uses."""

    def __init__(self, symbol: str, *, amqp: Party | None = None,
                 http: HubClient | None = None, peer: XmlPeer | None = None) -> None:
        self.symbol = symbol
        self.amqp, self.http, self.peer = amqp, http, peer

    async def send(self, body: dict[str, Any]) -> None:
        if self.http:
            await self.http.send(body)
        else:
            assert self.amqp
            await self.amqp.send(next(iter(body)), body)
            await self.amqp.confirmed()

    async def gets(self, kind: str) -> dict[str, Any]:
        if self.peer:
            return (await self.peer.next(kind)).content
        assert self.amqp
        return (await self.amqp.next(kind)).content

    async def status(self, status: str) -> None:
        got = await self.gets("supplyingAgencyMessage")
        assert got["statusInfo"]["status"] == status, got


@pytest.fixture
async def mixed(request, settings: Settings, hub, make_agency, pool
                ) -> Callable[[str], Awaitable[tuple[Side, Side]]]:
    peers: list[XmlPeer] = []
    clients: list[AgencyClient] = []

    async def make(xml_role: str) -> tuple[Side, Side]:
        sides: dict[str, Side] = {}
        for role in ("requester", "supplier"):
            symbol, password = await make_agency(f"{role[:3].upper()}-{secrets.token_hex(3)}",
                                                 roles=(role,), province="上海", city="上海")
            if role == xml_role:
                peer = await XmlPeer().start()
                peers.append(peer)
                await pool.execute("UPDATE agency SET iso18626_url = $2 WHERE symbol = $1",
                                   symbol, peer.url)
                sides[role] = Side(symbol, http=HubClient(hub.http.base_url, symbol, password),
                                   peer=peer)
            else:
                client = AgencyClient(settings, symbol, password)
                await client.connect()
                clients.append(client)
                sides[role] = Side(symbol, amqp=Party(symbol, client))
        await pool.execute("INSERT INTO holding (id_type, id_value, symbol) "
                           "VALUES ('issn', $1, $2)", ISSN, sides["supplier"].symbol)
        async with pool.acquire() as conn:
            await load_fees(conn, FEES.format(supplier=sides["supplier"].symbol),
                            file_name="iso18626-http-fees.toml")
        return sides["requester"], sides["supplier"]

    yield make
    for client in clients:
        await client.close()
    for peer in peers:
        await peer.stop()


def says(supplier: Side, requester: Side, rid: str, status: str,
         reason: str = "StatusChange", **info: Any) -> dict[str, Any]:
    return supplier_message(supplier.symbol, requester.symbol, rid, status, reason, **info)


def does(requester: Side, supplier: Side, rid: str, action: str) -> dict[str, Any]:
    return requester_action(requester.symbol, supplier.symbol, rid, action)


@pytest.mark.parametrize("xml_role", ["requester", "supplier"])
async def test_copy_lifecycle_across_transports(mixed, pool, xml_role: str) -> None:
    req, sup = await mixed(xml_role)
    rid = f"COPY-{xml_role}"
    await req.send(messages.request(req.symbol, request_id=rid, issn=ISSN, title="图书情报工作"))
    await req.status("ExpectToSupply")
    forwarded = await sup.gets("request")
    assert forwarded["bibliographicInfo"]["title"] == "图书情报工作"
    assert forwarded["header"]["requestingAgencyRequestId"] == rid
    await sup.send(says(sup, req, rid, "WillSupply", "RequestResponse", answerYesNo="Y"))
    await req.status("WillSupply")
    await sup.send(says(sup, req, rid, "CopyCompleted"))
    await req.status("CopyCompleted")
    await req.send(does(req, sup, rid, "Received"))
    assert (await sup.gets("requestingAgencyMessage"))["action"] == "Received"
    await check_transaction(pool, req, sup, rid, "CopyCompleted", xml_role, [
        "request", "forward", "status:WillSupply", "status:CopyCompleted", "action:Received"],
        charged=("CopyCompleted", 950))


@pytest.mark.parametrize("xml_role", ["requester", "supplier"])
async def test_loan_lifecycle_across_transports(mixed, pool, xml_role: str) -> None:
    req, sup = await mixed(xml_role)
    rid = f"LOAN-{xml_role}"
    await req.send(messages.request(req.symbol, request_id=rid, issn=ISSN,
                                    service_type="Loan", title="红楼梦"))
    await req.status("ExpectToSupply")
    assert (await sup.gets("request"))["serviceInfo"]["serviceType"] == "Loan"
    await sup.send(says(sup, req, rid, "Loaned"))
    await req.status("Loaned")
    for action in ("Received", "ShippedReturn"):
        await req.send(does(req, sup, rid, action))
        assert (await sup.gets("requestingAgencyMessage"))["action"] == action
    await sup.send(says(sup, req, rid, "LoanCompleted"))
    await req.status("LoanCompleted")
    await check_transaction(pool, req, sup, rid, "LoanCompleted", xml_role, [
        "request", "forward", "status:Loaned", "action:Received", "action:ShippedReturn",
        "status:LoanCompleted"], charged=("Loaned", 1500))


async def check_transaction(pool, req: Side, sup: Side, rid: str, state: str, xml_role: str,
                            events: list[str], charged: tuple[str, int]) -> None:
    txn = await pool.fetchrow("SELECT id, state, supplier FROM ill_transaction "
                              "WHERE requester = $1 AND request_id = $2", req.symbol, rid)
    assert (txn["state"], txn["supplier"]) == (state, sup.symbol)
    trail = [r["event"] for r in await pool.fetch(
        "SELECT event FROM audit_log WHERE transaction_id = $1 ORDER BY id", txn["id"])]
    assert trail == events
    # The ledger charges the requester and pays the supplier, whatever their transports.
    postings = await pool.fetch("SELECT event, kind, requester, supplier, fee_minor "
                                "FROM ledger_posting WHERE transaction_id = $1", txn["id"])
    assert [tuple(p) for p in postings] == [(charged[0], "charge", req.symbol, sup.symbol,
                                             charged[1])]
    assert await pool.fetchval("SELECT sum(amount_minor) FROM ledger_entry "
                               "WHERE transaction_id = $1", txn["id"]) == 0
    xml_side = req if xml_role == "requester" else sup

    async def all_settled() -> bool:  # the peer answers before the relay records it
        return not await pool.fetchval("SELECT count(*) FROM outbox WHERE routing_key = $1 "
                                       "AND published_at IS NULL", xml_side.symbol)

    await eventually(all_settled)
    rows = await pool.fetch("SELECT transport, peer_status, message_type FROM outbox "
                            "WHERE routing_key = $1 ORDER BY id", xml_side.symbol)
    # Everything for the XML peer went over HTTP and was confirmed; none of it was a
    # confirmation (those were the HTTP responses).
    assert rows and all(r["transport"] == "iso18626-http" for r in rows)
    assert all(r["peer_status"] == "OK" for r in rows), [dict(r) for r in rows]
    assert not [r for r in rows if r["message_type"].endswith("Confirmation")]
    assert xml_side.peer is not None
    assert [g.message_id for g in xml_side.peer.received] == [
        r["message_id"] for r in await pool.fetch(
            "SELECT message_id FROM outbox WHERE routing_key = $1 ORDER BY id",
            xml_side.symbol)]
