"""A copy end to end through the hub: FTP upload, CopyCompleted, the reader's mail and link."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from app.hub import Hub
from broker.dispatch.policies import load_policy
from illclient.client import AgencyClient
from infra.flags import Flag, FlagKind, of_transaction
from schemas.iso18626_xml import read_xml
from schemas.settings import Settings
from tests.support import messages
from tests.support.delivery import LINK, ftp_upload, home, pdf_bytes, unique_email, with_smtp
from tests.support.hub import Party
from tests.support.iso18626_peer import HubClient, XmlPeer
from tests.support.messages import supplier_message
from tests.support.network import ISSN


@pytest.fixture
async def delivering_hub(settings: Settings, make_agency, pool, dl_settings, dl_smtp
                         ) -> AsyncIterator[tuple[Hub, Party, Party, str]]:
    """A hub with its FTP drop and an SMTP server, a requester in Shanghai and the national
    library (holding the ISSN) as supplier; yields (hub, requester, supplier, supplier's
    password)."""
    await dl_smtp.start()
    s = with_smtp(dl_settings, dl_smtp)
    hub = Hub(s)
    req_symbol, req_pw = await make_agency(name="复旦大学图书馆", roles=("requester",),
                                           province="上海", city="上海")
    sup_symbol, sup_pw = await make_agency(name="国家图书馆", roles=("supplier",),
                                           province="北京", city="北京")
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       ISSN, sup_symbol)
    await hub.start()
    req = Party(req_symbol, AgencyClient(s, req_symbol, req_pw))
    sup = Party(sup_symbol, AgencyClient(s, sup_symbol, sup_pw))
    await req.client.connect()
    await sup.client.connect()
    yield hub, req, sup, sup_pw
    await req.client.close()
    await sup.client.close()
    await hub.stop()


async def test_copy_delivered_over_ftp_reaches_the_reader(delivering_hub, dl_smtp, settings,
                                                          pool) -> None:
    hub, req, sup, sup_pw = delivering_hub
    reader = unique_email("patron")
    body = messages.request(req.symbol, request_id="FTP-1", issn=ISSN, title="红楼梦研究")
    body["request"]["patronInfo"]["address"][0]["electronicAddress"][
        "electronicAddressData"] = reader
    await req.send("request", body)
    await req.confirmed()
    await req.status("ExpectToSupply")
    await sup.next("request")

    # A missing file is refused, naming the field; the transaction does not advance.
    done = supplier_message(sup.symbol, req.symbol, "FTP-1", "CopyCompleted")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "sentVia": "FTP", "itemId": "/红楼梦.pdf"}
    await sup.send("supplyingAgencyMessage", done)
    err = await sup.confirmed(ok=False)
    assert "deliveryInfo.itemId" in err.content["errorData"]["errorValue"]

    await asyncio.to_thread(ftp_upload, hub.ftp, sup.symbol, sup_pw, "红楼梦.pdf",
                            pdf_bytes(300_000))
    await sup.send("supplyingAgencyMessage", done)
    await sup.confirmed()
    relayed = await req.status("CopyCompleted")
    ext = relayed.content["hubExtensions"]
    assert ext["downloadLimit"] == 5 and ext["patronMailed"] is True
    assert "downloadExpires" in ext and "/d/" not in str(relayed.body)  # never the token

    for _ in range(100):  # the mail sender runs in the hub
        if dl_smtp.catcher.messages_to(reader):
            break
        await asyncio.sleep(0.1)
    [mail] = dl_smtp.catcher.messages_to(reader)
    assert "红楼梦研究" in str(mail["Subject"])
    [link] = set(LINK.findall(mail.get_body(("plain",)).get_content()))
    assert link.startswith(hub.http.base_url)
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.get(link) as resp:
                assert resp.status == 200
                assert (await resp.read()).startswith(b"%PDF-")
        async with http.get(link) as resp:
            assert resp.status == 410
    await hub._release_drops()
    assert not (home(settings, sup.symbol) / "红楼梦.pdf").exists()
    assert await pool.fetchval("SELECT state FROM ill_transaction WHERE requester = $1 AND "
                               "request_id = 'FTP-1'", req.symbol) == "CopyCompleted"


async def _deliver(hub: Hub, req: Party, sup: Party, sup_pw: str, request_id: str,
                   status: str, service_kind: str, service_type: str,
                   due: str | None = None) -> dict:
    body = messages.request(req.symbol, request_id=request_id, issn=ISSN,
                            service_type=service_type, patron_id=request_id)
    body["request"]["hubExtensions"] = {"serviceKind": service_kind}
    await req.send("request", body)
    await req.confirmed()
    await req.status("ExpectToSupply")
    await sup.next("request")
    name = f"{request_id}.pdf"
    await asyncio.to_thread(ftp_upload, hub.ftp, sup.symbol, sup_pw, name, pdf_bytes(20_000))
    done = supplier_message(sup.symbol, req.symbol, request_id, status)
    if due:
        done["supplyingAgencyMessage"]["statusInfo"]["dueDate"] = due
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "sentVia": "FTP", "itemId": name}
    await sup.send("supplyingAgencyMessage", done)
    await sup.confirmed()
    return (await req.status(status)).content["hubExtensions"]


async def test_policy_sets_limits_per_supplier_and_kind(delivering_hub, pool) -> None:
    hub, req, sup, sup_pw = delivering_hub
    await load_policy(pool, f"""
