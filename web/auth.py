"""Who is asking, on every page and staff action: the session middleware, the principal,
permission checks and CSRF.

`session_middleware` reads the session cookie (`illhub_session`, Path=/, HttpOnly,
SameSite=Lax, Secure over TLS), loads the session (accounts/sessions.py: idle and
absolute expiry, a revoked session or a disabled person is no session) and the
person's grants, and puts them on the request. Every POST that carries the session
cookie must carry the session's CSRF token too (form field `csrf`, or the header
`X-CSRF-Token`), else 403: a form on another site cannot act for a signed-in person.
Paths that never use the cookie (`/iso18626`, `/d/`, `/api/`, the sign-in forms
themselves) are left alone.

Handlers ask `require(request, Permission.X)`: 401 (or a redirect to the sign-in form
for a browser) without a session, 403 without the permission; it returns the `Reach`
the handler's queries filter by.
"""

from __future__ import annotations

import html
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

import asyncpg
from aiohttp import web
from aiohttp.typedefs import Middleware

from accounts import people
from accounts.roles import Permission, Principal, Reach
from accounts.sessions import Lifetimes, Session, csrf_ok, session_of
from schemas.settings import Settings

COOKIE = "illhub_session"
SIGNIN_PATH = "/signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
# Paths whose POSTs never rely on the session cookie (machine clients, the sign-in form
# itself, which has no session yet).
NO_SESSION_POSTS = ("/iso18626", "/d/", "/api/", SIGNIN_PATH)

PRINCIPAL = web.RequestKey("illhub.principal", Principal)
SESSION = web.RequestKey("illhub.session", Session)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Clock = Callable[[], datetime]


def lifetimes(settings: Settings) -> Lifetimes:
    a = settings.accounts
    return Lifetimes(idle=timedelta(minutes=a.session_idle_minutes),
                     absolute=timedelta(hours=a.session_absolute_hours))


def session_middleware(settings: Settings, pool: asyncpg.Pool,
                       clock: Clock = lambda: datetime.now(UTC)) -> Middleware:
    limits = lifetimes(settings)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        cookie = request.cookies.get(COOKIE)
        if cookie:
            async with pool.acquire() as conn:
                session = await session_of(conn, cookie, now=clock(), lifetimes=limits)
                person = await people.get(conn, session.person_id) if session else None
                if session is not None and person is not None and person.enabled:
                    request[SESSION] = session
                    request[PRINCIPAL] = await people.principal(conn, person)
        if request.method == "POST" and SESSION in request and \
                not request.path.startswith(NO_SESSION_POSTS):
            await _check_csrf(request, request[SESSION])
        return await handler(request)

    return middleware


async def _check_csrf(request: web.Request, session: Session) -> None:
    given = request.headers.get(CSRF_HEADER)
    if given is None and request.content_type in ("application/x-www-form-urlencoded",
                                                  "multipart/form-data"):
        form = await request.post()
        value = form.get(CSRF_FIELD)
        given = value if isinstance(value, str) else None
    if not csrf_ok(session, given):
        raise web.HTTPForbidden(text="403: this form did not come from a page of this hub "
                                     "(CSRF token missing or wrong); reload the page and "
                                     "try again\n")


def wants_html(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def reach_text(reach: Reach) -> str:
    """What the pages say a person sees (above a table filtered by reach)."""
    if reach.everything:
        return "All agencies of the consortium 全体成员馆"
    parts = [f"region {r}" for r in sorted(reach.regions)] + sorted(reach.agencies)
    return "Agencies in your reach 可见范围: " + ", ".join(parts)


def principal_of(request: web.Request) -> Principal:
    """The signed-in person; a browser is sent to the sign-in form, others get 401."""
    if PRINCIPAL in request:
        return request[PRINCIPAL]
    if wants_html(request):
        raise web.HTTPFound(f"{SIGNIN_PATH}?next={quote(request.path_qs, safe='/')}")
    raise web.HTTPUnauthorized(text="401: sign-in required (POST /signin)\n",
                               headers={"WWW-Authenticate": 'Cookie realm="ILL Hub"'})


def require(request: web.Request, permission: Permission) -> Reach:
    """The reach of `permission` for the signed-in person; 403 if they lack it."""
    who = principal_of(request)
    reach = who.reach(permission)
    if reach.nothing:
        raise web.HTTPForbidden(text=f"403: {who.login} may not {permission.value}\n")
    return reach


def csrf_input(request: web.Request) -> str:
    """The hidden field every form of a signed-in page carries."""
    token = request[SESSION].csrf_token if SESSION in request else ""
    return f'<input type="hidden" name="{CSRF_FIELD}" value="{html.escape(token)}">'


def set_session_cookie(response: web.StreamResponse, request: web.Request, value: str,
                       settings: Settings) -> None:
    response.set_cookie(COOKIE, value, path="/", httponly=True, samesite="Lax",
                        secure=request.secure,
                        max_age=int(settings.accounts.session_absolute_hours * 3600))


def clear_session_cookie(response: web.StreamResponse, request: web.Request) -> None:
    response.del_cookie(COOKIE, path="/", secure=request.secure, httponly=True,
                        samesite="Lax")
