"""Peer profiles as data (broker/profiles/): each adjustment on messages other
implementers wrote (tests/data/iso18626/, with their placeholders filled), the profile
table against docs/peer-profiles.md and the migration, the vocabulary. Pure: no server.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from broker import profiles
from broker.profiles import notes
from broker.profiles.table import ADJUSTMENTS, PROFILES, VOCABULARY, markdown
from schemas.iso18626 import parse_message
from schemas.iso18626_xml import read_xml, to_xml
from tests.support import messages
from tests.support.database import check_list
from tests.support.paths import DOCS
from tests.support.samples import sample

NOW = "2024-05-01T08:30:00Z"
REQ, SUP = "ISIL:US-REQ", "ISIL:US-SUP"


def filled(text: str, **values: str) -> bytes:
    for old, new in values.items():
        assert old in text, old
        text = text.replace(old, new)
    return text.encode()


def loaned_sample(**values: str) -> dict[str, Any]:
    """ReShare's supplyingAgencyMessage template (every optional element empty)."""
    return read_xml(filled(sample("modrs_supplyingAgencyMessage_loaned.xml"),
                           status_holder="Loaned", **{"<lastChange />":
                                                      f"<lastChange>{NOW}</lastChange>"},
                           **values)).body


def inner(body: dict[str, Any]) -> dict[str, Any]:
    return next(iter(body.values()))


def details(adjusted: profiles.Adjusted) -> list[str]:
    return [a.adjustment for a in adjusted.applied]


# --------------------------------------------------------------------------
# The table is data, and the documentation and the database say the same
# --------------------------------------------------------------------------


def test_docs_carry_the_generated_profile_table() -> None:
    text = (DOCS / "peer-profiles.md").read_text("utf-8")
    found = re.search(r"<!-- profile-table:[^\n]*-->\n\n(.*?)\n<!-- end profile-table -->",
                      text, re.S)
    assert found, "docs/peer-profiles.md lost its profile-table markers"
    assert found.group(1) == markdown(), (
        "docs/peer-profiles.md is stale: paste `run.py agency profiles --markdown` "
        "between its profile-table markers")


def test_the_database_knows_the_same_profiles() -> None:
    assert check_list("agency_iso18626_profile_check", "iso18626_profile") == set(PROFILES)
    assert profiles.DEFAULT_PROFILE == "strict"


def test_every_adjustment_is_used_and_says_where_it_comes_from() -> None:
    used = {name for p in PROFILES.values() for name in (*p.inbound, *p.outbound)}
    assert used == set(ADJUSTMENTS)
    for adjustment in ADJUSTMENTS.values():
        assert adjustment.sources, adjustment.name
        assert all(s.url.startswith(("https://", "../")) for s in adjustment.sources)
    for profile in PROFILES.values():
        assert profile.inbound[:len(VOCABULARY)] == VOCABULARY, profile.name


# --------------------------------------------------------------------------
# Vocabulary (failure 8): every profile, and the AMQP contract
# --------------------------------------------------------------------------


def lowercase_request() -> dict[str, Any]:
    body = messages.request(REQ, request_id="V-1", service_level="rush",
                            publicationInfo={"publicationType": "book"})
    info = body["request"]
    info["billingInfo"]["maximumCosts"]["currencyCode"] = "cny"
    info["serviceInfo"].update({"preferredFormat": "pdf",
                                "loanCondition": ["watchlibraryuseonly", "other"]})
    # mod-rs sends its id codes in lower case (ProtocolMessageBuildingService.groovy:101).
    info["bibliographicInfo"]["bibliographicItemId"][0]["bibliographicItemIdentifierCode"] = \
        "issn"
    return body


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_open_values_are_spelt_the_hubs_way_whatever_the_profile(profile: str) -> None:
    body = lowercase_request()
    before = copy.deepcopy(body)
    got = inner(profiles.inbound(profile, body).body)
    assert body == before  # the caller's message is not touched
    assert got["serviceInfo"]["serviceLevel"] == "Rush"
    assert got["publicationInfo"]["publicationType"] == "Book"
    assert got["billingInfo"]["maximumCosts"]["currencyCode"] == "CNY"
    assert got["serviceInfo"]["preferredFormat"] == "PDF"
    assert got["serviceInfo"]["loanCondition"] == ["WatchLibraryUseOnly", "other"]
    # Compared without regard to case where read (broker/holdings.py), never rewritten.
    assert got["bibliographicInfo"]["bibliographicItemId"][0][
        "bibliographicItemIdentifierCode"] == "issn"


