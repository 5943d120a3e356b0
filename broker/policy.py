"""Routing policy: the rota of candidate suppliers for one ILL request (ARCHITECTURE §3.4.3).

Pure: dispatch gathers the facts (the request, and for each possible supplier its
location, holdings match, quote, scorecard and load) and asks `Policy.rota` for the
ranked candidates, each with the reasons for its rank, and for the suppliers left
out, each with why. No I/O, so every rota can be reproduced and explained from the
stored policy version and the facts.

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

The policy file format is documented in docs/policy.example.toml; reading and
validating it is broker.policy_file's (`Policy.from_toml` and `from_dict` use it).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from broker.policy_file import (
    ID_TYPES,
    SERVICE_TYPES,
    TIER_CITY,
    TIER_LAST,
    TIER_NAMES,
    TIER_NATIONAL,
    TIER_PROVINCE,
    WEEKDAYS,
    BorrowerTrust,
    CopyrightAction,
    CopyrightLimit,
    PolicyContent,
    PolicyError,
    Quota,
    QuotaPeriod,
    QuotaScope,
    Rule,
    Scoring,
    When,
    parse_policy,
    read_policy,
    yuan,
)
from schemas.rulefile import SERVICE_KINDS

__all__ = [
    "ID_TYPES",
    "SERVICE_KINDS",
    "SERVICE_TYPES",
    "TIER_CITY",
    "TIER_LAST",
    "TIER_NAMES",
    "TIER_NATIONAL",
    "TIER_PROVINCE",
    "WEEKDAYS",
    "Availability",
    "BorrowerTrust",
    "CopyrightAction",
    "CopyrightLimit",
    "Excluded",
    "Policy",
    "PolicyError",
    "Quota",
    "QuotaPeriod",
    "QuotaScope",
    "Ranked",
    "RequestFacts",
    "Rota",
    "Scoring",
    "SupplierFacts",
    "distance",
]

# Amounts in reasons: a few distinct fees and limits, formatted for every candidate of
# every request (the routing lab ranks 500,000 requests; this was a fifth of its time).
_yuan = functools.lru_cache(maxsize=4096)(yuan)

_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


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
    # A supplier dispatch puts first whatever its rank, and why (issue 19: the licensed
    # pay-per-view supplier for a copy past the copyright limit, broker/copyright.py).
    first: tuple[str, str] | None = None
    # The borrower's trust score 0..1 (broker/borrower_trust.py); None: not known, and no
    # `min_borrower_trust` rule excludes anyone for it.
    borrower_trust: float | None = None

    @property
    def weekday(self) -> str:
        """"Mon" .. "Sun", as `closed.weekdays` spells them."""
        return WEEKDAYS[self.today.weekday()]


@dataclass(frozen=True)
class Availability:
    """What the supplier's own catalogue said of the item just before routing (issue 18):
    True on the shelf, False checked and not available, None no answer (slow, down,
    circuit open, no record); `reason` says which, for explain."""

    available: bool | None
    reason: str


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
    # What the hub has learned of its holdings (issue 18): why its holding of this item
    # is doubted (it answered NotHeld for it since its holdings were last loaded), and
    # the share of the listed items it was asked for that it did hold (None: no history).
    doubted: str | None = None
    holdings_accuracy: float | None = None
    availability: Availability | None = None


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
# The policy and its rota
# --------------------------------------------------------------------------

class Policy:
    """A validated routing policy. Build with `from_toml`, `from_dict` or `default`."""

    version_label: str

    def __init__(self, content: PolicyContent) -> None:
        self.content = content
        self.version_label = content.version_label
        self.description = content.description
        self.scoring = content.scoring
        self._rules = content.rules

    def delivery_limits(self, supplier: str, service_kind: str) -> tuple[int | None, int] | None:
        """(downloads, days) of the first `[[delivery]]` entry that matches, else None."""
        for entry in self.content.delivery:
            if entry.matches(supplier, service_kind):
                return entry.downloads, entry.days
        return None

    # ---- construction --------------------------------------------------

    @classmethod
    def from_toml(cls, text: str) -> Policy:
        return cls(read_policy(text))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        """The parsed TOML, or a stored `to_dict()`: both have the same shape."""
        return cls(parse_policy(data))

    @classmethod
    def default(cls) -> Policy:
        return cls(PolicyContent.default())

    # ---- queries --------------------------------------------------------

    @property
    def rule_names(self) -> tuple[str, ...]:
        return tuple(r.name for r in self._rules)

    def groups_of(self, symbol: str) -> frozenset[str]:
        return self.content.groups.groups_of(symbol)

    def all_extra_suppliers(self) -> frozenset[str]:
        """Every symbol some rule may add: a superset of any request's extra_suppliers."""
        return frozenset({*(m.symbol for r in self._rules
                            for m in (*r.include, *r.last_resort)),
                          *(r.copyright.supplier for r in self._rules
                            if r.copyright is not None and r.copyright.supplier)})

    def extra_suppliers(self, request: RequestFacts) -> frozenset[str]:
        """Symbols this request may be routed to without a holdings match.

        Dispatch passes facts for the holders it found plus these; a symbol the
        rota needs but gets no facts for is excluded, never routed to blind.
        """
        out = {m.symbol for r in self._rules if _applies(r.when, request)
               for m in (*r.include, *r.last_resort)}
        if request.named_supplier:
            out.add(request.named_supplier)
        if request.first:
            out.add(request.first[0])
        out.discard(request.requester)
        return frozenset(out)

    def quotas(self, request: RequestFacts) -> tuple[tuple[str, Quota], ...]:
        """The quotas of the rules this request meets, as (rule name, quota), in file order:
        dispatch counts what each allows and refuses the request past the first one full."""
        return tuple((r.name, r.quota) for r in self._rules
                     if r.quota is not None and _applies(r.when, request))

    def copyright_limits(self, request: RequestFacts) -> tuple[tuple[str, CopyrightLimit], ...]:
        """The copyright limits of the rules this request meets, as (rule name, limit), in
        file order: dispatch applies the first (broker/copyright.py)."""
        return tuple((r.name, r.copyright) for r in self._rules
                     if r.copyright is not None and _applies(r.when, request))

    def recall_after_days(self, request: RequestFacts) -> tuple[int, str] | None:
        """Days after the due date an overdue loan of this request is recalled, and the
        rule that says so (the first matching rule that sets it); None: the setting."""
        return next(((r.recall_after_days, r.name) for r in self._rules
                     if r.recall_after_days is not None and _applies(r.when, request)), None)

    def to_dict(self) -> dict[str, Any]:
        return self.content.to_dict()

    # ---- the rota -------------------------------------------------------

    def rota(self, request: RequestFacts, suppliers: list[SupplierFacts]) -> Rota:
        facts: dict[str, SupplierFacts] = {}
        for s in suppliers:
            if s.symbol in facts:
                raise ValueError(f"supplier facts for {s.symbol} given twice")
            facts[s.symbol] = s
        matched = [r for r in self._rules if _applies(r.when, request)]
        acts = _Actions.collect(matched, request)
        named = request.named_supplier
        first = request.first[0] if request.first else None

        considered = list(dict.fromkeys(
            [*facts, *acts.included, *acts.last_resort, *([named] if named else []),
             *([first] if first else [])]))
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
        if first in cands:
            main.sort(key=lambda c: c.symbol != first)  # before even the named one
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
        first = request.first[0] if request.first else None
        if not (f.holds or sym in acts.included or sym == request.named_supplier
                or sym in acts.last_resort or sym == first):
            ids = ", ".join(sorted(request.id_types)) or "none"
            return f"holds nothing matching (request identifiers: {ids})"
        why = list(acts.excluded.get(sym, ()))
        why += acts.closed.get(sym, [])
        trust = request.borrower_trust
        if trust is not None:
            for score, rule in (*acts.min_trust.get(sym, ()), *acts.min_trust_all):
                if trust < score:
                    why.append(f"borrower trust {trust:.2f} below {score:.2f} required by "
                               f"rule '{rule}'")
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
        named = f.symbol == request.named_supplier
        included = acts.included.get(f.symbol)
        first = request.first if request.first and request.first[0] == f.symbol else None
        main = bool(f.holds or included or named or first)

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
        doubt = _doubt(f, named or first is not None)
        if first is not None:
            tier = TIER_CITY
            tier_reasons = [first[1], f"by location {tier_reasons[-1]}",
                            "tier 1: put first by dispatch"]
        elif doubt is not None:
            # Learned or checked: ask the others first, this one still before nobody.
            tier = TIER_LAST
            tier_reasons = [f"by location {tier_reasons[-1]}",
                            f"tier 4: {doubt}, so the others are asked first"]

        bonus = 0.0
        rule_reasons: list[str] = []
        for rule, b, via in acts.bonus.get(f.symbol, ()):
            bonus += b
            what = "preferred partner" if b >= 0 else "penalised"
            rule_reasons.append(f"rule '{rule}': {what}{via} ({b:+.2f})")

        score, card = _score(self.scoring, f, request, bonus)
        return _Candidate(
            symbol=f.symbol, main=main, tier=tier, score=score, match=match,
            tier_reasons=tuple(tier_reasons), rule_reasons=tuple(rule_reasons),
            card=card,
        )


