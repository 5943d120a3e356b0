"""`python run.py demo`: a whole ILL network around a real hub, in about two minutes.

What it does, in order:

1. Uses its own database (`illhub_demo`, dropped and created fresh), its own name
   prefix (`demo.`) in the configured vhost and its own data directory
   (`<data_dir>/demo`); migrates; registers the network of docs/demo/agencies.csv
   through `broker.agencies.add` (every agency a real broker user); generates and
   imports holdings; loads docs/demo/fees.toml, policy.toml and subsidy.toml
   (app/demo_setup.py).
2. Starts the hub in this process (intake, relay, deadline sweeper, FTP drop,
   download gateway, mail sender) with an embedded SMTP server that keeps every
   mail as a .eml file (unless --smtp).
3. Simulated library systems publish ISO 18626 requests over the arrival period and
   react to what comes back; simulated suppliers answer, upload PDFs over FTP, lend
   books, stay silent or refuse; simulated readers click the mailed links
   (sim/world.py). One loan comes back late and one is lost in transit back; the
   loss is claimed, accepted and settled at the hub (`claim_lost`, sim/mishaps.py).
   Time runs at --speed: the hub's deadlines are scaled so a
   72 h deadline passes in seconds.
4. Prints progress, waits until every request is finished, settles the period and
   prints a summary computed from the database (app/demo_report.py).
5. Stops everything; removes the database, queues and broker users unless --keep.
"""

from __future__ import annotations

import asyncio
import logging
import random
import shutil
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import asyncpg

from app.demo_payments import CENTRE_ACCOUNT, CENTRE_BANK_CODE, after_the_run
from app.demo_report import (
    Summary,
    compute,
    format_summary,
    loans_report,
    open_transactions,
    pending_mail,
    yuan,
)
from app.demo_setup import (
    DemoError,
    Out,
    clear_broker,
    import_holdings,
    load_files,
    register,
)
from app.demo_tls import make_demo_tls, transports, with_tls
from app.hub import Hub
from broker import claims as desk_claims
from broker.dispatch.desk import Desk
from infra.database import create_pool, drop_database, with_database
from infra.migrations import migrate
from schemas.settings import Settings, mask_url
from settlement.bank_accounts import BankAccountError
from settlement.claims import ClaimRefused, Kind, Place, Side, Step
from settlement.dues import PaymentRefused
from settlement.netting import InvariantViolation
from settlement.pain001 import PaymentFileError
from settlement.periods import Period
from settlement.record import SettlementError
from settlement.run import settle
from sim.clock import SimClock
from sim.mailcatcher import MailCatcher
from sim.mishaps import LoanMishaps, Mishap
from sim.network import DEMO_DIR, Network, NetworkError, load_network, read_agencies
from sim.requesters import Ask
from sim.routing_lab.demo import compare_on
from sim.world import World

log = logging.getLogger(__name__)

__all__ = ["DemoError", "DemoOptions", "demo_settings", "run", "teardown"]


