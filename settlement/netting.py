"""Multilateral netting through the centre, computed in SQL over the ledger (ARCHITECTURE §4).

Every agency settles one signed amount per currency with the centre:

    net = earned as supplier - owed as requester + subsidies the centre paid on its behalf

positive: the centre pays the agency; negative: the agency pays the centre. Because
every posting's entries sum to zero, the agencies' nets sum to minus the centre's
position, which is its subsidy outlay.

The figures come from two independent aggregations, both GROUP BY in PostgreSQL
(nothing is loaded row by row into Python):

* the entries of the run's postings, by owner, currency and account: the ledger's
  view (receivable, payable, subsidy, subsidy_expense);
* the run's postings seen as statement lines, one per posting and party (supplier
  and requester; a posting where both are the same agency is one line): the
  statements' view (fee earned, fee owed, subsidy, patron share).

The invariants compare them; a run whose invariants fail is aborted
(InvariantViolation), and the checked figures are stored in the run record.
"""

from __future__ import annotations

import asyncio
import datetime
from dataclasses import dataclass, field, fields
from typing import Any

import asyncpg

from infra.database import Connection
from schemas.money import Money
from settlement.ledger import CENTRE
from settlement.statement_model import Totals, amount

AGENCY_ACCOUNTS = ("receivable", "payable", "subsidy")
CENTRE_ACCOUNTS = ("subsidy_expense",)


class InvariantViolation(RuntimeError):
    """A settlement invariant does not hold: the run is aborted, nothing is closed."""

    def __init__(self, problems: list[str], invariants: dict[str, Any]) -> None:
        super().__init__("settlement invariants violated: " + "; ".join(problems[:10]))
        self.problems = problems
        self.invariants = invariants


# "No closed run before this one": a region that holds no posting.
NO_RUN_MAX = 0
NO_RUN_CUTOFF = datetime.date(1, 1, 1)


@dataclass(frozen=True)
class Scope:
    """Which postings a computation covers (schemas/migrations/0010_settlement_speed.sql).

    A run (posting_max set): its region, the postings with id <= posting_max dated on
    or before `cutoff`, minus the region of the closed run before it (prev_max,
    prev_cutoff). A preview (posting_max None): the postings dated on or before
    `cutoff` outside the latest closed run's region, i.e. what a run started now would
    settle. `date_from` is the period's first day (earlier postings are late).
    """

    date_from: datetime.date
    cutoff: datetime.date
    run_id: int | None = None
    posting_max: int | None = None
    prev_max: int = NO_RUN_MAX
    prev_cutoff: datetime.date = NO_RUN_CUTOFF

    def where(self, ident: str, day: str, first: int = 1) -> tuple[str, list[Any]]:
        """(condition, parameters from $first) selecting the postings whose id is the
        column `ident` and whose date is `day` (a posting's, or its entries' copy)."""
        sql = (f"{day} <= ${first} AND ({ident} > ${first + 1} OR {day} > ${first + 2})")
        args: list[Any] = [self.cutoff, self.prev_max, self.prev_cutoff]
        if self.posting_max is not None:
            sql = f"{ident} <= ${first + 3} AND {sql}"
            args.append(self.posting_max)
        return sql, args


@dataclass(frozen=True, kw_only=True)
class AgencyNet(Totals):
    """One agency's figures in one currency (Totals: all amounts in minor units; `net`
    from the ledger entries: receivable + payable + subsidy), and its ledger entries."""

    symbol: str
    entries: int

    def money(self, minor: int) -> Money:
        return Money(minor, self.currency)

    def statement_totals(self) -> Totals:
        """These figures as the agency's statement prints them."""
        return Totals(**{f.name: getattr(self, f.name) for f in fields(Totals)})


@dataclass(frozen=True)
class SubsidyByRule:
    rule: str
    currency: str
    granted: int
    postings: int


@dataclass(frozen=True)
class SubsidyByBudget:
    budget_id: int
    name: str
    requester: str       # '' = a global budget
    period: str          # YYYY-MM or total
    currency: str
    granted: int


