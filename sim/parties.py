"""The simulated agencies on the wire: one AgencyClient each, read by one task each.

Every party is a real AMQP client (`illclient.client.AgencyClient`, logged in as its
own broker user) and knows nothing of the hub's database. Delivery is at least once
in both directions: a party publishes each message under a fixed message_id until the
broker confirms it, and ignores a message_id it has already handled (and counts it).
An agency that both requests and supplies has one connection; what it reads goes to
its supplier side or its requester side by message type.

The parties themselves are sim/requesters.py and sim/suppliers.py; how they behave
is their script's (the demo's chances in sim/chance.py, the chaos harness's scenarios
in bench/).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from illclient.client import AgencyClient, Received
from schemas.settings import Settings
from sim.stats import Stats, Tasks
from sim.uploads import Server, Uploader

log = logging.getLogger(__name__)

# What a supplier reads; everything else an agency reads is for its requester side.
SUPPLIER_KINDS = frozenset({"request", "requestingAgencyMessage",
                            "supplyingAgencyMessageConfirmation"})


class Party(Protocol):
    async def handle(self, msg: Received) -> None: ...


class Parties:
    """The simulated requesters and suppliers, their connections, counters and work."""

    def __init__(self, settings: Settings, passwords: dict[str, str], *,
                 where: Callable[[], Server], names: dict[str, str] | None = None,
                 tls_ca: Path | None = None) -> None:
        self.settings = settings
        self.hub_symbol = settings.hub_symbol
        self.passwords = passwords
        self.names = names or {}              # symbol -> library name, for the PDFs
        self.stats = Stats()
        self.tasks = Tasks(self.stats)
        self.uploader = Uploader(where, passwords, ca_file=tls_ca)
        self.requesters: dict[str, Party] = {}
        self.suppliers: dict[str, Party] = {}
        self.clients: dict[str, AgencyClient] = {}
        self.seen: dict[str, set[str]] = defaultdict(set)
        self.stopping = False

    async def start(self, connecting: int = 8) -> None:
        """Connect every party (a few at a time) and start reading their queues."""
        symbols = list(dict.fromkeys([*self.requesters, *self.suppliers]))
        for symbol in symbols:
            self.clients[symbol] = AgencyClient(self.settings, symbol, self.passwords[symbol])
        gate = asyncio.Semaphore(connecting)

        async def connect(client: AgencyClient) -> None:
            async with gate:
                await client.connect()

        await asyncio.gather(*(connect(c) for c in self.clients.values()))
        for symbol in symbols:
            self.tasks.spawn(self._inbox(symbol), f"{symbol} inbox")

    async def stop(self) -> None:
        self.stopping = True
        await self.tasks.cancel_all()
        await asyncio.gather(*(c.close() for c in self.clients.values()),
                             return_exceptions=True)
        await self.uploader.close()

    async def send(self, symbol: str, kind: str, body: dict[str, Any],
                   message_id: str | None = None) -> None:
        """Publish until the broker confirms, under the same message_id every time."""
        message_id = message_id or str(uuid.uuid4())
        delay = 0.2
        while True:
            try:
                await asyncio.wait_for(self.clients[symbol].send(kind, body,
                                                                 message_id=message_id), 15)
                return
            except Exception as exc:  # a broker restart, a closed channel, a timeout
                if self.stopping:
                    return
                self.stats.send_retries += 1
                log.info("%s: publish of %s failed (%s); again", symbol, message_id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 3.0)

    async def _inbox(self, symbol: str) -> None:
        """One library system reading its queue, as requester and as supplier."""
        client = self.clients[symbol]
        seen = self.seen[symbol]
        while True:
            msg = await client.inbox.get()
            if msg.message_id:
                if msg.message_id in seen:
                    self.stats.redelivered += 1
                    continue
                seen.add(msg.message_id)
            party = self._party(symbol, msg.kind or "")
            if party is None:
                self.stats.problems.append(f"{symbol} got an unexpected {msg.kind}")
                continue
            try:
                await party.handle(msg)
            except Exception as exc:
                log.warning("simulation: %s could not handle %s", symbol, msg.kind,
                            exc_info=True)
                self.stats.problems.append(f"{symbol} handling {msg.kind}: "
                                           f"{type(exc).__name__}: {exc}")

    def _party(self, symbol: str, kind: str) -> Party | None:
        supplier = self.suppliers.get(symbol)
        requester = self.requesters.get(symbol)
        if supplier is not None and (kind in SUPPLIER_KINDS or requester is None):
            return supplier
        return requester
