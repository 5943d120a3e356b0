"""Messages from the current supplier (supplyingAgencyMessage): status changes relayed
to the requester, Unfilled moving the rota on, and a delivery's charge and electronic
copy (ARCHITECTURE §3.4 rules 4 to 7)."""

from __future__ import annotations

import logging
import math
from datetime import UTC, datetime
from typing import Any

from broker.dispatch import loans, messages, rota, shipping, sql, store
from broker.dispatch.desk import Desk, iso
from broker.dispatch.shipping import Leg, Shipment, ShippingError
from broker.dispatch.store import Txn
from broker.holdings import identifiers_of
from broker.holdings_trust import record_answer
from broker.intake import Context, Outcome, Refusal
from broker.states import (
    ADVANCE,
    AWAITING_SUPPLIER,
    EntryOutcome,
    Event,
    HubEvent,
    State,
    Step,
    allowed_events,
    iso_status,
    next_state,
)
from delivery.grants import create_grant
from delivery.intake import CopyProblem, accept_copy
from delivery.mail import enqueue_patron_mail
from infra.database import Connection
from infra.flags import FlagKind, raise_flag
from schemas import jsontext
from schemas.iso18626 import SupplyingAgencyMessage
from schemas.iso18626_codes import ErrorType, MessageType, ServiceKind, Status
from schemas.money import Money
from settlement.fee_logistics import Quote
from settlement.fees import fee_to_charge, logistics_to_charge
from settlement.ledger import ChargeRefused, billable_event, post_charge, record_flag

log = logging.getLogger(__name__)

# The statuses (and the states they lead to) that deliver: the first one decides
# whether a CopyOrLoan request is returnable.
_DELIVERY = (Status.COPY_COMPLETED, Status.LOANED)
_DELIVERED = (State.COPY_COMPLETED, State.LOANED)
# Messages that say no status by their nature: their missing or odd status is noted only.
_NOTED = (Event.NOTIFICATION, Event.CANCEL_DECLINED)


async def from_supplier(desk: Desk, conn: Connection, ctx: Context) -> Outcome:
    msg = ctx.message_as(SupplyingAgencyMessage)
    txn = await store.find(conn, msg.header.requesting_agency_id.symbol,
                           msg.header.requesting_agency_request_id,
                           MessageType.SUPPLYING_AGENCY_MESSAGE)
    await _require_current_supplier(conn, txn, ctx.sender)
    if msg.is_notification:
        # A note, never a change of state, whatever status it carries (ISO 18626's
        # reasonForMessage Notification; ReShare sends RequestReceived on every one,
        # Alma and Rapido no status at all).
        return await _kept(desk, conn, ctx, txn, Event.NOTIFICATION, msg.status,
                           "a Notification changes no state")
    status = msg.status
    if status is None and msg.answers_cancel:
        # A declined cancel without statusInfo (mod-rs): the request goes on as it is.
        return await _kept(desk, conn, ctx, txn, Event.CANCEL_DECLINED, None,
                           "the supplier declined the cancel")
    if status is None:  # the model requires one outside a Notification
        raise TypeError("supplyingAgencyMessage without a status passed validation")
    event = Event.of_status(status)
    returnable = txn.returnable
    if returnable is None and status in _DELIVERY:
        returnable = status == Status.LOANED
    target = next_state(returnable, txn.state, event)
    if target is None:
        allowed = [e.iso for e in allowed_events(returnable, txn.state) if e.is_status]
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"supplyingAgencyMessage.statusInfo.status: {str(status)!r} is not "
                      f"allowed while the request is {txn.state} (allowed: "
                      f"{', '.join(allowed) or 'none'})", txn.id)
    if target is Step.STALE:
        # Passed already: re-sent, or overtaken by the supplier's own later message.
        return await _kept(desk, conn, ctx, txn, event, status,
                           f"the request is past {status} already")
    now = desk.clock()
    if target is ADVANCE:
        return await _unfilled(desk, conn, ctx, txn, msg, now)
    if not isinstance(target, State):
        raise TypeError(f"state table: {target!r} is no state")
    # A physical loan's parcel, checked before anything is written.
    lends = status == Status.LOANED and txn.service_kind != ServiceKind.E_BOOK_LOAN
    parcel = _outbound(ctx, txn) if lends else None
    extensions: dict[str, Any] = {}
    if target in _DELIVERED and txn.state in AWAITING_SUPPLIER:
        extensions = await _delivered(desk, conn, ctx, txn, msg, target, now)
    if target == State.CANCELLED and txn.state in AWAITING_SUPPLIER | {State.RETRY_POSSIBLE}:
        await store.close_entry(conn, txn, EntryOutcome.CANCELLED, now)
        await store.score(conn, ctx.sender, open_requests=-1)
    if target != txn.state or returnable != txn.returnable:
        await store.set_state(conn, txn, target, now, returnable=returnable)
    due = msg.status_info.due_date if msg.status_info else None
    if status == Status.LOANED and due is not None:
        await conn.execute(sql.SET_DUE, txn.id, due if due.tzinfo else due.replace(tzinfo=UTC))
    if lends:
        await loans.started(desk, conn, txn, now)
    if parcel is not None:
        await loans.shipped(conn, txn.id, Leg.OUT, parcel, ctx.sender, ctx.message_id, now)
    if target == State.LOAN_COMPLETED:
        await loans.returned(conn, txn.id, now, in_transit=False)
    detail = _brief(ctx.raw)
    if parcel is not None:
        detail["shipping"] = parcel.extension()
    await store.audit(conn, desk.clock(), txn.id, ctx.sender, event, txn.state, target,
                      ctx.message_id, detail)
    relayed = ctx.raw
    # Parcel data outside the standard's elements: relayed in both forms (JSON, XML).
    relay_parcel = parcel is not None and shipping.beyond_iso(ctx.raw["supplyingAgencyMessage"])
    if extensions or relay_parcel:
        # The requester learns the link's limits, never its token (the patron's mail has it).
        relayed = jsontext.copied(ctx.raw)
        inner = relayed["supplyingAgencyMessage"]
        if extensions:
            inner.setdefault("hubExtensions", {}).update(extensions)
        if parcel is not None and relay_parcel:
            shipping.with_shipment(inner, parcel, "messageInfo")
    out = [messages.relay_to_requester(txn, relayed, ctx.message_id),
           messages.event(txn, txn.state, target, event, now)]
    return Outcome(outgoing=out, transaction_id=txn.id)


