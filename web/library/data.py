"""What a library's staff pages read, every query filtered by the reader's `Reach`.

A transaction is in reach when its requester, its current supplier, or a supplier it
was forwarded to is an agency in reach (by symbol, or by region for a regional
centre). The filter is in each statement: a transaction out of reach is not found,
exactly like an unknown one, and no list ever holds one.

Tables are read through what their owners publish where they publish it: the trail
through dispatch's `explain` statements (broker/dispatch/sql.py, the same
`run.py explain` prints), flags through infra/flags.py. The outbox and the
transaction list have no published reader yet; their statements are written once,
here (see the report of issue 16 for what the owners might publish instead).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import asyncpg

from accounts.roles import Reach
from broker.dispatch import sql as dispatch_sql
from infra import flags
from infra.database import Connection
from infra.flags import Flag
from schemas.wire import OUTBOUND

PAGE_SIZE = 50
RECENT_DAYS = 30
QUERY_LIMIT = 200
AUDIT_LIMIT = 1000
WAITING_LIMIT = 100

# An agency row `a` in the reach $1 (everything), $2 (regions), $3 (symbols).
_AGENCY_IN_REACH = "($1 OR a.province = ANY($2::text[]) OR a.symbol = ANY($3::text[]))"

AGENCIES_IN_REACH = f"""
    SELECT a.symbol, a.name, a.province, a.roles FROM agency a
    WHERE {_AGENCY_IN_REACH} ORDER BY a.enabled DESC, a.symbol LIMIT $4"""

AGENCY_IN_REACH = f"""
    SELECT a.symbol, a.name, a.province, a.roles FROM agency a
    WHERE a.symbol = $4 AND {_AGENCY_IN_REACH}"""

# The transaction $4, if a party to it is in the reach $1..$3.
TRANSACTION_IN_REACH = """
    SELECT t.* FROM ill_transaction t
    WHERE t.id = $4 AND ($1 OR EXISTS (
        SELECT 1 FROM agency a
        WHERE (a.province = ANY($2::text[]) OR a.symbol = ANY($3::text[]))
          AND (a.symbol IN (t.requester, t.supplier) OR a.symbol IN (
              SELECT e.supplier FROM rota_entry e
              WHERE e.transaction_id = t.id AND e.forwarded_at IS NOT NULL))))"""

# One agency's transactions ($1: its symbol), as requester or as a supplier that was
# sent the request. Without a search ($2 NULL): the open ones and those changed since
# $3. A search matches the hub id, the request id, a title containing the text, or
# (for the agency's own requests only) the patron id. Patron data is matched, never
# returned.
TRANSACTIONS = """
    WITH mine AS (
        SELECT t.id FROM ill_transaction t WHERE t.requester = $1
        UNION
        SELECT t.id FROM ill_transaction t WHERE t.supplier = $1
        UNION
        SELECT e.transaction_id FROM rota_entry e
        WHERE e.supplier = $1 AND e.forwarded_at IS NOT NULL)
    SELECT t.id, t.request_id, t.requester, ra.name AS requester_name, t.supplier,
           sa.name AS supplier_name, t.state, t.service_type, t.service_kind,
           t.created_at, t.updated_at, t.closed_at,
           CASE WHEN t.requester = $1 THEN 'requester' ELSE 'supplier' END AS role,
           t.request->'request'->'bibliographicInfo'->>'title' AS title
    FROM mine JOIN ill_transaction t ON t.id = mine.id
    JOIN agency ra ON ra.symbol = t.requester
    LEFT JOIN agency sa ON sa.symbol = t.supplier
    WHERE CASE WHEN $2::text IS NULL THEN t.closed_at IS NULL OR t.updated_at >= $3
          ELSE t.id = upper($2) OR t.request_id = $2
               OR strpos(lower(t.request->'request'->'bibliographicInfo'->>'title'),
                         lower($2)) > 0
               OR (t.requester = $1
                   AND t.request->'request'->'patronInfo'->>'patronId' = $2) END
    ORDER BY (t.closed_at IS NULL) DESC, t.updated_at DESC, t.id
    LIMIT $4 OFFSET $5"""

# Messages the hub has for an agency ($1) and has not handed over yet (AMQP or HTTP);
# with $2, only those about one transaction.
WAITING = f"""
    SELECT id, message_type, correlation_id, headers->>'hub-transaction-id' AS transaction_id,
           created_at, available_at, attempts, last_error, transport
    FROM outbox
    WHERE exchange = '{OUTBOUND}' AND routing_key = $1 AND published_at IS NULL
      AND ($2::text IS NULL OR headers->>'hub-transaction-id' = $2)
    ORDER BY id LIMIT $3"""


def reach_args(reach: Reach) -> tuple[bool, list[str], list[str]]:
    return reach.sql_args()


async def agencies_in_reach(conn: Connection, reach: Reach,
                            limit: int = 2000) -> list[asyncpg.Record]:
    """The agencies a person works for (the agency switcher), enabled first."""
    return list(await conn.fetch(AGENCIES_IN_REACH, *reach_args(reach), limit))


async def agency_in_reach(conn: Connection, reach: Reach,
                          symbol: str) -> asyncpg.Record | None:
    return await conn.fetchrow(AGENCY_IN_REACH, *reach_args(reach), symbol)


async def transaction_in_reach(conn: Connection, reach: Reach,
                               txn_id: str) -> asyncpg.Record | None:
    """The transaction, or None when unknown or out of reach (never told apart)."""
    return await conn.fetchrow(TRANSACTION_IN_REACH, *reach_args(reach), txn_id)


@dataclass
class Listing:
    agency: str
    rows: list[asyncpg.Record]
    page: int
    more: bool
    query: str | None


async def transactions(conn: Connection, agency: str, *, query: str | None, page: int,
                       now: datetime) -> Listing:
    """One page of an agency's transactions (the caller checked the agency is in reach)."""
    since = now - timedelta(days=RECENT_DAYS)
    rows = await conn.fetch(TRANSACTIONS, agency, query or None, since, PAGE_SIZE + 1,
                            (page - 1) * PAGE_SIZE)
    return Listing(agency=agency, rows=list(rows[:PAGE_SIZE]), page=page,
                   more=len(rows) > PAGE_SIZE, query=query)