def test_an_unknown_service_level_is_kept_not_defaulted() -> None:
    body = messages.request(REQ, request_id="V-2", service_level="Overnight ")
    adjusted = profiles.inbound("strict", body)
    assert not adjusted.changed
    assert inner(adjusted.body)["serviceInfo"]["serviceLevel"] == "Overnight "


def test_a_supplier_message_gets_its_amounts_and_codes_spelt_too() -> None:
    body = loaned_sample(**{
        "<sentVia />": "<sentVia>mail</sentVia>",
        "<deliveryCosts />": "<deliveryCosts><currencyCode>usd</currencyCode>"
                             "<monetaryValue>12.50</monetaryValue></deliveryCosts>",
        "<dateSent />": f"<dateSent>{NOW}</dateSent>",
        "<loanCondition />": "<loanCondition>libraryuseonly</loanCondition>"})
    got = inner(profiles.inbound("reshare", body).body)
    delivery = got["deliveryInfo"]
    assert (delivery["sentVia"], delivery["deliveryCosts"]["currencyCode"],
            delivery["loanCondition"]) == ("Mail", "USD", "LibraryUseOnly")


async def test_the_amqp_edge_spells_the_vocabulary_and_leaves_http_alone() -> None:
    class Delivery:
        body = b"{}"
        sender, message_id, content_type = REQ, "m-1", "application/json"
        synchronous = True

    body = lowercase_request()
    # An HTTP message was normalised by web/iso18626.py with its profile already.
    assert await profiles.normalise_at_intake(None, Delivery(), body) is body  # type: ignore[arg-type]


# --------------------------------------------------------------------------
# Alma (failures 5 and 6, and its notes)
# --------------------------------------------------------------------------


def test_alma_gets_no_expect_to_supply() -> None:  # failure 5
    # ReShare's ExpectToSupply, as the hub would relay it to an Alma requester.
    raw = filled(sample("modrs_statusChangeExpectToSupplyTemplate.xml"),
                 _SUPPLY_AGENCY_ID_="US-SUP", _REQUEST_AGENCY_ID_="US-REQ",
                 _TIMESTAMP_=NOW, _REQUEST_ID_="A-1")
    body = read_xml(raw).body
    adjusted = profiles.outbound("alma", body)
    assert adjusted.drop == "its ILL system has no status ExpectToSupply"
    assert details(adjusted) == ["status.no_expect_to_supply"]
    assert profiles.outbound("reshare", body, seq=1).drop is None
    assert profiles.outbound("strict", body).drop is None
    # The next status does go.
    will = messages.supplier_message(SUP, REQ, "A-1", "WillSupply", "RequestResponse")
    assert profiles.outbound("alma", will).drop is None
    # A Notification with news in it is not lost: it goes as WillSupply (as CrossLink's).
    moved = messages.supplier_message(SUP, REQ, "A-1", "ExpectToSupply", "Notification",
                                      note="US-X could not supply; forwarded to US-Y")
    adjusted = profiles.outbound("alma", moved)
    assert adjusted.drop is None
    assert inner(adjusted.body)["statusInfo"]["status"] == "WillSupply"
    assert inner(adjusted.body)["messageInfo"]["note"] == \
        "US-X could not supply; forwarded to US-Y"


