"""What the operators' pages show, read straight from the hub's tables (flags through
infra/flags.py, their one store).

Read-only, set-based and bounded: every query aggregates in PostgreSQL, covers at
most the last `DAYS` days where it scans transactions, and every list has a LIMIT.
Days are consortium-local (settings.timezone), stored times are UTC.

Every query takes the reader's `Reach` (accounts/roles.py) and filters by it in SQL:
an agency is in reach by its symbol or its region (province); a transaction when its
requester, its current supplier or a supplier it was forwarded to is. A transaction
or agency out of reach is not found, exactly like an unknown one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from accounts.roles import Reach
from broker.holdings_trust import WINDOW_DAYS, accuracy
from infra import flags
from infra.database import Connection, fetch_one
from infra.flags import CHARGE_REFUSED, Flag

DAYS = 30
LIST_LIMIT = 100
SUPPLIER_LIMIT = 300    # CALIS had 281 supplying libraries
REQUESTER_LIMIT = 200
HOLDINGS_LIMIT = 20     # the least accurate suppliers on the dashboard
AUDIT_LIMIT = 1000

# States in which the supplier has delivered (a copy, or a loan at any later stage).
SUPPLIED = ("CopyCompleted", "Loaned", "Received", "Overdue", "Recalled", "ShippedReturn",
            "LoanCompleted", "CompletedWithoutReturn")
# Turnaround histogram: bucket edges in hours (width_bucket thresholds).
TURNAROUND_EDGES = (1, 2, 4, 8, 24, 48, 72, 168)
TURNAROUND_LABELS = ("<1 h", "1–2 h", "2–4 h", "4–8 h", "8–24 h", "1–2 d", "2–3 d", "3–7 d",
                     "≥7 d")


@dataclass(frozen=True)
class Outcomes:
    """Requests created in the window, by how they have ended so far."""
    requests: int
    filled: int
    unfilled: int
    cancelled: int

    @property
    def decided(self) -> int:
        return self.filled + self.unfilled + self.cancelled

    @property
    def fill_rate(self) -> float | None:
        return self.filled / self.decided if self.decided else None


@dataclass(frozen=True)
class Turnaround:
    """Hours from a transaction's first forward to its delivery, deliveries in the window."""
    buckets: list[int]          # per TURNAROUND_LABELS
    n: int
    p50: float | None
    p90: float | None
    mean: float | None


@dataclass(frozen=True)
class DeadLetters:
    open: int                   # not replayed yet
    total: int
    recent: list[asyncpg.Record]


@dataclass(frozen=True)
class FlagLists:
    charges_recent: int         # refused charges flagged in the window
    charges: list[Flag]         # the latest ten refused charges, ever
    violations: list[Flag]      # the latest twenty flags of any kind in the window


@dataclass(frozen=True)
class HoldingsRow:
    """A supplier's holdings accuracy (broker/holdings_trust.py) and its doubted holdings."""
    supplier: str
    name: str
    asked: int                  # answers about listed items in the window
    not_held: int
    doubted: int                # holdings in doubt now

    @property
    def accuracy(self) -> float | None:
        return accuracy(self.asked, self.not_held)


@dataclass
class Dashboard:
    today: date
    since: datetime
    zone: str
    volume: list[tuple[date, int]]
    outcomes: Outcomes
    turnaround: Turnaround
    open_by_state: list[tuple[str, int]]
    suppliers: list[asyncpg.Record]
    requesters: list[asyncpg.Record]
    budgets: list[asyncpg.Record]
    budgets_total: int
    budget_period: str
    dead: DeadLetters
    flags: FlagLists
    holdings: list[HoldingsRow]

    @property
    def open_total(self) -> int:
        return sum(n for _, n in self.open_by_state)


EVERYTHING = Reach(everything=True)


def agency_in_reach(n: int, a: str = "a") -> str:
    """SQL: agency row `a` is in the reach given as parameters $n, $n+1, $n+2."""
    return f"(${n} OR {a}.province = ANY(${n + 1}::text[]) OR {a}.symbol = ANY(${n + 2}::text[]))"


