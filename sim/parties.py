"""The demo's simulated world: library ILL systems, suppliers and readers around a real hub.

Each library is an `AgencyClient` logged in to RabbitMQ as its own broker user; it
sends and reads ISO 18626 messages exactly as a real member's system would, and
knows nothing of the hub's database. Suppliers upload real PDF files to the hub's
FTP drop; readers click the links in the mails that the hub sends (caught by the
demo's own SMTP server, which keeps every mail as a .eml file). Time is simulated:
`SimClock` turns simulated hours into real seconds at --speed.
"""

from __future__ import annotations

import asyncio
import copy
import ftplib
import io
import logging
import math
import random
import re
import time
import uuid
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from email import message_from_bytes
from email.policy import default as default_policy
from functools import partial
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from aiosmtpd.smtp import SMTP

from broker.holdings import identifiers_of
from illclient.client import AgencyClient, Received
from settlement.fees import quotes
from sim.network import (
    Agency,
    Book,
    Journal,
    Network,
    Profile,
    hyphenate_isbn,
    isbn10_of,
    person,
)

log = logging.getLogger(__name__)

LINK = re.compile(r"https?://\S+/d/[A-Za-z0-9_-]{20,}")
PAGES = re.compile(r"(\d+)\s*-\s*(\d+)")


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def later_iso(days: float) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).isoformat(
        timespec="seconds").replace("+00:00", "Z")


def agency_id(symbol: str) -> dict[str, str]:
    scheme, _, value = symbol.partition(":")
    return {"agencyIdType": scheme, "agencyIdValue": value}


def symbol_of(agency: dict[str, Any] | None) -> str | None:
    if not agency:
        return None
    return f"{agency.get('agencyIdType')}:{agency.get('agencyIdValue')}"


class SimClock:
    """Simulated hours since the start, at `speed` simulated seconds per real second."""

    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.started = time.monotonic()

    def hours(self) -> float:
        return (time.monotonic() - self.started) * self.speed / 3600

    def seconds(self, hours: float) -> float:
        return hours * 3600 / self.speed

    async def sleep(self, hours: float) -> None:
        await asyncio.sleep(max(0.0, self.seconds(hours)))


@dataclass
class Stats:
    """What the simulated parties saw, for the progress line (the summary reads the DB)."""

    sent: int = 0               # new requests published
    retries: int = 0            # Retry requests published
    confirmed: int = 0          # requestConfirmation OK
    refused: int = 0            # requestConfirmation ERROR
    forwarded: int = 0          # forwards received by suppliers
    moved_on: int = 0           # Notification: the hub moved a request to the next supplier
    filled: int = 0             # CopyCompleted or Loaned seen by the requester
    unfilled: int = 0
    cancelled: int = 0
    returned: int = 0           # LoanCompleted seen by the requester
    uploads: int = 0
    mails: int = 0
    downloads: int = 0
    lag: float = 0.0            # recent request -> confirmation time, real seconds
    lag_at: float = 0.0         # when `lag` was last measured (time.monotonic())
    errors: list[str] = field(default_factory=list)     # hub ERROR answers to other messages
    problems: list[str] = field(default_factory=list)   # failures of the simulation itself


class Tasks:
    """Background work of the simulated parties; a failure is recorded, never lost."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.running: set[asyncio.Task[None]] = set()
        self.readers = 0          # reader tasks not finished yet

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        async def guarded() -> None:
            try:
                await coro
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("simulation: %s failed", what, exc_info=True)
                self.stats.problems.append(f"{what}: {type(exc).__name__}: {exc}")

        task = asyncio.create_task(guarded(), name=what)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def cancel_all(self) -> None:
        tasks = list(self.running)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# --- the world ---------------------------------------------------------------------------

@dataclass
class Patron:
    patron_id: str
    surname: str
    given: str
    email: str
    kind: str


@dataclass
class Ask:
    """One request as the requesting library's ILL system keeps it."""

    request_id: str
    origin: str                      # the first request id of a retry chain
    kind: str                        # DocumentDelivery | BookLoan | PayPerView
    body: dict[str, Any]
    max_cost: Decimal
    state: str = "Sent"
    supplier: str | None = None
    outcome: str | None = None       # filled, unfilled, cancelled, refused, retried
    retries: int = 0
    loan_started: bool = False
    sent_at: float = field(default_factory=time.monotonic)


@dataclass
class Job:
    """One forwarded request as the supplying library's system keeps it."""

    transaction: str
    requester: dict[str, str]        # ISO agency id of the requester
    request_id: str
    body: dict[str, Any]
    kind: str
    retry: bool = False
    silent: bool = False
    cancelled: bool = False
    delivered: bool = False


