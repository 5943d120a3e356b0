"""A mixed network on one hub: an AMQP requester, an Alma-profile supplier (ISO 18626 1.2
over HTTP), a ReShare-profile requester (1.2 over HTTP) and a 2021 supplier (strict).

Four transactions cross it; each side sees only its own dialect, and dispatch, the
audit log and the ledger see one model:

1. AMQP -> Alma: a loan; Alma bills in offeredCosts, the AMQP member is billed.
2. ReShare -> 2021: ReShare's own request; numbered notes both ways; the 2021 supplier's
   delivery cost reaches ReShare as a loan condition's.
3. ReShare -> Alma, then 2021: Alma answers DUPLICATE, the rota moves on.
4. ReShare -> Alma with conditions: Alma's staff note asks ACCEPT/REJECT, ReShare agrees
   with its special, Alma reads ACCEPT.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from broker.holdings import title_key
from broker.profiles import notes
from schemas.settings import Settings
from tests.support import messages
from tests.support.peer_network import Peers, Side, charged, originals_from, outbox_to, trail
from tests.support.samples import sample
from tests.support.servers import eventually

ISSN_ALMA, ISSN_2021, ISSN_BOTH = "1050-124X", "2049-3630", "0317-8471"
TITLE, AUTHOR = "Lord of the Rings", "J.R.R. Tolkien"  # ReShare's sample request
CHARGE = {"currencyCode": "CNY", "monetaryValue": "15.00"}


@dataclass
class Network:
    amqp: Side      # requester, AMQP
    alma: Side      # supplier, HTTP 1.2, profile alma
    reshare: Side   # requester, HTTP 1.2, profile reshare
    new: Side       # supplier, HTTP 2021, profile strict


@pytest.fixture
async def net(settings: Settings, hub, make_agency, pool) -> AsyncIterator[Network]:
    peers = Peers(settings, hub, make_agency, pool)
    made = Network(amqp=await peers.library("AMQP", "requester"),
                   alma=await peers.library("ALMA", "supplier", profile="alma"),
                   reshare=await peers.library("RS", "requester", profile="reshare"),
                   new=await peers.library("N2021", "supplier", profile="strict",
                                           version="2021"))
    await peers.holds(made.alma, ISSN_ALMA)
    await peers.holds(made.new, ISSN_2021)
    await pool.executemany("INSERT INTO holding (id_type, id_value, symbol) VALUES ($1, $2, $3)",
                           [("issn", ISSN_BOTH, made.alma.symbol),
                            ("issn", ISSN_BOTH, made.new.symbol),
                            ("title_key", title_key(TITLE, AUTHOR), made.new.symbol)])
    yield made
    await peers.close()


def reshare_request(reshare: Side, rid: str) -> bytes:
    """ReShare's patron request (mod-rs), filled in as mod-rs fills it."""
    scheme, value = reshare.symbol.split(":")
    text = sample("modrs_patronRequest.xml")
    for old, new in {'scheme="">ISIL<': f'scheme="">{scheme}<', "agencyIdValue_holder": value,
                     "requestId_holder": rid, "patronId_holder": "P-RS",
                     "<note></note>": "<note>for a seminar#seq:0#</note>",
                     "<serviceType>Loan</serviceType>":
                         "<serviceType>Loan</serviceType><serviceLevel>rush</serviceLevel>"
                     }.items():
        text = text.replace(old, new)
    return text.encode()


async def test_a_mixed_network(net: Network, pool) -> None:
    await amqp_borrows_from_alma(net, pool)
    await reshare_borrows_from_2021(net, pool)
    await alma_says_duplicate_and_the_rota_moves_to_2021(net, pool)
    await reshare_agrees_to_almas_conditions(net, pool)
    # Everything for the HTTP peers went out and was confirmed; only the ExpectToSupply
    # Alma has no status for was left out, and Alma was never a requester here.
    for side in (net.alma, net.reshare, net.new):
        async def settled(side: Side = side) -> bool:
            return all(r["published_at"] for r in await outbox_to(pool, side))

        await eventually(settled)
        assert {r["peer_status"] for r in await outbox_to(pool, side)} == {"OK"}, side.symbol