def _doubt(f: SupplierFacts, named: bool) -> str | None:
    """Why this supplier's holding of the item is in doubt (then it goes last), or None.
    A supplier the requester named keeps its place: the requester knows something."""
    if named:
        return None
    if f.availability is not None and f.availability.available is False:
        return f.availability.reason
    return f.doubted if f.holds else None


def _score(sc: Scoring, f: SupplierFacts, request: RequestFacts,
           bonus: float) -> tuple[float, tuple[str, ...]]:
    """The score of one candidate, and its card: each term's reason, then the sum."""
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
    learned, learned_reasons = _learned(sc, f)
    raw = parts[0] + parts[1] - parts[2] - parts[3] + bonus + learned
    # Rounded so that float noise never decides a tie the symbol should break.
    score = round(raw, 6)
    breakdown = (f"score {score:.3f} = fill {parts[0]:.3f} + speed {parts[1]:.3f}"
                 f" - load {parts[2]:.3f} - cost {parts[3]:.3f}")
    if learned:
        breakdown += f" {'+' if learned >= 0 else '-'} holdings {abs(learned):.3f}"
    if bonus:
        breakdown += f" {'+' if bonus >= 0 else '-'} rules {abs(bonus):.3f}"
    return score, (fill_reason, speed_reason, load_reason, cost_reason, *learned_reasons,
                   breakdown)


