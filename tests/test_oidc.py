"""Sign-in through OpenID Connect (web/oidc.py) against a real provider, and the mapping
of its claims to accounts and grants (accounts/claims.py).

The provider is the certified `oidc-provider` library run by Node.js
(tests/support/oidc.py); the person is played over HTTP at its own login form. ID tokens
that must be refused are real ones: a nonce swapped in the authorization request, a
token the provider issued to its second client (`other`), a signature altered.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestServer
from joserfc.jwk import KeySet

from accounts import people
from accounts.audit import Actor, read
from accounts.claims import ClaimsError, claimed, grants
from accounts.roles import Grant, Role, ScopeKind
from delivery.gateway import MaskingAccessLogger
from schemas.settings import Oidc, Settings
from tests.support.agencies import sql_agencies
from tests.support.oidc import (
    CLIENT_ID,
    OTHER_CLIENT_ID,
    Idp,
    authorize,
    browser_session,
    hub_app,
    needs_node,
    oidc_provider,
)
from web.auth import COOKIE as SESSION_COOKIE
from web.oidc import CALLBACK_PATH, COOKIE, LEEWAY, START_PATH, IdTokenError
from web.oidc import check_id_token as check

HTML = {"Accept": "text/html"}
CLI = Actor.cli("tester")


# ---- the hub and the provider together ---------------------------------------------

@dataclass
class Stage:
    base: str
    idp: Idp
    settings: Settings
    http: aiohttp.ClientSession

    @property
    def callback(self) -> str:
        return self.base + CALLBACK_PATH

    async def begin(self, next_path: str = "/ops/") -> str:
        """GET /signin/oidc: the provider's authorization URL the hub redirects to."""
        async with self.http.get(f"{self.base}{START_PATH}?{urlencode({'next': next_path})}",
                                 allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
            return resp.headers["Location"]

    async def finish(self, callback_url: str) -> aiohttp.ClientResponse:
        async with self.http.get(callback_url, allow_redirects=False, headers=HTML) as resp:
            await resp.read()
            return resp

    async def sign_in(self, login: str, next_path: str = "/ops/") -> aiohttp.ClientResponse:
        url = await self.begin(next_path)
        return await self.finish(await authorize(self.http, url, login, self.callback))


@asynccontextmanager
async def stage(settings: Settings, pool: asyncpg.Pool, accounts: dict[str, dict[str, Any]],
                **oidc: Any) -> AsyncIterator[Stage]:
    async with oidc_provider() as idp:
        configured = idp.configure(settings, **oidc)
        server = TestServer(hub_app(configured, pool), host="127.0.0.1")
        # The hub's own access log (web/app.py start_http): paths without query strings.
        await server.start_server(access_log_class=MaskingAccessLogger)
        try:
            base = f"http://127.0.0.1:{server.port}"
            await idp.start([base + CALLBACK_PATH], accounts)
            async with browser_session() as http:
                yield Stage(base, idp, configured, http)
        finally:
            await server.close()


def login_name() -> str:
    return f"oidc-{secrets.token_hex(4)}"


def text_of(resp: aiohttp.ClientResponse) -> str:
    assert resp._body is not None
    return resp._body.decode()


async def grants_of(pool: asyncpg.Pool, login: str) -> set[str]:
    async with pool.acquire() as conn:
        person = await people.find(conn, login)
        assert person is not None
        return {str(g) for g in (await people.principal(conn, person)).grants}


# ---- the full flow ---------------------------------------------------------------------

@needs_node
async def test_an_operator_is_provisioned_and_signed_in_through_the_provider(
        settings: Settings, pool: asyncpg.Pool) -> None:
    login = login_name()
    accounts = {login: {"name": "运营 王", "email": f"{login}@calis.example",
                        "groups": ["ill-operators", "wiki-editors"]}}
    async with stage(settings, pool, accounts, provision=True) as s:
        url = await s.begin("/ops/")
        q = parse_qs(urlsplit(url).query)
        assert url.startswith(s.idp.issuer + "/auth?")
        assert q["client_id"] == [CLIENT_ID] and q["response_type"] == ["code"]
        assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) == 43
        assert q["redirect_uri"] == [s.callback]
        assert "openid" in q["scope"][0].split() and q["nonce"] and q["state"]
        pending = next(c for c in s.http.cookie_jar if c.key == COOKIE)
        assert pending["path"] == START_PATH and pending["httponly"]

        resp = await s.finish(await authorize(s.http, url, login, s.callback))
        assert resp.status == 303, text_of(resp)
        assert resp.headers["Location"] == "/ops/"
        assert resp.cookies[SESSION_COOKIE]["httponly"]
        assert resp.cookies[COOKIE].value == ""        # the pending sign-in is spent
        async with s.http.get(f"{s.base}/ops/", headers=HTML, allow_redirects=False) as page:
            assert page.status == 200, await page.text()
            assert "Dashboard" in await page.text()

        async with pool.acquire() as conn:
            person = await people.find(conn, login)
            assert person is not None
            assert (person.display_name, person.email) == ("运营 王", f"{login}@calis.example")
            assert (person.oidc_issuer, person.oidc_subject) == (s.idp.issuer, login)
            assert person.password_hash is None
            trail = await read(conn, login=None, limit=50)
        assert await grants_of(pool, login) == {"operator @ consortium"}
        mine = [(r["action"], r["login"], r["source"]) for r in reversed(trail)
                if r["target"] == login]
        assert mine == [("person.add", "oidc", "127.0.0.1"),
                        ("person.link_oidc", "oidc", "127.0.0.1"),
                        ("person.grant", "oidc", "127.0.0.1"),
                        ("person.signin", login, "127.0.0.1")]
        method = await pool.fetchval(
            "SELECT method FROM web_session WHERE person_id = $1", person.id)
        assert method == "oidc"

        # The second time the account is found by its subject: no second account.
        s.http.cookie_jar.clear()
        again = await s.sign_in(login)
        assert again.status == 303
        assert await pool.fetchval("SELECT count(*) FROM person WHERE login = $1", login) == 1
    print(f"\nprovider started in {s.idp.started_in:.2f} s")


