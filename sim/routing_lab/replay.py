"""One configuration of routing over the lab's year, in simulated time.

Every request is ranked by the hub's own `Policy.rota` (broker/policy.py) from the
facts dispatch would have: the request, and for each candidate its location, listed
holdings, quote, scorecard (`broker.dispatch.scorecards.scorecard_terms`, as `_rank`
derives it), load, what its answers taught about its holdings
(`broker.holdings_trust.accuracy`, doubts as dispatch reads them) and what its
catalogue said. The rota is built once, when the request arrives, as dispatch does;
the request is then forwarded down it: an answer after the supplier's delay, silence
until the deadline (72 h, Rush 24 h, the hub's defaults), then the next supplier.

The suppliers' hidden behaviour (world.py) decides the answers; the ranking sees only
the history the hub would have recorded. Events sit in a heap keyed by simulated
hours; nothing sleeps and nothing is stored.
"""

from __future__ import annotations

import datetime
import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from broker.dispatch.scorecards import scorecard_terms
from broker.holdings_trust import WINDOW_DAYS, accuracy
from broker.policy import Availability, Policy, RequestFacts, SupplierFacts
from sim.routing_lab.world import COPY, START, Request, Supplier, World, lognormal, unit

# The hub's default deadlines (schemas/settings.py `deadlines`), hours.
DEADLINE_NORMAL, DEADLINE_RUSH = 72.0, 24.0
# Books lent out take longer: courier both ways (EMS, one to three days each).
LOAN_FACTOR = 3.0
# Of a held item, how often it is on the shelf (else out on loan, at the bindery ...).
ON_SHELF = {COPY: 0.96, "BookLoan": 0.8}
# A catalogue that is not telling the truth is stale this often, else it did not answer.
STALE_SHARE = 0.6
SECONDS_PER_HOUR = 3600
WINDOW_HOURS = WINDOW_DAYS * 24.0

# Event kinds (ints: they are compared in the heap after time and sequence).
_ANSWER, _DEADLINE, _COMPLETE, _CANCEL = range(4)
# Unfilled reasons the simulated suppliers give (ISO 18626 reasonUnfilled values).
NOT_HELD, IN_USE, NOT_FOR_ILL = "NotHeld", "InUse", "NotAvailableForILL"


@dataclass(frozen=True)
class Configuration:
    """How the hub ranks: the policy, and which learned facts it passes to the rota."""

    name: str
    policy: Policy
    scorecards: bool = False     # fill rate, turnaround, open requests
    holdings: bool = False       # doubted holdings, holdings accuracy
    availability: bool = False   # ask each supplier's catalogue before ranking


@dataclass
class Outcome:
    """What happened to each request, and to each supplier, in one configuration."""

    name: str
    filled: list[bool]
    tried: list[int]
    first_route: list[bool]
    hours: list[float | None]           # arrival to filled, simulated hours
    held_somewhere: list[bool]
    forwards: list[int]                 # per supplier
    fee_filled: list[int]               # fen, the fee of each filled request (0 if not)
    not_held_answers: int = 0
    timed_out: int = 0
    cancelled: int = 0
    seconds: float = 0.0


@dataclass
class _Card:
    filled: int = 0
    unfilled: int = 0
    timed_out: int = 0
    turnaround_seconds: float = 0.0
    open: int = 0
    day: int = -1
    today: int = 0


@dataclass
class _Live:
    """A request on its way down its rota."""

    request: Request
    rota: list[int]
    fees: dict[int, int | None]
    shelf: dict[int, bool] = field(default_factory=dict)
    position: int = -1
    token: int = 0
    forwarded_at: float = 0.0
    outcome: int = 0              # of the pending forward's answer (see _next)
    supplying: bool = False
    done: bool = False


def replay(world: World, config: Configuration,
           progress: Callable[[str, float], None] | None = None) -> Outcome:
    """Run the world's requests through `config`; `progress(name, share done)` every 10 %."""
    sim = _Replay(world, config)
    return sim.run(progress)


