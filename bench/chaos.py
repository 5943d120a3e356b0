"""Fault injection: several hub processes, crashes and outages, and nothing lost.

    python run.py chaos [--requests 20000] [--hubs 3] [--kill-interval 5] [--seed N]
                        [--no-broker-restart] [--no-db-restart] [--smtp-outage SECONDS]
    python -m bench.chaos ...            (the same)

What it does:

1. A scratch database (`illhub_chaos_<token>`), a broker name prefix (`chaos.<token>.`),
   agencies of its own (each a real RabbitMQ user), holdings and fee schedules, a data
   directory shared by the hubs, and an SMTP server (aiosmtpd) in this process.
2. Starts `--hubs` `run.py hub` processes. Simulated libraries and suppliers (real
   AMQP clients: sim's parties, scripted by bench/chaos_scenarios.py) push
   `--requests` requests through whole lifecycles, at most `--window` open at once,
   in a scenario mix: copies delivered over FTP with a mail to the reader (who
   downloads it), loans through return, Unfilled then the next supplier, a supplier
   silent past a short deadline, and requester cancellations.
3. Meanwhile: SIGKILLs a random hub every `--kill-interval` seconds (±30 %) and starts
   it again; stops the SMTP server for `--smtp-outage` seconds; severs the hubs'
   PostgreSQL connections (pg_terminate_backend) and RabbitMQ connections (management
   API) once each, touching only this run's own; restarts RabbitMQ once
   (`rabbitmqctl stop_app` / `start_app`) and PostgreSQL once (`pg_ctlcluster
   --skip-systemctl-redirect VERSION main restart`) unless told not to. The two
   restarts hit every user of those servers: run them on a machine of your own.
4. Waits until every request is finished, settles the period(s), and checks the
   parties' records against the database (bench/chaos_checks.py): every request in
   the state its scenario implies, none lost, no duplicate forward (a repeat carries
   the same message_id), no mail sent twice or missing, no charge posted twice, the
   ledger balanced, and the settlement nets equal to an independent recomputation
   from the requesters' records and the fee schedule. Prints the table; exits 1 if
   any invariant failed.
5. Removes the database, queues, exchanges, broker users and data directory
   (unless --keep).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import logging
import random
import secrets
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg

from bench.chaos_checks import Fees, Verdict, settle_all, verify
from bench.chaos_options import ChaosError, ChaosOptions, add_arguments, options_from
from bench.chaos_scenarios import ChaosWorld, Hubs, holdings_csv
from bench.hub_processes import DB_APPLICATION, HubFailed, HubProcesses, free_port
from bench.network import PROVINCES
from broker import agencies
from broker.holdings import import_csv
from broker.shards import declare_hub_topology
from infra.database import create_database, create_pool, drop_database, with_database
from infra.migrations import migrate
from infra.rabbit_admin import Management
from schemas.settings import Settings
from settlement.fees import load_fees
from sim.mailcatcher import MailCatcher

log = logging.getLogger(__name__)
Out = Callable[[str], None]


@dataclass
class Faults:
    kills: int = 0
    hub_starts: int = 0
    exits: int = 0                    # hubs that exited without being killed
    smtp_outage_seconds: float = 0.0
    broker_restarts: int = 0
    db_restarts: int = 0
    db_severed: int = 0
    broker_severed: int = 0
    log: list[str] = field(default_factory=list)


# ---- setting up and tearing down -------------------------------------------------------

async def _register(s: Settings, pool: asyncpg.Pool, opts: ChaosOptions
                    ) -> tuple[list[str], list[str], dict[str, str]]:
    requesters = [opts.symbol(f"LIB{i + 1:02d}") for i in range(opts.requesters)]
    suppliers = [opts.symbol(f"SUP{i + 1:02d}") for i in range(opts.suppliers)]
    passwords = {sym: secrets.token_urlsafe(12) for sym in (*requesters, *suppliers)}
    for i, sym in enumerate((*requesters, *suppliers)):
        province, city = PROVINCES[i % len(PROVINCES)]
        role = ("requester",) if sym in requesters else ("supplier",)
        await agencies.add(s, pool, agencies.NewAgency(
            symbol=sym, name=f"混沌测试{'图书馆' if role[0] == 'requester' else '文献中心'}{i + 1}",
            roles=role, password=passwords[sym], province=province, city=city))
    return requesters, suppliers, passwords


async def _load_catalogue(pool: asyncpg.Pool, suppliers: list[str], fees: Fees,
                          data: Path) -> None:
    path = data / "holdings.csv"
    path.write_text(holdings_csv(suppliers), encoding="utf-8")
    async with pool.acquire() as conn:
        report = await import_csv(conn, path, replace=False)
        if report.rejected:
            raise ChaosError(f"holdings: {report.rejected} generated line(s) rejected")
        await load_fees(conn, fees.toml(), file_name="chaos fees")


async def teardown(s: Settings, symbols: list[str]) -> None:
    async with Management(s.amqp.management_url.get_secret_value()) as mgmt:
        await mgmt.remove_scratch(s.vhost, s.amqp.name_prefix, symbols)
    await drop_database(s.database_url)


# ---- faults ------------------------------------------------------------------------------

async def _command(*argv: str) -> None:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.STDOUT)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise ChaosError(f"{' '.join(argv)} failed ({proc.returncode}): "
                         f"{out.decode(errors='replace')[-500:]}")


async def restart_broker(pause: float = 3.0) -> None:
    """Stop and start the RabbitMQ application (the Erlang node stays up)."""
    await _command("rabbitmqctl", "stop_app")
    await asyncio.sleep(pause)
    await _command("rabbitmqctl", "start_app")


async def postgres_cluster(port: int) -> tuple[str, str]:
    """(version, cluster name) of the local cluster listening on `port` (pg_lsclusters)."""
    proc = await asyncio.create_subprocess_exec("pg_lsclusters", "-h",
                                                stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    for line in out.decode().splitlines():
        cols = line.split()
        if len(cols) >= 3 and cols[2] == str(port):
            return cols[0], cols[1]
    raise ChaosError(f"pg_lsclusters lists no cluster on port {port}")


async def restart_postgres(database_url: str) -> None:
    version, cluster = await postgres_cluster(urlsplit(database_url).port or 5432)
    await _command("pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart")


async def sever_database(pool: asyncpg.Pool, database: str) -> int:
    """Terminate the hubs' PostgreSQL sessions on this run's database only."""
    return len(await pool.fetch(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = $1 AND application_name = $2", database, DB_APPLICATION))


async def sever_broker(s: Settings, hubs: HubProcesses) -> int:
    """Close the hubs' AMQP connections (named by this run's prefix) through the management API."""
    names = {hubs.connection_name(i) for i in range(hubs.count)}
    closed = 0
    async with Management(s.amqp.management_url.get_secret_value()) as mgmt:
        # The management API lists a new connection only after its next statistics
        # interval (5 s by default): a hub restarted just now may not be there yet.
        for _ in range(30):
            for c in await mgmt.connections():
                if (c.get("client_properties") or {}).get("connection_name") in names:
                    await mgmt.close_connection(c["name"])
                    closed += 1
            if closed:
                return closed
            await asyncio.sleep(0.5)
    return closed


class Chaos:
    """The fault schedule: kills throughout, each outage once at a share of the requests."""

    def __init__(self, opts: ChaosOptions, s: Settings, pool: asyncpg.Pool,
                 hubs: HubProcesses, net: ChaosWorld, mail: MailCatcher, out: Out) -> None:
        self.opts = opts
        self.s = s
        self.pool = pool
        self.hubs = hubs
        self.net = net
        self.mail = mail
        self.out = out
        self.faults = Faults()
        self.rng = random.Random(opts.seed + 7)
        self.done = asyncio.Event()

    def share(self) -> float:
        return self.net.stats.sent / self.opts.requests

    def note(self, text: str) -> None:
        self.faults.log.append(text)
        self.out(f"  ** {text}")

    async def _at(self, share: float) -> bool:
        while self.share() < share:
            if self.done.is_set():
                return False
            await asyncio.sleep(0.1)
        return True

    async def kills(self) -> None:
        """SIGKILL and restart a random hub now and then; restart any that exited by itself
        (a hub started while PostgreSQL or RabbitMQ is down gives up at once, by design)."""
        interval = self.opts.kill_interval
        next_kill = time.monotonic() + interval * self.rng.uniform(0.7, 1.3)
        while not self.done.is_set():
            try:
                await asyncio.wait_for(self.done.wait(), 1.0)
                return
            except TimeoutError:
                pass
            for i in range(self.hubs.count):
                if not self.hubs.alive(i):
                    self.faults.exits += 1
                    await self.hubs.start(i)
                    self.faults.hub_starts += 1
            if interval > 0 and time.monotonic() >= next_kill:
                i = self.rng.randrange(self.hubs.count)
                await self.hubs.kill(i)
                self.faults.kills += 1
                await self.hubs.start(i)
                self.faults.hub_starts += 1
                next_kill = time.monotonic() + interval * self.rng.uniform(0.7, 1.3)

    async def smtp_outage(self) -> None:
        if self.opts.smtp_outage <= 0 or not await self._at(0.15):
            return
        self.note(f"SMTP server stopped for {self.opts.smtp_outage:g} s")
        started = time.monotonic()
        await self.mail.stop()
        await asyncio.sleep(self.opts.smtp_outage)
        await self.mail.start()
        self.faults.smtp_outage_seconds = time.monotonic() - started
        self.note("SMTP server back")

    async def outages(self) -> None:
        steps: list[tuple[float, str]] = []
        if self.opts.sever:
            steps += [(0.30, "sever-db"), (0.50, "sever-broker")]
        if self.opts.broker_restart:
            steps.append((0.40, "restart-broker"))
        if self.opts.db_restart:
            steps.append((0.60, "restart-db"))
        for share, what in sorted(steps):
            if not await self._at(share):
                return
            try:
                await self._outage(what)
            except Exception as exc:  # the run goes on; the verdict will show the effects
                self.note(f"{what} failed: {type(exc).__name__}: {exc}")

    async def _outage(self, what: str) -> None:
        if what == "sever-db":
            n = await sever_database(self.pool, self.s.database_url
                                     .rsplit("/", 1)[1])
            self.faults.db_severed += n
            self.note(f"severed {n} PostgreSQL session(s) of the hubs")
        elif what == "sever-broker":
            n = await sever_broker(self.s, self.hubs)
            self.faults.broker_severed += n
            self.note(f"closed {n} RabbitMQ connection(s) of the hubs")
        elif what == "restart-broker":
            self.note("restarting RabbitMQ (rabbitmqctl stop_app / start_app)")
            await restart_broker()
            self.faults.broker_restarts += 1
            self.note("RabbitMQ back")
        elif what == "restart-db":
            self.note("restarting PostgreSQL (pg_ctlcluster ... restart)")
            await restart_postgres(self.s.database_url)
            self.faults.db_restarts += 1
            self.note("PostgreSQL back")


# ---- running ------------------------------------------------------------------------------

def _settings(settings: Settings, opts: ChaosOptions, data: Path, smtp_port: int) -> Settings:
    url = with_database(settings.database_url, opts.database)
    return settings.updated(
        database__url=url, amqp__name_prefix=opts.name_prefix, hub_symbol=opts.symbol("HUB"),
        data_dir=str(data), smtp__host="127.0.0.1", smtp__port=smtp_port, smtp__user=None,
        smtp__password=None, smtp__security="none", ftp__require_tls=False)


async def _prepare(s: Settings, pool: asyncpg.Pool, opts: ChaosOptions, data: Path,
                   out: Out) -> tuple[list[str], list[str], dict[str, str], Fees]:
    """The run's agencies (own broker users), holdings, fee schedules and topology."""
    requesters, suppliers, passwords = await _register(s, pool, opts)
    fees = Fees(suppliers)
    await _load_catalogue(pool, suppliers, fees, data)
    await declare_hub_topology(s, pool, [*requesters, *suppliers])
    out(f"  database {opts.database}, prefix {opts.name_prefix!r} in vhost {s.vhost!r}, "
        f"{len(requesters)} libraries and {len(suppliers)} suppliers (own broker users), "
        f"files in {data}/")
    return requesters, suppliers, passwords, fees


