"""The API's response bodies as pydantic models: the code builds its answers with them,
and the OpenAPI document (web/api/openapi.py) takes its schemas from them, so the two
cannot drift apart.

Amounts are integers in minor units (分 for CNY) with their ISO 4217 currency, never
floats; but the dues, payments, disputes and aging of issue 17 carry the shape of the
`ill.finance` messages (`dues.Position.to_json`, `disputes.Dispute.to_json`), so a
library system reads one shape from AMQP and from here: camelCase names, amounts as
decimal strings in the currency's major units ("1250.00", as ISO 18626 monetaryValue),
still never floats. Times are ISO 8601 instants in UTC. Text is UTF-8, Chinese as is.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from settlement.calendar import PERIOD_PATTERN
from settlement.disputes import Channel, Outcome
from settlement.dues import Direction, DueState, EventKind

AMOUNT = r"^[0-9]+(\.[0-9]+)?$"
SIGNED_AMOUNT = r"^-?[0-9]+(\.[0-9]+)?$"
Day = date      # a field named `date` cannot be annotated with the name it shadows
CURRENCY = "^[A-Z]{3}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Problem(_Body):
    """RFC 9457 problem details: every error of the API has this shape."""

    type: str = Field(description="a URI naming the kind of problem")
    title: str = Field(description="the kind of problem, the same for every occurrence")
    status: int = Field(description="the HTTP status code")
    detail: str = Field(description="what went wrong this time, and what to do about it")
    parameter: str | None = Field(default=None,
                                  description="the query parameter at fault (400 only)")
    code: str | None = Field(default=None, description="why settlement refused a dispute "
                             "or its resolution (no_statement, window_closed, "
                             "already_disputed, not_a_line, ...; see docs/api.md)")


class Transaction(_Body):
    """An ILL transaction as the hub keeps it (no patron data)."""

    id: str = Field(description="the hub's transaction id")
    requester: str = Field(description="the requesting agency's symbol")
    request_id: str = Field(description="the requester's own request id")
    supplier: str | None = Field(description="the current supplier, if any")
    state: str = Field(description="ISO 18626 status, or the hub's New/Received/ShippedReturn")
    service_type: str
    service_kind: str
    service_level: str | None
    title: str | None = Field(description="the requested item's title")
    created_at: datetime
    updated_at: datetime
    closed_at: datetime | None
    due_at: datetime | None


class TransactionPage(_Body):
    items: list[Transaction]
    next_cursor: str | None = Field(
        description="pass as `cursor` for the next page; null on the last page")


class TrailEvent(_Body):
    """One line of a transaction's audit trail."""

    at: datetime
    actor: str = Field(description="who caused it: an agency's symbol, hub, or a person")
    event: str
    from_state: str | None
    to_state: str | None
    detail: dict[str, Any]


class TransactionDetail(Transaction):
    trail: list[TrailEvent]


class Net(_Body):
    """A statement's figures in one currency; net = earned - owed + subsidy."""

    currency: str = Field(pattern="^[A-Z]{3}$")
    net_minor: int = Field(description="positive: the centre pays the agency; negative: "
                                       "the agency pays the centre")
    earned_minor: int
    owed_minor: int
    subsidy_minor: int
    lines: int


class StatementFiles(_Body):
    csv: str = Field(description="path of the CSV statement under this API")
    pdf: str = Field(description="path of the PDF statement under this API")


class Due(_Body):
    """What a statement asks to be paid, per currency, and what is left of it (the
    `statement` of an `ill.finance` message)."""

    dueId: int
    runId: int
    period: str = Field(pattern=PERIOD_PATTERN)
    agency: str
    direction: Direction = Field(description="to_centre: the agency pays the centre; "
                                             "to_agency: the centre pays the agency")
    currencyCode: str = Field(pattern=CURRENCY)
    amount: str = Field(pattern=AMOUNT)
    paid: str = Field(pattern=AMOUNT)
    outstanding: str = Field(pattern=AMOUNT)
    disputed: str = Field(pattern=AMOUNT, description="outstanding under open dispute: "
                                                      "not asked for while it is open")
    reference: str = Field(pattern="^[A-Z0-9-]{1,35}$",
                           description="what a payer quotes with the payment")
    issuedOn: date
    dueOn: date
    disputeUntil: date = Field(description="its lines may be disputed until this day")
    state: DueState


class Statement(_Body):
    """One agency's statement of one closed settlement period."""

    period: str = Field(pattern=PERIOD_PATTERN, description="YYYY-MM, YYYY-B1..B6, "
                        "YYYY-Q1..Q4 or YYYY, as the settlement calendar had it")
    agency: str
    name: str = Field(description="the agency's name as the statement prints it")
    totals: list[Net]
    files: StatementFiles
    dues: list[Due] = Field(default_factory=list, description="what the statement asks "
                            "to be paid, one per currency whose net is not zero")


class StatementPage(_Body):
    items: list[Statement]
    next_cursor: str | None


