"""Unit tests of the wire contract: ISO 18626 models, money, symbols, schema export.

Pure: no servers. Wire examples use the JSON form of ARCHITECTURE §3.3.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, TypeAdapter, ValidationError

from schemas.export import write_schemas
from schemas.iso18626 import (
    CONFIRMATION_OF,
    MESSAGE_MODELS,
    AgencyId,
    BibliographicInfo,
    Costs,
    Header,
    HubExtensions,
    MessageError,
    Request,
    RequestConfirmation,
    RequestingAgencyMessageConfirmation,
    ServiceInfo,
    SupplyingAgencyMessage,
    SupplyingAgencyMessageConfirmation,
    confirmation,
    dump_message,
    parse_message,
)
from schemas.iso18626_codes import (
    Action,
    ErrorType,
    MessageStatus,
    MessageType,
    ReasonForMessage,
    ServiceKind,
    ServiceType,
    Status,
)
from schemas.money import Money
from schemas.settings import Settings
from schemas.symbols import AgencySymbol, split_symbol

# --------------------------------------------------------------------------
# Wire examples
# --------------------------------------------------------------------------

REQUESTER = {"agencyIdType": "CALIS", "agencyIdValue": "100010"}
SUPPLIER = {"agencyIdType": "ISIL", "agencyIdValue": "CN-SHL"}


def header(**changes: Any) -> dict[str, Any]:
    base = {
        "supplyingAgencyId": dict(SUPPLIER),
        "requestingAgencyId": dict(REQUESTER),
        "multipleItemRequestId": "M-1",
        "timestamp": "2024-05-01T08:30:00Z",
        "requestingAgencyRequestId": "R-2024-0001",
        "supplyingAgencyRequestId": "S-77",
    }
    base.update(changes)
    return base


def conf_header(status: str = "OK") -> dict[str, Any]:
    return {
        "supplyingAgencyId": dict(SUPPLIER),
        "requestingAgencyId": dict(REQUESTER),
        "timestamp": "2024-05-01T08:30:00Z",
        "requestingAgencyRequestId": "R-2024-0001",
        "multipleItemRequestId": "M-1",
        "timestampReceived": "2024-05-01T08:30:01.250000+08:00",
        "messageStatus": status,
    }


ADDRESS_EMAIL = {"electronicAddress": {"electronicAddressType": "email",
                                       "electronicAddressData": "zhangsan@pku.edu.cn"}}
ADDRESS_POST = {"physicalAddress": {"line1": "海淀区颐和园路5号", "locality": "北京",
                                    "postalCode": "100871", "region": "北京市",
                                    "country": "CN"}}

REQUEST: dict[str, Any] = {"request": {
    "header": header(requestingAgencyAuthentication={"accountId": "acc",
                                                     "securityCode": "s3cret"}),
    "bibliographicInfo": {
        "supplierUniqueRecordId": "CAL_012345",
        "title": "中国图书馆学报",
        "author": "王余光",
        "subtitle": "Journal of Library Science in China",
        "titleOfComponent": "CALIS 馆际互借十年",
        "authorOfComponent": "陈力",
        "volume": "47",
        "issue": "3",
        "pagesRequested": "12-25",
        "bibliographicItemId": [{"bibliographicItemIdentifier": "1001-8867",
                                 "bibliographicItemIdentifierCode": "ISSN"}],
        "bibliographicRecordId": [{"bibliographicRecordIdentifierCode": "CALIS",
                                   "bibliographicRecordIdentifier": "CAL 0120000123"}],
    },
    "publicationInfo": {"publisher": "国家图书馆出版社", "publicationType": "Journal",
                        "publicationDate": "2021", "placeOfPublication": "北京"},
    "serviceInfo": {"requestType": "New", "requestSubType": ["PatronRequest"],
                    "serviceType": "Copy", "serviceLevel": "Rush",
                    "needBeforeDate": "2024-05-10T00:00:00+08:00", "anyEdition": "Y",
                    "note": "请尽快"},
    "supplierInfo": [{"sortOrder": 0, "supplierCode": dict(SUPPLIER),
                      "supplierDescription": "上海图书馆", "callNumber": "G25/12"}],
    "requestedDeliveryInfo": [{"sortOrder": 1, "address": ADDRESS_EMAIL}],
    "requestingAgencyInfo": {"name": "北京大学图书馆", "contactName": "李四",
                             "address": [ADDRESS_POST]},
    "patronInfo": {"patronId": "P001", "surname": "张", "givenName": "三",
                   "patronType": "Faculty", "sendToPatron": "Y",
                   "address": [ADDRESS_EMAIL]},
    "billingInfo": {"paymentMethod": "Account",
                    "maximumCosts": {"currencyCode": "CNY", "monetaryValue": "12.50"},
                    "billingName": "北京大学图书馆"},
    "hubExtensions": {"serviceKind": "DocumentDelivery"},
}}

SUPPLYING: dict[str, Any] = {"supplyingAgencyMessage": {
    "header": header(),
    "messageInfo": {"reasonForMessage": "StatusChange", "answerYesNo": "Y",
                    "note": "已发送电子文献", "offeredCosts": {"currencyCode": "CNY",
                                                         "monetaryValue": "8.00"}},
    "statusInfo": {"status": "CopyCompleted", "lastChange": "2024-05-02T09:00:00Z",
                   "expectedDeliveryDate": "2024-05-02T12:00:00Z"},
    "deliveryInfo": {"dateSent": "2024-05-02T09:00:00Z", "itemId": "/out/R-2024-0001.pdf",
                     "sentVia": "FTP", "sentToPatron": False,
                     "deliveryCosts": {"currencyCode": "CNY", "monetaryValue": "8.00"}},
    "returnInfo": {"returnAgencyId": dict(SUPPLIER), "name": "上海图书馆",
                   "physicalAddress": {"line1": "淮海中路1555号", "locality": "上海"}},
}}

REQUESTING: dict[str, Any] = {"requestingAgencyMessage": {
    "header": header(), "action": "Received", "note": "已收到，谢谢"}}

REQUEST_CONF: dict[str, Any] = {"requestConfirmation": {"confirmationHeader": conf_header()}}
SUPPLYING_CONF: dict[str, Any] = {"supplyingAgencyMessageConfirmation": {
    "confirmationHeader": conf_header("ERROR"), "reasonForMessage": "StatusChange",
    "errorData": {"errorType": "UnrecognisedDataValue", "errorValue": "状态不允许"}}}
REQUESTING_CONF: dict[str, Any] = {"requestingAgencyMessageConfirmation": {
    "confirmationHeader": conf_header(), "action": "Received"}}

EXAMPLES: dict[MessageType, dict[str, Any]] = {
    MessageType.REQUEST: REQUEST,
    MessageType.REQUEST_CONFIRMATION: REQUEST_CONF,
    MessageType.SUPPLYING_AGENCY_MESSAGE: SUPPLYING,
    MessageType.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION: SUPPLYING_CONF,
    MessageType.REQUESTING_AGENCY_MESSAGE: REQUESTING,
    MessageType.REQUESTING_AGENCY_MESSAGE_CONFIRMATION: REQUESTING_CONF,
}


def roundtrip(body: dict[str, Any]) -> dict[str, Any]:
    """Wire dict -> model -> dict -> JSON text -> model -> dict."""
    kind, model = parse_message(copy.deepcopy(body))
    first = dump_message(kind, model)
    text = json.dumps(first, ensure_ascii=False)
    kind2, model2 = parse_message(json.loads(text))
    assert kind2 is kind
    second = dump_message(kind2, model2)
    assert second == first
    return second


def error_of(body: Any) -> MessageError:
    with pytest.raises(MessageError) as info:
        parse_message(body)
    return info.value


def with_change(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the element at dotted `path` set (or removed if value is ...)."""
    out = copy.deepcopy(body)
    node: Any = out
    parts = path.split(".")
    for part in parts[:-1]:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[parts[-1]]
    else:
        node[parts[-1]] = value
    return out


