"""The routing policy file: reading and validating it into what the rota engine ranks with.

Operators write the policy as TOML (docs/policy.example.toml documents every key;
PyYAML is not a dependency of the hub). `read_policy` takes the text, `parse_policy`
the parsed tables or a stored `PolicyContent.to_dict()`, which has the same shape.
Validation is strict and all or nothing: an unknown key (with a did-you-mean hint),
an unknown group, service kind or weekday, a bad date, amount or number is a
PolicyError naming the rule (rule[N] counts from 1, in file order) and the field.

The forms shared with the other rule files (dates, unknown keys, `[groups]`, arrays
of tables) are schemas.rulefile's; what the values mean for one request is
broker.policy's.
"""

from __future__ import annotations

import copy
import datetime
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from schemas.iso18626_codes import ServiceType
from schemas.money import Money
from schemas.rulefile import (
    NO_GROUPS,
    SERVICE_KINDS,
    Member,
    RuleFileError,
    SymbolGroups,
    check_date_range,
    check_keys,
    content_label,
    is_int,
    named_tables,
    optional_text,
    parse_choices,
    parse_date,
    parse_field,
    parse_str_list,
    parse_toml,
    tables,
    type_name,
)

SERVICE_TYPES: tuple[str, ...] = tuple(t.value for t in ServiceType)
# Same values as broker.holdings.ID_TYPES (a test keeps them equal); not imported
# so that the policy engine does not pull in the database driver.
ID_TYPES: tuple[str, ...] = ("issn", "isbn", "doi_prefix", "title_key")
WEEKDAYS: tuple[str, ...] = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

TIER_CITY, TIER_PROVINCE, TIER_NATIONAL, TIER_LAST = 1, 2, 3, 4
TIER_NAMES: dict[int, str] = {
    TIER_CITY: "same city", TIER_PROVINCE: "same province",
    TIER_NATIONAL: "national", TIER_LAST: "partners / last resort",
}
DEFAULT_PREFER_BONUS = 0.3

# Yuan with at most two decimals: fen are the smallest unit the ledger knows.
_YUAN = re.compile(r"[0-9]+(?:\.[0-9]{1,2})?")
_MAX_BONUS = 10.0

_TOP_KEYS = ("version", "description", "groups", "scoring", "rule", "delivery")
_DELIVERY_KEYS = ("supplier", "service_kind", "downloads", "days")
_RULE_KEYS = ("name", "note", "when", "include", "exclude", "prefer", "prefer_bonus",
              "prefer_tier", "last_resort", "daily_cap", "closed", "max_candidates", "quota",
              "copyright", "min_borrower_trust", "recall_after_days")
_ACTION_KEYS = ("include", "exclude", "prefer", "last_resort", "daily_cap", "closed",
                "max_candidates", "quota", "copyright", "min_borrower_trust",
                "recall_after_days")
_TRUST_KEYS = ("score", "suppliers")
_QUOTA_KEYS = ("per", "period", "limit")
_COPYRIGHT_KEYS = ("action", "limit", "recent_years", "supplier", "basis", "undeclared")
_WHEN_KEYS = ("service_kind", "service_type", "id_type", "requester", "requester_province",
              "max_cost_at_least", "max_cost_below", "date_from", "date_to")
_CLOSED_KEYS = ("dates", "weekdays", "suppliers")
# `when` fields whose values come from a closed list.
_WHEN_CHOICES: dict[str, tuple[str, ...]] = {
    "service_kind": SERVICE_KINDS, "service_type": SERVICE_TYPES, "id_type": ID_TYPES}


class PolicyError(ValueError):
    """A policy that cannot be used; the message names the rule and the field."""


# --------------------------------------------------------------------------
# What a policy says
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
    # Issue 18: a supplier whose listed holdings often turn out not held sinks (its
    # holdings accuracy, 0..1, costs holdings_weight * (1 - accuracy)); a catalogue that
    # says the item is on the shelf lifts it by availability_bonus.
    holdings_weight: float = 0.5
    availability_bonus: float = 0.3

    def to_dict(self) -> dict[str, Any]:
        return {
            "prior_fill_rate": self.prior_fill_rate,
            "turnaround_half_hours": self.turnaround_half_hours,
            "load_half": self.load_half,
            "cost_half": yuan(self.cost_half_minor),
            "fill_weight": self.fill_weight,
            "speed_weight": self.speed_weight,
            "load_weight": self.load_weight,
            "cost_weight": self.cost_weight,
            "holdings_weight": self.holdings_weight,
            "availability_bonus": self.availability_bonus,
        }


