"""The finance pages of statements after the run (issue 17), under /fin:

  GET  /fin/payments                    the dues of the agencies in reach: period, agency,
                                        reference, direction, amount, paid, outstanding,
                                        disputed, due date, state (`?open=1`, `?agency=`)
  GET  /fin/payments/{due_id}           one due: its facts, history and disputes
  POST /fin/payments/{due_id}/record    record a payment (amount, paid_on, bank_reference)
  GET  /fin/aging                       the aging table of the agencies in reach
  GET  /fin/disputes                    disputes in reach, open and resolved (`?open=1`)
  POST /fin/disputes/{id}/resolve       accept (optional corrected_fee) or reject, reason

Reading needs `view_finance` and shows only agencies in reach (a due out of reach is
404, as an unknown one); recording and resolving need `settle_accounts` over the whole
consortium (web/finance/dues_actions.py), else 403. Forms carry the CSRF token
(web/auth.py refuses a POST without it); every attempt is audited.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

import asyncpg
from aiohttp import web

from accounts import audit
from accounts.roles import Permission, Principal
from infra.database import Connection, read_snapshot
from schemas.settings import Settings
from settlement import dues
from settlement.calendar import local_date
from settlement.disputes import Outcome
from web.auth import csrf_input, principal_of, reach_text, require
from web.finance import dues_actions, dues_data
from web.finance.dues_actions import ActionRefused
from web.finance.html import FIN, message_page
from web.finance.payments_html import (
    aging_page,
    disputes_page,
    due_href,
    due_page,
    payments_page,
)
from web.operators.html import Clock
from web.operators.pages import html_response, redirect

DONE = {"payment": "Payment recorded. 付款已登记。",
        "resolved": "Dispute resolved; both libraries are told. 争议已处理，已通知双方。"}




def actor_of(request: web.Request, who: Principal) -> audit.Actor:
    return audit.Actor(who.person_id, who.login, request.remote or "unknown")


def _form_text(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else None


class PaymentPages:
    def __init__(self, settings: Settings, pool: asyncpg.Pool,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock
        self.times = Clock(settings.timezone)


    def today(self) -> date:
        return local_date(self.clock(), self.settings.timezone)

    # ---- reading --------------------------------------------------------------------

    async def payments(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request)
        agency = request.query.get("agency") or None
        open_only = request.query.get("open") in ("1", "true", "on")

        async def work(conn: Connection) -> Any:
            everyone = await dues_data.positions(conn, reach)
            rows = await dues_data.positions(conn, reach, agency=agency, open_only=open_only)
            return sorted({p.agency for p in everyone}), rows

        agencies, rows = await read_snapshot(self.pool, work)
        return html_response(payments_page(rows, self.today(), agencies=agencies,
                                           agency=agency, open_only=open_only,
                                           who=who.label, scope=reach_text(reach)))

    async def due(self, request: web.Request) -> web.StreamResponse:
        require(request, Permission.VIEW_FINANCE)
        done = DONE.get(request.query.get("done", ""))
        return await self._due_page(request, int(request.match_info["due_id"]), notice=done)

    async def _due_page(self, request: web.Request, due_id: int, *, status: int = 200,
                        notice: str | None = None, error: str | None = None
                        ) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request)

        async def work(conn: Connection) -> Any:
            p = await dues_data.position(conn, reach, due_id)
            if p is None:
                return None
            return (p, await dues.history(conn, p.due_id),
                    await dues_data.dispute_list(conn, reach, due_id=p.due_id))

        found = await read_snapshot(self.pool, work)
        if found is None:
            return self._no_due(who, due_id)
        p, events, disputes = found
        return html_response(due_page(
            p, events, disputes, self.today(), self.times, csrf=csrf_input(request),
            settle=dues_actions.may_settle(who), who=who.label, notice=notice,
            error=error), status)

    @staticmethod
    def _no_due(who: Principal, due_id: int) -> web.Response:
        return html_response(message_page(
            "Unknown statement 找不到结算单", f"There is no statement due {due_id} among "
            "the agencies you may see.", who=who.label), 404)

    async def aging(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request)
        today = self.today()
        rows = await read_snapshot(self.pool, lambda conn: dues_data.aging(conn, reach, today))
        return html_response(aging_page(rows, today, who=who.label,
                                        scope=reach_text(reach)))

    async def disputes(self, request: web.Request) -> web.StreamResponse:
        return await self._disputes_page(
            request, notice=DONE.get(request.query.get("done", "")))

    async def _disputes_page(self, request: web.Request, *, status: int = 200,
                             notice: str | None = None, error: str | None = None
                             ) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request)
        open_only = request.query.get("open") in ("1", "true", "on")
        found = await read_snapshot(self.pool, lambda conn: dues_data.dispute_list(conn, reach,
                                                                    open_only=open_only))
        return html_response(disputes_page(
            found, self.times, csrf=csrf_input(request), settle=dues_actions.may_settle(who),
            open_only=open_only, who=who.label, scope=reach_text(reach), notice=notice,
            error=error), status)

    # ---- acting ---------------------------------------------------------------------

    def _forbidden(self, who: Principal) -> web.Response:
        return html_response(message_page("Not allowed 无权操作", dues_actions.SETTLE_REFUSED,
                                          who=who.label), 403)

    async def record(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request)
        due_id = int(request.match_info["due_id"])
        if not dues_actions.may_settle(who):
            return self._forbidden(who)
        p = await read_snapshot(self.pool, lambda conn: dues_data.position(conn, reach, due_id))
        if p is None:
            return self._no_due(who, due_id)
        form = await request.post()
        today = self.today()
        try:
            amount = dues_actions.amount_of(_form_text(form, "amount"), p.currency)
            paid_on = dues_actions.day_of(_form_text(form, "paid_on"), today, "paid on")
            await dues_actions.record_payment(
                self.pool, who, actor_of(request, who), p, amount, paid_on=paid_on,
                bank_reference=_form_text(form, "bank_reference"), today=today)
        except ActionRefused as exc:
            return await self._due_page(request, due_id, status=exc.status,
                                        error=f"Not recorded 未登记: {exc.message}")
        return redirect(due_href(due_id) + "?done=payment")

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request)
        dispute_id = int(request.match_info["dispute_id"])
        if not dues_actions.may_settle(who):
            return self._forbidden(who)
        d = await read_snapshot(self.pool, lambda conn: dues_data.dispute(conn, reach, dispute_id))
        if d is None:
            return html_response(message_page(
                "Unknown dispute 找不到争议", f"There is no dispute {dispute_id}.",
                who=who.label), 404)
        form = await request.post()
        try:
            outcome = _outcome(_form_text(form, "outcome"))
            fee_text = _form_text(form, "corrected_fee")
            corrected = dues_actions.amount_of(fee_text, d.amount.currency,
                                               "corrected fee") if fee_text else None
            await dues_actions.resolve(
                self.pool, who, actor_of(request, who), d, outcome=outcome,
                reason=_form_text(form, "reason") or "", corrected_fee=corrected,
                on=self.clock(), tz=self.settings.timezone)
        except ActionRefused as exc:
            return await self._disputes_page(request, status=exc.status,
                                             error=f"Dispute {dispute_id} not resolved "
                                                   f"未处理: {exc.message}")
        return redirect(f"{FIN}/disputes?done=resolved")


def _outcome(text: str | None) -> Outcome:
    try:
        return Outcome(text or "")
    except ValueError:
        raise ActionRefused(400, f"outcome {text!r}: say accepted or rejected") from None


def add_payment_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool,
                       clock: Callable[[], datetime]) -> None:
    pages = PaymentPages(settings, pool, clock)
    app.router.add_get(f"{FIN}/payments", pages.payments)
    app.router.add_get(FIN + r"/payments/{due_id:\d{1,18}}", pages.due)
    app.router.add_post(FIN + r"/payments/{due_id:\d{1,18}}/record", pages.record)
    app.router.add_get(f"{FIN}/aging", pages.aging)
    app.router.add_get(f"{FIN}/disputes", pages.disputes)
    app.router.add_post(FIN + r"/disputes/{dispute_id:\d{1,18}}/resolve", pages.resolve)


__all__ = ["PaymentPages", "add_payment_routes"]
