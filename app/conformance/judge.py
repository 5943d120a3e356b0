"""Judging what a peer sends: documents against the XSD, confirmations against what they
confirm, messages against the request they are about and the status model.

Pure functions over the JSON form (schemas/iso18626_xml.py `read_xml`); each returns
the `Verdict`s it found (none: conformant). `Track` is what the check knows of one
request: its id, its state in the hub's state model (broker/states.py) and what the
check asked for last, so that a status or action can be judged by where it arrives.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from lxml import etree

from app.conformance.rules import (
    CANCEL,
    CONF_STATUS,
    CONF_TYPE,
    DELIVERY,
    ECHO,
    IDS,
    LENIENT,
    NOTE,
    ORDER,
    REASON,
    REQUEST,
    RETRY,
    STATUS_ANSWER,
    TIME,
    XSD,
    Rule,
    Verdict,
    fail,
    warn,
)
from broker.states import TERMINAL, Event, State, Step, iso_status, next_state
from schemas.iso18626 import CONFIRMATION_OF, NAMESPACE
from schemas.iso18626_codes import Action, MessageType, ReasonForMessage, Status
from schemas.iso18626_xml import XmlMessage, XmlMessageError, read_xml, version_of
from schemas.iso18626_xsd import schema

SKEW = timedelta(minutes=5)
ROOT = "ISO18626Message"
VERSION_ATTR = f"{{{NAMESPACE}}}version"


def xsd_rule(version: str) -> Rule:
    return Rule(XSD.code, f"ISO 18626 {version} XSD", XSD.text)


@dataclass
class Document:
    """One document the peer sent, read: the message (None if unreadable) and verdicts."""

    raw: bytes
    message: XmlMessage | None
    verdicts: list[Verdict]
    header: dict[str, Any] = field(default_factory=dict)  # salvaged when unreadable
    error: XmlMessageError | None = None                  # why it is unreadable

    @property
    def kind(self) -> MessageType | None:
        return self.message.kind if self.message is not None else None

    @property
    def content(self) -> dict[str, Any]:
        return self.message.content if self.message is not None else {}


def _split(error_value: str) -> tuple[str, str]:
    """`path: problem (ISO 18626 v XSD)...` -> (path, problem)."""
    head, sep, rest = error_value.partition(": ")
    if sep and re.fullmatch(r"[A-Za-z0-9_.\[\]@]+", head):
        return head, rest
    return ROOT, error_value


def read_document(raw: bytes, version: str) -> Document:
    """Read a document and judge it against the XSD of `version` (the peer's)."""
    try:
        message = read_xml(raw)
    except XmlMessageError as exc:
        rule = xsd_rule(exc.version)
        element, problem = _split(exc.error_value)
        problem = problem.replace(f" (ISO 18626 {exc.version} XSD)", "")
        return Document(raw, None, [fail(element, problem, rule)], dict(exc.header or {}), exc)
    verdicts: list[Verdict] = []
    if message.version != version:
        as_registered = _read_as(raw, version)
        if as_registered is None:
            element, problem = _strict_problem(raw, version)
            verdicts.append(fail(element, f"{problem}: the document is ISO 18626 "
                                          f"{message.version}, not {version} as the peer is "
                                          "registered", xsd_rule(version)))
        else:
            verdicts.append(warn(f"{ROOT}@version", f"{message.declared!r} declared; the "
                                                    f"document is valid ISO 18626 {version}, "
                                                    "the peer's version", LENIENT))
            message = as_registered
    elif version_of(message.declared) != version:
        verdicts.append(warn(f"{ROOT}@version", f"{message.declared!r} declared; the document "
                                                f"is ISO 18626 {version}", LENIENT))
    verdicts += [warn(ROOT, leniency, LENIENT) for leniency in message.leniencies]
    return Document(raw, message, verdicts)


_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)


def _read_as(raw: bytes, version: str) -> XmlMessage | None:
    """The document read as `version` (its version attribute set so), with the hub's
    leniencies; None when it is not valid in `version`."""
    try:
        root = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError:
        return None
    if "version" in root.attrib:
        del root.attrib["version"]
    root.set(VERSION_ATTR, version)
    try:
        message = read_xml(etree.tostring(root))
    except XmlMessageError:
        return None
    return message if message.version == version else None


