"""Peer profiles over HTTP: a loan's whole life with a library of each profile, as
requester and as supplier, against the real hub; the conditions dialogue (ACCEPT and
REJECT) between an Alma requester and a ReShare supplier; `run.py agency ... --profile`.

The other side of each lifecycle is an AMQP member, so what the profile peer sends is
seen in the hub's own form, and what it gets is checked as its XML peer received it.
Messages other implementers wrote are used where published (ReShare's, from
tests/data/iso18626/); the conventions written into notes are described in
tests/data/iso18626/FAILURES.md.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from broker import profiles
from broker.holdings import title_key
from broker.profiles import notes
from schemas.settings import Settings
from tests.support import messages
from tests.support.cli import run
from tests.support.names import agency_symbol
from tests.support.peer_network import (
    Peers,
    Side,
    charged,
    originals_from,
    outbox_to,
    trail,
)
from tests.support.samples import sample
from tests.support.servers import eventually

ISSN = "0317-8471"
CHARGE = {"currencyCode": "CNY", "monetaryValue": "15.00"}
RESHARE_TITLE, RESHARE_AUTHOR = "Lord of the Rings", "J.R.R. Tolkien"
LOAN_EVENTS = ["request", "forward", "status:WillSupply", "status:Loaned", "action:Received",
               "action:ShippedReturn", "status:LoanCompleted"]


@pytest.fixture
async def peers(settings: Settings, hub, make_agency, pool) -> AsyncIterator[Peers]:
    made = Peers(settings, hub, make_agency, pool)
    yield made
    await made.close()


def reshare_request(requester: Side, rid: str) -> bytes:
    """ReShare's patron request (mod-rs), its placeholders filled for `requester`, with
    what mod-rs adds at run time: a numbered note and a lowercase service level."""
    scheme, value = requester.symbol.split(":")
    text = sample("modrs_patronRequest.xml")
    for old, new in {'scheme="">ISIL<': f'scheme="">{scheme}<', "agencyIdValue_holder": value,
                     "requestId_holder": rid, "patronId_holder": "P-77",
                     "<note></note>": "<note>for a seminar#seq:0#</note>",
                     "<serviceType>Loan</serviceType>":
                         "<serviceType>Loan</serviceType><serviceLevel>rush</serviceLevel>"
                     }.items():
        assert old in text, old
        text = text.replace(old, new)
    return text.encode()


async def request_from(requester: Side, rid: str) -> None:
    """A loan request as the requester's system writes it (lowercase open values)."""
    if requester.profile == "reshare":
        await requester.post(reshare_request(requester, rid))
        return
    body = messages.request(requester.symbol, request_id=rid, issn=ISSN, service_type="Loan",
                            service_level="rush", title="红楼梦", patron_id=f"P-{rid}")
    body["request"]["billingInfo"]["maximumCosts"]["currencyCode"] = "cny"
    await requester.send(body)


async def supplier_holds(peers: Peers, supplier: Side) -> None:
    await peers.holds(supplier, ISSN)
    await peers.pool.execute("INSERT INTO holding (id_type, id_value, symbol) "
                             "VALUES ('title_key', $1, $2)",
                             title_key(RESHARE_TITLE, RESHARE_AUTHOR), supplier.symbol)


async def all_sent(pool, side: Side) -> list[Any]:
    async def settled() -> bool:
        return all(r["published_at"] is not None for r in await outbox_to(pool, side))

    await eventually(settled)
    return await outbox_to(pool, side)


def seq_of(note: str | None) -> int | None:
    found = re.search(r"#seq:(\d+)#$", note or "")
    return int(found.group(1)) if found else None


