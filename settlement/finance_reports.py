"""Reports for finance staff (issue 17): the centre's cash and subsidy per period, and
one agency's account with the centre since its balance was last zero.

Each report is built by a pure function from rows that named SQL statements (or the
ledger's and dues' own readers) fetch, so the arithmetic is tested without a database;
settlement/finance_report_files.py writes them as CSV and PDF.

Cash position (`cash_report`): one row per closed settlement run, in period order,
per currency. What the run's statements asked (statement_due: `to_centre` dues are
money the agencies owe the centre, `to_agency` dues money it owes them), what has
moved against them so far (statement_payment), what is still outstanding each way,
and the cumulative cash position: all received minus all paid out, run after run.
Runs before the report's first date are not shown; their cash is brought forward.
Next to it the run's subsidy outlay (minus the CENTRE's net in settlement_net) and
the monthly subsidy budgets of the months the run's dates cover (date_from..cutoff,
whatever the period is called), with how much of each is used. Budgets that never
renew ('total') belong to no period and are left out; a per-requester budget has a
row only for requesters that drew on it, so its limit is theirs summed.

Agency account (`agency_account`): per currency, the agency's running balance with
the centre: its ledger entries (positive: owed to it by the centre, negative: owed by
it), and the money that moved (a payment by the agency on a `to_centre` due brings a
negative balance up; a payment by the centre on a `to_agency` due brings a positive
balance down); statements issued are listed for reference and change nothing. Lines
go in date order (on one day: entries, then statements, then payments). The report
starts after the last line at which the running balance was exactly zero, or at the
beginning if it never was, and ends with the current balance.
"""

from __future__ import annotations

import datetime
import enum
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from infra.database import Connection
from schemas.money import Money
from settlement.calendar import period_of
from settlement.dues import Direction, PaymentSource, Position, positions
from settlement.ledger import EntryLine, entries

# --------------------------------------------------------------------------
# named statements
# --------------------------------------------------------------------------

SELECT_RUNS = """SELECT id, period, date_from, cutoff FROM settlement_run
    WHERE closed_at IS NOT NULL AND ($1::date IS NULL OR date_from <= $1)
    ORDER BY date_from, cutoff, id"""

# What each run's statements asked, and what has been paid against them so far.
SELECT_RUN_DUES = """SELECT run_id, currency, direction, sum(amount_minor) AS issued_minor,
        sum(paid_minor) AS paid_minor
    FROM statement_position
    WHERE run_id = ANY($1::bigint[])
    GROUP BY run_id, currency, direction"""

# The centre's net in a run is minus its subsidy outlay (migration 0006).
SELECT_RUN_OUTLAY = """SELECT run_id, currency, -net_minor AS outlay_minor
    FROM settlement_net
    WHERE owner = 'CENTRE' AND run_id = ANY($1::bigint[])"""

SELECT_MONTH_BUDGETS = """SELECT name, period, currency, sum(limit_minor) AS limit_minor,
        sum(spent_minor) AS spent_minor
    FROM subsidy_budget
    WHERE period = ANY($1::text[])
    GROUP BY name, period, currency
    ORDER BY name, period, currency"""

SELECT_AGENCY = "SELECT symbol, name FROM agency WHERE symbol = $1"

SELECT_AGENCY_PAYMENTS = """SELECT p.id, p.due_id, p.amount_minor, p.paid_on,
        p.bank_reference, p.source, d.reference, d.direction, d.currency, d.period
    FROM statement_payment p JOIN statement_due d ON d.id = p.due_id
    WHERE d.agency = $1
    ORDER BY p.paid_on, p.id"""


class ReportError(ValueError):
    """A report that cannot be made as asked (an unknown agency, dates the wrong way)."""


# --------------------------------------------------------------------------
# cash position and subsidy outlay per period
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class RunInfo:
    run_id: int
    period: str
    date_from: datetime.date
    cutoff: datetime.date


@dataclass(frozen=True)
class DueSum:
    """What one run's dues of one direction and currency asked, and what was paid."""

    run_id: int
    currency: str
    direction: Direction
    issued_minor: int
    paid_minor: int


