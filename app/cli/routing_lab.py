"""`run.py routing-lab`: the hub's ranking over a CALIS-calibrated year, five ways (issue 18)."""

from __future__ import annotations

import argparse
import os
import sys

from app.cli.commands import EXIT_USAGE, Command, fail, table
from schemas.settings import Settings
from sim.routing_lab.lab import LabSpec, report, run_lab, write_json


async def routing_lab(settings: Settings, args: argparse.Namespace) -> int:
    if args.requests < 1 or args.libraries < 2 or not 1 <= args.suppliers <= args.libraries:
        return fail("need --requests >= 1, --libraries >= 2 and 1 <= --suppliers <= "
                    "--libraries", EXIT_USAGE)
    spec = LabSpec(requests=args.requests, seed=args.seed, libraries=args.libraries,
                   suppliers=args.suppliers)
    workers = args.workers or min(5, os.cpu_count() or 1)
    result = run_lab(spec, workers=workers, show_progress=not args.quiet)
    report(result, table, sys.stdout)
    if args.json:
        write_json(result, args.json)
        print(f"JSON written to {args.json}")
    return 0


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, default=100_929,
                   help="requests over the simulated year (default: CALIS's 100,929)")
    p.add_argument("--seed", type=int, default=2012, help="the world and its demand")
    p.add_argument("--libraries", type=int, default=900, help="requesting member libraries")
    p.add_argument("--suppliers", type=int, default=281,
                   help="supplying libraries among them (plus the national ones and a vendor)")
    p.add_argument("--workers", type=int, default=0,
                   help="processes sharing the five configurations (default: one per core)")
    p.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")


COMMANDS = [Command("routing-lab", "replay a CALIS-calibrated year through the hub's ranking: "
                    "static tier order against scorecards, holdings learning, availability "
                    "checks and a last resort", routing_lab, _arguments)]