@dataclass(frozen=True)
class When:
    """A rule's conditions; broker.policy decides whether a request meets them."""

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


@dataclass(frozen=True)
class Closed:
    dates: frozenset[datetime.date]
    weekdays: frozenset[int]
    suppliers: tuple[Member, ...]


@dataclass(frozen=True)
class Rule:
    index: int
    name: str
    when: When
    include: tuple[Member, ...] = ()
    exclude: tuple[Member, ...] = ()
    prefer: tuple[Member, ...] = ()
    prefer_bonus: float = DEFAULT_PREFER_BONUS
    prefer_tier: int | None = None
    last_resort: tuple[Member, ...] = ()
    daily_cap: tuple[tuple[Member, int], ...] = ()
    closed: Closed | None = None
    max_candidates: int | None = None
    quota: Quota | None = None
    copyright: CopyrightLimit | None = None
    min_borrower_trust: BorrowerTrust | None = None
    # Days after its due date that an overdue loan is recalled (settings.loans otherwise).
    recall_after_days: int | None = None
    normalised: Mapping[str, Any] = field(default_factory=dict)


class QuotaScope(StrEnum):
    LIBRARY = "library"     # the requesting library's requests
    READER = "reader"       # one reader's (patronId, or name) requests at that library


class QuotaPeriod(StrEnum):
    MONTH = "month"         # consortium-local calendar month
    YEAR = "year"           # consortium-local calendar year


@dataclass(frozen=True)
class Quota:
    """`quota = { per = "reader", period = "year", limit = 10 }`: at most `limit` requests
    of the kinds the rule's `when` selects, per library or reader, per period."""

    per: QuotaScope
    period: QuotaPeriod
    limit: int

    def describe(self) -> str:
        return f"{self.limit} per {self.per.value} per {self.period.value}"


class CopyrightAction(StrEnum):
    """What the hub does with a copy past the copyright limit (broker/copyright.py)."""

    ROUTE = "route"     # the licensed pay-per-view supplier first, the others after it
    HOLD = "hold"       # RetryPossible to the requester, flagged for an operator
    FLAG = "flag"       # forwarded as usual, flagged


@dataclass(frozen=True)
class CopyrightLimit:
    """`copyright = { action = "route", supplier = "VENDOR:PPV", limit = 5, recent_years = 5,
    basis = "CONTU", undeclared = "flag" }`: copies of one journal's recent issues per
    requesting library per calendar year, for the requests the rule's `when` selects.
    `limit` and `recent_years` left out: settings.copyright's; `undeclared`: what a copy
    request without an accepted declaration gets ("flag", or "refuse" it)."""

    action: CopyrightAction
    limit: int | None = None
    recent_years: int | None = None
    supplier: str | None = None
    basis: str | None = None
    refuse_undeclared: bool = False


@dataclass(frozen=True)
class BorrowerTrust:
    """`min_borrower_trust = 0.7`, or `{ score = 0.7, suppliers = [...] }`: the lenders
    named (all, without a list) lend to a borrower, for the requests the rule's `when`
    selects, only if its trust score (broker/borrower_trust.py) is at least `score`."""

    score: float
    suppliers: tuple[Member, ...] | None   # None: every lender


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


@dataclass(frozen=True)
class PolicyContent:
    """A validated policy file, as values."""

    version_label: str
    description: str
    groups: SymbolGroups
    scoring: Scoring
    rules: tuple[Rule, ...]
    delivery: tuple[DeliveryLimit, ...] = ()

    @classmethod
    def default(cls) -> PolicyContent:
        return cls(version_label="default", description="", groups=NO_GROUPS,
                   scoring=Scoring(), rules=())

    def to_dict(self) -> dict[str, Any]:
        """The normalised file: JSON, and `parse_policy` reads it back to the same policy."""
        out: dict[str, Any] = {"version": self.version_label}
        if self.description:
            out["description"] = self.description
        out.update(_ranking_dict(self.groups, self.scoring, self.rules))
        if self.delivery:
            out["delivery"] = [dict(d.normalised) for d in self.delivery]
        # A deep copy: callers may edit what they get without touching this policy.
        return copy.deepcopy(out)


def _ranking_dict(groups: SymbolGroups, scoring: Scoring,
                  rules: tuple[Rule, ...]) -> dict[str, Any]:
    """What decides a rota; an unlabelled file's version label is its hash."""
    return {
        "groups": groups.to_dict(),
        "scoring": scoring.to_dict(),
        "rule": [dict(r.normalised) for r in rules],
    }


