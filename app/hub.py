"""The hub process, wired: intake shards, outbox relay, delivery servers, scheduled jobs.

Everything a hub process runs is built here from one Settings and one pool; the
domains below never build their own. Several hub processes may run at once against
one RabbitMQ and one PostgreSQL (ARCHITECTURE §5).

Shutdown on SIGTERM/SIGINT: stop consuming, finish the batch in hand, let the relay
publish what is committed, then close. Messages prefetched but not yet processed are
not acked and go back to their queue when the channel closes.
"""

from __future__ import annotations

import asyncio
import datetime
import gc
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import suppress

import aio_pika
import asyncpg
from aio_pika.abc import AbstractRobustConnection
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger

from broker.agencies import enabled_symbols
from broker.consumer import Batches
from broker.copyright import purge_declarations
from broker.copyright import vocabulary as copyright_vocabulary
from broker.dispatch.counts import FOLD_SECONDS, VACUUM_SECONDS, fold, vacuum
from broker.dispatch.dispatcher import Dispatcher
from broker.holdings_mail import mail_last_month
from broker.intake import Intake
from broker.peers import PeerRelay
from broker.pull_slip_mail import send_todays_pull_slips
from broker.shards import IntakeLayout, ShardedIntake
from delivery.ftp import FtpDrop, start_ftp
from delivery.intake import release_drops
from delivery.retention import schedule_retention
from infra import topology
from infra.database import create_pool
from infra.mailqueue import MailSender
from infra.relay import Relay
from infra.tls import ClientContexts, ServerContexts, first_connection
from schemas.settings import Settings
from settlement.calendar import local_date
from settlement.deposits import sweep_low_balances
from settlement.dues import send_reminders
from settlement.run import scheduled_settlement
from web.app import HttpServer, make_app, start_http

log = logging.getLogger(__name__)

JOB_GRACE_SECONDS = 10.0
DRAIN_SECONDS = 5.0
TASK_GRACE_SECONDS = 2.0
POOL_SIZE = 10
RELEASE_DROPS_SECONDS = 30
# Allocations between two collections of the youngest generation (see _tune_collector).
GC_YOUNG_THRESHOLD = 20_000


