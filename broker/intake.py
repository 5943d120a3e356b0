"""Intake: every inbound message is checked, recorded and answered in one DB transaction.

Order of checks, each answered specifically (ARCHITECTURE §3.4 rule 2):
size (before any parsing) -> sender (AMQP `user_id`, validated by the broker) ->
`message_id` -> duplicate (inbox) -> content type -> UTF-8 JSON -> ISO 18626 schema ->
AMQP `type` agrees with the body -> the header names the sender -> the handler (state
model). Messages with no one to answer go to the dead letters with their reason.
"""

from __future__ import annotations

import datetime
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar

import asyncpg
from pydantic import BaseModel

from broker.finance_intake import answer_dispute, answer_message
from broker.profiles import normalise_at_intake
from infra import observability
from infra.database import Connection
from infra.outbox import OUTBOX_INSERT, Outgoing, outbox_columns
from schemas import jsontext
from schemas.finance_messages import FINANCE_INBOUND_KINDS
from schemas.iso18626 import (
    CONFIRMATION_OF,
    Header,
    MessageError,
    RequestingAgencyMessage,
    SupplyingAgencyMessage,
    confirmation,
    dump_message,
    parse_message,
)
from schemas.iso18626_codes import ErrorType, MessageType
from schemas.settings import Settings
from schemas.wire import DEAD, OUTBOUND
from settlement.calendar import local_date

log = logging.getLogger(__name__)
_Model = TypeVar("_Model", bound=BaseModel)

INBOUND_KINDS = frozenset(CONFIRMATION_OF)
BADLY_FORMED = ErrorType.BADLY_FORMED_MESSAGE
# ISO 18626 messages nest about 6 levels; anything far deeper is hostile, and near
# Python's recursion limit it would fail later, in json.dumps or the handler.
MAX_NESTING = 64
# An errorValue is for a person to act on: a longer one is cut (and ends with "…").
ERROR_VALUE_LIMIT = 1000
# Text properties PostgreSQL must store (inbox, dead letters), with their AMQP names.
_TEXT_PROPERTIES = {"message_id": "property message_id", "correlation_id":
                    "property correlation_id", "message_type": "property type",
                    "content_type": "property content_type", "routing_key": "routing key"}
# Which header field must name the sender, per inbound message type.
SENDER_FIELD = {
    MessageType.REQUEST: "requesting_agency_id",
    MessageType.REQUESTING_AGENCY_MESSAGE: "requesting_agency_id",
    MessageType.SUPPLYING_AGENCY_MESSAGE: "supplying_agency_id",
}
HEADER_WIRE = {"requesting_agency_id": "requestingAgencyId",
               "supplying_agency_id": "supplyingAgencyId"}


class IntakeOutcome(StrEnum):
    """What became of one delivery; stored in `inbox.outcome` (all but DUPLICATE)."""

    OK = "ok"  # valid, handled, confirmed OK (or a confirmation recorded as a receipt)
    ERROR = "error"  # answered with an ISO 18626 ERROR confirmation
    DEAD = "dead"  # dead-lettered (and answered, when there was a sender to answer)
    DUPLICATE = "duplicate"  # seen before (same sender and message_id): ignored


@dataclass
class Inbound:
    """An AMQP delivery reduced to what intake needs (and what a dead letter keeps)."""

    body: bytes
    sender: str | None
    message_id: str | None
    routing_key: str = ""
    content_type: str | None = None
    message_type: str | None = None
    correlation_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    # An HTTP caller (ISO 18626 over HTTP) is answered in the HTTP response, not on a
    # queue: intake then leaves its confirmation here instead of in the outbox.
    synchronous: bool = False
    answer: tuple[MessageType, BaseModel] | None = field(default=None, repr=False)
    # The first text property that held a NUL (replaced by U+FFFD, since PostgreSQL text
    # cannot store NUL); intake refuses such a delivery by naming the property.
    nul_in: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        for attr, name in _TEXT_PROPERTIES.items():
            value = getattr(self, attr)
            if value and "\x00" in value:
                self.nul_in = self.nul_in or name
                setattr(self, attr, value.replace("\x00", "\ufffd"))

    def properties(self) -> dict[str, Any]:
        return {"user_id": self.sender, "message_id": self.message_id,
                "content_type": self.content_type, "type": self.message_type,
                "correlation_id": self.correlation_id, "routing_key": self.routing_key,
                "headers": {_storable(str(k)): _storable(str(v))
                            for k, v in self.headers.items()}}


