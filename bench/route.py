"""Routing throughput: requests/s from requester publish to forwarded request received.

A first figure for dispatch (the full benchmark suite is issue 8): a scratch
database and name prefix, real agencies with their own broker users, holdings,
one hub process's machinery in this event loop, and real AMQP clients.

    .venv/bin/python -m bench.route [--requests 2000] [--suppliers 20] [--requesters 5]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time

import asyncpg

from broker.agencies import NewAgency, add
from broker.client import AgencyClient
from broker.hub import Hub
from broker.management import Management
from schemas.database import migrate
from schemas.settings import Settings

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
PROVINCES = [("北京", "北京"), ("上海", "上海"), ("广东", "广州"), ("江苏", "南京"),
             ("湖北", "武汉"), ("四川", "成都"), ("陕西", "西安")]


def issn(n: int) -> str:
    digits = f"{n % 10_000_000:07d}"
    total = sum(int(d) * w for d, w in zip(digits, range(8, 1, -1), strict=True))
    check = (11 - total % 11) % 11
    return f"{digits[:4]}-{digits[4:]}{'X' if check == 10 else check}"


def request(requester: str, rid: str, item: str) -> dict:
    scheme, _, value = requester.partition(":")
    return {"request": {
        "header": {"requestingAgencyId": {"agencyIdType": scheme, "agencyIdValue": value},
                   "timestamp": "2026-11-24T08:00:00Z", "requestingAgencyRequestId": rid},
        "bibliographicInfo": {"title": "图书馆论坛", "bibliographicItemId": [
            {"bibliographicItemIdentifier": item, "bibliographicItemIdentifierCode": "ISSN"}]},
        "serviceInfo": {"serviceType": "Copy", "serviceLevel": "Normal"},
        "patronInfo": {"patronId": f"P-{rid}"}}}


async def main(args: argparse.Namespace) -> None:
    run = secrets.token_hex(3)
    db = f"illhub_bench_{run}"
    admin = await asyncpg.connect(ADMIN)
    await admin.execute(f'CREATE DATABASE "{db}"')
    await admin.close()
    url = f"{ADMIN.rsplit('/', 1)[0]}/{db}"
    settings = Settings(database_url=url, name_prefix=f"bench{run}.", hub_symbol="BENCH:HUB",
                        outbox_poll_seconds=0.05)
    users: list[str] = []
    try:
        await migrate(url, report=lambda m: print(f"  {m}"))
        pool = await asyncpg.create_pool(url, min_size=1, max_size=4)
        password = secrets.token_urlsafe(12)
        print(f"registering {args.requesters} requesters and {args.suppliers} suppliers ...")
        requesters, suppliers = [], []
        for i in range(args.requesters + args.suppliers):
            province, city = PROVINCES[i % len(PROVINCES)]
            symbol = f"B{run}:{'REQ' if i < args.requesters else 'SUP'}{i}"
            roles = ("requester",) if i < args.requesters else ("supplier",)
            await add(settings, pool, NewAgency(symbol=symbol, name=f"{city}测试馆{i}",
                                                roles=roles, password=password,
                                                province=province, city=city))
            users.append(symbol)
            (requesters if i < args.requesters else suppliers).append(symbol)
        items = [issn(1_000_000 + i) for i in range(args.items)]
        rows = [("issn", item, suppliers[(i * 7 + k) % len(suppliers)])
                for i, item in enumerate(items) for k in range(3)]
        await pool.copy_records_to_table("holding", records=rows,
                                         columns=["id_type", "id_value", "symbol"])
        print(f"holdings: {len(rows):,} rows over {len(items):,} items")

        hub = Hub(settings)
        await hub.start()
        clients = {s: AgencyClient(settings, s, password) for s in requesters + suppliers}
        for c in clients.values():
            await c.connect()
        forwards = 0
        done = asyncio.Event()

        async def count(symbol: str) -> None:
            nonlocal forwards
            client = clients[symbol]
            while True:
                got = await client.inbox.get()
                if got.kind == "request":
                    forwards += 1
                    if forwards == args.requests:
                        done.set()

        counters = [asyncio.create_task(count(s)) for s in suppliers]
        print(f"publishing {args.requests:,} requests ...")
        start = time.perf_counter()
        for n in range(args.requests):
            who = requesters[n % len(requesters)]
            await clients[who].send("request", request(who, f"R{n}", items[n % len(items)]))
        published = time.perf_counter() - start
        while not done.is_set():
            try:
                await asyncio.wait_for(done.wait(), 5)
            except TimeoutError:
                print(f"  ... {forwards:,}/{args.requests:,} forwarded", flush=True)
        elapsed = time.perf_counter() - start
        print(f"published in {published:.2f}s; all {args.requests:,} forwarded in "
              f"{elapsed:.2f}s: {args.requests / elapsed:,.0f} requests routed/s")
        for t in counters:
            t.cancel()
        for c in clients.values():
            await c.close()
        await hub.stop()
        await pool.close()
    finally:
        async with Management(settings.amqp_management_url.get_secret_value()) as mgmt:
            for user in users:
                await mgmt.delete_user(user)
            for queue in await mgmt.queue_names(settings.vhost):
                if queue.startswith(settings.name_prefix):
                    await mgmt.delete_queue(settings.vhost, queue)
            for exchange in await mgmt.exchange_names(settings.vhost):
                if exchange.startswith(settings.name_prefix):
                    await mgmt.delete_exchange(settings.vhost, exchange)
        admin = await asyncpg.connect(ADMIN)
        await admin.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--suppliers", type=int, default=20)
    parser.add_argument("--requesters", type=int, default=5)
    parser.add_argument("--items", type=int, default=20000)
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
