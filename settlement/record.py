"""A settlement run's record in PostgreSQL: what a run stores, and a closed run read back (§4).

The run (settlement/run.py) and its outputs (outputs.py) both need the result types
and the summary body, and a closed period is answered from what is stored here, so
they sit below both:

* `settlement_run`: one row a run, with the range of postings it took (posting_max,
  cutoff, minus the closed run before it: `previous_region`), and once closed its
  totals, invariants, summary files and the summary body (`summary_body`, also the
  `settlement.<period>` message on ill.finance);
* `settlement_net`: the figures per owner and currency (`store_figures`);
* `settlement_statement`: one row an agency, with the name and finance e-mail printed
  on its statement, its files and the id of its mail.

`stored_result` turns those rows back into the SettlementResult the run returned.

Reads another package's table: `agency_names` takes the names and finance e-mails
from `agency` (the hub's registry of agencies).
"""

from __future__ import annotations

import datetime
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.database import Connection
from schemas.money import Money
from schemas.settings import Settings
from settlement.ledger import CENTRE
from settlement.netting import NO_RUN_CUTOFF, NO_RUN_MAX, Netting, Scope
from settlement.periods import CLOSED, Period
from settlement.statement_model import (
    NAME_MAX,
    FileInfo,
    Totals,
    amount,
    clean_text,
    statements_dir,
)

log = logging.getLogger(__name__)

# Name and finance e-mail by agency symbol, as statements print them.
Names = dict[str, tuple[str, str | None]]


class SettlementError(RuntimeError):
    """A run that cannot be made (not ended, out of order, no longer reproducible)."""


@dataclass(frozen=True)
class AgencyStatement:
    symbol: str
    name: str
    finance_email: str | None
    totals: tuple[Totals, ...]
    files: tuple[FileInfo, ...] = ()
    mail_id: int | None = None


@dataclass
class SettlementResult:
    period: str
    date_from: datetime.date
    cutoff: datetime.date
    state: str                      # closed, or the period's state in a preview
    run_id: int | None
    created: bool                   # this call settled the period
    reproduced: bool                # a closed period, recomputed and compared
    dry_run: bool
    generated_at: str | None
    postings: int
    late_postings: int
    entries: int
    statements: list[AgencyStatement]
    totals: dict[str, dict[str, int]]
    by_rule: list[tuple[str, str, int, int]]
    by_budget: list[tuple[str, str, str, str, int]]
    invariants: dict[str, Any]
    files: list[FileInfo] = field(default_factory=list)
    directory: Path | None = None
    restored: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)

    def statement(self, symbol: str) -> AgencyStatement:
        return next(s for s in self.statements if s.symbol == symbol)


def netted_result(p: Period, netting: Netting, *, state: str, run_id: int | None,
                  created: bool, dry_run: bool, generated_at: str | None,
                  statements: list[AgencyStatement], invariants: dict[str, Any],
                  **outputs: Any) -> SettlementResult:
    """The result of a run or a preview, from its netting."""
    return SettlementResult(
        period=p.name, date_from=p.first_day, cutoff=p.last_day, state=state, run_id=run_id,
        created=created, reproduced=False, dry_run=dry_run, generated_at=generated_at,
        postings=netting.postings, late_postings=netting.late_postings,
        entries=netting.entries, statements=statements, totals=netting.totals(),
        by_rule=netting.rule_rows(), by_budget=netting.budget_rows(), invariants=invariants,
        **outputs)


# --------------------------------------------------------------------------
# the postings a run takes, the agencies it names
# --------------------------------------------------------------------------

async def previous_region(conn: Connection, cutoff: datetime.date | None
                          ) -> tuple[int, datetime.date]:
    """(posting_max, cutoff) of the latest closed run, or of the latest one before
    `cutoff`: the region a run's own region is taken minus."""
    row = await conn.fetchrow(
        """SELECT posting_max, cutoff FROM settlement_run
           WHERE closed_at IS NOT NULL AND ($1::date IS NULL OR cutoff < $1)
           ORDER BY cutoff DESC LIMIT 1""", cutoff)
    return (row["posting_max"], row["cutoff"]) if row else (NO_RUN_MAX, NO_RUN_CUTOFF)


async def open_scope(conn: Connection, p: Period) -> Scope:
    """The postings a run for `p` started now would take (for previews)."""
    prev_max, prev_cutoff = await previous_region(conn, None)
    return Scope(p.first_day, p.last_day, prev_max=prev_max, prev_cutoff=prev_cutoff)


async def run_scope(conn: Connection, run_id: int) -> Scope:
    """The postings a stored run took."""
    run = await conn.fetchrow(
        "SELECT date_from, cutoff, posting_max FROM settlement_run WHERE id = $1", run_id)
    if run is None:
        raise SettlementError(f"no settlement run {run_id}")
    prev_max, prev_cutoff = await previous_region(conn, run["cutoff"])
    return Scope(run["date_from"], run["cutoff"], run_id, run["posting_max"], prev_max,
                 prev_cutoff)


