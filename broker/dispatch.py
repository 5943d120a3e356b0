"""Dispatch: the hub as ISO 18626 broker between requesters and a rota of suppliers.

Everything here runs inside the intake's PostgreSQL transaction for one inbound
message (or the deadline sweeper's): the transaction row is locked `FOR UPDATE`,
state changes, audit rows and every outgoing message (outbox) commit together,
so two hub processes never advance one transaction at once and nothing is sent
for a change that did not commit.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from broker import states, violations
from broker.holdings import identifiers_of
from broker.intake import Context, Outcome, Refusal
from broker.policy import Policy, PolicyError, RequestFacts, Rota, SupplierFacts
from delivery.grants import create_grant
from delivery.intake import CopyProblem, accept_copy
from delivery.mail import enqueue_patron_mail
from infra import observability
from infra.locks import Lock, try_transaction_lock
from infra.outbox import Outgoing, enqueue
from infra.topology import EVENTS, OUTBOUND
from schemas.iso18626 import (
    ErrorType,
    MessageType,
    Request,
    RequestConfirmation,
    RequestingAgencyMessage,
    RequestType,
    ServiceKind,
    SupplyingAgencyMessage,
    confirmation,
    dump_message,
)
from schemas.money import Money
from schemas.settings import Settings
from settlement.fees import fee_terms, fee_to_charge, max_cost_problem, pages_of
from settlement.ledger import ChargeRefused, billable_event, post_charge, record_flag

log = logging.getLogger(__name__)

DEFAULT_KIND = {"Copy": ServiceKind.DOCUMENT_DELIVERY, "Loan": ServiceKind.BOOK_LOAN,
                "CopyOrLoan": ServiceKind.DOCUMENT_DELIVERY}
RETURNABLE = {"Copy": False, "Loan": True, "CopyOrLoan": None}


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_transaction_id(now: datetime) -> str:
    return f"ILL-{now:%Y%m%d}-{secrets.token_hex(5).upper()}"


def agency_id(symbol: str) -> dict[str, str]:
    scheme, _, value = symbol.partition(":")
    return {"agencyIdType": scheme, "agencyIdValue": value}


@dataclass
class Txn:
    """The locked row of one ILL transaction."""

    row: asyncpg.Record

    def __getattr__(self, name: str) -> Any:
        return self.row[name]


class PolicyStore:
    """The active routing policy, reloaded when an operator loads a new version."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.policy = Policy.default()

    async def current(self, conn: asyncpg.Connection) -> tuple[Policy, int | None]:
        row = await conn.fetchrow(
            "SELECT version, normalised FROM policy_version ORDER BY version DESC LIMIT 1")
        if row is None:
            return Policy.default(), None
        if row["version"] != self.version:
            self.policy = Policy.from_dict(json.loads(row["normalised"]))
            self.version = row["version"]
        return self.policy, self.version


    async def at(self, version: int | None,
                 conn: asyncpg.Connection) -> tuple[Policy, int | None]:
        """The policy of a version already read (e.g. with other facts in one query)."""
        if version is None:
            return Policy.default(), None
        if version != self.version:
            text = await conn.fetchval(
                "SELECT normalised FROM policy_version WHERE version = $1", version)
            self.policy = Policy.from_dict(json.loads(text))
            self.version = version
        return self.policy, self.version


@dataclass(frozen=True)
class LoadedPolicy:
    version: int
    loaded_at: datetime
    file_name: str | None
    source: str


async def active_policy(conn: asyncpg.Connection) -> LoadedPolicy | None:
    """The policy version in force (the newest), with the text it was loaded from."""
    row = await conn.fetchrow(
        "SELECT version, loaded_at, file_name, source FROM policy_version "
        "ORDER BY version DESC LIMIT 1")
    return LoadedPolicy(**dict(row)) if row else None


async def load_policy(conn: asyncpg.Connection, text: str, file_name: str | None) -> int:
    """Validate and store a new policy version; raises PolicyError with the rule and field."""
    policy = Policy.from_toml(text)
    return await conn.fetchval(
        "INSERT INTO policy_version (source, normalised, file_name) VALUES ($1, $2::jsonb, $3) "
        "RETURNING version", text, json.dumps(policy.to_dict(), ensure_ascii=False), file_name)


