"""Consuming one intake queue: batches of deliveries, one transaction each, acked after commit.

A QueueConsumer owns one channel on one queue (a shard of `hub.inbound`, see
broker/shards.py). The queue has a single active consumer, so what this consumer
gets is in the order its senders published it; group commit keeps that order:

- Whatever has already been delivered (up to `intake.batch`) shares one PostgreSQL
  transaction, in delivery order, and one multiple-ack after the commit. A lone
  message is not delayed waiting for company.
- If the transaction fails, the batch is redone one message at a time, so one poison
  message costs its neighbours nothing but a retry.
- If a message fails on its own, nothing delivered after it may overtake it (a
  supplier's Loaned must not be applied before its WillSupply): the channel is closed,
  which hands every unacked delivery back to the queue in order, and consuming starts
  again after a pause. The queue's delivery limit dead-letters a message that fails
  every time.
- Never a basic.cancel before closing: that would make another hub the active
  consumer while this one still holds unacked deliveries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum

import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection

from broker.intake import Inbound, Intake, IntakeOutcome
from infra import observability
from schemas.settings import Settings

log = logging.getLogger(__name__)

RETRY_PAUSE_SECONDS = 1.0


def to_inbound(message: AbstractIncomingMessage) -> Inbound:
    return Inbound(
        body=message.body,
        sender=message.user_id,
        message_id=message.message_id,
        routing_key=message.routing_key or "",
        content_type=message.content_type,
        message_type=message.type,
        correlation_id=message.correlation_id,
        headers=dict(message.headers or {}),
    )


class Ending(Enum):
    """Why a QueueConsumer's subscription ended."""

    STOPPED = "stopped"  # told to stop (hub shutdown, or the shard layout changed)
    HANDED_OVER = "handed over"  # told to let another hub be the active consumer
    IDLE = "idle"  # nothing delivered for `idle_after` seconds (draining an old shard)
    FAILED = "failed"  # a message failed on its own; unacked deliveries went back


@dataclass
class Batches:
    """What processing a batch needs: the pool, the intake, and what is counted."""

    pool: asyncpg.Pool
    intake: Intake
    on_processed: Callable[[int], None] = lambda n: None

    async def process(self, batch: list[AbstractIncomingMessage]) -> bool:
        """One transaction for the batch; one ack after the commit.

        False: a message failed on its own (nothing of it, or of what came after it,
        was acked).
        """
        started = time.perf_counter()
        try:
            async with self.pool.acquire() as conn:
                async with conn.transaction():
                    outcomes = await self.intake.process_batch(
                        conn, [to_inbound(m) for m in batch])
                # Counted the moment the commit returns, before the relay can publish the
                # answers: whoever sees an answer sees it counted in /metrics.
                self._count(batch, outcomes, started)
        except Exception:
            if len(batch) > 1:
                log.warning("a batch of %d inbound messages failed; processing them one by "
                            "one", len(batch), exc_info=True)
            return await self._one_by_one(batch, started)
        await self._acked(batch, outcomes, multiple=True)
        return True

    async def _one_by_one(self, batch: list[AbstractIncomingMessage], started: float) -> bool:
        for message in batch:
            try:
                async with self.pool.acquire() as conn:
                    async with conn.transaction():
                        outcome = await self.intake.process_in(conn, to_inbound(message))
                    self._count([message], [outcome], started)
            except Exception:
                log.exception("processing failed; message %s and everything delivered "
                              "after it go back to the queue", message.message_id)
                return False
            await self._acked([message], [outcome], multiple=False)
        return True

    def _count(self, batch: list[AbstractIncomingMessage], outcomes: list[IntakeOutcome],
               started: float) -> None:
        elapsed = time.perf_counter() - started
        self.on_processed(len(batch))
        for message, outcome in zip(batch, outcomes, strict=True):
            observability.INTAKE_SECONDS.observe(elapsed)
            observability.MESSAGES_IN.labels(message.type or "unknown", outcome.value).inc()

    async def _acked(self, batch: list[AbstractIncomingMessage], outcomes: list[IntakeOutcome],
                     *, multiple: bool) -> None:
        try:
            # Deliveries on one channel are acked in order, so one multiple-ack of the
            # last message acknowledges the whole batch.
            await batch[-1].ack(multiple=multiple)
        except Exception:
            # Committed but not acked (the channel died): the broker redelivers and the
            # inbox answers "duplicate"; nothing is applied twice.
            log.warning("ack failed after commit; the messages will come back as duplicates",
                        exc_info=True)
        if self.intake.on_commit:
            for message, outcome in zip(batch, outcomes, strict=True):
                await self.intake.on_commit(to_inbound(message), outcome)