@dataclass(frozen=True)
class Outlay:
    run_id: int
    currency: str
    outlay_minor: int


@dataclass(frozen=True)
class BudgetMonth:
    """One monthly budget's rows of one month (summed over requesters)."""

    name: str
    month: str
    currency: str
    limit_minor: int
    spent_minor: int


@dataclass(frozen=True)
class CashFigures:
    """Minor units in the section's currency; 'in' is to the centre, 'out' from it."""

    to_centre: int = 0          # issued: the agencies owe the centre
    by_centre: int = 0          # issued: the centre owes the agencies
    received: int = 0
    paid_out: int = 0

    @property
    def outstanding_in(self) -> int:
        return self.to_centre - self.received

    @property
    def outstanding_out(self) -> int:
        return self.by_centre - self.paid_out

    @property
    def cash(self) -> int:
        """What these figures add to the centre's cash: received minus paid out."""
        return self.received - self.paid_out

    def __add__(self, other: CashFigures) -> CashFigures:
        return CashFigures(self.to_centre + other.to_centre, self.by_centre + other.by_centre,
                           self.received + other.received, self.paid_out + other.paid_out)


@dataclass(frozen=True)
class CashRow:
    run: RunInfo
    figures: CashFigures
    cumulative: int             # the centre's cash position after this run's payments


def used_percent(spent: int, limit: int) -> Decimal | None:
    """spent / limit in percent, to one decimal (None for a zero limit); no float."""
    if limit <= 0:
        return None
    return (Decimal(spent * 100) / Decimal(limit)).quantize(Decimal("0.1"), ROUND_HALF_UP)


@dataclass(frozen=True)
class BudgetUse:
    name: str
    months: tuple[str, ...]     # the months of the run's dates this budget has rows for
    limit_minor: int
    spent_minor: int

    @property
    def used_percent(self) -> Decimal | None:
        return used_percent(self.spent_minor, self.limit_minor)


@dataclass(frozen=True)
class OutlayRow:
    run: RunInfo
    months: tuple[str, ...]     # the calendar months date_from..cutoff covers
    outlay_minor: int
    budgets: tuple[BudgetUse, ...]


@dataclass(frozen=True)
class CashSection:
    currency: str
    brought_forward: int        # cash position from runs before the report's first date
    rows: tuple[CashRow, ...]
    outlays: tuple[OutlayRow, ...]

    @property
    def total(self) -> CashFigures:
        out = CashFigures()
        for r in self.rows:
            out = out + r.figures
        return out

    @property
    def position(self) -> int:
        """The cash position at the end of the report."""
        return self.brought_forward + self.total.cash

    @property
    def total_outlay(self) -> int:
        return sum(o.outlay_minor for o in self.outlays)


@dataclass(frozen=True)
class CashReport:
    date_from: datetime.date | None
    date_to: datetime.date | None
    sections: tuple[CashSection, ...]

    def section(self, currency: str) -> CashSection:
        for s in self.sections:
            if s.currency == currency:
                return s
        raise KeyError(f"no {currency} in the cash report")


def months_between(first: datetime.date, last: datetime.date) -> tuple[str, ...]:
    """The calendar months ('YYYY-MM') the dates first..last touch, in order."""
    if last < first:
        raise ReportError(f"a period from {first} to {last} ends before it starts")
    out = []
    y, m = first.year, first.month
    while (y, m) <= (last.year, last.month):
        out.append(period_of(datetime.date(y, m, 1)))
        y, m = y + m // 12, m % 12 + 1
    return tuple(out)


def _budget_uses(months: tuple[str, ...], currency: str,
                 budgets: Sequence[BudgetMonth]) -> tuple[BudgetUse, ...]:
    by_name: dict[str, list[BudgetMonth]] = {}
    for b in budgets:
        if b.currency == currency and b.month in months:
            by_name.setdefault(b.name, []).append(b)
    return tuple(BudgetUse(name, tuple(sorted({b.month for b in rows})),
                           sum(b.limit_minor for b in rows), sum(b.spent_minor for b in rows))
                 for name, rows in sorted(by_name.items()))