def test_an_alma_charge_in_offered_costs_is_billed_as_delivery_costs() -> None:  # failure 6
    body = loaned_sample(**{"<offeredCosts />": "<offeredCosts><currencyCode>cny</currencyCode>"
                                                "<monetaryValue>7.50</monetaryValue>"
                                                "</offeredCosts>"})
    assert "deliveryInfo" not in inner(body)  # the template's empty one is read as absent
    adjusted = profiles.inbound("alma", body)
    got = inner(adjusted.body)
    assert got["deliveryInfo"] == {"dateSent": NOW, "deliveryCosts": {
        "currencyCode": "CNY", "monetaryValue": "7.50"}}
    assert "costs.offered_as_delivery" in details(adjusted)
    parse_message(adjusted.body)  # what intake validates next
    # Only Alma's, only for a supply, never over deliveryCosts sent.
    assert "deliveryInfo" not in inner(profiles.inbound("strict", body).body)
    retry = copy.deepcopy(body)
    inner(retry)["statusInfo"]["status"] = "RetryPossible"
    assert "deliveryInfo" not in inner(profiles.inbound("alma", retry).body)
    both = copy.deepcopy(adjusted.body)
    inner(both)["deliveryInfo"]["deliveryCosts"]["monetaryValue"] = "3.00"
    assert inner(profiles.inbound("alma", both).body)["deliveryInfo"]["deliveryCosts"][
        "monetaryValue"] == "3.00"


def test_alma_is_sent_conditions_costs_and_addresses_in_its_notes() -> None:
    will = messages.supplier_message(SUP, REQ, "A-2", "WillSupply", "RequestResponse",
                                     note="can lend", offeredCosts={
                                         "currencyCode": "USD", "monetaryValue": "5.00"})
    inner(will)["deliveryInfo"] = {"dateSent": NOW, "loanCondition": "LibraryUseOnly"}
    got = inner(profiles.outbound("alma", will).body)
    assert got["messageInfo"]["note"] == \
        "Condition: LibraryUseOnly, Cost: 5.00 USD, can lend"
    assert got["messageInfo"]["reasonForMessage"] == "Notification"  # so Alma shows it
    loaned = messages.supplier_message(SUP, REQ, "A-2", "Loaned")
    inner(loaned)["returnInfo"] = {"name": "US-SUP Library", "physicalAddress": {
        "line1": "1 Main St", "locality": "Springfield", "region": "IL",
        "postalCode": "62701", "country": "US"}}
    note = inner(profiles.outbound("alma", loaned).body)["messageInfo"]["note"]
    assert note == ("#RETURN_TO#\nUS-SUP Library\n1 Main St\nSpringfield, IL, 62701\nUS\n"
                    "#RT_END#\n")
    request = messages.request(REQ, request_id="A-3", service_level="Overnight",
                               requestingAgencyInfo={"name": "US-REQ Library"},
                               requestedDeliveryInfo=[{"address": {"physicalAddress": {
                                   "line1": "2 Elm St", "line2": "ILL office",
                                   "locality": "Urbana", "postalCode": "61801"}}}])
    sent = inner(profiles.outbound("alma", request).body)
    assert sent["serviceInfo"]["note"] == (
        "Cost: 50.00 CNY\n#SHIP_TO#\nUS-REQ Library\n2 Elm St\nILL office\n"
        "Urbana, 61801\n#ST_END#\n")
    assert sent["serviceInfo"]["serviceLevel"] == "Standard"  # Alma knows only the list's
    assert sent["bibliographicInfo"]["bibliographicItemId"][0][
        "bibliographicItemIdentifierCode"] == "ISSN"
    to_xml(profiles.outbound("alma", request).body)  # still a valid 1.2 document


def test_an_unfilled_notification_to_alma_says_so_in_its_note() -> None:
    raw = filled(sample("modrs_unfilledNotification.xml"), supplierSymbol_holder="US-SUP",
                 requesterSymbol_holder="US-REQ", timestamp_holder=NOW,
                 requestId_holder="A-4")
    body = read_xml(raw.replace(b"<status>Unfilled</status>",
                                f"<status>Unfilled</status><lastChange>{NOW}</lastChange>"
                                .encode())).body
    inner(body)["messageInfo"]["reasonUnfilled"] = "NotHeld"
    got = inner(profiles.outbound("alma", body).body)
    assert got["messageInfo"]["note"] == \
        "can't find it after all, Status: Unfilled, Reason: NotHeld"


