"""What the peer mock (sim/peer_mock.py) is told to do: scenario keywords and faults.

Scenario keywords travel in the request itself, so that whoever sends the request
(a library's system through the hub, or `run.py peer check`) decides how the mock
answers it, as Index Data's CrossLink `illmock` does. A keyword is an upper-case word
anywhere in `serviceInfo.note`, `bibliographicInfo.title` or
`bibliographicInfo.supplierUniqueRecordId` (illmock's place for it), looked for in that
order; an illmock token `MOCK:<agencyIdValue>:<SCENARIO>` in the note that names the
mock's own symbol wins over everything else, so that one note can steer every supplier
of a rota differently. Words the mock does not know are ignored, and lower- or
mixed-case words never count ("Loaned" in a sentence is not `LOANED`).

docs/conformance.md lists the keywords; `KEYWORDS` below is the same list as data.

Faults (`--break`) make the mock deliberately wrong in one precise way each, so that
`run.py peer check` can be shown to name every deviation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from schemas.iso18626_codes import ErrorType, Status

# Supplier flows: the statuses the mock sends, one after the other (words joined by _).
STATUS_WORDS: dict[str, Status] = {
    "RECEIVED": Status.REQUEST_RECEIVED,
    "EXPECTTOSUPPLY": Status.EXPECT_TO_SUPPLY,
    "WILLSUPPLY": Status.WILL_SUPPLY,
    "LOANED": Status.LOANED,
    "OVERDUE": Status.OVERDUE,
    "RECALLED": Status.RECALLED,
    "COPY": Status.COPY_COMPLETED,
    "COPYCOMPLETED": Status.COPY_COMPLETED,
    "UNFILLED": Status.UNFILLED,
    "LOANCOMPLETED": Status.LOAN_COMPLETED,
    "COMPLETED": Status.COPY_COMPLETED,  # illmock: CopyCompleted for a Copy, else LoanCompleted
}

# RETRY:<KIND>[_<FLOW after the retry>]: RetryPossible with this reasonRetry.
RETRY_REASONS: dict[str, str] = {
    "COST": "CostExceedsMaxCost",
    "ONLOAN": "OnLoan",
    "COND": "LoanCondition",
    "NOTFOUNDASCITED": "NotFoundAsCited",
}

# Modifiers of the supplier's behaviour (any number) and of the requester's.
SUPPLIER_MODIFIERS = ("NOTIFICATION", "CANCEL_ACCEPT", "CANCEL_REJECT", "RENEW_ACCEPT",
                      "RENEW_REJECT", "SILENT")
REQUESTER_MODIFIERS = ("CANCEL", "NOTIFY", "STATUS", "RENEW", "NORETURN", "NORETRY")

# Every keyword, with what it does: the table of docs/conformance.md.
KEYWORDS: dict[str, str] = {
    "LOANED": "supplier: Loaned (dueDate in 28 days); LoanCompleted when ShippedReturn comes",
    "COPY": "supplier: CopyCompleted, delivered by URL (COPYCOMPLETED is the same)",
    "UNFILLED": "supplier: Unfilled, reasonUnfilled NotHeld (the default without a keyword)",
    "WILLSUPPLY": "supplier: WillSupply, then nothing (until a Cancel or StatusRequest)",
    "WILLSUPPLY_LOANED": "supplier: WillSupply, then Loaned; any statuses joined by _ are "
                         "sent in order: EXPECTTOSUPPLY, RECEIVED, WILLSUPPLY, LOANED, OVERDUE, "
                         "RECALLED, COPY, UNFILLED, LOANCOMPLETED, COMPLETED",
    "COMPLETED": "supplier (illmock): CopyCompleted for a Copy, LoanCompleted otherwise",
    "RETRY:COST": "supplier: RetryPossible, reasonRetry CostExceedsMaxCost, offeredCosts 35.00 in "
                  "the request's currency; the Retry then gets the flow after _ "
                  "(RETRY:COST_LOANED), by default COPY for a Copy and LOANED otherwise",
    "RETRY:ONLOAN": "supplier: RetryPossible, reasonRetry OnLoan, retryAfter in 7 days",
    "RETRY:COND": "supplier: RetryPossible, reasonRetry LoanCondition",
    "RETRY:NOTFOUNDASCITED": "supplier: RetryPossible, reasonRetry NotFoundAsCited",
    "NOTIFICATION": "supplier: a Notification (with a note, status unchanged) after the first "
                    "status",
    "CANCEL_ACCEPT": "supplier: a Cancel is answered Cancelled, answerYesNo Y (the default "
                     "before delivery)",
    "CANCEL_REJECT": "supplier: a Cancel is answered with the current status, answerYesNo N "
                     "(always so once delivered)",
    "RENEW_ACCEPT": "supplier: a Renew is answered Loaned, answerYesNo Y, a new dueDate "
                    "(the default)",
    "RENEW_REJECT": "supplier: a Renew is answered Loaned, answerYesNo N",
    "SILENT": "supplier: confirms the request and then says nothing, ever (deadline tests)",
    "ERROR:<errorType>": "supplier: the request is confirmed ERROR with this errorType "
                         "(UnrecognisedDataValue when none or unknown)",
    "HTTP:<code>": "supplier, HTTP only: the request is answered with this HTTP status and no "
                   "confirmation (illmock's HTTP-ERROR-400 and HTTP-ERROR-500 too)",
    "DELAY:<seconds>": "supplier and requester: wait this long before each message about this "
                       "request (default: the mock's --delay)",
    "CANCEL": "requester: sends Cancel after the first status it gets",
    "NOTIFY": "requester: sends a Notification action with a note after the first status",
    "STATUS": "requester: sends a StatusRequest after the first status",
    "RENEW": "requester: sends Renew when the item is Loaned, before returning it",
    "NORETURN": "requester: keeps a loan (no Received, no ShippedReturn)",
    "NORETRY": "requester: does not answer RetryPossible with a Retry",
}

_TOKEN = re.compile(r"(?<![A-Za-z0-9_:-])(HTTP-ERROR-\d{3}|[A-Z][A-Z0-9_]*(?::[A-Za-z0-9_.]+)?)")
_MOCK_TOKEN = re.compile(r"MOCK:([^:\s#,;]+):([^\s#,;]*)")


@dataclass
class Scenario:
    """How the mock handles one request, read from its keywords."""

    statuses: list[Status] = field(default_factory=list)  # supplier: sent in this order
    retry_reason: str | None = None                         # supplier: RetryPossible first
    after_retry: str | None = None                          # supplier: the flow of the Retry
    modifiers: set[str] = field(default_factory=set)
    error_type: ErrorType | None = None                     # supplier: confirm ERROR
    http_status: int | None = None                          # supplier: answer this HTTP status
    delay: float | None = None
    keywords: list[str] = field(default_factory=list)       # as found, for the log

    @property
    def has_flow(self) -> bool:
        return bool(self.statuses or self.retry_reason or self.error_type
                    or self.http_status or "SILENT" in self.modifiers)


def flow_statuses(word: str, service_type: str | None) -> list[Status] | None:
    """`WILLSUPPLY_LOANED` -> [WillSupply, Loaned]; None when a part is no status word."""
    statuses: list[Status] = []
    for part in word.split("_"):
        status = STATUS_WORDS.get(part)
        if status is None:
            return None
        if part == "COMPLETED" and service_type != "Copy":
            status = Status.LOAN_COMPLETED
        statuses.append(status)
    return statuses


def _error_type(value: str) -> ErrorType:
    for error_type in ErrorType:
        if error_type.value.lower() == value.lower():
            return error_type
    return ErrorType.UNRECOGNISED_DATA_VALUE


def _apply(scenario: Scenario, token: str, service_type: str | None) -> bool:
    """Take one token into the scenario; False when it is no keyword."""
    word, _, value = token.partition(":")
    if word in SUPPLIER_MODIFIERS or word in REQUESTER_MODIFIERS:
        scenario.modifiers.add(word)
    elif token in ("HTTP-ERROR-400", "HTTP-ERROR-500"):
        scenario.http_status = int(token[-3:])
    elif word == "HTTP" and value.isdigit():
        scenario.http_status = int(value)
    elif word == "ERROR":
        scenario.error_type = _error_type(value)
    elif word == "DELAY":
        try:
            scenario.delay = max(0.0, float(value))
        except ValueError:
            return False
    elif word == "RETRY" and value:
        kind, _, after = value.partition("_")
        if kind not in RETRY_REASONS or scenario.has_flow:
            return False
        scenario.retry_reason = RETRY_REASONS[kind]
        scenario.after_retry = after or None
    else:
        statuses = flow_statuses(token, service_type)
        if statuses is None or scenario.has_flow:
            return False
        scenario.statuses = statuses
    return True


def _texts(content: dict[str, Any]) -> list[str]:
    service = content.get("serviceInfo") or {}
    bib = content.get("bibliographicInfo") or {}
    return [str(v) for v in (service.get("note"), bib.get("title"),
                             bib.get("supplierUniqueRecordId")) if v]


def scenario_of(content: dict[str, Any], own_value: str | None = None) -> Scenario:
    """The scenario a request's keywords describe (an empty one when it has none)."""
    service_type = (content.get("serviceInfo") or {}).get("serviceType")
    scenario = Scenario()
    texts = _texts(content)
    for text in texts[:1]:  # illmock's MOCK:<symbol>:<scenario> tokens, in the note only
        for symbol, chosen in _MOCK_TOKEN.findall(text):
            if own_value and symbol == own_value and chosen and \
                    _apply(scenario, chosen, service_type):
                scenario.keywords.append(chosen)
    for text in texts:
        cleaned = _MOCK_TOKEN.sub(" ", text)
        for token in _TOKEN.findall(cleaned):
            if _apply(scenario, token, service_type):
                scenario.keywords.append(token)
    return scenario


