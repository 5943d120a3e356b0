"""A library's statement and its lines, and disputing a line, under /lib (issue 17):

  GET  /lib/statements/{reference}          what the statement asks and what is paid,
                                            its lines (the ledger postings its run
                                            settled for the library), its disputes; a
                                            dispute form on each line still disputable
  POST /lib/statements/{reference}/dispute  dispute one line (form fields `posting_id`,
                                            `reason`)

Reading needs `view_finance`, disputing `dispute_statements`, each over the statement's
agency (else 404, as an unknown statement). The dispute is opened for that agency by
settlement (`disputes.open_dispute`, channel `page`, the person's login as actor),
which tells both libraries; a refusal is shown with settlement's message (409/422).
Audited like every action of a person (web/finance/dues_actions.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg
from aiohttp import web

from accounts.roles import Permission, Principal
from infra.database import Connection, read_snapshot
from schemas.settings import Settings
from settlement.calendar import local_date
from settlement.disputes import Channel
from settlement.statement_lines import statement_lines
from web.auth import csrf_input, principal_of, require
from web.finance import dues_actions, dues_data
from web.finance.dues_actions import ActionRefused
from web.finance.payments import actor_of
from web.library.html import LIB, message_page
from web.library.statement_html import statement_href, statement_page
from web.operators.html import Clock
from web.operators.pages import html_response, redirect

DONE = {"dispute": "Dispute opened; the centre and the supplier are told. The amount is "
                   "not asked for while the dispute is open. 争议已提出。"}



class StatementPages:
    def __init__(self, settings: Settings, pool: asyncpg.Pool,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.times = Clock(settings.timezone)


    async def statement(self, request: web.Request) -> web.StreamResponse:
        done = DONE.get(request.query.get("done", ""))
        return await self._page(request, request.match_info["reference"], notice=done)

    async def _page(self, request: web.Request, reference: str, *, status: int = 200,
                    notice: str | None = None, error: str | None = None
                    ) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request)
        disputing = who.reach(Permission.DISPUTE_STATEMENTS)

        async def work(conn: Connection) -> Any:
            p = await dues_data.by_reference(conn, reach, reference)
            if p is None:
                return None
            return (p, await statement_lines(conn, p),
                    await dues_data.dispute_list(conn, reach, due_id=p.due_id),
                    not disputing.nothing and await dues_data.in_reach(conn, disputing,
                                                                       p.agency))

        found = await read_snapshot(self.pool, work)
        if found is None:
            return self._not_found(who, reference)
        p, lines, disputes, may_dispute = found
        return html_response(statement_page(
            p, lines, disputes, local_date(self.clock(), self.settings.timezone), self.times,
            csrf=csrf_input(request), may_dispute=may_dispute, who=who.label,
            notice=notice, error=error), status)

    @staticmethod
    def _not_found(who: Principal, reference: str) -> web.Response:
        return html_response(message_page(
            "Unknown statement 找不到结算单",
            f"There is no statement “{reference}” of your library.", who=who.label), 404)

    async def dispute(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.DISPUTE_STATEMENTS)
        who = principal_of(request)
        reference = request.match_info["reference"]
        p = await read_snapshot(self.pool,
                                lambda conn: dues_data.by_reference(conn, reach, reference))
        if p is None:
            return self._not_found(who, reference)
        form = await request.post()
        posting = form.get("posting_id")
        reason = form.get("reason")
        try:
            if not isinstance(posting, str) or not posting.strip().isdigit():
                raise ActionRefused(400, f"posting_id {posting!r}: the number of a line")
            await dues_actions.open_dispute(
                self.pool, who, actor_of(request, who), p, posting_id=int(posting),
                reason=reason if isinstance(reason, str) else "", channel=Channel.PAGE,
                today=local_date(self.clock(), self.settings.timezone))
        except ActionRefused as exc:
            return await self._page(request, reference, status=exc.status,
                                    error=f"Not disputed 未提出: {exc.message}")
        return redirect(statement_href(p.reference) + "?done=dispute")


def add_statement_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool,
                         clock: Callable[[], datetime]) -> None:
    pages = StatementPages(settings, pool, clock)
    app.router.add_get(LIB + "/statements/{reference}", pages.statement)
    app.router.add_post(LIB + "/statements/{reference}/dispute", pages.dispute)


__all__ = ["StatementPages", "add_statement_routes"]
