"""People's sign-in with a local password, sign-out, and the account page.

Routes (on the hub's HTTP app, mounted with the operators' pages):

  GET  /signin               the form (`?next=/path` returns there afterwards)
  POST /signin               login + password: 303 to `next` with the session cookie
  POST /signout              closes this session (needs the CSRF token: web/auth.py)
  POST /signout/everywhere   closes every session of the person, on every device
  GET  /account              who you are, your roles, the two sign-out buttons

Throttling (infra/throttle.py, one counter per key shared by every hub process): each
wrong password counts against the account (`account:<login>`) and the client address
(`address:<ip>`, `request.remote`, which web/app.py sets from X-Forwarded-For only for
trusted proxies). At `accounts.account_failures` within `failure_window_minutes` the
account is locked until an operator unlocks it (`run.py user unlock LOGIN`); from then
on even its correct password is refused, before the password is looked at. At
`accounts.address_failures` the address gets 429 with Retry-After for
`address_lock_minutes`. A successful sign-in clears the account's counter, not the
address's (a guesser holding one good account could otherwise reset it).

Answers to POST /signin:
  303  signed in; the cookie `illhub_session` (HttpOnly, SameSite=Lax, Secure over TLS)
  401  wrong login or password: the form again, not saying which of the two
  403  the account is disabled (said only after its correct password)
  423  Locked: the account is locked (the message says how to get it unlocked)
  429  the address is over its limit; Retry-After says for how many seconds

Every sign-in, failed sign-in and sign-out is in the audit of people's actions with
the client address as its source; never a password, a session id or a CSRF token.
"""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
from aiohttp import web

from accounts import people
from accounts.audit import Actor, record
from accounts.people import AccountError, Person
from accounts.roles import Principal
from accounts.sessions import Method, close_all, close_session, open_session
from infra import throttle
from infra.credentials import hash_password, verify_password
from infra.database import Connection
from infra.throttle import KeyKind
from schemas.settings import Settings
from web.auth import (
    COOKIE,
    PRINCIPAL,
    SESSION,
    SIGNIN_PATH,
    clear_session_cookie,
    csrf_input,
    lifetimes,
    principal_of,
    set_session_cookie,
)
from web.operators.html import html_response, message_page, redirect
from web.signin_html import DISABLED, LOCKED, LOCKED_ZH, WRONG, account_page, signin_page

log = logging.getLogger(__name__)

SIGNOUT_PATH = "/signout"
EVERYWHERE_PATH = "/signout/everywhere"
ACCOUNT_PATH = "/account"
LOCKED_STATUS = 423   # WebDAV's Locked: the account is, until an operator unlocks it
MAX_LOGIN = 200

Clock = Callable[[], datetime]


def retry_after(until: datetime, now: datetime) -> str:
    return str(max(1, math.ceil((until - now).total_seconds())))


def safe_next(value: str | None) -> str:
    """A path on this server only (never `//host` or `\\`): no open redirect."""
    if (value and value.startswith("/") and not value.startswith("//")
            and "\\" not in value and all(32 < ord(c) < 127 for c in value)):
        return value
    return ACCOUNT_PATH


@dataclass
class SignIn:
    settings: Settings
    pool: asyncpg.Pool
    clock: Clock
    # A hash to check a password against when the login is unknown, so that an unknown
    # login costs the same scrypt time as a known one (made once, on first need).
    dummy_hash: str | None = None

    async def password_ok(self, person: Person | None, password: str) -> bool:
        stored = person.password_hash if person is not None else None
        if stored is None:
            if self.dummy_hash is None:
                self.dummy_hash = await asyncio.to_thread(hash_password,
                                                          secrets.token_urlsafe(16))
            await asyncio.to_thread(verify_password, password, self.dummy_hash)
            return False
        return await asyncio.to_thread(verify_password, password, stored)


SIGNIN = web.AppKey("web.signin", SignIn)


def _field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value if isinstance(value, str) else ""


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


async def _find(conn: Connection, login: str) -> Person | None:
    try:
        return await people.find(conn, login)
    except AccountError:  # not a well-formed login: no such account
        return None


def _too_many(until: datetime, now: datetime) -> web.Response:
    wait = retry_after(until, now)
    return html_response(message_page(
        "Too many attempts 尝试次数过多",
        f"Too many wrong passwords from your address; try again in {wait} seconds.",
        f"来自您地址的错误口令过多，请 {wait} 秒后再试。"), 429, {"Retry-After": wait})


def _locked() -> web.Response:
    return html_response(message_page("Account locked 账户已锁定", LOCKED, LOCKED_ZH),
                         LOCKED_STATUS)


async def signin_form(request: web.Request) -> web.StreamResponse:
    nxt = safe_next(request.query.get("next"))
    if PRINCIPAL in request:
        return redirect(nxt)
    oidc = request.app[SIGNIN].settings.accounts.oidc.issuer is not None
    return html_response(signin_page(next_path=nxt, oidc=oidc))


