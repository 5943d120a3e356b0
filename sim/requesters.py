"""A requesting library's ILL system: it sends requests and actions and keeps its books.

What it records of each request (`Ask`) is what the demo's progress line counts and
what the chaos harness checks the hub's database against: every status the
supplier sent, who supplied, the hub's transaction id, refusals and the final state.
How the library reacts to what comes back (borrowing, renewing, retrying at a higher
cost, cancelling) is its script's: `RequesterScript`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from illclient.client import Received
from sim.messages import TERMINAL, error_value, is_ok, requesting_message, symbol_of
from sim.parties import Parties

# The first status of these kinds decides how the request turned out (each outcome is
# also the name of its counter in `Stats`).
OUTCOMES = {"CopyCompleted": "filled", "Loaned": "filled", "Unfilled": "unfilled",
            "Cancelled": "cancelled"}


@dataclass
class Ask:
    """One request as the requesting library's ILL system keeps it."""

    request_id: str
    requester: str
    kind: str = ""                   # DocumentDelivery | BookLoan | PayPerView ...
    body: dict[str, Any] = field(default_factory=dict, repr=False)
    max_cost: Decimal | None = None
    origin: str = ""                 # the first request id of a retry chain
    retries: int = 0
    sent_at: float = field(default_factory=time.monotonic)
    state: str = "Sent"
    statuses: list[str] = field(default_factory=list)
    supplier: str | None = None      # who supplies, as the supplier's own message says
    transaction: str | None = None   # the hub's id for it
    confirmed: bool = False
    refused: str | None = None       # the hub's ERROR answer to the request or an action
    outcome: str | None = None       # filled, unfilled, cancelled, refused, retried
    final: str | None = None         # the terminal status, or Refused
    finished_at: float | None = None

    def __post_init__(self) -> None:
        self.origin = self.origin or self.request_id

    def first(self, status: str) -> bool:
        """Whether the status just recorded is the first of its kind."""
        return self.statuses.count(status) == 1


class RequesterScript:
    """How a requesting library reacts; this one only keeps its books."""

    async def on_status(self, requester: Requester, ask: Ask, status: str,
                        info: dict[str, Any]) -> None:
        """A supplier's status about `ask`, already recorded; `info` is its messageInfo."""

    async def on_refused(self, requester: Requester, ask: Ask) -> None:
        """The hub refused the request `ask`."""

    def on_final(self, requester: Requester, ask: Ask) -> None:
        """`ask` reached its final state (`ask.final`)."""


class Requester:
    def __init__(self, parties: Parties, symbol: str, script: RequesterScript | None = None,
                 *, label: str | None = None) -> None:
        self.parties = parties
        self.symbol = symbol
        self.label = label or symbol
        self.script = script or RequesterScript()
        self.asks: dict[str, Ask] = {}
        parties.requesters[symbol] = self

    async def request(self, ask: Ask, body: dict[str, Any]) -> None:
        """Send a new request (or a Retry: `ask.retries` > 0) and keep its record."""
        self.asks[ask.request_id] = ask
        if ask.retries:
            self.parties.stats.retries += 1
        else:
            self.parties.stats.sent += 1
        await self.parties.send(self.symbol, "request", body, f"{ask.request_id}/request")

    async def action(self, ask: Ask, action: str, note: str | None = None) -> None:
        body = requesting_message(self.symbol, ask.supplier or self.parties.hub_symbol,
                                  ask.request_id, action, note)
        await self.parties.send(self.symbol, "requestingAgencyMessage", body,
                                f"{ask.request_id}/{action}")

    def finish(self, ask: Ask, state: str) -> None:
        if ask.final is None:
            ask.final = state
            ask.finished_at = time.monotonic()
            self.script.on_final(self, ask)
        elif ask.final != state:
            self.parties.stats.problems.append(f"{ask.request_id}: {state} after {ask.final}")

    # ---- what comes back ----------------------------------------------------------------

    async def handle(self, msg: Received) -> None:
        content = msg.content if isinstance(msg.body, dict) else {}
        if msg.kind in ("requestConfirmation", "requestingAgencyMessageConfirmation"):
            await self._confirmation(msg, content)
            return
        if msg.kind != "supplyingAgencyMessage":
            self.parties.stats.problems.append(f"{self.label} got an unexpected {msg.kind}")
            return
        header = content.get("header", {})
        ask = self.asks.get(header.get("requestingAgencyRequestId", ""))
        if ask is None:
            self.parties.stats.problems.append(f"{self.label}: news about an unknown request")
            return
        status = content.get("statusInfo", {}).get("status", "")
        info = content.get("messageInfo", {})
        ask.statuses.append(status)
        ask.transaction = ask.transaction or msg.headers.get("hub-transaction-id")
        supplier = symbol_of(header.get("supplyingAgencyId"))
        if supplier and supplier != self.parties.hub_symbol:
            ask.supplier = supplier
        self._record(ask, status, info.get("reasonForMessage"))
        await self.script.on_status(self, ask, status, info)
        if status in TERMINAL:
            self.finish(ask, status)

    def _record(self, ask: Ask, status: str, reason: str | None) -> None:
        stats = self.parties.stats
        if status == "ExpectToSupply" and reason == "Notification":
            stats.moved_on += 1
        if status == "Loaned" and not ask.first(status):
            return  # a renewal: the loan goes on
        ask.state = status
        outcome = OUTCOMES.get(status)
        if outcome and ask.outcome is None:
            ask.outcome = outcome
            setattr(stats, outcome, getattr(stats, outcome) + 1)
        if status == "LoanCompleted":
            stats.returned += 1

    async def _confirmation(self, msg: Received, content: dict[str, Any]) -> None:
        stats = self.parties.stats
        header = content.get("confirmationHeader", {})
        ask = self.asks.get(header.get("requestingAgencyRequestId") or msg.correlation_id or "")
        if ask is None:
            stats.problems.append(f"{self.label}: a confirmation of an unknown request")
            return
        is_request = msg.kind == "requestConfirmation"
        if is_request:
            stats.lag = 0.8 * stats.lag + 0.2 * (time.monotonic() - ask.sent_at)
            stats.lag_at = time.monotonic()
        if is_ok(content):
            if is_request and not ask.confirmed:
                ask.confirmed = True
                stats.confirmed += 1
            ask.transaction = ask.transaction or msg.headers.get("hub-transaction-id")
            return
        error = error_value(content)
        ask.refused = f"{msg.kind}: {error}"
        if not is_request:
            stats.errors.append(f"{self.label} action refused: {error}")
            return
        stats.refused += 1
        stats.errors.append(f"request refused: {error}")
        ask.outcome = "refused"
        await self.script.on_refused(self, ask)
        self.finish(ask, "Refused")
