"""The demo's closing summary, computed from the hub's database (not from the simulation).

Definitions, so the numbers can be checked against the tables:

* a *request* is a transaction that was not superseded by a Retry (the requester's
  `request` with requestType Retry replaces the one offered a retry; that one is
  Cancelled with the audit event `retried` and is not counted again);
* *filled*: the supplier delivered (CopyCompleted, or Loaned and whatever followed);
  *fill rate* = filled / requests, cancelled requests included in the denominator;
* *suppliers tried*: rota entries forwarded (any outcome but `pending`) per request;
* *turnaround*: from the request's arrival at the hub to the delivering status, in
  simulated hours (real seconds x --speed).
"""

from __future__ import annotations

import datetime
import re
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from broker.borrower_trust import borrower_history, trust
from broker.states import TERMINAL
from infra import flags
from infra.database import Connection, fetch_one
from schemas.settings import Loans
from settlement import claims, ledger
from settlement.claims import Kind
from settlement.subsidy import budgets_report

DELIVERED = ("CopyCompleted", "LoanCompleted", "CompletedWithoutReturn", "Loaned", "Received",
             "ShippedReturn", "Overdue", "Recalled")

_REQUESTS = """
    SELECT t.* FROM ill_transaction t
    WHERE NOT EXISTS (SELECT 1 FROM audit_log a WHERE a.transaction_id = t.id
                      AND a.event = 'retried')"""


# A supplier answered Unfilled NotHeld for an item its holdings list: the union
# catalogue was wrong ("our holdings data is not accurate enough").
_LISTED_NOT_HELD = """
    SELECT l.actor, l.transaction_id
    FROM audit_log l JOIN ill_transaction t ON t.id = l.transaction_id
    WHERE l.event = 'status:Unfilled' AND l.detail->>'reasonUnfilled' = 'NotHeld'
      AND EXISTS (SELECT 1 FROM holding h WHERE h.symbol = l.actor
                  AND h.id_type || ':' || h.id_value = t.item_key)"""

# The same, by the half of the run the request arrived in (transactions in order of
# arrival): fewer in the second half when the hub learned which holdings are untrue.
_NOT_HELD_BY_HALF = f"""
    WITH arrived AS (
        SELECT id, row_number() OVER (ORDER BY created_at, id) AS k, count(*) OVER () AS n
        FROM ill_transaction)
    SELECT count(*) FILTER (WHERE 2 * a.k <= a.n) AS first,
           count(*) FILTER (WHERE 2 * a.k > a.n) AS second
    FROM ({_LISTED_NOT_HELD}) x JOIN arrived a ON a.id = x.transaction_id"""


# Book loans (issue 19): every loan the hub started, and those sent back late, by how
# many days late the hub reckons them (when they could be back at the supplier).
_LOANS = "SELECT count(*) FROM loan"
_LATE_LOANS = """
    SELECT t.requester, l.days_late FROM loan l JOIN ill_transaction t ON t.id = l.transaction_id
    WHERE l.days_late > 0 ORDER BY l.returned_at, t.id"""
_AGENCY_NAME = "SELECT name FROM agency WHERE symbol = $1"


@dataclass
class LateLoan:
    requester: str
    days: int
    trust: float                  # the borrower's trust score after it


@dataclass
class LostLoan:
    claim: int
    state: str                    # the claim's state (settled, once the centre settled it)
    amount: str                   # what the payer was charged, e.g. "170.00 CNY"
    payer: str                    # the payer's name


@dataclass
class LoanFacts:
    loaned: int = 0
    late: list[LateLoan] = field(default_factory=list)
    lost: list[LostLoan] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)   # mishaps the run had no loan for


