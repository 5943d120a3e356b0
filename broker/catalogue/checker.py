"""Catalogues: ask the candidates' catalogues, all at once, within one time budget.

Lives as long as the hub process (the dispatcher's Desk holds it; app/hub.py closes it):
the HTTP session, the cache of answers and one circuit breaker per catalogue. Every
outcome is an Availability, never an exception: a failed, slow or refused lookup is
`Availability(None, why)` and routing goes on without it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime

import aiohttp
from cachetools import TLRUCache

from broker.catalogue import cql
from broker.catalogue.breaker import Breaker
from broker.catalogue.config import CatalogueConfig
from broker.catalogue.records import SruError, availability, parse_response
from broker.policy import Availability
from schemas.settings import Catalogues as CatalogueSettings

log = logging.getLogger(__name__)

# An SRU answer for one item is a few kilobytes; a catalogue sending more is cut off.
MAX_RESPONSE_BYTES = 2 * 1024 * 1024
MAX_RECORDS = 10
# The whole check waits this much past the budget, so that a lookup's own timeout (at
# the budget) ends it with its own reason first.
MARGIN_SECONDS = 0.05

Key = tuple[str, str, str, tuple[tuple[str, str], ...]]


def _now() -> datetime:
    return datetime.now(UTC)


class Catalogues:
    def __init__(self, settings: CatalogueSettings,
                 clock: Callable[[], datetime] = _now) -> None:
        self.settings = settings
        self.clock = clock
        self._session: aiohttp.ClientSession | None = None
        self._breakers: dict[str, Breaker] = {}
        # Every answer read from a record (available, not, no record) expires after
        # cache_seconds; failures are not cached (the breaker counts them).
        self._cache: TLRUCache[Key, Availability] = TLRUCache(
            maxsize=settings.cache_size,
            ttu=lambda _key, _value, now: now + settings.cache_seconds,
            timer=lambda: self.clock().timestamp())
        self.lookups = 0  # lookups that went out (tests, and a figure for benchmarks)

    def breaker(self, symbol: str) -> Breaker:
        b = self._breakers.get(symbol)
        if b is None:
            b = self._breakers[symbol] = Breaker(self.settings.breaker_failures,
                                                 self.settings.breaker_cooldown_seconds,
                                                 self.clock)
        return b

    def _http(self) -> aiohttp.ClientSession:
        # Made on first use, inside the running loop (a Desk is built before one runs).
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=None),
                headers={"User-Agent": "ILL-Hub catalogue check"})
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def check(self, configs: Iterable[CatalogueConfig],
                    ids: Iterable[tuple[str, str]]) -> dict[str, Availability]:
        """Each enabled catalogue's answer for the item, within settings.budget_ms in
        all: what has not answered by then is `None`, "no answer within N ms"."""
        wanted = [c for c in configs if c.enabled]
        if not wanted:
            return {}
        ids = list(ids)
        budget = self.settings.budget_ms
        tasks = {c.symbol: asyncio.create_task(self._one(c, ids, min(c.budget_ms or budget,
                                                                       budget)))
                 for c in wanted}
        # Each lookup keeps its own budget; this wait is the bound for the whole check
        # (a lookup stuck past its own timeout, e.g. in a slow DNS resolver thread).
        done, pending = await asyncio.wait(tasks.values(), timeout=budget / 1000 + MARGIN_SECONDS)
        for task in pending:
            task.cancel()
        answers: dict[str, Availability] = {}
        for symbol, task in tasks.items():
            if task in done and not task.cancelled() and task.exception() is None:
                answers[symbol] = task.result()
            else:
                self.breaker(symbol).failed()
                answers[symbol] = Availability(None, f"catalogue: no answer within {budget} ms")
        return answers

    async def _one(self, c: CatalogueConfig, ids: list[tuple[str, str]],
                   budget_ms: int) -> Availability:
        pairs = cql.terms(ids, c.indexes)
        if not pairs:
            have = ", ".join(sorted({t for t, _ in ids})) or "none"
            return Availability(None, "catalogue not asked: it has no index for the item's "
                                      f"identifiers ({have})")
        key: Key = (c.symbol, c.sru_url, c.record_schema, tuple(pairs))
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        breaker = self.breaker(c.symbol)
        if not breaker.allow():
            since = breaker.opened_at or self.clock()
            return Availability(None, "catalogue not asked: circuit open since "
                                      f"{since.astimezone(UTC):%Y-%m-%d %H:%M:%SZ} after "
                                      f"{breaker.failures} failures")
        asked = " or ".join(f"{t} {v}" for t, v in ids if t in c.indexes)
        try:
            async with asyncio.timeout(budget_ms / 1000):
                answer = parse_response(await self._fetch(c, cql.query(pairs)))
        except TimeoutError:
            breaker.failed()
            return Availability(None, f"catalogue: no answer within {budget_ms} ms")
        except (aiohttp.ClientError, OSError, SruError) as exc:
            breaker.failed()
            log.info("catalogue of %s: %s", c.symbol, exc)
            return Availability(None, f"catalogue not reached: {_short(exc)}")
        try:
            result = availability(c, answer, asked)
        except SruError as exc:
            breaker.failed()
            return Availability(None, f"catalogue answer not read: {_short(exc)}")
        breaker.succeeded()
        self._cache[key] = result
        return result

    async def _fetch(self, c: CatalogueConfig, query: str) -> bytes:
        params: Mapping[str, str] = {
            "operation": "searchRetrieve", "version": c.sru_version, "query": query,
            "recordSchema": c.record_schema, "maximumRecords": str(MAX_RECORDS),
            # SRU 2.0 renamed recordPacking (xml | string) to recordXMLEscaping.
            ("recordXMLEscaping" if c.sru_version == "2.0" else "recordPacking"): "xml"}
        self.lookups += 1
        async with self._http().get(c.sru_url, params=params) as response:
            if response.status != 200:
                raise SruError(f"HTTP {response.status} {response.reason or ''}".strip())
            body = await response.content.read(MAX_RESPONSE_BYTES + 1)
            if len(body) > MAX_RESPONSE_BYTES:
                raise SruError(f"answer larger than {MAX_RESPONSE_BYTES} bytes")
            return body


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."
