"""The chaos harness's scenarios: sim's libraries and suppliers, scripted, and their books.

The parties are the simulation's own (sim/parties.py, sim/requesters.py,
sim/suppliers.py, sim/readers.py: real AMQP clients, each its own broker user,
sending at least once and ignoring repeats). Unlike the demo's world (sim/world.py),
whose parties act by chance, here every request carries its scenario in its id, so
the harness knows the state each request must end in, and the parties act on it.
The suppliers upload to any live hub's FTP drop and readers download from any live
hub (the grants are in the shared database). What each party saw (`ChaosAsk`, each
supplier's `SupplierBook`, the readers' `MailBook`, the shared `Stats`) is what
bench/chaos_checks.py checks the database against.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from schemas.settings import Settings
from sim.identifiers import isbn13_of, issn_of
from sim.messages import agency_id, now_iso
from sim.readers import MailBook
from sim.requesters import Ask, Requester, RequesterScript
from sim.simulation import Simulation
from sim.suppliers import Job, Supplier, SupplierBook, SupplierScript
from sim.uploads import Server

# What each scenario must end in, and the item it asks for.
SCENARIOS: dict[str, tuple[str, str]] = {
    "copy": ("CopyCompleted", "copy"),          # supplied over FTP, the reader mailed
    "loan": ("LoanCompleted", "loan"),          # lent, received, returned
    "unfilled": ("CopyCompleted", "copy"),      # first supplier Unfilled, the next supplies
    "silent": ("CopyCompleted", "copy"),        # first supplier silent past its deadline
    "cancel": ("Cancelled", "copy"),            # the requester cancels, the supplier agrees
}
PAGES = 10                                       # every copy asks for pages 1-10
ITEMS = 40                                       # journals and books, every supplier holds all


def scenario_of(request_id: str) -> str:
    return request_id.rsplit("-", 1)[1]


def issn(n: int) -> str:
    return issn_of(1000 + n)


def isbn13(n: int) -> str:
    return isbn13_of(n)


def holdings_csv(suppliers: list[str]) -> str:
    """Every supplier holds every item."""
    lines = ["symbol,id_type,id_value"]
    for s in suppliers:
        lines += [f"{s},issn,{issn(n)}" for n in range(ITEMS)]
        lines += [f"{s},isbn,{isbn13(n)}" for n in range(ITEMS)]
    return "\n".join(lines) + "\n"


@dataclass
class ChaosAsk(Ask):
    scenario: str = ""
    email: str | None = None         # the reader's, for copies

    @property
    def expected(self) -> str:
        return SCENARIOS[self.scenario][0]


class ScenarioRequester(RequesterScript):
    """Cancels a `cancel` request once a supplier has it; returns a lent book at once."""

    def __init__(self, window: asyncio.Semaphore) -> None:
        self.window = window            # requests open at once

    async def on_status(self, requester: Requester, ask: Ask, status: str,
                        info: dict[str, Any]) -> None:
        scenario = scenario_of(ask.request_id)
        if status == "ExpectToSupply" and scenario == "cancel" and ask.first(status):
            await requester.action(ask, "Cancel")
        elif status == "Loaned" and ask.first(status):
            # Back to back: the hub must apply them in this order.
            await requester.action(ask, "Received")
            await requester.action(ask, "ShippedReturn")

    def on_final(self, requester: Requester, ask: Ask) -> None:
        self.window.release()


class ScenarioSupplier(SupplierScript):
    """Answers at once, as the request's scenario and its place in the rota say."""

    async def work(self, supplier: Supplier, job: Job) -> None:
        scenario = scenario_of(job.request_id)
        if scenario == "cancel":
            return  # waits for the requester's Cancel
        if scenario == "silent" and job.position == 1:
            job.silent = True  # stays silent past the deadline
            return
        if scenario == "unfilled" and job.position == 1:
            await supplier.unfilled(job, "NotOnShelf")
        elif SCENARIOS[scenario][1] == "loan":
            await supplier.lend(job, due_days=30,
                                item_id=f"EMS{abs(hash(job.transaction)) % 10**10:010d}")
        else:
            await supplier.deliver_copy(job)


