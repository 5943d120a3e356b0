"""A hub running in the test's event loop, and libraries talking to it over AMQP.

`hub` starts the whole hub process machinery (app.hub.Hub: intake shards, outbox
relay, FTP drop, HTTP server, mail sender, scheduled jobs) on the test's settings.
`Party` is one agency's ILL system: its AgencyClient plus assertions on what it
receives, in order.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.hub import Hub
from illclient.client import AgencyClient, Received
from schemas.settings import Settings


@pytest.fixture
async def hub(settings: Settings, database_url: str) -> AsyncIterator[Hub]:
    """A hub process's machinery running in this event loop."""
    h = Hub(settings)
    await h.start()
    yield h
    await h.stop()


class Party:
    """One agency's ILL system: its client plus what it has seen."""

    def __init__(self, symbol: str, client: AgencyClient) -> None:
        self.symbol = symbol
        self.client = client

    async def next(self, kind: str, timeout: float = 10.0) -> Received:
        """The next message of `kind`, failing on anything else in between."""
        got = await self.client.receive(timeout)
        assert got.kind == kind, f"{self.symbol} expected {kind}, got {got.kind}: {got.body}"
        return got

    async def confirmed(self, ok: bool = True) -> Received:
        """The next message is a confirmation, OK (or ERROR with ok=False)."""
        got = await self.client.receive()
        assert got.kind and got.kind.endswith("Confirmation"), got.body
        status = got.content["confirmationHeader"]["messageStatus"]
        assert status == ("OK" if ok else "ERROR"), got.body
        return got

    async def status(self, status: str, reason: str | None = None) -> Received:
        """The next message is a supplyingAgencyMessage with this status (and reason)."""
        got = await self.next("supplyingAgencyMessage")
        assert got.content["statusInfo"]["status"] == status, got.body
        if reason:
            assert got.content["messageInfo"]["reasonForMessage"] == reason, got.body
        return got

    async def send(self, kind: str, body: dict[str, Any]) -> None:
        await self.client.send(kind, body)
