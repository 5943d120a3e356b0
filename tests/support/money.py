"""Amounts and instants as the ledger and settlement tests write them. Pure."""

from __future__ import annotations

import datetime
from zoneinfo import ZoneInfo

from schemas.money import Money

# The consortium's time zone: days, months and periods are local to it.
SHANGHAI = ZoneInfo("Asia/Shanghai")


def at(day: str, time: str = "12:00") -> datetime.datetime:
    """A consortium-local (Asia/Shanghai) instant."""
    return datetime.datetime.fromisoformat(f"{day}T{time}").replace(tzinfo=SHANGHAI)


def cny(text: str) -> Money:
    """An amount in yuan written as text, e.g. cny("12.50")."""
    return Money.from_decimal(text, "CNY")
