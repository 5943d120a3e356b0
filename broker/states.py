"""The transaction state model, as data: one table per kind of item.

A transaction's state is the ISO 18626 status the requester last saw, plus two
hub states that record the requester's own loan actions (`Received`,
`ShippedReturn`; the ISO status shown for them stays `Loaned`) and `New`, which a
transaction has only inside the database transaction that creates it. Events are a
supplier status (`status:Loaned`) or a requester action (`action:Renew`).

Each entry maps (state, event) to the state after it. An event missing from a
state's row is refused: an action with UnsupportedActionType, a status with
UnrecognisedDataValue naming it. `Step.SAME` keeps the state; `Step.ADVANCE` means
the supplier gave up (Unfilled): the rota moves on and the state is decided by what
comes next. `None` refuses an event that the row's base would allow.

A supplier's status that the transaction has already left behind (`PASSED`: WillSupply
while Loaned, say) is `Step.STALE`: a re-sent or overtaken message, answered OK, the
state kept. A status the transaction can never reach from where it is (Loaned for a
copy, a delivery after Cancelled) is refused. A supplier's message whose
reasonForMessage is Notification is no event of these tables at all: it never moves
the state, whatever status it carries (`Event.NOTIFICATION` in the audit log).
ARCHITECTURE §3.4 rule 5 gives the standard's reasons.

CopyOrLoan requests follow the union of both tables until the supplier delivers;
its first delivery status (CopyCompleted or Loaned) decides which table applies.

`State` is also the CHECK constraint on `ill_transaction.state`
(schemas/migrations/0013_transaction_state_check.sql; tests/test_states.py keeps the two
equal): a new state needs a migration that widens the CHECK.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

from schemas.iso18626_codes import Action, Status


class State(StrEnum):
    """A transaction's state, spelled as ISO 18626 spells it and as the database stores it."""

    NEW = "New"
    EXPECT_TO_SUPPLY = "ExpectToSupply"
    WILL_SUPPLY = "WillSupply"
    RETRY_POSSIBLE = "RetryPossible"
    LOANED = "Loaned"
    RECEIVED = "Received"              # hub state: the requester said Received (ISO: Loaned)
    OVERDUE = "Overdue"
    RECALLED = "Recalled"
    SHIPPED_RETURN = "ShippedReturn"   # hub state: the requester sent it back (ISO: Loaned)
    COPY_COMPLETED = "CopyCompleted"
    LOAN_COMPLETED = "LoanCompleted"
    COMPLETED_WITHOUT_RETURN = "CompletedWithoutReturn"
    UNFILLED = "Unfilled"
    CANCELLED = "Cancelled"


class Event(StrEnum):
    """A supplier status or a requester action, spelled as the audit log keeps it."""

    STATUS_REQUEST_RECEIVED = "status:RequestReceived"
    STATUS_EXPECT_TO_SUPPLY = "status:ExpectToSupply"
    STATUS_WILL_SUPPLY = "status:WillSupply"
    STATUS_LOANED = "status:Loaned"
    STATUS_OVERDUE = "status:Overdue"
    STATUS_RECALLED = "status:Recalled"
    STATUS_RETRY_POSSIBLE = "status:RetryPossible"
    STATUS_UNFILLED = "status:Unfilled"
    STATUS_COPY_COMPLETED = "status:CopyCompleted"
    STATUS_LOAN_COMPLETED = "status:LoanCompleted"
    STATUS_COMPLETED_WITHOUT_RETURN = "status:CompletedWithoutReturn"
    STATUS_CANCELLED = "status:Cancelled"
    ACTION_STATUS_REQUEST = "action:StatusRequest"
    ACTION_RECEIVED = "action:Received"
    ACTION_CANCEL = "action:Cancel"
    ACTION_RENEW = "action:Renew"
    ACTION_SHIPPED_RETURN = "action:ShippedReturn"
    ACTION_SHIPPED_FORWARD = "action:ShippedForward"
    ACTION_NOTIFICATION = "action:Notification"
    # A supplier's message with reasonForMessage Notification: a note, whatever its status.
    NOTIFICATION = "reason:Notification"
    # A supplier's CancelResponse answering N without a status: the request goes on.
    CANCEL_DECLINED = "reason:CancelResponse"

    @classmethod
    def of_status(cls, status: Status) -> Event:
        return cls(f"status:{status}")

    @classmethod
    def of_action(cls, action: Action) -> Event:
        return cls(f"action:{action}")

    @property
    def is_status(self) -> bool:
        return self.value.startswith("status:")

    @property
    def iso(self) -> str:
        """The ISO 18626 value: the status or the action without its prefix."""
        return self.value.partition(":")[2]


