"""What a `run.py` command is: a name, its arguments and an async function to run.

Command modules (app/cli/*.py, bench/cli.py) each publish a list of them; the
parser in app/cli/__init__.py assembles whatever run.py hands it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import asyncpg

from infra.database import Connection, connect
from schemas.settings import Settings
from schemas.text import display_width

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Run = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


# An action that works on one database connection the command opens for it.
ConnectedRun = Callable[[Settings, argparse.Namespace, Connection], Coroutine[Any, Any, int]]
# name -> (help, run, arguments)
ConnectedActions = Mapping[str, tuple[str, ConnectedRun,
                                      Callable[[argparse.ArgumentParser], None]]]


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Run
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments
    # The hub process and the benchmarks run on uvloop where it is installed (less CPU
    # per message: bench/ measures it).
    fast: bool = False


def connected_command(name: str, text: str, actions: ConnectedActions) -> Command:
    """`run.py NAME ACTION ...` whose actions each need one database connection: the
    parser of the actions, and a run that connects, runs the chosen one and closes."""

    def arguments(p: argparse.ArgumentParser) -> None:
        sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
        for action, (helptext, _run, add) in actions.items():
            add(sub.add_parser(action, help=helptext, description=helptext))

    async def run(settings: Settings, args: argparse.Namespace) -> int:
        _help, chosen, _add = actions[args.action]
        try:
            conn = await connect(settings.database_url)
        except (OSError, asyncpg.PostgresConnectionError) as exc:
            return fail(f"cannot reach the database: {exc}")
        try:
            return await chosen(settings, args, conn)
        finally:
            await conn.close()

    return Command(name, text, run, arguments)


def fail(message: str, code: int = EXIT_FAILED) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *,
          right: Sequence[int] = (), out: TextIO | None = None) -> None:
    """Print an aligned text table (columns in `right` right-aligned)."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r]
                                           for r in rows]
    widths = [max(display_width(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        parts = []
        for i, c in enumerate(r):
            pad = " " * (widths[i] - display_width(c))
            parts.append(pad + c if i in right else c + pad)
        return "  ".join(parts).rstrip()

    print(line(cells[0]), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells[1:]:
        print(line(r), file=out)
