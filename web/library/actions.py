"""A library's actions from the hub's pages, sent as that library's own ISO 18626 message.

When a library's ILL system is down, or a transaction is stuck, its staff act here:
the page builds the message the library would have sent (a requestingAgencyMessage
as requester, a supplyingAgencyMessage as supplier) and hands it to the same intake an
AMQP or HTTP message from that library goes through (broker/intake.py), with the
library as sender. The state machine decides, exactly as for any message; its ERROR
confirmation comes back here and is shown to the person. The note names the person,
so the transaction's audit trail and the counterpart see who acted.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import asyncpg
from pydantic import BaseModel

from broker.intake import Inbound, Intake, IntakeOutcome
from schemas.iso18626_codes import Action, MessageType, ReasonForMessage, Status
from schemas.symbols import split_symbol

log = logging.getLogger(__name__)

NOTE_LIMIT = 500
_RETRIES = 3


class Side(StrEnum):
    REQUESTER = "requester"
    SUPPLIER = "supplier"


@dataclass(frozen=True)
class Kind:
    """One action of the pages: its path segment, audit name and the side that acts."""

    path: str
    audit: str
    side: Side
    label: str


CANCEL = Kind("cancel", "transaction.cancel", Side.REQUESTER, "cancel the request")
RECEIVED = Kind("received", "transaction.received", Side.REQUESTER, "mark received")
ANSWER = Kind("answer", "transaction.answer", Side.SUPPLIER, "answer the request")
RETURNED = Kind("returned", "transaction.returned", Side.SUPPLIER,
                "mark returned (loan completed)")
KINDS = {k.path: k for k in (CANCEL, RECEIVED, ANSWER, RETURNED)}


@dataclass(frozen=True)
class Parties:
    requester: str
    request_id: str
    supplier: str


@dataclass(frozen=True)
class Result:
    ok: bool
    error_type: str = ""
    error_value: str = ""


def _agency(symbol: str) -> dict[str, str]:
    scheme, value = split_symbol(symbol)
    return {"agencyIdType": scheme, "agencyIdValue": value}


def _header(p: Parties, now: datetime) -> dict[str, Any]:
    return {"supplyingAgencyId": _agency(p.supplier), "requestingAgencyId": _agency(p.requester),
            "timestamp": now.astimezone(UTC).isoformat(timespec="seconds")
            .replace("+00:00", "Z"),
            "requestingAgencyRequestId": p.request_id}


def requester_message(p: Parties, action: Action, note: str, now: datetime) -> dict[str, Any]:
    return {"requestingAgencyMessage": {"header": _header(p, now), "action": str(action),
                                        "note": note}}


def supplier_message(p: Parties, status: Status, reason: ReasonForMessage, note: str,
                     now: datetime, **info: str) -> dict[str, Any]:
    stamp = _header(p, now)["timestamp"]
    return {"supplyingAgencyMessage": {
        "header": _header(p, now),
        "messageInfo": {"reasonForMessage": str(reason), "note": note, **info},
        "statusInfo": {"status": str(status), "lastChange": stamp}}}


def note_of(display_name: str, given: str | None) -> str:
    """The person's own words, if any, then who sent it and how."""
    by = f"by {display_name} via the hub's pages"
    text = " ".join((given or "").split())[:NOTE_LIMIT]
    return f"{text} ({by})" if text else by


async def submit(pool: asyncpg.Pool, intake: Intake, sender: str, kind: str,
                 body: dict[str, Any], correlation_id: str) -> Result:
    """Process `body` as a message from `sender`, answered here instead of on its queue."""
    inbound = Inbound(
        body=json.dumps(body, ensure_ascii=False).encode(), sender=sender,
        # Unique per action: the inbox gate keys on (sender, message_id).
        message_id=f"web-{uuid.uuid4()}", routing_key=kind, content_type="application/json",
        message_type=kind, correlation_id=correlation_id,
        headers={"via": "hub-pages"}, synchronous=True)
    outcome = await _process(pool, intake, inbound)
    return _result(outcome, inbound.answer)


async def _process(pool: asyncpg.Pool, intake: Intake, inbound: Inbound) -> IntakeOutcome:
    # As web/iso18626.py: a deadlock with the AMQP consumer's batch aborts this attempt
    # whole, so it is simply run again.
    for attempt in range(_RETRIES):
        inbound.answer = None
        try:
            return await intake.process(pool, inbound)
        except (asyncpg.exceptions.DeadlockDetectedError,
                asyncpg.exceptions.SerializationError):
            if attempt == _RETRIES - 1:
                raise
            log.info("a staff action for %s hit a deadlock; running it again", inbound.sender)
    raise RuntimeError("unreachable: the last attempt returns or raises")


def _result(outcome: IntakeOutcome, answer: tuple[MessageType, BaseModel] | None) -> Result:
    error = getattr(answer[1], "error_data", None) if answer is not None else None
    if outcome is IntakeOutcome.OK and error is None:
        return Result(ok=True)
    if error is not None:
        return Result(ok=False, error_type=str(error.error_type),
                      error_value=error.error_value or "")
    return Result(ok=False, error_type="NotProcessed",
                  error_value=f"the hub did not take the message ({outcome}): is the "
                              "library's agency enabled?")
