"""The intake's shards: `hub.inbound` cut into queues that several hubs consume at once.

Routing (ARCHITECTURE §5). Agencies publish to `ill.inbound` as ever. The current
generation's consistent-hash exchange `hub.intake.g<N>` is bound to it and spreads
the messages over the shard queues `hub.inbound.g<N>.<i>` by their `correlation_id`,
the requester's request id that every message of one transaction carries. A message
without one hashes like every other message without one, so a sender that never sets
it still has all its messages in one shard, in the order it published them.

Consuming. Every shard is a single-active-consumer queue and every hub subscribes to
every shard: one hub applies a shard's messages, in order, and when it dies RabbitMQ
makes a waiting hub active at once, with the unacked messages back at the head of
the queue. RabbitMQ makes the first subscriber active; so that several hubs share the
work, each hub looks at RabbitMQ's own record of who is active where (management
API, every `intake.balance_seconds`) and hands a shard over (closes its channel and
subscribes again, behind the others) while it is active on more than its share.
Without the management API nothing is handed over: still correct, one hub works.

Changing the shard count (`intake.shards`) starts a new generation, done by the
first hub that starts with the new count, under an advisory lock:
1. declare generation N+1 (exchange and queues, bound together);
2. bind `ill.inbound` to it, then unbind generation N. In between, a message may
   reach both generations: its second copy is a duplicate (same message_id) that the
   inbox ignores. Nothing is unroutable at any moment, so nothing is lost;
3. record N+1 as current. Generation N is now stale: it gets no new messages.
No hub consumes generation N+1 while a stale generation holds a message. Hubs drain
stale queues first (consume until idle, unsubscribe; a queue with no message and no
consumer is deleted), and a running hub that sees a newer generation stops consuming
its shards and helps drain them. Every message of the old generation was published
before every message that reached only the new one, so per-key order holds across
the change. The single `hub.inbound` queue of earlier releases is generation 0 and
is drained the same way.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import random
import secrets
import socket
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

import aiohttp
import asyncpg
from aio_pika.abc import AbstractRobustConnection
from aio_pika.exceptions import AMQPError, ChannelNotFoundEntity

from broker.consumer import Batches, Ending, QueueConsumer
from infra.locks import Lock, transaction_lock
from infra.rabbit_admin import Management, ManagementError
from infra.topology import (
    connect_and_declare,
    declare_intake,
    intake_exchange,
    route_intake_to,
    shard_queue,
    stop_routing_intake_to,
)
from schemas.settings import Settings
from schemas.wire import HUB_INBOUND

log = logging.getLogger(__name__)

# Draining a stale shard: a subscription ends once nothing came for this long.
DRAIN_IDLE_SECONDS = 1.0
# Before looking again whether a stale shard is empty: spread out, so that hubs
# draining the same queue do not keep seeing each other's subscriptions.
DRAIN_RECHECK_SECONDS = (0.1, 0.6)
TAG_PREFIX = "illhub"
# Longest a balancing round may wait for the management API.
BALANCE_TIMEOUT_SECONDS = 5.0

_GENERATIONS = """
SELECT generation, shards, drained_at IS NOT NULL AS drained FROM intake_generation
WHERE vhost = $1 AND prefix = $2 ORDER BY generation"""
_CURRENT = """
SELECT generation, shards, false AS drained FROM intake_generation
WHERE vhost = $1 AND prefix = $2 ORDER BY generation DESC LIMIT 1"""
_STALE = """
SELECT generation, shards, false AS drained FROM intake_generation g
WHERE vhost = $1 AND prefix = $2 AND drained_at IS NULL
  AND generation < (SELECT max(generation) FROM intake_generation
                    WHERE vhost = $1 AND prefix = $2)
ORDER BY generation"""
_ADD = """
INSERT INTO intake_generation (vhost, prefix, generation, shards) VALUES ($1, $2, $3, $4)
ON CONFLICT DO NOTHING"""
_DRAINED = """
UPDATE intake_generation SET drained_at = now()
WHERE vhost = $1 AND prefix = $2 AND generation = $3 AND drained_at IS NULL"""


@dataclass(frozen=True)
class Generation:
    number: int
    shards: int

    def queues(self) -> list[str]:
        return [shard_queue(self.number, i) for i in range(self.shards)]


def _generation(row: asyncpg.Record) -> Generation:
    return Generation(number=row["generation"], shards=row["shards"])


async def current_generation(pool: asyncpg.Pool, settings: Settings) -> Generation | None:
    """The generation of shards hubs consume now in `settings`' broker namespace."""
    row = await pool.fetchrow(_CURRENT, settings.vhost, settings.amqp.name_prefix)
    return _generation(row) if row else None


def new_hub_id() -> str:
    """Names this process in consumer tags: host, pid and a nonce (pids get reused)."""
    return f"{socket.gethostname()}.{os.getpid()}.{secrets.token_hex(2)}"


def consumer_tag(hub_id: str, queue: str) -> str:
    return f"{TAG_PREFIX}/{hub_id}/{queue}"


