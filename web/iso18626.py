"""ISO 18626 over HTTP (§5.2 of the standard): `POST /iso18626` on the hub's HTTP port.

An ILL system that cannot publish to RabbitMQ points its ISO 18626 peer address at
this URL and POSTs `ISO18626Message` documents (schema 1.2 or 2021). Each one goes
through the same intake as an AMQP message (checks, inbox, dispatch, one database
transaction); the confirmation is the HTTP response instead of a message on the
agency's queue. A confirmation is a receipt: OK, or ERROR with `errorData`.

Who is calling: HTTP Basic with the agency symbol and its password (the broker and
FTP password), or else the message's own `requestingAgencyAuthentication`
(`accountId` = the symbol, or empty for the header's requestingAgencyId;
`securityCode` = the password). The hub removes that element before it stores or
forwards anything. Unauthenticated calls get 401 and do nothing. Wrong passwords count
against the agency and the client address (infra/throttle.py, shared with people's
sign-in and the FTP drop: `accounts.agency_failures`, `accounts.address_failures`);
while either is locked every call gets 429 with Retry-After, the right password too,
and a success clears the agency's counter.

Idempotency: the inbox key of an HTTP message is the SHA-256 of the document's
bytes, so a peer that re-POSTs the same document (after a timeout, say) gets the same
confirmation again and causes nothing twice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp import web
from pydantic import BaseModel

from broker import peers, profiles
from broker.intake import Inbound, Intake
from infra import observability, throttle
from infra.credentials import verify_password
from infra.throttle import KeyKind
from schemas.iso18626 import (
    CONFIRMATION_OF,
    RequestingAgencyMessageConfirmation,
    confirmation,
    dump_message,
)
from schemas.iso18626_codes import Action, ErrorType, MessageType, ReasonForMessage
from schemas.iso18626_xml import XmlMessage, XmlMessageError, read_xml, to_xml
from schemas.settings import Settings
from web.signin import retry_after

log = logging.getLogger(__name__)

PATH = "/iso18626"
CONTENT_TYPE = "application/xml"
REALM = 'Basic realm="ILL Hub ISO 18626", charset="UTF-8"'
_CACHE_LIMIT = 1024


STORED_HASH = "SELECT password_hash FROM agency WHERE symbol = $1 AND enabled"


class Throttled(Exception):
    """The agency or the address is locked after too many wrong passwords."""

    def __init__(self, retry_after: str) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after


class Credentials:
    """Agency passwords checked against their scrypt hashes, with a small cache, and
    the failed-login throttle (module docstring).

    scrypt costs tens of milliseconds of CPU by design; a peer that POSTs every few
    seconds should not pay it each time. A cached check stays valid only while the
    agency is enabled and its stored hash is unchanged.
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings | None = None) -> None:
        self.pool = pool
        self.settings = settings     # its `accounts` limits; None: `check` only
        self._verified: dict[tuple[str, bytes], str] = {}

    async def check(self, symbol: str, password: str) -> bool:
        """Without the throttle: for the conformance kit's short-lived listener."""
        stored = await self.pool.fetchval(STORED_HASH, symbol)
        return stored is not None and await self._matches(symbol, password, stored)

    async def login(self, symbol: str, password: str, address: str) -> bool:
        """`check` counted by the throttle; raises Throttled while the agency or the
        address is locked."""
        if self.settings is None:
            raise RuntimeError("Credentials.login needs the settings (accounts limits)")
        now = datetime.now(UTC)
        agency_key = throttle.key(KeyKind.AGENCY, symbol)
        address_key = throttle.key(KeyKind.ADDRESS, address)
        async with self.pool.acquire() as conn:
            until = await throttle.first_lock(conn, (agency_key, address_key), now)
            if until is not None:
                raise Throttled(retry_after(until, now))
            stored = await conn.fetchval(STORED_HASH, symbol)
            ok = stored is not None and await self._matches(symbol, password, stored)
            if ok:
                await throttle.succeed(conn, agency_key)
                return True
            await throttle.fail(conn, address_key, now,
                                throttle.limits(self.settings, KeyKind.ADDRESS))
            if stored is not None:  # no counters for symbols that are no agency
                await throttle.fail(conn, agency_key, now,
                                    throttle.limits(self.settings, KeyKind.AGENCY))
            return False

    async def _matches(self, symbol: str, password: str, stored: str) -> bool:
        key = (symbol, hashlib.sha256(password.encode()).digest())
        if self._verified.get(key) == stored:
            return True
        if not await asyncio.to_thread(verify_password, password, stored):
            return False
        if len(self._verified) >= _CACHE_LIMIT:
            self._verified.clear()
        self._verified[key] = stored
        return True


