"""Flags: one store (infra/flags.py), its kinds, and migration 0015 that made it one.

The first tests are pure (no servers); the others need PostgreSQL.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from infra import flags
from infra.database import create_database, drop_database, with_database
from infra.flags import CHARGE_REFUSED, FlagKind, raise_flag
from infra.migrations import load_migrations
from settlement.ledger import (
    ChargeAboveMaxCost,
    ChargeAboveQuote,
    ChargeCurrencyMismatch,
    ChargeRefused,
)
from tests.support.database import PG_ADMIN, check_list
from tests.support.names import RUN_ID, agency_symbol, unique

CONSTRAINT = "flag_kind_check"


def test_the_check_lists_exactly_the_enum() -> None:
    assert check_list(CONSTRAINT, "kind") == {k.value for k in FlagKind}


def test_each_refused_charge_has_its_own_kind() -> None:
    refusals = (ChargeAboveQuote, ChargeAboveMaxCost, ChargeCurrencyMismatch)
    assert set(ChargeRefused.__subclasses__()) == set(refusals)
    assert {r.flag_kind for r in refusals} == CHARGE_REFUSED
    assert ChargeAboveQuote.flag_kind == FlagKind.CHARGE_ABOVE_SCHEDULE


async def test_raised_once_with_its_event_and_read_back(pool: asyncpg.Pool) -> None:
    supplier, requester, txn = agency_symbol(), agency_symbol(), f"ILL-F-{unique()}-{RUN_ID}"
    facts = {"event": "Loaned", "requester": requester, "supplier": supplier,
             "reason": "above_max_cost", "fee_minor": 2000, "limit_minor": 1500,
             "currency": "CNY"}
    async with pool.acquire() as conn:
        raised = [await raise_flag(conn, FlagKind.CHARGE_ABOVE_MAX_COST, supplier, "too dear",
                                   key=txn, transaction_id=txn, facts=facts)
                  for _ in range(2)]
        assert raised == [True, False]
        assert await conn.fetchval("SELECT flag_raised($1, $2)", "charge_above_max_cost", txn)
        assert not await conn.fetchval("SELECT flag_raised($1, $2)", "loan_overdue", txn)
        events = await conn.fetch(
            "SELECT routing_key, body FROM outbox WHERE headers->>'hub-transaction-id' = $1",
            txn)
    assert [e["routing_key"] for e in events] == ["flag.charge_above_max_cost"]
    [flag] = await flags.of_transaction(pool, txn)
    assert (flag.kind, flag.subject, flag.detail, flag.facts) == (
        FlagKind.CHARGE_ABOVE_MAX_COST, supplier, "too dear", facts)
    assert json.loads(events[0]["body"])["facts"] == facts
    # The requester named in the facts finds it too; other kinds do not.
    assert [f.id for f in await flags.concerning(pool, requester)] == [flag.id]
    assert await flags.concerning(pool, requester, kinds=[FlagKind.LOAN_OVERDUE]) == []
    assert flag.id in [f.id for f in await flags.latest(pool, kinds=CHARGE_REFUSED)]
    later = datetime.now(UTC) + timedelta(days=1)
    assert await flags.count(pool, kinds=CHARGE_REFUSED, since=later) == 0
    assert flags.facts_text({"a": 1, "b": None}) == "a=1 b=-"


@pytest.mark.pg  # a scratch database, without the run's database fixture
async def test_migration_0015_moves_charge_flag_into_flag() -> None:
    """A refusal dispatch saw (a charge_flag row and its charge_above_schedule twin)
    becomes one flag; one refused elsewhere becomes a flag of its reason's kind."""
    url = with_database(PG_ADMIN, f"illhub_test_{RUN_ID}_flags0015")
    await create_database(url, replace=True)
    try:
        conn = await asyncpg.connect(url)
        try:
            for m in load_migrations():
                if m.version < 15:
                    await conn.execute(m.sql)
            await conn.execute(
                """INSERT INTO charge_flag (flagged_at, transaction_id, event, requester,
                                            supplier, reason, fee_minor, limit_minor,
                                            currency, detail)
                   VALUES (now() - interval '2 days', 'T-1', 'CopyCompleted', 'R:1', 'S:1',
                           'above_quote', 1500, 800, 'CNY', 'above the quote'),
                          (now() - interval '1 day', 'T-2', 'Loaned', 'R:1', 'S:2',
                           'above_max_cost', 2000, 1500, 'CNY', 'above maximumCosts')""")
            await conn.execute(
                """INSERT INTO flag (raised_at, kind, subject, transaction_id, detail,
                                     dedupe_key)
                   VALUES (now() - interval '3 days', 'charge_above_schedule', 'S:1', 'T-1',
                           'above the quote', 'charge_above_schedule:T-1:CopyCompleted:1500'),
                          (now(), 'loan_overdue', 'R:1', 'T-3', 'late', 'loan_overdue:T-3')""")
            [m15] = [m for m in load_migrations() if m.version == 15]
            await conn.execute(m15.sql)
            rows = await conn.fetch(
                "SELECT kind, subject, transaction_id, detail, facts, dedupe_key, raised_at "
                "FROM flag ORDER BY transaction_id")
            assert [(r["kind"], r["dedupe_key"]) for r in rows] == [
                ("charge_above_schedule", "charge_above_schedule:T-1:CopyCompleted:1500:CNY"),
                ("charge_above_max_cost", "charge_above_max_cost:T-2:Loaned:2000:CNY"),
                ("loan_overdue", "loan_overdue:T-3")]
            assert json.loads(rows[0]["facts"]) == {
                "event": "CopyCompleted", "requester": "R:1", "supplier": "S:1",
                "reason": "above_quote", "fee_minor": 1500, "limit_minor": 800,
                "currency": "CNY"}
            # The twin kept its time (its event was published then).
            assert rows[0]["raised_at"] < rows[1]["raised_at"]
            assert json.loads(rows[2]["facts"]) == {}
            assert not await conn.fetchval(
                "SELECT to_regclass('charge_flag') IS NOT NULL")
        finally:
            await conn.close()
    finally:
        await drop_database(url)