def txn_in_reach(n: int, t: str = "t") -> str:
    """SQL: transaction row `t` is in the reach $n..$n+2 (see the module docstring)."""
    return f"""(${n} OR EXISTS (
        SELECT 1 FROM agency ra
        WHERE (ra.province = ANY(${n + 1}::text[]) OR ra.symbol = ANY(${n + 2}::text[]))
          AND (ra.symbol IN ({t}.requester, {t}.supplier) OR ra.symbol IN (
              SELECT e.supplier FROM rota_entry e
              WHERE e.transaction_id = {t}.id AND e.forwarded_at IS NOT NULL))))"""


def local_midnight(day: date, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=zone).astimezone(UTC)


async def dashboard(conn: Connection, tz: str, now: datetime | None = None,
                    reach: Reach = EVERYTHING) -> Dashboard:
    """Every figure of the dashboard; the window is the last DAYS consortium-local days.
    Dead letters and flags are the consortium's: only a reader who reaches everything
    sees them (they are not kept per agency in a form a query can filter)."""
    zone = ZoneInfo(tz)
    now = now or datetime.now(UTC)
    today = now.astimezone(zone).date()
    first_day = today - timedelta(days=DAYS - 1)
    since = local_midnight(first_day, zone)
    period = today.strftime("%Y-%m")
    r = reach.sql_args()
    return Dashboard(
        today=today, since=since, zone=tz, volume=await _volume(conn, first_day, since, tz, r),
        outcomes=await _outcomes(conn, since, r), turnaround=await _turnaround(conn, since, r),
        open_by_state=await _open_by_state(conn, r),
        suppliers=await supplier_rows(conn, today, None, SUPPLIER_LIMIT, reach),
        requesters=await requester_rows(conn, since, None, REQUESTER_LIMIT, reach),
        budgets=await budget_rows(conn, [period, "total"], None, LIST_LIMIT, reach),
        budgets_total=await conn.fetchval(
            "SELECT count(*) FROM subsidy_budget b LEFT JOIN agency a ON a.symbol = b.requester"
            f" WHERE b.period IN ($1, 'total') AND {agency_in_reach(2)}", period, *r),
        budget_period=period,
        dead=await _dead_letters(conn) if reach.everything else DeadLetters(0, 0, []),
        flags=await _flags(conn, since) if reach.everything else FlagLists(0, [], []),
        holdings=await holdings_rows(conn, now, HOLDINGS_LIMIT, reach))


ReachArgs = tuple[bool, list[str], list[str]]


async def _volume(conn: Connection, first_day: date, since: datetime,
                  tz: str, r: ReachArgs) -> list[tuple[date, int]]:
    """Requests created per consortium-local day, every day of the window (zeros too)."""
    per_day = {row["day"]: row["n"] for row in await conn.fetch(
        f"""SELECT (created_at AT TIME ZONE $2)::date AS day, count(*) AS n
            FROM ill_transaction t WHERE created_at >= $1 AND {txn_in_reach(3)}
            GROUP BY 1""", since, tz, *r)}
    return [(first_day + timedelta(days=i), per_day.get(first_day + timedelta(days=i), 0))
            for i in range(DAYS)]


async def _outcomes(conn: Connection, since: datetime, r: ReachArgs) -> Outcomes:
    row = await fetch_one(
        conn, f"""SELECT count(*) AS requests,
                         count(*) FILTER (WHERE state = ANY($2::text[])) AS filled,
                         count(*) FILTER (WHERE state = 'Unfilled') AS unfilled,
                         count(*) FILTER (WHERE state = 'Cancelled') AS cancelled
                  FROM ill_transaction t WHERE created_at >= $1 AND {txn_in_reach(3)}""",
        since, list(SUPPLIED), *r)
    return Outcomes(requests=row["requests"], filled=row["filled"], unfilled=row["unfilled"],
                    cancelled=row["cancelled"])