# --------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MessageType), ids=str)
def test_every_message_type_round_trips_exactly(kind: MessageType) -> None:
    body = EXAMPLES[kind]
    assert roundtrip(body) == body
    parsed_kind, model = parse_message(copy.deepcopy(body))
    assert parsed_kind is kind
    assert isinstance(model, MESSAGE_MODELS[kind])


def test_chinese_text_survives_as_text() -> None:
    _, model = parse_message(copy.deepcopy(REQUEST))
    assert isinstance(model, Request)
    assert model.bibliographic_info.title == "中国图书馆学报"
    assert model.patron_info is not None
    assert (model.patron_info.surname, model.patron_info.given_name) == ("张", "三")
    text = json.dumps(dump_message(MessageType.REQUEST, model), ensure_ascii=False)
    assert "中国图书馆学报" in text and "北京大学图书馆" in text


def test_models_expose_snake_case_attributes_and_typed_values() -> None:
    _, model = parse_message(copy.deepcopy(REQUEST))
    assert isinstance(model, Request)
    assert model.header.requesting_agency_id.symbol == "CALIS:100010"
    assert model.header.timestamp == datetime(2024, 5, 1, 8, 30, tzinfo=UTC)
    assert model.service_info is not None
    assert model.service_info.service_type is ServiceType.COPY
    assert model.billing_info is not None and model.billing_info.maximum_costs is not None
    assert model.billing_info.maximum_costs.monetary_value == Decimal("12.50")
    assert model.hub_extensions == HubExtensions(service_kind=ServiceKind.DOCUMENT_DELIVERY)


def test_personal_data_and_secrets_stay_out_of_reprs() -> None:
    _, model = parse_message(copy.deepcopy(REQUEST))
    shown = repr(model)
    assert "张" not in shown and "zhangsan@" not in shown and "s3cret" not in shown


def test_models_built_in_python_serialise_with_wire_names() -> None:
    request = Request(
        header=Header(requesting_agency_id=AgencyId.from_symbol("CALIS:100010"),
                      timestamp=datetime(2024, 5, 1, tzinfo=UTC),
                      requesting_agency_request_id="R1"),
        bibliographic_info=BibliographicInfo(title="计算机学报"),
        service_info=ServiceInfo(service_type=ServiceType.LOAN),
    )
    assert dump_message(MessageType.REQUEST, request) == {"request": {
        "header": {"requestingAgencyId": REQUESTER, "timestamp": "2024-05-01T00:00:00Z",
                   "requestingAgencyRequestId": "R1"},
        "bibliographicInfo": {"title": "计算机学报"},
        "serviceInfo": {"serviceType": "Loan"},
    }}


def test_request_may_leave_the_supplier_to_the_hub() -> None:
    body = with_change(REQUEST, "request.header.supplyingAgencyId", ...)
    _, model = parse_message(body)
    assert isinstance(model, Request) and model.header.supplying_agency_id is None


# --------------------------------------------------------------------------
# Unknown fields are kept
# --------------------------------------------------------------------------


def test_unknown_fields_survive_round_trip_at_every_level() -> None:
    body = copy.deepcopy(REQUEST)
    inner = body["request"]
    inner["calisLocalField"] = {"部门": "理学部", "codes": [1, 2, {"x": None}]}
    inner["futureElement"] = None
    inner["bibliographicInfo"]["doi"] = "10.1000/182"
    inner["bibliographicInfo"]["bibliographicItemId"][0]["verified"] = True
    inner["patronInfo"]["address"][0]["electronicAddress"]["preferred"] = "Y"
    inner["hubExtensions"]["quoteId"] = "Q-9"
    body["request"]["header"]["routingHint"] = "east"
    assert roundtrip(body) == body


def test_unknown_fields_are_kept_in_every_message_type() -> None:
    for body in EXAMPLES.values():
        extended = copy.deepcopy(body)
        inner = next(iter(extended.values()))
        inner["x-vendor"] = {"自定义": ["值", 1]}
        assert roundtrip(extended) == extended