def _strict_problem(raw: bytes, version: str) -> tuple[str, str]:
    """The first complaint of `version`'s XSD about a document valid in the other one."""
    try:
        errors = list(schema(version).iter_errors(etree.fromstring(raw, _PARSER)))
    except etree.XMLSyntaxError:
        errors = []
    # 1.2's header.multipleItemRequestId is an erratum the hub forgives: not the problem.
    error = next((e for e in errors if "multipleItemRequestId" not in
                  " ".join(str(getattr(x, "name", "")) for x in getattr(e, "expected", None)
                           or [])), None)
    if error is None:
        return ROOT, "not valid"
    parts = [re.sub(r"^[^:]*:|\[\d+\]$", "", p) for p in (error.path or "").strip("/").split("/")]
    path = ".".join(p for p in parts if p and p != ROOT) or ROOT
    expected = ", ".join(dict.fromkeys(
        _local(getattr(e, "name", None) or "") for e in (getattr(error, "expected", None) or [])
        if getattr(e, "name", None)))
    child = getattr(error, "invalid_child", None)
    if child is not None and isinstance(child.tag, str):
        return f"{path}.{_local(child.tag)}", \
            f"not allowed here in {version}" + (f"; expected {expected}" if expected else "")
    if expected:
        return f"{path}.{expected.split(', ')[0]}", f"required element missing in {version}"
    return path, str(error.reason or error.message).rstrip(".")


def _local(name: str) -> str:
    return re.sub(r"^\{[^}]*\}|^[^:]*:", "", name)


# ---- small readers ---------------------------------------------------------------------

def symbol(agency: Any) -> str | None:
    if not isinstance(agency, dict) or not agency.get("agencyIdValue"):
        return None
    return f"{agency.get('agencyIdType')}:{agency.get('agencyIdValue')}"


