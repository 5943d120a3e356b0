"""What the pages and the API read of statements' dues, payments and disputes, kept to
the reader's `Reach` (issue 17).

Settlement publishes its readers by agency (`dues.positions`, `disputes.disputes`) or
for everyone; the reach is applied here, once, for the finance pages, the library's
pages and the API: whoever reaches everything reads everything in one query; anyone
else reads agency by agency, only the agencies in reach that have dues (listed by
`AGENCIES_WITH_DUES`). Something out of reach is never returned, exactly as if it did
not exist.
"""

from __future__ import annotations

import datetime

from accounts.roles import Reach
from infra.database import Connection
from settlement import disputes, dues
from settlement.disputes import Dispute
from settlement.dues import AgingRow, Position

# The agencies in the reach $1 (everything), $2 (regions), $3 (symbols) with a due.
AGENCIES_WITH_DUES = """SELECT a.symbol FROM agency a
    WHERE ($1 OR a.province = ANY($2::text[]) OR a.symbol = ANY($3::text[]))
      AND EXISTS (SELECT 1 FROM statement_due d WHERE d.agency = a.symbol)
    ORDER BY a.symbol"""

# ... and those with a dispute, as the requester or as the line's supplier.
AGENCIES_WITH_DISPUTES = """SELECT a.symbol FROM agency a
    WHERE ($1 OR a.province = ANY($2::text[]) OR a.symbol = ANY($3::text[]))
      AND (EXISTS (SELECT 1 FROM statement_dispute s WHERE s.agency = a.symbol)
           OR EXISTS (SELECT 1 FROM statement_dispute s
                      JOIN ledger_posting p ON p.id = s.posting_id
                      WHERE p.supplier = a.symbol))
    ORDER BY a.symbol"""

AGENCY_IN_REACH = """SELECT EXISTS (SELECT 1 FROM agency a WHERE a.symbol = $4
    AND ($1 OR a.province = ANY($2::text[]) OR a.symbol = ANY($3::text[])))"""


async def in_reach(conn: Connection, reach: Reach, agency: str) -> bool:
    return bool(await conn.fetchval(AGENCY_IN_REACH, *reach.sql_args(), agency))


async def _agencies(conn: Connection, reach: Reach, agency: str | None) -> list[str] | None:
    """The agencies to read one by one; None: all at once (reach everything, no filter)."""
    if agency is not None:
        return [agency] if await in_reach(conn, reach, agency) else []
    if reach.everything:
        return None
    return [r["symbol"] for r in await conn.fetch(AGENCIES_WITH_DUES, *reach.sql_args())]


async def positions(conn: Connection, reach: Reach, *, agency: str | None = None,
                    open_only: bool = False) -> list[Position]:
    """The dues of the agencies in reach (of one, if given), oldest issue first."""
    symbols = await _agencies(conn, reach, agency)
    if symbols is None:
        return await dues.positions(conn, open_only=open_only)
    found = [p for s in symbols for p in await dues.positions(conn, agency=s,
                                                              open_only=open_only)]
    return sorted(found, key=lambda p: (p.issued_on, p.agency, p.currency, p.due_id))


async def position(conn: Connection, reach: Reach, due_id: int) -> Position | None:
    p = await dues.position(conn, due_id)
    return p if p is not None and await in_reach(conn, reach, p.agency) else None


async def by_reference(conn: Connection, reach: Reach, reference: str) -> Position | None:
    p = await dues.by_reference(conn, reference)
    return p if p is not None and await in_reach(conn, reach, p.agency) else None


async def aging(conn: Connection, reach: Reach, today: datetime.date) -> list[AgingRow]:
    return dues.aging_rows(await positions(conn, reach, open_only=True), today)


async def dispute_list(conn: Connection, reach: Reach, *, open_only: bool = False,
                       due_id: int | None = None) -> list[Dispute]:
    """Disputes where an agency in reach is the requester or the supplier."""
    if reach.everything:
        found = await disputes.disputes(conn, open_only=open_only)
    else:
        symbols = [r["symbol"] for r in await conn.fetch(AGENCIES_WITH_DISPUTES,
                                                         *reach.sql_args())]
        by_id = {d.id: d for s in symbols
                 for d in await disputes.disputes(conn, agency=s, open_only=open_only)}
        found = sorted(by_id.values(), key=lambda d: d.id)
    return [d for d in found if due_id is None or d.due_id == due_id]


async def dispute(conn: Connection, reach: Reach, dispute_id: int) -> Dispute | None:
    d = await disputes.dispute(conn, dispute_id)
    if d is None:
        return None
    if await in_reach(conn, reach, d.agency) or await in_reach(conn, reach, d.supplier):
        return d
    return None
