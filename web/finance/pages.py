"""The finance pages on the hub's HTTP server (permission `view_finance`).

  GET /fin/                         statements of a settled period (`?period=2026-10`,
                                    2026-B5, 2026-Q4 or 2026; default the latest) for
                                    the agencies in reach, with their CSV and PDF; the
                                    centre's summary for whoever reaches every agency;
                                    subsidy budgets
  GET /fin/files/{period}/{name}    one statement file, only of an agency in reach (the
                                    summary's files only for the centre); else 404
  /fin/payments, /fin/aging, /fin/disputes: payments and disputes after the run
                                    (web/finance/payments.py)

The centre's finance office (finance @ consortium) sees every agency; a library's
finance officer (finance @ agency) their own; a regional centre its province's. The
files are those the settlement run published in `<data_dir>/statements/<period>/`
(settlement/outputs.py); a name is served only when the run recorded it for an
agency in reach, so no path from the URL reaches the disk unchecked.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web

from accounts.roles import Permission
from infra.database import Connection, read_snapshot
from schemas.settings import Settings
from settlement.calendar import FORMS, period_of
from settlement.periods import period_or_none
from settlement.statement_model import statements_dir
from web.auth import principal_of, reach_text, require
from web.finance import data
from web.finance.html import FIN, finance_page, message_page
from web.finance.payments import add_payment_routes
from web.operators.pages import HEADERS, html_response, redirect

CONTENT_TYPES = {"csv": "text/csv; charset=utf-8", "pdf": "application/pdf"}




class FinancePages:
    def __init__(self, settings: Settings, pool: asyncpg.Pool,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock


    def budget_period(self) -> str:
        return period_of(self.clock().astimezone(ZoneInfo(self.settings.timezone)).date())

    async def index(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request).label
        period = request.query.get("period") or None
        chosen = None if period is None else period_or_none(period)
        if period is not None and chosen is None:
            return html_response(message_page(
                "Bad period 结算期有误", f"“{period}” is not a period: say {FORMS}.",
                who=who), 400)
        # Budgets renew monthly: those of the period's last month, or of this month.
        month = chosen.budget_month if chosen else self.budget_period()

        async def work(conn: Connection) -> tuple[data.Statements, list[Any]]:
            return (await data.statements(conn, reach, period),
                    await data.budgets(conn, reach, month))

        found, budgets = await read_snapshot(self.pool, work)
        return html_response(finance_page(found, budgets, month, who=who,
                                          scope=reach_text(reach)))

    async def file(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        period, name = request.match_info["period"], request.match_info["name"]
        ext = name.rsplit(".", 1)[-1]
        allowed = period_or_none(period) is not None and ext in CONTENT_TYPES and \
            await read_snapshot(self.pool,
                                lambda conn: data.file_in_reach(conn, reach, period, name))
        path = statements_dir(self.settings, period) / name if allowed else None
        if path is None or not path.is_file():
            raise web.HTTPNotFound(text=f"404: no statement file {name!r} of {period!r} "
                                        "for you\n", headers=HEADERS)
        return web.FileResponse(path, headers={
            **HEADERS, "Content-Type": CONTENT_TYPES[ext],
            "Content-Disposition": f'attachment; filename="{name}"'})


async def _to_index(request: web.Request) -> web.StreamResponse:
    return redirect(f"{FIN}/", 301)


def add_finance_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool, *,
                       clock: Callable[[], datetime] | None = None) -> None:
    pages = FinancePages(settings, pool, clock or (lambda: datetime.now(UTC)))
    app.router.add_get(FIN, _to_index)
    app.router.add_get(f"{FIN}/", pages.index)
    app.router.add_get(FIN + "/files/{period}/{name}", pages.file)
    add_payment_routes(app, settings, pool, pages.clock)


__all__ = ["FinancePages", "add_finance_routes"]
