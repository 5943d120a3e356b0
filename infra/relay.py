"""The outbox relay: publishes committed outbox rows to RabbitMQ.

Delivery semantics (be honest with integrators): at least once. The relay marks
a row published only after the broker confirmed it; a crash between the confirm
and that mark publishes the row again, with the same `message_id`, so every
receiver must de-duplicate on `message_id`. Only one relay publishes at a time
across all hub processes (an advisory lock per batch), which keeps the messages
to one agency in the order they were written.
"""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime

import asyncpg
from aio_pika.abc import AbstractChannel, AbstractExchange
from aio_pika.exceptions import DeliveryError, PublishError
from pamqp import commands as spec

from infra.locks import Lock, try_transaction_lock
from infra.observability import MESSAGES_OUT
from infra.publisher import Publish, publish_many
from infra.topology import EXCHANGES
from schemas.settings import Settings
from schemas.wire import DEAD, OUTBOUND

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "illhub_outbox"
MAX_BACKOFF_SECONDS = 300
BROKER_RETRY_SECONDS = 0.5
PUBLISH_TIMEOUT_SECONDS = 10.0
MANDATORY = frozenset({OUTBOUND, DEAD})
PERSISTENT = 2  # AMQP delivery mode: written to disk by the broker


class Relay:
    """Publishes outbox rows with publisher confirms and mandatory routing."""

    def __init__(self, pool: asyncpg.Pool, channel: AbstractChannel, settings: Settings) -> None:
        self.pool = pool
        self.channel = channel
        self.settings = settings
        self._exchanges: dict[str, AbstractExchange] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._listener: asyncpg.Connection | None = None
        self._broker_down = False

    async def _exchange(self, base: str) -> AbstractExchange:
        if base not in self._exchanges:
            kind = EXCHANGES.get(base)
            if kind is None:
                raise ValueError(f"outbox row names unknown exchange {base!r}")
            self._exchanges[base] = await self.channel.declare_exchange(
                self.settings.name(base), kind, durable=True)
        return self._exchanges[base]

    async def run(self) -> None:
        """Publish until stop(). A lost database session (PostgreSQL restarted, the session
        terminated) or any other failure costs a pause, never the relay itself: a hub
        whose relay died would consume and commit but never send."""
        while not self._stopping:
            try:
                await self._listen_and_publish()
            except Exception:
                log.exception("outbox relay failed; starting again in 1 s")
                await asyncio.sleep(1.0)

    async def _listen_and_publish(self) -> None:
        self._listener = await asyncpg.connect(self.settings.database_url)
        try:
            await self._listener.add_listener(NOTIFY_CHANNEL, lambda *_: self._wake.set())
            while not self._stopping:
                if self._listener.is_closed():
                    raise ConnectionError("the relay's LISTEN session was closed")
                self._broker_down = False
                sent = await self.publish_batch()
                if self._broker_down:
                    await asyncio.sleep(BROKER_RETRY_SECONDS)
                elif sent == 0:
                    self._wake.clear()
                    try:
                        await asyncio.wait_for(self._wake.wait(),
                                               self.settings.outbox.poll_seconds)
                    except TimeoutError:
                        pass
        finally:
            self._listener.terminate()

    async def drain(self) -> None:
        """Publish until nothing is due (used at shutdown and in tests)."""
        while await self.publish_batch():
            pass

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def publish_batch(self) -> int:
        """Publish one batch of due rows; returns how many were confirmed."""
        async with self.pool.acquire() as conn, conn.transaction():
            if not await try_transaction_lock(conn, Lock.OUTBOX_RELAY):
                return 0
            rows = await conn.fetch(
                """SELECT id, exchange, routing_key, message_id, message_type,
                          correlation_id, headers, body, attempts
                   FROM outbox
                   WHERE published_at IS NULL AND available_at <= now()
                     AND transport = 'amqp'  -- ISO 18626 HTTP peers: broker/peers.py
                   ORDER BY id LIMIT $1""",
                self.settings.outbox.batch,
            )
            if not rows:
                return 0
            messages = [await self._message(r) for r in rows]
            results = await publish_many(self.channel, messages, PUBLISH_TIMEOUT_SECONDS)
            done = [r["id"] for r, res in zip(rows, results, strict=True) if res is None]
            failed = [(r, res) for r, res in zip(rows, results, strict=True) if res is not None]
            for r, res in zip(rows, results, strict=True):
                if res is None:
                    MESSAGES_OUT.labels(r["exchange"], r["message_type"] or "-").inc()
            if done:
                await conn.execute(
                    "UPDATE outbox SET published_at = now(), attempts = attempts + 1 "
                    "WHERE id = ANY($1::bigint[])", done)
            # The broker refusing one message (unroutable, nacked) is that message's
            # problem: back off. Anything else (channel closed, connection lost) is the
            # broker's, and says nothing about the rows: they stay due and go out as
            # soon as the connection is back, with no backoff piled up meanwhile.
            if any(not isinstance(exc, DeliveryError | PublishError) for _, exc in failed):
                log.warning("outbox relay: broker unavailable (%s); %d message(s) wait",
                            _describe(next(exc for _, exc in failed)), len(failed))
                failed = [(r, exc) for r, exc in failed
                          if isinstance(exc, DeliveryError | PublishError)]
                self._broker_down = True
            for row, exc in failed:
                delay = min(MAX_BACKOFF_SECONDS, 2 ** min(row["attempts"], 12))
                log.warning("outbox %s to %s/%s not delivered (%s); retry in %ss",
                            row["message_id"], row["exchange"], row["routing_key"], exc, delay)
                await conn.execute(
                    """UPDATE outbox SET attempts = attempts + 1, last_error = $2,
                              available_at = now() + make_interval(secs => $3)
                       WHERE id = $1""",
                    row["id"], _describe(exc), float(delay))
            return len(done)

    async def _message(self, row: asyncpg.Record) -> Publish:
        exchange = await self._exchange(row["exchange"])
        properties = spec.Basic.Properties(
            content_type="application/json", content_encoding="utf-8",
            delivery_mode=PERSISTENT, message_id=row["message_id"],
            message_type=row["message_type"], correlation_id=row["correlation_id"],
            timestamp=datetime.now(UTC),
            headers=json.loads(row["headers"]) if row["headers"] else {})
        # An agency's message with no queue to land in is an error to retry; an event or
        # finance summary nobody subscribed to is simply not wanted by anyone yet.
        # Confirms are bounded (PUBLISH_TIMEOUT_SECONDS): a confirm lost with a dropped
        # connection would otherwise hold the relay (and its lock) forever; a timeout
        # counts as the broker being away.
        return Publish(exchange=exchange.name, routing_key=row["routing_key"],
                       body=bytes(row["body"]), properties=properties,
                       mandatory=row["exchange"] in MANDATORY)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, DeliveryError):
        frame = exc.frame
        reply = getattr(frame, "reply_text", None) if frame is not None else None
        return f"unroutable: {reply or 'no queue bound for this routing key'}"
    if isinstance(exc, PublishError):
        return f"broker refused: {exc}"
    return f"{type(exc).__name__}: {exc}"