def test_snake_case_keys_are_not_wire_names() -> None:
    # Wire names only: a snake_case key is an unknown element, not the field.
    body = with_change(REQUEST, "request.serviceInfo",
                       {"service_type": "Copy", "serviceType": "Loan"})
    _, model = parse_message(body)
    assert isinstance(model, Request) and model.service_info is not None
    assert model.service_info.service_type is ServiceType.LOAN
    assert roundtrip(body) == body
    err = error_of(with_change(REQUEST, "request.serviceInfo", {"service_type": "Copy"}))
    assert err.error_value == "request.serviceInfo.serviceType: required element missing"


def test_dump_leaves_out_absent_elements() -> None:
    kind, model = confirmation(MessageType.REQUEST, None, ok=True)
    body = dump_message(kind, model)["requestConfirmation"]
    assert set(body) == {"confirmationHeader"}
    assert set(body["confirmationHeader"]) == {"timestamp", "timestampReceived", "messageStatus"}


# --------------------------------------------------------------------------
# Errors, in ISO 18626 terms
# --------------------------------------------------------------------------

BAD_ENUMS = [
    (REQUEST, "request.serviceInfo.serviceType", "Photocopy", "Copy, Loan, CopyOrLoan"),
    (REQUEST, "request.serviceInfo.requestType", "Again", "New, Retry, Reminder"),
    (REQUEST, "request.serviceInfo.anyEdition", "yes", "Y, N"),
    (REQUEST, "request.patronInfo.sendToPatron", "true", "Y, N"),
    (REQUEST, "request.hubExtensions.serviceKind", "Fax",
     "DocumentDelivery, BookLoan, PayPerView, EBookLoan, ProxySearch"),
    (SUPPLYING, "supplyingAgencyMessage.statusInfo.status", "Shipped",
     "RequestReceived, ExpectToSupply, WillSupply, Loaned, Overdue, Recalled, RetryPossible, "
     "Unfilled, CopyCompleted, LoanCompleted, CompletedWithoutReturn, Cancelled"),
    (SUPPLYING, "supplyingAgencyMessage.messageInfo.reasonForMessage", "Because",
     "RequestResponse, StatusRequestResponse, RenewResponse, CancelResponse, StatusChange, "
     "Notification"),
    (REQUESTING, "requestingAgencyMessage.action", "Lost",
     "StatusRequest, Received, Cancel, Renew, ShippedReturn, ShippedForward, Notification"),
    (REQUEST_CONF, "requestConfirmation.confirmationHeader.messageStatus", "ok", "OK, ERROR"),
    (SUPPLYING_CONF, "supplyingAgencyMessageConfirmation.errorData.errorType", "Oops",
     "UnsupportedActionType, UnsupportedReasonForMessageType, UnrecognisedDataElement, "
     "UnrecognisedDataValue, BadlyFormedMessage"),
    (REQUESTING_CONF, "requestingAgencyMessageConfirmation.action", "Renewed",
     "StatusRequest, Received, Cancel, Renew, ShippedReturn, ShippedForward, Notification"),
]


@pytest.mark.parametrize(("body", "path", "bad", "allowed"), BAD_ENUMS,
                         ids=[case[1] for case in BAD_ENUMS])
def test_closed_code_lists_reject_other_values(body: dict[str, Any], path: str, bad: str,
                                               allowed: str) -> None:
    err = error_of(with_change(body, path, bad))
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert err.error_value.startswith(f"{path}: {bad!r} is not one of ")
    assert set(err.error_value.split("is not one of ")[1].split(", ")) == set(
        allowed.split(", "))


def test_photocopy_error_is_exactly_as_documented() -> None:
    err = error_of(with_change(REQUEST, "request.serviceInfo.serviceType", "Photocopy"))
    assert err.error_value == ("request.serviceInfo.serviceType: 'Photocopy' is not one of "
                               "Copy, Loan, CopyOrLoan")


def test_repeatable_closed_values_are_checked_per_item() -> None:
    err = error_of(with_change(REQUEST, "request.serviceInfo.requestSubType",
                               ["PatronRequest", "Urgent"]))
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert err.error_value.startswith("request.serviceInfo.requestSubType[1]: 'Urgent' is not")


@pytest.mark.parametrize("field", ["requestingAgencyRequestId", "requestingAgencyId",
                                   "timestamp"])
def test_missing_required_header_element_is_named(field: str) -> None:
    err = error_of(with_change(REQUEST, f"request.header.{field}", ...))
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value == f"request.header.{field}: required element missing"


def test_null_counts_as_missing() -> None:
    err = error_of(with_change(REQUEST, "request.header.requestingAgencyRequestId", None))
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value == "request.header.requestingAgencyRequestId: required element missing"


@pytest.mark.parametrize("body", [SUPPLYING, REQUESTING], ids=["supplying", "requesting"])
def test_supplier_is_required_outside_requests(body: dict[str, Any]) -> None:
    kind = next(iter(body))
    err = error_of(with_change(body, f"{kind}.header.supplyingAgencyId", ...))
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value == f"{kind}.header.supplyingAgencyId: required element missing"


def test_missing_elements_are_named_with_array_indices() -> None:
    err = error_of(with_change(
        REQUEST, "request.bibliographicInfo.bibliographicItemId.0.bibliographicItemIdentifier",
        ...))
    assert err.error_value == ("request.bibliographicInfo.bibliographicItemId[0]."
                               "bibliographicItemIdentifier: required element missing")
    err = error_of(with_change(REQUEST, "request.bibliographicInfo", ...))
    assert err.error_value == "request.bibliographicInfo: required element missing"
    err = error_of(with_change(SUPPLYING, "supplyingAgencyMessage.statusInfo.lastChange", ...))
    assert err.error_value == ("supplyingAgencyMessage.statusInfo.lastChange: "
                               "required element missing")


