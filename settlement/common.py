"""Small helpers shared by fees, subsidy and the ledger: the centre's account, local dates."""

from __future__ import annotations

import datetime
import re
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


def signed(m: Money) -> str:
    """"+12.50", "-3.00", "0.00": ledger amounts with their sign."""
    return ("+" if m.minor > 0 else "") + m.amount_text()

