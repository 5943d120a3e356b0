"""A scriptable ISO 18626 peer: the other side, so a library can test its system against
the hub alone (`run.py peer mock`), and the hub's conformance check (`run.py peer check`)
can be tested against something that behaves.

Like Index Data's CrossLink `illmock`, it plays whichever role a message asks for:

- **supplier**: a `request` is confirmed and then answered as its scenario keywords say
  (sim/peer_scenarios.py): WillSupply, Loaned, CopyCompleted, Unfilled, RetryPossible ...;
  the requester's Cancel, Renew, ShippedReturn and StatusRequest are answered too.
- **requester**: a `request` with `requestSubType` PatronRequest (illmock's convention) or
  `send_request` (`run.py peer mock --send`) makes it send a request of its own; it then
  answers the supplier's statuses: Received and ShippedReturn for a loan, a Retry for a
  RetryPossible, and Cancel, Notification, StatusRequest, Renew when its keywords say so.

It speaks ISO 18626 XML over HTTP (`XmlEndpoint` in sim/peer_transport.py: the hub POSTs
to it, it POSTs to `hub_url` with HTTP Basic) and JSON over AMQP as an agency user
(`AmqpLink`); an answer goes back the way its request came. Messages about one request
go out one at a time, in order, `delay` seconds apart (a `Lane` each).

`faults` make it deliberately wrong (`Fault` in sim/peer_scenarios.py).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import aiohttp
from aiohttp import web

from illclient.client import AgencyClient
from schemas.iso18626 import CONFIRMATION_OF
from schemas.iso18626_codes import Action, ErrorType, MessageType, ReasonForMessage, Status
from schemas.iso18626_xml import XmlMessageError, read_xml, to_xml
from schemas.settings import Settings
from sim.messages import agency_id, later_iso, now_iso, requesting_message, symbol_of
from sim.peer_scenarios import Fault, Scenario, after_retry, scenario_of
from sim.peer_transport import XmlEndpoint, answerable, confirm, post_xml, xml_response

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
Job = Callable[[], Awaitable[None]]
DELIVERED = frozenset({Status.LOANED, Status.COPY_COMPLETED, Status.OVERDUE, Status.RECALLED,
                       Status.LOAN_COMPLETED, Status.COMPLETED_WITHOUT_RETURN})
STALE = "2001-01-01T00:00:00Z"


@dataclass
class MockConfig:
    symbol: str                          # SCHEME:VALUE, as registered at the hub
    password: str | None = None          # HTTP Basic towards hub_url (and the AMQP login)
    version: str = "1.2"                 # the ISO 18626 version it writes
    hub_url: str | None = None           # where its HTTP messages go (the hub's /iso18626)
    delay: float = 0.1                   # seconds before each message it sends
    faults: frozenset[Fault] = frozenset()
    default_scenario: str = "UNFILLED"   # for a request without keywords (as illmock)


@dataclass
class Reply:
    """How an incoming message is answered: its confirmation, or a bare HTTP status."""

    ok: bool = True
    error_type: ErrorType | None = None
    error_value: str | None = None
    http_status: int | None = None


class Lane:
    """Messages about one request, sent one after the other, `delay` seconds apart."""

    def __init__(self, tasks: set[asyncio.Task[None]], name: str) -> None:
        self._tasks = tasks
        self._name = name
        self._queue: asyncio.Queue[tuple[float, Job]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None

    def put(self, delay: float, job: Job) -> None:
        self._queue.put_nowait((delay, job))
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name=self._name)
            self._tasks.add(self._worker)
            self._worker.add_done_callback(self._tasks.discard)

    async def _run(self) -> None:
        while True:
            delay, job = await self._queue.get()
            await asyncio.sleep(delay)
            try:
                await job()
            except Exception:  # one failed message must not silence the rest
                log.exception("peer mock: %s failed", self._name)


@dataclass
class Supply:
    """A request the mock supplies."""

    requester: dict[str, Any]
    supplier: dict[str, Any]
    request_id: str
    service_type: str | None
    scenario: Scenario
    via: Send
    lane: Lane
    max_cost: dict[str, Any] | None = None
    supplier_request_id: str = field(default_factory=lambda: f"MOCK-{uuid.uuid4().hex[:8]}")
    status: Status | None = None
    previous: Status | None = None
    answered: bool = False
    cancelled: bool = False


@dataclass
class Borrow:
    """A request the mock made as requester."""

    request_id: str
    body: dict[str, Any]
    scenario: Scenario
    via: Send
    lane: Lane
    supplier: str | None = None
    status: str | None = None
    seen: bool = False
    returning: bool = False
    retried: bool = False


class PeerMock:
    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.history: list[str] = []     # one line per message in or out, for people and tests
        self._tasks: set[asyncio.Task[None]] = set()
        self._supplies: dict[tuple[str, str], Supply] = {}
        self._borrows: dict[str, Borrow] = {}
        self._numbers = itertools.count(1)
        self._prefix = f"MOCK-{uuid.uuid4().hex[:6]}"
        self._session: aiohttp.ClientSession | None = None
        self._endpoint: XmlEndpoint | None = None
        self.amqp: AmqpLink | None = None

    # ---- running -----------------------------------------------------------------------

    async def start_http(self, host: str = "127.0.0.1", port: int = 0) -> XmlEndpoint:
        self._endpoint = await XmlEndpoint(self.handle_xml, host, port).start()
        self.say(f"listening at {self._endpoint.url} (ISO 18626 {self.config.version}); "
                 f"answers go to {self.config.hub_url or '(no --hub-url: nowhere)'}")
        return self._endpoint

    async def start_amqp(self, settings: Settings, password: str) -> AmqpLink:
        self.amqp = AmqpLink(self, settings, password)
        await self.amqp.start()
        self.say(f"connected to RabbitMQ as {self.config.symbol}")
        return self.amqp

    async def stop(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.amqp is not None:
            await self.amqp.close()
        if self._endpoint is not None:
            await self._endpoint.stop()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def say(self, line: str) -> None:
        self.history.append(line)
        log.info("peer mock %s: %s", self.config.symbol, line)

    def _lane(self, name: str) -> Lane:
        return Lane(self._tasks, name)

    def _delay(self, scenario: Scenario) -> float:
        return self.config.delay if scenario.delay is None else scenario.delay

    # ---- HTTP in and out ---------------------------------------------------------------

    async def handle_xml(self, raw: bytes, headers: Mapping[str, str]) -> web.Response:
        """`POST /iso18626`: one document in, its confirmation out."""
        try:
            message = read_xml(raw)
        except XmlMessageError as exc:
            self.say(f"<- a document it refused: {exc.error_value}")
            body = confirm(answerable(exc.kind), exc.header, ok=False,
                           error_type=exc.error_type, error_value=exc.error_value)
            return xml_response(to_xml(body, self.config.version).data)
        if message.kind not in CONFIRMATION_OF:
            return web.Response(status=204)  # a confirmation on its own answers nothing
        reply = await self.handle(message.kind, message.content, self.post_to_hub)
        if reply.http_status is not None:
            return web.Response(status=reply.http_status,
                                text=f"peer mock: HTTP {reply.http_status} as asked\n")
        body = confirm(message.kind, message.content, ok=reply.ok,
                       error_type=reply.error_type, error_value=reply.error_value)
        data, status = self._faulty(message.kind, body)
        return xml_response(data, status)

    def _faulty(self, kind: MessageType, body: dict[str, Any]) -> tuple[bytes, int]:
        """The confirmation as a broken peer would write it."""
        faults = self.config.faults
        (name, inner), = body.items()
        header = inner["confirmationHeader"]
        valid = True
        if Fault.CONFIRMATION_TYPE in faults and kind is MessageType.REQUEST:
            name = str(MessageType.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION)
        if Fault.MISSING_MESSAGE_STATUS in faults:
            header.pop("messageStatus", None)
            valid = False
        if Fault.WRONG_REQUEST_ID in faults and header.get("requestingAgencyRequestId"):
            header["requestingAgencyRequestId"] += "-WRONG"
        if Fault.INVALID_TIMESTAMP in faults:
            header["timestampReceived"] = "yesterday"
            valid = False
        if Fault.STALE_TIMESTAMP in faults:
            header["timestamp"] = header["timestampReceived"] = STALE
        if Fault.WRONG_ECHO in faults:
            if "reasonForMessage" in inner:
                inner["reasonForMessage"] = "Notification" \
                    if inner["reasonForMessage"] != "Notification" else "StatusChange"
            if "action" in inner:
                inner["action"] = "Notification" if inner["action"] != "Notification" \
                    else "StatusRequest"
        status = 500 if Fault.HTTP_ERROR in faults and \
            kind is MessageType.REQUESTING_AGENCY_MESSAGE else 200
        return to_xml({name: inner}, self.config.version, validate=valid).data, status

    async def post_to_hub(self, body: dict[str, Any]) -> None:
        """Send one message to `hub_url` as XML, and log what the hub answered."""
        kind = next(iter(body))
        if not self.config.hub_url:
            self.say(f"cannot send {kind}: no hub URL (--hub-url)")
            return
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        data = to_xml(body, self.config.version).data
        auth = (self.config.symbol, self.config.password) if self.config.password else None
        posted = await post_xml(self._session, self.config.hub_url, data, auth=auth,
                                message_id=f"{self._prefix}-m{next(self._numbers)}")
        if posted.status != 200:
            self.say(f"   {kind} not confirmed: {posted.problem or f'HTTP {posted.status}'} "
                     f"{posted.text[:200]}")
            return
        try:
            answer = read_xml(posted.body).content
        except XmlMessageError as exc:
            self.say(f"   {kind} answered with a document it cannot read: {exc.error_value}")
            return
        status = (answer.get("confirmationHeader") or {}).get("messageStatus")
        if status != "OK":
            error = answer.get("errorData") or {}
            self.say(f"   {kind} refused: {error.get('errorType')}: {error.get('errorValue')}")

    # ---- what comes in -----------------------------------------------------------------

    async def handle(self, kind: MessageType, content: dict[str, Any], via: Send) -> Reply:
        """One incoming message in the JSON form, from HTTP or AMQP; `via` sends answers."""
        if kind is MessageType.REQUEST:
            return await self._request(content, via)
        if kind is MessageType.REQUESTING_AGENCY_MESSAGE:
            return self._action(content)
        if kind is MessageType.SUPPLYING_AGENCY_MESSAGE:
            return self._status(content)
        return Reply()

    async def _request(self, content: dict[str, Any], via: Send) -> Reply:
        header = content.get("header") or {}
        service = content.get("serviceInfo") or {}
        if "PatronRequest" in (service.get("requestSubType") or []):
            request_id = self._patron_request(content, via)
            self.say(f"<- PatronRequest {header.get('requestingAgencyRequestId')}: "
                     f"requesting it as {request_id}")
            return Reply()
        requester = header.get("requestingAgencyId") or {}
        request_id = str(header.get("requestingAgencyRequestId") or "")
        key = (symbol_of(requester) or "", request_id)
        retry = service.get("requestType") == "Retry"
        if key in self._supplies and not retry:
            return Reply()  # the same request again (a re-sent forward): already in hand
        supplier = header.get("supplyingAgencyId") or agency_id(self.config.symbol)
        scenario = self._scenario(content, supplier, key[0], retry)
        self.say(f"<- request {request_id} from {key[0]}: "
                 f"{' '.join(scenario.keywords) or self.config.default_scenario}")
        if scenario.error_type is not None:
            return Reply(ok=False, error_type=scenario.error_type,
                         error_value=f"request: ERROR:{scenario.error_type} asked for by the "
                                     "request's keywords (peer mock)")
        if scenario.http_status is not None:
            return Reply(http_status=scenario.http_status)
        supply = Supply(requester, supplier, request_id, service.get("serviceType"), scenario,
                        via, self._lane(f"supplying {request_id}"),
                        max_cost=(content.get("billingInfo") or {}).get("maximumCosts"))
        self._supplies[key] = supply
        self._plan(supply)
        return Reply()

    def _scenario(self, content: dict[str, Any], supplier: dict[str, Any], requester: str,
                  retry: bool) -> Scenario:
        service = content.get("serviceInfo") or {}
        service_type = service.get("serviceType")
        scenario = scenario_of(content, supplier.get("agencyIdValue"))
        if retry:
            earlier = self._supplies.get(
                (requester, str(service.get("requestingAgencyPreviousRequestId") or "")))
            if earlier is not None and earlier.scenario.retry_reason:
                return after_retry(earlier.scenario, service_type)
            if scenario.retry_reason:  # the Retry kept the note: do not ask for a retry again
                return after_retry(scenario, service_type)
        if not scenario.has_flow:
            default = scenario_of({"serviceInfo": {"note": self.config.default_scenario,
                                                   "serviceType": service_type}})
            default.modifiers |= scenario.modifiers
            default.delay = scenario.delay
            return default
        return scenario

    def _action(self, content: dict[str, Any]) -> Reply:
        header = content.get("header") or {}
        key = (symbol_of(header.get("requestingAgencyId")) or "",
               str(header.get("requestingAgencyRequestId") or ""))
        supply = self._supplies.get(key)
        action = content.get("action")
        if supply is None:
            return Reply(ok=False, error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                         error_value=f"requestingAgencyMessage.header.requestingAgencyRequestId:"
                                     f" {key[1]!r} of {key[0]} is no request this peer has")
        self.say(f"<- {action} on {key[1]}")
        if "SILENT" in supply.scenario.modifiers:
            return Reply()
        delay = self._delay(supply.scenario)
        if action == Action.CANCEL:
            accept = supply.status not in DELIVERED and \
                "CANCEL_REJECT" not in supply.scenario.modifiers
            supply.cancelled = supply.cancelled or accept
            supply.lane.put(delay, partial(self._cancel_answer, supply, accept))
        elif action == Action.RENEW:
            yes = "RENEW_REJECT" not in supply.scenario.modifiers
            supply.lane.put(delay, partial(self._supply_send, supply, Status.LOANED,
                                           ReasonForMessage.RENEW_RESPONSE, yes=yes))
        elif action == Action.SHIPPED_RETURN:
            supply.lane.put(delay, partial(self._supply_send, supply, Status.LOAN_COMPLETED,
                                           ReasonForMessage.STATUS_CHANGE))
        elif action == Action.STATUS_REQUEST:
            supply.lane.put(delay, partial(self._status_answer, supply))
        return Reply()

    def _status(self, content: dict[str, Any]) -> Reply:
        header = content.get("header") or {}
        request_id = str(header.get("requestingAgencyRequestId") or "")
        borrow = self._borrows.get(request_id)
        if borrow is None:
            return Reply(ok=False, error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                         error_value=f"supplyingAgencyMessage.header.requestingAgencyRequestId:"
                                     f" {request_id!r} is no request of this peer")
        status = (content.get("statusInfo") or {}).get("status")
        info = content.get("messageInfo") or {}
        reason = info.get("reasonForMessage")
        self.say(f"<- {status} ({reason}) on {request_id}")
        borrow.supplier = symbol_of(header.get("supplyingAgencyId")) or borrow.supplier
        if reason != ReasonForMessage.NOTIFICATION:
            borrow.status = status
        self._react(borrow, content, status, reason)
        return Reply()

    # ---- the supplier ------------------------------------------------------------------

    def _plan(self, supply: Supply) -> None:
        scenario = supply.scenario
        if "SILENT" in scenario.modifiers:
            return
        statuses = [Status.RETRY_POSSIBLE] if scenario.retry_reason else list(scenario.statuses)
        if Fault.STATUS_ORDER in self.config.faults:
            statuses.reverse()
        delay = self._delay(scenario)
        for n, status in enumerate(statuses):
            supply.lane.put(delay, partial(self._supply_status, supply, status))
            if n == 0 and "NOTIFICATION" in scenario.modifiers:
                supply.lane.put(delay, partial(self._notification, supply))

    async def _supply_status(self, supply: Supply, status: Status) -> None:
        if supply.cancelled:
            return
        reason = ReasonForMessage.STATUS_CHANGE if supply.answered else \
            ReasonForMessage.REQUEST_RESPONSE
        supply.answered = True
        yes = None
        if reason is ReasonForMessage.REQUEST_RESPONSE:
            yes = status not in (Status.UNFILLED, Status.RETRY_POSSIBLE,
                                 Status.EXPECT_TO_SUPPLY, Status.REQUEST_RECEIVED)
        await self._supply_send(supply, status, reason, yes=yes)

    async def _notification(self, supply: Supply) -> None:
        if supply.cancelled:
            return
        note = None if Fault.NO_NOTE in self.config.faults else \
            "A note from the peer mock's supplier: all is well."
        await self._supply_send(supply, supply.status or Status.REQUEST_RECEIVED,
                                ReasonForMessage.NOTIFICATION, note=note)

    async def _cancel_answer(self, supply: Supply, accept: bool) -> None:
        if accept:
            yes = Fault.CANCEL_ANSWER not in self.config.faults
            await self._supply_send(supply, Status.CANCELLED, ReasonForMessage.CANCEL_RESPONSE,
                                    yes=yes)
        else:
            await self._supply_send(supply, supply.status or Status.REQUEST_RECEIVED,
                                    ReasonForMessage.CANCEL_RESPONSE, yes=False)

    async def _status_answer(self, supply: Supply) -> None:
        status = supply.status or Status.REQUEST_RECEIVED
        if Fault.STATUS_ANSWER in self.config.faults:
            status = supply.previous or Status.REQUEST_RECEIVED
        await self._supply_send(supply, status, ReasonForMessage.STATUS_REQUEST_RESPONSE)

    async def _supply_send(self, supply: Supply, status: Status, reason: ReasonForMessage,
                           *, yes: bool | None = None, note: str | None = None) -> None:
        body = self._supplying(supply, status, reason, yes=yes, note=note)
        if reason not in (ReasonForMessage.NOTIFICATION,
                          ReasonForMessage.STATUS_REQUEST_RESPONSE) and status != supply.status:
            supply.previous, supply.status = supply.status, status
        self.say(f"-> {status} ({reason}) on {supply.request_id}")
        await supply.via(body)

    def _supplying(self, supply: Supply, status: Status, reason: ReasonForMessage, *,
                   yes: bool | None, note: str | None) -> dict[str, Any]:
        info: dict[str, Any] = {"reasonForMessage": reason}
        if yes is not None:
            info["answerYesNo"] = "Y" if yes else "N"
        if note:
            info["note"] = note
        message: dict[str, Any] = {
            "header": {"supplyingAgencyId": dict(supply.supplier),
                       "requestingAgencyId": supply.requester, "timestamp": now_iso(),
                       "requestingAgencyRequestId": supply.request_id,
                       "supplyingAgencyRequestId": supply.supplier_request_id},
            "messageInfo": info,
            "statusInfo": {"status": status, "lastChange": now_iso()}}
        if Fault.WRONG_AGENCY in self.config.faults:
            supplier = message["header"]["supplyingAgencyId"]
            supplier["agencyIdValue"] = f"{supplier.get('agencyIdValue')}-OTHER"
        if reason is ReasonForMessage.NOTIFICATION:
            return {"supplyingAgencyMessage": message}
        if status is Status.LOANED:
            message["statusInfo"]["dueDate"] = later_iso(28)
            if reason is not ReasonForMessage.RENEW_RESPONSE:
                message["deliveryInfo"] = {"dateSent": now_iso(), "sentVia": "Mail",
                                           "itemId": f"MOCK-ITEM-{supply.request_id}"}
        elif status is Status.COPY_COMPLETED and reason is not \
                ReasonForMessage.STATUS_REQUEST_RESPONSE:
            message["deliveryInfo"] = {"dateSent": now_iso(), "sentVia": "URL",
                                       "itemId": f"https://mock.invalid/{supply.request_id}.pdf",
                                       "deliveredFormat": "PDF"}
        elif status is Status.UNFILLED:
            info["reasonUnfilled"] = "NotHeld"
        elif status is Status.RETRY_POSSIBLE:
            self._retry_info(supply, info)
        return {"supplyingAgencyMessage": message}

    def _retry_info(self, supply: Supply, info: dict[str, Any]) -> None:
        reason = supply.scenario.retry_reason or "NotFoundAsCited"
        info["reasonRetry"] = reason
        if reason == "CostExceedsMaxCost" and Fault.RETRY_NO_COST not in self.config.faults:
            currency = (supply.max_cost or {}).get("currencyCode") or "CNY"
            info["offeredCosts"] = {"currencyCode": currency, "monetaryValue": "35.00"}
        elif reason == "OnLoan":
            info["retryAfter"] = later_iso(7)
        elif reason == "LoanCondition":
            info["note"] = "LoanCondition: LibraryUseOnly"

    # ---- the requester -----------------------------------------------------------------

    def _patron_request(self, content: dict[str, Any], via: Send) -> str:
        """A PatronRequest: request the same item ourselves (illmock's requester role)."""
        header = content.get("header") or {}
        service = {k: v for k, v in (content.get("serviceInfo") or {}).items()
                   if k not in ("requestSubType", "requestType")}
        keep = {k: v for k, v in content.items()
                if k in ("bibliographicInfo", "publicationInfo", "requestedDeliveryInfo",
                         "patronInfo", "billingInfo")}
        return self.send_request(str(service.get("note") or ""), service=service,
                                 supplier=symbol_of(header.get("supplyingAgencyId")),
                                 via=via, extra=keep)

    def send_request(self, keywords: str = "", *, service_type: str = "Loan",
                     supplier: str | None = None, via: Send | None = None,
                     title: str | None = None, service: dict[str, Any] | None = None,
                     extra: dict[str, Any] | None = None) -> str:
        """Request an item as requester (to `supplier`, or the hub chooses); its id."""
        request_id = f"{self._prefix}-{next(self._numbers)}"
        header: dict[str, Any] = {"requestingAgencyId": agency_id(self.config.symbol),
                                  "timestamp": now_iso(),
                                  "requestingAgencyRequestId": request_id}
        if supplier:
            header["supplyingAgencyId"] = agency_id(supplier)
        content: dict[str, Any] = {
            "header": header,
            "bibliographicInfo": {"title": title or f"Peer mock request {request_id}"},
            "serviceInfo": {"serviceType": service_type, **(service or {}),
                            "requestType": "New"},
            **(extra or {})}
        if keywords:
            content["serviceInfo"]["note"] = keywords
        body = {"request": content}
        send = via or (self.amqp.send if self.amqp is not None else self.post_to_hub)
        borrow = Borrow(request_id, body, scenario_of(content), send,
                        self._lane(f"requesting {request_id}"), supplier=supplier)
        self._borrows[request_id] = borrow
        borrow.lane.put(self._delay(borrow.scenario), partial(self._send_borrow, borrow, body))
        return request_id

    async def _send_borrow(self, borrow: Borrow, body: dict[str, Any]) -> None:
        kind = next(iter(body))
        inner = body[kind]
        what = inner.get("action") or (inner.get("serviceInfo") or {}).get("requestType")
        self.say(f"-> {kind} {what} on {inner['header']['requestingAgencyRequestId']}")
        await borrow.via(body)

    def _react(self, borrow: Borrow, content: dict[str, Any], status: str | None,
               reason: str | None) -> None:
        mods = borrow.scenario.modifiers
        delay = self._delay(borrow.scenario)
        actions: list[tuple[Action, str | None]] = []
        if not borrow.seen and reason != ReasonForMessage.NOTIFICATION:
            borrow.seen = True
            for word, action, note in (("CANCEL", Action.CANCEL, None),
                                       ("NOTIFY", Action.NOTIFICATION,
                                        "A note from the peer mock's requester."),
                                       ("STATUS", Action.STATUS_REQUEST, None)):
                if word in mods:
                    actions.append((action, note))
        if status == Status.LOANED and reason in (ReasonForMessage.REQUEST_RESPONSE,
                                                  ReasonForMessage.STATUS_CHANGE) \
                and not borrow.returning and "NORETURN" not in mods:
            borrow.returning = True
            if "RENEW" in mods:
                actions.append((Action.RENEW, None))
            back = [(Action.RECEIVED, None), (Action.SHIPPED_RETURN, None)]
            actions += back[::-1] if Fault.EARLY_RETURN in self.config.faults else back
        for action, note in actions:
            body = requesting_message(self.config.symbol,
                                      borrow.supplier or self.config.symbol,
                                      borrow.request_id, action, note)
            borrow.lane.put(delay, partial(self._send_borrow, borrow, body))
        if status == Status.RETRY_POSSIBLE and not borrow.retried and "NORETRY" not in mods:
            borrow.retried = True
            borrow.lane.put(delay, partial(self._retry, borrow, content))

    async def _retry(self, borrow: Borrow, content: dict[str, Any]) -> None:
        """Ask again, at the cost the supplier offered (a new request, requestType Retry)."""
        body: dict[str, Any] = {"request": {k: v for k, v in borrow.body["request"].items()}}
        request = body["request"]
        retry_id = f"{borrow.request_id}-R"
        request["header"] = {**request["header"], "requestingAgencyRequestId": retry_id,
                             "timestamp": now_iso()}
        if borrow.supplier:
            request["header"]["supplyingAgencyId"] = agency_id(borrow.supplier)
        service = {**request["serviceInfo"], "requestType": "Retry"}
        if Fault.RETRY_NO_PREVIOUS not in self.config.faults:
            service["requestingAgencyPreviousRequestId"] = borrow.request_id
        request["serviceInfo"] = service
        offered = (content.get("messageInfo") or {}).get("offeredCosts") or \
            next(iter((content.get("retryInfo") or {}).get("offeredCosts") or []), None)
        if offered:
            request["billingInfo"] = {**(request.get("billingInfo") or {}),
                                      "maximumCosts": offered}
        retry = Borrow(retry_id, body, borrow.scenario, borrow.via, borrow.lane,
                       supplier=borrow.supplier, retried=True)
        self._borrows[retry_id] = retry
        await self._send_borrow(retry, body)


class AmqpLink:
    """The mock as an agency user on the hub's RabbitMQ: reads its queue, publishes."""

    def __init__(self, mock: PeerMock, settings: Settings, password: str) -> None:
        self.mock = mock
        self.client = AgencyClient(settings, mock.config.symbol, password)
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.client.connect()
        self._reader = asyncio.create_task(self._read(), name="peer mock AMQP reader")

    async def send(self, body: dict[str, Any]) -> None:
        await self.client.send(next(iter(body)), body)

    async def _read(self) -> None:
        while True:
            msg = await self.client.inbox.get()
            if not isinstance(msg.body, dict) or msg.kind not in set(MessageType):
                self.mock.say(f"<- something unreadable on the queue ({msg.kind})")
                continue
            kind = MessageType(msg.kind)
            if kind not in CONFIRMATION_OF:
                header = msg.content.get("confirmationHeader") or {}
                if header.get("messageStatus") != "OK":
                    error = msg.content.get("errorData") or {}
                    self.mock.say(f"   refused by the hub: {error.get('errorType')}: "
                                  f"{error.get('errorValue')}")
                continue
            try:
                await self.mock.handle(kind, msg.content, self.send)
            except Exception:
                log.exception("peer mock: could not handle a %s", kind)

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        await self.client.close()
