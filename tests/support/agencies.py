"""Agencies for tests, two kinds.

`make_agency` (fixture) registers a real agency the way `run.py agency add` does: a
database row, a broker user with its password and a queue. When the test ends its
agencies are disabled (later tests share the database and must not route to them)
and their broker users deleted.

`sql_agencies` inserts bare rows, for tests that only need a symbol and a name to
exist: the counterparts of ledger postings, settlement statements and holdings
files. They get no broker user and never connect, so they are inserted disabled:
an enabled one would be routed to by later tests' hubs (a holdings test's agency
holds the ISSN the dispatch tests ask for) and get a queue declared by every hub
that starts after it.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

import asyncpg
import pytest

from broker.agencies import NewAgency, add
from infra.rabbit_admin import Management
from schemas.settings import Settings
from tests.support.broker import MANAGEMENT
from tests.support.names import agency_symbol, unique

MakeAgency = Callable[..., Awaitable[tuple[str, str]]]


@pytest.fixture
async def make_agency(settings: Settings, pool: asyncpg.Pool) -> AsyncIterator[MakeAgency]:
    """Register a real agency (DB row, broker user, queue); returns (symbol, password)."""
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


def finance_email(symbol: str) -> str:
    """The finance contact `sql_agencies(..., finance_emails=True)` gives an agency."""
    return f"finance-{symbol.replace(':', '-').lower()}@example.edu.cn"


async def sql_agencies(db: asyncpg.Pool | asyncpg.Connection, *names: str,
                       roles: Sequence[str] = ("requester", "supplier"),
                       province: str | None = None, city: str | None = None,
                       finance_emails: bool = False,
                       symbols: Sequence[str] | None = None) -> list[str]:
    """Bare agency rows (disabled, see above), one per name; returns their symbols.

    Symbols are fresh (`agency_symbol`) unless given.
    """
    chosen = list(symbols) if symbols is not None else [agency_symbol(unique("A"))
                                                        for _ in names]
    await db.executemany(
        "INSERT INTO agency (symbol, name, roles, password_hash, province, city, "
        "finance_email, enabled) VALUES ($1, $2, $3, 'x', $4, $5, $6, false)",
        [(s, n, list(roles), province, city, finance_email(s) if finance_emails else None)
         for s, n in zip(chosen, names, strict=True)])
    return chosen
