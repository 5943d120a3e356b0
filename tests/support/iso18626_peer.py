"""An ILL system that speaks ISO 18626 XML over HTTP: `XmlPeer`, a real aiohttp server
the hub POSTs to (it answers each message with its confirmation, or an ERROR for the
requests it is told to refuse; over HTTPS when given a server context, `https_peer`),
and `HubClient`, a real HTTP client that POSTs to the hub's /iso18626 and checks the
confirmation."""

from __future__ import annotations

import asyncio
import base64
import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from schemas.iso18626 import CONFIRMATION_OF, confirmation, dump_message
from schemas.iso18626_codes import Action, ErrorType, MessageType, ReasonForMessage
from schemas.iso18626_xml import XmlMessage, read_xml, to_xml
from tests.support.servers import free_port
from tests.support.tls import ServerPem


@dataclass
class Got:
    message: XmlMessage
    message_id: str | None
    raw: bytes

    @property
    def kind(self) -> str:
        return str(self.message.kind)

    @property
    def content(self) -> dict[str, Any]:
        return self.message.content


class XmlPeer:
    """What the hub POSTs lands in `inbox`; each is answered with its confirmation."""

    def __init__(self, version: str = "1.2", port: int | None = None,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.version = version
        self.port = port or free_port()
        self.ssl_context = ssl_context
        self.inbox: asyncio.Queue[Got] = asyncio.Queue()
        self.received: list[Got] = []
        # requestingAgencyRequestIds whose messages it answers with ERROR.
        self.refuse: set[str] = set()
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://127.0.0.1:{self.port}/iso18626"

    async def start(self) -> XmlPeer:
        app = web.Application()
        app.router.add_post("/iso18626", self._handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port,
                          ssl_context=self.ssl_context).start()
        return self

    async def stop(self) -> None:
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        message = read_xml(raw)  # a bad document from the hub fails the test loudly
        got = Got(message, request.headers.get("X-ILLHub-Message-Id"), raw)
        self.received.append(got)
        await self.inbox.put(got)
        header = message.content["header"]
        echo: dict[str, Any] = {}
        if message.kind is MessageType.SUPPLYING_AGENCY_MESSAGE:
            echo["reason_for_message"] = ReasonForMessage(
                message.content["messageInfo"]["reasonForMessage"])
        if message.kind is MessageType.REQUESTING_AGENCY_MESSAGE:
            echo["action"] = Action(message.content["action"])
        if header.get("requestingAgencyRequestId") in self.refuse:
            answer = confirmation(message.kind, header, ok=False,
                                  error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                                  error_value="bibliographicInfo: 不认识这本书", **echo)
        else:
            answer = confirmation(message.kind, header, ok=True, **echo)
        return web.Response(body=to_xml(dump_message(*answer), self.version).data,
                            content_type="application/xml", charset="utf-8")

    async def next(self, kind: str, timeout: float = 10.0) -> Got:
        got = await asyncio.wait_for(self.inbox.get(), timeout)
        assert got.kind == kind, f"expected {kind}, got {got.kind}: {got.content}"
        return got

    async def status(self, status: str, timeout: float = 10.0) -> Got:
        got = await self.next("supplyingAgencyMessage", timeout)
        assert got.content["statusInfo"]["status"] == status, got.content
        return got


def https_peer(pem: ServerPem, version: str = "1.2") -> XmlPeer:
    """An XmlPeer served over HTTPS with the certificate of `pem` (127.0.0.1, localhost)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pem.cert, pem.key)
    return XmlPeer(version, ssl_context=context)


def basic(symbol: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{symbol}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


class HubClient:
    """An ILL system's side of POST /iso18626: send a document, read the confirmation."""

    def __init__(self, base_url: str, symbol: str, password: str, version: str = "1.2") -> None:
        self.url = f"{base_url}/iso18626"
        self.symbol = symbol
        self.password = password
        self.version = version

    async def post_raw(self, raw: bytes, *, auth: bool = True) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/xml; charset=utf-8"}
        if auth:
            headers.update(basic(self.symbol, self.password))
        async with aiohttp.ClientSession() as session, \
                session.post(self.url, data=raw, headers=headers) as response:
            return response.status, await response.read()

    async def send(self, body: dict[str, Any], *, ok: bool = True) -> XmlMessage:
        status, answer = await self.post_raw(to_xml(body, self.version).data)
        assert status == 200, answer
        got = read_xml(answer)
        kind = MessageType(next(iter(body)))
        assert got.kind is CONFIRMATION_OF[kind], got.body
        assert got.content["confirmationHeader"]["messageStatus"] == ("OK" if ok else "ERROR"), \
            got.body
        return got
