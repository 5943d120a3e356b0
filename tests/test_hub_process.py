"""The hub as an operating-system process: `run.py hub`, SIGTERM, restart, nothing lost."""

from __future__ import annotations

import asyncio
import signal

import asyncpg

from app.hub import Hub
from broker.shards import declare_hub_topology
from illclient.client import AgencyClient
from schemas.settings import Settings
from tests.support import messages
from tests.support.cli import start_hub


async def test_sigterm_while_messages_flow_loses_nothing(settings: Settings, pool: asyncpg.Pool,
                                                         make_agency) -> None:
    total = 400
    symbol, pw = await make_agency()
    await declare_hub_topology(settings, pool)
    first = await start_hub(settings)
    async with AgencyClient(settings, symbol, pw) as lib:
        # Wait for the hub to answer before loading it.
        await lib.send("request", messages.request(symbol, request_id="warm-up"))
        await lib.receive(timeout=30)
        await lib.receive(timeout=30)  # no supplier holds it: Unfilled follows

        async def publish() -> None:
            for i in range(total):
                await lib.send("request", messages.request(symbol, request_id=f"R{i:04d}",
                                                           patron_id=f"P{i}"))
                if i % 20 == 0:
                    await asyncio.sleep(0.01)

        publisher = asyncio.create_task(publish())
        while lib.inbox.qsize() < 120:  # noqa: ASYNC110 - polling another process's effect
            await asyncio.sleep(0.01)
        first.send_signal(signal.SIGTERM)
        out, _ = await asyncio.wait_for(first.communicate(), 60)
        assert first.returncode == 0, out.decode()[-2000:]
        assert b"hub stopped" in out
        await publisher
        second = await start_hub(settings)
        try:
            seen: dict[str, set[str]] = {}
            while len(seen) < total:
                got = await lib.receive(timeout=60)
                if got.kind != "requestConfirmation":
                    continue
                rid = got.content["confirmationHeader"]["requestingAgencyRequestId"]
                assert got.content["confirmationHeader"]["messageStatus"] == "OK"
                seen.setdefault(rid, set()).add(got.message_id)
        finally:
            second.send_signal(signal.SIGTERM)
            await asyncio.wait_for(second.communicate(), 60)
    assert set(seen) == {f"R{i:04d}" for i in range(total)}
    # At-least-once publishing may repeat a confirmation, but only with the same message_id.
    assert all(len(ids) == 1 for ids in seen.values())
    assert second.returncode == 0


async def test_stop_lets_a_scheduled_job_in_flight_finish(settings: Settings,
                                                          database_url: str) -> None:
    """A sweep running when the hub is told to stop completes instead of being cut off."""
    hub = Hub(settings, delivery=False)
    await hub.start()
    finished = asyncio.Event()
    started = asyncio.Event()

    async def slow_tick() -> None:
        started.set()
        await asyncio.sleep(0.5)
        finished.set()

    hub.scheduler.add_job(slow_tick, id="slow-test-job")
    await asyncio.wait_for(started.wait(), 10)
    await hub.stop()
    assert finished.is_set()
