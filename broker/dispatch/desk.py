"""What every step of dispatch works with: settings, clock, time zone, the policy in
force, and where readers' download links point."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from broker.catalogue.checker import Catalogues
from broker.dispatch.policies import PolicyStore
from schemas.settings import Settings


def utcnow() -> datetime:
    return datetime.now(UTC)


def iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


@dataclass
class Desk:
    settings: Settings
    clock: Callable[[], datetime]
    policies: PolicyStore
    zone: ZoneInfo
    # The hub process sets it once its HTTP server is up (with port 0 the address is
    # known only then).
    base_url: str
    # Suppliers' catalogues asked before routing: one HTTP session, cache and breakers
    # for the process (app/hub.py closes it).
    catalogues: Catalogues

    @classmethod
    def create(cls, settings: Settings, clock: Callable[[], datetime] = utcnow) -> Desk:
        return cls(settings=settings, clock=clock, policies=PolicyStore(),
                   zone=ZoneInfo(settings.timezone), base_url=settings.public_base_url,
                   catalogues=Catalogues(settings.catalogues, clock))

    def today(self, now: datetime) -> date:
        """The consortium-local date (daily caps, fee schedules)."""
        return now.astimezone(self.zone).date()

    def deadline_hours(self, level: str | None) -> float:
        """How long a supplier may stay silent, by the request's service level."""
        d = self.settings.deadlines
        return {"express": d.express, "rush": d.rush}.get((level or "").lower(), d.normal)