class World:
    """Everything the simulated parties share: the network, time, counters, servers."""

    def __init__(self, network: Network, clock: SimClock, *, rng: random.Random,
                 passwords: dict[str, str], hub_symbol: str,
                 pool: asyncpg.Pool, mail_dir: Path) -> None:
        self.network = network
        self.clock = clock
        self.rng = rng
        self.passwords = passwords
        self.ftp: tuple[str, int] = ("127.0.0.1", 0)   # the hub's FTP drop, once it runs
        self.hub_symbol = hub_symbol
        self.pool = pool
        self.mail_dir = mail_dir
        self.stats = Stats()
        self.tasks = Tasks(self.stats)
        self.spec = network.requests
        self.requesters: dict[str, Requester] = {}
        self.suppliers: dict[str, Supplier] = {}
        self.patrons: dict[str, list[Patron]] = {}
        self.http: aiohttp.ClientSession | None = None
        self.names = {a.symbol: a.name for a in network.agencies}
        # The uploads' own threads: the hub's FTP drop checks passwords in the default
        # executor, so uploads waiting there for their login would starve it.
        self.executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="demo-ftp")
        self.stopping = False

    def span(self, key: str, default: tuple[float, float]) -> float:
        low, high = self.spec.get(key, default)
        return self.rng.uniform(float(low), float(high))

    def share(self, key: str, default: float) -> float:
        return float(self.spec.get(key, default))

    async def start(self, settings: Any) -> None:
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        for a in self.network.agencies:
            client = AgencyClient(settings, a.symbol, self.passwords[a.symbol])
            if "requester" in a.roles:
                self.requesters[a.symbol] = Requester(self, a, client)
            if "supplier" in a.roles:
                # One connection per agency: a library that also supplies shares it.
                shared = self.requesters.get(a.symbol)
                self.suppliers[a.symbol] = Supplier(self, a, shared.client if shared
                                                    else client)
        clients = {id(p.client): p.client for p in (*self.requesters.values(),
                                                     *self.suppliers.values())}
        sem = asyncio.Semaphore(8)

        async def connect(c: AgencyClient) -> None:
            async with sem:
                await c.connect()

        await asyncio.gather(*(connect(c) for c in clients.values()))
        for symbol in {*self.requesters, *self.suppliers}:
            self.tasks.spawn(self._dispatch(symbol), f"{symbol} inbox")

    async def _dispatch(self, symbol: str) -> None:
        """One library system reading its queue, as requester and as supplier."""
        party = self.requesters.get(symbol) or self.suppliers[symbol]
        while True:
            msg = await party.client.inbox.get()
            try:
                await self._route(symbol, msg)
            except Exception as exc:
                log.warning("simulation: %s could not handle %s", symbol, msg.kind,
                            exc_info=True)
                self.stats.problems.append(f"{symbol} handling {msg.kind}: "
                                           f"{type(exc).__name__}: {exc}")

    async def _route(self, symbol: str, msg: Received) -> None:
        kind = msg.kind or ""
        as_supplier = kind in ("request", "requestingAgencyMessage",
                               "supplyingAgencyMessageConfirmation")
        if as_supplier and symbol in self.suppliers:
            await self.suppliers[symbol].handle(msg)
        elif symbol in self.requesters:
            await self.requesters[symbol].handle(msg)
        else:
            self.stats.problems.append(f"{symbol} got an unexpected {kind}")

    async def stop(self) -> None:
        self.stopping = True
        await self.tasks.cancel_all()
        clients = {id(p.client): p.client for p in (*self.requesters.values(),
                                                     *self.suppliers.values())}
        await asyncio.gather(*(c.close() for c in clients.values()), return_exceptions=True)
        if self.http:
            await self.http.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

    # ---- readers --------------------------------------------------------------------

    def patron(self, a: Agency) -> Patron:
        pool = self.patrons.setdefault(a.symbol, [])
        if len(pool) < 40 and (not pool or self.rng.random() < 0.5):
            s, g, sp, gp = person(self.rng)
            year = self.rng.randint(2018, 2025)
            kind = self.rng.choices(["Undergraduate", "Postgraduate", "Faculty"],
                                    [3, 4, 2])[0]
            n = len(pool) + 1
            pool.append(Patron(f"{a.code}{year}{n:04d}", s, g,
                               f"{sp}{gp}{n:02d}@{a.domain}", kind))
            return pool[-1]
        return self.rng.choice(pool)

    def on_mail(self, raw: bytes) -> None:
        """A mail the hub sent (caught by the demo's SMTP server): a reader may click it."""
        self.stats.mails += 1
        msg = message_from_bytes(raw, policy=default_policy)
        body = msg.get_body(("plain",))
        text = body.get_content() if body is not None else ""
        links = sorted(set(LINK.findall(text)))
        if links and not self.stopping:
            self.tasks.readers += 1
            self.tasks.spawn(self._reader(links[0]), "reader")

    async def _reader(self, link: str) -> None:
        try:
            if self.rng.random() < self.share("never_download", 0.08):
                return
            await self.clock.sleep(self.span("read_hours", (0.5, 36)))
            await self._download(link)
            if self.rng.random() < self.share("download_twice", 0.3):
                await self.clock.sleep(self.rng.uniform(2, 48))
                await self._download(link)
        finally:
            self.tasks.readers -= 1

    async def _download(self, link: str) -> None:
        assert self.http is not None
        async with self.http.get(link) as resp:
            content = await resp.read()
            if resp.status != 200 or not content.startswith(b"%PDF-"):
                self.stats.problems.append(f"download answered HTTP {resp.status}")
                return
        self.stats.downloads += 1


