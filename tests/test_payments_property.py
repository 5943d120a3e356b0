"""Property (issue 17): after any sequence of postings, runs, payments, disputes and
adjustments, the ledger balances, each statement's outstanding equals its net minus
what was paid, and no closed period changed."""

from __future__ import annotations

import datetime

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.money import Money
from schemas.settings import Settings
from settlement import disputes, dues, ledger
from settlement.disputes import Channel, DisputeRefused, Outcome
from settlement.dues import PaymentSource
from settlement.run import settle
from tests.support.money import at
from tests.support.settlement import (
    after,
    charge,
    fresh_year,
    half_subsidy,
    libraries,
    sweep,
)

EXAMPLES = 40
ran = {"examples": 0, "settled": 0, "payments": 0, "disputes": 0, "accepted": 0}

OP = st.one_of(
    st.tuples(st.just("charge"), st.integers(0, 2), st.integers(0, 2), st.integers(1, 5000)),
    st.tuples(st.just("settle"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("pay"), st.integers(0, 20), st.integers(1, 4), st.just(0)),
    st.tuples(st.just("dispute"), st.integers(0, 20), st.just(0), st.just(0)),
    st.tuples(st.just("dispute"), st.integers(0, 20), st.just(0), st.just(0)),
    st.tuples(st.just("resolve"), st.integers(0, 20), st.integers(0, 4), st.just(0)),
    st.tuples(st.just("resolve"), st.integers(0, 20), st.integers(0, 4), st.just(0)),
)

# Each closed run's figures for the test's agencies, as they were when it closed.
Snapshot = dict[int, list[tuple[str, str, int]]]

NETS = """SELECT owner, currency, net_minor FROM settlement_net
          WHERE run_id = $1 AND owner = ANY($2::text[]) ORDER BY owner, currency"""

# What the run's region of the ledger sums to per owner now: a closed period whose
# postings changed would show here (migration 0010 defines the region).
REGION_SUMS = """
    WITH r AS (SELECT id, cutoff, posting_max FROM settlement_run WHERE id = $1),
         prev AS (SELECT coalesce(max(s.posting_max), 0) AS max,
                         coalesce(max(s.cutoff), date '0001-01-01') AS cutoff
                  FROM settlement_run s, r
                  WHERE s.closed_at IS NOT NULL AND s.cutoff < r.cutoff)
    SELECT e.owner, e.currency, sum(e.amount_minor)::bigint AS net
    FROM r, prev, ledger_posting p JOIN ledger_entry e ON e.posting_id = p.id
    WHERE p.id <= r.posting_max AND p.local_date <= r.cutoff
      AND (p.id > prev.max OR p.local_date > prev.cutoff) AND e.owner = ANY($2::text[])
    GROUP BY e.owner, e.currency HAVING sum(e.amount_minor) <> 0
    ORDER BY e.owner, e.currency"""

LINES = """SELECT p.id FROM ledger_posting p, settlement_run r
           WHERE r.id = $1 AND p.id <= r.posting_max AND p.local_date <= r.cutoff
             AND p.kind = 'charge' AND p.requester = $2 ORDER BY p.id"""


async def _check(conn: asyncpg.Connection, agencies: list[str], snapshot: Snapshot) -> None:
    for run_id, nets in snapshot.items():
        assert [tuple(r) for r in await conn.fetch(NETS, run_id, agencies)] == nets
        sums = [tuple(r) for r in await conn.fetch(REGION_SUMS, run_id, agencies)]
        assert sums == [n for n in nets if n[2] != 0]
    for agency in agencies:
        for p in await dues.positions(conn, agency=agency):
            net = await conn.fetchval(
                "SELECT net_minor FROM settlement_net WHERE run_id = $1 AND owner = $2 "
                "AND currency = $3", p.run_id, agency, p.currency)
            assert p.amount.minor == abs(net)
            assert (p.direction is dues.Direction.TO_AGENCY) == (net > 0)
            paid = await conn.fetchval(
                "SELECT coalesce(sum(amount_minor), 0) FROM statement_payment "
                "WHERE due_id = $1", p.due_id)
            assert p.outstanding.minor == p.amount.minor - paid >= 0


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fees=st.lists(st.integers(1, 5000), min_size=3, max_size=3),
       ops=st.lists(OP, min_size=1, max_size=18))