class HubEvent(StrEnum):
    """What the hub itself does to a transaction, as the audit log and `ill.events` name it."""

    REQUEST = "request"
    RETRY_OF = "retry of"
    RETRIED = "retried"
    COST_ABOVE_MAXIMUM = "cost above maximumCosts"
    FORWARD = "forward"
    DEADLINE = "deadline"
    ROTA_EXHAUSTED = "rota exhausted"
    DOCUMENT_DELIVERED = "document delivered"
    QUOTA_REACHED = "quota reached"
    COPYRIGHT_HELD = "copyright held"
    # The due-date sweep (broker/dispatch/loans.py): once per stage and due date.
    LOAN_REMINDER = "loan reminder"
    LOAN_OVERDUE = "loan overdue"
    LOAN_RECALLED = "loan recalled"


class Step(StrEnum):
    """What an event does when it names no new state."""

    SAME = "="
    ADVANCE = "→next supplier"
    STALE = "= (passed already: kept)"


ADVANCE: Final = Step.ADVANCE


class EntryOutcome(StrEnum):
    """Where a rota entry stands (the CHECK on rota_entry.outcome lists the same)."""

    PENDING = "pending"
    FORWARDED = "forwarded"
    UNFILLED = "unfilled"
    TIMED_OUT = "timed_out"
    SUPPLIED = "supplied"
    CANCELLED = "cancelled"

# A table row: what each event leads to (None: refused although the base allows it).
Row = dict[Event, State | Step | None]

S, E = State, Event  # short names for the tables below (deleted after them)

TERMINAL = frozenset({S.COPY_COMPLETED, S.LOAN_COMPLETED, S.COMPLETED_WITHOUT_RETURN,
                      S.UNFILLED, S.CANCELLED})
# Where the supplier still owes an answer or a delivery: the deadline runs.
AWAITING_SUPPLIER = frozenset({S.EXPECT_TO_SUPPLY, S.WILL_SUPPLY})

_ALWAYS: Row = {E.ACTION_STATUS_REQUEST: Step.SAME, E.ACTION_NOTIFICATION: Step.SAME}
_OPEN: Row = {
    **_ALWAYS,
    E.STATUS_REQUEST_RECEIVED: Step.SAME,
    E.STATUS_EXPECT_TO_SUPPLY: S.EXPECT_TO_SUPPLY,
    E.STATUS_WILL_SUPPLY: S.WILL_SUPPLY,
    E.STATUS_RETRY_POSSIBLE: S.RETRY_POSSIBLE,
    E.STATUS_UNFILLED: Step.ADVANCE,
    E.STATUS_CANCELLED: S.CANCELLED,
    E.ACTION_CANCEL: Step.SAME,
}
_RETRY: Row = {**_ALWAYS, E.ACTION_CANCEL: S.CANCELLED, E.STATUS_UNFILLED: Step.ADVANCE,
               E.STATUS_CANCELLED: S.CANCELLED, E.STATUS_RETRY_POSSIBLE: Step.SAME}

# WillSupply is further than ExpectToSupply: reported again afterwards, it is stale.
_WILL: Row = {**_OPEN, E.STATUS_EXPECT_TO_SUPPLY: Step.STALE}

NON_RETURNABLE: dict[State, Row] = {
    S.EXPECT_TO_SUPPLY: {**_OPEN, E.STATUS_COPY_COMPLETED: S.COPY_COMPLETED},
    S.WILL_SUPPLY: {**_WILL, E.STATUS_COPY_COMPLETED: S.COPY_COMPLETED},
    S.RETRY_POSSIBLE: _RETRY,
    S.COPY_COMPLETED: {**_ALWAYS, E.ACTION_RECEIVED: Step.SAME,
                       E.STATUS_COPY_COMPLETED: Step.SAME},
    S.UNFILLED: dict(_ALWAYS),
    S.CANCELLED: dict(_ALWAYS),
}

_ON_LOAN: Row = {
    **_ALWAYS,
    E.ACTION_RENEW: Step.SAME,
    E.ACTION_SHIPPED_RETURN: S.SHIPPED_RETURN,
    E.STATUS_LOANED: Step.SAME,  # e.g. the answer to a Renew, with a new due date
    E.STATUS_OVERDUE: S.OVERDUE,
    E.STATUS_RECALLED: S.RECALLED,
    E.STATUS_LOAN_COMPLETED: S.LOAN_COMPLETED,
    E.STATUS_COMPLETED_WITHOUT_RETURN: S.COMPLETED_WITHOUT_RETURN,
}