def hub_of(tag: str) -> str | None:
    parts = tag.split("/")
    return parts[1] if len(parts) == 3 and parts[0] == TAG_PREFIX else None


class IntakeLayout:
    """The shard generations of this hub's broker namespace: in PostgreSQL, and declared."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool,
                 connection: AbstractRobustConnection) -> None:
        self.settings = settings
        self.pool = pool
        self.connection = connection
        self._key = (settings.vhost, settings.amqp.name_prefix)

    async def current(self) -> Generation | None:
        return await current_generation(self.pool, self.settings)

    async def stale(self) -> list[Generation]:
        return [_generation(r) for r in await self.pool.fetch(_STALE, *self._key)]

    async def mark_drained(self, generation: Generation) -> None:
        await self.pool.execute(_DRAINED, *self._key, generation.number)
        if generation.number > 0:
            channel = await self.connection.channel()
            try:
                await channel.exchange_delete(
                    self.settings.name(intake_exchange(generation.number)))
            finally:
                with suppress(Exception):
                    await channel.close()

    async def settle(self) -> Generation:
        """Make the current generation the one the settings ask for; returns it.

        Idempotent, and safe from several hubs at once (one does it, under a lock); a
        crash half-way leaves at worst both generations bound, which the next start
        finishes.
        """
        wanted = self.settings.intake.shards
        async with self.pool.acquire() as conn, conn.transaction():
            await transaction_lock(conn, Lock.INTAKE_LAYOUT)
            known = [(_generation(r), r["drained"])
                     for r in await conn.fetch(_GENERATIONS, *self._key)]
            if not known and await self._legacy_queue_exists():
                await conn.execute(_ADD, *self._key, 0, 1)
                known = [(Generation(0, 1), False)]
            current = known[-1][0] if known else None
            channel = await self.connection.channel()
            try:
                if current is None or current.number == 0 or current.shards != wanted:
                    target = Generation((current.number + 1) if current else 1, wanted)
                    await declare_intake(channel, self.settings, target.number, target.shards)
                    await route_intake_to(channel, self.settings, target.number)
                    await conn.execute(_ADD, *self._key, target.number, target.shards)
                    log.info("intake: generation %d with %d shard(s)%s", target.number,
                             target.shards, f" replaces generation {current.number} "
                             f"({current.shards} shard(s)), drained first"
                             if current else "")
                else:
                    target = current
                    # Declared again: after a broker reset the database still knows it.
                    await declare_intake(channel, self.settings, target.number, target.shards)
                    await route_intake_to(channel, self.settings, target.number)
                for older, drained in known:
                    if older.number != target.number and not drained:
                        await self._stop_routing(older)
            finally:
                with suppress(Exception):
                    await channel.close()
        return target

    async def _legacy_queue_exists(self) -> bool:
        return await self.peek(self.settings.name(HUB_INBOUND)) is not None

    async def _stop_routing(self, generation: Generation) -> None:
        # A channel of its own: unbinding what is already gone closes the channel.
        channel = await self.connection.channel()
        try:
            await stop_routing_intake_to(channel, self.settings, generation.number)
        except (ChannelNotFoundEntity, AMQPError) as exc:
            log.debug("generation %d already unrouted: %s", generation.number, exc)
        finally:
            with suppress(Exception):
                await channel.close()

    async def peek(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, active consumers) of a queue, or None if it does not exist."""
        channel = await self.connection.channel()
        try:
            declared = await channel.declare_queue(queue, passive=True)
        except ChannelNotFoundEntity:
            return None
        finally:
            with suppress(Exception):
                await channel.close()
        result = declared.declaration_result
        return result.message_count or 0, result.consumer_count or 0

    async def delete(self, queue: str) -> None:
        channel = await self.connection.channel()
        try:
            await channel.queue_delete(queue)
        finally:
            with suppress(Exception):
                await channel.close()