class Dispatcher:
    """The intake handler for request, supplyingAgencyMessage and requestingAgencyMessage."""

    # new_request reads (and locks) but writes nothing before its last Refusal, so intake
    # can skip the savepoint around it. Keep it that way when changing new_request.
    refuses_before_writing = frozenset({MessageType.REQUEST})

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.settings = settings
        self.clock = clock
        self.policies = PolicyStore()
        self.zone = ZoneInfo(settings.timezone)
        # Where readers' links point; the hub process sets it once its HTTP server is
        # up (with port 0 the address is known only then).
        self.base_url = settings.public_base_url

    async def __call__(self, conn: asyncpg.Connection, ctx: Context) -> Outcome:
        if ctx.kind is MessageType.REQUEST:
            return await self.new_request(conn, ctx)
        if ctx.kind is MessageType.SUPPLYING_AGENCY_MESSAGE:
            return await self.from_supplier(conn, ctx)
        return await self.from_requester(conn, ctx)

    # ---- a new request -------------------------------------------------------

    async def new_request(self, conn: asyncpg.Connection, ctx: Context) -> Outcome:
        req: Request = ctx.message  # type: ignore[assignment]
        raw = ctx.raw["request"]
        request_id = req.header.requesting_agency_request_id
        if not request_id.strip():
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          "request.header.requestingAgencyRequestId: must not be empty")
        ids = identifiers_of(ctx.raw)
        item_key = next((f"{t}:{v}" for t, v in ids if t != "title_key"),
                        next((f"{t}:{v}" for t, v in ids), None))
        patron_key = _patron_key(raw)
        service_type = req.service_info.service_type if req.service_info else None
        kind = (req.hub_extensions.service_kind if req.hub_extensions
                and req.hub_extensions.service_kind else
                DEFAULT_KIND[str(service_type)] if service_type else None)
        named = req.header.supplying_agency_id.symbol if (
            req.header.supplying_agency_id and req.header.supplying_agency_id.agency_id_value
        ) else None
        now = self.clock()
        today = now.astimezone(self.zone).date()
        # What new_request reads before it writes, in one round trip: an earlier copy of
        # this request, an open duplicate, the requester's region, the policy version,
        # and every candidate supplier with its facts and fee schedule.
        rows = await self._request_facts(conn, ctx.sender, request_id, patron_key, item_key,
                                         ids, named, str(kind or ""), today)
        known = rows[0]
        if known["earlier_id"] is not None:
            # A repeat of a request we already have: the same answer, no second transaction.
            model = json.loads(known["earlier_confirmation"])
            return Outcome(transaction_id=known["earlier_id"], confirmation=(
                MessageType.REQUEST_CONFIRMATION,
                RequestConfirmation.model_validate(model["requestConfirmation"])))

        if service_type is None or kind is None:
            raise Refusal(ErrorType.BADLY_FORMED_MESSAGE,
                          "request.serviceInfo.serviceType: required element missing "
                          "(the hub routes by it)")
        service_type = str(service_type)
        max_cost: Money | None = None
        if req.billing_info and req.billing_info.maximum_costs:
            try:
                max_cost = Money.from_costs(req.billing_info.maximum_costs)
            except ValueError as exc:
                raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                              f"request.billingInfo.maximumCosts: {exc}") from exc
        retry_of = await self._retry_of(conn, ctx.sender, req)
        if retry_of is not None:
            named = retry_of.supplier  # the supplier that offered the retry goes first
        txn_id = new_transaction_id(now)

        duplicate_of, other = known["duplicate_of"], known["duplicate_request_id"]
        if retry_of is not None and duplicate_of == retry_of.id:
            # The request a Retry supersedes is not a duplicate of it; look for another.
            duplicate_of, other = None, None
            row = await conn.fetchrow(
                """SELECT id, request_id FROM ill_transaction WHERE requester = $1
                   AND patron_key = $2 AND item_key = $3 AND closed_at IS NULL AND id <> $4
                   LIMIT 1""", ctx.sender, patron_key, item_key, retry_of.id)
            if row is not None:
                duplicate_of, other = row["id"], row["request_id"]
        if duplicate_of and self.settings.duplicate_requests == "refuse":
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          f"request: duplicate of open request {other!r} (transaction "
                          f"{duplicate_of}) for the same patron and item; cancel it "
                          "or wait for it to finish")

        policy, policy_version = self.policies.policy, self.policies.version
        facts = RequestFacts(
            requester=ctx.sender, province=known["requester_province"],
            city=known["requester_city"],
            service_type=service_type, service_kind=str(kind),
            id_types=frozenset(t for t, _ in ids),
            max_cost_minor=max_cost.minor if max_cost else None,
            named_supplier=named, today=today)
        if named and named != ctx.sender and not any(r["symbol"] == named for r in rows):
            # Only a Retry can name a supplier the first query did not ask about.
            rows = [*rows, *await conn.fetch(_CANDIDATES_ONLY, [named], ctx.sender,
                                             str(kind), today)]
        rota, quoted = self._rota(policy, facts, rows, pages_of(ctx.raw))

        answer = confirmation(MessageType.REQUEST, req.header, ok=True)
        detail: dict[str, Any] = {"rota": list(rota.symbols), "rules": list(rota.rules_applied),
                                  "policyVersion": policy_version}
        if duplicate_of:
            detail["duplicateOf"] = duplicate_of
        ranked = [{"supplier": r.symbol, "tier": r.tier, "score": r.score,
                   "reasons": list(r.reasons),
                   "quote_minor": quoted[r.symbol].minor if r.symbol in quoted else None,
                   "quote_currency": quoted[r.symbol].currency if r.symbol in quoted else None}
                  for r in rota.ranked]
        excluded = [{"supplier": e.symbol, "reason": e.reason} for e in rota.excluded]
        too_dear = named and max_cost and named in quoted and named not in rota.symbols \
            and max_cost_problem(quoted[named], max_cost)
        # The usual case, a new request forwarded at once to the first supplier, is
        # written by one statement (_NEW_FORWARDED); the others go step by step.
        straight = retry_of is None and not too_dear and bool(rota.ranked)
        deadline = now + timedelta(hours=self._deadline_hours(
            req.service_info.service_level if req.service_info else None))
        txn = Txn(await conn.fetchrow(
            _NEW_FORWARDED if straight else _NEW_TRANSACTION,
            txn_id, ctx.sender, request_id, service_type, str(kind),
            req.service_info.service_level if req.service_info else None,
            RETURNABLE[service_type], json.dumps(ctx.raw, ensure_ascii=False),
            json.dumps(dump_message(*answer), ensure_ascii=False),
            max_cost.minor if max_cost else None,
            max_cost.currency if max_cost else None, patron_key, item_key, duplicate_of,
            policy_version, now, json.dumps(ranked, ensure_ascii=False),
            json.dumps(excluded, ensure_ascii=False), self.clock(), ctx.message_id,
            json.dumps(detail, ensure_ascii=False, default=str),
            *((deadline, today, iso(deadline)) if straight else ())))
        observability.transaction_id.set(txn_id)
        if straight:
            out = self._forwarded(txn, "New", txn.supplier, 1, now, note=None, first=True)
            return Outcome(outgoing=out, transaction_id=txn_id, confirmation=answer)
        out: list[Outgoing] = []
        if retry_of is not None:
            if retry_of.rota_position is not None:
                await self._close_entry(conn, retry_of, "cancelled", now)
                await self._score(conn, retry_of.supplier, open_requests=-1)
            await self._set_state(conn, retry_of, "Cancelled", now)
            await self._audit(conn, retry_of.id, ctx.sender, "retried", retry_of.state,
                              "Cancelled", ctx.message_id, {"retriedAs": txn_id})
            await self._audit(conn, txn_id, ctx.sender, "retry of", None, "New",
                              ctx.message_id, {"previous": retry_of.id})
        if too_dear:
            # Asked for by name but above the requester's limit: offer a retry at the
            # supplier's price instead of silently routing elsewhere.
            out += await self._offer_retry(conn, txn, named, quoted[named], now, too_dear)
        elif rota.ranked:
            out += await self._forward(conn, txn, 1, now, note=None, first=True)
        else:
            why = "; ".join(f"{e.symbol}: {e.reason}" for e in rota.excluded[:5])
            out += await self._finish_unfilled(
                conn, txn, now, "no supplier in the network can supply this item"
                + (f" ({why})" if why else ""), actor="hub")
        return Outcome(outgoing=out, transaction_id=txn_id, confirmation=answer)

    async def _offer_retry(self, conn: asyncpg.Connection, txn: Txn, supplier: str,
                           price: Money, now: datetime, why: str) -> list[Outgoing]:
        await conn.execute(
            """UPDATE ill_transaction SET supplier = $2, state = 'RetryPossible',
                      quote_minor = $3, quote_currency = $4, updated_at = $5 WHERE id = $1""",
            txn.id, supplier, price.minor, price.currency, now)
        await self._audit(conn, txn.id, "hub", "cost above maximumCosts", "New",
                          "RetryPossible", None, {"supplier": supplier, "why": why})
        message = self._to_requester(txn, "RequestResponse", "RetryPossible", now,
                                     supplier=supplier, answer="N", note=why)
        info = message.body["supplyingAgencyMessage"]["messageInfo"]  # type: ignore[index]
        info["reasonRetry"] = "CostExceedsMaxCost"
        info["offeredCosts"] = price.to_costs()
        return [message, self._event(txn, "New", "RetryPossible", "cost above maximumCosts",
                                     now, supplier=supplier)]

    async def _retry_of(self, conn: asyncpg.Connection, requester: str,
                        req: Request) -> Txn | None:
        """A `Retry` request answers a supplier's RetryPossible: it supersedes that request."""
        info = req.service_info
        if info is None or info.request_type != RequestType.RETRY:
            return None
        previous = info.requesting_agency_previous_request_id
        field = "request.serviceInfo.requestingAgencyPreviousRequestId"
        if not previous:
            raise Refusal(ErrorType.BADLY_FORMED_MESSAGE,
                          f"{field}: required element missing for requestType Retry")
        row = await conn.fetchrow(
            "SELECT * FROM ill_transaction WHERE requester = $1 AND request_id = $2 FOR UPDATE",
            requester, previous)
        if row is None:
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          f"{field}: no request {previous!r} from {requester} is known")
        if row["state"] != "RetryPossible":
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          f"{field}: request {previous!r} is {row['state']}, not RetryPossible; "
                          "only a request a supplier offered to retry can be retried")
        return Txn(row)

    async def _request_facts(self, conn: asyncpg.Connection, requester: str,
                             request_id: str, patron_key: str | None, item_key: str | None,
                             ids: list[tuple[str, str]], named: str | None, kind: str,
                             today: date) -> list[asyncpg.Record]:
        """The facts row(s) of `_REQUEST_FACTS`, read with the policy in force.

        Which suppliers the policy may add depends on the policy, and the query tells
        which version is in force: if an operator loaded a new one since, read again.
        """
        while True:
            cached = self.policies.version
            extra = sorted({*self.policies.policy.all_extra_suppliers(),
                            *([named] if named else [])})
            rows = await conn.fetch(_REQUEST_FACTS, requester, request_id, patron_key,
                                    item_key, [t for t, _ in ids], [v for _, v in ids],
                                    extra, kind, today)
            if rows[0]["policy_version"] == cached:
                return rows
            await self.policies.at(rows[0]["policy_version"], conn)

    def _rota(self, policy: Policy, facts: RequestFacts, rows: list[asyncpg.Record],
              pages: int | None) -> tuple[Rota, dict[str, Money]]:
        """Rank the candidates: the holders, and whom the matching rules add."""
        wanted = policy.extra_suppliers(facts)
        quoted: dict[str, Money] = {}
        suppliers = []
        for r in rows:
            if r["symbol"] is None or (r["matched"] is None and r["symbol"] not in wanted):
                continue
            if r["entry"] is not None:
                quoted[r["symbol"]] = fee_terms(r).quote(pages=pages)
            if not r["eligible"]:
                continue
            answered = (r["filled"] or 0) + (r["unfilled"] or 0) + (r["timed_out"] or 0)
            suppliers.append(SupplierFacts(
                symbol=r["symbol"], province=r["province"], city=r["city"],
                holds=frozenset(r["matched"] or ()),
                quote_minor=quoted[r["symbol"]].minor if r["symbol"] in quoted else None,
                fill_rate=(r["filled"] / answered) if answered else None,
                turnaround_hours=(r["turnaround_total"] / r["filled"] / 3600)
                if r["filled"] else None,
                open_requests=r["open_requests"], forwarded_today=r["forwarded_today"]))
        return policy.rota(facts, suppliers), quoted

    # ---- messages from the current supplier -----------------------------------

    async def from_supplier(self, conn: asyncpg.Connection, ctx: Context) -> Outcome:
        msg: SupplyingAgencyMessage = ctx.message  # type: ignore[assignment]
        txn = await self._find(conn, msg.header.requesting_agency_id.symbol,
                               msg.header.requesting_agency_request_id, "supplyingAgencyMessage")
        if txn.supplier != ctx.sender and not await conn.fetchval(
                "SELECT true FROM rota_entry WHERE transaction_id = $1 AND supplier = $2 "
                "LIMIT 1", txn.id, ctx.sender):
            # Not party to it: answered exactly as an unknown request, so a stranger
            # learns neither that the request exists nor its transaction id.
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          f"supplyingAgencyMessage.header.requestingAgencyRequestId: no request "
                          f"{txn.request_id!r} from {txn.requester} is known to the hub")
        if txn.supplier != ctx.sender:
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          "supplyingAgencyMessage.header.supplyingAgencyId: "
                          f"{ctx.sender!r} is not the current supplier of request "
                          f"{txn.request_id!r} (transaction {txn.id})", txn.id)
        status = str(msg.status_info.status)
        returnable = txn.returnable
        if returnable is None and status in ("Loaned", "CopyCompleted"):
            returnable = status == "Loaned"
        target = states.next_state(returnable, txn.state, f"status:{status}")
        if target is None:
            allowed = [e.split(":")[1] for e in states.allowed_events(returnable, txn.state)
                       if e.startswith("status:")]
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          f"supplyingAgencyMessage.statusInfo.status: {status!r} is not "
                          f"allowed while the request is {txn.state} (allowed: "
                          f"{', '.join(allowed) or 'none'})", txn.id)
        now = self.clock()
        if target == states.ADVANCE:
            reason = msg.message_info.reason_unfilled or msg.message_info.note or "no reason given"
            await self._close_entry(conn, txn, "unfilled", now)
            await self._score(conn, ctx.sender, unfilled=1, open_requests=-1)
            await self._audit(conn, txn.id, ctx.sender, f"status:{status}", txn.state,
                              txn.state, ctx.message_id, {"reasonUnfilled": reason})
            out = await self._advance(conn, txn, now, f"{ctx.sender} could not supply "
                                      f"({reason})")
            return Outcome(outgoing=out, transaction_id=txn.id)

        delivered = target in ("CopyCompleted", "Loaned") and txn.state in (
            "ExpectToSupply", "WillSupply")
        extensions: dict[str, Any] = {}
        if delivered:
            await self._charge(conn, txn, msg, status, now)
            ebook = target == "Loaned" and txn.service_kind == ServiceKind.E_BOOK_LOAN
            if (target == "CopyCompleted" or ebook) and _sent_via_ftp(msg):
                extensions = await self._deliver_copy(conn, txn, msg, now, ebook=ebook)
            forwarded_at = await self._close_entry(conn, txn, "supplied", now)
            seconds = (now - forwarded_at).total_seconds() if forwarded_at else 0.0
            await self._score(conn, ctx.sender, filled=1, open_requests=-1, turnaround=seconds)
        if target == "Cancelled" and txn.state in states.AWAITING_SUPPLIER | {"RetryPossible"}:
            await self._close_entry(conn, txn, "cancelled", now)
            await self._score(conn, ctx.sender, open_requests=-1)
        await self._set_state(conn, txn, target, now, returnable=returnable)
        if status == "Loaned" and msg.status_info.due_date is not None:
            due = msg.status_info.due_date
            await conn.execute("UPDATE ill_transaction SET due_at = $2 WHERE id = $1", txn.id,
                               due if due.tzinfo else due.replace(tzinfo=UTC))
        await self._audit(conn, txn.id, ctx.sender, f"status:{status}", txn.state, target,
                          ctx.message_id, _brief(ctx.raw))
        relayed = ctx.raw
        if extensions:
            # The requester learns the link's limits, never its token (the patron's mail has it).
            relayed = json.loads(json.dumps(ctx.raw))
            inner = relayed["supplyingAgencyMessage"]
            inner.setdefault("hubExtensions", {}).update(extensions)
        out = [self._to_requester_raw(txn, relayed, ctx.message_id),
               self._event(txn, txn.state, target, f"status:{status}", now)]
        return Outcome(outgoing=out, transaction_id=txn.id)

    async def _deliver_copy(self, conn: asyncpg.Connection, txn: Txn,
                            msg: SupplyingAgencyMessage, now: datetime,
                            ebook: bool = False) -> dict[str, Any]:
        """Take the uploaded file from the supplier's FTP home, grant a link, mail the reader.

        Limits come from the policy's `[[delivery]]` entries (per supplier and service
        kind), else the delivery settings. An e-book loan is time-limited access: as many
        downloads as the reader likes until the loan's due date.
        """
        assert msg.delivery_info is not None
        item_id = msg.delivery_info.item_id
        if not item_id:
            raise Refusal(ErrorType.BADLY_FORMED_MESSAGE,
                          "supplyingAgencyMessage.deliveryInfo.itemId: required when sentVia "
                          "is FTP (the path of the uploaded file in your FTP home)", txn.id)
        try:
            document = await accept_copy(conn, self.settings, supplier=txn.supplier,
                                         item_id=item_id, transaction_id=txn.id)
        except CopyProblem as problem:
            async def flag(c: asyncpg.Connection, why: str = str(problem)) -> None:
                await violations.raise_flag(
                    c, "copy_without_valid_file", txn.supplier,
                    f"CopyCompleted for {txn.id} without a valid file: {why}",
                    key=f"{txn.id}:{item_id}", transaction_id=txn.id, now=now)
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          f"supplyingAgencyMessage.{problem.field}: {problem.message}",
                          txn.id, after=flag) from problem
        request = json.loads(txn.request)["request"]
        email, name = _patron_contact(request)
        policy, _ = await self.policies.current(conn)
        downloads, days = policy.delivery_limits(txn.supplier, txn.service_kind) or (
            self.settings.delivery.grant_downloads(), self.settings.delivery.days)
        due = msg.status_info.due_date
        if ebook:
            downloads = None
            if due is not None:
                due = due if due.tzinfo else due.replace(tzinfo=UTC)
                days = max(1, math.ceil((due - now).total_seconds() / 86400))
        grant = await create_grant(conn, document_id=document.id, transaction_id=txn.id,
                                   patron_email=email, patron_name=name,
                                   downloads=downloads, days=days, now=now)
        names = dict(await conn.fetch("SELECT symbol, name FROM agency WHERE symbol = ANY($1)",
                                      [txn.supplier, txn.requester]))
        mailed = False
        if email:
            await enqueue_patron_mail(
                conn, grant=grant, document=document,
                title=(request.get("bibliographicInfo") or {}).get("title") or document.filename,
                supplier_name=names.get(txn.supplier, txn.supplier),
                requester_name=names.get(txn.requester, txn.requester),
                base_url=self.base_url, settings=self.settings)
            mailed = True
        await self._audit(conn, txn.id, "hub", "document delivered", None, None, None,
                          {"document": document.id, "sha256": document.sha256,
                           "bytes": document.size, "grant": grant.id, "mailed": mailed,
                           "expires": iso(grant.expires_at)})
        return {"downloadExpires": iso(grant.expires_at),
                "downloadLimit": grant.max_downloads, "patronMailed": mailed,
                "documentSha256": document.sha256}

    async def _charge(self, conn: asyncpg.Connection, txn: Txn, msg: SupplyingAgencyMessage,
                      status: str, now: datetime) -> None:
        """Post the billable event's charge (settlement/ledger.py says which events bill)."""
        event = billable_event(status)
        if event is None:
            return
        quote = Money(txn.quote_minor, txn.quote_currency) if txn.quote_minor is not None \
            else None
        costs = msg.delivery_info.delivery_costs if msg.delivery_info else None
        try:
            sent = Money.from_costs(costs) if costs is not None else None
        except ValueError as exc:
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          f"supplyingAgencyMessage.deliveryInfo.deliveryCosts: {exc}",
                          txn.id) from exc
        fee = fee_to_charge(sent, quote)
        if fee is None:
            return  # no fee schedule and no costs sent: the supply is free
        max_cost = Money(txn.max_cost_minor, txn.currency) if txn.max_cost_minor is not None \
            else None
        title = (json.loads(txn.request)["request"].get("bibliographicInfo") or {}).get("title")
        try:
            await post_charge(conn, transaction_id=txn.id, event=event, requester=txn.requester,
                              supplier=txn.supplier, service_kind=txn.service_kind, fee=fee,
                              quote=quote, on=now, title=title, max_cost=max_cost,
                              tz=self.settings.timezone)
        except ChargeRefused as refused:
            async def keep_flag(c: asyncpg.Connection, exc: ChargeRefused = refused) -> None:
                await record_flag(c, exc)
                await violations.raise_flag(
                    c, "charge_above_schedule", txn.supplier, exc.detail,
                    key=f"{txn.id}:{event}:{exc.fee.minor}", transaction_id=txn.id, now=now)
            raise Refusal(ErrorType(refused.error_type), refused.error_value, txn.id,
                          after=keep_flag) from refused

    # ---- actions from the requester --------------------------------------------

    async def from_requester(self, conn: asyncpg.Connection, ctx: Context) -> Outcome:
        msg: RequestingAgencyMessage = ctx.message  # type: ignore[assignment]
        txn = await self._find(conn, ctx.sender, msg.header.requesting_agency_request_id,
                               "requestingAgencyMessage")
        action = str(msg.action)
        target = states.next_state(txn.returnable, txn.state, f"action:{action}")
        if target is None:
            allowed = [e.split(":")[1] for e in states.allowed_events(txn.returnable, txn.state)
                       if e.startswith("action:")]
            raise Refusal(ErrorType.UNSUPPORTED_ACTION_TYPE,
                          f"requestingAgencyMessage.action: {action!r} is not allowed while "
                          f"the request is {txn.state} (allowed: {', '.join(allowed)})", txn.id)
        now = self.clock()
        out: list[Outgoing] = []
        if action == "StatusRequest":
            out.append(self._to_requester(txn, "StatusRequestResponse", states.iso_status(
                txn.state), now, supplier=txn.supplier))
            await self._audit(conn, txn.id, ctx.sender, "action:StatusRequest", txn.state,
                              txn.state, ctx.message_id, {})
            return Outcome(outgoing=out, transaction_id=txn.id)
        if action == "Cancel" and txn.state == "RetryPossible":
            # The supplier already stopped and waits for a retry: the hub closes it now.
            await self._set_state(conn, txn, "Cancelled", now)
            if txn.rota_position is not None:  # not when the hub itself offered the retry
                await self._close_entry(conn, txn, "cancelled", now)
                await self._score(conn, txn.supplier, open_requests=-1)
                out.append(self._to_supplier_action(txn, "Cancel", now, msg.note))
            out.append(self._to_requester(txn, "CancelResponse", "Cancelled", now,
                                          supplier=txn.supplier, answer="Y"))
        else:
            if action == "Cancel":
                await conn.execute("UPDATE ill_transaction SET cancel_requested_at = $2 "
                                   "WHERE id = $1", txn.id, now)
                await violations.check_cancellation_rate(conn, ctx.sender, now)
            if target != txn.state:
                await self._set_state(conn, txn, target, now)
            out.append(self._relay_to_supplier(txn, ctx.raw, ctx.message_id))
        out.append(self._event(txn, txn.state, target, f"action:{action}", now))
        await self._audit(conn, txn.id, ctx.sender, f"action:{action}", txn.state, target,
                          ctx.message_id, {"note": msg.note} if msg.note else {})
        return Outcome(outgoing=out, transaction_id=txn.id)

    # ---- deadlines -------------------------------------------------------------

    async def sweep_deadlines(self, pool: asyncpg.Pool, now: datetime | None = None,
                              batch: int = 100) -> int:
        """Cancel silent suppliers past their deadline and move on; returns how many.

        Safe with several hub processes: one sweeper per tick (advisory lock) and the
        rows themselves taken with SKIP LOCKED, so a transaction an intake is working
        on is left for the next tick.
        """
        now = now or self.clock()
        handled = 0
        while True:
            async with pool.acquire() as conn, conn.transaction():
                if not await try_transaction_lock(conn, Lock.DEADLINE_SWEEP):
                    return handled
                rows = await conn.fetch(
                    """SELECT * FROM ill_transaction WHERE deadline_at <= $1
                       ORDER BY deadline_at LIMIT $2 FOR UPDATE SKIP LOCKED""", now, batch)
                out: list[Outgoing] = []
                for row in rows:
                    out += await self._deadline_passed(conn, Txn(row), now)
                await enqueue(conn, out)
            handled += len(rows)
            if len(rows) < batch:
                async with pool.acquire() as conn, conn.transaction():
                    if await try_transaction_lock(conn, Lock.DEADLINE_SWEEP):
                        await violations.sweep_overdue_loans(conn, now)
                return handled

    async def _deadline_passed(self, conn: asyncpg.Connection, txn: Txn,
                               now: datetime) -> list[Outgoing]:
        await self._close_entry(conn, txn, "cancelled" if txn.cancel_requested_at
                                else "timed_out", now)
        if txn.cancel_requested_at:
            await self._score(conn, txn.supplier, open_requests=-1)
            await self._set_state(conn, txn, "Cancelled", now)
            await self._audit(conn, txn.id, "hub", "deadline", txn.state, "Cancelled", None,
                              {"supplier": txn.supplier, "cancelRequested": True})
            return [self._to_requester(txn, "CancelResponse", "Cancelled", now,
                                       supplier=txn.supplier, answer="Y",
                                       note=f"{txn.supplier} did not answer the cancellation "
                                            "by its deadline; the hub cancelled the request"),
                    self._event(txn, txn.state, "Cancelled", "deadline", now)]
        await self._score(conn, txn.supplier, timed_out=1, open_requests=-1)
        await violations.check_deadline_breaches(conn, txn.supplier, now)
        await self._audit(conn, txn.id, "hub", "deadline", txn.state, txn.state, None,
                          {"supplier": txn.supplier, "deadline": iso(txn.deadline_at)})
        out = [self._to_supplier_action(txn, "Cancel", now,
                                        "deadline passed without an answer; the hub has "
                                        "passed this request to another supplier")]
        out += await self._advance(conn, txn, now, f"{txn.supplier} did not answer by "
                                   f"{iso(txn.deadline_at)}")
        return out

    # ---- rota movement ---------------------------------------------------------

    async def _advance(self, conn: asyncpg.Connection, txn: Txn, now: datetime,
                       why: str) -> list[Outgoing]:
        nxt = await conn.fetchrow(
            """SELECT e.position FROM rota_entry e JOIN agency a ON a.symbol = e.supplier
               WHERE e.transaction_id = $1 AND e.position > $2 AND e.outcome = 'pending'
                 AND a.enabled
               ORDER BY e.position LIMIT 1""", txn.id, txn.rota_position or 0)
        if nxt is None:
            return await self._finish_unfilled(conn, txn, now, f"{why}; no other supplier "
                                               "left in the rota", actor="hub")
        return await self._forward(conn, txn, nxt["position"], now, note=why)

    async def _forward(self, conn: asyncpg.Connection, txn: Txn, position: int, now: datetime,
                       note: str | None, first: bool = False) -> list[Outgoing]:
        hours = self._deadline_hours(txn.service_level)
        deadline = now + timedelta(hours=hours)
        # Rota entry, transaction, scorecard, the supplier's day count and the audit row
        # in one statement.
        supplier = await conn.fetchval(
            _FORWARD, txn.id, position, now, deadline, now.astimezone(self.zone).date(),
            self.clock(), txn.state, iso(deadline))
        return self._forwarded(txn, txn.state, supplier, position, now, note, first)

    def _forwarded(self, txn: Txn, from_state: str, supplier: str, position: int,
                   now: datetime, note: str | None, first: bool) -> list[Outgoing]:
        """What a forward sends: the request to the supplier, news to the requester."""
        request = json.loads(txn.request)
        request["request"]["header"]["supplyingAgencyId"] = agency_id(supplier)
        forward = Outgoing(
            exchange=OUTBOUND, routing_key=supplier, body=request, message_type="request",
            correlation_id=txn.request_id, headers={"hub-transaction-id": txn.id},
            # Stable per (transaction, rota position): a re-sent forward is recognisable.
            message_id=f"{txn.id}/forward/{position}")
        tell = self._to_requester(
            txn, "RequestResponse" if first else "Notification", "ExpectToSupply", now,
            supplier=supplier, note=None if first else f"{note}; forwarded to {supplier}")
        return [forward, tell, self._event(txn, from_state, "ExpectToSupply", "forward", now,
                                           supplier=supplier)]

    async def _finish_unfilled(self, conn: asyncpg.Connection, txn: Txn, now: datetime,
                               why: str, actor: str) -> list[Outgoing]:
        await self._set_state(conn, txn, "Unfilled", now)
        await self._audit(conn, txn.id, actor, "rota exhausted", txn.state, "Unfilled", None,
                          {"why": why})
        return [self._to_requester(txn, "StatusChange", "Unfilled", now, supplier=None,
                                   note=why, reason_unfilled="NoSupplierAvailable"),
                self._event(txn, txn.state, "Unfilled", "rota exhausted", now)]

    def _deadline_hours(self, level: str | None) -> float:
        d = self.settings.deadlines
        return {"express": d.express, "rush": d.rush}.get((level or "").lower(), d.normal)

    # ---- storage helpers --------------------------------------------------------

    async def _lock(self, conn: asyncpg.Connection, txn_id: str) -> Txn:
        observability.transaction_id.set(txn_id)
        return Txn(await conn.fetchrow(
            "SELECT * FROM ill_transaction WHERE id = $1 FOR UPDATE", txn_id))

    async def _find(self, conn: asyncpg.Connection, requester: str, request_id: str,
                    kind: str) -> Txn:
        row = await conn.fetchrow(
            "SELECT * FROM ill_transaction WHERE requester = $1 AND request_id = $2 FOR UPDATE",
            requester, request_id)
        if row is None:
            raise Refusal(ErrorType.UNRECOGNISED_DATA_VALUE,
                          f"{kind}.header.requestingAgencyRequestId: no request {request_id!r} "
                          f"from {requester} is known to the hub")
        observability.transaction_id.set(row["id"])
        return Txn(row)

    async def _set_state(self, conn: asyncpg.Connection, txn: Txn, state: str, now: datetime,
                         returnable: bool | None = None) -> None:
        await conn.execute(
            """UPDATE ill_transaction SET state = $2::text, updated_at = $3::timestamptz,
                      returnable = coalesce($4::boolean, returnable),
                      deadline_at = CASE WHEN $2::text = ANY($5::text[]) THEN deadline_at END,
                      closed_at = CASE WHEN $2::text = ANY($6::text[]) THEN $3::timestamptz
                                  END
               WHERE id = $1""",
            txn.id, state, now, returnable, list(states.AWAITING_SUPPLIER),
            list(states.TERMINAL))

    async def _close_entry(self, conn: asyncpg.Connection, txn: Txn, outcome: str,
                           now: datetime) -> datetime | None:
        return await conn.fetchval(
            """UPDATE rota_entry SET outcome = $3, answered_at = $4
               WHERE transaction_id = $1 AND position = $2 RETURNING forwarded_at""",
            txn.id, txn.rota_position, outcome, now)

    async def _score(self, conn: asyncpg.Connection, supplier: str | None, *, forwarded: int = 0,
                     filled: int = 0, unfilled: int = 0, timed_out: int = 0,
                     open_requests: int = 0, turnaround: float = 0.0) -> None:
        if supplier is None:
            return
        await conn.execute(
            """INSERT INTO scorecard (supplier, forwarded, filled, unfilled, timed_out,
                                      turnaround_total, open_requests)
               VALUES ($1, $2, $3, $4, $5, $6, greatest($7, 0))
               ON CONFLICT (supplier) DO UPDATE SET
                   forwarded = scorecard.forwarded + $2, filled = scorecard.filled + $3,
                   unfilled = scorecard.unfilled + $4, timed_out = scorecard.timed_out + $5,
                   turnaround_total = scorecard.turnaround_total + $6,
                   open_requests = greatest(scorecard.open_requests + $7, 0),
                   updated_at = now()""",
            supplier, forwarded, filled, unfilled, timed_out, turnaround, open_requests)

    async def _audit(self, conn: asyncpg.Connection, txn_id: str, actor: str, event: str,
                     from_state: str | None, to_state: str | None, message_id: str | None,
                     detail: dict[str, Any]) -> None:
        await conn.execute(
            """INSERT INTO audit_log (transaction_id, at, actor, event, from_state, to_state,
                                      message_id, detail)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)""",
            txn_id, self.clock(), actor, event, from_state, to_state, message_id,
            json.dumps(detail, ensure_ascii=False, default=str))

    # ---- outgoing messages ------------------------------------------------------

    def _header(self, txn: Txn, supplier: str | None, now: datetime) -> dict[str, Any]:
        return {"supplyingAgencyId": agency_id(supplier or self.settings.hub_symbol),
                "requestingAgencyId": agency_id(txn.requester), "timestamp": iso(now),
                "requestingAgencyRequestId": txn.request_id}

    def _to_requester(self, txn: Txn, reason: str, status: str, now: datetime, *,
                      supplier: str | None, note: str | None = None, answer: str | None = None,
                      reason_unfilled: str | None = None) -> Outgoing:
        info: dict[str, Any] = {"reasonForMessage": reason}
        for key, value in (("answerYesNo", answer), ("note", note),
                           ("reasonUnfilled", reason_unfilled)):
            if value:
                info[key] = value
        body = {"supplyingAgencyMessage": {
            "header": self._header(txn, supplier, now), "messageInfo": info,
            "statusInfo": {"status": status, "lastChange": iso(now)}}}
        return Outgoing(exchange=OUTBOUND, routing_key=txn.requester, body=body,
                        message_type="supplyingAgencyMessage", correlation_id=txn.request_id,
                        headers={"hub-transaction-id": txn.id})

    def _to_supplier_action(self, txn: Txn, action: str, now: datetime,
                            note: str | None) -> Outgoing:
        body: dict[str, Any] = {"requestingAgencyMessage": {
            "header": self._header(txn, txn.supplier, now), "action": action}}
        if note:
            body["requestingAgencyMessage"]["note"] = note
        return Outgoing(exchange=OUTBOUND, routing_key=txn.supplier, body=body,
                        message_type="requestingAgencyMessage", correlation_id=txn.request_id,
                        headers={"hub-transaction-id": txn.id})

    def _to_requester_raw(self, txn: Txn, raw: dict[str, Any], message_id: str) -> Outgoing:
        return Outgoing(exchange=OUTBOUND, routing_key=txn.requester, body=raw,
                        message_type="supplyingAgencyMessage", correlation_id=txn.request_id,
                        headers={"hub-transaction-id": txn.id,
                                 "hub-original-message-id": message_id})

    def _relay_to_supplier(self, txn: Txn, raw: dict[str, Any], message_id: str) -> Outgoing:
        return Outgoing(exchange=OUTBOUND, routing_key=txn.supplier, body=raw,
                        message_type="requestingAgencyMessage", correlation_id=txn.request_id,
                        headers={"hub-transaction-id": txn.id,
                                 "hub-original-message-id": message_id})

    def _event(self, txn: Txn, from_state: str | None, to_state: str, event: str,
               now: datetime, supplier: str | None = None) -> Outgoing:
        return Outgoing(exchange=EVENTS, routing_key=f"transaction.{to_state}",
                        message_type="transactionEvent", correlation_id=txn.request_id,
                        headers={"hub-transaction-id": txn.id},
                        body={"transactionId": txn.id, "requester": txn.requester,
                              "supplier": supplier or txn.supplier, "event": event,
                              "from": from_state, "to": to_state, "at": iso(now)})