RETURNABLE: dict[State, Row] = {
    S.EXPECT_TO_SUPPLY: {**_OPEN, E.STATUS_LOANED: S.LOANED},
    S.WILL_SUPPLY: {**_WILL, E.STATUS_LOANED: S.LOANED},
    S.RETRY_POSSIBLE: _RETRY,
    S.LOANED: {**_ON_LOAN, E.ACTION_RECEIVED: S.RECEIVED},
    S.RECEIVED: {**_ON_LOAN, E.ACTION_RECEIVED: Step.SAME, E.STATUS_LOANED: S.RECEIVED},
    S.OVERDUE: {**_ON_LOAN, E.ACTION_RECEIVED: Step.SAME, E.STATUS_LOANED: S.LOANED,
                E.STATUS_OVERDUE: Step.SAME},
    S.RECALLED: {**_ON_LOAN, E.ACTION_RENEW: None, E.ACTION_RECEIVED: Step.SAME,
                 E.STATUS_RECALLED: Step.SAME},
    S.SHIPPED_RETURN: {**_ALWAYS, E.ACTION_SHIPPED_RETURN: Step.SAME,
                       E.STATUS_LOAN_COMPLETED: S.LOAN_COMPLETED,
                       E.STATUS_OVERDUE: Step.SAME, E.STATUS_LOANED: Step.SAME,
                       E.STATUS_COMPLETED_WITHOUT_RETURN: S.COMPLETED_WITHOUT_RETURN},
    S.LOAN_COMPLETED: dict(_ALWAYS),
    S.COMPLETED_WITHOUT_RETURN: dict(_ALWAYS),
    S.UNFILLED: dict(_ALWAYS),
    S.CANCELLED: dict(_ALWAYS),
}

# The ISO 18626 status shown for a state (StatusRequest answers, events).
ISO_STATUS = {S.RECEIVED: Status.LOANED, S.SHIPPED_RETURN: Status.LOANED}

# The statuses a transaction has left behind on its way to a state, along the standard's
# order (RequestReceived, ExpectToSupply, WillSupply, then the delivery, then its end).
# A supplier reporting one of them again is stale (Step.STALE), unless the row has an
# entry for it already (Loaned while Overdue is a renewal, not a step back).
_BEFORE_SUPPLY = frozenset({Status.REQUEST_RECEIVED, Status.EXPECT_TO_SUPPLY,
                            Status.WILL_SUPPLY})
_ON_LOAN_STATUSES = frozenset({Status.LOANED, Status.OVERDUE, Status.RECALLED})
PASSED: dict[State, frozenset[Status]] = {
    S.WILL_SUPPLY: frozenset({Status.REQUEST_RECEIVED, Status.EXPECT_TO_SUPPLY}),
    S.RETRY_POSSIBLE: _BEFORE_SUPPLY,
    S.LOANED: _BEFORE_SUPPLY,
    S.RECEIVED: _BEFORE_SUPPLY,
    S.OVERDUE: _BEFORE_SUPPLY,
    S.RECALLED: _BEFORE_SUPPLY | {Status.LOANED, Status.OVERDUE},
    S.SHIPPED_RETURN: _BEFORE_SUPPLY | _ON_LOAN_STATUSES,
    S.COPY_COMPLETED: _BEFORE_SUPPLY,
    S.LOAN_COMPLETED: _BEFORE_SUPPLY | _ON_LOAN_STATUSES,
    S.COMPLETED_WITHOUT_RETURN: _BEFORE_SUPPLY | _ON_LOAN_STATUSES,
    S.UNFILLED: _BEFORE_SUPPLY,
    S.CANCELLED: _BEFORE_SUPPLY,
}


def _with_passed(tab: dict[State, Row]) -> None:
    """Add the stale statuses, and the state's own status repeated (a re-sent message, a
    CancelResponse to a Cancel the hub sent itself), where the row has no entry yet."""
    for state, row in tab.items():
        own = Event.of_status(Status(ISO_STATUS.get(state, state)))
        row.setdefault(own, Step.SAME)
        for status in PASSED.get(state, frozenset()):
            row.setdefault(Event.of_status(status), Step.STALE)


# Rows are shared between states (_RETRY): copy them before adding to them.
NON_RETURNABLE = {state: dict(row) for state, row in NON_RETURNABLE.items()}
RETURNABLE = {state: dict(row) for state, row in RETURNABLE.items()}
_with_passed(NON_RETURNABLE)
_with_passed(RETURNABLE)

del S, E


def _union() -> dict[State, Row]:
    merged: dict[State, Row] = {}
    for state in set(RETURNABLE) | set(NON_RETURNABLE):
        merged[state] = {**RETURNABLE.get(state, {}), **NON_RETURNABLE.get(state, {})}
    return merged


_EITHER = _union()


def table(returnable: bool | None) -> dict[State, Row]:
    """The table for a transaction; None (CopyOrLoan, not delivered yet) is the union."""
    if returnable is True:
        return RETURNABLE
    if returnable is False:
        return NON_RETURNABLE
    return _EITHER


def next_state(returnable: bool | None, state: State, event: Event) -> State | Step | None:
    """The state after `event`, `Step.ADVANCE`, `Step.STALE` (a status passed already:
    the state is kept), or None if the model does not allow it."""
    target = table(returnable).get(state, {}).get(event)
    if target is None:
        return None
    return state if target is Step.SAME else target


def allowed_events(returnable: bool | None, state: State) -> list[Event]:
    """The events that apply in `state` (stale statuses, accepted but changing nothing,
    are not among them)."""
    return sorted(e for e, t in table(returnable).get(state, {}).items()
                  if t is not None and t is not Step.STALE)


def iso_status(state: State) -> str:
    return ISO_STATUS.get(state, state)