# Hours from the first forward to the delivery (the supplied rota entry's answer), of the
# transactions in reach ($2..$4).
_TURNAROUND = f"""
    WITH h AS (
        SELECT extract(epoch FROM s.answered_at - f.first_forward) / 3600.0 AS hours
        FROM rota_entry s JOIN ill_transaction t ON t.id = s.transaction_id
        CROSS JOIN LATERAL (SELECT min(r.forwarded_at) AS first_forward FROM rota_entry r
                            WHERE r.transaction_id = s.transaction_id) f
        WHERE s.outcome = 'supplied' AND s.answered_at >= $1
          AND f.first_forward IS NOT NULL AND {txn_in_reach(2)})
"""


async def _turnaround(conn: Connection, since: datetime, r: ReachArgs) -> Turnaround:
    """The histogram (TURNAROUND_EDGES) and summary of deliveries since `since`."""
    buckets = [0] * (len(TURNAROUND_EDGES) + 1)
    for row in await conn.fetch(
            _TURNAROUND + """SELECT width_bucket(hours, $5::float8[]) AS b, count(*) AS n
                             FROM h GROUP BY 1""",
            since, *r, list(map(float, TURNAROUND_EDGES))):
        buckets[row["b"]] = row["n"]
    stats = await fetch_one(
        conn, _TURNAROUND + """SELECT count(*) AS n, avg(hours) AS mean,
                                      percentile_cont(0.5) WITHIN GROUP (ORDER BY hours) AS p50,
                                      percentile_cont(0.9) WITHIN GROUP (ORDER BY hours) AS p90
                               FROM h""", since, *r)
    return Turnaround(buckets=buckets, n=stats["n"], p50=_f(stats["p50"]),
                      p90=_f(stats["p90"]), mean=_f(stats["mean"]))


async def _open_by_state(conn: Connection, r: ReachArgs) -> list[tuple[str, int]]:
    return [(row["state"], row["n"]) for row in await conn.fetch(
        f"""SELECT state, count(*) AS n FROM ill_transaction t
            WHERE closed_at IS NULL AND {txn_in_reach(1)}
            GROUP BY state ORDER BY n DESC, state LIMIT 50""", *r)]


async def _dead_letters(conn: Connection) -> DeadLetters:
    dead = await fetch_one(
        conn, """SELECT count(*) FILTER (WHERE replayed_at IS NULL) AS open, count(*) AS total
                 FROM dead_letter""")
    recent = await conn.fetch(
        """SELECT id, received_at, sender, routing_key, reason FROM dead_letter
           WHERE replayed_at IS NULL ORDER BY id DESC LIMIT 5""")
    return DeadLetters(open=dead["open"], total=dead["total"], recent=recent)


async def _flags(conn: Connection, since: datetime) -> FlagLists:
    """Refused charges (counted in the window, the latest ten ever) and the latest
    twenty flags of any kind in the window, from the one flag store."""
    return FlagLists(
        charges_recent=await flags.count(conn, kinds=CHARGE_REFUSED, since=since),
        charges=await flags.latest(conn, kinds=CHARGE_REFUSED, limit=10),
        violations=await flags.latest(conn, since=since, limit=20))


SUPPLIER_SQL = f"""
    SELECT c.supplier, a.name, a.enabled, c.forwarded, c.filled, c.unfilled,
           c.timed_out, c.open_requests,
           CASE WHEN c.filled + c.unfilled + c.timed_out > 0
                THEN c.filled::float8 / (c.filled + c.unfilled + c.timed_out) END AS fill_rate,
           CASE WHEN c.filled > 0 THEN c.turnaround_total / c.filled / 3600.0 END AS mean_hours,
           coalesce(d.forwarded, 0) AS today
    FROM scorecard c JOIN agency a ON a.symbol = c.supplier
    LEFT JOIN supplier_day d ON d.supplier = c.supplier AND d.day = $1
    WHERE ($2::text IS NULL OR c.supplier = $2) AND {agency_in_reach(4)}
    ORDER BY a.enabled DESC, c.forwarded DESC, c.supplier LIMIT $3
"""

