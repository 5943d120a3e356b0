"""The benchmark suite's flags, apart from the suite so that `run.py` can offer them
without importing every benchmark (and what they import) at each start."""

from __future__ import annotations

import argparse

STEPS = ("baseline", "throughput", "throughput2", "throughput3", "latency", "replay", "holdings",
         "settlement")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    p.add_argument("--only", nargs="+", choices=STEPS, help="run only these steps")
    p.add_argument("--queue-type", default="quorum", choices=("quorum", "classic"),
                   help="queue type for the scratch network (production: quorum)")
    p.add_argument("--output", help="where to write the JSON (default var/bench/...)")
