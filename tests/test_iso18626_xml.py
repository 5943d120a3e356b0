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
from tests.support.samples import sample

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


def test_2021_gets_the_renamed_and_moved_elements_and_is_read_back_in_12_form() -> None:
    body = supplying_message()
    inner = body["supplyingAgencyMessage"]
    inner["deliveryInfo"]["sentVia"] = "FTP"
    inner["messageInfo"]["offeredCosts"] = {"currencyCode": "CNY", "monetaryValue": "30"}
    expected = copy.deepcopy(body)
    out = to_xml(body, "2021")
    assert (out.dropped, out.noted) == ([], [])
    root = etree.fromstring(out.data)
    message = root[0]
    assert [etree.QName(c).localname for c in message] == [
        "header", "messageInfo", "statusInfo", "retryInfo", "deliveryInfo", "returnInfo"]
    assert message.findtext(f"{{{NAMESPACE}}}deliveryInfo/{{{NAMESPACE}}}deliveryMethod") \
        == "FTP"
    assert message.find(f".//{{{NAMESPACE}}}sentVia") is None
    assert message.findtext(f"{{{NAMESPACE}}}retryInfo/{{{NAMESPACE}}}offeredCosts/"
                            f"{{{NAMESPACE}}}monetaryValue") == "30"
    assert message.find(f"{{{NAMESPACE}}}messageInfo/{{{NAMESPACE}}}offeredCosts") is None
    # Read back, the hub has 1.2's names and places again (schemas/iso18626_versions.py).
    assert read_xml(out.data).body == expected


# --------------------------------------------------------------------------
# The scheme attribute of open values (issue 15, failure 8)
# --------------------------------------------------------------------------


def test_a_scheme_is_kept_beside_its_value_and_written_back_in_both_versions() -> None:
    # crosslink illmock's request as ReShare writes it: patronReference in scheme RESHARE.
    raw = fill((SAMPLES / "modrs_illmockrequest.xml").read_bytes(), **PLACEHOLDERS)
    got = read_xml(raw)
    record = got.content["bibliographicInfo"]["bibliographicRecordId"][0]
    assert record == {"bibliographicRecordIdentifierCode": "patronReference",
                      "bibliographicRecordIdentifierCode@scheme": "RESHARE",
                      "bibliographicRecordIdentifier": "ref-33-44-55"}
    parse_message(got.body)  # the JSON contract takes it (an unknown field, kept)
    for version in ("1.2", "2021"):
        out = to_xml(got.body, version)
        assert out.dropped == []
        code = etree.fromstring(out.data).find(
            f".//{{{NAMESPACE}}}bibliographicRecordIdentifierCode")
        assert (code.text, code.get(f"{{{NAMESPACE}}}scheme")) == ("patronReference", "RESHARE")
        assert read_xml(out.data).body == got.body


def test_mod_rs_unit_request_keeps_every_namespaced_scheme_to_the_supplier() -> None:
    # mod-rs's JAXB fixture of a request: every open value carries a scheme under its own
    # prefix (p3:, p4:, p5:). It is a bare <request> with `+0000` offsets, which
    # xs:dateTime does not allow: it is put in an ISO18626Message and given `+00:00`,
    # the rest as published.
    text = sample("modrs_unit_request.xml").split("?>", 1)[1]
    raw = (f'<ISO18626Message xmlns="{NAMESPACE}" xmlns:ill="{NAMESPACE}" ill:version="1.2">'
           f'{text.replace("+0000", "+00:00")}</ISO18626Message>').encode()
    got = read_xml(raw)
    service = got.content["serviceInfo"]
    assert (service["serviceLevel"], service["serviceLevel@scheme"]) == \
        ("serviceLevel1", "http://uri1")
    items = got.content["bibliographicInfo"]["bibliographicItemId"]
    assert [i["bibliographicItemIdentifierCode@scheme"] for i in items] == \
        ["http://uri1", "http://uri2", "http://uri3"]
    cost = got.content["billingInfo"]["maximumCosts"]
    assert cost["currencyCode@scheme"] == "http://uri1"
    parse_message(got.body)
    for version in ("1.2", "2021"):
        out = etree.fromstring(to_xml(got.body, version).data)
        level = out.find(f".//{{{NAMESPACE}}}serviceLevel")
        assert (level.text, level.get(f"{{{NAMESPACE}}}scheme")) == \
            ("serviceLevel1", "http://uri1")
        codes = out.iterfind(f".//{{{NAMESPACE}}}bibliographicRecordIdentifierCode")
        assert [c.get(f"{{{NAMESPACE}}}scheme") for c in codes] == \
            ["http://uri1", "http://uri2", "http://uri3"]


