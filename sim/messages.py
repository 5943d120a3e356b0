"""The ISO 18626 messages the simulated parties write, and the few fields they read back.

Bodies are plain JSON-ready dicts, as a library's own system would build them; the
hub validates them like any other agency's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

# The statuses after which a requester expects nothing more about a request.
TERMINAL = frozenset({"CopyCompleted", "LoanCompleted", "Unfilled", "Cancelled",
                      "CompletedWithoutReturn"})


def now_iso() -> str:
    return iso(datetime.now(UTC))


def later_iso(days: float) -> str:
    return iso(datetime.now(UTC) + timedelta(days=days))


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def agency_id(symbol: str) -> dict[str, str]:
    scheme, _, value = symbol.partition(":")
    return {"agencyIdType": scheme, "agencyIdValue": value}


def symbol_of(agency: dict[str, Any] | None) -> str | None:
    if not agency:
        return None
    return f"{agency.get('agencyIdType')}:{agency.get('agencyIdValue')}"


def supplying_message(supplier: str, requester: dict[str, str], request_id: str, status: str,
                      reason: str, *, due: str | None = None,
                      delivery: dict[str, Any] | None = None, **info: Any) -> dict[str, Any]:
    """A supplyingAgencyMessage: `status` for the requester's `request_id`, because `reason`."""
    status_info: dict[str, Any] = {"status": status, "lastChange": now_iso()}
    if due:
        status_info["dueDate"] = due
    message: dict[str, Any] = {
        "header": {"supplyingAgencyId": agency_id(supplier), "requestingAgencyId": requester,
                   "timestamp": now_iso(), "requestingAgencyRequestId": request_id},
        "messageInfo": {"reasonForMessage": reason, **info},
        "statusInfo": status_info}
    if delivery:
        message["deliveryInfo"] = delivery
    return {"supplyingAgencyMessage": message}


def requesting_message(requester: str, supplier: str, request_id: str, action: str,
                       note: str | None = None) -> dict[str, Any]:
    """A requestingAgencyMessage: the requester's `action` on its `request_id`."""
    message: dict[str, Any] = {
        "header": {"supplyingAgencyId": agency_id(supplier),
                   "requestingAgencyId": agency_id(requester),
                   "timestamp": now_iso(), "requestingAgencyRequestId": request_id},
        "action": action}
    if note:
        message["note"] = note
    return {"requestingAgencyMessage": message}


def is_ok(content: dict[str, Any]) -> bool:
    """Whether a confirmation says OK."""
    return bool(content.get("confirmationHeader", {}).get("messageStatus") == "OK")


def error_value(content: dict[str, Any]) -> str:
    """The errorValue of an ERROR confirmation ('' if it has none)."""
    return str((content.get("errorData") or {}).get("errorValue", ""))
