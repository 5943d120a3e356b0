"""Simulated time: simulated hours since the start, at `speed` simulated seconds a second."""

from __future__ import annotations

import asyncio
import time


class SimClock:
    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.started = time.monotonic()

    def hours(self) -> float:
        return (time.monotonic() - self.started) * self.speed / 3600

    def seconds(self, hours: float) -> float:
        """Real seconds for `hours` simulated hours."""
        return hours * 3600 / self.speed

    async def sleep(self, hours: float) -> None:
        await asyncio.sleep(max(0.0, self.seconds(hours)))
