"""Profiles applied at the edge, and what was received kept beside what the hub went on
with.

In: `web/iso18626.py` applies the sending agency's profile to each document after the
XML is read and before intake validates it; `broker/intake.py` applies the vocabulary
(the one set every profile shares) to each AMQP message before parsing it
(`normalise_at_intake`). Out: `broker/peers.py` applies the receiving agency's profile
to each outbox row before writing it as XML. The hub's own model (dispatch, ledger,
audit log, AMQP members) only ever sees the normalised form.

The original is kept in `inbound_original`, keyed like the inbox (sender, message_id):
for ISO 18626 over HTTP every document as received (securityCode blanked), for AMQP a
body the edge changed.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any, Protocol, TypeAlias

import asyncpg

from broker.profiles.model import Adjusted, Applied, Direction, Work
from broker.profiles.table import ADJUSTMENTS, DEFAULT_PROFILE, PROFILES, VOCABULARY
from infra.database import Connection
from schemas import jsontext

log = logging.getLogger(__name__)

Db: TypeAlias = Connection | asyncpg.Pool
HTTP, AMQP = "iso18626-http", "amqp"
# What the AMQP edge applies: the vocabulary, as every profile does (strict has no more).
AMQP_PROFILE = DEFAULT_PROFILE
# requestingAgencyAuthentication's password, in whatever prefix and with any content.
_SECURITY_CODE = re.compile(
    rb"(<(?:[\w.-]+:)?securityCode\b[^>]*>).*?(</(?:[\w.-]+:)?securityCode\s*>)", re.DOTALL)


def profile_named(name: str | None) -> str:
    """A known profile's name; the default for None or a name no longer known."""
    return name if name in PROFILES else DEFAULT_PROFILE


def _apply(names: tuple[str, ...], body: Any, seq: int | None) -> Adjusted:
    if not (isinstance(body, dict) and len(body) == 1):
        return Adjusted(body=body)  # not a message: validation says what is wrong
    (kind, inner), = body.items()
    if not isinstance(inner, dict):
        return Adjusted(body=body)
    work = Work(kind=str(kind), inner=jsontext.copied(inner), seq=seq)
    applied: list[Applied] = []
    for name in names:
        applied += [Applied(name, change) for change in ADJUSTMENTS[name].apply(work)]
        if work.drop is not None:
            break
    return Adjusted(body={kind: work.inner} if applied else body, applied=applied,
                    drop=work.drop, note_seq=work.note_seq, seq_used=work.seq_used)


def inbound(profile: str, body: Any) -> Adjusted:
    """What the hub goes on with, of a message a peer of `profile` sent."""
    return _apply(PROFILES[profile_named(profile)].inbound, body, None)


def outbound(profile: str, body: Any, *, seq: int | None = None) -> Adjusted:
    """What a peer of `profile` is sent for the outbox body `body`; `seq` is the number
    its next note marker takes, for profiles that number notes."""
    return _apply(PROFILES[profile_named(profile)].outbound, body, seq)


def vocabulary(body: Any) -> Adjusted:
    return _apply(VOCABULARY, body, None)


def numbers_notes(profile: str) -> bool:
    return "notes.seq_out" in PROFILES[profile_named(profile)].outbound


def adjustments_of(profile: str, direction: Direction) -> tuple[str, ...]:
    p = PROFILES[profile_named(profile)]
    return p.inbound if direction is Direction.INBOUND else p.outbound


def redacted(raw: bytes) -> bytes:
    """The document with the text of every securityCode element blanked."""
    return _SECURITY_CODE.sub(rb"\1\2", raw)


def request_id_of(body: Any) -> str | None:
    if isinstance(body, dict) and len(body) == 1:
        inner = next(iter(body.values()))
        header = inner.get("header") if isinstance(inner, dict) else None
        value = header.get("requestingAgencyRequestId") if isinstance(header, dict) else None
        return value if isinstance(value, str) else None
    return None


async def profile_of(db: Db, symbol: str) -> str:
    """The agency's profile (the default for an unknown agency)."""
    return profile_named(await db.fetchval(
        "SELECT iso18626_profile FROM agency WHERE symbol = $1", symbol))


async def keep_original(db: Db, *, sender: str, message_id: str, transport: str,
                        profile: str, content_type: str, original: bytes, body: Any,
                        adjusted: Adjusted) -> None:
    """Record the message as received (once per sender and message id), and log an
    out-of-order ReShare note number."""
    request_id = request_id_of(body)
    if adjusted.note_seq is not None and request_id is not None:
        last = await db.fetchval(
            """SELECT max(note_seq) FROM inbound_original
               WHERE request_id = $1 AND sender = $2 AND message_id <> $3""",
            request_id, sender, message_id)
        if last is not None and adjusted.note_seq <= last:
            log.warning("%s sent note #seq:%s# for request %s after #seq:%s#: out of order "
                        "or repeated (message %s)", sender, adjusted.note_seq, request_id,
                        last, message_id)
    await db.execute(
        """INSERT INTO inbound_original (sender, message_id, transport, profile, request_id,
                                         content_type, original, adjustments, note_seq)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9)
           ON CONFLICT (sender, message_id) DO NOTHING""",
        sender, message_id, transport, profile, request_id, content_type, original,
        json.dumps([a.as_json() for a in adjusted.applied], ensure_ascii=False),
        adjusted.note_seq)


class Delivery(Protocol):
    """What the intake hook reads of a delivery (broker/intake.py `Inbound`)."""

    body: bytes
    sender: str | None
    message_id: str | None
    content_type: str | None
    synchronous: bool


async def normalise_at_intake(conn: Connection, delivery: Delivery, raw: Any) -> Any:
    """The AMQP edge: the vocabulary normalised before the message is parsed; a body that
    changed is kept as received. An HTTP message (synchronous) was normalised with its
    profile by web/iso18626.py already."""
    if delivery.synchronous or delivery.sender is None or delivery.message_id is None:
        return raw
    adjusted = vocabulary(raw)
    if not adjusted.changed:
        return raw
    log.info("normalised %s from %s: %s", delivery.message_id, delivery.sender,
             "; ".join(a.detail for a in adjusted.applied))
    await keep_original(conn, sender=delivery.sender, message_id=delivery.message_id,
                        transport=AMQP, profile=AMQP_PROFILE,
                        content_type=delivery.content_type or "application/json",
                        original=delivery.body, body=raw, adjusted=adjusted)
    return adjusted.body


async def originals(db: Db, request_id: str) -> list[asyncpg.Record]:
    """Everything received about a request id, as received, oldest first."""
    return list(await db.fetch(
        """SELECT sender, message_id, received_at, transport, profile, content_type,
                  original, adjustments, note_seq
           FROM inbound_original WHERE request_id = $1 ORDER BY received_at, message_id""",
        request_id))