REQUESTER_SQL = f"""
    SELECT t.requester, a.name, count(*) AS requests,
           count(*) FILTER (WHERE t.state = ANY($2::text[])) AS filled,
           count(*) FILTER (WHERE t.state = 'Unfilled') AS unfilled,
           count(*) FILTER (WHERE t.state = 'Cancelled') AS cancelled,
           count(*) FILTER (WHERE t.closed_at IS NULL) AS open
    FROM ill_transaction t JOIN agency a ON a.symbol = t.requester
    WHERE t.created_at >= $1 AND ($3::text IS NULL OR t.requester = $3)
      AND {agency_in_reach(5)}
    GROUP BY t.requester, a.name ORDER BY requests DESC, t.requester LIMIT $4
"""

# Budgets running out first: that is what an operator has to act on.
BUDGET_SQL = f"""
    SELECT b.name, b.requester, a.name AS requester_name, b.period, b.currency,
           b.limit_minor, b.spent_minor, b.limit_minor - b.spent_minor AS remaining_minor
    FROM subsidy_budget b LEFT JOIN agency a ON a.symbol = b.requester
    WHERE b.period = ANY($1::text[]) AND ($2::text IS NULL OR b.requester = $2)
      AND {agency_in_reach(4)}
    ORDER BY CASE WHEN b.limit_minor > 0 THEN b.spent_minor::float8 / b.limit_minor
                  ELSE 1 END DESC,
             b.name, b.requester, b.period LIMIT $3
"""


# Suppliers with answers about listed items in the window, or holdings in doubt.
HOLDINGS_SQL = f"""
    WITH answers AS (
        SELECT supplier, count(*)::int AS asked,
               count(*) FILTER (WHERE not_held)::int AS not_held
        FROM holding_answer WHERE answered_at >= $1 GROUP BY supplier),
    doubts AS (SELECT supplier, count(*)::int AS doubted FROM holding_doubt GROUP BY supplier)
    SELECT a.symbol AS supplier, a.name, coalesce(n.asked, 0) AS asked,
           coalesce(n.not_held, 0) AS not_held, coalesce(d.doubted, 0) AS doubted
    FROM agency a
    LEFT JOIN answers n ON n.supplier = a.symbol
    LEFT JOIN doubts d ON d.supplier = a.symbol
    WHERE (n.supplier IS NOT NULL OR d.supplier IS NOT NULL) AND {agency_in_reach(2)}
"""


async def holdings_rows(conn: Connection, now: datetime, limit: int,
                        reach: Reach = EVERYTHING) -> list[HoldingsRow]:
    """The least accurate suppliers first (no accuracy yet: last), then the most doubted."""
    rows = [HoldingsRow(r["supplier"], r["name"], r["asked"], r["not_held"], r["doubted"])
            for r in await conn.fetch(HOLDINGS_SQL, now - timedelta(days=WINDOW_DAYS),
                                      *reach.sql_args())]

    def order(h: HoldingsRow) -> tuple[float, int, str]:
        shown = h.accuracy
        return (shown if shown is not None else 2.0, -h.doubted, h.supplier)

    return sorted(rows, key=order)[:limit]


async def supplier_rows(conn: Connection, today: date, symbol: str | None,
                        limit: int, reach: Reach = EVERYTHING) -> list[asyncpg.Record]:
    """Scorecards (since records began), enabled suppliers first, busiest first."""
    return await conn.fetch(SUPPLIER_SQL, today, symbol, limit, *reach.sql_args())


async def requester_rows(conn: Connection, since: datetime, symbol: str | None,
                         limit: int, reach: Reach = EVERYTHING) -> list[asyncpg.Record]:
    """Requests created since `since`, per requester, busiest first."""
    return await conn.fetch(REQUESTER_SQL, since, list(SUPPLIED), symbol, limit,
                            *reach.sql_args())


