"""The read-only REST API under `/api/v1/` (docs/api.md; the document: /api/v1/openapi.json).

  GET /api/v1/transactions?state=&updated_since=&limit=&cursor=   transactions:read
  GET /api/v1/transactions/{id}                                   transactions:read
  GET /api/v1/statements?period=&limit=&cursor=                   statements:read
  GET /api/v1/statements/{period}/{symbol}.csv|.pdf               statements:read
  GET /api/v1/budgets?period=                                     budgets:read
  GET /api/v1/openapi.json                                        (no token)

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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import web

from accounts.roles import Reach
from accounts.tokens import (
    SCOPE_PERMISSION,
    Scope,
    TokenPrincipal,
    TokenRefused,
    principal_for_token,
)
from broker.states import State
from schemas.settings import Settings
from settlement.periods import Period
from settlement.statement_model import statement_name, statements_dir
from web.api import queries
from web.api.models import (
    Budget,
    BudgetList,
    Net,
    Statement,
    StatementFiles,
    StatementPage,
    TrailEvent,
    Transaction,
    TransactionDetail,
    TransactionPage,
)
from web.api.openapi import BASE, document
from web.api.problems import ApiProblem, bad_parameter, not_found, problem_response

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], datetime]

DEFAULT_LIMIT = 100
MAX_LIMIT = 500
STATEMENT_TIMEOUT = "15s"
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
                                headers={**HEADERS, **p.headers})
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
        detail = f"the API is read-only: {request.method} is not allowed here, only GET"
        headers["Allow"] = exc.headers.get("Allow", "GET, HEAD")
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


async def _read(api: Api, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """One consistent, read-only snapshot with a statement timeout."""
    async with api.pool.acquire() as conn, conn.transaction(isolation="repeatable_read",
                                                            readonly=True):
        await conn.execute(f"SET LOCAL statement_timeout = '{STATEMENT_TIMEOUT}'")
        return await work(conn)


def _json(body: Any) -> web.Response:
    return web.Response(text=body.model_dump_json(), content_type="application/json",
                        charset="utf-8", headers=HEADERS)


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
        raise bad_parameter(name, f"a settlement period YYYY-MM, not {text!r}") from None


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
    rows = await _read(request.app[API], lambda conn: queries.transactions(
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
    found = await _read(request.app[API],
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


def _statement(row: Any) -> Statement:
    totals = json.loads(row["totals"]) if isinstance(row["totals"], str) else row["totals"]
    return Statement(period=row["period"], agency=row["agency"], name=row["name"],
                     totals=[Net(**t) for t in totals],
                     files=StatementFiles(**{ext: statement_href(row["period"], row["agency"],
                                                                 ext) for ext in FILE_TYPES}))


async def list_statements(request: web.Request) -> web.StreamResponse:
    reach = reach_of(request, Scope.STATEMENTS_READ)
    period = _period(request.query.get("period"))
    limit = _limit(request)
    values = decode_cursor(request.query.get("cursor"), 2)
    after = queries.StatementCursor(*values) if values else None
    rows = await _read(request.app[API], lambda conn: queries.statements(
        conn, reach, period=period, after=after, limit=limit + 1))
    page = rows[:limit]
    return _json(StatementPage(
        items=[_statement(r) for r in page],
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
    row = await _read(request.app[API],
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
    period = _period(request.query.get("period")) or \
        Period.containing(api.clock(), api.settings.timezone).name
    rows = await _read(api, lambda conn: queries.budgets(conn, reach, period))
    return _json(BudgetList(period=period, items=[Budget(
        name=r["name"], requester=r["requester"] or None, period=r["period"],
        currency=r["currency"], limit_minor=r["limit_minor"], spent_minor=r["spent_minor"],
        remaining_minor=r["limit_minor"] - r["spent_minor"]) for r in rows]))


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
    ("/budgets", list_budgets),
    ("/openapi.json", openapi_json),
)


def api_app(settings: Settings, pool: asyncpg.Pool, clock: Clock) -> web.Application:
    sub = web.Application(middlewares=[_problems, _authenticate])
    sub[API] = Api(settings, pool, clock)
    for path, handler in ROUTES:
        sub.router.add_get(path, handler)
    return sub


def _utc_now() -> datetime:
    return datetime.now(UTC)


def add_api_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool, *,
                   clock: Clock | None = None) -> None:
    """Mount the API at /api/v1/ on the hub's HTTP app (see the module docstring)."""
    app.add_subapp(BASE, api_app(settings, pool, clock or _utc_now))


__all__ = ["add_api_routes", "api_app"]
