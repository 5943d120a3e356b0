"""Health, readiness and Prometheus metrics on the hub's HTTP server; JSON log lines."""

from __future__ import annotations

import json
import logging

import aiohttp

from illclient.client import AgencyClient
from infra.observability import JsonFormatter, transaction_id
from schemas.settings import Settings
from tests import messages


async def test_health_ready_and_metrics(settings: Settings, hub, make_agency) -> None:
    symbol, pw = await make_agency()
    async with AgencyClient(settings, symbol, pw) as lib:
        await lib.send("request", messages.request(symbol, request_id="OBS-1"))
        await lib.receive()
        await lib.send("request", b"not json")
        await lib.receive()
    async with aiohttp.ClientSession(hub.http.base_url) as http:
        async with http.get("/healthz") as resp:
            assert resp.status == 200
        async with http.get("/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200, body
            assert body == {"status": "ready", "database": "ok", "broker": "ok"}
        async with http.get("/metrics") as resp:
            assert resp.status == 200
            text = await resp.text()
    assert 'illhub_messages_in_total{outcome="ok",type="request"}' in text
    assert 'illhub_messages_in_total{outcome="dead",type="request"}' in text
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