def _hub_processes(s: Settings, opts: ChaosOptions, data: Path) -> HubProcesses:
    return HubProcesses(s, opts.hubs, data / "logs", extra_env={
        "ILLHUB_DEADLINES__SWEEP_SECONDS": "1",
        "ILLHUB_DEADLINES__EXPRESS": f"{opts.deadline / 3600:.8f}",
        "ILLHUB_SMTP__POLL_SECONDS": "0.5",
        "ILLHUB_SMTP__BACKOFF_SECONDS": "1",
        "ILLHUB_SMTP__MAX_BACKOFF_SECONDS": "4",
    })


async def _arrivals(net: ChaosWorld, opts: ChaosOptions) -> None:
    rng = random.Random(opts.seed)
    kinds, weights = list(opts.mix), list(opts.mix.values())
    for seq in range(1, opts.requests + 1):
        await net.window.acquire()
        await net.ask(seq, rng.choices(kinds, weights)[0])


def _progress(net: ChaosWorld, hubs: HubProcesses, faults: Faults, started: float) -> str:
    finals = Counter(a.final for a in net.asks.values() if a.final)
    done = sum(finals.values())
    open_now = net.stats.sent - done
    alive = sum(hubs.alive(i) for i in range(hubs.count))
    rate = done / max(time.monotonic() - started, 0.001)
    copies, loans, cancelled = (finals["CopyCompleted"], finals["LoanCompleted"],
                                finals["Cancelled"])
    return (f"  {time.monotonic() - started:6.0f} s  sent {net.stats.sent:>6}  finished "
            f"{done:>6} ({rate:5.1f}/s)  open {open_now:>4} | copies {copies:>5}"
            f"  loans {loans:>5}  cancelled {cancelled:>4}"
            f"  other {done - copies - loans - cancelled:>3}"
            f" | mails {net.mail.received:>5} | hubs up {alive}/{hubs.count}, "
            f"kills {faults.kills}")


