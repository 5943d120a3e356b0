"""Two book loans that go wrong in the demo (issue 19): one sent back late, one lost in
transit back.

Which loans: the late one is the first loan lent with a short due date that reaches its
requester (a supplier's Loaned may be refused, after the hub's deadline moved the
request on: then the next lend tries again); the lost one is the first or the second
of the other loans the requesters receive, as the seed says, the first in a small run
(fewer than FEW_REQUESTS requests: it may have only two loans). The late loan's
supplier sets the short due date and the reader keeps the book past it; the lost
loan's parcel back never reaches the supplier, and its requester reports the loss
(`report_lost`, given by the demo: it opens the claim at the hub, which the supplier
accepts and the centre settles).

The hub keeps loans in real days while the demo's time is simulated: the short due date
is a few simulated days turned into real seconds, so the hub marks the loan Overdue
during the run, and reckons it late by when it could be back (its transit days on top).
"""

from __future__ import annotations

import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sim.clock import SimClock
from sim.requesters import Ask

# The late loan is due this many simulated hours after it was lent, and goes back this
# long after its due date.
LATE_DUE_HOURS = 72.0
LATE_BY_HOURS = 72.0
# The lost loan is one of the first this many loans received (not the late one); a
# run of fewer requests than FEW_REQUESTS takes the first.
FIRST_LOANS = 2
FEW_REQUESTS = 100
# A short due date not seen by its requester this many real seconds after it was sent
# was refused or cancelled: the next lend gets one.
PENDING_SECONDS = 5.0


class Mishap(enum.StrEnum):
    LATE = "late"
    LOST = "lost"


@dataclass
class Chosen:
    """A loan the world decided goes wrong."""

    mishap: Mishap
    lent_at: float            # simulated hours
    reported: bool = False    # the loss was reported (`report_lost` ran)


ReportLost = Callable[[Ask], Awaitable[None]]
Key = tuple[str, str]         # (requester, request id)


class LoanMishaps:
    """The world's knowledge of which loans go wrong; neither the hub nor the other
    libraries know it (the hub learns of the loss from the requester's report)."""

    def __init__(self, seed: int, clock: SimClock) -> None:
        self.clock = clock
        self.seed = seed
        self.lost_ordinal = 1
        self.plan(FEW_REQUESTS)
        self.received = 0                 # loans received, the late one aside
        self.chosen: dict[Key, Chosen] = {}
        self.pending: tuple[Key, float, float] | None = None  # key, real time, sim hours
        self.report_lost: ReportLost | None = None

    def plan(self, requests: int) -> None:
        """Which of the first loans is lost, for a run of `requests` requests."""
        first = FIRST_LOANS if requests >= FEW_REQUESTS else 1
        self.lost_ordinal = random.Random(f"{self.seed}/loan-mishaps").randint(1, first)

    def _has(self, mishap: Mishap) -> bool:
        return any(c.mishap is mishap for c in self.chosen.values())

    def short_due(self, requester: str, request_id: str) -> bool:
        """A supplier lends: whether this loan gets the short due date."""
        if self._has(Mishap.LATE):
            return False
        now = time.monotonic()
        if self.pending is not None and now - self.pending[1] < PENDING_SECONDS:
            return False
        self.pending = ((requester, request_id), now, self.clock.hours())
        return True

    def loaned(self, requester: str, request_id: str) -> Chosen | None:
        """A requester got its first Loaned: whether (and how) this loan goes wrong."""
        key = (requester, request_id)
        if self.pending is not None and self.pending[0] == key and not self._has(Mishap.LATE):
            self.chosen[key] = Chosen(Mishap.LATE, self.pending[2])
            self.pending = None
            return self.chosen[key]
        self.received += 1
        if self.received == self.lost_ordinal and not self._has(Mishap.LOST):
            self.chosen[key] = Chosen(Mishap.LOST, self.clock.hours())
            return self.chosen[key]
        return None

    def of(self, requester: str, request_id: str) -> Chosen | None:
        return self.chosen.get((requester, request_id))

    def due_days(self) -> float:
        """The late loan's due date from now, in real days (what the hub keeps)."""
        return self.clock.seconds(LATE_DUE_HOURS) / 86_400

    def ship_back_at(self, chosen: Chosen) -> float:
        """When the late loan's reader sends it back, in simulated hours."""
        return chosen.lent_at + LATE_DUE_HOURS + LATE_BY_HOURS


__all__ = [
    "FEW_REQUESTS",
    "FIRST_LOANS",
    "LATE_BY_HOURS",
    "LATE_DUE_HOURS",
    "PENDING_SECONDS",
    "Chosen",
    "LoanMishaps",
    "Mishap",
    "ReportLost",
]
