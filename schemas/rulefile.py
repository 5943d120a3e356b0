"""Operators' rule files (fees, subsidy, policy): reading them, and their values' forms.

One reader and one error style for every TOML file an operator loads: a value that
cannot be used says where it is (the section or entry, then the field), what it is,
and what was expected. Each rule of the forms lives here once: amounts, dates,
currencies, service kinds, unknown keys, arrays of tables with unique names, and the
`[groups]` table that the policy and subsidy files share.

The pieces here raise `RuleFileError`; each file's parser gives it out as its own
error (PolicyError, SubsidyError, FeeError) with the same message.
"""

from __future__ import annotations

import datetime
import difflib
import hashlib
import json
import re
import tomllib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Protocol, TypeVar

from schemas.iso18626_codes import ServiceKind
from schemas.money import Money
from schemas.symbols import split_symbol

# What a rule's `service_kind` may name: the CALIS service kinds, as the wire spells them.
SERVICE_KINDS: tuple[str, ...] = tuple(k.value for k in ServiceKind)
GROUP_PREFIX = "group:"

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_GROUP_NAME = re.compile(r"[A-Za-z0-9_.-]+")

T = TypeVar("T")


class RuleFileError(ValueError):
    """A rule file that cannot be used; the message names the section or entry and field."""


class _Named(Protocol):
    @property
    def name(self) -> str: ...


N = TypeVar("N", bound=_Named)


def read_input(path: str) -> str:
    """An operator's input file as text; ValueError says why not."""
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def parse_toml(text: str) -> dict[str, Any]:
    """A rule file's TOML text as tables; RuleFileError if it is not TOML."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleFileError(f"not valid TOML: {exc}") from exc


def content_label(content: Mapping[str, Any]) -> str:
    """The version label of an unlabelled file: the same content, the same label."""
    canon = json.dumps(content, sort_keys=True, ensure_ascii=False)
    return "sha256:" + hashlib.sha256(canon.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------
# Messages
# --------------------------------------------------------------------------

def unknown_key(where: str, key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{where}: {key}: unknown key; {hint}(allowed: {', '.join(allowed)})"


def type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _at(where: str, fld: str) -> str:
    """'rule[2] 'x': when.date_to', or the field alone for a top-level key."""
    return f"{where}: {fld}" if where else fld


def check_keys(table: Mapping[str, Any], allowed: Sequence[str], where: str,
               prefix: str = "") -> None:
    """Refuse a key of `table` that is not `allowed`, with a did-you-mean hint.

    `prefix` names a nested table in the message: "when." gives "when.service_knd".
    """
    for key in table:
        if key not in allowed:
            raise RuleFileError(unknown_key(where, prefix + key, [prefix + k for k in allowed]))


def parse_field(where: str, fld: str, parse: Callable[..., T], *args: Any) -> T:
    """`parse(*args)`, its ValueError given out as a RuleFileError naming where and the field."""
    try:
        return parse(*args)
    except ValueError as exc:
        raise RuleFileError(f"{_at(where, fld)}: {exc}") from exc


def check_known(name: str, known: Sequence[str], what: str, where: str, fld: str) -> None:
    """Refuse a reference to a group, budget, ... the file does not define; list those it does."""
    if name not in known:
        raise RuleFileError(f"{_at(where, fld)}: unknown {what} '{name}' "
                            f"(known {what}s: {', '.join(known) or 'none defined'})")


def optional_text(table: Mapping[str, Any], key: str, where: str) -> str | None:
    """A free-text field (note, description), None when it is left out."""
    value = table.get(key)
    if value is not None and not isinstance(value, str):
        raise RuleFileError(f"{_at(where, key)}: must be a string, not {type_name(value)}")
    return value


# --------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------

def is_int(value: Any) -> bool:
    """A TOML integer (true and false are not numbers here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_amount(value: Any, currency: str) -> Money:
    """An amount written as a decimal string ("12.50") in `currency`; ValueError says why.

    Bare TOML numbers are refused: 12 could mean yuan or fen, and 12.5 is a float.
    """
    if not isinstance(value, str):
        raise ValueError(f"{value!r} must be an amount written as a decimal string, "
                         f'e.g. "12.50" (not {type_name(value)})')
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"{value!r} is negative; amounts here cannot be negative")
    try:
        return Money.from_costs({"currencyCode": currency, "monetaryValue": text})
    except ValueError as exc:
        raise ValueError(str(exc).replace("monetaryValue ", "")) from exc