async def waiting(conn: Connection, agency: str,
                  txn_id: str | None = None) -> list[asyncpg.Record]:
    return list(await conn.fetch(WAITING, agency, txn_id, WAITING_LIMIT))


@dataclass
class Trail:
    """What `run.py explain` shows of one transaction, as rows."""

    txn: asyncpg.Record
    request: dict[str, Any]
    names: dict[str, str]
    rota: list[asyncpg.Record]
    excluded: list[asyncpg.Record]
    audit: list[asyncpg.Record]
    audit_more: bool
    flags: list[Flag] = field(default_factory=list)
    waiting: list[asyncpg.Record] = field(default_factory=list)


async def trail(conn: Connection, txn: asyncpg.Record, parties: list[str]) -> Trail:
    """The rota with its reasons, the exclusions and the audit trail of `txn` (a row of
    `transaction_in_reach`), its flags, and what waits for `parties` about it."""
    txn_id = txn["id"]
    rota = await conn.fetch(dispatch_sql.EXPLAIN_ROTA, txn_id)
    excluded = await conn.fetch(dispatch_sql.EXPLAIN_EXCLUDED, txn_id)
    audit = await conn.fetch(dispatch_sql.EXPLAIN_AUDIT, txn_id)
    symbols = {txn["requester"], txn["supplier"], *(r["supplier"] for r in rota),
               *(x["supplier"] for x in excluded)}
    names = {r["symbol"]: r["name"] for r in await conn.fetch(
        "SELECT symbol, name FROM agency WHERE symbol = ANY($1::text[])",
        [s for s in symbols if s])}
    waiting_rows: list[asyncpg.Record] = []
    for party in parties:
        waiting_rows += await waiting(conn, party, txn_id)
    return Trail(txn=txn, request=_request_of(txn), names=names, rota=list(rota),
                 excluded=list(excluded), audit=list(audit[:AUDIT_LIMIT]),
                 audit_more=len(audit) > AUDIT_LIMIT,
                 flags=await flags.of_transaction(conn, txn_id), waiting=waiting_rows)


def _request_of(txn: asyncpg.Record) -> dict[str, Any]:
    raw = txn["request"]
    try:
        body = json.loads(raw) if isinstance(raw, str) else (raw or {})
        inner = body.get("request") or {}
    except (TypeError, ValueError, AttributeError):
        return {}
    return inner if isinstance(inner, dict) else {}


async def agency_flags(conn: Connection, agency: str, limit: int = 20) -> list[Flag]:
    return await flags.concerning(conn, agency, limit=limit)
