"""Dispatch's rows: the locked transaction, its state writes, rota entries, the supplier
scorecard and the audit log (each written by one statement of `sql`)."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any

import asyncpg

from broker.dispatch import sql
from broker.dispatch.desk import iso
from broker.intake import Refusal
from broker.states import EntryOutcome, Event, HubEvent, State
from infra import observability
from infra.database import Connection, fetch_one
from schemas import jsontext
from schemas.iso18626_codes import ErrorType, MessageType


class NoSupplier(LookupError):
    """A message for the current supplier of a transaction that has none."""


@dataclass(frozen=True)
class _Head:
    """What a transaction is: whose request, for which service."""

    id: str
    requester: str
    request_id: str
    service_type: str
    service_kind: str
    service_level: str | None
    returnable: bool | None  # None: CopyOrLoan, not delivered yet


@dataclass(frozen=True)
class Txn(_Head):
    """One ILL transaction as dispatch read (and locked) it: the columns of
    `sql.TXN_COLUMNS`. A snapshot: writes go to the database, never back into it."""

    state: State
    supplier: str | None
    rota_position: int | None
    deadline_at: datetime | None
    cancel_requested_at: datetime | None
    request: str  # the request as received, JSON text
    max_cost_minor: int | None
    currency: str | None
    quote_minor: int | None
    quote_currency: str | None
    quote_logistics_minor: int | None  # the shipping part of the quote (issue 19)

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Txn:
        values = {name: row[name] for name in _TXN_FIELDS}
        values["state"] = State(values["state"])
        return cls(**values)

    @property
    def current_supplier(self) -> str:
        if self.supplier is None:
            raise NoSupplier(f"transaction {self.id} has no current supplier")
        return self.supplier

    def request_body(self) -> dict[str, Any]:
        """The request as received, `{"request": {...}}`."""
        body: dict[str, Any] = json.loads(self.request)
        return body


_TXN_FIELDS = tuple(f.name for f in fields(Txn))
if ", ".join(_TXN_FIELDS) != sql.TXN_COLUMNS:
    raise TypeError("store.Txn and sql.TXN_COLUMNS list different columns")


@dataclass(frozen=True)
class NewTransaction(_Head):
    """A new transaction as `sql.NEW_TRANSACTION` writes it, with its rota. With a
    deadline it is forwarded at once to the rota's first supplier, due by then."""

    request: dict[str, Any]
    confirmation: dict[str, Any]
    max_cost_minor: int | None
    currency: str | None
    patron_key: str | None
    item_key: str | None
    duplicate_of: str | None
    policy_version: int | None
    now: datetime
    ranked: list[dict[str, Any]]
    excluded: list[dict[str, Any]]
    at: datetime  # of the audit rows
    message_id: str
    detail: dict[str, Any]
    deadline: datetime | None
    today: date  # consortium-local, for the supplier's day count
    copyright: dict[str, Any] | None  # a copy request's copyright row (copyright.row)

    def params(self) -> dict[str, object]:
        """The statement's named parameters: the one place they are built."""
        values: dict[str, object] = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("request", "confirmation", "ranked", "excluded"):
            values[name] = jsontext.dumps_text(values[name])
        values["copyright"] = (jsontext.dumps_text(self.copyright)
                               if self.copyright is not None else None)
        values["detail"] = json.dumps(self.detail, ensure_ascii=False, default=str)
        values["forward"] = self.deadline is not None
        values["deadline_text"] = iso(self.deadline) if self.deadline else None
        return values


async def insert_transaction(conn: Connection, new: NewTransaction) -> Txn:
    row = await fetch_one(conn, sql.NEW_TRANSACTION.text,
                          *sql.NEW_TRANSACTION.args(new.params()))
    return Txn.from_row(row)


async def find(conn: Connection, requester: str, request_id: str,
               kind: MessageType) -> Txn:
    """Lock the transaction of a requester's request; refused if there is none."""
    txn = await lookup(conn, requester, request_id)
    if txn is None:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"{kind}.header.requestingAgencyRequestId: no request {request_id!r} "
                      f"from {requester} is known to the hub")
    observability.transaction_id.set(txn.id)
    return txn


async def lookup(conn: Connection, requester: str, request_id: str) -> Txn | None:
    """Lock the transaction of a requester's request, if there is one."""
    row = await conn.fetchrow(sql.TXN_FIND, requester, request_id)
    return Txn.from_row(row) if row else None


async def past_deadline(conn: Connection, now: datetime, batch: int) -> list[Txn]:
    """Transactions whose supplier is past its deadline, locked; those that another
    process holds are skipped."""
    return [Txn.from_row(r) for r in await conn.fetch(sql.TXN_PAST_DEADLINE, now, batch)]


async def set_state(conn: Connection, txn: Txn, state: State, now: datetime,
                    returnable: bool | None = None) -> None:
    await conn.execute(sql.SET_STATE, txn.id, state, now, returnable)


async def close_entry(conn: Connection, txn: Txn, outcome: EntryOutcome,
                      now: datetime) -> datetime | None:
    """Record the current rota entry's outcome; returns when it was forwarded."""
    forwarded_at: datetime | None = await conn.fetchval(
        sql.CLOSE_ENTRY, txn.id, txn.rota_position, outcome, now)
    return forwarded_at


async def score(conn: Connection, supplier: str | None, *, forwarded: int = 0,
                filled: int = 0, unfilled: int = 0, timed_out: int = 0,
                open_requests: int = 0, turnaround: float = 0.0) -> None:
    """Add an outcome to a supplier's scorecard (what routing ranks by)."""
    if supplier is None:
        return
    await conn.execute(sql.SCORE, supplier, forwarded, filled, unfilled, timed_out,
                       turnaround, open_requests)


async def audit(conn: Connection, at: datetime, txn_id: str, actor: str,
                event: Event | HubEvent, from_state: State | None, to_state: State | None,
                message_id: str | None, detail: dict[str, Any]) -> None:
    """Append to the audit log: who did what to which transaction, from which state to
    which."""
    await conn.execute(sql.AUDIT, txn_id, at, actor, event, from_state, to_state, message_id,
                       json.dumps(detail, ensure_ascii=False, default=str))
