"""Copyright on copies (issue 19 item 6): the requester's declaration, the count per
library, journal and year, and what the consortium's rule does past its limit.

Every copy request (serviceType Copy or CopyOrLoan) carries a copyright category: ISO
18626's `serviceInfo.copyrightCompliance`, or, where that is free text, the hub's
extension `hubExtensions.copyright = {category, declaredBy, declaredAt, text}`. The
accepted categories are a vocabulary per country, as data (`VOCABULARIES`; settings
`copyright` may replace it). Each copy request is recorded in `copyright_copy` (0032)
with the journal (normalised ISSN, else the journal title's key) and the year of the
issue, and counted per requesting library, journal and consortium-local calendar year,
recent issues only (CONTU's "rule of five": more than five articles from the last five
years of one journal title per library per year need permission or a fee).

Which limit applies is the policy's (`copyright = {...}` on a rule, broker/policy_file.py),
else settings.copyright.default_action. Past the limit:

- route: the licensed pay-per-view supplier goes first in the rota (dispatch passes it
  as `RequestFacts.first`; broker/policy.py ranks it tier 1 with the reason), the
  usual suppliers stay after it;
- hold: the requester is answered RetryPossible with the reason and a flag asks an
  operator to look (there is no approval queue yet: the flag is the operator's cue);
- flag: forwarded as usual, flagged.

A copy request without an accepted category is flagged when a rule applies, refused
only if the rule says `undeclared = "refuse"`. Declarations are kept
settings.copyright.keep_years and deleted by `purge_declarations` (a daily job).
"""

from __future__ import annotations

import functools
import re
import tomllib
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from broker.holdings import title_key
from broker.policy import CopyrightAction, Policy, RequestFacts
from infra.database import Connection
from infra.flags import FlagKind, raise_flag
from schemas.settings import Copyright as CopyrightSettings
from schemas.settings import Settings

COPY_SERVICE_TYPES = frozenset({"Copy", "CopyOrLoan"})

# code -> (what it means, other spellings requesters use). ReShare and Rapido spell the US
# categories US_CCG / US_CCL; the ISO 18626 element is a scheme-value pair, so a value
# may come with or without the country prefix.
VOCABULARIES: Mapping[str, Mapping[str, tuple[str, tuple[str, ...]]]] = {
    "CN": {
        "CN-FAIR-USE": ("合理使用：为个人学习、研究 (著作权法第二十四条第一款第一项) "
                        "fair use for personal study or research", ("合理使用", "FAIR-USE")),
        "CN-LIBRARY": ("图书馆为陈列或保存版本的需要复制 (第二十四条第一款第八项) "
                       "a library's copy for display or preservation", ("图书馆复制",)),
        "CN-LICENSED": ("已获著作权人许可或已付费 permission of the rights holder, or fee paid",
                        ("已获许可", "LICENSED")),
    },
    "US": {
        "US-CCG": ("complies with the CONTU guidelines (the rule of five)", ("CCG",)),
        "US-CCL": ("complies with copyright law (17 U.S.C. 107, 108): permission or fee",
                   ("CCL",)),
    },
    "UK": {
        "UK-S42A": ("declaration under CDPA 1988 s.42A: non-commercial research or "
                    "private study", ("S42A", "UK-FD")),
    },
    "AU": {
        "AU-S50": ("declaration under Copyright Act 1968 s.50: copying by a library for "
                   "another library's user", ("S50",)),
        "AU-S49": ("declaration under Copyright Act 1968 s.49: research or study", ("S49",)),
    },
}

_SPACES = re.compile(r"[\s_]+")
_YEAR = re.compile(r"(?<![0-9])([0-9]{4})(?![0-9])")


class VocabularyError(ValueError):
    """settings.copyright names a country without a vocabulary, or a bad vocabulary file."""


def _norm(value: str) -> str:
    # "us_ccg", "US CCG", "ＵＳ－ＣＣＧ" and "US-CCG" are one category.
    return _SPACES.sub("-", unicodedata.normalize("NFKC", value).strip()).casefold()