class ShardedIntake:
    """Runs this hub's part of the intake: drain stale shards, consume the current ones."""

    def __init__(self, settings: Settings, layout: IntakeLayout, batches: Batches, *,
                 hub_id: str | None = None) -> None:
        self.settings = settings
        self.layout = layout
        self.batches = batches
        self.hub_id = hub_id or new_hub_id()
        self.consumers: dict[str, QueueConsumer] = {}
        self.generation: Generation | None = None
        self._stop = asyncio.Event()
        self._warned_admin = False

    def stop(self) -> None:
        self._stop.set()
        for consumer in self.consumers.values():
            consumer.stop()

    async def run(self) -> None:
        """Until stop(): drain what is stale, then consume the current generation."""
        while not self._stop.is_set():
            try:
                for stale in await self.layout.stale():
                    await self._drain(stale)
                if self._stop.is_set():
                    return
                current = await self.layout.current()
                if current is None:
                    current = await self.layout.settle()
                if await self.layout.stale():
                    continue  # another hub started a newer generation meanwhile
                await self._consume(current)
            except Exception:
                log.exception("intake: shard bookkeeping failed; again in 1 s")
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), 1.0)

    # -- the current generation ------------------------------------------------------

    async def _consume(self, generation: Generation) -> None:
        self.generation = generation
        connection = self.layout.connection
        self.consumers = {
            name: QueueConsumer(connection, self.settings, name, self.batches,
                                consumer_tag=consumer_tag(self.hub_id, name))
            for name in (self.settings.name(q) for q in generation.queues())}
        tasks = [asyncio.create_task(c.run(until=lambda e: e is Ending.STOPPED),
                                     name=f"intake {c.queue}")
                 for c in self.consumers.values()]
        log.info("intake: consuming generation %d (%d shards) as %s", generation.number,
                 generation.shards, self.hub_id)
        try:
            while not self._stop.is_set():
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(),
                                           self.settings.intake.balance_seconds)
                if self._stop.is_set():
                    break
                try:
                    newest = await self.layout.current()
                except (OSError, asyncpg.PostgresError) as exc:
                    # The consumers ride out a database outage on their own; so does this
                    # watch: it looks again next round.
                    log.warning("intake: cannot read the shard layout now (%s)", exc)
                    continue
                if newest is not None and newest.number != generation.number:
                    log.info("intake: generation %d is current now; leaving generation %d",
                             newest.number, generation.number)
                    break
                with suppress(TimeoutError):  # a slow management API only delays balance
                    await asyncio.wait_for(self._balance(), BALANCE_TIMEOUT_SECONDS)
        finally:
            for consumer in self.consumers.values():
                consumer.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            self.consumers = {}
            self.generation = None

    async def _balance(self) -> None:
        """Hand one shard over if this hub is active on more than its share."""
        try:
            async with Management(self.settings.amqp.management_url.get_secret_value()) as api:
                listing = await api.consumers(self.settings.vhost)
        except (ManagementError, aiohttp.ClientError, TimeoutError) as exc:
            if not self._warned_admin:
                log.warning("intake: cannot see who is active on which shard (%s); this hub "
                            "hands nothing over until it can", exc)
                self._warned_admin = True
            return
        active: dict[str, str] = {}
        waiting: dict[str, set[str]] = {}
        hubs: set[str] = set()
        for c in listing:
            hub = hub_of(c.tag)
            if c.queue not in self.consumers or hub is None:
                continue
            hubs.add(hub)
            if c.active:
                active[c.queue] = hub
            else:
                waiting.setdefault(c.queue, set()).add(hub)
        give = shard_to_hand_over(self.hub_id, len(self.consumers), active, waiting, hubs)
        if give is not None:
            log.info("intake: handing %s over to another hub", give)
            self.consumers[give].hand_over()

    # -- stale generations -------------------------------------------------------------

    async def _drain(self, generation: Generation) -> None:
        log.info("intake: draining generation %d before consuming a newer one",
                 generation.number)
        for base in generation.queues():
            await self._drain_queue(self.settings.name(base))
            if self._stop.is_set():
                return
        await self.layout.mark_drained(generation)
        log.info("intake: generation %d drained", generation.number)

    async def _drain_queue(self, name: str) -> None:
        while not self._stop.is_set():
            state = await self.layout.peek(name)
            if state is None:
                return
            messages, consumers = state
            if messages == 0 and consumers == 0:
                # Unrouted, empty and nobody subscribed, so nobody holds a delivery of it.
                await self.layout.delete(name)
                return
            consumer = QueueConsumer(self.layout.connection, self.settings, name,
                                     self.batches, consumer_tag=consumer_tag(self.hub_id, name),
                                     idle_after=DRAIN_IDLE_SECONDS)
            self.consumers[name] = consumer
            try:
                await consumer.run(until=lambda e: e is not Ending.FAILED)
            finally:
                self.consumers.pop(name, None)
            await asyncio.sleep(random.uniform(*DRAIN_RECHECK_SECONDS))


async def declare_hub_topology(settings: Settings, pool: asyncpg.Pool,
                               agencies: Sequence[str] = ()) -> Generation:
    """Everything a hub needs declared: exchanges, agency queues and the intake shards."""
    async with connect_and_declare(settings, agencies) as connection:
        return await IntakeLayout(settings, pool, connection).settle()


def shard_to_hand_over(me: str, shards: int, active: dict[str, str],
                       waiting: dict[str, set[str]], hubs: set[str]) -> str | None:
    """The shard this hub should hand over now, if any (one per round).

    A hub hands over while it is active on more shards than its share (the shard count
    over the hubs subscribed, rounded up), or on more than the rounded-down share while
    another hub has less than that. Only a shard another hub is waiting on is handed
    over, so the next active consumer is another hub.
    """
    if me not in hubs or not hubs:
        return None
    mine = sorted(q for q, hub in active.items() if hub == me)
    counts = Counter(active.values())
    ceiling = math.ceil(shards / len(hubs))
    floor = shards // len(hubs)
    starved = any(counts.get(hub, 0) < floor for hub in hubs)
    if not (len(mine) > ceiling or (len(mine) > floor and starved)):
        return None
    candidates = [q for q in mine if waiting.get(q, set()) - {me}]
    return candidates[0] if candidates else None