def test_schemes_of_repeated_values_go_in_step_and_json_senders_may_use_them() -> None:
    body = request_body()
    info = body["request"]["serviceInfo"]
    info["loanCondition"] = ["LibraryUseOnly", "NoReproduction", "SignatureRequired"]
    info["loanCondition@scheme"] = ["urn:a", None, "urn:c"]
    info["serviceLevel"] = "Rush"
    info["serviceLevel@scheme"] = "http://illtransactions.org/ServiceLevels"
    out = to_xml(body, "2021")
    service = etree.fromstring(out.data).find(f".//{{{NAMESPACE}}}serviceInfo")
    written = [(c.text, c.get(f"{{{NAMESPACE}}}scheme"))
               for c in service.iterfind(f"{{{NAMESPACE}}}loanCondition")]
    assert written == [("LibraryUseOnly", "urn:a"), ("NoReproduction", None),
                       ("SignatureRequired", "urn:c")]
    assert service.find(f"{{{NAMESPACE}}}serviceLevel").get(f"{{{NAMESPACE}}}scheme") == \
        "http://illtransactions.org/ServiceLevels"
    assert read_xml(out.data).content["serviceInfo"] == info


def test_a_scheme_without_a_place_is_listed_not_sent() -> None:
    body = request_body()
    bib = body["request"]["bibliographicInfo"]
    bib["title@scheme"] = "urn:not-an-open-value"     # title is a plain string
    bib["subtitle@scheme"] = "urn:no-value"           # no subtitle to carry it
    out = to_xml(body, "1.2")
    assert sorted(out.dropped) == ["request.bibliographicInfo.subtitle@scheme",
                                   "request.bibliographicInfo.title@scheme"]
    assert b"urn:not-an-open-value" not in out.data and b"urn:no-value" not in out.data


def test_an_empty_scheme_counts_as_none() -> None:
    raw = xml_of(request_body()).replace(b"<agencyIdType>", b'<agencyIdType scheme="">')
    header = read_xml(raw).content["header"]
    assert "agencyIdType@scheme" not in header["requestingAgencyId"]


# --------------------------------------------------------------------------
# Leniencies for what real systems send (README: "Accepted although the XSD says ...")
# --------------------------------------------------------------------------


def without_supplier(raw: bytes) -> bytes:
    root = etree.fromstring(raw)
    supplier = root.find(f".//{{{NAMESPACE}}}header/{{{NAMESPACE}}}supplyingAgencyId")
    supplier.getparent().remove(supplier)
    return etree.tostring(root)


def test_a_12_request_without_supplying_agency_id_lets_the_hub_choose() -> None:
    body = request_body()
    raw = without_supplier(xml_of(body))
    got = read_xml(raw)
    assert got.version == "1.2"  # as declared, not 2021 (where the element is optional)
    assert "supplyingAgencyId" not in got.content["header"]
    assert any("supplyingAgencyId missing" in note for note in got.leniencies)
    del body["request"]["header"]["supplyingAgencyId"]
    assert got.body == body
    # Only in a request: a 1.2 supplyingAgencyMessage still has to name its supplier.
    err = refusal(without_supplier(xml_of(supplying_message())))
    assert err.error_value.startswith(
        "supplyingAgencyMessage.header.requestingAgencyId: not allowed at this position "
        "(ISO 18626 1.2 XSD); expected supplyingAgencyId here")