@dataclass(frozen=True)
class Vocabulary:
    """The accepted categories: code -> what it means, and every spelling -> code."""

    country: str
    categories: Mapping[str, str]
    spellings: Mapping[str, str]

    @classmethod
    def of(cls, country: str, entries: Mapping[str, tuple[str, Sequence[str]]]) -> Vocabulary:
        spellings: dict[str, str] = {}
        for code, (_meaning, aliases) in entries.items():
            for spelling in (code, *aliases):
                spellings[_norm(spelling)] = code
                # "US-CCG" also as its bare value "CCG" (the scheme sent apart).
                prefix = f"{country}-".casefold()
                if _norm(spelling).startswith(prefix):
                    spellings.setdefault(_norm(spelling)[len(prefix):], code)
        return cls(country, {c: m for c, (m, _) in entries.items()}, spellings)

    def accept(self, value: str | None) -> str | None:
        """The code `value` spells, or None if it is not an accepted category."""
        return self.spellings.get(_norm(value)) if value and value.strip() else None


@functools.lru_cache(maxsize=8)
def _vocabulary(country: str, categories: tuple[str, ...], path: str | None) -> Vocabulary:
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise VocabularyError(f"copyright.vocabulary_file {path}: {exc}") from exc
        table, aliases = data.get("categories"), data.get("aliases", {})
        if (not isinstance(table, dict) or not table or not isinstance(aliases, dict)
                or not all(isinstance(v, str) for v in (*table.values(), *aliases.values()))):
            raise VocabularyError(f"copyright.vocabulary_file {path}: needs a [categories] "
                                  'table of CODE = "what it means" (and optionally [aliases] '
                                  'SPELLING = "CODE")')
        unknown = sorted(set(aliases.values()) - set(table))
        if unknown:
            raise VocabularyError(f"copyright.vocabulary_file {path}: [aliases] name unknown "
                                  f"categories {', '.join(unknown)}")
        entries = {code: (meaning, tuple(a for a, c in aliases.items() if c == code))
                   for code, meaning in table.items()}
        return Vocabulary.of(country, entries)
    known = VOCABULARIES.get(country.upper())
    if categories:
        base = known or {}
        return Vocabulary.of(country, {c: base.get(c, (c, ())) for c in categories})
    if known is None:
        raise VocabularyError(f"copyright.country {country!r}: no vocabulary for it (known: "
                              f"{', '.join(sorted(VOCABULARIES))}); give copyright.categories "
                              "or copyright.vocabulary_file")
    return Vocabulary.of(country.upper(), known)


def vocabulary(settings: CopyrightSettings) -> Vocabulary:
    """The accepted categories under these settings (read once per process and kept);
    VocabularyError if they name none. The hub calls it at start, so that a bad file
    stops it there and not at the first copy request."""
    return _vocabulary(settings.country, tuple(settings.categories), settings.vocabulary_file)


# --------------------------------------------------------------------------
# What a request says
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Declaration:
    """The requester's copyright declaration: the accepted category (None: none), what was
    sent, and by whom and when (the hub extension's; ISO 18626 has no such fields)."""

    category: str | None
    given: str | None
    declared_by: str | None = None
    declared_at: str | None = None
    text: str | None = None
    source: str | None = None       # "copyrightCompliance", "hubExtensions.copyright"

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("category", self.category), ("given", self.given),
                                  ("declaredBy", self.declared_by),
                                  ("declaredAt", self.declared_at), ("text", self.text),
                                  ("source", self.source)) if v is not None}


def _text(value: Any) -> str | None:
    # copyrightCompliance is a scheme-value pair: as JSON a string, or {"#text": ...}
    # from XML with its scheme attribute.
    if isinstance(value, dict):
        value = value.get("#text", value.get("value"))
    return value.strip() if isinstance(value, str) and value.strip() else None


def _request(request_json: Mapping[str, Any]) -> Mapping[str, Any]:
    inner = request_json.get("request", request_json)
    return inner if isinstance(inner, Mapping) else {}


