"""A supplying library's ILL system: it takes the hub's forwards and answers them.

It keeps its books (`SupplierBook`: every forward and the message_ids it came under,
what it supplied, the hub's refusals of its messages), answers the requester's
Cancel, Renew and ShippedReturn, and offers its script the means to answer a
request: `unfilled`, `will_supply`, `lend`, `deliver_copy` (a PDF uploaded to the
hub's FTP drop) and `say` for anything else. Whether and when it answers is the
script's (`SupplierScript.work`).
"""

from __future__ import annotations

import re
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from illclient.client import Received
from sim.messages import (
    error_value,
    is_ok,
    later_iso,
    now_iso,
    supplying_message,
    symbol_of,
)
from sim.parties import Parties
from sim.pdf import document_pdf

_POSITION = re.compile(r"/forward/(\d+)$")
# The hub refuses a supplier's answer after its deadline moved the request on.
LATE = "is not the current supplier"


@dataclass
class Job:
    """One forwarded request as the supplying library's system keeps it."""

    transaction: str
    requester: dict[str, str]        # ISO agency id of the requester
    request_id: str
    body: dict[str, Any]
    kind: str                        # DocumentDelivery | BookLoan | PayPerView ...
    position: int = 0                # the supplier's place in the hub's rota
    retry: bool = False
    silent: bool = False             # the script decided never to answer
    cancelled: bool = False
    delivered: bool = False


@dataclass
class SupplierBook:
    """What one supplier's system received and did."""

    # (transaction, rota position) -> the message_ids it arrived under
    forwards: dict[tuple[str, int], set[str]] = field(default_factory=lambda: defaultdict(set))
    # (requester, request id) -> the hub transactions it arrived as
    transactions: dict[tuple[str, str], set[str]] = field(
        default_factory=lambda: defaultdict(set))
    supplied: dict[str, str] = field(default_factory=dict)   # transaction -> status sent
    refused: list[str] = field(default_factory=list)          # ERROR answers, not late ones
    uploads: int = 0
    upload_retries: int = 0


class SupplierScript:
    """How a supplying library answers; `work` is called once per forward."""

    async def work(self, supplier: Supplier, job: Job) -> None:
        raise NotImplementedError

    async def returned(self, supplier: Supplier, job: Job) -> None:
        """The requester shipped the book back: here it arrives at once."""
        await supplier.say(job, "LoanCompleted", "StatusChange")


class Supplier:
    def __init__(self, parties: Parties, symbol: str, script: SupplierScript, *,
                 label: str | None = None, name: str | None = None) -> None:
        self.parties = parties
        self.symbol = symbol
        self.label = label or symbol
        self.name = name or symbol
        self.script = script
        self.book = SupplierBook()
        self.jobs: dict[tuple[str, str], Job] = {}
        parties.suppliers[symbol] = self

    async def handle(self, msg: Received) -> None:
        content = msg.content if isinstance(msg.body, dict) else {}
        if msg.kind == "supplyingAgencyMessageConfirmation":
            if not is_ok(content):
                self._refused(error_value(content))
            return
        header = content.get("header", {})
        key = (symbol_of(header.get("requestingAgencyId")) or "",
               header.get("requestingAgencyRequestId", ""))
        txn = msg.headers.get("hub-transaction-id", "")
        if msg.kind == "request":
            self._take(msg, content, key, txn)
            return
        job = self.jobs.get(key) or Job(txn, header.get("requestingAgencyId", {}), key[1], {},
                                        "")
        action = content.get("action")
        if action == "Cancel":
            await self._cancel(job, relayed="hub-original-message-id" in msg.headers)
        elif action == "ShippedReturn":
            self.parties.tasks.spawn(self.script.returned(self, job),
                                     f"{self.label} awaiting a return")
        elif action == "Renew":
            await self.say(job, "Loaned", "RenewResponse", answerYesNo="Y", due=later_iso(42))

    def _take(self, msg: Received, content: dict[str, Any], key: tuple[str, str],
              txn: str) -> None:
        m = _POSITION.search(msg.message_id or "")
        position = int(m[1]) if m else 0
        self.book.forwards[(txn, position)].add(msg.message_id or "")
        self.book.transactions[key].add(txn)
        self.parties.stats.forwarded += 1
        service = content.get("serviceInfo", {})
        kind = ((content.get("hubExtensions") or {}).get("serviceKind")
                or ("BookLoan" if service.get("serviceType") == "Loan" else "DocumentDelivery"))
        job = Job(txn, content.get("header", {}).get("requestingAgencyId", {}), key[1],
                  msg.body, kind, position, retry=service.get("requestType") == "Retry")
        self.jobs[key] = job
        self.parties.tasks.spawn(self.script.work(self, job),
                                 f"{self.label} working on {key[1]}")

    async def _cancel(self, job: Job, *, relayed: bool) -> None:
        already = job.cancelled
        job.cancelled = True
        # The requester's own Cancel, relayed: answer it. The hub's Cancel after a
        # deadline needs no answer (the request has moved on).
        if relayed and not job.silent and not job.delivered and not already:
            await self.say(job, "Cancelled", "CancelResponse", answerYesNo="Y")

    def _refused(self, error: str) -> None:
        if LATE in error:
            self.parties.stats.late_refusals += 1
        else:
            self.book.refused.append(error)
        self.parties.stats.errors.append(f"{self.label} message refused: {error}")

    # ---- answers ------------------------------------------------------------------------

    async def say(self, job: Job, status: str, reason: str, *, due: str | None = None,
                  delivery: dict[str, Any] | None = None, **info: Any) -> None:
        """Send a status about `job` (nothing but the cancellation's own after a Cancel)."""
        if job.cancelled and status not in ("Cancelled", "LoanCompleted"):
            return
        body = supplying_message(self.symbol, job.requester, job.request_id, status, reason,
                                 due=due, delivery=delivery, **info)
        if status in ("CopyCompleted", "Loaned"):
            self.book.supplied[job.transaction] = status
        message_id = (f"{job.transaction}/{self.symbol}/{status}/{reason}" if job.transaction
                      else None)
        await self.parties.send(self.symbol, "supplyingAgencyMessage", body, message_id)

    async def unfilled(self, job: Job, reason: str, **info: Any) -> None:
        await self.say(job, "Unfilled", "RequestResponse", answerYesNo="N",
                       reasonUnfilled=reason, **info)

    async def will_supply(self, job: Job) -> None:
        await self.say(job, "WillSupply", "RequestResponse", answerYesNo="Y")

    async def lend(self, job: Job, *, due_days: float, item_id: str) -> None:
        await self.say(job, "Loaned", "StatusChange", due=later_iso(due_days), delivery={
            "dateSent": now_iso(), "sentVia": "EMS", "itemId": item_id})
        job.delivered = True

    async def deliver_copy(self, job: Job) -> None:
        """Scan the article (a PDF of its citation), upload it, say CopyCompleted."""
        name = f"{job.transaction or uuid.uuid4().hex}-{job.position}.pdf"
        pdf = document_pdf(job.body, self.symbol, self.name, self.parties.names)
        retried = await self.parties.uploader.upload(self.symbol, name, pdf)
        self.book.uploads += 1
        self.book.upload_retries += retried
        self.parties.stats.uploads += 1
        await self.say(job, "CopyCompleted", "StatusChange", delivery={
            "dateSent": now_iso(), "sentVia": "FTP", "itemId": name, "deliveredFormat": "PDF"})
        job.delivered = True
