"""`run.py` as a user runs it: a command in a child process, or `run.py hub` itself.

The child gets the test's settings through ILLHUB_* variables (and nothing else of
the caller's ILLHUB_* environment), so it talks to the test's database and prefix.
"""

from __future__ import annotations

import asyncio
import os
import sys

from schemas.settings import Settings
from tests.support.paths import ROOT


def hub_env(settings: Settings) -> dict[str, str]:
    """The environment of a child `run.py`: the caller's, with ILLHUB_* from `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILLHUB_")}
    env.update(settings.updated(outbox__poll_seconds=0.2).environment())
    return env


async def run(settings: Settings, *args: str) -> tuple[int, str, str]:
    """`run.py <args>` to completion: (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), *args, cwd=ROOT, env=hub_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def start_hub(settings: Settings) -> asyncio.subprocess.Process:
    """`run.py hub` running in a child process (stdout and stderr piped together)."""
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "hub", cwd=ROOT, env=hub_env(settings),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