# --------------------------------------------------------------------------
# Notifications may leave the status out; the delivery method in either version's name;
# what a supplier charges (ARCHITECTURE §3.4)
# --------------------------------------------------------------------------

NOTIFICATION = with_change(SUPPLYING, "supplyingAgencyMessage.messageInfo",
                           {"reasonForMessage": "Notification", "note": "#seq:2# 已在扫描"})


@pytest.mark.parametrize(("path", "value"), [
    ("supplyingAgencyMessage.statusInfo.status", ""),        # Alma, Rapido
    ("supplyingAgencyMessage.statusInfo.status", "  "),
    ("supplyingAgencyMessage.statusInfo.status", None),
    ("supplyingAgencyMessage.statusInfo.status", ...),
    ("supplyingAgencyMessage.statusInfo.lastChange", ...),   # mod-rs's unfilledNotification
    ("supplyingAgencyMessage.statusInfo", {"status": ""}),
    ("supplyingAgencyMessage.statusInfo", ...),
], ids=["empty", "blank", "null", "absent", "no lastChange", "only an empty status",
        "no statusInfo"])
def test_a_notification_may_leave_the_status_out(path: str, value: Any) -> None:
    _, model = parse_message(with_change(NOTIFICATION, path, value))
    assert isinstance(model, SupplyingAgencyMessage) and model.is_notification
    if path.endswith("status") or path.endswith("statusInfo"):
        assert model.status is None
    assert model.message_info.note == "#seq:2# 已在扫描"
    # Serialised, an absent status stays absent (never an empty or null one).
    out = dump_message(MessageType.SUPPLYING_AGENCY_MESSAGE, model)["supplyingAgencyMessage"]
    assert out.get("statusInfo", {}).get("status") in (None, "CopyCompleted")


@pytest.mark.parametrize("reason", [r for r in ReasonForMessage
                                    if r is not ReasonForMessage.NOTIFICATION])
@pytest.mark.parametrize(("path", "value", "named"), [
    ("supplyingAgencyMessage.statusInfo.status", "", "statusInfo.status"),
    ("supplyingAgencyMessage.statusInfo.status", ..., "statusInfo.status"),
    ("supplyingAgencyMessage.statusInfo.lastChange", ..., "statusInfo.lastChange"),
    ("supplyingAgencyMessage.statusInfo", ..., "statusInfo"),
], ids=["empty status", "no status", "no lastChange", "no statusInfo"])
def test_every_other_reason_needs_its_status(reason: ReasonForMessage, path: str,
                                             value: Any, named: str) -> None:
    body = with_change(with_change(SUPPLYING, "supplyingAgencyMessage.messageInfo."
                                              "reasonForMessage", str(reason)), path, value)
    # A CancelResponse without its answer says nothing: it needs its status too.
    body = with_change(body, "supplyingAgencyMessage.messageInfo.answerYesNo", ...)
    err = error_of(body)
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value.startswith(f"supplyingAgencyMessage.{named}: "
                                      "required element missing")
    if named == "statusInfo.status":
        assert "only a message whose reasonForMessage is Notification, or a CancelResponse " \
               "with its answerYesNo" in err.error_value


@pytest.mark.parametrize(("answer", "status"), [("Y", Status.CANCELLED), ("N", None)])
def test_a_cancel_response_with_its_answer_may_leave_the_status_out(
        answer: str, status: Status | None) -> None:
    # mod-rs declines a cancel with no statusInfo at all (cancelResponseReplyNoTemplate).
    body = with_change(with_change(SUPPLYING, "supplyingAgencyMessage.messageInfo", {
        "reasonForMessage": "CancelResponse", "answerYesNo": answer}),
        "supplyingAgencyMessage.statusInfo", ...)
    _, model = parse_message(body)
    assert isinstance(model, SupplyingAgencyMessage) and model.answers_cancel
    assert model.status is status


def test_a_notification_still_refuses_a_status_not_in_the_code_list() -> None:
    err = error_of(with_change(NOTIFICATION, "supplyingAgencyMessage.statusInfo.status",
                               "Shipped"))
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_VALUE


def _delivery(**info: Any) -> SupplyingAgencyMessage:
    _, model = parse_message(with_change(SUPPLYING, "supplyingAgencyMessage.deliveryInfo",
                                         {"dateSent": "2024-05-02T09:00:00Z", **info}))
    assert isinstance(model, SupplyingAgencyMessage) and model.delivery_info is not None
    return model


def test_the_delivery_method_is_read_in_either_versions_name() -> None:
    assert _delivery(sentVia="FTP").delivery_info.method == "FTP"
    assert _delivery(deliveryMethod=" FTP ").delivery_info.method == "FTP"
    assert _delivery(sentVia="", deliveryMethod="Mail").delivery_info.method == "Mail"
    assert _delivery(sentVia="ftp", deliveryMethod="FTP").delivery_info.method == "ftp"
    assert _delivery().delivery_info.method is None
    err = error_of(with_change(SUPPLYING, "supplyingAgencyMessage.deliveryInfo", {
        "dateSent": "2024-05-02T09:00:00Z", "sentVia": "Mail", "deliveryMethod": "FTP"}))
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert err.error_value.startswith(
        "supplyingAgencyMessage.deliveryInfo.deliveryMethod: 'FTP' contradicts sentVia 'Mail'")


def test_the_charge_is_delivery_costs_never_offered_costs() -> None:
    cny = {"currencyCode": "CNY", "monetaryValue": "7.50"}
    both = _delivery(deliveryCosts={"currencyCode": "CNY", "monetaryValue": "6.00"})
    both.message_info.offered_costs = Costs.model_validate(cny)
    assert both.charged_costs is not None and both.charged_costs.monetary_value == Decimal("6.00")
    offered = _delivery()
    offered.message_info.offered_costs = Costs.model_validate(cny)
    assert offered.charged_costs is None