class Iso18626Endpoint:
    def __init__(self, settings: Settings, pool: asyncpg.Pool, intake: Intake) -> None:
        self.settings = settings
        self.pool = pool
        self.intake = intake
        self.credentials = Credentials(pool, settings)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(PATH, self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        try:
            return await self._handle(request)
        except Throttled as exc:
            return web.Response(
                status=429, headers={"Retry-After": exc.retry_after},
                text="429: too many failed logins for this agency or from this address; "
                     f"try again in {exc.retry_after} seconds\n")

    async def _handle(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        limit = self.settings.intake.max_message_bytes
        raw = await request.content.read(limit + 1)
        if len(raw) > limit:
            return web.Response(status=413, text=f"document larger than {limit} bytes\n")
        caller, why = await self._basic_caller(request)
        if why:
            return _unauthorised(why)
        try:
            message = read_xml(raw)
        except XmlMessageError as exc:
            if caller is None:
                caller, why = await self._body_caller(exc.header, _address(request))
                if caller is None:
                    return _unauthorised(why)
            log.info("refused ISO 18626 XML from %s: %s: %s", caller, exc.error_type,
                     exc.error_value)
            observability.MESSAGES_IN.labels(str(exc.kind or "unknown"), "error").inc()
            kind = exc.kind if exc.kind in CONFIRMATION_OF else MessageType.REQUEST
            refusal = confirmation(kind, exc.header, ok=False, error_type=exc.error_type,
                                   error_value=exc.error_value)
            return _xml(refusal, exc.version)
        inner = message.content
        raw_header = inner.get("header")
        header: dict[str, Any] = raw_header if isinstance(raw_header, dict) else {}
        secret = header.pop("requestingAgencyAuthentication", None)
        if caller is None:
            caller, why = await self._body_caller(
                {**header, "requestingAgencyAuthentication": secret}, _address(request))
            if caller is None:
                return _unauthorised(why)
        if message.kind is MessageType.REQUEST and _names_hub(header, self.settings):
            # "Send it to the hub" means "the hub chooses the supplier".
            header.pop("supplyingAgencyId")
        inbound = await self._normalised(request, raw, caller, message)
        outcome = await self._process(inbound)
        observability.MESSAGES_IN.labels(str(message.kind), outcome).inc()
        observability.INTAKE_SECONDS.observe(time.perf_counter() - started)
        if message.kind not in CONFIRMATION_OF:
            return web.Response(status=204)  # a confirmation is a receipt: nothing answers it
        answer = inbound.answer
        if answer is None:  # "duplicate": the first POST of this document was answered
            answer = await self._earlier_answer(inbound, message.kind)
        return _xml(_echo_as_sent(answer, message.content), message.version)

    async def _normalised(self, request: web.Request, raw: bytes, caller: str,
                          message: XmlMessage) -> Inbound:
        """The message as the hub's model has it (the caller's profile applied), with the
        document as received kept beside it (broker/profiles/)."""
        profile = await profiles.profile_of(self.pool, caller)
        adjusted = profiles.inbound(profile, message.body)
        if adjusted.changed:
            log.info("ISO 18626 from %s, profile %s: %s", caller, profile,
                     "; ".join(f"{a.adjustment}: {a.detail}" for a in adjusted.applied))
        message_id = f"iso18626-http:{hashlib.sha256(raw).hexdigest()}"
        await profiles.keep_original(
            self.pool, sender=caller, message_id=message_id, transport=peers.TRANSPORT,
            profile=profile, content_type=request.headers.get("Content-Type", CONTENT_TYPE),
            original=profiles.redacted(raw), body=adjusted.body, adjusted=adjusted)
        return Inbound(
            body=json.dumps(adjusted.body, ensure_ascii=False).encode(),
            sender=caller, message_id=message_id,
            routing_key=str(message.kind), content_type="application/json",
            message_type=str(message.kind),
            correlation_id=profiles.request_id_of(message.body),
            headers={"iso18626-version": message.version, "iso18626-profile": profile},
            synchronous=True)

    async def _process(self, inbound: Inbound) -> str:
        # HTTP callers run beside the AMQP consumer's batches; two transactions taking
        # the same rows in opposite order is a deadlock PostgreSQL breaks by aborting
        # one. Nothing of the aborted attempt committed, so it is simply run again.
        for attempt in range(3):
            inbound.answer = None
            try:
                return await self.intake.process(self.pool, inbound)
            except (asyncpg.exceptions.DeadlockDetectedError,
                    asyncpg.exceptions.SerializationError):
                if attempt == 2:
                    raise
                log.info("ISO 18626 HTTP message from %s hit a deadlock; running it again",
                         inbound.sender)
        raise AssertionError("unreachable")

    async def _basic_caller(self, request: web.Request) -> tuple[str | None, str | None]:
        auth = request.headers.get("Authorization")
        if not auth:
            return None, None
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "basic":
            return None, f"Authorization scheme {scheme!r} is not supported; use Basic"
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None, "Authorization Basic credentials are not base64 of user:password"
        # The user is the symbol SCHEME:VALUE, itself with a colon (neither part may
        # contain one); the password is everything after the second colon.
        parts = decoded.split(":", 2)
        if len(parts) != 3 or not await self.credentials.login(
                f"{parts[0]}:{parts[1]}", parts[2], _address(request)):
            return None, "HTTP Basic credentials do not match an enabled agency"
        return f"{parts[0]}:{parts[1]}", None

    async def _body_caller(self, header: Any,
                           address: str) -> tuple[str | None, str | None]:
        header = header if isinstance(header, dict) else {}
        secret = header.get("requestingAgencyAuthentication")
        if not isinstance(secret, dict) or not secret.get("securityCode"):
            return None, ("no credentials: send HTTP Basic (agency symbol and password) or "
                          "header.requestingAgencyAuthentication (accountId, securityCode)")
        symbol = (secret.get("accountId") or "").strip()
        named = header.get("requestingAgencyId")
        if isinstance(named, dict) and named.get("agencyIdType") and \
                named.get("agencyIdValue") and (not symbol or symbol == named["agencyIdValue"]):
            symbol = f"{named['agencyIdType']}:{named['agencyIdValue']}"
        if not symbol or not await self.credentials.login(symbol, secret["securityCode"],
                                                          address):
            return None, ("header.requestingAgencyAuthentication does not match an enabled "
                          "agency")
        return symbol, None

    async def _earlier_answer(self, inbound: Inbound,
                              kind: MessageType) -> tuple[MessageType, BaseModel]:
        row = await self.pool.fetchrow(
            "SELECT outcome, body, error_type, error_value FROM inbox "
            "WHERE sender = $1 AND message_id = $2", inbound.sender, inbound.message_id)
        body = json.loads(row["body"]) if row and row["body"] else {}
        inner = body.get(str(kind), {}) if isinstance(body, dict) else {}
        header = inner.get("header") if isinstance(inner, dict) else None
        echo: dict[str, Any] = {}
        reason = (inner.get("messageInfo") or {}).get("reasonForMessage")
        if kind is MessageType.SUPPLYING_AGENCY_MESSAGE and reason in set(ReasonForMessage):
            echo["reason_for_message"] = ReasonForMessage(reason)
        if kind is MessageType.REQUESTING_AGENCY_MESSAGE and inner.get("action") in set(Action):
            echo["action"] = Action(inner["action"])
        if row is None or row["outcome"] == "ok":
            return confirmation(kind, header, ok=True, **echo)
        return confirmation(kind, header, ok=False,
                            error_type=row["error_type"] or ErrorType.BADLY_FORMED_MESSAGE,
                            error_value=row["error_value"], **echo)


def _address(request: web.Request) -> str:
    return request.remote or "unknown"


def _names_hub(header: dict[str, Any], settings: Settings) -> bool:
    named = header.get("supplyingAgencyId")
    return isinstance(named, dict) and \
        f"{named.get('agencyIdType')}:{named.get('agencyIdValue')}" == settings.hub_symbol


def _echo_as_sent(answer: tuple[MessageType, BaseModel],
                  sent: dict[str, Any]) -> tuple[MessageType, BaseModel]:
    """The confirmation echoes the action the peer sent, also when its profile turned it
    into another (an Alma REJECT note is a Cancel to the hub)."""
    kind, model = answer
    action = sent.get("action")
    if isinstance(model, RequestingAgencyMessageConfirmation) and model.action is not None \
            and action in set(Action) and model.action != action:
        return kind, model.model_copy(update={"action": Action(action)})
    return answer


def _xml(answer: tuple[MessageType, BaseModel], version: str) -> web.Response:
    out = to_xml(dump_message(*answer), version)
    return web.Response(body=out.data, content_type=CONTENT_TYPE, charset="utf-8")


def _unauthorised(why: str | None) -> web.Response:
    return web.Response(status=401, text=f"{why}\n", headers={"WWW-Authenticate": REALM})