@dataclass
class DemoOptions:
    requests: int = 200
    speed: float = 21_600.0          # simulated seconds per real second: 6 h a second
    days: float = 12.0               # simulated days over which the requests arrive
    seed: int = 18626
    requesters: int | None = None    # None: all of agencies.csv
    suppliers: int | None = None
    keep: bool = False
    smtp: bool = False
    tls: bool = False                # HTTPS, FTPS, SMTP STARTTLS (app/demo_tls.py)
    database: str = "illhub_demo"
    prefix: str = "demo."
    symbol_tag: str = ""
    timeout: float | None = None     # real seconds to wait after the last arrival
    # Share of book loans among the requests instead of simulation.toml's: a small run
    # needs a few loans for its late and lost one (sim/mishaps.py).
    book_loans: float | None = None
    progress_seconds: float = 3.0

    def check(self) -> None:
        if self.requests < 1:
            raise DemoError("--requests must be at least 1")
        if not 1 <= self.speed <= 10_000_000:
            raise DemoError("--speed must be between 1 and 10000000 simulated seconds "
                            "per real second")
        if self.days <= 0:
            raise DemoError("--days must be positive")
        if self.book_loans is not None and not 0 <= self.book_loans <= 1:
            raise DemoError("the share of book loans must be between 0 and 1")
        if "demo" not in self.database or not self.database.replace("_", "").isalnum():
            raise DemoError(f"--database {self.database!r}: the demo drops and recreates it, "
                            "so its name must contain 'demo' and only letters, digits and '_'")
        if not self.prefix or not self.prefix.endswith("."):
            raise DemoError(f"--prefix {self.prefix!r}: the demo deletes every queue and "
                            "exchange with this prefix, so it must be non-empty and end in '.'")
        if self.symbol_tag and not self.symbol_tag.replace("-", "").isalnum():
            raise DemoError("--symbol-tag may contain letters, digits and '-'")

    @property
    def drain_seconds(self) -> float:
        """How long to wait for the last requests after the arrivals ended."""
        if self.timeout is not None:
            return self.timeout
        return max(60.0, 40 * 86_400 / self.speed)


# --- settings of the demo's own hub ------------------------------------------------------

def _port_or_free(host: str, port: int) -> int:
    """The configured port if it can be bound now, else 0 (any free port)."""
    if port == 0:
        return 0
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return 0
    return port


def demo_settings(settings: Settings, opts: DemoOptions) -> Settings:
    own_db = urlsplit(settings.database_url).path.lstrip("/")
    if own_db == opts.database:
        raise DemoError(f"--database {opts.database!r} is the hub's own database "
                        "(ILLHUB_DATABASE__URL); the demo needs a database of its own")
    if opts.prefix == settings.amqp.name_prefix:
        raise DemoError(f"--prefix {opts.prefix!r} is the hub's own name prefix "
                        "(ILLHUB_AMQP__NAME_PREFIX); the demo needs a prefix of its own")
    d = settings.deadlines
    speed = opts.speed
    # Deadlines are hours of real time for the hub: the configured (simulated) hours
    # divided by the speed, so a 72 h deadline passes in 72 * 3600 / speed seconds.
    sweep = max(0.5, min(d.sweep_seconds, d.rush * 3600 / speed / 6))
    return settings.updated(
        database__url=with_database(settings.database_url, opts.database),
        amqp__name_prefix=opts.prefix,
        data_dir=str(Path(settings.data_dir) / "demo"),
        http__port=_port_or_free(settings.http.host, settings.http.port),
        # The hub's own links: a demo is on loopback, whatever the hub is configured to say.
        http__public_base_url=None,
        ftp__port=0, ftp__passive_ports="", ftp__require_tls=False,
        deadlines__express=d.express / speed, deadlines__rush=d.rush / speed,
        deadlines__normal=d.normal / speed, deadlines__sweep_seconds=sweep,
        outbox__poll_seconds=min(settings.outbox.poll_seconds, 0.2),
        smtp__poll_seconds=0.5, smtp__backoff_seconds=2.0,
        payments__centre_account=settings.payments.centre_account or CENTRE_ACCOUNT,
        payments__centre_bank_code=settings.payments.centre_bank_code or CENTRE_BANK_CODE,
    )


# --- before and after: a clean slate ------------------------------------------------------

def _symbols(opts: DemoOptions) -> list[str]:
    tag = f"{opts.symbol_tag}." if opts.symbol_tag else ""
    return [tag + r["symbol"] for r in read_agencies(DEMO_DIR / "agencies.csv")]


def _clear_dir(path: Path) -> None:
    if path.name == "demo" and path.is_dir():
        shutil.rmtree(path)


async def teardown(settings: Settings, opts: DemoOptions) -> None:
    """Remove what a demo run left: broker users, queues, exchanges and the database.

    The data directory (mails, statements, holdings.csv) stays for reading.
    """
    s = demo_settings(settings, opts)
    await clear_broker(s, _symbols(opts), strict=False)
    await drop_database(s.database_url)


