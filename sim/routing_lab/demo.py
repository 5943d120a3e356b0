"""Ranking on the demo's own network (sim/network.py, docs/demo/): static tier order
against the hub's ranking, in two lines for `run.py demo` (issue 18 item 5).

The demo's agencies, holdings, supplier profiles (docs/demo/simulation.toml: accuracy,
unlisted, fill, silent, hours) and its policy (docs/demo/policy.toml, the real rules)
become a small lab world; fees are left out (every quote "no fee schedule"), and no
supplier has a catalogue to ask (the demo configures none), so the hub's ranking here
is scorecards plus holdings learning.
"""

from __future__ import annotations

import random

from broker.policy import Policy
from sim.network import REQUEST_WEIGHT, Network
from sim.routing_lab.metrics import Summary, summarise
from sim.routing_lab.replay import Configuration, replay
from sim.routing_lab.world import ISBN, ISSN, Item, Library, Supplier, World, demand

DEMO_REQUESTS = 3000
ZERO_WEIGHTS = {"fill_weight": 0.0, "speed_weight": 0.0, "load_weight": 0.0,
                "cost_weight": 0.0, "holdings_weight": 0.0, "availability_bonus": 0.0}


def network_world(network: Network, requests: int = DEMO_REQUESTS) -> World:
    """The demo network as a lab world (its suppliers' hidden behaviour from their
    profiles; which listed items they really hold drawn from their accuracy)."""
    rng = random.Random(network.seed)
    libraries = [Library(a.symbol, a.province, a.city, 1.0, REQUEST_WEIGHT[a.size])
                 for a in network.requesters]
    suppliers: list[Supplier] = []
    for a in network.suppliers:
        if a.kind == "vendor":
            continue        # sells by DOI for pay-per-view only; not in these requests
        p = network.profiles[a.symbol]
        suppliers.append(Supplier(
            index=len(suppliers), symbol=a.symbol, kind=a.kind, province=a.province,
            city=a.city, journals=p.stm_journals, books=p.books, accuracy=p.accuracy,
            unlisted=p.unlisted, reliability=p.fill, silent=p.silent,
            answer_hours=sum(p.answer_hours) / 2, turnaround_hours=sum(p.turnaround_hours) / 2,
            capacity=50, closed=(), catalogue=None, fee_copy=None, fee_loan=None))
    journals = [("issn", j.issn) for j in network.catalogue.journals]
    books = [("isbn", b.isbn) for b in network.catalogue.books]
    world = World(seed=network.seed, libraries=libraries, suppliers=suppliers,
                  n_journals=len(journals), n_books=len(books), requests=[])
    for index, key in enumerate(journals + books):
        listed, held = set(), set()
        for s in suppliers:
            if key in network.holdings.get(s.symbol, ()):
                listed.add(s.index)
                if rng.random() < s.accuracy:
                    held.add(s.index)
            elif rng.random() < s.unlisted * (s.journals if key[0] == "issn" else s.books):
                held.add(s.index)
        world._items[index] = Item(index, ISSN if key[0] == "issn" else ISBN,
                                   frozenset(held), frozenset(listed))
    world.requests = demand(rng, world, requests)
    return world


def compare(network: Network, requests: int = DEMO_REQUESTS) -> tuple[Summary, Summary]:
    """(static tier order, the hub's ranking) under the demo's own policy."""
    policy = Policy.from_toml(network.texts["policy.toml"])
    data = policy.to_dict()
    static = Policy.from_dict({**data, "scoring": {**data.get("scoring", {}), **ZERO_WEIGHTS}})
    world = network_world(network, requests)
    return (summarise(replay(world, Configuration("static tier order", static))),
            summarise(replay(world, Configuration("ranked", policy, scorecards=True,
                                                  holdings=True))))


def compare_on(network: Network, requests: int = DEMO_REQUESTS) -> tuple[str, str]:
    """Two lines for the demo's summary: static tier order, then the hub's ranking."""
    static, ranked = compare(network, requests)

    def line(label: str, s: Summary) -> str:
        p50 = "-" if s.turnaround_p50_hours is None else f"{s.turnaround_p50_hours:.0f} h"
        return (f"{label}: {s.fill_rate:.1%} filled ({s.fill_rate_held:.1%} of items held "
                f"somewhere), {s.tried_per_request:.2f} suppliers tried, turnaround p50 {p50}, "
                f"{s.not_held_answers} NotHeld answers")

    head = f"ranking on this network, {requests:,} simulated requests"
    labels = ("static tier order", "the hub's ranking")
    width = max(len(x) for x in labels)
    return (line(f"{head}, {labels[0]:<{width}}", static),
            line(f"{head}, {labels[1]:<{width}}", ranked))
