"""The hub's HTTP server: one aiohttp app for every route the hub serves.

  /d/{token}        readers' downloads (delivery/gateway.py)
  /healthz /readyz /metrics   for load balancers and Prometheus (web/health.py)
  /ops/...          the operators' pages (web/operators/)
  /signin /signout /account   people's sign-in, sessions (web/signin.py, web/auth.py)
  /signin/oidc...   single sign-on by OpenID Connect (web/oidc.py)
  /lib/... /fin/... library staff's and finance pages (web/library/, web/finance/)
  /api/v1/...       the read-only REST API with its OpenAPI document (web/api/)
  /audit            the audit of people's actions (web/audit_page.py)
  POST /iso18626    ISO 18626 XML over HTTP (web/iso18626.py), when given an intake

aiohttp serves it: already the hub's HTTP client library, mature, asyncio-native
(the server shares the hub's event loop and asyncpg pool), and it streams files
with sendfile(2). Tokens never reach the logs: the access log masks them.

HTTPS: `start_http` is given the server context (infra.tls.ServerContexts.http); with
`http.tls_cert` set, every answer carries Strict-Transport-Security. Behind a reverse
proxy listed in `http.trusted_proxies`, and only then, the request is taken to come
from the last X-Forwarded-For hop over the X-Forwarded-Proto scheme: one middleware
here rewrites it, so every handler's `request.remote` (the gateway's and the sign-in
form's per-address limits) and `request.secure` (Secure cookies) mean the reader's.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from ssl import SSLContext

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware
from aiohttp.web_response import StreamResponse

from broker.intake import Intake
from delivery.gateway import MaskingAccessLogger, add_download_routes
from schemas.settings import Settings
from web.api.routes import add_api_routes
from web.audit_page import add_audit_routes
from web.auth import session_middleware
from web.finance.pages import add_finance_routes
from web.health import add_health_routes
from web.iso18626 import Iso18626Endpoint
from web.library.pages import add_library_routes
from web.oidc import add_oidc_routes
from web.operators.pages import add_operator_routes

log = logging.getLogger(__name__)

LISTEN_BACKLOG = 1024

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _no_broker() -> bool:
    return False


def _utc_now() -> datetime:
    return datetime.now(UTC)


def make_app(settings: Settings, pool: asyncpg.Pool, *,
             clock: Callable[[], datetime] | None = None,
             broker_up: Callable[[], bool] = _no_broker,
             intake: Intake | None = None) -> web.Application:
    """The app with every route; `intake` adds `POST /iso18626` (a hub process has one)."""
    # Sessions after the proxy rewrite: a person's session is seen with the reader's
    # address and scheme (web/auth.py).
    app = web.Application(middlewares=[forwarded_by(settings.http.trusted_proxies),
                                       session_middleware(settings, pool,
                                                          clock or _utc_now)])
    if settings.http.tls_cert and settings.http.hsts_seconds > 0:
        # A signal rather than a middleware: it also reaches the answers aiohttp makes
        # itself (404 for an unknown path, 500) and those of the operators' sub-app.
        app.on_response_prepare.append(strict_transport(settings.http.hsts_seconds))
    add_download_routes(app, settings, pool, clock=clock)
    add_health_routes(app, pool, broker_up)
    add_operator_routes(app, settings, pool, clock=clock)
    add_oidc_routes(app, settings, pool, clock=clock)
    if intake is not None:
        Iso18626Endpoint(settings, pool, intake).add_routes(app)
    add_api_routes(app, settings, pool, clock=clock)
    add_audit_routes(app, settings, pool)
    add_library_routes(app, settings, pool, intake, clock=clock)
    add_finance_routes(app, settings, pool, clock=clock)
    return app


def forwarded_by(proxies: Iterable[str]) -> Middleware:
    """A request from a trusted proxy, as its client sent it: the address the proxy
    appended last to X-Forwarded-For (earlier hops are the client's to invent), and
    the scheme in X-Forwarded-Proto. From anyone else both headers are ignored."""
    trusted = frozenset(proxies)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.remote is not None and request.remote in trusted:
            request = request.clone(remote=_last(request, "X-Forwarded-For") or request.remote,
                                    scheme=_scheme(request))
        return await handler(request)

    return middleware


def _last(request: web.Request, header: str) -> str | None:
    """The value the nearest proxy added to a comma-separated header."""
    values = [v.strip() for v in request.headers.get(header, "").split(",") if v.strip()]
    return values[-1] if values else None


def _scheme(request: web.Request) -> str:
    proto = (_last(request, "X-Forwarded-Proto") or "").lower()
    return proto if proto in ("http", "https") else request.scheme


def strict_transport(seconds: int) -> Callable[[web.Request, StreamResponse],
                                               Awaitable[None]]:
    async def add_header(_request: web.Request, response: StreamResponse) -> None:
        response.headers["Strict-Transport-Security"] = f"max-age={seconds}"

    return add_header


@dataclass
class HttpServer:
    runner: web.AppRunner
    host: str
    port: int
    scheme: str = "http"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}"

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_http(settings: Settings, app: web.Application, *,
                     ssl: SSLContext | None = None) -> HttpServer:
    """Serve `app` on settings.http.host:port (port 0: any free port, see base_url);
    with `ssl` (infra.tls.ServerContexts.http) only HTTPS is spoken there."""
    runner = web.AppRunner(app, access_log_class=MaskingAccessLogger, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, settings.http.host, settings.http.port, backlog=LISTEN_BACKLOG,
                       ssl_context=ssl)
    await site.start()
    host, port = runner.addresses[0][:2]
    server = HttpServer(runner=runner, host=host, port=port,
                        scheme="https" if ssl is not None else "http")
    log.info("HTTP server listening on %s%s", server.base_url,
             "" if ssl is not None else " (cleartext: no certificate, HTTPS off)")
    return server
