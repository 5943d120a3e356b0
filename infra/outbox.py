"""The transactional outbox, write side: messages written with the state change they
belong to, in the caller's transaction; infra/relay.py publishes them after commit.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from infra.database import Connection
from schemas import jsontext
from schemas.wire import OUTBOUND


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
        return jsontext.dumps(self.body)


# One statement for any number of rows, inserted in the order given (the relay keeps
# that order per receiver). Each row's transport, RabbitMQ or HTTP for an agency that
# is an ISO 18626 peer (the view `iso18626_http_peer`), is chosen here, and a
# statement-level trigger wakes the relays (migrations 0011 and 0035).
OUTBOX_INSERT = f"""INSERT INTO outbox (exchange, routing_key, message_id, message_type,
                                        correlation_id, headers, body, transport)
                    SELECT m.exchange, m.routing_key, m.message_id, m.message_type,
                           m.correlation_id, m.headers, m.body,
                           CASE WHEN p.symbol IS NULL THEN 'amqp' ELSE 'iso18626-http' END
                    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                $5::text[], $6::jsonb[], $7::bytea[]) WITH ORDINALITY
                         AS m(exchange, routing_key, message_id, message_type,
                              correlation_id, headers, body, n)
                    LEFT JOIN iso18626_http_peer p
                           ON m.exchange = '{OUTBOUND}' AND p.symbol = m.routing_key
                    ORDER BY m.n"""


def outbox_columns(messages: list[Outgoing]) -> tuple[list[Any], ...]:
    """The outbox rows as column arrays, the parameters of OUTBOX_INSERT ($1..$7)."""
    return (
        [m.exchange for m in messages], [m.routing_key for m in messages],
        [m.message_id for m in messages], [m.message_type for m in messages],
        [m.correlation_id for m in messages],
        [jsontext.dumps_text(m.headers) for m in messages],
        [m.encoded() for m in messages],
    )


async def enqueue(conn: Connection, messages: list[Outgoing]) -> None:
    """Write messages to the outbox inside the caller's transaction."""
    if messages:
        await conn.execute(OUTBOX_INSERT, *outbox_columns(messages))