def _learned(sc: Scoring, f: SupplierFacts) -> tuple[float, tuple[str, ...]]:
    """The score's holdings term: accuracy learned from NotHeld answers, and what the
    catalogue said (an answer that is not 'available' moves the candidate instead)."""
    term, reasons = 0.0, []
    if f.holdings_accuracy is not None:
        accuracy = min(max(f.holdings_accuracy, 0.0), 1.0)
        term -= sc.holdings_weight * (1.0 - accuracy)
        reasons.append(f"holdings accuracy {accuracy:.2f}")
    if f.availability is not None:
        if f.availability.available:
            term += sc.availability_bonus
        reasons.append(f.availability.reason)
    return term, tuple(reasons)


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
    # min_borrower_trust: (score, rule) per lender that requires it, and for every lender
    min_trust: dict[str, list[tuple[float, str]]] = field(default_factory=dict)
    min_trust_all: list[tuple[float, str]] = field(default_factory=list)

    @classmethod
    def collect(cls, rules: Sequence[Rule], request: RequestFacts) -> _Actions:
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
            if r.min_borrower_trust is not None:
                required = r.min_borrower_trust
                if required.suppliers is None:
                    a.min_trust_all.append((required.score, r.name))
                for m in required.suppliers or ():
                    a.min_trust.setdefault(m.symbol, []).append((required.score, r.name))
            if r.max_candidates is not None and (
                    a.max_candidates is None or r.max_candidates < a.max_candidates[0]):
                a.max_candidates = (r.max_candidates, r.name)
        return a


def _location(request: RequestFacts, f: SupplierFacts) -> tuple[int, str]:
    """The location tier of `f` for this requester, and how it was decided."""
    return distance(request.province, request.city, f.province, f.city)


def distance(requester_province: str | None, requester_city: str | None,
             supplier_province: str | None, supplier_city: str | None) -> tuple[int, str]:
    """How far apart two libraries are, as a location tier (TIER_CITY, TIER_PROVINCE or
    TIER_NATIONAL) and how it was decided: the rota's tiers, and a loan's transit time
    (broker/dispatch/loans.py)."""
    same_province = requester_province is not None and requester_province == supplier_province
    # Cities with one name in two provinces exist; an unknown province is given the benefit.
    provinces_agree = same_province or requester_province is None or supplier_province is None
    if requester_city is not None and requester_city == supplier_city and provinces_agree:
        return TIER_CITY, f"same city {supplier_city}"
    if same_province:
        return TIER_PROVINCE, f"same province {supplier_province}"
    if supplier_province is None:
        return TIER_NATIONAL, "national, supplier location unknown"
    if requester_province is None:
        return TIER_NATIONAL, ("national, requester location unknown (supplier in "
                               f"{supplier_province})")
    return TIER_NATIONAL, f"national, other province {supplier_province}"


def _applies(when: When, r: RequestFacts) -> bool:
    """Whether a request meets every condition of a rule's `when`."""
    if when.service_kind and r.service_kind not in when.service_kind:
        return False
    if when.service_type and r.service_type not in when.service_type:
        return False
    if when.id_type and not r.id_types.intersection(when.id_type):
        return False
    if when.requester_given and r.requester not in when.requester:
        return False
    if when.requester_province and r.province not in when.requester_province:
        return False
    # No maximumCosts means "no limit", i.e. above every threshold.
    if (when.max_cost_at_least is not None and r.max_cost_minor is not None
            and r.max_cost_minor < when.max_cost_at_least):
        return False
    if when.max_cost_below is not None and (
            r.max_cost_minor is None or r.max_cost_minor >= when.max_cost_below):
        return False
    if when.date_from is not None and r.today < when.date_from:
        return False
    return not (when.date_to is not None and r.today > when.date_to)
