"""Book loans kept (issue 19 items 1 and 4): parcels both ways as data, due dates kept by
the hub's sweep (reminder, Overdue, recall), and borrower trust that lenders can require."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from broker.borrower_trust import History, borrower_history, trust
from broker.dispatch import shipping
from broker.dispatch.explain import explain
from broker.dispatch.loans import Stage, notice_mail_text
from broker.dispatch.policies import load_policy
from broker.dispatch.shipping import Shipment, ShippingError
from broker.policy import Policy, PolicyError, RequestFacts, SupplierFacts
from schemas.iso18626_xml import read_xml, to_xml
from schemas.settings import Loans
from tests.support.cli import run
from tests.support.hub import Party
from tests.support.messages import requester_action, supplier_message
from tests.support.network import start, state_of

EMS = "中国邮政 EMS"
TERMS = Loans()


# ---- Shipment: pure ------------------------------------------------------------------

def _loaned(**extra: Any) -> dict[str, Any]:
    inner = supplier_message("CALIS:A", "CALIS:B", "R-1", "Loaned")["supplyingAgencyMessage"]
    inner.update(extra)
    return inner


def test_a_loaned_gives_its_parcel_from_iso_fields_and_the_extension() -> None:
    got = shipping.from_supplier(_loaned(
        deliveryInfo={"dateSent": "2026-12-01T09:30:00+08:00", "sentVia": "Mail",
                      "itemId": "BC-0001"},
        shippingInfo={"courierName": EMS, "trackingId": ["EA123456789CN"]},
        hubExtensions={"shipping": {"parcels": 2}}))
    assert got == Shipment(carrier=EMS, tracking_number="EA123456789CN",
                           shipped_on=date(2026, 12, 1), parcels=2, sent_via="Mail",
                           item_id="BC-0001")
    assert shipping.from_supplier(_loaned()) is None
    # Only parcel data outside the standard's elements makes the hub rewrite the relay.
    assert not shipping.beyond_iso(_loaned(shippingInfo={"courierName": EMS}))
    assert shipping.beyond_iso(_loaned(hubExtensions={"shipping": {"parcels": 2}}))
    assert shipping.beyond_iso(_loaned(messageInfo={
        "reasonForMessage": "StatusChange", "note": "[ILL Hub] shipping: parcels=2"}))


def test_the_extension_wins_over_iso_fields_and_the_note_line_is_read() -> None:
    got = shipping.from_supplier(_loaned(
        shippingInfo={"courierName": "EMS"},
        hubExtensions={"shipping": {"carrier": EMS}}))
    assert got is not None and got.carrier == EMS
    line = Shipment(carrier="顺丰速运", tracking_number="SF1234567890",
                    shipped_on=date(2026, 12, 20), parcels=1).line()
    assert line == ("[ILL Hub] shipping: carrier=顺丰速运; tracking=SF1234567890; "
                    "shipped=2026-12-20; parcels=1")
    back = shipping.from_requester({"action": "ShippedReturn", "note": f"寄回\n{line}"})
    assert back == Shipment(carrier="顺丰速运", tracking_number="SF1234567890",
                            shipped_on=date(2026, 12, 20), parcels=1)
    assert shipping.from_requester({"action": "ShippedReturn", "note": "寄回"}) is None


@pytest.mark.parametrize(("inner", "element"), [
    ({"hubExtensions": {"shipping": {"parcels": "two"}}},
     "requestingAgencyMessage.hubExtensions.shipping.parcels"),
    ({"hubExtensions": {"shipping": {"parcels": 0}}},
     "requestingAgencyMessage.hubExtensions.shipping.parcels"),
    ({"hubExtensions": {"shipping": {"shippedOn": "12/20/2026"}}},
     "requestingAgencyMessage.hubExtensions.shipping.shippedOn"),
    ({"hubExtensions": {"shipping": {"trackingNo": "X"}}},
     "requestingAgencyMessage.hubExtensions.shipping.trackingNo"),
    ({"hubExtensions": {"shipping": {"trackingNumber": "单号 1"}}},
     "requestingAgencyMessage.hubExtensions.shipping.trackingNumber"),
    ({"note": "[ILL Hub] shipping: courier=EMS"}, "requestingAgencyMessage.note"),
])
def test_bad_shipping_data_is_refused_naming_the_element(inner: dict[str, Any],
                                                         element: str) -> None:
    with pytest.raises(ShippingError) as caught:
        shipping.from_requester(inner)
    assert caught.value.element.startswith(element)
    assert str(caught.value).startswith(element)


def test_the_relayed_message_carries_the_parcel_for_json_and_xml_partners() -> None:
    parcel = Shipment(carrier=EMS, tracking_number="EA123456789CN",
                      shipped_on=date(2026, 12, 1), parcels=1)
    inner = _loaned(messageInfo={"reasonForMessage": "StatusChange", "note": "已寄出\n"
                                 "[ILL Hub] shipping: carrier=old"},
                    deliveryInfo={"dateSent": "2026-12-01T09:30:00Z", "sentVia": "Mail"},
                    shippingInfo={"courierName": EMS, "trackingId": ["EA123456789CN"]})
    shipping.with_shipment(inner, parcel, "messageInfo")
    assert inner["hubExtensions"]["shipping"] == {
        "carrier": EMS, "trackingNumber": "EA123456789CN", "shippedOn": "2026-12-01",
        "parcels": 1}
    assert inner["messageInfo"]["note"] == f"已寄出\n{parcel.line()}"  # the old line replaced
    body = {"supplyingAgencyMessage": inner}
    for version in ("1.2", "2021"):
        out = to_xml(body, version)
        assert "supplyingAgencyMessage.hubExtensions" in out.dropped
        back = read_xml(out.data).content
        # XML has no hubExtensions: the note's line brings the whole parcel across.
        assert shipping.from_supplier(back) == Shipment(
            carrier=EMS, tracking_number="EA123456789CN", shipped_on=date(2026, 12, 1),
            parcels=1, sent_via="Mail")


def test_the_notices_mail_is_in_chinese_and_english() -> None:
    subject, text = notice_mail_text(Stage.REMINDER, "上海图书馆", "红楼梦", "LN-1",
                                     "CALIS:NJU", {"due": "2026-12-12", "ship_by": "2026-12-11"})
    assert subject == "馆际借书即将到期 Loan due soon: 红楼梦"
    assert "应于 2026-12-12 前寄回到馆，请于 2026-12-11 前寄出" in text
    assert "please send it back by 2026-12-11" in text
    subject, text = notice_mail_text(Stage.RECALL, "上海图书馆", "红楼梦", "LN-1",
                                     "CALIS:NJU", {"due": "2026-12-12", "ship_by": "2026-12-11"})
    assert "召回" in subject and "cannot be renewed" in text


# ---- trust: pure ---------------------------------------------------------------------

def test_the_trust_formula() -> None:
    assert trust(History(0, (), 0), TERMS) == 1.0
    assert trust(History(6, (), 0), TERMS) == 1.0
    # one loan 15 days late of 1 (+4 imaginary good ones): 1 - 0.5/5
    assert trust(History(1, (15,), 0), TERMS) == 0.9
    # a late day costs less than a lost book, and a late book never more than one loan
    assert trust(History(1, (300,), 0), TERMS) == 0.8
    assert trust(History(1, (), 1), TERMS) == 0.6
    assert trust(History(2, (30, 30), 3), TERMS) == 0.0
    assert trust(History(1, (1,), 0), Loans(trust_prior_loans=0, trust_late_days_full=2)) == 0.5


def _facts(trust_score: float | None) -> RequestFacts:
    return RequestFacts(requester="CALIS:SHU", province="上海", city="上海",
                        service_type="Loan", service_kind="BookLoan",
                        id_types=frozenset({"issn"}), max_cost_minor=None,
                        named_supplier=None, today=date(2026, 12, 1),
                        borrower_trust=trust_score)


def _supplier(symbol: str, province: str, city: str) -> SupplierFacts:
    return SupplierFacts(symbol=symbol, province=province, city=city,
                         holds=frozenset({"issn"}), quote_minor=None, fill_rate=None,
                         turnaround_hours=None, open_requests=0, forwarded_today=0)


def test_min_borrower_trust_keeps_the_named_lenders_from_a_borrower_below_it() -> None:
    policy = Policy.from_toml("""
