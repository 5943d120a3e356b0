"""The transactional outbox, write side: messages written with the state change they
belong to, in the caller's transaction; infra/relay.py publishes them after commit.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

from infra.database import Connection


@dataclass
class Outgoing:
    """One message the hub will send, not yet written to the outbox."""

    exchange: str
    routing_key: str
    body: dict[str, Any] | bytes
    message_type: str | None = None
    correlation_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str = field(default_factory=lambda: str(uuid.uuid4()))

    def encoded(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode()


# One statement for any number of rows; a trigger (migration 0011) wakes the relay.
OUTBOX_INSERT = """INSERT INTO outbox (exchange, routing_key, message_id, message_type,
                                       correlation_id, headers, body)
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                        $5::text[], $6::jsonb[], $7::bytea[])"""


def outbox_columns(messages: list[Outgoing]) -> tuple[list[Any], ...]:
    """The outbox rows as column arrays, the parameters of OUTBOX_INSERT ($1..$7)."""
    return (
        [m.exchange for m in messages], [m.routing_key for m in messages],
        [m.message_id for m in messages], [m.message_type for m in messages],
        [m.correlation_id for m in messages],
        [json.dumps(m.headers, ensure_ascii=False) for m in messages],
        [m.encoded() for m in messages],
    )


async def enqueue(conn: Connection, messages: list[Outgoing]) -> None:
    """Write messages to the outbox inside the caller's transaction."""
    if messages:
        await conn.execute(OUTBOX_INSERT, *outbox_columns(messages))
