"""Operators' rule files (fees, subsidy, policy): reading them, and their values' forms.

One reader and one error style for every TOML file an operator loads: a value that
cannot be used says where it is, what it is, and what was expected.
"""

from __future__ import annotations

import datetime
import difflib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from schemas.money import Money

_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def read_input(path: str) -> str:
    """An operator's input file as text; ValueError says why not."""
    try:
        return Path(path).read_text("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


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
    if isinstance(value, str) and _DATE.fullmatch(value):
        try:
            return datetime.date.fromisoformat(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a calendar date: {exc}") from exc
    raise ValueError(f"{value!r} is not a date (YYYY-MM-DD)")
