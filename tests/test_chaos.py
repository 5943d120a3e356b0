"""The chaos harness, bounded: real hub processes killed and cut off while requests flow.

The full run (`python run.py chaos`: 20,000 requests, RabbitMQ and PostgreSQL
restarts) is for a machine of one's own; these variants touch only their own
database, broker users, queues and connections, so they run beside other tests.
"""

from __future__ import annotations

from bench.chaos import ChaosOptions, run
from schemas.settings import Settings


def _options(settings: Settings, **knobs: object) -> ChaosOptions:
    # The deadline leaves room for the worst a responsive supplier meets here: hubs are
    # killed every ~2 s and take 4-10 s to restart on a loaded 2-core box, so its answer
    # can wait in a shard for seconds, and a sweep by a hub just back may come first
    # (seen with 4 s: 1 'silent' request in 20 ended Unfilled while helpers loaded the
    # machine). The full run (run.py chaos) uses 10 s too.
    opts = ChaosOptions(broker_restart=False, db_restart=False, window=60, deadline=10.0,
                        drain_timeout=60.0, progress_seconds=1000.0,
                        prefix=f"{settings.amqp.name_prefix}chaos.")
    for key, value in knobs.items():
        setattr(opts, key, value)
    return opts


async def test_three_hubs_killed_and_smtp_down_lose_nothing(settings: Settings) -> None:
    lines: list[str] = []
    verdict = await run(settings, _options(settings, requests=200, hubs=3, kill_interval=2.0,
                                           smtp_outage=2.0, sever=False), out=lines.append)
    report = "\n".join(lines)
    assert verdict.ok, report
    rows = {r.label: r.value for r in verdict.rows}
    assert rows["requests sent"] == "200"
    kills = int(rows["SIGKILLs (restarts)"].split()[0])
    assert kills >= 1, report
    assert float(rows["SMTP outage"].split()[0]) >= 2.0


async def test_one_hub_rides_through_lost_database_and_broker_connections(
        settings: Settings) -> None:
    """No second process to take over: the hub itself must reconnect its consumer,
    outbox relay and mail sender after its sessions are cut."""
    lines: list[str] = []
    verdict = await run(settings, _options(settings, requests=120, hubs=1, kill_interval=0.0,
                                           smtp_outage=0.0, sever=True, window=40),
                        out=lines.append)
    report = "\n".join(lines)
    assert verdict.ok, report
    rows = {r.label: r.value for r in verdict.rows}
    severed, closed = (int(x) for x in rows[
        "hub DB sessions severed / broker connections closed"].split(" / "))
    assert severed >= 1 and closed >= 1, report
