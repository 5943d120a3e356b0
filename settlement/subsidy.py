"""Subsidy rules and budgets: what the centre pays of a reader's ILL fee, and from which pot.

The rules live in their own TOML file (docs/subsidy.example.toml documents every
key), loaded with `run.py subsidy load FILE` as a new version; postings use the
latest version and record which one they used. (The routing policy file refuses
unknown top-level keys, so the subsidy cannot be a section of it.)

How a fee is subsidised (`grant`), for one billable event:

1. Matching: a rule matches when every condition in its `when` holds: the
   consortium-local date of the event lies in [date_from, date_to] (both
   inclusive: promotions), and the service kind, the supplier and the requester
   are in its lists (symbols or `group:NAME`, groups defined in the file). Only
   fees in the file's currency are subsidised.
2. Stacking: matching rules apply in file order, each on what is left of the
   patron share after the rules before it:
       wanted = min(floor(left * percent / 100) + fixed, cap, left)
   so the patron share never goes below zero and a 100 % rule leaves nothing for
   later rules. Percent is rounded down to the minor unit (fen).
   A rule with `part = "logistics"` works on the shipping legs of the fee alone
   (settlement/fee_logistics.py; the caller says how much of the fee they are):
       left = min(logistics - what earlier logistics rules gave, patron share left)
   so "the centre pays 50 % of shipping for western libraries" never touches the
   service fee; a fee without logistics gets nothing from such a rule. The default,
   `part = "fee"`, is the whole fee as before. Each grant records its part.
3. Budgets: a rule may name budgets. Each is `per = "requester"` (every requester
   has its own) or `per = "global"` (one shared pot), and `period = "month"`
   (renews every consortium-local calendar month, 'YYYY-MM') or `period = "total"`
   (never renews: a promotion's pot). A rule's grant counts in full against every
   budget it names, so it is limited by the smallest remainder among them: e.g.
   "each library up to 300.00 a month, and all together up to 50,000.00". A rule
   without budgets is not limited.
4. Exhaustion: a budget that cannot cover the wanted amount gives what it has left
   (a partial subsidy, spending the pot to the last fen), and once empty, nothing;
   the request always continues, the patron share grows by the shortfall, and the
   grant row records why ("budget 'x' ... has 3.00 left; granted 3.00 of 5.00").
   Later rules still apply to what is left, so a promotion that runs dry falls
   back to the ordinary subsidy.

Budgets are never overdrawn, also under many concurrent postings: each posting
locks the budget rows it draws on (INSERT .. ON CONFLICT DO UPDATE, one budget at a
time in one global order, so no two postings deadlock), computes against the
locked values and updates them before committing; a CHECK (0 <= spent <= limit)
backs this up. Raising or lowering a budget's amount in a new version applies
from the next draw (never below what was already spent). A reversal gives the
subsidy back to the budget rows it came from.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from infra.database import Connection, fetch_one
from schemas.money import DEFAULT_CURRENCY, Money
from schemas.rulefile import (
    NO_GROUPS,
    SERVICE_KINDS,
    RuleFileError,
    SymbolGroups,
    check_date_range,
    check_keys,
    check_known,
    content_label,
    named_tables,
    optional_text,
    parse_amount,
    parse_choice,
    parse_choices,
    parse_currency,
    parse_date,
    parse_decimal,
    parse_field,
    parse_toml,
)
from settlement.calendar import check_period, period_of

_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_TOP_KEYS = ("version", "description", "currency", "groups", "budget", "rule")
_BUDGET_KEYS = ("name", "per", "period", "amount", "note")
_RULE_KEYS = ("name", "note", "when", "part", "percent", "fixed", "cap", "budgets")
_WHEN_KEYS = ("date_from", "date_to", "service_kind", "supplier", "requester")
_PER = ("requester", "global")
_PERIODS = ("month", "total")
# What of a fee a rule subsidises: the whole fee, or its shipping legs alone.
PART_FEE = "fee"
PART_LOGISTICS = "logistics"
PARTS = (PART_FEE, PART_LOGISTICS)


class SubsidyError(ValueError):
    """A subsidy file that cannot be used; the message names the rule or budget and field."""


@dataclass(frozen=True)
class Budget:
    name: str
    per: str            # requester | global
    period: str         # month | total
    amount_minor: int
    note: str = ""

    def key(self, requester: str, day: datetime.date) -> tuple[str, str, str]:
        """(name, requester or '' for global, 'YYYY-MM' or 'total'): one row of subsidy_budget."""
        return (self.name, requester if self.per == "requester" else "",
                period_of(day) if self.period == "month" else "total")

    def to_dict(self, currency: str) -> dict[str, Any]:
        """As the file writes it: the amount a decimal string in the file's currency."""
        out: dict[str, Any] = {"name": self.name, "per": self.per, "period": self.period,
                               "amount": Money(self.amount_minor, currency).amount_text()}
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class Rule:
    index: int
    name: str
    percent_bp: int = 0                 # basis points: 12.5 % = 1250
    fixed_minor: int = 0
    cap_minor: int | None = None
    budgets: tuple[str, ...] = ()
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None
    service_kinds: frozenset[str] | None = None
    suppliers: frozenset[str] | None = None
    requesters: frozenset[str] | None = None
    part: str = PART_FEE
    normalised: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def matches(self, *, requester: str, supplier: str, service_kind: str,
                day: datetime.date) -> bool:
        if self.date_from is not None and day < self.date_from:
            return False
        if self.date_to is not None and day > self.date_to:
            return False
        if self.service_kinds is not None and service_kind not in self.service_kinds:
            return False
        if self.suppliers is not None and supplier not in self.suppliers:
            return False
        return self.requesters is None or requester in self.requesters

    def wanted(self, left: int) -> int:
        """What this rule would give on a remaining patron share of `left` minor units."""
        amount = left * self.percent_bp // 10_000 + self.fixed_minor
        if self.cap_minor is not None:
            amount = min(amount, self.cap_minor)
        return max(0, min(amount, left))


