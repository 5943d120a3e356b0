"""The transaction state model: the enum, its tables, and the CHECK that mirrors it.

All but the last test are pure (no servers); the last needs PostgreSQL.
"""

from __future__ import annotations

import json
import secrets

import asyncpg
import pytest

from broker.states import (
    ADVANCE,
    NON_RETURNABLE,
    PASSED,
    RETURNABLE,
    TERMINAL,
    Event,
    State,
    Step,
    allowed_events,
    iso_status,
    next_state,
    table,
)
from schemas.iso18626_codes import Action, Status
from tests.support.agencies import sql_agencies
from tests.support.database import check_list

CONSTRAINT = "ill_transaction_state_known"


def test_the_check_lists_exactly_the_enum() -> None:
    assert check_list(CONSTRAINT, "state") == {s.value for s in State}


def test_events_are_every_status_and_every_action() -> None:
    assert {e.value for e in Event} == ({f"status:{s}" for s in Status}
                                        | {f"action:{a}" for a in Action}
                                        | {"reason:Notification", "reason:CancelResponse"})
    assert Event.of_status(Status.LOANED) is Event.STATUS_LOANED
    assert Event.of_action(Action.RENEW) is Event.ACTION_RENEW
    assert (Event.STATUS_LOANED.iso, Event.STATUS_LOANED.is_status) == ("Loaned", True)
    assert (Event.ACTION_CANCEL.iso, Event.ACTION_CANCEL.is_status) == ("Cancel", False)


def test_states_are_stored_as_iso_spells_them() -> None:
    # The database, the audit log and the events carry the plain spelling.
    assert State.EXPECT_TO_SUPPLY == "ExpectToSupply"
    assert f"transaction.{State.COPY_COMPLETED}" == "transaction.CopyCompleted"
    assert json.dumps({"to": State.LOANED}) == '{"to": "Loaned"}'
    assert "Cancelled" in TERMINAL and State("Unfilled") in TERMINAL


def test_tables_name_only_states() -> None:
    for tab in (RETURNABLE, NON_RETURNABLE):
        for state, row in tab.items():
            assert isinstance(state, State)
            for event, target in row.items():
                assert isinstance(event, Event)
                assert target is None or isinstance(target, State | Step), (state, event)


def test_terminal_states_only_answer_questions() -> None:
    for state in TERMINAL:
        for returnable in (True, False, None):
            if state not in table(returnable):  # LoanCompleted is no copy's state
                continue
            assert all(not e.is_status or next_state(returnable, state, e) in (state, Step.STALE)
                       for e in table(returnable)[state]), (state, returnable)
            # A terminal status repeated changes nothing and is no error (a re-sent
            # message, a CancelResponse to the hub's own Cancel).
            own = Event.of_status(Status(state))
            assert next_state(returnable, state, own) == state


def test_a_status_passed_already_is_stale_and_one_never_reachable_is_refused() -> None:
    # Backwards along the standard's order: kept, answered OK (dispatch relays and logs).
    assert next_state(True, State.LOANED, Event.STATUS_WILL_SUPPLY) is Step.STALE
    assert next_state(True, State.RECEIVED, Event.STATUS_REQUEST_RECEIVED) is Step.STALE
    assert next_state(False, State.WILL_SUPPLY, Event.STATUS_EXPECT_TO_SUPPLY) is Step.STALE
    assert next_state(True, State.LOAN_COMPLETED, Event.STATUS_LOANED) is Step.STALE
    assert next_state(True, State.SHIPPED_RETURN, Event.STATUS_RECALLED) is Step.STALE
    assert next_state(None, State.CANCELLED, Event.STATUS_WILL_SUPPLY) is Step.STALE
    # Not stale: a renewal's Loaned after Overdue moves on as before.
    assert next_state(True, State.OVERDUE, Event.STATUS_LOANED) is State.LOANED
    # Never reachable from here: refused.
    assert next_state(False, State.COPY_COMPLETED, Event.STATUS_LOANED) is None
    assert next_state(True, State.CANCELLED, Event.STATUS_LOANED) is None
    assert next_state(True, State.RETRY_POSSIBLE, Event.STATUS_LOANED) is None
    assert next_state(True, State.WILL_SUPPLY, Event.STATUS_LOAN_COMPLETED) is None
    # Every stale status is one the state's row does not otherwise apply, and listed as
    # passed for it; none of them is "allowed" in an error's list.
    for returnable in (True, False):
        for state, row in table(returnable).items():
            stale = {e.iso for e, t in row.items() if t is Step.STALE}
            assert stale <= {str(s) for s in PASSED.get(state, frozenset())}, state
            assert not stale & {e.iso for e in allowed_events(returnable, state)}


def test_a_supplier_notification_is_no_event_of_the_tables() -> None:
    for returnable in (True, False, None):
        for row in table(returnable).values():
            assert Event.NOTIFICATION not in row


def test_next_state_follows_the_tables() -> None:
    assert next_state(True, State.LOANED, Event.ACTION_RECEIVED) is State.RECEIVED
    assert next_state(True, State.LOANED, Event.ACTION_RENEW) is State.LOANED  # same
    assert next_state(True, State.RECALLED, Event.ACTION_RENEW) is None  # refused
    assert next_state(False, State.EXPECT_TO_SUPPLY, Event.STATUS_UNFILLED) is ADVANCE
    # CopyOrLoan, not delivered yet: either delivery status is allowed.
    assert next_state(None, State.WILL_SUPPLY, Event.STATUS_LOANED) is State.LOANED
    assert next_state(None, State.WILL_SUPPLY, Event.STATUS_COPY_COMPLETED) \
        is State.COPY_COMPLETED
    assert iso_status(State.SHIPPED_RETURN) == "Loaned"
    assert iso_status(State.OVERDUE) == "Overdue"


async def test_the_database_refuses_an_unknown_state(pool: asyncpg.Pool) -> None:
    [symbol] = await sql_agencies(pool, "state check", roles=("requester",))
    insert = """INSERT INTO ill_transaction (id, requester, request_id, service_type,
                                             service_kind, state, request)
                VALUES ($1, $2, $1, 'Copy', 'DocumentDelivery', $3, '{}')"""
    for state in State:
        await pool.execute(insert, f"ILL-T-{secrets.token_hex(6)}", symbol, state)
    with pytest.raises(asyncpg.CheckViolationError) as refused:
        await pool.execute(insert, f"ILL-T-{secrets.token_hex(6)}", symbol, "Lost")
    assert refused.value.constraint_name == CONSTRAINT