@dataclass
class Netting:
    scope: Scope
    agencies: list[AgencyNet]                    # by symbol (code point order), currency
    centre: dict[str, int]                       # currency -> centre position (negative)
    centre_entries: dict[str, int]
    postings: int
    late_postings: int
    entries: int
    unbalanced_postings: int
    entry_sums: dict[tuple[str, str, str], tuple[int, int]]   # (owner, currency, account)
    by_rule: list[SubsidyByRule] = field(default_factory=list)
    by_budget: list[SubsidyByBudget] = field(default_factory=list)

    @property
    def currencies(self) -> list[str]:
        return sorted({a.currency for a in self.agencies} | set(self.centre))

    @property
    def symbols(self) -> list[str]:
        """Agencies with a statement, in the order statements are written."""
        return sorted({a.symbol for a in self.agencies})

    def lines_of(self, symbol: str) -> int:
        return sum(a.lines for a in self.agencies if a.symbol == symbol)

    def of(self, symbol: str) -> list[AgencyNet]:
        return [a for a in self.agencies if a.symbol == symbol]

    def totals_of(self, symbol: str) -> tuple[Totals, ...]:
        """An agency's statement totals, one per currency."""
        return tuple(a.statement_totals() for a in self.of(symbol))

    def rule_rows(self) -> list[tuple[str, str, int, int]]:
        """The subsidy outlay by rule: (rule, currency, granted, postings)."""
        return [(r.rule, r.currency, r.granted, r.postings) for r in self.by_rule]

    def budget_rows(self) -> list[tuple[str, str, str, str, int]]:
        """The subsidy outlay by budget: (name, requester, period, currency, granted)."""
        return [(b.name, b.requester, b.period, b.currency, b.granted) for b in self.by_budget]

    def totals(self) -> dict[str, dict[str, int]]:
        """Per currency: the sums over all agencies, and the centre's position."""
        out: dict[str, dict[str, int]] = {}
        for c in self.currencies:
            rows = [a for a in self.agencies if a.currency == c]
            out[c] = {
                "agencies": len(rows),
                "earned": sum(a.earned for a in rows),
                "owed": sum(a.owed for a in rows),
                "subsidy": sum(a.subsidy for a in rows),
                "patron": sum(a.patron for a in rows),
                "toReceive": sum(a.net for a in rows if a.net > 0),
                "toPay": -sum(a.net for a in rows if a.net < 0),
                "net": sum(a.net for a in rows),
                "centre": self.centre.get(c, 0),
                "granted": sum(r.granted for r in self.by_rule if r.currency == c),
            }
        return out


def _lines_sql(pwhere: str, date_from: str) -> str:
    # Both views of each posting in one pass: grouped by supplier and by requester
    # (GROUPING SETS; the other party's column is NULL in each row). A posting whose
    # supplier is its requester is one statement line, counted in both: `self`.
    return f"""
        SELECT p.supplier, p.requester, p.currency,
               count(*) AS n,
               count(*) FILTER (WHERE p.requester = p.supplier) AS self,
               count(*) FILTER (WHERE p.local_date < {date_from}) AS late,
               count(*) FILTER (WHERE p.local_date < {date_from} AND p.requester = p.supplier)
                   AS late_self,
               sum(p.fee_minor)::bigint AS fee,
               sum(p.subsidy_minor)::bigint AS subsidy,
               sum(p.patron_share_minor)::bigint AS patron
        FROM ledger_posting p
        WHERE {pwhere}
        GROUP BY GROUPING SETS ((p.supplier, p.currency), (p.requester, p.currency))"""


def _parties(rows: list[asyncpg.Record]) -> dict[tuple[str, str], dict[str, int]]:
    """Per (agency, currency): the statement-line figures, from the two grouping sets."""
    out: dict[tuple[str, str], dict[str, int]] = {}
    zero = {"lines": 0, "as_supplier": 0, "as_requester": 0, "late": 0, "late_postings": 0,
            "earned": 0, "owed": 0, "subsidy": 0, "patron": 0}
    for r in rows:
        party = r["supplier"] if r["supplier"] is not None else r["requester"]
        f = out.setdefault((party, r["currency"]), dict(zero))
        if r["supplier"] is not None:
            f["as_supplier"] += r["n"]
            f["earned"] += r["fee"]
            f["lines"] += r["n"]
            f["late"] += r["late"]
            f["late_postings"] += r["late"]
        else:
            f["as_requester"] += r["n"]
            f["owed"] += r["fee"]
            f["subsidy"] += r["subsidy"]
            f["patron"] += r["patron"]
            # a self-supplied posting was counted as a line on the supplier side already
            f["lines"] += r["n"] - r["self"]
            f["late"] += r["late"] - r["late_self"]
    return out


