"""Adjustments of elements: costs in the field a system uses, statuses a system cannot
take, the reasonForMessage a system needs to show a note.

Billing reads `deliveryInfo.deliveryCosts` (settlement/fees.py `fee_to_charge`). Alma
puts a supplier's charge in `offeredCosts`, and reads the charge of a delivery only from
`deliveryCosts` on Loaned or CopyCompleted; ReShare, as requester, records a cost only as
a loan condition's (`offeredCosts` together with `deliveryInfo.loanCondition`) and takes
the request's cost from it when the item is supplied (mod-rs
`ActionISO18626RequesterService`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from broker.profiles.model import Changes, Work

SUPPLIED = ("Loaned", "CopyCompleted")
# ReShare's loan condition for "there is a cost" (not an ISO 18626 open code).
RESHARE_OTHER_CONDITION = "other"


def _status(work: Work) -> Any:
    return (work.part("statusInfo") or {}).get("status")


def _first_costs(value: Any) -> dict[str, Any] | None:
    """One Costs object: 1.2 has one, 2021's retryInfo.offeredCosts a list."""
    if isinstance(value, dict):
        return value
    if isinstance(value, list) and value and isinstance(value[0], dict):
        first: dict[str, Any] = value[0]
        return first
    return None


def _positive(costs: dict[str, Any] | None) -> bool:
    try:
        return costs is not None and Decimal(str(costs.get("monetaryValue"))) > 0
    except InvalidOperation:
        return False


def offered_as_delivery(work: Work) -> Changes:
    """A Loaned or CopyCompleted whose charge is only in offeredCosts: the same amount in
    deliveryInfo.deliveryCosts (created with dateSent = the status's lastChange when the
    message has no deliveryInfo)."""
    if work.kind != "supplyingAgencyMessage" or _status(work) not in SUPPLIED:
        return []
    offered = _first_costs((work.part("messageInfo") or {}).get("offeredCosts"))
    where = "messageInfo.offeredCosts"
    if offered is None:
        offered = _first_costs((work.part("retryInfo") or {}).get("offeredCosts"))
        where = "retryInfo.offeredCosts"
    if offered is None:
        return []
    delivery = work.part("deliveryInfo")
    if delivery is not None and delivery.get("deliveryCosts") not in (None, [], {}):
        return []
    if delivery is None:
        sent = (work.part("statusInfo") or {}).get("lastChange")
        if not isinstance(sent, str):
            return []  # no date to give deliveryInfo: validation would refuse it anyway
        delivery = work.ensure("deliveryInfo")
        delivery["dateSent"] = sent
    delivery["deliveryCosts"] = dict(offered)
    return [f"deliveryInfo.deliveryCosts: {_shown(offered)} copied from {where}"]


def delivery_as_offered(work: Work) -> Changes:
    """Delivery costs also as offeredCosts with loan condition `other`, so that a ReShare
    requester shows the cost as a condition and records it (CrossLink does the same for
    requesters with `useOfferedCosts`)."""
    if work.kind != "supplyingAgencyMessage":
        return []
    delivery = work.part("deliveryInfo")
    costs = (delivery or {}).get("deliveryCosts")
    info = work.part("messageInfo")
    if delivery is None or info is None or not isinstance(costs, dict) or \
            not _positive(costs) or info.get("offeredCosts") is not None:
        return []
    info["offeredCosts"] = dict(costs)
    changes = [f"messageInfo.offeredCosts: {_shown(costs)} from deliveryInfo.deliveryCosts"]
    if not delivery.get("loanCondition"):
        delivery["loanCondition"] = RESHARE_OTHER_CONDITION
        changes.append(f"deliveryInfo.loanCondition: {RESHARE_OTHER_CONDITION!r}")
    return changes


def no_expect_to_supply(work: Work) -> Changes:
    """ExpectToSupply is not sent: the system has no such status. The requester learns of
    the supplier's answer from the next status (WillSupply, Loaned, Unfilled ...).

    A Notification that carries news in ExpectToSupply (a note, a loan condition, a cost:
    the supplier's conditions while the hub still waits for its answer, the rota moving
    on) is not lost: it goes with status WillSupply, as CrossLink sends Alma every
    ExpectToSupply; a Notification changes no state on either side."""
    if work.kind != "supplyingAgencyMessage" or _status(work) != "ExpectToSupply":
        return []
    info = work.part("messageInfo") or {}
    delivery = work.part("deliveryInfo") or {}
    news = info.get("note") or info.get("offeredCosts") or delivery.get("loanCondition")
    if info.get("reasonForMessage") == "Notification" and news:
        status = work.ensure("statusInfo")
        status["status"] = "WillSupply"
        return ["statusInfo.status: 'ExpectToSupply' -> 'WillSupply' (a Notification with "
                "news)"]
    work.drop = "its ILL system has no status ExpectToSupply"
    return ["ExpectToSupply not sent"]


def alma_reason(work: Work) -> Changes:
    """The reasonForMessage Alma acts on: WillSupply with a condition or a cost as a
    Notification (Alma shows the note, which carries them), WillSupply otherwise as a
    RequestResponse, Loaned as a StatusChange, LoanCompleted as a RequestResponse."""
    if work.kind != "supplyingAgencyMessage":
        return []
    info = work.part("messageInfo")
    reason = (info or {}).get("reasonForMessage")
    if info is None or reason not in ("RequestResponse", "StatusChange"):
        return []
    status = _status(work)
    wanted = reason
    if status == "WillSupply":
        condition = (work.part("deliveryInfo") or {}).get("loanCondition")
        costly = _positive(_first_costs(info.get("offeredCosts")))
        wanted = "Notification" if condition or costly else "RequestResponse"
    elif status == "Loaned":
        wanted = "StatusChange"
    elif status == "LoanCompleted":
        wanted = "RequestResponse"
    if wanted == reason:
        return []
    info["reasonForMessage"] = wanted
    return [f"messageInfo.reasonForMessage: {reason!r} -> {wanted!r} (status {status})"]


def _shown(costs: dict[str, Any]) -> str:
    return f"{costs.get('monetaryValue')} {costs.get('currencyCode')}"
