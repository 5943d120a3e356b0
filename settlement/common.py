"""Small helpers shared by fees, subsidy and the ledger: local dates, file values, tables."""

from __future__ import annotations

import datetime
import difflib
import re
import sys
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TextIO
from zoneinfo import ZoneInfo

from schemas.money import Money

DEFAULT_TZ = "Asia/Shanghai"
# The centre's own accounts in the ledger; not an agency symbol (those always have a ':').
CENTRE = "CENTRE"
_PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def local_date(at: datetime.datetime, tz: str | ZoneInfo = DEFAULT_TZ) -> datetime.date:
    """The consortium-local calendar date of an instant (naive instants are refused)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; pass an aware datetime")
    return at.astimezone(zone(tz)).date()


def period_of(day: datetime.date) -> str:
    """The budget period of a consortium-local date: its calendar month, 'YYYY-MM'."""
    return f"{day.year:04d}-{day.month:02d}"


def check_period(text: str) -> str:
    if not _PERIOD.fullmatch(text):
        raise ValueError(f"period {text!r} is not a calendar month YYYY-MM, e.g. 2026-10")
    return text


def unknown_key(where: str, key: str, allowed: Sequence[str]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{where}: {key}: unknown key; {hint}(allowed: {', '.join(allowed)})"


def type_name(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


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


def parse_date(value: Any) -> datetime.date:
    """A TOML date or a 'YYYY-MM-DD' string; ValueError says why not."""
    if isinstance(value, datetime.datetime):
        raise ValueError(f"{value.isoformat()} has a time of day; give a date (YYYY-MM-DD)")
    if isinstance(value, datetime.date):
        return value
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a calendar date: {exc}") from exc
    raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)")


def signed(m: Money) -> str:
    """"+12.50", "-3.00", "0.00": ledger amounts with their sign."""
    return ("+" if m.minor > 0 else "") + m.amount_text()


def _width(text: str) -> int:
    # Chinese characters take two terminal columns; padding by len() would skew columns.
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *,
          right: Sequence[int] = (), out: TextIO | None = None) -> None:
    """Print an aligned text table (columns in `right` right-aligned)."""
    out = out or sys.stdout
    cells = [[str(h) for h in headers]] + [["" if c is None else str(c) for c in r]
                                           for r in rows]
    widths = [max(_width(r[i]) for r in cells) for i in range(len(headers))]

    def line(r: list[str]) -> str:
        parts = []
        for i, c in enumerate(r):
            pad = " " * (widths[i] - _width(c))
            parts.append(pad + c if i in right else c + pad)
        return "  ".join(parts).rstrip()

    print(line(cells[0]), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells[1:]:
        print(line(r), file=out)


def read_input(path: str) -> str:
    """An operator's input file (fees, subsidy, policy) as text; ValueError says why not."""
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1
