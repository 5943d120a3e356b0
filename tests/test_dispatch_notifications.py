"""ISO 18626 notification semantics, over AMQP and over HTTP (issue 15, failures 3 and 4).

The rules (ARCHITECTURE §3.4 rule 5): a supplier's message whose reasonForMessage is
Notification carries a note and never moves the state, whatever status it carries
(ReShare sends RequestReceived on every one) or none (Alma and Rapido send an empty
one to mean "no change"); the requester gets the note with the status it knows. A
status the request has passed already (a re-sent or overtaken message) is answered OK
and changes nothing; one it can never reach from where it is is refused. A requester's
Notification goes to the supplier and changes nothing; with no supplier, it is kept.

Messages written by other implementers: mod-rs's (ReShare) supplyingAgencyMessage and
unfilledNotification samples in tests/data/iso18626/ (see its README). ReShare's
Notification-with-RequestReceived and Alma's empty status are written here as those
systems send them (CrossLink's broker handles both: `broker/handler/iso18626-handler.go`,
"suppliers like Alma/Rapido may send an empty status to indicate no status change").
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import pytest

from illclient.client import AgencyClient
from schemas.iso18626_xml import read_xml
from schemas.settings import Settings
from tests.support import messages
from tests.support.agencies import MakeAgency
from tests.support.hub import Party
from tests.support.iso18626_peer import HubClient, XmlPeer
from tests.support.messages import requester_action, supplier_message
from tests.support.network import ISSN, Network, start, state_of
from tests.support.paths import DATA

SAMPLES = DATA / "iso18626"
# Over HTTP an empty <status> or a missing <lastChange> in a Notification gets past the
# XSD through the converter's stand-ins (schemas/iso18626_xml.py), then as over AMQP.


async def trail(pool: asyncpg.Pool, requester: str, request_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT a.event, a.actor, a.from_state, a.to_state, a.detail, a.message_id
           FROM audit_log a JOIN ill_transaction t ON t.id = a.transaction_id
           WHERE t.requester = $1 AND t.request_id = $2 ORDER BY a.id""",
        requester, request_id)


def as_json(value: Any) -> Any:
    """A jsonb column as asyncpg returns it (text, without a codec)."""
    return json.loads(value) if isinstance(value, str) else value


def notification(supplier: str, requester: str, request_id: str, status: str | None,
                 note: str, **status_info: Any) -> dict[str, Any]:
    """A supplier's Notification; status None leaves statusInfo.status out."""
    body = supplier_message(supplier, requester, request_id, status or "", "Notification",
                            note=note)
    info = body["supplyingAgencyMessage"]["statusInfo"]
    if status is None:
        del info["status"]
    info.update(status_info)
    return body


# --------------------------------------------------------------------------
# Over AMQP
# --------------------------------------------------------------------------


async def test_a_reshare_notification_while_loaned_is_relayed_and_the_loan_goes_on(
        network: Network, pool: asyncpg.Pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "NT-1", service_type="Loan", title="红楼梦")
    await sh.next("request")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "NT-1", "Loaned", dueDate="2099-03-01T00:00:00Z"))
    await sh.confirmed()
    await req.status("Loaned")

    # ReShare: every Notification says RequestReceived, here while the book is on loan.
    note = "#seq:3# Please return the book by courier, not by post"
    await sh.send("supplyingAgencyMessage",
                  notification(sh.symbol, req.symbol, "NT-1", "RequestReceived", note))
    confirmed = await sh.confirmed()
    assert confirmed.content["reasonForMessage"] == "Notification"
    relayed = await req.status("Loaned", "Notification")  # the status the requester knows
    assert relayed.content["messageInfo"]["note"] == note
    assert relayed.headers["hub-original-message-id"]
    assert await state_of(pool, req.symbol, "NT-1") == "Loaned"

    # The loan goes on as if nothing happened.
    for action in ("Received", "ShippedReturn"):
        await req.send("requestingAgencyMessage",
                       requester_action(req.symbol, sh.symbol, "NT-1", action))
        await req.confirmed()
        assert (await sh.next("requestingAgencyMessage")).content["action"] == action
    await sh.send("supplyingAgencyMessage",
                  supplier_message(sh.symbol, req.symbol, "NT-1", "LoanCompleted"))
    await sh.confirmed()
    await req.status("LoanCompleted")

    rows = await trail(pool, req.symbol, "NT-1")
    assert [(r["event"], r["from_state"], r["to_state"]) for r in rows] == [
        ("request", None, "New"), ("forward", "New", "ExpectToSupply"),
        ("status:Loaned", "ExpectToSupply", "Loaned"),
        ("reason:Notification", "Loaned", "Loaned"),
        ("action:Received", "Loaned", "Received"),
        ("action:ShippedReturn", "Received", "ShippedReturn"),
        ("status:LoanCompleted", "ShippedReturn", "LoanCompleted")]
    # The original message is in the audit trail, with the inconsistency.
    detail = as_json(rows[3]["detail"])
    assert detail["statusInfo"]["status"] == "RequestReceived"
    assert detail["messageInfo"]["note"] == note
    assert "'RequestReceived' while the request is Loaned" in detail["kept"]
    assert await pool.fetchval("SELECT body->'supplyingAgencyMessage'->'statusInfo'->>'status' "
                               "FROM inbox WHERE sender = $1 AND message_id = $2",
                               sh.symbol, rows[3]["message_id"]) == "RequestReceived"


