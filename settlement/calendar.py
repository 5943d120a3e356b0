"""The consortium's calendar: local dates of instants, budget months, and the names of
settlement periods in each settlement calendar.

Subsidy budgets renew by consortium-local calendar month ('YYYY-MM', in
settings.timezone, by default Asia/Shanghai), whatever the settlement calendar:
`period_of`, `is_period` and `check_period` are about those months. Settlement
periods follow `settings.settlement.calendar` (`Calendar`): a month 'YYYY-MM', two
months 'YYYY-B1'..'YYYY-B6', a quarter 'YYYY-Q1'..'YYYY-Q4' or a calendar year 'YYYY'
(`parse_name`, `period_name`; settlement/periods.py builds on them). A posting is
dated by the local date of the instant it happened.
"""

from __future__ import annotations

import datetime
import re
from enum import StrEnum
from zoneinfo import ZoneInfo

DEFAULT_TZ = "Asia/Shanghai"
_PERIOD = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")

# Every settlement period name, as migration 0022 checks it (and the HTTP API's schema).
PERIOD_PATTERN = r"^[0-9]{4}(-(0[1-9]|1[0-2])|-B[1-6]|-Q[1-4])?$"
# A calendar month: a budget's period, and a monthly settlement period.
MONTH_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])$"

# Anything shaped like a period name, so that a wrong number gets its own message.
_SHAPE = re.compile(r"(?P<year>[0-9]{4})(?:-(?:(?P<month>[0-9]{2})|B(?P<bi>[0-9]+)"
                    r"|Q(?P<quarter>[0-9]+)))?")
FORMS = ("YYYY-MM (a month, e.g. 2026-10), YYYY-B1..YYYY-B6 (two months, B1 = January and "
         "February), YYYY-Q1..YYYY-Q4 (a quarter) or YYYY (a calendar year)")


class Calendar(StrEnum):
    """How long a settlement period is (settings.settlement.calendar)."""

    MONTHLY = "monthly"
    BIMONTHLY = "bimonthly"
    QUARTERLY = "quarterly"
    ANNUAL = "annual"

    @property
    def months(self) -> int:
        return _MONTHS[self]

    @property
    def per_year(self) -> int:
        """How many periods a year has (their numbers run 1..per_year)."""
        return 12 // self.months


_MONTHS = {Calendar.MONTHLY: 1, Calendar.BIMONTHLY: 2, Calendar.QUARTERLY: 3,
           Calendar.ANNUAL: 12}
# The letter before a period's number in its name (months and years have none).
_LETTER = {Calendar.BIMONTHLY: "B", Calendar.QUARTERLY: "Q"}


def zone(tz: str | ZoneInfo) -> ZoneInfo:
    return tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)


def local_date(at: datetime.datetime, tz: str | ZoneInfo = DEFAULT_TZ) -> datetime.date:
    """The consortium-local calendar date of an instant (naive instants are refused)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"{at.isoformat()} has no time zone; pass an aware datetime")
    return at.astimezone(zone(tz)).date()


def period_of(day: datetime.date) -> str:
    """The budget period of a consortium-local date: its calendar month, 'YYYY-MM'
    (budgets renew monthly whatever the settlement calendar)."""
    return f"{day.year:04d}-{day.month:02d}"


def is_period(text: str) -> bool:
    """Whether `text` is a calendar month 'YYYY-MM' (a budget period)."""
    return _PERIOD.fullmatch(text) is not None


def check_period(text: str) -> str:
    """`text` if it is a calendar month 'YYYY-MM' (a budget period); else ValueError."""
    if not _PERIOD.fullmatch(text):
        raise ValueError(f"period {text!r} is not a calendar month YYYY-MM, e.g. 2026-10")
    return text


def period_name(kind: Calendar, year: int, number: int) -> str:
    """The name of the `number`th period (from 1) of `year` in the calendar `kind`."""
    if kind is Calendar.ANNUAL:
        return f"{year:04d}"
    if kind is Calendar.MONTHLY:
        return f"{year:04d}-{number:02d}"
    return f"{year:04d}-{_LETTER[kind]}{number}"


def parse_name(text: str) -> tuple[Calendar, int, int]:
    """(calendar, year, number) of a settlement period's name; ValueError says why not."""
    m = _SHAPE.fullmatch(text)
    if m is None:
        raise ValueError(f"period {text!r} is not a settlement period: say {FORMS}")
    year = int(m["year"])
    if year < 1:
        raise ValueError(f"period {text!r}: there is no year 0000")
    if m["month"] is not None:
        kind, number, what = Calendar.MONTHLY, int(m["month"]), "month"
    elif m["bi"] is not None:
        kind, number, what = Calendar.BIMONTHLY, int(m["bi"]), "two-month period"
    elif m["quarter"] is not None:
        kind, number, what = Calendar.QUARTERLY, int(m["quarter"]), "quarter"
    else:
        return Calendar.ANNUAL, year, 1
    if not 1 <= number <= kind.per_year:
        first, last = period_name(kind, year, 1), period_name(kind, year, kind.per_year)
        form = "YYYY-MM" if kind is Calendar.MONTHLY else f"YYYY-{_LETTER[kind]}n"
        raise ValueError(f"period {text!r}: a year has no {what} {m['month'] or number}; "
                         f"its {what}s ({form}) are {first} .. {last}")
    if period_name(kind, year, number) != text:   # e.g. 2026-Q01
        raise ValueError(f"period {text!r} is not a settlement period: say {FORMS}")
    return kind, year, number


__all__ = ["DEFAULT_TZ", "FORMS", "MONTH_PATTERN", "PERIOD_PATTERN", "Calendar", "check_period",
           "is_period", "local_date", "parse_name", "period_name", "period_of", "zone"]