async def amqp_borrows_from_alma(net: Network, pool) -> None:
    amqp, alma = net.amqp, net.alma
    rid = "MIX-1"
    body = messages.request(amqp.symbol, request_id=rid, issn=ISSN_ALMA, service_type="Loan",
                            service_level="rush", title="水浒传", patron_id="P-MIX-1")
    body["request"]["billingInfo"]["maximumCosts"]["currencyCode"] = "cny"  # failure 8
    await amqp.send(body)
    await amqp.status("ExpectToSupply")
    forwarded = await alma.gets("request")
    assert forwarded["serviceInfo"]["serviceLevel"] == "Rush"
    assert forwarded["serviceInfo"]["note"] == "Cost: 50.00 CNY"  # what Alma can show
    await alma.send(alma.says(amqp, rid, "WillSupply", "RequestResponse", answerYesNo="Y"))
    await amqp.status("WillSupply")
    # failure 6: Alma's charge is in offeredCosts; the AMQP member is billed for it.
    await alma.send(alma.says(amqp, rid, "Loaned", offeredCosts=CHARGE))
    loaned = await amqp.status("Loaned")
    assert loaned["deliveryInfo"]["deliveryCosts"] == CHARGE
    for action in ("Received", "ShippedReturn"):
        await amqp.send(amqp.does(alma, rid, action))
        assert (await alma.gets("requestingAgencyMessage"))["action"] == action
    await alma.send(alma.says(amqp, rid, "LoanCompleted"))
    await amqp.status("LoanCompleted")
    assert (await trail(pool, amqp, rid))[0] == "LoanCompleted"
    assert await charged(pool, amqp, rid) == [("Loaned", 1500)]
    # The AMQP contract got the vocabulary too; what the member sent is kept as sent.
    kept = await originals_from(pool, amqp)
    assert [(k["transport"], k["request_id"]) for k in kept] == [("amqp", rid)]
    assert json.loads(kept[0]["original"])["request"]["serviceInfo"]["serviceLevel"] == "rush"
    assert [a["adjustment"] for a in kept[0]["adjustments"]] == [
        "vocabulary.service_level", "vocabulary.currency"]


async def reshare_borrows_from_2021(net: Network, pool) -> None:
    reshare, new = net.reshare, net.new
    rid = "MIX-2"
    await reshare.post(reshare_request(reshare, rid))
    expect = await reshare.status("ExpectToSupply")
    assert expect["messageInfo"]["note"].endswith("#seq:1#")
    got = await new.peer.next("request")
    assert got.message.version == "2021"
    forwarded = got.content
    assert forwarded["serviceInfo"]["serviceLevel"] == "Rush"
    assert forwarded["serviceInfo"]["note"] == "for a seminar"  # no ReShare marker
    assert forwarded["header"]["requestingAgencyId"] == reshare.agency_id
    await new.send(new.says(reshare, rid, "Loaned", delivery={"deliveryCosts": CHARGE}))
    loaned = await reshare.status("Loaned")
    assert loaned["messageInfo"]["offeredCosts"] == CHARGE  # ReShare reads it there ...
    assert loaned["deliveryInfo"]["loanCondition"] == "other"  # ... as a condition's
    assert loaned["messageInfo"]["note"] == "#seq:2#"
    await reshare.send(reshare.does(new, rid, "Received", note="thanks#seq:1#"))
    assert (await new.gets("requestingAgencyMessage"))["note"] == "thanks"
    await reshare.send(reshare.does(new, rid, "ShippedReturn", note="#seq:2#"))
    returned = await new.gets("requestingAgencyMessage")
    assert returned["action"] == "ShippedReturn" and "note" not in returned
    await new.send(new.says(reshare, rid, "LoanCompleted"))
    assert (await reshare.status("LoanCompleted"))["messageInfo"]["note"] == "#seq:3#"
    assert await charged(pool, reshare, rid) == [("Loaned", 1500)]