@pytest.mark.parametrize("shape", ["empty status", "no status", "no statusInfo"])
async def test_a_notification_without_a_status_means_no_change(
        network: Network, pool: asyncpg.Pool, shape: str) -> None:
    req, sh = network["req"], network["sh"]
    rid = f"NS-{shape.replace(' ', '-')}"
    await start(network, rid)
    await sh.next("request")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, rid, "WillSupply", "RequestResponse", answerYesNo="Y"))
    await sh.confirmed()
    await req.status("WillSupply")

    # Alma and Rapido: a note with an empty <status>, meaning "no change".
    body = notification(sh.symbol, req.symbol, rid, "", "扫描件将于明日发送")
    inner = body["supplyingAgencyMessage"]
    if shape == "no status":
        del inner["statusInfo"]["status"]
    elif shape == "no statusInfo":
        del inner["statusInfo"]
    await sh.send("supplyingAgencyMessage", body)
    await sh.confirmed()
    relayed = await req.status("WillSupply", "Notification")
    assert relayed.content["messageInfo"]["note"] == "扫描件将于明日发送"
    assert relayed.content["statusInfo"]["lastChange"]  # always a valid message onward
    assert await state_of(pool, req.symbol, rid) == "WillSupply"
    [kept] = [r for r in await trail(pool, req.symbol, rid)
              if r["event"] == "reason:Notification"]
    assert (kept["from_state"], kept["to_state"]) == ("WillSupply", "WillSupply")

    # Only a Notification may leave the status out.
    inner["messageInfo"]["reasonForMessage"] = "StatusChange"
    await sh.send("supplyingAgencyMessage", body)
    err = await sh.confirmed(ok=False)
    assert err.content["errorData"]["errorType"] == "BadlyFormedMessage"
    assert err.content["errorData"]["errorValue"].startswith(
        "supplyingAgencyMessage.statusInfo" + ("" if shape == "no statusInfo" else ".status")
        + ": required element missing")
    assert await state_of(pool, req.symbol, rid) == "WillSupply"


async def test_a_notification_never_advances_the_rota_nor_delivers(
        network: Network, pool: asyncpg.Pool) -> None:
    req, sh, js = network["req"], network["sh"], network["js"]
    await start(network, "NU-1")
    await sh.next("request")
    # mod-rs's unfilledNotification.xml, in JSON: status Unfilled, no lastChange.
    await sh.send("supplyingAgencyMessage", notification(
        sh.symbol, req.symbol, "NU-1", "Unfilled", "can't find it after all"))
    await sh.confirmed()
    relayed = await req.status("ExpectToSupply", "Notification")
    assert relayed.content["messageInfo"]["note"] == "can't find it after all"
    # A Notification that says CopyCompleted delivers nothing and charges nothing.
    await sh.send("supplyingAgencyMessage", notification(
        sh.symbol, req.symbol, "NU-1", "CopyCompleted", "scanning now"))
    await sh.confirmed()
    await req.status("ExpectToSupply", "Notification")
    assert await state_of(pool, req.symbol, "NU-1") == "ExpectToSupply"
    assert js.client.inbox.empty()  # the rota did not move on
    txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE requester = $1 AND "
                              "request_id = 'NU-1'", req.symbol)
    assert await pool.fetchval("SELECT count(*) FROM ledger_posting WHERE transaction_id = $1",
                               txn) == 0
    assert await pool.fetchval("SELECT outcome FROM rota_entry WHERE transaction_id = $1 AND "
                               "position = 1", txn) == "forwarded"


