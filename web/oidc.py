"""Sign-in through the consortium's identity provider: OpenID Connect, authorization code
flow with PKCE (S256).

  GET /signin/oidc?next=/path     starts it: a state, a nonce and a PKCE verifier are
                                  made, kept in a short-lived signed cookie (path
                                  /signin/oidc, HttpOnly), and the browser is sent to the
                                  provider's authorization endpoint
  GET /signin/oidc/callback       the provider sends the browser back with a code: the
                                  state is checked, the code exchanged (with the client
                                  secret and the verifier), the ID token checked, the
                                  person found (or provisioned), a session opened

The protocol pieces are authlib's (the authorization URL and PKCE challenge, the token
request and client authentication, the ID token's claims rules) and joserfc's (JWS
signature against the provider's JWKS); HTTP is aiohttp's, as everywhere in the hub.
The provider's discovery document and keys are cached for an hour; an ID token signed
with a key id not in the cache fetches the keys again once (key rotation).

The ID token must be signed by a key of the provider's JWKS with an asymmetric
algorithm it announces; `iss` must be the configured issuer, `aud` must hold the
client id (and `azp`, if present, be it), `nonce` the one this browser's sign-in made,
`exp` and `iat` right within LEEWAY seconds. Claims come from the ID token, completed
by the userinfo endpoint (same `sub`). Who the person is: the account linked to the
(issuer, subject); else the account whose login the login claim names, linked now; else,
with `accounts.oidc.provision`, a new account with the grants `role_map` gives
(accounts/claims.py). With provisioning on, grants the claims give that an existing
account lacks are added at each sign-in (never removed: an operator revokes).

Nothing secret is logged: not the code, the tokens, the state, the nonce, the verifier
or the session id (the access log drops query strings).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import aiohttp
import asyncpg
from aiohttp import web
from authlib.oauth2.client import OAuth2Client
from authlib.oauth2.rfc6749.parameters import prepare_token_request
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet, KeySetSerialization
from joserfc.jws import JWSRegistry

from accounts import people
from accounts.audit import Actor, record
from accounts.claims import Claimed, ClaimsError, claimed
from accounts.people import AccountError, Person
from accounts.sessions import Method, open_session
from infra.database import Connection
from infra.tls import client_context
from schemas.settings import Oidc, Settings
from web.auth import SIGNIN_PATH, lifetimes, set_session_cookie
from web.operators.html import html_response, link, message_page, redirect
from web.signin import safe_next

log = logging.getLogger(__name__)

START_PATH = f"{SIGNIN_PATH}/oidc"
CALLBACK_PATH = f"{START_PATH}/callback"
COOKIE = "illhub_oidc"
PENDING_SECONDS = 600         # a sign-in must come back from the provider within this
LEEWAY = 60                   # seconds of clock skew allowed on exp / iat
CACHE_SECONDS = 3600          # discovery document and JWKS
# Signatures from the provider's published keys only: no "none", no HS* (a shared
# secret is not in a JWKS, and accepting one would let the client secret sign tokens).
ASYMMETRIC = ("RS", "PS", "ES", "EdDSA", "Ed25519", "Ed448")

Clock = Callable[[], datetime]


class OidcSettingError(ValueError):
    """accounts.oidc is set but cannot work; the message names the setting."""


class ProviderError(Exception):
    """The provider could not be asked, or answered with an error (shown, 502)."""


class IdTokenError(Exception):
    """The ID token failed a check; the message says which (shown, 403)."""


@dataclass(frozen=True)
class Pending:
    """One browser's sign-in in flight, in its signed cookie."""

    state: str
    nonce: str
    verifier: str
    next: str
    expires: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PendingCookie:
    """Pending sign-ins signed with a key derived from the client secret, which every
    hub process has: the provider may send the browser back to any of them."""

    def __init__(self, client_secret: str) -> None:
        self.key = hashlib.sha256(b"illhub oidc pending\0" + client_secret.encode()).digest()

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self.key, body.encode(), hashlib.sha256).digest())

    def dump(self, pending: Pending) -> str:
        body = _b64(json.dumps(asdict(pending), separators=(",", ":")).encode())
        return f"{body}.{self._mac(body)}"

    def load(self, value: str | None, now: float) -> Pending | None:
        """The pending sign-in, or None if missing, forged or expired."""
        body, _, mac = (value or "").partition(".")
        if not body or not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            pending = Pending(**json.loads(_unb64(body)))
        except (ValueError, TypeError):
            return None
        return pending if pending.expires > now else None