@needs_node
async def test_library_staff_get_their_agency_from_the_claims(
        settings: Settings, pool: asyncpg.Pool) -> None:
    [symbol] = await sql_agencies(pool, "南京大学图书馆")
    staff, stray, elsewhere = login_name(), login_name(), login_name()
    accounts = {staff: {"name": "馆员 李", "groups": ["ill-staff"], "illhub_agency": symbol},
                stray: {"groups": ["ill-staff"]},
                elsewhere: {"groups": ["ill-staff"], "illhub_agency": "ZZ-NOWHERE"}}
    async with stage(settings, pool, accounts, provision=True) as s:
        resp = await s.sign_in(staff, next_path="/lib/")
        assert resp.status == 303 and resp.headers["Location"] == "/lib/"
        assert await grants_of(pool, staff) == {f"library_staff @ agency {symbol}"}

        s.http.cookie_jar.clear()
        resp = await s.sign_in(stray)
        assert resp.status == 403
        assert "illhub_agency" in text_of(resp) and "登录被拒绝" in text_of(resp)
        assert await pool.fetchval("SELECT count(*) FROM person WHERE login = $1", stray) == 0

        s.http.cookie_jar.clear()
        resp = await s.sign_in(elsewhere)
        assert resp.status == 403 and "no agency ZZ-NOWHERE" in text_of(resp)
        assert await pool.fetchval("SELECT count(*) FROM person WHERE login = $1",
                                   elsewhere) == 0