# --- requesting libraries -------------------------------------------------------------------

class Requester:
    def __init__(self, world: World, agency: Agency, client: AgencyClient) -> None:
        self.world = world
        self.agency = agency
        self.client = client
        self.asks: dict[str, Ask] = {}
        self.seq = 0

    async def send(self, kind: str, body: dict[str, Any]) -> None:
        await self.client.send(kind, body)

    # ---- new requests -----------------------------------------------------------------

    async def ask(self) -> None:
        w = self.world
        self.seq += 1
        request_id = f"{self.agency.code}-{self.seq:05d}"
        mix = {k: float(w.spec.get(k, d)) for k, d in (
            ("DocumentDelivery", 0.57), ("BookLoan", 0.3), ("PayPerView", 0.13))}
        kind = w.rng.choices(list(mix), list(mix.values()))[0]
        body, max_cost = self._build(kind, request_id)
        ask = Ask(request_id, request_id, kind, body, max_cost)
        self.asks[request_id] = ask
        w.stats.sent += 1
        await self.send("request", body)
        if w.rng.random() < w.share("cancel", 0.03):
            w.tasks.spawn(self._cancel_later(ask, w.rng.uniform(4, 48)), "reader cancels")

    def _build(self, kind: str, request_id: str) -> tuple[dict[str, Any], Decimal]:
        w, a = self.world, self.agency
        rng = w.rng
        p = w.patron(a)
        header: dict[str, Any] = {"requestingAgencyId": agency_id(a.symbol),
                                  "timestamp": now_iso(),
                                  "requestingAgencyRequestId": request_id}
        service: dict[str, Any] = {"requestType": "New", "requestSubType": ["PatronRequest"]}
        extra: dict[str, Any] = {}
        if kind == "BookLoan":
            book = self._pick_book()
            bib, pub = _book_info(book, rng, w.share("isbn10", 0.2))
            service.update(serviceType="Loan", serviceLevel="Normal")
            max_cost = rng.choice(w.spec.get("max_cost_loan", ["40.00"]))
            extra["requestedDeliveryInfo"] = [{"address": {"physicalAddress": {
                "line1": f"{a.name} 馆际互借处", "locality": a.city, "region": a.province,
                "country": "CN"}}}]
            nlc = w.network.symbol("NLC:CN")
            if nlc in w.suppliers and rng.random() < w.share("named_supplier", 0.05):
                # A reader who wants 国家图书馆's copy, at less than its loan fee.
                header["supplyingAgencyId"] = agency_id(nlc)
                max_cost = "30.00"
        elif kind == "PayPerView":
            bib, pub = _ppv_info(rng.choice(w.network.catalogue.journals), rng,
                                 w.network.catalogue.words)
            service.update(serviceType="Copy", serviceLevel="Rush")
            extra["hubExtensions"] = {"serviceKind": "PayPerView"}
            max_cost = rng.choice(w.spec.get("max_cost_ppv", ["20.00"]))
        else:
            journal = self._pick_journal()
            bib, pub = _article_info(journal, rng, w.network.catalogue.words)
            level = "Rush" if rng.random() < w.share("rush", 0.15) else "Normal"
            service.update(serviceType="Copy", serviceLevel=level)
            max_cost = rng.choice(w.spec.get("max_cost_copy", ["30.00"]))
        body = {"request": {
            "header": header, "bibliographicInfo": bib, "publicationInfo": pub,
            "serviceInfo": service,
            "patronInfo": {"patronId": p.patron_id, "surname": p.surname, "givenName": p.given,
                           "patronType": p.kind, "address": [{"electronicAddress": {
                               "electronicAddressType": "email",
                               "electronicAddressData": p.email}}]},
            "billingInfo": {"paymentMethod": "Account",
                            "maximumCosts": {"currencyCode": "CNY", "monetaryValue": max_cost}},
            **extra}}
        return body, Decimal(max_cost)

    def _held_here(self, item: tuple[str, str]) -> bool:
        return item in self.world.network.holdings.get(self.agency.symbol, ())

    def _pick_journal(self) -> Journal:
        journals = self.world.network.catalogue.journals
        for _ in range(6):
            j = _popular(self.world.rng, journals)
            if not self._held_here(("issn", j.issn)):
                break
        return j

    def _pick_book(self) -> Book:
        books = self.world.network.catalogue.books
        for _ in range(6):
            b = _popular(self.world.rng, books)
            if not self._held_here(("isbn", b.isbn)):
                break
        return b

    async def _cancel_later(self, ask: Ask, hours: float) -> None:
        await self.world.clock.sleep(hours)
        if ask.outcome is None and ask.state in ("Sent", "ExpectToSupply", "WillSupply"):
            await self.action(ask, "Cancel", "读者已通过其他途径获得，取消申请")

    async def action(self, ask: Ask, action: str, note: str | None = None) -> None:
        body: dict[str, Any] = {"requestingAgencyMessage": {
            "header": {"supplyingAgencyId": agency_id(ask.supplier or self.world.hub_symbol),
                       "requestingAgencyId": agency_id(self.agency.symbol),
                       "timestamp": now_iso(), "requestingAgencyRequestId": ask.request_id},
            "action": action}}
        if note:
            body["requestingAgencyMessage"]["note"] = note
        await self.send("requestingAgencyMessage", body)

    # ---- what comes back ----------------------------------------------------------------

    async def handle(self, msg: Received) -> None:
        w = self.world
        content = msg.content if isinstance(msg.body, dict) else {}
        if msg.kind == "requestConfirmation":
            ask = self.asks.get(content.get("confirmationHeader", {}).get(
                "requestingAgencyRequestId") or msg.correlation_id or "")
            status = content.get("confirmationHeader", {}).get("messageStatus")
            if ask is not None:
                w.stats.lag = 0.8 * w.stats.lag + 0.2 * (time.monotonic() - ask.sent_at)
                w.stats.lag_at = time.monotonic()
            if status == "OK":
                w.stats.confirmed += 1
                return
            w.stats.refused += 1
            error = (content.get("errorData") or {}).get("errorValue", "")
            w.stats.errors.append(f"request refused: {error}")
            if ask is not None:
                ask.outcome = "refused"
                previous = ask.body["request"]["serviceInfo"].get(
                    "requestingAgencyPreviousRequestId")
                if previous and previous in self.asks:
                    # The retry was refused: give up on the request it was to replace.
                    await self.action(self.asks[previous], "Cancel", "重试失败，取消申请")
            return
        if msg.kind == "requestingAgencyMessageConfirmation":
            if content.get("confirmationHeader", {}).get("messageStatus") != "OK":
                error = (content.get("errorData") or {}).get("errorValue", "")
                w.stats.errors.append(f"{self.agency.base} action refused: {error}")
            return
        if msg.kind != "supplyingAgencyMessage":
            w.stats.problems.append(f"{self.agency.base} got an unexpected {msg.kind}")
            return
        header = content.get("header", {})
        ask = self.asks.get(header.get("requestingAgencyRequestId", ""))
        if ask is None:
            w.stats.problems.append(f"{self.agency.base}: news about an unknown request")
            return
        status = content.get("statusInfo", {}).get("status")
        info = content.get("messageInfo", {})
        reason = info.get("reasonForMessage")
        supplier = symbol_of(header.get("supplyingAgencyId"))
        if supplier and supplier != w.hub_symbol:
            ask.supplier = supplier
        if status == "ExpectToSupply":
            if reason == "Notification":
                w.stats.moved_on += 1
            ask.state = status
        elif status == "WillSupply":
            ask.state = status
        elif status == "CopyCompleted":
            if ask.outcome is None:
                ask.outcome = "filled"
                w.stats.filled += 1
            ask.state = status
        elif status == "Loaned":
            if not ask.loan_started:
                ask.loan_started = True
                if ask.outcome is None:
                    ask.outcome = "filled"
                    w.stats.filled += 1
                ask.state = "Loaned"
                w.tasks.spawn(self._borrow(ask), "loan")
        elif status == "LoanCompleted":
            ask.state = status
            w.stats.returned += 1
        elif status == "Unfilled":
            ask.state = status
            if ask.outcome is None:
                ask.outcome = "unfilled"
                w.stats.unfilled += 1
        elif status == "Cancelled":
            ask.state = status
            if ask.outcome is None:
                ask.outcome = "cancelled"
                w.stats.cancelled += 1
        elif status == "RetryPossible":
            ask.state = status
            await self._retry_or_cancel(ask, info)

    async def _borrow(self, ask: Ask) -> None:
        """The book travels, the reader keeps it a while (maybe renews), then it goes back."""
        w = self.world
        await w.clock.sleep(w.span("courier_hours", (20, 60)))
        await self.action(ask, "Received")
        ask.state = "Received"
        keep = w.span("reading_days", (2, 8)) * 24
        if w.rng.random() < w.share("renew", 0.15):
            await w.clock.sleep(keep / 2)
            await self.action(ask, "Renew", "读者申请续借")
            keep /= 2
        await w.clock.sleep(keep)
        await self.action(ask, "ShippedReturn")
        ask.state = "ShippedReturn"

    async def _retry_or_cancel(self, ask: Ask, info: dict[str, Any]) -> None:
        w = self.world
        offered = (info.get("offeredCosts") or {}).get("monetaryValue")
        price = Decimal(offered) if offered else None
        if (info.get("reasonRetry") == "CostExceedsMaxCost" and price is not None
                and price <= ask.max_cost * 3 and ask.retries < 2
                and w.rng.random() < w.share("retry", 0.7)):
            new_id = f"{ask.origin}-R{ask.retries + 1}"
            body = copy.deepcopy(ask.body)
            req = body["request"]
            req["header"].update(requestingAgencyRequestId=new_id, timestamp=now_iso())
            req["serviceInfo"].update(requestType="Retry",
                                      requestingAgencyPreviousRequestId=ask.request_id)
            limit = Decimal(math.ceil(price))
            req["billingInfo"]["maximumCosts"]["monetaryValue"] = f"{limit:.2f}"
            pages = PAGES.search(info.get("note") or "")
            if pages:
                req["bibliographicInfo"]["pagesRequested"] = f"{pages[1]}-{pages[2]}"
            new = Ask(new_id, ask.origin, ask.kind, body, limit, retries=ask.retries + 1)
            self.asks[new_id] = new
            ask.outcome = "retried"
            w.stats.retries += 1
            await self.send("request", body)
        else:
            await self.action(ask, "Cancel", "费用超出读者预算，取消申请")


