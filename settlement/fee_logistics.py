"""The shipping legs of a loan in its fee (issue 19: the cost of a national loan is
mostly logistics, so the fee has to price it).

A fee schedule entry of a kind that is shipped (LOGISTICS_KINDS: BookLoan, and
DocumentDelivery for a CopyOrLoan supplied as a loan) may price the outbound and
return legs by zone (schemas/zones.py):

    logistics  = { city = "8.00", province = "12.00", national = "20.00",
                   per_extra_item = "3.00" }     # the outbound leg
    return_leg = true                            # the return priced the same, or a
                                                 # table of its own; absent/false: the
                                                 # return is not charged

A leg costs its zone's price plus per_extra_item for each item after the first
(several volumes in one parcel cost more to pack and weigh more; the schedule has
no weight classes, the item count stands for them). A quote then has parts (`Quote`):
the service, the outbound leg, the return leg; subsidy rules may pay the logistics
part alone (settlement/subsidy.py, `part = "logistics"`).

Parsing raises RuleFileError naming the entry and the field (`logistics.city`);
settlement/fees.py gives it out as a FeeError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from schemas.money import Money
from schemas.rulefile import RuleFileError, check_keys, parse_amount, parse_field
from schemas.zones import Zone

# The kinds whose supply may be shipped: a book loan, and a CopyOrLoan (which dispatch
# files as DocumentDelivery) when it is supplied as a loan.
LOGISTICS_KINDS = ("BookLoan", "DocumentDelivery")
LOGISTICS_KEYS = ("logistics", "return_leg")
_LEG_KEYS = ("city", "province", "national", "per_extra_item")
_LEG_EXAMPLE = '{ city = "8.00", province = "12.00", national = "20.00" }'


@dataclass(frozen=True)
class LegPrices:
    """One shipping leg's prices, in minor units: by zone, plus each item after the first."""

    city_minor: int
    province_minor: int
    national_minor: int
    per_extra_item_minor: int = 0

    def price(self, zone: Zone, items: int) -> int:
        by_zone = {Zone.CITY: self.city_minor, Zone.PROVINCE: self.province_minor,
                   Zone.NATIONAL: self.national_minor}[zone]
        return by_zone + self.per_extra_item_minor * (items - 1)

    def to_terms(self, currency: str) -> dict[str, str]:
        """As the file writes it (decimal strings); per_extra_item only when charged."""
        out = {"city": Money(self.city_minor, currency).amount_text(),
               "province": Money(self.province_minor, currency).amount_text(),
               "national": Money(self.national_minor, currency).amount_text()}
        if self.per_extra_item_minor:
            out["per_extra_item"] = Money(self.per_extra_item_minor, currency).amount_text()
        return out


@dataclass(frozen=True)
class Quote:
    """A quote in its parts: the service, and the shipping legs of a loan (zero if none)."""

    service: Money
    outbound: Money
    return_leg: Money
    zone: Zone | None = None       # the zone the legs were priced for; None = no legs
    items: int = 1

    # Worked out once per quote: ranking reads them again and again (issue 20).
    @cached_property
    def logistics(self) -> Money:
        return self.outbound + self.return_leg

    @cached_property
    def total(self) -> Money:
        return self.service + self.logistics

    def describe(self) -> str:
        """"38.00 CNY = service 10.00 + outbound 20.00 + return 8.00 (national, 2 items)"."""
        if self.zone is None:
            return str(self.total)
        items = f", {self.items} items" if self.items != 1 else ""
        return (f"{self.total} = service {self.service.amount_text()} + outbound "
                f"{self.outbound.amount_text()} + return {self.return_leg.amount_text()} "
                f"({self.zone}{items})")




def parse_logistics(raw: Mapping[str, Any], currency: str,
               where: str) -> tuple[LegPrices | None, LegPrices | None]:
    """`logistics` (the outbound leg) and `return_leg` (true: priced the same; a table:
    its own prices; false or absent: the return is not charged)."""
    if "logistics" not in raw:
        if "return_leg" in raw:
            raise RuleFileError(f"{where}: return_leg: prices the return like logistics prices "
                           f"the way out; give logistics too, e.g. logistics = {_LEG_EXAMPLE}")
        return None, None
    if "courier_fee" in raw:
        raise RuleFileError(f"{where}: courier_fee: a flat courier fee and logistics (the courier "
                       "priced by zone) would charge the shipping twice; give one of them")
    outbound = _leg(raw["logistics"], currency, where, "logistics")
    back = raw.get("return_leg", False)
    if isinstance(back, bool):
        return outbound, outbound if back else None
    if isinstance(back, Mapping):
        return outbound, _leg(back, currency, where, "return_leg")
    raise RuleFileError(f"{where}: return_leg: {back!r} must be true (the return priced as "
                   f"logistics), false, or a table of its own prices, e.g. {_LEG_EXAMPLE}")


def _leg(table: Any, currency: str, where: str, name: str) -> LegPrices:
    """One leg's prices: city, province and national required, per_extra_item optional."""
    if not isinstance(table, Mapping):
        raise RuleFileError(f"{where}: {name}: must be a table of prices by zone, e.g. "
                       f"{name} = {_LEG_EXAMPLE}")
    check_keys(table, _LEG_KEYS, where, f"{name}.")
    prices: dict[str, int] = {}
    for key in _LEG_KEYS:
        if key not in table:
            if key == "per_extra_item":
                continue
            raise RuleFileError(f"{where}: {name}.{key}: is required (the price of a leg "
                           f"{_ZONE_WORDS[key]}); every zone must have a price")
        prices[key] = parse_field(where, f"{name}.{key}", parse_amount, table[key],
                                  currency).minor
    return LegPrices(city_minor=prices["city"], province_minor=prices["province"],
                     national_minor=prices["national"],
                     per_extra_item_minor=prices.get("per_extra_item", 0))


_ZONE_WORDS = {"city": "within one city", "province": "within one province",
               "national": "between provinces, or where a location is unknown"}


__all__ = ["LOGISTICS_KEYS", "LOGISTICS_KINDS", "LegPrices", "Quote", "parse_logistics"]
