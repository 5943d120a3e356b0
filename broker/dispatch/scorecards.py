"""A supplier's scorecard counters as the policy's score reads them (ARCHITECTURE §3.4.3).

Pure and in one place, so that dispatch (`requests._rank`, from the `scorecard` view)
and the routing lab (sim/routing_lab, from its simulated history) derive the fill rate
and turnaround the same way.
"""

from __future__ import annotations

SECONDS_PER_HOUR = 3600


def scorecard_terms(filled: int, unfilled: int, timed_out: int,
                    turnaround_total_seconds: float) -> tuple[float | None, float | None]:
    """(fill rate, mean turnaround in hours) from the counters; None where there is no
    history yet, so the policy uses its prior instead of a rate made up from nothing.

    fill rate  = filled / (filled + unfilled + timed_out): silence counts against it;
    turnaround = turnaround_total / filled, in hours: only filled requests have one.
    """
    answered = filled + unfilled + timed_out
    fill_rate = filled / answered if answered else None
    turnaround = turnaround_total_seconds / filled / SECONDS_PER_HOUR if filled else None
    return fill_rate, turnaround
