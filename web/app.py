"""The hub's HTTP server: one aiohttp app for every route the hub serves.

  /d/{token}        readers' downloads (delivery/gateway.py)
  /healthz /readyz /metrics   for load balancers and Prometheus (web/health.py)
  /ops/...          the operators' pages (web/operators/)
  POST /iso18626    ISO 18626 XML over HTTP (web/iso18626.py), when given an intake

aiohttp serves it: already the hub's HTTP client library, mature, asyncio-native
(the server shares the hub's event loop and asyncpg pool), and it streams files
with sendfile(2). Tokens never reach the logs: the access log masks them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import asyncpg
from aiohttp import web

from broker.intake import Intake
from delivery.gateway import MaskingAccessLogger, add_download_routes
from schemas.settings import Settings
from web.health import add_health_routes
from web.iso18626 import Iso18626Endpoint
from web.operators.pages import add_operator_routes

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024


def _no_broker() -> bool:
    return False


def make_app(settings: Settings, pool: asyncpg.Pool, *,
             clock: Callable[[], datetime] | None = None,
             broker_up: Callable[[], bool] = _no_broker,
             intake: Intake | None = None) -> web.Application:
    """The app with every route; `intake` adds `POST /iso18626` (a hub process has one)."""
    app = web.Application()
    add_download_routes(app, settings, pool, clock=clock)
    add_health_routes(app, pool, broker_up)
    add_operator_routes(app, settings, pool, clock=clock)
    if intake is not None:
        Iso18626Endpoint(settings, pool, intake).add_routes(app)
    return app


@dataclass
class HttpServer:
    runner: web.AppRunner
    host: str
    port: int

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_http(settings: Settings, app: web.Application) -> HttpServer:
    """Serve `app` on settings.http.host:port (port 0: any free port, see base_url)."""
    runner = web.AppRunner(app, access_log_class=MaskingAccessLogger, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port, backlog=LISTEN_BACKLOG)
    await site.start()
    host, port = runner.addresses[0][:2]
    log.info("HTTP server listening on http://%s:%s", host, port)
    return HttpServer(runner=runner, host=host, port=port)