def test_a_document_naming_no_version_is_read_as_the_one_it_fits_without_leniency() -> None:
    body = request_body()
    del body["request"]["bibliographicInfo"]["bibliographicItemId"]  # children in 1.2 order
    raw = without_supplier(xml_of(body)).replace(b'ill:version="1.2"', b"")
    got = read_xml(raw)
    assert got.version == "2021"  # valid 2021 as it is: no leniency needed
    assert not any("supplyingAgencyId" in note for note in got.leniencies)
    # With an element only 1.2 has, only the leniency reads it.
    raw = raw.replace(b"</serviceLevel>", b"</serviceLevel><preferredFormat>PDF"
                      b"</preferredFormat>", 1)
    got = read_xml(raw)
    assert got.version == "1.2"
    assert got.content["serviceInfo"]["preferredFormat"] == "PDF"


def test_reshare_patron_request_retry_without_supplying_agency_id(  # failure 9
        ) -> None:
    # ReShare (mod-rs) integration-test message. It declares
    # 1.2 and names no supplier; it also carries an empty 2021-only <authorId> and, being a
    # hand-written fixture that mod-rs reads with JAXB (which ignores order), has the
    # bibliographicItemId children and requestedDeliveryInfo out of XSD order. The order is
    # put right here (mod-rs's own marshaller writes XSD order); the rest is as published.
    text = sample("modrs_patronRequestRetry.xml")
    text = text.replace("<agencyIdValue></agencyIdValue>", "<agencyIdValue>MILL</agencyIdValue>")
    text = text.replace("requestId_holder", "RS-RETRY-1").replace("patronId_holder", "P-7")
    root = etree.fromstring(text.encode())
    request = root[0]
    for item in request.iter(f"{{{NAMESPACE}}}bibliographicItemId"):
        item.append(item[0])  # identifier, then code: 1.2's order
    request.find(f"{{{NAMESPACE}}}patronInfo").addprevious(
        request.find(f"{{{NAMESPACE}}}requestedDeliveryInfo"))
    got = read_xml(etree.tostring(root))
    assert got.version == "1.2"
    assert got.leniencies == [
        "unqualified scheme attribute accepted",
        "17 empty optional element(s) read as absent",
        "1 empty element(s) of ISO 18626 2021 only read as absent",
        "request header.supplyingAgencyId missing (1.2) accepted: the hub chooses"]
    header = got.content["header"]
    assert "supplyingAgencyId" not in header
    assert header["requestingAgencyId"] == {"agencyIdType": "ISIL", "agencyIdValue": "MILL"}
    records = got.content["bibliographicInfo"]["bibliographicRecordId"]
    assert [(r["bibliographicRecordIdentifierCode"],
             r["bibliographicRecordIdentifierCode@scheme"]) for r in records] == [
        ("TitelId", "ZFL"), ("BsTyp2", "ZFL"), ("MedTyp", "ZFL")]
    _, request_model = parse_message(got.body)
    assert request_model.service_info.request_type == "Retry"  # type: ignore[attr-defined]
    # Forwarded to a supplier (the hub names it), the ZFL schemes go with the codes.
    got.content["header"]["supplyingAgencyId"] = messages.agency_id(SUP)
    out = etree.fromstring(to_xml(got.body, "1.2").data)
    assert [c.get(f"{{{NAMESPACE}}}scheme") for c in
            out.iter(f"{{{NAMESPACE}}}bibliographicRecordIdentifierCode")] == ["ZFL"] * 3


def notification_without(raw: bytes, *names: str) -> bytes:
    root = etree.fromstring(raw)
    info = root.find(f".//{{{NAMESPACE}}}statusInfo")
    for name in names:
        found = info if name == "statusInfo" else info.find(f"{{{NAMESPACE}}}{name}")
        if name == "emptyStatus":
            info.find(f"{{{NAMESPACE}}}status").text = ""
        else:
            found.getparent().remove(found)
    return etree.tostring(root)