def _table(parent: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = parent.get(key)
    return value if isinstance(value, Mapping) else {}


def declaration_of(request_json: Mapping[str, Any], vocab: Vocabulary) -> Declaration:
    """The declaration of a request: `copyrightCompliance` if it is an accepted category,
    else the hub extension's `category`; free text is kept as the declaration's text."""
    request = _request(request_json)
    compliance = _text(_table(request, "serviceInfo").get("copyrightCompliance"))
    ext = _table(_table(request, "hubExtensions"), "copyright")
    by, at = _text(ext.get("declaredBy")), _text(ext.get("declaredAt"))
    ext_text, ext_category = _text(ext.get("text")), _text(ext.get("category"))
    code = vocab.accept(compliance)
    if code is not None:
        return Declaration(code, compliance, by, at, ext_text, "copyrightCompliance")
    code = vocab.accept(ext_category)
    if code is not None:
        return Declaration(code, ext_category, by, at, ext_text or compliance,
                           "hubExtensions.copyright")
    given = compliance or ext_category
    return Declaration(None, given, by, at, ext_text or (compliance if ext_category else None),
                       "copyrightCompliance" if compliance else
                       "hubExtensions.copyright" if ext else None)


@dataclass(frozen=True)
class Journal:
    key: str        # "issn:0028-0836" or "title:<key>"
    label: str      # "ISSN 0028-0836", or the title as asked

    @classmethod
    def of(cls, request_json: Mapping[str, Any], ids: Sequence[tuple[str, str]]) -> Journal | None:
        """The journal a copy is from: its normalised ISSN (from the request's identifiers,
        as broker/holdings reads them), else the key of its title alone (the request's
        title_key includes the article's author, which differs from copy to copy)."""
        issn = next((v for t, v in ids if t == "issn"), None)
        if issn is not None:
            return cls(f"issn:{issn}", f"ISSN {issn}")
        title = _text(_table(_request(request_json), "bibliographicInfo").get("title"))
        key = title_key(title) if title else None
        return cls(f"title:{key}", title[:200]) if key and title else None


def publication_year(request_json: Mapping[str, Any]) -> int | None:
    """The year of the issue: the first four-digit year of publicationInfo.publicationDate
    ("2025", "2025-03-01", "2025年3月"), None if there is none."""
    text = _text(_table(_request(request_json), "publicationInfo").get("publicationDate"))
    found = _YEAR.search(unicodedata.normalize("NFKC", text)) if text else None
    return int(found.group(1)) if found and 1000 <= int(found.group(1)) <= 9999 else None


def is_recent(published: int | None, year: int, recent_years: int) -> bool:
    """Whether an issue counts: published in the last `recent_years` calendar years
    (window 5 in 2026: 2022 to 2026, and any later date). No year: counted, since
    the hub cannot show that the issue is old."""
    return published is None or published > year - recent_years


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --------------------------------------------------------------------------
# The rule and the check
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Rule:
    """The limit that applies to one request: a policy rule's, or the settings default."""

    name: str
    action: CopyrightAction
    limit: int
    recent_years: int
    supplier: str | None = None
    basis: str | None = None
    refuse_undeclared: bool = False

    @property
    def label(self) -> str:
        return self.basis or f"rule '{self.name}'"


def rule_for(policy: Policy, facts: RequestFacts, settings: CopyrightSettings) -> Rule | None:
    """The first policy rule with a `copyright` action this request meets, else the
    settings default (None when that is "off")."""
    for name, limit in policy.copyright_limits(facts):
        return Rule(name, limit.action,
                    settings.limit if limit.limit is None else limit.limit,
                    settings.recent_years if limit.recent_years is None else limit.recent_years,
                    limit.supplier, limit.basis, limit.refuse_undeclared)
    if settings.default_action == "off":
        return None
    return Rule("settings.copyright", CopyrightAction(settings.default_action),
                settings.limit, settings.recent_years)


@dataclass(frozen=True)
class Check:
    """What the hub found and decided for one copy request."""

    declaration: Declaration
    journal: Journal | None
    published: int | None
    year: int
    recent: bool
    copy_number: int            # counted copies of this journal this year, with this one
    rule: Rule | None
    unrouted: str | None = None  # why the pay-per-view supplier could not be put first
    accepted: tuple[str, ...] = ()  # the vocabulary's codes, for a refusal's text

    @property
    def over(self) -> bool:
        return (self.rule is not None and self.recent and self.journal is not None
                and self.copy_number > self.rule.limit)

    @property
    def undeclared(self) -> bool:
        return self.rule is not None and self.declaration.category is None

    @property
    def route_to(self) -> str | None:
        if self.over and self.rule is not None and self.rule.action is CopyrightAction.ROUTE:
            return self.rule.supplier
        return None

    @property
    def held(self) -> bool:
        return self.over and self.rule is not None and self.rule.action is CopyrightAction.HOLD

    @property
    def action(self) -> str:
        """What the hub did, as copyright_copy.action records it."""
        if not self.over:
            return "flagged" if self.undeclared else "none"
        if self.held:
            return "held"
        return "routed" if self.route_to and not self.unrouted else "flagged"

    def reason(self) -> str:
        """"copyright: 6th copy of ISSN 0028-0836 this year (limit 5, CONTU): ...", or ""."""
        if not self.over or self.rule is None or self.journal is None:
            return ""
        head = (f"copyright: {ordinal(self.copy_number)} copy of {self.journal.label} "
                f"this year (limit {self.rule.limit}, {self.rule.label})")
        if self.route_to and not self.unrouted:
            return f"{head}: routed to the licensed pay-per-view supplier"
        if self.route_to:
            return f"{head}: not routed to the pay-per-view supplier {self.route_to} " \
                   f"({self.unrouted}); forwarded as usual and flagged"
        if self.held:
            return f"{head}: held for an operator's approval (permission or a fee needed)"
        return f"{head}: flagged"

    def detail(self) -> dict[str, Any]:
        """For the request's audit row (`run.py explain`)."""
        out: dict[str, Any] = {"declaration": self.declaration.as_json(),
                               "journal": self.journal.label if self.journal else None,
                               "publicationYear": self.published, "recent": self.recent,
                               "copy": self.copy_number, "action": self.action}
        if self.rule is not None:
            out.update(rule=self.rule.name, limit=self.rule.limit,
                       recentYears=self.rule.recent_years)
        if self.reason():
            out["reason"] = self.reason()
        if self.undeclared:
            out["undeclared"] = "no accepted copyright category"
        return out


# The copy's row, from the JSON object `row()` makes: on its own, or as a part of the
# statement that writes the new transaction (broker/dispatch/sql.py NEW_TRANSACTION).
_COLUMNS = ("transaction_id, requester, journal_key, journal, publication_year, request_year, "
            "recent, category, declaration, copy_number, copy_limit, action, counted, "
            "created_at")


def insert_from_json(param: str) -> str:
    """INSERT of the copy's row given as JSON by the SQL expression `param` (none if it
    is NULL: a copy request without a journal to count)."""
    return (f"INSERT INTO copyright_copy ({_COLUMNS}) SELECT {_COLUMNS} "
            f"FROM jsonb_populate_record(NULL::copyright_copy, {param}::jsonb) "
            f"WHERE {param}::jsonb IS NOT NULL")


# The copies counted so far of one library's journal this year, under the lock two
# copies of it at once queue up on (migration 0036); asked with routing's facts.
# Parameters: the lock, the library, the journal key and the year, as SQL expressions.
def counted_sql(lock: str, library: str, journal: str, year: str) -> str:
    return f"copyright_copies_counted({lock}, {library}, {journal}, {year})"


# A Retry replaces the request it answers: that copy is not counted twice.
_NOT_COUNTED = "UPDATE copyright_copy SET counted = false WHERE transaction_id = $1"

_PURGE = "DELETE FROM copyright_copy WHERE created_at < $1"

_REPORT = """
SELECT requester, journal_key, min(journal) AS journal, request_year,
       count(*) AS copies,
       count(*) FILTER (WHERE recent AND counted) AS counted,
       max(copy_limit) AS copy_limit,
       count(*) FILTER (WHERE action = 'routed') AS routed,
       count(*) FILTER (WHERE action = 'held') AS held,
       count(*) FILTER (WHERE action = 'flagged') AS flagged,
       count(*) FILTER (WHERE category IS NULL) AS undeclared
FROM copyright_copy
WHERE ($1::integer IS NULL OR request_year = $1) AND ($2::text IS NULL OR requester = $2)
GROUP BY requester, journal_key, request_year
ORDER BY request_year, requester, journal_key"""


def journal_to_count(service_type: str | None, request_json: Mapping[str, Any],
                     ids: Sequence[tuple[str, str]]) -> Journal | None:
    """The journal whose copies a new request's check counts (None: not a copy request,
    or no journal to count), known before routing reads its facts."""
    if service_type not in COPY_SERVICE_TYPES:
        return None
    return Journal.of(request_json, ids)


def check(settings: CopyrightSettings, policy: Policy, facts: RequestFacts,
          request_json: Mapping[str, Any], journal: Journal | None,
          counted: int | None) -> Check | None:
    """The copyright check of a new request (None if it is not a copy request), of
    `journal` (`journal_to_count`, found before routing's read). `counted`: the copies
    of that journal this year so far, counted
    under the journal's lock (`counted_sql`, with the request's facts); None when there
    is no journal. Decides only: the copy's row is written with the transaction (`row`)."""
    if facts.service_type not in COPY_SERVICE_TYPES:
        return None
    rule = rule_for(policy, facts, settings)
    published = publication_year(request_json)
    year = facts.today.year
    recent = is_recent(published, year,
                       rule.recent_years if rule is not None else settings.recent_years)
    if journal is not None and counted is None:
        raise ValueError("a copy request with a journal needs its count (counted_sql)")
    used = counted if journal is not None and recent and counted is not None else 0
    vocab = vocabulary(settings)
    return Check(declaration_of(request_json, vocab), journal, published, year, recent,
                 used + 1, rule, accepted=tuple(vocab.categories))


def row(found: Check, transaction_id: str, requester: str, now: datetime
        ) -> dict[str, Any] | None:
    """The copy's row as `insert_from_json` reads it: the declaration and the count
    (None without a journal: nothing to count, nothing to keep)."""
    if found.journal is None:
        return None
    return {"transaction_id": transaction_id, "requester": requester,
            "journal_key": found.journal.key, "journal": found.journal.label,
            "publication_year": found.published, "request_year": found.year,
            "recent": found.recent, "category": found.declaration.category,
            "declaration": found.declaration.as_json(), "copy_number": found.copy_number,
            "copy_limit": found.rule.limit if found.rule else None, "action": found.action,
            "counted": not found.held, "created_at": now.isoformat()}


async def record(conn: Connection, found: Check, transaction_id: str, requester: str,
                 now: datetime, *, replaces: str | None = None) -> None:
    """After the new transaction (and its copy's row, `row`) is written, in its database
    transaction: the copy a Retry replaces is no longer counted, and what the rule says
    to flag is flagged."""
    if replaces is not None:
        await conn.execute(_NOT_COUNTED, replaces)
    facts = {"requester": requester, **found.detail()}
    if found.undeclared:
        given = f" ({found.declaration.given!r} is not an accepted category)" \
            if found.declaration.given else ""
        await raise_flag(conn, FlagKind.COPYRIGHT, requester,
                         f"copy request without an accepted copyright declaration{given}",
                         key=f"undeclared:{transaction_id}", transaction_id=transaction_id,
                         facts=facts, now=now)
    if found.over and found.action != "routed":
        await raise_flag(conn, FlagKind.COPYRIGHT, requester, found.reason(),
                         key=f"limit:{transaction_id}", transaction_id=transaction_id,
                         facts=facts, now=now)


async def purge_declarations(pool: asyncpg.Pool | Connection, settings: Settings,
                             today: date) -> int:
    """Delete the declarations made before the same consortium-local day
    settings.copyright.keep_years years ago (a daily job); how many were deleted."""
    years = settings.copyright.keep_years
    try:
        cutoff = today.replace(year=today.year - years)
    except ValueError:      # 29 February, in a year that has none
        cutoff = today.replace(year=today.year - years, day=28)
    result: str = await pool.execute(
        _PURGE, datetime.combine(cutoff, time(), tzinfo=ZoneInfo(settings.timezone)))
    return int(result.split()[-1])


@dataclass(frozen=True)
class ReportRow:
    requester: str
    journal: str
    year: int
    copies: int         # every copy request recorded
    counted: int        # recent issues, counted towards the limit
    limit: int | None   # the limit in force at the last copy (None: no rule applied)
    routed: int
    held: int
    flagged: int
    undeclared: int


async def report(db: asyncpg.Pool | Connection, *, year: int | None = None,
                 requester: str | None = None) -> list[ReportRow]:
    """Per requesting library, journal and year: the counts, the limit, what was done."""
    return [ReportRow(r["requester"], r["journal"], r["request_year"], r["copies"],
                      r["counted"], r["copy_limit"], r["routed"], r["held"], r["flagged"],
                      r["undeclared"])
            for r in await db.fetch(_REPORT, year, requester)]
