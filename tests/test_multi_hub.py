"""Three hub processes, one database, one broker: jobs once per tick, one writer at a time.

Each process runs the deadline sweeper every 0.2 s and a mail sender; one of them
consumes `hub.inbound` (single active consumer). The first supplier of each loan
answers `Loaned` at a random moment around its deadline, so the sweeper (any of
the three processes) and the intake race for the same transaction. The row lock
serialises them: each transaction is either lent by its first supplier or moved
on to the second, never both, and every forward, timeout and mail happens once.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import shutil
import tempfile
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from bench.chaos import teardown
from bench.chaos_scenarios import isbn13
from bench.hub_processes import HubProcesses
from broker.agencies import NewAgency, add
from broker.holdings import import_csv
from illclient.client import AgencyClient, Received
from infra.database import create_pool
from infra.mailqueue import enqueue_mail
from schemas.settings import Settings
from settlement.fees import load_fees
from sim.mailcatcher import start_mail_folder
from sim.messages import agency_id, now_iso
from tests.support.database import scratch_database

LOANS = 60
MAILS = 60
SUPPLIERS = 4
DEADLINE = 2.0  # seconds a supplier has to answer (Express)


@pytest.fixture
async def scratch(settings: Settings) -> AsyncIterator[tuple[Settings, asyncpg.Pool, str]]:
    """A database of this test's own: other tests' rows must not meet three sweepers."""
    scheme = f"MH{secrets.token_hex(3).upper()}"
    async with scratch_database("multihub") as url:
        data = tempfile.mkdtemp(prefix="illhub-multihub-")
        s = settings.updated(database__url=url, hub_symbol=f"{scheme}:HUB", data_dir=data)
        pool = await create_pool(url, max_size=4)
        try:
            yield s, pool, scheme
        finally:
            await pool.close()
            shutil.rmtree(data, ignore_errors=True)


async def test_three_hubs_sweep_once_and_serialise_each_transaction(
        scratch: tuple[Settings, asyncpg.Pool, str]) -> None:
    s0, pool, scheme = scratch
    requester = f"{scheme}:LIB"
    suppliers = [f"{scheme}:SUP{i}" for i in range(SUPPLIERS)]
    passwords = {sym: secrets.token_urlsafe(12) for sym in (requester, *suppliers)}
    mails: Counter[str] = Counter()
    server, port = await start_mail_folder(Path(s0.data_dir) / "mail", lambda raw: mails.update(
        re.findall(rb"(?im)^Message-ID:\s*(<[^>]+>)", raw)[:1]))
    s = s0.updated(smtp__host="127.0.0.1", smtp__port=port)
    hubs = HubProcesses(s, 3, Path(s.data_dir) / "logs", extra_env={
        "ILLHUB_DEADLINES__SWEEP_SECONDS": "0.2",
        "ILLHUB_DEADLINES__EXPRESS": f"{DEADLINE / 3600:.8f}",
        "ILLHUB_SMTP__POLL_SECONDS": "0.2"})
    clients: dict[str, AgencyClient] = {}
    try:
        for sym in passwords:
            roles = ("requester",) if sym == requester else ("supplier",)
            await add(s, pool, NewAgency(symbol=sym, name="多馆测试 Multi-hub test",
                                         roles=roles, password=passwords[sym],
                                         province="北京", city="北京"))
        holdings = Path(s.data_dir) / "holdings.csv"
        holdings.write_text("symbol,id_type,id_value\n" + "".join(
            f"{sup},isbn,{isbn13(n)}\n" for sup in suppliers for n in range(LOANS)))
        async with pool.acquire() as conn:
            assert (await import_csv(conn, holdings, replace=False)).rejected == 0
            await load_fees(conn, "".join(
                f'[[fee]]\nsupplier = "{sup}"\nservice_kind = "BookLoan"\n'
                f'effective_from = 2020-01-01\nservice_fee = "10.00"\ncourier_fee = "5.00"\n'
                for sup in suppliers), file_name="multi-hub fees")
            # Mail queued before the hubs start: three senders compete for every row.
            for n in range(MAILS):
                await enqueue_mail(conn, f"reader{n}@readers.example", f"通知 {n}", "正文",
                                   sender="ILL Hub <hub@example.org>")
        await hubs.start_all()
        for sym in passwords:
            clients[sym] = AgencyClient(s, sym, passwords[sym])
            await clients[sym].connect()

        rng = random.Random(9)
        refusals: list[str] = []
        forwards: dict[tuple[str, int], list[str]] = defaultdict(list)
        finished: set[str] = set()
        answers: set[asyncio.Task[None]] = set()

        async def loaned(supplier: str, header: dict, txn: str, wait: float) -> None:
            await asyncio.sleep(wait)
            await clients[supplier].send("supplyingAgencyMessage", {"supplyingAgencyMessage": {
                "header": {"supplyingAgencyId": agency_id(supplier),
                           "requestingAgencyId": header["requestingAgencyId"],
                           "timestamp": now_iso(),
                           "requestingAgencyRequestId": header["requestingAgencyRequestId"]},
                "messageInfo": {"reasonForMessage": "StatusChange"},
                "statusInfo": {"status": "Loaned", "lastChange": now_iso()}}},
                message_id=f"{txn}/{supplier}/Loaned")

        async def supplier_side(sym: str) -> None:
            while True:
                msg: Received = await clients[sym].inbox.get()
                content = msg.content
                if msg.kind == "supplyingAgencyMessageConfirmation":
                    if content["confirmationHeader"]["messageStatus"] != "OK":
                        refusals.append(content["errorData"]["errorValue"])
                elif msg.kind == "request":
                    txn = msg.headers["hub-transaction-id"]
                    position = int(msg.message_id.rsplit("/", 1)[1])
                    forwards[(txn, position)].append(msg.message_id)
                    # The first supplier answers around its deadline, racing the sweepers;
                    # the next ones at once (unless the hub is slower than the deadline).
                    wait = rng.uniform(DEADLINE - 0.6, DEADLINE + 0.6) if position == 1 else 0
                    answers.add(asyncio.create_task(loaned(sym, content["header"], txn, wait)))

        async def requester_side() -> None:
            while True:
                msg = await clients[requester].inbox.get()
                if msg.kind == "supplyingAgencyMessage" and \
                        msg.content["statusInfo"]["status"] == "Loaned":
                    finished.add(msg.content["header"]["requestingAgencyRequestId"])

        readers = [*(asyncio.create_task(supplier_side(sup)) for sup in suppliers),
                   asyncio.create_task(requester_side())]
        for n in range(LOANS):
            await clients[requester].send("request", {"request": {
                "header": {"requestingAgencyId": agency_id(requester), "timestamp": now_iso(),
                           "requestingAgencyRequestId": f"L{n:03d}"},
                "bibliographicInfo": {"title": f"并发测试 {n}", "bibliographicItemId": [
                    {"bibliographicItemIdentifier": isbn13(n),
                     "bibliographicItemIdentifierCode": "ISBN"}]},
                "serviceInfo": {"serviceType": "Loan", "serviceLevel": "Express"},
                "patronInfo": {"patronId": f"P{n}"}}})
        for _ in range(600):
            # Done when every loan is lent, every mail sent, and every supplier passed
            # over has had its late Loaned refused (one refusal per deadline row).
            if len(finished) == LOANS and sum(mails.values()) >= MAILS and len(refusals) >= \
                    await pool.fetchval("SELECT count(*) FROM audit_log WHERE event = 'deadline'"):
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a late duplicate would show up here
        for t in readers:
            t.cancel()
        await asyncio.gather(*readers, return_exceptions=True)
        assert len(finished) == LOANS

        # At most one row per event and rota entry. A forward row names its position and
        # supplier, a deadline row only the supplier that timed out (one rota entry each):
        # a loaded hub may rightly time out two suppliers of one transaction in a row, but
        # one entry timed out or forwarded twice is a double sweep.
        audit = await pool.fetch(
            """SELECT transaction_id, event, detail->>'position' AS position,
                      detail->>'supplier' AS supplier, count(*) AS n
               FROM audit_log WHERE event IN ('forward', 'deadline', 'status:Loaned')
               GROUP BY 1, 2, 3, 4""")
        per_txn: dict[str, Counter[str]] = defaultdict(Counter)
        passed_over: dict[str, set[str]] = defaultdict(set)
        for r in audit:
            assert r["n"] == 1, f"{r['transaction_id']}: {r['event']} {r['position']} " \
                                f"{r['supplier']} x{r['n']}"
            per_txn[r["transaction_id"]][r["event"]] += 1
            if r["event"] == "deadline":
                passed_over[r["transaction_id"]].add(r["supplier"])
        assert len(per_txn) == LOANS
        charges = dict(await pool.fetch(
            "SELECT transaction_id, supplier FROM ledger_posting WHERE kind = 'charge'"))
        rota = {(r["transaction_id"], r["position"]): r["supplier"] for r in await pool.fetch(
            "SELECT transaction_id, position, supplier FROM rota_entry")}
        timed_out = 0
        for txn, events in per_txn.items():
            # Lent exactly once, by the supplier after the d that timed out, and charged
            # to it alone: a late Loaned of a supplier passed over was refused, never
            # applied beside the next supplier's.
            d = events["deadline"]
            timed_out += d
            assert events["status:Loaned"] == 1, txn
            assert events["forward"] == d + 1, txn
            # The ones passed over are the first d of the rota, each timed out once.
            assert passed_over[txn] == {rota[(txn, p)] for p in range(1, d + 1)}, txn
            assert charges[txn] == rota[(txn, d + 1)], txn
        assert len(charges) == LOANS
        # Every supplier answers in the end, so each one passed over was refused once.
        assert len(refusals) == timed_out, refusals[:3]
        assert all("is not the current supplier" in r for r in refusals), refusals[:3]
        # Each forward arrived once, under its one message_id.
        assert all(len(ids) == 1 for ids in forwards.values())
        assert len(forwards) == LOANS + timed_out
        # Timeouts were handled once in all: the sweep counts the three processes logged
        # add up to the number of transactions that timed out.
        swept = sum(int(n) for i in range(3) for n in re.findall(
            r"deadline sweep: (\d+) silent", hubs.log_tail(i, 100_000)))
        assert swept == timed_out
        # Every queued mail went out exactly once, though three senders polled for it.
        assert len(mails) == MAILS and set(mails.values()) == {1}, mails.most_common(3)
        assert await pool.fetchval("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL") == 0
        print(f"multi-hub: {timed_out} deadline(s) passed in {LOANS} loans; {MAILS} mails "
              "each sent once")
    finally:
        for c in clients.values():
            await c.close()
        codes = await hubs.stop_all()
        server.close()
        await teardown(s0, [*passwords, s0.hub_symbol])
    assert codes == [0, 0, 0], [hubs.log_tail(i) for i in range(3)]