@pytest.mark.parametrize(("path", "bad", "shown"), [
    ("request.header.timestamp", "2024-05-01", "'2024-05-01'"),
    ("request.header.timestamp", "2024-13-01T00:00:00Z", "'2024-13-01T00:00:00Z'"),
    ("request.header.timestamp", 1714552200, "1714552200"),
    ("request.header.timestamp", "yesterday", "'yesterday'"),
    ("request.serviceInfo.needBeforeDate", "10/05/2024", "'10/05/2024'"),
    ("request.header.requestingAgencyRequestId", 42, "42"),
    ("request.bibliographicInfo.title", ["a"], "an array"),
    ("request.header", "CALIS", "'CALIS'"),
    ("request.supplierInfo", {"sortOrder": 1}, "an object"),
    ("request.supplierInfo.0.sortOrder", -1, "-1"),
    ("request.supplierInfo.0.sortOrder", "first", "'first'"),
    ("request.billingInfo.maximumCosts.monetaryValue", 12.5, "12.5"),
    ("request.billingInfo.maximumCosts.monetaryValue", "12,50", "'12,50'"),
    ("request.billingInfo.maximumCosts.monetaryValue", "1e3", "'1e3'"),
])
def test_bad_values_are_unrecognised_data_values(path: str, bad: Any, shown: str) -> None:
    err = error_of(with_change(REQUEST, path, bad))
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    wire = path.replace(".0.", "[0].")
    assert err.error_value.startswith(f"{wire}: {shown} ")


def test_date_error_says_what_is_allowed() -> None:
    err = error_of(with_change(REQUEST, "request.header.timestamp", "2024-05-01"))
    assert err.error_value == ("request.header.timestamp: '2024-05-01' is not an ISO 8601 "
                               "dateTime such as 2024-05-01T08:30:00Z")


def test_address_is_a_choice_of_exactly_one() -> None:
    both = {**ADDRESS_EMAIL, **ADDRESS_POST}
    for bad, said in (({}, "neither"), (both, "both")):
        err = error_of(with_change(REQUEST, "request.requestedDeliveryInfo.0.address", bad))
        assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
        assert err.error_value.startswith("request.requestedDeliveryInfo[0].address: exactly one")
        assert err.error_value.endswith(said)


def test_first_error_is_reported_deterministically() -> None:
    body = with_change(REQUEST, "request.serviceInfo.serviceType", "Photocopy")
    body = with_change(body, "request.header.timestamp", "later")
    messages = {error_of(copy.deepcopy(body)).error_value for _ in range(5)}
    assert messages == {"request.header.timestamp: 'later' is not an ISO 8601 dateTime "
                        "such as 2024-05-01T08:30:00Z"}


@pytest.mark.parametrize(("body", "said"), [
    ([], "got an array"),
    ([{"request": {}}], "got an array"),
    ("request", "got a JSON string"),
    (None, "got a JSON null"),
    (17, "got a JSON number"),
    ({}, "got none"),
    ({"request": REQUEST["request"], "requestConfirmation": REQUEST_CONF["requestConfirmation"]},
     "got 2: 'request', 'requestConfirmation'"),
])
def test_message_body_shape_is_badly_formed(body: Any, said: str) -> None:
    err = error_of(body)
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value.endswith(said)


def test_unknown_message_type_is_an_unrecognised_element() -> None:
    err = error_of({"ISO18626Message": {"request": {}}})
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_ELEMENT
    assert err.error_value.startswith("'ISO18626Message' is not an ISO 18626 message type")


def test_message_that_is_not_an_object_is_badly_formed() -> None:
    err = error_of({"request": ["header"]})
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value.startswith("request:")


def test_message_error_is_an_exception_with_iso_fields() -> None:
    err = MessageError(ErrorType.UNRECOGNISED_DATA_VALUE, "x: bad")
    assert isinstance(err, Exception)
    assert (err.error_type, err.error_value) == (ErrorType.UNRECOGNISED_DATA_VALUE, "x: bad")


# --------------------------------------------------------------------------
# Registry and agency ids
# --------------------------------------------------------------------------


def test_registries_cover_the_six_types() -> None:
    assert [str(k) for k in MessageType] == [
        "request", "requestConfirmation", "supplyingAgencyMessage",
        "supplyingAgencyMessageConfirmation", "requestingAgencyMessage",
        "requestingAgencyMessageConfirmation"]
    assert set(MESSAGE_MODELS) == set(MessageType)
    assert CONFIRMATION_OF == {
        MessageType.REQUEST: MessageType.REQUEST_CONFIRMATION,
        MessageType.SUPPLYING_AGENCY_MESSAGE: MessageType.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION,
        MessageType.REQUESTING_AGENCY_MESSAGE:
            MessageType.REQUESTING_AGENCY_MESSAGE_CONFIRMATION,
    }


def test_agency_id_symbol_round_trip() -> None:
    agency = AgencyId.from_symbol("ISIL:CN-SHL")
    assert (agency.agency_id_type, agency.agency_id_value) == ("ISIL", "CN-SHL")
    assert agency.symbol == "ISIL:CN-SHL"
    assert agency.model_dump(by_alias=True) == {"agencyIdType": "ISIL", "agencyIdValue": "CN-SHL"}
    assert AgencyId.model_validate(SUPPLIER) == agency
    with pytest.raises(ValueError):
        AgencyId.from_symbol("no-colon")


# --------------------------------------------------------------------------
# Confirmations
# --------------------------------------------------------------------------

INBOUND = {MessageType.REQUEST: REQUEST, MessageType.SUPPLYING_AGENCY_MESSAGE: SUPPLYING,
           MessageType.REQUESTING_AGENCY_MESSAGE: REQUESTING}


