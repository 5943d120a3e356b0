"""A book loan's life after the supplier said Loaned (issue 19 items 1 and 4): its
parcels both ways, its transit time, and due dates that are kept.

When a loan starts the hub notes how far the book travels (broker/policy.py `distance`:
same city, same province, national) and the transit days settings `loans` give that
distance. The book must be back at the supplier by its due date (ISO 18626
`statusInfo.dueDate` on the supplier's Loaned), so the requester must send it back
`transit_days` before: the *ship-by* date. The hub's sweep (called by the deadline
sweep, under its lock, rows taken with SKIP LOCKED, each stage claimed once per due date
in `loan_notice`) then keeps the due date for the consortium:

- reminder, `reminder_days_before_due` days before the ship-by date: a Notification
  from the hub to the requester (its status stays Loaned) and a mail to its `email`;
- overdue, once the due date has passed and the book was not sent back: the state
  becomes Overdue. ISO 18626 has the *supplier* report Overdue; the hub acts for the
  consortium so that no lender has to chase a borrower: the requester gets a status
  Overdue message from the hub (header supplyingAgencyId: the hub), the supplier a
  Notification saying the hub did so, and the requester a mail. A supplier's own Overdue
  later is the state already (kept, relayed);
- recall, `recall_after_days_overdue` days after the due date: the state becomes
  Recalled (no more renewals), the requester gets a status Recalled from the hub, the
  supplier a Notification, the requester a mail.

A renewal (the supplier's Loaned with a new due date) starts the stages again. The
requester's ShippedReturn ends them (the state leaves Loaned/Received/Overdue) and says
when the book went back: how many days late it could arrive is kept in `loan` for the
borrower's trust score (broker/borrower_trust.py). E-book loans have no parcel and are
not swept here (their access ends with the link, delivery/grants.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

from broker.borrower_trust import History, borrower_history, describe, trust
from broker.dispatch import messages, sql, store
from broker.dispatch.desk import Desk, iso
from broker.dispatch.shipping import Leg, Shipment
from broker.dispatch.store import Txn
from broker.policy import TIER_CITY, TIER_PROVINCE, RequestFacts, distance
from broker.states import HubEvent, State
from infra.database import Connection
from infra.mailqueue import enqueue_mail
from infra.outbox import Outgoing, enqueue
from schemas.iso18626_codes import Action, ReasonForMessage, Status
from schemas.settings import Loans

MAIL_KIND = "loan_notice"


class Stage(StrEnum):
    """What the sweep does about a due date (the CHECK on loan_notice.stage lists them)."""

    REMINDER = "reminder"
    OVERDUE = "overdue"
    RECALL = "recall"


def transit(terms: Loans, tier: int) -> tuple[str, int]:
    """The distance's name and its transit days."""
    if tier == TIER_CITY:
        return "city", terms.transit_days_city
    if tier == TIER_PROVINCE:
        return "province", terms.transit_days_province
    return "national", terms.transit_days_national


async def started(desk: Desk, conn: Connection, txn: Txn, now: datetime) -> None:
    """The supplier's first Loaned: note the distance and its transit days."""
    places = {r["symbol"]: r for r in await conn.fetch(
        sql.LOAN_PLACES, [txn.requester, txn.current_supplier])}
    r, s = places.get(txn.requester), places.get(txn.current_supplier)
    tier, _ = distance(r["province"] if r else None, r["city"] if r else None,
                       s["province"] if s else None, s["city"] if s else None)
    name, days = transit(desk.settings.loans, tier)
    facts = RequestFacts(requester=txn.requester, province=r["province"] if r else None,
                         city=r["city"] if r else None, service_type=txn.service_type,
                         service_kind=txn.service_kind, id_types=frozenset(),
                         max_cost_minor=txn.max_cost_minor, named_supplier=None,
                         today=desk.today(now))
    recall = desk.policies.policy.recall_after_days(facts)
    await conn.execute(sql.LOAN_START, txn.id, name, days, now,
                       recall[0] if recall else None, recall[1] if recall else None)


