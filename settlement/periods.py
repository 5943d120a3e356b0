"""Settlement periods: consortium-local calendar months and their state (ARCHITECTURE §4).

A period is 'YYYY-MM' in the consortium's time zone (settings.timezone): it covers
the local dates from its first to its last day and ends at local midnight after
its last day. Its state lives in `settlement_period`:

    open     no row, or a row left by a run that failed (last_error says why)
    closing  a run is in progress; a row still 'closing' with no run holding the
             settlement lock is a run that died, and the next attempt redoes it
    closed   its run committed; the run never changes again

Runs close periods in calendar order: a period before an already closed one is
not settled any more (its late postings went, or will go, to the next open period).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from infra.database import Connection
from settlement.calendar import check_period, local_date, period_of, zone

OPEN, CLOSING, CLOSED = "open", "closing", "closed"
CURRENT = "current"


class PeriodStateError(RuntimeError):
    """A period is not in the state a run's step needs (e.g. closed while not closing)."""


@dataclass(frozen=True, order=True)
class Period:
    """One calendar month of the consortium's calendar."""

    year: int
    month: int

    @classmethod
    def parse(cls, text: str) -> Period:
        check_period(text)
        return cls(int(text[:4]), int(text[5:7]))

    @classmethod
    def of(cls, day: datetime.date) -> Period:
        return cls.parse(period_of(day))

    @classmethod
    def containing(cls, at: datetime.datetime, tz: str | ZoneInfo) -> Period:
        """The period an instant falls in, in the consortium's time zone."""
        return cls.of(local_date(at, tz))

    @property
    def name(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    def __str__(self) -> str:
        return self.name

    @property
    def first_day(self) -> datetime.date:
        return datetime.date(self.year, self.month, 1)

    @property
    def last_day(self) -> datetime.date:
        return self.next().first_day - datetime.timedelta(days=1)

    def next(self) -> Period:
        return Period(self.year + self.month // 12, self.month % 12 + 1)

    def previous(self) -> Period:
        return Period(self.year - (self.month == 1), (self.month - 2) % 12 + 1)

    def starts_at(self, tz: str | ZoneInfo) -> datetime.datetime:
        """Local midnight of the first day, as an aware instant."""
        d = self.first_day
        return datetime.datetime(d.year, d.month, d.day, tzinfo=zone(tz))

    def ends_at(self, tz: str | ZoneInfo) -> datetime.datetime:
        """Local midnight after the last day: from then on the period can be settled."""
        return self.next().starts_at(tz)

    def has_ended(self, now: datetime.datetime, tz: str | ZoneInfo) -> bool:
        return now >= self.ends_at(tz)


def resolve(text: str, now: datetime.datetime, tz: str | ZoneInfo) -> Period:
    """'YYYY-MM', or 'current' (the open period containing `now`); ValueError says why not."""
    if text.strip().lower() == CURRENT:
        return Period.containing(now, tz)
    return Period.parse(text.strip())


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


async def later_closed(conn: Connection, period: Period) -> str | None:
    """The latest closed period after `period`, if any (then `period` cannot be settled)."""
    latest: str | None = await conn.fetchval(
        "SELECT max(period) FROM settlement_period WHERE state = 'closed' AND period > $1",
        period.name)
    return latest


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


__all__ = ["CLOSED", "CLOSING", "CURRENT", "OPEN", "Period", "PeriodState", "PeriodStateError",
           "later_closed", "mark_closed", "mark_closing", "mark_failed", "resolve", "state"]