[[rule]]
name = "big libraries lend to trusted borrowers"
when = { service_type = ["Loan"] }
min_borrower_trust = { score = 0.7, suppliers = ["CALIS:PKU"] }
[[rule]]
name = "copies for all"
when = { service_type = ["Copy"] }
min_borrower_trust = 0.9
""")
    suppliers = [_supplier("CALIS:PKU", "北京", "北京"), _supplier("CALIS:FDU", "上海", "上海")]
    rota = policy.rota(_facts(0.55), suppliers)
    assert rota.symbols == ("CALIS:FDU",)
    assert rota.excluded_reason("CALIS:PKU") == (
        "borrower trust 0.55 below 0.70 required by rule "
        "'big libraries lend to trusted borrowers'")
    assert policy.rota(_facts(0.7), suppliers).symbols == ("CALIS:FDU", "CALIS:PKU")
    assert policy.rota(_facts(None), suppliers).symbols == ("CALIS:FDU", "CALIS:PKU")
    again = Policy.from_dict(policy.to_dict())
    assert again.rota(_facts(0.55), suppliers).symbols == ("CALIS:FDU",)


@pytest.mark.parametrize(("value", "message"), [
    ("1.5", "min_borrower_trust: must be a trust score between 0 and 1"),
    ("{ suppliers = [\"CALIS:PKU\"] }", "min_borrower_trust.score: is required"),
    ("{ score = 0.5, lenders = [] }", "lenders"),
    ("true", "min_borrower_trust: must be a trust score"),
])
def test_a_bad_min_borrower_trust_is_refused(value: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message.replace("[", r"\[")):
        Policy.from_toml(f'[[rule]]\nname = "r"\nmin_borrower_trust = {value}\n')


# ---- the loan's life, end to end -------------------------------------------------------

def _stamp(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


async def _confirmed_past_sweep(party: Party) -> None:
    """The next confirmation, past what the hub's own sweep may send the requester in
    between (a due date in the past makes the loan Overdue, then Recalled, whenever the
    sweep ticks: it may tick between a message and its confirmation)."""
    while True:
        got = await party.client.receive()
        if got.kind and got.kind.endswith("Confirmation"):
            assert got.content["confirmationHeader"]["messageStatus"] == "OK", got.body
            return
        assert got.kind == "supplyingAgencyMessage", got.body
        assert got.content["statusInfo"]["status"] in ("Overdue", "Recalled", "Loaned"), got.body


async def _action(party: Party, action: str) -> dict[str, Any]:
    """The next requestingAgencyMessage with this action, past the hub's Notifications."""
    while True:
        got = (await party.next("requestingAgencyMessage")).content
        if got["action"] == action:
            return got
        assert got["action"] == "Notification", got


