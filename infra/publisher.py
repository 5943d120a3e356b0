"""Publishing a batch of messages on one channel: one socket write, confirms awaited together.

aio-pika's `Exchange.publish` hands each message to aiormq's `basic_publish`, which
holds the channel's lock until that message's frames have been written and drained: a
socket write (a system call, and a wake-up of the broker on this box) per message, one
after the other. The outbox relay publishes in batches, so this module writes a batch's
frames in one piece, on aio-pika's own underlying aiormq channel, and registers each
message for its publisher confirm exactly as `basic_publish` does: the broker's acks,
nacks and returns (mandatory, unroutable) settle the same futures, and the channel's
delivery tags stay in step with every other publish on it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import aiormq
from aio_pika.abc import AbstractChannel
from aiormq.abc import ChannelFrame
from pamqp import commands as spec
from pamqp.body import ContentBody
from pamqp.header import ContentHeader


@dataclass(frozen=True)
class Publish:
    """One message to publish (its properties as the AMQP header carries them)."""

    exchange: str
    routing_key: str
    body: bytes
    properties: spec.Basic.Properties
    mandatory: bool


@lru_cache(maxsize=4096)
def _publish_method(exchange: str, routing_key: str, mandatory: bool) -> spec.Basic.Publish:
    # The same few exchanges and agencies again and again: one frame object each.
    return spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)


def _forget(underlay: aiormq.Channel, message_id: str) -> Callable[[object], None]:
    """Once a message is settled, its id no longer maps to its delivery tag (as aiormq's
    own publish does: the map is how a returned message finds its confirmation)."""
    def forget(_: object) -> None:
        underlay.message_id_delivery_tag.pop(message_id, None)
    return forget


async def publish_many(channel: AbstractChannel, messages: Sequence[Publish],
                       timeout: float) -> list[BaseException | None]:
    """Publish `messages` in order; for each, None once the broker confirmed it, else the
    error: aiormq's PublishError (returned: no queue for a mandatory message; the channel
    is opened with on_return_raises), DeliveryError (nacked), TimeoutError, or whatever
    the channel raised. Needs a channel with publisher confirms. Never waits longer than
    `timeout` for the write, nor again for the confirms: a connection lost mid-write
    would otherwise hold the caller (the relay, and its lock) for ever."""
    if not messages:
        return []
    try:
        confirmations = await asyncio.wait_for(_write(channel, messages), timeout)
    except Exception as exc:  # every message failed with it; the caller sorts them out
        return [exc] * len(messages)
    done = await asyncio.gather(*(asyncio.wait_for(c, timeout) for c in confirmations),
                                return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in done]


async def _write(channel: AbstractChannel, messages: Sequence[Publish]
                 ) -> list[asyncio.Future[object]]:
    """Register each message for its confirm and write all their frames in one piece;
    the confirmations, in order."""
    underlay: aiormq.Channel = await channel.get_underlay_channel()  # type: ignore[assignment]
    if not underlay.publisher_confirms:
        raise ValueError("publish_many needs a channel with publisher confirms")
    confirmations: list[asyncio.Future[object]] = []
    frames: list[object] = []
    async with underlay.lock:
        for m in messages:
            message_id = m.properties.message_id
            if not message_id:
                raise ValueError("every message needs a message_id (returns are matched by it)")
            underlay.delivery_tag += 1
            tag = underlay.delivery_tag
            confirmation: asyncio.Future[object] = underlay.create_future()
            underlay.confirmations[tag] = confirmation
            underlay.message_id_delivery_tag[message_id] = tag
            confirmation.add_done_callback(_forget(underlay, message_id))
            confirmations.append(confirmation)
            frames.append(_publish_method(m.exchange, m.routing_key, m.mandatory))
            frames.append(ContentHeader(properties=m.properties, body_size=len(m.body)))
            size = underlay.max_content_size
            frames.extend(ContentBody(m.body[i:i + size]) for i in range(0, len(m.body), size))
        drained = underlay.create_future()
        await underlay.write_queue.put(ChannelFrame.marshall(
            frames=frames, channel_number=underlay.number,  # type: ignore[arg-type]
            drain_future=drained))
        await drained
    return confirmations