async def shipped(conn: Connection, txn_id: str, leg: Leg, shipment: Shipment, sender: str,
                  message_id: str | None, now: datetime) -> None:
    await conn.execute(sql.LOAN_SHIPMENT, txn_id, leg, shipment.carrier, shipment.tracking_number,
                       shipment.shipped_on, shipment.parcels, shipment.sent_via,
                       shipment.item_id, sender, message_id, now)


async def returned(conn: Connection, txn_id: str, now: datetime, *, in_transit: bool) -> None:
    await conn.execute(sql.LOAN_RETURNED, txn_id, now, in_transit)


# ---- the sweep ---------------------------------------------------------------------

@dataclass(frozen=True)
class _Due:
    txn: Txn
    due_at: datetime
    transit_days: int
    stage: Stage


async def sweep_loans(desk: Desk, conn: Connection, now: datetime, batch: int = 500) -> int:
    """Take every loan stage that is due (in the caller's transaction); returns how many.
    The caller holds the sweep's lock and enqueues nothing: this enqueues its own."""
    terms = desk.settings.loans
    rows = await conn.fetch(sql.LOANS_DUE, now, terms.reminder_days_before_due,
                            terms.recall_after_days_overdue, batch)
    out: list[Outgoing] = []
    for r in rows:
        due = _Due(Txn.from_row(r), r["due_at"], r["transit_days"], Stage(r["stage"]))
        out += await _take(desk, conn, due, now)
    if out:
        await enqueue(conn, out)
    return len(rows)


async def _take(desk: Desk, conn: Connection, due: _Due, now: datetime) -> list[Outgoing]:
    txn = due.txn
    ship_by = due.due_at - timedelta(days=due.transit_days)
    dates = {"due": desk.today(due.due_at).isoformat(),
             "ship_by": desk.today(ship_by).isoformat()}
    if await conn.fetchval(sql.LOAN_NOTICE_CLAIM, txn.id, due.stage, due.due_at, now) is None:
        return []  # another hub took it: nothing sent, nothing mailed
    mail_id = await _mail(desk, conn, txn, due.stage, dates)
    if mail_id is not None:
        await conn.execute(sql.LOAN_NOTICE_MAIL, txn.id, due.stage, due.due_at, mail_id)
    detail: dict[str, Any] = {"due": iso(due.due_at), "shipBy": dates["ship_by"],
                              "transitDays": due.transit_days, "mailed": mail_id is not None}
    if due.stage == Stage.REMINDER:
        note = (f"reminder: due back at {txn.supplier} on {dates['due']}; please send it "
                f"back by {dates['ship_by']} ({due.transit_days} day(s) in transit)")
        await store.audit(conn, now, txn.id, "hub", HubEvent.LOAN_REMINDER, txn.state,
                          txn.state, None, detail)
        return [messages.to_requester(desk, txn, ReasonForMessage.NOTIFICATION,
                                      str(Status.LOANED), now, supplier=None, note=note)]
    if due.stage == Stage.OVERDUE:
        target, event, status = State.OVERDUE, HubEvent.LOAN_OVERDUE, Status.OVERDUE
        told = (f"overdue: was due back at {txn.supplier} on {dates['due']}; the hub "
                "marked the loan Overdue for the consortium")
        supplier_note = (f"the hub told {txn.requester} that the loan is overdue (due "
                         f"{dates['due']}); no need to send Overdue yourself")
    else:
        target, event, status = State.RECALLED, HubEvent.LOAN_RECALLED, Status.RECALLED
        told = (f"recalled: overdue since {dates['due']}; the hub recalled the loan for the "
                "consortium: please send it back now (no renewal)")
        supplier_note = (f"the hub recalled the loan from {txn.requester} (overdue since "
                         f"{dates['due']})")
    await store.set_state(conn, txn, target, now)
    await store.audit(conn, now, txn.id, "hub", event, txn.state, target, None, detail)
    return [messages.to_requester(desk, txn, ReasonForMessage.STATUS_CHANGE, str(status), now,
                                  supplier=None, note=told),
            messages.to_supplier_action(desk, txn, Action.NOTIFICATION, now, supplier_note),
            messages.event(txn, txn.state, target, event, now)]


