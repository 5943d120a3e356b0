"""Flags: the one store of violations and quality flags (table `flag`, migrations 0008, 0015).

What the centre must see, raised as it happens and once per condition: a charge the
ledger refused (settlement/ledger.py), a supplier missing deadlines again and again, a
copy "delivered" without a usable file, a loan not returned, a requester cancelling
unusually often (broker/violations.py), a peer answering ERROR (broker/peers.py). The
rules that decide *when* to flag live with their domains; this module only keeps flags.

This module is the table's only writer and reader:

- `raise_flag` writes one row and, in the same transaction, its event `flag.<kind>`
  on `ill.events` (through the outbox), unless the condition was flagged before: the
  row's `dedupe_key` is `<kind>:<key>`, and the caller's `key` names the condition
  (one per overdue loan, one per refused charge, one per supplier and day...). So a
  redelivered message, or a second hub process, never flags twice.
- the readers (`latest`, `count`, `of_transaction`, `concerning`) are what the
  operators' pages, `run.py flags` and the demo's report show.
- SQL that must ask "was this flagged?" inside a larger query (the overdue sweep)
  calls the function `flag_raised(kind, key)` of migration 0015, never the table.

`FlagKind` is the one list of kinds: the table's CHECK lists exactly these
(tests/test_flags.py compares the newest migration's list with the enum). `facts` is
a JSON object of what the flag is about, in structured form (for a refused charge:
event, requester, supplier, reason, fee_minor, limit_minor, currency); `detail` is
the same in a sentence for people.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeAlias

import asyncpg

from infra.database import Connection
from infra.outbox import Outgoing, enqueue
from schemas.wire import EVENTS

# A connection (of a pool or not), or a pool: readers accept any of them.
Db: TypeAlias = Connection | asyncpg.Pool


class FlagKind(StrEnum):
    # A charge the ledger refused (settlement/ledger.py, one kind per ChargeRefused).
    CHARGE_ABOVE_SCHEDULE = "charge_above_schedule"      # above the quote from the schedule
    CHARGE_ABOVE_MAX_COST = "charge_above_max_cost"      # above the request's maximumCosts
    CHARGE_CURRENCY_MISMATCH = "charge_currency_mismatch"
    # Violations dispatch detects (broker/violations.py, broker/dispatch/supplier.py).
    DEADLINE_BREACHES = "deadline_breaches"
    COPY_WITHOUT_VALID_FILE = "copy_without_valid_file"
    LOAN_OVERDUE = "loan_overdue"
    CANCELLATION_RATE = "cancellation_rate"
    # An ISO 18626 peer answered ERROR to what the hub sent it (broker/peers.py).
    PEER_ERROR = "peer_error"
    # A copy request without an accepted copyright declaration, or past the consortium's
    # copyright limit for one journal (broker/copyright.py).
    COPYRIGHT = "copyright"


# The kinds of a refused charge: the operators' "Charge flags" lists these.
CHARGE_REFUSED: frozenset[FlagKind] = frozenset({
    FlagKind.CHARGE_ABOVE_SCHEDULE, FlagKind.CHARGE_ABOVE_MAX_COST,
    FlagKind.CHARGE_CURRENCY_MISMATCH})


@dataclass(frozen=True)
class Flag:
    id: int
    raised_at: datetime
    kind: FlagKind
    subject: str                  # the agency the flag is about
    transaction_id: str | None
    detail: str
    facts: Mapping[str, Any]


def dedupe_key(kind: FlagKind, key: str) -> str:
    """The row's unique key; `flag_raised(kind, key)` in SQL builds the same."""
    return f"{kind}:{key}"


_INSERT = """
    INSERT INTO flag (kind, subject, transaction_id, detail, facts, dedupe_key, raised_at)
    VALUES ($1, $2, $3, $4, $5::jsonb, $6, coalesce($7, now()))
    ON CONFLICT (dedupe_key) DO NOTHING RETURNING id, raised_at"""

_COLUMNS = "id, raised_at, kind, subject, transaction_id, detail, facts"


