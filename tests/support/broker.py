"""RabbitMQ for the tests: one shared vhost, and a name prefix of its own for each test.

All runs share the vhost `illhub-test` (created once, never deleted): creating and
deleting a vhost full of quorum queues on every run wedged RabbitMQ 3.10 when runs
overlapped. Instead each test gets its own name prefix (`r<run>.t<n>.`), agency
symbols carry the run id, and each test deletes its own queues, exchanges and broker
users when it ends, so runs and tests never collide.

The fixtures are lazy: nothing connects until a test asks for `vhost` or `prefix`, so
tests that need no server run where RabbitMQ is down (marker `rabbitmq`).
"""

from __future__ import annotations

import asyncio
import gc
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiormq
import pytest

from infra.rabbit_admin import Management
from tests.support.names import RUN_ID, unique

AMQP_BASE = os.environ.get("ILLHUB_TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
MANAGEMENT = os.environ.get("ILLHUB_TEST_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/")
TEST_VHOST = os.environ.get("ILLHUB_TEST_VHOST", "illhub-test")


@pytest.fixture(scope="session")
async def vhost() -> AsyncIterator[str]:
    """The shared test vhost; at the end, the broker users this run made are deleted."""
    async with Management(MANAGEMENT) as mgmt:
        await mgmt.put_vhost(TEST_VHOST)  # idempotent
        await mgmt.set_permissions(TEST_VHOST, "guest", configure=".*", write=".*", read=".*")
        await _remove_leftovers(mgmt)
    yield TEST_VHOST
    async with Management(MANAGEMENT) as mgmt:
        for user in await mgmt.users():
            if user["name"].startswith(f"T{RUN_ID}:"):
                await mgmt.delete_user(user["name"])


async def _remove_leftovers(mgmt: Management) -> None:
    """Queues of earlier runs that were killed before their clean-up (idle for an hour)."""
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    for q in await mgmt.queues(TEST_VHOST):
        idle = q.get("idle_since")
        if not idle or q.get("consumers") or q["name"].startswith(f"r{RUN_ID}."):
            continue
        try:
            since = datetime.strptime(idle[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            continue
        if since < cutoff:
            await mgmt.delete_queue(TEST_VHOST, q["name"])


@pytest.fixture
async def prefix(vhost: str) -> AsyncIterator[str]:
    """This test's name prefix; its queues and exchanges are deleted when it ends."""
    name = f"r{RUN_ID}.{unique('t')}."
    yield name
    async with Management(MANAGEMENT) as mgmt:
        for queue in await mgmt.queue_names(vhost):
            if queue.startswith(name):
                await mgmt.delete_queue(vhost, queue)
        for exchange in await mgmt.exchange_names(vhost):
            if exchange.startswith(name):
                await mgmt.delete_exchange(vhost, exchange)


@pytest.fixture
async def broker_refusals() -> AsyncIterator[None]:
    """For tests that provoke the broker's refusals (ACCESS_REFUSED and the like).

    A refused channel leaves aiormq futures nobody awaits; asyncio would print them
    as unexpected errors at exit. This keeps those (AMQP errors only) quiet.
    """
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if isinstance(context.get("exception"), aiormq.exceptions.AMQPError):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    loop.set_exception_handler(handler)
    yield
    gc.collect()
    loop.set_exception_handler(previous)
