"""Dispatch quotes a loan with its shipping legs and charges them (issue 19 item 2).

The `network` world (tests/support/network.py): a requester in Shanghai, suppliers in
Shanghai, Nanjing and Beijing. Here they price book loans; Beijing's schedule prices the
legs by zone, so a loan to Shanghai is national: 6.00 + 29.00 out + 29.00 back. The
charges are dated now (dispatch's clock), like tests/test_dispatch_charges.py's.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from schemas.settings import Settings
from settlement.fees import load_fees
from settlement.ledger import check
from settlement.subsidy import load_subsidy
from tests.support.cli import run
from tests.support.messages import supplier_message
from tests.support.network import Network, start


async def _loan_fees(pool: asyncpg.Pool, network: Network) -> None:
    """Shanghai and Nanjing lend at 200.00 (above the request's maximumCosts); Beijing at
    6.00 plus its legs by zone, the return priced as the way out."""
    sh, js, bj = (network[k].symbol for k in ("sh", "js", "bj"))
    dear = "".join(f"""
[[fee]]
supplier = "{s}"
service_kind = "BookLoan"
effective_from = 2020-01-01
service_fee = "200.00"
""" for s in (sh, js))
    async with pool.acquire() as conn:
        await load_fees(conn, f"""
currency = "CNY"
{dear}
[[fee]]
supplier = "{bj}"
service_kind = "BookLoan"
effective_from = 2020-01-01
service_fee = "6.00"
logistics = {{ city = "8.00", province = "15.00", national = "29.00" }}
return_leg = true
""", file_name="test-logistics-fees.toml")


async def _txn(pool: asyncpg.Pool, requester: str, request_id: str) -> Any:
    return await pool.fetchrow("SELECT * FROM ill_transaction WHERE requester = $1 AND "
                               "request_id = $2", requester, request_id)


async def test_a_national_loan_is_quoted_in_parts_and_charged_with_its_shipping(
        network: Network, pool: asyncpg.Pool, settings: Settings) -> None:
    req, bj = network["req"], network["bj"]
    await _loan_fees(pool, network)
    await start(network, "LG-1", service_type="Loan", title="敦煌遗书总目", max_cost="70.00")
    await bj.next("request")  # the others are too dear: Beijing, at 64.00 with shipping
    txn = await _txn(pool, req.symbol, "LG-1")
    assert (txn["supplier"], txn["quote_minor"], txn["quote_logistics_minor"]) == (
        bj.symbol, 6400, 5800)
    entry = await pool.fetchrow("SELECT reasons, quote_minor, quote_logistics_minor "
                                "FROM rota_entry WHERE transaction_id = $1 AND supplier = $2",
                                txn["id"], bj.symbol)
    assert entry is not None
    parts = "quote 64.00 CNY = service 6.00 + outbound 29.00 + return 29.00 (national)"
    assert parts in entry["reasons"]
    assert (entry["quote_minor"], entry["quote_logistics_minor"]) == (6400, 5800)
    code, out, err = await run(settings, "explain", txn["id"])
    assert code == 0, err
    assert parts in out

    # Loaded just before the charge: dispatch subsidises with the latest version. The
    # rule names this test's requester, so no other test's charge matches it.
    async with pool.acquire() as conn:
        await load_subsidy(conn, f"""
[[rule]]
name = "national shipping"
when = {{ service_kind = ["BookLoan"], requester = ["{req.symbol}"] }}
part = "logistics"
percent = 50
""", file_name="test-logistics-subsidy.toml")
    await bj.send("supplyingAgencyMessage",
                  supplier_message(bj.symbol, req.symbol, "LG-1", "Loaned"))
    await bj.confirmed()
    await req.status("Loaned")
    [posting] = await pool.fetch("SELECT * FROM ledger_posting WHERE transaction_id = $1",
                                 txn["id"])
    assert (posting["event"], posting["fee_minor"], posting["logistics_minor"]) == (
        "Loaned", 6400, 5800)
    grants = await pool.fetch("SELECT rule, part, granted_minor FROM subsidy_grant "
                              "WHERE posting_id = $1 ORDER BY position", posting["id"])
    assert [(g["rule"], g["part"], g["granted_minor"]) for g in grants] == [
        ("national shipping", "logistics", 2900)]  # half the shipping, none of the service
    assert (posting["subsidy_minor"], posting["patron_share_minor"]) == (2900, 3500)
    async with pool.acquire() as conn:
        assert await check(conn) == []


async def test_a_copy_is_quoted_without_legs(network: Network, pool: asyncpg.Pool) -> None:
    # Beijing's DocumentDelivery entry prices no shipping, and a Copy is not shipped.
    req, bj = network["req"], network["bj"]
    await _loan_fees(pool, network)
    async with pool.acquire() as conn:
        await load_fees(conn, f"""
currency = "CNY"
[[fee]]
supplier = "{bj.symbol}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "8.00"
""", file_name="test-logistics-copy.toml")
    await start(network, "LG-2", supplier=bj.symbol, max_cost="9.00")
    await bj.next("request")
    txn = await _txn(pool, req.symbol, "LG-2")
    assert (txn["quote_minor"], txn["quote_logistics_minor"]) == (800, 0)
    reasons = await pool.fetchval("SELECT reasons FROM rota_entry WHERE transaction_id = $1 "
                                  "AND supplier = $2", txn["id"], bj.symbol)
    assert not any(" = service " in r for r in reasons)


async def test_a_copy_or_loan_supplied_as_a_copy_is_not_charged_shipping(
        network: Network, pool: asyncpg.Pool) -> None:
    req, bj = network["req"], network["bj"]
    sh, js = network["sh"].symbol, network["js"].symbol
    # A CopyOrLoan is a DocumentDelivery that may go out as a loan: its entry prices legs.
    async with pool.acquire() as conn:
        await load_fees(conn, "currency = \"CNY\"\n" + "".join(f"""
[[fee]]
supplier = "{s}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "200.00"
""" for s in (sh, js)) + f"""
[[fee]]
supplier = "{bj.symbol}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "6.00"
logistics = {{ city = "8.00", province = "15.00", national = "29.00" }}
return_leg = true
""", file_name="test-logistics-copy-or-loan.toml")
    await start(network, "LG-3", service_type="CopyOrLoan", title="敦煌遗书总目",
                max_cost="70.00")
    await bj.next("request")
    txn = await _txn(pool, req.symbol, "LG-3")
    assert (txn["quote_minor"], txn["quote_logistics_minor"]) == (6400, 5800)  # maybe a loan
    await bj.send("supplyingAgencyMessage",
                  supplier_message(bj.symbol, req.symbol, "LG-3", "CopyCompleted"))
    await bj.confirmed()
    await req.status("CopyCompleted")
    [posting] = await pool.fetch("SELECT * FROM ledger_posting WHERE transaction_id = $1",
                                 txn["id"])
    # Nothing was shipped: the service part alone, no logistics.
    assert (posting["event"], posting["fee_minor"], posting["logistics_minor"]) == (
        "CopyCompleted", 600, 0)
