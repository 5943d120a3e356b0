"""Run the five configurations on one world (in parallel processes), and report them."""

from __future__ import annotations

import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any, TextIO

from sim.routing_lab.configurations import configurations
from sim.routing_lab.metrics import SUBSIDY_SHARE, Summary, summarise
from sim.routing_lab.replay import replay
from sim.routing_lab.world import World, build_world

# Published figures printed beside the lab's (ISSUE 18): CALIS's centre in its first
# year (the report, §3.4) and DOCLINE.
REFERENCES = (("CALIS 2011-06..2012-05 (report §3.4)", 0.8532, None),
              ("DOCLINE", 0.9145, 1.23))


@dataclass(frozen=True)
class LabSpec:
    requests: int = 100_929
    seed: int = 2012
    libraries: int = 900
    suppliers: int = 281
    rules: str = ""            # extra TOML [[rule]] tables for every configuration

    def world(self) -> World:
        return build_world(seed=self.seed, requests=self.requests, libraries=self.libraries,
                           suppliers=self.suppliers)


@dataclass(frozen=True)
class LabResult:
    spec: LabSpec
    summaries: list[Summary]
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"world": {"requests": self.spec.requests, "seed": self.spec.seed,
                          "libraries": self.spec.libraries, "suppliers": self.spec.suppliers},
                "subsidy_rule": f"{SUBSIDY_SHARE:.0%} of each filled request's fee",
                "references": [{"name": n, "fill_rate": f, "tried_per_request": t}
                               for n, f, t in REFERENCES],
                "configurations": [s.to_dict() for s in self.summaries],
                "seconds": round(self.seconds, 1)}


# One world per worker process, made on its first task (each worker builds the same
# world from the seed rather than receiving a pickled one).
_WORLDS: dict[LabSpec, World] = {}


def _world(spec: LabSpec) -> World:
    if spec not in _WORLDS:
        _WORLDS.clear()
        _WORLDS[spec] = spec.world()
    return _WORLDS[spec]


def _stderr_progress(name: str, share: float) -> None:
    print(f"routing lab: {name}: {share:.0%}", file=sys.stderr, flush=True)


def run_one(spec: LabSpec, which: int, show_progress: bool) -> Summary:
    started = time.perf_counter()
    config = configurations(spec.rules)[which]
    outcome = replay(_world(spec), config, _stderr_progress if show_progress else None)
    outcome.seconds = time.perf_counter() - started
    return summarise(outcome)


def run_lab(spec: LabSpec, *, workers: int = 1, show_progress: bool = False,
            only: tuple[int, ...] = (0, 1, 2, 3, 4)) -> LabResult:
    """The configurations `only` (indices into configurations.NAMES) on `spec`'s world;
    with workers > 1, that many processes share them."""
    started = time.perf_counter()
    if workers <= 1:
        summaries = [run_one(spec, i, show_progress) for i in only]
    else:
        # spawn, not fork: the caller may run an event loop and threads.
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = [pool.submit(run_one, spec, i, show_progress) for i in only]
            summaries = [f.result() for f in futures]
    return LabResult(spec, summaries, time.perf_counter() - started)


def _pct(x: float) -> str:
    return f"{x * 100:.2f} %"


def _hours(x: float | None) -> str:
    return "-" if x is None else f"{x:.0f} h"


HEADERS = ("configuration", "filled", "filled (held)", "tried/req", "1st route",
           "p50", "p90", "top 10 %", "Gini", "subsidy CNY")


def rows(result: LabResult) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [(s.configuration, _pct(s.fill_rate), _pct(s.fill_rate_held),
            f"{s.tried_per_request:.2f}", _pct(s.filled_first_route),
            _hours(s.turnaround_p50_hours), _hours(s.turnaround_p90_hours),
            _pct(s.busiest_10pct_share), f"{s.gini_forwards:.2f}", f"{s.subsidy_yuan:,.0f}")
           for s in result.summaries]
    for name, fill, tried in REFERENCES:
        out.append((name, _pct(fill), "", "" if tried is None else f"{tried:.2f}",
                    "", "", "", "", "", ""))
    return out


def report(result: LabResult, table: Callable[..., None], out: TextIO) -> None:
    """The table (with `table`, app/cli's aligned printer) and the world's line."""
    spec = result.spec
    held = result.summaries[0].held_somewhere if result.summaries else 0
    print(f"routing lab: {spec.requests:,} requests from {spec.libraries} libraries to "
          f"{spec.suppliers} supplying libraries + national library, Shanghai Library, "
          f"NSTL, CASHL and a pay-per-view vendor; seed {spec.seed}; "
          f"{held:,} requests for items some library holds", file=out)
    table(HEADERS, rows(result), right=range(1, len(HEADERS)), out=out)
    print(f"subsidy: {SUBSIDY_SHARE:.0%} of each filled request's fee. "
          f"took {result.seconds:.1f} s", file=out)


def write_json(result: LabResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(result.to_dict(), f, ensure_ascii=False, indent=2)
        f.write("\n")
