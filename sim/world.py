"""The demo's simulated world: library ILL systems, suppliers and readers around a real hub.

Each library is a party of sim/parties.py, logged in to RabbitMQ as its own broker
user; it sends and reads ISO 18626 messages exactly as a real member's system would,
and knows nothing of the hub's database. Suppliers upload real PDF files to the hub's
FTP drop; readers click the links in the mails the hub sends (caught by
sim/mailcatcher.py, which keeps every mail as a .eml file). Everyone acts by chance
(sim/chance.py), and time is simulated: `SimClock` turns simulated hours into real
seconds at the demo's --speed.
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

from schemas.settings import Settings
from sim.chance import ChanceReader, ChanceRequester, ChanceSupplier, Item, Odds
from sim.clock import SimClock
from sim.demand import Demand
from sim.mishaps import LoanMishaps
from sim.network import REQUEST_WEIGHT, Agency, Network
from sim.requesters import Ask, Requester
from sim.simulation import Simulation
from sim.suppliers import Supplier
from sim.uploads import Server


class World(Simulation):
    """Everything the simulated parties share: the network, time, counters, servers."""

    def __init__(self, network: Network, clock: SimClock, *, rng: random.Random,
                 settings: Settings, passwords: dict[str, str],
                 tls_ca: Path | None = None) -> None:
        self.network = network
        self.clock = clock
        self.odds = Odds(network.requests, rng)
        self.ftp: Server = ("127.0.0.1", 0)     # the hub's FTP drop, once it runs
        super().__init__(settings, passwords, where=lambda: self.ftp,
                         names={a.symbol: a.name for a in network.agencies},
                         reading=ChanceReader(clock, self.odds), tls_ca=tls_ca)
        # (requester, request id) -> the catalogue item asked for: the world knows it,
        # the hub reads it from the request.
        self.items: dict[tuple[str, str], Item] = {}
        # Two loans go wrong: one late, one lost (sim/mishaps.py); the demo gives
        # `mishaps.report_lost`, the requester's report of the loss to the hub.
        self.mishaps = LoanMishaps(network.seed, clock)
        self.requesting = ChanceRequester(clock, self.odds, self.mishaps)
        self.requesters: dict[str, tuple[Requester, Demand]] = {}
        for a in network.agencies:
            if "requester" in a.roles:
                self.requesters[a.symbol] = (
                    Requester(self.parties, a.symbol, self.requesting, label=a.base),
                    Demand(a, network, self.odds))
            if "supplier" in a.roles:
                Supplier(self.parties, a.symbol,
                         ChanceSupplier(a, network, clock, self.odds, self.items,
                                        self.mishaps),
                         label=a.base, name=a.name)

    async def ask(self, agency: Agency) -> None:
        """A reader of `agency` asks for something; some cancel later."""
        requester, demand = self.requesters[agency.symbol]
        wanted = demand.new()
        ask = Ask(wanted.request_id, agency.symbol, wanted.kind, wanted.body, wanted.max_cost)
        self.items[(agency.symbol, wanted.request_id)] = wanted.item
        await requester.request(ask, wanted.body)
        if self.odds.happens("cancel", 0.03):
            self.tasks.spawn(self.requesting.cancel_later(requester, ask), "reader cancels")

    async def arrivals(self, requests: int, days: float, seed: int,
                       done: asyncio.Event) -> None:
        """Requests arrive at random over `days`, from bigger libraries more often."""
        rng = random.Random(seed)
        self.mishaps.plan(requests)
        agencies = self.network.requesters
        weights = [REQUEST_WEIGHT[a.size] for a in agencies]
        times = sorted(rng.uniform(0, days * 24) for _ in range(requests))
        try:
            for at in times:
                await self.clock.sleep(at - self.clock.hours())
                await self.ask(rng.choices(agencies, weights)[0])
        finally:
            done.set()