def _popular(rng: random.Random, items: list[Any]) -> Any:
    """Some titles are asked for much more often than others (a long tail)."""
    n = len(items)
    return items[min(n - 1, int(n * rng.random() ** 1.6))]


def _article_info(j: Journal, rng: random.Random,
                  words: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    year = rng.randint(2008, 2025)
    start = rng.randint(1, 180)
    end = start + rng.randint(3, 17)
    if j.chinese:
        subjects, aspects = (("stm_subjects", "stm_aspects") if j.field == "stm"
                             else ("hss_subjects", "hss_aspects"))
        title = rng.choice(words[subjects]) + rng.choice(words[aspects])
        authors = "，".join(_name(rng) for _ in range(rng.randint(1, 3)))
    else:
        title = f"{rng.choice(words['english_aspects'])} {rng.choice(words['english_subjects'])}"
        authors = "; ".join(f"{p[3].capitalize()} {p[2].capitalize()}"
                            for p in (person(rng) for _ in range(rng.randint(1, 4))))
    bib = {"title": j.title, "titleOfComponent": title, "authorOfComponent": authors,
           "volume": str(year - 1980 if j.chinese else year - 1950),
           "issue": str(rng.randint(1, 12)), "pagesRequested": f"{start}-{end}",
           "bibliographicItemId": [{"bibliographicItemIdentifier": j.issn,
                                    "bibliographicItemIdentifierCode": "ISSN"}]}
    return bib, {"publicationDate": str(year), "publicationType": "Journal"}


def _ppv_info(j: Journal, rng: random.Random,
              words: dict[str, list[str]]) -> tuple[dict[str, Any], dict[str, Any]]:
    bib, pub = _article_info(j, rng, words)
    year = pub["publicationDate"]
    if j.chinese:
        doi = f"{j.doi_prefix}/j.issn.{j.issn}.{year}.{int(bib['issue']):02d}." \
              f"{rng.randint(1, 40):03d}"
    else:
        doi = f"{j.doi_prefix}/s{rng.randint(10000, 99999)}-{year}-{rng.randint(1, 99999):05d}"
    # By DOI only: pay-per-view is bought from the vendor that sells the registrant.
    bib["bibliographicItemId"] = [{"bibliographicItemIdentifier": doi,
                                   "bibliographicItemIdentifierCode": "DOI"}]
    return bib, pub


def _book_info(b: Book, rng: random.Random,
               isbn10_share: float) -> tuple[dict[str, Any], dict[str, Any]]:
    prefix = next((p for p in _PUBLISHER_PREFIXES if b.isbn.startswith("978" + p.replace(
        "-", ""))), None)
    if rng.random() < isbn10_share and (ten := isbn10_of(b.isbn)) and prefix:
        group, pub = prefix.split("-")
        cut = len(group) + len(pub)
        isbn = f"{ten[:len(group)]}-{ten[len(group):cut]}-{ten[cut:9]}-{ten[9]}"
    elif prefix:
        isbn = hyphenate_isbn(b.isbn, prefix)
    else:
        isbn = b.isbn
    bib: dict[str, Any] = {"title": b.title, "author": b.author,
                           "bibliographicItemId": [{"bibliographicItemIdentifier": isbn,
                                                    "bibliographicItemIdentifierCode": "ISBN"}]}
    if b.edition > 1:
        bib["edition"] = f"第{b.edition}版"
    return bib, {"publisher": b.publisher, "publicationDate": str(b.year),
                 "publicationType": "Book"}


# Longest first, so 7-5325 wins over a shorter prefix.
_PUBLISHER_PREFIXES = sorted(["7-02", "7-03", "7-04", "7-100", "7-101", "7-108", "7-111",
                              "7-117", "7-118", "7-121", "7-300", "7-301", "7-302", "7-307",
                              "7-309", "7-5097", "7-5197", "7-5325"], key=len, reverse=True)


def _name(rng: random.Random) -> str:
    s, g, _, _ = person(rng)
    return s + g


# --- supplying libraries --------------------------------------------------------------------

class Supplier:
    def __init__(self, world: World, agency: Agency, client: AgencyClient) -> None:
        self.world = world
        self.agency = agency
        self.client = client
        self.profile: Profile = world.network.profiles[agency.symbol]
        self.jobs: dict[tuple[str, str], Job] = {}
        self.rng = random.Random(f"{world.network.seed}/{agency.symbol}")

    async def handle(self, msg: Received) -> None:
        w = self.world
        content = msg.content if isinstance(msg.body, dict) else {}
        if msg.kind == "supplyingAgencyMessageConfirmation":
            if content.get("confirmationHeader", {}).get("messageStatus") != "OK":
                error = (content.get("errorData") or {}).get("errorValue", "")
                w.stats.errors.append(f"{self.agency.base} message refused: {error}")
            return
        header = content.get("header", {})
        key = (symbol_of(header.get("requestingAgencyId")) or "",
               header.get("requestingAgencyRequestId", ""))
        if msg.kind == "request":
            w.stats.forwarded += 1
            kind = ((content.get("hubExtensions") or {}).get("serviceKind")
                    or ("BookLoan" if content.get("serviceInfo", {}).get("serviceType") == "Loan"
                        else "DocumentDelivery"))
            job = Job(transaction=msg.headers.get("hub-transaction-id", ""),
                      requester=header.get("requestingAgencyId", {}), request_id=key[1],
                      body=msg.body, kind=kind,
                      retry=content.get("serviceInfo", {}).get("requestType") == "Retry")
            self.jobs[key] = job
            w.tasks.spawn(self._work(job), f"{self.agency.base} working on a request")
            return
        job = self.jobs.get(key)
        action = content.get("action")
        if job is None:
            return  # e.g. a requester's Received for a copy: nothing to do
        if action == "Cancel":
            relayed = "hub-original-message-id" in msg.headers
            already = job.cancelled
            job.cancelled = True
            # The requester's own Cancel, relayed: answer it. The hub's Cancel after a
            # deadline needs no answer (the request has moved on).
            if relayed and not job.silent and not job.delivered and not already:
                await self._say(job, "Cancelled", "CancelResponse", answerYesNo="Y")
        elif action == "ShippedReturn":
            w.tasks.spawn(self._book_back(job), f"{self.agency.base} awaiting a return")
        elif action == "Renew":
            await self._say(job, "Loaned", "RenewResponse", answerYesNo="Y",
                            due=later_iso(42))

    def _holds(self, job: Job) -> bool:
        """Whether the item is really on this library's shelves (not only in its catalogue)."""
        listed_items = self.world.network.holdings.get(self.agency.symbol, set())
        items = [i for i in identifiers_of(job.body) if i[0] != "title_key"]
        listed = any(i in listed_items for i in items)
        item = items[0] if items else ("title", job.request_id)
        chance = random.Random(f"{self.world.network.seed}/{self.agency.symbol}/{item}").random()
        return chance < (self.profile.accuracy if listed else self.profile.unlisted)

    async def _work(self, job: Job) -> None:
        w, p, rng = self.world, self.profile, self.rng
        if not job.retry and rng.random() < p.silent:
            job.silent = True  # never answers: the hub's deadline moves the request on
            return
        answer = rng.uniform(*p.answer_hours)
        if not job.retry and not self._holds(job):
            await w.clock.sleep(answer)
            await self._say(job, "Unfilled", "RequestResponse", answerYesNo="N",
                            reasonUnfilled="NotHeld", note="馆藏记录有误，实际未收藏")
            return
        if not job.retry and rng.random() > p.fill:
            await w.clock.sleep(answer)
            why = rng.choice(["NotOnShelf", "InUse"] if job.kind == "BookLoan"
                             else ["NotOnShelf", "NotAvailableForILL"])
            await self._say(job, "Unfilled", "RequestResponse", answerYesNo="N",
                            reasonUnfilled=why)
            return
        if not job.retry and job.kind == "DocumentDelivery" and rng.random() < p.cost_retry:
            await w.clock.sleep(answer)
            await self._offer_retry(job)
            return
        low, high = p.turnaround_hours
        turnaround = rng.triangular(low, high, low + (high - low) * 0.3)
        answer = min(answer, turnaround / 2)
        await w.clock.sleep(answer)
        await self._say(job, "WillSupply", "RequestResponse", answerYesNo="Y")
        await w.clock.sleep(turnaround - answer)
        if job.kind == "BookLoan":
            await self._say(job, "Loaned", "StatusChange", due=later_iso(35), delivery={
                "dateSent": now_iso(), "sentVia": "EMS",
                "itemId": f"{rng.randint(10**11, 10**12 - 1)}"})
        else:
            name = f"{job.transaction or uuid.uuid4().hex}.pdf"
            pdf = document_pdf(job.body, self.agency, w.names)
            await asyncio.get_running_loop().run_in_executor(w.executor, partial(
                ftp_upload, w.ftp, self.agency.symbol, w.passwords[self.agency.symbol], name,
                pdf))
            w.stats.uploads += 1
            await self._say(job, "CopyCompleted", "StatusChange", delivery={
                "dateSent": now_iso(), "sentVia": "FTP", "itemId": name,
                "deliveredFormat": "PDF"})
        job.delivered = True

    async def _offer_retry(self, job: Job) -> None:
        """The article is longer than the citation said: offer it at the price of its pages."""
        bib = job.body["request"]["bibliographicInfo"]
        m = PAGES.search(bib.get("pagesRequested") or "")
        start, end = (int(m[1]), int(m[2])) if m else (1, 10)
        end += self.rng.randint(15, 40)
        async with self.world.pool.acquire() as conn:
            quoted = await quotes(conn, [self.agency.symbol], "DocumentDelivery",
                                  pages=end - start + 1, on=datetime.now(UTC).date())
        price = quoted.get(self.agency.symbol)
        offered = price.to_costs() if price else {"currencyCode": "CNY",
                                                  "monetaryValue": "20.00"}
        await self._say(job, "RetryPossible", "RequestResponse", answerYesNo="N",
                        reasonRetry="CostExceedsMaxCost", offeredCosts=offered,
                        note=f"原文实际页码 {start}-{end}，费用超出读者预算")

    async def _book_back(self, job: Job) -> None:
        w = self.world
        await w.clock.sleep(w.span("courier_hours", (20, 60)))
        await self._say(job, "LoanCompleted", "StatusChange")

    async def _say(self, job: Job, status: str, reason: str, *, due: str | None = None,
                   delivery: dict[str, Any] | None = None, **info: Any) -> None:
        if job.cancelled and status not in ("Cancelled", "LoanCompleted"):
            return
        status_info: dict[str, Any] = {"status": status, "lastChange": now_iso()}
        if due:
            status_info["dueDate"] = due
        body: dict[str, Any] = {"supplyingAgencyMessage": {
            "header": {"supplyingAgencyId": agency_id(self.agency.symbol),
                       "requestingAgencyId": job.requester, "timestamp": now_iso(),
                       "requestingAgencyRequestId": job.request_id},
            "messageInfo": {"reasonForMessage": reason, **info},
            "statusInfo": status_info}}
        if delivery:
            body["supplyingAgencyMessage"]["deliveryInfo"] = delivery
        await self.client.send("supplyingAgencyMessage", body)


# --- FTP, mail, PDF ---------------------------------------------------------------------

def ftp_upload(server: tuple[str, int], user: str, password: str, name: str,
               content: bytes) -> None:
    """Upload one file to the supplier's FTP home (blocking: run it in a thread)."""
    ftp = ftplib.FTP(timeout=30, encoding="utf-8")
    try:
        ftp.connect(*server)
        ftp.login(user, password)
        ftp.storbinary(f"STOR {name}", io.BytesIO(content))
        ftp.quit()
    finally:
        ftp.close()


class MailFolder:
    """aiosmtpd handler: every accepted mail becomes one .eml file, then `on_mail`."""

    def __init__(self, folder: Path, on_mail: Callable[[bytes], None]) -> None:
        self.folder = folder
        self.on_mail = on_mail
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        raw = bytes(envelope.content)
        rcpt = re.sub(r"[^A-Za-z0-9@._-]", "_", (envelope.rcpt_tos or ["unknown"])[0])
        _write(self.folder / f"{self.count:05d}-{rcpt}.eml", raw)
        self.on_mail(raw)
        return "250 OK: kept in the demo's mail folder"


def _write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


async def start_mail_folder(folder: Path, on_mail: Callable[[bytes], None], port: int = 0
                            ) -> tuple[asyncio.Server, int]:
    """An SMTP server on loopback (a free port unless `port` is given), in this event loop."""
    handler = MailFolder(folder, on_mail)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="illhub-demo.localhost", data_size_limit=50_000_000),
        "127.0.0.1", port)
    return server, int(server.sockets[0].getsockname()[1])


