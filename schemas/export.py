"""Publish the wire contract (ARCHITECTURE §3) as JSON Schema and AsyncAPI files.

Agencies build their clients from these: one JSON Schema 2020-12 file per
message type, validating whole message bodies, and an AsyncAPI 3.0.0 document
of the exchanges, queues, operations and AMQP properties. Output is
deterministic (sorted keys), so the files can be committed and diffed.
"""

from __future__ import annotations

import json
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, create_model
from pydantic.json_schema import models_json_schema

from schemas.iso18626 import MESSAGE_MODELS, NAMESPACE, XSD_VERSION
from schemas.iso18626_codes import MessageType
from schemas.settings import Settings, mask_url

JSON_SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
AMQP_BINDING_VERSION = "0.3.0"
INBOUND_KINDS = (MessageType.REQUEST, MessageType.REQUESTING_AGENCY_MESSAGE,
                 MessageType.SUPPLYING_AGENCY_MESSAGE)
CONFIRMATION_KINDS = (MessageType.REQUEST_CONFIRMATION,
                      MessageType.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION,
                      MessageType.REQUESTING_AGENCY_MESSAGE_CONFIRMATION)


def envelope(kind: MessageType) -> type[BaseModel]:
    """A model of the whole body: the single top-level key `kind`, nothing else."""
    name = f"{kind[0].upper()}{kind[1:]}Envelope"
    # Any: mypy checks a **dict's value type against every keyword parameter of
    # create_model (__doc__, __module__, __base__ ...), which no field definition matches.
    fields: dict[str, Any] = {str(kind): (MESSAGE_MODELS[kind], ...)}
    return create_model(name, __config__=ConfigDict(extra="forbid", title=name), **fields)


def message_schema(kind: MessageType) -> dict[str, Any]:
    schema = envelope(kind).model_json_schema(by_alias=True)
    return {"$schema": JSON_SCHEMA_DIALECT,
            "description": f"An ISO 18626 {kind} message as the hub's JSON wire form "
                           f"(XML namespace {NAMESPACE}, XSD {XSD_VERSION}); "
                           "unknown elements are allowed and passed on.",
            **schema}


