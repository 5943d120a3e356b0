"""Holdings that learn (issue 18): what suppliers' answers say about their holdings.

A supplier asked for an item its holdings list answers, sooner or later: it supplies,
or it answers Unfilled. Each such answer is recorded per listed identifier
(`holding_answer`, migration 0026), in the transaction that applies it. An answer that
says the item is not there (`NOT_HELD_REASONS`) puts that holding in doubt: the next
request for the item asks the others first (broker/policy.py `_doubt`, fed by
broker/dispatch/sql.py `_candidates`). A doubt lasts until the supplier answers for
the item again (a later supply lifts it) or loads the holding afresh
(broker/holdings.py `import_csv`). The answers also give each supplier's holdings
accuracy per id type: of the listed items it was asked for and answered, the share it
did hold (`accuracy`, the one formula; the routing lab imports it too).

A silence or a cancellation says nothing about the shelf, so only answers count.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from infra.database import Connection

__all__ = [
    "MIN_ASKED", "NOT_HELD_REASONS", "WINDOW_DAYS", "Doubt", "SupplierQuality", "TypeQuality",
    "accuracy", "doubts", "is_not_held", "quality", "record_answer",
]

# ISO 18626 reasonUnfilled values (an open list) that say "we do not actually have it":
# not held at all, not on the shelf where the catalogue says, missing, lost. InUse,
# PoorCondition, NotAvailableForILL, PolicyProblem ... say it is there but not lent.
NOT_HELD_REASONS = frozenset({"notheld", "notonshelf", "missing", "lost"})

# An accuracy needs this many answers about listed items before it ranks anything: with
# fewer, one unlucky answer would sink a supplier (None: no history, no penalty).
MIN_ASKED = 5
# The answers routing counts: a library that fixed its catalogue recovers within this.
WINDOW_DAYS = 180


def accuracy(asked: int, not_held: int) -> float | None:
    """The share (0..1) of the listed items a supplier was asked for and answered that it
    did hold; None with fewer than MIN_ASKED answers."""
    if asked < MIN_ASKED:
        return None
    return min(max((asked - not_held) / asked, 0.0), 1.0)


def is_not_held(reason: str | None) -> bool:
    """Whether an Unfilled's reasonUnfilled says the item is not there (any case)."""
    return reason is not None and reason.strip().casefold() in NOT_HELD_REASONS


# One row per identifier of the request that the supplier lists: only an item asked for
# because it was listed counts (a supplier a rule added, holding nothing, adds nothing).
RECORD_ANSWER = """
INSERT INTO holding_answer (supplier, id_type, id_value, transaction_id, answered_at,
                            not_held, reason)
SELECT h.symbol, h.id_type, h.id_value, $4, $5, $6, $7
FROM unnest($2::text[], $3::text[]) AS q(id_type, id_value)
JOIN holding h ON h.id_type = q.id_type AND h.id_value = q.id_value AND h.symbol = $1"""


async def record_answer(conn: Connection, *, supplier: str, transaction_id: str,
                        ids: Sequence[tuple[str, str]], at: datetime,
                        unfilled: str | None) -> None:
    """Record a supplier's answer about the item of a request (`ids`, normalised, as
    `broker.holdings.identifiers_of` gives them): supplied (`unfilled` None) or Unfilled
    with this reasonUnfilled ("" when it gave none)."""
    if not ids:
        return
    await conn.execute(RECORD_ANSWER, supplier, [t for t, _ in ids], [v for _, v in ids],
                       transaction_id, at, is_not_held(unfilled), unfilled)


# ---- reading: the quality report, the dashboard, the monthly mail ----------------------

