"""Settlement periods: spans of the consortium's calendar and their state (ARCHITECTURE §4).

A period is a calendar month 'YYYY-MM', two months 'YYYY-B1'..'YYYY-B6', a quarter
'YYYY-Q1'..'YYYY-Q4' or a calendar year 'YYYY' (`Calendar`; which one the scheduler and
'current' mean is `settings.settlement.calendar`), in the consortium's time zone
(settings.timezone): it covers the local dates from its first to its last day and ends
at local midnight after its last day. Its state lives in `settlement_period`:

    open     no row, or a row left by a run that failed (last_error says why)
    closing  a run is in progress; a row still 'closing' with no run holding the
             settlement lock is a run that died, and the next attempt redoes it
    closed   its run committed; the run never changes again

Runs close periods in calendar order, whatever their calendars: a period may be settled
only if it overlaps no closed period and starts after the last closed one ends
(`conflict`), so the calendar can change only at a boundary (after 2026-12 closed,
2027-Q1 may follow; 2026-Q4 may not, 2026-10 being closed). A period before a closed
one is not settled any more (its late postings went, or will go, to the next open
period).
"""

from __future__ import annotations

import datetime
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from infra.database import Connection
from schemas.settings import Settings
from settlement.calendar import Calendar, local_date, parse_name, period_name, zone

OPEN, CLOSING, CLOSED = "open", "closing", "closed"
CURRENT = "current"


class PeriodStateError(RuntimeError):
    """A period is not in the state a run's step needs (e.g. closed while not closing)."""


def configured(settings: Settings) -> Calendar:
    """The settlement calendar the settings choose (budgets stay monthly regardless)."""
    return Calendar(settings.settlement.calendar)


@functools.total_ordering
@dataclass(frozen=True)
class Period:
    """One period of one of the consortium's settlement calendars: the `number`th
    (from 1) month, two months, quarter or (number 1) year of `year`.

    Periods order by their dates (first day, then last day): chronologically among
    the periods of one calendar, and among periods that do not overlap.
    """

    year: int
    number: int
    kind: Calendar = Calendar.MONTHLY

    def __post_init__(self) -> None:
        if not 1 <= self.year <= 9999 or not 1 <= self.number <= self.kind.per_year:
            raise ValueError(f"no {self.kind.value} period {self.number} of year {self.year}")

    @classmethod
    def parse(cls, text: str) -> Period:
        """A period from its name in any calendar; ValueError says why not."""
        kind, year, number = parse_name(text)
        return cls(year, number, kind)

    @classmethod
    def of(cls, day: datetime.date, calendar: Calendar = Calendar.MONTHLY) -> Period:
        """The period of `calendar` a consortium-local date lies in."""
        return cls(day.year, (day.month - 1) // calendar.months + 1, calendar)

    @classmethod
    def containing(cls, at: datetime.datetime, tz: str | ZoneInfo,
                   calendar: Calendar = Calendar.MONTHLY) -> Period:
        """The period of `calendar` an instant falls in, in the consortium's time zone."""
        return cls.of(local_date(at, tz), calendar)

    @property
    def name(self) -> str:
        return period_name(self.kind, self.year, self.number)

    def __str__(self) -> str:
        return self.name

    @property
    def span(self) -> str:
        """Its name and dates, as refusals and reports say it: '2026-Q4 (2026-10-01 ..
        2026-12-31)'."""
        return f"{self.name} ({self.first_day} .. {self.last_day})"

    def _key(self) -> tuple[datetime.date, datetime.date]:
        return self.first_day, self.last_day

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Period):
            return NotImplemented
        return self._key() < other._key()

    @property
    def first_day(self) -> datetime.date:
        return datetime.date(self.year, (self.number - 1) * self.kind.months + 1, 1)

    @property
    def last_day(self) -> datetime.date:
        return self.next().first_day - datetime.timedelta(days=1)

    def next(self) -> Period:
        if self.number == self.kind.per_year:
            return Period(self.year + 1, 1, self.kind)
        return Period(self.year, self.number + 1, self.kind)

    def previous(self) -> Period:
        if self.number == 1:
            return Period(self.year - 1, self.kind.per_year, self.kind)
        return Period(self.year, self.number - 1, self.kind)

    @property
    def budget_month(self) -> str:
        """The budget month ('YYYY-MM') shown with this period: budgets renew monthly
        whatever the settlement calendar, so a longer period goes with its last month
        (what was left as it ended)."""
        return Period.of(self.last_day).name

    def overlaps(self, other: Period) -> bool:
        return self.first_day <= other.last_day and other.first_day <= self.last_day

    def starts_at(self, tz: str | ZoneInfo) -> datetime.datetime:
        """Local midnight of the first day, as an aware instant."""
        d = self.first_day
        return datetime.datetime(d.year, d.month, d.day, tzinfo=zone(tz))

    def ends_at(self, tz: str | ZoneInfo) -> datetime.datetime:
        """Local midnight after the last day: from then on the period can be settled."""
        return self.next().starts_at(tz)

    def has_ended(self, now: datetime.datetime, tz: str | ZoneInfo) -> bool:
        return now >= self.ends_at(tz)


