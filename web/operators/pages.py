"""The operators' web pages on the hub's HTTP server: `/ops/`, behind a password.

Routes (all under `/ops`, mounted by `web.app.make_app`):

  GET  /ops/login            sign-in form (`?next=/ops/...` returns there afterwards)
  POST /ops/login            checks the password; sets the session cookie; 303 to `next`
  POST /ops/logout           clears the session cookie
  GET  /ops/                 dashboard: volume, fill rate, turnaround, open requests by
                             state, supplier scorecards, requesters, subsidy budgets,
                             dead letters, charge flags
  GET  /ops/t/{id}           one transaction: facts, rota with tiers, scores and reasons,
                             exclusions, audit trail, ledger, documents and links
  GET  /ops/a/{symbol}       one agency: its scorecard and requester activity (the
                             dashboard's rows for it), budgets, recent transactions
  GET  /ops/search?q=...     a hub transaction id or a requester's request id: one match
                             redirects to its page, several are listed

Settings (`settings.operators`; also `.env` and the secrets directory as
`secrets/operators__password`):

  ILLHUB_OPERATORS__PASSWORD       the operators' shared password. Unset or empty: every
                                   /ops page answers 503 saying how to turn them on.
  ILLHUB_OPERATORS__SESSION_HOURS  how long a sign-in lasts (default 12)
  ILLHUB_OPERATORS__LOGIN_ATTEMPTS failed sign-ins per client address per window before
  ILLHUB_OPERATORS__LOGIN_WINDOW_SECONDS  answers become 429 (defaults 5 per 900 s; in
                                   memory, per process; behind a reverse proxy the
                                   address comes from X-Forwarded-For only when the
                                   proxy is in ILLHUB_HTTP__TRUSTED_PROXIES, as for
                                   the download gateway)

Sessions are stateless: the cookie `illhub_ops` carries an expiry and a nonce,
signed with HMAC-SHA256 under a key derived from the password. Every hub process
with the same password therefore accepts it, and changing the password signs
everyone out. The cookie is HttpOnly, SameSite=Strict (which also keeps other
sites from posting the logout form), Path=/ops, and Secure when the request came
over TLS: the hub's own (ILLHUB_HTTP__TLS_CERT), or a trusted proxy's that says so
in X-Forwarded-Proto (web/app.py rewrites such a request before it gets here).
Passwords are compared in constant time. Without a valid session a page answers 302
to the sign-in form when the client asks for HTML, else 401.

Pages are plain server-rendered HTML with inline SVG charts and no JavaScript, under
a Content-Security-Policy that allows no scripts at all.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import web

from infra.database import Connection
from schemas.settings import Operators as OperatorSettings
from schemas.settings import Settings
from web.operators import data as data
from web.operators.html import (
    Clock,
    agency_page,
    dashboard_page,
    login_page,
    message_page,
    search_results_page,
    transaction_page,
    txn_href,
)

log = logging.getLogger(__name__)

COOKIE = "illhub_ops"
PREFIX = "/ops"
HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
                                "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"),
}
STATEMENT_TIMEOUT = "15s"


class Sessions:
    """Signed, expiring session cookies: `v1.<expires>.<nonce>.<hmac>`."""

    def __init__(self, password: str, hours: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.key = hmac.new(password.encode(), b"illhub operator session v1",
                            hashlib.sha256).digest()
        self.expected = hashlib.sha256(password.encode()).digest()
        self.lifetime = max(60, int(hours * 3600))
        self.clock = clock

    def check_password(self, given: str) -> bool:
        # Digests of equal length, compared in constant time: neither the content nor
        # the length of the password leaks through timing.
        return hmac.compare_digest(hashlib.sha256(given.encode()).digest(), self.expected)

    def _mac(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()

    def issue(self) -> str:
        payload = f"v1.{int(self.clock()) + self.lifetime}.{secrets.token_hex(8)}"
        return f"{payload}.{self._mac(payload)}"

    def valid(self, value: str | None) -> bool:
        if not value or value.count(".") != 3:
            return False
        payload, _, mac = value.rpartition(".")
        if not hmac.compare_digest(self._mac(payload), mac):
            return False
        try:
            expires = int(payload.split(".")[1])
        except ValueError:
            return False
        return self.clock() < expires


class LoginGuard:
    """Failed sign-ins per client address (in memory, per process): then 429 for a while."""

    MAX_ADDRESSES = 10_000

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = max(1, limit)
        self.window = window
        self.clock = clock
        self.failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int | None:
        q = self.failures.get(address)
        if not q:
            return None
        cutoff = self.clock() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self.failures[address]
            return None
        if len(q) >= self.limit:
            return max(1, int(q[0] + self.window - self.clock() + 0.999))
        return None

    def fail(self, address: str) -> None:
        if address not in self.failures and len(self.failures) >= self.MAX_ADDRESSES:
            self.failures.clear()  # under a flood, forgetting beats running out of memory
        self.failures.setdefault(address, deque(maxlen=self.limit)).append(self.clock())

    def succeed(self, address: str) -> None:
        self.failures.pop(address, None)


@dataclass
class Operators:
    settings: Settings
    pool: asyncpg.Pool
    config: OperatorSettings
    sessions: Sessions | None
    guard: LoginGuard
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    @staticmethod
    def address(request: web.Request) -> str:
        """The client, as the download gateway sees it: behind a proxy in
        ILLHUB_HTTP__TRUSTED_PROXIES the hub's app (web/app.py) has put it here."""
        return request.remote or "unknown"

    def signed_in(self, request: web.Request) -> bool:
        return self.sessions is not None and self.sessions.valid(request.cookies.get(COOKIE))