# The holdings in doubt (the view `holding_doubt`, migration 0026, says the rule), of
# one supplier or all, whose not-held answer came in [$2, $3).
LIVE_DOUBTS = """
SELECT supplier, id_type, id_value, reason, answered_at, transaction_id FROM holding_doubt
WHERE ($1::text IS NULL OR supplier = $1)
  AND ($2::timestamptz IS NULL OR answered_at >= $2)
  AND ($3::timestamptz IS NULL OR answered_at < $3)
ORDER BY supplier, answered_at DESC, id_type, id_value"""

# Answers about listed items since $1, per supplier and id type.
QUALITY_COUNTS = """
SELECT a.supplier, g.name, a.id_type, count(*)::int AS asked,
       count(*) FILTER (WHERE a.not_held)::int AS not_held
FROM holding_answer a JOIN agency g ON g.symbol = a.supplier
WHERE a.answered_at >= $1 AND ($2::text IS NULL OR a.supplier = $2)
GROUP BY a.supplier, g.name, a.id_type
ORDER BY a.supplier, a.id_type"""

AGENCY_NAME = "SELECT name FROM agency WHERE symbol = $1"


@dataclass(frozen=True)
class Doubt:
    """A holding in doubt: its supplier answered this for it, after it was loaded."""

    supplier: str
    id_type: str
    id_value: str
    reason: str
    answered_at: datetime
    transaction_id: str


@dataclass(frozen=True)
class TypeQuality:
    id_type: str
    asked: int          # answers about listed items of this id type in the window
    not_held: int

    @property
    def accuracy(self) -> float | None:
        return accuracy(self.asked, self.not_held)


@dataclass(frozen=True)
class SupplierQuality:
    symbol: str
    name: str
    types: tuple[TypeQuality, ...]
    doubts: tuple[Doubt, ...]

    @property
    def asked(self) -> int:
        return sum(t.asked for t in self.types)

    @property
    def not_held(self) -> int:
        return sum(t.not_held for t in self.types)

    @property
    def accuracy(self) -> float | None:
        return accuracy(self.asked, self.not_held)


async def doubts(conn: Connection, supplier: str | None, since: datetime | None = None,
                 until: datetime | None = None) -> list[Doubt]:
    """The holdings in doubt (of one supplier, or all) whose not-held answer came in
    [since, until) (None: unbounded)."""
    return [Doubt(r["supplier"], r["id_type"], r["id_value"], r["reason"] or "",
                  r["answered_at"], r["transaction_id"])
            for r in await conn.fetch(LIVE_DOUBTS, supplier, since, until)]


async def quality(conn: Connection, supplier: str | None, now: datetime,
                  window_days: int = WINDOW_DAYS) -> list[SupplierQuality]:
    """Each supplier's (or one's) answers about listed items over the window, per id
    type, and its holdings in doubt (of any age), least accurate first."""
    since = now - timedelta(days=window_days)
    counts: dict[str, tuple[str, list[TypeQuality]]] = {}
    for r in await conn.fetch(QUALITY_COUNTS, since, supplier):
        counts.setdefault(r["supplier"], (r["name"], []))[1].append(
            TypeQuality(r["id_type"], r["asked"], r["not_held"]))
    by_supplier: dict[str, list[Doubt]] = {}
    for d in await doubts(conn, supplier):
        by_supplier.setdefault(d.supplier, []).append(d)
    for symbol in by_supplier.keys() - counts.keys():
        counts[symbol] = (await conn.fetchval(AGENCY_NAME, symbol) or symbol, [])
    if supplier is not None and supplier not in counts:
        name = await conn.fetchval(AGENCY_NAME, supplier)
        if name is None:
            raise LookupError(f"no agency {supplier!r}")
        counts[supplier] = (name, [])
    found = [SupplierQuality(s, name, tuple(types), tuple(by_supplier.get(s, ())))
             for s, (name, types) in counts.items()]
    return sorted(found, key=_least_accurate_first)


def _least_accurate_first(q: SupplierQuality) -> tuple[float, int, str]:
    shown = q.accuracy
    return (shown if shown is not None else 2.0, -len(q.doubts), q.symbol)
