"""People for tests: an account with grants, and a signed-in HTTP client for it.

`make_person(pool, "library_staff@agency:SYM", ...)` creates the account (through
accounts.people, audited as the CLI would) with its grants; `signed_in(base_url, pool,
settings, person)` opens a real server-side session for it (accounts.sessions) and
yields a `Browser`: an aiohttp client sending the `illhub_session` cookie, with the
session's CSRF token at hand for forms. No sign-in form is driven here (the sign-in
tests do that); what these helpers give is exactly what a signed-in browser holds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg

from accounts import people
from accounts.audit import Actor
from accounts.people import Person
from accounts.roles import Grant
from accounts.sessions import Method, open_session, session_of
from schemas.settings import Settings
from tests.support.names import RUN_ID, unique
from web.auth import COOKIE, CSRF_FIELD, lifetimes

HTML = {"Accept": "text/html,application/xhtml+xml"}
TESTS = Actor.cli("tests")


async def make_person(pool: asyncpg.Pool, *grants: str, name: str = "测试馆员 Test Person"
                      ) -> Person:
    """An account holding `grants`, each `role@scope` (`library_staff@agency:SYM`,
    `finance@consortium`, `regional_admin@region:江苏`)."""
    async with pool.acquire() as conn:
        person = await people.add(conn, TESTS, login=f"t{RUN_ID}-{unique('person')}",
                                  display_name=name)
        for g in grants:
            role, _, scope = g.partition("@")
            await people.grant(conn, TESTS, person, Grant.parse(role, scope or None))
    return person


@dataclass
class Browser:
    """A signed-in client: every request carries the session cookie."""

    http: aiohttp.ClientSession
    base_url: str
    csrf: str

    async def get(self, path: str, status: int = 200) -> str:
        """A page as a browser asks for it; checks the status and that it is UTF-8 HTML."""
        async with self.http.get(self.base_url + path, headers=HTML,
                                 allow_redirects=False) as resp:
            body = await resp.text()
            assert resp.status == status, f"{path}: {resp.status} {body[:2000]}"
            if status == 200:
                assert resp.headers["Content-Type"] == "text/html; charset=utf-8"
            return body

    async def get_bytes(self, path: str, status: int = 200) -> tuple[bytes, Mapping[str, str]]:
        async with self.http.get(self.base_url + path, allow_redirects=False) as resp:
            body = await resp.read()
            assert resp.status == status, f"{path}: {resp.status} {body[:500]!r}"
            return body, dict(resp.headers)

    async def post(self, path: str, form: dict[str, str], status: int = 303, *,
                   csrf: bool = True) -> tuple[str, Mapping[str, str]]:
        """Submit a form (with the session's CSRF token unless `csrf=False`)."""
        data: dict[str, Any] = {**form, **({CSRF_FIELD: self.csrf} if csrf else {})}
        async with self.http.post(self.base_url + path, data=data, headers=HTML,
                                  allow_redirects=False) as resp:
            body = await resp.text()
            assert resp.status == status, f"{path}: {resp.status} {body[:2000]}"
            return body, dict(resp.headers)


async def open_cookie(pool: asyncpg.Pool, settings: Settings, person: Person
                      ) -> tuple[str, str]:
    """A fresh session of `person`: its cookie value and CSRF token."""
    now = datetime.now(UTC)
    limits = lifetimes(settings)
    async with pool.acquire() as conn:
        cookie = await open_session(conn, person.id, method=Method.PASSWORD,
                                    source="127.0.0.1", now=now, lifetimes=limits)
        session = await session_of(conn, cookie, now=now, lifetimes=limits)
    assert session is not None
    return cookie, session.csrf_token


@asynccontextmanager
async def signed_in(base_url: str, pool: asyncpg.Pool, settings: Settings,
                    person: Person) -> AsyncIterator[Browser]:
    cookie, csrf = await open_cookie(pool, settings, person)
    # A header rather than the cookie jar: aiohttp's jar keeps no cookie for an IP host.
    async with aiohttp.ClientSession(headers={"Cookie": f"{COOKIE}={cookie}"}) as http:
        yield Browser(http=http, base_url=base_url, csrf=csrf)
