"""What the finance commands share (`run.py payments`, `disputes`, `deposit`): the
`payments` actions' shape, today's consortium-local date, and amounts and dates as
finance staff type them."""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from schemas.money import Money, minor_unit
from schemas.settings import Settings
from settlement.calendar import local_date

ActionRun = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


@dataclass(frozen=True)
class Action:
    """One `run.py payments <name>` action."""

    name: str
    help: str
    run: ActionRun
    arguments: Callable[[argparse.ArgumentParser], None]


def today(settings: Settings) -> datetime.date:
    """The consortium-local date now: due dates, ages and reminders count from it."""
    return local_date(datetime.datetime.now(datetime.UTC), settings.timezone)


def parse_amount(text: str, currency: str) -> Money:
    """'1234.50' in a currency's major units, as Money; ValueError says what is wrong."""
    return Money.from_costs({"monetaryValue": text.strip(), "currencyCode": currency})


def parse_day(text: str | None, what: str, default: datetime.date) -> datetime.date:
    if text is None:
        return default
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise ValueError(f"{what} {text!r} is not a date YYYY-MM-DD") from None


def money_text(minor: int, currency: str) -> str:
    places = minor_unit(currency)
    return f"{minor / 10 ** places:,.{places}f}" if places else f"{minor:,}"
