"""The machinery of a conformance check: its own ISO 18626 endpoint for what the peer
sends (`Listener`), POSTs to the peer's endpoint with their answers judged, and the
steps with what was sent, what was received and the verdicts (`StepResult`).

The check stands where the hub stands: it POSTs to the URL the peer is registered
with, as the hub would (`X-ILLHub-Message-Id`, the peer's ISO 18626 version), and the
peer POSTs its own messages to the check's `Listener` (its address for the hub,
pointed there for the check). The listener answers as the hub does: OK for a valid
document, ERROR with the XSD's complaint for an invalid one.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import aiohttp
from aiohttp import web

from app.conformance.judge import Document, judge_confirmation, read_document, symbol
from app.conformance.rules import AUTH, HTTP, Verdict, fail
from schemas.iso18626 import CONFIRMATION_OF
from schemas.iso18626_codes import MessageType
from schemas.iso18626_xml import to_xml
from sim.peer_transport import (
    Posted,
    answerable,
    basic_credentials,
    confirm,
    post_xml,
    xml_response,
)

Authenticate = Callable[[str, str], Awaitable[bool]]
Say = Callable[[str], None]


class Unreachable(Exception):
    """The peer's endpoint did not answer at all: the check cannot go on with this flow."""


class Stalled(Exception):
    """The peer did not send what the step waits for: the flow cannot go on."""


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    NOT_RUN = "NOT RUN"


@dataclass
class Exchange:
    direction: str             # "sent" | "received"
    summary: str
    document: str | None = None


@dataclass
class StepResult:
    role: str                  # the peer's role: supplier | requester
    flow: str
    name: str
    exchanges: list[Exchange] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    not_run: str | None = None

    @property
    def outcome(self) -> Outcome:
        if any(v.level == "FAIL" for v in self.verdicts):
            return Outcome.FAIL
        if self.not_run is not None:
            return Outcome.NOT_RUN
        return Outcome.PASS

    @property
    def title(self) -> str:
        return f"{self.role} · {self.flow} · {self.name}"


@dataclass
class Got:
    """A document the peer POSTed to the check."""

    document: Document
    verdicts: list[Verdict]            # the document's, and its credentials'
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def kind(self) -> MessageType | None:
        return self.document.kind

    @property
    def content(self) -> dict[str, Any]:
        return self.document.content

    @property
    def header(self) -> dict[str, Any]:
        header = self.content.get("header")
        return header if isinstance(header, dict) else self.document.header

    @property
    def request_id(self) -> str | None:
        value = self.header.get("requestingAgencyRequestId")
        return str(value) if value is not None else None