version = "delivery limits"
[[delivery]]
supplier = ["{sup.symbol}"]
service_kind = ["PayPerView"]
downloads = 2
days = 7
""", "limits.toml")
    try:
        ext = await _deliver(hub, req, sup, sup_pw, "PPV-1", "CopyCompleted", "PayPerView",
                             "Copy")
        assert ext["downloadLimit"] == 2
        grant = await pool.fetchrow(
            "SELECT g.max_downloads, g.expires_at - g.created_at AS span FROM download_grant g "
            "JOIN ill_transaction t ON t.id = g.transaction_id WHERE t.request_id = 'PPV-1' "
            "AND t.requester = $1", req.symbol)
        assert grant["max_downloads"] == 2 and grant["span"].days == 7
    finally:
        await load_policy(pool, 'version = "no rules"', "reset.toml")


async def test_ebook_loan_is_time_limited_access(delivering_hub, pool) -> None:
    hub, req, sup, sup_pw = delivering_hub
    ext = await _deliver(hub, req, sup, sup_pw, "EB-1", "Loaned", "EBookLoan", "Loan",
                         due="2099-01-01T00:00:00Z")
    assert ext["downloadLimit"] is None  # unlimited until the loan ends
    assert ext["downloadExpires"].startswith("2099-01-01")


# --------------------------------------------------------------------------
# A 2021 supplier: deliveryMethod, not sentVia (issue 15, failure 2). The same file
# check, link, reader mail and copy_without_valid_file flag as for 1.2's sentVia, read
# through the one accessor DeliveryInfo.method.
# --------------------------------------------------------------------------

# A 2021 CopyCompleted as a 2021 ILL system writes it: deliveryMethod and itemFormat
# (1.2: sentVia, deliveredFormat), no multipleItemRequestId.
COPY_COMPLETED_2021 = """<?xml version="1.0" encoding="UTF-8"?>
<ISO18626Message xmlns="http://illtransactions.org/2013/iso18626"
                 xmlns:ill="http://illtransactions.org/2013/iso18626" ill:version="2021-2">
  <supplyingAgencyMessage>
    <header>
      <supplyingAgencyId>
        <agencyIdType>{sup_type}</agencyIdType>
        <agencyIdValue>{sup_value}</agencyIdValue>
      </supplyingAgencyId>
      <requestingAgencyId>
        <agencyIdType>{req_type}</agencyIdType>
        <agencyIdValue>{req_value}</agencyIdValue>
      </requestingAgencyId>
      <timestamp>{now}</timestamp>
      <requestingAgencyRequestId>{request_id}</requestingAgencyRequestId>
    </header>
    <messageInfo>
      <reasonForMessage>StatusChange</reasonForMessage>
      <note>Scan uploaded to the hub's FTP drop ({attempt})</note>
    </messageInfo>
    <statusInfo>
      <status>CopyCompleted</status>
      <lastChange>{now}</lastChange>
    </statusInfo>
    <deliveryInfo>
      <dateSent>{now}</dateSent>
      <itemId>{item_id}</itemId>
      <deliveryMethod>FTP</deliveryMethod>
      <itemFormat>PDF</itemFormat>
    </deliveryInfo>
  </supplyingAgencyMessage>
</ISO18626Message>
"""


def copy_completed_2021_json(sup: str, req: str, request_id: str, item_id: str
                             ) -> dict[str, Any]:
    """The same message as an AMQP sender that uses 2021's names sends it."""
    done = supplier_message(sup, req, request_id, "CopyCompleted",
                            note="Scan uploaded to the hub's FTP drop")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "itemId": item_id, "deliveryMethod": "FTP",
        "itemFormat": "PDF"}
    return done


async def _flags_of(pool, requester: str, request_id: str) -> list[Flag]:
    txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE requester = $1 AND "
                              "request_id = $2", requester, request_id)
    return await of_transaction(pool, txn)


async def _mail_to(smtp, reader: str) -> Any:
    for _ in range(100):  # the mail sender runs in the hub
        if smtp.catcher.messages_to(reader):
            break
        await asyncio.sleep(0.1)
    [mail] = smtp.catcher.messages_to(reader)
    return mail


