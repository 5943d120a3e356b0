"""Routing policy: the rota of candidate suppliers for one ILL request (ARCHITECTURE §3.4.3).

Pure: dispatch gathers the facts (the request, and for each possible supplier its
location, holdings match, quote, scorecard and load) and asks `Policy.rota` for the
ranked candidates, each with the reasons for its rank, and for the suppliers left
out, each with why. No I/O besides parsing the policy text, so every rota can be
reproduced and explained from the stored policy version and the facts.

Tiers are CALIS's four levels of referral:

    1  same city as the requester (cities equal; provinces equal or one unknown)
    2  same province
    3  national: any other province, or a location that is not known
    4  partners and last resort: a supplier that a rule `include`s although its
       holdings do not match (unless it is in the requester's city or province,
       then tier 1 or 2), and every `last_resort` entry.
    A rule's `prefer_tier` moves a preferred candidate to the tier it names.

Within a tier, higher score first, ties by symbol (so a rota is deterministic):

    score = fill_weight * fill + speed_weight * speed
            - load_weight * load - cost_weight * cost + sum of prefer bonuses
    fill  = measured fill rate 0..1; with no history, prior_fill_rate (0.7)
    speed = H / (H + turnaround_hours), H = turnaround_half_hours (48):
            0 h -> 1.0, 24 h -> 0.67, 48 h -> 0.5, 144 h -> 0.25; no history -> 0.5
    load  = n / (n + L), n = open requests, L = load_half (10):
            0 -> 0, 10 -> 0.5, 30 -> 0.75  (busy suppliers sink, spreading work)
    cost  = q / (q + C), q = the quote, C = cost_half (20.00 CNY):
            free -> 0, 20.00 -> 0.5; no fee schedule -> 0.5
    weights: fill 1.0, speed 0.5, load 0.4, cost 0.2 (all settable in [scoring])

Every supplier dispatch passes in ends up exactly once in `Rota.ranked` or in
`Rota.excluded` (with the reason), so `run.py explain` can account for all of them.

The policy file format is documented in docs/policy.example.toml; only TOML is
read (PyYAML is not a dependency of the hub).
"""

from __future__ import annotations

import copy
import datetime
import difflib
import hashlib
import json
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from schemas.iso18626 import ServiceKind, ServiceType
from schemas.money import Money
from schemas.rulefile import parse_date
from schemas.symbols import split_symbol

SERVICE_KINDS: tuple[str, ...] = tuple(k.value for k in ServiceKind)
SERVICE_TYPES: tuple[str, ...] = tuple(t.value for t in ServiceType)
# Same values as broker.holdings.ID_TYPES (a test keeps them equal); not imported
# so that the policy engine does not pull in the database driver.
ID_TYPES: tuple[str, ...] = ("issn", "isbn", "doi_prefix", "title_key")
WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

TIER_CITY, TIER_PROVINCE, TIER_NATIONAL, TIER_LAST = 1, 2, 3, 4
TIER_NAMES: dict[int, str] = {
    TIER_CITY: "same city", TIER_PROVINCE: "same province",
    TIER_NATIONAL: "national", TIER_LAST: "partners / last resort",
}
DEFAULT_PREFER_BONUS = 0.3
GROUP_PREFIX = "group:"

_GROUP_NAME = re.compile(r"[A-Za-z0-9_-]+")
# Yuan with at most two decimals: fen are the smallest unit the ledger knows.
_YUAN = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")
_MAX_BONUS = 10.0

_TOP_KEYS = ("version", "description", "groups", "scoring", "rule", "delivery")
_DELIVERY_KEYS = ("supplier", "service_kind", "downloads", "days")
_RULE_KEYS = ("name", "note", "when", "include", "exclude", "prefer", "prefer_bonus",
              "prefer_tier", "last_resort", "daily_cap", "closed", "max_candidates")
_ACTION_KEYS = ("include", "exclude", "prefer", "last_resort", "daily_cap", "closed",
                "max_candidates")
_WHEN_KEYS = ("service_kind", "service_type", "id_type", "requester", "requester_province",
              "max_cost_at_least", "max_cost_below", "date_from", "date_to")
