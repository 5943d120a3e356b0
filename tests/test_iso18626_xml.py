"""ISO 18626 XML <-> JSON: round trips, validation errors, vendor quirks, public samples."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from lxml import etree

from schemas.iso18626 import confirmation, dump_message, parse_message
from schemas.iso18626_codes import Action, ErrorType, MessageType, ReasonForMessage
from schemas.iso18626_xml import NAMESPACE, XmlMessageError, read_xml, to_xml
from tests.support import messages
from tests.support.paths import DATA

SAMPLES = DATA / "iso18626"
NOW = "2024-05-01T08:30:00Z"
REQ, SUP = "CALIS:100010", "ISIL:CN-SHL"


def header(**extra: Any) -> dict[str, Any]:
    return {"supplyingAgencyId": messages.agency_id(SUP),
            "requestingAgencyId": messages.agency_id(REQ), "timestamp": NOW,
            "requestingAgencyRequestId": "请求-0001", **extra}


def request_body() -> dict[str, Any]:
    body = messages.request(REQ, request_id="请求-0001", supplier=SUP)
    inner = body["request"]
    inner["header"]["timestamp"] = NOW
    inner["serviceInfo"].update({"requestType": "New",
                                 "requestSubType": ["PatronRequest"], "note": "急用，谢谢"})
    inner["supplierInfo"] = [{"sortOrder": 1, "supplierCode": messages.agency_id(SUP)},
                             {"sortOrder": 2, "supplierDescription": "国家图书馆"}]
    inner["publicationInfo"] = {"publisher": "中国图书馆学会", "publicationDate": "2023"}
    return body


def supplying_message() -> dict[str, Any]:
    return {"supplyingAgencyMessage": {
        "header": header(supplyingAgencyRequestId="S-77"),
        "messageInfo": {"reasonForMessage": "StatusChange", "answerYesNo": "Y",
                        "note": "已寄出"},
        "statusInfo": {"status": "Loaned", "dueDate": "2024-06-01T00:00:00Z",
                       "lastChange": NOW},
        "deliveryInfo": {"dateSent": NOW, "itemId": "条码 310001", "sentToPatron": False,
                         "deliveryCosts": {"currencyCode": "CNY", "monetaryValue": "12.50"}},
        "returnInfo": {"name": "上海图书馆", "physicalAddress": {"line1": "淮海中路1555号",
                                                               "locality": "上海"}}}}


def requesting_message() -> dict[str, Any]:
    return {"requestingAgencyMessage": {"header": header(), "action": "Renew",
                                        "note": "请续借两周"}}


def confirmations() -> list[dict[str, Any]]:
    h = parse_message(request_body())[1].header  # type: ignore[attr-defined]
    return [
        dump_message(*confirmation(MessageType.REQUEST, h, ok=True, timestamp_received=None)),
        dump_message(*confirmation(MessageType.SUPPLYING_AGENCY_MESSAGE, h, ok=False,
                                   error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                                   error_value="statusInfo.status: 'Shipped' 不对",
                                   reason_for_message=ReasonForMessage.STATUS_CHANGE)),
        dump_message(*confirmation(MessageType.REQUESTING_AGENCY_MESSAGE, h, ok=True,
                                   action=Action.RENEW)),
    ]


def all_messages() -> list[dict[str, Any]]:
    return [request_body(), supplying_message(), requesting_message(), *confirmations()]


@pytest.mark.parametrize("version", ["1.2", "2021"])
@pytest.mark.parametrize("index", range(6))
def test_every_message_type_round_trips(index: int, version: str) -> None:
    body = all_messages()[index]
    kind = MessageType(next(iter(body)))
    expected = copy.deepcopy(body)
    out = to_xml(body, version)
    assert out.dropped == []
    back = read_xml(out.data)
    assert back.kind is kind
    assert back.version == version
    assert back.body == expected
    # The JSON contract accepts it and serialises it back unchanged.
    assert dump_message(*parse_message(back.body)) == dump_message(*parse_message(expected))
    # And the XML of the XML is the same document.
    assert to_xml(back.body, version).data == out.data


def test_xml_is_in_xsd_order_namespace_and_version() -> None:
    body = supplying_message()
    inner = body["supplyingAgencyMessage"]
    body["supplyingAgencyMessage"] = dict(reversed(list(inner.items())))  # JSON order is free
    root = etree.fromstring(to_xml(body, "1.2").data)
    assert root.tag == f"{{{NAMESPACE}}}ISO18626Message"
    assert root.get(f"{{{NAMESPACE}}}version") == "1.2"
    message = root[0]
    assert [etree.QName(c).localname for c in message] == [
        "header", "messageInfo", "statusInfo", "deliveryInfo", "returnInfo"]
    header_names = [etree.QName(c).localname for c in message[0]]
    # 1.2 requires multipleItemRequestId even when there is none: written empty.
    assert header_names == ["supplyingAgencyId", "requestingAgencyId", "multipleItemRequestId",
                            "timestamp", "requestingAgencyRequestId", "supplyingAgencyRequestId"]
    assert message.find(f".//{{{NAMESPACE}}}sentToPatron").text == "false"


def test_a_request_without_supplier_gets_the_empty_one_12_requires() -> None:
    body = messages.request(REQ, request_id="R-1")
    out = to_xml(body, "1.2")
    root = etree.fromstring(out.data)
    supplier = root.find(f".//{{{NAMESPACE}}}header/{{{NAMESPACE}}}supplyingAgencyId")
    assert supplier is not None and [c.text for c in supplier] == [None, None]
    # ... and reading it back, the empty supplier is no supplier (the hub chooses).
    assert "supplyingAgencyId" not in read_xml(out.data).content["header"]
    two = etree.fromstring(to_xml(body, "2021").data)
    assert two.find(f".//{{{NAMESPACE}}}supplyingAgencyId") is None


def test_fields_without_an_element_are_listed_not_sent() -> None:
    body = request_body()
    body["request"]["hubExtensions"] = {"serviceKind": "DocumentDelivery"}
    body["request"]["bibliographicInfo"]["vendorField"] = "x"
    out = to_xml(body, "1.2")
    assert sorted(out.dropped) == ["request.bibliographicInfo.vendorField",
                                   "request.hubExtensions"]
    assert b"hubExtensions" not in out.data and b"vendorField" not in out.data


def test_2021_gets_the_renamed_and_moved_elements() -> None:
    body = supplying_message()
    inner = body["supplyingAgencyMessage"]
    inner["deliveryInfo"]["sentVia"] = "FTP"
    inner["messageInfo"]["offeredCosts"] = {"currencyCode": "CNY", "monetaryValue": "30"}
    back = read_xml(to_xml(body, "2021").data).content
    assert back["deliveryInfo"]["deliveryMethod"] == "FTP"
    assert "sentVia" not in back["deliveryInfo"]
    assert back["retryInfo"]["offeredCosts"] == [{"currencyCode": "CNY",
                                                  "monetaryValue": "30"}]
    assert "offeredCosts" not in back["messageInfo"]


def test_chinese_text_survives_both_ways() -> None:
    out = to_xml(request_body(), "1.2")
    assert "中国图书馆学报".encode() in out.data
    assert read_xml(out.data).content["bibliographicInfo"]["title"] == "中国图书馆学报"
    gb = out.data.decode().replace("UTF-8", "GB18030", 1).encode("gb18030")
    assert read_xml(gb).content["serviceInfo"]["note"] == "急用，谢谢"


def xml_of(body: dict[str, Any], version: str = "1.2") -> bytes:
    return to_xml(body, version, validate=False).data


def refusal(raw: bytes) -> XmlMessageError:
    with pytest.raises(XmlMessageError) as caught:
        read_xml(raw)
    return caught.value


def test_a_wrong_closed_value_names_the_element_and_the_allowed_values() -> None:
    raw = xml_of(supplying_message()).replace(b">Loaned<", b">Shipped<")
    err = refusal(raw)
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert err.error_value.startswith(
        "supplyingAgencyMessage.statusInfo.status: 'Shipped' is not one of RequestReceived,")
    assert err.kind is MessageType.SUPPLYING_AGENCY_MESSAGE
    assert err.header["requestingAgencyRequestId"] == "请求-0001"  # echoed in the answer


def test_an_unknown_element_is_unrecognised_by_its_path() -> None:
    raw = xml_of(request_body()).replace(b"<title>", b"<colour>red</colour><title>")
    err = refusal(raw)
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_ELEMENT
    assert err.error_value.startswith("request.bibliographicInfo.colour: no such element")


def test_a_missing_required_element_is_named() -> None:
    body = supplying_message()
    del body["supplyingAgencyMessage"]["statusInfo"]["lastChange"]
    err = refusal(xml_of(body))
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value.startswith(
        "supplyingAgencyMessage.statusInfo.lastChange: required element missing")


def test_a_bad_datetime_and_a_bad_decimal_are_named() -> None:
    raw = xml_of(request_body()).replace(NOW.encode(), b"yesterday")
    err = refusal(raw)
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert err.error_value.startswith(
        "request.header.timestamp: 'yesterday' is not a valid xs:dateTime")
    raw = xml_of(request_body()).replace(b">50.00<", b">fifty<")
    assert refusal(raw).error_value.startswith(
        "request.billingInfo.maximumCosts.monetaryValue: 'fifty' is not a valid xs:decimal")


def test_elements_out_of_order_are_badly_formed() -> None:
    raw = xml_of(requesting_message())
    root = etree.fromstring(raw)
    message = root[0]
    message.insert(0, message[1])  # action before header
    err = refusal(etree.tostring(root))
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert "requestingAgencyMessage" in err.error_value


def test_not_xml_and_not_iso18626_are_refused_precisely() -> None:
    err = refusal(b"{\"request\": {}}")
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value.startswith("body is not well-formed XML")
    err = refusal(b"<?xml version='1.0'?><order xmlns='urn:x'/>")
    assert err.error_value == ("root element is 'order' in namespace urn:x; expected "
                               "ISO18626Message in namespace " + NAMESPACE)


def test_entities_are_never_expanded() -> None:
    raw = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           + xml_of(request_body()).split(b"?>", 1)[1].replace(b"<title>", b"<title>&e;"))
    err = refusal(raw)
    assert err.error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert err.error_value == "a DOCTYPE declaration is not allowed in an ISO 18626 message"
    assert "root:" not in str(err.header)


def test_empty_optional_elements_count_as_absent() -> None:
    raw = xml_of(supplying_message()).replace(
        b"<note>", b"<reasonUnfilled/><offeredCosts/><note>").replace(
        b"<answerYesNo>Y</answerYesNo>", b"<answerYesNo />")
    raw = raw.replace(b"<note>\xe5\xb7\xb2\xe5\xaf\x84\xe5\x87\xba</note>",
                      b"<note></note><reasonUnfilled/><offeredCosts/>")
    got = read_xml(raw)
    info = got.content["messageInfo"]
    assert info == {"reasonForMessage": "StatusChange"}
    assert any("empty optional" in note for note in got.leniencies)


def test_an_empty_required_element_is_named() -> None:
    raw = xml_of(supplying_message()).replace(
        f"<lastChange>{NOW}</lastChange>".encode(), b"<lastChange/>")
    err = refusal(raw)
    assert err.error_value.startswith(
        "supplyingAgencyMessage.statusInfo.lastChange: required element is empty")


def fill(raw: bytes, **values: str) -> bytes:
    for placeholder, value in values.items():
        raw = raw.replace(placeholder.encode(), value.encode())
    return raw


# Each published sample, with what the hub makes of it: the schema version it validates
# against, or the ISO 18626 error its answer carries.
SAMPLE_RESULTS = {
    "modrs_illmockrequest.xml": ("1.2", None),
    "modrs_case1_request.xml": ("1.2", None),
    "modrs_patronRequest.xml": ("2021", None),
    "modrs_cancelResponseExpectToSupplyTemplate.xml": ("1.2", None),
    "modrs_supplyingAgencyMessage_loaned.xml": (
        None, "supplyingAgencyMessage.statusInfo.lastChange: required element is empty"),
    "modrs_unfilledNotification.xml": (
        None, "supplyingAgencyMessage.statusInfo.lastChange: required element missing"),
    "modrs_unit_requestingAgencyMessage.xml": (
        None, "root element is 'requestingAgencyMessage' in namespace "
              "http://illtransactions.org/2013/iso18626; expected ISO18626Message"),
}
PLACEHOLDERS = {"status_holder": "Loaned", "_TIMESTAMP_": NOW, "timestamp_holder": NOW}


@pytest.mark.parametrize("name", sorted(SAMPLE_RESULTS))
def test_public_samples(name: str) -> None:
    version, error = SAMPLE_RESULTS[name]
    raw = fill((SAMPLES / name).read_bytes(), **PLACEHOLDERS)
    if error:
        assert refusal(raw).error_value.startswith(error)
        return
    got = read_xml(raw)
    assert got.version == version
    kind, _ = parse_message(got.body)  # the JSON contract takes it as it is
    assert kind is got.kind
    again = read_xml(to_xml(got.body, got.version).data)
    assert again.body == got.body


def test_samples_are_all_covered() -> None:
    assert {p.name for p in SAMPLES.glob("*.xml")} == set(SAMPLE_RESULTS)
