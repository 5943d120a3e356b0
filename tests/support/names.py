"""Names unique to this test run, so that runs and tests sharing the servers never meet.

Every agency symbol carries the run id (`T<run>:...`), and so do budget names and
transaction ids; `unique` numbers labels within the run. Pure: no server is touched.
"""

from __future__ import annotations

import itertools
import secrets

RUN_ID = secrets.token_hex(3)
_counter = itertools.count(1)


def unique(label: str = "x") -> str:
    """`label` followed by a number no other call in this run gets."""
    return f"{label}{next(_counter)}"


def agency_symbol(label: str | None = None) -> str:
    """A symbol unique to this run, shaped like a real one (`SCHEME:VALUE`)."""
    return f"T{RUN_ID}:{label or unique('LIB')}"


def budget_name(label: str = "b") -> str:
    """Budget names are global in the shared database: unique per test."""
    return f"{label}-{RUN_ID}-{unique('n')}"


def txn_id() -> str:
    """A transaction id for ledger postings made without a hub."""
    return f"ILL-T{RUN_ID}-{unique('X')}"


def fresh_issn() -> str:
    """A valid ISSN (check digit included) that no other test's suppliers hold."""
    digits = [secrets.randbelow(10) for _ in range(7)]
    check = (11 - sum(d * (8 - i) for i, d in enumerate(digits)) % 11) % 11
    body = "".join(map(str, digits))
    return f"{body[:4]}-{body[4:]}{'X' if check == 10 else check}"
