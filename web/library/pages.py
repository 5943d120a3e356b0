"""A library's staff pages on the hub's HTTP server, under `/lib`.

  GET  /lib/                        the library's open and recent transactions, as requester
                                    and as supplier (`?agency=` picks one of several the
                                    person works for; `?q=` searches request id, hub id,
                                    title, patron id; `?page=`), messages waiting, flags
  GET  /lib/t/{id}                  one transaction: facts, rota with reasons, exclusions,
                                    audit trail, messages waiting, flags, the actions
  POST /lib/t/{id}/cancel           as requester: Cancel
  POST /lib/t/{id}/received         as requester: Received
  POST /lib/t/{id}/answer           as current supplier: WillSupply, or Unfilled with a
                                    reasonUnfilled (form fields `answer`, `reasonUnfilled`)
  POST /lib/t/{id}/returned         as current supplier: LoanCompleted (the item is back)
  GET  /lib/statements              the library's settlement statements and budgets, and
                                    what each statement asks to be paid (its due)
  GET  /lib/statements/{reference}  one statement's lines; POST .../dispute disputes one
                                    (web/library/statement_pages.py)

Reading needs `view_transactions` (statements `view_finance`), acting
`act_on_transactions`; every query is filtered by the person's reach (web/library/data.py),
and a transaction out of reach answers 404 exactly like an unknown one. An action is
sent as the library's own ISO 18626 message through the hub's intake
(web/library/actions.py): the state machine decides; a refusal answers 409 with the
hub's errorValue. Every action, done or refused, is recorded in the audit of people's
actions (accounts/audit.py) with the person, their address, and the state before and
after. Forms carry the session's CSRF token (web/auth.py refuses a POST without it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web

from accounts import audit
from accounts.roles import Permission, Principal, Reach
from broker.intake import Intake
from infra.database import Connection, read_snapshot
from schemas.iso18626_codes import Action, MessageType, ReasonForMessage, Status
from schemas.settings import Settings
from settlement.calendar import period_of
from settlement.periods import period_or_none
from web.auth import csrf_input, principal_of, require
from web.finance import data as finance_data
from web.finance import dues_data
from web.finance.html import finance_page
from web.library import actions, data
from web.library.actions import Kind, Parties, Result, Side
from web.library.html import (
    LIB,
    REASONS_UNFILLED,
    actions_block,
    list_page,
    message_page,
    not_found_page,
    refusal_text,
    transaction_page,
    txn_href,
)
from web.library.statement_html import dues_section
from web.library.statement_pages import add_statement_routes
from web.operators.html import Clock
from web.operators.pages import html_response, redirect

log = logging.getLogger(__name__)

QUERY_LIMIT = 200
DONE = {k.path: k for k in actions.KINDS.values()}



class LibraryPages:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, intake: Intake | None,
                 clock: Callable[[], datetime]) -> None:
        self.settings = settings
        self.pool = pool
        self.intake = intake
        self.clock = clock
        self.times = Clock(settings.timezone)


    # ---- reading ------------------------------------------------------------------

    async def _chosen(self, conn: Connection, reach: Reach, wanted: str | None
                      ) -> tuple[list[asyncpg.Record], asyncpg.Record | None]:
        """The person's agencies and the one the page shows (None: not one of theirs)."""
        agencies = await data.agencies_in_reach(conn, reach)
        if wanted:
            return agencies, await data.agency_in_reach(conn, reach, wanted)
        return agencies, agencies[0] if agencies else None

    async def index(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_TRANSACTIONS)
        who = principal_of(request)
        q = " ".join(request.query.get("q", "").split())[:QUERY_LIMIT] or None
        page = _page_number(request.query.get("page"))
        now = self.clock()

        async def work(conn: Connection) -> Any:
            agencies, agency = await self._chosen(conn, reach, request.query.get("agency"))
            if agency is None:
                return None
            symbol = agency["symbol"]
            return (agencies, agency,
                    await data.transactions(conn, symbol, query=q, page=page, now=now),
                    await data.waiting(conn, symbol), await data.agency_flags(conn, symbol))

        found = await read_snapshot(self.pool, work)
        if found is None:
            return html_response(message_page(
                "Unknown library 找不到图书馆",
                "That library is not one you work for; choose one of yours on the list.",
                who=who.label), 404)
        agencies, agency, listing, waiting, flags = found
        return html_response(list_page(agency, agencies, listing, waiting, flags, self.times,
                                       who=who.label,
                                       finance=who.can(Permission.VIEW_FINANCE)))

    async def transaction(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_TRANSACTIONS)
        txn_id = request.match_info["txn_id"]
        done = DONE.get(request.query.get("done", ""))
        notice = f"Done: {done.label}. The hub took your library's message." if done else None
        page = await self._transaction_page(request, reach, txn_id, notice=notice)
        if page is None:
            return self._not_found(request, txn_id)
        return html_response(page)

    def _not_found(self, request: web.Request, txn_id: str) -> web.Response:
        return html_response(not_found_page(txn_id, principal_of(request).label), 404)

    async def _transaction_page(self, request: web.Request, reach: Reach, txn_id: str, *,
                                notice: str | None = None, error: str | None = None,
                                ) -> str | None:
        who = principal_of(request)
        act = who.reach(Permission.ACT_ON_TRANSACTIONS)

        async def work(conn: Connection) -> Any:
            txn = await data.transaction_in_reach(conn, reach, txn_id)
            if txn is None:
                return None
            parties = [s for s in (txn["requester"], txn["supplier"]) if s and
                       await data.agency_in_reach(conn, reach, s) is not None]
            sides = (await self._may_act(conn, act, txn["requester"]),
                     await self._may_act(conn, act, txn["supplier"]))
            return await data.trail(conn, txn, parties), sides

        found = await read_snapshot(self.pool, work)
        if found is None:
            return None
        trail, (as_requester, as_supplier) = found
        block = actions_block(trail.txn, csrf_input(request), as_requester=as_requester,
                              as_supplier=as_supplier)
        return transaction_page(trail, self.times, who=who.label, actions=block,
                                finance=who.can(Permission.VIEW_FINANCE), notice=notice,
                                error=error)

    @staticmethod
    async def _may_act(conn: Connection, act: Reach, symbol: str | None) -> bool:
        return symbol is not None and not act.nothing and \
            await data.agency_in_reach(conn, act, symbol) is not None

    async def statements(self, request: web.Request) -> web.StreamResponse:
        reach = require(request, Permission.VIEW_FINANCE)
        who = principal_of(request)
        period = request.query.get("period") or None
        chosen = None if period is None else period_or_none(period)
        month = chosen.budget_month if chosen else \
            period_of(self.clock().astimezone(ZoneInfo(self.settings.timezone)).date())

        async def work(conn: Connection) -> Any:
            _agencies, agency = await self._chosen(conn, reach, request.query.get("agency"))
            if agency is None:
                return None
            # Narrowed to the library shown: its own statements and budgets.
            mine = Reach(everything=False, agencies=frozenset({agency["symbol"]}))
            return (agency, await finance_data.statements(conn, mine, period),
                    await finance_data.budgets(conn, mine, month),
                    await dues_data.positions(conn, mine))

        found = await read_snapshot(self.pool, work) if period is None or chosen else None
        if found is None:
            return html_response(message_page(
                "Unknown library or period 找不到", "Choose one of your libraries, and a "
                "period as YYYY-MM, YYYY-Bn, YYYY-Qn or YYYY.", who=who.label), 404)
        agency, statements, budgets, owed = found
        today = self.clock().astimezone(ZoneInfo(self.settings.timezone)).date()
        return html_response(finance_page(
            statements, budgets, month, who=who.label,
            scope=f"{agency['name']} ({agency['symbol']})", action=f"{LIB}/statements",
            extra={"agency": agency["symbol"]}, after_statements=dues_section(owed, today)))

    # ---- acting ---------------------------------------------------------------------

    async def act(self, request: web.Request) -> web.StreamResponse:
        act = require(request, Permission.ACT_ON_TRANSACTIONS)
        who = principal_of(request)
        kind = actions.KINDS.get(request.match_info["action"])
        txn_id = request.match_info["txn_id"]
        if kind is None:
            raise web.HTTPNotFound(text="404: no such action; say cancel, received, answer "
                                        "or returned\n")
        if self.intake is None:
            raise web.HTTPServiceUnavailable(text="503: this server takes no ISO 18626 "
                                                  "messages (no intake): act on a hub "
                                                  "process's pages\n")
        form = await request.post()
        txn = await read_snapshot(self.pool,
                                  lambda conn: data.transaction_in_reach(conn, act, txn_id))
        if txn is None:
            return self._not_found(request, txn_id)
        sender = txn["requester"] if kind.side is Side.REQUESTER else txn["supplier"]
        if not await read_snapshot(self.pool, lambda conn: self._may_act(conn, act, sender)):
            return await self._refused(request, txn_id, 403, _not_your_side(kind, txn))
        built = self._message(kind, txn, who, form)
        if isinstance(built, str):
            return await self._refused(request, txn_id, 400, built)
        message_type, body = built
        result = await actions.submit(self.pool, self.intake, sender, message_type, body,
                                      txn["request_id"])
        after = await read_snapshot(self.pool,
                                    lambda conn: data.transaction_in_reach(conn, act, txn_id))
        await self._audit(request, who, kind, txn, sender, after, result)
        if not result.ok:
            return await self._refused(request, txn_id, 409, refusal_text(
                kind.label, result.error_type, result.error_value))
        return redirect(txn_href(txn_id, done=kind.path))

    def _message(self, kind: Kind, txn: asyncpg.Record, who: Principal,
                 form: Any) -> tuple[str, dict[str, Any]] | str:
        """The ISO 18626 message the library would send, or why the form is wrong."""
        note = actions.note_of(who.display_name, _text(form, "note"))
        parties = Parties(requester=txn["requester"], request_id=txn["request_id"],
                          supplier=txn["supplier"] or self.settings.hub_symbol)
        now = self.clock()
        if kind is actions.CANCEL or kind is actions.RECEIVED:
            action = Action.CANCEL if kind is actions.CANCEL else Action.RECEIVED
            return (str(MessageType.REQUESTING_AGENCY_MESSAGE),
                    actions.requester_message(parties, action, note, now))
        if kind is actions.RETURNED:
            return (str(MessageType.SUPPLYING_AGENCY_MESSAGE),
                    actions.supplier_message(parties, Status.LOAN_COMPLETED,
                                             ReasonForMessage.STATUS_CHANGE, note, now))
        answer, reason = _text(form, "answer"), _text(form, "reasonUnfilled")
        if answer == Status.WILL_SUPPLY:
            return (str(MessageType.SUPPLYING_AGENCY_MESSAGE),
                    actions.supplier_message(parties, Status.WILL_SUPPLY,
                                             ReasonForMessage.REQUEST_RESPONSE, note, now,
                                             answerYesNo="Y"))
        if answer != Status.UNFILLED:
            return f"answer {answer!r}: say WillSupply or Unfilled"
        if reason not in REASONS_UNFILLED:
            return (f"reasonUnfilled {reason!r}: an Unfilled answer needs one of "
                    f"{', '.join(REASONS_UNFILLED)}")
        return (str(MessageType.SUPPLYING_AGENCY_MESSAGE),
                actions.supplier_message(parties, Status.UNFILLED,
                                         ReasonForMessage.REQUEST_RESPONSE, note, now,
                                         answerYesNo="N", reasonUnfilled=reason))

    async def _refused(self, request: web.Request, txn_id: str, status: int,
                       why: str) -> web.Response:
        reach = require(request, Permission.VIEW_TRANSACTIONS)
        page = await self._transaction_page(request, reach, txn_id, error=why)
        if page is None:
            return self._not_found(request, txn_id)
        return html_response(page, status)

    async def _audit(self, request: web.Request, who: Principal, kind: Kind,
                     before: asyncpg.Record, sender: str, after: asyncpg.Record | None,
                     result: Result) -> None:
        outcome: dict[str, Any] = {"state": after["state"] if after else None,
                                   "outcome": "done" if result.ok else "refused"}
        if not result.ok:
            outcome["error"] = f"{result.error_type}: {result.error_value}"
        actor = audit.Actor(who.person_id, who.login, request.remote or "unknown")
        async with self.pool.acquire() as conn:
            await audit.record(conn, actor, kind.audit, before["id"],
                               before={"state": before["state"], "as": sender},
                               after=outcome)
        log.info("%s by %s as %s on %s: %s", kind.audit, who.login, sender, before["id"],
                 outcome["outcome"])


