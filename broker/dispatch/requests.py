"""A new request: the duplicate checks, the rota the policy builds, and the new
transaction forwarded to its first supplier (ARCHITECTURE §3.4 rules 1 to 3).

`new_request` reads (and locks) but writes nothing before its last Refusal, so intake
can skip the savepoint around it (`Dispatcher.refuses_before_writing`). Keep it that
way when changing it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Any

import asyncpg

from broker import copyright
from broker.borrower_trust import History, trust
from broker.catalogue.config import of_candidates
from broker.dispatch import messages, rota, sql, store
from broker.dispatch.desk import Desk, iso
from broker.dispatch.scorecards import scorecard_terms
from broker.dispatch.store import NewTransaction, Txn
from broker.holdings import identifiers_of
from broker.holdings_trust import accuracy
from broker.intake import Context, Outcome, Refusal
from broker.policy import (
    Availability,
    Policy,
    Quota,
    QuotaPeriod,
    QuotaScope,
    RequestFacts,
    Rota,
    SupplierFacts,
)
from broker.states import EntryOutcome, HubEvent, State
from infra import observability
from infra.database import Connection
from infra.locks import Lock
from infra.outbox import Outgoing
from schemas.iso18626 import Request, RequestConfirmation, confirmation, dump_message
from schemas.iso18626_codes import (
    ErrorType,
    MessageType,
    ReasonForMessage,
    RequestType,
    ServiceKind,
    ServiceType,
)
from schemas.money import Money
from schemas.zones import zone_between
from settlement.fee_logistics import Quote
from settlement.fees import fee_terms, max_cost_problem, pages_of

DEFAULT_KIND = {ServiceType.COPY: ServiceKind.DOCUMENT_DELIVERY,
                ServiceType.LOAN: ServiceKind.BOOK_LOAN,
                ServiceType.COPY_OR_LOAN: ServiceKind.DOCUMENT_DELIVERY}
RETURNABLE = {ServiceType.COPY: False, ServiceType.LOAN: True, ServiceType.COPY_OR_LOAN: None}
# The requests whose supply may be shipped, so their quote prices the legs (issue 19); a
# CopyOrLoan is quoted as the loan it may become, the dearer of its two ways.
SHIPPED = frozenset({ServiceType.LOAN, ServiceType.COPY_OR_LOAN})


def new_transaction_id(now: datetime) -> str:
    return f"ILL-{now:%Y%m%d}-{secrets.token_hex(5).upper()}"


@dataclass(frozen=True)
class Asked:
    """What a request asks for, as the duplicate checks and routing read it."""

    request_id: str
    ids: list[tuple[str, str]]
    item_key: str | None
    patron_key: str | None
    service_type: ServiceType | None
    kind: ServiceKind | None
    level: str | None
    named: str | None  # the supplier the requester asks for by name


@dataclass(frozen=True)
class OverQuota:
    """A quota of the policy that is full for this request (issue 19): which rule, what it
    allows, how many requests it has counted, and when the period ends."""

    rule: str
    quota: Quota
    used: int
    next_period: datetime

    @property
    def note(self) -> str:
        whose = "this reader's" if self.quota.per is QuotaScope.READER else "the library's"
        return (f"quota '{self.rule}' reached: {self.used} of {self.quota.limit} "
                f"{whose} requests this {self.quota.period.value} ({self.quota.describe()})")


@dataclass(frozen=True)
class Routed:
    """The rota for a request, and what it means for the new transaction."""

    rota: Rota
    quoted: dict[str, Quote]  # in its parts: the service, and a loan's shipping legs
    policy_version: int | None
    named: str | None
    too_dear: str | None  # why the named supplier's price is above maximumCosts
    over_quota: OverQuota | None = None   # a policy quota this request would exceed
    copyright: copyright.Check | None = None  # a copy request's declaration and count

    def ranked(self) -> list[dict[str, Any]]:
        """The rota entries to store, each with its quote frozen: the total, and the
        shipping part a charge on it will record (issue 19)."""
        return [self._entry(r.symbol, r.tier, r.score, r.reasons) for r in self.rota.ranked]

    def _entry(self, symbol: str, tier: int, score: float,
               reasons: tuple[str, ...]) -> dict[str, Any]:
        q = self.quoted.get(symbol)
        # A quote that prices shipping says its parts, so that explain shows what the
        # total is made of (the policy's own cost reason gives the total only).
        parts = [f"quote {q.describe()}"] if q is not None and q.zone is not None else []
        return {"supplier": symbol, "tier": tier, "score": score,
                "reasons": [*reasons, *parts],
                "quote_minor": q.total.minor if q is not None else None,
                "quote_currency": q.total.currency if q is not None else None,
                "quote_logistics_minor": q.logistics.minor if q is not None else None}

    def excluded(self) -> list[dict[str, Any]]:
        return [{"supplier": e.symbol, "reason": e.reason} for e in self.rota.excluded]


def _asked(ctx: Context) -> Asked:
    req = ctx.message_as(Request)
    request_id = req.header.requesting_agency_request_id
    if not request_id.strip():
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      "request.header.requestingAgencyRequestId: must not be empty")
    ids = identifiers_of(ctx.raw)
    service_type = req.service_info.service_type if req.service_info else None
    named = req.header.supplying_agency_id
    return Asked(
        request_id=request_id, ids=ids,
        item_key=next((f"{t}:{v}" for t, v in ids if t != "title_key"),
                      next((f"{t}:{v}" for t, v in ids), None)),
        patron_key=_patron_key(ctx.raw["request"]), service_type=service_type,
        kind=(req.hub_extensions.service_kind if req.hub_extensions
              and req.hub_extensions.service_kind else
              DEFAULT_KIND[service_type] if service_type else None),
        level=req.service_info.service_level if req.service_info else None,
        named=named.symbol if named and named.agency_id_value else None)


async def new_request(desk: Desk, conn: Connection, ctx: Context) -> Outcome:
    req = ctx.message_as(Request)
    asked = _asked(ctx)
    now = desk.clock()
    today = desk.today(now)
    journal = copyright.journal_to_count(
        str(asked.service_type) if asked.service_type else None, ctx.raw, asked.ids)
    rows = await _request_facts(desk, conn, ctx.sender, asked, today, journal)
    known = rows[0]
    if known["earlier_id"] is not None:
        # A repeat of a request we already have: the same answer, no second transaction.
        model = json.loads(known["earlier_confirmation"])
        return Outcome(transaction_id=known["earlier_id"], confirmation=(
            MessageType.REQUEST_CONFIRMATION,
            RequestConfirmation.model_validate(model["requestConfirmation"])))
    if asked.service_type is None or asked.kind is None:
        raise Refusal(ErrorType.BADLY_FORMED_MESSAGE,
                      "request.serviceInfo.serviceType: required element missing "
                      "(the hub routes by it)")
    max_cost = _max_cost(req)
    retry_of = await _retry_of(conn, ctx.sender, req)
    duplicate_of = await _duplicate_of(desk, conn, ctx.sender, asked, known, retry_of)
    routed = await _route(desk, conn, ctx, asked, rows, max_cost,
                          retry_of.supplier if retry_of is not None else asked.named, today,
                          journal)
    answer = confirmation(MessageType.REQUEST, req.header, ok=True)
    # The usual case, a new request forwarded at once to the first supplier, is written
    # by one statement; the others go step by step.
    straight = (retry_of is None and not routed.too_dear and routed.over_quota is None
                and not (routed.copyright and routed.copyright.held)
                and bool(routed.rota.ranked))
    detail: dict[str, Any] = {"rota": list(routed.rota.symbols),
                              "rules": list(routed.rota.rules_applied),
                              "policyVersion": routed.policy_version}
    if duplicate_of:
        detail["duplicateOf"] = duplicate_of
    if routed.copyright is not None:
        detail["copyright"] = routed.copyright.detail()
    txn_id = new_transaction_id(now)
    txn = await store.insert_transaction(conn, NewTransaction(
        id=txn_id, requester=ctx.sender, request_id=asked.request_id,
        service_type=str(asked.service_type), service_kind=str(asked.kind),
        service_level=asked.level, returnable=RETURNABLE[asked.service_type],
        request=ctx.raw, confirmation=dump_message(*answer),
        max_cost_minor=max_cost.minor if max_cost else None,
        currency=max_cost.currency if max_cost else None, patron_key=asked.patron_key,
        item_key=asked.item_key, duplicate_of=duplicate_of,
        policy_version=routed.policy_version, now=now, ranked=routed.ranked(),
        excluded=routed.excluded(), at=desk.clock(), message_id=ctx.message_id, detail=detail,
        deadline=now + timedelta(hours=desk.deadline_hours(asked.level)) if straight else None,
        today=today, copyright=copyright.row(routed.copyright, txn_id, ctx.sender, now)
        if routed.copyright is not None else None))
    observability.transaction_id.set(txn.id)
    if routed.copyright is not None:
        await copyright.record(conn, routed.copyright, txn.id, ctx.sender, now,
                               replaces=retry_of.id if retry_of is not None else None)
    if straight:
        out = messages.forwarded(desk, txn, State.NEW, txn.current_supplier, 1, now,
                                 note=None, first=True)
    else:
        if retry_of is not None:
            await _supersede(desk, conn, ctx, retry_of, txn, now)
        out = await _first_step(desk, conn, txn, routed, now)
    return Outcome(outgoing=out, transaction_id=txn.id, confirmation=answer)


def _max_cost(req: Request) -> Money | None:
    if not (req.billing_info and req.billing_info.maximum_costs):
        return None
    try:
        return Money.from_costs(req.billing_info.maximum_costs)
    except ValueError as exc:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"request.billingInfo.maximumCosts: {exc}") from exc


async def _duplicate_of(desk: Desk, conn: Connection, requester: str, asked: Asked,
                        known: asyncpg.Record, retry_of: Txn | None) -> str | None:
    """An open request of the same patron for the same item: refused, or flagged."""
    duplicate_of: str | None = known["duplicate_of"]
    other = known["duplicate_request_id"]
    if retry_of is not None and duplicate_of == retry_of.id:
        # The request a Retry supersedes is not a duplicate of it; look for another.
        duplicate_of, other = None, None
        row = await conn.fetchrow(sql.OTHER_DUPLICATE, requester, asked.patron_key,
                                  asked.item_key, retry_of.id)
        if row is not None:
            duplicate_of, other = row["id"], row["request_id"]
    if duplicate_of and desk.settings.duplicate_requests == "refuse":
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"request: duplicate of open request {other!r} (transaction "
                      f"{duplicate_of}) for the same patron and item; cancel it "
                      "or wait for it to finish")
    return duplicate_of


async def _route(desk: Desk, conn: Connection, ctx: Context, asked: Asked,
                 rows: list[asyncpg.Record], max_cost: Money | None, named: str | None,
                 today: date, journal: copyright.Journal | None) -> Routed:
    """The rota under the policy in force (the one `_request_facts` read with)."""
    known = rows[0]
    facts = RequestFacts(
        requester=ctx.sender, province=known["requester_province"],
        city=known["requester_city"], service_type=str(asked.service_type),
        service_kind=str(asked.kind), id_types=frozenset(t for t, _ in asked.ids),
        max_cost_minor=max_cost.minor if max_cost else None, named_supplier=named,
        today=today,
        borrower_trust=trust(History.of_row(known, "borrower_"), desk.settings.loans))
    if named and named != ctx.sender and not any(r["symbol"] == named for r in rows):
        # Only a Retry can name a supplier the first query did not ask about.
        rows = [*rows, *await conn.fetch(sql.CANDIDATES_ONLY, [named], ctx.sender,
                                         str(asked.kind), today)]
    checked = copyright.check(desk.settings.copyright, desk.policies.policy, facts, ctx.raw,
                              journal, counted=known["copyright_counted"])
    if checked is not None and checked.undeclared and checked.rule is not None \
            and checked.rule.refuse_undeclared:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      "request.serviceInfo.copyrightCompliance: a copy request needs an "
                      f"accepted copyright category ({', '.join(checked.accepted)}); "
                      f"{checked.declaration.given or 'none'!r} is not one")
    if checked is not None and checked.route_to:
        facts = replace(facts, first=(checked.route_to, checked.reason()))
    answers = await _ask_catalogues(desk, facts, rows, asked)
    route, quoted = _rank(desk.policies.policy, facts, rows, pages_of(ctx.raw), answers)
    if checked is not None and checked.route_to and route.symbols[:1] != (checked.route_to,):
        checked = replace(checked, unrouted=route.excluded_reason(checked.route_to)
                          or "not a candidate")
    too_dear = None
    if named and max_cost and named in quoted and named not in route.symbols:
        too_dear = max_cost_problem(quoted[named].total, max_cost)
    over = await _over_quota(desk, conn, ctx.sender, asked, facts)
    return Routed(rota=route, quoted=quoted, policy_version=desk.policies.version,
                  named=named, too_dear=too_dear, over_quota=over, copyright=checked)


async def _over_quota(desk: Desk, conn: Connection, requester: str, asked: Asked,
                      facts: RequestFacts) -> OverQuota | None:
    """The first quota of the policy this request would exceed, or None. A reader quota
    needs a reader to count: a request without patronInfo is not held to it."""
    now = desk.clock().astimezone(desk.zone)
    for rule, quota in desk.policies.policy.quotas(facts):
        if quota.per is QuotaScope.READER and asked.patron_key is None:
            continue
        start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        if quota.period is QuotaPeriod.YEAR:
            start = start.replace(month=1)
            nxt = start.replace(year=start.year + 1)
        else:
            nxt = (start + timedelta(days=32)).replace(day=1)
        used = await conn.fetchval(
            sql.QUOTA_USED, requester, str(asked.kind), start,
            asked.patron_key if quota.per is QuotaScope.READER else None)
        if used >= quota.limit:
            return OverQuota(rule, quota, int(used), nxt)
    return None


async def _ask_catalogues(desk: Desk, facts: RequestFacts, rows: list[asyncpg.Record],
                          asked: Asked) -> dict[str, Availability]:
    """What the candidates' own catalogues say of the item (those that have one, among
    the holders and whom the rules add). This runs inside the intake's transaction, with
    its row locks held: settings.catalogues.budget_ms (300 ms by default) bounds it, and
    a catalogue that has not answered by then is ranked as if it had none."""
    wanted = desk.policies.policy.extra_suppliers(facts)
    configs = of_candidates(r for r in rows if r["symbol"] is not None
                            and (r["matched"] is not None or r["symbol"] in wanted))
    return await desk.catalogues.check(configs, asked.ids) if configs else {}


async def _first_step(desk: Desk, conn: Connection, txn: Txn, routed: Routed,
                      now: datetime) -> list[Outgoing]:
    """A new transaction not forwarded at once: refuse it for a quota, offer a retry,
    forward, or give up."""
    if routed.over_quota is not None:
        return await _refuse_for_quota(desk, conn, txn, routed.over_quota, now)
    if routed.copyright is not None and routed.copyright.held:
        return await _hold_for_copyright(desk, conn, txn, routed.copyright, now)
    if routed.too_dear and routed.named:
        # Asked for by name but above the requester's limit: offer a retry at the
        # supplier's price instead of silently routing elsewhere.
        return await _offer_retry(desk, conn, txn, routed.named, routed.quoted[routed.named],
                                  now, routed.too_dear)
    if routed.rota.ranked:
        return await rota.forward(desk, conn, txn, 1, now, note=None, first=True)
    why = "; ".join(f"{e.symbol}: {e.reason}" for e in routed.rota.excluded[:5])
    return await rota.finish_unfilled(
        desk, conn, txn, now, "no supplier in the network can supply this item"
        + (f" ({why})" if why else ""), actor="hub")


async def _refuse_for_quota(desk: Desk, conn: Connection, txn: Txn, over: OverQuota,
                            now: datetime) -> list[Outgoing]:
    """ISO 18626 has no 'quota' answer: a monthly quota is a RetryPossible
    (NotCurrentAvailableForILL, retryAfter the next month), a yearly one an Unfilled
    (PolicyProblem); the note names the quota either way."""
    monthly = over.quota.period is QuotaPeriod.MONTH
    state = State.RETRY_POSSIBLE if monthly else State.UNFILLED
    await store.set_state(conn, txn, state, now)
    await store.audit(conn, desk.clock(), txn.id, "hub", HubEvent.QUOTA_REACHED, State.NEW,
                      state, None, {"rule": over.rule, "used": over.used,
                                    "limit": over.quota.limit, "per": over.quota.per.value,
                                    "period": over.quota.period.value})
    if monthly:
        message = messages.to_requester(
            desk, txn, ReasonForMessage.REQUEST_RESPONSE, state, now, supplier=None,
            answer="N", note=over.note,
            more_info={"reasonRetry": "NotCurrentAvailableForILL",
                       "retryAfter": iso(over.next_period)})
    else:
        message = messages.to_requester(
            desk, txn, ReasonForMessage.REQUEST_RESPONSE, state, now, supplier=None,
            answer="N", note=over.note, reason_unfilled="PolicyProblem")
    return [message, messages.event(txn, State.NEW, state, HubEvent.QUOTA_REACHED, now)]


async def _hold_for_copyright(desk: Desk, conn: Connection, txn: Txn, held: copyright.Check,
                              now: datetime) -> list[Outgoing]:
    """A copy past the copyright limit under a "hold" rule: RetryPossible with the reason
    (a Retry once permission is obtained or the fee agreed), flagged for an operator.
    There is no approval queue yet: the transaction is not kept waiting in the hub."""
    state = State.RETRY_POSSIBLE
    await store.set_state(conn, txn, state, now)
    await store.audit(conn, desk.clock(), txn.id, "hub", HubEvent.COPYRIGHT_HELD, State.NEW,
                      state, None, {"copyright": held.detail()})
    message = messages.to_requester(
        desk, txn, ReasonForMessage.REQUEST_RESPONSE, state, now, supplier=None,
        answer="N", note=held.reason(),
        more_info={"reasonRetry": "NotCurrentAvailableForILL"})
    return [message, messages.event(txn, State.NEW, state, HubEvent.COPYRIGHT_HELD, now)]


async def _supersede(desk: Desk, conn: Connection, ctx: Context, retry_of: Txn,
                     txn: Txn, now: datetime) -> None:
    """A Retry replaces the request it answers: that one is cancelled."""
    if retry_of.rota_position is not None:
        await store.close_entry(conn, retry_of, EntryOutcome.CANCELLED, now)
        await store.score(conn, retry_of.supplier, open_requests=-1)
    await store.set_state(conn, retry_of, State.CANCELLED, now)
    await store.audit(conn, desk.clock(), retry_of.id, ctx.sender, HubEvent.RETRIED,
                      retry_of.state, State.CANCELLED, ctx.message_id, {"retriedAs": txn.id})
    await store.audit(conn, desk.clock(), txn.id, ctx.sender, HubEvent.RETRY_OF, None,
                      State.NEW, ctx.message_id, {"previous": retry_of.id})


async def _offer_retry(desk: Desk, conn: Connection, txn: Txn, supplier: str,
                       quote: Quote, now: datetime, why: str) -> list[Outgoing]:
    price = quote.total
    await conn.execute(sql.OFFER_RETRY, txn.id, supplier, price.minor, price.currency, now,
                       quote.logistics.minor)
    await store.audit(conn, desk.clock(), txn.id, "hub", HubEvent.COST_ABOVE_MAXIMUM,
                      State.NEW, State.RETRY_POSSIBLE, None, {"supplier": supplier, "why": why})
    message = messages.to_requester(
        desk, txn, ReasonForMessage.REQUEST_RESPONSE, State.RETRY_POSSIBLE, now,
        supplier=supplier, answer="N", note=why,
        more_info={"reasonRetry": "CostExceedsMaxCost", "offeredCosts": price.to_costs()})
    return [message, messages.event(txn, State.NEW, State.RETRY_POSSIBLE,
                                    HubEvent.COST_ABOVE_MAXIMUM, now, supplier=supplier)]


async def _retry_of(conn: Connection, requester: str, req: Request) -> Txn | None:
    """A `Retry` request answers a supplier's RetryPossible: it supersedes that request."""
    info = req.service_info
    if info is None or info.request_type != RequestType.RETRY:
        return None
    previous = info.requesting_agency_previous_request_id
    field = "request.serviceInfo.requestingAgencyPreviousRequestId"
    if not previous:
        raise Refusal(ErrorType.BADLY_FORMED_MESSAGE,
                      f"{field}: required element missing for requestType Retry")
    txn = await store.lookup(conn, requester, previous)
    if txn is None:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"{field}: no request {previous!r} from {requester} is known")
    if txn.state != State.RETRY_POSSIBLE:
        raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                      f"{field}: request {previous!r} is {txn.state}, not RetryPossible; "
                      "only a request a supplier offered to retry can be retried")
    return txn