async def signin(request: web.Request) -> web.StreamResponse:
    s = request.app[SIGNIN]
    form = await request.post()
    login = _field(form, "login").strip()[:MAX_LOGIN]
    password = _field(form, "password")
    nxt = safe_next(_field(form, "next"))
    address = _address(request)
    now = s.clock()
    async with s.pool.acquire() as conn:
        address_key = throttle.key(KeyKind.ADDRESS, address)
        until = await throttle.locked_until(conn, address_key, now)
        if until is not None:
            return _too_many(until, now)
        person = await _find(conn, login)
        account_key = throttle.key(KeyKind.ACCOUNT, person.login if person else login)
        if person is not None and await throttle.locked_until(conn, account_key, now):
            await _failed(conn, person, login, address, "account locked")
            return _locked()
        if not await s.password_ok(person, password):
            return await _wrong(s, conn, person, login, address, now, nxt)
        if person is None or not person.enabled:
            await _failed(conn, person, login, address, "account disabled")
            return html_response(message_page("Account disabled 账户已停用", DISABLED), 403)
        await throttle.succeed(conn, account_key)
        cookie = await _open(s, conn, person, address, now)
    log.info("person %s signed in", person.login)
    response = redirect(nxt)
    set_session_cookie(response, request, cookie, s.settings)
    return response


async def _wrong(s: SignIn, conn: Connection, person: Person | None, login: str,
                 address: str, now: datetime, nxt: str) -> web.Response:
    """Count a wrong password against the address and (a known) account; say so."""
    address_key = throttle.key(KeyKind.ADDRESS, address)
    address_locked = await throttle.fail(conn, address_key, now,
                                         throttle.limits(s.settings, KeyKind.ADDRESS))
    account_locked = person is not None and await throttle.fail(
        conn, throttle.key(KeyKind.ACCOUNT, person.login), now,
        throttle.limits(s.settings, KeyKind.ACCOUNT))
    await _failed(conn, person, login, address,
                  "wrong password" if person is not None else "unknown login")
    log.info("sign-in refused from %s", address)
    if account_locked:
        return _locked()
    if address_locked:
        until = await throttle.locked_until(conn, address_key, now)
        return _too_many(until or now, now)
    oidc = s.settings.accounts.oidc.issuer is not None
    return html_response(signin_page(next_path=nxt, login=login, error=WRONG, oidc=oidc),
                         401)


async def _failed(conn: Connection, person: Person | None, login: str, address: str,
                  reason: str) -> None:
    by = Actor(person.id if person else None, person.login if person else login, address)
    await record(conn, by, "person.signin_failed", by.login, after={"reason": reason})


async def _open(s: SignIn, conn: Connection, person: Person, address: str,
                now: datetime) -> str:
    async with conn.transaction():
        cookie = await open_session(conn, person.id, method=Method.PASSWORD, source=address,
                                    now=now, lifetimes=lifetimes(s.settings))
        await record(conn, Actor(person.id, person.login, address), "person.signin",
                     person.login, after={"method": Method.PASSWORD.value})
    return cookie


def _actor(who: Principal, request: web.Request) -> Actor:
    return Actor(who.person_id, who.login, _address(request))


async def signout(request: web.Request) -> web.StreamResponse:
    """Closes this session (the middleware has checked the CSRF token)."""
    s = request.app[SIGNIN]
    cookie = request.cookies.get(COOKIE)
    if PRINCIPAL in request and cookie:
        who = request[PRINCIPAL]
        async with s.pool.acquire() as conn, conn.transaction():
            await close_session(conn, cookie, s.clock())
            await record(conn, _actor(who, request), "person.signout", who.login)
    response = redirect(SIGNIN_PATH)
    clear_session_cookie(response, request)
    return response


async def signout_everywhere(request: web.Request) -> web.StreamResponse:
    s = request.app[SIGNIN]
    who = principal_of(request)
    async with s.pool.acquire() as conn, conn.transaction():
        closed = await close_all(conn, who.person_id, s.clock())
        await record(conn, _actor(who, request), "person.signout_everywhere", who.login,
                     after={"sessions": closed})
    response = redirect(SIGNIN_PATH)
    clear_session_cookie(response, request)
    return response


async def account(request: web.Request) -> web.StreamResponse:
    s = request.app[SIGNIN]
    who = principal_of(request)
    session = request[SESSION]
    local = session.created_at.astimezone(ZoneInfo(s.settings.timezone))
    return html_response(account_page(
        who, method=session.method.value, since=local.strftime("%Y-%m-%d %H:%M"),
        csrf=csrf_input(request)))


def add_signin_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool, *,
                      clock: Clock | None = None) -> None:
    app[SIGNIN] = SignIn(settings, pool, clock or (lambda: datetime.now(UTC)))
    app.router.add_get(SIGNIN_PATH, signin_form)
    app.router.add_post(SIGNIN_PATH, signin)
    app.router.add_post(SIGNOUT_PATH, signout)
    app.router.add_post(EVERYWHERE_PATH, signout_everywhere)
    app.router.add_get(ACCOUNT_PATH, account)


__all__ = ["SIGNIN", "add_signin_routes", "retry_after", "safe_next"]