async def alma_says_duplicate_and_the_rota_moves_to_2021(net: Network, pool) -> None:
    reshare, alma, new = net.reshare, net.alma, net.new
    rid = "MIX-3"
    await reshare.send(messages.request(reshare.symbol, request_id=rid, issn=ISSN_BOTH,
                                        supplier=alma.symbol, patron_id="P-MIX-3",
                                        title="资治通鉴"))
    assert (await reshare.status("ExpectToSupply"))["messageInfo"]["note"] == "#seq:1#"
    await alma.gets("request")
    await alma.send(alma.says(reshare, rid, "Unfilled", "RequestResponse",
                              note="DUPLICATE request, already supplied"))
    moved = await reshare.status("ExpectToSupply")  # a Notification: forwarded to 2021
    assert moved["messageInfo"]["reasonForMessage"] == "Notification"
    assert new.symbol in moved["messageInfo"]["note"]
    await new.gets("request")
    await new.send(new.says(reshare, rid, "CopyCompleted",
                            delivery={"sentVia": "Mail", "deliveryCosts": {
                                "currencyCode": "CNY", "monetaryValue": "9.50"}}))
    await reshare.status("CopyCompleted")
    state, events = await trail(pool, reshare, rid)
    assert state == "CopyCompleted"
    assert events[:4] == ["request", "forward", "status:Unfilled", "forward"]
    detail = await pool.fetchval(
        """SELECT a.detail::text FROM audit_log a JOIN ill_transaction t
           ON t.id = a.transaction_id WHERE t.requester = $1 AND t.request_id = $2
           AND a.event = 'status:Unfilled'""", reshare.symbol, rid)
    assert json.loads(detail)["reasonUnfilled"] == "Duplicate"  # failure 7
    assert await charged(pool, reshare, rid) == [("CopyCompleted", 950)]


async def reshare_agrees_to_almas_conditions(net: Network, pool) -> None:
    reshare, alma = net.reshare, net.alma
    rid = "MIX-4"
    await reshare.send(messages.request(reshare.symbol, request_id=rid, issn=ISSN_ALMA,
                                        service_type="Loan", patron_id="P-MIX-4",
                                        title="三国演义"))
    await reshare.status("ExpectToSupply")
    await alma.gets("request")
    # Alma's lender attaches a condition and a cost, in the note as its staff write it.
    await alma.send(alma.says(reshare, rid, "WillSupply", "Notification",
                              note="Conditions pending approval, please respond ACCEPT "
                                   "or REJECT",
                              offeredCosts={"currencyCode": "CNY", "monetaryValue": "15.00"},
                              delivery={"loanCondition": "libraryuseonly"}))
    # A Notification: relayed with its note and conditions, the state unmoved (dispatch).
    conditions = await reshare.gets("supplyingAgencyMessage")
    assert conditions["messageInfo"]["reasonForMessage"] == "Notification"
    assert conditions["deliveryInfo"]["loanCondition"] == "LibraryUseOnly"
    assert conditions["messageInfo"]["offeredCosts"] == CHARGE
    # ReShare agrees the way it does (mod-rs NoteSpecials); Alma's staff read ACCEPT.
    await reshare.send(reshare.does(alma, rid, "Notification",
                                    note=f"{notes.RESHARE_AGREE} ok#seq:3#"))
    agreed = await alma.gets("requestingAgencyMessage")
    assert (agreed["action"], agreed["note"]) == ("Notification", "ACCEPT ok")
    await alma.send(alma.says(reshare, rid, "Loaned", offeredCosts=CHARGE))
    assert (await reshare.status("Loaned"))["deliveryInfo"]["deliveryCosts"] == CHARGE
    assert await charged(pool, reshare, rid) == [("Loaned", 1500)]
