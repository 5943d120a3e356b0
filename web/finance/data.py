"""What the finance pages read, filtered in SQL by the reader's `Reach` (view_finance).

Statements and their files are settlement's (tables settlement_run, settlement_statement,
settlement_net, migration 0006); settlement publishes the whole of a run
(`record.stored_result`) but no reader scoped to some agencies, so the scoped
statements are written here, once. Budgets come from settlement's own report
(`subsidy.budgets_report`, as `run.py budgets` prints it), kept to the agencies in
reach; a global budget (no requester) is the centre's, shown to whoever reaches
everything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from accounts.roles import Reach
from infra.database import Connection
from settlement.ledger import CENTRE
from settlement.subsidy import BudgetRow, budgets_report
from web.library.data import agencies_in_reach

PERIOD_LIMIT = 36

# An agency row `a` in the reach $1 (everything), $2 (regions), $3 (symbols).
_IN_REACH = "($1 OR a.province = ANY($2::text[]) OR a.symbol = ANY($3::text[]))"

# Newest first by date: names of different calendars do not sort by time (as text
# '2026-Q1' comes after '2026-12').
CLOSED_PERIODS = """SELECT period FROM settlement_run WHERE closed_at IS NOT NULL
                    ORDER BY cutoff DESC LIMIT $1"""

# Each statement in reach of the period $4, one row per currency of its figures.
STATEMENTS = f"""
    SELECT s.agency, s.name, s.lines, s.files, n.currency, n.earned_minor, n.owed_minor,
           n.subsidy_minor, n.patron_minor, n.net_minor
    FROM settlement_run r
    JOIN settlement_statement s ON s.run_id = r.id
    JOIN agency a ON a.symbol = s.agency
    LEFT JOIN settlement_net n ON n.run_id = r.id AND n.owner = s.agency
    WHERE r.period = $4 AND r.closed_at IS NOT NULL AND {_IN_REACH}
    ORDER BY s.agency, n.currency"""

# Whether the file $5 of the period $4 is a statement file of an agency in reach.
FILE_IN_REACH = f"""
    SELECT EXISTS (
        SELECT 1 FROM settlement_run r
        JOIN settlement_statement s ON s.run_id = r.id
        JOIN agency a ON a.symbol = s.agency
        WHERE r.period = $4 AND r.closed_at IS NOT NULL AND {_IN_REACH}
          AND s.files @> jsonb_build_array(jsonb_build_object('name', $5::text)))"""

SUMMARY_FILES = """SELECT files FROM settlement_run
                   WHERE period = $1 AND closed_at IS NOT NULL"""

# The centre's summary of a run: every agency's figures added up, and the centre's own
# position (minus its subsidy outlay), per currency.
CENTRE_SUMMARY = f"""
    SELECT n.currency, count(*) FILTER (WHERE n.owner <> '{CENTRE}') AS agencies,
           coalesce(sum(n.earned_minor) FILTER (WHERE n.owner <> '{CENTRE}'), 0) AS earned,
           coalesce(sum(n.owed_minor) FILTER (WHERE n.owner <> '{CENTRE}'), 0) AS owed,
           coalesce(sum(n.subsidy_minor) FILTER (WHERE n.owner <> '{CENTRE}'), 0) AS subsidy,
           coalesce(sum(n.net_minor) FILTER (WHERE n.owner = '{CENTRE}'), 0) AS centre_net
    FROM settlement_run r JOIN settlement_net n ON n.run_id = r.id
    WHERE r.period = $1 AND r.closed_at IS NOT NULL
    GROUP BY n.currency ORDER BY n.currency"""


@dataclass
class Statements:
    period: str | None
    periods: list[str]
    rows: list[asyncpg.Record]
    summary: list[asyncpg.Record] = field(default_factory=list)
    summary_files: list[str] = field(default_factory=list)


def file_names(raw: Any) -> list[str]:
    """The names in a `files` column (a JSON list of name, sha256, bytes)."""
    files: Any = json.loads(raw) if isinstance(raw, str) else (raw or [])
    return [f["name"] for f in files if isinstance(f, dict) and "name" in f]


async def closed_periods(conn: Connection) -> list[str]:
    return [r["period"] for r in await conn.fetch(CLOSED_PERIODS, PERIOD_LIMIT)]


async def statements(conn: Connection, reach: Reach, period: str | None) -> Statements:
    """The period's statements in reach (the latest closed period by default); the
    centre's summary for a reader who reaches everything."""
    periods = await closed_periods(conn)
    chosen = period or (periods[0] if periods else None)
    if chosen is None:
        return Statements(period=None, periods=periods, rows=[])
    rows = list(await conn.fetch(STATEMENTS, *reach.sql_args(), chosen))
    found = Statements(period=chosen, periods=periods, rows=rows)
    if reach.everything:
        found.summary = list(await conn.fetch(CENTRE_SUMMARY, chosen))
        raw = await conn.fetchval(SUMMARY_FILES, chosen)
        found.summary_files = file_names(raw) if raw is not None else []
    return found


async def file_in_reach(conn: Connection, reach: Reach, period: str, name: str) -> bool:
    """A statement file of an agency in reach, or (reaching everything) the summary's."""
    if await conn.fetchval(FILE_IN_REACH, *reach.sql_args(), period, name):
        return True
    if not reach.everything:
        return False
    raw = await conn.fetchval(SUMMARY_FILES, period)
    return raw is not None and name in file_names(raw)


async def budgets(conn: Connection, reach: Reach, period: str) -> list[BudgetRow]:
    """Settlement's budget report for `period`, kept to the requesters in reach."""
    rows = await budgets_report(conn, period)
    if reach.everything:
        return rows
    mine = {a["symbol"] for a in await agencies_in_reach(conn, reach)}
    return [b for b in rows if b.requester in mine]
