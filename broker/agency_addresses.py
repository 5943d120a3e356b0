"""Agencies' postal addresses (migration 0029, `agency_address`): where loans are shipped
from and to. Written by `run.py agency address set`, read by broker/pull_slips.py.

Chinese addresses are the normal case and are kept as given (上海市徐汇区淮海中路1555号);
a label prints them from the largest unit to the smallest, as Chinese post does. The
checks here are the rules (a clear message per field); the table's CHECKs only back
them up for rows written by anything else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any

import asyncpg

from infra.database import Connection

__all__ = ["AddressError", "PostalAddress", "check_phone", "check_postcode", "get",
           "of_agencies", "put"]

_COLUMNS = "symbol, recipient, line1, line2, city, province, postcode, country, phone"
PUT = f"""
INSERT INTO agency_address ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
ON CONFLICT (symbol) DO UPDATE SET
    recipient = excluded.recipient, line1 = excluded.line1, line2 = excluded.line2,
    city = excluded.city, province = excluded.province, postcode = excluded.postcode,
    country = excluded.country, phone = excluded.phone, updated_at = now()"""
GET = f"SELECT {_COLUMNS} FROM agency_address WHERE symbol = $1"
OF_AGENCIES = f"SELECT {_COLUMNS} FROM agency_address WHERE symbol = ANY($1::text[])"
AGENCY_EXISTS = "SELECT true FROM agency WHERE symbol = $1"

# A Chinese phone number without its country code: a mobile (11 digits from 13-19), a
# landline with its area code (010-62751234, 0571-88888888), or a 400/800 service line.
_CN_PHONE = re.compile(r"1[3-9]\d{9}|0\d{9,11}|[48]00\d{7}")
# What a phone may be written with: +, digits, spaces, hyphens, an area code in
# brackets; then an extension (转 123, ext. 123, x123).
_PHONE = re.compile(r"(?P<number>\+?[0-9(][0-9 ()-]*[0-9])"
                    r"(?:\s*(?:转|ext\.?|x)\s*(?P<ext>[0-9]{1,6}))?", re.IGNORECASE)
_POSTCODE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 -]{1,9}")
_COUNTRY = re.compile(r"[A-Z]{2}")


class AddressError(ValueError):
    """An address field that cannot be used; the message names the field."""


@dataclass(frozen=True)
class PostalAddress:
    """A postal address: an agency's on file (every field checked), or a request's
    requestedDeliveryInfo physicalAddress (as sent: any field may be missing)."""

    line1: str | None
    line2: str | None = None
    city: str | None = None
    province: str | None = None
    postcode: str | None = None
    country: str = "CN"
    recipient: str | None = None  # a department or person at the agency
    phone: str | None = None

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> PostalAddress:
        return cls(line1=row["line1"], line2=row["line2"], city=row["city"],
                   province=row["province"], postcode=row["postcode"], country=row["country"],
                   recipient=row["recipient"], phone=row["phone"])

    @classmethod
    def from_iso(cls, physical: dict[str, Any]) -> PostalAddress | None:
        """An ISO 18626 physicalAddress (line1, line2, locality, postalCode, region,
        country); None when it has no line to ship to."""
        def text(key: str) -> str | None:
            value = physical.get(key)
            return value.strip() or None if isinstance(value, str) else None

        if not (text("line1") or text("line2")):
            return None
        country = (text("country") or "CN").upper()
        return cls(line1=text("line1"), line2=text("line2"), city=text("locality"),
                   province=text("region"), postcode=text("postalCode"),
                   country=country if _COUNTRY.fullmatch(country) else "CN")

    def check(self) -> PostalAddress:
        """The address with its fields trimmed, or AddressError naming the first bad one."""
        given = replace(self, **{name: (getattr(self, name) or "").strip() or None
                                 for name in ("line1", "line2", "city", "province",
                                              "postcode", "recipient", "phone")},
                        country=self.country.strip().upper())
        for name, value in (("--line1", given.line1), ("--city", given.city),
                            ("--province", given.province), ("--postcode", given.postcode),
                            ("--phone", given.phone)):
            if value is None:
                raise AddressError(f"{name} is required")
        if not _COUNTRY.fullmatch(given.country):
            raise AddressError(f"--country {self.country!r}: an ISO 3166 two-letter code, "
                               "e.g. CN")
        check_postcode(given.postcode or "", given.country)
        check_phone(given.phone or "", given.country)
        return given

    def place(self) -> str:
        """Province and city as Chinese post writes them: 上海 once for 上海/上海."""
        parts = [p for p in (self.province, self.city) if p]
        if len(parts) == 2 and parts[0] == parts[1]:
            parts = parts[:1]
        return " ".join(parts)

    def street(self) -> str:
        """The address from the largest unit to the smallest, on one line."""
        return " ".join(x for x in (self.place(), self.line1, self.line2) if x)

    def post(self) -> str:
        """Postcode, and the country when it is not China."""
        return " ".join(x for x in (f"邮编 {self.postcode}" if self.postcode else "",
                                    "" if self.country == "CN" else self.country) if x)


def check_postcode(postcode: str, country: str) -> None:
    if country == "CN":
        if not re.fullmatch(r"[0-9]{6}", postcode):
            raise AddressError(f"--postcode {postcode!r}: a Chinese postcode has 6 digits "
                               "(e.g. 200031)")
    elif not _POSTCODE.fullmatch(postcode):
        raise AddressError(f"--postcode {postcode!r}: 2 to 10 letters, digits, spaces or "
                           "hyphens")


def check_phone(phone: str, country: str) -> None:
    """A phone a courier can call: for China a mobile, a landline with its area code or a
    400/800 line (with or without +86), elsewhere 6 to 15 digits (E.164)."""
    shape = _PHONE.fullmatch(phone.strip())
    if shape is None:
        raise AddressError(f"--phone {phone!r}: digits, with +, spaces, hyphens or an area "
                           "code in brackets, and an extension as 转 123 or ext 123")
    digits = re.sub(r"\D", "", shape.group("number"))
    international = shape.group("number").startswith("+")
    if country == "CN":
        if digits.startswith("0086"):
            digits, international = digits[4:], True
        elif international:
            if not digits.startswith("86"):
                raise AddressError(f"--phone {phone!r}: a Chinese number starts +86 or "
                                   "has no country code")
            digits = digits[2:]
        mobile_or_service = (len(digits) == 11 and digits.startswith("1")) \
            or digits.startswith(("0", "400", "800"))
        if international and not mobile_or_service:
            digits = "0" + digits  # +86 drops the area code's leading 0 (+86 10 6275 1234)
        if not _CN_PHONE.fullmatch(digits):
            raise AddressError(f"--phone {phone!r}: not a Chinese phone number (a mobile of "
                               "11 digits, e.g. 13812345678, or a landline with its area "
                               "code, e.g. 010-62751234)")
    elif not 6 <= len(digits) <= 15:
        raise AddressError(f"--phone {phone!r}: 6 to 15 digits")


async def put(pool: asyncpg.Pool, symbol: str, address: PostalAddress) -> PostalAddress:
    """Check and store an agency's address (replacing the one on file)."""
    checked = address.check()
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(AGENCY_EXISTS, symbol):
            raise AddressError(f"no agency {symbol} (add it with `run.py agency add`)")
        await conn.execute(PUT, symbol, checked.recipient, checked.line1, checked.line2,
                           checked.city, checked.province, checked.postcode, checked.country,
                           checked.phone)
    return checked


async def get(db: asyncpg.Pool | Connection, symbol: str) -> PostalAddress | None:
    row = await db.fetchrow(GET, symbol)
    return PostalAddress.from_row(row) if row is not None else None


async def of_agencies(db: asyncpg.Pool | Connection,
                      symbols: list[str]) -> dict[str, PostalAddress]:
    return {r["symbol"]: PostalAddress.from_row(r) for r in await db.fetch(OF_AGENCIES, symbols)}