def after_retry(scenario: Scenario, service_type: str | None) -> Scenario:
    """The scenario of a Retry of a request whose scenario was RETRY:..."""
    word = scenario.after_retry or ("COPY" if service_type == "Copy" else "LOANED")
    statuses = flow_statuses(word, service_type) or [Status.UNFILLED]
    return Scenario(statuses=statuses, modifiers=set(scenario.modifiers), delay=scenario.delay,
                    keywords=[word])


class Fault(StrEnum):
    """One deliberate deviation of a broken mock (`run.py peer mock --break FAULT,...`)."""

    CONFIRMATION_TYPE = "confirmation-type"
    MISSING_MESSAGE_STATUS = "missing-message-status"
    WRONG_REQUEST_ID = "wrong-request-id"
    INVALID_TIMESTAMP = "invalid-timestamp"
    STALE_TIMESTAMP = "stale-timestamp"
    WRONG_ECHO = "wrong-echo"
    HTTP_ERROR = "http-error"
    STATUS_ORDER = "status-order"
    WRONG_AGENCY = "wrong-agency"
    NO_NOTE = "no-note"
    CANCEL_ANSWER = "cancel-answer"
    STATUS_ANSWER = "status-answer"
    RETRY_NO_COST = "retry-no-cost"
    RETRY_NO_PREVIOUS = "retry-no-previous"
    EARLY_RETURN = "early-return"


