"""ISO 18626 XML over HTTP for the peer mock and the conformance check (app/conformance/):
a small server for `POST /iso18626`, a client that POSTs one document and keeps the
answer whatever it is, and confirmations that echo what they confirm.

Both ends of a conversation with an ISO 18626 peer use these, so the mock and the
check speak exactly as the hub does (web/iso18626.py, broker/peers.py): HTTP Basic
with an agency symbol (itself with a colon) and its password, `application/xml`, the
confirmation as the HTTP response.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from schemas.iso18626 import CONFIRMATION_OF, confirmation, dump_message
from schemas.iso18626_codes import Action, ErrorType, MessageType, ReasonForMessage

PATH = "/iso18626"
XML = "application/xml"


@dataclass
class Posted:
    """What came back from a POST: an HTTP answer, or why there was none."""

    status: int | None        # None: no HTTP answer at all
    body: bytes = b""
    content_type: str = ""
    problem: str | None = None

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def basic_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """(symbol, password) of an `Authorization: Basic` header; None if there is none or
    it is not Basic with SCHEME:VALUE:password."""
    auth = headers.get("Authorization") or ""
    scheme, _, value = auth.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    parts = decoded.split(":", 2)
    if len(parts) != 3:
        return None
    return f"{parts[0]}:{parts[1]}", parts[2]


async def post_xml(session: aiohttp.ClientSession, url: str, data: bytes, *,
                   auth: tuple[str, str] | None = None,
                   message_id: str | None = None) -> Posted:
    """POST one document; every outcome (refused connection, timeout, HTTP 500) is a Posted."""
    headers = {"Content-Type": f"{XML}; charset=utf-8"}
    if auth is not None:
        headers["Authorization"] = basic_header(*auth)
    if message_id:
        headers["X-ILLHub-Message-Id"] = message_id
    try:
        async with session.post(url, data=data, headers=headers) as response:
            body = await response.read()
            return Posted(response.status, body, response.headers.get("Content-Type", ""))
    except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
        return Posted(None, problem=f"{type(exc).__name__}: {exc}")


def echoes(kind: MessageType, content: Mapping[str, Any]) -> dict[str, Any]:
    """What a confirmation of `content` echoes besides the header: reasonForMessage of a
    supplyingAgencyMessage, action of a requestingAgencyMessage (when they are valid)."""
    if kind is MessageType.SUPPLYING_AGENCY_MESSAGE:
        reason = (content.get("messageInfo") or {}).get("reasonForMessage")
        if reason in set(ReasonForMessage):
            return {"reason_for_message": ReasonForMessage(reason)}
    if kind is MessageType.REQUESTING_AGENCY_MESSAGE and content.get("action") in set(Action):
        return {"action": Action(content["action"])}
    return {}


def confirm(kind: MessageType, content: Mapping[str, Any] | None, *, ok: bool = True,
            error_type: ErrorType | None = None,
            error_value: str | None = None) -> dict[str, Any]:
    """The confirmation body `{confirmationKind: {...}}` answering a message of `kind`."""
    content = content or {}
    header = content.get("header") if isinstance(content.get("header"), Mapping) else content
    answer = confirmation(kind, header, ok=ok,
                          error_type=None if ok else (error_type or
                                                      ErrorType.BADLY_FORMED_MESSAGE),
                          error_value=None if ok else error_value, **echoes(kind, content))
    return dump_message(*answer)


def answerable(kind: MessageType | None) -> MessageType:
    """The kind whose confirmation answers a document of `kind` (a request when unknown)."""
    return kind if kind is not None and kind in CONFIRMATION_OF else MessageType.REQUEST


Handler = Callable[[bytes, Mapping[str, str]], Awaitable[web.Response]]


class XmlEndpoint:
    """An HTTP server whose `POST /iso18626` is `handler(raw document, request headers)`."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}{PATH}"

    async def start(self) -> XmlEndpoint:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post(PATH, self._handle)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        if self.port == 0:
            self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        return await self.handler(raw, request.headers)


def xml_response(data: bytes, status: int = 200) -> web.Response:
    return web.Response(body=data, status=status, content_type=XML, charset="utf-8")