# --------------------------------------------------------------------------
# Notes conventions (failure 7)
# --------------------------------------------------------------------------


def status_change_sample(status: str, note: str) -> dict[str, Any]:
    """ReShare's StatusChange template, as mod-rs's own tests fill it."""
    raw = filled(sample("modrs_supplyingAgencyMessage_statusChange.xml"),
                 status_holder=status, note_holder=note,
                 **{"<lastChange />": f"<lastChange>{NOW}</lastChange>"})
    return read_xml(raw).body


def test_reshare_order_markers_are_stripped_and_kept_aside() -> None:
    body = status_change_sample("WillSupply", "on its way#seq:12#")
    adjusted = profiles.inbound("reshare", body)
    assert inner(adjusted.body)["messageInfo"]["note"] == "on its way"
    assert adjusted.note_seq == 12
    only = profiles.inbound("reshare", status_change_sample("WillSupply", "#seq:3#"))
    assert "note" not in inner(only.body)["messageInfo"] and only.note_seq == 3
    # Not ReShare's convention for a strict peer: relayed as sent.
    assert inner(profiles.inbound("strict", body).body)["messageInfo"]["note"] == \
        "on its way#seq:12#"


def test_reshare_gets_its_notes_numbered() -> None:
    action = messages.requester_action(REQ, SUP, "R-1", "Notification", note="hello")
    adjusted = profiles.outbound("reshare", action, seq=4)
    assert inner(adjusted.body)["note"] == "hello#seq:4#" and adjusted.seq_used
    bare = messages.supplier_message(SUP, REQ, "R-1", "Loaned")
    assert inner(profiles.outbound("reshare", bare, seq=5).body)["messageInfo"]["note"] == \
        "#seq:5#"
    # mod-rs reads the number back with its own pattern.
    assert re.fullmatch(r"(.*)#seq:(\d+)#", "hello#seq:4#", re.S).group(2) == "4"
    assert not profiles.outbound("reshare", action).seq_used  # no number: nothing to add


def test_reshare_specials_in_words_and_back() -> None:
    awaiting = status_change_sample("WillSupply", f"{notes.RESHARE_AWAITING}#seq:1#")
    assert inner(profiles.inbound("reshare", awaiting).body)["messageInfo"]["note"] == \
        notes.AWAITING_TEXT
    added = status_change_sample("WillSupply", f"{notes.RESHARE_ADD_CONDITION} staff note")
    assert inner(profiles.inbound("reshare", added).body)["messageInfo"]["note"] == \
        "staff note"
    agree = messages.requester_action(REQ, SUP, "R-2", "Notification",
                                      note=f"{notes.RESHARE_AGREE} fine by us#seq:2#")
    accepted = profiles.inbound("reshare", agree).body
    assert inner(accepted)["note"] == "ACCEPT fine by us"
    # To a ReShare supplier the acceptance goes as ReShare's special again.
    assert inner(profiles.outbound("reshare", accepted).body)["note"] == \
        f"{notes.RESHARE_AGREE} fine by us"


@pytest.mark.parametrize(("note", "action", "wanted"), [
    ("accept", "Notification", "ACCEPT"), ("Accept.", "Notification", "ACCEPT"),
    (" REJECT! ", "Cancel", "REJECT"), ("reject#seq:4#", "Cancel", "REJECT"),
    ("I accept the cost", "Notification", "I accept the cost")])
def test_accept_and_reject_answers(note: str, action: str, wanted: str) -> None:
    body = messages.requester_action(REQ, SUP, "C-1", "Notification", note=note)
    for profile in ("alma", "illiad", "crosslink"):
        got = inner(profiles.inbound(profile, body).body)
        assert (got["action"], got["note"]) == (action, wanted), profile
    assert inner(profiles.inbound("strict", body).body)["action"] == "Notification"