def when(value: Any) -> datetime | None:
    """An xs:dateTime (already XSD-valid) as an aware datetime; UTC when it names no zone."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _time(element: str, value: Any, *, after: datetime | None, what: str) -> list[Verdict]:
    moment = when(value)
    if moment is None:
        return []
    now = datetime.now(UTC)
    if moment > now + SKEW:
        return [fail(element, f"{value} is in the future", TIME)]
    if after is not None and moment < after - SKEW:
        return [fail(element, f"{value} is before {what}", TIME)]
    return []


# ---- confirmations ---------------------------------------------------------------------

def judge_confirmation(sent_kind: MessageType, sent: dict[str, Any], doc: Document,
                       sent_at: datetime) -> list[Verdict]:
    """What the peer answered to `sent` (a message of `sent_kind`, in the JSON form)."""
    message = doc.message
    if message is None:
        return []
    expected = CONFIRMATION_OF[sent_kind]
    verdicts: list[Verdict] = []
    if message.kind is not expected:
        verdicts.append(fail(ROOT, f"a {message.kind} answers the {sent_kind}; expected "
                                   f"{expected}", CONF_TYPE))
        if message.kind in CONFIRMATION_OF:
            return verdicts  # not a confirmation at all: nothing more to compare
    name = str(message.kind)
    content = message.content
    header = content.get("confirmationHeader") or {}
    verdicts += _status_of_confirmation(name, content, sent_kind)
    verdicts += _echoed_header(name, header, sent.get("header") or {}, sent_kind)
    verdicts += _echoed_reason(name, content, sent, sent_kind)
    for part in ("timestamp", "timestampReceived"):
        verdicts += _time(f"{name}.confirmationHeader.{part}", header.get(part), after=sent_at,
                          what=f"the {sent_kind} it confirms was sent")
    return verdicts


def _status_of_confirmation(name: str, content: dict[str, Any],
                            sent_kind: MessageType) -> list[Verdict]:
    status = (content.get("confirmationHeader") or {}).get("messageStatus")
    error = content.get("errorData")
    if status == "ERROR":
        detail = f"{error.get('errorType')}: {error.get('errorValue')}" \
            if isinstance(error, dict) else "no errorData"
        return [fail(f"{name}.confirmationHeader.messageStatus",
                     f"ERROR for a valid {sent_kind} ({detail})", CONF_STATUS)]
    if error:
        return [fail(f"{name}.errorData", "present although messageStatus is OK", CONF_STATUS)]
    return []


def _echoed_header(name: str, header: dict[str, Any], sent: dict[str, Any],
                   sent_kind: MessageType) -> list[Verdict]:
    verdicts: list[Verdict] = []
    pairs: list[tuple[str, Any, Any]] = [
        ("requestingAgencyRequestId", header.get("requestingAgencyRequestId"),
         sent.get("requestingAgencyRequestId")),
        ("requestingAgencyId", symbol(header.get("requestingAgencyId")),
         symbol(sent.get("requestingAgencyId"))),
        ("supplyingAgencyId", symbol(header.get("supplyingAgencyId")),
         symbol(sent.get("supplyingAgencyId")))]
    for part, got, want in pairs:
        element = f"{name}.confirmationHeader.{part}"
        if want is None:
            continue
        if got is None:
            verdicts.append(warn(element, f"not echoed; the {sent_kind} said {want!r}", ECHO))
        elif got != want:
            verdicts.append(fail(element, f"{got!r} does not echo {want!r}", ECHO))
    return verdicts


def _echoed_reason(name: str, content: dict[str, Any], sent: dict[str, Any],
                   sent_kind: MessageType) -> list[Verdict]:
    if sent_kind is MessageType.SUPPLYING_AGENCY_MESSAGE:
        part, value = "reasonForMessage", (sent.get("messageInfo") or {}).get("reasonForMessage")
    elif sent_kind is MessageType.REQUESTING_AGENCY_MESSAGE:
        part, value = "action", sent.get("action")
    else:
        return []
    want = str(value)
    got = content.get(part)
    if got is None:
        return [warn(f"{name}.{part}", f"not echoed; the {sent_kind} said {want!r}", ECHO)]
    if got != want:
        return [fail(f"{name}.{part}", f"{got!r} does not echo {want!r}", ECHO)]
    return []


# ---- messages about a request ----------------------------------------------------------

@dataclass
class Track:
    """One request of the check, as the check follows it."""

    request_id: str
    requester: str                 # the symbol the messages must name as requestingAgencyId
    suppliers: frozenset[str]      # the symbols allowed as supplyingAgencyId
    returnable: bool | None        # Loan True, Copy False, CopyOrLoan None until delivered
    started: datetime = field(default_factory=lambda: datetime.now(UTC))
    state: State = State.EXPECT_TO_SUPPLY
    answered: bool = False         # the supplier's first answer (not a Notification) came
    pending: Action | None = None  # the check's Cancel or StatusRequest awaiting its answer
    actions: list[str] = field(default_factory=list)  # the requester's actions, as they came

    def move(self, event: Event) -> str:
        """Apply an event: "moved" (or kept, as the model says), "passed" (a status the
        request has left behind: the state is kept) or "refused" (the model forbids it)."""
        after = next_state(self.returnable, self.state, event)
        if after is None:
            return "refused"
        if isinstance(after, Step) and after is not Step.ADVANCE:
            return "passed"
        if event is Event.STATUS_LOANED:
            self.returnable = True
        elif event is Event.STATUS_COPY_COMPLETED:
            self.returnable = False
        self.state = State.UNFILLED if after is Step.ADVANCE else State(after)
        return "moved"

    @property
    def shown(self) -> str:
        return str(self.state)

    @property
    def ended(self) -> bool:
        return self.state in TERMINAL


def judge_header(name: str, header: dict[str, Any], track: Track) -> list[Verdict]:
    """The header of a message the peer sent about `track`'s request."""
    verdicts: list[Verdict] = []
    got_id = header.get("requestingAgencyRequestId")
    if got_id != track.request_id:
        verdicts.append(fail(f"{name}.header.requestingAgencyRequestId",
                             f"{got_id!r} is not {track.request_id!r}, the request's id", IDS))
    requester = symbol(header.get("requestingAgencyId"))
    if requester != track.requester:
        verdicts.append(fail(f"{name}.header.requestingAgencyId",
                             f"{requester!r} is not {track.requester!r}, the requester", IDS))
    supplier = symbol(header.get("supplyingAgencyId"))
    if supplier not in track.suppliers:
        wanted = " or ".join(repr(s) for s in sorted(track.suppliers))
        verdicts.append(fail(f"{name}.header.supplyingAgencyId",
                             f"{supplier!r} is not {wanted}, the supplier of the request", IDS))
    verdicts += _time(f"{name}.header.timestamp", header.get("timestamp"), after=track.started,
                      what="the request was made")
    return verdicts