_CLOSED_KEYS = ("dates", "weekdays", "suppliers")


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the rule and the field."""


# --------------------------------------------------------------------------
# Facts in, rota out
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class RequestFacts:
    requester: str
    province: str | None
    city: str | None
    service_type: str
    service_kind: str
    id_types: frozenset[str]
    max_cost_minor: int | None
    named_supplier: str | None
    today: datetime.date

    @property
    def weekday(self) -> str:
        """"Mon" .. "Sun", as `closed.weekdays` spells them."""
        return WEEKDAYS[self.today.weekday()]


@dataclass(frozen=True)
class SupplierFacts:
    symbol: str
    province: str | None
    city: str | None
    holds: frozenset[str]
    quote_minor: int | None
    fill_rate: float | None
    turnaround_hours: float | None
    open_requests: int
    forwarded_today: int


@dataclass(frozen=True)
class Ranked:
    symbol: str
    tier: int
    score: float
    reasons: tuple[str, ...]


@dataclass(frozen=True)
class Excluded:
    symbol: str
    reason: str


@dataclass(frozen=True)
class Rota:
    ranked: tuple[Ranked, ...]
    excluded: tuple[Excluded, ...]
    rules_applied: tuple[str, ...]

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(r.symbol for r in self.ranked)

    def excluded_reason(self, symbol: str) -> str | None:
        return next((e.reason for e in self.excluded if e.symbol == symbol), None)


# --------------------------------------------------------------------------
# The parsed policy
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Scoring:
    prior_fill_rate: float = 0.7
    turnaround_half_hours: float = 48.0
    load_half: float = 10.0
    cost_half_minor: int = 2000
    fill_weight: float = 1.0
    speed_weight: float = 0.5
    load_weight: float = 0.4
    cost_weight: float = 0.2

    def to_dict(self) -> dict[str, Any]:
        return {
            "prior_fill_rate": self.prior_fill_rate,
            "turnaround_half_hours": self.turnaround_half_hours,
            "load_half": self.load_half,
            "cost_half": _yuan(self.cost_half_minor),
            "fill_weight": self.fill_weight,
            "speed_weight": self.speed_weight,
            "load_weight": self.load_weight,
            "cost_weight": self.cost_weight,
        }


@dataclass(frozen=True)
class _Member:
    """One supplier named by a rule field, and the group it was named through."""

    symbol: str
    via: str | None

    def label(self) -> str:
        return f" via group {self.via}" if self.via else ""


@dataclass(frozen=True)
class _When:
    # An empty tuple / None means "not constrained" (empty lists are refused when parsing).
    service_kind: tuple[str, ...] = ()
    service_type: tuple[str, ...] = ()
    id_type: tuple[str, ...] = ()
    requester: frozenset[str] = frozenset()
    requester_given: bool = False
    requester_province: tuple[str, ...] = ()
    max_cost_at_least: int | None = None
    max_cost_below: int | None = None
    date_from: datetime.date | None = None
    date_to: datetime.date | None = None

    def matches(self, r: RequestFacts) -> bool:
        if self.service_kind and r.service_kind not in self.service_kind:
            return False
        if self.service_type and r.service_type not in self.service_type:
            return False
        if self.id_type and not r.id_types.intersection(self.id_type):
            return False
        if self.requester_given and r.requester not in self.requester:
            return False
        if self.requester_province and r.province not in self.requester_province:
            return False
        # No maximumCosts means "no limit", i.e. above every threshold.
        if (self.max_cost_at_least is not None and r.max_cost_minor is not None
                and r.max_cost_minor < self.max_cost_at_least):
            return False
        if self.max_cost_below is not None and (
                r.max_cost_minor is None or r.max_cost_minor >= self.max_cost_below):
            return False
        if self.date_from is not None and r.today < self.date_from:
            return False
        return not (self.date_to is not None and r.today > self.date_to)


@dataclass(frozen=True)
class _Closed:
    dates: frozenset[datetime.date]
    weekdays: frozenset[int]
    suppliers: tuple[_Member, ...]


@dataclass(frozen=True)
class _Rule:
    index: int
    name: str
    when: _When
    include: tuple[_Member, ...] = ()
    exclude: tuple[_Member, ...] = ()
    prefer: tuple[_Member, ...] = ()
    prefer_bonus: float = DEFAULT_PREFER_BONUS
    prefer_tier: int | None = None
    last_resort: tuple[_Member, ...] = ()
    daily_cap: tuple[tuple[_Member, int], ...] = ()
    closed: _Closed | None = None
    max_candidates: int | None = None
    normalised: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DeliveryLimit:
    """`[[delivery]]`: download limit and days for copies of some suppliers / service kinds."""

    suppliers: frozenset[str] | None   # None: any supplier
    kinds: frozenset[str] | None       # None: any service kind
    downloads: int | None              # None: unlimited (written as 0)
    days: int
    normalised: Mapping[str, Any] = field(default_factory=dict)

    def matches(self, supplier: str, kind: str) -> bool:
        return ((self.suppliers is None or supplier in self.suppliers)
                and (self.kinds is None or kind in self.kinds))


class Policy:
    """A validated routing policy. Build with `from_toml`, `from_dict` or `default`."""

    version_label: str

    def __init__(self, *, version_label: str, description: str,
                 groups: Mapping[str, tuple[str, ...]],
                 group_refs: Mapping[str, tuple[str, ...]],
                 scoring: Scoring, rules: Sequence[_Rule],
                 delivery: Sequence[DeliveryLimit] = ()) -> None:
        self.version_label = version_label
        self.description = description
        self._groups = dict(groups)
        self._group_refs = dict(group_refs)
        self.scoring = scoring
        self._rules = tuple(rules)
        self._delivery = tuple(delivery)

    def delivery_limits(self, supplier: str, service_kind: str) -> tuple[int | None, int] | None:
        """(downloads, days) of the first `[[delivery]]` entry that matches, else None."""
        for entry in self._delivery:
            if entry.matches(supplier, service_kind):
                return entry.downloads, entry.days
        return None

    # ---- construction --------------------------------------------------

    @classmethod
    def from_toml(cls, text: str) -> Policy:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise PolicyError(f"policy: not valid TOML: {exc}") from exc
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """The parsed TOML, or a stored `to_dict()`: both have the same shape."""
        return _Parser(data).parse()

    @classmethod
    def default(cls) -> Policy:
        return cls(version_label="default", description="", groups={}, group_refs={},
                   scoring=Scoring(), rules=())

    # ---- queries --------------------------------------------------------

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._rules)

    def groups_of(self, symbol: str) -> frozenset[str]:
        return frozenset(name for name, members in self._groups.items() if symbol in members)

    def all_extra_suppliers(self) -> frozenset[str]:
        """Every symbol some rule may add: a superset of any request's extra_suppliers."""
        return frozenset(m.symbol for r in self._rules for m in (*r.include, *r.last_resort))

    def extra_suppliers(self, request: RequestFacts) -> frozenset[str]:
        """Symbols this request may be routed to without a holdings match.

        Dispatch passes facts for the holders it found plus these; a symbol the
        rota needs but gets no facts for is excluded, never routed to blind.
        """
        out = {m.symbol for r in self._rules if r.when.matches(request)
               for m in (*r.include, *r.last_resort)}
        if request.named_supplier:
            out.add(request.named_supplier)
        out.discard(request.requester)
        return frozenset(out)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"version": self.version_label}
        if self.description:
            out["description"] = self.description
        out.update(_content_dict(self._group_refs, self.scoring, self._rules))
        if self._delivery:
            out["delivery"] = [dict(d.normalised) for d in self._delivery]
        # A deep copy: callers may edit what they get without touching this policy.
        return copy.deepcopy(out)

    # ---- the rota -------------------------------------------------------

    def rota(self, request: RequestFacts, suppliers: list[SupplierFacts]) -> Rota:
        facts: dict[str, SupplierFacts] = {}
        for s in suppliers:
            if s.symbol in facts:
                raise ValueError(f"supplier facts for {s.symbol} given twice")
            facts[s.symbol] = s
        matched = [r for r in self._rules if r.when.matches(request)]
        acts = _Actions.collect(matched, request)
        named = request.named_supplier

        considered = list(dict.fromkeys(
            [*facts, *acts.included, *acts.last_resort, *([named] if named else [])]))
        excluded: dict[str, str] = {}
        cands: dict[str, _Candidate] = {}
        for sym in considered:
            reason = self._why_not(sym, facts.get(sym), request, acts)
            if reason is None:
                cands[sym] = self._candidate(facts[sym], request, acts)
            else:
                if sym == named:
                    reason = f"named by the requester, but {reason}"
                excluded[sym] = reason

        main = sorted((c for c in cands.values() if c.main),
                      key=lambda c: (c.tier, -c.score, c.symbol))
        if named in cands:
            main.sort(key=lambda c: c.symbol != named)  # stable: the rest keep their order
        if acts.max_candidates is not None:
            limit, rule = acts.max_candidates
            for pos, c in enumerate(main[limit:], start=limit + 1):
                if c.symbol not in acts.last_resort:
                    excluded[c.symbol] = (f"ranked {pos} of {len(main)}, beyond max_candidates "
                                          f"{limit} (rule '{rule}')")
            main = main[:limit]
        in_main = {c.symbol for c in main}
        tail = [cands[s] for s in acts.last_resort if s in cands and s not in in_main]

        ranked = [c.ranked(head_named=(c.symbol == named)) for c in main]
        ranked += [c.as_last_resort(acts.last_resort[c.symbol]) for c in tail]
        return Rota(
            ranked=tuple(ranked),
            excluded=tuple(Excluded(s, excluded[s]) for s in sorted(excluded)),
            rules_applied=tuple(r.name for r in matched),
        )

    def _why_not(self, sym: str, f: SupplierFacts | None, request: RequestFacts,
                 acts: _Actions) -> str | None:
        """Why `sym` cannot be a candidate, or None if it can."""
        if sym == request.requester:
            return "is the requester"
        if f is None:
            return "no facts from dispatch: not a known active supplier"
        if not (f.holds or sym in acts.included or sym == request.named_supplier
                or sym in acts.last_resort):
            ids = ", ".join(sorted(request.id_types)) or "none"
            return f"holds nothing matching (request identifiers: {ids})"
        why = list(acts.excluded.get(sym, ()))
        why += acts.closed.get(sym, [])
        for cap, rule, via in acts.caps.get(sym, ()):
            if f.forwarded_today >= cap:
                why.append(f"daily cap {cap} reached: {f.forwarded_today} forwarded today "
                           f"(rule '{rule}'{via})")
        if (f.quote_minor is not None and request.max_cost_minor is not None
                and f.quote_minor > request.max_cost_minor):
            why.append(f"quote {_yuan(f.quote_minor)} CNY above maximumCosts "
                       f"{_yuan(request.max_cost_minor)}")
        return "; ".join(why) or None

    def _candidate(self, f: SupplierFacts, request: RequestFacts,
                   acts: _Actions) -> _Candidate:
        sc = self.scoring
        named = f.symbol == request.named_supplier
        included = acts.included.get(f.symbol)
        main = bool(f.holds or included or named)

        if f.holds:
            match = f"holds {', '.join(sorted(f.holds))}"
        elif included:
            match = f"no holdings match; included by {', '.join(included)}"
        elif named:
            match = "no holdings match in the union catalogue"
        else:
            match = "no holdings match"
        loc_tier, where = _location(request, f)
        tier, tier_reasons = loc_tier, [f"tier {loc_tier}: {where}"]
        if not f.holds and not named and loc_tier == TIER_NATIONAL:
            # A partner that holds nothing matching is a fallback, unless it is local.
            tier = TIER_LAST
            tier_reasons = [f"tier 4: partner without a holdings match ({where})"]
        if f.symbol in acts.tier_override:
            tier, rule = acts.tier_override[f.symbol]
            # Say "by location" so the operator does not read the old tier as the rank.
            tier_reasons = [f"by location {tier_reasons[0]}",
                            f"rule '{rule}': moved to tier {tier}"]

        bonus = 0.0
        rule_reasons: list[str] = []
        for rule, b, via in acts.bonus.get(f.symbol, ()):
            bonus += b
            what = "preferred partner" if b >= 0 else "penalised"
            rule_reasons.append(f"rule '{rule}': {what}{via} ({b:+.2f})")

        if f.fill_rate is None:
            fill = sc.prior_fill_rate
            fill_reason = f"no history yet (prior {fill:g})"
        else:
            fill = min(max(f.fill_rate, 0.0), 1.0)
            fill_reason = f"fill rate {fill:.2f}"
        if f.turnaround_hours is None:
            speed = 0.5
            speed_reason = "no turnaround history (neutral speed 0.50)"
        else:
            hours = max(f.turnaround_hours, 0.0)
            speed = sc.turnaround_half_hours / (sc.turnaround_half_hours + hours)
            speed_reason = f"turnaround {hours:.1f} h (speed {speed:.2f})"
        n = max(f.open_requests, 0)
        load = n / (n + sc.load_half)
        load_reason = (f"{n} open request{'s' if n != 1 else ''} (load {load:.2f})" if n
                       else "no open requests")
        if f.quote_minor is None:
            cost = 0.5
            cost_reason = f"no fee schedule for {request.service_kind}"
        else:
            q = max(f.quote_minor, 0)
            cost = q / (q + sc.cost_half_minor)
            cost_reason = (f"quote {_yuan(q)} CNY within max {_yuan(request.max_cost_minor)}"
                           if request.max_cost_minor is not None
                           else f"quote {_yuan(q)} CNY, no maximumCosts")
        parts = (sc.fill_weight * fill, sc.speed_weight * speed,
                 sc.load_weight * load, sc.cost_weight * cost)
        raw = parts[0] + parts[1] - parts[2] - parts[3] + bonus
        # Rounded so that float noise never decides a tie the symbol should break.
        score = round(raw, 6)
        breakdown = (f"score {score:.3f} = fill {parts[0]:.3f} + speed {parts[1]:.3f}"
                     f" - load {parts[2]:.3f} - cost {parts[3]:.3f}")
        if bonus:
            breakdown += f" {'+' if bonus >= 0 else '-'} rules {abs(bonus):.3f}"
        return _Candidate(
            symbol=f.symbol, main=main, tier=tier, score=score, match=match,
            tier_reasons=tuple(tier_reasons), rule_reasons=tuple(rule_reasons),
            card=(fill_reason, speed_reason, load_reason, cost_reason, breakdown),
        )


