"""The benchmark suite: every figure of the Performance section in one go, one machine.

    .venv/bin/python -m bench            (or: .venv/bin/python run.py bench)
    .venv/bin/python -m bench --quick    (small sizes: a smoke run in about a minute)
    .venv/bin/python -m bench --only baseline throughput latency

Runs, against scratch databases and name prefixes (nothing else is touched):
the bare pipeline (the ceiling), the hub's throughput with one and with two hub
processes (with the CPU seconds per 1,000 requests of the hub, the clients, RabbitMQ
and PostgreSQL), dispatch latency at a fixed offered load, a CALIS year replayed
(100,929 requests), the holdings import and the settlement run. Prints a table,
writes JSON to var/bench/ and says where. Progress goes to stderr as it runs.
Runs on uvloop where installed, like the hub process.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import baseline, dispatch, holdings_import, loop, settlement
from bench.network import ROOT, BenchNetwork, say
from bench.options import STEPS, add_arguments

CALIS_YEAR = 100_929  # requests in the CALIS dispatch centre's first year
HUB_STEPS = (("throughput", 1), ("throughput2", 2), ("throughput3", 3))
# The baseline rows of the table: result key, label, note.
BASELINES = (
    ("baseline", "baseline: consume, commit + outbox, 3 publishes with confirms, ack",
     "ceiling"),
    ("baseline_no_publish", "baseline without the 3 publishes", ""),
    ("baseline_batched", "baseline, a batch's publishes in one write (as the relay now)", ""))


def sizes(quick: bool) -> dict[str, Any]:
    if quick:
        return {"holdings": 30_000, "messages": 2_000, "requests": 1_000, "rate": 200.0,
                "seconds": 5.0, "replay": 2_000, "import_rows": 30_000,
                "transactions": 30_000, "agencies": 100, "settle_agencies": 50}
    return {"holdings": 1_000_000, "messages": 20_000, "requests": 20_000, "rate": 1000.0,
            "seconds": 60.0, "replay": CALIS_YEAR, "import_rows": 1_000_000,
            "transactions": 10_000_000, "agencies": 100, "settle_agencies": 1_000}


def machine() -> dict[str, Any]:
    mem = next((int(line.split()[1]) // 1024 for line in
                Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal")), None)
    model = next((line.split(":", 1)[1].strip() for line in
                  Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.machine())
    event_loop = "uvloop" if _on_uvloop() else "asyncio"
    return {"cpus": os.cpu_count(), "cpu": model, "memory_mb": mem,
            "python": platform.python_version(), "kernel": platform.release(),
            "event_loop": event_loop, "load_average_at_start": os.getloadavg()}


def _on_uvloop() -> bool:
    try:
        return "uvloop" in type(asyncio.get_running_loop()).__module__
    except RuntimeError:
        return False


async def _dispatch_steps(net: BenchNetwork, n: dict[str, Any], wanted: set[str],
                          results: dict[str, Any], flame_svg: Path) -> None:
    if "baseline" in wanted:
        say("[bench] baseline: the bare pipeline")
        results["baseline"] = await baseline.pipeline(net, n["messages"])
        results["baseline_no_publish"] = await baseline.pipeline(
            net, n["messages"], publish=False)
        # The same pipeline publishing as the hub's relay does since issue 20: a
        # ceiling for that way of publishing (the ratios use the baseline above).
        results["baseline_batched"] = await baseline.pipeline(net, n["messages"],
                                                              batched=True)
    for step, hubs in HUB_STEPS:
        if step in wanted:
            say(f"[bench] hub throughput, {hubs} hub process(es)")
            # The flame graph is of the one-process run: there the hub is the whole
            # story; with several, each process's graph is the same shape, smaller.
            results[step] = await dispatch.throughput(
                net, n["requests"], hubs, tag=f"T{hubs}",
                flame_svg=flame_svg if hubs == 1 else None)
    if "latency" in wanted:
        say(f"[bench] dispatch latency at {n['rate']:,.0f} requests/s")
        results["latency"] = await dispatch.latency(net, n["rate"], n["seconds"])
        if "throughput" in results:
            # At loads this machine sustains, where queueing does not dominate: half and
            # 80 % of the throughput just measured.
            for key, share in (("latency_half", 0.5), ("latency_80", 0.8)):
                rate = round(results["throughput"]["requests_per_s"] * share)
                say(f"[bench] dispatch latency at {rate} requests/s ({share:.0%} of the "
                    "throughput)")
                results[key] = await dispatch.latency(net, rate, n["seconds"])
    if "replay" in wanted:
        say(f"[bench] a CALIS year: {n['replay']:,} requests (30 % loans)")
        results["replay"] = await dispatch.throughput(net, n["replay"], 1, loans=0.3,
                                                      tag="Y")


async def run(args: argparse.Namespace, flame_svg: Path) -> dict[str, Any]:
    n = sizes(args.quick)
    wanted = set(args.only or STEPS)
    results: dict[str, Any] = {"machine": machine(), "started": datetime.now(UTC).isoformat(
        timespec="seconds"), "quick": args.quick, "queue_type": args.queue_type}
    started = time.perf_counter()
    if wanted & {"baseline", "throughput", "throughput2", "throughput3", "latency", "replay"}:
        say(f"[bench] scratch network: {n['agencies']} agencies, {n['holdings']:,} holdings")
        net = await BenchNetwork.create(agencies=n["agencies"], holdings=n["holdings"],
                                        queue_type=args.queue_type)
        try:
            await _dispatch_steps(net, n, wanted, results, flame_svg)
        finally:
            await net.close()
    if "holdings" in wanted:
        say(f"[bench] holdings import: {n['import_rows']:,} rows")
        results["holdings"] = await holdings_import.measure(rows=n["import_rows"])
    if "settlement" in wanted:
        say(f"[bench] settlement: {n['transactions']:,} transactions, "
            f"{n['settle_agencies']:,} agencies")
        results["settlement"] = await settlement.measure(
            transactions=n["transactions"], agencies=n["settle_agencies"])
    results["seconds"] = round(time.perf_counter() - started, 1)
    return results


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(r: dict[str, Any]) -> str:
    """The Performance table of the README."""
    rows: list[tuple[str, str, str, str]] = []
    base = r.get("baseline")
    for key, label, note in BASELINES:
        b = r.get(key)
        if b:
            rows.append((label, f"{_f(b['messages_per_s'])} msg/s",
                         f"client CPU {_f(b['client_cpu_s_per_1000'], 3)} s/1000, RabbitMQ "
                         f"{_f(b['rabbitmq_cpu_s_per_1000'], 3)}", note))
    for key, hubs in HUB_STEPS:
        t = r.get(key)
        if t:
            ratio = f"{t['requests_per_s'] / base['messages_per_s']:.2f} x baseline" \
                if base else ""
            rows.append((f"hub throughput, {hubs} process{'es' if hubs > 1 else ''} "
                         f"({_f(t['requests'])} requests)", f"{_f(t['requests_per_s'])} req/s",
                         _split(t), f"{ratio}; target >= 0.40" if ratio else ""))
    lat = r.get("latency")
    if lat:
        rows.append((f"dispatch latency at {_f(lat['offered_per_s'], 0)} req/s offered for "
                     f"{_f(lat['seconds'], 0)} s", f"p99 {_f(lat['p99_ms'])} ms",
                     f"p50 {_f(lat['p50_ms'])}, p95 {_f(lat['p95_ms'])} ms; achieved "
                     f"{_f(lat['achieved_per_s'])} req/s offered", "beyond saturation"))
    for key, share, target in (("latency_half", "half", 50), ("latency_80", "80 %", 100)):
        lt = r.get(key)
        if lt:
            rows.append((f"dispatch latency at {_f(lt['offered_per_s'], 0)} req/s ({share} "
                         "the throughput)", f"p99 {_f(lt['p99_ms'])} ms",
                         f"p50 {_f(lt['p50_ms'])}, p95 {_f(lt['p95_ms'])} ms; {_split(lt)}",
                         f"target p99 <= {target} ms"))
    y = r.get("replay")
    if y:
        rows.append((f"CALIS year replayed ({_f(y['requests'])} requests)",
                     f"{_f(y['seconds'])} s", f"{_f(y['requests_per_s'])} req/s; {_split(y)}",
                     "target <= 100 s"))
    h = r.get("holdings")
    if h:
        rows.append((f"holdings import ({_f(h.get('rows'))} rows)",
                     f"{_f(h.get('seconds'))} s",
                     f"{_f(h.get('rows_per_second'), 0)} rows/s", "target <= 30 s"))
    s = r.get("settlement")
    if s:
        rows.append((f"settlement ({_f(s.get('transactions'))} transactions, "
                     f"{_f(s.get('agencies'))} agencies)", f"{_f(s.get('seconds'))} s",
                     f"peak memory {_f(s.get('peak_mb'), 0)} MB",
                     "target <= 60 s, <= 512 MB"))
    t1 = r.get("throughput")
    if t1:
        rows.append(("CPU per routed request, 1 process", f"{_f(t1['all_cpu_s_per_1000'], 2)} ms",
                     _split(t1), "target <= 2.0 ms (hub 0.6, PostgreSQL 0.5, RabbitMQ 0.7)"))
        rows.append(("servers on their own machines (from the CPU split)",
                     f"{_f(capacity(t1)['hub_core'], 0)} req/s", capacity_text(t1), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(4)] if rows else [0] * 4
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    m = r["machine"]
    lines.append(f"machine: {m['cpus']} x {m['cpu']}, {m['memory_mb']:,} MB, Python "
                 f"{m['python']} on {m['event_loop']}; RabbitMQ and PostgreSQL on the same "
                 f"box; {r['queue_type']} queues; load average at start "
                 f"{m['load_average_at_start'][0]:.2f}; whole run {r['seconds']} s")
    flame_info = (t1 or {}).get("flame")
    if flame_info and flame_info.get("top_self"):
        lines.append(f"flame graph of the hub process: {flame_info['svg']}; "
                     f"{flame_info['samples']:,} samples; top frames by own time:")
        lines += [f"  {f['percent']:5.1f} %  {f['frame']}" for f in flame_info["top_self"]]
    elif flame_info:
        lines.append(f"flame graph: none ({flame_info.get('error')})")
    return "\n".join(lines)


def _split(t: dict[str, Any]) -> str:
    """CPU-ms per request, in all and by process."""
    return (f"CPU {_f(t['all_cpu_s_per_1000'], 2)} ms/req: hub {_f(t['hub_cpu_s_per_1000'], 2)}, "
            f"RabbitMQ {_f(t['rabbitmq_cpu_s_per_1000'], 2)}, PostgreSQL "
            f"{_f(t['postgresql_cpu_s_per_1000'], 2)}, clients "
            f"{_f(t['clients_cpu_s_per_1000'], 2)}")


def capacity(t: dict[str, Any]) -> dict[str, float]:
    """Requests per second one core of each could carry, were it alone on its machine:
    1,000 / its CPU-ms per request. A calculation from the measured split, which assumes
    CPU is the limit and ignores what a network hop adds (latency, not CPU)."""
    return {name: 1000 / t[f"{key}_cpu_s_per_1000"]
            for name, key in (("hub_core", "hub"), ("rabbitmq_core", "rabbitmq"),
                              ("postgresql_core", "postgresql"))
            if t.get(f"{key}_cpu_s_per_1000")}


def capacity_text(t: dict[str, Any]) -> str:
    c = capacity(t)
    return (f"per core: a hub process {_f(c.get('hub_core'), 0)}, RabbitMQ "
            f"{_f(c.get('rabbitmq_core'), 0)}, PostgreSQL {_f(c.get('postgresql_core'), 0)} "
            "req/s")


async def main(args: argparse.Namespace) -> int:
    out = Path(args.output) if args.output else ROOT / "var" / "bench" / (
        f"bench-{datetime.now(UTC):%Y%m%dT%H%M%SZ}{'-quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    # The flame graph of the hub process lies beside the JSON, named like it.
    results = await run(args, out.with_suffix(".svg"))
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n")
    print(table(results))
    print(f"JSON: {out}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    add_arguments(p)
    return p


def cli(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return loop.run(main(args))


if __name__ == "__main__":
    sys.exit(cli())
