"""The API's response bodies as pydantic models: the code builds its answers with them,
and the OpenAPI document (web/api/openapi.py) takes its schemas from them, so the two
cannot drift apart.

Amounts are integers in minor units (分 for CNY) with their ISO 4217 currency, never
floats. Times are ISO 8601 instants in UTC. Text is UTF-8, Chinese as is.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class Statement(_Body):
    """One agency's statement of one closed settlement period."""

    period: str = Field(pattern="^[0-9]{4}-(0[1-9]|1[0-2])$")
    agency: str
    name: str = Field(description="the agency's name as the statement prints it")
    totals: list[Net]
    files: StatementFiles


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


# Every body the API answers with, for the OpenAPI document's components.
MODELS: tuple[type[BaseModel], ...] = (Problem, Transaction, TransactionPage, TrailEvent,
                                       TransactionDetail, Net, StatementFiles, Statement,
                                       StatementPage, Budget, BudgetList)