def _candidates_sql(types: str, values: str, extra: str, requester: str, kind: str,
                    today: str) -> str:
    """The suppliers that hold the item (an index-only probe of holding) and those the
    policy may add, with what ranking needs: region, scorecard, today's count, the fee
    schedule in force. `eligible` = an enabled supplier other than the requester."""
    return f"""
WITH held AS (
    SELECT h.symbol, array_agg(DISTINCT h.id_type) AS matched
    FROM unnest({types}::text[], {values}::text[]) AS q(id_type, id_value)
    JOIN holding h ON h.id_type = q.id_type AND h.id_value = q.id_value
    GROUP BY h.symbol),
cand AS (
    SELECT symbol, matched FROM held
    UNION ALL
    SELECT x, NULL FROM unnest({extra}::text[]) AS x WHERE x NOT IN (SELECT symbol FROM held))
SELECT c.symbol, c.matched, a.province, a.city,
       coalesce(a.enabled AND 'supplier' = ANY(a.roles), false) AS eligible,
       s.filled, s.unfilled, s.timed_out, s.turnaround_total,
       coalesce(s.open_requests, 0) AS open_requests,
       coalesce(d.forwarded, 0) AS forwarded_today,
       f.entry, f.supplier, f.service_kind, f.currency, f.effective_from, f.effective_to,
       f.fixed_minor, f.per_page_minor, f.per_hour_minor, f.assumed_pages, f.assumed_hours
FROM cand c
LEFT JOIN agency a ON a.symbol = c.symbol
LEFT JOIN scorecard s ON s.supplier = c.symbol
LEFT JOIN supplier_day d ON d.supplier = c.symbol AND d.day = {today}
LEFT JOIN fee_schedule f ON f.supplier = c.symbol AND f.service_kind = {kind}
     AND f.superseded_by IS NULL AND f.effective_from <= {today}
     AND (f.effective_to IS NULL OR {today} <= f.effective_to)
WHERE c.symbol <> {requester}"""