def _outbound(ctx: Context, txn: Txn) -> Shipment | None:
    """The parcel a Loaned says the supplier sent (broker/dispatch/shipping.py)."""
    try:
        return shipping.from_supplier(ctx.raw["supplyingAgencyMessage"])
    except ShippingError as problem:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE, str(problem), txn.id) from problem


async def _kept(desk: Desk, conn: Connection, ctx: Context, txn: Txn, event: Event,
                status: Status | None, why: str) -> Outcome:
    """A supplier's message that leaves the state as it is (a Notification, a status the
    request has passed already): relayed with the status the requester knows, its note
    with it, and kept as sent in the audit trail; a status other than the state's is
    logged as the inconsistency it is."""
    now = desk.clock()
    shown = iso_status(txn.state)
    detail = _brief(ctx.raw)
    if status != shown:
        said = f"status {str(status)!r}" if status else "no status"
        inconsistency = f"{said} while the request is {txn.state}: {why}; state kept"
        detail["kept"] = inconsistency
        # A Notification's status is commonly off (ReShare, Alma): noted, not warned of.
        level = logging.INFO if event in _NOTED else logging.WARNING
        log.log(level, "%s from %s on %s: %s", ctx.kind, ctx.sender, txn.id, inconsistency)
    await store.audit(conn, now, txn.id, ctx.sender, event, txn.state, txn.state,
                      ctx.message_id, detail)
    out = [messages.relay_to_requester(txn, messages.restated(ctx.raw, shown, now),
                                       ctx.message_id),
           messages.event(txn, txn.state, txn.state, event, now)]
    return Outcome(outgoing=out, transaction_id=txn.id)


async def _require_current_supplier(conn: Connection, txn: Txn, sender: str) -> None:
    if txn.supplier == sender:
        return
    if not await conn.fetchval(sql.IS_ROTA_PARTY, txn.id, sender):
        # Not party to it: answered exactly as an unknown request, so a stranger
        # learns neither that the request exists nor its transaction id.
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"supplyingAgencyMessage.header.requestingAgencyRequestId: no request "
                      f"{txn.request_id!r} from {txn.requester} is known to the hub")
    raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                  "supplyingAgencyMessage.header.supplyingAgencyId: "
                  f"{sender!r} is not the current supplier of request "
                  f"{txn.request_id!r} (transaction {txn.id})", txn.id)


