"""The operators' web pages on the hub's HTTP server: `/ops/`, for signed-in people.

Routes (all under `/ops`, mounted by `web.app.make_app`):

  GET  /ops/                 dashboard: volume, fill rate, turnaround, open requests by
                             state, supplier scorecards, requesters, subsidy budgets,
                             dead letters, charge flags
  GET  /ops/t/{id}           one transaction: facts, rota with tiers, scores and reasons,
                             exclusions, audit trail, ledger, documents and links
  GET  /ops/a/{symbol}       one agency: its scorecard and requester activity (the
                             dashboard's rows for it), budgets, recent transactions
  GET  /ops/search?q=...     a hub transaction id or a requester's request id: one match
                             redirects to its page, several are listed

Who may see what (issue 16): people sign in with their own accounts (web/signin.py;
the shared operators' password of earlier releases is gone). The dashboard needs
`view_dashboard`; transactions, agencies and the search `view_transactions`. Each
page's queries take the person's reach for that permission (web/operators/data.py):
a regional administrator sees the agencies of their province, a library's staff their
own agency, and a transaction or agency out of reach answers 404 exactly as an
unknown one. Without a session a browser is sent to /signin, other clients get 401;
without the permission, 403 (web/auth.py `require`).

Pages are plain server-rendered HTML with inline SVG charts and no JavaScript, under
a Content-Security-Policy that allows no scripts at all.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg
from aiohttp import web

from accounts.roles import Permission
from infra.database import read_snapshot
from schemas.settings import Settings
from web.auth import require
from web.operators import data as data
from web.operators.html import (
    HEADERS,
    Clock,
    agency_page,
    dashboard_page,
    html_response,
    message_page,
    redirect,
    search_results_page,
    transaction_page,
    txn_href,
)
from web.signin import add_signin_routes

log = logging.getLogger(__name__)

PREFIX = "/ops"


@dataclass
class Operators:
    settings: Settings
    pool: asyncpg.Pool
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))


OPS = web.AppKey("web.operators.pages", Operators)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]




async def dashboard(request: web.Request) -> web.StreamResponse:
    reach = require(request, Permission.VIEW_DASHBOARD)
    ops = request.app[OPS]
    now = ops.clock()
    tz = ops.settings.timezone
    d = await read_snapshot(ops.pool, lambda conn: data.dashboard(conn, tz, now, reach))
    return html_response(dashboard_page(d, Clock(tz), now))


async def transaction(request: web.Request) -> web.StreamResponse:
    reach = require(request, Permission.VIEW_TRANSACTIONS)
    ops = request.app[OPS]
    txn_id = request.match_info["txn_id"]
    view = await read_snapshot(ops.pool, lambda conn: data.transaction(conn, txn_id, reach))
    if view is None:
        return html_response(message_page(
            "Unknown transaction 找不到事务",
            f"There is no transaction “{txn_id}”. Hub transaction ids look like "
            "ILL-20250101-0A1B2C3D4E; to find one by the requester's request id, use the "
            "search box.", signed_in=True), 404)
    return html_response(transaction_page(view, Clock(ops.settings.timezone)))


async def agency(request: web.Request) -> web.StreamResponse:
    reach = require(request, Permission.VIEW_TRANSACTIONS)
    ops = request.app[OPS]
    symbol = request.match_info["symbol"]
    tz = ops.settings.timezone
    now = ops.clock()
    view = await read_snapshot(ops.pool, lambda conn: data.agency(conn, symbol, tz, now, reach))
    if view is None:
        return html_response(message_page(
            "Unknown agency 找不到成员馆", f"There is no agency “{symbol}”.", signed_in=True),
            404)
    return html_response(agency_page(view, Clock(tz)))


async def search(request: web.Request) -> web.StreamResponse:
    reach = require(request, Permission.VIEW_TRANSACTIONS)
    ops = request.app[OPS]
    q = request.query.get("q", "").strip()[:200]
    if not q:
        return redirect(f"{PREFIX}/")
    rows = await read_snapshot(ops.pool, lambda conn: data.search(conn, q, reach))
    if len(rows) == 1:
        return redirect(txn_href(rows[0]["id"]))
    return html_response(search_results_page(q, rows, Clock(ops.settings.timezone)),
                         200 if rows else 404)


async def _to_dashboard(request: web.Request) -> web.StreamResponse:
    return redirect(f"{PREFIX}/", 301)


def operators_app(settings: Settings, pool: asyncpg.Pool, *,
                  clock: Callable[[], datetime] | None = None) -> web.Application:
    sub = web.Application()
    sub[OPS] = Operators(settings=settings, pool=pool, **({"clock": clock} if clock else {}))
    sub.router.add_get("/", dashboard)
    sub.router.add_get("/t/{txn_id}", transaction)
    sub.router.add_get("/a/{symbol}", agency)
    sub.router.add_get("/search", search)
    return sub


def add_operator_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool, *,
                        clock: Callable[[], datetime] | None = None) -> None:
    """Mount the operators' pages at /ops/ on the hub's HTTP app (see module docstring),
    and the sign-in pages they send people to (web/signin.py)."""
    add_signin_routes(app, settings, pool, clock=clock)
    app.router.add_get(PREFIX, _to_dashboard)
    app.add_subapp(PREFIX, operators_app(settings, pool, clock=clock))


__all__ = ["HEADERS", "add_operator_routes", "html_response", "operators_app", "redirect"]
