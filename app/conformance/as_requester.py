"""The check with the peer as requester: the check is the supplier (through the hub).

A requester's system sends requests when its staff or its patrons ask for them, so each
flow first POSTs the peer a request with `requestSubType` PatronRequest (CrossLink
illmock's convention, which the peer mock follows too: "request this item for a
patron"), titled `ILL Hub conformance check <id>`. A system without that convention
confirms it or refuses it, and the check then waits for a request with that title made
by hand; the note says what to do, in words and in scenario keywords. Then the check
answers the peer's request as a supplier would and judges each confirmation and each
action the peer sends.

    loan      new request and confirmation; ExpectToSupply/WillSupply; notification;
              Loaned and return
    copy      CopyCompleted
    unfilled  Unfilled
    retry     RetryPossible and Retry
    cancel    Cancel
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.conformance.judge import Track, judge_action, judge_header, judge_request
from app.conformance.rules import ANSWER, fail
from app.conformance.session import Check, Got, Stalled, StepResult
from broker.states import Event
from schemas.iso18626_codes import Action, MessageType, ReasonForMessage, Status
from sim.messages import agency_id, later_iso, now_iso

ROLE = "requester"

FLOWS: dict[str, tuple[str, ...]] = {
    "loan": ("new request and confirmation", "ExpectToSupply/WillSupply", "notification",
             "Loaned and return"),
    "copy": ("CopyCompleted",),
    "unfilled": ("Unfilled",),
    "retry": ("RetryPossible and Retry",),
    "cancel": ("Cancel",),
}

ASK: dict[str, tuple[str, str, str]] = {  # serviceType, keywords, words
    "loan": ("Loan", "", "please request this loan; when it is Loaned, mark it received and "
                         "send it back"),
    "copy": ("Copy", "", "please request this copy"),
    "unfilled": ("Loan", "", "please request this loan"),
    "retry": ("Copy", "", "please request this copy; when a higher price is asked, retry at "
                          "that price"),
    "cancel": ("Loan", "CANCEL", "please request this loan, then cancel it as soon as the "
                                 "supplier answers"),
}


class NotDriven(Exception):
    """The peer neither took the PatronRequest nor sent the request by hand in time."""


class RequesterSide:
    def __init__(self, check: Check) -> None:
        self.check = check
        self.peer = check.target.symbol
        self.partner = check.options.partner
        self.used: set[str] = set()

    @property
    def suppliers(self) -> frozenset[str]:
        return frozenset({self.partner, self.check.options.hub_symbol})

    async def open(self, step: StepResult, flow: str) -> Track:
        """Have the peer request an item; its request judged and confirmed: the track."""
        service_type, keywords, words = ASK[flow]
        token = f"{self.check.options.token}-r-{flow}"
        title = f"ILL Hub conformance check {token}"
        kick = {"request": {
            "header": {"supplyingAgencyId": agency_id(self.partner),
                       "requestingAgencyId": agency_id(self.peer), "timestamp": now_iso(),
                       "requestingAgencyRequestId": f"{token}-patron"},
            "bibliographicInfo": {"title": title, "author": "ILL Hub"},
            "serviceInfo": {"requestType": "New", "requestSubType": ["PatronRequest"],
                            "serviceType": service_type,
                            "note": f"ILLHUB-CHECK {token}: {keywords} - {words}"}}}
        asked = datetime.now(UTC).replace(microsecond=0)
        answer = await self.check.post(step, kick, f"PatronRequest {token}-patron "
                                                   f"({service_type}): {words}", judge=False)
        taken = answer is not None and answer.message is not None and \
            (answer.content.get("confirmationHeader") or {}).get("messageStatus") == "OK"
        if not taken:
            step.notes.append(f"the peer did not take the PatronRequest: create a "
                              f"{service_type} request titled {title!r} by hand")
        got = await self.check.receive(step, lambda g: _is_request_for(g, title))
        if got is None:
            if not taken:
                raise NotDriven(f"no request titled {title!r} within "
                                f"{self.check.options.wait:g} s")
            step.verdicts.append(fail("request", f"none titled {title!r} within "
                                                 f"{self.check.options.wait:g} s after the "
                                                 "PatronRequest", ANSWER))
            raise Stalled(step.name)
        step.verdicts += judge_request(got.content, peer=self.peer, suppliers=self.suppliers,
                                       used=self.used, since=asked)
        request_id = got.request_id or ""
        self.used.add(request_id)
        return Track(request_id, self.peer, self.suppliers,
                     None if service_type == "CopyOrLoan" else service_type == "Loan",
                     started=asked)

    async def tell(self, step: StepResult, track: Track, status: Status,
                   reason: ReasonForMessage, **info: Any) -> None:
        """Send the peer a supplier's message about `track`'s request."""
        message: dict[str, Any] = {
            "header": {"supplyingAgencyId": agency_id(self.partner),
                       "requestingAgencyId": agency_id(self.peer), "timestamp": now_iso(),
                       "requestingAgencyRequestId": track.request_id,
                       "supplyingAgencyRequestId": f"{self.check.options.token}-sup"},
            "messageInfo": {"reasonForMessage": reason,
                            **{k: v for k, v in info.items() if k not in ("due", "delivery")}},
            "statusInfo": {"status": status, "lastChange": now_iso()}}
        if info.get("due"):
            message["statusInfo"]["dueDate"] = info["due"]
        if info.get("delivery"):
            message["deliveryInfo"] = info["delivery"]
        await self.check.post(step, {"supplyingAgencyMessage": message},
                              f"supplyingAgencyMessage {status} ({reason}) on "
                              f"{track.request_id}")
        if reason not in (ReasonForMessage.NOTIFICATION,
                          ReasonForMessage.STATUS_REQUEST_RESPONSE):
            track.move(Event.of_status(status))

    async def await_action(self, step: StepResult, track: Track, wanted: frozenset[Action],
                           timeout: float | None = None, *, required: bool = True) -> Got | None:
        """Judge the peer's messages about `track` until one is a `wanted` action."""
        while True:
            got = await self.check.receive(step, lambda g: g.request_id == track.request_id,
                                           timeout)
            if got is None:
                if not required:
                    return None
                step.verdicts.append(fail("requestingAgencyMessage.action",
                                          f"no {'/'.join(sorted(wanted))} within "
                                          f"{self.check.options.wait:g} s", ANSWER))
                raise Stalled(step.name)
            action = self._judge(step, track, got)
            if action in wanted:
                return got

    def _judge(self, step: StepResult, track: Track, got: Got) -> Any:
        if got.kind is None:
            return None
        if got.kind is not MessageType.REQUESTING_AGENCY_MESSAGE:
            step.verdicts.append(fail(str(got.kind), "sent about a request under way; a "
                                                     "requester sends requestingAgencyMessage",
                                      ANSWER))
            return None
        step.verdicts += judge_header("requestingAgencyMessage", got.header, track)
        step.verdicts += judge_action(got.content, track)
        return got.content.get("action")

    async def await_retry(self, step: StepResult, track: Track, title: str) -> Track:
        """The peer's Retry of `track`'s request, judged: the track of the Retry."""
        got = await self.check.receive(step, lambda g: _is_request_for(g, title))
        if got is None:
            step.verdicts.append(fail("request", f"no Retry of {track.request_id!r} within "
                                                 f"{self.check.options.wait:g} s", ANSWER))
            raise Stalled(step.name)
        step.verdicts += judge_request(got.content, peer=self.peer, suppliers=self.suppliers,
                                       used=self.used, since=track.started,
                                       retry_of=track.request_id)
        request_id = got.request_id or ""
        self.used.add(request_id)
        return Track(request_id, self.peer, self.suppliers, track.returnable)

    async def settle(self, step: StepResult, track: Track) -> None:
        """Judge what else the peer sends about `track` shortly after the flow's end."""
        await self.await_action(step, track, frozenset(), self.check.options.grace,
                                required=False)