async def _unfilled(desk: Desk, conn: Connection, ctx: Context, txn: Txn,
                    msg: SupplyingAgencyMessage, now: datetime) -> Outcome:
    """The supplier gave up: close its entry and move the rota on."""
    reason = msg.message_info.reason_unfilled or msg.message_info.note or "no reason given"
    await store.close_entry(conn, txn, EntryOutcome.UNFILLED, now)
    await store.score(conn, ctx.sender, unfilled=1, open_requests=-1)
    # What it says of the holding: NotHeld for a listed item puts that holding in doubt.
    await record_answer(conn, supplier=ctx.sender, transaction_id=txn.id,
                        ids=identifiers_of(txn.request_body()), at=now,
                        unfilled=msg.message_info.reason_unfilled or "")
    await store.audit(conn, desk.clock(), txn.id, ctx.sender, Event.STATUS_UNFILLED, txn.state,
                      txn.state, ctx.message_id, {"reasonUnfilled": reason})
    out = await rota.advance(desk, conn, txn, now, f"{ctx.sender} could not supply ({reason})")
    return Outcome(outgoing=out, transaction_id=txn.id)


async def _delivered(desk: Desk, conn: Connection, ctx: Context, txn: Txn,
                     msg: SupplyingAgencyMessage, target: State,
                     now: datetime) -> dict[str, Any]:
    """The first delivery: charge it, take an electronic copy, close the rota entry and
    credit the supplier. Returns what the requester learns of the copy's link."""
    await _charge(desk, conn, txn, msg, now)
    ebook = target == State.LOANED and txn.service_kind == ServiceKind.E_BOOK_LOAN
    extensions: dict[str, Any] = {}
    if (target == State.COPY_COMPLETED or ebook) and _delivered_by_ftp(msg):
        extensions = await _deliver_copy(desk, conn, txn, msg, now, ebook=ebook)
    forwarded_at = await store.close_entry(conn, txn, EntryOutcome.SUPPLIED, now)
    seconds = (now - forwarded_at).total_seconds() if forwarded_at else 0.0
    await store.score(conn, ctx.sender, filled=1, open_requests=-1, turnaround=seconds)
    # Supplied: its holding was true (and any doubt about it is lifted).
    await record_answer(conn, supplier=ctx.sender, transaction_id=txn.id,
                        ids=identifiers_of(txn.request_body()), at=now, unfilled=None)
    return extensions


async def _deliver_copy(desk: Desk, conn: Connection, txn: Txn,
                        msg: SupplyingAgencyMessage, now: datetime,
                        ebook: bool = False) -> dict[str, Any]:
    """Take the uploaded file from the supplier's FTP home, grant a link, mail the reader.

    Limits come from the policy's `[[delivery]]` entries (per supplier and service
    kind), else the delivery settings. An e-book loan is time-limited access: as many
    downloads as the reader likes until the loan's due date.
    """
    supplier = txn.current_supplier
    item_id = msg.delivery_info.item_id if msg.delivery_info else None
    if not item_id:
        raise Refusal(ErrorType.BADLY_FORMED_MESSAGE,
                      "supplyingAgencyMessage.deliveryInfo.itemId: required when sentVia "
                      "(2021: deliveryMethod) is FTP (the path of the uploaded file in your "
                      "FTP home)", txn.id)
    try:
        document = await accept_copy(conn, desk.settings, supplier=supplier,
                                     item_id=item_id, transaction_id=txn.id)
    except CopyProblem as problem:
        async def flag(c: Connection, why: str = str(problem)) -> None:
            await raise_flag(
                c, FlagKind.COPY_WITHOUT_VALID_FILE, supplier,
                f"CopyCompleted for {txn.id} without a valid file: {why}",
                key=f"{txn.id}:{item_id}", transaction_id=txn.id,
                facts={"item_id": item_id, "problem": why}, now=now)
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"supplyingAgencyMessage.{problem.field}: {problem.message}",
                      txn.id, after=flag) from problem
    request = txn.request_body()["request"]
    email, name = _patron_contact(request)
    policy, _ = await desk.policies.current(conn)
    downloads, days = policy.delivery_limits(supplier, txn.service_kind) or (
        desk.settings.delivery.grant_downloads(), desk.settings.delivery.days)
    due = msg.status_info.due_date if msg.status_info else None
    if ebook:
        downloads = None
        if due is not None:
            due = due if due.tzinfo else due.replace(tzinfo=UTC)
            days = max(1, math.ceil((due - now).total_seconds() / 86400))
    grant = await create_grant(conn, document_id=document.id, transaction_id=txn.id,
                               patron_email=email, patron_name=name,
                               downloads=downloads, days=days, now=now)
    names: dict[str, str] = {r["symbol"]: r["name"] for r in await conn.fetch(
        sql.AGENCY_NAMES, [supplier, txn.requester])}
    if email:
        await enqueue_patron_mail(
            conn, grant=grant, document=document,
            title=(request.get("bibliographicInfo") or {}).get("title") or document.filename,
            supplier_name=names.get(supplier, supplier),
            requester_name=names.get(txn.requester, txn.requester),
            base_url=desk.base_url, settings=desk.settings)
    await store.audit(conn, desk.clock(), txn.id, "hub", HubEvent.DOCUMENT_DELIVERED, None,
                      None, None,
                      {"document": document.id, "sha256": document.sha256,
                       "bytes": document.size, "grant": grant.id, "mailed": bool(email),
                       "expires": iso(grant.expires_at)})
    return {"downloadExpires": iso(grant.expires_at),
            "downloadLimit": grant.max_downloads, "patronMailed": bool(email),
            "documentSha256": document.sha256}