async def test_any_history_keeps_statements_and_ledger_true(
        pool: asyncpg.Pool, settings: Settings, fees: list[int],
        ops: list[tuple[str, int, int, int]]) -> None:
    ran["examples"] += 1
    year = await fresh_year(pool)
    agencies = await libraries(pool, "甲馆", "乙馆", "丙馆")
    version = await half_subsidy(pool, agencies[0])
    month, snapshot, last_run = 1, {}, None
    # Every history starts from a settled month with a charge each way round, so that
    # payments and disputes have statements to work on; then anything may happen.
    prelude = [("charge", i, (i + 1) % 3, fee) for i, fee in enumerate(fees)]
    for op, x, y, z in [*prelude, ("settle", 0, 0, 0), *ops]:
        period = f"{year}-{month:02d}"
        if op == "charge" and x != y:
            await charge(pool, version, agencies[x], agencies[y], Money(z).amount_text(),
                         at(f"{period}-{1 + z % 27:02d}"))
        elif op == "settle" and month < 12:
            result = await settle(pool, settings, period, now=after(period))
            last_run = result.run_id
            if last_run is not None:
                snapshot[last_run] = [tuple(r) for r in await pool.fetch(NETS, last_run,
                                                                           agencies)]
                ran["settled"] += 1
            month += 1
        elif op == "pay":
            await _pay(pool, agencies, x, y)
        elif op == "dispute" and last_run is not None:
            await _dispute(pool, agencies, last_run, x)
        elif op == "resolve":
            await _resolve(pool, agencies, x, y, after(f"{year}-{max(month - 1, 1):02d}"),
                           settings.timezone)
        async with pool.acquire() as conn:
            await _check(conn, agencies, snapshot)
    await sweep(pool, settings, year)
    async with pool.acquire() as conn:
        await _check(conn, agencies, snapshot)
        assert await ledger.check(conn) == []


async def _pay(pool: asyncpg.Pool, agencies: list[str], pick: int, quarters: int) -> None:
    async with pool.acquire() as conn:
        open_ = [p for a in agencies for p in await dues.positions(conn, agency=a,
                                                                  open_only=True)]
        if not open_:
            return
        p = open_[pick % len(open_)]
        amount = max(1, p.outstanding.minor * quarters // 4)
        await dues.record_payment(conn, p.due_id, Money(amount, p.currency),
                                  paid_on=p.issued_on, source=PaymentSource.BANK,
                                  actor="property", source_key=f"prop:{p.due_id}:{amount}:"
                                                               f"{p.paid.minor}")
        ran["payments"] += 1


async def _dispute(pool: asyncpg.Pool, agencies: list[str], run_id: int, pick: int) -> None:
    async with pool.acquire() as conn:
        candidates = []
        for a in agencies:
            for p in await dues.positions(conn, agency=a, run_id=run_id):
                candidates += [(p, r["id"]) for r in await conn.fetch(LINES, run_id, a)]
        if not candidates:
            return
        p, posting = candidates[pick % len(candidates)]
        try:
            await disputes.open_dispute(conn, reference=p.reference, posting_id=posting,
                                        agency=p.agency, reason="property", actor="property",
                                        channel=Channel.API, today=p.issued_on)
            ran["disputes"] += 1
        except DisputeRefused:
            pass  # not a line of this statement, reversed, disputed, fully subsidised


async def _resolve(pool: asyncpg.Pool, agencies: list[str], pick: int, how: int,
                   on: datetime.datetime, tz: str) -> None:
    async with pool.acquire() as conn:
        found = [d for a in agencies for d in await disputes.disputes(conn, agency=a,
                                                                     open_only=True)]
        found = list({d.id: d for d in found}.values())
        if not found:
            return
        d = found[pick % len(found)]
        if how == 0:
            await disputes.resolve(conn, d.id, outcome=Outcome.REJECTED, reason="no",
                                   actor="property", on=on, tz=tz)
            return
        fee = await conn.fetchval("SELECT fee_minor FROM ledger_posting WHERE id = $1",
                                  d.posting_id)
        corrected = Money(fee * (how - 1) // 4, d.amount.currency) if how > 1 else None
        await disputes.resolve(conn, d.id, outcome=Outcome.ACCEPTED, reason="yes",
                               actor="property", on=on, tz=tz, corrected_fee=corrected)
        ran["accepted"] += 1


def test_the_property_exercised_every_step() -> None:
    """The histories above did settle, pay, dispute and accept (not only no-ops)."""
    if ran["examples"]:
        assert ran["settled"] and ran["payments"] and ran["disputes"] and ran["accepted"], ran
