"""The benchmarks' event loop: uvloop where it is installed, like the hub process
(it costs less CPU per routed request); asyncio's own loop elsewhere."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

try:
    import uvloop
except ImportError:  # not on Windows, or not installed
    uvloop = None  # type: ignore[assignment]

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    if uvloop is None:
        return asyncio.run(main)
    return uvloop.run(main)
