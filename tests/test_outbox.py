"""The outbox relay: unroutable messages are kept and retried, never dropped."""

from __future__ import annotations

import aio_pika

from infra import topology
from infra.outbox import Outgoing, enqueue
from infra.relay import Relay
from schemas import wire
from schemas.settings import Settings
from tests.support.names import agency_symbol


async def test_an_unroutable_message_is_kept_and_delivered_once_its_queue_exists(
        settings: Settings, pool) -> None:
    symbol = agency_symbol()  # no queue yet: publishing to it is unroutable
    conn = await aio_pika.connect(settings.amqp.url.get_secret_value())
    async with conn:
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)
        await topology.declare(channel, settings)
        relay = Relay(pool, channel, settings)
        message = Outgoing(exchange=wire.OUTBOUND, routing_key=symbol,
                           body={"note": "图书已寄出"}, message_type="supplyingAgencyMessage")
        async with pool.acquire() as db, db.transaction():
            await enqueue(db, [message])
        await relay.drain()
        row = await pool.fetchrow("SELECT * FROM outbox WHERE message_id = $1",
                                  message.message_id)
        assert row["published_at"] is None and row["attempts"] == 1
        assert "unroutable" in row["last_error"]
        assert row["available_at"] > row["created_at"]  # backing off, not spinning

        # The agency's queue appears; the retry delivers the message, once.
        await topology.declare_agency_queue(channel, settings, symbol)
        await pool.execute("UPDATE outbox SET available_at = now() WHERE message_id = $1",
                           message.message_id)
        await relay.drain()
        assert await pool.fetchval("SELECT published_at FROM outbox WHERE message_id = $1",
                                   message.message_id) is not None
        queue = await channel.get_queue(settings.name(wire.agency_queue(symbol)))
        got = await queue.get(timeout=5)
        assert got.message_id == message.message_id
        assert got.body.decode() == '{"note":"图书已寄出"}'
        await got.ack()
        assert await queue.get(fail=False) is None