@pytest.mark.parametrize("kind", list(CONFIRMATION_OF), ids=str)
def test_ok_confirmation_echoes_the_header(kind: MessageType) -> None:
    _, message = parse_message(copy.deepcopy(INBOUND[kind]))
    received = datetime(2024, 5, 1, 8, 30, 5, tzinfo=UTC)
    answer_kind, answer = confirmation(kind, message.header,  # type: ignore[attr-defined]
                                       ok=True, timestamp_received=received)
    assert answer_kind is CONFIRMATION_OF[kind]
    body = dump_message(answer_kind, answer)
    ch = body[str(answer_kind)]["confirmationHeader"]
    assert ch == {"supplyingAgencyId": SUPPLIER, "requestingAgencyId": REQUESTER,
                  "timestamp": "2024-05-01T08:30:00Z",
                  "requestingAgencyRequestId": "R-2024-0001", "multipleItemRequestId": "M-1",
                  "timestampReceived": "2024-05-01T08:30:05Z", "messageStatus": "OK"}
    assert "errorData" not in body[str(answer_kind)]
    assert roundtrip(body) == body


@pytest.mark.parametrize("kind", list(CONFIRMATION_OF), ids=str)
def test_error_confirmation_without_header(kind: MessageType) -> None:
    answer_kind, answer = confirmation(kind, None, ok=False,
                                       error_type=ErrorType.BADLY_FORMED_MESSAGE,
                                       error_value="body is not JSON")
    body = dump_message(answer_kind, answer)[str(answer_kind)]
    assert body["confirmationHeader"]["messageStatus"] == "ERROR"
    assert body["errorData"] == {"errorType": "BadlyFormedMessage",
                                 "errorValue": "body is not JSON"}
    assert set(body["confirmationHeader"]) == {"timestamp", "timestampReceived", "messageStatus"}
    parse_message(dump_message(answer_kind, answer))


def test_confirmation_echoes_action_and_reason() -> None:
    kind, answer = confirmation(MessageType.REQUESTING_AGENCY_MESSAGE, None, ok=True,
                                action=Action.RENEW)
    assert kind is MessageType.REQUESTING_AGENCY_MESSAGE_CONFIRMATION
    assert isinstance(answer, RequestingAgencyMessageConfirmation)
    assert answer.action is Action.RENEW
    kind, answer = confirmation(MessageType.SUPPLYING_AGENCY_MESSAGE, None, ok=False,
                                error_type="UnsupportedReasonForMessageType",
                                error_value="no", reason_for_message=ReasonForMessage.NOTIFICATION)
    assert kind is MessageType.SUPPLYING_AGENCY_MESSAGE_CONFIRMATION
    assert isinstance(answer, SupplyingAgencyMessageConfirmation)
    assert answer.reason_for_message is ReasonForMessage.NOTIFICATION
    assert answer.error_data is not None
    assert answer.error_data.error_type is ErrorType.UNSUPPORTED_REASON_FOR_MESSAGE_TYPE


def test_confirmation_salvages_what_it_can_from_a_garbled_header() -> None:
    raw = {"requestingAgencyRequestId": "R-9", "timestamp": "not a time",
           "requestingAgencyId": {"agencyIdType": "CALIS"}, "supplyingAgencyId": SUPPLIER}
    _, answer = confirmation(MessageType.REQUEST, raw, ok=False,
                             error_type=ErrorType.BADLY_FORMED_MESSAGE, error_value="x")
    assert isinstance(answer, RequestConfirmation)
    ch = answer.confirmation_header
    assert ch.requesting_agency_request_id == "R-9"
    assert ch.supplying_agency_id == AgencyId.model_validate(SUPPLIER)
    assert ch.requesting_agency_id is None
    assert ch.message_status is MessageStatus.ERROR


def test_confirmation_refuses_misuse() -> None:
    with pytest.raises(ValueError):
        confirmation(MessageType.REQUEST_CONFIRMATION, None, ok=True)
    with pytest.raises(ValueError):
        confirmation(MessageType.REQUEST, None, ok=False)
    with pytest.raises(ValueError):
        confirmation(MessageType.REQUEST, None, ok=True,
                     error_type=ErrorType.BADLY_FORMED_MESSAGE)
    with pytest.raises(ValueError):
        confirmation(MessageType.REQUEST, None, ok=True, action=Action.CANCEL)


# --------------------------------------------------------------------------
# Money
# --------------------------------------------------------------------------


@pytest.mark.parametrize(("costs", "minor", "currency"), [
    ({"currencyCode": "CNY", "monetaryValue": "12.5"}, 1250, "CNY"),
    ({"currencyCode": "CNY", "monetaryValue": "12.50"}, 1250, "CNY"),
    ({"currencyCode": "CNY", "monetaryValue": "0.01"}, 1, "CNY"),
    ({"currencyCode": "CNY", "monetaryValue": "12"}, 1200, "CNY"),
    ({"currencyCode": "USD", "monetaryValue": "0"}, 0, "USD"),
    ({"currencyCode": "JPY", "monetaryValue": "100"}, 100, "JPY"),
    ({"currencyCode": "JPY", "monetaryValue": "100.00"}, 100, "JPY"),
    ({"currencyCode": "EUR", "monetaryValue": 7}, 700, "EUR"),
    ({"currencyCode": "cny", "monetaryValue": "1.10"}, 110, "CNY"),
    ({"monetaryValue": "3.00"}, 300, "CNY"),
    ({"currencyCode": "CNY", "monetaryValue": "99999999999.99"}, 9999999999999, "CNY"),
])
def test_money_parses_costs(costs: dict[str, Any], minor: int, currency: str) -> None:
    assert Money.from_costs(costs) == Money(minor, currency)


@pytest.mark.parametrize(("value", "currency", "said"), [
    ("12.345", "CNY", "has 3 decimal places; CNY allows at most 2"),
    ("100.5", "JPY", "JPY allows at most 0"),
    ("-1", "CNY", "negative"),
    ("-0.50", "CNY", "negative"),
    ("abc", "CNY", "not a decimal number"),
    ("", "CNY", "not a decimal number"),
    ("1e3", "CNY", "not a decimal number"),
    ("NaN", "CNY", "not a decimal number"),
    ("12,50", "CNY", "not a decimal number"),
    (12.5, "CNY", "float"),
    (0.1, "CNY", "float"),
    (True, "CNY", "not a number"),
    (None, "CNY", "must be a decimal string"),
    ("1.00", "RMB1", "not an ISO 4217 code"),
])
def test_money_rejects_bad_costs(value: Any, currency: str, said: str) -> None:
    with pytest.raises(ValueError, match=said):
        Money.from_costs({"currencyCode": currency, "monetaryValue": value})


