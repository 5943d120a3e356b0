"""The routing lab (issue 18): a small world through the hub's real `Policy.rota`. Pure."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest

from app.cli.routing_lab import COMMANDS
from broker.dispatch.scorecards import scorecard_terms
from broker.policy import Policy
from sim.network import load_network
from sim.routing_lab.configurations import NAMES, configurations
from sim.routing_lab.demo import compare_on
from sim.routing_lab.lab import LabSpec, run_lab, write_json
from sim.routing_lab.metrics import gini, percentile, summarise, top_share
from sim.routing_lab.replay import Outcome, replay
from sim.routing_lab.world import World, build_world

SMALL = LabSpec(requests=2000, seed=7, libraries=150, suppliers=45)


@pytest.fixture(scope="module")
def world() -> World:
    return SMALL.world()


@pytest.fixture(scope="module")
def outcomes(world: World) -> list[Outcome]:
    return [replay(world, c) for c in configurations()]


def test_scorecard_terms_as_dispatch_reads_the_scorecard() -> None:
    assert scorecard_terms(0, 0, 0, 0.0) == (None, None)
    assert scorecard_terms(3, 1, 0, 3 * 7200.0) == (0.75, 2.0)
    # Silence counts against the fill rate; only filled requests have a turnaround.
    assert scorecard_terms(1, 0, 3, 3600.0) == (0.25, 1.0)
    assert scorecard_terms(0, 2, 0, 0.0) == (0.0, None)


def test_metrics_arithmetic() -> None:
    assert gini([5, 5, 5, 5]) == 0.0
    assert gini([0, 0, 0, 10]) == pytest.approx(0.75)
    assert gini([]) == 0.0
    assert top_share(list(range(1, 11)), 0.1) == pytest.approx(10 / 55)
    assert top_share([1, 1, 1], 0.1) == pytest.approx(1 / 3)   # at least one entry
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile(list(range(1, 11)), 90) == pytest.approx(9.1)
    assert percentile([7.0], 90) == 7.0
    assert percentile([], 50) is None


def test_the_world_is_the_same_for_the_same_seed() -> None:
    a, b = build_world(seed=3, requests=300, libraries=50, suppliers=12), \
        build_world(seed=3, requests=300, libraries=50, suppliers=12)
    assert a.requests == b.requests
    assert [a.item(r.item) for r in a.requests[:50]] == [b.item(r.item) for r in b.requests[:50]]
    assert len(a.suppliers) == 12 + 5      # the national ones and the vendor on top
    assert build_world(seed=4, requests=300, libraries=50, suppliers=12).requests != a.requests


def test_every_request_is_accounted_for(world: World, outcomes: list[Outcome]) -> None:
    for o in outcomes:
        assert len(o.filled) == len(world.requests)
        assert sum(o.forwards) == sum(o.tried)
        assert all(h is not None for h, f in zip(o.hours, o.filled, strict=True) if f)
        assert sum(o.first_route) <= sum(o.filled)


def test_the_configurations_differ_as_they_should(world: World,
                                                   outcomes: list[Outcome]) -> None:
    static, scored, learned, checked, last = (summarise(o) for o in outcomes)
    # Learning from NotHeld answers: fewer NotHeld answers for the same demand.
    assert learned.not_held_answers < scored.not_held_answers
    # Asking the catalogues first: fewer suppliers tried.
    assert checked.tried_per_request < learned.tried_per_request
    # The vendor is only ever reached as the last resort, and fills more.
    vendor = world.vendor_index
    assert vendor is not None
    assert all(o.forwards[vendor] == 0 for o in outcomes[:4])
    assert outcomes[4].forwards[vendor] > 0
    assert last.fill_rate > checked.fill_rate
    # The full ranking against tier order.
    assert last.fill_rate > static.fill_rate
    assert last.turnaround_p50_hours is not None and static.turnaround_p50_hours is not None
    assert last.turnaround_p50_hours < static.turnaround_p50_hours
    assert last.tried_per_request < static.tried_per_request


def test_the_lab_ranks_with_the_policy_engine(world: World, outcomes: list[Outcome],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # A rule of the policy changes the lab's routing: it is Policy.rota, not a copy.
    busiest = max(range(len(world.suppliers)), key=lambda i: outcomes[0].forwards[i])
    symbol = world.suppliers[busiest].symbol
    rule = f'[[rule]]\nname = "not them"\nexclude = ["{symbol}"]\n'
    excluded = replay(world, configurations(rule)[0])
    assert outcomes[0].forwards[busiest] > 0
    assert excluded.forwards[busiest] == 0
    # One rota per request.
    calls = []
    real = Policy.rota

    def counting(self: Policy, *args: object, **kw: object) -> object:
        calls.append(1)
        return real(self, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Policy, "rota", counting)
    replay(world, configurations()[0])
    assert len(calls) == len(world.requests)


def test_json_shape(tmp_path: Path) -> None:
    result = run_lab(LabSpec(requests=400, seed=5, libraries=60, suppliers=15))
    path = tmp_path / "lab.json"
    write_json(result, str(path))
    data = json.loads(path.read_text("utf-8"))
    assert data["world"] == {"requests": 400, "seed": 5, "libraries": 60, "suppliers": 15}
    assert [c["configuration"] for c in data["configurations"]] == list(NAMES)
    assert {r["name"].split()[0] for r in data["references"]} == {"CALIS", "DOCLINE"}
    first = data["configurations"][0]
    for key in ("fill_rate", "fill_rate_held", "tried_per_request", "filled_first_route",
                "turnaround_p50_hours", "turnaround_p90_hours", "busiest_10pct_share",
                "gini_forwards", "subsidy_yuan"):
        assert isinstance(first[key], float), key


def test_command_prints_the_table_and_writes_json(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    command = COMMANDS[0]
    parser = argparse.ArgumentParser()
    command.arguments(parser)
    out = tmp_path / "lab.json"
    args = parser.parse_args(["--requests", "300", "--libraries", "40", "--suppliers", "10",
                              "--workers", "1", "--json", str(out)])
    assert asyncio.run(command.run(None, args)) == 0  # type: ignore[arg-type]
    printed = capsys.readouterr()
    assert "static tier order" in printed.out and "+ last resort" in printed.out
    assert "CALIS" in printed.out and "DOCLINE" in printed.out and "1.23" in printed.out
    assert "routing lab: static tier order: 100%" in printed.err     # progress on stderr
    assert json.loads(out.read_text("utf-8"))["world"]["requests"] == 300


def test_compare_on_the_demo_network() -> None:
    network = load_network(seed=1, requesters=None, suppliers=None)
    static, ranked = compare_on(network, requests=600)
    assert "static tier order" in static and "filled" in static
    assert "the hub's ranking" in ranked and "suppliers tried" in ranked
