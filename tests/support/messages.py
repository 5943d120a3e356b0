"""Realistic ISO 18626 messages in the hub's JSON form: requests, supplier messages and
requester actions, as a library's system would send them. Pure: no server touched."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any


def agency_id(symbol: str) -> dict[str, str]:
    scheme, _, value = symbol.partition(":")
    return {"agencyIdType": scheme, "agencyIdValue": value}


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def request(requester: str, *, request_id: str | None = None, supplier: str | None = None,
            service_type: str = "Copy", title: str = "中国图书馆学报",
            issn: str | None = "1001-8867", patron: str = "张三",
            max_cost: str | None = "50.00", service_level: str | None = "Normal",
            patron_id: str = "P-0001",
            **extra: Any) -> dict[str, Any]:
    header: dict[str, Any] = {
        "requestingAgencyId": agency_id(requester),
        "timestamp": now(),
        "requestingAgencyRequestId": request_id or f"REQ-{uuid.uuid4().hex[:10]}",
    }
    if supplier:
        header["supplyingAgencyId"] = agency_id(supplier)
    body: dict[str, Any] = {
        "header": header,
        "bibliographicInfo": {
            "title": title,
            "author": "李四",
            "titleOfComponent": "高校图书馆馆际互借服务研究",
            "pagesRequested": "12-20",
            "bibliographicItemId": [{"bibliographicItemIdentifier": issn,
                                     "bibliographicItemIdentifierCode": "ISSN"}] if issn else [],
        },
        "serviceInfo": {"serviceType": service_type,
                        **({"serviceLevel": service_level} if service_level else {})},
        "patronInfo": {"patronId": patron_id, "surname": patron[:1], "givenName": patron[1:],
                       "address": [{"electronicAddress": {
                           "electronicAddressType": "email",
                           "electronicAddressData": "zhangsan@example.edu.cn"}}]},
        **extra,
    }
    if max_cost:
        body["billingInfo"] = {"maximumCosts": {"currencyCode": "CNY",
                                                "monetaryValue": max_cost}}
    return {"request": body}


def supplier_message(supplier: str, requester: str, request_id: str, status: str,
                     reason: str = "StatusChange", **info: Any) -> dict[str, Any]:
    """A supplyingAgencyMessage: `status` for the request `request_id`, for `reason`."""
    return {"supplyingAgencyMessage": {
        "header": {"supplyingAgencyId": agency_id(supplier),
                   "requestingAgencyId": agency_id(requester),
                   "timestamp": now(), "requestingAgencyRequestId": request_id},
        "messageInfo": {"reasonForMessage": reason, **info},
        "statusInfo": {"status": status, "lastChange": now()}}}


def requester_action(requester: str, supplier: str, request_id: str, action: str,
                     note: str | None = None) -> dict[str, Any]:
    """A requestingAgencyMessage: the requester's `action` on the request `request_id`."""
    body: dict[str, Any] = {
        "header": {"supplyingAgencyId": agency_id(supplier),
                   "requestingAgencyId": agency_id(requester),
                   "timestamp": now(), "requestingAgencyRequestId": request_id},
        "action": action}
    if note:
        body["note"] = note
    return {"requestingAgencyMessage": body}