async def _fresh_start(s: Settings, opts: DemoOptions, net: Network, out: Out) -> None:
    """An empty database (migrated), broker prefix and data directory for this run."""
    if opts.smtp:
        await _check_smtp(s.smtp.host, s.smtp.port)
    await clear_broker(s, net.every_symbol, strict=True)
    await drop_database(s.database_url)
    await asyncio.to_thread(_clear_dir, Path(s.data_dir))
    await migrate(s.database_url, report=lambda _m: None)
    out(f"  database {opts.database} (fresh, migrated); broker prefix '{opts.prefix}' in vhost "
        f"'{s.vhost}'; files in {s.data_dir}/")


# --- running -----------------------------------------------------------------------------

async def _check_smtp(host: str, port: int) -> None:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
    except (OSError, TimeoutError) as exc:
        raise DemoError(f"--smtp: cannot reach the SMTP server {host}:{port} "
                        f"(ILLHUB_SMTP__HOST/ILLHUB_SMTP__PORT): {exc}") from exc
    writer.close()


def _progress(world: World, open_now: int, mails_waiting: int) -> str:
    st = world.stats
    day = world.clock.hours() / 24
    line = (f"  day {day:5.1f}  requests {st.sent:>4} sent (+{st.retries} retried), "
            f"{st.confirmed:>4} confirmed"
            f" | filled {st.filled:>4}  unfilled {st.unfilled:>3}  cancelled {st.cancelled:>3}"
            f"  in flight {open_now:>4} | mails {st.mails:>4}  downloads {st.downloads:>4}")
    if mails_waiting:
        line += f" ({mails_waiting} mails queued)"
    if st.lag > 0.5 and time.monotonic() - st.lag_at < 5:
        line += f" | hub lag {st.lag:.1f} s"
    return line


async def _simulate(world: World, pool: asyncpg.Pool, opts: DemoOptions, out: Out) -> bool:
    """Run until every request is finished (True) or the time limit passed (False)."""
    arrived = asyncio.Event()
    world.tasks.spawn(world.arrivals(opts.requests, opts.days, opts.seed + 1, arrived),
                      "arrivals")
    deadline: float | None = None
    last = 0.0
    while True:
        await asyncio.sleep(0.25)
        st = world.stats
        open_now = await open_transactions(pool)
        waiting = await pending_mail(pool)
        answered = st.confirmed + st.refused >= st.sent + st.retries
        finished = (arrived.is_set() and answered and open_now == 0 and waiting == 0
                    and world.readers.busy == 0)
        now = time.monotonic()
        if finished or now - last >= opts.progress_seconds:
            out(_progress(world, open_now, waiting))
            last = now
        if finished:
            return True
        if arrived.is_set():
            deadline = deadline or now + opts.drain_seconds
            if now > deadline:
                out(f"  time limit: {open_now} request(s) still open after "
                    f"{opts.drain_seconds:.0f} s of waiting")
                return False


# ---- SETTLEMENT CALL SITE -------------------------------------------------------------------
# The one place where the demo settles its period: settlement.run.settle() closes the
# current month as if its end had passed (the demo's month is simulated), writes every
# agency's statement (CSV and PDF) to <data_dir>/statements/<period>/ and queues the
# mails to the finance contacts; the hub still runs, so they reach the demo's mail
# folder.
CENTRE_FINANCE = "jiesuan@illhub-centre.example"


