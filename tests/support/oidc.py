"""A real OpenID provider for the sign-in tests: tests/oidc_provider/server.js, the
certified `oidc-provider` library from the npm registry, run with this machine's Node.js.

Its port is chosen before the hub is built (the hub's settings name the issuer) and it
is started once the hub listens (its client registers the hub's callback URL):

    async with oidc_provider() as idp:                       # issuer known, not running
        settings = idp.configure(settings, provision=True)
        ... start the hub at `base` ...
        await idp.start([base + CALLBACK_PATH], {"ops": {"groups": ["ill-operators"]}})

`start` waits for the discovery document; the provider is stopped (SIGTERM, then
SIGKILL) when the block ends. `authorize` plays a person at the provider's own
development login form over HTTP (aiohttp, cookies kept) and returns where the provider
sends the browser back. `node_modules` comes from `npm ci` (bash .ci/setup).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from html import unescape
from typing import Any
from urllib.parse import urljoin

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from schemas.settings import Settings
from tests.support.paths import ROOT
from web.app import make_app
from web.oidc import START_PATH, add_oidc_routes

PROVIDER_DIR = ROOT / "tests" / "oidc_provider"
NODE = shutil.which("node")
CLIENT_ID = "illhub"
OTHER_CLIENT_ID = "other"   # a second client of the same provider (wrong audience)
START_TIMEOUT = 20.0

needs_node = pytest.mark.skipif(
    NODE is None, reason="Node.js not found: the test identity provider runs on it")


def hub_app(settings: Settings, pool: asyncpg.Pool) -> web.Application:
    """The hub's app as make_app builds it, with the OIDC routes (added here while
    make_app does not call add_oidc_routes itself)."""
    app = make_app(settings, pool)
    if not any(getattr(r, "canonical", None) == START_PATH for r in app.router.resources()):
        add_oidc_routes(app, settings, pool)
    return app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Idp:
    port: int
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(24))
    proc: asyncio.subprocess.Process | None = None
    started_in: float = 0.0          # seconds from spawn to a served discovery document
    output: list[str] = field(default_factory=list)

    @property
    def issuer(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def configure(self, settings: Settings, **oidc: Any) -> Settings:
        """`settings` with accounts.oidc pointing at this provider (and `oidc` changes)."""
        values: dict[str, Any] = {"issuer": self.issuer, "client_id": CLIENT_ID,
                                  "client_secret": self.secret,
                                  "role_map": {"ill-operators": "operator",
                                               "ill-staff": "library_staff",
                                               "ill-finance": "finance@agency",
                                               "ill-region": "regional_admin"},
                                  **oidc}
        return settings.updated(**{f"accounts__oidc__{k}": v for k, v in values.items()})

    async def start(self, redirect_uris: list[str], accounts: dict[str, dict[str, Any]]
                    ) -> None:
        if not (PROVIDER_DIR / "node_modules" / "oidc-provider").is_dir():
            raise AssertionError(f"{PROVIDER_DIR}/node_modules is missing: run bash .ci/setup "
                                 "(it runs npm ci there)")
        assert NODE is not None
        began = time.monotonic()
        env = {**os.environ, "OIDC_PORT": str(self.port),
               "OIDC_REDIRECT_URIS": " ".join(redirect_uris),
               "OIDC_CLIENT_SECRET": self.secret,
               "OIDC_ACCOUNTS": json.dumps(accounts, ensure_ascii=False)}
        self.proc = await asyncio.create_subprocess_exec(
            NODE, "server.js", cwd=PROVIDER_DIR, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        asyncio.get_running_loop().create_task(self._collect())
        await self._wait_for_discovery(began)

    async def _collect(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            self.output.append(line.decode(errors="replace").rstrip())

    async def _wait_for_discovery(self, began: float) -> None:
        url = f"{self.issuer}/.well-known/openid-configuration"
        async with aiohttp.ClientSession() as http:
            while time.monotonic() - began < START_TIMEOUT:
                if self.proc is not None and self.proc.returncode is not None:
                    break
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url) as resp:
                        if resp.status == 200 and (await resp.json())["issuer"] == self.issuer:
                            self.started_in = time.monotonic() - began
                            return
                await asyncio.sleep(0.05)
        raise AssertionError(f"the test identity provider did not serve {url}: "
                             + "\n".join(self.output[-30:]))

    async def stop(self) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.terminate()
        try:
            await asyncio.wait_for(self.proc.wait(), 5)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


@contextlib.asynccontextmanager
async def oidc_provider() -> AsyncIterator[Idp]:
    idp = Idp(port=free_port())
    try:
        yield idp
    finally:
        await idp.stop()


def browser_session() -> aiohttp.ClientSession:
    """A client keeping cookies like a browser (also for 127.0.0.1, which aiohttp's jar
    refuses by default), following no redirects by itself."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


FORM = re.compile(r'<form[^>]*action="([^"]+)"', re.S)


async def authorize(http: aiohttp.ClientSession, url: str, login: str, stop_at: str, *,
                    abort: bool = False) -> str:
    """Follow `url` at the provider, sign in as `login` at its login form (or, with
    `abort`, press its abort link), and return the first URL starting with `stop_at`
    (the hub's callback) that the provider redirects to."""
    submitted = False
    for _ in range(20):
        if url.startswith(stop_at):
            return url
        async with http.get(url, allow_redirects=False) as resp:
            if resp.status in (302, 303):
                url = urljoin(url, resp.headers["Location"])
                continue
            page = await resp.text()
        assert resp.status == 200 and not submitted, f"{url}: {resp.status} {page[:500]}"
        if abort:
            found = re.search(r'href="([^"]*/abort)"', page)
            assert found, page[:1000]
            url = urljoin(url, unescape(found.group(1)))
            continue
        action = FORM.search(page)
        assert action, f"no login form at {url}: {page[:1000]}"
        async with http.post(urljoin(url, unescape(action.group(1))), allow_redirects=False,
                             data={"prompt": "login", "login": login,
                                   "password": "any password"}) as resp:
            assert resp.status in (302, 303), f"login form: {resp.status} {await resp.text()}"
            url = urljoin(url, resp.headers["Location"])
        submitted = True
    raise AssertionError(f"the provider never sent the browser to {stop_at}")