def judge_status(content: dict[str, Any], track: Track, version: str) -> list[Verdict]:
    """A supplyingAgencyMessage about `track`'s request; moves `track` as it allows."""
    p = "supplyingAgencyMessage"
    status = (content.get("statusInfo") or {}).get("status")
    info = content.get("messageInfo") or {}
    reason = info.get("reasonForMessage")
    verdicts = _time(f"{p}.statusInfo.lastChange",
                     (content.get("statusInfo") or {}).get("lastChange"), after=None, what="")
    if status not in set(Status):
        return verdicts
    if reason == ReasonForMessage.NOTIFICATION:
        return verdicts + _notification(p, status, info, track)
    if reason == ReasonForMessage.STATUS_REQUEST_RESPONSE:
        return verdicts + _status_answer(p, status, track)
    if track.pending is Action.CANCEL:
        verdicts += _cancel_answer(p, status, info, reason, track)
    if not track.answered and reason != ReasonForMessage.REQUEST_RESPONSE:
        verdicts.append(warn(f"{p}.messageInfo.reasonForMessage",
                             f"{reason!r} on the first answer to the request; expected "
                             "RequestResponse", REASON))
    track.answered = True
    before = track.shown
    moved = track.move(Event.of_status(Status(status)))
    if moved == "refused":
        verdicts.append(fail(f"{p}.statusInfo.status",
                             f"{status!r} is not allowed after {before}", ORDER))
    elif moved == "passed":
        verdicts.append(fail(f"{p}.statusInfo.status",
                             f"{status!r} after {before}: a status the request has passed "
                             f"already (the hub keeps {before})", ORDER))
    return verdicts + _status_content(p, status, content, version)


def _notification(p: str, status: str, info: dict[str, Any], track: Track) -> list[Verdict]:
    verdicts: list[Verdict] = []
    if not str(info.get("note") or "").strip():
        verdicts.append(fail(f"{p}.messageInfo.note", "missing on a Notification", NOTE))
    if status != iso_status(track.state):
        verdicts.append(warn(f"{p}.statusInfo.status",
                             f"{status!r} on a Notification; the request is "
                             f"{iso_status(track.state)} and stays so", NOTE))
    return verdicts


def _status_answer(p: str, status: str, track: Track) -> list[Verdict]:
    verdicts: list[Verdict] = []
    if track.pending is not Action.STATUS_REQUEST:
        verdicts.append(warn(f"{p}.messageInfo.reasonForMessage",
                             "StatusRequestResponse although no StatusRequest was sent",
                             REASON))
    else:
        track.pending = None
    if status != iso_status(track.state):
        verdicts.append(fail(f"{p}.statusInfo.status",
                             f"{status!r} in a StatusRequestResponse; the request is "
                             f"{iso_status(track.state)}", STATUS_ANSWER))
    return verdicts


def _cancel_answer(p: str, status: str, info: dict[str, Any], reason: Any,
                   track: Track) -> list[Verdict]:
    if reason != ReasonForMessage.CANCEL_RESPONSE:
        if status == Status.CANCELLED:
            track.pending = None
            return [fail(f"{p}.messageInfo.reasonForMessage",
                         f"{reason!r} answers the Cancel; expected CancelResponse", REASON)]
        return []
    track.pending = None
    yes = info.get("answerYesNo")
    element = f"{p}.messageInfo.answerYesNo"
    if yes is None:
        return [fail(element, "missing on a CancelResponse", CANCEL)]
    if yes == "Y" and status != Status.CANCELLED:
        return [fail(element, f"'Y' with status {status!r}; a Cancel accepted says Cancelled",
                     CANCEL)]
    if yes == "N" and status == Status.CANCELLED:
        return [fail(element, "'N' with status 'Cancelled'; a Cancel refused keeps the "
                              f"status {iso_status(track.state)}", CANCEL)]
    return []