@dataclass(frozen=True)
class _Candidate:
    symbol: str
    main: bool              # False: only a last_resort entry brought it in
    tier: int
    score: float
    match: str
    tier_reasons: tuple[str, ...]
    rule_reasons: tuple[str, ...]
    card: tuple[str, ...]

    def ranked(self, *, head_named: bool) -> Ranked:
        lead = ("named by the requester",) if head_named else ()
        return Ranked(self.symbol, self.tier, self.score,
                      (*lead, self.match, *self.tier_reasons, *self.rule_reasons, *self.card))

    def as_last_resort(self, rule: str) -> Ranked:
        return Ranked(self.symbol, TIER_LAST, self.score,
                      (f"last resort (rule '{rule}')", self.match,
                       "tier 4: last resort, after every ranked candidate", *self.card))


@dataclass
class _Actions:
    """The actions of the rules that matched one request, merged."""

    included: dict[str, list[str]] = field(default_factory=dict)
    excluded: dict[str, list[str]] = field(default_factory=dict)
    bonus: dict[str, list[tuple[str, float, str]]] = field(default_factory=dict)
    tier_override: dict[str, tuple[int, str]] = field(default_factory=dict)
    last_resort: dict[str, str] = field(default_factory=dict)   # insertion order = rota order
    caps: dict[str, list[tuple[int, str, str]]] = field(default_factory=dict)
    closed: dict[str, list[str]] = field(default_factory=dict)
    max_candidates: tuple[int, str] | None = None

    @classmethod
    def collect(cls, rules: Sequence[_Rule], request: RequestFacts) -> _Actions:
        a = cls()
        day = request.today
        for r in rules:
            for m in r.include:
                a.included.setdefault(m.symbol, []).append(f"rule '{r.name}'{m.label()}")
            for m in r.exclude:
                a.excluded.setdefault(m.symbol, []).append(
                    f"excluded by rule '{r.name}'{m.label()}")
            for m in r.prefer:
                if r.prefer_bonus:
                    a.bonus.setdefault(m.symbol, []).append(
                        (r.name, r.prefer_bonus, m.label()))
                if r.prefer_tier is not None:
                    # Later rules win, as later lines of a file override earlier ones.
                    a.tier_override[m.symbol] = (r.prefer_tier, r.name)
            for m in r.last_resort:
                a.last_resort.setdefault(m.symbol, r.name)
            for m, cap in r.daily_cap:
                a.caps.setdefault(m.symbol, []).append((cap, r.name, m.label()))
            if r.closed is not None:
                if day in r.closed.dates:
                    why = f"closed on {day.isoformat()} (rule '{r.name}')"
                elif day.weekday() in r.closed.weekdays:
                    why = (f"closed on {_WEEKDAY_NAMES[day.weekday()]}s, today "
                           f"{day.isoformat()} (rule '{r.name}')")
                else:
                    why = ""
                if why:
                    for m in r.closed.suppliers:
                        a.closed.setdefault(m.symbol, []).append(why)
            if r.max_candidates is not None and (
                    a.max_candidates is None or r.max_candidates < a.max_candidates[0]):
                a.max_candidates = (r.max_candidates, r.name)
        return a


