"""The REST API under `/api/v1/` (docs/api.md; the document: /api/v1/openapi.json).

  GET /api/v1/transactions?state=&updated_since=&limit=&cursor=   transactions:read
  GET /api/v1/transactions/{id}                                   transactions:read
  GET /api/v1/statements?period=&open=&limit=&cursor=             statements:read
  GET /api/v1/statements/{period}/{symbol}.csv|.pdf               statements:read
  GET /api/v1/statements/{reference}                              statements:read
  GET /api/v1/aging                                               statements:read
  GET /api/v1/disputes?open=                                      statements:read
  GET /api/v1/budgets?period=                                     budgets:read
  GET /api/v1/openapi.json                                        (no token)
  POST /api/v1/disputes                                           statements:dispute
  POST /api/v1/disputes/{id}/resolution                           statements:settle
  POST /api/v1/statements/{reference}/payments                    statements:settle

Reading is all GET; the three POSTs (issue 17) do what the finance and library pages
do, through the same code (web/finance/dues_actions.py), audited the same; settling
needs a person who reaches the whole consortium. A bearer token is no cookie, so no
CSRF token is asked for.

Every call but the document carries `Authorization: Bearer <token>` (accounts/tokens.py):
the token's person decides which agencies it reaches, its scopes what it may read.
Something out of reach answers 404 exactly as something that does not exist. Every
error is a problem+json body (web/api/problems.py), also for unknown paths under
/api/v1/ and for methods other than GET (405). A sub-app, so that its middleware sees
every request under the prefix and no other.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import asyncpg
from aiohttp import web
from pydantic import BaseModel, ValidationError

from accounts import audit
from accounts.roles import Reach
from accounts.tokens import (
    SCOPE_PERMISSION,
    Scope,
    TokenPrincipal,
    TokenRefused,
    principal_for_token,
)
from broker.states import State
from infra.database import read_snapshot
from schemas.money import Money
from schemas.settings import Settings
from settlement import dues
from settlement.calendar import FORMS, is_period, local_date
from settlement.disputes import Channel, Outcome
from settlement.periods import Period
from settlement.statement_lines import StatementLine as Line
from settlement.statement_lines import statement_lines
from settlement.statement_model import statement_name, statements_dir
from web.api import queries
from web.api.models import (
    Aging,
    AgingItem,
    Budget,
    BudgetList,
    Dispute,
    DisputeList,
    Due,
    DueDetail,
    DueEvent,
    Net,
    NewDispute,
    NewPayment,
    Payment,
    PaymentRecorded,
    Resolution,
    Statement,
    StatementFiles,
    StatementLine,
    StatementPage,
    TrailEvent,
    Transaction,
    TransactionDetail,
    TransactionPage,
)
from web.api.openapi import BASE, document
from web.api.problems import ApiProblem, bad_parameter, not_found, problem_response
from web.finance import dues_actions, dues_data
from web.finance.dues_actions import ActionRefused

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], datetime]

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
FILE_TYPES = {"csv": "text/csv", "pdf": "application/pdf"}


class Api:
    """What the handlers share: settings, the pool, the clock."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, clock: Clock) -> None:
        self.settings = settings
        self.pool = pool
        self.clock = clock


API = web.AppKey("web.api", Api)
TOKEN = web.RequestKey("web.api.token", TokenPrincipal)


# ---- the middleware: problems for every error, the token for every call -----------

