"""Finance messages agencies send the hub over AMQP (issue 17), beside ISO 18626.

ISO 18626 has no message for settlement, so these are the hub's own JSON contract,
published like every other message on `ill.inbound` with the AMQP `type` property
naming the kind (and the same `user_id` and `message_id` rules). The hub answers on the
agency's queue with `<kind>Answer`, correlated by the message's `message_id`.

    type financeDispute   {"dispute": {"reference": "ILL-2026-10-R12-A3F9C1-CNY",
                                       "postingId": 123, "reason": "..."}}
    answer               {"disputeAnswer": {"status": "opened" | "refused",
                                            "disputeId": 7, "reference": ...,
                                            "postingId": ..., "amount": "20.00",
                                            "currencyCode": "CNY",
                                            "error": {"code": "window_closed",
                                                      "message": "..."}}}
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field


class FinanceKind(StrEnum):
    DISPUTE = "financeDispute"
    DISPUTE_ANSWER = "financeDisputeAnswer"


FINANCE_INBOUND_KINDS = frozenset({FinanceKind.DISPUTE.value})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class DisputeLine(_Strict):
    reference: str = Field(min_length=1, max_length=35)
    posting_id: int = Field(alias="postingId", gt=0)
    reason: str = Field(min_length=1, max_length=2000)


class FinanceDispute(_Strict):
    dispute: DisputeLine


class AnswerError(_Strict):
    code: str
    message: str


class DisputeAnswerBody(_Strict):
    status: str                    # opened | refused
    reference: str | None = None
    posting_id: int | None = Field(default=None, alias="postingId")
    dispute_id: int | None = Field(default=None, alias="disputeId")
    amount: str | None = None
    currency_code: str | None = Field(default=None, alias="currencyCode")
    error: AnswerError | None = None


class DisputeAnswer(_Strict):
    dispute_answer: DisputeAnswerBody = Field(alias="disputeAnswer")