# Weighted checksum of the entries: sum(amount * w(posting)) with w in 1..65536 from the
# posting id. If every posting balances it is zero per currency; a single unbalanced
# posting always makes it nonzero (several could only cancel exactly by coincidence).
# One more column in the entries aggregate instead of a GROUP BY posting over all entries;
# only when it is nonzero are the unbalanced postings counted exactly.
_WEIGHT = "((hashint8(e.posting_id) & 65535) + 1)"
# The aggregations and the grants' join hash or sort a whole run: with the default 4 MB
# they spill to disk. JIT compilation costs more than it saves on these simple
# aggregates. The queries already run side by side on their own connections (and next
# to the statement streams), so parallel workers would only compete for the same cores.
_TUNING = ("SET LOCAL work_mem = '256MB'; SET LOCAL jit = off; "
           "SET LOCAL max_parallel_workers_per_gather = 0")
# The grants meet their postings in posting id order on both sides: merging the two
# indexes costs half of hashing every posting of the run (bench/settlement.py).
_QUERY_TUNING = {"grants": "; SET LOCAL enable_hashjoin = off"}


async def compute(db: Connection | asyncpg.Pool, scope: Scope, *,
                  connections: int | None = None) -> Netting:
    """All figures of a run (or a preview) from the ledger, by aggregation in SQL.

    With a pool, the independent aggregations run at once on their own connections
    (at most `connections` of them; default: the pool's size).
    """
    pwhere, args = scope.where("p.id", "p.local_date")
    # Entries carry their posting's id and date (settlement/ledger.py writes both from
    # the posting), so the run's entries are found without a join; an entry whose copy
    # disagreed would unbalance the invariants below and abort the run.
    ewhere, eargs = scope.where("e.posting_id", "e.local_date")
    queries = {
        "lines": (_lines_sql(pwhere, f"${len(args) + 1}"), [*args, scope.date_from]),
        "sums": (f"""SELECT e.owner, e.currency, e.account,
                            sum(e.amount_minor)::bigint AS total, count(*) AS n,
                            sum(e.amount_minor * {_WEIGHT}) AS weighted
                     FROM ledger_entry e WHERE {ewhere}
                     GROUP BY e.owner, e.currency, e.account""", eargs),
        # One pass over the grants for both breakdowns: by rule, and by budget (a grant
        # counts in full against each budget it lists).
        "grants": (f"""SELECT g.rule, g.budgets, p.currency,
                              sum(g.granted_minor)::bigint AS granted,
                              count(*) FILTER (WHERE g.granted_minor <> 0) AS n
                       FROM ledger_posting p JOIN subsidy_grant g ON g.posting_id = p.id
                       WHERE {pwhere}
                       GROUP BY g.rule, g.budgets, p.currency""", args),
    }
    results = await _fetch_all(db, queries, connections)
    lines, sums = results["lines"], results["sums"]
    by_rule, by_budget = await _subsidy_outlay(db, results["grants"])
    weighted: dict[str, int] = {}
    for r in sums:
        weighted[r["currency"]] = weighted.get(r["currency"], 0) + int(r["weighted"])
    unbalanced = 0
    if any(weighted.values()):
        unbalanced = int(await _fetchval(db, f"""
            SELECT count(*) FROM (SELECT 1 FROM ledger_entry e WHERE {ewhere}
                                  GROUP BY e.posting_id, e.currency
                                  HAVING sum(e.amount_minor) <> 0) u""", eargs))
        unbalanced = max(unbalanced, 1)
    entry_sums = {(r["owner"], r["currency"], r["account"]): (int(r["total"]), int(r["n"]))
                  for r in sums}
    per_owner: dict[tuple[str, str], tuple[int, int]] = {}
    for (owner, currency, account), (total, n) in entry_sums.items():
        v, k = per_owner.get((owner, currency), (0, 0))
        per_owner[(owner, currency)] = (v + (total if account in AGENCY_ACCOUNTS else 0), k + n)
    parties = _parties(lines)
    agencies: list[AgencyNet] = []
    for (party, currency), f in sorted(parties.items()):
        net, n_entries = per_owner.get((party, currency), (0, 0))
        agencies.append(AgencyNet(
            symbol=party, currency=currency, lines=f["lines"], as_supplier=f["as_supplier"],
            as_requester=f["as_requester"], late=f["late"], earned=f["earned"],
            owed=f["owed"], subsidy=f["subsidy"], patron=f["patron"], net=net,
            entries=n_entries))
    centre: dict[str, int] = {}
    centre_entries: dict[str, int] = {}
    for (owner, currency, _account), (total, n) in entry_sums.items():
        if owner == CENTRE:
            centre[currency] = centre.get(currency, 0) + total
            centre_entries[currency] = centre_entries.get(currency, 0) + n
    return Netting(
        scope=scope, agencies=agencies, centre=centre, centre_entries=centre_entries,
        postings=sum(f["as_supplier"] for f in parties.values()),
        late_postings=sum(f["late_postings"] for f in parties.values()),
        entries=sum(n for _v, n in entry_sums.values()),
        unbalanced_postings=unbalanced, entry_sums=entry_sums, by_rule=by_rule,
        by_budget=by_budget)