async def test_a_loan_with_parcels_both_ways_reminder_overdue_recall_and_return(
        network, hub, pool) -> None:
    req, sh = network["req"], network["sh"]
    await pool.execute("UPDATE agency SET email = 'ill@lib.example.cn' WHERE symbol = $1",
                       req.symbol)
    await start(network, "LN-1", service_type="Loan", title="红楼梦")
    await sh.next("request")
    due = (datetime.now(UTC) + timedelta(days=10)).replace(microsecond=0)

    loaned = supplier_message(sh.symbol, req.symbol, "LN-1", "Loaned")
    inner = loaned["supplyingAgencyMessage"]
    inner["statusInfo"]["dueDate"] = _stamp(due)
    sent_at = datetime.now(UTC)
    sent_on = sent_at.date().isoformat()
    inner["deliveryInfo"] = {"dateSent": _stamp(sent_at), "sentVia": "Mail",
                             "itemId": "BC-0001"}
    inner["shippingInfo"] = {"courierName": EMS, "trackingId": ["EA123456789CN"]}
    inner["hubExtensions"] = {"shipping": {"parcels": 1}}
    await sh.send("supplyingAgencyMessage", loaned)
    await sh.confirmed()
    told = (await req.status("Loaned")).content
    assert told["hubExtensions"]["shipping"]["carrier"] == EMS
    assert told["hubExtensions"]["shipping"]["trackingNumber"] == "EA123456789CN"
    assert told["hubExtensions"]["shipping"]["parcels"] == 1
    assert "[ILL Hub] shipping: carrier=中国邮政 EMS; tracking=EA123456789CN" in \
        told["messageInfo"]["note"]

    await req.send("requestingAgencyMessage",
                   requester_action(req.symbol, sh.symbol, "LN-1", "Received"))
    await req.confirmed()
    await _action(sh, "Received")
    txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE request_id = 'LN-1' "
                              "AND requester = $1", req.symbol)

    # Same city: 1 day in transit, reminded 3 days before it must go back.
    remind_at = due - timedelta(days=1 + TERMS.reminder_days_before_due)
    await hub.dispatcher.sweep_deadlines(hub.pool, now=remind_at - timedelta(minutes=1))
    assert await pool.fetchval("SELECT count(*) FROM loan_notice WHERE transaction_id = $1",
                               txn) == 0
    for _ in range(2):  # once only
        await hub.dispatcher.sweep_deadlines(hub.pool, now=remind_at + timedelta(minutes=1))
    reminder = (await req.status("Loaned", "Notification")).content
    assert "reminder" in reminder["messageInfo"]["note"]
    assert reminder["header"]["supplyingAgencyId"]["agencyIdValue"] == \
        hub.settings.hub_symbol.partition(":")[2]
    assert await state_of(pool, req.symbol, "LN-1") == "Received"
    mails = await pool.fetch("SELECT recipients FROM mail_outbox WHERE transaction_id = $1 "
                             "AND kind = 'loan_notice'", txn)
    assert [m["recipients"] for m in mails] == [["ill@lib.example.cn"]]

    await hub.dispatcher.sweep_deadlines(hub.pool, now=due + timedelta(hours=1))
    overdue = (await req.status("Overdue", "StatusChange")).content
    assert "overdue" in overdue["messageInfo"]["note"]
    assert "overdue" in (await _action(sh, "Notification"))["note"]
    assert await state_of(pool, req.symbol, "LN-1") == "Overdue"

    recall_at = due + timedelta(days=TERMS.recall_after_days_overdue, hours=1)
    await hub.dispatcher.sweep_deadlines(hub.pool, now=recall_at)
    await hub.dispatcher.sweep_deadlines(hub.pool, now=recall_at)
    await req.status("Recalled", "StatusChange")
    assert "recalled" in (await _action(sh, "Notification"))["note"]
    assert await state_of(pool, req.symbol, "LN-1") == "Recalled"
    stages = await pool.fetch("SELECT stage FROM loan_notice WHERE transaction_id = $1 "
                              "ORDER BY at", txn)
    assert [s["stage"] for s in stages] == ["reminder", "overdue", "recall"]

    back = requester_action(req.symbol, sh.symbol, "LN-1", "ShippedReturn", note="已寄回")
    back["requestingAgencyMessage"]["hubExtensions"] = {"shipping": {
        "carrier": "顺丰速运", "trackingNumber": "SF1234567890",
        "shippedOn": date.today().isoformat(), "parcels": 1}}
    await req.send("requestingAgencyMessage", back)
    await req.confirmed()
    relayed = await _action(sh, "ShippedReturn")
    assert relayed["hubExtensions"]["shipping"]["carrier"] == "顺丰速运"
    assert relayed["note"].startswith("已寄回\n[ILL Hub] shipping: carrier=顺丰速运")
    await sh.send("supplyingAgencyMessage",
                  supplier_message(sh.symbol, req.symbol, "LN-1", "LoanCompleted"))
    await sh.confirmed()
    await req.status("LoanCompleted")
    assert await state_of(pool, req.symbol, "LN-1") == "LoanCompleted"

    async with pool.acquire() as conn:
        text = "\n".join(await explain(conn, txn, TERMS, date.today()))
    assert "shipping:" in text
    assert (f"out  by {sh.symbol}: 中国邮政 EMS, tracking EA123456789CN, sent "
            f"{sent_on}, 1 parcel, via Mail, item BC-0001") in text
    assert f"back by {req.symbol}: 顺丰速运, tracking SF1234567890" in text
    assert "distance city, 1 day(s) in transit" in text
    assert "0 day(s) late" in text
    assert "reminder" in text and "recall" in text
    assert "borrower trust 1.00" in text


