"""What the API reads, filtered by the caller's reach in SQL.

Every query takes the reach as its first three parameters, `Reach.sql_args()`:
(everything, regions, agencies), and keeps only rows of agencies in it; a row out of
reach is indistinguishable from one that does not exist.

Owners' tables read here (no published function returns them filtered by reach yet;
see docs/api.md "Sources"): dispatch's `ill_transaction`, `rota_entry`, `audit_log`;
settlement's `settlement_run`, `settlement_statement`, `settlement_net` and
`subsidy_budget`; and the view `statement_position` settlement publishes for readers.
Budgets for the whole consortium come from settlement's own `budgets_report`; dues
from `dues.positions`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from accounts.roles import Reach
from infra.database import Connection
from settlement import dues
from settlement.subsidy import budgets_report

# The agencies in reach: all, those of these provinces, these symbols.
_IN_REACH = """SELECT a.symbol FROM agency a
               WHERE ($1::boolean OR a.province = ANY($2::text[])
                      OR a.symbol = ANY($3::text[]))"""

# A transaction is the requester's, its current supplier's, and that of every supplier
# it was forwarded to (a pending rota entry has not reached its supplier: not theirs).
_TXN_IN_REACH = f"""(t.requester IN ({_IN_REACH})
    OR t.supplier IN ({_IN_REACH})
    OR EXISTS (SELECT 1 FROM rota_entry r
               WHERE r.transaction_id = t.id AND r.outcome <> 'pending'
                 AND r.supplier IN ({_IN_REACH})))"""

_TXN_COLUMNS = """t.id, t.requester, t.request_id, t.supplier, t.state, t.service_type,
    t.service_kind, t.service_level, t.request #>> '{request,bibliographicInfo,title}' AS title,
    t.created_at, t.updated_at, t.closed_at, t.due_at"""

# Keyset paging by (updated_at, id): a client syncing with updated_since sees every
# change once it has read to the end; a transaction changed meanwhile comes again later.
TRANSACTIONS = f"""SELECT {_TXN_COLUMNS} FROM ill_transaction t
    WHERE {_TXN_IN_REACH}
      AND ($4::text IS NULL OR t.state = $4)
      AND ($5::timestamptz IS NULL OR t.updated_at >= $5)
      AND ($6::timestamptz IS NULL OR (t.updated_at, t.id) > ($6, $7::text))
    ORDER BY t.updated_at, t.id
    LIMIT $8"""

TRANSACTION = f"""SELECT {_TXN_COLUMNS} FROM ill_transaction t
    WHERE t.id = $4 AND {_TXN_IN_REACH}"""

TRAIL = """SELECT at, actor, event, from_state, to_state, detail
           FROM audit_log WHERE transaction_id = $1 ORDER BY id"""

# Closed runs only: an open period has no statements yet. Newest period first.
_STATEMENT_ROWS = f"""SELECT r.id AS run_id, r.period, s.agency, s.name, s.files,
           coalesce(json_agg(json_build_object(
               'currency', n.currency, 'net_minor', n.net_minor,
               'earned_minor', n.earned_minor, 'owed_minor', n.owed_minor,
               'subsidy_minor', n.subsidy_minor, 'lines', n.lines) ORDER BY n.currency)
               FILTER (WHERE n.currency IS NOT NULL), '[]') AS totals
    FROM settlement_statement s
    JOIN settlement_run r ON r.id = s.run_id AND r.closed_at IS NOT NULL
    LEFT JOIN settlement_net n ON n.run_id = s.run_id AND n.owner = s.agency
    WHERE s.agency IN ({_IN_REACH})"""

STATEMENTS = f"""{_STATEMENT_ROWS}
      AND ($4::text IS NULL OR r.period = $4)
      AND ($5::text IS NULL OR r.period < $5 OR (r.period = $5 AND s.agency > $6::text))
      AND (NOT $8::boolean OR EXISTS (
          SELECT 1 FROM statement_position sp
          WHERE sp.run_id = r.id AND sp.agency = s.agency AND sp.outstanding_minor > 0))
    GROUP BY r.id, r.period, s.agency, s.name, s.files
    ORDER BY r.period DESC, s.agency
    LIMIT $7"""

STATEMENT = f"""{_STATEMENT_ROWS} AND r.period = $4 AND s.agency = $5
    GROUP BY r.id, r.period, s.agency, s.name, s.files"""

# A library's own budgets: those drawn for requesters in reach (the consortium's shared
# budgets, requester '', are the centre's and only reach everything).
BUDGETS = f"""SELECT b.name, b.requester, b.period, b.currency, b.limit_minor, b.spent_minor
    FROM subsidy_budget b
    WHERE b.period IN ($4, 'total') AND b.requester IN ({_IN_REACH})
    ORDER BY b.name, b.requester, b.period"""


@dataclass(frozen=True)
class TxnCursor:
    updated_at: datetime
    id: str


@dataclass(frozen=True)
class StatementCursor:
    period: str
    agency: str


async def transactions(conn: Connection, reach: Reach, *, state: str | None,
                       updated_since: datetime | None, after: TxnCursor | None,
                       limit: int) -> list[asyncpg.Record]:
    return list(await conn.fetch(
        TRANSACTIONS, *reach.sql_args(), state, updated_since,
        after.updated_at if after else None, after.id if after else None, limit))


async def transaction(conn: Connection, reach: Reach, txn_id: str
                      ) -> tuple[asyncpg.Record, list[asyncpg.Record]] | None:
    """A transaction in reach and its trail; None for one out of reach or unknown."""
    row = await conn.fetchrow(TRANSACTION, *reach.sql_args(), txn_id)
    if row is None:
        return None
    return row, list(await conn.fetch(TRAIL, txn_id))


async def statements(conn: Connection, reach: Reach, *, period: str | None,
                     after: StatementCursor | None, limit: int, open_only: bool = False
                     ) -> list[asyncpg.Record]:
    """`open_only`: only statements with a due not paid in full (settlement's
    `statement_position` view)."""
    return list(await conn.fetch(
        STATEMENTS, *reach.sql_args(), period, after.period if after else None,
        after.agency if after else None, limit, open_only))


async def dues_of(conn: Connection, rows: list[asyncpg.Record]
                  ) -> dict[tuple[int, str], list[dues.Position]]:
    """The dues of the statements `rows`, by (run, agency): one read per run."""
    wanted = {(r["run_id"], r["agency"]) for r in rows}
    found: dict[tuple[int, str], list[dues.Position]] = {}
    for run_id in sorted({run for run, _ in wanted}):
        for p in await dues.positions(conn, run_id=run_id):
            if (run_id, p.agency) in wanted:
                found.setdefault((run_id, p.agency), []).append(p)
    return found


async def statement(conn: Connection, reach: Reach, period: str, symbol: str
                    ) -> asyncpg.Record | None:
    return await conn.fetchrow(STATEMENT, *reach.sql_args(), period, symbol)


async def budgets(conn: Connection, reach: Reach, period: str) -> list[dict[str, Any]]:
    """Budgets of `period` (and the never-renewing ones) in reach, as plain rows."""
    if reach.everything:
        return [{"name": b.name, "requester": b.requester, "period": b.period,
                 "currency": b.limit.currency, "limit_minor": b.limit.minor,
                 "spent_minor": b.spent.minor} for b in await budgets_report(conn, period)]
    return [dict(r) for r in await conn.fetch(BUDGETS, *reach.sql_args(), period)]


def detail_of(value: Any) -> dict[str, Any]:
    """An audit_log detail (jsonb, as asyncpg hands it: text) as an object."""
    parsed = json.loads(value) if isinstance(value, str) else value
    return parsed if isinstance(parsed, dict) else {"value": parsed}