@dataclass
class Context:
    """A valid ISO 18626 message from a known agency, handed to the handler."""

    sender: str
    message_id: str
    kind: MessageType
    message: BaseModel
    raw: dict[str, Any]

    def message_as(self, model: type[_Model]) -> _Model:
        """The message as `model`, the model of its kind; TypeError if it is another (a
        handler registered for the wrong kind)."""
        return _as(self.message, model)


@dataclass
class Outcome:
    """What a handler decided: more messages to send, and the hub transaction id."""

    outgoing: list[Outgoing] = field(default_factory=list)
    transaction_id: str | None = None
    # Set by handlers that answer with a confirmation of their own making (e.g. a
    # duplicate request gets the original confirmation again).
    confirmation: tuple[MessageType, BaseModel] | None = None


class Refusal(Exception):
    """A handler's ISO 18626 ERROR answer; the handler's effects are rolled back."""

    def __init__(self, error_type: ErrorType, error_value: str,
                 transaction_id: str | None = None,
                 after: Callable[[Connection], Awaitable[None]] | None = None) -> None:
        super().__init__(f"{error_type}: {error_value}")
        self.error_type = error_type
        self.error_value = error_value
        self.transaction_id = transaction_id
        # Runs after the handler's effects were rolled back: what must be kept anyway
        # (e.g. the flag on a refused charge).
        self.after = after


class Handler(Protocol):
    async def __call__(self, conn: Connection, ctx: Context) -> Outcome: ...


async def accept_only(conn: Connection, ctx: Context) -> Outcome:
    """The handler when no business logic is plugged in: valid messages are confirmed OK."""
    return Outcome()


def reply(settings: Settings, to: str, kind: MessageType, model: BaseModel,
          correlation_id: str | None, transaction_id: str | None = None) -> Outgoing:
    headers = {"hub-transaction-id": transaction_id} if transaction_id else {}
    return Outgoing(exchange=OUTBOUND, routing_key=to, body=dump_message(kind, model),
                    message_type=str(kind), correlation_id=correlation_id, headers=headers)


@dataclass
class Batch:
    """What the messages of one transaction send and record, written once at its end.

    Kept in delivery order, so answers to one agency leave in the order its messages
    came in, as if each had been written on its own.
    """

    outgoing: list[Outgoing] = field(default_factory=list)
    answered: list[tuple[str, str, str]] = field(default_factory=list)

    async def flush(self, conn: Connection) -> None:
        if self.outgoing or self.answered:
            senders, ids, bodies = (list(c) for c in zip(*self.answered, strict=True)) \
                if self.answered else ([], [], [])
            await conn.execute(_ANSWERED, *outbox_columns(self.outgoing), senders, ids,
                               bodies)
        self.outgoing, self.answered = [], []


Gate = tuple[bool, bool]  # (the sender is an enabled agency, the message_id is new)


