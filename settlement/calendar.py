"""The consortium's calendar: local dates of instants, and the months that are periods.

Budgets renew and settlements close by consortium-local calendar month ('YYYY-MM',
in settings.timezone, by default Asia/Shanghai); a posting is dated by the local
date of the instant it happened.
"""

from __future__ import annotations

import datetime
import re
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"
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


def is_period(text: str) -> bool:
    return _PERIOD.fullmatch(text) is not None


def check_period(text: str) -> str:
    if not _PERIOD.fullmatch(text):
        raise ValueError(f"period {text!r} is not a calendar month YYYY-MM, e.g. 2026-10")
    return text
