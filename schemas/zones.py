"""How far a loan travels: the same city, the same province, or elsewhere in the country.

One rule, pure, here at the bottom of the layers so that every package decides a
distance the same way: settlement prices the shipping legs of a loan by it
(settlement/fees.py), and it is the rule of the routing tiers (broker/policy.py
`_location`, which also says why in its reasons).

    city      both cities known and equal, and the provinces do not disagree (cities
              of one name exist in two provinces; an unknown province is given the
              benefit of the doubt)
    province  both provinces known and equal (and not the same city)
    national  anything else, including an unknown location on either side: never
              guess a shorter distance than can be shown
"""

from __future__ import annotations

from enum import StrEnum


class Zone(StrEnum):
    CITY = "city"
    PROVINCE = "province"
    NATIONAL = "national"


def zone_between(requester_province: str | None, requester_city: str | None,
                 supplier_province: str | None, supplier_city: str | None) -> Zone:
    """The zone between a requester and a supplier, from their provinces and cities."""
    same_province = requester_province is not None and requester_province == supplier_province
    provinces_agree = same_province or requester_province is None or supplier_province is None
    if requester_city is not None and requester_city == supplier_city and provinces_agree:
        return Zone.CITY
    if same_province:
        return Zone.PROVINCE
    return Zone.NATIONAL


__all__ = ["Zone", "zone_between"]
