"""A scratch ILL network for the dispatch benchmarks.

Its own PostgreSQL database and exchange/queue name prefix, so a benchmark never
touches real data or another run; agencies registered the way operators do it
(`broker.agencies.add`: database row, broker user, queue); holdings generated
set-based (>= 1,000,000 rows: every item held by three suppliers); a routing policy
of a dozen rules and fee schedules, so routing does the work it does in production;
hub processes started as `run.py hub` subprocesses whose CPU time is read from /proc.
Everything is removed again by `close()`.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from bench.hub_processes import free_port
from broker.agencies import NewAgency, add
from broker.dispatch.policies import load_policy
from broker.shards import current_generation, hub_of
from infra.database import create_database, drop_database, with_database
from infra.migrations import migrate
from infra.rabbit_admin import Management
from schemas.settings import Settings
from settlement.fees import load_fees
from sim.identifiers import issn_of

ROOT = Path(__file__).resolve().parent.parent
ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# Co-located with PostgreSQL, the hub talks to it over the Unix socket where there is
# one: a round trip costs about a third of TCP loopback's CPU (measured; README).
SOCKET_DIR = Path("/var/run/postgresql")


def database_url(db: str) -> str:
    if (SOCKET_DIR / ".s.PGSQL.5432").exists():
        return f"postgresql://postgres@/{db}?host={SOCKET_DIR}"
    return f"{ADMIN.rsplit('/', 1)[0]}/{db}"
PROVINCES = [("北京", "北京"), ("上海", "上海"), ("广东", "广州"), ("江苏", "南京"),
             ("湖北", "武汉"), ("四川", "成都"), ("陕西", "西安"), ("甘肃", "兰州"),
             ("新疆", "乌鲁木齐"), ("浙江", "杭州")]
Progress = Callable[[str], None]
# How a hub process is started; ILLHUB_BENCH_HUB_SCRIPT runs another script in its place
# (e.g. one that wraps run.py in a profiler).
HUB_COMMAND = [os.environ.get("ILLHUB_BENCH_HUB_SCRIPT", str(ROOT / "run.py")), "hub"]


def say(line: str) -> None:
    print(f"  {line}", file=sys.stderr, flush=True)


def request_body(requester: str, rid: str, item: str, kind: str = "Copy") -> dict:
    scheme, _, value = requester.partition(":")
    return {"request": {
        "header": {"requestingAgencyId": {"agencyIdType": scheme, "agencyIdValue": value},
                   "timestamp": "2026-11-24T08:00:00Z", "requestingAgencyRequestId": rid},
        "bibliographicInfo": {"title": "图书馆论坛", "bibliographicItemId": [
            {"bibliographicItemIdentifier": item, "bibliographicItemIdentifierCode": "ISSN"}]},
        # A copy request declares its copyright category, as CALIS libraries' requests
        # do (without one, every request would raise an operator's flag).
        "serviceInfo": {"serviceType": kind, "serviceLevel": "Normal",
                        **({"copyrightCompliance": "CN-FAIR-USE"} if kind != "Loan" else {})},
        "patronInfo": {"patronId": f"P-{rid}"}}}


def policy_toml(suppliers: list[str], requesters: list[str]) -> str:
    """A dozen rules of the kinds CALIS uses: groups, exclusions, preferences, caps."""
    q = lambda xs: ", ".join(f'"{x}"' for x in xs)  # noqa: E731
    national, institutes, west = suppliers[:2], suppliers[2:4], requesters[::7]
    return f"""
