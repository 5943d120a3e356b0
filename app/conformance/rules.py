"""The rules `run.py peer check` judges a peer by, and what a judgement looks like.

Every deviation is one `Verdict`: the element it concerns, by its path in the JSON/XML
form (`requestConfirmation.confirmationHeader.messageStatus`), what is wrong with it,
and the rule it breaks. A rule has a short code, printed with every verdict, and says
where it comes from: the official XSD of the peer's version, ISO 18626's message and
status model, or the hub's own contract (README "Connecting an ILL system by ISO 18626",
ARCHITECTURE §3.5). docs/conformance.md lists them all.

FAIL is a deviation (the hub, or a partner, would refuse or misread the message); WARN
is allowed but unusual, or accepted by the hub only as a leniency, and worth fixing.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Level(StrEnum):
    FAIL = "FAIL"
    WARN = "WARN"


@dataclass(frozen=True)
class Rule:
    code: str
    source: str      # where the rule comes from, as printed after every verdict
    text: str        # the rule in full (report, docs/conformance.md)


def _rule(code: str, source: str, text: str) -> Rule:
    return Rule(code, source, text)


XSD = _rule("XSD", "ISO 18626 XSD",
            "Every document validates against the official XSD of the version the peer is "
            "registered with (schemas/xsd/); the hub refuses what does not.")
LENIENT = _rule("LENIENT", "hub leniency",
                "The hub accepted the document only by a documented leniency (README: "
                "'Accepted although the XSD says otherwise'); a strict partner may refuse it.")
HTTP = _rule("HTTP", "ISO 18626 over HTTP",
             "Each POSTed message is answered with HTTP 200 and its confirmation as the "
             "body; the hub retries anything else (no answer, another status, a body that "
             "is not a confirmation) with backoff, holding up the peer's later messages.")
CONF_TYPE = _rule("CONF-TYPE", "ISO 18626 confirmations",
                  "A request is confirmed by a requestConfirmation, a supplyingAgencyMessage "
                  "by a supplyingAgencyMessageConfirmation, a requestingAgencyMessage by a "
                  "requestingAgencyMessageConfirmation.")
CONF_STATUS = _rule("CONF-STATUS", "ISO 18626 confirmations",
                    "A valid message is confirmed with messageStatus OK; ERROR carries "
                    "errorData (errorType, errorValue) and OK carries none. The hub closes a "
                    "message answered ERROR as refused and never sends it again.")
ECHO = _rule("ECHO", "ISO 18626 confirmations",
             "A confirmation echoes the header of the message it confirms "
             "(requestingAgencyRequestId, requestingAgencyId, supplyingAgencyId) and its "
             "reasonForMessage or action.")
TIME = _rule("TIME", "ISO 18626 header",
             "Timestamps are the real time of the event: not in the future (five minutes of "
             "clock difference allowed); a confirmation's not before the message it confirms "
             "was sent.")
IDS = _rule("IDS", "ISO 18626 header",
            "Every message about a request carries the requester's "
            "requestingAgencyRequestId and names the requesting and the supplying agency as "
            "the request did.")
ORDER = _rule("ORDER", "ISO 18626 status model",
              "A status or action is one the status model allows at that point, in the "
              "standard's order (the hub's state tables, broker/states.py): the hub refuses "
              "one the request cannot reach and keeps the state on one it has passed.")
REASON = _rule("REASON", "ISO 18626 reasonForMessage",
               "reasonForMessage says why the message is sent: RequestResponse for the "
               "first answer to a request, StatusRequestResponse to a StatusRequest, "
               "CancelResponse to a Cancel, RenewResponse to a Renew, StatusChange for a "
               "new status, Notification for a note.")
NOTE = _rule("NOTE", "ISO 18626 Notification",
             "A Notification carries a note and does not change the status.")
CANCEL = _rule("CANCEL", "ISO 18626 CancelResponse",
               "A CancelResponse says answerYesNo Y with status Cancelled, or N with the "
               "request's status unchanged.")
STATUS_ANSWER = _rule("STATUS-ANSWER", "ISO 18626 StatusRequest",
                      "A StatusRequestResponse gives the request's current status.")
RETRY = _rule("RETRY", "ISO 18626 retry",
              "RetryPossible names reasonRetry, and with CostExceedsMaxCost the offeredCosts "
              "(1.2: messageInfo.offeredCosts, 2021: retryInfo.offeredCosts); a Retry is a "
              "new request with requestType Retry and requestingAgencyPreviousRequestId "
              "naming the request it retries.")
REQUEST = _rule("REQUEST", "hub contract",
                "A new request names its sender as requestingAgencyId and a "
                "requestingAgencyRequestId of its own; supplyingAgencyId empty or the hub's "
                "symbol lets the hub choose the supplier.")
DELIVERY = _rule("DELIVERY", "ISO 18626 delivery",
                 "A Loaned gives statusInfo.dueDate; Loaned and CopyCompleted give "
                 "deliveryInfo (dateSent, how it was sent); Unfilled gives reasonUnfilled.")
AUTH = _rule("AUTH", "hub contract",
             "A message to the hub carries HTTP Basic with the agency's symbol and password, "
             "or header.requestingAgencyAuthentication; without them the hub answers 401.")
ANSWER = _rule("ANSWER", "conformance step",
               "The peer sends, within the wait, the message the step asks for (in the "
               "request's note, for people; in its keywords, for automated peers).")

RULES: tuple[Rule, ...] = (XSD, LENIENT, HTTP, CONF_TYPE, CONF_STATUS, ECHO, TIME, IDS, ORDER,
                           REASON, NOTE, CANCEL, STATUS_ANSWER, RETRY, REQUEST, DELIVERY, AUTH,
                           ANSWER)


@dataclass(frozen=True)
class Verdict:
    level: Level
    element: str     # the element's path, e.g. requestConfirmation.confirmationHeader.timestamp
    problem: str
    rule: Rule

    @property
    def line(self) -> str:
        """`element: problem (CODE, source)`, one line, the same in every output."""
        return f"{self.element}: {self.problem} ({self.rule.code}, {self.rule.source})"


def fail(element: str, problem: str, rule: Rule) -> Verdict:
    return Verdict(Level.FAIL, element, problem, rule)


def warn(element: str, problem: str, rule: Rule) -> Verdict:
    return Verdict(Level.WARN, element, problem, rule)