@needs_node
async def test_without_provisioning_only_existing_accounts_sign_in(
        settings: Settings, pool: asyncpg.Pool) -> None:
    [symbol] = await sql_agencies(pool, "苏州大学图书馆")
    unknown, known, disabled = login_name(), login_name(), login_name()
    async with pool.acquire() as conn:
        person = await people.add(conn, CLI, login=known, display_name="Known 已有")
        await people.grant(conn, CLI, person, Grant.parse("library_staff", f"agency:{symbol}"))
        off = await people.add(conn, CLI, login=disabled, display_name="Off")
        await people.set_enabled(conn, CLI, off, False)
    groups = {"groups": ["ill-operators"]}   # claims that would make an operator
    accounts = {unknown: groups, known: groups, disabled: groups}
    async with stage(settings, pool, accounts, provision=False) as s:
        resp = await s.sign_in(unknown)
        assert resp.status == 403
        assert f"There is no account for “{unknown}”" in text_of(resp)
        assert "没有账户" in text_of(resp)
        assert SESSION_COOKIE not in resp.cookies
        assert await pool.fetchval("SELECT count(*) FROM person WHERE login = $1", unknown) == 0

        s.http.cookie_jar.clear()
        resp = await s.sign_in(known, next_path="/lib/")
        assert resp.status == 303 and SESSION_COOKIE in resp.cookies
        async with pool.acquire() as conn:
            linked = await people.find(conn, known)
        assert linked is not None and linked.oidc_subject == known
        # Provisioning off: the provider's groups grant nothing; the operator's grant stays.
        assert await grants_of(pool, known) == {f"library_staff @ agency {symbol}"}

        s.http.cookie_jar.clear()
        resp = await s.sign_in(disabled)
        assert resp.status == 403 and "is disabled" in text_of(resp)
        assert SESSION_COOKIE not in resp.cookies


# ---- refusals --------------------------------------------------------------------------

def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return urlunsplit(parts._replace(query=urlencode({**q, **changes})))


@needs_node
async def test_a_token_for_another_nonce_or_state_is_refused(
        settings: Settings, pool: asyncpg.Pool) -> None:
    login = login_name()
    async with stage(settings, pool, {login: {"groups": ["ill-operators"]}},
                     provision=True) as s:
        # The provider puts the nonce it was sent in the ID token; this one is not the
        # nonce this browser's sign-in made (a replayed or injected token).
        url = with_query(await s.begin(), nonce=secrets.token_urlsafe(32))
        resp = await s.finish(await authorize(s.http, url, login, s.callback))
        assert resp.status == 403, text_of(resp)
        assert "nonce" in text_of(resp) and SESSION_COOKIE not in resp.cookies

        # A callback whose state is not this browser's (login CSRF) goes nowhere.
        s.http.cookie_jar.clear()
        url = await s.begin()
        callback = await authorize(s.http, url, login, s.callback)
        resp = await s.finish(with_query(callback, state="forged"))
        assert resp.status == 400 and "登录已失效" in text_of(resp)

        # Nor one without the pending cookie (another browser).
        s.http.cookie_jar.clear()
        resp = await s.finish(callback)
        assert resp.status == 400
        assert await pool.fetchval("SELECT count(*) FROM person WHERE login = $1", login) == 0


@needs_node
async def test_declining_at_the_provider_gives_a_clear_page(
        settings: Settings, pool: asyncpg.Pool) -> None:
    async with stage(settings, pool, {}, provision=True) as s:
        url = await s.begin()
        resp = await s.finish(await authorize(s.http, url, "", s.callback, abort=True))
        assert resp.status == 403
        page = text_of(resp)
        assert "declined the sign-in" in page and "access_denied" in page
        assert "拒绝了此次登录" in page and 'href="/signin"' in page