class Hubs:
    """Where the parties find a live hub's FTP drop and download gateway."""

    def __init__(self, ftp_ports: list[int], http_ports: list[int],
                 serving: Callable[[int], bool], alive: Callable[[int], bool]) -> None:
        self.ftp_ports = ftp_ports
        self.http_ports = http_ports
        self.serving = serving
        self.alive = alive

    def pick(self, rng: random.Random) -> int:
        """A hub whose servers listen; one still starting only when none does (a
        restart takes seconds on a loaded machine, and uploads sent there queued up
        behind refused connections until suppliers missed their deadlines)."""
        every = range(len(self.ftp_ports))
        live = [i for i in every if self.serving(i)] or [i for i in every if self.alive(i)]
        return rng.choice(live or list(every))


class ChaosWorld(Simulation):
    """The simulated parties around the hubs, and everything they recorded."""

    def __init__(self, settings: Settings, passwords: dict[str, str], requesters: list[str],
                 suppliers: list[str], hubs: Hubs, *, seed: int, window: int) -> None:
        self.hubs = hubs
        self.rng = random.Random(seed)
        super().__init__(settings, passwords, where=self._ftp, locate=self._locate,
                         http_timeout=20.0)
        self.window = asyncio.Semaphore(window)     # requests open at once
        self.requesters = requesters
        self.suppliers = suppliers
        script = ScenarioRequester(self.window)
        self._requesters = {s: Requester(self.parties, s, script) for s in requesters}
        supplying = ScenarioSupplier()
        self._suppliers = {s: Supplier(self.parties, s, supplying) for s in suppliers}
        self.asks: dict[str, ChaosAsk] = {}

    @property
    def books(self) -> dict[str, SupplierBook]:
        return {s: p.book for s, p in self._suppliers.items()}

    @property
    def mail(self) -> MailBook:
        return self.readers.book

    def _ftp(self) -> Server:
        return "127.0.0.1", self.hubs.ftp_ports[self.hubs.pick(self.rng)]

    def _locate(self, link: str) -> str:
        # Any hub serves any link: the grants are in the shared database.
        port = self.hubs.http_ports[self.hubs.pick(self.rng)]
        parts = urlsplit(link)
        return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))

    # ---- requests --------------------------------------------------------------------

    def new_request(self, seq: int, scenario: str) -> tuple[ChaosAsk, dict[str, Any]]:
        requester = self.requesters[seq % len(self.requesters)]
        request_id = f"{seq:07d}-{scenario}"
        item = SCENARIOS[scenario][1]
        email = f"reader{seq:07d}@readers.example" if item == "copy" else None
        level = "Express" if scenario == "silent" else "Normal"
        service: dict[str, Any] = {"requestType": "New", "serviceLevel": level,
                                   "serviceType": "Copy" if item == "copy" else "Loan"}
        patron: dict[str, Any] = {"patronId": f"P{seq:07d}", "surname": "王",
                                  "givenName": f"读者{seq}"}
        if email:
            patron["address"] = [{"electronicAddress": {"electronicAddressType": "email",
                                                        "electronicAddressData": email}}]
        n = seq % ITEMS
        if item == "copy":
            bib = {"title": f"图书馆学报 第{n}卷", "titleOfComponent": f"混沌测试 {seq}",
                   "pagesRequested": f"1-{PAGES}", "bibliographicItemId": [
                       {"bibliographicItemIdentifier": issn(n),
                        "bibliographicItemIdentifierCode": "ISSN"}]}
        else:
            bib = {"title": f"馆际互借实务 第{n}版", "bibliographicItemId": [
                {"bibliographicItemIdentifier": isbn13(n),
                 "bibliographicItemIdentifierCode": "ISBN"}]}
        body = {"request": {
            "header": {"requestingAgencyId": agency_id(requester), "timestamp": now_iso(),
                       "requestingAgencyRequestId": request_id},
            "bibliographicInfo": bib, "serviceInfo": service, "patronInfo": patron,
            "billingInfo": {"paymentMethod": "Account",
                            "maximumCosts": {"currencyCode": "CNY", "monetaryValue": "100.00"}}}}
        ask = ChaosAsk(request_id, requester, item, body, scenario=scenario, email=email)
        self.asks[request_id] = ask
        return ask, body

    async def ask(self, seq: int, scenario: str) -> None:
        ask, body = self.new_request(seq, scenario)
        await self._requesters[ask.requester].request(ask, body)
