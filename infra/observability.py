"""What operators' tools read: Prometheus metrics, health and readiness, JSON logs.

Metrics are per hub process (scrape each one); the database-wide figures (outbox
lag, dead letters, downloads, queued mail) are read at scrape time so every process
reports the same values for them.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

REGISTRY = CollectorRegistry()
MESSAGES_IN = Counter("illhub_messages_in", "Inbound messages processed, by type and outcome",
                      ["type", "outcome"], registry=REGISTRY)
MESSAGES_OUT = Counter("illhub_messages_out", "Messages published from the outbox",
                       ["exchange", "type"], registry=REGISTRY)
INTAKE_SECONDS = Histogram(
    "illhub_intake_seconds",
    "Time to process one inbound message, validation to commit (dispatch latency in the hub)",
    buckets=(0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5), registry=REGISTRY)
OUTBOX_PENDING = Gauge("illhub_outbox_pending", "Outbox rows not yet published",
                       registry=REGISTRY)
OUTBOX_LAG = Gauge("illhub_outbox_lag_seconds", "Age of the oldest unpublished outbox row",
                   registry=REGISTRY)
DEAD_LETTERS = Gauge("illhub_dead_letters", "Dead letters not replayed", registry=REGISTRY)
DOWNLOADS = Gauge("illhub_downloads", "Downloads recorded by the gateway", registry=REGISTRY)
MAIL_QUEUED = Gauge("illhub_mail_queued", "E-mails waiting to be sent", registry=REGISTRY)

# The hub transaction a log line is about; set by dispatch, read by JsonFormatter.
transaction_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "transaction_id", default=None)

_SCRAPE_SQL = """
SELECT (SELECT count(*) FROM outbox WHERE published_at IS NULL) AS pending,
       (SELECT extract(epoch FROM now() - min(created_at)) FROM outbox
         WHERE published_at IS NULL) AS lag,
       (SELECT count(*) FROM dead_letter WHERE replayed_at IS NULL) AS dead,
       (SELECT count(*) FROM download) AS downloads,
       (SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL) AS mail
"""


async def metrics(request: web.Request) -> web.Response:
    pool: asyncpg.Pool = request.app[POOL]
    row = await pool.fetchrow(_SCRAPE_SQL)
    OUTBOX_PENDING.set(row["pending"])
    OUTBOX_LAG.set(float(row["lag"] or 0))
    DEAD_LETTERS.set(row["dead"])
    DOWNLOADS.set(row["downloads"])
    MAIL_QUEUED.set(row["mail"])
    return web.Response(body=generate_latest(REGISTRY),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def readyz(request: web.Request) -> web.Response:
    pool: asyncpg.Pool = request.app[POOL]
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), 5)
        checks["database"] = "ok"
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = "ok" if request.app[BROKER_UP]() else "disconnected"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", **checks},
                             status=200 if ready else 503)


POOL = web.AppKey("observability_pool", asyncpg.Pool)
BROKER_UP = web.AppKey("observability_broker_up", Callable[[], bool])


def add_routes(app: web.Application, pool: asyncpg.Pool, broker_up: Callable[[], bool]) -> None:
    app[POOL] = pool
    app[BROKER_UP] = broker_up
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the hub transaction id when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        txn = transaction_id.get()
        if txn:
            entry["transaction"] = txn
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)