class QueueConsumer:
    """Consumes one queue on its own channel until told otherwise (see module docstring)."""

    def __init__(self, connection: AbstractRobustConnection, settings: Settings, queue: str,
                 batches: Batches, *, consumer_tag: str | None = None,
                 idle_after: float | None = None) -> None:
        self.connection = connection
        self.settings = settings
        self.queue = queue
        self.batches = batches
        self.consumer_tag = consumer_tag
        # Draining an old shard: end the subscription once nothing came for this long.
        self.idle_after = idle_after
        self._stop = asyncio.Event()
        self._hand_over = asyncio.Event()

    def stop(self) -> None:
        self._stop.set()

    def hand_over(self) -> None:
        """End this subscription after the batch in hand (another hub becomes active)."""
        self._hand_over.set()

    async def run(self, until: Callable[[Ending], bool]) -> Ending:
        """Subscribe again and again until `until(ending)` says enough, or stop()."""
        while True:
            try:
                ending = await self.subscribe_once()
            except Exception:
                # No channel (the broker connection is down and reconnecting): try again.
                log.warning("cannot consume %s now; trying again in %.0f s", self.queue,
                            RETRY_PAUSE_SECONDS, exc_info=True)
                ending = Ending.FAILED
            if self._stop.is_set():
                return Ending.STOPPED
            if until(ending):
                return ending
            if ending is Ending.FAILED:
                with suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), RETRY_PAUSE_SECONDS)

    async def subscribe_once(self) -> Ending:
        channel = await self.connection.channel()
        try:
            await channel.set_qos(prefetch_count=self.settings.intake.prefetch)
            # Declared (passively), not merely looked up: only a declared queue is
            # re-consumed when the robust connection comes back after a broker restart.
            queue = await channel.declare_queue(self.queue, passive=True)
            arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
            await queue.consume(arrived.put, consumer_tag=self.consumer_tag)
            self._hand_over.clear()
            return await self._batches_until_ending(arrived)
        finally:
            # Closing the channel returns everything unacked (still in `arrived`, or in
            # flight) to the queue ahead of newer messages, and only then lets another
            # consumer become active.
            with suppress(Exception):
                await channel.close()

    async def _batches_until_ending(
            self, arrived: asyncio.Queue[AbstractIncomingMessage]) -> Ending:
        stop = asyncio.create_task(self._stop.wait())
        hand_over = asyncio.create_task(self._hand_over.wait())
        try:
            while True:
                first = asyncio.create_task(arrived.get())
                done, _ = await asyncio.wait({first, stop, hand_over}, timeout=self.idle_after,
                                             return_when=asyncio.FIRST_COMPLETED)
                if first not in done:
                    first.cancel()
                    with suppress(asyncio.CancelledError):
                        await first
                    if stop in done:
                        return Ending.STOPPED
                    return Ending.HANDED_OVER if hand_over in done else Ending.IDLE
                batch = [first.result()]
                while len(batch) < self.settings.intake.batch and not arrived.empty():
                    batch.append(arrived.get_nowait())
                if not await self.batches.process(batch):
                    return Ending.FAILED
                if self._stop.is_set():
                    return Ending.STOPPED
                if self._hand_over.is_set():
                    return Ending.HANDED_OVER
        finally:
            for task in (stop, hand_over):
                task.cancel()

