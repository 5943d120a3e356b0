"""A copy end to end through the hub: FTP upload, CopyCompleted, the reader's mail and link."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from app.hub import Hub
from broker.dispatch.policies import load_policy
from illclient.client import AgencyClient
from schemas.settings import Settings
from tests.support import messages
from tests.support.delivery import LINK, ftp_upload, home, pdf_bytes, unique_email, with_smtp
from tests.support.hub import Party
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