async def _ask(req: Party, request_id: str, reader: str) -> None:
    body = messages.request(req.symbol, request_id=request_id, issn=ISSN, title="敦煌学辑刊",
                            patron_id=request_id)
    body["request"]["patronInfo"]["address"][0]["electronicAddress"][
        "electronicAddressData"] = reader
    await req.send("request", body)
    await req.confirmed()
    await req.status("ExpectToSupply")


async def test_a_2021_copy_by_ftp_over_amqp_is_checked_stored_and_mailed(
        delivering_hub, dl_smtp, pool) -> None:
    hub, req, sup, sup_pw = delivering_hub
    reader = unique_email("reader21")
    await _ask(req, "FTP21-A", reader)
    await sup.next("request")

    # The file was never uploaded: refused naming itemId, flagged, nothing advances.
    await sup.send("supplyingAgencyMessage",
                   copy_completed_2021_json(sup.symbol, req.symbol, "FTP21-A", "scan-A.pdf"))
    err = await sup.confirmed(ok=False)
    assert err.content["errorData"]["errorValue"].startswith(
        "supplyingAgencyMessage.deliveryInfo.itemId")
    [flag] = await _flags_of(pool, req.symbol, "FTP21-A")
    assert flag.kind is FlagKind.COPY_WITHOUT_VALID_FILE and flag.facts["item_id"] == "scan-A.pdf"
    assert await pool.fetchval("SELECT state FROM ill_transaction WHERE requester = $1 AND "
                               "request_id = 'FTP21-A'", req.symbol) == "ExpectToSupply"

    await asyncio.to_thread(ftp_upload, hub.ftp, sup.symbol, sup_pw, "scan-A.pdf",
                            pdf_bytes(30_000))
    await sup.send("supplyingAgencyMessage",
                   copy_completed_2021_json(sup.symbol, req.symbol, "FTP21-A", "scan-A.pdf"))
    await sup.confirmed()
    relayed = await req.status("CopyCompleted")
    assert relayed.content["hubExtensions"]["patronMailed"] is True
    mail = await _mail_to(dl_smtp, reader)
    assert "敦煌学辑刊" in str(mail["Subject"])
    assert LINK.findall(mail.get_body(("plain",)).get_content())


async def test_a_2021_copy_by_ftp_over_http_is_checked_stored_and_mailed(
        delivering_hub, dl_smtp, pool) -> None:
    hub, req, sup, sup_pw = delivering_hub
    peer = await XmlPeer(version="2021").start()
    try:
        await pool.execute("UPDATE agency SET iso18626_url = $2, iso18626_version = '2021' "
                           "WHERE symbol = $1", sup.symbol, peer.url)
        http = HubClient(hub.http.base_url, sup.symbol, sup_pw, version="2021")
        reader = unique_email("reader21h")
        await _ask(req, "FTP21-H", reader)
        forwarded = await peer.next("request")
        assert forwarded.message.version == "2021"
        sup_type, sup_value = sup.symbol.split(":")
        req_type, req_value = req.symbol.split(":")

        def document(item_id: str, attempt: int) -> bytes:
            # Each attempt its own bytes: the same document again is a re-send (its
            # SHA-256 is the idempotency key) and gets the first answer again.
            return COPY_COMPLETED_2021.format(
                sup_type=sup_type, sup_value=sup_value, req_type=req_type,
                req_value=req_value, now=messages.now(), request_id="FTP21-H",
                item_id=item_id, attempt=attempt).encode("utf-8")

        status, raw = await http.post_raw(document("scan-H.pdf", 1))
        answer = read_xml(raw).content
        assert status == 200 and answer["confirmationHeader"]["messageStatus"] == "ERROR", raw
        assert answer["errorData"]["errorValue"].startswith(
            "supplyingAgencyMessage.deliveryInfo.itemId")
        [flag] = await _flags_of(pool, req.symbol, "FTP21-H")
        assert flag.kind is FlagKind.COPY_WITHOUT_VALID_FILE

        await asyncio.to_thread(ftp_upload, hub.ftp, sup.symbol, sup_pw, "scan-H.pdf",
                                pdf_bytes(30_000))
        status, raw = await http.post_raw(document("scan-H.pdf", 2))
        answer = read_xml(raw).content
        assert answer["confirmationHeader"]["messageStatus"] == "OK", raw
        relayed = await req.status("CopyCompleted")
        assert relayed.content["hubExtensions"]["patronMailed"] is True
        mail = await _mail_to(dl_smtp, reader)
        [link] = set(LINK.findall(mail.get_body(("plain",)).get_content()))
        async with aiohttp.ClientSession() as client, client.get(link) as resp:
            assert resp.status == 200 and (await resp.read()).startswith(b"%PDF-")
    finally:
        await pool.execute("UPDATE agency SET iso18626_url = NULL WHERE symbol = $1",
                           sup.symbol)
        await peer.stop()