@pytest.mark.parametrize("version", ["1.2", "2021"])
def test_a_notification_may_say_no_status(version: str) -> None:
    body = supplying_message()
    body["supplyingAgencyMessage"]["messageInfo"]["reasonForMessage"] = "Notification"
    raw = to_xml(body, version).data
    # Alma and Rapido: an empty status ("no change"); mod-rs: no lastChange; or neither.
    for gone, expected in ((("emptyStatus",), {"dueDate": "2024-06-01T00:00:00Z",
                                               "lastChange": NOW}),
                           (("lastChange",), {"status": "Loaned",
                                              "dueDate": "2024-06-01T00:00:00Z"}),
                           (("emptyStatus", "lastChange"), {"dueDate": "2024-06-01T00:00:00Z"}),
                           (("statusInfo",), None)):
        got = read_xml(notification_without(raw, *gone))
        assert got.version == version
        assert got.content.get("statusInfo") == expected, gone
        assert any(n.startswith("Notification without") for n in got.leniencies)
        parse_message(got.body)  # the model takes it: a Notification changes no status
    # Any other reason still needs both, as the XSD says.
    body["supplyingAgencyMessage"]["messageInfo"]["reasonForMessage"] = "StatusChange"
    err = refusal(notification_without(to_xml(body, version).data, "emptyStatus"))
    assert err.error_value.startswith(
        "supplyingAgencyMessage.statusInfo.status: required element is empty")


def test_an_empty_element_of_the_other_version_counts_as_absent() -> None:
    raw = xml_of(request_body()).replace(b"<title>", b"<authorId></authorId><title>")
    assert refusal(raw.replace(b"<authorId></authorId>", b"<authorId>x</authorId>")
                   ).error_value.startswith("request.bibliographicInfo.authorId: no such "
                                            "element in bibliographicInfo (ISO 18626 1.2 XSD)")
    got = read_xml(raw)
    assert got.version == "1.2"
    assert "1 empty element(s) of ISO 18626 2021 only read as absent" in got.leniencies
    # An empty element of neither version is still refused.
    err = refusal(xml_of(request_body()).replace(b"<title>", b"<colour/><title>"))
    assert err.error_type is ErrorType.UNRECOGNISED_DATA_ELEMENT


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
    "modrs_unfilledNotification.xml": ("1.2", None),  # a Notification: lastChange may lack
    "modrs_unit_requestingAgencyMessage.xml": (
        None, "root element is 'requestingAgencyMessage' in namespace "
              "http://illtransactions.org/2013/iso18626; expected ISO18626Message"),
    # JAXB fixtures and hand-written templates: mod-rs reads them with JAXB, which
    # ignores order and empties; the XSD does not (the tests that use them say how).
    "modrs_unit_request.xml": (
        None, "root element is 'request' in namespace "
              "http://illtransactions.org/2013/iso18626; expected ISO18626Message"),
    "modrs_unit_supplyingAgencyMessage.xml": (
        None, "root element is 'supplyingAgencyMessage' in namespace "
              "http://illtransactions.org/2013/iso18626; expected ISO18626Message"),
    "modrs_patronRequestRetry.xml": (
        None, "request.bibliographicInfo.bibliographicItemId.bibliographicItemIdentifierCode:"
              " not allowed at this position"),
    "modrs_supplyingAgencyMessage_statusChange.xml": (
        None, "supplyingAgencyMessage.statusInfo.lastChange: required element is empty"),
    "modrs_statusChangeExpectToSupplyTemplate.xml": ("1.2", None),
    "modrs_statusChangeUnfilledTemplate.xml": ("1.2", None),
    "modrs_cancelResponseReplyNoTemplate.xml": ("1.2", None),  # no statusInfo: answer N
}
PLACEHOLDERS = {"status_holder": "Loaned", "_TIMESTAMP_": NOW, "timestamp_holder": NOW,
                "_REQUEST_ID_": "R-1", "_SUPPLY_AGENCY_ID_": "SUP",
                "_REQUEST_AGENCY_ID_": "REQ"}


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
    if got.kind is MessageType.SUPPLYING_AGENCY_MESSAGE and \
            "lastChange" not in (got.content.get("statusInfo") or {}):
        return  # written out only with the status dispatch restates (no change)
    again = read_xml(to_xml(got.body, got.version).data)
    assert again.body == got.body


def test_samples_are_all_covered() -> None:
    assert {p.name for p in SAMPLES.glob("*.xml")} == set(SAMPLE_RESULTS)