_REQUEST_FACTS = f"""
SELECT t.id AS earlier_id, t.confirmation AS earlier_confirmation,
       dup.id AS duplicate_of, dup.request_id AS duplicate_request_id,
       r.province AS requester_province, r.city AS requester_city,
       (SELECT max(version) FROM policy_version) AS policy_version, c.*
FROM agency r
LEFT JOIN ill_transaction t ON t.requester = $1 AND t.request_id = $2
LEFT JOIN LATERAL (
    SELECT id, request_id FROM ill_transaction
    WHERE requester = $1 AND patron_key = $3 AND item_key = $4 AND closed_at IS NULL
    LIMIT 1) dup ON true
LEFT JOIN LATERAL ({_candidates_sql("$5", "$6", "$7", "$1", "$8", "$9")}) c ON true
WHERE r.symbol = $1"""

_CANDIDATES_ONLY = _candidates_sql("'{}'", "'{}'", "$1", "$2", "$3", "$4")

_NEW_TRANSACTION = """
WITH t AS (
    INSERT INTO ill_transaction (id, requester, request_id, service_type, service_kind,
        service_level, returnable, state, request, confirmation, max_cost_minor, currency,
        patron_key, item_key, duplicate_of, policy_version, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'New', $8::jsonb, $9::jsonb, $10, $11, $12, $13,
            $14, $15, $16, $16)
    RETURNING *),
rota AS (
    INSERT INTO rota_entry (transaction_id, position, supplier, tier, score, reasons,
                            quote_minor, quote_currency)
    SELECT $1, e.n, e.v->>'supplier', (e.v->>'tier')::int, (e.v->>'score')::float8,
           ARRAY(SELECT jsonb_array_elements_text(e.v->'reasons')),
           (e.v->>'quote_minor')::bigint, e.v->>'quote_currency'
    FROM jsonb_array_elements($17::jsonb) WITH ORDINALITY AS e(v, n)),
excluded AS (
    INSERT INTO rota_excluded (transaction_id, supplier, reason)
    SELECT $1, x->>'supplier', x->>'reason' FROM jsonb_array_elements($18::jsonb) AS x),
audit AS (
    INSERT INTO audit_log (transaction_id, at, actor, event, from_state, to_state,
                           message_id, detail)
    VALUES ($1, $19, $2, 'request', NULL, 'New', $20, $21::jsonb))
SELECT * FROM t"""