def document_pdf(message: dict[str, Any], supplier: Agency, names: dict[str, str]) -> bytes:
    """A small, valid one-page PDF: the 'scanned' article with its citation."""
    req = message.get("request", {})
    bib = req.get("bibliographicInfo", {})
    requester = symbol_of(req.get("header", {}).get("requestingAgencyId")) or ""
    cjk_lines = [(18, bib.get("titleOfComponent") or bib.get("title") or "文献"),
                 (12, bib.get("authorOfComponent") or bib.get("author") or ""),
                 (12, f"{bib.get('title', '')}  第{bib.get('volume', '-')}卷 "
                      f"第{bib.get('issue', '-')}期  页码 {bib.get('pagesRequested', '-')}"),
                 (11, f"提供馆：{supplier.name}    申请馆：{names.get(requester, requester)}"),
                 (11, "本文件由 ILL Hub 演示系统生成，仅供演示文献传递流程。")]
    filler = ("馆际互借与文献传递是图书馆资源共享的重要方式。" * 3)
    cjk_lines += [(10.5, filler[i:i + 38]) for i in range(0, len(filler), 38)]
    ids = ", ".join(i.get("bibliographicItemIdentifier", "") for i in
                    bib.get("bibliographicItemId") or [])
    ascii_lines = [f"ILL Hub demo - document delivery - {ids}",
                   f"Supplied {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by {supplier.base}"]
    return make_pdf(cjk_lines, ascii_lines, title=str(cjk_lines[0][1]))