class Hub:
    def __init__(self, settings: Settings, dispatcher: Dispatcher | None = None, *,
                 delivery: bool = True) -> None:
        self.settings = settings
        self.dispatcher = dispatcher or Dispatcher(settings)
        # The FTP drop, the HTTP server and the mail sender run in every hub process
        # unless turned off (a process dedicated to intake, or a unit test).
        self.serve_delivery = delivery
        self.ftp: FtpDrop | None = None
        self.http: HttpServer | None = None
        self.mailer: MailSender | None = None
        self.peers: PeerRelay | None = None
        self.intake = Intake(settings, self.dispatcher)
        self.scheduler = AsyncIOScheduler(timezone=settings.timezone)
        self.pool: asyncpg.Pool | None = None
        # The intake's own connections: the same few statements for every message, with
        # plans kept (infra/database.create_pool).
        self.intake_pool: asyncpg.Pool | None = None
        self.connection: AbstractRobustConnection | None = None
        self.relay: Relay | None = None
        self.shards: ShardedIntake | None = None
        self.servers: ServerContexts | None = None
        self.clients: ClientContexts | None = None
        self.processed = 0
        self._stop = asyncio.Event()
        self._intake_task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        s = self.settings
        # Every TLS file is read before anything connects: a wrong one stops the hub
        # here, naming its setting (infra/tls.py).
        self.servers = ServerContexts.from_settings(s, drop=self.serve_delivery)
        self.clients = ClientContexts.from_settings(s)
        # The copyright vocabulary too: a bad file stops the hub here, not at the first
        # copy request (VocabularyError names the setting; run.py exits 2).
        copyright_vocabulary(s.copyright)
        # A certificate the CA does not verify is named by its setting, not left as a
        # bare SSL error.
        with first_connection(s, "database"):
            self.pool = await create_pool(s.database_url, max_size=POOL_SIZE)
            # One connection per intake shard this hub may consume at once.
            self.intake_pool = await create_pool(s.database_url, max_size=s.intake.shards,
                                                 generic_plans=True)
        with first_connection(s, "amqp"):
            self.connection = await aio_pika.connect_robust(s.amqp_broker_url)
        setup = await self.connection.channel()
        agencies = await enabled_symbols(self.pool)
        await topology.declare(setup, s, agencies)
        await setup.close()
        layout = IntakeLayout(s, self.pool, self.connection)
        await layout.settle()
        relay_channel = await self.connection.channel(publisher_confirms=True,
                                                      on_return_raises=True)
        self.relay = Relay(self.pool, relay_channel, s)
        self.shards = ShardedIntake(s, layout,
                                    Batches(self.intake_pool, self.intake, self._count))
        self._intake_task = asyncio.create_task(self.shards.run(), name="intake")
        self._tasks = [asyncio.create_task(self.relay.run(), name="outbox-relay")]
        if self.serve_delivery:
            await self._start_delivery()
        self._schedule(self._sweep, "deadline-sweep", "interval",
                       seconds=s.deadlines.sweep_seconds)
        self._schedule(self._fold_counts, "fold-counts", "interval", seconds=FOLD_SECONDS)
        self._schedule(lambda: vacuum(self._pool()), "vacuum-counts", "interval",
                       seconds=VACUUM_SECONDS)
        self._schedule(self._settle, "settlement",
                       CronTrigger.from_crontab(s.settlement.cron, timezone=s.timezone))
        self._schedule(self._payments, "payments-sweep", "interval",
                       minutes=s.payments.sweep_minutes)
        self._schedule(lambda: mail_last_month(self._pool(), s), "holdings-quality-mail",
                       CronTrigger(day=2, hour=8, timezone=s.timezone))
        # Each supplier's pull slips and shipping labels for the day, at 08:30 local time
        # (issue 19): once per supplier and day, whichever hub claims it.
        self._schedule(lambda: send_todays_pull_slips(self._pool(), s), "pull-slips",
                       CronTrigger(hour=8, minute=30, timezone=s.timezone))
        # Copyright declarations past their keeping time (issue 19), nightly.
        self._schedule(self._purge_declarations, "copyright-purge",
                       CronTrigger(hour=3, minute=10, timezone=s.timezone))
        self.scheduler.start()
        _tune_collector()
        log.info("hub started: vhost %s, prefix %r, %d agencies; consumer tags name it %s",
                 s.vhost, s.amqp.name_prefix, len(agencies), self.shards.hub_id)

    def _count(self, n: int) -> None:
        self.processed += n

    def _schedule(self, job: Callable[[], Awaitable[None]], name: str, trigger: object,
                  **options: float) -> None:
        self.scheduler.add_job(_logged(job, name), trigger, id=name, max_instances=1,
                               coalesce=True, **options)

    async def _start_delivery(self) -> None:
        pool = self._pool()
        if self.servers is None or self.clients is None:
            raise RuntimeError("TLS contexts are built in start()")
        self.ftp = await start_ftp(self.settings, pool, ssl=self.servers.ftp)
        app = make_app(self.settings, pool, broker_up=self._broker_up, intake=self.intake)
        self.http = await start_http(self.settings, app, ssl=self.servers.http)
        # With port 0 the readers' links can name the port only now.
        self.dispatcher.base_url = self.settings.http.public_base_url or self.http.base_url
        self.peers = PeerRelay(pool, self.settings, ssl=self.clients.peers)
        self.mailer = MailSender(pool, self.settings, tls_context=self.clients.smtp)
        self._tasks += [asyncio.create_task(self.peers.run(), name="iso18626-peers"),
                        asyncio.create_task(self.mailer.run(), name="mail-sender")]
        schedule_retention(self.scheduler, self.settings, pool)
        self._schedule(self._release_drops, "delivery.release", "interval",
                       seconds=RELEASE_DROPS_SECONDS)

    def _pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("the hub is not started")
        return self.pool

    def _broker_up(self) -> bool:
        return self.connection is not None and not self.connection.is_closed

    async def _release_drops(self) -> None:
        await release_drops(self._pool(), self.settings)

    async def _settle(self) -> None:
        """Close the previous period; the advisory lock makes one hub process do it."""
        period = await scheduled_settlement(
            self._pool(), self.settings,
            centre_email=self.settings.settlement.centre_finance_email)
        if period:
            log.info("settlement of %s done", period)

    async def _payments(self) -> None:
        """Reminders and overdue notices due today (once per stage, whichever hub sends),
        and alerts for prepaid deposits running low (once per fall below the threshold)."""
        today = local_date(datetime.datetime.now(datetime.UTC), self.settings.timezone)
        async with self._pool().acquire() as conn:
            sent = await send_reminders(conn, self.settings.payments, today)
            alerts = await sweep_low_balances(conn, self.settings, today)
        if sent or alerts:
            log.info("payments sweep: %d reminder(s) and overdue notice(s), %d low-deposit "
                     "alert(s) sent", len(sent), len(alerts))

    async def _purge_declarations(self) -> None:
        today = local_date(datetime.datetime.now(datetime.UTC), self.settings.timezone)
        n = await purge_declarations(self._pool(), self.settings, today)
        if n:
            log.info("copyright: %d declaration(s) past their keeping time deleted", n)

    async def _fold_counts(self) -> None:
        await fold(self._pool())

    async def _sweep(self) -> None:
        n = await self.dispatcher.sweep_deadlines(self._pool())
        if n:
            log.info("deadline sweep: %d silent supplier(s) cancelled and skipped", n)

    async def stop(self) -> None:
        """Graceful stop; safe to call more than once."""
        self._stop.set()
        if self.shards is not None:
            self.shards.stop()
        if self._intake_task is not None:
            with suppress(asyncio.CancelledError):
                await self._intake_task
            self._intake_task = None
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
        for service in (self.mailer, self.peers):
            if service is not None:
                service.stop()
        for server in (self.ftp, self.http):
            if server is not None:
                with suppress(Exception):
                    await server.stop()
        if self.relay:
            if self._broker_up():
                # What is committed goes out now if it can; what cannot waits in the
                # outbox for the next relay (here or in another hub): never a long stop.
                with suppress(Exception):
                    await asyncio.wait_for(self.relay.drain(), DRAIN_SECONDS)
            self.relay.stop()
        for task in self._tasks:
            # A publish in flight to a broker that went away would hold the stop for its
            # whole timeout; cancelled, its transaction rolls back and the rows stay due.
            with suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, TASK_GRACE_SECONDS)
        self._tasks = []
        await self.dispatcher.close()
        if self.connection:
            await self.connection.close()
        for pool in (self.intake_pool, self.pool):
            if pool:
                await pool.close()
        log.info("hub stopped after %d messages", self.processed)

    async def run_forever(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        # SIGHUP: rotated certificates are loaded into the running servers' contexts;
        # open connections keep theirs, new handshakes get the new ones.
        loop.add_signal_handler(signal.SIGHUP, self.reload_certificates)
        await self.start()
        await self._stop.wait()
        await self.stop()

    def reload_certificates(self) -> list[str]:
        """Load the HTTP and FTP certificates again (SIGHUP); returns what failed."""
        return self.servers.reload() if self.servers is not None else []


def _tune_collector() -> None:
    """Python's cycle collector, set for a long-running process (issue 20). What start()
    built (settings, models, policy, pools) lives as long as the process, so it is
    frozen out of the collector's reach; and the youngest generation is collected after
    GC_YOUNG_THRESHOLD allocations, not 700: each routed request allocates thousands of
    short-lived objects, nearly all freed by reference counting, and under load the
    collector took about 3 % of the hub's CPU walking them."""
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _logged(job: Callable[[], Awaitable[None]], name: str) -> Callable[[], Awaitable[None]]:
    """A scheduled job whose failure is logged and left to the next tick (in this or
    another hub process) instead of ending the schedule."""
    async def run() -> None:
        try:
            await job()
        except Exception:
            log.exception("scheduled job %s failed; the next tick retries", name)
    return run
