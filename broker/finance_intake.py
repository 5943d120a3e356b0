"""Finance messages from agencies (issue 17): a library disputes a statement line over
AMQP. The intake hands a delivery here when its `type` is a finance kind
(schemas/finance_messages.py), after the same gate as ISO 18626 messages (a known
sender, a fresh message_id); the dispute and the answer are written in the intake's
transaction, so the answer leaves only if the dispute committed.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

from pydantic import ValidationError

from infra.database import Connection
from infra.outbox import Outgoing
from schemas.finance_messages import (
    AnswerError,
    DisputeAnswer,
    DisputeAnswerBody,
    FinanceDispute,
    FinanceKind,
)
from schemas.wire import OUTBOUND
from settlement import disputes

BADLY_FORMED = "badly_formed"


def _answer(**body: Any) -> DisputeAnswer:
    """An answer from its wire names (camelCase, as the contract spells them)."""
    return DisputeAnswer.model_validate({"disputeAnswer": DisputeAnswerBody.model_validate(
        {k: v for k, v in body.items() if v is not None})})


def _refused(code: str, message: str, line: Any = None) -> DisputeAnswer:
    return _answer(status="refused", reference=getattr(line, "reference", None),
                   postingId=getattr(line, "posting_id", None),
                   error=AnswerError(code=code, message=message))


def _validation_message(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def answer_dispute(conn: Connection, body: bytes, sender: str, *,
                         today: datetime.date) -> tuple[DisputeAnswer, Any]:
    """Open the dispute a financeDispute message asks for; (the answer, the parsed body
    to keep in the inbox, or None when it was not JSON)."""
    try:
        raw = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return _refused(BADLY_FORMED, f"the body is not JSON: {exc}"), None
    try:
        line = FinanceDispute.model_validate(raw).dispute
    except ValidationError as exc:
        return _refused(BADLY_FORMED, _validation_message(exc)), raw
    try:
        opened = await disputes.open_dispute(
            conn, reference=line.reference, posting_id=line.posting_id, agency=sender,
            reason=line.reason, actor=sender, channel=disputes.Channel.AMQP, today=today)
    except disputes.DisputeRefused as exc:
        return _refused(exc.code.value, exc.message, line), raw
    return _answer(status="opened", reference=opened.reference, postingId=opened.posting_id,
                   disputeId=opened.id, amount=opened.amount.amount_text(),
                   currencyCode=opened.amount.currency), raw


def answer_message(answer: DisputeAnswer, to: str, correlation_id: str | None) -> Outgoing:
    return Outgoing(exchange=OUTBOUND, routing_key=to,
                    body=answer.model_dump(by_alias=True, exclude_none=True, mode="json"),
                    message_type=FinanceKind.DISPUTE_ANSWER.value,
                    correlation_id=correlation_id)