async def test_a_status_passed_already_is_answered_ok_and_changes_nothing(
        network: Network, pool: asyncpg.Pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "PS-1", service_type="Loan")
    await sh.next("request")
    await sh.send("supplyingAgencyMessage",
                  supplier_message(sh.symbol, req.symbol, "PS-1", "WillSupply"))
    await sh.confirmed()
    await req.status("WillSupply")
    # ExpectToSupply after WillSupply: a step back, kept at WillSupply.
    await sh.send("supplyingAgencyMessage",
                  supplier_message(sh.symbol, req.symbol, "PS-1", "ExpectToSupply"))
    await sh.confirmed()
    await req.status("WillSupply", "StatusChange")
    await sh.send("supplyingAgencyMessage",
                  supplier_message(sh.symbol, req.symbol, "PS-1", "Loaned"))
    await sh.confirmed()
    await req.status("Loaned")
    # The supplier's system re-sends its old WillSupply answer (with a note).
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "PS-1", "WillSupply", "RequestResponse", answerYesNo="Y",
        note="已找到"))
    await sh.confirmed()
    relayed = await req.status("Loaned", "RequestResponse")
    assert relayed.content["messageInfo"]["note"] == "已找到"
    assert await state_of(pool, req.symbol, "PS-1") == "Loaned"
    # A status the loan can never reach from here is still refused, naming it.
    await sh.send("supplyingAgencyMessage",
                  supplier_message(sh.symbol, req.symbol, "PS-1", "CopyCompleted"))
    err = await sh.confirmed(ok=False)
    assert err.content["errorData"]["errorType"] == "UnrecognisedDataValue"
    assert "'CopyCompleted' is not allowed while the request is Loaned" in \
        err.content["errorData"]["errorValue"]
    rows = await trail(pool, req.symbol, "PS-1")
    assert [(r["event"], r["to_state"]) for r in rows][2:] == [
        ("status:WillSupply", "WillSupply"), ("status:ExpectToSupply", "WillSupply"),
        ("status:Loaned", "Loaned"), ("status:WillSupply", "Loaned")]


async def test_a_cancel_response_to_the_hubs_own_cancel_is_no_error(
        network: Network, pool: asyncpg.Pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "CR-1")
    await sh.next("request")
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "CR-1", "RetryPossible", reasonRetry="NotCurrentlyAvailable"))
    await sh.confirmed()
    await req.status("RetryPossible")
    await req.send("requestingAgencyMessage",
                   requester_action(req.symbol, sh.symbol, "CR-1", "Cancel"))
    await req.confirmed()
    await req.status("Cancelled", "CancelResponse")  # the hub closed it at once
    assert (await sh.next("requestingAgencyMessage")).content["action"] == "Cancel"
    # The supplier answers the hub's Cancel: Cancelled again, which is no error.
    await sh.send("supplyingAgencyMessage", supplier_message(
        sh.symbol, req.symbol, "CR-1", "Cancelled", "CancelResponse", answerYesNo="Y"))
    await sh.confirmed()
    await req.status("Cancelled", "CancelResponse")
    assert await state_of(pool, req.symbol, "CR-1") == "Cancelled"