def yuan(minor: int | None) -> str:
    return "none" if minor is None else Money(minor).amount_text()


# --------------------------------------------------------------------------
# Reading and validating
# --------------------------------------------------------------------------

def read_policy(text: str) -> PolicyContent:
    """A policy file's TOML text, validated; PolicyError names the rule and the field."""
    try:
        data = parse_toml(text)
    except RuleFileError as exc:
        raise PolicyError(f"policy: {exc}") from exc
    return parse_policy(data)


def parse_policy(data: Mapping[str, Any]) -> PolicyContent:
    """The parsed TOML, or a stored `to_dict()`: both have the same shape."""
    try:
        return _Parser(data).parse()
    except RuleFileError as exc:
        raise PolicyError(str(exc)) from exc


class _Parser:
    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.groups = NO_GROUPS

    def parse(self) -> PolicyContent:
        data = self.data
        if not isinstance(data, Mapping):
            raise PolicyError(f"policy: must be a table, not {type_name(data)}")
        check_keys(data, _TOP_KEYS, "policy")
        version = data.get("version")
        if version is not None and (not isinstance(version, str) or not version.strip()
                                    or len(version) > 100):
            raise PolicyError("policy: version: must be a non-empty string of at most 100 "
                              "characters")
        description = optional_text(data, "description", "policy") or ""
        self.groups = SymbolGroups.parse(data.get("groups", {}))
        scoring = self._parse_scoring(data.get("scoring", {}))
        rules = tuple(named_tables(data, "rule", self._parse_rule, "policy"))
        if version is None:
            # A stable label for an unlabelled file: the same content, the same label.
            version = content_label(_ranking_dict(self.groups, scoring, rules))
        delivery = tuple(self._parse_delivery(i, entry)
                         for i, entry in tables(data, "delivery", "policy"))
        return PolicyContent(version_label=version.strip(), description=description,
                             groups=self.groups, scoring=scoring, rules=rules,
                             delivery=delivery)

    def _parse_delivery(self, i: int, entry: Mapping[str, Any]) -> DeliveryLimit:
        where = f"delivery[{i}]"
        check_keys(entry, _DELIVERY_KEYS, where)
        suppliers = None
        if "supplier" in entry:
            _, members = self.groups.expand(entry["supplier"], where, "supplier")
            suppliers = frozenset(m.symbol for m in members)
        kinds = None
        if "service_kind" in entry:
            kinds = frozenset(parse_field(where, "service_kind", parse_choices,
                                          entry["service_kind"], SERVICE_KINDS))
        downloads, days = entry.get("downloads", 5), entry.get("days", 30)
        if not is_int(downloads) or not 0 <= downloads <= 1000:
            raise PolicyError(f"{where}: downloads: must be an integer 0..1000 "
                              "(0 = unlimited)")
        if not is_int(days) or not 1 <= days <= 366:
            raise PolicyError(f"{where}: days: must be an integer 1..366")
        return DeliveryLimit(suppliers=suppliers, kinds=kinds, downloads=downloads or None,
                             days=days, normalised=dict(entry))

    # ---- scoring ---------------------------------------------------------

    def _parse_scoring(self, raw: Any) -> Scoring:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"scoring: must be a table, not {type_name(raw)}")
        allowed = tuple(Scoring().to_dict())
        check_keys(raw, allowed, "scoring")
        values: dict[str, Any] = {}
        for key, value in raw.items():
            if key == "cost_half":
                minor = parse_field("scoring", key, _parse_yuan, value)
                if minor <= 0:
                    raise PolicyError("scoring: cost_half: must be above 0.00")
                values["cost_half_minor"] = minor
                continue
            number = parse_field("scoring", key, _number, value)
            if key == "prior_fill_rate" and not 0.0 <= number <= 1.0:
                raise PolicyError(f"scoring: {key}: {number} is not between 0 and 1")
            if key in ("turnaround_half_hours", "load_half") and number <= 0:
                raise PolicyError(f"scoring: {key}: must be above 0, not {number}")
            if (key.endswith("_weight") or key == "availability_bonus") \
                    and not 0.0 <= number <= _MAX_BONUS:
                raise PolicyError(f"scoring: {key}: {number} is not between 0 and {_MAX_BONUS:g}")
            values[key] = number
        return Scoring(**values)

    # ---- rules -----------------------------------------------------------

    def _parse_rule(self, i: int, raw: Mapping[str, Any]) -> Rule:
        name = raw.get("name")
        if name is None:
            raise PolicyError(f"rule[{i}]: name: is required")
        if not isinstance(name, str) or not name.strip():
            raise PolicyError(f"rule[{i}]: name: must be a non-empty string")
        where = f"rule[{i}] '{name}'"
        check_keys(raw, _RULE_KEYS, where)
        if not any(k in raw for k in _ACTION_KEYS):
            raise PolicyError(f"{where}: has no action; give at least one of "
                              f"{', '.join(_ACTION_KEYS)}")
        norm: dict[str, Any] = {"name": name}
        note = optional_text(raw, "note", where)
        if note is not None:
            norm["note"] = note
        when, norm_when = self._parse_when(raw.get("when", {}), where)
        if norm_when:
            norm["when"] = norm_when
        kw: dict[str, Any] = {}
        for key in ("include", "exclude", "prefer", "last_resort"):
            if key in raw:
                refs, kw[key] = self.groups.expand(raw[key], where, key)
                norm[key] = refs
        kw.update(self._parse_prefer(raw, where, norm))
        if "daily_cap" in raw:
            kw["daily_cap"], norm["daily_cap"] = self._parse_caps(raw["daily_cap"], where)
        if "closed" in raw:
            kw["closed"], norm["closed"] = self._parse_closed(raw["closed"], where)
        if "max_candidates" in raw:
            n = raw["max_candidates"]
            if not is_int(n) or n < 1:
                raise PolicyError(f"{where}: max_candidates: must be an integer of at least 1, "
                                  f"not {n!r}")
            kw["max_candidates"] = norm["max_candidates"] = n
        if "quota" in raw:
            kw["quota"], norm["quota"] = self._parse_quota(raw["quota"], where)
        if "copyright" in raw:
            kw["copyright"], norm["copyright"] = self._parse_copyright(raw["copyright"], where)
        if "recall_after_days" in raw:
            n = raw["recall_after_days"]
            if not is_int(n) or not 0 <= n <= 365:
                raise PolicyError(f"{where}: recall_after_days: a whole number of days from 0 "
                                  f"to 365, not {n!r}")
            kw["recall_after_days"] = norm["recall_after_days"] = n
        if "min_borrower_trust" in raw:
            kw["min_borrower_trust"], norm["min_borrower_trust"] = self._parse_trust(
                raw["min_borrower_trust"], where)
        return Rule(index=i, name=name, when=when, normalised=norm, **kw)

    def _parse_trust(self, raw: Any, where: str) -> tuple[BorrowerTrust, Any]:
        fld = "min_borrower_trust"
        if isinstance(raw, Mapping):
            check_keys(raw, _TRUST_KEYS, where, f"{fld}.")
            if "score" not in raw:
                raise PolicyError(f"{where}: {fld}.score: is required")
            score_raw, fld_score = raw["score"], f"{fld}.score"
        else:
            score_raw, fld_score = raw, fld
        if isinstance(score_raw, bool) or not isinstance(score_raw, int | float) \
                or not 0.0 <= score_raw <= 1.0:
            raise PolicyError(f"{where}: {fld_score}: must be a trust score between 0 and 1, "
                              f"not {score_raw!r}")
        score = float(score_raw)
        if not isinstance(raw, Mapping) or "suppliers" not in raw:
            return BorrowerTrust(score, None), (score if not isinstance(raw, Mapping)
                                                else {"score": score})
        refs, members = self.groups.expand(raw["suppliers"], where, f"{fld}.suppliers")
        if not members:
            raise PolicyError(f"{where}: {fld}.suppliers: names no supplier")
        return BorrowerTrust(score, members), {"score": score, "suppliers": refs}

    def _parse_quota(self, raw: Any, where: str) -> tuple[Quota, dict[str, Any]]:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: quota: must be a table {{ per = \"reader\" or "
                              f"\"library\", period = \"month\" or \"year\", limit = N }}")
        check_keys(raw, _QUOTA_KEYS, where, "quota.")
        for key in _QUOTA_KEYS:
            if key not in raw:
                raise PolicyError(f"{where}: quota.{key}: is required")
        choices = {"per": [q.value for q in QuotaScope], "period": [q.value for q in QuotaPeriod]}
        for key, allowed in choices.items():
            if raw[key] not in allowed:
                raise PolicyError(f"{where}: quota.{key}: {raw[key]!r} is not one of "
                                  f"{', '.join(allowed)}")
        limit = raw["limit"]
        if not is_int(limit) or limit < 0:
            raise PolicyError(f"{where}: quota.limit: must be a whole number of requests "
                              f"(0 or more), not {limit!r}")
        quota = Quota(QuotaScope(raw["per"]), QuotaPeriod(raw["period"]), limit)
        return quota, {"per": quota.per.value, "period": quota.period.value, "limit": limit}

    def _parse_copyright(self, raw: Any, where: str) -> tuple[CopyrightLimit, dict[str, Any]]:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: copyright: must be a table {{ action = \"route\", "
                              f"\"hold\" or \"flag\", limit = N, ... }}")
        check_keys(raw, _COPYRIGHT_KEYS, where, "copyright.")
        actions = [a.value for a in CopyrightAction]
        if raw.get("action") not in actions:
            raise PolicyError(f"{where}: copyright.action: {raw.get('action')!r} is not one of "
                              f"{', '.join(actions)}")
        action = CopyrightAction(raw["action"])
        norm: dict[str, Any] = {"action": action.value}
        kw: dict[str, Any] = {}
        for key, low in (("limit", 0), ("recent_years", 1)):
            if key in raw:
                n = raw[key]
                if not is_int(n) or n < low:
                    raise PolicyError(f"{where}: copyright.{key}: must be a whole number of "
                                      f"at least {low}, not {n!r}")
                kw[key] = norm[key] = n
        if action is CopyrightAction.ROUTE:
            if "supplier" not in raw:
                raise PolicyError(f"{where}: copyright.supplier: is required for action "
                                  "\"route\" (the licensed pay-per-view supplier)")
            _, members = self.groups.expand([raw["supplier"]], where, "copyright.supplier")
            if len(members) != 1:
                raise PolicyError(f"{where}: copyright.supplier: must name one supplier")
            kw["supplier"] = members[0].symbol
            norm["supplier"] = raw["supplier"]
        elif "supplier" in raw:
            raise PolicyError(f"{where}: copyright.supplier: only action \"route\" routes to "
                              "a supplier")
        basis = optional_text(raw, "basis", f"{where}: copyright")
        if basis is not None:
            kw["basis"] = norm["basis"] = basis
        undeclared = raw.get("undeclared", "flag")
        if undeclared not in ("flag", "refuse"):
            raise PolicyError(f"{where}: copyright.undeclared: {undeclared!r} is not one of "
                              "flag, refuse")
        if "undeclared" in raw:
            norm["undeclared"] = undeclared
        return CopyrightLimit(action=action, refuse_undeclared=undeclared == "refuse",
                              **kw), norm

    def _parse_prefer(self, raw: Mapping[str, Any], where: str,
                      norm: dict[str, Any]) -> dict[str, Any]:
        """prefer_bonus and prefer_tier, which qualify a prefer list (also into `norm`)."""
        for key in ("prefer_bonus", "prefer_tier"):
            if key in raw and "prefer" not in raw:
                raise PolicyError(f"{where}: {key}: needs a prefer list to apply to")
        if "prefer" not in raw:
            return {}
        kw: dict[str, Any] = {}
        bonus = parse_field(where, "prefer_bonus", _number,
                            raw.get("prefer_bonus", DEFAULT_PREFER_BONUS))
        if abs(bonus) > _MAX_BONUS:
            raise PolicyError(f"{where}: prefer_bonus: {bonus} is not between "
                              f"-{_MAX_BONUS:g} and {_MAX_BONUS:g}")
        kw["prefer_bonus"] = norm["prefer_bonus"] = bonus
        if "prefer_tier" in raw:
            tier = raw["prefer_tier"]
            if not is_int(tier) or tier not in TIER_NAMES:
                raise PolicyError(f"{where}: prefer_tier: {tier!r} is not one of 1, 2, 3, 4")
            kw["prefer_tier"] = norm["prefer_tier"] = tier
        return kw

    def _parse_when(self, raw: Any, where: str) -> tuple[When, dict[str, Any]]:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: when: must be a table, not {type_name(raw)}")
        check_keys(raw, _WHEN_KEYS, where, "when.")
        kw: dict[str, Any] = {}
        norm: dict[str, Any] = {}
        for key, allowed in _WHEN_CHOICES.items():
            if key in raw:
                values = parse_field(where, f"when.{key}", parse_choices, raw[key], allowed)
                kw[key], norm[key] = tuple(values), values
        if "requester" in raw:
            refs, members = self.groups.expand_required(raw["requester"], where,
                                                        "when.requester")
            kw["requester"] = frozenset(m.symbol for m in members)
            kw["requester_given"] = True
            norm["requester"] = refs
        if "requester_province" in raw:
            provinces = parse_field(where, "when.requester_province", parse_str_list,
                                    raw["requester_province"])
            kw["requester_province"], norm["requester_province"] = tuple(provinces), provinces
        for key in ("max_cost_at_least", "max_cost_below"):
            if key in raw:
                kw[key] = parse_field(where, f"when.{key}", _parse_yuan, raw[key])
                norm[key] = yuan(kw[key])
        low, high = kw.get("max_cost_at_least"), kw.get("max_cost_below")
        if low is not None and high is not None and low >= high:
            raise PolicyError(f"{where}: when.max_cost_below: {yuan(high)} must be above "
                              f"max_cost_at_least {yuan(low)}, or the rule never applies")
        for key in ("date_from", "date_to"):
            if key in raw:
                kw[key] = parse_field(where, f"when.{key}", parse_date, raw[key])
                norm[key] = kw[key].isoformat()
        check_date_range(kw.get("date_from"), kw.get("date_to"), where, prefix="when.")
        return When(**kw), norm

    def _parse_caps(self, raw: Any, where: str
                    ) -> tuple[tuple[tuple[Member, int], ...], dict[str, int]]:
        if not isinstance(raw, Mapping) or not raw:
            raise PolicyError(f"{where}: daily_cap: must be a non-empty table "
                              f'{{ "SYMBOL or group:NAME" = N }}')
        caps: dict[str, tuple[Member, int]] = {}
        norm: dict[str, int] = {}
        for ref, n in raw.items():
            fld = f"daily_cap.{ref}"
            self.groups.ref(ref, where, fld)
            if not is_int(n) or n < 0:
                raise PolicyError(f"{where}: {fld}: {n!r} is not a whole number of requests "
                                  "(0 or more)")
            norm[ref] = n
            _, members = self.groups.expand([ref], where, fld)
            for m in members:
                # The tightest cap wins if a supplier is capped both alone and via a group.
                if m.symbol not in caps or n < caps[m.symbol][1]:
                    caps[m.symbol] = (m, n)
        return tuple(caps.values()), norm

    def _parse_closed(self, raw: Any, where: str) -> tuple[Closed, dict[str, Any]]:
        if not isinstance(raw, Mapping):
            raise PolicyError(f"{where}: closed: must be a table "
                              "{ dates = [...], weekdays = [...], suppliers = [...] }")
        check_keys(raw, _CLOSED_KEYS, where, "closed.")
        if "suppliers" not in raw:
            raise PolicyError(f"{where}: closed.suppliers: is required (who is closed)")
        refs, members = self.groups.expand(raw["suppliers"], where, "closed.suppliers")
        if not members:
            raise PolicyError(f"{where}: closed.suppliers: names no supplier")
        dates_raw = raw.get("dates", [])
        if not isinstance(dates_raw, list):
            raise PolicyError(f"{where}: closed.dates: must be a list of dates, "
                              f"not {type_name(dates_raw)}")
        dates = sorted({parse_field(where, "closed.dates", parse_date, d) for d in dates_raw})
        days = (parse_field(where, "closed.weekdays", parse_choices, raw["weekdays"], WEEKDAYS)
                if "weekdays" in raw else [])
        weekdays = sorted({WEEKDAYS.index(d) for d in days})
        if not dates and not weekdays:
            raise PolicyError(f"{where}: closed: give dates or weekdays (or both)")
        norm: dict[str, Any] = {}
        if dates:
            norm["dates"] = [d.isoformat() for d in dates]
        if weekdays:
            norm["weekdays"] = [WEEKDAYS[w] for w in weekdays]
        norm["suppliers"] = refs
        return Closed(frozenset(dates), frozenset(weekdays), members), norm


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number, not {type_name(value)}")
    if not math.isfinite(value):
        raise ValueError("must be a finite number")
    return float(value)


def _parse_yuan(value: Any) -> int:
    """A CNY amount written as a decimal string ("30.00"), in fen.

    Numbers are refused: a bare 30 would be ambiguous between yuan and fen.
    """
    if not isinstance(value, str) or not _YUAN.fullmatch(value.strip()):
        raise ValueError(f"{value!r} must be an amount in yuan written as a decimal string "
                         'with at most 2 decimals, e.g. "30.00"')
    return int(Decimal(value.strip()) * 100)
