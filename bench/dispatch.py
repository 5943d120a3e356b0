"""Dispatch benchmarks: throughput at saturation, latency at a fixed offered load, a
CALIS year replayed, one hub process against two.

The clock runs from a requester's publish to the forwarded request arriving on the
supplier's queue (and ExpectToSupply on the requester's). Requesters publish as their
own broker users (persistent messages, publisher confirms), as in production; an
observer reads every agency queue over one connection. Hubs are `run.py hub`
subprocesses, so their CPU time (user + sys, from /proc) is theirs alone.

    .venv/bin/python -m bench.dispatch [--requests 20000] [--hubs 1] [--rate 1000 --seconds 60]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench import flame
from bench.network import BenchNetwork, Progress, request_body, say, servers_cpu
from infra.topology import INBOUND, agency_queue

WINDOW = 400  # publishes in flight per requester connection


class Observer:
    """Reads every agency queue; times each forward against its publish."""

    def __init__(self, net: BenchNetwork) -> None:
        self.net = net
        self.published: dict[str, float] = {}
        self.latencies: list[float] = []
        self.forwards = 0
        self.expect = 0
        self.first: float | None = None
        self.last = 0.0
        self.target = 0
        self.done = asyncio.Event()
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def start(self) -> None:
        s = self.net.settings
        self._connection = await aio_pika.connect(s.amqp_broker_url)
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=5000)
        suppliers = set(self.net.suppliers)
        for symbol in self.net.suppliers + self.net.requesters:
            queue = await channel.get_queue(s.name(agency_queue(symbol)), ensure=False)
            await queue.purge()
            await queue.consume(self._on_supplier if symbol in suppliers
                                else self._on_requester, no_ack=True)

    def expect_total(self, n: int) -> None:
        self.target = n
        self.forwards = self.expect = 0
        self.first = None
        self.latencies = []
        self.done.clear()

    async def _on_supplier(self, message: AbstractIncomingMessage) -> None:
        if message.type != "request":
            return await self._on_requester(message)  # suppliers request too
        now = time.perf_counter()
        sent = self.published.pop(message.correlation_id or "", None)
        if sent is not None:
            self.latencies.append(now - sent)
        self.forwards += 1
        self.first = self.first or now
        self.last = now
        self._check()

    async def _on_requester(self, message: AbstractIncomingMessage) -> None:
        if message.type == "supplyingAgencyMessage" and b'"ExpectToSupply"' in message.body:
            self.expect += 1
            self._check()

    def _check(self) -> None:
        if self.target and self.forwards >= self.target and self.expect >= self.target:
            self.done.set()

    async def close(self) -> None:
        if self._connection:
            await self._connection.close()


class Requesters:
    """One broker connection per requesting library, publishing as that library."""

    def __init__(self, net: BenchNetwork) -> None:
        self.net = net
        self.exchanges: dict[str, aio_pika.abc.AbstractExchange] = {}
        self._connections: list[aio_pika.abc.AbstractConnection] = []
        self.sent = 0

    async def start(self) -> None:
        s = self.net.settings
        for symbol in self.net.requesters:
            connection = await aio_pika.connect(s.amqp_url_for(symbol, self.net.password))
            channel = await connection.channel(publisher_confirms=True)
            self.exchanges[symbol] = await channel.get_exchange(s.name(INBOUND), ensure=False)
            self._connections.append(connection)

    async def publish(self, observer: Observer, who: str, rid: str, item: str,
                      kind: str) -> None:
        body = json.dumps(request_body(who, rid, item, kind), ensure_ascii=False).encode()
        message = aio_pika.Message(
            body=body, content_type="application/json", message_id=str(uuid.uuid4()),
            type="request", user_id=who, correlation_id=rid, timestamp=datetime.now(UTC),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        observer.published[rid] = time.perf_counter()
        await self.exchanges[who].publish(message, routing_key="request")
        self.sent += 1

    def request(self, n: int, tag: str, loans: float = 0.0) -> tuple[str, str, str, str]:
        net = self.net
        who = net.requesters[n % len(net.requesters)]
        item = net.items[(n * 7919) % len(net.items)]
        kind = "Loan" if loans and (n * 2654435761 % 1000) < loans * 1000 else "Copy"
        return who, f"{tag}-{n}", item, kind

    async def flood(self, observer: Observer, n: int, tag: str, loans: float = 0.0) -> None:
        """Publish n requests as fast as the broker confirms them."""
        per: dict[str, list[int]] = {}
        for i in range(n):
            per.setdefault(self.request(i, tag)[0], []).append(i)

        async def one(indexes: list[int]) -> None:
            for start in range(0, len(indexes), WINDOW):
                await asyncio.gather(*(self.publish(observer, *self.request(i, tag, loans))
                                       for i in indexes[start:start + WINDOW]))

        await asyncio.gather(*(one(ix) for ix in per.values()))

    async def paced(self, observer: Observer, rate: float, seconds: float, tag: str) -> float:
        """Publish at a fixed offered rate; returns the rate actually achieved."""
        total = int(rate * seconds)
        start = time.perf_counter()
        pending: set[asyncio.Task[None]] = set()
        for i in range(total):
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(self.publish(observer, *self.request(i, tag)))
            pending.add(task)
            task.add_done_callback(pending.discard)
        await asyncio.gather(*pending)
        return total / (time.perf_counter() - start)

    async def close(self) -> None:
        for c in self._connections:
            await c.close()


async def _wait(observer: Observer, progress: Progress, what: str,
                timeout: float = 1800.0) -> None:
    deadline = time.monotonic() + timeout
    while not observer.done.is_set():
        try:
            await asyncio.wait_for(observer.done.wait(), 3)
        except TimeoutError:
            progress(f"{what}: {observer.forwards:,}/{observer.target:,} forwarded, "
                     f"{observer.expect:,} ExpectToSupply")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{what}: gave up after {timeout:.0f}s") from None


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


class CpuMeter:
    """CPU seconds over a window: the hub processes, this process (the benchmark's
    clients), RabbitMQ and PostgreSQL, each read from /proc."""

    def __init__(self, net: BenchNetwork) -> None:
        self.net = net
        self.hub0 = sum(h.cpu_seconds() for h in net.hubs)
        self.hub_sys0 = sum(h.sys_seconds() for h in net.hubs)
        self.servers0 = servers_cpu()
        self.client0 = time.process_time()

    def per_1000(self, requests: int) -> dict[str, float]:
        """CPU seconds per 1,000 requests (= CPU-ms per request) of each, and in all."""
        hub = sum(h.cpu_seconds() for h in self.net.hubs) - self.hub0
        client = time.process_time() - self.client0
        split = {"hub": hub, "clients": client,
                 **{k: v - self.servers0[k] for k, v in servers_cpu().items()}}
        result = {f"{k}_cpu_s_per_1000": round(v / requests * 1000, 3)
                  for k, v in split.items()}
        result["all_cpu_s_per_1000"] = round(sum(split.values()) / requests * 1000, 3)
        hub_sys = sum(h.sys_seconds() for h in self.net.hubs) - self.hub_sys0
        result["hub_sys_cpu_s_per_1000"] = round(hub_sys / requests * 1000, 3)
        return result


async def throughput(net: BenchNetwork, requests: int, hubs: int = 1, loans: float = 0.0,
                     tag: str = "T", progress: Progress = say,
                     flame_svg: Path | None = None) -> dict[str, Any]:
    """Requests routed per second at saturation, and the CPU per 1,000 requests of the
    hubs, RabbitMQ, PostgreSQL and the clients. With `flame_svg`, the first hub process
    is sampled while it works (bench/flame.py)."""
    await net.reset()
    await net.start_hubs(hubs)
    observer, requesters = Observer(net), Requesters(net)
    await observer.start()
    await requesters.start()
    recording = await flame.record(net.hubs[0].process.pid, flame_svg) if flame_svg else None
    meter = CpuMeter(net)
    observer.expect_total(requests)
    progress(f"{tag}: publishing {requests:,} requests to {hubs} hub process(es) ...")
    start = time.perf_counter()
    await requesters.flood(observer, requests, tag, loans)
    published = time.perf_counter() - start
    await _wait(observer, progress, tag)
    elapsed = observer.last - start
    cpu = meter.per_1000(requests)
    profile = await recording.stop() if recording else None
    await requesters.close()
    await observer.close()
    await net.stop_hubs()
    result: dict[str, Any] = {
        "requests": requests, "hubs": hubs, "seconds": round(elapsed, 2),
        "publish_seconds": round(published, 2),
        "requests_per_s": round(requests / elapsed, 1), **cpu}
    if flame_svg:
        result["flame"] = profile or {"svg": None, "error": "py-spy is not installed"}
    progress(f"{tag}: {result}")
    return result


async def latency(net: BenchNetwork, rate: float = 1000.0, seconds: float = 60.0,
                  progress: Progress = say) -> dict[str, Any]:
    """Publish -> forward received, at a fixed offered load."""
    await net.reset()
    await net.start_hubs(1)
    observer, requesters = Observer(net), Requesters(net)
    await observer.start()
    await requesters.start()
    total = int(rate * seconds)
    observer.expect_total(total)
    meter = CpuMeter(net)
    progress(f"latency: offering {rate:,.0f} requests/s for {seconds:.0f}s ...")
    publisher = asyncio.create_task(requesters.paced(observer, rate, seconds, "L"))
    while not publisher.done():
        await asyncio.sleep(5)
        progress(f"latency: {requesters.sent:,} published, {observer.forwards:,} forwarded")
    achieved = await publisher
    await _wait(observer, progress, "latency")
    cpu = meter.per_1000(total)
    lat = observer.latencies
    await requesters.close()
    await observer.close()
    await net.stop_hubs()
    result = {"offered_per_s": rate, "seconds": seconds, "achieved_per_s": round(achieved, 1),
              "p50_ms": round(_percentile(lat, 50) * 1000, 1),
              "p95_ms": round(_percentile(lat, 95) * 1000, 1),
              "p99_ms": round(_percentile(lat, 99) * 1000, 1),
              "max_ms": round(max(lat) * 1000, 1) if lat else None,
              "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None, **cpu}
    progress(f"latency: {result}")
    return result


async def main(args: argparse.Namespace) -> None:
    net = await BenchNetwork.create(agencies=args.agencies, holdings=args.holdings,
                                    queue_type=args.queue_type)
    try:
        results: dict[str, Any] = {}
        for hubs in args.hubs:
            results[f"throughput_{hubs}"] = await throughput(
                net, args.requests, hubs, flame_svg=Path(args.flame) if args.flame else None)
        if args.seconds:
            results["latency"] = await latency(net, args.rate, args.seconds)
        print(json.dumps(results, indent=2))
    finally:
        await net.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--hubs", type=int, nargs="+", default=[1])
    parser.add_argument("--agencies", type=int, default=100)
    parser.add_argument("--holdings", type=int, default=1_000_000)
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--seconds", type=float, default=0.0)
    parser.add_argument("--queue-type", default="quorum", choices=["quorum", "classic"])
    parser.add_argument("--flame", help="sample the first hub process: the flame graph's SVG")
    asyncio.run(main(parser.parse_args()))
    sys.exit(0)
