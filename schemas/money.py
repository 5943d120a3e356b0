"""Money in integer minor units, to and from ISO 18626 `{currencyCode, monetaryValue}`.

The wire carries decimal strings ("12.50"); the hub stores and adds integers, so
no amount ever passes through a float (ARCHITECTURE §3.3).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

DEFAULT_CURRENCY = "CNY"
# ISO 4217 minor units for the currencies a Chinese consortium meets; others get 2.
MINOR_UNITS: dict[str, int] = {
    "CNY": 2, "HKD": 2, "MOP": 2, "TWD": 2, "USD": 2, "EUR": 2, "GBP": 2, "CHF": 2,
    "AUD": 2, "CAD": 2, "SGD": 2, "JPY": 0, "KRW": 0,
}
_CURRENCY = re.compile(r"[A-Z]{3}")
# xs:decimal's lexical form without a sign (negatives are refused with their own message).
_DECIMAL = re.compile(r"[0-9]+(\.[0-9]*)?|\.[0-9]+")


def minor_unit(currency: str) -> int:
    return MINOR_UNITS.get(currency, 2)


def _check_currency(currency: Any) -> str:
    if not isinstance(currency, str) or not _CURRENCY.fullmatch(currency):
        raise ValueError(f"currency {currency!r} is not an ISO 4217 code "
                         "(three capital letters, e.g. CNY)")
    return currency


@dataclass(frozen=True, slots=True)
class Money:
    """An amount in minor units (fen for CNY). Negative amounts exist only in the ledger."""

    minor: int
    currency: str = DEFAULT_CURRENCY

    def __post_init__(self) -> None:
        if not isinstance(self.minor, int) or isinstance(self.minor, bool):
            raise ValueError(f"minor must be an int, not {type(self.minor).__name__}")
        _check_currency(self.currency)

    @classmethod
    def zero(cls, currency: str = DEFAULT_CURRENCY) -> Money:
        return cls(0, currency)

    @classmethod
    def from_costs(cls, costs: Any, default_currency: str = DEFAULT_CURRENCY) -> Money:
        """Parse ISO 18626 costs (a dict with wire names, or a `Costs` model).

        Extra decimal places are accepted only when they are zeros ("100.00" JPY),
        since then nothing is lost; anything finer than the minor unit is refused.
        """
        if isinstance(costs, Mapping):
            currency = costs.get("currencyCode", default_currency)
            if "monetaryValue" not in costs:
                raise ValueError("costs: monetaryValue is missing")
            value = costs["monetaryValue"]
        elif hasattr(costs, "currency_code") and hasattr(costs, "monetary_value"):
            currency, value = costs.currency_code, costs.monetary_value
        else:
            raise ValueError(f"costs must be an object with currencyCode and monetaryValue, "
                             f"not {type(costs).__name__}")
        if isinstance(currency, str):
            currency = currency.strip().upper()
        currency = _check_currency(currency)
        return cls(_to_minor(value, currency), currency)

    @classmethod
    def from_decimal(cls, amount: Decimal | str | int,
                     currency: str = DEFAULT_CURRENCY) -> Money:
        """From a decimal amount (e.g. a fee schedule entry); negatives allowed, floats not."""
        currency = _check_currency(currency)
        if isinstance(amount, str) and amount.strip().startswith("-"):
            return -cls(_to_minor(amount.strip()[1:], currency), currency)
        if isinstance(amount, Decimal | int) and not isinstance(amount, bool) and amount < 0:
            return -cls(_to_minor(-amount, currency), currency)
        return cls(_to_minor(amount, currency), currency)

    def to_decimal(self) -> Decimal:
        return Decimal(self.minor).scaleb(-minor_unit(self.currency))

    def to_costs(self) -> dict[str, str]:
        """ISO 18626 costs; the wire has no negative amounts, so those are refused."""
        if self.minor < 0:
            raise ValueError(f"{self} is negative; ISO 18626 costs cannot be negative")
        return {"currencyCode": self.currency, "monetaryValue": self.amount_text()}

    def amount_text(self) -> str:
        """The amount with exactly the currency's decimals: 1250 CNY -> "12.50"."""
        places = minor_unit(self.currency)
        return f"{self.to_decimal():.{places}f}"

    def _same(self, other: object, verb: str) -> Money:
        if not isinstance(other, Money):
            raise TypeError(f"cannot {verb} Money and {type(other).__name__}")
        if other.currency != self.currency:
            raise ValueError(f"cannot {verb} {self.currency} and {other.currency}")
        return other

    def __add__(self, other: Money) -> Money:
        return Money(self.minor + self._same(other, "add").minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        return Money(self.minor - self._same(other, "subtract").minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.minor, self.currency)

    def __str__(self) -> str:
        return f"{self.amount_text()} {self.currency}"


def signed(m: Money) -> str:
    """"+12.50", "-3.00", "0.00": ledger amounts with their sign."""
    return ("+" if m.minor > 0 else "") + m.amount_text()


def _to_minor(value: Any, currency: str) -> int:
    places = minor_unit(currency)
    if isinstance(value, bool):
        raise ValueError(f"monetaryValue {value!r} is not a number")
    if isinstance(value, float):
        raise ValueError(f"monetaryValue {value!r} is a float; send a decimal string such "
                         "as \"12.50\" so that no precision is lost")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError(f"monetaryValue {value} is not a finite number")
        amount = value
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("-") and _DECIMAL.fullmatch(text[1:]):
            raise ValueError(f"monetaryValue {value!r} is negative; costs cannot be negative")
        if text.startswith("+"):
            text = text[1:]
        if not _DECIMAL.fullmatch(text):
            raise ValueError(f"monetaryValue {value!r} is not a decimal number "
                             "such as \"12.50\"")
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:  # pragma: no cover - the pattern rules this out
            raise ValueError(f"monetaryValue {value!r} is not a decimal number") from exc
    else:
        raise ValueError(f"monetaryValue must be a decimal string, not {type(value).__name__}")
    if amount < 0:
        raise ValueError(f"monetaryValue {value!r} is negative; costs cannot be negative")
    scaled = amount.scaleb(places)
    if scaled != scaled.to_integral_value():
        exponent = amount.normalize().as_tuple().exponent
        if not isinstance(exponent, int):  # "n", "N", "F": NaN or infinity, refused above
            raise ValueError(f"monetaryValue {value!r} is not a finite number")
        decimals = -exponent
        raise ValueError(f"monetaryValue {value!r} has {decimals} decimal places; "
                         f"{currency} allows at most {places}")
    return int(scaled)
