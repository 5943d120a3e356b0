"""`run.py bench | chaos | fuzz`: the measuring and breaking tools, offered by run.py."""

from __future__ import annotations

import argparse

from app.cli.commands import Command
from bench import chaos, chaos_options, options
from bench.__main__ import main as bench_main
from schemas.settings import Settings

try:  # hypothesis comes with the test extra; without it there is no fuzz command
    from bench import fuzz
except ModuleNotFoundError:
    fuzz = None  # type: ignore[assignment]


async def _bench(settings: Settings, args: argparse.Namespace) -> int:
    return await bench_main(args)


async def _fuzz(settings: Settings, args: argparse.Namespace) -> int:
    if fuzz is None:
        raise RuntimeError("unreachable: the fuzz command is only offered with hypothesis")
    return await fuzz.main(args, settings)


def _fuzz_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--messages", type=int, default=10_000, help="cases to send")
    p.add_argument("--seed", type=int, default=18626, help="hypothesis seed")


COMMANDS = [
    Command("bench", "the benchmark suite: baseline, hub throughput and latency, a CALIS year, "
            "holdings import, settlement; prints a table, writes JSON", _bench,
            options.add_arguments, fast=True),
    Command("chaos", "fault injection: several hubs, SIGKILLs, broker, database and SMTP "
            "outages while requests flow; checks that nothing is lost or done twice",
            chaos.chaos_cli, chaos_options.add_arguments),
]
if fuzz is not None:
    COMMANDS.append(Command(
        "fuzz", "hostile-input fuzzer: hostile messages as a real agency user against a hub on "
        "a scratch database; prints counts by category and outcome", _fuzz, _fuzz_arguments))