async def _charge(desk: Desk, conn: Connection, txn: Txn, msg: SupplyingAgencyMessage,
                  now: datetime) -> None:
    """Post the billable event's charge (settlement/ledger.py says which events bill):
    what the supplier charges (`SupplyingAgencyMessage.charged_costs`), else the quote."""
    event = billable_event(msg.status or "")
    if event is None:
        return
    frozen = _frozen_quote(txn)
    if frozen is not None and event != Status.LOANED and frozen.logistics.minor:
        # A CopyOrLoan quoted as a loan but supplied as a copy: nothing is shipped, so
        # the quote it is held to is the service part alone.
        frozen = Quote(service=frozen.service, outbound=Money.zero(frozen.service.currency),
                       return_leg=Money.zero(frozen.service.currency))
    quote = frozen.total if frozen is not None else None
    costs = msg.charged_costs
    if costs is None and msg.message_info.offered_costs is not None:
        log.info("%s on %s carries offeredCosts only: an offer, not billed (the quote is)",
                 event, txn.id)
    try:
        sent = Money.from_costs(costs) if costs is not None else None
    except ValueError as exc:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"supplyingAgencyMessage.deliveryInfo.deliveryCosts: {exc}",
                      txn.id) from exc
    fee = fee_to_charge(sent, quote)
    if fee is None:
        return  # no fee schedule and no costs sent: the supply is free
    max_cost = Money(txn.max_cost_minor, txn.currency or "") \
        if txn.max_cost_minor is not None else None
    title = (txn.request_body()["request"].get("bibliographicInfo") or {}).get("title")
    supplier = txn.current_supplier
    try:
        await post_charge(conn, transaction_id=txn.id, event=event, requester=txn.requester,
                          supplier=supplier, service_kind=txn.service_kind, fee=fee,
                          quote=quote, on=now, title=title, max_cost=max_cost,
                          tz=desk.settings.timezone,
                          logistics=logistics_to_charge(fee, frozen))
    except ChargeRefused as refused:
        # The intake rolls the handler back, the flag with it: keep it (once) afterwards.
        async def keep_flag(c: Connection, exc: ChargeRefused = refused) -> None:
            await record_flag(c, exc, now=now)
        raise Refusal(ErrorType(refused.error_type), refused.error_value, txn.id,
                      after=keep_flag) from refused


def _frozen_quote(txn: Txn) -> Quote | None:
    """The quote frozen at routing, with its shipping part (issue 19), so that the charge
    records how much of the fee is logistics. Only the shipping total is frozen, not its
    legs: it stands as the outbound here, which is all the charge needs. A quote frozen
    before the column existed has no shipping part."""
    if txn.quote_minor is None:
        return None
    currency = txn.quote_currency or ""
    shipping = txn.quote_logistics_minor or 0
    return Quote(service=Money(txn.quote_minor - shipping, currency),
                 outbound=Money(shipping, currency), return_leg=Money.zero(currency))


def _delivered_by_ftp(msg: SupplyingAgencyMessage) -> bool:
    """sentVia, or 2021's deliveryMethod, is FTP: the copy is in the supplier's FTP home."""
    info = msg.delivery_info
    return info is not None and (info.method or "").upper() == "FTP"


def _patron_contact(request: dict[str, Any]) -> tuple[str | None, str | None]:
    """The reader's e-mail address and name from patronInfo (ISO 18626 addresses)."""
    patron = request.get("patronInfo") or {}
    name = f"{patron.get('surname') or ''}{patron.get('givenName') or ''}".strip() or None
    for address in patron.get("address") or []:
        electronic = (address or {}).get("electronicAddress") or {}
        if str(electronic.get("electronicAddressType", "")).lower() in ("email", "e-mail"):
            return electronic.get("electronicAddressData"), name
    return None, name


def _brief(raw: dict[str, Any]) -> dict[str, Any]:
    """What the audit keeps of a supplier message: its info, not the whole body."""
    inner = next(iter(raw.values()))
    return {k: inner[k] for k in ("messageInfo", "statusInfo", "deliveryInfo") if k in inner}