def _location(request: RequestFacts, f: SupplierFacts) -> tuple[int, str]:
    """The location tier of `f` for this requester, and how it was decided."""
    same_province = request.province is not None and request.province == f.province
    # Cities with one name in two provinces exist; an unknown province is given the benefit.
    provinces_agree = same_province or request.province is None or f.province is None
    if request.city is not None and request.city == f.city and provinces_agree:
        return TIER_CITY, f"same city {f.city}"
    if same_province:
        return TIER_PROVINCE, f"same province {f.province}"
    if f.province is None:
        return TIER_NATIONAL, "national, supplier location unknown"
    if request.province is None:
        return TIER_NATIONAL, f"national, requester location unknown (supplier in {f.province})"
    return TIER_NATIONAL, f"national, other province {f.province}"


def _yuan(minor: int | None) -> str:
    return "none" if minor is None else Money(minor).amount_text()


def _content_dict(group_refs: Mapping[str, tuple[str, ...]], scoring: Scoring,
                  rules: Sequence[_Rule]) -> dict[str, Any]:
    return {
        "groups": {name: list(refs) for name, refs in group_refs.items()},
        "scoring": scoring.to_dict(),
        "rule": [dict(r.normalised) for r in rules],
    }


# --------------------------------------------------------------------------
# Parsing and validation
# --------------------------------------------------------------------------