class Intake:
    def __init__(self, settings: Settings, handler: Handler = accept_only,
                 on_commit: Callable[[Inbound, IntakeOutcome], Awaitable[None]] | None = None
                 ) -> None:
        self.settings = settings
        self.handler = handler
        self.on_commit = on_commit

    async def process(self, pool: asyncpg.Pool, inbound: Inbound) -> IntakeOutcome:
        """Process one delivery in its own DB transaction; returns the outcome recorded.

        The caller acks only after this returns (the transaction has committed).
        """
        async with pool.acquire() as conn, conn.transaction():
            outcome = await self.process_in(conn, inbound)
        if self.on_commit:
            await self.on_commit(inbound, outcome)
        return outcome

    async def process_batch(self, conn: Connection,
                            inbounds: list[Inbound]) -> list[IntakeOutcome]:
        """Process deliveries in order inside the caller's transaction (group commit).

        The inbox gate of the whole batch is one statement, and so are all its answers
        and outcomes at the end: a handful of round trips per batch, not per message.
        """
        gates = await self._gates(conn, inbounds)
        batch = Batch()
        outcomes = []
        for inbound, gate in zip(inbounds, gates, strict=True):
            observability.transaction_id.set(None)  # logs name only this message's
            outcomes.append(await self.process_in(conn, inbound, batch=batch, gate=gate))
        await batch.flush(conn)
        return outcomes

    async def _gates(self, conn: Connection,
                     inbounds: list[Inbound]) -> list[Gate | None]:
        """The inbox gate for every delivery that can take it (sender, id, size all
        present and fine); None for the rest, which process_in checks one by one."""
        limit = self.settings.intake.max_message_bytes
        pending = [(i, m) for i, m in enumerate(inbounds)
                   if m.sender and m.message_id and len(m.body) <= limit]
        gates: list[Gate | None] = [None] * len(inbounds)
        if not pending:
            return gates
        rows = await conn.fetch(_GATES, [m.sender for _, m in pending],
                                [m.message_id for _, m in pending],
                                [m.message_type for _, m in pending])
        fresh = {(r["sender"], r["message_id"]) for r in rows if r["fresh"]}
        known = {r["sender"] for r in rows if r["known"]}
        for i, m in pending:
            key = (m.sender, m.message_id)
            # The same message twice in one batch: only its first delivery is new.
            gates[i] = (m.sender in known, key in fresh)
            fresh.discard(key)
        return gates

    async def process_in(self, conn: Connection, inbound: Inbound, *,
                         batch: Batch | None = None, gate: Gate | None = None) -> IntakeOutcome:
        """Process one delivery inside the caller's transaction.

        With `batch`, answers are left in it for the caller to flush; `gate` is this
        delivery's row from `_gates`, when the caller gated the batch already. The checks
        run in the module docstring's order; the first that fails decides the answer.
        """
        if batch is None:
            batch = Batch()
            outcome = await self.process_in(conn, inbound, batch=batch, gate=gate)
            await batch.flush(conn)
            return outcome
        sender = inbound.sender
        if sender is None:
            await self._dead(conn, batch, inbound, "no user_id property: the sender is unknown")
            return IntakeOutcome.DEAD
        guess = _guess_kind(inbound)
        gated = await self._gate(conn, batch, inbound, sender, gate)
        if isinstance(gated, IntakeOutcome):
            return gated
        if inbound.message_type in FINANCE_INBOUND_KINDS:
            return await self._finance(conn, batch, inbound, sender, gated)
        read = gated or _read_body(inbound)
        if isinstance(read, Problem):
            return await self._refuse_problem(conn, batch, inbound, guess, read)
        # The edge (broker/profiles/): open vocabularies spelt the hub's way; a body it
        # changes is kept as received.
        raw = await normalise_at_intake(conn, inbound, read.raw)
        guess = _kind_in_body(raw) or guess
        parsed = _parse(inbound, raw)
        if isinstance(parsed, Problem):
            return await self._refuse_problem(conn, batch, inbound, guess, parsed)
        kind, message, header = parsed
        if kind not in INBOUND_KINDS:
            # Confirmations from agencies are receipts: recorded, never answered.
            await _set_outcome(conn, inbound, IntakeOutcome.OK, body=raw)
            return IntakeOutcome.OK
        if problem := _not_the_sender(kind, header, sender, raw):
            return await self._refuse_problem(conn, batch, inbound, kind, problem)
        message_id = inbound.message_id or ""  # _gate answered a missing one already
        ctx = Context(sender=sender, message_id=message_id, kind=kind, message=message,
                      raw=raw)
        return await self._handle(conn, batch, inbound, ctx, header)

    async def _finance(self, conn: Connection, batch: Batch, inbound: Inbound, sender: str,
                       gated: Problem | None) -> IntakeOutcome:
        """A finance message (a dispute of a statement line): its own contract and answer."""
        if gated is not None:
            await self._dead(conn, batch, inbound, gated.error_value)
            return IntakeOutcome.DEAD
        today = local_date(datetime.datetime.now(datetime.UTC), self.settings.timezone)
        answer, raw = await answer_dispute(conn, inbound.body, sender, today=today)
        batch.outgoing.append(answer_message(answer, sender, inbound.message_id))
        error = answer.dispute_answer.error
        outcome = IntakeOutcome.OK if error is None else IntakeOutcome.ERROR
        await _set_outcome(conn, inbound, outcome, body=raw,
                           error=(error.code, error.message) if error else None)
        return outcome

    async def _gate(self, conn: Connection, batch: Batch, inbound: Inbound,
                    sender: str, gate: Gate | None) -> IntakeOutcome | Problem | None:
        """A known sender, an idempotency key, a size within the limit, not seen before.

        None: go on. An outcome: the delivery is done with (dead letter, duplicate). A
        problem: answer it (and record it) as the refusal says.
        """
        limit = self.settings.intake.max_message_bytes
        if inbound.message_id and len(inbound.body) <= limit:
            # The usual case in one round trip (or none, gated with its batch): a known
            # sender, and the inbox gate.
            row = gate or await conn.fetchrow(_GATE, sender, inbound.message_id,
                                              inbound.message_type)
            known, fresh = (bool(row[0]), bool(row[1])) if row is not None else (False, False)
            if not known:
                await self._dead(conn, batch, inbound, _unknown(sender))
                return IntakeOutcome.DEAD
            # Not fresh: the first delivery's effects have committed already.
            return None if fresh else IntakeOutcome.DUPLICATE
        if not await _is_agency(conn, sender):
            await self._dead(conn, batch, inbound, _unknown(sender))
            return IntakeOutcome.DEAD
        if len(inbound.body) > limit:
            return Problem(BADLY_FORMED, f"message body is {len(inbound.body)} bytes; "
                           f"the limit is {limit}", dead=True)
        return Problem(BADLY_FORMED, "AMQP property message_id is missing; it is required as "
                       "the idempotency key", record=False)

    async def _handle(self, conn: Connection, batch: Batch, inbound: Inbound,
                      ctx: Context, header: Any) -> IntakeOutcome:
        """The business handler, and its confirmation (or its refusal) in the batch."""
        try:
            if ctx.kind in getattr(self.handler, "refuses_before_writing", ()):
                # The handler promises to refuse before its first write for this kind:
                # no savepoint needed (two round trips saved per message).
                result = await self.handler(conn, ctx)
            else:
                async with conn.transaction():  # a savepoint: a refusal undoes the handler
                    result = await self.handler(conn, ctx)
        except Refusal as refusal:
            if refusal.after is not None:
                await refusal.after(conn)
            return await self._refuse(conn, batch, inbound, ctx.kind, header,
                                      refusal.error_type, refusal.error_value, body=ctx.raw,
                                      transaction_id=refusal.transaction_id)
        answer = result.confirmation or confirmation(
            ctx.kind, header, ok=True, **_echo(ctx.kind, ctx.message))
        batch.outgoing += [*self._answer(inbound, answer, result.transaction_id),
                           *result.outgoing]
        batch.answered.append((ctx.sender, ctx.message_id,
                               jsontext.dumps_text(ctx.raw)))
        return IntakeOutcome.OK

    async def _refuse_problem(self, conn: Connection, batch: Batch, inbound: Inbound,
                              kind: MessageType, problem: Problem) -> IntakeOutcome:
        return await self._refuse(conn, batch, inbound, problem.kind or kind, problem.header,
                                  problem.error_type, problem.error_value, body=problem.body,
                                  dead=problem.dead, record=problem.record)

    async def _refuse(self, conn: Connection, batch: Batch, inbound: Inbound,
                      kind: MessageType,
                      header: Any, error_type: ErrorType, error_value: str, *,
                      body: Any = None, dead: bool = False, record: bool = True,
                      transaction_id: str | None = None) -> IntakeOutcome:
        if len(error_value) > ERROR_VALUE_LIMIT:
            error_value = error_value[:ERROR_VALUE_LIMIT - 1] + "…"
        log.info("refused %s from %s: %s: %s", kind, inbound.sender, error_type, error_value)
        answer = confirmation(kind, header, ok=False, error_type=error_type,
                              error_value=error_value)
        outcome = IntakeOutcome.DEAD if dead else IntakeOutcome.ERROR
        batch.outgoing += self._answer(inbound, answer, transaction_id)
        if dead:
            await self._dead(conn, batch, inbound, f"{error_type}: {error_value}")
        if record:
            await _set_outcome(conn, inbound, outcome, body=body,
                               error=(str(error_type), error_value))
        return outcome

    def _answer(self, inbound: Inbound, answer: tuple[MessageType, BaseModel],
                transaction_id: str | None) -> list[Outgoing]:
        """The confirmation for the sender's queue, or kept for a synchronous caller."""
        if inbound.synchronous:
            inbound.answer = answer
            return []
        if inbound.sender is None:  # process_in dead-letters these before any answer
            raise ValueError("a delivery without user_id cannot be answered")
        return [reply(self.settings, inbound.sender, answer[0], answer[1],
                      inbound.correlation_id, transaction_id)]

    async def _dead(self, conn: Connection, batch: Batch, inbound: Inbound,
                    reason: str) -> None:
        log.warning("dead letter from %s (message_id %s): %s",
                    inbound.sender, inbound.message_id, reason)
        props = inbound.properties()
        await conn.execute(
            """INSERT INTO dead_letter (sender, message_id, routing_key, reason, properties, body)
               VALUES ($1, $2, $3, $4, $5::jsonb, $6)""",
            inbound.sender, inbound.message_id, inbound.routing_key, reason,
            json.dumps(props, ensure_ascii=False), inbound.body,
        )
        batch.outgoing.append(Outgoing(
            exchange=DEAD, routing_key=inbound.routing_key or "unknown", body=inbound.body,
            message_type=inbound.message_type, correlation_id=inbound.correlation_id,
            headers={"x-illhub-reason": reason[:1000], "x-illhub-sender": inbound.sender or "",
                     "x-illhub-original-message-id": inbound.message_id or ""},
        ))