def _is_request_for(got: Got, title: str) -> bool:
    if got.kind is not MessageType.REQUEST:
        return False
    service = got.content.get("serviceInfo") or {}
    if "PatronRequest" in (service.get("requestSubType") or []):
        return False
    bib = got.content.get("bibliographicInfo") or {}
    return title in str(bib.get("title") or "")


def _copy_delivery(track: Track) -> dict[str, Any]:
    return {"dateSent": now_iso(), "sentVia": "URL", "deliveredFormat": "PDF",
            "itemId": f"https://illhub.invalid/check/{track.request_id}.pdf"}


async def loan(side: RequesterSide) -> None:
    check = side.check
    step = check.step(ROLE, "loan", "new request and confirmation")
    track = await side.open(step, "loan")
    step = check.step(ROLE, "loan", "ExpectToSupply/WillSupply")
    await side.tell(step, track, Status.EXPECT_TO_SUPPLY, ReasonForMessage.REQUEST_RESPONSE)
    await side.tell(step, track, Status.WILL_SUPPLY, ReasonForMessage.STATUS_CHANGE,
                    answerYesNo="Y")
    step = check.step(ROLE, "loan", "notification")
    await side.tell(step, track, Status.WILL_SUPPLY, ReasonForMessage.NOTIFICATION,
                    note="A note from ILL Hub's conformance check: please confirm it.")
    step = check.step(ROLE, "loan", "Loaned and return")
    await side.tell(step, track, Status.LOANED, ReasonForMessage.STATUS_CHANGE,
                    due=later_iso(28), delivery={"dateSent": now_iso(), "sentVia": "Mail",
                                                 "itemId": f"CHECK-{track.request_id}"})
    await side.await_action(step, track, frozenset({Action.SHIPPED_RETURN}))
    if Action.RECEIVED not in track.actions:  # optional, but judged if it comes late
        await side.await_action(step, track, frozenset({Action.RECEIVED}),
                                min(2.0, check.options.wait), required=False)
    await side.tell(step, track, Status.LOAN_COMPLETED, ReasonForMessage.STATUS_CHANGE)
    await side.settle(step, track)