async def budget_rows(conn: Connection, periods: list[str], requester: str | None,
                      limit: int, reach: Reach = EVERYTHING) -> list[asyncpg.Record]:
    """Budgets; one without a requester (the consortium's) only for a reader who reaches
    everything (the reach predicate is false on its missing agency row)."""
    return await conn.fetch(BUDGET_SQL, periods, requester, limit, *reach.sql_args())


@dataclass
class AgencyView:
    agency: asyncpg.Record
    since: datetime
    today: date
    supplier: asyncpg.Record | None
    requester: asyncpg.Record | None
    budgets: list[asyncpg.Record]
    recent: list[asyncpg.Record]
    flags: list[Flag]           # refused charges it made or was charged


async def agency(conn: Connection, symbol: str, tz: str, now: datetime | None = None,
                 reach: Reach = EVERYTHING) -> AgencyView | None:
    """One agency's figures: the dashboard's rows for it, its budgets, its recent traffic.
    None for an unknown agency and for one out of `reach` alike."""
    row = await conn.fetchrow(
        f"""SELECT symbol, name, roles, province, city, enabled, created_at, disabled_at
            FROM agency a WHERE symbol = $1 AND {agency_in_reach(2)}""",
        symbol, *reach.sql_args())
    if row is None:
        return None
    zone = ZoneInfo(tz)
    now = now or datetime.now(UTC)
    today = now.astimezone(zone).date()
    since = local_midnight(today - timedelta(days=DAYS - 1), zone)
    supplier = await supplier_rows(conn, today, symbol, 1)
    requester = await requester_rows(conn, since, symbol, 1)
    months = [f"{(today.year * 12 + today.month - 1 - i) // 12:04d}-"
              f"{(today.month - 1 - i) % 12 + 1:02d}" for i in range(12)]
    budgets = await budget_rows(conn, [*months, "total"], symbol, LIST_LIMIT)
    recent = await conn.fetch(
        """SELECT * FROM (
               SELECT t.id, 'requester' AS role, t.requester, t.supplier, t.state,
                      NULL::text AS outcome, t.created_at AS at
               FROM ill_transaction t WHERE t.requester = $1 AND t.created_at >= $2
               UNION ALL
               SELECT t.id, 'supplier', t.requester, e.supplier, t.state, e.outcome,
                      e.forwarded_at
               FROM rota_entry e JOIN ill_transaction t ON t.id = e.transaction_id
               WHERE e.supplier = $1 AND e.forwarded_at >= $2) x
           ORDER BY at DESC, id LIMIT 50""", symbol, since)
    charges = await flags.concerning(conn, symbol, kinds=CHARGE_REFUSED, limit=10)
    return AgencyView(agency=row, since=since, today=today,
                      supplier=supplier[0] if supplier else None,
                      requester=requester[0] if requester else None,
                      budgets=budgets, recent=recent, flags=charges)


def _f(v: Any) -> float | None:
    return None if v is None else float(v)


@dataclass
class TransactionView:
    txn: asyncpg.Record
    names: dict[str, str]
    request: dict[str, Any]
    rota: list[asyncpg.Record]
    excluded: list[asyncpg.Record]
    audit: list[asyncpg.Record]
    audit_more: bool
    postings: list[asyncpg.Record]
    entries: dict[int, list[asyncpg.Record]] = field(default_factory=dict)
    documents: list[asyncpg.Record] = field(default_factory=list)
    grants: list[asyncpg.Record] = field(default_factory=list)
    mails: list[asyncpg.Record] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)      # its refused charges