# _NEW_TRANSACTION for a request forwarded at once: the transaction is written in
# ExpectToSupply with the first supplier, its first rota entry forwarded, the scorecard
# and day count bumped, and the audit trail gets both steps (New, then the forward).
_NEW_FORWARDED = """
WITH t AS (
    INSERT INTO ill_transaction (id, requester, request_id, service_type, service_kind,
        service_level, returnable, state, request, confirmation, max_cost_minor, currency,
        patron_key, item_key, duplicate_of, policy_version, created_at, updated_at,
        supplier, rota_position, deadline_at, quote_minor, quote_currency)
    SELECT $1, $2, $3, $4, $5, $6, $7, 'ExpectToSupply', $8::jsonb, $9::jsonb, $10, $11,
           $12, $13, $14, $15, $16, $16, first->>'supplier', 1, $22,
           (first->>'quote_minor')::bigint, first->>'quote_currency'
    FROM (SELECT $17::jsonb->0 AS first) f
    RETURNING *),
rota AS (
    INSERT INTO rota_entry (transaction_id, position, supplier, tier, score, reasons,
                            quote_minor, quote_currency, outcome, forwarded_at)
    SELECT $1, e.n, e.v->>'supplier', (e.v->>'tier')::int, (e.v->>'score')::float8,
           ARRAY(SELECT jsonb_array_elements_text(e.v->'reasons')),
           (e.v->>'quote_minor')::bigint, e.v->>'quote_currency',
           CASE WHEN e.n = 1 THEN 'forwarded' ELSE 'pending' END,
           CASE WHEN e.n = 1 THEN $16::timestamptz END
    FROM jsonb_array_elements($17::jsonb) WITH ORDINALITY AS e(v, n)),
excluded AS (
    INSERT INTO rota_excluded (transaction_id, supplier, reason)
    SELECT $1, x->>'supplier', x->>'reason' FROM jsonb_array_elements($18::jsonb) AS x),
score AS (
    INSERT INTO scorecard (supplier, forwarded, filled, unfilled, timed_out,
                           turnaround_total, open_requests)
    SELECT supplier, 1, 0, 0, 0, 0, 1 FROM t
    ON CONFLICT (supplier) DO UPDATE SET forwarded = scorecard.forwarded + 1,
           open_requests = greatest(scorecard.open_requests + 1, 0), updated_at = now()),
day AS (
    INSERT INTO supplier_day (supplier, day, forwarded) SELECT supplier, $23, 1 FROM t
    ON CONFLICT (supplier, day) DO UPDATE SET forwarded = supplier_day.forwarded + 1),
audit AS (
    INSERT INTO audit_log (transaction_id, at, actor, event, from_state, to_state,
                           message_id, detail)
    SELECT $1::text, $19::timestamptz, $2::text, 'request', NULL, 'New', $20::text,
           $21::jsonb
    UNION ALL
    SELECT $1, $19, 'hub', 'forward', 'New', 'ExpectToSupply', NULL,
           jsonb_build_object('supplier', supplier, 'position', 1, 'deadline', $24::text)
    FROM t)
SELECT * FROM t"""