async def _quiet(pool: asyncpg.Pool, timeout: float) -> None:
    """Until nothing is left to publish or mail (the last mails after an SMTP outage)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            left = await pool.fetchval(
                "SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) + "
                "(SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL)")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            left = 1
        if left == 0:
            return
        await asyncio.sleep(0.5)


async def _drive(net: ChaosWorld, chaos: Chaos, opts: ChaosOptions, started: float,
                 out: Out) -> None:
    """Requests flow and faults strike until every request is finished, or none moves."""
    arrivals = asyncio.create_task(_arrivals(net, opts))
    faults = [asyncio.create_task(c) for c in (chaos.kills(), chaos.smtp_outage(),
                                                chaos.outages())]
    try:
        await _watch(net, chaos, arrivals, opts, started, out)
        chaos.done.set()
        await asyncio.gather(*faults, return_exceptions=True)
    finally:
        chaos.done.set()
        for t in (arrivals, *faults):
            t.cancel()
        await asyncio.gather(arrivals, *faults, return_exceptions=True)


async def _watch(net: ChaosWorld, chaos: Chaos, arrivals: asyncio.Task[None],
                 opts: ChaosOptions, started: float, out: Out) -> None:
    last, done_before, moved_at = 0.0, -1, time.monotonic()
    while True:
        await asyncio.sleep(0.25)
        if arrivals.done() and arrivals.exception():
            raise ChaosError(f"sending requests failed: {arrivals.exception()}")
        done_now = sum(1 for a in net.asks.values() if a.final)
        finished = arrivals.done() and done_now == len(net.asks)
        now = time.monotonic()
        if finished or now - last >= opts.progress_seconds:
            out(_progress(net, chaos.hubs, chaos.faults, started))
            last = now
        if finished:
            return
        if done_now != done_before:
            done_before, moved_at = done_now, now
        elif now - moved_at > opts.drain_timeout:
            # Stuck (a hub that cannot process, a lost message): stop and show it.
            out(f"  time limit: no request finished for {opts.drain_timeout:g} s; "
                f"{len(net.asks) - done_now} open")
            return


async def _wind_down(net: ChaosWorld, hubs: HubProcesses, pool: asyncpg.Pool,
                     mail: MailCatcher) -> None:
    """Everything up again, then until the last messages, mails and downloads are done."""
    # After a PostgreSQL restart this process's pooled sessions are dead too.
    await pool.expire_connections()
    await mail.start()
    # Every hub up again before the last mails and messages are awaited.
    for i in range(hubs.count):
        if not hubs.alive(i):
            await hubs.start(i)
    await asyncio.gather(*(hubs.wait_ready(i) for i in range(hubs.count)))
    await _quiet(pool, 60.0)
    await asyncio.sleep(1.0)  # late redeliveries
    for _ in range(600):
        if net.readers.busy == 0:
            break
        await asyncio.sleep(0.1)


async def _judge(pool: asyncpg.Pool, s: Settings, net: ChaosWorld, fees: Fees,
                 chaos: Chaos, started_at: datetime.datetime, started: float,
                 out: Out) -> Verdict:
    """Settle, check the parties' records against the database, print the verdict."""
    out("  all requests finished; settling and checking")
    try:
        settled: dict[str, int] | str = await settle_all(
            pool, s, started_at, datetime.datetime.now(datetime.UTC))
    except Exception as exc:  # shown as a failed invariant, with the rest of the table
        log.warning("settlement failed", exc_info=True)
        settled = f"{type(exc).__name__}: {exc}"
    await _quiet(pool, 60.0)  # the run's finance messages, published by the hubs
    faults = chaos.faults
    verdict = await verify(pool, s, net, fees, settled, {
        "hub processes": chaos.opts.hubs,
        "SIGKILLs (restarts)": f"{faults.kills} ({faults.hub_starts})",
        "hubs that exited by themselves (restarted)": faults.exits,
        "RabbitMQ restarts": faults.broker_restarts,
        "PostgreSQL restarts": faults.db_restarts,
        "hub DB sessions severed / broker connections closed":
            f"{faults.db_severed} / {faults.broker_severed}",
        "SMTP outage": f"{faults.smtp_outage_seconds:.1f} s",
        "elapsed": f"{time.monotonic() - started:.1f} s",
    })
    out("")
    out("chaos verdict:")
    for line in verdict.lines():
        out(line)
    for line in verdict.details:
        out(f"  - {line}")
    out("all invariants hold" if verdict.ok else
        f"FAILED: {', '.join(verdict.failed)} (hub logs in {Path(s.data_dir) / 'logs'}/)")
    return verdict