async def transaction(conn: Connection, txn_id: str,
                      reach: Reach = EVERYTHING) -> TransactionView | None:
    """None for an unknown transaction and for one out of `reach` alike."""
    txn = await conn.fetchrow(
        f"SELECT * FROM ill_transaction t WHERE id = $1 AND {txn_in_reach(2)}",
        txn_id, *reach.sql_args())
    if txn is None:
        return None
    rota = await conn.fetch(
        """SELECT position, supplier, tier, score, reasons, outcome, forwarded_at, answered_at,
                  quote_minor, quote_currency
           FROM rota_entry WHERE transaction_id = $1 ORDER BY position""", txn_id)
    excluded = await conn.fetch(
        "SELECT supplier, reason FROM rota_excluded WHERE transaction_id = $1 "
        "ORDER BY supplier, reason LIMIT 500", txn_id)
    audit = await conn.fetch(
        """SELECT id, at, actor, event, from_state, to_state, message_id, detail
           FROM audit_log WHERE transaction_id = $1 ORDER BY id LIMIT $2""",
        txn_id, AUDIT_LIMIT + 1)
    postings = await conn.fetch(
        """SELECT id, event, kind, requester, supplier, service_kind, currency, fee_minor,
                  subsidy_minor, patron_share_minor, quote_minor, reverses, reason, notes,
                  occurred_at, local_date, posted_at
           FROM ledger_posting WHERE transaction_id = $1 ORDER BY id""", txn_id)
    entries: dict[int, list[asyncpg.Record]] = {}
    for e in await conn.fetch(
            """SELECT posting_id, owner, account, amount_minor, currency FROM ledger_entry
               WHERE transaction_id = $1 ORDER BY posting_id, id""", txn_id):
        entries.setdefault(e["posting_id"], []).append(e)
    documents = await conn.fetch(
        """SELECT id, supplier, filename, content_type, size, sha256, created_at, deleted_at
           FROM document WHERE transaction_id = $1 ORDER BY created_at""", txn_id)
    # Never the token or its hash, nor the patron's address: the prefix identifies a link.
    grants = await conn.fetch(
        """SELECT g.id, g.token_prefix, g.document_id, g.max_downloads, g.remaining, g.used,
                  g.expires_at, g.created_at, g.last_download_at, g.revoked_at,
                  (SELECT count(*) FROM download d WHERE d.grant_id = g.id) AS downloads
           FROM download_grant g WHERE g.transaction_id = $1 ORDER BY g.id""", txn_id)
    mails = await conn.fetch(
        """SELECT id, kind, created_at, attempts, sent_at, failed_at, last_error,
                  cardinality(recipients) AS recipients
           FROM mail_outbox WHERE transaction_id = $1 ORDER BY id LIMIT 50""", txn_id)
    charges = await flags.of_transaction(conn, txn_id, kinds=CHARGE_REFUSED)
    symbols = {txn["requester"], txn["supplier"], *(r["supplier"] for r in rota),
               *(x["supplier"] for x in excluded)}
    names: dict[str, str] = {r["symbol"]: r["name"] for r in await conn.fetch(
        "SELECT symbol, name FROM agency WHERE symbol = ANY($1)", [s for s in symbols if s])}
    try:
        request = json.loads(txn["request"]).get("request") or {}
    except (TypeError, ValueError, AttributeError):
        request = {}
    return TransactionView(
        txn=txn, names=names, request=request, rota=rota, excluded=excluded,
        audit=audit[:AUDIT_LIMIT], audit_more=len(audit) > AUDIT_LIMIT, postings=postings,
        entries=entries, documents=documents, grants=grants, mails=mails, flags=charges)


async def search(conn: Connection, q: str,
                 reach: Reach = EVERYTHING) -> list[asyncpg.Record]:
    """Transactions whose hub id (any case) or requester request id is exactly `q`.

    At most 50, newest first. The request id alone is not indexed (the unique index
    leads with the requester), so that half is a scan of ill_transaction: fine for an
    operator's occasional search at CALIS's ~100,000 requests a year.
    """
    return await conn.fetch(
        """SELECT t.id, t.requester, a.name, t.request_id, t.state, t.created_at
           FROM ill_transaction t JOIN agency a ON a.symbol = t.requester
           WHERE (t.id = $1 OR t.id = upper($1) OR t.request_id = $1) AND """
        + txn_in_reach(2) + """
           ORDER BY (t.id IN ($1, upper($1))) DESC, t.created_at DESC LIMIT 50""",
        q, *reach.sql_args())
