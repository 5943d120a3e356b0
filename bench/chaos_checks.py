"""The chaos harness's verdict: the parties' own records against the hub's database.

Every figure is counted twice where it can be, once from what the simulated
libraries, suppliers and the SMTP server saw (bench/chaos_scenarios.py) and once
from PostgreSQL, and each invariant is a row of the table printed at the end.

Settlement is checked against an independent recomputation: from the requesters'
records (who supplied each request, as the supplier's own status message said)
and the fee schedule the harness wrote itself, each agency's expected net is
summed in Python and compared, agency by agency, with the nets of the settlement
run the hub's code made from its ledger.
"""

from __future__ import annotations

import datetime
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import asyncpg

from bench.chaos_scenarios import PAGES, ChaosAsk, ChaosWorld
from schemas.settings import Settings
from settlement import ledger
from settlement.periods import Period
from settlement.run import settle


@dataclass(frozen=True)
class Fees:
    """The fee schedule the harness loads, and computes charges from on its own."""

    suppliers: list[str]

    def copy_minor(self, supplier: str) -> int:
        return 200 + 50 * self.suppliers.index(supplier) + 30 * PAGES

    def loan_minor(self, supplier: str) -> int:
        return 800 + 100 * self.suppliers.index(supplier) + 1200

    def toml(self) -> str:
        out = ['description = "chaos harness fee schedules"', 'currency = "CNY"', ""]
        for i, s in enumerate(self.suppliers):
            out += ["[[fee]]", f'supplier = "{s}"', 'service_kind = "DocumentDelivery"',
                    "effective_from = 2020-01-01", f'base = "{(200 + 50 * i) / 100:.2f}"',
                    'per_page = "0.30"', "",
                    "[[fee]]", f'supplier = "{s}"', 'service_kind = "BookLoan"',
                    "effective_from = 2020-01-01", f'service_fee = "{(800 + 100 * i) / 100:.2f}"',
                    'courier_fee = "12.00"', ""]
        return "\n".join(out)


@dataclass
class Row:
    label: str
    value: str
    ok: bool | None = None          # None: a figure, not an invariant


@dataclass
class Verdict:
    rows: list[Row] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def figure(self, label: str, value: object) -> None:
        self.rows.append(Row(label, str(value)))

    def invariant(self, label: str, value: object, ok: bool) -> None:
        self.rows.append(Row(label, str(value), ok))

    @property
    def ok(self) -> bool:
        return all(r.ok is not False for r in self.rows)

    @property
    def failed(self) -> list[str]:
        return [r.label for r in self.rows if r.ok is False]

    def lines(self) -> list[str]:
        width = max(len(r.label) for r in self.rows) + 2
        out = []
        for r in self.rows:
            mark = "" if r.ok is None else ("  ok" if r.ok else "  FAILED")
            out.append(f"  {r.label:<{width}}{r.value}{mark}")
        return out


def _sample(items: list[str], n: int = 5) -> str:
    return ", ".join(items[:n]) + (f" ... ({len(items)} in all)" if len(items) > n else "")


def _listing(v: Verdict, label: str, found: list[str], detail: str) -> None:
    """An invariant that `found` is empty, with a sample of it in the details."""
    v.invariant(label, len(found), not found)
    if found:
        v.details.append(f"{detail}: {_sample(found)}")


Transactions = dict[tuple[str, str], list[asyncpg.Record]]


async def verify(pool: asyncpg.Pool, settings: Settings, net: ChaosWorld, fees: Fees,
                 settled: dict[str, int] | str, faults: dict[str, object]) -> Verdict:
    """`settled`: each agency's net from the settlement run(s), or why the run failed."""
    v = Verdict()
    v.figure("requests sent", len(net.asks))
    by_scenario = Counter(a.scenario for a in net.asks.values())
    v.figure("scenarios", ", ".join(f"{k} {n}" for k, n in sorted(by_scenario.items())))
    rows = await pool.fetch(
        "SELECT id, requester, request_id, state, supplier FROM ill_transaction "
        "WHERE requester = ANY($1::text[])", net.requesters)
    db: Transactions = defaultdict(list)
    for r in rows:
        db[(r["requester"], r["request_id"])].append(r)
    _check_states(v, net, db)
    await _check_forwards(v, pool, net, db)
    await _check_mail(v, pool, net)
    await _check_charges(v, pool, net, db)
    _check_settlement(v, net, fees, settled)
    await _check_queues(v, pool, net)
    for key, value in faults.items():
        v.figure(key, value)
    return v