def _not_your_side(kind: Kind, txn: asyncpg.Record) -> str:
    if kind.side is Side.REQUESTER:
        return (f"Only the requester ({txn['requester']}) can {kind.label}; your library "
                "is not it.")
    return (f"Only the current supplier ({txn['supplier'] or 'none yet'}) can {kind.label}; "
            "your library is not it (the request may have moved on).")


def _text(form: Any, name: str) -> str | None:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else None


def _page_number(text: str | None) -> int:
    try:
        return max(1, min(int(text or "1"), 10_000))
    except ValueError:
        return 1


async def _to_index(request: web.Request) -> web.StreamResponse:
    return redirect(f"{LIB}/", 301)


def add_library_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool,
                       intake: Intake | None, *,
                       clock: Callable[[], datetime] | None = None) -> None:
    """The library staff pages under /lib (see the module docstring); actions need the
    hub process's `intake` (without one they answer 503)."""
    pages = LibraryPages(settings, pool, intake, clock or (lambda: datetime.now(UTC)))
    app.router.add_get(LIB, _to_index)
    app.router.add_get(f"{LIB}/", pages.index)
    app.router.add_get(f"{LIB}/statements", pages.statements)
    add_statement_routes(app, settings, pool, pages.clock)
    app.router.add_get(LIB + "/t/{txn_id}", pages.transaction)
    app.router.add_post(LIB + "/t/{txn_id}/{action}", pages.act)


__all__ = ["LibraryPages", "add_library_routes"]