OPS = web.AppKey("web.operators.pages", Operators)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def html_response(body: str, status: int = 200, headers: dict[str, str] | None = None
                  ) -> web.Response:
    return web.Response(status=status, text=body, content_type="text/html", charset="utf-8",
                        headers={**HEADERS, **(headers or {})})


def redirect(location: str, status: int = 303) -> web.Response:
    return web.Response(status=status, headers={**HEADERS, "Location": location})


def safe_next(value: str | None) -> str:
    """Only a path inside /ops/ on this server: never an open redirect."""
    if (value and value.startswith(PREFIX + "/") and not value.startswith("//")
            and "\\" not in value and all(32 < ord(c) < 127 for c in value)):
        return value
    return PREFIX + "/"


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


DISABLED_PAGE = message_page(
    "Operator pages are disabled 运营页面未启用",
    "The operators' pages need a password, and none is configured.",
    "To turn them on, set ILLHUB_OPERATORS__PASSWORD in the hub's environment or .env file "
    "(or write it to secrets/operators__password) and restart the hub.",
    "请设置 ILLHUB_OPERATORS__PASSWORD 后重启。")


@web.middleware
async def _gate(request: web.Request, handler: Handler) -> web.StreamResponse:
    ops = request.app[OPS]
    if ops.sessions is None:
        return html_response(DISABLED_PAGE, 503)
    if getattr(handler, "public", False) or ops.signed_in(request):
        return await handler(request)
    if wants_html(request):
        return redirect(f"{PREFIX}/login?next={quote(request.path_qs, safe='/')}", 302)
    return web.Response(status=401, text="401: operator sign-in required (POST /ops/login)\n",
                        headers={**HEADERS, "WWW-Authenticate": 'Cookie realm="ILL Hub operators"'})


def public(handler: Handler) -> Handler:
    # A function attribute, which a Callable type cannot declare; an attribute rather than a
    # set of handlers because aiohttp's middleware chain wraps handlers with update_wrapper,
    # which carries it along.
    handler.public = True  # type: ignore[attr-defined]
    return handler


@public
async def login_form(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS]
    nxt = safe_next(request.query.get("next"))
    if ops.signed_in(request):
        return redirect(nxt)
    return html_response(login_page(next_path=nxt))


@public
async def login(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS]
    if ops.sessions is None:  # _gate answers 503 before this when the pages are off
        raise web.HTTPServiceUnavailable(text="operator pages are disabled")
    address = ops.address(request)
    wait = ops.guard.retry_after(address)
    if wait is not None:
        return html_response(message_page(
            "Too many attempts 尝试次数过多",
            f"Too many wrong passwords from your address; try again in {wait} seconds."),
            429, {"Retry-After": str(wait)})
    form = await request.post()
    nxt = safe_next(str(form.get("next", "")))
    password = form.get("password")
    if not isinstance(password, str) or not ops.sessions.check_password(password):
        ops.guard.fail(address)
        log.warning("operator sign-in refused: wrong password")
        return html_response(login_page(next_path=nxt, error="Wrong password. 口令错误。"), 401)
    ops.guard.succeed(address)
    resp = redirect(nxt)
    resp.set_cookie(COOKIE, ops.sessions.issue(), max_age=ops.sessions.lifetime, path=PREFIX,
                    httponly=True, samesite="Strict", secure=request.secure)
    log.info("operator signed in")
    return resp