def _working(hours: float) -> float:
    """The first working moment at or after `hours`: Saturday and Sunday move to Monday
    08:00 (START is a Wednesday)."""
    day = int(hours // 24)
    weekday = (START.weekday() + day) % 7
    if weekday < 5:
        return hours
    return (day + 7 - weekday) * 24 + 8.0


class _Replay:
    def __init__(self, world: World, config: Configuration) -> None:
        self.world = world
        self.config = config
        self.policy = config.policy
        self.sups = world.suppliers
        self.index = world.by_symbol()
        self.cards = [_Card() for _ in self.sups]
        # What answers taught: the latest answer per (supplier, item) if it said not held
        # (the doubt's reason), and per (supplier, id type) the window of answers.
        self.doubts: dict[tuple[int, int], str] = {}
        self.answers: dict[tuple[int, str], deque[tuple[float, bool]]] = {}
        self.answer_counts: dict[tuple[int, str], list[int]] = {}
        self.heap: list[tuple[float, int, int, int, int]] = []
        self.seq = 0
        self.live: dict[int, _Live] = {}
        n = len(world.requests)
        self.out = Outcome(
            name=config.name, filled=[False] * n, tried=[0] * n, first_route=[False] * n,
            hours=[None] * n, held_somewhere=[False] * n, forwards=[0] * len(self.sups),
            fee_filled=[0] * n)
        self.day_dates = [START + datetime.timedelta(days=d) for d in range(400)]

    # ---- the loop ------------------------------------------------------------------

    def run(self, progress: Callable[[str, float], None] | None) -> Outcome:
        requests = self.world.requests
        step = max(1, len(requests) // 10)
        for r in requests:
            self._until(r.hours)
            self._arrive(r)
            if progress is not None and (r.index + 1) % step == 0:
                progress(self.config.name, (r.index + 1) / len(requests))
        self._until(float("inf"))
        return self.out

    def _push(self, at: float, kind: int, request: int, data: int) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (at, self.seq, kind, request, data))

    def _until(self, t: float) -> None:
        heap = self.heap
        while heap and heap[0][0] <= t:
            at, _, kind, rid, data = heapq.heappop(heap)
            live = self.live.get(rid)
            if live is None:
                continue
            if kind == _CANCEL:
                self._cancel(live, at)
            elif kind == _COMPLETE:
                self._complete(live, at)
            elif data != live.token or live.supplying:
                continue            # a superseded forward's answer or deadline
            elif kind == _DEADLINE:
                self._timed_out(live, at)
            else:
                self._answer(live, at, data)

    # ---- routing ---------------------------------------------------------------------

    def _arrive(self, r: Request) -> None:
        world = self.world
        item = world.item(r.item)
        self.out.held_somewhere[r.index] = bool(item.holders - {world.vendor_index})
        lib = world.libraries[r.requester]
        day = int(r.hours // 24)
        facts = RequestFacts(
            requester=lib.symbol, province=lib.province, city=lib.city,
            service_type="Copy" if r.kind == COPY else "Loan", service_kind=r.kind,
            id_types=frozenset({item.id_type}), max_cost_minor=r.max_cost,
            named_supplier=None, today=self.day_dates[day])
        wanted = set(item.listed)
        for symbol in self.policy.extra_suppliers(facts):
            if symbol in self.index:
                wanted.add(self.index[symbol])
        live = _Live(request=r, rota=[], fees={})
        suppliers = [self._facts(self.sups[i], item.index, item.id_type, i in item.listed,
                                 r, live, day)
                     for i in sorted(wanted) if self.sups[i].symbol != lib.symbol]
        rota = self.policy.rota(facts, suppliers)
        live.rota = [self.index[s] for s in rota.symbols]
        self.live[r.index] = live
        self._push(r.hours + r.patience_hours, _CANCEL, r.index, 0)
        self._next(live, r.hours)

    def _facts(self, s: Supplier, item: int, id_type: str, listed: bool, r: Request,
               live: _Live, day: int) -> SupplierFacts:
        card = self.cards[s.index]
        fee = s.fee(r.kind)
        live.fees[s.index] = fee
        fill_rate = turnaround = None
        open_requests = 0
        if self.config.scorecards:
            fill_rate, turnaround = scorecard_terms(card.filled, card.unfilled,
                                                    card.timed_out, card.turnaround_seconds)
            open_requests = card.open
        doubted = accuracy_ = None
        if self.config.holdings and listed:
            doubted = self.doubts.get((s.index, item))
            accuracy_ = self._accuracy(s.index, id_type, r.hours)
        available = None
        if self.config.availability and s.catalogue is not None:
            available = self._catalogue(s, s.catalogue, r, live)
        return SupplierFacts(
            symbol=s.symbol, province=s.province, city=s.city,
            holds=frozenset({id_type}) if listed else frozenset(),
            quote_minor=fee, fill_rate=fill_rate, turnaround_hours=turnaround,
            open_requests=open_requests,
            forwarded_today=card.today if card.day == day else 0,
            doubted=doubted, holdings_accuracy=accuracy_, availability=available)

    def _accuracy(self, sup: int, id_type: str, now: float) -> float | None:
        window = self.answers.get((sup, id_type))
        if not window:
            return None
        counts = self.answer_counts[(sup, id_type)]
        while window and window[0][0] < now - WINDOW_HOURS:
            _, not_held = window.popleft()
            counts[0] -= 1
            counts[1] -= not_held
        return accuracy(counts[0], counts[1])

    def _catalogue(self, s: Supplier, truthful: float, r: Request,
                   live: _Live) -> Availability:
        """What the supplier's catalogue says of the item now (its own, hidden, truth)."""
        u = unit(self.world.seed, 5, r.index, s.index)
        if u < truthful:
            here = s.index in self.world.item(r.item).holders and self._on_shelf(live, s)
            return Availability(here, "checked: on the shelf" if here
                                else "checked: not available")
        if u < truthful + (1 - truthful) * STALE_SHARE:
            # A stale record: the copy it lists shows as on the shelf.
            return Availability(True, "checked: on the shelf")
        return Availability(None, "catalogue did not answer within the time budget")

    def _on_shelf(self, live: _Live, s: Supplier) -> bool:
        got = live.shelf.get(s.index)
        if got is None:
            r = live.request
            got = unit(self.world.seed, 1, r.index, s.index) < ON_SHELF[r.kind]
            live.shelf[s.index] = got
        return got

    # ---- forwarding and answers ------------------------------------------------------

    def _next(self, live: _Live, now: float) -> None:
        live.position += 1
        if live.position >= len(live.rota):
            self._finish(live, now, filled=False)
            return
        r = live.request
        s = self.sups[live.rota[live.position]]
        card = self.cards[s.index]
        day = int(now // 24)
        if card.day != day:
            card.day, card.today = day, 0
        card.today += 1
        card.open += 1
        self.out.forwards[s.index] += 1
        self.out.tried[r.index] += 1
        live.token += 1
        live.forwarded_at = now
        deadline = DEADLINE_RUSH if r.rush else DEADLINE_NORMAL
        self._push(now + deadline, _DEADLINE, r.index, live.token)

        seed = self.world.seed
        if s.closed_on(day):
            return                                      # closed: silence
        over = max(0.0, card.open / s.capacity - 1.0)   # backlog slows and loses requests
        if unit(seed, 2, r.index, s.index) < s.silent + min(0.5, 0.15 * over):
            return
        # ILL offices work on weekdays: a request forwarded at the weekend waits.
        start = _working(now)
        answer = start - now + lognormal(s.answer_hours, unit(seed, 3, r.index, s.index)) * (
            1 + over)
        if answer >= deadline:
            return
        if s.index not in self.world.item(r.item).holders:
            outcome = 0                                 # NotHeld
        elif not self._on_shelf(live, s):
            outcome = 1                                 # InUse
        elif unit(seed, 4, r.index, s.index) < s.reliability:
            outcome = 3                                 # will supply
        else:
            outcome = 2                                 # NotAvailableForILL
        live.outcome = outcome
        self._push(now + answer, _ANSWER, r.index, live.token)

    def _answer(self, live: _Live, now: float, token: int) -> None:
        r = live.request
        outcome = live.outcome
        s = self.sups[live.rota[live.position]]
        if outcome == 3:
            live.supplying = True
            hours = lognormal(s.turnaround_hours, unit(self.world.seed, 6, r.index, s.index))
            if r.kind != COPY:
                hours *= LOAN_FACTOR
            over = max(0.0, self.cards[s.index].open / s.capacity - 1.0)
            self._push(max(now, live.forwarded_at + hours * (1 + over)), _COMPLETE, r.index, 0)
            return
        card = self.cards[s.index]
        card.unfilled += 1
        card.open -= 1
        self._learn(s.index, r, now, not_held=outcome == 0)
        if outcome == 0:
            self.out.not_held_answers += 1
        self._next(live, now)

    def _learn(self, sup: int, r: Request, now: float, *, not_held: bool) -> None:
        item = self.world.item(r.item)
        if sup not in item.listed:
            return          # only answers about listed items teach (holdings_trust)
        key = (sup, item.id_type)
        self.answers.setdefault(key, deque()).append((now, not_held))
        counts = self.answer_counts.setdefault(key, [0, 0])
        counts[0] += 1
        counts[1] += not_held
        if not_held:
            date = START + datetime.timedelta(hours=now)
            self.doubts[(sup, item.index)] = (
                f"answered {NOT_HELD} for {item.id_type} item {item.index} on "
                f"{date:%Y-%m-%d}")
        else:
            self.doubts.pop((sup, item.index), None)

    def _complete(self, live: _Live, now: float) -> None:
        r = live.request
        sup = live.rota[live.position]
        card = self.cards[sup]
        card.filled += 1
        card.open -= 1
        card.turnaround_seconds += (now - live.forwarded_at) * SECONDS_PER_HOUR
        self._learn(sup, r, now, not_held=False)
        self.out.hours[r.index] = now - r.hours
        self.out.fee_filled[r.index] = live.fees.get(sup) or 0
        self.out.first_route[r.index] = live.position == 0
        self._finish(live, now, filled=True)

    def _timed_out(self, live: _Live, now: float) -> None:
        card = self.cards[live.rota[live.position]]
        card.timed_out += 1
        card.open -= 1
        self.out.timed_out += 1
        self._next(live, now)

    def _cancel(self, live: _Live, now: float) -> None:
        """The reader no longer needs it: the requester cancels (the supplier is told;
        its scorecard is not marked)."""
        if live.supplying or live.done:
            return
        if 0 <= live.position < len(live.rota):
            self.cards[live.rota[live.position]].open -= 1
        live.token += 1
        self.out.cancelled += 1
        self._finish(live, now, filled=False)

    def _finish(self, live: _Live, now: float, *, filled: bool) -> None:
        live.done = True
        self.out.filled[live.request.index] = filled
        del self.live[live.request.index]