async def raise_flag(conn: Connection, kind: FlagKind, subject: str, detail: str, *,
                     key: str, transaction_id: str | None = None,
                     facts: Mapping[str, Any] | None = None,
                     now: datetime | None = None) -> bool:
    """Record the flag and publish its event, unless this condition was flagged before.

    In the caller's transaction: the row and its event commit, or neither does.
    True if this call raised it. `now` defaults to the database's clock.
    """
    kind = FlagKind(kind)
    facts = dict(facts or {})
    row = await conn.fetchrow(_INSERT, kind.value, subject, transaction_id, detail,
                              json.dumps(facts, ensure_ascii=False, default=str),
                              dedupe_key(kind, key), now)
    if row is None:
        return False
    await enqueue(conn, [Outgoing(
        exchange=EVENTS, routing_key=f"flag.{kind}", message_type="flag",
        headers={"hub-transaction-id": transaction_id} if transaction_id else {},
        body={"flag": row["id"], "kind": kind.value, "subject": subject,
              "transactionId": transaction_id, "detail": detail, "facts": facts,
              "raisedAt": row["raised_at"].isoformat()})])
    return True


def _kinds(kinds: Iterable[FlagKind] | None) -> list[str] | None:
    return None if kinds is None else sorted(FlagKind(k).value for k in kinds)


def _flag(row: asyncpg.Record) -> Flag:
    facts = row["facts"]
    return Flag(id=row["id"], raised_at=row["raised_at"], kind=FlagKind(row["kind"]),
                subject=row["subject"], transaction_id=row["transaction_id"],
                detail=row["detail"],
                facts=json.loads(facts) if isinstance(facts, str) else dict(facts or {}))


async def latest(db: Db, *, kinds: Iterable[FlagKind] | None = None,
                 since: datetime | None = None, limit: int = 100) -> list[Flag]:
    """The newest flags first (in the order they were raised), of `kinds` (None: all),
    raised at or after `since` (None: ever)."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM flag
            WHERE ($1::text[] IS NULL OR kind = ANY($1::text[]))
              AND ($2::timestamptz IS NULL OR raised_at >= $2)
            ORDER BY id DESC LIMIT $3""", _kinds(kinds), since, limit)
    return [_flag(r) for r in rows]


async def count(db: Db, *, kinds: Iterable[FlagKind] | None = None,
                since: datetime | None = None) -> int:
    """How many flags of `kinds` (None: all) were raised at or after `since` (None: ever)."""
    n = await db.fetchval(
        """SELECT count(*) FROM flag
           WHERE ($1::text[] IS NULL OR kind = ANY($1::text[]))
             AND ($2::timestamptz IS NULL OR raised_at >= $2)""", _kinds(kinds), since)
    return int(n or 0)


async def of_transaction(db: Db, transaction_id: str, *,
                         kinds: Iterable[FlagKind] | None = None) -> list[Flag]:
    """One transaction's flags, oldest first."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM flag
            WHERE transaction_id = $1 AND ($2::text[] IS NULL OR kind = ANY($2::text[]))
            ORDER BY id""", transaction_id, _kinds(kinds))
    return [_flag(r) for r in rows]


async def concerning(db: Db, symbol: str, *, kinds: Iterable[FlagKind] | None = None,
                     limit: int = 100) -> list[Flag]:
    """Flags about an agency or naming it as a party (a refused charge's requester or
    supplier), newest first."""
    rows = await db.fetch(
        f"""SELECT {_COLUMNS} FROM flag
            WHERE (subject = $1 OR facts->>'requester' = $1 OR facts->>'supplier' = $1)
              AND ($2::text[] IS NULL OR kind = ANY($2::text[]))
            ORDER BY id DESC LIMIT $3""", symbol, _kinds(kinds), limit)
    return [_flag(r) for r in rows]


def facts_text(facts: Mapping[str, Any]) -> str:
    """`key=value` pairs in key order (for `run.py flags`); None shows as `-`."""
    return " ".join(f"{k}={'-' if v is None else v}" for k, v in sorted(facts.items()))


__all__ = ["CHARGE_REFUSED", "Db", "Flag", "FlagKind", "concerning", "count", "dedupe_key",
           "facts_text", "latest", "of_transaction", "raise_flag"]