def _dump(document: dict[str, Any]) -> str:
    return json.dumps(document, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: Path, settings: Settings) -> list[Path]:
    """Write `<messageType>.schema.json` for the six types and `asyncapi.json`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for kind in MessageType:
        path = directory / f"{kind}.schema.json"
        path.write_text(_dump(message_schema(kind)), encoding="utf-8")
        written.append(path)
    path = directory / "asyncapi.json"
    path.write_text(_dump(asyncapi(settings)), encoding="utf-8")
    written.append(path)
    return written


# --------------------------------------------------------------------------
# AsyncAPI
# --------------------------------------------------------------------------


def _version() -> str:
    try:
        return metadata.version("illhub")
    except metadata.PackageNotFoundError:
        return "0.0.0"


def _server(settings: Settings) -> dict[str, Any]:
    url = settings.amqp.url.get_secret_value()
    parts = urlsplit(url)
    scheme = parts.scheme or "amqp"
    port = parts.port or (5671 if scheme == "amqps" else 5672)
    return {
        "host": f"{parts.hostname or '127.0.0.1'}:{port}",
        "protocol": scheme,
        "protocolVersion": "0.9.1",
        "pathname": parts.path or "/",
        "title": "RabbitMQ",
        "description": f"The hub's broker, {mask_url(url)} (vhost {settings.vhost!r}). Each "
                       "agency logs in as its own user, named exactly as its symbol "
                       "(percent-encode the ':' in URLs).",
        "security": [{"$ref": "#/components/securitySchemes/agencyUser"}],
    }


def _exchange(name: str, kind: str, vhost: str) -> dict[str, Any]:
    return {"amqp": {"is": "routingKey", "bindingVersion": AMQP_BINDING_VERSION,
                     "exchange": {"name": name, "type": kind, "durable": True,
                                  "autoDelete": False, "vhost": vhost}}}


def _queue(name: str, vhost: str) -> dict[str, Any]:
    return {"amqp": {"is": "queue", "bindingVersion": AMQP_BINDING_VERSION,
                     "queue": {"name": name, "durable": True, "exclusive": False,
                               "autoDelete": False, "vhost": vhost}}}


def _message_refs(channel: str, kinds: tuple[MessageType, ...] | list[MessageType],
                  ) -> list[dict[str, str]]:
    return [{"$ref": f"#/channels/{channel}/messages/{kind}"} for kind in kinds]


def _channel_messages(kinds: tuple[MessageType, ...] | list[MessageType]) -> dict[str, Any]:
    return {str(kind): {"$ref": f"#/components/messages/{kind}"} for kind in kinds}


def _channels(settings: Settings) -> dict[str, Any]:
    vhost = settings.vhost
    name = settings.name
    every = list(MessageType)
    agency_queue = name("agency.{symbol}")
    return {
        "illInbound": {
            "address": name("ill.inbound"),
            "title": "ill.inbound",
            "description": "Topic exchange every agency publishes to; the routing key is the "
                           "message type. Publishing needs the AMQP properties of every "
                           "message (see the message traits).",
            "messages": _channel_messages(every),
            "bindings": _exchange(name("ill.inbound"), "topic", vhost),
        },
        "hubInbound": {
            "address": name("hub.inbound"),
            "title": "hub.inbound",
            "description": "Quorum queue bound to ill.inbound with '#'; the hub consumes it "
                           "(single active consumer). Dead-letters to ill.dead.",
            "messages": _channel_messages(every),
            "bindings": _queue(name("hub.inbound"), vhost),
        },
        "illOutbound": {
            "address": name("ill.outbound"),
            "title": "ill.outbound",
            "description": "Direct exchange, hub to agency; the routing key is the agency "
                           "symbol. The hub adds header hub-transaction-id.",
            "messages": _channel_messages(every),
            "bindings": _exchange(name("ill.outbound"), "direct", vhost),
        },
        "agencyQueue": {
            "address": agency_queue,
            "title": "agency.{symbol}",
            "description": "One quorum queue per agency, bound to ill.outbound with its "
                           "symbol; only that agency may read it. Dead-letters to ill.dead.",
            "parameters": {"symbol": {"description": "The agency symbol SCHEME:VALUE, "
                                                     "e.g. CALIS:100010",
                                      "examples": ["CALIS:100010", "ISIL:CN-SHL"]}},
            "messages": _channel_messages(every),
            "bindings": _queue(agency_queue, vhost),
        },
        "illFinance": {
            "address": name("ill.finance"),
            "title": "ill.finance",
            "description": "Topic exchange for settlement: runs (settlement.<period>) and "
                           "per-agency statements (statement.<symbol>).",
            "bindings": _exchange(name("ill.finance"), "topic", vhost),
        },
        "illEvents": {
            "address": name("ill.events"),
            "title": "ill.events",
            "description": "Topic exchange of domain events for dashboards and integrations "
                           "(transaction.<state>).",
            "bindings": _exchange(name("ill.events"), "topic", vhost),
        },
        "illDead": {
            "address": name("ill.dead"),
            "title": "ill.dead",
            "description": "Fanout exchange for poison messages, with the reason in headers.",
            "bindings": _exchange(name("ill.dead"), "fanout", vhost),
        },
        "hubDead": {
            "address": name("hub.dead"),
            "title": "hub.dead",
            "description": "Quorum queue of dead letters, bound to ill.dead; operators list "
                           "and replay them.",
            "bindings": _queue(name("hub.dead"), vhost),
        },
    }


def _publish(kinds: tuple[MessageType, ...]) -> dict[str, Any]:
    # cc is the AMQP binding's name for the routing keys used when publishing.
    return {"amqp": {"cc": [str(k) for k in kinds], "deliveryMode": 2, "timestamp": True,
                     "mandatory": True, "bindingVersion": AMQP_BINDING_VERSION}}


def _operations() -> dict[str, Any]:
    ops: dict[str, Any] = {}
    for kind in INBOUND_KINDS:
        ops[f"send{kind[0].upper()}{kind[1:]}"] = {
            "action": "send",
            "channel": {"$ref": "#/channels/illInbound"},
            "summary": f"An agency sends a {kind}; the hub answers with "
                       "its confirmation on the agency's queue.",
            "messages": _message_refs("illInbound", (kind,)),
            "bindings": _publish((kind,)),
        }
    ops["sendConfirmation"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/illInbound"},
        "summary": "An agency confirms a message the hub forwarded to it; recorded as a "
                   "receipt, never answered.",
        "messages": _message_refs("illInbound", CONFIRMATION_KINDS),
        "bindings": _publish(CONFIRMATION_KINDS),
    }
    ops["receive"] = {
        "action": "receive",
        "channel": {"$ref": "#/channels/agencyQueue"},
        "summary": "An agency receives everything addressed to it on its own queue: "
                   "confirmations, forwarded requests and relayed messages.",
        "messages": _message_refs("agencyQueue", list(MessageType)),
        "bindings": {"amqp": {"ack": True, "bindingVersion": AMQP_BINDING_VERSION}},
    }
    return ops


_AMQP_PROPERTIES = {
    "message_id": "Required. Unique per sender; the idempotency key (a redelivery or "
                  "resend with the same message_id is applied once).",
    "type": "Required. The message type, equal to the body's single top-level key and to "
            "the routing key on ill.inbound.",
    "user_id": "Required. The sender's broker user, i.e. its agency symbol; RabbitMQ "
               "validates it. It must match the agency the header names.",
    "timestamp": "Required. When the sender published the message.",
    "correlation_id": "Required. The requester's requestingAgencyRequestId.",
    "content_type": "Required. application/json (UTF-8).",
}


def _messages() -> dict[str, Any]:
    return {
        str(kind): {
            "name": str(kind),
            "title": str(kind),
            "summary": f"ISO 18626 {kind}.",
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{envelope(kind).__name__}"},
            "traits": [{"$ref": "#/components/messageTraits/amqpProperties"}],
            "bindings": {"amqp": {"messageType": str(kind),
                                  "bindingVersion": AMQP_BINDING_VERSION}},
        }
        for kind in MessageType
    }


def _components() -> dict[str, Any]:
    _, defs = models_json_schema(
        [(envelope(kind), "validation") for kind in MessageType],
        by_alias=True, ref_template="#/components/schemas/{model}")
    return {
        "schemas": defs["$defs"],
        "messages": _messages(),
        "messageTraits": {
            "amqpProperties": {
                "contentType": "application/json",
                "description": "AMQP properties on every message: "
                               + "; ".join(f"{k}: {v}" for k, v in _AMQP_PROPERTIES.items()),
                "correlationId": {"location": "$message.header#/correlation_id",
                                  "description": "AMQP property correlation_id: the "
                                                 "requester's requestingAgencyRequestId."},
                "headers": {
                    "type": "object",
                    "properties": {"hub-transaction-id": {
                        "type": "string",
                        "description": "The hub's transaction id; on everything the hub "
                                       "sends."}},
                },
                "x-amqp-properties": {k: {"description": v}
                                      for k, v in _AMQP_PROPERTIES.items()},
            },
        },
        "securitySchemes": {
            "agencyUser": {"type": "userPassword",
                           "description": "Broker user = agency symbol; the same name and "
                                          "password log in to the FTP drop."},
        },
    }


def asyncapi(settings: Settings) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document of the wire contract, from an agency's point of view."""
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "ILL Hub wire contract",
            "version": _version(),
            "description": "ISO 18626 interlibrary-loan messages in JSON over RabbitMQ "
                           "(ARCHITECTURE §3). Bodies mirror the ISO 18626 XML element "
                           f"names (namespace {NAMESPACE}); the single top-level key is the "
                           "message type. Every inbound message is answered with its "
                           "confirmation (messageStatus OK, or ERROR with errorData).",
        },
        "defaultContentType": "application/json",
        "servers": {"amqp": _server(settings)},
        "channels": _channels(settings),
        "operations": _operations(),
        "components": _components(),
    }