async def test_a_late_return_lowers_trust_and_a_rule_keeps_a_lender_away(
        network, pool, settings) -> None:
    req, sh, js = network["req"], network["sh"], network["js"]
    await start(network, "LT-1", service_type="Loan", title="三国演义", patron_id="P-LT-1")
    await sh.next("request")
    due = datetime.now(UTC) - timedelta(days=10)
    loaned = supplier_message(sh.symbol, req.symbol, "LT-1", "Loaned")
    loaned["supplyingAgencyMessage"]["statusInfo"]["dueDate"] = _stamp(due)
    await sh.send("supplyingAgencyMessage", loaned)
    await sh.confirmed()
    await req.status("Loaned")
    await req.send("requestingAgencyMessage",
                   requester_action(req.symbol, sh.symbol, "LT-1", "ShippedReturn"))
    await _confirmed_past_sweep(req)
    await _action(sh, "ShippedReturn")
    late = await pool.fetchval("SELECT l.days_late FROM loan l JOIN ill_transaction t ON "
                               "t.id = l.transaction_id WHERE t.request_id = 'LT-1' AND "
                               "t.requester = $1", req.symbol)
    assert late >= 11  # 10 days past due, plus a day in transit
    async with pool.acquire() as conn:
        history = await borrower_history(conn, req.symbol, date.today())
    assert history.loans == 1 and history.late_days == (late,)
    score = trust(history, TERMS)
    assert score < 1.0
    code, out, _ = await run(settings, "agency", "trust", req.symbol)
    assert code == 0 and f"{req.symbol}" in out and f"borrower trust {score:.2f}" in out
    assert "1 loan(s) in 730 days, 1 late" in out
    code, _, err = await run(settings, "agency", "trust", "CALIS:NOBODY")
    assert code == 2 and "error: no agency CALIS:NOBODY" in err

    await load_policy(pool, f"""
version = "test-borrower-trust"
[[rule]]
name = "Shanghai lends to trusted borrowers"
when = {{ service_type = ["Loan"], requester = ["{req.symbol}"] }}
min_borrower_trust = {{ score = 0.99, suppliers = ["{sh.symbol}"] }}
""", "trust.toml")
    try:
        await start(network, "LT-2", service_type="Loan", title="三国演义", patron_id="P-LT-2")
        await js.next("request")  # Shanghai would have been first (same city)
        txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE request_id = 'LT-2' "
                                  "AND requester = $1", req.symbol)
        async with pool.acquire() as conn:
            text = "\n".join(await explain(conn, txn))
        assert (f"{sh.symbol}: borrower trust {score:.2f} below 0.99 required by rule "
                "'Shanghai lends to trusted borrowers'") in text
    finally:
        await load_policy(pool, 'version = "no rules"', "reset.toml")