def _unknown_key(where: str, key: str, allowed: Sequence[str]) -> PolicyError:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return PolicyError(f"{where}: {key}: unknown key; {hint}(allowed: {', '.join(allowed)})")


def _type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


class _Parser:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.raw_groups: dict[str, list[str]] = {}
        self.groups: dict[str, tuple[str, ...]] = {}

    def parse(self) -> Policy:
        data = self.data
        if not isinstance(data, Mapping):
            raise PolicyError(f"policy: must be a table, not {_type_name(data)}")
        for key in data:
            if key not in _TOP_KEYS:
                raise _unknown_key("policy", key, _TOP_KEYS)
        version = data.get("version")
        if version is not None and (not isinstance(version, str) or not version.strip()
                                    or len(version) > 100):
            raise PolicyError("policy: version: must be a non-empty string of at most 100 "
                              "characters")
        description = data.get("description", "")
        if not isinstance(description, str):
            raise PolicyError(f"policy: description: must be a string, "
                              f"not {_type_name(description)}")
        self._parse_groups(data.get("groups", {}))
        scoring = self._parse_scoring(data.get("scoring", {}))
        raw_rules = data.get("rule", [])
        if not isinstance(raw_rules, list):
            raise PolicyError("policy: rule: must be an array of tables, written [[rule]]")
        rules: list[_Rule] = []
        seen: dict[str, int] = {}
        for i, raw in enumerate(raw_rules, start=1):
            rule = self._parse_rule(i, raw)
            if rule.name in seen:
                raise PolicyError(f"rule[{i}] '{rule.name}': name: duplicate of "
                                  f"rule[{seen[rule.name]}]")
            seen[rule.name] = i
            rules.append(rule)
        if version is None:
            # A stable label for an unlabelled file: the same content, the same label.
            canon = json.dumps(_content_dict(self.raw_groups_t, scoring, rules),
                               sort_keys=True, ensure_ascii=False)
            version = "sha256:" + hashlib.sha256(canon.encode()).hexdigest()[:12]
        delivery = self._parse_delivery(data.get("delivery", []))
        return Policy(version_label=version.strip(), description=description,
                      groups=self.groups, group_refs=self.raw_groups_t,
                      scoring=scoring, rules=rules, delivery=delivery)

    def _parse_delivery(self, raw: Any) -> list[DeliveryLimit]:
        if not isinstance(raw, list):
            raise PolicyError("policy: delivery: must be an array of tables, written "
                              "[[delivery]]")
        out: list[DeliveryLimit] = []
        for i, entry in enumerate(raw, start=1):
            where = f"delivery[{i}]"
            if not isinstance(entry, Mapping):
                raise PolicyError(f"{where}: must be a table, not {_type_name(entry)}")
            for key in entry:
                if key not in _DELIVERY_KEYS:
                    raise _unknown_key(where, key, _DELIVERY_KEYS)
            suppliers = None
            if "supplier" in entry:
                _, members = self._members(entry["supplier"], where, "supplier")
                suppliers = frozenset(m.symbol for m in members)
            kinds = None
            if "service_kind" in entry:
                kinds = frozenset(_str_list(entry["service_kind"], where, "service_kind"))
                bad = sorted(k for k in kinds if k not in SERVICE_KINDS)
                if bad:
                    raise PolicyError(f"{where}: service_kind: {bad[0]!r} is not one of "
                                      f"{', '.join(SERVICE_KINDS)}")
            downloads, days = entry.get("downloads", 5), entry.get("days", 30)
            if not _is_int(downloads) or not 0 <= downloads <= 1000:
                raise PolicyError(f"{where}: downloads: must be an integer 0..1000 "
                                  "(0 = unlimited)")
            if not _is_int(days) or not 1 <= days <= 366:
                raise PolicyError(f"{where}: days: must be an integer 1..366")
            out.append(DeliveryLimit(suppliers=suppliers, kinds=kinds,
                                     downloads=downloads or None, days=days,
                                     normalised=dict(entry)))
        return out

    @property
    def raw_groups_t(self) -> dict[str, tuple[str, ...]]:
        return {k: tuple(v) for k, v in self.raw_groups.items()}

    # ---- groups ----------------------------------------------------------

    def _parse_groups(self, raw: Any) -> None:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"groups: must be a table of name = [symbols], "
                              f"not {_type_name(raw)}")
        for name, members in raw.items():
            if not _GROUP_NAME.fullmatch(name):
                raise PolicyError(f"groups: {name}: a group name may contain only letters, "
                                  "digits, '_' and '-'")
            if not isinstance(members, list):
                raise PolicyError(f"groups: {name}: must be a list of symbols, "
                                  f"not {_type_name(members)}")
            self.raw_groups[name] = []
        for name, members in raw.items():
            refs = [self._ref(m, "groups", name) for m in members]
            self.raw_groups[name] = list(dict.fromkeys(refs))
        for name in self.raw_groups:
            self._resolve(name, ())

    def _resolve(self, name: str, stack: tuple[str, ...]) -> tuple[str, ...]:
        if name in self.groups:
            return self.groups[name]
        if name in stack:
            cycle = " -> ".join((*stack[stack.index(name):], name))
            raise PolicyError(f"groups: {name}: groups include each other in a cycle: {cycle}")
        out: list[str] = []
        for ref in self.raw_groups[name]:
            if ref.startswith(GROUP_PREFIX):
                out.extend(self._resolve(ref[len(GROUP_PREFIX):], (*stack, name)))
            else:
                out.append(ref)
        self.groups[name] = tuple(dict.fromkeys(out))
        return self.groups[name]

    def _ref(self, value: Any, where: str, fld: str) -> str:
        """A symbol or `group:NAME`, checked."""
        if not isinstance(value, str):
            raise PolicyError(f"{where}: {fld}: {value!r} must be a string: an agency symbol "
                              f"or group:NAME")
        if value.startswith(GROUP_PREFIX):
            group = value[len(GROUP_PREFIX):]
            if group not in self.raw_groups:
                known = ", ".join(self.raw_groups) or "none defined"
                raise PolicyError(f"{where}: {fld}: unknown group '{group}' "
                                  f"(known groups: {known})")
            return value
        try:
            split_symbol(value)
        except ValueError as exc:
            raise PolicyError(f"{where}: {fld}: {value!r} is not an agency symbol or "
                              f"group:NAME: {exc}") from exc
        return value

    def _members(self, value: Any, where: str, fld: str) -> tuple[list[str], tuple[_Member, ...]]:
        """(the refs as written, deduplicated; the suppliers they expand to, in order)."""
        if not isinstance(value, list):
            raise PolicyError(f"{where}: {fld}: must be a list of symbols or group:NAME, "
                              f"not {_type_name(value)}")
        refs = list(dict.fromkeys(self._ref(v, where, fld) for v in value))
        out: dict[str, _Member] = {}
        for ref in refs:
            if ref.startswith(GROUP_PREFIX):
                group = ref[len(GROUP_PREFIX):]
                for sym in self.groups[group]:
                    out.setdefault(sym, _Member(sym, group))
            else:
                out.setdefault(ref, _Member(ref, None))
        return refs, tuple(out.values())

    # ---- scoring ---------------------------------------------------------

    def _parse_scoring(self, raw: Any) -> Scoring:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"scoring: must be a table, not {_type_name(raw)}")
        allowed = tuple(Scoring().to_dict())
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key not in allowed:
                raise _unknown_key("scoring", key, allowed)
            if key == "cost_half":
                minor = _parse_yuan(value, "scoring", key)
                if minor <= 0:
                    raise PolicyError("scoring: cost_half: must be above 0.00")
                values["cost_half_minor"] = minor
                continue
            number = _number(value, "scoring", key)
            if key == "prior_fill_rate" and not 0.0 <= number <= 1.0:
                raise PolicyError(f"scoring: {key}: {number} is not between 0 and 1")
            if key in ("turnaround_half_hours", "load_half") and number <= 0:
                raise PolicyError(f"scoring: {key}: must be above 0, not {number}")
            if key.endswith("_weight") and not 0.0 <= number <= _MAX_BONUS:
                raise PolicyError(f"scoring: {key}: {number} is not between 0 and {_MAX_BONUS:g}")
            values[key] = number
        return Scoring(**values)

    # ---- rules -----------------------------------------------------------

    def _parse_rule(self, i: int, raw: Any) -> _Rule:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"rule[{i}]: must be a table, not {_type_name(raw)}")
        name = raw.get("name")
        if name is None:
            raise PolicyError(f"rule[{i}]: name: is required")
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"rule[{i}]: name: must be a non-empty string")
        where = f"rule[{i}] '{name}'"
        for key in raw:
            if key not in _RULE_KEYS:
                raise _unknown_key(where, key, _RULE_KEYS)
        if not any(k in raw for k in _ACTION_KEYS):
            raise PolicyError(f"{where}: has no action; give at least one of "
                              f"{', '.join(_ACTION_KEYS)}")
        norm: dict[str, Any] = {"name": name}
        note = raw.get("note")
        if note is not None:
            if not isinstance(note, str):
                raise PolicyError(f"{where}: note: must be a string, not {_type_name(note)}")
            norm["note"] = note
        when, norm_when = self._parse_when(raw.get("when", {}), where)
        if norm_when:
            norm["when"] = norm_when
        kw: dict[str, Any] = {}
        for key in ("include", "exclude", "prefer", "last_resort"):
            if key in raw:
                refs, kw[key] = self._members(raw[key], where, key)
                norm[key] = refs
        for key in ("prefer_bonus", "prefer_tier"):
            if key in raw and "prefer" not in raw:
                raise PolicyError(f"{where}: {key}: needs a prefer list to apply to")
        if "prefer" in raw:
            bonus = _number(raw.get("prefer_bonus", DEFAULT_PREFER_BONUS), where, "prefer_bonus")
            if abs(bonus) > _MAX_BONUS:
                raise PolicyError(f"{where}: prefer_bonus: {bonus} is not between "
                                  f"-{_MAX_BONUS:g} and {_MAX_BONUS:g}")
            kw["prefer_bonus"] = norm["prefer_bonus"] = bonus
            if "prefer_tier" in raw:
                tier = raw["prefer_tier"]
                if not _is_int(tier) or tier not in TIER_NAMES:
                    raise PolicyError(f"{where}: prefer_tier: {tier!r} is not one of 1, 2, 3, 4")
                kw["prefer_tier"] = norm["prefer_tier"] = tier
        if "daily_cap" in raw:
            kw["daily_cap"], norm["daily_cap"] = self._parse_caps(raw["daily_cap"], where)
        if "closed" in raw:
            kw["closed"], norm["closed"] = self._parse_closed(raw["closed"], where)
        if "max_candidates" in raw:
            n = raw["max_candidates"]
            if not _is_int(n) or n < 1:
                raise PolicyError(f"{where}: max_candidates: must be an integer of at least 1, "
                                  f"not {n!r}")
            kw["max_candidates"] = norm["max_candidates"] = n
        return _Rule(index=i, name=name, when=when, normalised=norm, **kw)

    def _parse_when(self, raw: Any, where: str) -> tuple[_When, dict[str, Any]]:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: when: must be a table, not {_type_name(raw)}")
        for key in raw:
            if key not in _WHEN_KEYS:
                raise _unknown_key(f"{where}", f"when.{key}", [f"when.{k}" for k in _WHEN_KEYS])
        kw: dict[str, Any] = {}
        norm: dict[str, Any] = {}
        closed_lists = {"service_kind": SERVICE_KINDS, "service_type": SERVICE_TYPES,
                        "id_type": ID_TYPES}
        for key, allowed in closed_lists.items():
            if key in raw:
                values = _str_list(raw[key], where, f"when.{key}")
                for v in values:
                    if v not in allowed:
                        raise PolicyError(f"{where}: when.{key}: {v!r} is not one of "
                                          f"{', '.join(allowed)}")
                kw[key] = norm[key] = tuple(values)
        if "requester" in raw:
            refs, members = self._members(raw["requester"], where, "when.requester")
            if not refs:
                raise PolicyError(f"{where}: when.requester: must not be empty (leave it out "
                                  "to match every requester)")
            kw["requester"] = frozenset(m.symbol for m in members)
            kw["requester_given"] = True
            norm["requester"] = refs
        if "requester_province" in raw:
            kw["requester_province"] = tuple(
                _str_list(raw["requester_province"], where, "when.requester_province"))
            norm["requester_province"] = list(kw["requester_province"])
        for key in ("max_cost_at_least", "max_cost_below"):
            if key in raw:
                kw[key] = _parse_yuan(raw[key], where, f"when.{key}")
                norm[key] = _yuan(kw[key])
        low, high = kw.get("max_cost_at_least"), kw.get("max_cost_below")
        if low is not None and high is not None and low >= high:
            raise PolicyError(f"{where}: when.max_cost_below: {_yuan(high)} must be above "
                              f"max_cost_at_least {_yuan(low)}, or the rule never applies")
        for key in ("date_from", "date_to"):
            if key in raw:
                kw[key] = _parse_date(raw[key], where, f"when.{key}")
                norm[key] = kw[key].isoformat()
        if "date_from" in kw and "date_to" in kw and kw["date_from"] > kw["date_to"]:
            raise PolicyError(f"{where}: when.date_to: {norm['date_to']} is before date_from "
                              f"{norm['date_from']}")
        for key in closed_lists:
            if key in norm:
                norm[key] = list(norm[key])
        return _When(**kw), norm

    def _parse_caps(self, raw: Any, where: str
                    ) -> tuple[tuple[tuple[_Member, int], ...], dict[str, int]]:
        if not isinstance(raw, Mapping) or not raw:
            raise PolicyError(f"{where}: daily_cap: must be a non-empty table "
                              f'{{ "SYMBOL or group:NAME" = N }}')
        caps: dict[str, tuple[_Member, int]] = {}
        norm: dict[str, int] = {}
        for ref, n in raw.items():
            fld = f"daily_cap.{ref}"
            self._ref(ref, where, fld)
            if not _is_int(n) or n < 0:
                raise PolicyError(f"{where}: {fld}: {n!r} is not a whole number of requests "
                                  "(0 or more)")
            norm[ref] = n
            _, members = self._members([ref], where, fld)
            for m in members:
                # The tightest cap wins if a supplier is capped both alone and via a group.
                if m.symbol not in caps or n < caps[m.symbol][1]:
                    caps[m.symbol] = (m, n)
        return tuple(caps.values()), norm

    def _parse_closed(self, raw: Any, where: str) -> tuple[_Closed, dict[str, Any]]:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: closed: must be a table "
                              "{ dates = [...], weekdays = [...], suppliers = [...] }")
        for key in raw:
            if key not in _CLOSED_KEYS:
                raise _unknown_key(where, f"closed.{key}", [f"closed.{k}" for k in _CLOSED_KEYS])
        if "suppliers" not in raw:
            raise PolicyError(f"{where}: closed.suppliers: is required (who is closed)")
        refs, members = self._members(raw["suppliers"], where, "closed.suppliers")
        if not members:
            raise PolicyError(f"{where}: closed.suppliers: names no supplier")
        dates_raw = raw.get("dates", [])
        if not isinstance(dates_raw, list):
            raise PolicyError(f"{where}: closed.dates: must be a list of dates, "
                              f"not {_type_name(dates_raw)}")
        dates = sorted({_parse_date(d, where, "closed.dates") for d in dates_raw})
        days = _str_list(raw["weekdays"], where, "closed.weekdays") if "weekdays" in raw else []
        for d in days:
            if d not in WEEKDAYS:
                raise PolicyError(f"{where}: closed.weekdays: {d!r} is not one of "
                                  f"{', '.join(WEEKDAYS)}")
        weekdays = sorted({WEEKDAYS.index(d) for d in days})
        if not dates and not weekdays:
            raise PolicyError(f"{where}: closed: give dates or weekdays (or both)")
        norm: dict[str, Any] = {}
        if dates:
            norm["dates"] = [d.isoformat() for d in dates]
        if weekdays:
            norm["weekdays"] = [WEEKDAYS[w] for w in weekdays]
        norm["suppliers"] = refs
        return _Closed(frozenset(dates), frozenset(weekdays), members), norm


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any, where: str, fld: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{where}: {fld}: must be a number, not {_type_name(value)}")
    if not math.isfinite(value):
        raise PolicyError(f"{where}: {fld}: must be a finite number")
    return float(value)


def _str_list(value: Any, where: str, fld: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise PolicyError(f"{where}: {fld}: must be a list of non-empty strings")
    if not value:
        raise PolicyError(f"{where}: {fld}: must not be empty (leave the key out to match "
                          "everything)")
    return list(dict.fromkeys(value))


def _parse_yuan(value: Any, where: str, fld: str) -> int:
    """A CNY amount written as a decimal string ("30.00"), in fen.

    Numbers are refused: a bare 30 would be ambiguous between yuan and fen.
    """
    if not isinstance(value, str) or not _YUAN.fullmatch(value.strip()):
        raise PolicyError(f"{where}: {fld}: {value!r} must be an amount in yuan written as a "
                          f'decimal string with at most 2 decimals, e.g. "30.00"')
    return int(Decimal(value.strip()) * 100)


def _parse_date(value: Any, where: str, fld: str) -> datetime.date:
    try:
        return parse_date(value)
    except ValueError as exc:
        raise PolicyError(f"{where}: {fld}: {exc}") from None
