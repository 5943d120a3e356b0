"""The demo's parties acting by chance: the shares and ranges of docs/demo/simulation.toml.

Suppliers (`ChanceSupplier`) follow their profile: some stay silent, some find that
their holdings were wrong, some answer Unfilled, some offer the article again at the
price of its real length; the others supply after a turnaround. Requesting libraries
(`ChanceRequester`) lend books to their readers, who may renew them, and accept a
dearer retry or cancel. Readers (`ChanceReader`) read their mail after a while, some
never, some download twice. Time is the simulated clock's.
"""

from __future__ import annotations

import copy
import datetime
import math
import random
import re
from decimal import Decimal
from typing import Any

from settlement.fees import FeeTerms, parse_fees
from sim.clock import SimClock
from sim.messages import now_iso, symbol_of
from sim.mishaps import LoanMishaps, Mishap
from sim.network import Agency, Network
from sim.readers import Readers
from sim.requesters import Ask, Requester, RequesterScript
from sim.suppliers import Job, Supplier, SupplierScript

PAGES = re.compile(r"(\d+)\s*-\s*(\d+)")
# A requested item, (id_type, id_value) as in the holdings: ("issn", "1234-5678").
Item = tuple[str, str]


class Odds:
    """The [requests] shares and ranges of simulation.toml, drawn with one generator."""

    def __init__(self, spec: dict[str, Any], rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng

    def share(self, key: str, default: float) -> float:
        return float(self.spec.get(key, default))

    def happens(self, key: str, default: float) -> bool:
        return self.rng.random() < self.share(key, default)

    def span(self, key: str, default: tuple[float, float]) -> float:
        low, high = self.spec.get(key, default)
        return self.rng.uniform(float(low), float(high))

    def pick(self, key: str, default: list[str]) -> str:
        return str(self.rng.choice(self.spec.get(key, default)))


class ChanceReader:
    """A reader who opens the mail some hours later (or never) and may download twice."""

    def __init__(self, clock: SimClock, odds: Odds) -> None:
        self.clock = clock
        self.odds = odds

    async def __call__(self, readers: Readers, link: str) -> None:
        if self.odds.happens("never_download", 0.08):
            return
        await self.clock.sleep(self.odds.span("read_hours", (0.5, 36)))
        await readers.download(link)
        if self.odds.happens("download_twice", 0.3):
            await self.clock.sleep(self.odds.rng.uniform(2, 48))
            await readers.download(link)


class ChanceRequester(RequesterScript):
    """Readers borrow and return books; a dearer retry is accepted if not too dear."""

    def __init__(self, clock: SimClock, odds: Odds, mishaps: LoanMishaps) -> None:
        self.clock = clock
        self.odds = odds
        self.mishaps = mishaps

    async def on_status(self, requester: Requester, ask: Ask, status: str,
                        info: dict[str, Any]) -> None:
        if status == "Loaned" and ask.first(status):
            self.mishaps.loaned(requester.symbol, ask.request_id)
            requester.parties.tasks.spawn(self._borrow(requester, ask), "loan")
        elif status == "RetryPossible":
            await self._retry_or_cancel(requester, ask, info)

    async def on_refused(self, requester: Requester, ask: Ask) -> None:
        previous = ask.body["request"]["serviceInfo"].get("requestingAgencyPreviousRequestId")
        if previous and previous in requester.asks:
            # The retry was refused: give up on the request it was to replace.
            await requester.action(requester.asks[previous], "Cancel", "重试失败，取消申请")

    async def cancel_later(self, requester: Requester, ask: Ask) -> None:
        """The reader found the item elsewhere meanwhile (if it is not on its way yet)."""
        await self.clock.sleep(self.odds.rng.uniform(4, 48))
        if ask.outcome is None and ask.state in ("Sent", "ExpectToSupply", "WillSupply"):
            await requester.action(ask, "Cancel", "读者已通过其他途径获得，取消申请")

    async def _borrow(self, requester: Requester, ask: Ask) -> None:
        """The book travels, the reader keeps it a while (maybe renews), then it goes back."""
        await self.clock.sleep(self.odds.span("courier_hours", (20, 60)))
        await requester.action(ask, "Received")
        ask.state = "Received"
        keep = self.odds.span("reading_days", (2, 8)) * 24
        chosen = self.mishaps.of(requester.symbol, ask.request_id)
        if chosen is not None and chosen.mishap is Mishap.LATE:
            # Kept past its short due date, no renewal asked for (the hub marks it Overdue).
            keep = max(keep, self.mishaps.ship_back_at(chosen) - self.clock.hours())
        elif chosen is None and self.odds.happens("renew", 0.15):
            await self.clock.sleep(keep / 2)
            await requester.action(ask, "Renew", "读者申请续借")
            keep /= 2
        await self.clock.sleep(keep)
        await requester.action(ask, "ShippedReturn")
        ask.state = "ShippedReturn"
        if chosen is not None and chosen.mishap is Mishap.LOST:
            # The parcel never arrives; after a courier's time the requester reports it.
            await self.clock.sleep(self.odds.span("courier_hours", (20, 60)) * 2)
            if self.mishaps.report_lost is not None:
                await self.mishaps.report_lost(ask)
            chosen.reported = True

    async def _retry_or_cancel(self, requester: Requester, ask: Ask,
                               info: dict[str, Any]) -> None:
        offered = (info.get("offeredCosts") or {}).get("monetaryValue")
        price = Decimal(offered) if offered else None
        if (info.get("reasonRetry") == "CostExceedsMaxCost" and price is not None
                and ask.max_cost is not None and price <= ask.max_cost * 3
                and ask.retries < 2 and self.odds.happens("retry", 0.7)):
            new = _retry(ask, Decimal(math.ceil(price)), PAGES.search(info.get("note") or ""))
            ask.outcome = "retried"
            await requester.request(new, new.body)
        else:
            await requester.action(ask, "Cancel", "费用超出读者预算，取消申请")


def _retry(ask: Ask, limit: Decimal, pages: re.Match[str] | None) -> Ask:
    """The Retry request replacing `ask`, up to `limit`, for the pages the supplier named."""
    new_id = f"{ask.origin}-R{ask.retries + 1}"
    body = copy.deepcopy(ask.body)
    req = body["request"]
    req["header"].update(requestingAgencyRequestId=new_id, timestamp=now_iso())
    req["serviceInfo"].update(requestType="Retry",
                              requestingAgencyPreviousRequestId=ask.request_id)
    req["billingInfo"]["maximumCosts"]["monetaryValue"] = f"{limit:.2f}"
    if pages:
        req["bibliographicInfo"]["pagesRequested"] = f"{pages[1]}-{pages[2]}"
    return Ask(new_id, ask.requester, ask.kind, body, limit, origin=ask.origin,
               retries=ask.retries + 1)


class ChanceSupplier(SupplierScript):
    """One supplier acting on its profile (hidden from the hub)."""

    def __init__(self, agency: Agency, network: Network, clock: SimClock, odds: Odds,
                 items: dict[tuple[str, str], Item], mishaps: LoanMishaps) -> None:
        self.agency = agency
        self.mishaps = mishaps
        self.network = network
        self.clock = clock
        self.odds = odds
        self.items = items               # (requester, request id) -> the item asked for
        self.profile = network.profiles[agency.symbol]
        self.rng = random.Random(f"{network.seed}/{agency.symbol}")
        self.fees = [f for f in parse_fees(network.texts["fees.toml"])
                     if f.supplier == agency.symbol and f.service_kind == "DocumentDelivery"]

    async def work(self, supplier: Supplier, job: Job) -> None:
        p, rng = self.profile, self.rng
        if not job.retry and rng.random() < p.silent:
            job.silent = True  # never answers: the hub's deadline moves the request on
            return
        answer = rng.uniform(*p.answer_hours)
        if not job.retry and not self._holds(job):
            await self.clock.sleep(answer)
            await supplier.unfilled(job, "NotHeld", note="馆藏记录有误，实际未收藏")
        elif not job.retry and rng.random() > p.fill:
            await self.clock.sleep(answer)
            await supplier.unfilled(job, rng.choice(
                ["NotOnShelf", "InUse"] if job.kind == "BookLoan"
                else ["NotOnShelf", "NotAvailableForILL"]))
        elif not job.retry and job.kind == "DocumentDelivery" and rng.random() < p.cost_retry:
            await self.clock.sleep(answer)
            await self._offer_retry(supplier, job)
        else:
            await self._supply(supplier, job, answer)

    async def _supply(self, supplier: Supplier, job: Job, answer: float) -> None:
        low, high = self.profile.turnaround_hours
        turnaround = self.rng.triangular(low, high, low + (high - low) * 0.3)
        answer = min(answer, turnaround / 2)
        await self.clock.sleep(answer)
        await supplier.will_supply(job)
        await self.clock.sleep(turnaround - answer)
        if job.kind == "BookLoan":
            late = not job.cancelled and self.mishaps.short_due(
                symbol_of(job.requester) or "", job.request_id)
            await supplier.lend(job, due_days=self.mishaps.due_days() if late else 35,
                                item_id=f"{self.rng.randint(10**11, 10**12 - 1)}")
        else:
            await supplier.deliver_copy(job)

    def _holds(self, job: Job) -> bool:
        """Whether the item is really on this library's shelves (not only in its catalogue)."""
        item = self.items.get((symbol_of(job.requester) or "", job.request_id))
        listed = item in self.network.holdings.get(self.agency.symbol, set())
        chance = random.Random(f"{self.network.seed}/{self.agency.symbol}/{item}").random()
        return chance < (self.profile.accuracy if listed else self.profile.unlisted)

    def _price(self, pages: int) -> dict[str, str]:
        """The supplier's own fee schedule for `pages` pages, as ISO 18626 costs."""
        today = datetime.datetime.now(datetime.UTC).date()
        terms: FeeTerms | None = next((f for f in self.fees if f.applies_on(today)), None)
        if terms is None:
            return {"currencyCode": "CNY", "monetaryValue": "20.00"}
        return terms.quote(pages=pages).to_costs()

    async def _offer_retry(self, supplier: Supplier, job: Job) -> None:
        """The article is longer than the citation said: offer it at the price of its pages."""
        bib = job.body["request"]["bibliographicInfo"]
        m = PAGES.search(bib.get("pagesRequested") or "")
        start, end = (int(m[1]), int(m[2])) if m else (1, 10)
        end += self.rng.randint(15, 40)
        await supplier.say(job, "RetryPossible", "RequestResponse", answerYesNo="N",
                           reasonRetry="CostExceedsMaxCost",
                           offeredCosts=self._price(end - start + 1),
                           note=f"原文实际页码 {start}-{end}，费用超出读者预算")

    async def returned(self, supplier: Supplier, job: Job) -> None:
        chosen = self.mishaps.of(symbol_of(job.requester) or "", job.request_id)
        if chosen is not None and chosen.mishap is Mishap.LOST:
            return  # lost in transit back: it never arrives
        await self.clock.sleep(self.odds.span("courier_hours", (20, 60)))
        await supplier.say(job, "LoanCompleted", "StatusChange")