_FORWARD = """
WITH e AS (
    UPDATE rota_entry SET outcome = 'forwarded', forwarded_at = $3
    WHERE transaction_id = $1 AND position = $2
    RETURNING supplier, quote_minor, quote_currency),
t AS (
    UPDATE ill_transaction SET supplier = e.supplier, rota_position = $2, deadline_at = $4,
           state = 'ExpectToSupply', updated_at = $3, quote_minor = e.quote_minor,
           quote_currency = e.quote_currency
    FROM e WHERE id = $1),
score AS (
    INSERT INTO scorecard (supplier, forwarded, filled, unfilled, timed_out,
                           turnaround_total, open_requests)
    SELECT supplier, 1, 0, 0, 0, 0, 1 FROM e
    ON CONFLICT (supplier) DO UPDATE SET forwarded = scorecard.forwarded + 1,
           open_requests = greatest(scorecard.open_requests + 1, 0), updated_at = now()),
day AS (
    INSERT INTO supplier_day (supplier, day, forwarded) SELECT supplier, $5, 1 FROM e
    ON CONFLICT (supplier, day) DO UPDATE SET forwarded = supplier_day.forwarded + 1),
audit AS (
    INSERT INTO audit_log (transaction_id, at, actor, event, from_state, to_state,
                           message_id, detail)
    SELECT $1, $6, 'hub', 'forward', $7, 'ExpectToSupply', NULL,
           jsonb_build_object('supplier', supplier, 'position', $2::int, 'deadline', $8::text)
    FROM e)
SELECT supplier FROM e"""