async def _mail(desk: Desk, conn: Connection, txn: Txn, stage: Stage,
                dates: dict[str, str]) -> int | None:
    contact = await conn.fetchrow(sql.LOAN_CONTACT, txn.requester)
    if contact is None or not contact["email"]:
        return None
    title = (txn.request_body()["request"].get("bibliographicInfo") or {}).get("title") or "—"
    subject, text = notice_mail_text(stage, contact["name"], title, txn.request_id,
                                     txn.supplier or "", dates)
    return await enqueue_mail(conn, contact["email"], subject, text, kind=MAIL_KIND,
                              transaction_id=txn.id)


def notice_mail_text(stage: Stage, name: str, title: str, request_id: str, supplier: str,
                     dates: dict[str, str]) -> tuple[str, str]:
    """The requester's mail for a stage, in Chinese and English like the hub's other mail."""
    due, ship_by = dates["due"], dates["ship_by"]
    head = {
        Stage.REMINDER: (f"馆际借书即将到期 Loan due soon: {title}",
                         f"贵馆借自 {supplier} 的《{title}》（请求 {request_id}）应于 {due} 前"
                         f"寄回到馆，请于 {ship_by} 前寄出。",
                         f"The book 《{title}》 (request {request_id}) borrowed from "
                         f"{supplier} is due back on {due}: please send it back by "
                         f"{ship_by}."),
        Stage.OVERDUE: (f"馆际借书已逾期 Loan overdue: {title}",
                        f"贵馆借自 {supplier} 的《{title}》（请求 {request_id}）已于 {due} "
                        "到期，尚未寄回。请尽快寄回。",
                        f"The book 《{title}》 (request {request_id}) borrowed from "
                        f"{supplier} was due back on {due} and has not been sent back. "
                        "Please send it back now."),
        Stage.RECALL: (f"馆际借书召回 Loan recalled: {title}",
                       f"贵馆借自 {supplier} 的《{title}》（请求 {request_id}）自 {due} 起"
                       "逾期，中心已代表联盟召回，不能续借。请立即寄回。",
                       f"The book 《{title}》 (request {request_id}) borrowed from "
                       f"{supplier} is overdue since {due}; the hub has recalled it for "
                       "the consortium and it cannot be renewed. Please send it back now."),
    }[stage]
    subject, zh, en = head
    text = "\n".join([f"{name}：", "", zh, "", en, "", "ILL Hub 馆际互借中心"]) + "\n"
    return subject, text


# ---- explain -----------------------------------------------------------------------

async def explain_lines(conn: Connection, txn_id: str, terms: Loans | None = None,
                        today: date | None = None) -> list[str]:
    """The `shipping` and `loan` sections of `run.py explain` (none for no loan); with
    the settings' terms and the consortium-local day, the borrower's trust too."""
    loan = await conn.fetchrow(sql.EXPLAIN_LOAN, txn_id)
    legs = await conn.fetch(sql.EXPLAIN_SHIPMENTS, txn_id)
    lines: list[str] = []
    if legs:
        lines.append("shipping:")
        for leg in legs:
            shipment = Shipment(carrier=leg["carrier"], tracking_number=leg["tracking_number"],
                                shipped_on=leg["shipped_on"], parcels=leg["parcels"],
                                sent_via=leg["sent_via"], item_id=leg["item_id"])
            way = "out " if leg["leg"] == Leg.OUT else "back"
            lines.append(f"  {way} by {leg['sender']}: {shipment.describe()} "
                         f"(recorded {iso(leg['recorded_at'])})")
    if loan is None:
        return lines
    lines.append("loan:")
    due = iso(loan["due_at"]) if loan["due_at"] else "no due date"
    lines.append(f"  distance {loan['distance']}, {loan['transit_days']} day(s) in transit; "
                 f"due {due}; loaned {iso(loan['loaned_at'])}")
    if loan["returned_at"] is not None:
        lines.append(f"  sent back {iso(loan['returned_at'])}, {loan['days_late']} day(s) late")
    for n in await conn.fetch(sql.EXPLAIN_NOTICES, txn_id):
        lines.append(f"  {n['stage']} {iso(n['at'])} (due {iso(n['due_at'])})"
                     + (f", mail {n['mail_id']}" if n["mail_id"] else ""))
    if terms is not None and today is not None:
        history: History = await borrower_history(conn, loan["requester"], today)
        lines.append(f"  {loan['requester']}: {describe(history, trust(history, terms))}")
    return lines