async def settle_period(settings: Settings, pool: asyncpg.Pool, period: str,
                        out: Out) -> list[str]:
    p = Period.parse(period)
    after_end = p.ends_at(settings.timezone) + timedelta(minutes=1)
    try:
        result = await settle(pool, settings, p, now=after_end, centre_email=CENTRE_FINANCE,
                              progress=lambda m: out(f"  settlement: {m}"))
    except (SettlementError, InvariantViolation, ValueError) as exc:
        raise DemoError(f"settlement of {period} failed: {exc}") from exc
    if result is None:  # only without wait=True, which the demo does not use
        raise DemoError(f"settlement of {period}: another run holds the settlement lock")
    inv = "hold" if result.invariants.get("ok", True) else "VIOLATED"
    mailed = sum(1 for x in result.statements if x.mail_id is not None)
    lines = [f"settlement      period {period} closed by run {result.run_id}: "
             f"{result.postings} postings, {len(result.statements)} statements (CSV + PDF), "
             f"{mailed} mailed to finance contacts; invariants {inv}"]
    for currency, t in result.totals.items():
        lines.append(f"                agencies receive {yuan(t['toReceive'])} {currency}, pay "
                     f"{yuan(t['toPay'])} {currency}; the centre's subsidy outlay "
                     f"{yuan(-t['centre'])} {currency}")
    if result.run_id is not None:
        try:
            lines += await after_the_run(settings, pool, result.run_id, out)
        except (PaymentFileError, BankAccountError, PaymentRefused) as exc:
            raise DemoError(f"after the settlement of {period}: {exc}") from exc
    return lines
# ---- end of the settlement call site ---------------------------------------------------------


# ---- the lost loan's claim ----------------------------------------------------------------
# The requester whose parcel back never arrived reports the loss to the centre, the
# supplier accepts the claim and the centre settles it, through the functions
# `run.py claims open|accept|settle` call: the requester is charged the replacement cost
# and the processing fee as one ledger line `Claim/<id>` in the settlement run, and the
# loan closes CompletedWithoutReturn (its requester's system hears it, like any status).

async def claim_lost(desk: Desk, pool: asyncpg.Pool, transaction: str, requester: str,
                     supplier: str) -> int:
    """Open, accept and settle a claim for a loan lost in transit back; its id."""
    async with pool.acquire() as conn:
        c = await desk_claims.open_claim(
            desk, conn, transaction, kind=Kind.LOST, place=Place.BACK,
            happened_on=desk.today(desk.clock()),
            evidence=f"寄还包裹未送达 {supplier}，快递公司确认丢失 (parcel back lost by the "
                     "courier)", reported_by=Side.REQUESTER, declared=None, actor=requester)
        await desk_claims.answer(desk, conn, c.id, Step.ACCEPTED, actor=supplier,
                                 note="同意按赔偿标准处理")
        await desk_claims.settle(desk, conn, c.id, actor="centre",
                                 note="demo: loss in transit back, accepted")
    return c.id


def _reporting_losses(world: World, desk: Desk, pool: asyncpg.Pool) -> None:
    """The requester's report of a lost loan (sim/mishaps.py) becomes a settled claim."""
    async def report(ask: Ask) -> None:
        if ask.transaction is None or ask.supplier is None:
            world.stats.problems.append(f"lost loan {ask.request_id}: no transaction or "
                                        "supplier known to claim on")
            return
        try:
            await claim_lost(desk, pool, ask.transaction, ask.requester, ask.supplier)
        except ClaimRefused as exc:
            world.stats.problems.append(f"claim for the lost loan {ask.request_id} refused: "
                                        f"{exc.code}: {exc.message}")
    world.mishaps.report_lost = report


def _missing_mishaps(mishaps: LoanMishaps) -> list[str]:
    """What the summary says when the run had no loan for a mishap."""
    had = {c.mishap for c in mishaps.chosen.values()}
    return [f"no loan in this run to be {'returned late' if m is Mishap.LATE else 'lost'}"
            for m in Mishap if m not in had]