async def _request_facts(desk: Desk, conn: Connection, requester: str, asked: Asked,
                         today: date, journal: copyright.Journal | None
                         ) -> list[asyncpg.Record]:
    """The facts row(s) of `sql.REQUEST_FACTS`, read with the policy in force, and the
    copies of `journal` this year so far, counted under its lock.

    Which suppliers the policy may add depends on the policy, and the query tells
    which version is in force: if an operator loaded a new one since, read again.
    """
    while True:
        cached = desk.policies.version
        extra = sorted({*desk.policies.policy.all_extra_suppliers(),
                        *([asked.named] if asked.named else [])})
        rows: list[asyncpg.Record] = await conn.fetch(
            sql.REQUEST_FACTS, requester, asked.request_id, asked.patron_key, asked.item_key,
            [t for t, _ in asked.ids], [v for _, v in asked.ids], extra, str(asked.kind or ""),
            today, int(Lock.COPYRIGHT_COUNT), journal.key if journal else None, today.year)
        if rows[0]["policy_version"] == cached:
            return rows
        await desk.policies.at(rows[0]["policy_version"], conn)


def _rank(policy: Policy, facts: RequestFacts, rows: list[asyncpg.Record],
          pages: int | None, availability: Mapping[str, Availability] | None = None,
          ) -> tuple[Rota, dict[str, Quote]]:
    """Rank the candidates: the holders, and whom the matching rules add;
    `availability`, what their catalogues said of the item. A loan (or a CopyOrLoan,
    which may be supplied as one) is quoted with its shipping legs, priced by the zone
    between requester and supplier; the policy ranks on the total."""
    wanted = policy.extra_suppliers(facts)
    # Otherwise the entry's kind decides (a BookLoan entry is shipped).
    loan = True if facts.service_type in SHIPPED else None
    quoted: dict[str, Quote] = {}
    suppliers = []
    for r in rows:
        if r["symbol"] is None or (r["matched"] is None and r["symbol"] not in wanted):
            continue
        if r["entry"] is not None:
            quoted[r["symbol"]] = fee_terms(r).quote_parts(
                pages=pages, items=1, loan=loan,
                zone=zone_between(facts.province, facts.city, r["province"], r["city"]))
        if not r["eligible"]:
            continue
        fill_rate, turnaround_hours = scorecard_terms(
            r["filled"] or 0, r["unfilled"] or 0, r["timed_out"] or 0,
            r["turnaround_total"] or 0.0)
        suppliers.append(SupplierFacts(
            symbol=r["symbol"], province=r["province"], city=r["city"],
            holds=frozenset(r["matched"] or ()),
            quote_minor=quoted[r["symbol"]].total.minor if r["symbol"] in quoted else None,
            fill_rate=fill_rate, turnaround_hours=turnaround_hours,
            open_requests=r["open_requests"], forwarded_today=r["forwarded_today"],
            doubted=r["doubted"],
            holdings_accuracy=accuracy(r["listed_asked"] or 0, r["listed_not_held"] or 0),
            availability=(availability or {}).get(r["symbol"])))
    return policy.rota(facts, suppliers), quoted


def _patron_key(request: dict[str, Any]) -> str | None:
    patron = request.get("patronInfo") or {}
    if not isinstance(patron, dict):
        return None
    if patron.get("patronId"):
        return f"id:{patron['patronId']}"
    name = f"{patron.get('surname') or ''}{patron.get('givenName') or ''}".strip()
    return f"name:{name.casefold()}" if name else None
