"""A library's staff pages (/lib): its own transactions only, each one's trail, and the
actions a library takes by hand, sent through the hub's intake as its own messages.

A real hub (intake shards, relay, HTTP server) with a requester in Shanghai and three
suppliers (tests/support/network.py); a second requester is made here. People and
their sessions are real accounts (tests/support/people.py).
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import quote

import aiohttp
import asyncpg

from app.hub import Hub
from illclient.client import AgencyClient
from schemas.settings import Settings
from tests.support import messages
from tests.support.agencies import MakeAgency
from tests.support.hub import Party
from tests.support.network import ISSN, Network
from tests.support.operators import rows_of
from tests.support.people import make_person, signed_in

TITLE = "敦煌吐鲁番文献研究（第三辑）"


def base(hub: Hub) -> str:
    assert hub.http is not None
    return hub.http.base_url


async def ask(req: Party, supplier: Party, title: str = TITLE) -> tuple[str, str]:
    """`req` requests the network's ISSN; `supplier` (first on the rota) receives it.
    Returns (hub transaction id, request id)."""
    request_id = f"REQ-{secrets.token_hex(5)}"
    await req.send("request", messages.request(req.symbol, request_id=request_id, issn=ISSN,
                                               title=title))
    await req.confirmed()
    await req.status("ExpectToSupply")
    forwarded = await supplier.next("request")
    return forwarded.headers["hub-transaction-id"], request_id


def listed_ids(page: str) -> list[str]:
    section = page.split('id="txn-table"', 1)[1].split("</table>", 1)[0]
    return [attrs["data-id"] or "" for attrs, _ in rows_of("<table>" + section).rows
            if attrs.get("data-id")]


async def state_of(pool: asyncpg.Pool, txn_id: str) -> str:
    state: str = await pool.fetchval("SELECT state FROM ill_transaction WHERE id = $1", txn_id)
    return state


async def test_staff_see_their_own_transactions_and_nothing_of_another_library(
        settings: Settings, pool: asyncpg.Pool, hub: Hub, network: Network,
        make_agency: MakeAgency) -> None:
    req, sh = network["req"], network["sh"]
    other_symbol, password = await make_agency("0OTHER-" + secrets.token_hex(3),
                                               roles=("requester",), province="上海",
                                               city="上海", name="另一图书馆")
    other_client = AgencyClient(settings, other_symbol, password)
    await other_client.connect()
    try:
        other = Party(other_symbol, other_client)
        mine, my_request = await ask(req, sh)
        theirs, _ = await ask(other, sh, title="别馆的书")
    finally:
        await other_client.close()
    staff = await make_person(pool, f"library_staff@agency:{req.symbol}", name="王馆员")
    supplier_staff = await make_person(pool, f"library_staff@agency:{sh.symbol}")
    async with signed_in(base(hub), pool, settings, staff) as browser:
        page = await browser.get("/lib/")
        assert mine in listed_ids(page) and theirs not in listed_ids(page)
        assert TITLE in page and "别馆的书" not in page
        # Their transaction answers exactly as an unknown one.
        hidden = await browser.get(f"/lib/t/{theirs}", 404)
        unknown_id = f"ILL-20990101-{secrets.token_hex(5).upper()}"
        unknown = await browser.get(f"/lib/t/{unknown_id}", 404)
        assert hidden.replace(theirs, "<id>") == unknown.replace(unknown_id, "<id>")
        # Another library by the switcher: not one of theirs.
        await browser.get(f"/lib/?agency={quote(other_symbol)}", 404)
        # Search: the Chinese title round-trips through the URL; the request id and the
        # hub id find it too; the other library's title finds nothing.
        for q in ("吐鲁番文献", my_request, mine.lower()):
            found = await browser.get(f"/lib/?q={quote(q)}")
            assert listed_ids(found) == [mine], q
            assert f'value="{q}"' in found
        assert listed_ids(await browser.get(f"/lib/?q={quote('别馆')}")) == []
        detail = await browser.get(f"/lib/t/{mine}")
        assert f'<span id="txn-title">{TITLE}</span>' in detail
        assert 'id="rota-table"' in detail and "forward" in detail
        assert sh.symbol in detail and 'id="do-cancel"' in detail
        assert 'id="do-answer"' not in detail          # they are not the supplier
    async with signed_in(base(hub), pool, settings, supplier_staff) as browser:
        page = await browser.get("/lib/")
        assert {mine, theirs} <= set(listed_ids(page))   # as supplier, both
        detail = await browser.get(f"/lib/t/{mine}")
        assert 'id="do-answer"' in detail and 'id="do-cancel"' not in detail


async def test_staff_cancel_reaches_the_supplier_over_amqp_and_is_audited(
        settings: Settings, pool: asyncpg.Pool, hub: Hub, network: Network) -> None:
    req, sh = network["req"], network["sh"]
    txn_id, request_id = await ask(req, sh)
    staff = await make_person(pool, f"library_staff@agency:{req.symbol}", name="李馆员")
    async with signed_in(base(hub), pool, settings, staff) as browser:
        _, headers = await browser.post(f"/lib/t/{txn_id}/cancel", {"note": "读者不需要了"})
        assert headers["Location"] == f"/lib/t/{txn_id}?done=cancel"
        page = await browser.get(headers["Location"])
        assert 'id="notice"' in page
    cancel = await sh.next("requestingAgencyMessage")
    assert cancel.content["action"] == "Cancel"
    assert cancel.content["header"]["requestingAgencyRequestId"] == request_id
    assert cancel.content["note"] == "读者不需要了 (by 李馆员 via the hub's pages)"
    trail = await pool.fetchrow(
        "SELECT actor, detail FROM audit_log WHERE transaction_id = $1 AND event = "
        "'action:Cancel'", txn_id)
    assert trail["actor"] == req.symbol
    assert "by 李馆员 via the hub's pages" in json.loads(trail["detail"])["note"]
    who = await pool.fetchrow(
        "SELECT login, source, before, after FROM people_audit WHERE action = "
        "'transaction.cancel' AND target = $1", txn_id)
    assert who["login"] == staff.login and who["source"] == "127.0.0.1"
    assert json.loads(who["before"]) == {"state": "ExpectToSupply", "as": req.symbol}
    assert json.loads(who["after"])["outcome"] == "done"
    # The supplier agrees: the request is cancelled, as with any library's Cancel.
    await sh.send("supplyingAgencyMessage", messages.supplier_message(
        sh.symbol, req.symbol, request_id, "Cancelled", "CancelResponse", answerYesNo="Y"))
    await sh.confirmed()
    await req.status("Cancelled")
    assert await state_of(pool, txn_id) == "Cancelled"


async def test_supplier_staff_answer_unfilled_and_the_rota_moves_on(
        settings: Settings, pool: asyncpg.Pool, hub: Hub, network: Network) -> None:
    req, sh, js = network["req"], network["sh"], network["js"]
    txn_id, _ = await ask(req, sh)
    staff = await make_person(pool, f"library_staff@agency:{sh.symbol}", name="赵馆员")
    async with signed_in(base(hub), pool, settings, staff) as browser:
        # No reason: refused by the page itself, nothing sent.
        body, _ = await browser.post(f"/lib/t/{txn_id}/answer", {"answer": "Unfilled"}, 400)
        assert "reasonUnfilled" in body
        await browser.post(f"/lib/t/{txn_id}/answer",
                           {"answer": "Unfilled", "reasonUnfilled": "NotOnShelf"})
        moved = await js.next("request")
        assert moved.headers["hub-transaction-id"] == txn_id
        page = await browser.get(f"/lib/t/{txn_id}")
        rota = [cells for _, cells in rows_of(
            page.split('id="rota-table"', 1)[1].split("</table>", 1)[0]).rows]
        assert "unfilled" in rota[1] and "forwarded" in rota[2]
        # No longer the current supplier: its staff cannot answer again.
        body, _ = await browser.post(f"/lib/t/{txn_id}/answer", {"answer": "WillSupply"}, 403)
        assert "Only the current supplier" in body
    note = await pool.fetchval(
        "SELECT detail->>'reasonUnfilled' FROM audit_log WHERE "
        "transaction_id = $1 AND event = 'status:Unfilled' AND actor = $2", txn_id, sh.symbol)
    assert note == "NotOnShelf"


async def test_an_action_the_state_machine_forbids_is_409_with_the_hubs_reason(
        settings: Settings, pool: asyncpg.Pool, hub: Hub, network: Network) -> None:
    req, sh = network["req"], network["sh"]
    txn_id, _ = await ask(req, sh)
    staff = await make_person(pool, f"library_staff@agency:{req.symbol}")
    async with signed_in(base(hub), pool, settings, staff) as browser:
        body, _ = await browser.post(f"/lib/t/{txn_id}/received", {}, 409)
    assert 'id="error"' in body
    assert ("UnsupportedActionType): requestingAgencyMessage.action: &#x27;Received&#x27; "
            "is not allowed while the request is ExpectToSupply") in body
    assert await state_of(pool, txn_id) == "ExpectToSupply"
    after = await pool.fetchval(
        "SELECT after FROM people_audit WHERE action = 'transaction.received' AND target = $1",
        txn_id)
    assert json.loads(after)["outcome"] == "refused"


async def test_a_form_post_without_the_csrf_token_is_refused(
        settings: Settings, pool: asyncpg.Pool, hub: Hub, network: Network) -> None:
    req, sh = network["req"], network["sh"]
    txn_id, _ = await ask(req, sh)
    staff = await make_person(pool, f"library_staff@agency:{req.symbol}")
    async with signed_in(base(hub), pool, settings, staff) as browser:
        body, _ = await browser.post(f"/lib/t/{txn_id}/cancel", {}, 403, csrf=False)
        assert "CSRF" in body
        await browser.post(f"/lib/t/{txn_id}/cancel", {"csrf": "forged"}, 403, csrf=False)
    assert await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE transaction_id = $1 AND event = 'action:Cancel'",
        txn_id) == 0


async def test_another_librarys_staff_cannot_act_on_or_see_a_transaction(
        settings: Settings, pool: asyncpg.Pool, hub: Hub, network: Network) -> None:
    req, sh, bj = network["req"], network["sh"], network["bj"]
    txn_id, _ = await ask(req, sh)
    outsider = await make_person(pool, f"library_staff@agency:{bj.symbol}")
    auditor = await make_person(pool, "auditor@consortium")
    async with signed_in(base(hub), pool, settings, outsider) as browser:
        await browser.post(f"/lib/t/{txn_id}/cancel", {}, 404)
        await browser.get(f"/lib/t/{txn_id}", 404)
    async with signed_in(base(hub), pool, settings, auditor) as browser:
        await browser.get(f"/lib/t/{txn_id}")                   # may read
        await browser.post(f"/lib/t/{txn_id}/cancel", {}, 403)  # may not act
    assert await state_of(pool, txn_id) == "ExpectToSupply"


async def test_pages_need_a_session(hub: Hub) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(base(hub) + "/lib/", headers={"Accept": "text/html"},
                            allow_redirects=False) as resp:
            assert resp.status == 302
            assert resp.headers["Location"].startswith("/signin?next=/lib/")
        async with http.get(base(hub) + "/lib/") as resp:
            assert resp.status == 401