async def copy(side: RequesterSide) -> None:
    step = side.check.step(ROLE, "copy", "CopyCompleted")
    track = await side.open(step, "copy")
    await side.tell(step, track, Status.COPY_COMPLETED, ReasonForMessage.REQUEST_RESPONSE,
                    answerYesNo="Y", delivery=_copy_delivery(track))
    await side.settle(step, track)


async def unfilled(side: RequesterSide) -> None:
    step = side.check.step(ROLE, "unfilled", "Unfilled")
    track = await side.open(step, "unfilled")
    await side.tell(step, track, Status.UNFILLED, ReasonForMessage.REQUEST_RESPONSE,
                    answerYesNo="N", reasonUnfilled="NotHeld")
    await side.settle(step, track)


async def retry(side: RequesterSide) -> None:
    step = side.check.step(ROLE, "retry", "RetryPossible and Retry")
    track = await side.open(step, "retry")
    await side.tell(step, track, Status.RETRY_POSSIBLE, ReasonForMessage.REQUEST_RESPONSE,
                    answerYesNo="N", reasonRetry="CostExceedsMaxCost",
                    offeredCosts={"currencyCode": "CNY", "monetaryValue": "35.00"})
    title = f"ILL Hub conformance check {side.check.options.token}-r-retry"
    again = await side.await_retry(step, track, title)
    await side.tell(step, again, Status.COPY_COMPLETED, ReasonForMessage.REQUEST_RESPONSE,
                    answerYesNo="Y", delivery=_copy_delivery(again))
    await side.settle(step, again)


async def cancel(side: RequesterSide) -> None:
    step = side.check.step(ROLE, "cancel", "Cancel")
    track = await side.open(step, "cancel")
    await side.tell(step, track, Status.EXPECT_TO_SUPPLY, ReasonForMessage.REQUEST_RESPONSE)
    await side.await_action(step, track, frozenset({Action.CANCEL}))
    await side.tell(step, track, Status.CANCELLED, ReasonForMessage.CANCEL_RESPONSE,
                    answerYesNo="Y")
    await side.settle(step, track)


RUNS = {"loan": loan, "copy": copy, "unfilled": unfilled, "retry": retry, "cancel": cancel}
