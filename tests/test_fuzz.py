"""Hostile input (issue #9): hypothesis-drawn hostile messages against a running hub.

The cases and their checks are bench/fuzz_cases.py and bench/fuzz.py, the same code
as the full run of 10,000 (`python -m bench.fuzz`); here about 1,200 of them go
through the real broker as a real agency user. Each one must get a specific ERROR
confirmation or a dead letter with its reason (or OK, for hostile but valid input),
the other agencies' transactions must not change, and the hub must still route a
request afterwards. Set ILLHUB_FUZZ_SEED to replay a run; the seed is in the message
of a failure.
"""

from __future__ import annotations

import os
import secrets

import asyncpg

from app.hub import Hub
from bench.fuzz import fuzz, seed_transactions, snapshot, still_routing
from bench.fuzz_cases import CATEGORIES, Targets, issn
from illclient.client import AgencyClient
from schemas.settings import Settings

CASES = 1200


async def test_hostile_messages_each_get_a_specific_answer(settings: Settings, make_agency,
                                                           pool: asyncpg.Pool) -> None:
    # A smaller size limit keeps the oversized bodies (limit + up to 64 KiB) cheap.
    s = settings.updated(intake__max_message_bytes=128 * 1024)
    me, me_pw = await make_agency(roles=("requester", "supplier"))
    lib, lib_pw = await make_agency(roles=("requester",))
    sup, sup_pw = await make_agency(roles=("supplier",))
    item = issn(secrets.randbelow(10_000_000))
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       item, sup)
    seed = int(os.environ.get("ILLHUB_FUZZ_SEED") or secrets.randbelow(2**32))
    hub = Hub(s, delivery=False)
    await hub.start()
    requester, supplier = AgencyClient(s, lib, lib_pw), AgencyClient(s, sup, sup_pw)
    try:
        await requester.connect()
        await supplier.connect()
        theirs = await seed_transactions(requester, supplier, item)
        before = await snapshot(pool, lib)
        targets = Targets(me=me, requester=lib, supplier=sup, their_requests=tuple(theirs),
                          hub=s.hub_symbol, limit=s.intake.max_message_bytes)
        run = await fuzz(s, pool, (me, me_pw), targets, CASES, seed, stall_seconds=20)
        report = run.report
        assert not report.failures, (
            f"seed {seed}: {len(report.failures)} of {report.cases} cases handled wrongly\n"
            + report.table() + "\n" + "\n".join(report.failure_lines()))
        assert await snapshot(pool, lib) == before, \
            f"seed {seed}: another agency's transaction changed"
        await still_routing(requester, supplier, item)
    finally:
        await requester.close()
        await supplier.close()
        await hub.stop()
    assert {c for c in CATEGORIES if sum(report.counts[c].values())} == set(CATEGORIES)
    assert report.refusals >= report.cases // 2