async def _subsidy_outlay(db: Connection | asyncpg.Pool, grants: list[asyncpg.Record]
                          ) -> tuple[list[SubsidyByRule], list[SubsidyByBudget]]:
    """The grants' sums by rule, and by budget (a grant counts in full against each)."""
    rule_sums: dict[tuple[str, str], list[int]] = {}
    budget_sums: dict[tuple[int, str], int] = {}
    for r in grants:
        acc = rule_sums.setdefault((r["rule"], r["currency"]), [0, 0])
        acc[0] += r["granted"]
        acc[1] += r["n"]
        for b in r["budgets"]:
            budget_sums[(b, r["currency"])] = budget_sums.get((b, r["currency"]), 0) + r["granted"]
    budgets = {b["id"]: b for b in await _fetch(
        db, "SELECT id, name, requester, period FROM subsidy_budget WHERE id = ANY($1::bigint[])",
        [sorted({b for b, _c in budget_sums})])}
    by_rule = [SubsidyByRule(rule, c, v[0], v[1]) for (rule, c), v in
               sorted(rule_sums.items(), key=lambda kv: (kv[0][1], kv[0][0]))]
    by_budget = sorted((SubsidyByBudget(b, budgets[b]["name"], budgets[b]["requester"],
                                        budgets[b]["period"], c, v)
                        for (b, c), v in budget_sums.items()),
                       key=lambda x: (x.currency, x.name, x.requester, x.period, x.budget_id))
    return by_rule, by_budget


async def _fetch_all(db: Connection | asyncpg.Pool,
                     queries: dict[str, tuple[str, list[Any]]],
                     connections: int | None) -> dict[str, list[asyncpg.Record]]:
    if isinstance(db, asyncpg.Pool):
        slots = asyncio.Semaphore(max(1, connections or db.get_max_size()))

        async def one(name: str, sql: str, args: list[Any]) -> list[asyncpg.Record]:
            async with slots, db.acquire() as conn, conn.transaction(readonly=True):
                await conn.execute(_TUNING + _QUERY_TUNING.get(name, ""))
                rows: list[asyncpg.Record] = await conn.fetch(sql, *args)
                return rows

        fetched = await asyncio.gather(*(one(k, sql, a) for k, (sql, a) in queries.items()))
        return dict(zip(queries, fetched, strict=True))
    out: dict[str, list[asyncpg.Record]] = {}
    for k, (sql, a) in queries.items():
        async with db.transaction():
            await db.execute(_TUNING + _QUERY_TUNING.get(k, ""))
            out[k] = await db.fetch(sql, *a)
    return out


async def _fetch(db: Connection | asyncpg.Pool, sql: str, args: list[Any]
                 ) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record]
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            rows = await conn.fetch(sql, *args)
    else:
        rows = await db.fetch(sql, *args)
    return rows


async def _fetchval(db: Connection | asyncpg.Pool, sql: str, args: list[Any]) -> Any:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as conn:
            return await conn.fetchval(sql, *args)
    return await db.fetchval(sql, *args)


