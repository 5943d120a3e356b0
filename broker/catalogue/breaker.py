"""The circuit breaker of one catalogue: a slow or dead catalogue is not asked again
on every request.

Closed: every lookup goes out; `threshold` failures in a row (error, timeout, SRU
diagnostic) open it. Open: no lookup for `cooldown` seconds, the answer is immediate.
Then half-open: one lookup goes out; its success closes the breaker, its failure opens
it again for another cool-down. Written here rather than taken from a library: the
maintained ones (pybreaker, aiobreaker) wrap the call and raise their own errors, where
routing wants a reason to print and a clock it can hand in tests; this is the whole
state machine.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from enum import StrEnum


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


class Breaker:
    def __init__(self, threshold: int, cooldown_seconds: float,
                 clock: Callable[[], datetime]) -> None:
        if threshold < 1:
            raise ValueError("a breaker opens after at least one failure")
        self.threshold = threshold
        self.cooldown = cooldown_seconds
        self.clock = clock
        self.failures = 0
        self.opened_at: datetime | None = None
        self.trial = False  # half-open: the one lookup let through is in flight

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return State.CLOSED
        if self.trial or self._cooled():
            return State.HALF_OPEN
        return State.OPEN

    def _cooled(self) -> bool:
        return (self.opened_at is not None
                and (self.clock() - self.opened_at).total_seconds() >= self.cooldown)

    def allow(self) -> bool:
        """May a lookup go out now? In half-open state only one at a time."""
        if self.opened_at is None:
            return True
        if not self.trial and self._cooled():
            self.trial = True
            return True
        return False

    def succeeded(self) -> None:
        self.failures, self.opened_at, self.trial = 0, None, False

    def failed(self) -> None:
        self.failures += 1
        if self.trial or self.failures >= self.threshold:
            self.opened_at, self.trial = self.clock(), False
