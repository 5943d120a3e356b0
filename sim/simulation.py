"""A simulation's cast: the agencies (sim/parties.py) and the readers (sim/readers.py),
counted together, started and stopped together. The demo's world (sim/world.py) and
the chaos harness's (bench/chaos_scenarios.py) are one each, with their own scripts."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from pathlib import Path

from schemas.settings import Settings
from sim.parties import Parties
from sim.readers import Readers, Reading, download_once
from sim.stats import Stats, Tasks
from sim.uploads import Server


class Simulation:
    def __init__(self, settings: Settings, passwords: dict[str, str], *,
                 where: Callable[[], Server], names: dict[str, str] | None = None,
                 reading: Reading = download_once, locate: Callable[[str], str] = str,
                 http_timeout: float = 30.0, tls_ca: Path | None = None) -> None:
        # tls_ca: the CA of the hub's certificate; suppliers then upload over FTPS and
        # readers verify the https:// links with it (run.py demo --tls).
        self.parties = Parties(settings, passwords, where=where, names=names, tls_ca=tls_ca)
        self.readers = Readers(self.parties.tasks, self.parties.stats, reading=reading,
                               locate=locate, timeout=http_timeout,
                               tls=ssl.create_default_context(cafile=str(tls_ca))
                               if tls_ca else None)

    @property
    def stats(self) -> Stats:
        return self.parties.stats

    @property
    def tasks(self) -> Tasks:
        return self.parties.tasks

    def on_mail(self, raw: bytes) -> None:
        """A mail the hub sent (caught by sim/mailcatcher.py): a reader may click it."""
        self.readers.on_mail(raw)

    async def start(self) -> None:
        await self.readers.start()
        await self.parties.start()

    def stop_new_work(self) -> None:
        """From now on nobody starts anything new (the hub is about to stop)."""
        self.parties.stopping = self.readers.stopping = True

    async def stop(self) -> None:
        self.stop_new_work()
        await self.parties.stop()
        await self.readers.stop()
