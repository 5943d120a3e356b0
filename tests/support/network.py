"""The dispatch tests' world: a running hub, a requester in Shanghai and three
suppliers (Shanghai, Nanjing, Beijing) holding one ISSN, each a real agency with its
own broker user; `priced` adds fee schedules to it.

    network["req"]  requester, 上海/上海
    network["sh"]   supplier,  上海/上海   (same city: tier 1)
    network["js"]   supplier,  江苏/南京   (other province)
    network["bj"]   supplier,  北京/北京   (other province)
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from app.hub import Hub
from illclient.client import AgencyClient, Received
from schemas.settings import Settings
from settlement.fees import load_fees
from tests.support import messages
from tests.support.agencies import MakeAgency
from tests.support.hub import Party

ISSN = "1001-8867"

Network = dict[str, Party]


@pytest.fixture
async def network(settings: Settings, hub: Hub, make_agency: MakeAgency,
                  pool: asyncpg.Pool) -> AsyncIterator[Network]:
    """A requester in Shanghai; suppliers in Shanghai, Nanjing and Beijing holding one ISSN."""
    parties: Network = {}
    clients: list[AgencyClient] = []
    layout = {"req": ("上海", "上海", ("requester",)), "sh": ("上海", "上海", ("supplier",)),
              "js": ("江苏", "南京", ("supplier",)), "bj": ("北京", "北京", ("supplier",))}
    for order, (key, (province, city, roles)) in enumerate(layout.items()):
        # Labels sort in layout order, so ties in the rota break the same way every run.
        label = f"{order}{key.upper()}-{secrets.token_hex(3)}"
        symbol, pw = await make_agency(label, province=province, city=city, roles=roles,
                                       name=f"{city}图书馆")
        client = AgencyClient(settings, symbol, pw)
        await client.connect()
        clients.append(client)
        parties[key] = Party(symbol, client)
    await pool.executemany(
        "INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
        [(ISSN, parties[k].symbol) for k in ("sh", "js", "bj")])
    yield parties
    for c in clients:
        await c.close()


@pytest.fixture
async def priced(network: Network, pool: asyncpg.Pool) -> Network:
    """The network with fees: Shanghai charges 60.00 per copy, Nanjing 12.00 + 0.50/page,
    Beijing 8.00."""
    sh, js, bj = network["sh"].symbol, network["js"].symbol, network["bj"].symbol
    async with pool.acquire() as conn:
        await load_fees(conn, f"""
currency = "CNY"
[[fee]]
supplier = "{sh}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "60.00"
[[fee]]
supplier = "{js}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "12.00"
per_page = "0.50"
[[fee]]
supplier = "{bj}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "8.00"
""", file_name="test-fees.toml")
    return network


async def start(network: Network, request_id: str, **kw: Any) -> Received:
    """The requester asks for the ISSN; returns the hub's ExpectToSupply notice."""
    req = network["req"]
    kw.setdefault("issn", ISSN)
    await req.send("request", messages.request(req.symbol, request_id=request_id, **kw))
    await req.confirmed()
    return await req.status("ExpectToSupply", "RequestResponse")


async def state_of(pool: asyncpg.Pool, requester: str, request_id: str) -> str:
    """The state of the requester's transaction, as stored."""
    state: str = await pool.fetchval("SELECT state FROM ill_transaction WHERE requester = $1 "
                                     "AND request_id = $2", requester, request_id)
    return state