@dataclass(frozen=True)
class SubsidyRules:
    version_label: str
    description: str
    currency: str
    groups: Mapping[str, tuple[str, ...]]
    budgets: Mapping[str, Budget]
    rules: tuple[Rule, ...]
    normalised: Mapping[str, Any] = field(compare=False)

    @classmethod
    def from_toml(cls, text: str) -> SubsidyRules:
        try:
            data = parse_toml(text)
        except RuleFileError as exc:
            raise SubsidyError(str(exc)) from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SubsidyRules:
        """The parsed TOML, or a stored `to_dict()`: both have the same shape."""
        try:
            return _Parser(data).parse()
        except RuleFileError as exc:
            raise SubsidyError(str(exc)) from exc

    def to_dict(self) -> dict[str, Any]:
        return dict(self.normalised)

    def matching(self, *, requester: str, supplier: str, service_kind: str,
                 day: datetime.date) -> list[Rule]:
        return [r for r in self.rules if r.matches(requester=requester, supplier=supplier,
                                                   service_kind=service_kind, day=day)]


# --------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------

class _Parser:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.groups = NO_GROUPS

    def parse(self) -> SubsidyRules:
        data = self.data
        check_keys(data, _TOP_KEYS, "top level")
        version = data.get("version")
        if version is not None and (not isinstance(version, str) or not version.strip()):
            raise SubsidyError("version: must be a non-empty string")
        description = optional_text(data, "description", "") or ""
        currency = parse_field("", "currency", parse_currency,
                               data.get("currency", DEFAULT_CURRENCY))
        self.groups = SymbolGroups.parse(data.get("groups", {}))
        budgets = {b.name: b for b in named_tables(
            data, "budget", lambda i, raw: _parse_budget(i, raw, currency))}
        rules = named_tables(
            data, "rule", lambda i, raw: self._parse_rule(i, raw, currency, budgets))
        content: dict[str, Any] = {
            "description": description, "currency": currency, "groups": self.groups.to_dict(),
            "budget": [b.to_dict(currency) for b in budgets.values()],
            "rule": [dict(r.normalised) for r in rules]}
        label = version.strip() if version is not None else content_label(content)
        return SubsidyRules(version_label=label, description=description,
                            currency=currency, groups=dict(self.groups.members), budgets=budgets,
                            rules=tuple(rules), normalised={"version": label, **content})

    def _parse_rule(self, i: int, raw: Mapping[str, Any], currency: str,
                    budgets: Mapping[str, Budget]) -> Rule:
        name = raw.get("name")
        if not isinstance(name, str) or not name.strip():
            raise SubsidyError(f"rule[{i}]: name: is required (a non-empty string)")
        where = f"rule[{i}] '{name}'"
        check_keys(raw, _RULE_KEYS, where)
        norm: dict[str, Any] = {"name": name}
        note = optional_text(raw, "note", where)
        if note is not None:
            norm["note"] = note
        kw, when_norm = self._parse_when(raw.get("when", {}), where)
        if when_norm:
            norm["when"] = when_norm
        if "part" in raw:
            kw["part"] = parse_field(where, "part", parse_choice, raw["part"], PARTS)
            if kw["part"] != PART_FEE:
                norm["part"] = kw["part"]
        if "percent" not in raw and "fixed" not in raw:
            raise SubsidyError(f"{where}: percent / fixed: give at least one of them")
        if "percent" in raw:
            kw["percent_bp"] = parse_field(where, "percent", _percent, raw["percent"])
            norm["percent"] = str(Decimal(kw["percent_bp"]) / 100)
        for key in ("fixed", "cap"):
            if key in raw:
                kw[f"{key}_minor"] = parse_field(where, key, parse_amount, raw[key],
                                                 currency).minor
                norm[key] = Money(kw[f"{key}_minor"], currency).amount_text()
        if "budgets" in raw:
            names = raw["budgets"]
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise SubsidyError(f"{where}: budgets: must be a list of budget names")
            for n in names:
                check_known(n, tuple(budgets), "budget", where, "budgets")
            kw["budgets"] = tuple(dict.fromkeys(names))
            norm["budgets"] = list(kw["budgets"])
        return Rule(index=i, name=name, normalised=norm, **kw)

    def _parse_when(self, when: Any, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """A rule's `when`: (its Rule fields, its normalised form)."""
        if not isinstance(when, Mapping):
            raise SubsidyError(f"{where}: when: must be a table, e.g. "
                               '{ service_kind = ["BookLoan"] }')
        check_keys(when, _WHEN_KEYS, where, "when.")
        kw: dict[str, Any] = {}
        norm: dict[str, Any] = {}
        for key in ("date_from", "date_to"):
            if key in when:
                kw[key] = parse_field(where, f"when.{key}", parse_date, when[key])
                norm[key] = kw[key].isoformat()
        check_date_range(kw.get("date_from"), kw.get("date_to"), where, prefix="when.")
        if "service_kind" in when:
            kinds = parse_field(where, "when.service_kind", parse_choices, when["service_kind"],
                                SERVICE_KINDS)
            kw["service_kinds"], norm["service_kind"] = frozenset(kinds), kinds
        for key, attr in (("supplier", "suppliers"), ("requester", "requesters")):
            if key in when:
                refs, members = self.groups.expand_required(when[key], where, f"when.{key}")
                kw[attr], norm[key] = frozenset(m.symbol for m in members), refs
        return kw, norm


def _parse_budget(i: int, raw: Mapping[str, Any], currency: str) -> Budget:
    name = raw.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise SubsidyError(f"budget[{i}]: name: is required: letters, digits, '_', '.' or '-'")
    where = f"budget[{i}] '{name}'"
    check_keys(raw, _BUDGET_KEYS, where)
    per = raw.get("per")
    if per not in _PER:
        raise SubsidyError(f"{where}: per: {per!r} must be \"requester\" (each requester "
                           "has its own) or \"global\" (one shared pot)")
    period = raw.get("period")
    if period not in _PERIODS:
        raise SubsidyError(f"{where}: period: {period!r} must be \"month\" (renews every "
                           "calendar month) or \"total\" (never renews)")
    if "amount" not in raw:
        raise SubsidyError(f"{where}: amount: is required")
    amount = parse_field(where, "amount", parse_amount, raw["amount"], currency)
    note = optional_text(raw, "note", where) or ""
    return Budget(name, per, period, amount.minor, note)


def _percent(value: Any) -> int:
    """A percentage with at most 2 decimals, as basis points."""
    pct = parse_decimal(value, "must be a number from 0 to 100")
    if not pct.is_finite() or pct < 0 or pct > 100:
        raise ValueError(f"{value!r} must be a number from 0 to 100")
    bp = pct * 100
    if bp != bp.to_integral_value():
        raise ValueError(f"{value!r} has more than 2 decimals")
    return int(bp)


# --------------------------------------------------------------------------
# Versions
# --------------------------------------------------------------------------

async def load_subsidy(conn: Connection, text: str,
                       file_name: str | None = None) -> int:
    """Validate and store a new subsidy version; raises SubsidyError naming rule and field."""
    rules = SubsidyRules.from_toml(text)
    version: int = await conn.fetchval(
        "INSERT INTO subsidy_version (source, normalised, file_name) VALUES ($1, $2::jsonb, $3) "
        "RETURNING version", text, json.dumps(rules.to_dict(), ensure_ascii=False), file_name)
    return version


# Parsed versions by their stored text (a version never changes once stored; keyed by
# the text rather than the number, so that two databases in one process cannot mix).
_CACHE: dict[str, SubsidyRules] = {}


async def rules_version(conn: Connection, version: int | None = None
                        ) -> tuple[SubsidyRules | None, int | None]:
    """The given subsidy version (None: the latest) and its number; (None, None) if none."""
    if version is None:
        row = await conn.fetchrow("SELECT version, normalised::text AS n FROM subsidy_version "
                                  "ORDER BY version DESC LIMIT 1")
        if row is None:
            return None, None
    else:
        row = await conn.fetchrow("SELECT version, normalised::text AS n FROM subsidy_version "
                                  "WHERE version = $1", version)
        if row is None:
            raise LookupError(f"no subsidy version {version}")
    text = row["n"]
    if text not in _CACHE:
        if len(_CACHE) > 64:
            _CACHE.clear()
        _CACHE[text] = SubsidyRules.from_dict(json.loads(text))
    return _CACHE[text], row["version"]


# --------------------------------------------------------------------------
# Granting and giving back
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Grant:
    """What one rule gave to one posting (negative in a reversal)."""

    position: int
    rule: str
    wanted: int
    granted: int
    budgets: tuple[int, ...]     # subsidy_budget ids, each drawn by `granted`
    note: str | None = None
    part: str = PART_FEE         # what of the fee the rule worked on (PARTS)


def _scope(key: tuple[str, str, str]) -> str:
    name, requester, period = key
    return f"budget '{name}' ({requester or 'global'}, {period})"


async def grant(conn: Connection, rules: SubsidyRules, *, requester: str,
                supplier: str, service_kind: str, fee: Money,
                day: datetime.date, logistics: Money | None = None
                ) -> tuple[list[Grant], list[str]]:
    """Apply the matching rules to a fee and draw their budgets (inside the caller's
    transaction); returns the grants and notes explaining any shortfall. `logistics`:
    how much of the fee is shipping (what `part = "logistics"` rules work on)."""
    if fee.minor <= 0:
        return [], []
    shipping = _logistics_part(fee, logistics)
    matched = rules.matching(requester=requester, supplier=supplier,
                             service_kind=service_kind, day=day)
    if not matched:
        return [], []
    if fee.currency != rules.currency:
        return [], [f"no subsidy: the fee is in {fee.currency}, the subsidy rules "
                    f"(version {rules.version_label}) in {rules.currency}"]

    keys = sorted({rules.budgets[b].key(requester, day) for r in matched for b in r.budgets})
    limits = {rules.budgets[b].key(requester, day): rules.budgets[b].amount_minor
              for r in matched for b in r.budgets}
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for key in keys:
        # One budget at a time in sorted order: concurrent postings queue on the same
        # rows in the same order, so they never deadlock; the row stays locked until
        # the caller commits, so what we read here is what we may spend.
        row = await fetch_one(
            conn,
            """INSERT INTO subsidy_budget (name, requester, period, currency, limit_minor)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (name, requester, period) DO UPDATE
                   SET limit_minor = greatest(EXCLUDED.limit_minor, subsidy_budget.spent_minor)
               RETURNING id, currency, limit_minor, spent_minor""",
            *key, rules.currency, limits[key])
        rows[key] = {"id": row["id"], "currency": row["currency"],
                     "left": row["limit_minor"] - row["spent_minor"], "drawn": 0}

    grants: list[Grant] = []
    notes: list[str] = []
    left = fee.minor
    for rule in matched:
        on_logistics = rule.part == PART_LOGISTICS
        wanted = rule.wanted(min(shipping, left) if on_logistics else left)
        if wanted <= 0:
            continue
        got, note = wanted, None
        rule_keys = [rules.budgets[b].key(requester, day) for b in rule.budgets]
        for key in rule_keys:
            state = rows[key]
            avail = state["left"] if state["currency"] == fee.currency else 0
            if avail < got:
                got = avail
                note = (f"rule '{rule.name}': {_scope(key)} has "
                        f"{Money(max(state['left'], 0), fee.currency)} left; granted "
                        f"{Money(avail, fee.currency)} of {Money(wanted, fee.currency)}")
        for key in rule_keys:
            rows[key]["left"] -= got
            rows[key]["drawn"] += got
        left -= got
        if on_logistics:
            shipping -= got
        if note:
            notes.append(note)
        grants.append(Grant(position=len(grants) + 1, rule=rule.name, wanted=wanted,
                            granted=got, budgets=tuple(rows[k]["id"] for k in rule_keys),
                            note=note, part=rule.part))
    for key in keys:
        if rows[key]["drawn"]:
            await conn.execute(
                "UPDATE subsidy_budget SET spent_minor = spent_minor + $2, updated_at = now() "
                "WHERE id = $1", rows[key]["id"], rows[key]["drawn"])
    if not 0 <= left <= fee.minor:
        raise RuntimeError(f"subsidy left a patron share of {left} minor units of a fee of "
                           f"{fee.minor}; it must lie between 0 and the fee")
    return grants, notes


def _logistics_part(fee: Money, logistics: Money | None) -> int:
    """The shipping part of a fee in minor units, checked: in the fee's currency and
    between 0 and the fee (anything else is a caller's bug, refused)."""
    if logistics is None:
        return 0
    if logistics.currency != fee.currency:
        raise ValueError(f"logistics part {logistics} is not in the fee's currency "
                         f"({fee.currency})")
    if not 0 <= logistics.minor <= fee.minor:
        raise ValueError(f"logistics part {logistics} must lie between 0 and the fee {fee}")
    return logistics.minor


async def give_back(conn: Connection, grants: Iterable[Grant]) -> None:
    """Return granted amounts to the budget rows they were drawn from (a reversal)."""
    amounts: dict[int, int] = {}
    for g in grants:
        for b in g.budgets:
            amounts[b] = amounts.get(b, 0) + g.granted
    if not amounts:
        return
    # COLLATE "C" orders by code point, as Python's sorted() does in `grant`: the same
    # lock order everywhere, so a reversal and a charge never deadlock on two budgets.
    order = await conn.fetch(
        """SELECT id FROM subsidy_budget WHERE id = ANY($1::bigint[])
           ORDER BY name COLLATE "C", requester COLLATE "C", period COLLATE "C" """,
        list(amounts))
    for r in order:
        if amounts[r["id"]]:
            await conn.execute(
                "UPDATE subsidy_budget SET spent_minor = spent_minor - $2, updated_at = now() "
                "WHERE id = $1", r["id"], amounts[r["id"]])


# --------------------------------------------------------------------------
# Reports and CLI
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class BudgetRow:
    name: str
    requester: str           # '' = global
    requester_name: str | None
    period: str
    limit: Money
    spent: Money

    @property
    def remaining(self) -> Money:
        return self.limit - self.spent


async def budgets_report(conn: Connection, period: str) -> list[BudgetRow]:
    """Budgets drawn in a period ('YYYY-MM'), plus the never-renewing ('total') ones.

    Global budgets of the current subsidy version appear even before their first draw;
    a requester's own budget appears once that requester has drawn on it.
    """
    check_period(period)
    rows = await conn.fetch(
        """SELECT b.name, b.requester, a.name AS requester_name, b.period, b.currency,
                  b.limit_minor, b.spent_minor
           FROM subsidy_budget b LEFT JOIN agency a ON a.symbol = b.requester
           WHERE b.period IN ($1, 'total')
           ORDER BY b.name, b.requester, b.period""", period)
    out = [BudgetRow(r["name"], r["requester"], r["requester_name"], r["period"],
                     Money(r["limit_minor"], r["currency"]), Money(r["spent_minor"], r["currency"]))
           for r in rows]
    rules, _ = await rules_version(conn)
    if rules is not None:
        have = {(b.name, b.requester, b.period) for b in out}
        for b in rules.budgets.values():
            p = period if b.period == "month" else "total"
            if b.per == "global" and (b.name, "", p) not in have:
                out.append(BudgetRow(b.name, "", None, p, Money(b.amount_minor, rules.currency),
                                     Money.zero(rules.currency)))
    out.sort(key=lambda b: (b.name, b.requester, b.period))
    return out


__all__: Sequence[str] = (
    "PARTS", "PART_FEE", "PART_LOGISTICS",
    "Budget", "BudgetRow", "Grant", "Rule", "SubsidyError", "SubsidyRules",
    "budgets_report", "give_back", "grant", "load_subsidy", "rules_version")
