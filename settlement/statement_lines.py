"""The lines of one agency's statement, read back from the ledger (issue 17): what a
library sees when it checks a statement and disputes one of its lines.

A statement's lines are the postings its run settled (the run's region: migration
0010, `record.run_scope`) in which the agency is the requester or the supplier, in
the due's currency: the same postings `disputes.SELECT_LINE` accepts as a line. Each
comes with whether it may still be disputed by that agency (the checks of
`disputes.open_dispute` that can be told without trying; the window and the rest are
decided there) and the dispute of it, if any.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from infra.database import Connection
from schemas.money import Money
from settlement.dues import Position
from settlement.record import run_scope

# The region of the run ($1 posting_max, $2 cutoff, $3 prev_max, $4 prev_cutoff), the
# agency $5's postings in the currency $6, with the dispute of each under the due $7.
SELECT_STATEMENT_LINES = """SELECT p.id, p.transaction_id, p.event, p.kind, p.requester,
        p.supplier, p.service_kind, p.title, p.fee_minor, p.subsidy_minor,
        p.patron_share_minor, p.local_date,
        (SELECT x.id FROM ledger_posting x WHERE x.reverses = p.id) AS reversed_by,
        s.id AS dispute_id, r.outcome AS dispute_outcome
    FROM ledger_posting p
    LEFT JOIN statement_dispute s ON s.posting_id = p.id AND s.due_id = $7
    LEFT JOIN dispute_resolution r ON r.dispute_id = s.id
    WHERE p.id <= $1 AND p.local_date <= $2 AND (p.id > $3 OR p.local_date > $4)
      AND $5 IN (p.requester, p.supplier) AND p.currency = $6
    ORDER BY p.local_date, p.id"""


@dataclass(frozen=True)
class StatementLine:
    posting_id: int
    transaction_id: str
    event: str
    kind: str                   # charge | reversal
    requester: str
    supplier: str
    service_kind: str
    title: str | None
    fee: Money
    subsidy: Money
    patron_share: Money
    local_date: datetime.date
    reversed_by: int | None
    dispute_id: int | None
    dispute_state: str | None   # open | accepted | rejected

    def disputable_by(self, agency: str) -> bool:
        """A charge the agency was asked to pay, not reversed, not disputed yet."""
        return (self.kind == "charge" and self.requester == agency
                and self.patron_share.minor > 0 and self.reversed_by is None
                and self.dispute_id is None)

    def effect(self, agency: str) -> Money:
        """The line's effect on the agency's net: earned as supplier, paid as requester."""
        return self.fee if self.supplier == agency else -self.patron_share


def _line(r: Any, currency: str) -> StatementLine:
    dispute_state = None
    if r["dispute_id"] is not None:
        dispute_state = r["dispute_outcome"] or "open"
    return StatementLine(
        posting_id=r["id"], transaction_id=r["transaction_id"], event=r["event"],
        kind=r["kind"], requester=r["requester"], supplier=r["supplier"],
        service_kind=r["service_kind"], title=r["title"], fee=Money(r["fee_minor"], currency),
        subsidy=Money(r["subsidy_minor"], currency),
        patron_share=Money(r["patron_share_minor"], currency), local_date=r["local_date"],
        reversed_by=r["reversed_by"], dispute_id=r["dispute_id"], dispute_state=dispute_state)


async def statement_lines(conn: Connection, due: Position) -> list[StatementLine]:
    """The lines of the statement a due was issued for, oldest first."""
    scope = await run_scope(conn, due.run_id)
    rows = await conn.fetch(SELECT_STATEMENT_LINES, scope.posting_max, scope.cutoff,
                            scope.prev_max, scope.prev_cutoff, due.agency, due.currency,
                            due.due_id)
    return [_line(r, due.currency) for r in rows]


__all__ = ["SELECT_STATEMENT_LINES", "StatementLine", "statement_lines"]
