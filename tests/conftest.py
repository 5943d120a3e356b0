"""Fixtures: every test run gets its own PostgreSQL database and broker name prefix.

The servers are real (see README): PostgreSQL and RabbitMQ on loopback, reached
through ILLHUB_TEST_PG_ADMIN_URL / ILLHUB_TEST_AMQP_BASE / ILLHUB_TEST_MANAGEMENT_URL.
All runs share one RabbitMQ vhost (`illhub-test`, created once, never deleted):
creating and deleting a vhost full of quorum queues on every run wedged RabbitMQ
3.10 when runs overlapped. Instead each test gets its own name prefix
(`r<run>.t<n>.`), agency symbols carry the run id, and each test deletes its own
queues, exchanges and broker users when it ends, so runs and tests never collide.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import asyncpg
import pytest

from infra.database import create_pool, migrate
from infra.rabbit_admin import Management
from schemas.settings import Settings

PG_ADMIN = os.environ.get("ILLHUB_TEST_PG_ADMIN_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
AMQP_BASE = os.environ.get("ILLHUB_TEST_AMQP_BASE", "amqp://guest:guest@127.0.0.1:5672")
MANAGEMENT = os.environ.get("ILLHUB_TEST_MANAGEMENT_URL", "http://guest:guest@127.0.0.1:15672/")

RUN_ID = secrets.token_hex(3)
_counter = itertools.count(1)


def unique(label: str = "x") -> str:
    return f"{label}{next(_counter)}"


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[str]:
    name = f"illhub_test_{RUN_ID}"
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
    finally:
        await admin.close()
    base = PG_ADMIN.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    await migrate(url, report=lambda _m: None)
    yield url
    admin = await asyncpg.connect(PG_ADMIN)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


TEST_VHOST = os.environ.get("ILLHUB_TEST_VHOST", "illhub-test")


@pytest.fixture(scope="session")
async def vhost() -> AsyncIterator[str]:
    async with Management(MANAGEMENT) as mgmt:
        await mgmt.put_vhost(TEST_VHOST)  # idempotent
        await mgmt.set_permissions(TEST_VHOST, "guest", configure=".*", write=".*", read=".*")
        await _remove_leftovers(mgmt)
    yield TEST_VHOST
    async with Management(MANAGEMENT) as mgmt:
        for user in await mgmt.users():
            if user["name"].startswith(f"T{RUN_ID}:"):
                await mgmt.delete_user(user["name"])


async def _remove_leftovers(mgmt: Management) -> None:
    """Queues of earlier runs that were killed before their clean-up (idle for an hour)."""
    cutoff = datetime.now(UTC) - timedelta(hours=1)
    for q in await mgmt.queues(TEST_VHOST):
        idle = q.get("idle_since")
        if not idle or q.get("consumers") or q["name"].startswith(f"r{RUN_ID}."):
            continue
        try:
            since = datetime.strptime(idle[:19], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            continue
        if since < cutoff:
            await mgmt.delete_queue(TEST_VHOST, q["name"])


@pytest.fixture
async def prefix(vhost: str) -> AsyncIterator[str]:
    name = f"r{RUN_ID}.{unique('t')}."
    yield name
    async with Management(MANAGEMENT) as mgmt:
        for queue in await mgmt.queue_names(vhost):
            if queue.startswith(name):
                await mgmt.delete_queue(vhost, queue)
        for exchange in await mgmt.exchange_names(vhost):
            if exchange.startswith(name):
                await mgmt.delete_exchange(vhost, exchange)


@pytest.fixture
def settings(database_url: str, vhost: str, prefix: str, tmp_path) -> Settings:
    return Settings(
        database={"url": database_url},
        amqp={"url": f"{AMQP_BASE}/{quote(vhost, safe='')}", "management_url": MANAGEMENT,
              "name_prefix": prefix,
              # Classic queues: a run creates hundreds of short-lived queues, and as
              # quorum queues they overloaded a 2-core RabbitMQ 3.10 until declarations
              # hung. test_topology_agencies checks the production (quorum) declarations.
              "queue_type": "classic"},
        hub_symbol=f"T{RUN_ID}:HUB",
        http={"port": 0},
        ftp={"port": 0},
        data_dir=str(tmp_path / "var"),
    )


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[asyncpg.Pool]:
    p = await create_pool(database_url, max_size=8)
    yield p
    await p.close()


def agency_symbol(label: str | None = None) -> str:
    """A symbol unique to this run, shaped like a real one (`SCHEME:VALUE`)."""
    return f"T{RUN_ID}:{label or unique('LIB')}"


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 10.0,
                     interval: float = 0.05) -> None:
    """Wait for a condition on real servers; fails the test with a clear message."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        if await check():
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check.__name__}")
        await asyncio.sleep(interval)


@pytest.fixture
async def make_agency(settings: Settings, pool: asyncpg.Pool):
    """Register a real agency (DB row, broker user, queue); returns (symbol, password)."""
    from broker.agencies import NewAgency, add

    made: list[str] = []

    async def _make(label: str | None = None, *, name: str = "测试图书馆 Test Library",
                    roles: tuple[str, ...] = ("requester", "supplier"),
                    province: str | None = "北京", city: str | None = "北京",
                    email: str | None = None) -> tuple[str, str]:
        symbol = agency_symbol(label)
        password = secrets.token_urlsafe(12)
        await add(settings, pool, NewAgency(symbol=symbol, name=name, roles=roles,
                                            password=password, province=province, city=city,
                                            email=email, finance_email=email))
        made.append(symbol)
        return symbol, password

    yield _make
    # Later tests share this database: take this test's agencies out of routing.
    await pool.execute("UPDATE agency SET enabled = false WHERE symbol = ANY($1::text[])", made)
    async with Management(MANAGEMENT) as mgmt:
        for symbol in made:
            await mgmt.delete_user(symbol)


@pytest.fixture
async def hub(settings: Settings, database_url: str):
    """A hub process's machinery running in this event loop."""
    from app.hub import Hub

    h = Hub(settings)
    await h.start()
    yield h
    await h.stop()
