"""What the simulated parties counted, and their background work (no failure lost)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class Stats:
    """Counters of every party together, for progress lines and verdicts (the demo's
    summary and the chaos harness's table read the hub's database beside them)."""

    sent: int = 0               # new requests published
    retries: int = 0            # Retry requests published
    send_retries: int = 0       # publishes repeated after a broker error
    redelivered: int = 0        # a message_id seen again (at-least-once), ignored
    confirmed: int = 0          # requestConfirmation OK
    refused: int = 0            # requestConfirmation ERROR
    forwarded: int = 0          # forwards received by suppliers
    moved_on: int = 0           # Notification: the hub moved a request to the next supplier
    filled: int = 0             # CopyCompleted or Loaned seen by the requester
    unfilled: int = 0
    cancelled: int = 0
    returned: int = 0           # LoanCompleted seen by the requester
    late_refusals: int = 0      # a supplier answering after its deadline passed
    uploads: int = 0
    mails: int = 0
    downloads: int = 0
    download_failures: int = 0  # links that never answered with the PDF
    lag: float = 0.0            # recent request -> confirmation time, real seconds
    lag_at: float = 0.0         # when `lag` was last measured (time.monotonic())
    errors: list[str] = field(default_factory=list)     # hub ERROR answers
    problems: list[str] = field(default_factory=list)   # failures of the simulation itself


class Tasks:
    """Background work of the simulated parties; a failure is recorded, never lost."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats
        self.running: set[asyncio.Task[None]] = set()

    def spawn(self, coro: Coroutine[Any, Any, None], what: str) -> asyncio.Task[None]:
        task = asyncio.create_task(self._guarded(coro, what), name=what)
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return task

    async def _guarded(self, coro: Coroutine[Any, Any, None], what: str) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("simulation: %s failed", what, exc_info=True)
            self.stats.problems.append(f"{what}: {type(exc).__name__}: {exc}")

    async def cancel_all(self) -> None:
        tasks = list(self.running)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
