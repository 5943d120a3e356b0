"""A flame graph of a hub process under load, and its hottest frames.

py-spy samples the running process from outside (no restart, no instrumentation, so
the figures it sits beside are not distorted by it, unlike cProfile). Two samplers run
side by side in py-spy's non-blocking mode: one draws the SVG, the other writes the
collapsed stacks the top frames are counted from. Only samples of a thread that was
running are kept (py-spy leaves idle threads out by default), so the graph is where
the hub's CPU goes, not where it waits.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import signal
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RATE = 97  # samples per second: not a divisor of the event loop's timers
# A frame on at least this share of the samples is an entry point (run.py, the event
# loop), left out of the list by total time.
ENTRY_SHARE = 0.6
# "function (path/to/module.py:123)" in a collapsed stack; the line number is dropped, so
# one function is one frame however many lines of it were sampled.
_FRAME = re.compile(r"^(?P<function>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def py_spy() -> str | None:
    """py-spy beside this interpreter (the venv) or on the PATH; None without it."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class Recording:
    svg: Path
    raw: Path
    processes: list[asyncio.subprocess.Process]

    async def stop(self) -> dict[str, Any]:
        """Stop sampling (py-spy writes its files on SIGINT); the top frames."""
        for p in self.processes:
            if p.returncode is None:
                p.send_signal(signal.SIGINT)
        for p in self.processes:
            try:
                await asyncio.wait_for(p.wait(), 60)
            except TimeoutError:
                p.kill()
                await p.wait()
        if not self.raw.exists():
            return {"svg": None, "error": "py-spy wrote nothing (is ptrace allowed?)"}
        return {"svg": str(self.svg) if self.svg.exists() else None,
                **top_frames(self.raw.read_text(errors="replace"))}


async def record(pid: int, svg: Path) -> Recording | None:
    """Start sampling process `pid`; None when py-spy is not installed."""
    exe = py_spy()
    if exe is None:
        return None
    svg.parent.mkdir(parents=True, exist_ok=True)
    raw = svg.with_suffix(".folded")
    processes = [await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--rate", str(RATE), "--nonblocking",
        "--format", fmt, "--output", str(out), stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL) for fmt, out in (("flamegraph", svg), ("raw", raw))]
    return Recording(svg, raw, processes)


def _frame(text: str) -> str:
    m = _FRAME.match(text.strip())
    if m is None:
        return text.strip()
    file = m["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in file:
            file = file.split(marker, 1)[1]
    return f"{m['function']} ({file})"


def top_frames(folded: str, n: int = 5) -> dict[str, Any]:
    """The hottest frames of collapsed stacks ("frame;frame;... count" per line): by
    self time (the frame itself was running) and by total time (it was on the stack)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in folded.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";")]
        # The first frame is the thread ("process 123:\"python run.py hub\""), not code.
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        k = int(count)
        samples += k
        own[frames[-1]] += k
        for f in set(frames):
            total[f] += k

    def share(c: Counter[str]) -> list[dict[str, Any]]:
        return [{"frame": f, "percent": round(100 * k / samples, 1)}
                for f, k in c.most_common(n)]

    # By total time, the entry points and the event loop (on most stacks) say nothing.
    inner = Counter({f: k for f, k in total.items() if k < ENTRY_SHARE * samples})
    return {"samples": samples, "top_self": share(own) if samples else [],
            "top_total": share(inner) if samples else []}
