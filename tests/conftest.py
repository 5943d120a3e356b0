"""The tests' shared fixtures live in tests/support/ (registered below); this file
marks each test with the servers it needs.

Markers (registered in pyproject.toml, `--strict-markers`):
    pg        needs PostgreSQL (ILLHUB_TEST_PG_ADMIN_URL)
    rabbitmq  needs RabbitMQ and its management API (ILLHUB_TEST_AMQP_BASE,
              ILLHUB_TEST_MANAGEMENT_URL)
    zebra     needs Index Data's Zebra SRU server (the `zebra` fixture starts one;
              skipped where it is not installed)

A test gets its markers from the fixtures it uses, directly or through other
fixtures (SERVER_MARKS below): any test whose fixtures include `database_url` (so
also `pool`, `settings`, `make_agency`, `hub`, ...) is marked `pg`; any whose
fixtures include `vhost` (so also `prefix`, `settings`, ...) is marked `rabbitmq`.
A new fixture that reaches a server must depend on one of those two; a test that
reaches a server without them carries the marker itself (`@pytest.mark.pg`, or
`pytestmark` for a whole module). Everything unmarked runs with no server, and
running it where the servers are unreachable proves the marks right:

    ILLHUB_TEST_PG_ADMIN_URL=postgresql://postgres@127.0.0.1:1/postgres \
    ILLHUB_TEST_AMQP_BASE=amqp://guest:guest@127.0.0.1:2 \
    ILLHUB_TEST_MANAGEMENT_URL=http://guest:guest@127.0.0.1:3/ \
    python -m pytest -m "not pg and not rabbitmq"
"""

from __future__ import annotations

import pytest

# Helpers in tests/support/ assert too: rewrite them like test modules, so that a failed
# check there explains itself. (Must come before anything imports them.)
pytest.register_assert_rewrite("tests.support")

# fixture -> the marker of the server it needs. Every fixture that reaches a server
# depends on one of these (`pool` on `database_url`; `prefix` on `vhost`; `settings`
# on both), so a test using any of them, however indirectly, is marked.
SERVER_MARKS = {"database_url": "pg", "vhost": "rabbitmq", "zebra": "zebra"}

pytest_plugins = [
    "tests.support.database",
    "tests.support.broker",
    "tests.support.servers",
    "tests.support.agencies",
    "tests.support.hub",
    "tests.support.network",
    "tests.support.delivery",
    "tests.support.tls",
    "tests.support.zebra",
]


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test with the servers its fixtures need (before `-m` selects)."""
    for item in items:
        needed = getattr(item, "fixturenames", ())
        for fixture, marker in SERVER_MARKS.items():
            if fixture in needed:
                item.add_marker(marker)