class Listener:
    """The check's `POST /iso18626`: keeps what the peer sends for the steps to take."""

    def __init__(self, peer: str, version: str, authenticate: Authenticate | None) -> None:
        self.peer = peer
        self.version = version
        self.authenticate = authenticate
        self._got: list[Got] = []
        self._arrived = asyncio.Condition()

    async def handle(self, raw: bytes, headers: Mapping[str, str]) -> web.Response:
        document = read_document(raw, self.version)
        verdicts = [*document.verdicts, *await self._credentials(headers, document)]
        got = Got(document, verdicts)
        async with self._arrived:
            self._got.append(got)
            self._arrived.notify_all()
        message = document.message
        if message is None:
            error = document.error
            body = confirm(answerable(error.kind if error else None), document.header,
                           ok=False, error_type=error.error_type if error else None,
                           error_value=error.error_value if error else None)
            return xml_response(to_xml(body, self.version).data)
        if message.kind not in CONFIRMATION_OF:
            return web.Response(status=204)
        return xml_response(to_xml(confirm(message.kind, message.content),
                                   self.version).data)

    async def _credentials(self, headers: Mapping[str, str],
                           document: Document) -> list[Verdict]:
        if self.authenticate is None:
            return []
        given = basic_credentials(headers)
        where = "HTTP Authorization"
        if given is None:
            header = document.content.get("header") or {}
            secret = header.get("requestingAgencyAuthentication")
            if isinstance(secret, dict) and secret.get("securityCode"):
                where = "header.requestingAgencyAuthentication"
                named = symbol(header.get("requestingAgencyId"))
                given = (str(secret.get("accountId") or named or ""),
                         str(secret["securityCode"]))
        if given is None:
            return [fail(where, "no credentials: neither HTTP Basic nor "
                                "header.requestingAgencyAuthentication", AUTH)]
        user, password = given
        if user != self.peer:
            return [fail(where, f"user {user!r} is not {self.peer!r}", AUTH)]
        if not await self.authenticate(user, password):
            return [fail(where, f"the password is not {self.peer}'s", AUTH)]
        return []

    async def take(self, wanted: Callable[[Got], bool], timeout: float) -> Got | None:
        """The first document (oldest first) that `wanted` accepts, within `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self._arrived:
            while True:
                for n, got in enumerate(self._got):
                    if wanted(got):
                        return self._got.pop(n)
                left = deadline - asyncio.get_running_loop().time()
                if left <= 0:
                    return None
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except TimeoutError:
                    pass


@dataclass
class Options:
    partner: str                   # the symbol the check plays (requester or supplier)
    hub_symbol: str
    wait: float = 30.0             # how long a step waits for the peer's message
    grace: float = 0.3             # how long a flow's end waits for stragglers
    token: str = "CHK"
    only: frozenset[str] | None = None


@dataclass
class Target:
    symbol: str
    url: str
    version: str = "1.2"


class Check:
    """One run: its steps, in order, each printed (`say`) when it is done."""

    def __init__(self, target: Target, options: Options, listener: Listener,
                 session: aiohttp.ClientSession, say: Say,
                 printer: Callable[[StepResult], list[str]]) -> None:
        self.target = target
        self.options = options
        self.listener = listener
        self.session = session
        self.say = say
        self.printer = printer      # a finished step as lines (report.step_lines)
        self.steps: list[StepResult] = []
        self._numbers = itertools.count(1)
        self._open: StepResult | None = None

    def step(self, role: str, flow: str, name: str) -> StepResult:
        self.finish()
        self._open = StepResult(role, flow, name)
        self.steps.append(self._open)
        return self._open

    def finish(self) -> None:
        if self._open is not None:
            for line in self.printer(self._open):
                self.say(line)
            self._open = None

    async def post(self, step: StepResult, body: dict[str, Any], summary: str, *,
                   judge: bool = True) -> Document | None:
        """Send `body` to the peer; the answer judged (unless `judge` is False) into `step`.
        Unreachable when the peer gave no HTTP answer at all; Stalled when it refused the
        message (ERROR): nothing the flow would wait for will come."""
        kind = MessageType(next(iter(body)))
        sent_at = datetime.now(UTC).replace(microsecond=0)
        data = to_xml(body, self.target.version).data
        step.exchanges.append(Exchange("sent", summary, data.decode("utf-8")))
        posted = await post_xml(self.session, self.target.url, data,
                                message_id=f"{self.options.token}-{next(self._numbers)}")
        if posted.status is None:
            step.exchanges.append(Exchange("received", f"no answer: {posted.problem}"))
            raise Unreachable(f"{self.target.url}: {posted.problem}")
        if posted.status != 200:
            step.exchanges.append(Exchange("received", f"HTTP {posted.status}", posted.text))
            if judge:
                step.verdicts.append(fail("HTTP status", f"{posted.status} answers the {kind}; "
                                                         f"expected 200 with a "
                                                         f"{CONFIRMATION_OF[kind]}", HTTP))
            return None
        document = read_document(posted.body, self.target.version)
        step.exchanges.append(Exchange("received", answer_summary(document, posted),
                                       posted.text))
        if judge:
            step.verdicts += document.verdicts
            step.verdicts += judge_confirmation(kind, body[str(kind)], document, sent_at)
            status = (document.content.get("confirmationHeader") or {}).get("messageStatus")
            if status == "ERROR":
                raise Stalled(f"{self.target.symbol} refused the {kind}")
        return document

    async def receive(self, step: StepResult, wanted: Callable[[Got], bool],
                      timeout: float | None = None) -> Got | None:
        """The peer's next document that `wanted` accepts, recorded in `step`."""
        got = await self.listener.take(wanted, self.options.wait if timeout is None
                                       else timeout)
        if got is not None:
            step.exchanges.append(Exchange("received", message_summary(got.document),
                                           got.document.raw.decode("utf-8", "replace")))
            step.verdicts += got.verdicts
        return got


def answer_summary(document: Document, posted: Posted) -> str:
    if document.message is None:
        return f"HTTP {posted.status}, not a valid ISO 18626 document"
    content = document.content
    status = (content.get("confirmationHeader") or {}).get("messageStatus", "no messageStatus")
    error = content.get("errorData")
    detail = f" {error.get('errorType')}: {error.get('errorValue')}" \
        if isinstance(error, dict) else ""
    return f"{document.kind} {status}{detail} (HTTP {posted.status})"


def message_summary(document: Document) -> str:
    """One line for a message: its kind and what it says."""
    if document.message is None:
        return "a document that is not valid ISO 18626"
    content = document.content
    request_id = (content.get("header") or {}).get("requestingAgencyRequestId")
    if document.kind is MessageType.SUPPLYING_AGENCY_MESSAGE:
        info = content.get("messageInfo") or {}
        status = (content.get("statusInfo") or {}).get("status")
        return f"supplyingAgencyMessage {status} ({info.get('reasonForMessage')}) on {request_id}"
    if document.kind is MessageType.REQUESTING_AGENCY_MESSAGE:
        return f"requestingAgencyMessage {content.get('action')} on {request_id}"
    if document.kind is MessageType.REQUEST:
        service = content.get("serviceInfo") or {}
        return (f"request {request_id} ({service.get('requestType', 'New')}, "
                f"{service.get('serviceType')})")
    return str(document.kind)