async def agency_names(conn: Connection, symbols: list[str] | None) -> Names:
    """Name and finance e-mail by symbol, as statements print them: of `symbols`, or of
    every agency (a run streams its lines before it knows which agencies it has)."""
    rows = await conn.fetch("SELECT symbol, name, finance_email FROM agency "
                            "WHERE $1::text[] IS NULL OR symbol = ANY($1::text[])", symbols)
    found = {r["symbol"]: (clean_text(r["name"], NAME_MAX) or r["symbol"], r["finance_email"])
             for r in rows}
    if symbols is None:
        return found
    return {s: found.get(s, (s, None)) for s in symbols}


async def statement_names(conn: Connection, run_id: int) -> Names:
    """The names and e-mails a stored run printed (not today's, which may differ)."""
    return {r["agency"]: (r["name"], r["finance_email"]) for r in await conn.fetch(
        "SELECT agency, name, finance_email FROM settlement_statement WHERE run_id = $1",
        run_id)}


# --------------------------------------------------------------------------
# storing a run
# --------------------------------------------------------------------------

async def store_figures(conn: Connection, run_id: int, netting: Netting,
                        names: Names) -> None:
    rows = [(run_id, a.symbol, a.currency, a.lines, a.as_supplier, a.as_requester, a.late,
             a.earned, a.owed, a.subsidy, a.patron, a.net, a.entries) for a in netting.agencies]
    rows += [(run_id, CENTRE, c, 0, 0, 0, 0, 0, 0, 0, 0, v, netting.centre_entries.get(c, 0))
             for c, v in sorted(netting.centre.items())]
    await conn.copy_records_to_table(
        "settlement_net", records=rows,
        columns=["run_id", "owner", "currency", "lines", "as_supplier", "as_requester", "late",
                 "earned_minor", "owed_minor", "subsidy_minor", "patron_minor", "net_minor",
                 "entries"])
    await conn.copy_records_to_table(
        "settlement_statement",
        records=[(run_id, s, names[s][0], names[s][1], netting.lines_of(s))
                 for s in netting.symbols],
        columns=["run_id", "agency", "name", "finance_email", "lines"])


async def store_run(conn: Connection, run_id: int, netting: Netting,
                    record: dict[str, Any], body: dict[str, Any], summary: list[FileInfo],
                    agencies: int) -> None:
    """The run's row closed: its totals, invariants, summary files and summary body."""
    await conn.execute(
        """UPDATE settlement_run SET closed_at = now(), postings = $2, entries = $3,
                  late_postings = $4, agencies = $5, totals = $6::jsonb, subsidy = $7::jsonb,
                  invariants = $8::jsonb, files = $9::jsonb, summary = $10::jsonb
           WHERE id = $1""",
        run_id, netting.postings, netting.entries, netting.late_postings, agencies,
        json.dumps(body["totals"], ensure_ascii=False),
        json.dumps(body["subsidy"], ensure_ascii=False),
        json.dumps(record, ensure_ascii=False),
        json.dumps([f.to_json() for f in summary], ensure_ascii=False),
        json.dumps(body, ensure_ascii=False))


async def store_statement_files(conn: Connection, run_id: int,
                                statements: list[AgencyStatement]) -> None:
    await conn.executemany(
        "UPDATE settlement_statement SET files = $3::jsonb, mail_id = $4 "
        "WHERE run_id = $1 AND agency = $2",
        [(run_id, s.symbol, json.dumps([f.to_json() for f in s.files]), s.mail_id)
         for s in statements])


async def discard_unclosed(conn: Connection) -> None:
    """Remove what runs that died half way left behind (their periods stay 'closing'
    until settled again). Only called under the settlement lock, so no run is alive."""
    for r in await conn.fetch(
            "SELECT id, period FROM settlement_run WHERE closed_at IS NULL ORDER BY id"):
        log.warning("settlement %s: removing run %s left unfinished by an earlier attempt",
                    r["period"], r["id"])
        await delete_run(conn, r["id"])


async def delete_run(conn: Connection, run_id: int) -> None:
    async with conn.transaction():
        for tbl in ("settlement_statement", "settlement_net"):
            await conn.execute(f"DELETE FROM {tbl} WHERE run_id = $1", run_id)
        await conn.execute("DELETE FROM settlement_run WHERE id = $1 AND closed_at IS NULL",
                           run_id)


# --------------------------------------------------------------------------
# the summary body: stored with the run, sent as settlement.<period>
# --------------------------------------------------------------------------

# The currency totals' keys in Netting.totals() and in the body, in the body's order.
_TOTALS_JSON = (("earned", "earned"), ("owed", "owed"), ("subsidy", "subsidy"),
                ("patron", "patronShare"), ("toReceive", "agenciesReceive"),
                ("toPay", "agenciesPay"), ("net", "netSum"), ("centre", "centrePosition"))


