"""What a supplier's BookLoan schedule says about lost and damaged items (issue 19):
a default replacement cost by item type, and a claim processing fee.

Two optional keys of a BookLoan `[[fee]]` entry (docs/fees.example.toml):

    replacement_cost = { Book = "120.00", Thesis = "300.00", default = "100.00" }
    claim_fee = "20.00"

`replacement_cost` is an amount (the same for every item) or a table by item type, the
request's ISO 18626 `publicationInfo.publicationType` as the open code list spells it
(Book, Thesis, Score, Map, ...; compared without regard to case), with `default` for the
others. A claim uses it when the loan has no declared value (settlement/claims.py).
Parsed and validated with the rest of the fee file (settlement/fees.py), stored in the
entry's normalised terms.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.money import Money
from schemas.rulefile import RuleFileError, parse_amount, parse_field

CLAIM_FIELDS = ("replacement_cost", "claim_fee")
# The service kind whose entries may carry them: the physical loan, the only item lost.
CLAIM_KIND = "BookLoan"
DEFAULT_TYPE = "default"
_TYPE_MAX = 50


@dataclass(frozen=True)
class ClaimTerms:
    """A schedule entry's claim terms, in minor units of its currency."""

    currency: str
    replacement_by_type: Mapping[str, int] = field(default_factory=dict)  # casefolded keys
    fee_minor: int = 0

    def replacement(self, item_type: str | None) -> Money | None:
        """The default replacement cost of an item of this type; None if the schedule
        names neither the type nor a default."""
        by = self.replacement_by_type
        key = (item_type or "").strip().casefold()
        minor = by.get(key) if key in by else by.get(DEFAULT_TYPE)
        return Money(minor, self.currency) if minor is not None else None

    @property
    def fee(self) -> Money:
        return Money(self.fee_minor, self.currency)

    @classmethod
    def from_terms(cls, terms: Mapping[str, Any], currency: str) -> ClaimTerms:
        """From an entry's stored terms (what `parse_claim_terms` returned, in the file's
        spelling)."""
        raw = terms.get("replacement_cost") or {}
        by = {k.casefold(): Money.from_decimal(v, currency).minor for k, v in raw.items()}
        fee = terms.get("claim_fee")
        return cls(currency=currency, replacement_by_type=by,
                   fee_minor=Money.from_decimal(fee, currency).minor if fee else 0)


def parse_claim_terms(raw: Mapping[str, Any], currency: str, where: str) -> dict[str, Any]:
    """The claim keys of one fee entry, normalised for its stored terms (a table of
    amount strings, and an amount string); RuleFileError names the field."""
    out: dict[str, Any] = {}
    if "replacement_cost" in raw:
        value = raw["replacement_cost"]
        table = {DEFAULT_TYPE: value} if isinstance(value, str) else value
        if not isinstance(table, Mapping) or not table:
            raise RuleFileError(f"{where}: replacement_cost: give an amount (\"120.00\") or a "
                                'table by item type ({ Book = "120.00", default = "100.00" })')
        seen: dict[str, str] = {}
        costs: dict[str, str] = {}
        for item_type, amount in table.items():
            name = str(item_type).strip()
            if not name or len(name) > _TYPE_MAX:
                raise RuleFileError(f"{where}: replacement_cost: item type {item_type!r} must "
                                    f"be 1 to {_TYPE_MAX} characters")
            if name.casefold() in seen:
                raise RuleFileError(f"{where}: replacement_cost: {name!r} and "
                                    f"{seen[name.casefold()]!r} are the same item type")
            seen[name.casefold()] = name
            money = parse_field(where, f"replacement_cost.{name}", parse_amount, amount,
                                currency)
            costs[name] = money.amount_text()
        out["replacement_cost"] = costs
    if "claim_fee" in raw:
        out["claim_fee"] = parse_field(where, "claim_fee", parse_amount, raw["claim_fee"],
                                       currency).amount_text()
    return out


__all__ = ["CLAIM_FIELDS", "CLAIM_KIND", "DEFAULT_TYPE", "ClaimTerms", "parse_claim_terms"]