_GATE = """
WITH known AS (SELECT true FROM agency WHERE symbol = $1 AND enabled),
     fresh AS (INSERT INTO inbox (sender, message_id, message_type, outcome)
               SELECT $1, $2, $3, 'ok' FROM known
               ON CONFLICT DO NOTHING RETURNING true)
SELECT EXISTS (SELECT FROM known), EXISTS (SELECT FROM fresh)"""

_GATES = """
WITH m AS (SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY
           AS m(sender, message_id, message_type, n)),
     known AS (SELECT m.* FROM m JOIN agency a ON a.symbol = m.sender AND a.enabled),
     fresh AS (INSERT INTO inbox (sender, message_id, message_type, outcome)
               SELECT sender, message_id, message_type, 'ok' FROM known ORDER BY n
               ON CONFLICT DO NOTHING RETURNING sender, message_id)
SELECT m.sender, m.message_id, k.n IS NOT NULL AS known,
       EXISTS (SELECT FROM fresh f WHERE f.sender = m.sender
                                     AND f.message_id = m.message_id) AS fresh
FROM m LEFT JOIN known k ON k.n = m.n"""

_ANSWERED = f"""
WITH answers AS ({OUTBOX_INSERT})
UPDATE inbox i SET outcome = 'ok', body = a.body
FROM unnest($8::text[], $9::text[], $10::jsonb[]) AS a(sender, message_id, body)
WHERE i.sender = a.sender AND i.message_id = a.message_id"""


