"""The hub process: consume `hub.inbound`, relay the outbox, run scheduled jobs.

Shutdown on SIGTERM/SIGINT: stop consuming, finish the message in hand, let the
relay publish what is committed, then close. Messages prefetched but not yet
processed are not acked and go back to the queue when the channel closes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from contextlib import suppress

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage, AbstractRobustConnection
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from broker.dispatch import Dispatcher
from broker.intake import Inbound, Intake
from delivery.ftp import FtpDrop, start_ftp
from delivery.gateway import HttpServer, make_app, start_http
from delivery.intake import release_drops
from delivery.mail import MailSender
from delivery.retention import schedule_retention
from infra import observability, topology
from infra.database import create_pool
from infra.outbox import Relay
from schemas.settings import Settings
from settlement.settle import scheduled_settlement

log = logging.getLogger(__name__)

JOB_GRACE_SECONDS = 10.0


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


class Hub:
    def __init__(self, settings: Settings, dispatcher: Dispatcher | None = None, *,
                 delivery: bool = True) -> None:
        self.settings = settings
        self.dispatcher = dispatcher or Dispatcher(settings)
        # The FTP drop, the download gateway and the mail sender run in every hub
        # process unless turned off (a process dedicated to intake, or a unit test).
        self.serve_delivery = delivery
        self.ftp: FtpDrop | None = None
        self.http: HttpServer | None = None
        self.mailer: MailSender | None = None
        self.intake = Intake(settings, self.dispatcher)
        self.scheduler = AsyncIOScheduler(timezone=settings.timezone)
        self.pool: asyncpg.Pool | None = None
        self.connection: AbstractRobustConnection | None = None
        self.relay: Relay | None = None
        self.processed = 0
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        s = self.settings
        self.pool = await create_pool(s.database_url.get_secret_value(), max_size=10)
        self.connection = await aio_pika.connect_robust(s.amqp_url.get_secret_value())
        setup = await self.connection.channel()
        agencies = [r["symbol"] for r in await self.pool.fetch(
            "SELECT symbol FROM agency WHERE enabled ORDER BY symbol")]
        await topology.declare(setup, s, agencies)
        await setup.close()
        relay_channel = await self.connection.channel(publisher_confirms=True,
                                                      on_return_raises=True)
        self.relay = Relay(self.pool, relay_channel, s)
        self._tasks = [asyncio.create_task(self.relay.run(), name="outbox-relay"),
                       asyncio.create_task(self._consume(), name="intake")]
        if self.serve_delivery:
            await self._start_delivery()
        self.scheduler.add_job(self._sweep, "interval", seconds=s.sweep_seconds,
                               id="deadline-sweep", max_instances=1, coalesce=True)
        self.scheduler.add_job(self._settle, CronTrigger.from_crontab(
            s.settlement_cron, timezone=s.timezone), id="settlement", max_instances=1,
            coalesce=True)
        self.scheduler.start()
        log.info("hub started: vhost %s, prefix %r, %d agencies", s.vhost, s.name_prefix,
                 len(agencies))

    async def _start_delivery(self) -> None:
        assert self.pool
        d = self.dispatcher.delivery
        self.ftp = await start_ftp(self.settings, self.pool, d)
        app = make_app(self.settings, self.pool, delivery=d)
        observability.add_routes(app, self.pool, self._broker_up)
        # ISO 18626 over HTTP: XML peers POST here, and get what is theirs POSTed back.
        from broker.peers import PeerRelay
        from web.iso18626 import Iso18626Endpoint

        Iso18626Endpoint(self.settings, self.pool, self.intake).add_routes(app)
        self.peers = PeerRelay(self.pool, self.settings)
        self._tasks.append(asyncio.create_task(self.peers.run(), name="iso18626-peers"))
        self.http = await start_http(self.settings, self.pool, delivery=d, app=app)
        self.dispatcher.base_url = d.public_base_url or self.http.base_url
        self.mailer = MailSender(self.pool, self.settings, d)
        self._tasks.append(asyncio.create_task(self.mailer.run(), name="mail-sender"))
        schedule_retention(self.scheduler, self.settings, self.pool, d)
        self.scheduler.add_job(self._release_drops, "interval", seconds=30,
                               id="delivery.release", max_instances=1, coalesce=True)

    def _broker_up(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def _release_drops(self) -> None:
        assert self.pool
        try:
            await release_drops(self.pool, self.settings)
        except Exception:
            log.exception("releasing delivered uploads failed; next tick retries")

    async def _settle(self) -> None:
        """Close the previous period; the advisory lock makes one hub process do it."""
        assert self.pool
        try:
            period = await scheduled_settlement(
                self.pool, self.settings, centre_email=self.settings.centre_finance_email)
            if period:
                log.info("settlement of %s done", period)
        except Exception:
            log.exception("scheduled settlement failed; run `run.py settle` to retry")

    async def _sweep(self) -> None:
        assert self.pool
        try:
            n = await self.dispatcher.sweep_deadlines(self.pool)
            if n:
                log.info("deadline sweep: %d silent supplier(s) cancelled and skipped", n)
        except Exception:
            log.exception("deadline sweep failed; next tick retries")

    async def _consume(self) -> None:
        while not self._stop.is_set():
            try:
                if await self._consume_until_failure():
                    return
            except Exception:
                # No channel (the broker connection is down and reconnecting): try again.
                log.warning("cannot consume %s now; trying again in 1 s",
                            topology.HUB_INBOUND, exc_info=True)
            # Something failed, and nothing delivered after it may overtake it (a
            # supplier's Loaned must not be applied before its WillSupply): closing the
            # channel handed every unacked delivery back to the queue, in order. Start
            # again after a pause; the queue's delivery limit dead-letters a message that
            # fails every time.
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    async def _consume_until_failure(self) -> bool:
        """Consume and process in batches; True when told to stop, False after a failure."""
        assert self.connection and self.pool
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        # Declared (passively), not merely looked up: only a declared queue is re-consumed
        # when the robust connection comes back after a broker restart.
        queue = await channel.declare_queue(self.settings.name(topology.HUB_INBOUND), passive=True)
        arrived: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        await queue.consume(arrived.put)
        stop = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                first = asyncio.create_task(arrived.get())
                done, _ = await asyncio.wait({first, stop},
                                             return_when=asyncio.FIRST_COMPLETED)
                if first not in done:
                    first.cancel()
                    with suppress(asyncio.CancelledError):
                        await first
                    break
                # Group commit: whatever has already arrived joins this transaction. No
                # waiting for stragglers, so a lone message is not delayed.
                batch = [first.result()]
                while len(batch) < self.settings.intake_batch and not arrived.empty():
                    batch.append(arrived.get_nowait())
                if not await self._process(batch):
                    return False
            return True
        finally:
            stop.cancel()
            # No basic.cancel first: that would make another hub the single active
            # consumer while this one still holds unacked deliveries, and it could apply
            # a later message before an earlier one comes back. Closing the channel
            # returns everything unacked (still in `arrived`, or in flight) to the queue
            # ahead of newer messages, and only then hands the queue over.
            with suppress(Exception):
                await channel.close()

    async def _process(self, batch: list[AbstractIncomingMessage]) -> bool:
        """One transaction for the batch, in delivery order; one ack after the commit.

        If anything in the batch fails, the whole transaction rolls back and the
        messages are processed one by one, so one poison message costs its neighbours
        nothing but a retry. False: a message failed on its own (nothing of it or of
        what came after it was acked).
        """
        assert self.pool
        started = time.perf_counter()
        outcomes: list[str] = []
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
            for i, message in enumerate(batch):
                try:
                    async with self.pool.acquire() as conn:
                        async with conn.transaction():
                            outcome = await self.intake.process_in(conn, to_inbound(message))
                        self._count([message], [outcome], started)
                except Exception:
                    log.exception("processing failed; message %s and everything delivered "
                                  "after it go back to the queue", batch[i].message_id)
                    return False
                await self._acked([message], [outcome], multiple=False)
            return True
        await self._acked(batch, outcomes, multiple=True)
        return True

    def _count(self, batch: list[AbstractIncomingMessage], outcomes: list[str],
               started: float) -> None:
        elapsed = time.perf_counter() - started
        self.processed += len(batch)
        for message, outcome in zip(batch, outcomes, strict=True):
            observability.INTAKE_SECONDS.observe(elapsed)
            observability.MESSAGES_IN.labels(message.type or "unknown", outcome).inc()

    async def _acked(self, batch: list[AbstractIncomingMessage], outcomes: list[str],
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

    async def stop(self) -> None:
        """Graceful stop; safe to call more than once."""
        self._stop.set()
        if self._tasks:
            with suppress(asyncio.CancelledError):
                await self._tasks[1]
        if self.scheduler.running:
            self.scheduler.pause()
            # A scheduled job in flight (sweep, retention, settlement) gets a moment to
            # finish; one still running then is cancelled, its transaction rolls back, and
            # the next tick, in this or another hub process, does the work again.
            jobs = [t for t in asyncio.all_tasks()
                    if getattr(t.get_coro(), "__qualname__", "") == "run_coroutine_job"]
            if jobs:
                await asyncio.wait(jobs, timeout=JOB_GRACE_SECONDS)
            self.scheduler.shutdown(wait=False)
        if self.mailer:
            self.mailer.stop()
        if getattr(self, "peers", None) is not None:
            self.peers.stop()
        for server in (self.ftp, self.http):
            if server is not None:
                with suppress(Exception):
                    await server.stop()
        if self.relay:
            with suppress(Exception):
                await self.relay.drain()
            self.relay.stop()
        for task in (self._tasks[0], *self._tasks[2:]):
            with suppress(asyncio.CancelledError):
                await task
        if self.connection:
            await self.connection.close()
        if self.pool:
            await self.pool.close()
        self._tasks = []
        log.info("hub stopped after %d messages", self.processed)

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        await self.start()
        await self._stop.wait()
        await self.stop()