def check_id_token(raw: str, keys: KeySet, *, algorithms: list[str], issuer: str,
                   client_id: str, nonce: str, access_token: str | None,
                   now: int | None = None) -> dict[str, Any]:
    """The ID token's claims after every check (signature, iss, aud, azp, nonce, exp,
    iat, at_hash); IdTokenError naming the first that fails."""
    try:
        token = jwt.decode(raw, keys, registry=JWSRegistry(algorithms=algorithms,
                                                           strict_check_header=False))
        rules = CodeIDToken(token.claims, token.header, {
            "iss": {"essential": True, "value": issuer},
            "aud": {"essential": True, "value": client_id},
            "sub": {"essential": True},
            "nonce": {"essential": True, "value": nonce},
        }, {"nonce": nonce, "client_id": client_id, "access_token": access_token})
        rules.validate(now=now, leeway=LEEWAY)
    except InvalidKeyIdError:
        raise
    except JoseError as exc:
        raise IdTokenError(f"{exc.error}: {exc.description}".rstrip(": ")) from None
    except ValueError as exc:  # not a JWT at all
        raise IdTokenError(f"not a signed JWT ({exc})") from None
    return dict(token.claims)


@dataclass
class Provider:
    """The provider as its discovery document describes it, cached."""

    oidc: Oidc
    ssl: ssl.SSLContext | None
    http: aiohttp.ClientSession | None = None
    meta: dict[str, Any] | None = None
    keys: KeySet | None = None
    fetched: float = 0.0
    issuer: str = field(init=False)

    def __post_init__(self) -> None:
        self.issuer = (self.oidc.issuer or "").rstrip("/")

    def _session(self) -> aiohttp.ClientSession:
        if self.http is None or self.http.closed:
            self.http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.oidc.timeout),
                connector=aiohttp.TCPConnector(ssl=self.ssl if self.ssl else True))
        return self.http

    async def close(self) -> None:
        if self.http is not None:
            await self.http.close()

    async def ask(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self._session().request(method, url, **kwargs) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise ProviderError(f"{url}: {type(exc).__name__}: {exc}") from None

    async def metadata(self) -> dict[str, Any]:
        if self.meta is None or time.monotonic() - self.fetched > CACHE_SECONDS:
            url = f"{self.issuer}/.well-known/openid-configuration"
            status, meta = await self.ask("GET", url)
            if status != 200 or not isinstance(meta, dict):
                raise ProviderError(f"{url}: HTTP {status}")
            if str(meta.get("issuer", "")).rstrip("/") != self.issuer:
                raise ProviderError(f"{url} names the issuer {meta.get('issuer')!r}, not "
                                    f"{self.issuer!r} (accounts.oidc.issuer)")
            self.meta, self.keys, self.fetched = meta, None, time.monotonic()
        return self.meta

    async def key_set(self, *, fresh: bool = False) -> KeySet:
        if self.keys is None or fresh:
            url = (await self.metadata()).get("jwks_uri")
            if not url:
                raise ProviderError("the discovery document has no jwks_uri")
            status, jwks = await self.ask("GET", url)
            if status != 200 or not isinstance(jwks, dict):
                raise ProviderError(f"{url}: HTTP {status}")
            try:
                self.keys = KeySet.import_key_set(cast(KeySetSerialization, jwks))
            except (JoseError, ValueError, TypeError) as exc:
                raise ProviderError(f"{url}: no usable keys ({exc})") from None
        return self.keys

    def algorithms(self) -> list[str]:
        offered = (self.meta or {}).get("id_token_signing_alg_values_supported") or ["RS256"]
        return [a for a in offered if isinstance(a, str) and a.startswith(ASYMMETRIC)]

    def auth_method(self) -> str:
        supported = (self.meta or {}).get("token_endpoint_auth_methods_supported") or \
            ["client_secret_basic"]
        for method in ("client_secret_basic", "client_secret_post"):
            if method in supported:
                return method
        raise ProviderError("the provider takes neither client_secret_basic nor "
                            f"client_secret_post at its token endpoint ({supported})")


@dataclass
class SignOn:
    settings: Settings
    pool: asyncpg.Pool
    clock: Clock
    provider: Provider
    cookie: PendingCookie

    @property
    def oidc(self) -> Oidc:
        return self.settings.accounts.oidc

    def client(self, redirect_uri: str) -> Any:
        oidc = self.oidc
        secret = oidc.client_secret.get_secret_value() if oidc.client_secret else None
        return OAuth2Client(None, client_id=oidc.client_id, client_secret=secret,
                            token_endpoint_auth_method=self.provider.auth_method(),
                            scope=oidc.scopes, redirect_uri=redirect_uri,
                            code_challenge_method="S256")


SIGNON = web.AppKey("web.oidc", SignOn)


def redirect_uri(request: web.Request, settings: Settings) -> str:
    """The callback the provider has registered for the hub: the setting, else the
    public base URL's, else this request's own origin."""
    if settings.accounts.oidc.redirect_url:
        return settings.accounts.oidc.redirect_url
    base = settings.http.public_base_url or str(request.url.origin())
    return base.rstrip("/") + CALLBACK_PATH


def _page(status: int, title: str, *paragraphs: str) -> web.Response:
    """A bilingual answer with a way back to the sign-in form."""
    again = link(SIGNIN_PATH, "Sign in again 重新登录", id="signin-again")
    return html_response(message_page(title, *paragraphs, again), status)


async def start(request: web.Request) -> web.StreamResponse:
    s = request.app[SIGNON]
    nxt = safe_next(request.query.get("next"))
    try:
        meta = await s.provider.metadata()
        client = s.client(redirect_uri(request, s.settings))
    except ProviderError as exc:
        log.warning("OIDC sign-in: the identity provider is unreachable: %s", exc)
        return _unreachable()
    pending = Pending(state=secrets.token_urlsafe(32), nonce=secrets.token_urlsafe(32),
                      verifier=secrets.token_urlsafe(48), next=nxt,
                      expires=int(s.clock().timestamp()) + PENDING_SECONDS)
    url, _ = client.create_authorization_url(meta["authorization_endpoint"],
                                             state=pending.state,
                                             code_verifier=pending.verifier,
                                             nonce=pending.nonce)
    response = redirect(url)
    response.set_cookie(COOKIE, s.cookie.dump(pending), path=START_PATH, httponly=True,
                        samesite="Lax", secure=request.secure, max_age=PENDING_SECONDS)
    return response


def _unreachable() -> web.Response:
    return _page(502, "Identity provider unavailable 统一认证不可用",
                 "The consortium's identity provider did not answer; try again in a "
                 "moment, or sign in with your password.",
                 "统一认证服务暂时没有响应，请稍后再试，或使用口令登录。")


async def callback(request: web.Request) -> web.StreamResponse:
    s = request.app[SIGNON]
    pending = s.cookie.load(request.cookies.get(COOKIE), s.clock().timestamp())
    response = await _callback(request, s, pending)
    response.del_cookie(COOKIE, path=START_PATH, secure=request.secure, httponly=True,
                        samesite="Lax")
    return response


async def _callback(request: web.Request, s: SignOn,
                    pending: Pending | None) -> web.StreamResponse:
    q = request.query
    if pending is None or not hmac.compare_digest(q.get("state", ""), pending.state):
        return _page(400, "Sign-in expired 登录已失效",
                     "This sign-in was not started in this browser, or started more than "
                     f"{PENDING_SECONDS // 60} minutes ago. Start it again.",
                     "此次登录不是在本浏览器发起的，或已超时，请重新登录。")
    if "error" in q:
        return _refused_by_provider(q.get("error", ""), q.get("error_description", ""))
    if "iss" in q and q["iss"].rstrip("/") != s.provider.issuer:
        return _page(400, "Wrong identity provider 认证方不符",
                     f"The answer came from {q['iss']!r}, not from the configured provider.",
                     "回应来自未配置的认证服务。")
    if not q.get("code"):
        return _page(400, "Sign-in incomplete 登录未完成",
                     "The identity provider sent no authorization code.",
                     "统一认证没有返回授权码。")
    try:
        claims = await _claims(request, s, pending, q["code"])
        return await _sign_in(request, s, claims, pending.next)
    except ProviderError as exc:
        log.warning("OIDC sign-in: the identity provider failed: %s", exc)
        return _unreachable()
    except IdTokenError as exc:
        log.warning("OIDC sign-in refused: the ID token failed a check: %s", exc)
        return _page(403, "Sign-in refused 登录被拒绝",
                     f"The identity provider's ID token failed a check ({exc}); you are "
                     "not signed in.", "统一认证返回的身份令牌未通过校验，未登录。")


def _refused_by_provider(error: str, description: str) -> web.Response:
    what = {"access_denied": ("You (or the identity provider) declined the sign-in.",
                              "您或统一认证拒绝了此次登录。"),
            "login_required": ("The identity provider asks you to sign in there first.",
                               "请先在统一认证登录。")}
    en, zh = what.get(error, ("The identity provider did not sign you in.",
                              "统一认证未完成登录。"))
    detail = f" ({error}: {description})" if description else f" ({error})"
    return _page(403, "Not signed in 未登录", en + detail[:300], zh)


async def _claims(request: web.Request, s: SignOn, pending: Pending,
                  code: str) -> dict[str, Any]:
    """The checked ID token's claims, completed by userinfo."""
    token = await _exchange(request, s, pending, code)
    raw = token.get("id_token")
    if not isinstance(raw, str):
        raise ProviderError("the token endpoint's answer has no id_token (is 'openid' in "
                            "accounts.oidc.scopes?)")
    access = token.get("access_token") if isinstance(token.get("access_token"), str) else None
    claims = await _checked(s, raw, pending.nonce, access)
    return {**await _userinfo(s, access, claims["sub"]), **claims}


async def _exchange(request: web.Request, s: SignOn, pending: Pending,
                    code: str) -> dict[str, Any]:
    meta = await s.provider.metadata()
    url = meta["token_endpoint"]
    client = s.client(redirect_uri(request, s.settings))
    body = prepare_token_request("authorization_code", code=code,
                                 redirect_uri=client.redirect_uri,
                                 code_verifier=pending.verifier)
    headers = {"Accept": "application/json",
               "Content-Type": "application/x-www-form-urlencoded;charset=UTF-8"}
    url, headers, body = client.client_auth(client.token_endpoint_auth_method).prepare(
        "POST", url, headers, body)
    status, answer = await s.provider.ask("POST", url, data=body, headers=headers)
    if not isinstance(answer, dict) or status != 200:
        err = answer.get("error", "") if isinstance(answer, dict) else ""
        raise ProviderError(f"token endpoint: HTTP {status} {err}".rstrip())
    return answer


async def _checked(s: SignOn, raw: str, nonce: str, access: str | None) -> dict[str, Any]:
    p, oidc = s.provider, s.oidc
    args: dict[str, Any] = {"algorithms": p.algorithms(), "issuer": p.issuer,
                            "client_id": oidc.client_id or "", "nonce": nonce,
                            "access_token": access, "now": int(s.clock().timestamp())}
    try:
        return check_id_token(raw, await p.key_set(), **args)
    except InvalidKeyIdError:
        pass  # a key the cache does not have yet: the provider rotated its keys
    try:
        return check_id_token(raw, await p.key_set(fresh=True), **args)
    except InvalidKeyIdError:
        raise IdTokenError("signed with a key the provider does not publish") from None


async def _userinfo(s: SignOn, access: str | None, sub: str) -> dict[str, Any]:
    url = (s.provider.meta or {}).get("userinfo_endpoint")
    if not url or not access:
        return {}
    status, info = await s.provider.ask("GET", url,
                                          headers={"Authorization": f"Bearer {access}"})
    # Only about the same person (OIDC Core 5.3.4); otherwise the ID token alone.
    if status != 200 or not isinstance(info, dict) or info.get("sub") != sub:
        log.warning("OIDC sign-in: userinfo unusable (HTTP %s); using the ID token's "
                    "claims only", status)
        return {}
    return info


async def _sign_in(request: web.Request, s: SignOn, claims: Mapping[str, Any],
                   nxt: str) -> web.StreamResponse:
    address = request.remote or "unknown"
    try:
        who = claimed(claims, s.oidc)
    except ClaimsError as exc:
        log.warning("OIDC sign-in refused: %s", exc)
        return _page(403, "Sign-in refused 登录被拒绝",
                     f"The identity provider's claims cannot be used: {exc}.",
                     "统一认证提供的身份信息无法使用，请联系管理员。")
    try:
        async with s.pool.acquire() as conn, conn.transaction():
            person = await _person(conn, s, claims, who, address)
            if person is None or not person.enabled:
                # Nothing of this sign-in is kept (no link, no grant) for a refused person.
                raise _Refused(person)
            cookie = await open_session(conn, person.id, method=Method.OIDC, source=address,
                                        now=s.clock(), lifetimes=lifetimes(s.settings))
            await record(conn, Actor(person.id, person.login, address), "person.signin",
                         person.login, after={"method": Method.OIDC.value})
    except AccountError as exc:
        await _failed(s, who.login, None, address, str(exc))
        return _page(403, "Sign-in refused 登录被拒绝", str(exc),
                     "无法为您开通账户，请联系管理员。")
    except _Refused as refused:
        person = refused.person
        await _failed(s, who.login, person, address,
                      "no account" if person is None else "disabled")
        return _refused_person(who, person)
    response = redirect(nxt)
    set_session_cookie(response, request, cookie, s.settings)
    return response


async def _failed(s: SignOn, login: str, person: Person | None, address: str,
                  reason: str) -> None:
    """A refused sign-in in the audit (after the refused transaction rolled back)."""
    by = Actor(person.id if person else None, person.login if person else login, address)
    async with s.pool.acquire() as conn:
        await record(conn, by, "person.signin_failed", by.login,
                     after={"method": Method.OIDC.value, "reason": reason})


class _Refused(Exception):
    def __init__(self, person: Person | None) -> None:
        self.person = person


def _refused_person(who: Claimed, person: Person | None) -> web.Response:
    if person is None:
        return _page(403, "No account 没有账户",
                     f"There is no account for “{who.login}” on this hub. Ask an "
                     "operator to add one (run.py user add).",
                     f"本系统没有“{who.login}”的账户，请联系运营人员开通。")
    return _page(403, "Account disabled 账户已停用",
                 f"The account “{person.login}” is disabled; ask an operator.",
                 "您的账户已停用，请联系运营人员。")


async def _person(conn: Connection, s: SignOn, claims: Mapping[str, Any], who: Claimed,
                  address: str) -> Person | None:
    """The account for these claims: linked, linked now, or provisioned (or None)."""
    issuer, sub = s.provider.issuer, str(claims["sub"])
    by = Actor(None, "oidc", address)
    person = await people.by_subject(conn, issuer, sub)
    if person is None:
        person = await people.find(conn, who.login)
        if person is not None and person.oidc_subject is not None:
            raise AccountError(f"the account “{person.login}” is linked to another "
                               "identity at the provider; ask an operator")
        if person is not None:
            await people.link_oidc(conn, by, person, issuer, sub)
    if person is None and s.oidc.provision:
        person = await people.add(conn, by, login=who.login, display_name=who.display_name,
                                  email=who.email)
        await people.link_oidc(conn, by, person, issuer, sub)
    if person is not None and s.oidc.provision and person.enabled:
        held = (await people.principal(conn, person)).grants
        for grant in sorted(who.grants - held):
            await people.grant(conn, by, person, grant)
    return person


async def _off(_request: web.Request) -> web.StreamResponse:
    return _page(404, "Single sign-on is off 未启用统一认证",
                 "This hub has no identity provider configured (accounts.oidc.issuer); "
                 "sign in with your password.", "本系统未配置统一认证，请使用口令登录。")


def _check(oidc: Oidc) -> ssl.SSLContext | None:
    """The settings a configured provider needs; its CA context when over https."""
    for name in ("client_id", "client_secret"):
        if not getattr(oidc, name):
            raise OidcSettingError(f"accounts.oidc.{name} is needed when accounts.oidc.issuer "
                                   "is set")
    issuer = oidc.issuer or ""
    if not issuer.startswith(("https://", "http://")):
        raise OidcSettingError(f"accounts.oidc.issuer {issuer!r}: an http(s) URL")
    if issuer.startswith("https://"):
        return client_context(oidc.ca_file, "accounts.oidc.ca_file")
    return None


def add_oidc_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool, *,
                    clock: Clock | None = None) -> None:
    """GET /signin/oidc and its callback; both answer 404 while accounts.oidc.issuer is
    unset. OidcSettingError (or infra.tls.TlsSettingError) if it is set but unusable."""
    oidc = settings.accounts.oidc
    if not oidc.issuer:
        app.router.add_get(START_PATH, _off)
        app.router.add_get(CALLBACK_PATH, _off)
        return
    context = _check(oidc)
    secret = oidc.client_secret.get_secret_value() if oidc.client_secret else ""
    provider = Provider(oidc, context)
    app[SIGNON] = SignOn(settings, pool, clock or (lambda: datetime.now(UTC)), provider,
                         PendingCookie(secret))

    async def close(_app: web.Application) -> None:
        await provider.close()

    app.on_cleanup.append(close)
    app.router.add_get(START_PATH, start)
    app.router.add_get(CALLBACK_PATH, callback)