def summary_body(p: Period, run_id: int, generated_at: str, netting: Netting,
                 record: dict[str, Any], summary: list[FileInfo],
                 statements: list[AgencyStatement]) -> dict[str, Any]:
    return {
        "period": p.name, "runId": run_id, "dateFrom": p.first_day.isoformat(),
        "cutoff": p.last_day.isoformat(), "generatedAt": generated_at,
        "agencyCount": len(statements), "postings": netting.postings,
        "latePostings": netting.late_postings, "entries": netting.entries,
        "totals": _totals_json(netting.totals()),
        "subsidy": _subsidy_json(netting.rule_rows(), netting.budget_rows()),
        "invariants": record, "files": [f.to_json() for f in summary],
        "statements": [{"agency": s.symbol, "files": [f.to_json() for f in s.files]}
                       for s in statements],
    }


def _totals_json(totals: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
    return [{"currencyCode": c, "agencies": t["agencies"],
             **{key: amount(t[name], c) for name, key in _TOTALS_JSON},
             "subsidyOutlay": amount(-t["centre"], c)} for c, t in totals.items()]


def _subsidy_json(by_rule: list[tuple[str, str, int, int]],
                  by_budget: list[tuple[str, str, str, str, int]]) -> dict[str, Any]:
    return {"byRule": [{"rule": rule, "currencyCode": c, "postings": postings,
                        "amount": amount(granted, c)} for rule, c, granted, postings in by_rule],
            "byBudget": [{"budget": name, "requester": requester or None,
                          "budgetPeriod": period, "currencyCode": c,
                          "amount": amount(granted, c)}
                         for name, requester, period, c, granted in by_budget]}


def _minor(text: str, currency: str) -> int:
    return Money.from_decimal(text, currency).minor


def _totals_from_json(body: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Netting.totals() of a stored run, from its summary body."""
    out: dict[str, dict[str, int]] = {}
    for t in body["totals"]:
        c = t["currencyCode"]
        out[c] = {"agencies": t["agencies"],
                  **{name: _minor(t[key], c) for name, key in _TOTALS_JSON},
                  "granted": sum(_minor(r["amount"], c) for r in body["subsidy"]["byRule"]
                                 if r["currencyCode"] == c)}
    return out


# --------------------------------------------------------------------------
# a closed run, read back
# --------------------------------------------------------------------------

async def stored_result(conn: Connection, settings: Settings, p: Period, *,
                        reproduced: bool) -> SettlementResult:
    run = await conn.fetchrow("SELECT * FROM settlement_run WHERE period = $1", p.name)
    if run is None or run["closed_at"] is None:
        raise SettlementError(f"period {p} is closed but has no finished run")
    nets = await conn.fetch("SELECT * FROM settlement_net WHERE run_id = $1", run["id"])
    stmts = await conn.fetch("SELECT * FROM settlement_statement WHERE run_id = $1", run["id"])
    body = json.loads(run["summary"])
    by_agency: dict[str, list[Totals]] = {}
    for r in sorted(nets, key=lambda r: (r["owner"], r["currency"])):
        if r["owner"] != CENTRE:
            by_agency.setdefault(r["owner"], []).append(Totals(
                r["currency"], r["lines"], r["as_supplier"], r["as_requester"], r["late"],
                r["earned_minor"], r["owed_minor"], r["subsidy_minor"], r["patron_minor"],
                r["net_minor"]))
    statements = [AgencyStatement(
        s["agency"], s["name"], s["finance_email"], tuple(by_agency.get(s["agency"], ())),
        tuple(FileInfo.from_json(f) for f in json.loads(s["files"])), s["mail_id"])
        for s in sorted(stmts, key=lambda s: s["agency"])]
    subsidy = body["subsidy"]
    return SettlementResult(
        period=p.name, date_from=run["date_from"], cutoff=run["cutoff"], state=CLOSED,
        run_id=run["id"], created=False, reproduced=reproduced, dry_run=False,
        generated_at=body["generatedAt"], postings=run["postings"],
        late_postings=run["late_postings"], entries=run["entries"], statements=statements,
        totals=_totals_from_json(body),
        by_rule=[(r["rule"], r["currencyCode"], _minor(r["amount"], r["currencyCode"]),
                  r["postings"]) for r in subsidy["byRule"]],
        by_budget=[(b["budget"], b["requester"] or "", b["budgetPeriod"], b["currencyCode"],
                    _minor(b["amount"], b["currencyCode"])) for b in subsidy["byBudget"]],
        invariants=json.loads(run["invariants"]),
        files=[FileInfo.from_json(f) for f in json.loads(run["files"])],
        directory=statements_dir(settings, p), summary=body)


__all__ = ["AgencyStatement", "Names", "SettlementError", "SettlementResult", "agency_names",
           "delete_run", "discard_unclosed", "netted_result", "open_scope", "previous_region",
           "run_scope", "statement_names", "store_figures", "store_run",
           "store_statement_files", "stored_result", "summary_body"]