async def loans_report(pool: asyncpg.Pool, terms: Loans, today: datetime.date) -> LoanFacts:
    """The loans, the late ones with the borrower's trust, the settled loss claims."""
    out = LoanFacts()
    async with pool.acquire() as conn:
        out.loaned = await conn.fetchval(_LOANS)
        for r in await conn.fetch(_LATE_LOANS):
            history = await borrower_history(conn, r["requester"], today)
            out.late.append(LateLoan(r["requester"], r["days_late"], trust(history, terms)))
        for c in await claims.claims(conn):
            if c.kind is not Kind.LOST:
                continue
            paid = c.settled_amount
            payer = c.party(c.payer) if c.payer is not None else ""
            out.lost.append(LostLoan(
                c.id, c.state.value, f"{paid.amount_text()} {paid.currency}" if paid else "",
                (await conn.fetchval(_AGENCY_NAME, payer) or payer) if payer else ""))
    return out


def loans_line(x: LoanFacts) -> str:
    """E.g. `12 loaned, 1 returned late (6 days, borrower trust 0.90), 1 lost in transit
    back: claim 1 settled, 170.00 CNY charged to 兰州大学图书馆`."""
    parts = [f"{x.loaned} loaned"]
    if x.late:
        each = "; ".join(f"{d.days} day{'s' if d.days != 1 else ''}, borrower trust "
                         f"{d.trust:.2f}" for d in x.late)
        parts.append(f"{len(x.late)} returned late ({each})")
    if x.lost:
        each = "; ".join(f"claim {c.claim} {c.state}"
                         + (f", {c.amount} charged to {c.payer}" if c.amount else "")
                         for c in x.lost)
        parts.append(f"{len(x.lost)} lost in transit back: {each}")
    text = ", ".join(parts)
    if x.missing:
        text += f" ({'; '.join(x.missing)})"
    return text


@dataclass
class SupplierLine:
    symbol: str
    name: str
    forwarded: int
    supplied: int
    unfilled: int
    not_held: int
    timed_out: int
    cancelled: int
    p50_hours: float | None

    @property
    def fill_rate(self) -> float | None:
        answered = self.supplied + self.unfilled + self.timed_out
        return self.supplied / answered if answered else None


@dataclass
class Summary:
    requests: int = 0
    filled: int = 0
    unfilled: int = 0
    cancelled: int = 0
    open: int = 0
    retried: int = 0
    by_kind: dict[str, tuple[int, int]] = field(default_factory=dict)   # kind -> (n, filled)
    forwards: int = 0
    outcomes: dict[str, int] = field(default_factory=dict)
    not_held: int = 0
    not_held_halves: tuple[int, int] = (0, 0)     # in the first and second half of the run
    no_supplier: int = 0
    turnaround: tuple[float, float] | None = None          # p50, p90 simulated hours
    supplier_turnaround: tuple[float, float] | None = None
    postings: int = 0
    fees_minor: int = 0
    subsidy_minor: int = 0
    patron_minor: int = 0
    flags: int = 0
    nets: list[tuple[str, str, int]] = field(default_factory=list)   # symbol, name, net
    centre_minor: int = 0
    budgets: list[str] = field(default_factory=list)
    ledger_problems: list[str] = field(default_factory=list)
    mails_on_disk: int = 0
    mails_sent: int = 0
    patron_mails: int = 0
    mails_pending: int = 0
    downloads: int = 0
    grants: int = 0
    grants_over_limit: int = 0
    suppliers: list[SupplierLine] = field(default_factory=list)
    example: str | None = None          # a transaction worth `run.py explain`
    settlement: list[str] = field(default_factory=list)
    ranking: list[str] = field(default_factory=list)   # static tier order vs the ranking
    refused: int = 0                    # request refusals seen by the requesters
    hub_errors: list[str] = field(default_factory=list)
    transports: list[str] = field(default_factory=list)   # each, and whether encrypted
    problems: list[str] = field(default_factory=list)
    loans: LoanFacts | None = None      # book loans, late and lost (issue 19)
    sim_days: float = 0.0
    seconds: float = 0.0

    @property
    def fill_rate(self) -> float:
        return self.filled / self.requests if self.requests else 0.0

    @property
    def suppliers_tried(self) -> float:
        return self.forwards / self.requests if self.requests else 0.0