async def test_a_requesters_notification_goes_to_the_supplier_and_changes_nothing(
        network: Network, pool: asyncpg.Pool, settings: Settings) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "RN-1")
    await sh.next("request")
    await req.send("requestingAgencyMessage", requester_action(
        req.symbol, sh.symbol, "RN-1", "Notification", "读者只需要第3章"))
    confirmed = await req.confirmed()
    assert confirmed.content["action"] == "Notification"
    got = await sh.next("requestingAgencyMessage")
    assert (got.content["action"], got.content["note"]) == ("Notification", "读者只需要第3章")
    assert await state_of(pool, req.symbol, "RN-1") == "ExpectToSupply"

    # Nobody holds this one: no supplier to tell. Answered OK and kept, not lost.
    await req.send("request", messages.request(req.symbol, request_id="RN-2",
                                               issn="0000-0019", patron_id="P-RN2"))
    await req.confirmed()
    await req.status("Unfilled")
    # Addressed to the hub, which told it Unfilled.
    await req.send("requestingAgencyMessage", requester_action(
        req.symbol, settings.hub_symbol, "RN-2", "Notification", "还有别的馆吗？"))
    await req.confirmed()
    rows = await trail(pool, req.symbol, "RN-2")
    assert rows[-1]["event"] == "action:Notification"
    detail = as_json(rows[-1]["detail"])
    assert detail == {"note": "还有别的馆吗？", "relayed": "no: no supplier has the request"}
    assert await state_of(pool, req.symbol, "RN-2") == "Unfilled"
    assert sh.client.inbox.empty()


# --------------------------------------------------------------------------
# Over HTTP: an XML supplier with an AMQP requester, and the other way round
# --------------------------------------------------------------------------


@dataclass
class Mixed:
    requester: Party | None
    requester_peer: XmlPeer | None
    requester_http: HubClient | None
    supplier: Party | None
    supplier_http: HubClient | None
    supplier_peer: XmlPeer | None
    req_symbol: str
    sup_symbol: str


@pytest.fixture
async def mixed(settings: Settings, hub, make_agency: MakeAgency, pool: asyncpg.Pool
                ) -> AsyncIterator[Any]:
    """make(xml_role): a requester and a supplier in 上海 holding the ISSN, the one in
    `xml_role` an XML peer (1.2), the other an AMQP agency."""
    peers: list[XmlPeer] = []
    clients: list[AgencyClient] = []

    async def make(xml_role: str) -> Mixed:
        made: dict[str, Any] = {}
        for role in ("requester", "supplier"):
            symbol, password = await make_agency(f"N{role[:2].upper()}-{secrets.token_hex(3)}",
                                                 roles=(role,), province="上海", city="上海")
            made[f"{role}_symbol"] = symbol
            if role == xml_role:
                peer = await XmlPeer().start()
                peers.append(peer)
                await pool.execute("UPDATE agency SET iso18626_url = $2 WHERE symbol = $1",
                                   symbol, peer.url)
                made[f"{role}_peer"] = peer
                made[f"{role}_http"] = HubClient(hub.http.base_url, symbol, password)
            else:
                client = AgencyClient(settings, symbol, password)
                await client.connect()
                clients.append(client)
                made[role] = Party(symbol, client)
        await pool.execute("INSERT INTO holding (id_type, id_value, symbol) "
                           "VALUES ('issn', $1, $2)", ISSN, made["supplier_symbol"])
        return Mixed(requester=made.get("requester"), requester_peer=made.get("requester_peer"),
                     requester_http=made.get("requester_http"),
                     supplier=made.get("supplier"), supplier_http=made.get("supplier_http"),
                     supplier_peer=made.get("supplier_peer"),
                     req_symbol=made["requester_symbol"], sup_symbol=made["supplier_symbol"])

    yield make
    for client in clients:
        await client.close()
    for peer in peers:
        await peer.stop()