def _pdf_text(text: str) -> str:
    return "(" + text.encode("latin-1", "replace").decode("latin-1").replace(
        "\\", "\\\\").replace("(", "\\(").replace(")", "\\)") + ")"


def _pdf_hex(text: str) -> str:
    return "<" + text.encode("utf-16-be", "replace").hex().upper() + ">"


def make_pdf(cjk_lines: list[tuple[float, str]], ascii_lines: list[str], *,
             title: str = "") -> bytes:
    """A PDF 1.4 page with Chinese lines (Adobe's STSong-Light, not embedded: every
    PDF reader has it or a substitute) and Latin lines in Helvetica."""
    ops = ["BT", "/F1 9 Tf", "56 800 Td", f"{_pdf_text(ascii_lines[0])} Tj", "ET"]
    y = 760.0
    for size, line in cjk_lines:
        if line:
            ops += ["BT", f"/F2 {size:g} Tf", f"56 {y:.0f} Td", f"{_pdf_hex(line)} Tj", "ET"]
        y -= size * 1.9
    for line in ascii_lines[1:]:
        ops += ["BT", "/F1 9 Tf", f"56 {y - 10:.0f} Td", f"{_pdf_text(line)} Tj", "ET"]
        y -= 14
    stream = "\n".join(ops).encode("latin-1")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 5 0 R /F2 6 0 R >> >> /Contents 4 0 R >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type0 /BaseFont /STSong-Light /Encoding /UniGB-UCS2-H "
        b"/DescendantFonts [7 0 R] >>",
        b"<< /Type /Font /Subtype /CIDFontType0 /BaseFont /STSong-Light "
        b"/CIDSystemInfo << /Registry (Adobe) /Ordering (GB1) /Supplement 2 >> "
        b"/FontDescriptor 8 0 R /DW 1000 /W [1 95 500] >>",
        b"<< /Type /FontDescriptor /FontName /STSong-Light /Flags 6 "
        b"/FontBBox [-25 -254 1000 880] /ItalicAngle 0 /Ascent 880 /Descent -120 "
        b"/CapHeight 880 /StemV 93 >>",
        ("<< /Title " + _pdf_hex("\ufeff" + title)
         + f" /Producer (ILL Hub demo) /CreationDate (D:{datetime.now(UTC):%Y%m%d%H%M%S}Z) >>"
         ).encode("latin-1"),
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for n, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + obj + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % off for off in offsets)
    out += (b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n"
            % (len(objects) + 1, len(objects), xref))
    return bytes(out)


__all__ = ["Ask", "Job", "SimClock", "Stats", "World", "document_pdf", "make_pdf",
           "start_mail_folder"]