@pytest.mark.parametrize("profile", profiles.PROFILE_NAMES)
async def test_a_loan_with_a_requester_of_each_profile(peers: Peers, pool, profile: str) -> None:
    req = await peers.library("REQ", "requester", profile=profile)
    sup = await peers.library("SUP", "supplier")
    await supplier_holds(peers, sup)
    rid = f"{profile}-LOAN"
    await request_from(req, rid)
    if profile != "alma":  # failure 5: Alma has no ExpectToSupply; it sees the next status
        first = await req.status("ExpectToSupply")
    forwarded = await sup.gets("request")
    assert forwarded["serviceInfo"]["serviceLevel"] == "Rush"  # failure 8
    if profile == "reshare":
        assert forwarded["serviceInfo"]["note"] == "for a seminar"  # failure 7: no #seq:0#
        assert seq_of(first["messageInfo"].get("note")) == 1
    else:
        assert forwarded["billingInfo"]["maximumCosts"]["currencyCode"] == "CNY"
    await sup.send(sup.says(req, rid, "WillSupply", "RequestResponse", answerYesNo="Y"))
    await req.status("WillSupply")
    await sup.send(sup.says(req, rid, "Loaned", delivery={"deliveryCosts": CHARGE}))
    loaned = await req.status("Loaned")
    assert loaned["deliveryInfo"]["deliveryCosts"] == CHARGE
    if profile == "reshare":  # failure 6: ReShare reads a cost as a loan condition's
        assert loaned["messageInfo"]["offeredCosts"] == CHARGE
        assert loaned["deliveryInfo"]["loanCondition"] == "other"
        assert seq_of(loaned["messageInfo"]["note"]) == 3
    else:
        assert "offeredCosts" not in loaned["messageInfo"]
    if profile == "alma":
        assert loaned["messageInfo"]["reasonForMessage"] == "StatusChange"
    note = "got it#seq:1#" if profile == "reshare" else "got it"
    await req.send(req.does(sup, rid, "Received", note=note))
    received = await sup.gets("requestingAgencyMessage")
    assert (received["action"], received["note"]) == ("Received", "got it")
    await req.send(req.does(sup, rid, "ShippedReturn"))
    assert (await sup.gets("requestingAgencyMessage"))["action"] == "ShippedReturn"
    await sup.send(sup.says(req, rid, "LoanCompleted"))
    await req.status("LoanCompleted")

    assert await trail(pool, req, rid) == ("LoanCompleted", LOAN_EVENTS)
    assert await charged(pool, req, rid) == [("Loaned", 1500)]
    rows = await all_sent(pool, req)
    statuses = [r["peer_status"] for r in rows]
    if profile == "alma":
        assert statuses[0] == "SKIPPED" and "no status ExpectToSupply" in rows[0]["peer_answer"]
        statuses = statuses[1:]
    assert statuses and set(statuses) == {"OK"}, [dict(r) for r in rows]
    # What the library sent is kept as it sent it, beside what the hub went on with.
    kept = await originals_from(pool, req)
    assert [(k["transport"], k["profile"]) for k in kept] == \
        [("iso18626-http", profile)] * 3
    if profile == "reshare":
        assert b"#seq:0#" in kept[0]["original"]
        assert [k["note_seq"] for k in kept] == [0, 1, None]
        # It was sent ExpectToSupply, WillSupply, Loaned, LoanCompleted: numbered 1 to 4.
        assert await pool.fetchval(
            "SELECT last_seq FROM peer_note_sequence WHERE agency = $1", req.symbol) == 4