def reshare_message(m: Mixed, request_id: str, status: str, reason: str, note: str,
                    last_change: str | None) -> bytes:
    """mod-rs's supplyingAgencyMessage sample (as ReShare sends it: every optional
    element present and empty), filled in for this transaction."""
    raw = (SAMPLES / "modrs_supplyingAgencyMessage_loaned.xml").read_text("utf-8")
    sup_type, sup_value = m.sup_symbol.split(":")
    req_type, req_value = m.req_symbol.split(":")
    for old, new in (
            ("<agencyIdType>ISIL</agencyIdType>\n                <agencyIdValue>"
             "supAgencyIdValue_holder", f"<agencyIdType>{sup_type}</agencyIdType>\n"
                                        f"                <agencyIdValue>{sup_value}"),
            ("<agencyIdType>ISIL</agencyIdType>\n                <agencyIdValue>"
             "agencyIdValue_holder", f"<agencyIdType>{req_type}</agencyIdType>\n"
                                     f"                <agencyIdValue>{req_value}"),
            ("requestId_holder", request_id),
            ("<reasonForMessage>StatusChange<", f"<reasonForMessage>{reason}<"),
            ("<note></note>", f"<note>{note}</note>"),
            ("status_holder", status),
            ("<lastChange />", f"<lastChange>{last_change}</lastChange>" if last_change
             else "<lastChange />")):
        assert old in raw, old
        raw = raw.replace(old, new)
    return raw.encode("utf-8")


async def test_an_xml_suppliers_reshare_notification_while_loaned_over_http(
        mixed: Any, pool: asyncpg.Pool) -> None:
    m: Mixed = await mixed("supplier")
    req = m.requester
    assert req is not None and m.supplier_http is not None and m.supplier_peer is not None
    await req.send("request", messages.request(req.symbol, request_id="HN-1", issn=ISSN,
                                               service_type="Loan", title="天工开物"))
    await req.confirmed()
    await req.status("ExpectToSupply")
    await m.supplier_peer.next("request")

    http = m.supplier_http

    async def post(raw: bytes) -> dict[str, Any]:
        status, answer = await http.post_raw(raw)
        assert status == 200, answer
        return read_xml(answer).content

    loaned = await post(reshare_message(m, "HN-1", "Loaned", "StatusChange", "",
                                        messages.now()))
    assert loaned["confirmationHeader"]["messageStatus"] == "OK", loaned
    await req.status("Loaned")
    answer = await post(reshare_message(m, "HN-1", "RequestReceived", "Notification",
                                        "Item is in transit", messages.now()))
    assert answer["confirmationHeader"]["messageStatus"] == "OK", answer
    assert answer["reasonForMessage"] == "Notification"
    relayed = await req.status("Loaned", "Notification")
    assert relayed.content["messageInfo"]["note"] == "Item is in transit"
    assert await state_of(pool, req.symbol, "HN-1") == "Loaned"


async def test_an_xml_requester_gets_a_valid_notification_from_an_alma_like_supplier(
        mixed: Any, pool: asyncpg.Pool) -> None:
    m: Mixed = await mixed("requester")
    sup, peer, http = m.supplier, m.requester_peer, m.requester_http
    assert sup is not None and peer is not None and http is not None
    body = messages.request(m.req_symbol, request_id="HA-1", issn=ISSN, title="农政全书")
    answer = await http.send(body)
    assert answer.content["confirmationHeader"]["messageStatus"] == "OK"
    await peer.status("ExpectToSupply")
    await sup.next("request")
    # Alma: a note with an empty status. The XML requester needs a status (the XSD says
    # so): it gets the one it knows.
    await sup.send("supplyingAgencyMessage", notification(
        sup.symbol, m.req_symbol, "HA-1", "", "Conditions pending approval"))
    await sup.confirmed()
    got = await peer.status("ExpectToSupply")
    assert got.content["messageInfo"]["reasonForMessage"] == "Notification"
    assert got.content["messageInfo"]["note"] == "Conditions pending approval"
    assert await state_of(pool, m.req_symbol, "HA-1") == "ExpectToSupply"


async def test_an_empty_status_in_an_xml_notification_is_no_change(
        mixed: Any, pool: asyncpg.Pool) -> None:
    m: Mixed = await mixed("supplier")
    req = m.requester
    assert req is not None and m.supplier_http is not None and m.supplier_peer is not None
    await req.send("request", messages.request(req.symbol, request_id="HE-1", issn=ISSN))
    await req.confirmed()
    await req.status("ExpectToSupply")
    await m.supplier_peer.next("request")
    _, answer = await m.supplier_http.post_raw(reshare_message(
        m, "HE-1", "", "Notification", "Conditions pending approval", messages.now()))
    assert read_xml(answer).content["confirmationHeader"]["messageStatus"] == "OK", answer
    await req.status("ExpectToSupply", "Notification")


