"""What dispatch sends: ISO 18626 messages to the requester and the current supplier,
relays of what the other side sent, and domain events on `ill.events`.

Every message carries the header `hub-transaction-id` and the requester's request id
as correlation id.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.dispatch.desk import Desk, iso
from broker.dispatch.store import Txn
from broker.states import Event, HubEvent, State
from infra.outbox import Outgoing
from schemas import jsontext
from schemas.iso18626_codes import Action, MessageType, ReasonForMessage
from schemas.wire import EVENTS, OUTBOUND


def agency_id(symbol: str) -> dict[str, str]:
    scheme, _, value = symbol.partition(":")
    return {"agencyIdType": scheme, "agencyIdValue": value}


def _to(txn: Txn, agency: str, body: dict[str, Any], kind: MessageType,
        **headers: str) -> Outgoing:
    return Outgoing(exchange=OUTBOUND, routing_key=agency, body=body, message_type=kind,
                    correlation_id=txn.request_id,
                    headers={"hub-transaction-id": txn.id, **headers})


def _header(desk: Desk, txn: Txn, supplier: str | None, now: datetime) -> dict[str, Any]:
    return {"supplyingAgencyId": agency_id(supplier or desk.settings.hub_symbol),
            "requestingAgencyId": agency_id(txn.requester), "timestamp": iso(now),
            "requestingAgencyRequestId": txn.request_id}


def to_requester(desk: Desk, txn: Txn, reason: ReasonForMessage, status: str, now: datetime,
                 *, supplier: str | None, note: str | None = None, answer: str | None = None,
                 reason_unfilled: str | None = None,
                 more_info: dict[str, Any] | None = None) -> Outgoing:
    """A supplyingAgencyMessage of the hub's own making (from the hub when no supplier)."""
    info: dict[str, Any] = {"reasonForMessage": reason}
    for key, value in (("answerYesNo", answer), ("note", note),
                       ("reasonUnfilled", reason_unfilled)):
        if value:
            info[key] = value
    info.update(more_info or {})
    body = {"supplyingAgencyMessage": {
        "header": _header(desk, txn, supplier, now), "messageInfo": info,
        "statusInfo": {"status": status, "lastChange": iso(now)}}}
    return _to(txn, txn.requester, body, MessageType.SUPPLYING_AGENCY_MESSAGE)


def to_supplier_action(desk: Desk, txn: Txn, action: Action, now: datetime,
                       note: str | None) -> Outgoing:
    """A requestingAgencyMessage of the hub's own making, to the current supplier."""
    supplier = txn.current_supplier
    body: dict[str, Any] = {"requestingAgencyMessage": {
        "header": _header(desk, txn, supplier, now), "action": action}}
    if note:
        body["requestingAgencyMessage"]["note"] = note
    return _to(txn, supplier, body, MessageType.REQUESTING_AGENCY_MESSAGE)


def relay_to_requester(txn: Txn, raw: dict[str, Any], message_id: str) -> Outgoing:
    """The supplier's message as it came (hubExtensions added at most)."""
    return _to(txn, txn.requester, raw, MessageType.SUPPLYING_AGENCY_MESSAGE,
               **{"hub-original-message-id": message_id})


def restated(raw: dict[str, Any], status: str, now: datetime) -> dict[str, Any]:
    """A supplier's message whose status the hub does not apply (a Notification, a status
    passed already) as the requester gets it: with the status the requester knows, so it
    never sees its request go back nor a message without one. The supplier's lastChange
    and dates stay; the original is in the audit trail and the inbox."""
    body: dict[str, Any] = jsontext.copied(raw)
    inner = body["supplyingAgencyMessage"]
    info = inner.get("statusInfo")
    info = dict(info) if isinstance(info, dict) else {}
    info["status"] = status
    if not info.get("lastChange"):
        info["lastChange"] = iso(now)
    inner["statusInfo"] = info
    return body


def relay_to_supplier(txn: Txn, raw: dict[str, Any], message_id: str) -> Outgoing:
    """The requester's message as it came."""
    return _to(txn, txn.current_supplier, raw, MessageType.REQUESTING_AGENCY_MESSAGE,
               **{"hub-original-message-id": message_id})


def event(txn: Txn, from_state: State | None, to_state: State, what: Event | HubEvent,
          now: datetime, supplier: str | None = None) -> Outgoing:
    """A domain event on `ill.events`, routing key `transaction.<state>`."""
    return Outgoing(exchange=EVENTS, routing_key=f"transaction.{to_state}",
                    message_type="transactionEvent", correlation_id=txn.request_id,
                    headers={"hub-transaction-id": txn.id},
                    body={"transactionId": txn.id, "requester": txn.requester,
                          "supplier": supplier or txn.supplier, "event": what,
                          "from": from_state, "to": to_state, "at": iso(now)})


def forwarded(desk: Desk, txn: Txn, from_state: State, supplier: str, position: int,
              now: datetime, note: str | None, first: bool) -> list[Outgoing]:
    """What a forward sends: the request to the supplier, news to the requester."""
    request = txn.request_body()
    request["request"]["header"]["supplyingAgencyId"] = agency_id(supplier)
    forward = Outgoing(
        exchange=OUTBOUND, routing_key=supplier, body=request, message_type=MessageType.REQUEST,
        correlation_id=txn.request_id, headers={"hub-transaction-id": txn.id},
        # Stable per (transaction, rota position): a re-sent forward is recognisable.
        message_id=f"{txn.id}/forward/{position}")
    tell = to_requester(
        desk, txn, ReasonForMessage.REQUEST_RESPONSE if first else ReasonForMessage.NOTIFICATION,
        State.EXPECT_TO_SUPPLY, now, supplier=supplier,
        note=None if first else f"{note}; forwarded to {supplier}")
    return [forward, tell, event(txn, from_state, State.EXPECT_TO_SUPPLY, HubEvent.FORWARD, now,
                                 supplier=supplier)]