@pytest.mark.parametrize("profile", profiles.PROFILE_NAMES)
async def test_a_loan_with_a_supplier_of_each_profile(peers: Peers, pool, profile: str) -> None:
    req = await peers.library("REQ", "requester")
    sup = await peers.library("SUP", "supplier", profile=profile)
    await supplier_holds(peers, sup)
    rid = f"{profile}-SUPPLY"
    body = messages.request(req.symbol, request_id=rid, issn=ISSN, service_type="Loan",
                            service_level="Overnight", title="西游记", patron_id=f"P-{rid}",
                            requestingAgencyInfo={"name": "上海 REQ 图书馆"},
                            requestedDeliveryInfo=[{"address": {"physicalAddress": {
                                "line1": "淮海中路1555号", "locality": "上海",
                                "postalCode": "200031", "country": "CN"}}}])
    await req.send(body)
    await req.status("ExpectToSupply")
    forwarded = await sup.gets("request")
    level = forwarded["serviceInfo"]["serviceLevel"]
    note = forwarded["serviceInfo"].get("note") or ""
    if profile in ("alma", "illiad"):
        assert level == "Standard"  # they know only the listed levels (CrossLink's shims)
    else:
        assert level == "Overnight"  # failure 8: kept, not defaulted
    if profile == "alma":
        assert note.startswith("Cost: 50.00 CNY\n#SHIP_TO#\n上海 REQ 图书馆\n淮海中路1555号\n")
    if profile == "reshare":
        assert seq_of(note) == 1
    will_note = "will lend#seq:4#" if profile == "reshare" else "will lend"
    await sup.send(sup.says(req, rid, "WillSupply", "RequestResponse", answerYesNo="Y",
                            note=will_note))
    assert (await req.status("WillSupply"))["messageInfo"]["note"] == "will lend"
    if profile == "alma":  # failure 6: Alma's charge is in offeredCosts
        loaned_msg = sup.says(req, rid, "Loaned", offeredCosts={"currencyCode": "cny",
                                                               "monetaryValue": "15.00"})
    else:
        loaned_msg = sup.says(req, rid, "Loaned", delivery={"deliveryCosts": CHARGE})
    if profile == "crosslink":
        inner = loaned_msg["supplyingAgencyMessage"]["messageInfo"]
        inner["note"] = (f"{notes.RETURN_TO}\n{sup.symbol} 图书馆\n1 Main St\n"
                         f"Springfield, IL, 62701\nUS\n{notes.RETURN_TO_END}\n")
    await sup.send(loaned_msg)
    loaned = await req.status("Loaned")
    assert loaned["deliveryInfo"]["deliveryCosts"] == CHARGE
    if profile == "crosslink":
        assert loaned["returnInfo"] == {"name": f"{sup.symbol} 图书馆", "physicalAddress": {
            "line1": "1 Main St", "locality": "Springfield", "region": "IL",
            "postalCode": "62701", "country": "US"}}
    await req.send(req.does(sup, rid, "Received"))
    received = await sup.gets("requestingAgencyMessage")
    assert received["action"] == "Received"
    if profile == "reshare":
        assert seq_of(received.get("note")) == 2  # the request was its first message
    await req.send(req.does(sup, rid, "ShippedReturn"))
    await sup.gets("requestingAgencyMessage")
    await sup.send(sup.says(req, rid, "LoanCompleted"))
    await req.status("LoanCompleted")

    assert await trail(pool, req, rid) == ("LoanCompleted", LOAN_EVENTS)
    assert await charged(pool, req, rid) == [("Loaned", 1500)]
    assert {r["peer_status"] for r in await all_sent(pool, sup)} == {"OK"}
    kept = await originals_from(pool, sup)
    assert len(kept) == 3 and {k["profile"] for k in kept} == {profile}
    if profile == "alma":
        applied = [a["adjustment"] for a in kept[1]["adjustments"]]
        assert applied == ["vocabulary.currency", "costs.offered_as_delivery"]
        assert b"<currencyCode>cny</currencyCode>" in kept[1]["original"]


async def test_a_duplicate_note_from_alma_is_an_unfilled_duplicate(peers: Peers, pool) -> None:
    req = await peers.library("REQ", "requester")
    sup = await peers.library("SUP", "supplier", profile="alma")
    await supplier_holds(peers, sup)
    rid = "ALMA-DUP"
    await req.send(messages.request(req.symbol, request_id=rid, issn=ISSN,
                                    patron_id="P-DUP"))
    await req.status("ExpectToSupply")
    await sup.gets("request")
    await sup.send(sup.says(req, rid, "Unfilled", "RequestResponse",
                            note="DUPLICATE: you asked us for this yesterday"))
    assert (await req.status("Unfilled"))["messageInfo"]["reasonUnfilled"] == \
        "NoSupplierAvailable"  # the rota is exhausted; the hub says so
    detail = await pool.fetchval(
        """SELECT a.detail FROM audit_log a JOIN ill_transaction t ON t.id = a.transaction_id
           WHERE t.requester = $1 AND t.request_id = $2 AND a.event = 'status:Unfilled'""",
        req.symbol, rid)
    assert '"reasonUnfilled": "Duplicate"' in detail