def test_recall_after_days_is_a_policy_rule() -> None:
    p = Policy.from_toml('[[rule]]\nname = "珍本 rare books"\n'
                         'when = { service_kind = ["BookLoan"] }\nrecall_after_days = 3\n')
    loan = RequestFacts(requester="CALIS:A", province=None, city=None, service_type="Loan",
                        service_kind="BookLoan", id_types=frozenset(), max_cost_minor=None,
                        named_supplier=None, today=date(2026, 9, 16))
    assert p.recall_after_days(loan) == (3, "珍本 rare books")
    copy = RequestFacts(**{**loan.__dict__, "service_kind": "DocumentDelivery"})
    assert p.recall_after_days(copy) is None
    with pytest.raises(PolicyError, match="recall_after_days"):
        Policy.from_toml('[[rule]]\nname = "x"\nrecall_after_days = -1\n')


async def test_a_policy_rule_recalls_sooner_than_the_setting(network, hub, pool) -> None:
    req, sh = network["req"], network["sh"]
    await load_policy(pool, f'''
version = "test-recall"
[[rule]]
name = "short loans"
when = {{ requester = ["{req.symbol}"] }}
recall_after_days = 3
''', "recall.toml")
    try:
        await start(network, "RC-1", service_type="Loan", title="水浒传")
        await sh.next("request")
        due = (datetime.now(UTC) + timedelta(days=5)).replace(microsecond=0)
        loaned = supplier_message(sh.symbol, req.symbol, "RC-1", "Loaned")
        loaned["supplyingAgencyMessage"]["statusInfo"]["dueDate"] = _stamp(due)
        await sh.send("supplyingAgencyMessage", loaned)
        await sh.confirmed()
        await req.status("Loaned")
        txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE request_id = 'RC-1' "
                                  "AND requester = $1", req.symbol)
        assert tuple(await pool.fetchrow(
            "SELECT recall_after_days, recall_rule FROM loan WHERE transaction_id = $1",
            txn)) == (3, "short loans")
        await hub.dispatcher.sweep_deadlines(hub.pool, now=due + timedelta(hours=1))
        await req.status("Overdue", "StatusChange")
        # The setting would wait 14 days; the rule recalls after 3.
        await hub.dispatcher.sweep_deadlines(hub.pool, now=due + timedelta(days=2, hours=23))
        assert await state_of(pool, req.symbol, "RC-1") == "Overdue"
        await hub.dispatcher.sweep_deadlines(hub.pool, now=due + timedelta(days=3, hours=1))
        await req.status("Recalled", "StatusChange")
        assert await state_of(pool, req.symbol, "RC-1") == "Recalled"
    finally:
        await load_policy(pool, 'version = "no rules"', "reset.toml")