async def test_mod_rs_unfilled_notification_over_http_keeps_the_state(
        mixed: Any, pool: asyncpg.Pool) -> None:
    m: Mixed = await mixed("supplier")
    req = m.requester
    assert req is not None and m.supplier_http is not None and m.supplier_peer is not None
    await req.send("request", messages.request(req.symbol, request_id="HU-1", issn=ISSN))
    await req.confirmed()
    await req.status("ExpectToSupply")
    await m.supplier_peer.next("request")
    raw = (SAMPLES / "modrs_unfilledNotification.xml").read_text("utf-8")
    for old, new in (("ISIL</agencyIdType>\n                <agencyIdValue>supplierSymbol_holder",
                      "{}</agencyIdType>\n                <agencyIdValue>{}".format(
                          *m.sup_symbol.split(":"))),
                     ("ISIL</agencyIdType>\n                <agencyIdValue>"
                      "requesterSymbol_holder",
                      "{}</agencyIdType>\n                <agencyIdValue>{}".format(
                          *m.req_symbol.split(":"))),
                     ("timestamp_holder", messages.now()), ("requestId_holder", "HU-1")):
        assert old in raw, old
        raw = raw.replace(old, new)
    _, answer = await m.supplier_http.post_raw(raw.encode())
    assert read_xml(answer).content["confirmationHeader"]["messageStatus"] == "OK", answer
    relayed = await req.status("ExpectToSupply", "Notification")
    assert relayed.content["messageInfo"]["note"] == "can't find it after all"
    assert await state_of(pool, req.symbol, "HU-1") == "ExpectToSupply"


async def test_mod_rs_declining_a_cancel_without_status_over_http_keeps_the_request(
        mixed: Any, pool: asyncpg.Pool) -> None:
    # mod-rs's cancelResponseReplyNoTemplate.xml: a CancelResponse answering N, every
    # element `ill:`-prefixed and no statusInfo at all (failure 4: no status means no
    # change). Its answer says what happened, so it is taken as it is.
    m: Mixed = await mixed("supplier")
    req = m.requester
    assert req is not None and m.supplier_http is not None and m.supplier_peer is not None
    await req.send("request", messages.request(req.symbol, request_id="HC-1", issn=ISSN))
    await req.confirmed()
    await req.status("ExpectToSupply")
    await m.supplier_peer.next("request")
    await req.send("requestingAgencyMessage",
                   requester_action(req.symbol, m.sup_symbol, "HC-1", "Cancel"))
    await req.confirmed()
    cancel = await m.supplier_peer.next("requestingAgencyMessage")
    assert cancel.content["action"] == "Cancel"
    raw = (SAMPLES / "modrs_cancelResponseReplyNoTemplate.xml").read_text("utf-8")
    for old, new in (("ISIL</ill:agencyIdType>\n                <ill:agencyIdValue>"
                      "_SUPPLY_AGENCY_ID_", "{}</ill:agencyIdType>\n"
                      "                <ill:agencyIdValue>{}".format(*m.sup_symbol.split(":"))),
                     ("ISIL</ill:agencyIdType>\n                <ill:agencyIdValue>"
                      "_REQUEST_AGENCY_ID_", "{}</ill:agencyIdType>\n"
                      "                <ill:agencyIdValue>{}".format(*m.req_symbol.split(":"))),
                     ("_TIMESTAMP_", messages.now()), ("_REQUEST_ID_", "HC-1")):
        assert old in raw, old
        raw = raw.replace(old, new)
    _, answer = await m.supplier_http.post_raw(raw.encode())
    assert read_xml(answer).content["confirmationHeader"]["messageStatus"] == "OK", answer
    relayed = await req.status("ExpectToSupply", "CancelResponse")
    assert relayed.content["messageInfo"]["answerYesNo"] == "N"
    assert await state_of(pool, req.symbol, "HC-1") == "ExpectToSupply"
    rows = await trail(pool, req.symbol, "HC-1")
    assert (rows[-1]["event"], rows[-1]["from_state"], rows[-1]["to_state"]) == \
        ("reason:CancelResponse", "ExpectToSupply", "ExpectToSupply")