class Budget(_Body):
    """A subsidy budget: how much of it is spent in a period."""

    name: str
    requester: str | None = Field(description="the requester whose budget it is; null: "
                                              "the consortium's shared budget")
    period: str = Field(description="YYYY-MM, or total for a budget that never renews")
    currency: str = Field(pattern="^[A-Z]{3}$")
    limit_minor: int
    spent_minor: int
    remaining_minor: int


class BudgetList(_Body):
    period: str
    items: list[Budget]


class DueEvent(_Body):
    """One line of a due's history."""

    id: int
    kind: EventKind
    stage: str | None = Field(description="a reminder's stage: before, overdue-1, ...")
    amount: str | None = Field(pattern=AMOUNT)
    actor: str
    at: datetime
    detail: dict[str, Any]


class Dispute(_Body):
    """A dispute of one line of a statement (the `dispute` of an `ill.finance` message)."""

    disputeId: int
    reference: str
    postingId: int = Field(description="the line: a ledger posting the run settled")
    transactionId: str
    event: str
    agency: str = Field(description="the requester, who disputes")
    supplier: str
    amount: str = Field(pattern=AMOUNT, description="the line's effect on the "
                                                    "requester's net (its patron share)")
    currencyCode: str = Field(pattern=CURRENCY)
    reason: str
    openedBy: str
    channel: Channel
    openedAt: datetime
    state: Literal["open", "accepted", "rejected"]
    adjustment: str | None = Field(pattern=AMOUNT, description="credited to the requester "
                                   "in the next run, when accepted")
    resolution: str | None
    resolvedBy: str | None
    resolvedAt: datetime | None
    reversalPosting: int | None
    chargePosting: int | None


class StatementLine(_Body):
    """A line of a statement: a ledger posting its run settled for the agency."""

    postingId: int
    transactionId: str
    event: str
    kind: Literal["charge", "reversal"]
    requester: str
    supplier: str
    serviceKind: str
    title: str | None
    fee: str = Field(pattern=SIGNED_AMOUNT, description="negative in a reversal")
    subsidy: str = Field(pattern=SIGNED_AMOUNT)
    effect: str = Field(pattern=SIGNED_AMOUNT, description="on the agency's net: the fee "
                        "earned as supplier, minus the patron share paid as requester")
    localDate: date
    disputable: bool = Field(description="a charge the agency may still dispute (the "
                                         "window aside)")
    disputeId: int | None
    disputeState: Literal["open", "accepted", "rejected"] | None


class DueDetail(Due):
    history: list[DueEvent]
    lines: list[StatementLine]
    disputes: list[Dispute]


class DisputeList(_Body):
    items: list[Dispute]


class AgingItem(_Body):
    """What one agency owes the centre, or is owed, by days since issue."""

    agency: str
    currencyCode: str = Field(pattern=CURRENCY)
    owedToCentre: dict[str, str] = Field(description="per bucket (0-30, 31-60, 61-90, 90+)")
    owedByCentre: dict[str, str]
    overdue: str = Field(pattern=AMOUNT, description="owed to the centre, past due, not "
                                                     "disputed")
    disputed: str = Field(pattern=AMOUNT)


class Aging(_Body):
    date: Day = Field(description="aged as of this day (the consortium's today)")
    buckets: list[str]
    items: list[AgingItem]


class Payment(_Body):
    paymentId: int
    amount: str = Field(pattern=AMOUNT)
    paidOn: date
    bankReference: str | None


class PaymentRecorded(_Body):
    payment: Payment
    statement: Due


# ---- request bodies -------------------------------------------------------------------

class NewDispute(_Body):
    """POST /disputes: dispute one line of a statement of an agency in reach."""

    reference: str = Field(max_length=35, description="the statement's reference")
    postingId: int = Field(description="the line (`lines` of GET /statements/{reference})")
    reason: str = Field(max_length=2000)


class Resolution(_Body):
    """POST /disputes/{id}/resolution: accept or reject, with the reason."""

    outcome: Outcome
    reason: str = Field(max_length=2000)
    correctedFee: str | None = Field(default=None, pattern=AMOUNT, description="accepting "
                                     "only: charge the line again at this fee")


class NewPayment(_Body):
    """POST /statements/{reference}/payments: money that moved against a statement."""

    amount: str = Field(pattern=AMOUNT, description="in the statement's currency")
    paidOn: date | None = Field(default=None, description="default: today")
    bankReference: str | None = Field(default=None, max_length=140)


# Every body the API answers with, for the OpenAPI document's components.
MODELS: tuple[type[BaseModel], ...] = (Problem, Transaction, TransactionPage, TrailEvent,
                                       TransactionDetail, Net, StatementFiles, Statement,
                                       StatementPage, Budget, BudgetList, Due, DueEvent,
                                       Dispute, StatementLine, DueDetail, DisputeList,
                                       AgingItem, Aging,
                                       Payment, PaymentRecorded)
# Every body the API reads.
REQUESTS: tuple[type[BaseModel], ...] = (NewDispute, Resolution, NewPayment)