@dataclass
class _Running:
    """What a run started, so that it can be stopped whatever happened."""

    pool: asyncpg.Pool
    hub: Hub | None = None
    world: World | None = None
    desk: Desk | None = None         # the centre's desk, for the lost loan's claim
    mail: MailCatcher | None = None
    base_url: str = ""
    mail_where: str = ""
    transports: list[str] = field(default_factory=list)

    async def stop(self) -> None:
        if self.world is not None:
            self.world.stop_new_work()
        if self.hub is not None and self.hub.scheduler.running:
            # Let scheduled jobs in flight (deadline sweep, drop release) finish first,
            # so that stopping does not cut them off mid-transaction.
            self.hub.scheduler.pause()
            await asyncio.sleep(0.5)
        if self.world is not None:
            # The suppliers' FTP logins and the agencies' connections end before the
            # hub's servers do (a login still open then would be cut off mid-session).
            await self.world.stop()
        if self.hub is not None:
            await self.hub.stop()
        if self.mail is not None:
            await self.mail.stop()
        if self.desk is not None:
            await self.desk.catalogues.close()
        await self.pool.close()


async def _start(settings: Settings, s: Settings, opts: DemoOptions, net: Network,
                 run: _Running, out: Out) -> World:
    """The agencies, their files, the simulated world, the mail catcher and the hub."""
    data = Path(s.data_dir)
    passwords = await register(s, run.pool, net)
    out(f"  agencies: {len(net.agencies)} registered, each its own RabbitMQ user and queue "
        "(docs/demo/agencies.csv)")
    await import_holdings(run.pool, net, data, out)
    await load_files(run.pool, net, opts.speed, out)
    tls = make_demo_tls(data / "tls") if opts.tls else None
    world = run.world = World(net, SimClock(opts.speed), rng=random.Random(opts.seed),
                              settings=s, passwords=passwords,
                              tls_ca=tls.ca if tls else None)
    if not opts.smtp:
        run.mail = MailCatcher(data / "mail", world.on_mail,
                               tls=tls.server_context() if tls else None)
        try:
            port = await run.mail.start()
        except (OSError, RuntimeError) as exc:
            raise DemoError(f"the demo's SMTP server: {exc}") from exc
        s = s.updated(smtp__host="127.0.0.1", smtp__port=port, smtp__user=None,
                      smtp__password=None, smtp__security="none")
    if tls is not None:
        s = with_tls(s, tls)
    run.transports = transports(s)
    hub = run.hub = Hub(s)
    await hub.start()
    if hub.ftp is None or hub.http is None:
        raise DemoError("the demo's hub started without its FTP drop or download gateway")
    world.ftp = (hub.ftp.host, hub.ftp.port)
    run.desk = Desk.create(s)
    _reporting_losses(world, run.desk, run.pool)
    run.base_url = hub.http.base_url
    run.mail_where = (f"{data / 'mail'}/ (one .eml per mail)" if not opts.smtp
                      else f"SMTP server {s.smtp.host}:{s.smtp.port}")
    out(f"  hub running: download gateway {run.base_url}, FTP drop "
        f"{hub.ftp.host}:{hub.ftp.port}, mail to {run.mail_where}")
    d = s.deadlines
    out(f"  deadlines Express/Rush/Normal {settings.deadlines.express:g}/"
        f"{settings.deadlines.rush:g}/{settings.deadlines.normal:g} simulated hours = "
        f"{d.express * 3600:.2f}/{d.rush * 3600:.1f}/{d.normal * 3600:.1f} s; "
        "suppliers and readers are connecting")
    await world.start()
    out("")
    return world


def _where(settings: Settings, opts: DemoOptions, data: Path, run: _Running,
           summary: Summary, period: str) -> list[str]:
    """Where to look afterwards: mails, statements, the hub, the database."""
    base_url = run.base_url
    where = [f"mails:      {run.mail_where}",
             f"holdings:   {data / 'holdings.csv'}",
             f"hub HTTP:   {base_url}/  (download links /d/...; operators' dashboard at "
             f"{base_url}/ops/ while a hub runs: run.py demo --keep, then "
             "run.py user add ... --role operator, then ILLHUB_DATABASE__URL=.../illhub_demo "
             "ILLHUB_AMQP__NAME_PREFIX=demo. ILLHUB_FTP__REQUIRE_TLS=false run.py hub)"]
    statements = data / "statements" / period
    if statements.is_dir():
        where.insert(1, f"statements: {statements}/  (one CSV and one PDF per agency, "
                     "and the centre's summary)")
    if opts.keep:
        url = mask_url(with_database(settings.database_url, opts.database))
        env = f"ILLHUB_DATABASE__URL={url} ILLHUB_AMQP__NAME_PREFIX={opts.prefix}"
        where.append(f"database:   {opts.database} kept; explore it, e.g.")
        if summary.example:
            where.append(f"            {env} {sys.executable} run.py explain "
                         f"{summary.example}")
        where.append(f"            {env} {sys.executable} run.py budgets")
    else:
        where.append(f"database:   {opts.database} removed at the end (run with --keep to "
                     "explore it with run.py explain, ledger show, budgets)")
    return where


