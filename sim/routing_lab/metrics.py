"""The lab's figures: fill rates, tries, turnaround percentiles, load spread, subsidy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sim.routing_lab.replay import Outcome

# The consortium's subsidy rule in the lab: it pays this share of each filled request's
# fee (the supplier's fee for the service kind), as CALIS subsidised readers' fees.
SUBSIDY_SHARE = 0.5


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), linear between the closest ranks (numpy's default);
    None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be between 0 and 100")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def gini(values: Sequence[float]) -> float:
    """0: every supplier got the same number of forwards; towards 1: one got them all."""
    n = len(values)
    total = sum(values)
    if n == 0 or total == 0:
        return 0.0
    ordered = sorted(values)
    weighted = sum((i + 1) * v for i, v in enumerate(ordered))
    return 2 * weighted / (n * total) - (n + 1) / n


def top_share(values: Sequence[float], share: float = 0.1) -> float:
    """The share of the total that goes to the busiest `share` of the entries (at least
    one entry)."""
    total = sum(values)
    if not values or total == 0:
        return 0.0
    k = max(1, math.ceil(len(values) * share))
    return sum(sorted(values, reverse=True)[:k]) / total


@dataclass(frozen=True)
class Summary:
    configuration: str
    requests: int
    filled: int
    fill_rate: float
    held_somewhere: int
    fill_rate_held: float
    tried_per_request: float
    filled_first_route: float          # share of all requests
    turnaround_p50_hours: float | None
    turnaround_p90_hours: float | None
    busiest_10pct_share: float         # of forwards
    gini_forwards: float
    subsidy_yuan: float
    not_held_answers: int
    timed_out: int
    cancelled: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def summarise(o: Outcome) -> Summary:
    n = len(o.filled)
    held = [i for i in range(n) if o.held_somewhere[i]]
    filled = sum(o.filled)
    hours = [h for h in o.hours if h is not None]
    subsidy_fen = sum(round(fee * SUBSIDY_SHARE) for fee in o.fee_filled)
    return Summary(
        configuration=o.name, requests=n, filled=filled, fill_rate=filled / n if n else 0.0,
        held_somewhere=len(held),
        fill_rate_held=sum(o.filled[i] for i in held) / len(held) if held else 0.0,
        tried_per_request=sum(o.tried) / n if n else 0.0,
        filled_first_route=sum(o.first_route) / n if n else 0.0,
        turnaround_p50_hours=percentile(hours, 50), turnaround_p90_hours=percentile(hours, 90),
        busiest_10pct_share=top_share(o.forwards), gini_forwards=gini(o.forwards),
        subsidy_yuan=subsidy_fen / 100, not_held_answers=o.not_held_answers,
        timed_out=o.timed_out, cancelled=o.cancelled, seconds=o.seconds)
