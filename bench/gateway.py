#!/usr/bin/env python3
"""Download gateway throughput: one 5 MB PDF, 50 concurrent HTTP clients, ~10 seconds.

    .venv/bin/python bench/gateway.py [--clients 50] [--seconds 10] [--size-mb 5]

Creates a scratch database `illhub_bench_<random>` (through --admin-url), migrates
it, stores one document with an unlimited grant, serves the gateway in this
process and runs the clients in a child process (so client work does not eat the
server's event loop), then drops the database. Every request goes the full way:
token hash lookup, atomic claim + download row in PostgreSQL, sendfile, the
closing UPDATE of the download row.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp

from delivery.grants import create_grant
from delivery.store import new_store_name, store_root
from infra.database import create_database, create_pool, drop_database, with_database
from infra.migrations import migrate
from schemas.settings import Settings
from web.app import make_app, start_http


def clients(url: str, n: int, seconds: float, out: Any) -> None:
    out.put(asyncio.run(_clients(url, n, seconds)))


async def _clients(url: str, n: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors = 0
    received = 0
    connector = aiohttp.TCPConnector(limit=n)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as http:
        start = time.perf_counter()
        deadline = start + seconds

        async def one() -> None:
            nonlocal errors, received
            while time.perf_counter() < deadline:
                t = time.perf_counter()
                try:
                    async with http.get(url) as resp:
                        size = 0
                        async for chunk in resp.content.iter_chunked(1 << 20):
                            size += len(chunk)
                        if resp.status != 200:
                            errors += 1
                            continue
                except aiohttp.ClientError:
                    errors += 1
                    continue
                received += size
                latencies.append(time.perf_counter() - t)

        await asyncio.gather(*(one() for _ in range(n)))
        elapsed = time.perf_counter() - start
    return {"requests": len(latencies), "errors": errors, "bytes": received,
            "elapsed": elapsed, "latencies": latencies}


async def main(args: argparse.Namespace) -> int:
    dsn = with_database(args.admin_url, f"illhub_bench_{secrets.token_hex(4)}")
    await create_database(dsn)
    try:
        await migrate(dsn, report=lambda _m: None)
        with tempfile.TemporaryDirectory(prefix="illhub-bench-") as data_dir:
            return await run(args, dsn, data_dir)
    finally:
        await drop_database(dsn)


async def run(args: argparse.Namespace, dsn: str, data_dir: str) -> int:
    settings = Settings(database={"url": dsn}, data_dir=data_dir,
                        http={"host": "127.0.0.1", "port": 0})
    pool = await create_pool(dsn, min_size=4, max_size=args.pool)
    size = int(args.size_mb * 1024 * 1024)
    doc_id, store_name = new_store_name()
    path = store_root(settings) / store_name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"%PDF-1.7\n" + secrets.token_bytes(size - 9))
    async with pool.acquire() as conn:
        await conn.execute(
            """INSERT INTO document (id, transaction_id, supplier, filename, content_type, size,
                                     sha256, store_name)
               VALUES ($1, 'bench', 'BENCH:SUPPLIER', '基准测试.pdf', 'application/pdf', $2,
                       repeat('0', 64), $3)""", uuid.UUID(doc_id), size,
            store_name)
        grant = await create_grant(conn, document_id=doc_id, transaction_id="bench",
                                   patron_email=None, patron_name=None, downloads=None,
                                   days=1, now=datetime.now(UTC))
    server = await start_http(settings, make_app(settings, pool))
    url = grant.url(server.base_url)
    try:
        ctx = multiprocessing.get_context("spawn")
        out = ctx.Queue()
        child = ctx.Process(target=clients, args=(url, args.clients, args.seconds, out))
        child.start()
        result = await asyncio.to_thread(out.get)
        await asyncio.to_thread(child.join)
    finally:
        await server.stop()
        downloads = await pool.fetchval("SELECT count(*) FROM download WHERE completed")
        await pool.close()

    n, elapsed = result["requests"], result["elapsed"]
    lat = sorted(result["latencies"]) or [0.0]
    mb = result["bytes"] / 2**20
    print(f"gateway: {args.size_mb:g} MB file, {args.clients} concurrent clients, "
          f"{elapsed:.1f} s")
    print(f"  {n} downloads ({result['errors']} errors; {downloads} recorded complete)")
    print(f"  {n / elapsed:.1f} requests/s, {mb / elapsed:.1f} MB/s "
          f"({mb * 8 / 1024 / elapsed:.2f} Gbit/s)")
    print(f"  latency p50 {statistics.median(lat) * 1000:.0f} ms, "
          f"p95 {lat[int(len(lat) * 0.95) - 1] * 1000:.0f} ms, max {lat[-1] * 1000:.0f} ms")
    return 0 if result["errors"] == 0 and n > 0 else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--size-mb", type=float, default=5.0)
    parser.add_argument("--pool", type=int, default=20, help="gateway's PostgreSQL pool size")
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    sys.exit(asyncio.run(main(parser.parse_args())))