async def genuine_token(s: Stage, client_id: str, nonce: str) -> dict[str, Any]:
    """A code flow played by the test as the provider's client `client_id`: the token
    endpoint's answer (with a real, signed ID token)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(
        hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    query = urlencode({"response_type": "code", "client_id": client_id,
                       "redirect_uri": s.callback, "scope": "openid profile",
                       "state": "s", "nonce": nonce, "code_challenge": challenge,
                       "code_challenge_method": "S256"})
    back = await authorize(s.http, f"{s.idp.issuer}/auth?{query}", "ops", s.callback)
    code = parse_qs(urlsplit(back).query)["code"][0]
    async with s.http.post(f"{s.idp.issuer}/token",
                           headers={"Authorization": aiohttp.encode_basic_auth(
                               client_id, s.idp.secret)},
                           data={"grant_type": "authorization_code", "code": code,
                                 "redirect_uri": s.callback,
                                 "code_verifier": verifier}) as resp:
        assert resp.status == 200, await resp.text()
        token: dict[str, Any] = await resp.json()
        return token


@needs_node
async def test_id_tokens_failing_a_check_are_refused(settings: Settings,
                                                     pool: asyncpg.Pool) -> None:
    async with stage(settings, pool, {"ops": {"groups": ["ill-operators"]}},
                     provision=True) as s:
        nonce = secrets.token_urlsafe(16)
        mine = await genuine_token(s, CLIENT_ID, nonce)
        theirs = await genuine_token(s, OTHER_CLIENT_ID, nonce)
        async with s.http.get(f"{s.idp.issuer}/jwks") as resp:
            keys = KeySet.import_key_set(await resp.json())
        good = {"algorithms": ["RS256", "ES256", "PS256", "EdDSA"], "issuer": s.idp.issuer,
                "client_id": CLIENT_ID, "nonce": nonce, "access_token": mine["access_token"]}

        claims = check(mine["id_token"], keys, **good)
        assert claims["sub"] == "ops" and claims["aud"] == CLIENT_ID
        assert claims["groups"] == ["ill-operators"]

        def refused(raw: str, **changes: Any) -> str:
            with pytest.raises(IdTokenError) as caught:
                check(raw, keys, **{**good, **changes})
            return str(caught.value)

        # Issued by the same provider to its other client: the audience is not the hub.
        assert "aud" in refused(theirs["id_token"], access_token=theirs["access_token"])
        assert "nonce" in refused(mine["id_token"], nonce="another nonce")
        assert "iss" in refused(mine["id_token"], issuer="https://idp.elsewhere.example")
        head, body, sig = mine["id_token"].split(".")
        flipped = sig[:10] + ("A" if sig[10] != "A" else "B") + sig[11:]
        assert "signature" in refused(f"{head}.{body}.{flipped}")
        # The claims changed under the provider's signature (a richer group).
        forged = json.loads(base64.urlsafe_b64decode(body + "=="))
        forged["groups"] = ["ill-operators", "root"]
        body2 = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
        assert "signature" in refused(f"{head}.{body2}.{sig}")
        if "at_hash" in claims:  # optional in a token endpoint's ID token; checked if there
            assert "at_hash" in refused(mine["id_token"], access_token="another access token")
        later = int(claims["exp"]) + LEEWAY + 1
        assert "expired" in refused(mine["id_token"], now=later)
        # Only algorithms the hub accepts: none of the provider's keys is HS256.
        assert refused(mine["id_token"], algorithms=["HS256"])
        assert int(time.time()) - int(claims["iat"]) < 60


async def test_the_routes_answer_404_when_single_sign_on_is_off(
        settings: Settings, pool: asyncpg.Pool) -> None:
    server = TestServer(hub_app(settings.updated(accounts__oidc__issuer=None), pool),
                        host="127.0.0.1")
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as http:
            for path in (START_PATH, CALLBACK_PATH):
                async with http.get(f"http://127.0.0.1:{server.port}{path}") as resp:
                    assert resp.status == 404
                    assert "accounts.oidc.issuer" in await resp.text()
    finally:
        await server.close()


# ---- claims to accounts and grants (pure) ----------------------------------------------

OIDC = Oidc(role_map={"ill-operators": "operator", "ill-staff": "library_staff",
                      "finance": "finance", "centre-finance": "finance@consortium",
                      "province": "regional_admin", "audit": "auditor"})


def test_claims_name_the_person() -> None:
    who = claimed({"preferred_username": " Li.Na ", "name": "李娜", "email": "li@x.cn",
                   "groups": ["ill-staff", "unrelated"], "illhub_agency": "CN-NJU"}, OIDC)
    assert (who.login, who.display_name, who.email) == ("li.na", "李娜", "li@x.cn")
    assert who.grants == {Grant(Role.LIBRARY_STAFF, ScopeKind.AGENCY, "CN-NJU")}
    bare = claimed({"preferred_username": "wang"}, OIDC)
    assert (bare.display_name, bare.email, bare.grants) == ("wang", None, frozenset())
    other = claimed({"upn": "zhao"}, Oidc(login_claim="upn"))
    assert other.login == "zhao"


@pytest.mark.parametrize(("claims", "expected"), [
    ({"groups": ["ill-operators"]}, {"operator @ consortium"}),
    ({"groups": "ill-staff", "illhub_agency": ["A-1", "A-2"]},
     {"library_staff @ agency A-1", "library_staff @ agency A-2"}),
    ({"groups": ["province"], "illhub_region": "江苏"}, {"regional_admin @ region 江苏"}),
    ({"groups": ["finance"], "illhub_agency": "A-1"}, {"finance @ agency A-1"}),
    ({"groups": ["centre-finance"]}, {"finance @ consortium"}),
    ({"groups": ["audit"], "illhub_region": "北京"}, {"auditor @ region 北京"}),
    ({"groups": ["audit"], "illhub_region": "北京", "illhub_agency": "A-1"},
     {"auditor @ agency A-1"}),
    ({"groups": ["nothing-we-know"]}, set()),
    ({}, set()),
])
def test_claims_map_to_grants(claims: dict[str, Any], expected: set[str]) -> None:
    assert {str(g) for g in grants(claims, OIDC)} == expected


@pytest.mark.parametrize(("claims", "oidc", "error"), [
    ({}, OIDC, "the ID token has no 'preferred_username' claim"),
    ({"preferred_username": "two words"}, OIDC, "one word"),
    ({"preferred_username": "x", "groups": ["ill-staff"]}, OIDC,
     "role library_staff needs the claim 'illhub_agency'"),
    ({"preferred_username": "x", "groups": ["finance"]}, OIDC,
     "write 'finance@consortium' in accounts.oidc.role_map"),
    ({"preferred_username": "x", "groups": ["province"], "illhub_agency": "A"}, OIDC,
     "role regional_admin needs the claim 'illhub_region'"),
    ({"preferred_username": "x", "groups": [1]}, OIDC,
     "claim 'groups' must be a string or a list of strings"),
    ({"preferred_username": "x", "groups": ["g"]}, Oidc(role_map={"g": "boss"}),
     "accounts.oidc.role_map['g'] = 'boss': unknown role"),
    ({"preferred_username": "x", "groups": ["g"]},
     Oidc(role_map={"g": "library_staff@consortium"}),
     "library_staff can be granted over agency"),
    ({"preferred_username": "x", "groups": ["g"]}, Oidc(role_map={"g": "auditor@planet"}),
     "scope kind is consortium, region or agency"),
])
def test_unusable_claims_are_named(claims: dict[str, Any], oidc: Oidc, error: str) -> None:
    with pytest.raises(ClaimsError, match=error.replace("[", r"\[").replace("]", r"\]")):
        claimed(claims, oidc)


@needs_node
async def test_no_code_state_nonce_token_or_session_reaches_the_logs(
        settings: Settings, pool: asyncpg.Pool, caplog: pytest.LogCaptureFixture) -> None:
    """The log scan of tests/test_security.py, for a sign-in by OpenID Connect: every
    logger at DEBUG, then no authorization code, state, nonce, PKCE challenge, pending
    cookie, session cookie or JWT (an ID token is `eyJ...`.`...`.`...`) in what was logged."""
    login = login_name()
    caplog.set_level(logging.DEBUG)
    async with stage(settings, pool, {login: {"groups": ["ill-operators"]}},
                     provision=True) as s:
        url = await s.begin("/ops/")
        pending = next(c for c in s.http.cookie_jar if c.key == COOKIE).value
        callback = await authorize(s.http, url, login, s.callback)
        resp = await s.finish(callback)
        assert resp.status == 303, text_of(resp)
        session = resp.cookies[SESSION_COOKIE].value
        async with s.http.get(f"{s.base}/ops/", headers=HTML) as page:
            assert page.status == 200
    asked, answered = parse_qs(urlsplit(url).query), parse_qs(urlsplit(callback).query)
    secrets_seen = {"code": answered["code"][0], "state": answered["state"][0],
                    "nonce": asked["nonce"][0], "challenge": asked["code_challenge"][0],
                    "pending cookie": pending, "session cookie": session}
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert len(caplog.records) >= 3, "the scan must see the requests' log lines"
    leaked = [what for what, value in secrets_seen.items() if value and value in logged]
    assert leaked == [], leaked
    assert not re.search(r"eyJ[\w-]{10,}\.[\w-]{10,}\.[\w-]{10,}", logged)