def cash_report(runs: Sequence[RunInfo], due_sums: Sequence[DueSum],
                outlays: Sequence[Outlay], budgets: Sequence[BudgetMonth], *,
                date_from: datetime.date | None = None,
                date_to: datetime.date | None = None) -> CashReport:
    """The cash position and subsidy outlay per run and currency. Runs ending before
    `date_from` are brought forward (their cash only), runs starting after `date_to`
    left out; every shown run has a row in every currency the runs met."""
    if date_from is not None and date_to is not None and date_to < date_from:
        raise ReportError(f"the report's end {date_to} is before its start {date_from}")
    ordered = sorted(runs, key=lambda r: (r.date_from, r.cutoff, r.run_id))
    kept = [r for r in ordered if date_to is None or r.date_from <= date_to]
    shown = [r for r in kept if date_from is None or r.cutoff >= date_from]
    kept_ids = {r.run_id for r in kept}
    figures: dict[tuple[int, str], CashFigures] = {}
    for d in due_sums:
        if d.run_id not in kept_ids:
            continue
        f = (CashFigures(to_centre=d.issued_minor, received=d.paid_minor)
             if d.direction is Direction.TO_CENTRE
             else CashFigures(by_centre=d.issued_minor, paid_out=d.paid_minor))
        figures[(d.run_id, d.currency)] = figures.get((d.run_id, d.currency),
                                                      CashFigures()) + f
    outlay_by = {(o.run_id, o.currency): o.outlay_minor for o in outlays
                 if o.run_id in kept_ids}
    currencies = sorted({c for _, c in figures} | {c for _, c in outlay_by})
    shown_ids = {r.run_id for r in shown}
    sections = []
    for c in currencies:
        cumulative = sum(f.cash for (run_id, cur), f in figures.items()
                         if cur == c and run_id not in shown_ids)
        brought = cumulative
        rows = []
        for r in shown:
            f = figures.get((r.run_id, c), CashFigures())
            cumulative += f.cash
            rows.append(CashRow(r, f, cumulative))
        out = []
        for r in shown:
            months = months_between(r.date_from, r.cutoff)
            out.append(OutlayRow(r, months, outlay_by.get((r.run_id, c), 0),
                                 _budget_uses(months, c, budgets)))
        sections.append(CashSection(c, brought, tuple(rows), tuple(out)))
    return CashReport(date_from, date_to, tuple(sections))


async def fetch_cash_report(conn: Connection, *, date_from: datetime.date | None = None,
                            date_to: datetime.date | None = None) -> CashReport:
    """`cash_report` from the database: the closed runs, their dues, outlay, budgets."""
    runs = [RunInfo(r["id"], r["period"], r["date_from"], r["cutoff"])
            for r in await conn.fetch(SELECT_RUNS, date_to)]
    ids = [r.run_id for r in runs]
    due_sums = [DueSum(r["run_id"], r["currency"], Direction(r["direction"]),
                       int(r["issued_minor"]), int(r["paid_minor"]))
                for r in await conn.fetch(SELECT_RUN_DUES, ids)]
    outlays = [Outlay(r["run_id"], r["currency"], int(r["outlay_minor"]))
               for r in await conn.fetch(SELECT_RUN_OUTLAY, ids)]
    months = sorted({m for r in runs if date_from is None or r.cutoff >= date_from
                     for m in months_between(r.date_from, r.cutoff)})
    budgets = [BudgetMonth(r["name"], r["period"], r["currency"], int(r["limit_minor"]),
                           int(r["spent_minor"]))
               for r in await conn.fetch(SELECT_MONTH_BUDGETS, months)]
    return cash_report(runs, due_sums, outlays, budgets, date_from=date_from,
                       date_to=date_to)


# --------------------------------------------------------------------------
# one agency's account since its balance was last zero
# --------------------------------------------------------------------------

class LineKind(enum.StrEnum):
    CHARGE_AS_SUPPLIER = "charge_as_supplier"
    REVERSAL_AS_SUPPLIER = "reversal_as_supplier"
    CHARGE_AS_REQUESTER = "charge_as_requester"
    REVERSAL_AS_REQUESTER = "reversal_as_requester"
    SUBSIDY = "subsidy"
    SUBSIDY_REVERSAL = "subsidy_reversal"
    STATEMENT_ISSUED = "statement_issued"      # for reference: changes nothing
    PAYMENT_RECEIVED = "payment_received"      # from the agency, on a to_centre due
    PAYMENT_SENT = "payment_sent"              # by the centre, on a to_agency due