def _sent_via_ftp(msg: SupplyingAgencyMessage) -> bool:
    info = msg.delivery_info
    return bool(info and (info.sent_via or "").strip().upper() == "FTP")


def _patron_contact(request: dict[str, Any]) -> tuple[str | None, str | None]:
    """The reader's e-mail address and name from patronInfo (ISO 18626 addresses)."""
    patron = request.get("patronInfo") or {}
    name = f"{patron.get('surname') or ''}{patron.get('givenName') or ''}".strip() or None
    for address in patron.get("address") or []:
        electronic = (address or {}).get("electronicAddress") or {}
        if str(electronic.get("electronicAddressType", "")).lower() in ("email", "e-mail"):
            return electronic.get("electronicAddressData"), name
    return None, name


def _patron_key(raw: dict[str, Any]) -> str | None:
    patron = raw.get("patronInfo") or {}
    if not isinstance(patron, dict):
        return None
    if patron.get("patronId"):
        return f"id:{patron['patronId']}"
    name = f"{patron.get('surname') or ''}{patron.get('givenName') or ''}".strip()
    return f"name:{name.casefold()}" if name else None


def _brief(raw: dict[str, Any]) -> dict[str, Any]:
    """What the audit keeps of a supplier message: its info, not the whole body."""
    inner = next(iter(raw.values()))
    return {k: inner[k] for k in ("messageInfo", "statusInfo", "deliveryInfo") if k in inner}