def invariants(n: Netting) -> tuple[dict[str, Any], list[str]]:
    """The run's invariants: (the record to store, the problems found; empty = all hold).

    1. entriesBalance: every posting's entries sum to zero per currency, hence all the
       run's entries do too.
    2. netsSumToMinusCentre: per currency, the agencies' nets sum to minus the centre's
       position, which equals the subsidy posted and the subsidy granted by the rules.
    3. everyEntryInOneStatement: each entry belongs to exactly one statement, its
       owner's (the centre's to the centre summary): every owner is a party of the run
       with only its own kind of accounts, and per agency the ledger's sums equal the
       statement lines' sums (fee earned = receivable, fee owed = -payable, subsidy).
       Statement writing adds the lines actually written.
    """
    problems: list[str] = []
    # 1
    sum_by_currency: dict[str, int] = {}
    for (_o, c, _a), (v, _n) in n.entry_sums.items():
        sum_by_currency[c] = sum_by_currency.get(c, 0) + v
    for c, v in sorted(sum_by_currency.items()):
        if v != 0:
            problems.append(f"the run's entries sum to {amount(v, c)} {c}, not zero")
    if n.unbalanced_postings:
        problems.append(f"{n.unbalanced_postings} posting(s) whose entries do not sum to zero")
    balance = {"ok": not n.unbalanced_postings and not any(sum_by_currency.values()),
               "unbalancedPostings": n.unbalanced_postings,
               "sumByCurrency": {c: amount(v, c) for c, v in sorted(sum_by_currency.items())}}
    # 2
    nets: dict[str, dict[str, str]] = {}
    nets_ok = True
    for c, t in n.totals().items():
        posted = t["subsidy"]
        if not (t["net"] == -t["centre"] == posted == t["granted"]):
            nets_ok = False
            problems.append(
                f"{c}: the agencies' nets sum to {amount(t['net'], c)}, the centre's "
                f"position is {amount(t['centre'], c)}, subsidy posted "
                f"{amount(posted, c)}, granted by the rules {amount(t['granted'], c)}")
        nets[c] = {"agencyNets": amount(t["net"], c), "centrePosition": amount(t["centre"], c),
                   "subsidyPosted": amount(posted, c),
                   "subsidyGranted": amount(t["granted"], c)}
    # 3
    parties = {(a.symbol, a.currency): a for a in n.agencies}
    in_statements = in_summary = 0
    coverage: list[str] = []
    for (owner, c, account), (_v, count) in sorted(n.entry_sums.items()):
        if owner == CENTRE:
            in_summary += count
            if account not in CENTRE_ACCOUNTS:
                coverage.append(f"the centre has {count} {account} entr(ies) in {c}")
        elif (owner, c) not in parties:
            coverage.append(f"{owner} has {count} {account} entr(ies) in {c} but no statement "
                            "lines")
        elif account not in AGENCY_ACCOUNTS:
            coverage.append(f"{owner} has {count} entr(ies) on account {account} in {c}")
        else:
            in_statements += count
    for (symbol, c), a in parties.items():
        got = {acc: n.entry_sums.get((symbol, c, acc), (0, 0))[0] for acc in AGENCY_ACCOUNTS}
        want = {"receivable": a.earned, "payable": -a.owed, "subsidy": a.subsidy}
        for acc in AGENCY_ACCOUNTS:
            if got[acc] != want[acc]:
                coverage.append(f"{symbol} {c}: ledger {acc} {amount(got[acc], c)}, "
                                f"statement lines say {amount(want[acc], c)}")
        if a.net != a.earned - a.owed + a.subsidy:
            coverage.append(f"{symbol} {c}: net {amount(a.net, c)} is not earned - owed + "
                            "subsidy")
    if in_statements + in_summary != n.entries:
        coverage.append(f"{n.entries} entries, but {in_statements} in agency statements and "
                        f"{in_summary} in the centre summary")
    problems += coverage
    every = {"ok": not coverage, "postings": n.postings, "entries": n.entries,
             "entriesInStatements": in_statements, "entriesInCentreSummary": in_summary,
             "statements": len(n.symbols),
             "statementLines": sum(a.lines for a in n.agencies),
             "problems": coverage[:20]}
    record: dict[str, Any] = {"entriesBalance": balance,
                              "netsSumToMinusCentre": {"ok": nets_ok, "byCurrency": nets},
                              "everyEntryInOneStatement": every}
    record["ok"] = not problems
    return record, problems


def require(record: dict[str, Any], problems: list[str]) -> None:
    """Abort the run when an invariant fails."""
    if problems:
        raise InvariantViolation(problems, record)


def require_lines_written(record: dict[str, Any], written: int) -> None:
    """The last part of everyEntryInOneStatement, once the statement files are written:
    as many lines written as the netting counts (recorded as linesWritten; the run is
    aborted if not)."""
    every = record["everyEntryInOneStatement"]
    every["linesWritten"] = written
    if written != every["statementLines"]:
        every["ok"] = record["ok"] = False
        raise InvariantViolation([f"{written} statement lines written, "
                                  f"{every['statementLines']} expected"], record)


__all__ = ["AgencyNet", "InvariantViolation", "Netting", "Scope", "SubsidyByBudget",
           "SubsidyByRule", "compute", "invariants", "require", "require_lines_written"]
