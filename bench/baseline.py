"""The ceiling: the bare pipeline a new request must cross, with no business logic.

Consume a persistent message from a queue, commit it (an inbox row) and an outbox row
to PostgreSQL, publish three persistent messages with publisher confirms to three
queues (in the hub: the requestConfirmation, the ExpectToSupply and the forward),
ack. With the best settings found here: batches of whatever has arrived (group
commit, one multiple-ack), a large prefetch, the database stage of batch n+1
overlapping the publishes of batch n, uvloop when the suite runs on it. Also measured
without the publishes, which shows how much of the ceiling is the broker's.

    .venv/bin/python -m bench.baseline [--messages 20000] [--queue-type quorum]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
import uuid
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage
from pamqp import commands as spec

from bench.network import BenchNetwork, Progress, say, servers_cpu
from infra.publisher import Publish, publish_many
from schemas.settings import Settings

PREFETCH = 2000
BATCH = 500


async def _preload(channel: aio_pika.abc.AbstractChannel, queue: str, n: int,
                   body: bytes) -> None:
    exchange = channel.default_exchange
    for start in range(0, n, 1000):
        await asyncio.gather(*(exchange.publish(aio_pika.Message(
            body=body, message_id=str(uuid.uuid4()), type="request",
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=queue)
            for _ in range(start, min(n, start + 1000))))


async def _declare(connection: aio_pika.abc.AbstractConnection, s: Settings
                   ) -> tuple[aio_pika.abc.AbstractChannel, list[str]]:
    """The input queue and the three output queues of one measurement."""
    tag = secrets.token_hex(2)
    names = [s.name(f"baseline.{tag}.{q}") for q in ("in", "out1", "out2", "out3")]
    setup = await connection.channel(publisher_confirms=True)
    for name in names:
        await setup.declare_queue(name, durable=True,
                                  arguments={"x-queue-type": s.amqp.queue_type})
    return setup, names


async def _clean_up(connection: aio_pika.abc.AbstractConnection, names: list[str],
                    pool: asyncpg.Pool) -> None:
    cleanup = await connection.channel()
    for name in names:
        await cleanup.queue_delete(name)
    await connection.close()
    async with pool.acquire() as conn:
        await conn.execute("DELETE FROM inbox WHERE sender = 'BASELINE'")
        await conn.execute("DELETE FROM outbox WHERE routing_key = 'BASELINE'")


async def pipeline(net: BenchNetwork, messages: int, *, publish: bool = True,
                   batched: bool = False, progress: Progress = say) -> dict[str, Any]:
    """The bare pipeline. `batched`: each batch's publishes in one socket write with
    their confirms awaited together (infra/publisher.py, as the hub's relay publishes
    since issue 20) rather than aio-pika's one write per message."""
    s = net.settings
    connection = await aio_pika.connect(s.amqp_broker_url)
    setup, names = await _declare(connection, s)
    body = json.dumps({"request": {"header": {"requestingAgencyRequestId": "x" * 16},
                                   "bibliographicInfo": {"title": "图书馆论坛" * 20}}},
                      ensure_ascii=False).encode()
    progress(f"baseline{'' if publish else ' (no publishes)'}: preloading "
             f"{messages:,} messages into {s.amqp.queue_type} queue {names[0]} ...")
    await _preload(setup, names[0], messages, body)

    consume = await connection.channel()
    await consume.set_qos(prefetch_count=PREFETCH)
    out = await connection.channel(publisher_confirms=True)
    arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
    committed: asyncio.Queue[list[AbstractIncomingMessage]] = asyncio.Queue(maxsize=2)
    done = asyncio.Event()
    count = 0
    pool = net.pool

    async def database() -> None:
        while True:
            batch = [await arrived.get()]
            while len(batch) < BATCH and not arrived.empty():
                batch.append(arrived.get_nowait())
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    """WITH i AS (INSERT INTO inbox (sender, message_id, message_type, outcome)
                                  SELECT 'BASELINE', m, 'request', 'ok'
                                  FROM unnest($1::text[]) AS m)
                       INSERT INTO outbox (exchange, routing_key, message_id, body)
                       SELECT 'ill.outbound', 'BASELINE', m || '/out', $2
                       FROM unnest($1::text[]) AS m""",
                    [m.message_id for m in batch], body)
            await committed.put(batch)

    async def publisher() -> None:
        nonlocal count
        exchange = out.default_exchange
        while True:
            batch = await committed.get()
            if publish and batched:
                failed = [r for r in await publish_many(out, [
                    Publish(exchange="", routing_key=names[q], body=m.body, mandatory=False,
                            properties=spec.Basic.Properties(
                                message_id=f"{m.message_id}/{q}", message_type="request",
                                content_type="application/json", delivery_mode=2))
                    for m in batch for q in (1, 2, 3)], timeout=30) if r is not None]
                if failed:
                    raise failed[0]
            elif publish:
                await asyncio.gather(*(exchange.publish(aio_pika.Message(
                    body=m.body, message_id=f"{m.message_id}/{q}", type="request",
                    content_type="application/json",
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT), routing_key=names[q])
                    for m in batch for q in (1, 2, 3)))
            await batch[-1].ack(multiple=True)
            count += len(batch)
            if count >= messages:
                done.set()

    queue = await consume.get_queue(names[0])
    cpu0, start, servers0 = time.process_time(), time.perf_counter(), servers_cpu()
    consumer_tag = await queue.consume(arrived.put)
    tasks = [asyncio.create_task(database()), asyncio.create_task(publisher())]
    while not done.is_set():
        try:
            await asyncio.wait_for(done.wait(), 3)
        except TimeoutError:
            progress(f"baseline: {count:,}/{messages:,}")
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu0
    servers = {k: v - servers0[k] for k, v in servers_cpu().items()}
    await queue.cancel(consumer_tag)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await _clean_up(connection, names, pool)
    result = {"messages": messages, "publishes_per_message": 3 if publish else 0,
              "batched": batched,
              "seconds": round(elapsed, 2), "messages_per_s": round(messages / elapsed, 1),
              "client_cpu_s_per_1000": round(cpu / messages * 1000, 3),
              **{f"{k}_cpu_s_per_1000": round(v / messages * 1000, 3)
                 for k, v in servers.items()}}
    progress(f"baseline: {result}")
    return result


async def main(args: argparse.Namespace) -> None:
    net = await BenchNetwork.create(agencies=20, holdings=3000, queue_type=args.queue_type)
    try:
        results = {"baseline": await pipeline(net, args.messages),
                   "baseline_no_publish": await pipeline(net, args.messages, publish=False)}
        print(json.dumps(results, indent=2))
    finally:
        await net.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--queue-type", default="quorum", choices=["quorum", "classic"])
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)