def _check_states(v: Verdict, net: ChaosWorld, db: Transactions) -> None:
    """Every request in the state its scenario implies, and the database agreeing."""
    asks = net.asks.values()
    unfinished = [a.request_id for a in asks if a.final is None]
    missing = [a.request_id for a in asks if (a.requester, a.request_id) not in db]
    _listing(v, "lost (no final answer, or no transaction)",
             sorted(set(unfinished) | set(missing)), "lost")
    finals = Counter(a.final or "none" for a in asks)
    v.figure("final state (requesters' view)",
             ", ".join(f"{k} {n}" for k, n in sorted(finals.items())))
    _listing(v, "final state differs from scenario",
             [f"{a.request_id}: {a.final} (expected {a.expected})"
              for a in asks if a.final is not None and a.final != a.expected],
             "wrong final state")
    _listing(v, "database state differs from requester's",
             [f"{a.request_id}: requester saw {a.final}, database has "
              f"{db[(a.requester, a.request_id)][0]['state']}"
              for a in asks if a.final and (a.requester, a.request_id) in db
              and db[(a.requester, a.request_id)][0]["state"] != a.final], "disagreement")
    _listing(v, "requests or actions refused by the hub",
             [f"{a.request_id}: {a.refused}" for a in asks if a.refused], "refused")


async def _check_forwards(v: Verdict, pool: asyncpg.Pool, net: ChaosWorld,
                          db: Transactions) -> None:
    """No duplicated forwards or transactions; every forward received."""
    books = net.books
    dup_txn = [f"{k[1]}: {len(rs)} transactions" for k, rs in db.items() if len(rs) > 1]
    second_new = [f"{s} got {rid} as {len(t)} transactions" for s, b in books.items()
                  for (_, rid), t in b.transactions.items() if len(t) > 1]
    dup_forward = [f"{s}: {txn}/{pos} under {len(ids)} message_ids"
                   for s, b in books.items() for (txn, pos), ids in b.forwards.items()
                   if len(ids) > 1]
    audit = await pool.fetch(
        """SELECT a.transaction_id, (a.detail->>'position')::int AS position,
                  a.detail->>'supplier' AS supplier, count(*) AS n
           FROM audit_log a JOIN ill_transaction t ON t.id = a.transaction_id
           WHERE a.event = 'forward' AND t.requester = ANY($1::text[])
           GROUP BY 1, 2, 3""", net.requesters)
    audit_twice = [f"{r['transaction_id']}/{r['position']} x{r['n']}" for r in audit
                   if r["n"] > 1]
    received = {(s, txn, pos) for s, b in books.items() for (txn, pos) in b.forwards}
    v.figure("forwards (audit log / received by suppliers)",
             f"{len(audit)} / {len(received)}")
    _listing(v, "duplicate forwards or transactions",
             dup_txn + second_new + dup_forward + audit_twice, "duplicates")
    _listing(v, "forwards never received by their supplier",
             [f"{r['transaction_id']}/{r['position']} to {r['supplier']}" for r in audit
              if (r["supplier"], r["transaction_id"], r["position"]) not in received],
             "forwards lost")
    v.figure("messages redelivered (same message_id, ignored)", net.stats.redelivered)


async def _check_mail(v: Verdict, pool: asyncpg.Pool, net: ChaosWorld) -> None:
    """One mail per supplied copy, each to its reader, each link downloaded."""
    mail = net.mail
    expected = {a.email for a in net.asks.values()
                if a.email and a.final == "CopyCompleted"}
    got = {r for r, ids in mail.by_recipient.items() if ids}
    twice = sorted(r for r, ids in mail.by_recipient.items() if len(ids) > 1)
    grants = await pool.fetch(
        "SELECT transaction_id, count(*) AS n FROM download_grant GROUP BY 1 HAVING count(*) > 1")
    v.figure("e-mails expected / received (distinct Message-IDs)",
             f"{len(expected)} / {sum(len(ids) for ids in mail.by_recipient.values())}")
    _listing(v, "e-mails missing", sorted(expected - got), "no mail for")
    v.invariant("e-mails sent twice (two Message-IDs for one grant)",
                len(twice) + len(grants), not twice and not grants)
    v.invariant("e-mails to no reader of a supplied copy", len(got - expected),
                not got - expected)
    v.figure("same Message-ID delivered again (kill between SMTP and commit)",
             sum(n - 1 for n in mail.by_message_id.values() if n > 1))
    unsent = await pool.fetchval("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL")
    v.invariant("mail outbox rows not sent", unsent, unsent == 0)
    clicked, stats = len(mail.clicked), net.stats
    v.invariant("readers' downloads done / failed",
                f"{stats.downloads} of {clicked} / {stats.download_failures}",
                stats.downloads == clicked and not stats.download_failures)


def _supplied(net: ChaosWorld) -> list[ChaosAsk]:
    return [a for a in net.asks.values() if a.final in ("CopyCompleted", "LoanCompleted")]


