"""The check with the peer as supplier: the check is the requester (through the hub).

Each flow sends the peer a request, as the hub forwards one, whose note asks for a
particular answer twice over: in words for the library's staff, and in scenario
keywords for an automated peer (the peer mock's, sim/peer_scenarios.py; the keyword is
also in `supplierUniqueRecordId`, where CrossLink's illmock looks for it). Then it
judges every message the peer sends about the request, in order, and answers some.

    loan      new request and confirmation; ExpectToSupply/WillSupply; Loaned;
              StatusRequest; notification; Loaned and return
    copy      CopyCompleted
    unfilled  Unfilled
    retry     RetryPossible and Retry
    cancel    Cancel
"""

from __future__ import annotations

from typing import Any

from app.conformance.judge import Track, judge_header, judge_status, offered_costs
from app.conformance.rules import ANSWER, fail
from app.conformance.session import Check, Got, Stalled, StepResult
from broker.states import Event
from schemas.iso18626_codes import Action, MessageType, ReasonForMessage, Status
from sim.messages import agency_id, now_iso, requesting_message

ROLE = "supplier"
ANY = frozenset(Status)
FIRST = frozenset({Status.EXPECT_TO_SUPPLY, Status.WILL_SUPPLY, Status.LOANED})

FLOWS: dict[str, tuple[str, ...]] = {
    "loan": ("new request and confirmation", "ExpectToSupply/WillSupply", "Loaned",
             "StatusRequest", "notification", "Loaned and return"),
    "copy": ("CopyCompleted",),
    "unfilled": ("Unfilled",),
    "retry": ("RetryPossible and Retry",),
    "cancel": ("Cancel",),
}

# What each flow asks of the peer: its keywords, and the same in words.
ASK: dict[str, tuple[str, str]] = {
    "loan": ("WILLSUPPLY_LOANED NOTIFICATION",
             "please answer WillSupply, send a note, then lend it (Loaned); it comes back"),
    "copy": ("COPY", "please send a copy (CopyCompleted)"),
    "unfilled": ("UNFILLED", "please answer Unfilled"),
    "retry": ("RETRY:COST", "please answer RetryPossible, CostExceedsMaxCost, with your "
                            "price; then supply the Retry"),
    "cancel": ("WILLSUPPLY CANCEL_ACCEPT", "please answer WillSupply; a Cancel follows: "
                                           "accept it"),
}


class SupplierSide:
    def __init__(self, check: Check) -> None:
        self.check = check
        self.peer = check.target.symbol
        self.partner = check.options.partner

    def request_id(self, flow: str) -> str:
        return f"{self.check.options.token}-s-{flow}"

    def _request(self, request_id: str, flow: str, service_type: str, *,
                 max_cost: dict[str, Any] | None = None,
                 retry_of: str | None = None) -> dict[str, Any]:
        keywords, words = ASK[flow]
        service: dict[str, Any] = {"requestType": "Retry" if retry_of else "New",
                                   "serviceType": service_type, "serviceLevel": "Normal",
                                   "note": f"ILLHUB-CHECK {request_id}: {keywords} - {words}"}
        if retry_of:
            service["requestingAgencyPreviousRequestId"] = retry_of
        content: dict[str, Any] = {
            "header": {"supplyingAgencyId": agency_id(self.peer),
                       "requestingAgencyId": agency_id(self.partner), "timestamp": now_iso(),
                       "requestingAgencyRequestId": request_id},
            "bibliographicInfo": {"supplierUniqueRecordId": keywords.split()[0],
                                  "title": f"ILL Hub conformance check {request_id}",
                                  "author": "ILL Hub"},
            "serviceInfo": service}
        if max_cost:
            content["billingInfo"] = {"maximumCosts": max_cost}
        return {"request": content}

    async def open(self, step: StepResult, flow: str, service_type: str, *,
                   max_cost: dict[str, Any] | None = None, retry_of: str | None = None,
                   request_id: str | None = None) -> Track:
        """Send the flow's request; the track of it."""
        request_id = request_id or self.request_id(flow)
        body = self._request(request_id, flow, service_type, max_cost=max_cost,
                             retry_of=retry_of)
        track = Track(request_id, self.partner, frozenset({self.peer}),
                      None if service_type == "CopyOrLoan" else service_type == "Loan")
        what = "Retry" if retry_of else "request"
        await self.check.post(step, body, f"{what} {request_id} ({service_type}; asks "
                                          f"{ASK[flow][0]})")
        return track

    async def act(self, step: StepResult, track: Track, action: Action,
                  note: str | None = None) -> None:
        """Send a requester's action about `track`'s request."""
        body = requesting_message(self.partner, self.peer, track.request_id, action, note)
        await self.check.post(step, body, f"requestingAgencyMessage {action} on "
                                          f"{track.request_id}")
        track.move(Event.of_action(action))
        if action in (Action.CANCEL, Action.STATUS_REQUEST):
            track.pending = action

    async def await_status(self, step: StepResult, track: Track, wanted: frozenset[Status],
                           reason: ReasonForMessage | None = None) -> Got:
        """Judge the peer's messages about `track` until one has a `wanted` status (and
        `reason`); Stalled when none comes or the request ends otherwise."""
        while True:
            got = await self.check.receive(step, lambda g: g.request_id == track.request_id)
            if got is None:
                names = "/".join(sorted(wanted)) if wanted != ANY else "any status"
                because = f" ({reason})" if reason else ""
                step.verdicts.append(fail(
                    "supplyingAgencyMessage", f"none with {names}{because} within "
                                              f"{self.check.options.wait:g} s", ANSWER))
                raise Stalled(step.name)
            status, got_reason = self._judge(step, track, got)
            if status is None or got_reason == ReasonForMessage.NOTIFICATION:
                continue
            if got_reason == ReasonForMessage.STATUS_REQUEST_RESPONSE and \
                    reason is not ReasonForMessage.STATUS_REQUEST_RESPONSE:
                continue
            if status in wanted and (reason is None or got_reason == reason):
                return got
            if track.ended:
                step.verdicts.append(fail("supplyingAgencyMessage.statusInfo.status",
                                          f"the request ended {status!r}; the step waits "
                                          f"for {'/'.join(sorted(wanted))}", ANSWER))
                raise Stalled(step.name)

    def _judge(self, step: StepResult, track: Track, got: Got) -> tuple[str | None, Any]:
        if got.kind is None:
            return None, None
        if got.kind is not MessageType.SUPPLYING_AGENCY_MESSAGE:
            step.verdicts.append(fail(str(got.kind), "sent by the supplier; a supplier sends "
                                                     "supplyingAgencyMessage", ANSWER))
            return None, None
        content = got.content
        step.verdicts += judge_header("supplyingAgencyMessage", content.get("header") or {},
                                      track)
        step.verdicts += judge_status(content, track, self.check.target.version)
        status = (content.get("statusInfo") or {}).get("status")
        return status, (content.get("messageInfo") or {}).get("reasonForMessage")

    async def settle(self, step: StepResult, track: Track) -> None:
        """Judge what else the peer sends about `track` shortly after the flow's end."""
        while True:
            got = await self.check.receive(step, lambda g: g.request_id == track.request_id,
                                           timeout=self.check.options.grace)
            if got is None:
                return
            self._judge(step, track, got)