def test_a_duplicate_note_means_reason_unfilled_duplicate() -> None:
    raw = filled(sample("modrs_statusChangeUnfilledTemplate.xml"),
                 _SUPPLY_AGENCY_ID_="US-SUP", _REQUEST_AGENCY_ID_="US-REQ",
                 _TIMESTAMP_=NOW, _REQUEST_ID_="D-1")
    body = read_xml(raw).body
    inner(body)["messageInfo"]["note"] = "DUPLICATE of request 123"
    got = inner(profiles.inbound("alma", body).body)
    assert got["messageInfo"]["reasonUnfilled"] == "Duplicate"
    assert "reasonUnfilled" not in inner(profiles.inbound("reshare", body).body)["messageInfo"]


def test_address_blocks_round_trip_through_a_crosslink_peer() -> None:
    address = {"line1": "2 Elm St", "line2": "ILL office", "locality": "Urbana",
               "region": "IL", "postalCode": "61801", "country": "US"}
    request = messages.request(REQ, request_id="X-1",
                               requestingAgencyInfo={"name": "US-REQ Library"},
                               requestedDeliveryInfo=[{"address": {"physicalAddress": address}}])
    to_alma = profiles.outbound("alma", request).body
    # What CrossLink relays back from an Alma member: the block only, in the note.
    relayed = copy.deepcopy(to_alma)
    del inner(relayed)["requestedDeliveryInfo"]
    back = profiles.inbound("crosslink", relayed).body
    assert inner(back)["requestedDeliveryInfo"] == [{"address": {"physicalAddress": address}}]
    assert notes.SHIP_TO in inner(back)["serviceInfo"]["note"]  # kept for the people
    assert inner(back)["billingInfo"]["maximumCosts"] == {"currencyCode": "CNY",
                                                          "monetaryValue": "50.00"}
    parse_message(back)
    loaned = messages.supplier_message(SUP, REQ, "X-1", "Loaned", note=(
        "Condition: LibraryUseOnly, Cost: 4.00 usd\n#RETURN_TO#\nUS-SUP Library\n1 Main St\n"
        "Springfield, IL, 62701\nUS\n#RT_END#\n"))
    inner(loaned)["deliveryInfo"] = {"dateSent": NOW}
    got = inner(profiles.inbound("crosslink", loaned).body)
    assert got["returnInfo"] == {"name": "US-SUP Library", "physicalAddress": {
        "line1": "1 Main St", "locality": "Springfield", "region": "IL",
        "postalCode": "62701", "country": "US"}}
    assert got["deliveryInfo"]["loanCondition"] == "LibraryUseOnly"
    assert got["messageInfo"]["offeredCosts"] == {"currencyCode": "USD", "monetaryValue": "4.00"}


def test_reshare_is_sent_the_cost_as_a_loan_condition() -> None:  # failure 6, ReShare
    body = loaned_sample(**{
        "<deliveryCosts />": "<deliveryCosts><currencyCode>CNY</currencyCode>"
                             "<monetaryValue>9.50</monetaryValue></deliveryCosts>",
        "<dateSent />": f"<dateSent>{NOW}</dateSent>"})
    got = inner(profiles.outbound("reshare", body, seq=1).body)
    assert got["messageInfo"]["offeredCosts"] == {"currencyCode": "CNY", "monetaryValue": "9.50"}
    assert got["deliveryInfo"]["loanCondition"] == "other"
    free = copy.deepcopy(body)
    inner(free)["deliveryInfo"]["deliveryCosts"]["monetaryValue"] = "0.00"
    assert "offeredCosts" not in inner(profiles.outbound("reshare", free).body)["messageInfo"]


def test_the_original_is_stored_without_the_password() -> None:
    raw = sample("modrs_unit_requestingAgencyMessage.xml").encode()
    kept = profiles.redacted(raw)
    assert b"securityCode1" in raw and b"securityCode1" not in kept
    assert b"<securityCode></securityCode>" in kept
    assert kept.replace(b"<securityCode></securityCode>", b"") == \
        raw.replace(b"<securityCode>securityCode1</securityCode>", b"")