KIND_TEXT: dict[LineKind, str] = {
    LineKind.CHARGE_AS_SUPPLIER: "供应收费 charge as supplier",
    LineKind.REVERSAL_AS_SUPPLIER: "供应冲正 reversal as supplier",
    LineKind.CHARGE_AS_REQUESTER: "申请费用 charge as requester",
    LineKind.REVERSAL_AS_REQUESTER: "申请冲正 reversal as requester",
    LineKind.SUBSIDY: "中心补贴 subsidy",
    LineKind.SUBSIDY_REVERSAL: "补贴冲正 subsidy reversal",
    LineKind.STATEMENT_ISSUED: "结算单 statement issued",
    LineKind.PAYMENT_RECEIVED: "收到付款 payment received",
    LineKind.PAYMENT_SENT: "中心付款 payment sent",
}

DUE_DIRECTION_TEXT: dict[Direction, str] = {
    Direction.TO_CENTRE: "应付中心 to pay the centre",
    Direction.TO_AGENCY: "中心应付 the centre pays",
}

# On one day: what was earned or owed, then the statements, then the money.
_DAY_ORDER = {LineKind.STATEMENT_ISSUED: 1, LineKind.PAYMENT_RECEIVED: 2,
              LineKind.PAYMENT_SENT: 2}
_ENTRY_KINDS: dict[tuple[str, str], LineKind] = {
    ("receivable", "charge"): LineKind.CHARGE_AS_SUPPLIER,
    ("receivable", "reversal"): LineKind.REVERSAL_AS_SUPPLIER,
    ("payable", "charge"): LineKind.CHARGE_AS_REQUESTER,
    ("payable", "reversal"): LineKind.REVERSAL_AS_REQUESTER,
    ("subsidy", "charge"): LineKind.SUBSIDY,
    ("subsidy", "reversal"): LineKind.SUBSIDY_REVERSAL,
}


@dataclass(frozen=True)
class PaymentRow:
    """A payment against one of the agency's dues (statement_payment with its due)."""

    payment_id: int
    due_id: int
    amount: Money
    paid_on: datetime.date
    direction: Direction
    reference: str
    period: str
    source: PaymentSource
    bank_reference: str | None = None


@dataclass(frozen=True)
class Move:
    """One line of an agency's account before the running balance is known."""

    day: datetime.date
    kind: LineKind
    reference: str              # the transaction id, or the statement's reference
    effect: Money               # on the agency's balance; zero for a statement issued
    counterpart: str = ""
    counterpart_name: str = ""
    title: str = ""
    detail: str = ""

    @property
    def informational(self) -> bool:
        return self.kind is LineKind.STATEMENT_ISSUED


@dataclass(frozen=True)
class AccountLine:
    move: Move
    balance: Money              # the running balance after this line


@dataclass(frozen=True)
class AccountSection:
    currency: str
    # The day of the line after which the balance was last zero (the report starts
    # after that line); None: it never was, the report starts at the beginning.
    zero_on: datetime.date | None
    earlier_lines: int          # lines up to and including that one, not shown
    lines: tuple[AccountLine, ...]

    @property
    def balance(self) -> Money:
        """The current balance: positive, the centre owes the agency; negative, it owes."""
        return self.lines[-1].balance if self.lines else Money(0, self.currency)


@dataclass(frozen=True)
class AgencyAccount:
    symbol: str
    name: str
    sections: tuple[AccountSection, ...]

    def section(self, currency: str) -> AccountSection:
        for s in self.sections:
            if s.currency == currency:
                return s
        raise KeyError(f"{self.symbol} has nothing in {currency}")


def entry_move(e: EntryLine) -> Move:
    kind = _ENTRY_KINDS.get((e.account, e.kind))
    if kind is None:
        raise ReportError(f"an agency's entry in account {e.account!r} ({e.kind}) of "
                          f"transaction {e.transaction_id}: not an agency account")
    return Move(e.local_date, kind, e.transaction_id, e.amount, e.counterpart,
                e.counterpart_name or "", e.title or "", f"{e.service_kind} {e.event}")


