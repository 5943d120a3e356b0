"""The settings every server test runs with, and small helpers for real servers.

`settings` points a hub at the run's database (support/database.py), this test's
name prefix in the shared vhost (support/broker.py) and a data directory under the
test's tmp_path. A test using it needs both servers, and tests/conftest.py marks it
`pg` and `rabbitmq` accordingly.
"""

from __future__ import annotations

import asyncio
import random
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote

import pytest

from schemas.settings import Settings
from tests.support.broker import AMQP_BASE, MANAGEMENT
from tests.support.names import RUN_ID


@pytest.fixture(scope="session")
def run_id() -> str:
    return RUN_ID


@pytest.fixture
def settings(database_url: str, vhost: str, prefix: str, tmp_path: Path) -> Settings:
    """Settings of a hub on the test servers, with this test's own prefix and data dir."""
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
        # Cleartext FTP and SMTP, as the servers most tests start speak; the TLS tests
        # (tests/test_tls_*.py) turn TLS on.
        ftp={"port": 0, "require_tls": False},
        smtp={"security": "none"},
        # Every test client signs in from 127.0.0.1: the per-address limit would add up
        # the whole run's deliberate wrong passwords (tests of it set their own).
        accounts={"address_failures": 100_000},
        data_dir=str(tmp_path / "var"),
    )


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


# Below the kernel's ephemeral range (net.ipv4.ip_local_port_range, 32768-60999 by
# default): a port handed out by bind(0) is an ephemeral one, which any outgoing
# connection (to PostgreSQL, RabbitMQ, a mock) may take as its local port before the
# test binds it; CI met that race ("address already in use"). Ports here are never
# given to outgoing connections.
_TEST_PORTS = range(20000, 32768)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now, outside the ephemeral
    range, so no outgoing connection can take it before the test binds it."""
    for _ in range(200):
        port = random.choice(_TEST_PORTS)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {_TEST_PORTS.start}-{_TEST_PORTS.stop - 1}")