async def _summarise(s: Settings, opts: DemoOptions, world: World, pool: asyncpg.Pool,
                     period: str, out: Out) -> Summary:
    """Settle the period, let its mails go out, and compute the summary from the database."""
    sim_days = world.clock.hours() / 24
    settlement_lines = await settle_period(s, pool, period, out)
    # Mail the settlement may have queued goes out while the hub still runs.
    for _ in range(100):
        if not await pending_mail(pool):
            break
        await asyncio.sleep(0.2)
    await asyncio.sleep(0.3)
    data = Path(s.data_dir)
    summary = await compute(pool, speed=opts.speed, mail_dir=None if opts.smtp
                            else data / "mail", period=period)
    stats = world.stats
    summary.settlement = settlement_lines
    summary.refused = stats.refused
    summary.hub_errors = list(stats.errors)
    summary.problems = list(stats.problems)
    if stats.download_failures:
        summary.problems.append(f"{stats.download_failures} download link(s) never "
                                "answered with the PDF")
    summary.sim_days = sim_days
    summary.loans = await loans_report(pool, s.loans, datetime.now(ZoneInfo(s.timezone)).date())
    summary.loans.missing = _missing_mishaps(world.mishaps)
    return summary


async def run(settings: Settings, opts: DemoOptions, out: Out = print) -> Summary:
    """The whole demo; returns the summary (also printed through `out`)."""
    started = time.monotonic()
    opts.check()
    try:
        net = load_network(seed=opts.seed, requesters=opts.requesters,
                           suppliers=opts.suppliers, tag=opts.symbol_tag)
    except NetworkError as exc:
        raise DemoError(str(exc)) from exc
    if opts.book_loans is not None:
        net.requests["BookLoan"] = opts.book_loans
    s = demo_settings(settings, opts)
    provinces = len({a.province for a in net.agencies})
    network_line = (f"{opts.requests} requests from {len(net.requesters)} libraries to "
                    f"{len(net.suppliers)} suppliers in {provinces} provinces")
    out(f"ILL Hub demo: {network_line}, over {opts.days:g} simulated days at "
        f"{opts.speed / 3600:g} simulated hours per second (seed {opts.seed})")
    await _fresh_start(s, opts, net, out)
    running = _Running(await create_pool(s.database_url, max_size=8))
    try:
        world = await _start(settings, s, opts, net, running, out)
        completed = await _simulate(world, running.pool, opts, out)
        period = datetime.now(ZoneInfo(s.timezone)).strftime("%Y-%m")
        summary = await _summarise(s, opts, world, running.pool, period, out)
        # Issue 18: static tier order against the hub's ranking on this very network, in
        # the routing lab (simulated time; about two seconds of CPU, off the hub's loop).
        summary.ranking = list(await asyncio.to_thread(compare_on, net))
        summary.seconds = time.monotonic() - started
        summary.transports = running.transports
        where = _where(settings, opts, Path(s.data_dir), running, summary, period)
        for line in format_summary(summary, network=network_line, where=where):
            out(line)
        if not completed:
            summary.open = max(summary.open, 1)
        return summary
    finally:
        await running.stop()
        if not opts.keep:
            try:
                await teardown(settings, opts)
            except Exception:
                log.warning("demo clean-up failed", exc_info=True)
