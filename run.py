#!/usr/bin/env python3
"""ILL Hub: the one entry point. `python run.py --help` lists the commands.

The hub's own commands live in app/cli/; the benchmarks and fault injection in
bench/cli.py, which sits beside the hub rather than inside it.
"""

from __future__ import annotations

import sys

from app.cli import main
from bench.cli import COMMANDS as BENCH_COMMANDS

if __name__ == "__main__":
    sys.exit(main(extra=BENCH_COMMANDS))
