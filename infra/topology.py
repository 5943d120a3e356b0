"""RabbitMQ topology of ARCHITECTURE §3.2, declared idempotently.

Everything is durable; queues are quorum queues (setting `queue_type`) that
dead-letter to `ill.dead`.
A delivery limit on `hub.inbound` turns a message that keeps crashing the hub
into a dead letter instead of an endless redelivery loop.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, ExchangeType

from schemas.settings import Settings

INBOUND = "ill.inbound"
OUTBOUND = "ill.outbound"
FINANCE = "ill.finance"
EVENTS = "ill.events"
DEAD = "ill.dead"
HUB_INBOUND = "hub.inbound"
HUB_DEAD = "hub.dead"
DELIVERY_LIMIT = 10

EXCHANGES: dict[str, ExchangeType] = {
    INBOUND: ExchangeType.TOPIC,
    OUTBOUND: ExchangeType.DIRECT,
    FINANCE: ExchangeType.TOPIC,
    EVENTS: ExchangeType.TOPIC,
    DEAD: ExchangeType.FANOUT,
}


def agency_queue(symbol: str) -> str:
    return f"agency.{symbol}"


def queue_args(settings: Settings, **extra: Any) -> dict[str, Any]:
    args = {"x-queue-type": settings.queue_type, "x-dead-letter-exchange": settings.name(DEAD),
            **extra}
    if settings.queue_type != "quorum":
        args.pop("x-delivery-limit", None)  # a quorum-queue feature
    return args


async def declare_exchanges(channel: AbstractChannel,
                            settings: Settings) -> dict[str, AbstractExchange]:
    return {
        base: await channel.declare_exchange(settings.name(base), kind, durable=True)
        for base, kind in EXCHANGES.items()
    }


async def declare(channel: AbstractChannel, settings: Settings,
                  agencies: list[str] = ()) -> dict[str, AbstractExchange]:
    """Declare the whole topology (and the given agencies' queues); safe to repeat."""
    exchanges = await declare_exchanges(channel, settings)
    dead = await channel.declare_queue(settings.name(HUB_DEAD), durable=True,
                                       arguments={"x-queue-type": settings.queue_type})
    await dead.bind(exchanges[DEAD], routing_key="#")
    # Single active consumer keeps inbound messages in publish order even when
    # several hub processes consume; the others stand by and take over at once.
    inbound = await channel.declare_queue(
        settings.name(HUB_INBOUND), durable=True,
        arguments=queue_args(settings, **{"x-single-active-consumer": True,
                                           "x-delivery-limit": DELIVERY_LIMIT}),
    )
    await inbound.bind(exchanges[INBOUND], routing_key="#")
    for symbol in agencies:
        await declare_agency_queue(channel, settings, symbol, exchanges[OUTBOUND])
    return exchanges


async def declare_agency_queue(channel: AbstractChannel, settings: Settings, symbol: str,
                               outbound: AbstractExchange | None = None) -> None:
    if outbound is None:
        outbound = await channel.declare_exchange(settings.name(OUTBOUND),
                                                  ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(settings.name(agency_queue(symbol)), durable=True,
                                        arguments=queue_args(settings))
    await queue.bind(outbound, routing_key=symbol)


async def declare_all(settings: Settings, agencies: list[str] = ()) -> None:
    connection = await aio_pika.connect(settings.amqp_url.get_secret_value())
    async with connection:
        channel = await connection.channel()
        await declare(channel, settings, agencies)
