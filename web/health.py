"""Health, readiness and metrics on the hub's HTTP server, for load balancers and Prometheus.

  GET /healthz   the process answers and reaches PostgreSQL (200, else 503)
  GET /readyz    PostgreSQL and the broker connection are both up (200, else 503)
  GET /metrics   Prometheus exposition of infra/observability.py's registry
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.exposition import generate_latest

from infra.database import fetch_one
from infra.observability import (
    DEAD_LETTERS,
    DOWNLOADS,
    MAIL_QUEUED,
    OUTBOX_LAG,
    OUTBOX_PENDING,
    REGISTRY,
)

DATABASE_TIMEOUT = 5.0

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
    row = await fetch_one(pool, _SCRAPE_SQL)
    OUTBOX_PENDING.set(row["pending"])
    OUTBOX_LAG.set(float(row["lag"] or 0))
    DEAD_LETTERS.set(row["dead"])
    DOWNLOADS.set(row["downloads"])
    MAIL_QUEUED.set(row["mail"])
    return web.Response(body=generate_latest(REGISTRY),
                        headers={"Content-Type": CONTENT_TYPE_LATEST})


async def healthz(request: web.Request) -> web.Response:
    try:
        await asyncio.wait_for(request.app[POOL].fetchval("SELECT 1"), DATABASE_TIMEOUT)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return web.json_response({"status": "degraded", "database": "unreachable"}, status=503)
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    pool: asyncpg.Pool = request.app[POOL]
    checks: dict[str, str] = {}
    try:
        await asyncio.wait_for(pool.fetchval("SELECT 1"), DATABASE_TIMEOUT)
        checks["database"] = "ok"
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    checks["broker"] = "ok" if request.app[BROKER_UP]() else "disconnected"
    ready = all(v == "ok" for v in checks.values())
    return web.json_response({"status": "ready" if ready else "not ready", **checks},
                             status=200 if ready else 503)


POOL = web.AppKey("health_pool", asyncpg.Pool)
# A callable type is no class to pass as AppKey's second argument; aiohttp reads the
# subscript instead (BaseKey.__orig_class__).
BROKER_UP = web.AppKey[Callable[[], bool]]("health_broker_up")


def add_health_routes(app: web.Application, pool: asyncpg.Pool,
                      broker_up: Callable[[], bool]) -> None:
    app[POOL] = pool
    app[BROKER_UP] = broker_up
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