def period_or_none(text: str) -> Period | None:
    """The period named `text` in any calendar, or None (for pages that answer 400/404)."""
    try:
        return Period.parse(text)
    except ValueError:
        return None


def resolve(text: str, now: datetime.datetime, tz: str | ZoneInfo,
            calendar: Calendar = Calendar.MONTHLY) -> Period:
    """A period's name in any calendar, or 'current' (the open period of `calendar`
    containing `now`); ValueError says why not."""
    if text.strip().lower() == CURRENT:
        return Period.containing(now, tz, calendar)
    return Period.parse(text.strip())


def just_ended(now: datetime.datetime, tz: str | ZoneInfo, calendar: Calendar
               ) -> Period | None:
    """The period of `calendar` that ended at the start of the current local month, or
    None in a month where none did (quarterly: in February, March, May ...).

    The scheduler runs monthly; it settles a period during the month after its end.
    """
    current = Period.containing(now, tz, calendar)
    if current.first_day != Period.containing(now, tz).first_day:
        return None
    return current.previous()


def conflict(p: Period, closed: Sequence[Period]) -> str | None:
    """Why `p` cannot be settled given the closed periods that end on or after its first
    day (`closed_in_the_way`), or None if it can: it must overlap none of them, and
    start after the last one ends."""
    others = sorted(c for c in closed if c != p)
    overlapping = [c for c in others if c.overlaps(p)]
    if overlapping:
        names = ", ".join(c.span for c in overlapping)
        return (f"period {p.span} overlaps the closed period{'s' if len(overlapping) > 1 else ''}"
                f" {names}: a period may only start after the last closed one ends (the "
                "settlement calendar can change only at a boundary)")
    later = [c for c in others if c.first_day > p.last_day]
    if later:
        return (f"period {p} comes before the closed period {later[-1]}: it is not settled "
                "any more; its late postings land in the next open period")
    return None


CLOSED_IN_THE_WAY = """SELECT period FROM settlement_period
                       WHERE state = 'closed' AND period <> $1 AND date_to >= $2"""


@dataclass(frozen=True)
class PeriodState:
    period: str
    state: str
    closing_since: datetime.datetime | None
    closed_at: datetime.datetime | None
    attempts: int
    last_error: str | None


async def state(conn: Connection, period: Period) -> PeriodState:
    row = await conn.fetchrow(
        "SELECT period, state, closing_since, closed_at, attempts, last_error "
        "FROM settlement_period WHERE period = $1", period.name)
    if row is None:
        return PeriodState(period.name, OPEN, None, None, 0, None)
    return PeriodState(**dict(row))


async def closed_in_the_way(conn: Connection, period: Period) -> list[Period]:
    """The closed periods (other than `period`) that end on or after its first day: any
    one of them keeps it from being settled (`conflict` says why)."""
    rows = await conn.fetch(CLOSED_IN_THE_WAY, period.name, period.first_day)
    return sorted(Period.parse(r["period"]) for r in rows)


async def refusal(conn: Connection, period: Period) -> str | None:
    """Why `period` cannot be settled now, or None (it is open, or closed itself)."""
    return conflict(period, await closed_in_the_way(conn, period))


async def mark_closing(conn: Connection, period: Period) -> None:
    await conn.execute(
        """INSERT INTO settlement_period (period, date_from, date_to, state, closing_since,
                                          attempts)
           VALUES ($1, $2, $3, 'closing', now(), 1)
           ON CONFLICT (period) DO UPDATE SET state = 'closing', closing_since = now(),
               attempts = settlement_period.attempts + 1, last_error = NULL
           WHERE settlement_period.state <> 'closed'""",
        period.name, period.first_day, period.last_day)


async def mark_closed(conn: Connection, period: Period) -> None:
    status = await conn.execute(
        "UPDATE settlement_period SET state = 'closed', closed_at = now(), last_error = NULL "
        "WHERE period = $1 AND state = 'closing'", period.name)
    if status != "UPDATE 1":
        raise PeriodStateError(f"period {period} was not closing when its run finished")


async def mark_failed(conn: Connection, period: Period, error: str) -> None:
    """Back to open after a failed run, with the reason (the next attempt starts afresh)."""
    await conn.execute(
        "UPDATE settlement_period SET state = 'open', last_error = $2 "
        "WHERE period = $1 AND state = 'closing'", period.name, error[:2000])


__all__ = ["CLOSED", "CLOSING", "CURRENT", "OPEN", "Calendar", "Period", "PeriodState",
           "PeriodStateError", "closed_in_the_way", "configured", "conflict", "just_ended",
           "mark_closed", "mark_closing", "mark_failed", "period_or_none", "refusal", "resolve",
           "state"]
