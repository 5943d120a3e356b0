"""RabbitMQ topology of ARCHITECTURE §3.2, declared idempotently.

Everything is durable; queues are quorum queues (setting `queue_type`) that
dead-letter to `ill.dead`.
A delivery limit on `hub.inbound` turns a message that keeps crashing the hub
into a dead letter instead of an endless redelivery loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import aio_pika
from aio_pika.abc import (
    AbstractChannel,
    AbstractExchange,
    AbstractRobustConnection,
    ExchangeType,
)
from aio_pika.exceptions import AMQPError

from schemas.settings import Settings
from schemas.wire import (
    DEAD,
    EVENTS,
    FINANCE,
    HUB_DEAD,
    HUB_INBOUND,
    INBOUND,
    OUTBOUND,
    agency_queue,
)

# One consistent-hash exchange per generation of intake shards (broker/shards.py).
HUB_INTAKE = "hub.intake"
# The key every message of one transaction carries (ARCHITECTURE §3.3): the
# requester's request id. A message without it hashes like every other one without it.
SHARD_KEY = "correlation_id"
SHARD_WEIGHT = "1"  # every shard gets an equal share of the hash ring
CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"
DELIVERY_LIMIT = 10

EXCHANGES: dict[str, ExchangeType] = {
    INBOUND: ExchangeType.TOPIC,
    OUTBOUND: ExchangeType.DIRECT,
    FINANCE: ExchangeType.TOPIC,
    EVENTS: ExchangeType.TOPIC,
    DEAD: ExchangeType.FANOUT,
}


def queue_args(settings: Settings, **extra: Any) -> dict[str, Any]:
    args = {"x-queue-type": settings.amqp.queue_type, "x-dead-letter-exchange": settings.name(DEAD),
            **extra}
    if settings.amqp.queue_type != "quorum":
        args.pop("x-delivery-limit", None)  # a quorum-queue feature
    return args


async def declare_exchanges(channel: AbstractChannel,
                            settings: Settings) -> dict[str, AbstractExchange]:
    return {
        base: await channel.declare_exchange(settings.name(base), kind, durable=True)
        for base, kind in EXCHANGES.items()
    }


async def declare(channel: AbstractChannel, settings: Settings,
                  agencies: Sequence[str] = ()) -> dict[str, AbstractExchange]:
    """Declare the whole topology (and the given agencies' queues); safe to repeat."""
    exchanges = await declare_exchanges(channel, settings)
    dead = await channel.declare_queue(settings.name(HUB_DEAD), durable=True,
                                       arguments={"x-queue-type": settings.amqp.queue_type})
    await dead.bind(exchanges[DEAD], routing_key="#")
    # The intake's shard queues are declared by broker/shards.py: which generation is
    # current is kept in the database.
    for symbol in agencies:
        await declare_agency_queue(channel, settings, symbol, exchanges[OUTBOUND])
    return exchanges


def intake_exchange(generation: int) -> str:
    return f"{HUB_INTAKE}.g{generation}"


def shard_queue(generation: int, index: int) -> str:
    """Generation 0 is the single `hub.inbound` queue of the releases before sharding."""
    return HUB_INBOUND if generation == 0 else f"{HUB_INBOUND}.g{generation}.{index}"


class MissingPlugin(RuntimeError):
    pass


async def declare_intake(channel: AbstractChannel, settings: Settings, generation: int,
                         shards: int) -> None:
    """One generation of the intake: its hash exchange and shard queues, bound together.

    Each shard has a single active consumer, which keeps its messages in publish order
    even when several hub processes subscribe; the others stand by and take over at once.
    Not yet fed from `ill.inbound`: see route_intake_to.
    """
    try:
        exchange = await channel.declare_exchange(
            settings.name(intake_exchange(generation)), ExchangeType.X_CONSISTENT_HASH,
            durable=True, arguments={"hash-property": SHARD_KEY})
    except AMQPError as exc:  # RabbitMQ closes the connection on an unknown exchange type
        if "unknown exchange type" in str(exc):
            raise MissingPlugin(f"RabbitMQ has no x-consistent-hash exchange type: enable it "
                                f"with `rabbitmq-plugins enable {CONSISTENT_HASH_PLUGIN}`"
                                ) from exc
        raise
    for index in range(shards):
        queue = await channel.declare_queue(
            settings.name(shard_queue(generation, index)), durable=True,
            arguments=queue_args(settings, **{"x-single-active-consumer": True,
                                               "x-delivery-limit": DELIVERY_LIMIT}))
        await queue.bind(exchange, routing_key=SHARD_WEIGHT)


async def route_intake_to(channel: AbstractChannel, settings: Settings,
                          generation: int) -> None:
    """Feed `ill.inbound` into a generation of the intake (idempotent)."""
    inbound = await channel.declare_exchange(settings.name(INBOUND), ExchangeType.TOPIC,
                                             durable=True)
    if generation == 0:
        queue = await channel.declare_queue(settings.name(HUB_INBOUND), passive=True)
        await queue.bind(inbound, routing_key="#")
        return
    exchange = await channel.get_exchange(settings.name(intake_exchange(generation)),
                                          ensure=False)
    await exchange.bind(inbound, routing_key="#")


async def stop_routing_intake_to(channel: AbstractChannel, settings: Settings,
                                 generation: int) -> None:
    """No new message reaches this generation; what it holds stays to be drained."""
    inbound = await channel.get_exchange(settings.name(INBOUND), ensure=False)
    if generation == 0:
        queue = await channel.get_queue(settings.name(HUB_INBOUND), ensure=False)
        await queue.unbind(inbound, routing_key="#")
        return
    exchange = await channel.get_exchange(settings.name(intake_exchange(generation)),
                                          ensure=False)
    await exchange.unbind(inbound, routing_key="#")


async def declare_agency_queue(channel: AbstractChannel, settings: Settings, symbol: str,
                               outbound: AbstractExchange | None = None) -> None:
    if outbound is None:
        outbound = await channel.declare_exchange(settings.name(OUTBOUND),
                                                  ExchangeType.DIRECT, durable=True)
    queue = await channel.declare_queue(settings.name(agency_queue(symbol)), durable=True,
                                        arguments=queue_args(settings))
    await queue.bind(outbound, routing_key=symbol)


@asynccontextmanager
async def connect_and_declare(settings: Settings, agencies: Sequence[str] = ()
                              ) -> AsyncIterator[AbstractRobustConnection]:
    """A connection to the hub's broker, with the topology (not the intake) declared."""
    connection = await aio_pika.connect_robust(settings.amqp_broker_url)
    try:
        channel = await connection.channel()
        await declare(channel, settings, list(agencies))
        await channel.close()
        yield connection
    finally:
        await connection.close()
