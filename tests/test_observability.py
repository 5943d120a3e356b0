"""Health, readiness and Prometheus metrics on the hub's HTTP server; JSON log lines."""

from __future__ import annotations

import json
import logging

import aiohttp

from illclient.client import AgencyClient
from infra.observability import JsonFormatter, transaction_id
from schemas.settings import Settings
from tests.support import messages


def counted(metrics: str, series: str) -> float:
    """The value of one series in Prometheus text (0 while it has never been counted)."""
    for line in metrics.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[1])
    return 0.0


async def test_healthz_readyz_and_metrics_of_a_working_hub(
        settings: Settings, hub, make_agency) -> None:
    """Counters are process-wide (other tests' hubs count too): this test checks what its
    own two messages added."""
    ok = 'illhub_messages_in_total{outcome="ok",type="request"}'
    dead = 'illhub_messages_in_total{outcome="dead",type="request"}'
    symbol, pw = await make_agency()
    async with aiohttp.ClientSession(hub.http.base_url) as http:
        async with http.get("/metrics") as resp:
            before = await resp.text()
        async with AgencyClient(settings, symbol, pw) as lib:
            await lib.send("request", messages.request(symbol, request_id="OBS-1"))
            await lib.send("request", b"not json")
            # OBS-1's confirmation and its Unfilled (nobody holds it), and the refusal of
            # the body that is not JSON, in whichever order the intake shards answer.
            answers = sorted([(await lib.receive()).kind or "" for _ in range(3)])
        assert answers == ["requestConfirmation", "requestConfirmation",
                           "supplyingAgencyMessage"]
        async with http.get("/healthz") as resp:
            assert resp.status == 200
        async with http.get("/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body == {"status": "ready", "database": "ok", "broker": "ok"}
        async with http.get("/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    # Counted when the intake commits, before the answers go out.
    assert counted(text, ok) == counted(before, ok) + 1
    assert counted(text, dead) == counted(before, dead) + 1
    assert "illhub_intake_seconds_bucket" in text
    assert 'illhub_messages_out_total{exchange="ill.outbound",type="requestConfirmation"}' in text
    for gauge in ("illhub_outbox_lag_seconds", "illhub_dead_letters", "illhub_downloads",
                  "illhub_mail_queued"):
        assert f"\n{gauge} " in text


async def test_readyz_reports_a_lost_broker(settings: Settings, hub) -> None:
    await hub.connection.close()
    async with aiohttp.ClientSession(hub.http.base_url) as http, http.get("/readyz") as resp:
        assert resp.status == 503
        assert (await resp.json())["broker"] == "disconnected"


def test_json_log_lines_carry_the_transaction() -> None:
    record = logging.LogRecord("broker.dispatch", logging.INFO, __file__, 1,
                               "forwarded to %s", ("CALIS:100010",), None)
    token = transaction_id.set("ILL-20261124-ABCDEF0123")
    try:
        line = json.loads(JsonFormatter().format(record))
    finally:
        transaction_id.reset(token)
    assert line["transaction"] == "ILL-20261124-ABCDEF0123"
    assert line["message"] == "forwarded to CALIS:100010" and line["level"] == "info"
