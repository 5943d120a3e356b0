"""A borrowing library's trust score (issue 19 item 4): the lenders' reason to say yes.

From its book loans of the last WINDOW_DAYS (broker/dispatch/loans.py keeps them in
`loan`): each loan returned late costs min(1, days late / late_days_full), an open loan
past its due date counts its days so far, and each lost book that the borrower paid for
(a settled `lost` claim with the requester as payer, settlement/claims.py) costs
loss_weight. The costs are shared over its loans plus `prior_loans` imaginary good ones:

    trust = max(0, 1 - (sum of late costs + loss_weight * losses) / (loans + prior_loans))

1.0 is a clean record (and a new borrower's); a policy rule's `min_borrower_trust` keeps
the lenders it names from a borrower below it (broker/policy.py). The history is
counted by one SQL fragment (`history_sql`), read by dispatch with a request's facts in
the same round trip and by `run.py agency trust`; the formula is `trust` below, the
only place it is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from infra.database import Connection, fetch_one
from schemas.settings import Loans

# Loans started this long ago or less count.
WINDOW_DAYS = 730


@dataclass(frozen=True)
class History:
    loans: int
    late_days: tuple[int, ...]   # one per loan back (or due) late, days late
    losses: int                  # lost books the borrower paid for

    @classmethod
    def of_row(cls, row: Any, prefix: str = "") -> History:
        return cls(loans=row[f"{prefix}loans"] or 0,
                   late_days=tuple(row[f"{prefix}late_days"] or ()),
                   losses=row[f"{prefix}losses"] or 0)


def trust(history: History, terms: Loans) -> float:
    """The score 0..1 (three decimals)."""
    late = sum(min(1.0, d / terms.trust_late_days_full) for d in history.late_days)
    penalty = late + terms.trust_loss_weight * history.losses
    shared = history.loans + terms.trust_prior_loans
    if shared <= 0:
        return 1.0 if penalty <= 0 else 0.0
    return round(max(0.0, 1.0 - penalty / shared), 3)


def describe(history: History, score: float) -> str:
    """How the score came about, for explain and `agency trust`."""
    late = len(history.late_days)
    days = sum(history.late_days)
    return (f"borrower trust {score:.2f}: {history.loans} loan(s) in {WINDOW_DAYS} days, "
            f"{late} late ({days} day(s) in all), {history.losses} lost and paid for")


def history_sql(requester: str, today: str) -> str:
    """One row (loans, late_days int[], losses) for the borrower `requester` as of the
    consortium-local day `today` (both SQL expressions, e.g. parameters)."""
    return f"""
SELECT count(*)::int AS loans,
       coalesce(array_agg(h.late) FILTER (WHERE h.late > 0), '{{}}')::int[] AS late_days,
       -- settlement publishes settled claims as a view (migration 0030)
       (SELECT count(*)::int FROM loan_claim_settled c
        WHERE c.requester = {requester} AND c.kind = 'lost'
          AND c.payer = 'requester') AS losses
FROM (SELECT CASE WHEN l.returned_at IS NOT NULL THEN l.days_late
                  WHEN t.closed_at IS NULL AND t.due_at::date < {today}
                       THEN {today} - t.due_at::date
                  ELSE 0 END AS late
      FROM ill_transaction t JOIN loan l ON l.transaction_id = t.id
      WHERE t.requester = {requester}
        AND l.loaned_at >= ({today} - {WINDOW_DAYS})::timestamptz) h"""


HISTORY = history_sql("$1", "$2::date")
AGENCY_EXISTS = "SELECT symbol FROM agency WHERE symbol = $1"
BORROWERS = "SELECT symbol FROM agency WHERE 'requester' = ANY(roles) ORDER BY symbol"


async def borrower_history(conn: Connection, requester: str, today: date) -> History:
    return History.of_row(await fetch_one(conn, HISTORY, requester, today))