@public
async def logout(request: web.Request) -> web.StreamResponse:
    resp = redirect(f"{PREFIX}/login")
    resp.del_cookie(COOKIE, path=PREFIX, secure=request.secure, httponly=True,
                    samesite="Strict")
    return resp


async def _read(ops: Operators, work: Callable[[Connection], Awaitable[Any]]) -> Any:
    """One consistent, read-only snapshot with a statement timeout."""
    async with ops.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        return await work(conn)


async def dashboard(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS]
    now = ops.clock()
    tz = ops.settings.timezone
    d = await _read(ops, lambda conn: data.dashboard(conn, tz, now))
    return html_response(dashboard_page(d, Clock(tz), now))


async def transaction(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS]
    txn_id = request.match_info["txn_id"]
    view = await _read(ops, lambda conn: data.transaction(conn, txn_id))
    if view is None:
        return html_response(message_page(
            "Unknown transaction 找不到事务",
            f"There is no transaction “{txn_id}”. Hub transaction ids look like "
            "ILL-20250101-0A1B2C3D4E; to find one by the requester's request id, use the "
            "search box.", signed_in=True), 404)
    return html_response(transaction_page(view, Clock(ops.settings.timezone)))


async def agency(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS]
    symbol = request.match_info["symbol"]
    tz = ops.settings.timezone
    now = ops.clock()
    view = await _read(ops, lambda conn: data.agency(conn, symbol, tz, now))
    if view is None:
        return html_response(message_page(
            "Unknown agency 找不到成员馆", f"There is no agency “{symbol}”.", signed_in=True),
            404)
    return html_response(agency_page(view, Clock(tz)))


async def search(request: web.Request) -> web.StreamResponse:
    ops = request.app[OPS]
    q = request.query.get("q", "").strip()[:200]
    if not q:
        return redirect(f"{PREFIX}/")
    rows = await _read(ops, lambda conn: data.search(conn, q))
    if len(rows) == 1:
        return redirect(txn_href(rows[0]["id"]))
    return html_response(search_results_page(q, rows, Clock(ops.settings.timezone)),
                         200 if rows else 404)


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    return redirect(f"{PREFIX}/", 301)


def operators_app(settings: Settings, pool: asyncpg.Pool, *,
                  config: OperatorSettings | None = None,
                  clock: Callable[[], datetime] | None = None) -> web.Application:
    config = config or settings.operators
    secret = config.secret()
    sessions = Sessions(secret, config.session_hours) if secret else None
    if sessions is None:
        log.info("operator pages disabled: set ILLHUB_OPERATORS__PASSWORD to enable /ops/")
    elif len(secret or "") < 12:
        log.warning("the operator password is shorter than 12 characters")
    sub = web.Application(middlewares=[_gate])
    sub[OPS] = Operators(settings=settings, pool=pool, config=config, sessions=sessions,
                         guard=LoginGuard(config.login_attempts, config.login_window_seconds),
                         **({"clock": clock} if clock else {}))
    sub.router.add_get("/login", login_form)
    sub.router.add_post("/login", login)
    sub.router.add_post("/logout", logout)
    sub.router.add_get("/", dashboard)
    sub.router.add_get("/t/{txn_id}", transaction)
    sub.router.add_get("/a/{symbol}", agency)
    sub.router.add_get("/search", search)
    return sub


def add_operator_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool, *,
                        config: OperatorSettings | None = None,
                        clock: Callable[[], datetime] | None = None) -> None:
    """Mount the operators' pages at /ops/ on the hub's HTTP app (see module docstring)."""
    app.router.add_get(PREFIX, _to_dashboard)
    app.add_subapp(PREFIX, operators_app(settings, pool, config=config, clock=clock))


__all__ = ["OperatorSettings", "add_operator_routes", "operators_app"]
