"""Violations and quality flags, raised by dispatch as they happen.

Each test runs the dispatch `network` (or the `priced` one) of tests/support/network.py
and reads the flags raised on its own agencies.
"""

from __future__ import annotations

from datetime import timedelta

from tests.support import messages
from tests.support.cli import run
from tests.support.messages import requester_action, supplier_message
from tests.support.network import start
from tests.support.operators import get_page, ops_client, sign_in


async def flags(pool, subject: str, kind: str) -> list:
    return await pool.fetch("SELECT * FROM flag WHERE subject = $1 AND kind = $2", subject, kind)


async def test_a_supplier_missing_three_deadlines_is_flagged(network, hub, pool) -> None:
    req, sh = network["req"], network["sh"]
    for i in range(3):
        await start(network, f"DB-{i}", patron_id=f"P-DB-{i}")
        await sh.next("request")
    later = await pool.fetchval("SELECT max(deadline_at) FROM ill_transaction "
                                "WHERE requester = $1", req.symbol) + timedelta(seconds=1)
    # Other tests' open transactions share the database: count at least ours.
    assert await hub.dispatcher.sweep_deadlines(hub.pool, now=later) >= 3
    [flag] = await flags(pool, sh.symbol, "deadline_breaches")
    assert "3 requests pass their deadline" in flag["detail"]


async def test_copy_completed_without_a_valid_file_is_refused_and_flagged(network, pool) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "NF-1")
    await sh.next("request")
    done = supplier_message(sh.symbol, req.symbol, "NF-1", "CopyCompleted")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "sentVia": "FTP", "itemId": "nothing-here.pdf"}
    await sh.send("supplyingAgencyMessage", done)
    await sh.confirmed(ok=False)
    [flag] = await flags(pool, sh.symbol, "copy_without_valid_file")
    assert "nothing-here.pdf" in flag["detail"] and flag["transaction_id"]


async def test_charge_above_schedule_is_flagged(priced, pool) -> None:
    req, bj = priced["req"], priced["bj"]
    await start(priced, "FL-1", max_cost="9.00")
    await bj.next("request")
    done = supplier_message(bj.symbol, req.symbol, "FL-1", "CopyCompleted")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "deliveryCosts": {"currencyCode": "CNY",
                                                      "monetaryValue": "12.00"}}
    await bj.send("supplyingAgencyMessage", done)
    await bj.confirmed(ok=False)
    assert len(await flags(pool, bj.symbol, "charge_above_schedule")) == 1


async def test_overdue_loan_flagged_once_and_listed(network, hub, pool, settings) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "OD-1", service_type="Loan", title="资治通鉴")
    await sh.next("request")
    loaned = supplier_message(sh.symbol, req.symbol, "OD-1", "Loaned")
    loaned["supplyingAgencyMessage"]["statusInfo"]["dueDate"] = "2020-01-31T00:00:00Z"
    await sh.send("supplyingAgencyMessage", loaned)
    await sh.confirmed()
    await req.status("Loaned")
    await hub.dispatcher.sweep_deadlines(hub.pool)
    await hub.dispatcher.sweep_deadlines(hub.pool)
    [flag] = await flags(pool, req.symbol, "loan_overdue")
    assert "due 2020-01-31" in flag["detail"]
    code, out, _ = await run(settings, "flags", "--kind", "loan_overdue", "--limit", "1000")
    assert code == 0 and flag["transaction_id"] in out


async def test_a_requester_cancelling_four_of_ten_requests_is_flagged(network, pool) -> None:
    req, sh = network["req"], network["sh"]
    for i in range(10):
        await start(network, f"CR-{i}", patron_id=f"P-CR-{i}")
        await sh.next("request")
    for i in range(4):
        await req.send("requestingAgencyMessage",
                       requester_action(req.symbol, sh.symbol, f"CR-{i}", "Cancel"))
        await req.confirmed()
    [flag] = await flags(pool, req.symbol, "cancellation_rate")
    assert "cancelled 4 of its 10 requests" in flag["detail"]


async def test_flags_appear_on_the_dashboard(network, pool, settings) -> None:
    req, sh = network["req"], network["sh"]
    await start(network, "DF-1")
    await sh.next("request")
    done = supplier_message(sh.symbol, req.symbol, "DF-1", "CopyCompleted")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "sentVia": "FTP", "itemId": "missing-在哪里.pdf"}
    await sh.send("supplyingAgencyMessage", done)
    await sh.confirmed(ok=False)
    async with ops_client(settings, pool) as client:
        await sign_in(client)
        page = await get_page(client, "/ops/")
    assert "Violations and quality flags" in page
    assert "copy_without_valid_file" in page and "missing-在哪里.pdf" in page
