"""The operators' pages for tests: an app to sign in to, pages read as tables, a running
network to look at, and rows put straight into the database for exact figures.

- `ops_client` serves the hub's HTTP app (make_app, as the hub builds it) and makes sure
  the operator account `OPERATOR` (password `PASSWORD`, operator @ consortium) exists;
  `sign_in` signs in as it through the sign-in form, and `get_page` reads like a browser.
- `rows_of` / `row_for` read a page's tables; `pct` formats a rate as the pages do.
- `operator_network` runs a real hub with a requester and four suppliers, and
  `unfilled_then_copied` drives one request through it.
- `put_transaction` writes a transaction (and its first rota entry) directly.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient, TestServer

from accounts import people
from accounts.audit import Actor
from accounts.roles import Grant
from app.hub import Hub
from illclient.client import AgencyClient
from schemas.settings import Settings
from settlement.fees import load_fees
from tests.support import messages
from tests.support.agencies import MakeAgency
from tests.support.hub import Party
from tests.support.names import RUN_ID, fresh_issn
from web.app import make_app

PASSWORD = "correct horse 馆际互借 battery"
OPERATOR = f"ops-{RUN_ID}"      # this run's operator account (see ensure_operator)
HTML = {"Accept": "text/html,application/xhtml+xml"}


# ---- reading pages -----------------------------------------------------------------

class Rows(HTMLParser):
    """Table rows of a page: each `<tr>`'s attributes and its cells' text."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self._cell: list[str] | None = None
        self._svg = 0
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "svg":
            self._svg += 1
        elif tag == "tr":
            self.rows.append((dict(attrs), []))
        elif tag in ("td", "th"):
            self._cell = []
        elif tag in ("br", "li") and self._cell is not None:
            self._cell.append(" ")  # what a reader sees as a line break

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._svg -= 1
        elif tag in ("td", "th") and self._cell is not None and self.rows:
            self.rows[-1][1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._svg:  # chart labels and tooltips are not table text
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)


def rows_of(page: str) -> Rows:
    parser = Rows()
    parser.feed(page)
    return parser


def row_for(page: str, symbol: str, table_id: str) -> list[str]:
    """The cells of the row for `symbol` in the table `table_id`."""
    section = page.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    found = [cells for attrs, cells in rows_of("<table>" + section).rows
             if attrs.get("data-symbol") == symbol]
    assert len(found) == 1, f"{symbol} in {table_id}: {found}"
    return found[0]


def pct(part: int, whole: int) -> str:
    return f"{part / whole * 100:.1f} %"


# ---- an app with operator pages ----------------------------------------------------

async def ensure_operator(pool: asyncpg.Pool) -> str:
    """The operator account `OPERATOR` with `PASSWORD`, made once per run (as `run.py user
    add ... --role operator` makes the first operator)."""
    async with pool.acquire() as conn:
        if await people.find(conn, OPERATOR) is None:
            by = Actor.cli("tests")
            person = await people.add(conn, by, login=OPERATOR, display_name="运营 Operator",
                                      password=PASSWORD)
            await people.grant(conn, by, person, Grant.parse("operator", None))
    return OPERATOR