def statement_move(p: Position) -> Move:
    return Move(p.issued_on, LineKind.STATEMENT_ISSUED, p.reference, Money(0, p.currency),
                detail=f"{p.period}: {DUE_DIRECTION_TEXT[p.direction]} "
                       f"{p.amount.amount_text()} {p.currency}, 到期 due {p.due_on}")


def payment_move(p: PaymentRow) -> Move:
    received = p.direction is Direction.TO_CENTRE
    detail = f"{p.period} {p.source.value}"
    if p.bank_reference:
        detail += f", 银行参考号 bank reference {p.bank_reference}"
    return Move(p.paid_on, LineKind.PAYMENT_RECEIVED if received else LineKind.PAYMENT_SENT,
                p.reference, p.amount if received else -p.amount, detail=detail)


def since_last_zero(moves: Sequence[Move], currency: str) -> AccountSection:
    """The running balance of moves already in order (one currency), kept from the line
    after the last one at which it was exactly zero."""
    balance = Money(0, currency)
    lines: list[AccountLine] = []
    start = 0
    for i, m in enumerate(moves):
        balance = balance + m.effect
        lines.append(AccountLine(m, balance))
        if balance.minor == 0:
            start = i + 1
    return AccountSection(currency, moves[start - 1].day if start else None, start,
                          tuple(lines[start:]))


def agency_account(symbol: str, name: str, entry_lines: Sequence[EntryLine],
                   dues: Sequence[Position], payments: Sequence[PaymentRow]
                   ) -> AgencyAccount:
    """An agency's account with the centre per currency, since its balance was last zero.
    `entry_lines` in ledger order (date, entry), `payments` in any order."""
    moves = ([entry_move(e) for e in entry_lines] + [statement_move(p) for p in dues]
             + [payment_move(p) for p in payments])
    # A stable sort: entries keep the ledger's order within a day, and so on.
    moves.sort(key=lambda m: (m.day, _DAY_ORDER.get(m.kind, 0)))
    by_currency: dict[str, list[Move]] = {}
    for m in moves:
        by_currency.setdefault(m.effect.currency, []).append(m)
    return AgencyAccount(symbol, name, tuple(since_last_zero(ms, c)
                                             for c, ms in sorted(by_currency.items())))


async def fetch_agency_account(conn: Connection, symbol: str) -> AgencyAccount:
    """`agency_account` from the database; ReportError for an unknown agency."""
    agency = await conn.fetchrow(SELECT_AGENCY, symbol)
    if agency is None:
        raise ReportError(f"no agency {symbol!r} (run.py agency list shows them)")
    payments = [PaymentRow(r["id"], r["due_id"], Money(r["amount_minor"], r["currency"]),
                           r["paid_on"], Direction(r["direction"]), r["reference"],
                           r["period"], PaymentSource(r["source"]), r["bank_reference"])
                for r in await conn.fetch(SELECT_AGENCY_PAYMENTS, symbol)]
    return agency_account(symbol, agency["name"] or symbol,
                          await entries(conn, symbol, None, None),
                          await positions(conn, agency=symbol), payments)


__all__ = [
    "DUE_DIRECTION_TEXT", "KIND_TEXT", "SELECT_AGENCY", "SELECT_AGENCY_PAYMENTS",
    "SELECT_MONTH_BUDGETS", "SELECT_RUNS", "SELECT_RUN_DUES", "SELECT_RUN_OUTLAY",
    "AccountLine", "AccountSection", "AgencyAccount", "BudgetMonth", "BudgetUse",
    "CashFigures", "CashReport", "CashRow", "CashSection", "DueSum", "LineKind", "Move",
    "Outlay", "OutlayRow", "PaymentRow", "ReportError", "RunInfo", "agency_account",
    "cash_report", "entry_move", "fetch_agency_account", "fetch_cash_report",
    "months_between", "payment_move", "since_last_zero", "statement_move", "used_percent",
]