async def run(settings: Settings, opts: ChaosOptions, out: Out = print) -> Verdict:
    opts.check()
    started_at = datetime.datetime.now(datetime.UTC)
    started = time.monotonic()
    data = Path(tempfile.mkdtemp(prefix=f"illhub-chaos-{opts.token}-"))
    smtp_port = free_port()
    s = _settings(settings, opts, data, smtp_port)
    out(f"ILL Hub chaos: {opts.requests} requests, {opts.hubs} hub processes, SIGKILL every "
        f"~{opts.kill_interval:g} s, SMTP outage {opts.smtp_outage:g} s, broker restart "
        f"{'yes' if opts.broker_restart else 'no'}, PostgreSQL restart "
        f"{'yes' if opts.db_restart else 'no'} (seed {opts.seed})")
    await create_database(s.database_url, replace=True)
    await migrate(s.database_url, report=lambda _m: None)
    pool = await create_pool(s.database_url, max_size=6)
    symbols: list[str] = [s.hub_symbol]
    hubs: HubProcesses | None = None
    net: ChaosWorld | None = None
    mail: MailCatcher | None = None
    try:
        requesters, suppliers, passwords, fees = await _prepare(s, pool, opts, data, out)
        symbols += [*requesters, *suppliers]
        hubs = _hub_processes(s, opts, data)
        net = ChaosWorld(s, passwords, requesters, suppliers,
                         Hubs(hubs.ftp_ports, hubs.http_ports, hubs.serving, hubs.alive),
                         seed=opts.seed, window=opts.window)
        mail = MailCatcher(data / "mail", net.on_mail, smtp_port)
        await mail.start()
        await hubs.start_all()
        out(f"  {opts.hubs} hubs ready (HTTP ports {hubs.http_ports}, FTP ports "
            f"{hubs.ftp_ports}); mail to 127.0.0.1:{smtp_port}; logs in {data / 'logs'}/")
        await net.start()
        chaos = Chaos(opts, s, pool, hubs, net, mail, out)
        await _drive(net, chaos, opts, started, out)
        await _wind_down(net, hubs, pool, mail)
        return await _judge(pool, s, net, fees, chaos, started_at, started, out)
    finally:
        if net is not None:
            await net.stop()
        if hubs is not None:
            await hubs.stop_all()
        if mail is not None:
            await mail.stop()
        await pool.close()
        if not opts.keep:
            try:
                await teardown(s, symbols)
            except Exception:
                log.warning("chaos clean-up failed", exc_info=True)
            shutil.rmtree(data, ignore_errors=True)


# ---- command line ----------------------------------------------------------------------------

async def chaos_cli(settings: Settings, args: argparse.Namespace) -> int:
    """`run.py chaos`: 0 when every invariant holds, 1 otherwise."""
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(logging.WARNING)
    try:
        verdict = await run(settings, options_from(args), out=_say)
    except (ChaosError, HubFailed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0 if verdict.ok else 1


def _say(line: str) -> None:
    print(line, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split(
        "\n", 1)[0])
    add_arguments(parser)
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    return asyncio.run(chaos_cli(Settings(), args))


if __name__ == "__main__":
    sys.exit(main())
