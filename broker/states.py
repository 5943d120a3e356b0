"""The transaction state model, as data: one table per kind of item.

A transaction's state is the ISO 18626 status the requester last saw, plus two
hub states that record the requester's own loan actions (`Received`,
`ShippedReturn`; the ISO status shown for them stays `Loaned`). Events are a
supplier status (`status:Loaned`) or a requester action (`action:Renew`).

Each entry maps (state, event) to the state after it. An event missing from a
state's row is refused: an action with UnsupportedActionType, a status with
UnrecognisedDataValue naming it. `ADVANCE` means the supplier gave up (Unfilled):
the rota moves on and the state is decided by what comes next.

CopyOrLoan requests follow the union of both tables until the supplier delivers;
its first delivery status (CopyCompleted or Loaned) decides which table applies.
"""

from __future__ import annotations

from typing import Final

ADVANCE: Final = "→next supplier"

TERMINAL = frozenset({"CopyCompleted", "LoanCompleted", "CompletedWithoutReturn", "Unfilled",
                      "Cancelled"})
# Where the supplier still owes an answer or a delivery: the deadline runs.
AWAITING_SUPPLIER = frozenset({"ExpectToSupply", "WillSupply"})

_ALWAYS = {"action:StatusRequest": "=", "action:Notification": "="}
_OPEN = {
    **_ALWAYS,
    "status:RequestReceived": "=",
    "status:ExpectToSupply": "ExpectToSupply",
    "status:WillSupply": "WillSupply",
    "status:RetryPossible": "RetryPossible",
    "status:Unfilled": ADVANCE,
    "status:Cancelled": "Cancelled",
    "action:Cancel": "=",
}
_RETRY = {**_ALWAYS, "action:Cancel": "Cancelled", "status:Unfilled": ADVANCE,
          "status:Cancelled": "Cancelled", "status:RetryPossible": "="}

NON_RETURNABLE: dict[str, dict[str, str]] = {
    "ExpectToSupply": {**_OPEN, "status:CopyCompleted": "CopyCompleted"},
    "WillSupply": {**_OPEN, "status:CopyCompleted": "CopyCompleted"},
    "RetryPossible": _RETRY,
    "CopyCompleted": {**_ALWAYS, "action:Received": "=", "status:CopyCompleted": "="},
    "Unfilled": dict(_ALWAYS),
    "Cancelled": dict(_ALWAYS),
}

_ON_LOAN = {
    **_ALWAYS,
    "action:Renew": "=",
    "action:ShippedReturn": "ShippedReturn",
    "status:Loaned": "=",  # e.g. the answer to a Renew, with a new due date
    "status:Overdue": "Overdue",
    "status:Recalled": "Recalled",
    "status:LoanCompleted": "LoanCompleted",
    "status:CompletedWithoutReturn": "CompletedWithoutReturn",
}

RETURNABLE: dict[str, dict[str, str]] = {
    "ExpectToSupply": {**_OPEN, "status:Loaned": "Loaned"},
    "WillSupply": {**_OPEN, "status:Loaned": "Loaned"},
    "RetryPossible": _RETRY,
    "Loaned": {**_ON_LOAN, "action:Received": "Received"},
    "Received": {**_ON_LOAN, "action:Received": "=", "status:Loaned": "Received"},
    "Overdue": {**_ON_LOAN, "action:Received": "=", "status:Loaned": "Loaned",
                "status:Overdue": "="},
    "Recalled": {**_ON_LOAN, "action:Renew": None, "action:Received": "=",
                 "status:Recalled": "="},
    "ShippedReturn": {**_ALWAYS, "action:ShippedReturn": "=",
                      "status:LoanCompleted": "LoanCompleted",
                      "status:Overdue": "=", "status:Loaned": "=",
                      "status:CompletedWithoutReturn": "CompletedWithoutReturn"},
    "LoanCompleted": dict(_ALWAYS),
    "CompletedWithoutReturn": dict(_ALWAYS),
    "Unfilled": dict(_ALWAYS),
    "Cancelled": dict(_ALWAYS),
}

# The ISO 18626 status shown for a state (StatusRequest answers, events).
ISO_STATUS = {"Received": "Loaned", "ShippedReturn": "Loaned"}


def table(returnable: bool | None) -> dict[str, dict[str, str | None]]:
    """The table for a transaction; None (CopyOrLoan, not delivered yet) is the union."""
    if returnable is True:
        return RETURNABLE  # type: ignore[return-value]
    if returnable is False:
        return NON_RETURNABLE  # type: ignore[return-value]
    merged: dict[str, dict[str, str | None]] = {}
    for state in set(RETURNABLE) | set(NON_RETURNABLE):
        merged[state] = {**RETURNABLE.get(state, {}), **NON_RETURNABLE.get(state, {})}
    return merged


def next_state(returnable: bool | None, state: str, event: str) -> str | None:
    """The state after `event`, `ADVANCE`, or None if the model does not allow it."""
    target = table(returnable).get(state, {}).get(event)
    if target is None:
        return None
    return state if target == "=" else target


def allowed_events(returnable: bool | None, state: str) -> list[str]:
    return sorted(e for e, t in table(returnable).get(state, {}).items() if t is not None)


def iso_status(state: str) -> str:
    return ISO_STATUS.get(state, state)