async def open_transactions(conn: Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM ill_transaction WHERE NOT state = ANY($1)", list(TERMINAL)))


async def pending_mail(conn: Connection | asyncpg.Pool) -> int:
    return int(await conn.fetchval(
        "SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL AND failed_at IS NULL"))


async def compute(pool: asyncpg.Pool, *, speed: float, mail_dir: Path | None,
                  period: str) -> Summary:
    s = Summary()
    async with pool.acquire() as conn:
        await _requests(conn, s)
        await _rota(conn, s, speed)
        await _suppliers(conn, s, speed)
        await _money(conn, s, period)
        await _mail(conn, s)
    if mail_dir is not None:
        s.mails_on_disk = count_mails(mail_dir)
    return s


async def _requests(conn: Connection, s: Summary) -> None:
    """Requests, how they ended, by kind."""
    row = await fetch_one(
        conn,
        f"""SELECT count(*) AS n,
                   count(*) FILTER (WHERE state = ANY($1)) AS filled,
                   count(*) FILTER (WHERE state = 'Unfilled') AS unfilled,
                   count(*) FILTER (WHERE state = 'Cancelled') AS cancelled,
                   count(*) FILTER (WHERE NOT state = ANY($2)) AS open
            FROM ({_REQUESTS}) r""", list(DELIVERED), list(TERMINAL))
    s.requests, s.filled, s.unfilled = row["n"], row["filled"], row["unfilled"]
    s.cancelled, s.open = row["cancelled"], row["open"]
    s.retried = await conn.fetchval(
        "SELECT count(*) FROM audit_log WHERE event = 'retried'")
    for r in await conn.fetch(
            f"""SELECT service_kind, count(*) AS n,
                       count(*) FILTER (WHERE state = ANY($1)) AS filled
                FROM ({_REQUESTS}) r GROUP BY service_kind ORDER BY count(*) DESC""",
            list(DELIVERED)):
        s.by_kind[r["service_kind"]] = (r["n"], r["filled"])


async def _rota(conn: Connection, s: Summary, speed: float) -> None:
    """Forwards, their outcomes, and turnaround (simulated hours)."""
    for r in await conn.fetch("SELECT outcome, count(*) AS n FROM rota_entry "
                              "WHERE outcome <> 'pending' GROUP BY outcome"):
        s.outcomes[r["outcome"]] = r["n"]
    s.forwards = sum(s.outcomes.values())
    s.not_held = await conn.fetchval(f"SELECT count(*) FROM ({_LISTED_NOT_HELD}) x")
    halves = await fetch_one(conn, _NOT_HELD_BY_HALF)
    s.not_held_halves = (halves["first"], halves["second"])
    s.no_supplier = await conn.fetchval(
        f"""SELECT count(*) FROM ({_REQUESTS}) r WHERE state = 'Unfilled'
            AND NOT EXISTS (SELECT 1 FROM rota_entry e WHERE e.transaction_id = r.id
                            AND e.outcome <> 'pending')""")
    p = await fetch_one(
        conn,
        """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY secs) AS p50,
                  percentile_cont(0.9) WITHIN GROUP (ORDER BY secs) AS p90
           FROM (SELECT extract(epoch FROM min(a.at) - t.created_at) AS secs
                 FROM ill_transaction t JOIN audit_log a ON a.transaction_id = t.id
                 WHERE a.event IN ('status:CopyCompleted', 'status:Loaned')
                 GROUP BY t.id, t.created_at) d""")
    if p["p50"] is not None:
        s.turnaround = (p["p50"] * speed / 3600, p["p90"] * speed / 3600)
    p = await fetch_one(
        conn,
        """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY secs) AS p50,
                  percentile_cont(0.9) WITHIN GROUP (ORDER BY secs) AS p90
           FROM (SELECT extract(epoch FROM answered_at - forwarded_at) AS secs
                 FROM rota_entry WHERE outcome = 'supplied') d""")
    if p["p50"] is not None:
        s.supplier_turnaround = (p["p50"] * speed / 3600, p["p90"] * speed / 3600)


async def _suppliers(conn: Connection, s: Summary, speed: float) -> None:
    """One line per supplier, and a transaction worth `run.py explain`."""
    s.suppliers = [SupplierLine(
        r["supplier"], r["name"], r["forwarded"], r["supplied"], r["unfilled"],
        r["not_held"], r["timed_out"], r["cancelled"],
        r["p50"] * speed / 3600 if r["p50"] is not None else None)
        for r in await conn.fetch(
            f"""SELECT e.supplier, a.name,
                      count(*) AS forwarded,
                      count(*) FILTER (WHERE e.outcome = 'supplied') AS supplied,
                      count(*) FILTER (WHERE e.outcome = 'unfilled') AS unfilled,
                      count(*) FILTER (WHERE e.outcome = 'timed_out') AS timed_out,
                      count(*) FILTER (WHERE e.outcome = 'cancelled') AS cancelled,
                      (SELECT count(*) FROM ({_LISTED_NOT_HELD}) x
                       WHERE x.actor = e.supplier) AS not_held,
                      percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM
                          e.answered_at - e.forwarded_at))
                          FILTER (WHERE e.outcome = 'supplied') AS p50
               FROM rota_entry e JOIN agency a ON a.symbol = e.supplier
               WHERE e.outcome <> 'pending'
               GROUP BY e.supplier, a.name ORDER BY count(*) DESC, e.supplier""")]
    s.example = await conn.fetchval(
        """SELECT transaction_id FROM rota_entry WHERE outcome <> 'pending'
           GROUP BY transaction_id
           HAVING count(*) >= 2 AND bool_or(outcome = 'supplied')
              AND bool_or(outcome = 'timed_out' OR outcome = 'unfilled')
           ORDER BY count(*) DESC, transaction_id LIMIT 1""")


async def _money(conn: Connection, s: Summary, period: str) -> None:
    """Charges, subsidies, each agency's net, the subsidy budgets."""
    money = await fetch_one(
        conn,
        """SELECT count(*) AS n, coalesce(sum(fee_minor), 0)::bigint AS fee,
                  coalesce(sum(subsidy_minor), 0)::bigint AS subsidy,
                  coalesce(sum(patron_share_minor), 0)::bigint AS patron
           FROM ledger_posting""")
    s.postings, s.fees_minor = money["n"], money["fee"]
    s.subsidy_minor, s.patron_minor = money["subsidy"], money["patron"]
    s.flags = await flags.count(conn, kinds=flags.CHARGE_REFUSED)
    s.ledger_problems = await ledger.check(conn)
    owners = [r["owner"] for r in await conn.fetch(
        "SELECT DISTINCT owner FROM ledger_entry ORDER BY owner")]
    names: dict[str, str] = {r["symbol"]: r["name"]
                             for r in await conn.fetch("SELECT symbol, name FROM agency")}
    for owner in owners:
        bal = await ledger.balance(conn, owner, None, None)
        net = sum(m.minor for m in bal.closing)
        if owner == ledger.CENTRE:
            s.centre_minor = net
        else:
            s.nets.append((owner, names.get(owner, owner), net))
    s.nets.sort(key=lambda x: (-x[2], x[0]))

    for b in await budgets_report(conn, period):
        who = f" {b.requester}" if b.requester else ""
        dry = "  (ran dry)" if b.remaining.minor <= 0 else ""
        s.budgets.append(f"{b.name}{who} {b.period}: {b.spent.amount_text()} of "
                         f"{b.limit.amount_text()} spent{dry}")


async def _mail(conn: Connection, s: Summary) -> None:
    """Mails sent, downloads and grants."""
    mail = await fetch_one(
        conn,
        """SELECT count(*) FILTER (WHERE sent_at IS NOT NULL) AS sent,
                  count(*) FILTER (WHERE sent_at IS NOT NULL AND kind = 'patron_link')
                      AS patron,
                  count(*) FILTER (WHERE sent_at IS NULL AND failed_at IS NULL) AS pending
           FROM mail_outbox""")
    s.mails_sent, s.patron_mails, s.mails_pending = mail["sent"], mail["patron"], \
        mail["pending"]
    s.downloads = await conn.fetchval("SELECT count(*) FROM download")
    s.grants = await conn.fetchval("SELECT count(*) FROM download_grant")
    s.grants_over_limit = await conn.fetchval(
        "SELECT count(*) FROM download_grant WHERE max_downloads IS NOT NULL "
        "AND used > max_downloads")


def count_mails(folder: Path) -> int:
    return sum(1 for _ in folder.glob("*.eml")) if folder.is_dir() else 0


def yuan(minor: int) -> str:
    sign = "-" if minor < 0 else ""
    return f"{sign}{abs(minor) // 100:,}.{abs(minor) % 100:02d}"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f} %"