@asynccontextmanager
async def ops_client(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[TestClient]:
    """The hub's HTTP app (make_app, as the hub builds it), the operator account made."""
    await ensure_operator(pool)
    client = TestClient(TestServer(make_app(settings, pool)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()


async def sign_in(client: TestClient | aiohttp.ClientSession, base: str = "", *,
                  login: str = OPERATOR, password: str = PASSWORD,
                  next_path: str = "/ops/") -> None:
    """Through the sign-in form, as a browser does; the client keeps the cookie."""
    async with client.post(f"{base}/signin", data={"login": login, "password": password,
                                                   "next": next_path},
                           allow_redirects=False) as resp:
        assert resp.status == 303, await resp.text()
        assert resp.headers["Location"] == next_path


async def get_page(client: Any, path: str, status: int = 200) -> str:
    """A page as a browser asks for it; checks the status and that it is UTF-8 HTML."""
    async with client.get(path, headers=HTML, allow_redirects=False) as resp:
        body: str = await resp.text()
        assert resp.status == status, body
        assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
        assert '<meta charset="utf-8">' in body
        return body


# ---- a real network: hub, requester, four suppliers -------------------------------

@dataclass
class OpsNetwork:
    base_url: str
    issn: str
    req: Party
    city: Party
    prov: Party
    nat: Party
    dear: Party


@asynccontextmanager
async def operator_network(settings: Settings, pool: asyncpg.Pool,
                           make_agency: MakeAgency) -> AsyncIterator[OpsNetwork]:
    """A running hub (operator pages on), a requester and four suppliers holding one ISSN.

    The requester is in Nanjing; suppliers in Nanjing (same city), Suzhou (same
    province, 12.00 + 0.50 per page), Beijing (national) and a vendor whose 80.00 per
    copy is above the request's maximumCosts (50.00), so dispatch excludes it.
    """
    await ensure_operator(pool)
    hub = Hub(settings)
    await hub.start()
    clients: list[AgencyClient] = []
    try:
        parties: dict[str, Party] = {}
        layout = {"req": ("江苏", "南京", ("requester",), "南京大学图书馆"),
                  "city": ("江苏", "南京", ("supplier",), "南京图书馆"),
                  "prov": ("江苏", "苏州", ("supplier",), "苏州大学图书馆"),
                  "nat": ("北京", "北京", ("supplier",), "国家图书馆"),
                  "dear": ("北京", "北京", ("supplier",), "万方数据 Wanfang Data")}
        for order, (key, (province, city, roles, name)) in enumerate(layout.items()):
            label = f"{order}OPS{key.upper()}-{secrets.token_hex(3)}"
            symbol, pw = await make_agency(label, province=province, city=city, roles=roles,
                                           name=name)
            client = AgencyClient(settings, symbol, pw)
            await client.connect()
            clients.append(client)
            parties[key] = Party(symbol, client)
        issn = fresh_issn()
        await pool.executemany(
            "INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
            [(issn, p.symbol) for k, p in parties.items() if k != "req"])
        async with pool.acquire() as conn:
            await load_fees(conn, f"""
currency = "CNY"
[[fee]]
supplier = "{parties['prov'].symbol}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "12.00"
per_page = "0.50"
[[fee]]
supplier = "{parties['dear'].symbol}"
service_kind = "DocumentDelivery"
effective_from = 2020-01-01
base = "80.00"
""", file_name="ops-test-fees.toml")
        assert hub.http is not None
        yield OpsNetwork(base_url=hub.http.base_url, issn=issn, **parties)
    finally:
        for c in clients:
            await c.close()
        await hub.stop()


async def unfilled_then_copied(net: OpsNetwork, request_id: str) -> str:
    """Nanjing says Unfilled (NotOnShelf), Suzhou delivers: returns the transaction id."""
    req, sh, js = net.req, net.city, net.prov
    await req.send("request", messages.request(req.symbol, request_id=request_id,
                                               issn=net.issn))
    await req.confirmed()
    await req.next("supplyingAgencyMessage")  # ExpectToSupply
    fwd = await sh.next("request")
    txn_id: str = fwd.headers["hub-transaction-id"]
    await sh.send("supplyingAgencyMessage", messages.supplier_message(
        sh.symbol, req.symbol, request_id, "Unfilled", "RequestResponse", answerYesNo="N",
        reasonUnfilled="NotOnShelf"))
    await sh.confirmed()
    await req.next("supplyingAgencyMessage")  # Notification: moved on
    await js.next("request")
    await js.send("supplyingAgencyMessage", messages.supplier_message(
        js.symbol, req.symbol, request_id, "CopyCompleted", "StatusChange"))
    await js.confirmed()
    got = await req.next("supplyingAgencyMessage")
    assert got.content["statusInfo"]["status"] == "CopyCompleted"
    return txn_id


# ---- direct rows, for figures a test controls exactly ------------------------------

async def put_transaction(pool: asyncpg.Pool, requester: str, state: str, *,
                          supplier: str | None = None, created: datetime | None = None,
                          title: str = "中国图书馆学报",
                          forwarded: datetime | None = None,
                          answered: datetime | None = None) -> str:
    """A transaction row in `state` (closed if terminal) and, when forwarded, its rota entry."""
    txn_id = f"ILL-T-{secrets.token_hex(6).upper()}"
    request = messages.request(requester, request_id=txn_id + "-R", title=title)
    closed = state in ("CopyCompleted", "LoanCompleted", "Unfilled", "Cancelled")
    created = created or datetime.now(UTC)
    await pool.execute(
        """INSERT INTO ill_transaction (id, requester, request_id, service_type, service_kind,
                                        state, supplier, request, created_at, updated_at,
                                        closed_at)
           VALUES ($1, $2, $3, 'Copy', 'DocumentDelivery', $4, $5, $6::jsonb, $7, $7,
                   CASE WHEN $8 THEN $7::timestamptz END)""",
        txn_id, requester, txn_id + "-R", state, supplier,
        json.dumps(request, ensure_ascii=False), created, closed)
    if supplier and forwarded:
        await pool.execute(
            """INSERT INTO rota_entry (transaction_id, position, supplier, tier, score, reasons,
                                       outcome, forwarded_at, answered_at)
               VALUES ($1, 1, $2, 1, 0.5, $3, $4, $5, $6)""",
            txn_id, supplier, ["tier 1: same city"],
            "supplied" if answered else "forwarded", forwarded, answered)
    return txn_id
