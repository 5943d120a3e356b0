"""Dead letters: list what the hub could not process, and replay one after a fix.

A replay runs the stored delivery through the same intake as the broker would,
with its original sender and properties, so it is checked and answered exactly
like a fresh message. The inbox row that recorded the failure is removed in the
same transaction, otherwise the replay would be absorbed as a redelivery.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from broker.intake import Inbound, Intake


async def listing(pool: asyncpg.Pool, *, limit: int = 50,
                  include_replayed: bool = False) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT id, received_at, sender, message_id, routing_key, reason, length(body) AS size,
                  replayed_at
           FROM dead_letter WHERE $2 OR replayed_at IS NULL ORDER BY id DESC LIMIT $1""",
        limit, include_replayed)


async def replay(pool: asyncpg.Pool, intake: Intake, dead_id: int) -> str:
    """Process dead letter `dead_id` again; returns the new outcome."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM dead_letter WHERE id = $1 FOR UPDATE", dead_id)
        if row is None:
            raise LookupError(f"no dead letter {dead_id}")
        if row["replayed_at"] is not None:
            raise LookupError(f"dead letter {dead_id} was already replayed at "
                              f"{row['replayed_at']:%Y-%m-%d %H:%M:%S}")
        props: dict[str, Any] = json.loads(row["properties"])
        inbound = Inbound(body=bytes(row["body"]), sender=props.get("user_id"),
                          message_id=props.get("message_id"),
                          routing_key=props.get("routing_key") or "",
                          content_type=props.get("content_type"),
                          message_type=props.get("type"),
                          correlation_id=props.get("correlation_id"),
                          headers=props.get("headers") or {})
        if inbound.sender and inbound.message_id:
            await conn.execute(
                "DELETE FROM inbox WHERE sender = $1 AND message_id = $2 AND outcome = 'dead'",
                inbound.sender, inbound.message_id)
        await conn.execute("UPDATE dead_letter SET replayed_at = now() WHERE id = $1", dead_id)
        return await intake.process_in(conn, inbound)