FAULTS: dict[Fault, str] = {
    Fault.CONFIRMATION_TYPE: "a request is confirmed with a supplyingAgencyMessageConfirmation",
    Fault.MISSING_MESSAGE_STATUS: "confirmations leave out confirmationHeader.messageStatus",
    Fault.WRONG_REQUEST_ID: "confirmations echo another requestingAgencyRequestId (-WRONG "
                            "appended)",
    Fault.INVALID_TIMESTAMP: "confirmations say timestampReceived 'yesterday'",
    Fault.STALE_TIMESTAMP: "confirmations are dated 2001-01-01T00:00:00Z",
    Fault.WRONG_ECHO: "confirmations echo another reasonForMessage or action",
    Fault.HTTP_ERROR: "a requestingAgencyMessage is acted on but answered HTTP 500",
    Fault.STATUS_ORDER: "a flow's statuses are sent last first (Loaned before WillSupply)",
    Fault.WRONG_AGENCY: "supplyingAgencyMessages name another supplyingAgencyId (-OTHER)",
    Fault.NO_NOTE: "Notifications carry no note",
    Fault.CANCEL_ANSWER: "a Cancel is answered Cancelled with answerYesNo N",
    Fault.STATUS_ANSWER: "a StatusRequest is answered with the status before the current one",
    Fault.RETRY_NO_COST: "RetryPossible CostExceedsMaxCost without offeredCosts",
    Fault.RETRY_NO_PREVIOUS: "a Retry request without requestingAgencyPreviousRequestId",
    Fault.EARLY_RETURN: "a loan is sent back (ShippedReturn) before it is Received",
}


def parse_faults(text: str | None) -> frozenset[Fault]:
    """`--break a,b` -> the faults; ValueError naming an unknown one."""
    chosen: set[Fault] = set()
    for name in (text or "").split(","):
        name = name.strip()
        if not name:
            continue
        try:
            chosen.add(Fault(name))
        except ValueError:
            raise ValueError(f"--break {name!r} is not one of "
                             f"{', '.join(f.value for f in Fault)}") from None
    return frozenset(chosen)
