"""`run.py demo`: a simulated ILL network around a real hub (app/demo.py), summarised."""

from __future__ import annotations

import argparse
import logging

from app.cli.commands import EXIT_FAILED, Command, fail
from app.demo import DemoError, DemoOptions, run
from schemas.settings import Settings
from sim.network import NetworkError

OPTIONS = ("requests", "speed", "days", "seed", "requesters", "suppliers", "keep", "smtp", "tls",
           "database", "prefix", "symbol_tag", "timeout")


def options_from(args: argparse.Namespace) -> DemoOptions:
    opts = DemoOptions()
    for name in OPTIONS:
        value = getattr(args, name, None)
        if value is not None:
            setattr(opts, name, value)
    return opts


async def demo(settings: Settings, args: argparse.Namespace) -> int:
    """Exit 0 when every request finished and nothing went wrong."""
    if not args.verbose:
        # The progress lines are the demo's output; the hub's own INFO logs would drown them.
        logging.getLogger().setLevel(logging.WARNING)
        # "job skipped: maximum number of running instances" is routine on a busy machine.
        logging.getLogger("apscheduler").setLevel(logging.ERROR)
    try:
        summary = await run(settings, options_from(args), out=_say)
    except (DemoError, NetworkError) as exc:
        return fail(str(exc))
    if summary.open:
        return fail(f"{summary.open} request(s) did not finish within the time limit")
    if summary.ledger_problems or summary.problems:
        return fail("the demo ran into problems (see above)", EXIT_FAILED)
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--requests", type=int, help="requests to simulate (default 200)")
    p.add_argument("--speed", type=float,
                   help="simulated seconds per real second (default 21600: 6 h a second)")
    p.add_argument("--days", type=float,
                   help="simulated days over which the requests arrive (default 12)")
    p.add_argument("--seed", type=int, help="seed of the network and the requests")
    p.add_argument("--requesters", type=int, help="requesting libraries (default: all 60)")
    p.add_argument("--suppliers", type=int, help="suppliers (default: all 20)")
    p.add_argument("--keep", action="store_true",
                   help="keep the database and broker queues afterwards, for run.py explain")
    p.add_argument("--smtp", action="store_true",
                   help="send mail to the configured SMTP server instead of the demo's folder")
    p.add_argument("--tls", action="store_true",
                   help="encrypt what the demo owns: HTTPS links and pages, FTPS uploads "
                   "(cleartext refused), SMTP STARTTLS, with a throwaway CA in the demo's "
                   "data folder; RabbitMQ and PostgreSQL as the hub's settings say (the "
                   "summary lists each transport)")
    p.add_argument("--database", help="the demo's own database (default illhub_demo)")
    p.add_argument("--prefix", help="the demo's own broker name prefix (default demo.)")
    p.add_argument("--symbol-tag", help="prefix agency symbols with TAG. (two demos on one "
                   "RabbitMQ)")
    p.add_argument("--timeout", type=float,
                   help="seconds to wait for the last requests after the arrivals")


COMMANDS = [Command("demo", "run a simulated ILL network around a real hub and summarise it",
                    demo, _arguments)]
