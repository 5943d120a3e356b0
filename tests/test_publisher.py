"""Publishing a batch in one write (infra/publisher.py) against the real broker: each
message confirmed, returned or refused on its own, in order, and the channel still fine
for aio-pika's own publishes afterwards."""

from __future__ import annotations

import uuid

import aio_pika
from aio_pika.exceptions import DeliveryError
from pamqp import commands as spec

from infra.publisher import Publish, publish_many
from schemas.settings import Settings


def _publish(exchange: str, routing_key: str, body: bytes, *, mandatory: bool = True,
             headers: dict[str, str] | None = None) -> Publish:
    return Publish(exchange=exchange, routing_key=routing_key, body=body, mandatory=mandatory,
                   properties=spec.Basic.Properties(
                       message_id=str(uuid.uuid4()), delivery_mode=2,
                       content_type="application/json", message_type="request",
                       correlation_id="R-1", headers=headers or {}))


async def test_a_batch_arrives_in_order_and_an_unroutable_message_fails_alone(
        settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp.url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchange = await channel.declare_exchange(f"publisher-{uuid.uuid4().hex[:8]}",
                                                  aio_pika.ExchangeType.DIRECT,
                                                  auto_delete=True)
        queue = await channel.declare_queue(exclusive=True)
        await queue.bind(exchange, "there")
        # Larger than a frame: the body is split across several body frames.
        big = ("图书馆" * 100_000).encode()
        batch = [_publish(exchange.name, "there", b'{"n":1}', headers={"h": "一"}),
                 _publish(exchange.name, "nowhere", b'{"n":2}'),  # mandatory, no queue
                 _publish(exchange.name, "nowhere", b'{"n":3}', mandatory=False),
                 _publish(exchange.name, "there", big)]
        results = await publish_many(channel, batch, timeout=10)
        assert results[0] is None and results[2] is None and results[3] is None
        assert isinstance(results[1], DeliveryError)  # returned: no queue bound

        first = await queue.get(timeout=5)
        assert first.body == b'{"n":1}' and first.message_id == batch[0].properties.message_id
        assert first.headers == {"h": "一"} and first.type == "request"
        assert first.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
        second = await queue.get(timeout=5)
        assert second.body == big
        assert await queue.get(fail=False) is None

        # The delivery tags stayed in step: aio-pika's own publish is confirmed as ever.
        confirmed = await exchange.publish(aio_pika.Message(b"after", message_id="after"),
                                           routing_key="there")
        assert isinstance(confirmed, spec.Basic.Ack)
        assert (await queue.get(timeout=5)).body == b"after"


async def test_an_empty_batch_publishes_nothing(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.amqp.url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        assert await publish_many(channel, [], timeout=1) == []