async def loan(side: SupplierSide) -> None:
    check = side.check
    step = check.step(ROLE, "loan", "new request and confirmation")
    track = await side.open(step, "loan", "Loan")
    step = check.step(ROLE, "loan", "ExpectToSupply/WillSupply")
    await side.await_status(step, track, FIRST)
    step = check.step(ROLE, "loan", "Loaned")
    if track.returnable and track.state.value in ("Loaned", "Received"):
        step.notes.append("Loaned already, in the step before")
    else:
        await side.await_status(step, track, frozenset({Status.LOANED}))
    step = check.step(ROLE, "loan", "StatusRequest")
    await side.act(step, track, Action.STATUS_REQUEST)
    await side.await_status(step, track, ANY, ReasonForMessage.STATUS_REQUEST_RESPONSE)
    step = check.step(ROLE, "loan", "notification")
    await side.act(step, track, Action.NOTIFICATION,
                   "A note from ILL Hub's conformance check: please confirm it.")
    step = check.step(ROLE, "loan", "Loaned and return")
    await side.act(step, track, Action.RECEIVED)
    await side.act(step, track, Action.SHIPPED_RETURN)
    await side.await_status(step, track, frozenset({Status.LOAN_COMPLETED}))
    await side.settle(step, track)


async def copy(side: SupplierSide) -> None:
    step = side.check.step(ROLE, "copy", "CopyCompleted")
    track = await side.open(step, "copy", "Copy")
    await side.await_status(step, track, frozenset({Status.COPY_COMPLETED}))
    await side.settle(step, track)


async def unfilled(side: SupplierSide) -> None:
    step = side.check.step(ROLE, "unfilled", "Unfilled")
    track = await side.open(step, "unfilled", "Loan")
    await side.await_status(step, track, frozenset({Status.UNFILLED}))
    await side.settle(step, track)


async def retry(side: SupplierSide) -> None:
    step = side.check.step(ROLE, "retry", "RetryPossible and Retry")
    limit = {"currencyCode": "CNY", "monetaryValue": "10.00"}
    track = await side.open(step, "retry", "Copy", max_cost=limit)
    got = await side.await_status(step, track, frozenset({Status.RETRY_POSSIBLE}))
    offered = offered_costs(got.content) or {"currencyCode": "CNY", "monetaryValue": "20.00"}
    again = await side.open(step, "retry", "Copy", max_cost=offered,
                            retry_of=track.request_id, request_id=f"{track.request_id}-retry")
    await side.await_status(step, again, ANY - {Status.RETRY_POSSIBLE})
    await side.settle(step, again)


async def cancel(side: SupplierSide) -> None:
    step = side.check.step(ROLE, "cancel", "Cancel")
    track = await side.open(step, "cancel", "Loan")
    await side.await_status(step, track, FIRST)
    await side.act(step, track, Action.CANCEL)
    await side.await_status(step, track, ANY, ReasonForMessage.CANCEL_RESPONSE)
    await side.settle(step, track)


RUNS = {"loan": loan, "copy": copy, "unfilled": unfilled, "retry": retry, "cancel": cancel}
