"""The fuzzer's valid base messages, and the schema walk that finds every element in them.

Every optional element the fuzzer targets is present in the base messages; `slots`
walks one together with the pydantic model of schemas/iso18626.py and yields each
element with the kind of value it takes (bench/fuzz_cases.py mutates them).
Bodies carry `CASE_ID`, a placeholder as long as a case id, which the runner
substitutes at publication.
"""

from __future__ import annotations

import json
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

from sim.messages import agency_id

CASE_ID = "@@CASE-ID-HERE@@"
CASE_ID_LENGTH = len(CASE_ID)

REQUEST = "request"
SUPPLYING = "supplyingAgencyMessage"
REQUESTING = "requestingAgencyMessage"
CONFIRMATION = {REQUEST: "requestConfirmation",
                SUPPLYING: "supplyingAgencyMessageConfirmation",
                REQUESTING: "requestingAgencyMessageConfirmation"}
TIME = "2026-11-24T08:00:00Z"


# --------------------------------------------------------------------------------------
# Valid base messages (every optional element the fuzzer targets is present)
# --------------------------------------------------------------------------------------

def email(address: str) -> dict[str, Any]:
    return {"electronicAddress": {"electronicAddressType": "email",
                                  "electronicAddressData": address}}


def base_request(me: str) -> dict[str, Any]:
    return {REQUEST: {
        "header": {"requestingAgencyId": agency_id(me), "timestamp": TIME,
                   "requestingAgencyRequestId": CASE_ID,
                   "requestingAgencyAuthentication": {"accountId": "fuzz"}},
        "bibliographicInfo": {
            "title": "模糊测试期刊 Fuzzing Quarterly", "author": "李四", "volume": "12",
            "pagesRequested": "1-9",
            # 0000-0051 is a well-formed ISSN nobody holds: valid requests end Unfilled.
            "bibliographicItemId": [{"bibliographicItemIdentifier": "0000-0051",
                                     "bibliographicItemIdentifierCode": "ISSN"}],
            "bibliographicRecordId": [{"bibliographicRecordIdentifierCode": "OCLC",
                                       "bibliographicRecordIdentifier": "12345"}]},
        "publicationInfo": {"publisher": "中华书局", "publicationDate": "2020"},
        "serviceInfo": {"requestType": "New", "requestSubType": ["PatronRequest"],
                        "serviceType": "Copy", "serviceLevel": "Normal",
                        "needBeforeDate": TIME, "anyEdition": "Y"},
        "supplierInfo": [{"sortOrder": 1, "supplierDescription": "任意"}],
        "requestedDeliveryInfo": [{"sortOrder": 1, "address": email("ill@example.edu.cn")}],
        "patronInfo": {"patronId": f"P-{CASE_ID}", "surname": "张", "givenName": "三",
                       "sendToPatron": "Y", "address": [email("reader@example.edu.cn")]},
        "billingInfo": {"maximumCosts": {"currencyCode": "CNY", "monetaryValue": "50.00"}},
        "hubExtensions": {"serviceKind": "DocumentDelivery"},
    }}


def base_supplying(me: str, requester: str, request_id: str = CASE_ID) -> dict[str, Any]:
    return {SUPPLYING: {
        "header": {"supplyingAgencyId": agency_id(me), "requestingAgencyId": agency_id(requester),
                   "timestamp": TIME, "requestingAgencyRequestId": request_id},
        "messageInfo": {"reasonForMessage": "StatusChange", "note": "备注",
                        "offeredCosts": {"currencyCode": "CNY", "monetaryValue": "8.00"},
                        "retryAfter": TIME},
        "statusInfo": {"status": "WillSupply", "expectedDeliveryDate": TIME, "lastChange": TIME},
        "deliveryInfo": {"dateSent": TIME, "itemId": "/copy.pdf", "sentVia": "FTP",
                         "sentToPatron": False,
                         "deliveryCosts": {"currencyCode": "CNY", "monetaryValue": "8.00"}},
        "shippingInfo": {"courierName": "EMS", "trackingId": ["T1"], "insurance": "N"},
        "returnInfo": {"returnAgencyId": agency_id(requester), "name": "馆际互借处"},
    }}


def base_requesting(me: str, supplier: str, request_id: str = CASE_ID,
                    action: str = "StatusRequest") -> dict[str, Any]:
    return {REQUESTING: {
        "header": {"supplyingAgencyId": agency_id(supplier), "requestingAgencyId": agency_id(me),
                   "timestamp": TIME, "requestingAgencyRequestId": request_id},
        "action": action, "note": "请尽快"}}


def encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False).encode()


# --------------------------------------------------------------------------------------
# The schema walk: every element of a base message with the kind of value it takes
# --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Slot:
    path: tuple[str | int, ...]     # inside the message, below its top-level key
    shape: str                      # str, enum, datetime, decimal, int, bool, object, list
    required: bool
    enum: type[Enum] | None = None


def _shape(annotation: Any) -> tuple[str, Any]:
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType):
        inner = [a for a in get_args(annotation) if a is not type(None)]
        return _shape(inner[0])
    if origin is Annotated:
        return _shape(get_args(annotation)[0])
    if origin is list:
        return "list", get_args(annotation)[0]
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return "object", annotation
        if issubclass(annotation, Enum):
            return "enum", annotation
        for kind, name in ((bool, "bool"), (int, "int"), (str, "str"), (datetime, "datetime"),
                           (Decimal, "decimal")):
            if issubclass(annotation, kind):
                return name, None
    raise TypeError(f"the fuzzer does not know how to mutate {annotation!r}")


def slots(value: Any, model: type[BaseModel],
          path: tuple[str | int, ...] = ()) -> Iterator[Slot]:
    for name, info in model.model_fields.items():
        wire = info.alias or name
        if not isinstance(value, dict) or wire not in value:
            continue
        kind, detail = _shape(info.annotation)
        here = (*path, wire)
        yield Slot(here, kind, info.is_required(), detail if kind == "enum" else None)
        if kind == "object":
            yield from slots(value[wire], detail, here)
        elif kind == "list":
            element, element_detail = _shape(detail)
            for i, item in enumerate(value[wire]):
                yield Slot((*here, i), element, False,
                           element_detail if element == "enum" else None)
                if element == "object":
                    yield from slots(item, element_detail, (*here, i))


def wire_path(kind: str, path: tuple[str | int, ...]) -> str:
    out = kind
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


def put(body: dict[str, Any], kind: str, path: tuple[str | int, ...], value: Any) -> None:
    target: Any = body[kind]
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value


def remove(body: dict[str, Any], kind: str, path: tuple[str | int, ...]) -> None:
    target: Any = body[kind]
    for part in path[:-1]:
        target = target[part]
    del target[path[-1]]