@dataclass(frozen=True)
class Problem:
    """Why a delivery is refused: its ISO 18626 error, and what else becomes of it."""

    error_type: ErrorType
    error_value: str
    dead: bool = False  # also a dead letter (the body cannot be answered in full)
    record: bool = True  # its outcome goes in the inbox (not without a message_id)
    header: Any = None  # echoed in the ERROR confirmation, when it could be read
    body: Any = None  # stored with the outcome, when it is JSON
    kind: MessageType | None = None  # the confirmation to answer with, if the body says


@dataclass(frozen=True)
class Body:
    raw: Any


def _read_body(inbound: Inbound) -> Body | Problem:
    """The delivery's properties and body, read as JSON the hub can store and answer."""
    if inbound.nul_in:
        return Problem(BADLY_FORMED, f"AMQP {inbound.nul_in} contains U+0000 (NUL), which "
                       "no property may hold", dead=True)
    if (inbound.content_type or "").split(";")[0].strip().lower() != "application/json":
        return Problem(BADLY_FORMED, f"content_type is {inbound.content_type!r}; it must be "
                       "'application/json'", dead=True)
    try:
        raw = json.loads(inbound.body.decode("utf-8"), parse_constant=_not_a_number)
    except UnicodeDecodeError as exc:
        return Problem(BADLY_FORMED, f"body is not valid UTF-8 (byte {exc.start})", dead=True)
    except RecursionError:
        return Problem(BADLY_FORMED, f"body is nested too deeply (more than {MAX_NESTING} "
                       "levels)", dead=True)
    except ValueError as exc:  # not JSON, NaN/Infinity, a number of over 4,300 digits
        return Problem(BADLY_FORMED, f"body is not JSON: {str(exc).split('; use sys.')[0]}",
                       dead=True)
    # Before anything stores, serialises or recurses into the body.
    if problem := _unstorable(raw):
        value, too_deep = problem
        return Problem(BADLY_FORMED if too_deep else ErrorType.UNRECOGNISED_DATA_VALUE, value,
                       dead=too_deep, kind=_kind_in_body(raw))
    return Body(raw)


