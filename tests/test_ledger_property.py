"""Property: random histories of requests, fills, redeliveries, cancels, refunds and
overcharges keep the ledger balanced and every budget within 0..limit, and the ledger
agrees with a plain model of what was charged and not reversed."""

from __future__ import annotations

import asyncio
import datetime

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.money import Money
from settlement.ledger import ChargeAboveQuote, check, post_charge, reverse
from settlement.subsidy import load_subsidy
from tests.support.agencies import sql_agencies
from tests.support.money import at
from tests.support.names import budget_name, txn_id

EXAMPLES = 200
TRANSACTIONS = 5
ran = {"examples": 0, "ops": 0, "partial_grants": 0}

# burst: every transaction filled at once, each on its own connection (several hubs).
OPS = ("fill", "fill", "cancel", "refund", "overcharge", "burst")
history = st.lists(st.tuples(st.sampled_from(OPS), st.integers(0, TRANSACTIONS - 1),
                             st.integers(0, 45)), min_size=1, max_size=40)


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=history,
       fees=st.lists(st.integers(0, 3000), min_size=TRANSACTIONS, max_size=TRANSACTIONS),
       percent=st.integers(0, 100), fixed=st.integers(0, 800), cap=st.integers(0, 2500),
       pot=st.integers(0, 6000), own=st.integers(0, 3000))
async def test_random_histories_keep_the_ledger_balanced(
        pool: asyncpg.Pool, ops: list[tuple[str, int, int]], fees: list[int], percent: int,
        fixed: int, cap: int, pot: int, own: int) -> None:
    ran["examples"] += 1
    r1, r2, sup = await sql_agencies(pool, "读者甲馆", "读者乙馆", "供应馆")
    pot_name, own_name = budget_name("pot"), budget_name("own")
    async with pool.acquire() as conn:
        version = await load_subsidy(conn, f"""
[[budget]]
name = "{pot_name}"
per = "global"
period = "total"
amount = "{Money(pot).amount_text()}"
[[budget]]
name = "{own_name}"
per = "requester"
period = "month"
amount = "{Money(own).amount_text()}"
[[rule]]
name = "promotion"
when = {{ requester = ["{r1}"], date_from = 2026-10-10, date_to = 2026-10-31 }}
percent = {percent}
cap = "{Money(cap).amount_text()}"
budgets = ["{pot_name}"]
[[rule]]
name = "ordinary"
when = {{ requester = ["{r1}", "{r2}"] }}
fixed = "{Money(fixed).amount_text()}"
budgets = ["{own_name}", "{pot_name}"]
""")
    ids = [txn_id() for _ in range(TRANSACTIONS)]
    requester = [r1 if i % 2 == 0 else r2 for i in range(TRANSACTIONS)]
    charged = [False] * TRANSACTIONS
    reversed_ = [False] * TRANSACTIONS
    start = datetime.date(2026, 10, 1)

    async def fill(conn: asyncpg.Connection, t: int, on: datetime.datetime) -> None:
        fee = Money(fees[t])
        r = await post_charge(conn, transaction_id=ids[t], event="CopyCompleted",
                              requester=requester[t], supplier=sup,
                              service_kind="DocumentDelivery", fee=fee, quote=fee, on=on,
                              subsidy_version=version)
        assert r.duplicate == charged[t]    # a redelivery when it was filled before
        assert r.fee == fee and 0 <= r.subsidy.minor <= fee.minor
        ran["partial_grants"] += any(g.granted < g.wanted for g in r.grants)

    async def fill_alone(t: int, on: datetime.datetime) -> None:
        async with pool.acquire() as c:
            await fill(c, t, on)

    async with pool.acquire() as conn:
        for op, t, offset in ops:
            ran["ops"] += 1
            on = at((start + datetime.timedelta(days=offset)).isoformat(), "09:30")
            fee = Money(fees[t])
            if op == "fill":
                await fill(conn, t, on)
                charged[t] = True
            elif op == "burst":
                await asyncio.gather(*(fill_alone(i, on) for i in range(TRANSACTIONS)))
                charged = [True] * TRANSACTIONS
            elif op == "overcharge":
                if charged[t]:
                    continue             # the key is taken: it would return the first post
                with pytest.raises(ChargeAboveQuote):
                    await post_charge(conn, transaction_id=ids[t], event="CopyCompleted",
                                      requester=requester[t], supplier=sup,
                                      service_kind="DocumentDelivery", fee=fee + Money(1),
                                      quote=fee, on=on, subsidy_version=version)
            else:                        # cancel (before supply: free) or refund (after)
                r = await reverse(conn, transaction_id=ids[t], event="CopyCompleted",
                                  reason=op, on=on)
                if not charged[t]:
                    assert r is None
                else:
                    assert r is not None and r.duplicate == reversed_[t]
                    reversed_[t] = True

        # Each transaction nets to what the model says: its fee if charged and not reversed.
        nets = await conn.fetch(
            """SELECT transaction_id, sum(fee_minor) AS fee, sum(subsidy_minor) AS subsidy,
                      count(*) AS n
               FROM ledger_posting WHERE transaction_id = ANY($1::text[])
               GROUP BY transaction_id""", ids)
        by_id = {r["transaction_id"]: r for r in nets}
        outstanding_subsidy = 0
        for i, t in enumerate(ids):
            row = by_id.get(t)
            assert (row["n"] if row else 0) == int(charged[i]) + int(reversed_[i])
            expected = fees[i] if charged[i] and not reversed_[i] else 0
            assert (row["fee"] if row else 0) == expected
            if row is not None:
                assert 0 <= row["subsidy"] <= row["fee"]
                outstanding_subsidy += row["subsidy"]
        entries_sum = await conn.fetchval(
            "SELECT coalesce(sum(amount_minor), 0) FROM ledger_entry "
            "WHERE transaction_id = ANY($1::text[])", ids)
        assert entries_sum == 0
        budgets = await conn.fetch(
            "SELECT name, spent_minor, limit_minor FROM subsidy_budget WHERE name = ANY($1)",
            [pot_name, own_name])
        for b in budgets:
            assert 0 <= b["spent_minor"] <= b["limit_minor"]
        # Every fen of subsidy still standing came out of the global pot, and no more.
        pot_spent = next((b["spent_minor"] for b in budgets if b["name"] == pot_name), 0)
        assert pot_spent == outstanding_subsidy <= pot
        assert await check(conn) == []


def test_report_example_count(capsys: pytest.CaptureFixture[str]) -> None:
    if not ran["examples"]:
        pytest.skip("the property test did not run in this session")
    assert ran["examples"] >= EXAMPLES
    with capsys.disabled():
        print(f"\nledger property test: {ran['examples']} examples, {ran['ops']} operations, "
              f"{ran['partial_grants']} postings with a budget shortfall")