KIND_LABEL = {"DocumentDelivery": "copies", "BookLoan": "loans", "PayPerView": "pay-per-view",
              "EBookLoan": "e-book loans", "ProxySearch": "proxy searches"}


def format_summary(s: Summary, *, network: str, where: list[str]) -> list[str]:
    minutes, seconds = divmod(round(s.seconds), 60)
    lines = [
        "",
        f"ILL Hub demo: {network}; {s.sim_days:.0f} simulated days in {minutes} min "
        f"{seconds:02d} s",
        "",
    ]
    kinds = ", ".join(f"{KIND_LABEL.get(k, k)} {n}" for k, (n, _) in s.by_kind.items())
    extra = []
    if s.retried:
        extra.append(f"{s.retried} retried at a higher cost (counted once)")
    if s.refused:
        extra.append(f"{s.refused} refused by the hub")
    lines.append(f"  requests        {s.requests:>6}   ({kinds})"
                 + (f"; {'; '.join(extra)}" if extra else ""))
    per_kind = ", ".join(f"{KIND_LABEL.get(k, k)} {_pct(f / n if n else None)}"
                         for k, (n, f) in s.by_kind.items())
    lines.append(f"  filled          {s.filled:>6}   fill rate {_pct(s.fill_rate)}  ({per_kind})")
    lines.append(f"  unfilled        {s.unfilled:>6}   ({s.no_supplier} with no supplier "
                 "to try: held nowhere, or every holder excluded)")
    lines.append(f"  cancelled       {s.cancelled:>6}   (by readers, or a retry declined)")
    if s.open:
        lines.append(f"  still open      {s.open:>6}")
    o = s.outcomes
    lines.append(
        f"  suppliers tried {s.suppliers_tried:>6.2f}   per request ({s.forwards} forwards: "
        f"{o.get('supplied', 0)} supplied, {o.get('unfilled', 0)} unfilled of which "
        f"{s.not_held} 'NotHeld' for items their holdings list, {o.get('timed_out', 0)} "
        f"silent past the deadline, {o.get('cancelled', 0)} cancelled)")
    first, second = s.not_held_halves
    learned = ("the hub learned" if second < first
               else "no fewer: too few repeated requests to learn from")
    lines.append(f"  holdings        NotHeld for listed items: {first} in the first half, "
                 f"{second} in the second ({learned}); accuracy by supplier: "
                 "run.py holdings quality")
    lines += [f"  {line}" for line in s.ranking]
    if s.loans is not None:
        lines.append(f"  loans           {loans_line(s.loans)}")
    if s.turnaround:
        st = s.supplier_turnaround or (0.0, 0.0)
        lines.append(f"  turnaround      p50 {s.turnaround[0]:.1f} h, p90 {s.turnaround[1]:.1f} h "
                     f"from request to delivery (simulated hours; the supplier's own part: "
                     f"p50 {st[0]:.1f} h, p90 {st[1]:.1f} h)")
    lines.append(f"  money           fees {yuan(s.fees_minor)} CNY on {s.postings} charges; the "
                 f"centre's subsidies {yuan(s.subsidy_minor)} CNY; readers pay "
                 f"{yuan(s.patron_minor)} CNY" + (f"; {s.flags} charge(s) refused and flagged"
                                                  if s.flags else ""))
    if s.nets:
        top = ", ".join(f"{name} +{yuan(n)}" for _, name, n in s.nets[:3] if n > 0)
        low = ", ".join(f"{name} {yuan(n)}" for _, name, n in reversed(s.nets[-3:]) if n < 0)
        lines.append(f"  netted          {len(s.nets)} agencies settle one amount each with the "
                     f"centre (centre {yuan(s.centre_minor)}): receive most {top or '-'}; "
                     f"pay most {low or '-'}")
    dry = [b for b in s.budgets if b.endswith("(ran dry)")]
    if s.budgets:
        lines.append(f"  subsidy budgets {len(s.budgets):>6}   drawn, {len(dry)} ran dry"
                     + (f": {'; '.join(b.removesuffix('  (ran dry)') for b in dry[:4])}"
                        + (" ..." if len(dry) > 4 else "") if dry else ""))
    lines.append(f"  ledger check    {'ok' if not s.ledger_problems else 'PROBLEMS'}"
                 + ("" if not s.ledger_problems else ": " + "; ".join(s.ledger_problems[:3])))
    lines += [f"  {x}" for x in s.settlement]
    lines.append(f"  mails           {s.mails_sent:>6}   sent ({s.patron_mails} download links "
                 f"to readers); {s.mails_on_disk} .eml files kept")
    lines.append(f"  downloads       {s.downloads:>6}   of {s.grants} delivered copies"
                 + (f"; {s.grants_over_limit} beyond the limit!" if s.grants_over_limit else ""))
    if s.transports:
        lines.append(f"  transport       {'; '.join(s.transports)}")
    if s.hub_errors:
        example = re.sub(r" \(transaction [^)]*\)", "", s.hub_errors[0])
        lines.append(f"  hub refusals    {len(s.hub_errors):>6}   (late answers: after a deadline, "
                     f"or a cancellation after delivery) e.g. {example[:130]}")
    if s.problems:
        lines.append(f"  SIMULATION PROBLEMS {len(s.problems)}: {s.problems[0][:200]}")
    if s.suppliers:
        lines += ["", f"  {_cell('supplier', 38)} {'forwarded':>9} {'supplied':>8} "
                  f"{'unfilled':>8} {'not held*':>10} {'timed out':>9} {'fill':>7} "
                  f"{'p50 h':>8}"]
        for x in s.suppliers:
            p50 = f"{x.p50_hours:8.1f}" if x.p50_hours is not None else "       -"
            lines.append(f"  {_cell(x.name, 38)} {x.forwarded:>9} {x.supplied:>8} {x.unfilled:>8}"
                         f" {x.not_held:>10} {x.timed_out:>9} {_pct(x.fill_rate):>7} {p50}")
        lines.append("  * answered Unfilled NotHeld for an item its holdings list (inaccurate "
                     "holdings); p50 h: forward to delivery, simulated hours")
    lines += ["", *[f"  {w}" for w in where]]
    return lines


def _cell(text: str, width: int) -> str:
    """Pad to a display width (CJK characters take two columns)."""
    shown = sum(2 if ord(c) > 0x2E80 else 1 for c in text)
    return text + " " * max(0, width - shown)