async def test_conditions_accepted_and_rejected_between_alma_and_reshare(
        peers: Peers, pool) -> None:
    req = await peers.library("ALMA", "requester", profile="alma")
    sup = await peers.library("RS", "supplier", profile="reshare")
    await supplier_holds(peers, sup)
    for rid, answer in (("COND-ACCEPT", "Accept."), ("COND-REJECT", "reject")):
        await request_from(req, rid)
        assert seq_of((await sup.gets("request"))["serviceInfo"].get("note")) == 1
        # ReShare adds a condition with a cost, then waits for the requester's answer.
        condition = sup.says(req, rid, "WillSupply", "Notification",
                             note=f"{notes.RESHARE_ADD_CONDITION} staff only#seq:1#",
                             offeredCosts={"currencyCode": "CNY", "monetaryValue": "7.00"},
                             delivery={"loanCondition": "other"})
        await sup.send(condition)
        got = await req.status("WillSupply")
        assert got["messageInfo"]["note"] == "Condition: other, Cost: 7.00 CNY, staff only"
        await sup.send(sup.says(req, rid, "WillSupply", "Notification",
                                note=f"{notes.RESHARE_AWAITING}#seq:2#"))
        assert (await req.status("WillSupply"))["messageInfo"]["note"] == notes.AWAITING_TEXT
        # Alma's staff answer in a note; the confirmation echoes what Alma sent.
        answered = await req.send(req.does(sup, rid, "Notification", note=answer))
        assert answered["action"] == "Notification"
        relayed = await sup.gets("requestingAgencyMessage")
        if rid == "COND-ACCEPT":
            assert relayed["action"] == "Notification"
            assert relayed["note"] == f"{notes.RESHARE_AGREE}#seq:2#"
            continue
        assert (relayed["action"], relayed["note"]) == ("Cancel", "REJECT#seq:2#")
        await sup.send(sup.says(req, rid, "Cancelled", "CancelResponse", answerYesNo="Y"))
        await req.status("Cancelled")
        assert (await trail(pool, req, rid))[0] == "Cancelled"


async def test_agency_profiles_through_the_cli(settings: Settings, pool) -> None:
    symbol = agency_symbol()
    code, out, err = await run(settings, "agency", "add", symbol, "--name", "ReShare 图书馆",
                               "--roles", "requester", "--password", "correct horse",
                               "--iso18626-url", "https://rs.example.edu/rs/externalApi/iso18626",
                               "--profile", "reshare")
    assert code == 0, err
    assert out.strip().endswith("profile reshare")
    try:
        code, out, _ = await run(settings, "agency", "list")
        line = next(x for x in out.splitlines() if x.startswith(symbol))
        assert re.search(r"\bhttp/1\.2\s+reshare\b", line), line
        code, out, err = await run(settings, "agency", "set", symbol, "--profile", "alma",
                                   "--iso18626-version", "2021")
        assert code == 0, err
        assert out.strip() == (f"agency {symbol}: profile alma, ISO 18626 2021 XML to "
                               "https://rs.example.edu/rs/externalApi/iso18626")
        assert await pool.fetchval("SELECT iso18626_profile FROM agency WHERE symbol = $1",
                                   symbol) == "alma"
        code, _, err = await run(settings, "agency", "set", symbol, "--profile", "vdx")
        assert code == 2 and "invalid choice: 'vdx'" in err
        code, _, err = await run(settings, "agency", "set", symbol)
        assert code == 1 and "nothing to set" in err
        code, _, err = await run(settings, "agency", "set", agency_symbol("NOPE"),
                                 "--profile", "strict")
        assert code == 1 and "no agency" in err
        code, out, _ = await run(settings, "agency", "profiles", "--markdown")
        assert code == 0 and out == profiles.markdown()
        code, out, _ = await run(settings, "agency", "profiles")
        assert "alma: Ex Libris Alma (and Rapido)" in out
        assert re.search(r"outbound status\.no_expect_to_supply\s+a supplyingAgencyMessage", out)
    finally:
        await run(settings, "agency", "disable", symbol)