async def explain(conn: asyncpg.Connection, txn_id: str) -> list[str]:
    """A transaction's full path for operators: rota with reasons, exclusions, audit trail."""
    txn = await conn.fetchrow("SELECT * FROM ill_transaction WHERE id = $1", txn_id)
    if txn is None:
        raise LookupError(f"no transaction {txn_id}")
    lines = [f"transaction {txn['id']}: request {txn['request_id']!r} from {txn['requester']}",
             f"  {txn['service_type']} / {txn['service_kind']}, level "
             f"{txn['service_level'] or 'Normal'}; state {txn['state']}; current supplier "
             f"{txn['supplier'] or '-'}; policy version {txn['policy_version'] or 'default'}"]
    if txn["duplicate_of"]:
        lines.append(f"  flagged: duplicate of open transaction {txn['duplicate_of']}")
    lines.append("rota:")
    for e in await conn.fetch("SELECT * FROM rota_entry WHERE transaction_id = $1 "
                              "ORDER BY position", txn_id):
        lines.append(f"  {e['position']}. {e['supplier']}  tier {e['tier']}  score "
                     f"{e['score']:.3f}  [{e['outcome']}]")
        lines += [f"       - {r}" for r in e["reasons"]]
    excluded = await conn.fetch("SELECT supplier, reason FROM rota_excluded "
                                "WHERE transaction_id = $1 ORDER BY supplier", txn_id)
    if excluded:
        lines.append("excluded:")
        lines += [f"  {x['supplier']}: {x['reason']}" for x in excluded]
    lines.append("audit trail:")
    for a in await conn.fetch("SELECT * FROM audit_log WHERE transaction_id = $1 ORDER BY id",
                              txn_id):
        detail = json.loads(a["detail"]) if a["detail"] else {}
        lines.append(f"  {iso(a['at'])}  {a['actor']:<20} {a['event']:<24} "
                     f"{a['from_state'] or '-'} -> {a['to_state'] or '-'}"
                     + (f"  {json.dumps(detail, ensure_ascii=False)}" if detail else ""))
    return lines


__all__ = ["Dispatcher", "PolicyError", "explain", "load_policy"]
