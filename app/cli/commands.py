"""What a `run.py` command is: a name, its arguments and an async function to run.

Command modules (app/cli/*.py, bench/cli.py) each publish a list of them; the
parser in app/cli/__init__.py assembles whatever run.py hands it.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from schemas.settings import Settings
from schemas.text import display_width

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

Run = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    run: Run
    arguments: Callable[[argparse.ArgumentParser], None] = no_arguments
    # The hub process and the benchmarks run on uvloop where it is installed (less CPU
    # per message: bench/ measures it).
    fast: bool = False


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