def test_money_round_trips_through_costs() -> None:
    for text, currency in (("12.50", "CNY"), ("0.01", "USD"), ("100", "JPY"), ("0.00", "EUR")):
        money = Money.from_costs({"currencyCode": currency, "monetaryValue": text})
        assert money.to_costs() == {"currencyCode": currency, "monetaryValue": text}
        assert Money.from_costs(money.to_costs()) == money
    assert Money(1250).to_costs() == {"currencyCode": "CNY", "monetaryValue": "12.50"}
    assert Money.from_costs(Money(5).to_costs()).minor == 5


def test_money_reads_the_costs_model() -> None:
    _, model = parse_message(copy.deepcopy(REQUEST))
    assert isinstance(model, Request) and model.billing_info is not None
    assert Money.from_costs(model.billing_info.maximum_costs) == Money(1250, "CNY")


def test_money_arithmetic_same_currency_only() -> None:
    a, b = Money(1250), Money(50)
    assert a + b == Money(1300)
    assert a - b == Money(1200)
    assert b - a == Money(-1200)
    assert -a == Money(-1250)
    assert str(a) == "12.50 CNY"
    assert a.to_decimal() == Decimal("12.50")
    with pytest.raises(ValueError, match="CNY and USD"):
        a + Money(1, "USD")
    with pytest.raises(ValueError, match="CNY and JPY"):
        a - Money(1, "JPY")
    with pytest.raises(TypeError):
        a + 1  # type: ignore[operator]
    with pytest.raises(ValueError, match="negative"):
        Money(-1).to_costs()
    with pytest.raises(ValueError):
        Money(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Money(1, "yuan")


def test_money_from_decimal_allows_ledger_signs_but_not_floats() -> None:
    assert Money.from_decimal("-2.50") == Money(-250)
    assert Money.from_decimal(Decimal("1.5")) == Money(150)
    assert Money.from_decimal(3, "JPY") == Money(3, "JPY")
    with pytest.raises(ValueError, match="float"):
        Money.from_decimal(1.5)  # type: ignore[arg-type]


def test_costs_never_serialise_in_exponent_form() -> None:
    costs = Costs(currency_code="CNY", monetary_value=Decimal("1E+2"))
    assert costs.model_dump(by_alias=True, mode="json") == {"currencyCode": "CNY",
                                                            "monetaryValue": "100"}


def test_money_is_frozen() -> None:
    money = Money(1)
    with pytest.raises(AttributeError):
        money.minor = 2  # type: ignore[misc]


# --------------------------------------------------------------------------
# Agency symbols
# --------------------------------------------------------------------------

SYMBOL = TypeAdapter(AgencySymbol)


@pytest.mark.parametrize("good", ["CALIS:100010", "ISIL:CN-SHL", "NSTL:nstl.01",
                                  "T1a2b3:LIB12", "calis_2.x-y:上海图书馆", "9:0"])
def test_agency_symbol_accepts(good: str) -> None:
    assert SYMBOL.validate_python(good) == good
    scheme, value = split_symbol(good)
    assert f"{scheme}:{value}" == good


@pytest.mark.parametrize("bad", ["CALIS", "CALIS:", ":100010", "CAL IS:1", "CALIS:10 010",
                                 "CALIS:a:b", "CALIS:a/b", "-CALIS:1", "CA$:1", "CALIS:\t1",
                                 "CALIS:1\n", "", "CALIS:" + "x" * 300])
def test_agency_symbol_rejects(bad: str) -> None:
    with pytest.raises(ValidationError):
        SYMBOL.validate_python(bad)
    with pytest.raises(ValueError):
        split_symbol(bad)


def test_agency_symbol_errors_say_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="SCHEME:VALUE"):
        split_symbol("CALIS")
    with pytest.raises(ValueError, match="must not be empty"):
        split_symbol("CALIS:")
    with pytest.raises(ValueError, match="whitespace"):
        split_symbol("CALIS:a b")


def test_agency_symbol_in_a_model_and_its_schema() -> None:
    class Holder(BaseModel):
        symbol: AgencySymbol

    assert Holder(symbol="CALIS:1").symbol == "CALIS:1"
    with pytest.raises(ValidationError):
        Holder(symbol="CALIS")
    assert "pattern" in Holder.model_json_schema()["properties"]["symbol"]