def _kind_in_body(raw: Any) -> MessageType | None:
    if isinstance(raw, dict) and len(raw) == 1:
        key = next(iter(raw))
        if key in INBOUND_KINDS:
            return MessageType(key)
    return None


def _parse(inbound: Inbound, raw: Any) -> tuple[MessageType, BaseModel, Any] | Problem:
    """The ISO 18626 message (kind, model, header), or what is wrong with it."""
    try:
        kind, message = parse_message(raw)
    except MessageError as exc:
        return Problem(exc.error_type, exc.error_value, header=_header_of(raw), body=raw)
    except RecursionError:
        return Problem(BADLY_FORMED, "body is nested too deeply", dead=True)
    header = getattr(message, "header", None)
    if inbound.message_type and inbound.message_type != kind:
        return Problem(BADLY_FORMED, f"AMQP type property {inbound.message_type!r} does not "
                       f"match the body's message type {str(kind)!r}", header=header, body=raw)
    return kind, message, header


def _not_the_sender(kind: MessageType, header: Any, sender: str, raw: Any) -> Problem | None:
    """The header must name the agency that sent the message (its AMQP user_id)."""
    named = getattr(header, SENDER_FIELD[kind]).symbol
    if named == sender:
        return None
    path = f"{kind}.header.{HEADER_WIRE[SENDER_FIELD[kind]]}"
    return Problem(ErrorType.UNRECOGNISED_DATA_VALUE, f"{path}: {named!r} is not the sending "
                   f"agency {sender!r} (AMQP user_id)", header=header, body=raw)


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _storable(text: str) -> str:
    """`text` as PostgreSQL can store it: no NUL, no unpaired surrogate."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def _text_problem(text: str) -> str | None:
    if "\x00" in text:
        return "contains U+0000 (NUL), which ISO 18626 text cannot hold"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return (f"contains an unpaired surrogate (U+{ord(text[exc.start]):04X}), which is "
                "not a Unicode character")
    return None


def _unstorable(raw: Any) -> tuple[str, bool] | None:
    """Why a parsed body cannot be stored or answered: (errorValue, nested too deeply).

    Iterative, so a hostile depth costs no recursion; paths are wire paths.
    """
    stack: list[tuple[Any, str, int]] = [(raw, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_NESTING:
                return (f"body is nested too deeply (more than {MAX_NESTING} levels, at "
                        f"{path[:100]})", True)
            if isinstance(value, list):
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
                continue
            for key, item in value.items():
                if problem := _text_problem(key):
                    return f"{path or 'body'}: the element name {_storable(key)[:80]!r} " \
                           f"{problem}", False
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, str) and (problem := _text_problem(value)):
            return f"{path or 'body'}: {problem}", False
    return None


def _unknown(sender: str) -> str:
    return f"user_id {sender!r} is not a registered, enabled agency"


async def _is_agency(conn: Connection, symbol: str) -> bool:
    return bool(await conn.fetchval(
        "SELECT true FROM agency WHERE symbol = $1 AND enabled", symbol))


async def _set_outcome(conn: Connection, inbound: Inbound, outcome: IntakeOutcome, *,
                       body: Any = None, error: tuple[str, str] | None = None) -> None:
    await conn.execute(
        """UPDATE inbox SET outcome = $3, body = $4::jsonb, error_type = $5, error_value = $6
           WHERE sender = $1 AND message_id = $2""",
        inbound.sender, inbound.message_id, outcome,
        json.dumps(body, ensure_ascii=False) if body is not None else None,
        error[0] if error else None, error[1] if error else None,
    )


def _guess_kind(inbound: Inbound) -> MessageType:
    """The confirmation type to answer with before the body could be read."""
    for candidate in (inbound.message_type, inbound.routing_key):
        if candidate in INBOUND_KINDS:
            return MessageType(candidate)
    return MessageType.REQUEST


def _header_of(raw: Any) -> Any:
    """Best effort: the inbound header, so an ERROR confirmation can echo its ids."""
    if isinstance(raw, dict) and len(raw) == 1:
        inner = next(iter(raw.values()))
        if isinstance(inner, dict) and isinstance(inner.get("header"), dict):
            try:
                return Header.model_validate(inner["header"])
            except Exception:  # a garbled header is simply not echoed
                return None
    return None


def _echo(kind: MessageType, message: BaseModel) -> dict[str, Any]:
    """What a confirmation repeats from the message it confirms (ISO 18626)."""
    if kind is MessageType.SUPPLYING_AGENCY_MESSAGE:
        sam = _as(message, SupplyingAgencyMessage)
        return {"reason_for_message": sam.message_info.reason_for_message}
    if kind is MessageType.REQUESTING_AGENCY_MESSAGE:
        return {"action": _as(message, RequestingAgencyMessage).action}
    return {}


def _as(message: BaseModel, model: type[_Model]) -> _Model:
    if not isinstance(message, model):
        raise TypeError(f"expected a {model.__name__}, got a {type(message).__name__}")
    return message