version = "bench-1"
description = "benchmark policy: twelve rules"
[groups]
national = [{q(national)}]
institutes = [{q(institutes)}]
west = [{q(west)}]
big = [{q(suppliers[4:10])}]
small = [{q(suppliers[-5:])}]
[scoring]
prior_fill_rate = 0.7
turnaround_half_hours = 48.0
load_half = 10.0
cost_half = "20.00"
""" + "\n".join([
        '[[rule]]\nname = "no loans from institutes"\n'
        'when = { service_kind = ["BookLoan"] }\nexclude = ["group:institutes"]',
        '[[rule]]\nname = "institutes for STM articles"\nwhen = { service_kind = '
        '["DocumentDelivery"], id_type = ["issn"] }\nprefer = ["group:institutes"]\n'
        'prefer_tier = 2\nprefer_bonus = 0.1',
        '[[rule]]\nname = "west: national first"\nwhen = { requester = ["group:west"] }\n'
        'prefer = ["group:national"]\nprefer_tier = 1',
        '[[rule]]\nname = "national library books"\nwhen = { service_kind = ["BookLoan"] }\n'
        'prefer = ["group:national"]\nprefer_bonus = 0.2',
        '[[rule]]\nname = "big universities"\nprefer = ["group:big"]\nprefer_bonus = 0.05',
        '[[rule]]\nname = "small libraries last"\nprefer = ["group:small"]\n'
        'prefer_bonus = -0.05',
        '[[rule]]\nname = "national as last resort"\nlast_resort = ["group:national"]',
        *[f'[[rule]]\nname = "daily cap {s}"\ndaily_cap = {{ "{s}" = 1000000 }}'
          for s in suppliers[10:15]],
    ]) + "\n"


def fees_toml(suppliers: list[str]) -> str:
    entries = []
    for i, s in enumerate(suppliers):
        entries.append(f'[[fee]]\nsupplier = "{s}"\nservice_kind = "DocumentDelivery"\n'
                       f'effective_from = 2026-01-01\nbase = "{2 + i % 5}.00"\n'
                       f'per_page = "0.30"')
        entries.append(f'[[fee]]\nsupplier = "{s}"\nservice_kind = "BookLoan"\n'
                       f'effective_from = 2026-01-01\nservice_fee = "10.00"\n'
                       f'courier_fee = "{12 + i % 7}.00"')
    return 'currency = "CNY"\n' + "\n".join(entries) + "\n"


def process_cpu(pid: int | str) -> float:
    """user + sys seconds of one process so far (Linux /proc)."""
    return sum(process_cpu_split(pid))


def children_cpu(pid: int | str) -> float:
    """user + sys seconds of the children a process has waited for (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def process_cpu_split(pid: int | str) -> tuple[float, float]:
    """(user, sys) seconds of one process so far: sys is the kernel's work on its behalf,
    mostly socket reads and writes."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def servers_cpu() -> dict[str, float]:
    """CPU seconds so far of the co-located servers: RabbitMQ (beam.smp) and PostgreSQL:
    every postgres process, and what the ones that exited used (a backend whose
    connection closed, an autovacuum worker that finished), which the kernel adds to
    the postmaster's count of its reaped children."""
    totals = {"rabbitmq": 0.0, "postgresql": 0.0}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            name = (entry / "comm").read_text().strip()
            if name == "beam.smp":
                totals["rabbitmq"] += process_cpu(entry.name)
            elif name == "postgres" or name.startswith("postgres:"):
                totals["postgresql"] += process_cpu(entry.name) + children_cpu(entry.name)
        except (OSError, IndexError):
            continue  # exited meanwhile
    return totals


@dataclass
class HubProcess:
    process: asyncio.subprocess.Process
    log: Path

    def cpu_seconds(self) -> float:
        return process_cpu(self.process.pid)

    def sys_seconds(self) -> float:
        return process_cpu_split(self.process.pid)[1]


@dataclass
class BenchNetwork:
    settings: Settings
    db: str
    url: str
    pool: asyncpg.Pool
    password: str
    requesters: list[str]
    suppliers: list[str]
    items: list[str]
    workdir: Path
    hubs: list[HubProcess] = field(default_factory=list)
    _users: list[str] = field(default_factory=list)

    @classmethod
    async def create(cls, *, agencies: int = 100, holdings: int = 1_000_000,
                     queue_type: str = "quorum", progress: Progress = say) -> BenchNetwork:
        run = secrets.token_hex(3)
        db = f"illhub_bench_{run}"
        await create_database(with_database(ADMIN, db))
        url = database_url(db)
        workdir = Path(tempfile.mkdtemp(prefix=f"illhub-bench-{run}-"))
        settings = Settings().updated(
            database__url=url, amqp__name_prefix=f"bench{run}.", hub_symbol="BENCH:HUB",
            amqp__queue_type=queue_type, data_dir=str(workdir / "var"),
            outbox__poll_seconds=0.05)
        await migrate(url, report=lambda m: None)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        n_sup = max(15, agencies * 3 // 10)
        net = cls(settings, db, url, pool, secrets.token_urlsafe(12), [], [], [], workdir)
        progress(f"network {run}: database {db}, prefix {settings.amqp.name_prefix!r}, "
                 f"{queue_type} queues; registering {agencies} agencies ...")
        for i in range(agencies):
            province, city = PROVINCES[i % len(PROVINCES)]
            supplier = i < n_sup
            symbol = f"B{run}:{'SUP' if supplier else 'REQ'}{i:03d}"
            roles = ("supplier", "requester") if supplier else ("requester",)
            await add(settings, pool, NewAgency(symbol=symbol, name=f"{city}测试图书馆{i}",
                                                roles=roles, password=net.password,
                                                province=province, city=city))
            net._users.append(symbol)
            (net.suppliers if supplier else net.requesters).append(symbol)
        started = time.perf_counter()
        n_items = max(1, holdings // 3)
        net.items = [issn_of(1_000_000 + i) for i in range(n_items)]
        async with pool.acquire() as conn:
            # Set-based like a real import's COPY: every item held by three suppliers.
            await conn.execute(
                """INSERT INTO holding (id_type, id_value, symbol)
                   SELECT 'issn', i.item, s.symbols[1 + ((i.n * 7 + k) % $2)]
                   FROM unnest($1::text[]) WITH ORDINALITY AS i(item, n),
                        generate_series(0, 2) AS k,
                        (SELECT $3::text[] AS symbols) s""",
                net.items, len(net.suppliers), net.suppliers)
            # Vacuumed and analysed now, as a deployment's table is long since: else
            # autovacuum does it (a million new rows) in the middle of a measurement.
            await conn.execute("VACUUM ANALYZE holding")
            count = await conn.fetchval("SELECT count(*) FROM holding")
            await load_policy(conn, policy_toml(net.suppliers, net.requesters), "bench.toml")
            await load_fees(conn, fees_toml(net.suppliers), file_name="bench-fees.toml")
        progress(f"holdings: {count:,} rows over {n_items:,} items in "
                 f"{time.perf_counter() - started:.1f}s; policy of 12 rules; "
                 f"fees for {len(net.suppliers)} suppliers")
        return net

    def hub_env(self, index: int) -> dict[str, str]:
        # No supplier uploads here, so the drop runs without a certificate (a hub refuses
        # to start so unless told, issue 21).
        s = self.settings.updated(database__url=self.url, http__port=free_port(),
                                  ftp__port=free_port(), ftp__require_tls=False,
                                  deadlines__sweep_seconds=3600)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ILLHUB_")}
        env.update(s.environment())
        return env

    async def start_hubs(self, n: int) -> list[HubProcess]:
        for _ in range(n):
            i = len(self.hubs)
            log = self.workdir / f"hub{i}.log"
            with log.open("wb") as out:
                process = await asyncio.create_subprocess_exec(
                    sys.executable, *HUB_COMMAND, cwd=ROOT,
                    env=self.hub_env(i), stdout=out, stderr=asyncio.subprocess.STDOUT)
            self.hubs.append(HubProcess(process, log))
        await self.wait_consuming()
        return self.hubs[-n:]

    async def wait_consuming(self, timeout: float = 60.0) -> None:
        """Until every shard of the intake has an active consumer, and as many hubs are
        active as can be (each hub subscribes to every shard and hands shards over until
        they are shared): a measurement starts with every hub at work."""
        deadline = time.monotonic() + timeout
        async with Management(self.settings.amqp.management_url.get_secret_value()) as m:
            while time.monotonic() < deadline:
                for hub in self.hubs:
                    if hub.process.returncode is not None:
                        raise RuntimeError(f"hub exited: {hub.log.read_text()[-2000:]}")
                shards = await self._shards()
                active = {c.queue: hub_of(c.tag) for c in await m.consumers(self.settings.vhost)
                          if c.active and c.queue in shards}
                if shards and len(active) == len(shards) and \
                        len(set(active.values())) >= min(len(self.hubs), len(shards)):
                    return
                await asyncio.sleep(0.2)
        raise TimeoutError("hub processes did not start consuming within "
                           f"{timeout:.0f}s; logs in {self.workdir}")

    async def _shards(self) -> set[str]:
        """The queues of the intake's current generation."""
        generation = await current_generation(self.pool, self.settings)
        return {self.settings.name(q) for q in generation.queues()} if generation else set()

    async def stop_hubs(self) -> None:
        for hub in self.hubs:
            if hub.process.returncode is None:
                hub.process.send_signal(signal.SIGTERM)
        for hub in self.hubs:
            try:
                await asyncio.wait_for(hub.process.wait(), 30)
            except TimeoutError:
                hub.process.kill()
                await hub.process.wait()
        self.hubs = []

    async def reset(self) -> None:
        """Forget the transactions of a previous measurement (agencies, holdings stay)."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                "TRUNCATE inbox, outbox, audit_log, rota_entry, rota_excluded, "
                "supplier_day_total, supplier_day_change, scorecard_total, scorecard_change, "
                "copyright_copy, ill_transaction CASCADE")

    async def close(self) -> None:
        await self.stop_hubs()
        await self.pool.close()
        s = self.settings
        async with Management(s.amqp.management_url.get_secret_value()) as mgmt:
            await mgmt.remove_scratch(s.vhost, s.amqp.name_prefix, self._users)
        await drop_database(with_database(ADMIN, self.db))