# --------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def test_export_writes_schemas_and_asyncapi(tmp_path: Path) -> None:
    settings = Settings(amqp={"name_prefix": "t42.", "url": "amqp://hub:pa55word@127.0.0.1:5672/ill"})
    paths = write_schemas(tmp_path / "out", settings)
    names = sorted(p.name for p in paths)
    assert names == sorted([f"{k}.schema.json" for k in MessageType] + ["asyncapi.json"])
    for path in paths:
        text = path.read_text(encoding="utf-8")
        assert "pa55word" not in text
        json.loads(text)

    for kind in MessageType:
        schema = json.loads((tmp_path / "out" / f"{kind}.schema.json").read_text("utf-8"))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["required"] == [str(kind)]
        assert schema["additionalProperties"] is False
        for ref in _refs(schema):
            _resolve(schema, ref)

    doc = json.loads((tmp_path / "out" / "asyncapi.json").read_text("utf-8"))
    assert doc["asyncapi"] == "3.0.0"
    assert set(doc["components"]["messages"]) == {str(k) for k in MessageType}
    addresses = {c["address"] for c in doc["channels"].values()}
    assert {"t42.ill.inbound", "t42.hub.inbound", "t42.ill.outbound", "t42.agency.{symbol}",
            "t42.ill.finance", "t42.ill.events", "t42.ill.dead", "t42.hub.dead"} <= addresses
    inbound = doc["channels"]["illInbound"]["bindings"]["amqp"]
    assert inbound["is"] == "routingKey"
    assert inbound["exchange"] == {"name": "t42.ill.inbound", "type": "topic", "durable": True,
                                   "autoDelete": False, "vhost": "ill"}
    assert doc["channels"]["agencyQueue"]["bindings"]["amqp"]["queue"]["name"] == \
        "t42.agency.{symbol}"
    assert "symbol" in doc["channels"]["agencyQueue"]["parameters"]
    assert doc["servers"]["amqp"]["protocol"] == "amqp"
    assert "hub:****@" in doc["servers"]["amqp"]["description"]
    ops = doc["operations"]
    assert ops["sendRequest"]["action"] == "send"
    assert ops["receive"]["action"] == "receive"
    assert len(ops["receive"]["messages"]) == 6
    trait = doc["components"]["messageTraits"]["amqpProperties"]
    assert "hub-transaction-id" in trait["headers"]["properties"]
    assert set(trait["x-amqp-properties"]) == {"message_id", "type", "user_id", "timestamp",
                                               "correlation_id", "content_type"}
    for ref in _refs(doc):
        _resolve(doc, ref)


def test_export_is_deterministic(tmp_path: Path) -> None:
    settings = Settings(amqp={"name_prefix": "", "url": "amqp://guest:guest@127.0.0.1:5672/"})
    first = {p.name: p.read_bytes() for p in write_schemas(tmp_path / "a", settings)}
    second = {p.name: p.read_bytes() for p in write_schemas(tmp_path / "b", settings)}
    assert first == second
    for data in first.values():
        text = data.decode("utf-8")
        canonical = json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False)
        assert text == canonical + "\n"


# --------------------------------------------------------------------------
# Property: realistic random requests round-trip exactly
# --------------------------------------------------------------------------

CJK = st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF)
LATIN = st.characters(min_codepoint=0x20, max_codepoint=0x7E)
TEXT = st.text(alphabet=st.one_of(CJK, LATIN, st.sampled_from("·—《》，。：ÉéüßΩ")),
               min_size=1, max_size=60)
IDS = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_./",
              min_size=1, max_size=40)
AGENCIES = st.builds(lambda t, v: {"agencyIdType": t, "agencyIdValue": v},
                     st.sampled_from(["CALIS", "ISIL", "NSTL", "CASHL"]), IDS)
TIMES = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1),
                     timezones=st.just(UTC)).map(lambda d: d.isoformat().replace("+00:00", "Z"))
COSTS = st.builds(
    lambda cur, v: {"currencyCode": cur, "monetaryValue": f"{v:.2f}"},
    st.sampled_from(["CNY", "USD", "EUR"]),
    st.decimals(min_value=0, max_value=10**7, places=2, allow_nan=False, allow_infinity=False))
JSON_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), TEXT)
UNKNOWN = st.dictionaries(st.from_regex(r"x-[a-z]{1,8}", fullmatch=True),
                          st.recursive(JSON_LEAF, lambda inner: st.lists(inner, max_size=3)
                                       | st.dictionaries(IDS, inner, max_size=3), max_leaves=6),
                          max_size=2)


def _optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


@st.composite
def requests(draw: st.DrawFn) -> dict[str, Any]:
    head = {"requestingAgencyId": draw(AGENCIES), "timestamp": draw(TIMES),
            "requestingAgencyRequestId": draw(IDS)}
    supplier = draw(_optional(AGENCIES))
    if supplier is not None:
        head["supplyingAgencyId"] = supplier
    bib: dict[str, Any] = {"title": draw(TEXT)}
    for key in ("author", "titleOfComponent", "volume", "pagesRequested"):
        value = draw(_optional(TEXT))
        if value is not None:
            bib[key] = value
    items = draw(st.lists(st.builds(
        lambda code, ident: {"bibliographicItemIdentifierCode": code,
                             "bibliographicItemIdentifier": ident},
        st.sampled_from(["ISBN", "ISSN", "DOI"]), IDS), max_size=3))
    if items:
        bib["bibliographicItemId"] = items
    body: dict[str, Any] = {"header": head, "bibliographicInfo": bib,
                            "serviceInfo": {"serviceType": draw(st.sampled_from(
                                [str(s) for s in ServiceType]))}}
    level = draw(_optional(st.sampled_from(["Express", "Rush", "Normal"])))
    if level:
        body["serviceInfo"]["serviceLevel"] = level
    costs = draw(_optional(COSTS))
    if costs is not None:
        body["billingInfo"] = {"maximumCosts": costs}
    kind = draw(_optional(st.sampled_from([str(k) for k in ServiceKind])))
    if kind is not None:
        body["hubExtensions"] = {"serviceKind": kind}
    name = draw(_optional(TEXT))
    if name is not None:
        body["patronInfo"] = {"surname": name, "givenName": draw(TEXT)}
    body.update(draw(UNKNOWN))
    return {"request": body}


@settings(max_examples=150, deadline=None)
@given(requests())
def test_random_requests_round_trip_exactly(body: dict[str, Any]) -> None:
    assert roundtrip(body) == body
    _, model = parse_message(copy.deepcopy(body))
    assert isinstance(model, Request)
    billing = body["request"].get("billingInfo")
    if billing:
        money = Money.from_costs(billing["maximumCosts"])
        assert money.to_costs() == billing["maximumCosts"]


def test_status_enum_is_spelt_as_the_standard() -> None:
    # Spot checks that member names follow the values other modules use.
    assert Status.COPY_COMPLETED == "CopyCompleted"
    assert ErrorType.BADLY_FORMED_MESSAGE == "BadlyFormedMessage"
    assert MessageType.REQUESTING_AGENCY_MESSAGE == "requestingAgencyMessage"