def _status_content(p: str, status: str, content: dict[str, Any],
                    version: str) -> list[Verdict]:
    info = content.get("messageInfo") or {}
    verdicts: list[Verdict] = []
    if status == Status.LOANED and not (content.get("statusInfo") or {}).get("dueDate"):
        verdicts.append(warn(f"{p}.statusInfo.dueDate", "missing on Loaned", DELIVERY))
    if status in (Status.LOANED, Status.COPY_COMPLETED) and not content.get("deliveryInfo"):
        verdicts.append(warn(f"{p}.deliveryInfo", f"missing on {status}", DELIVERY))
    if status == Status.UNFILLED and not info.get("reasonUnfilled"):
        verdicts.append(warn(f"{p}.messageInfo.reasonUnfilled", "missing on Unfilled",
                             DELIVERY))
    if status == Status.RETRY_POSSIBLE:
        reason_retry = info.get("reasonRetry")
        if not reason_retry:
            verdicts.append(fail(f"{p}.messageInfo.reasonRetry", "missing on RetryPossible",
                                 RETRY))
        elif reason_retry == "CostExceedsMaxCost" and offered_costs(content) is None:
            where = "retryInfo.offeredCosts" if version == "2021" else \
                "messageInfo.offeredCosts"
            verdicts.append(fail(f"{p}.{where}", "missing with reasonRetry CostExceedsMaxCost",
                                 RETRY))
    return verdicts


def offered_costs(content: dict[str, Any]) -> dict[str, Any] | None:
    """The price a RetryPossible offers (1.2 messageInfo, 2021 retryInfo)."""
    offered = (content.get("messageInfo") or {}).get("offeredCosts")
    if isinstance(offered, dict):
        return offered
    listed = (content.get("retryInfo") or {}).get("offeredCosts")
    if isinstance(listed, list) and listed and isinstance(listed[0], dict):
        first: dict[str, Any] = listed[0]
        return first
    return None


def judge_action(content: dict[str, Any], track: Track) -> list[Verdict]:
    """A requestingAgencyMessage about `track`'s request; moves `track` as it allows."""
    p = "requestingAgencyMessage"
    action = content.get("action")
    if action not in set(Action):
        return []
    track.actions.append(str(action))
    verdicts: list[Verdict] = []
    if action == Action.NOTIFICATION and not str(content.get("note") or "").strip():
        verdicts.append(fail(f"{p}.note", "missing on a Notification", NOTE))
    before = track.shown
    if track.move(Event.of_action(Action(action))) != "moved":
        verdicts.append(fail(f"{p}.action", f"{action!r} is not allowed after {before}", ORDER))
    return verdicts


def judge_request(content: dict[str, Any], *, peer: str, suppliers: frozenset[str],
                  used: set[str], since: datetime, retry_of: str | None = None) -> list[Verdict]:
    """A request the peer sent as requester (a Retry of `retry_of` when given)."""
    p = "request"
    header = content.get("header") or {}
    verdicts: list[Verdict] = []
    sender = symbol(header.get("requestingAgencyId"))
    if sender != peer:
        verdicts.append(fail(f"{p}.header.requestingAgencyId",
                             f"{sender!r} is not {peer!r}, the agency that sent it", REQUEST))
    request_id = header.get("requestingAgencyRequestId")
    if request_id in used:
        verdicts.append(fail(f"{p}.header.requestingAgencyRequestId",
                             f"{request_id!r} was the id of an earlier request", REQUEST))
    named = symbol(header.get("supplyingAgencyId"))
    if named is not None and named not in suppliers:
        verdicts.append(warn(f"{p}.header.supplyingAgencyId",
                             f"{named!r}: the hub routes to a named supplier only if its "
                             "policy allows", REQUEST))
    verdicts += _time(f"{p}.header.timestamp", header.get("timestamp"), after=since,
                      what="the check asked for it")
    if retry_of is not None:
        verdicts += _retry_request(p, content.get("serviceInfo") or {}, retry_of)
    return verdicts


def _retry_request(p: str, service: dict[str, Any], retry_of: str) -> list[Verdict]:
    verdicts: list[Verdict] = []
    if service.get("requestType") != "Retry":
        verdicts.append(fail(f"{p}.serviceInfo.requestType",
                             f"{service.get('requestType')!r} on a Retry; expected 'Retry'",
                             RETRY))
    previous = service.get("requestingAgencyPreviousRequestId")
    element = f"{p}.serviceInfo.requestingAgencyPreviousRequestId"
    if previous is None:
        verdicts.append(fail(element, "missing on a Retry", RETRY))
    elif previous != retry_of:
        verdicts.append(fail(element, f"{previous!r} is not {retry_of!r}, the request retried",
                             RETRY))
    return verdicts