def parse_decimal(value: Any, expected: str) -> Decimal:
    """A number written as a TOML integer, float or string, exactly as written; else
    ValueError(f"{value!r} {expected}"). Infinities and NaN come back for the caller's range check.

    str() first, so 12.5 stays exactly 12.5 and 0.1 does not drag binary noise in.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError(f"{value!r} {expected}")
    try:
        return Decimal(str(value))
    except InvalidOperation as exc:
        raise ValueError(f"{value!r} {expected}") from exc


def parse_currency(value: Any) -> str:
    """An ISO 4217 currency code; ValueError says why not."""
    Money.zero(value)
    return str(value)


def parse_date(value: Any) -> datetime.date:
    """A TOML date or a 'YYYY-MM-DD' string; ValueError says why not."""
    if isinstance(value, datetime.datetime):
        raise ValueError(f"{value.isoformat()} has a time of day; give a date (YYYY-MM-DD)")
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a calendar date: {exc}") from exc
    raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)")


def parse_choice(value: Any, allowed: Sequence[str]) -> str:
    """One of `allowed`, e.g. a service kind; ValueError says which are allowed."""
    if value not in allowed:
        raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
    return str(value)


def parse_str_list(value: Any) -> list[str]:
    """A non-empty list of non-empty strings, repeats dropped; ValueError says why not.

    The fields that take one constrain a match: leaving the key out matches everything,
    so an empty list (which would match nothing) is refused.
    """
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError("must be a list of non-empty strings")
    if not value:
        raise ValueError("must not be empty (leave the key out to match everything)")
    return list(dict.fromkeys(value))


def parse_choices(value: Any, allowed: Sequence[str]) -> list[str]:
    """`parse_str_list` whose every value is one of `allowed` (e.g. service kinds)."""
    values = parse_str_list(value)
    for v in values:
        parse_choice(v, allowed)
    return values


def check_date_range(start: datetime.date | None, end: datetime.date | None, where: str,
                     keys: tuple[str, str] = ("date_from", "date_to"), prefix: str = "") -> None:
    """Refuse a range whose end is before its start (both days count: equal is one day)."""
    if start is not None and end is not None and end < start:
        raise RuleFileError(f"{_at(where, prefix + keys[1])}: {end.isoformat()} is before "
                            f"{keys[0]} {start.isoformat()}")


# --------------------------------------------------------------------------
# Arrays of tables
# --------------------------------------------------------------------------

def tables(data: Mapping[str, Any], key: str, where: str = ""
           ) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """The `[[key]]` tables of `data`, numbered from 1 in file order, each checked a table."""
    raw = data.get(key, [])
    if not isinstance(raw, list):
        raise RuleFileError(f"{_at(where, key)}: must be an array of tables, written [[{key}]]")
    for i, entry in enumerate(raw, start=1):
        if not isinstance(entry, Mapping):
            raise RuleFileError(f"{key}[{i}]: must be a table, not {type_name(entry)}")
        yield i, entry


def named_tables(data: Mapping[str, Any], key: str, parse: Callable[[int, Mapping[str, Any]], N],
                 where: str = "") -> list[N]:
    """`parse(i, table)` for each `[[key]]` table, in file order; names must be unique."""
    out: list[N] = []
    seen: dict[str, int] = {}
    for i, table in tables(data, key, where):
        item = parse(i, table)
        if item.name in seen:
            raise RuleFileError(f"{key}[{i}] '{item.name}': name: duplicate of "
                                f"{key}[{seen[item.name]}]")
        seen[item.name] = i
        out.append(item)
    return out


# --------------------------------------------------------------------------
# [groups]: named lists of agencies, shared by the policy and subsidy files
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Member:
    """One agency named by a rule field, and the group it was named through."""

    symbol: str
    via: str | None

    def label(self) -> str:
        return f" via group {self.via}" if self.via else ""


@dataclass(frozen=True)
class SymbolGroups:
    """The `[groups]` table: name = [agency symbols or "group:OTHER"].

    Group names use letters, digits, '_', '.' and '-'; a group may include other
    groups, but not in a cycle. Rule fields name agencies through `ref` and `expand`.
    """

    written: Mapping[str, tuple[str, ...]]   # members as written, repeats dropped
    members: Mapping[str, tuple[str, ...]]   # agencies, nested groups expanded, first first

    @classmethod
    def parse(cls, raw: Any) -> SymbolGroups:
        """The `[groups]` table, checked; RuleFileError names `groups`, the group and why."""
        if not isinstance(raw, Mapping):
            raise RuleFileError(f"groups: must be a table of name = [symbols], "
                                f"not {type_name(raw)}")
        for name, listed in raw.items():
            if not _GROUP_NAME.fullmatch(name):
                raise RuleFileError(f"groups: {name}: a group name may contain only letters, "
                                    "digits, '_', '.' and '-'")
            if not isinstance(listed, list):
                raise RuleFileError(f"groups: {name}: must be a list of symbols, "
                                    f"not {type_name(listed)}")
        names = tuple(raw)
        written = {name: tuple(dict.fromkeys(_ref(v, names, "groups", name) for v in listed))
                   for name, listed in raw.items()}
        members: dict[str, tuple[str, ...]] = {}
        for name in written:
            _resolve(name, written, members, ())
        return cls(written, members)

    def to_dict(self) -> dict[str, list[str]]:
        return {name: list(refs) for name, refs in self.written.items()}

    def groups_of(self, symbol: str) -> frozenset[str]:
        return frozenset(name for name, members in self.members.items() if symbol in members)

    def ref(self, value: Any, where: str, fld: str) -> str:
        """An agency symbol or `group:NAME` of a defined group, checked."""
        return _ref(value, tuple(self.written), where, fld)

    def expand(self, value: Any, where: str, fld: str) -> tuple[list[str], tuple[Member, ...]]:
        """A list of symbols and groups: (the refs as written, repeats dropped; the
        agencies they name, each once, first mention first, with the group it came through)."""
        if not isinstance(value, list):
            raise RuleFileError(f"{where}: {fld}: must be a list of symbols or group:NAME, "
                                f"not {type_name(value)}")
        refs = list(dict.fromkeys(self.ref(v, where, fld) for v in value))
        out: dict[str, Member] = {}
        for ref in refs:
            if ref.startswith(GROUP_PREFIX):
                group = ref[len(GROUP_PREFIX):]
                for sym in self.members[group]:
                    out.setdefault(sym, Member(sym, group))
            else:
                out.setdefault(ref, Member(ref, None))
        return refs, tuple(out.values())

    def expand_required(self, value: Any, where: str, fld: str
                        ) -> tuple[list[str], tuple[Member, ...]]:
        """`expand` for a field that constrains a match: an empty list is refused."""
        if isinstance(value, list) and not value:
            raise RuleFileError(f"{where}: {fld}: must be a non-empty list of symbols or "
                                "group:NAME (leave the key out to match everyone)")
        return self.expand(value, where, fld)


NO_GROUPS = SymbolGroups({}, {})


def _ref(value: Any, groups: Sequence[str], where: str, fld: str) -> str:
    if not isinstance(value, str):
        raise RuleFileError(f"{where}: {fld}: {value!r} must be a string: an agency symbol "
                            "or group:NAME")
    if value.startswith(GROUP_PREFIX):
        check_known(value[len(GROUP_PREFIX):], groups, "group", where, fld)
        return value
    try:
        split_symbol(value)
    except ValueError as exc:
        raise RuleFileError(f"{where}: {fld}: {value!r} is not an agency symbol or "
                            f"group:NAME: {exc}") from exc
    return value


def _resolve(name: str, written: Mapping[str, tuple[str, ...]],
             members: dict[str, tuple[str, ...]], stack: tuple[str, ...]) -> tuple[str, ...]:
    """The agencies of group `name`, nested groups expanded (memoised in `members`)."""
    if name in members:
        return members[name]
    if name in stack:
        cycle = " -> ".join((*stack[stack.index(name):], name))
        raise RuleFileError(f"groups: {name}: groups include each other in a cycle: {cycle}")
    out: list[str] = []
    for ref in written[name]:
        if ref.startswith(GROUP_PREFIX):
            out.extend(_resolve(ref[len(GROUP_PREFIX):], written, members, (*stack, name)))
        else:
            out.append(ref)
    members[name] = tuple(dict.fromkeys(out))
    return members[name]