@web.middleware
async def _problems(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiProblem as p:
        return problem_response(p.status, p.detail, parameter=p.parameter,
                                headers={**HEADERS, **p.headers}, code=p.code)
    except ActionRefused as r:
        return problem_response(r.status, r.message, headers=HEADERS, code=r.code)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _from_aiohttp(request, exc)
    except Exception:
        log.exception("API %s %s failed", request.method, request.path)
        return problem_response(500, "the hub failed to answer; the error is in its log",
                                headers=HEADERS)


def _from_aiohttp(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own 404 (no such route) and 405 (not GET), as problems."""
    headers = dict(HEADERS)
    if exc.status == 404:
        detail = f"no API route {request.path}; the routes are in {BASE}/openapi.json"
    elif exc.status == 405:
        allow = exc.headers.get("Allow", "GET, HEAD")
        detail = (f"{request.method} is not allowed on {request.path}, only {allow}"
                  + ("" if "POST" in allow else ": it is read-only"))
        headers["Allow"] = allow
    else:
        detail = exc.reason
    return problem_response(exc.status, detail, headers=headers)


def _bearer(request: web.Request) -> str:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if not header or scheme.lower() != "bearer" or not value.strip():
        raise ApiProblem(401, "send the token as `Authorization: Bearer <token>` "
                              "(make one with run.py token create)",
                         headers={"WWW-Authenticate": 'Bearer realm="ILL Hub API"'})
    return value.strip()


@web.middleware
async def _authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    # The document needs no token; nor does an answer that is an error whoever asks (an
    # unknown path, a method other than GET: aiohttp's router says so before any handler).
    if getattr(handler, "public", False) or request.match_info.http_exception is not None:
        return await handler(request)
    token = _bearer(request)
    api = request.app[API]
    async with api.pool.acquire() as conn:
        try:
            request[TOKEN] = await principal_for_token(conn, token, api.clock())
        except TokenRefused as exc:
            # The reason and the address, never the token: a stream of these is someone
            # guessing, or a library system still using a revoked token.
            log.warning("API token refused from %s: %s", request.remote, exc)
            raise ApiProblem(401, str(exc), headers={
                "WWW-Authenticate": 'Bearer realm="ILL Hub API", error="invalid_token"'}
            ) from None
    return await handler(request)


def _public(handler: Handler) -> Handler:
    # An attribute, as web/operators/pages.py does: aiohttp's update_wrapper carries it.
    handler.public = True  # type: ignore[attr-defined]
    return handler


def reach_of(request: web.Request, scope: Scope) -> Reach:
    """The agencies the caller may read `scope` of; 403 when none."""
    who = request[TOKEN]
    if scope not in who.scopes:
        raise ApiProblem(403, f"this token lacks the scope {scope}; make one with it "
                              "(run.py token create --scope ...)")
    reach = who.reach(scope)
    if reach.nothing:
        raise ApiProblem(403, f"{who.principal.login} holds no role that may "
                              f"{SCOPE_PERMISSION[scope].value}")
    return reach




def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=body.model_dump_json(),
                        content_type="application/json", charset="utf-8", headers=HEADERS)


# ---- parameters ---------------------------------------------------------------------

def _limit(request: web.Request) -> int:
    text = request.query.get("limit")
    if text is None:
        return DEFAULT_LIMIT
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIMIT:
        raise bad_parameter("limit", f"a whole number from 1 to {MAX_LIMIT}, not {text!r}")
    return int(text)


def _instant(name: str, text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        value = None
    if value is None or value.tzinfo is None:
        raise bad_parameter(name, f"an ISO 8601 instant with a time zone, e.g. "
                                  f"2026-03-01T00:00:00+08:00, not {text!r}")
    return value


def _state(text: str | None) -> str | None:
    if text is not None and text not in {s.value for s in State}:
        raise bad_parameter("state", f"{text!r} is no state; one of "
                                     + ", ".join(s.value for s in State))
    return text


def _period(text: str | None, name: str = "period") -> str | None:
    if text is None:
        return None
    try:
        return Period.parse(text).name
    except ValueError:
        raise bad_parameter(name, f"a settlement period ({FORMS}), not {text!r}") from None


def _month(text: str | None) -> str | None:
    """A budget period: budgets renew by calendar month whatever the settlement calendar."""
    if text is None:
        return None
    if not is_period(text):
        raise bad_parameter("period", f"a budget month YYYY-MM, not {text!r}")
    return text


def encode_cursor(*values: str) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


def decode_cursor(text: str | None, size: int) -> list[str] | None:
    if text is None:
        return None
    try:
        values = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except (binascii.Error, ValueError):
        values = None
    if not isinstance(values, list) or len(values) != size or \
            not all(isinstance(v, str) for v in values):
        raise bad_parameter("cursor", "not a cursor this API gave out; pass `next_cursor` "
                                      "of the previous page unchanged")
    return values


def _txn_cursor(text: str | None) -> queries.TxnCursor | None:
    values = decode_cursor(text, 2)
    if values is None:
        return None
    try:
        return queries.TxnCursor(datetime.fromisoformat(values[0]), values[1])
    except ValueError:
        raise bad_parameter("cursor", "not a cursor this API gave out") from None


# ---- transactions -------------------------------------------------------------------

def _transaction(row: Any) -> dict[str, Any]:
    return {k: row[k] for k in Transaction.model_fields}


async def list_transactions(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.TRANSACTIONS_READ)
    state = _state(request.query.get("state"))
    since = _instant("updated_since", request.query.get("updated_since"))
    limit = _limit(request)
    after = _txn_cursor(request.query.get("cursor"))
    rows = await read_snapshot(request.app[API].pool, lambda conn: queries.transactions(
        conn, reach, state=state, updated_since=since, after=after, limit=limit + 1))
    page = rows[:limit]
    more = len(rows) > limit
    return _json(TransactionPage(
        items=[Transaction(**_transaction(r)) for r in page],
        next_cursor=encode_cursor(page[-1]["updated_at"].isoformat(), page[-1]["id"])
        if more else None))


async def one_transaction(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.TRANSACTIONS_READ)
    txn_id = request.match_info["id"]
    found = await read_snapshot(request.app[API].pool,
                        lambda conn: queries.transaction(conn, reach, txn_id))
    if found is None:
        raise not_found(f"there is no transaction {txn_id!r} (or none this token may see)")
    row, trail = found
    return _json(TransactionDetail(**_transaction(row), trail=[
        TrailEvent(at=a["at"], actor=a["actor"], event=a["event"],
                   from_state=a["from_state"], to_state=a["to_state"],
                   detail=queries.detail_of(a["detail"])) for a in trail]))


# ---- statements ---------------------------------------------------------------------

def statement_href(period: str, symbol: str, ext: str) -> str:
    return f"{BASE}/statements/{period}/{quote(symbol, safe=':')}.{ext}"


def _statement(row: Any, owed: list[dues.Position], today: date) -> Statement:
    totals = json.loads(row["totals"]) if isinstance(row["totals"], str) else row["totals"]
    return Statement(period=row["period"], agency=row["agency"], name=row["name"],
                     totals=[Net(**t) for t in totals],
                     files=StatementFiles(**{ext: statement_href(row["period"], row["agency"],
                                                                 ext) for ext in FILE_TYPES}),
                     dues=[Due(**p.to_json(today)) for p in owed])


async def list_statements(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.STATEMENTS_READ)
    period = _period(request.query.get("period"))
    open_only = _flag(request, "open")
    limit = _limit(request)
    values = decode_cursor(request.query.get("cursor"), 2)
    after = queries.StatementCursor(*values) if values else None

    async def work(conn: Any) -> Any:
        rows = await queries.statements(conn, reach, period=period, after=after,
                                        limit=limit + 1, open_only=open_only)
        return rows, await queries.dues_of(conn, rows[:limit])

    rows, owed = await read_snapshot(request.app[API].pool, work)
    page = rows[:limit]
    today = _today(request)
    return _json(StatementPage(
        items=[_statement(r, owed.get((r["run_id"], r["agency"]), []), today) for r in page],
        next_cursor=encode_cursor(page[-1]["period"], page[-1]["agency"])
        if len(rows) > limit else None))


async def statement_file(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.STATEMENTS_READ)
    period = request.match_info["period"]
    symbol, dot, ext = request.match_info["file"].rpartition(".")
    if not dot or not symbol or ext not in FILE_TYPES:
        raise not_found("a statement file is <symbol>.csv or <symbol>.pdf")
    if _period(period, "period") is None:
        raise not_found(f"no period {period!r}")
    row = await read_snapshot(request.app[API].pool,
                      lambda conn: queries.statement(conn, reach, period, symbol))
    name = statement_name(symbol, period, ext)
    path = statements_dir(request.app[API].settings, period) / name
    if row is None or not _listed(row["files"], name) or not path.is_file():
        raise not_found(f"no {ext.upper()} statement of {symbol} for {period} "
                        "(or none this token may see)")
    return _file(path, name, ext)


def _listed(files: Any, name: str) -> bool:
    listed = json.loads(files) if isinstance(files, str) else files
    return any(f.get("name") == name for f in listed)


def _file(path: Path, name: str, ext: str) -> web.StreamResponse:
    content_type = FILE_TYPES[ext] + ("; charset=utf-8" if ext == "csv" else "")
    return web.FileResponse(path, headers={
        **HEADERS, "Content-Type": content_type,
        "Content-Disposition": f"attachment; filename=\"{name}\""})


# ---- budgets ------------------------------------------------------------------------

async def list_budgets(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.BUDGETS_READ)
    api = request.app[API]
    period = _month(request.query.get("period")) or \
        Period.containing(api.clock(), api.settings.timezone).name
    rows = await read_snapshot(api.pool, lambda conn: queries.budgets(conn, reach, period))
    return _json(BudgetList(period=period, items=[Budget(
        name=r["name"], requester=r["requester"] or None, period=r["period"],
        currency=r["currency"], limit_minor=r["limit_minor"], spent_minor=r["spent_minor"],
        remaining_minor=r["limit_minor"] - r["spent_minor"]) for r in rows]))


# ---- dues, disputes, aging, payments (issue 17) ------------------------------------------

def _today(request: web.Request) -> date:
    api = request.app[API]
    return local_date(api.clock(), api.settings.timezone)


def _flag(request: web.Request, name: str) -> bool:
    text = request.query.get(name)
    if text is None or text in ("false", "0"):
        return False
    if text in ("true", "1"):
        return True
    raise bad_parameter(name, f"true or false, not {text!r}")


def _actor(request: web.Request) -> audit.Actor:
    who = request[TOKEN].principal
    return audit.Actor(who.person_id, who.login, request.remote or "unknown")


M = TypeVar("M", bound=BaseModel)


async def _body(request: web.Request, model: type[M]) -> M:
    """The request's JSON body as `model`; 415 or 422 saying what is wrong."""
    if request.content_type != "application/json":
        raise ApiProblem(415, "send the body as application/json (UTF-8)")
    try:
        return model.model_validate_json(await request.read())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise ApiProblem(422, f"the body is not a {model.__name__}: {where}: "
                              f"{first['msg']} (see {BASE}/openapi.json)") from None


def _dispute(d: Any) -> Dispute:
    return Dispute(**d.to_json())


def _line(x: Line, agency: str) -> StatementLine:
    # Validated: `kind` and `disputeState` are text from the ledger, checked here.
    return StatementLine.model_validate({
        "postingId": x.posting_id, "transactionId": x.transaction_id, "event": x.event,
        "kind": x.kind, "requester": x.requester, "supplier": x.supplier,
        "serviceKind": x.service_kind, "title": x.title, "fee": x.fee.amount_text(),
        "subsidy": x.subsidy.amount_text(), "effect": x.effect(agency).amount_text(),
        "localDate": x.local_date, "disputable": x.disputable_by(agency),
        "disputeId": x.dispute_id, "disputeState": x.dispute_state})


def _no_statement(reference: str) -> ApiProblem:
    return not_found(f"there is no statement {reference!r} (or none this token may see)")


async def one_due(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.STATEMENTS_READ)
    reference = request.match_info["reference"]

    async def work(conn: Any) -> Any:
        p = await dues_data.by_reference(conn, reach, reference)
        if p is None:
            return None
        return (p, await dues.history(conn, p.due_id), await statement_lines(conn, p),
                await dues_data.dispute_list(conn, reach, due_id=p.due_id))

    found = await read_snapshot(request.app[API].pool, work)
    if found is None:
        raise _no_statement(reference)
    p, events, lines, disputes = found
    return _json(DueDetail(
        **p.to_json(_today(request)),
        history=[DueEvent(id=e.id, kind=e.kind, stage=e.stage, actor=e.actor, at=e.at,
                          detail=e.detail, amount=None if e.amount_minor is None else
                          dues_money(e.amount_minor, p.currency)) for e in events],
        lines=[_line(x, p.agency) for x in lines],
        disputes=[_dispute(d) for d in disputes]))


def dues_money(minor: int, currency: str) -> str:
    return Money(minor, currency).amount_text()


async def aging(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.STATEMENTS_READ)
    today = _today(request)
    rows = await read_snapshot(request.app[API].pool,
                               lambda conn: dues_data.aging(conn, reach, today))
    names = [b[0] for b in dues.AGING_BUCKETS]

    def buckets(values: tuple[int, ...], currency: str) -> dict[str, str]:
        return {n: dues_money(v, currency) for n, v in zip(names, values, strict=True)}

    return _json(Aging(date=today, buckets=names, items=[AgingItem(
        agency=r.agency, currencyCode=r.currency,
        owedToCentre=buckets(r.owed_to_centre, r.currency),
        owedByCentre=buckets(r.owed_by_centre, r.currency),
        overdue=dues_money(r.overdue_minor, r.currency),
        disputed=dues_money(r.disputed_minor, r.currency)) for r in rows]))


async def list_disputes(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.STATEMENTS_READ)
    open_only = _flag(request, "open")
    found = await read_snapshot(request.app[API].pool, lambda conn: dues_data.dispute_list(
        conn, reach, open_only=open_only))
    return _json(DisputeList(items=[_dispute(d) for d in found]))


async def open_dispute(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.STATEMENTS_DISPUTE)
    body = await _body(request, NewDispute)
    p = await read_snapshot(request.app[API].pool,
                    lambda conn: dues_data.by_reference(conn, reach, body.reference))
    if p is None:
        raise ApiProblem(404, f"there is no statement {body.reference!r} (or none this "
                              "token may dispute)", code="no_statement")
    opened = await dues_actions.open_dispute(
        request.app[API].pool, request[TOKEN].principal, _actor(request), p,
        posting_id=body.postingId, reason=body.reason, channel=Channel.API,
        today=_today(request))
    return _json(_dispute(opened), 201)


def _settling(request: web.Request) -> Reach:
    reach = reach_of(request, Scope.STATEMENTS_SETTLE)
    if not dues_actions.may_settle(request[TOKEN].principal):
        raise ApiProblem(403, dues_actions.SETTLE_REFUSED)
    return reach


async def resolve_dispute(request: web.Request) -> web.StreamResponse:
    reach = _settling(request)
    text = request.match_info["id"]
    if not text.isdigit():
        raise not_found(f"there is no dispute {text!r}")
    d = await read_snapshot(request.app[API].pool,
                            lambda conn: dues_data.dispute(conn, reach, int(text)))
    if d is None:
        raise ApiProblem(404, f"there is no dispute {text}", code="no_dispute")
    body = await _body(request, Resolution)
    api = request.app[API]
    corrected = None if body.correctedFee is None else dues_actions.amount_of(
        body.correctedFee, d.amount.currency, "correctedFee")
    done = await dues_actions.resolve(
        api.pool, request[TOKEN].principal, _actor(request), d,
        outcome=Outcome(body.outcome), reason=body.reason, corrected_fee=corrected,
        on=api.clock(), tz=api.settings.timezone)
    return _json(_dispute(done))


async def record_payment(request: web.Request) -> web.StreamResponse:
    reach = _settling(request)
    reference = request.match_info["reference"]
    p = await read_snapshot(request.app[API].pool,
                    lambda conn: dues_data.by_reference(conn, reach, reference))
    if p is None:
        raise _no_statement(reference)
    body = await _body(request, NewPayment)
    today = _today(request)
    paid_on = body.paidOn or today
    amount = dues_actions.amount_of(body.amount, p.currency)
    result = await dues_actions.record_payment(
        request.app[API].pool, request[TOKEN].principal, _actor(request), p, amount,
        paid_on=paid_on, bank_reference=body.bankReference, today=today)
    after = result.position
    return _json(PaymentRecorded(
        payment=Payment(paymentId=result.payment_id or 0, amount=amount.amount_text(),
                        paidOn=paid_on, bankReference=body.bankReference),
        statement=Due(**after.to_json(today))), 201)


# ---- the document, and what is not a route ------------------------------------------

@_public
async def openapi_json(request: web.Request) -> web.StreamResponse:
    return web.json_response(document(), headers=HEADERS,
                             dumps=lambda d: json.dumps(d, ensure_ascii=False))


ROUTES: tuple[tuple[str, Handler], ...] = (
    ("/transactions", list_transactions),
    ("/transactions/{id}", one_transaction),
    ("/statements", list_statements),
    ("/statements/{period}/{file}", statement_file),
    ("/statements/{reference}", one_due),
    ("/aging", aging),
    ("/disputes", list_disputes),
    ("/budgets", list_budgets),
    ("/openapi.json", openapi_json),
)
# The writes (POST), each a JSON body in and a JSON body out.
WRITES: tuple[tuple[str, Handler], ...] = (
    ("/disputes", open_dispute),
    ("/disputes/{id}/resolution", resolve_dispute),
    ("/statements/{reference}/payments", record_payment),
)


def api_app(settings: Settings, pool: asyncpg.Pool, clock: Clock) -> web.Application:
    sub = web.Application(middlewares=[_problems, _authenticate])
    sub[API] = Api(settings, pool, clock)
    for path, handler in ROUTES:
        sub.router.add_get(path, handler)
    for path, handler in WRITES:
        sub.router.add_post(path, handler)
    return sub


def _utc_now() -> datetime:
    return datetime.now(UTC)


def add_api_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool, *,
                   clock: Clock | None = None) -> None:
    """Mount the API at /api/v1/ on the hub's HTTP app (see the module docstring)."""
    app.add_subapp(BASE, api_app(settings, pool, clock or _utc_now))


__all__ = ["ROUTES", "WRITES", "add_api_routes", "api_app"]
