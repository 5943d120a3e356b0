"""A library system's side of the wire contract: publish to the hub, read your queue.

Used by the demo's simulated libraries and suppliers and by the tests; an ILL
system written in Python can use it as is. It sets the AMQP properties that
ARCHITECTURE §3.3 requires (message_id, type, user_id, timestamp, correlation_id).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from schemas.settings import Settings
from schemas.wire import INBOUND, agency_queue

_UNSET: Any = object()


@dataclass
class Received:
    kind: str | None
    body: Any
    message_id: str | None
    correlation_id: str | None
    headers: dict[str, Any]

    @property
    def content(self) -> dict[str, Any]:
        """The message body under its single top-level key."""
        return next(iter(self.body.values()))


class AgencyClient:
    def __init__(self, settings: Settings, symbol: str, password: str) -> None:
        self.settings = settings
        self.symbol = symbol
        self._url = settings.amqp_url_for(symbol, password)
        self.inbox: asyncio.Queue[Received] = asyncio.Queue()
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> AgencyClient:
        await self.connect()
        return self

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def connect(self, *, consume: bool = True) -> None:
        self._connection = await aio_pika.connect_robust(self._url)
        self._channel = await self._connection.channel(publisher_confirms=True)
        self._exchange = await self._channel.get_exchange(self.settings.name(INBOUND),
                                                          ensure=False)
        if consume:
            # Declared passively rather than looked up: aio-pika re-consumes only declared
            # queues when the robust connection comes back after a broker restart.
            queue = await self._channel.declare_queue(
                self.settings.name(agency_queue(self.symbol)), passive=True)
            await queue.consume(self._on_message)

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            body: Any = json.loads(message.body)
        except ValueError:
            body = message.body
        await self.inbox.put(Received(message.type, body, message.message_id,
                                      message.correlation_id, dict(message.headers or {})))
        await message.ack()

    async def send(self, kind: str, body: dict[str, Any] | bytes, *,
                   message_id: str | None = _UNSET, correlation_id: str | None = None,
                   content_type: str | None = "application/json",
                   user_id: str | None = _UNSET, type_: str | None = _UNSET) -> str | None:
        """Publish to `ill.inbound` with routing key = message type; returns the message_id."""
        raw = body if isinstance(body, bytes) else json.dumps(
            body, ensure_ascii=False).encode()
        if message_id is _UNSET:
            message_id = str(uuid.uuid4())
        if correlation_id is None and isinstance(body, dict):
            correlation_id = _request_id(body)
        message = aio_pika.Message(
            body=raw, content_type=content_type, message_id=message_id,
            type=kind if type_ is _UNSET else type_,
            user_id=self.symbol if user_id is _UNSET else user_id,
            correlation_id=correlation_id, timestamp=datetime.now(UTC),
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        await self._exchange.publish(message, routing_key=kind)
        return message_id

    async def receive(self, timeout: float = 10.0) -> Received:
        return await asyncio.wait_for(self.inbox.get(), timeout)

    async def close(self) -> None:
        if self._connection:
            await self._connection.close()
            self._connection = None


def _request_id(body: dict[str, Any]) -> str | None:
    try:
        inner = next(iter(body.values()))
        request_id = inner["header"]["requestingAgencyRequestId"]
    except (StopIteration, KeyError, TypeError, AttributeError):
        return None
    # Whatever the body holds, as aio_pika would turn it into the property (str()).
    return None if request_id is None else str(request_id)