async def _check_charges(v: Verdict, pool: asyncpg.Pool, net: ChaosWorld,
                         db: Transactions) -> None:
    """One charge per supplied request, none for the others; the ledger balanced."""
    postings = await pool.fetch(
        "SELECT transaction_id, event, kind, requester, supplier, fee_minor FROM ledger_posting")
    per_key = Counter((p["transaction_id"], p["event"]) for p in postings if p["kind"] == "charge")
    per_txn = Counter(p["transaction_id"] for p in postings if p["kind"] == "charge")
    twice_charged = [t for t, n in per_txn.items() if n > 1] + [
        f"{k[0]}/{k[1]}" for k, n in per_key.items() if n > 1]
    supplied = _supplied(net)
    v.figure("charges posted / supplied requests", f"{len(per_txn)} / {len(supplied)}")
    v.invariant("charges posted twice", len(twice_charged), not twice_charged)
    txn_of = {key: rs[-1]["id"] for key, rs in db.items()}
    uncharged = [a.request_id for a in supplied
                 if txn_of.get((a.requester, a.request_id)) not in per_txn]
    wrongly = [a.request_id for a in net.asks.values() if a.final not in (
        "CopyCompleted", "LoanCompleted") and txn_of.get((a.requester, a.request_id))
        in per_txn]
    v.invariant("supplied but not charged / charged but not supplied",
                f"{len(uncharged)} / {len(wrongly)}", not uncharged and not wrongly)
    async with pool.acquire() as conn:
        problems = await ledger.check(conn)
    v.invariant("ledger check (every posting and the whole ledger sum to zero)",
                "balanced" if not problems else f"{len(problems)} problem(s)", not problems)
    v.details += [f"ledger: {p}" for p in problems[:5]]


def _check_settlement(v: Verdict, net: ChaosWorld, fees: Fees,
                      settled: dict[str, int] | str) -> None:
    """The settlement's nets equal a recomputation from the requesters' records."""
    want: Counter[str] = Counter()
    for a in _supplied(net):
        if a.supplier is None:
            continue
        fee = fees.copy_minor(a.supplier) if a.final == "CopyCompleted" \
            else fees.loan_minor(a.supplier)
        want[a.supplier] += fee
        want[a.requester] -= fee
    if isinstance(settled, str):
        v.invariant("settlement run", f"failed: {settled[:200]}", False)
        settled = {}
    v.figure("settlement nets (agencies)", f"{len(settled)} settled, "
             f"{sum(x for x in settled.values() if x > 0) / 100:.2f} CNY to receive")
    _listing(v, "settlement differs from the recomputation from clients' records",
             [f"{s}: settled {settled.get(s, 0)}, expected {want.get(s, 0)}"
              for s in sorted(set(want) | set(settled)) if settled.get(s, 0) != want.get(s, 0)],
             "settlement")


async def _check_queues(v: Verdict, pool: asyncpg.Pool, net: ChaosWorld) -> None:
    """The hub's own queues empty; the simulation without problems."""
    pending = await pool.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL")
    dead = await pool.fetchval("SELECT count(*) FROM dead_letter")
    v.invariant("outbox rows never published", pending, pending == 0)
    v.invariant("dead letters", dead, dead == 0)
    problems = net.stats.problems
    books = net.books.values()
    supplier_refusals = [e for b in books for e in b.refused]
    v.invariant("simulation problems / supplier messages refused",
                f"{len(problems)} / {len(supplier_refusals)}",
                not problems and not supplier_refusals)
    v.details += [f"problem: {p}" for p in problems[:5]]
    v.details += [f"supplier refused: {e}" for e in supplier_refusals[:5]]
    v.figure("late supplier answers refused (deadline had passed)", net.stats.late_refusals)
    v.figure("FTP uploads (retried after a kill)",
             f"{sum(b.uploads for b in books)} ({sum(b.upload_retries for b in books)})")
    v.figure("publishes retried by clients", net.stats.send_retries)


async def settle_all(pool: asyncpg.Pool, settings: Settings, started: datetime.datetime,
                     now: datetime.datetime) -> dict[str, int]:
    """Settle every period the run touched; each agency's net, summed over them."""
    tz = settings.timezone
    first, last = Period.containing(started, tz), Period.containing(now, tz)
    nets: Counter[str] = Counter()
    p = first
    while True:
        result = await settle(pool, settings, p, now=last.ends_at(tz)
                              + datetime.timedelta(minutes=1), pdf=False)
        if result is None:  # only with wait=False, not used here
            raise RuntimeError(f"settlement of {p.name}: another run holds the lock")
        for s in result.statements:
            for t in s.totals:
                nets[s.symbol] += t.net
        if p.name == last.name:
            break
        p = p.next()
    return dict(nets)


def summary_json(verdict: Verdict) -> str:
    return json.dumps({r.label: {"value": r.value, "ok": r.ok} for r in verdict.rows},
                      ensure_ascii=False, indent=2)
