"""The CQL query for an item's identifiers: `bath.isbn="9787..." or bath.isbn="7..."`.

Every term is quoted, and inside the quotes the characters CQL gives a meaning to (the
quote itself, backslash, and the masking characters * ? ^) are escaped, so an
identifier can never change the query's structure or turn into a wildcard.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

_SPECIAL = frozenset('"\\*?^')


def quote(term: str) -> str:
    """A CQL search term, quoted and escaped."""
    return '"' + "".join("\\" + ch if ch in _SPECIAL else ch for ch in term) + '"'


def isbn10_of(isbn13: str) -> str | None:
    """The ISBN-10 of a 978 ISBN-13 (older catalogue records carry only that form);
    the hub keeps ISBNs as ISBN-13 (broker/holdings.py)."""
    if len(isbn13) != 13 or not isbn13.startswith("978") or not isbn13.isdigit():
        return None
    body = isbn13[3:12]
    check = (11 - sum((10 - i) * int(d) for i, d in enumerate(body)) % 11) % 11
    return body + ("X" if check == 10 else str(check))


def terms(ids: Iterable[tuple[str, str]], indexes: Mapping[str, str]) -> list[tuple[str, str]]:
    """(index, term) for each identifier the catalogue has an index for, each once."""
    found: list[tuple[str, str]] = []
    for id_type, value in ids:
        index = indexes.get(id_type)
        if index is None:
            continue
        found.append((index, value))
        if id_type == "isbn":
            short = isbn10_of(value)
            if short is not None:
                found.append((index, short))
    return list(dict.fromkeys(found))


def query(pairs: Iterable[tuple[str, str]]) -> str:
    """The pairs joined by `or`: any identifier of the item finds its record."""
    return " or ".join(f"{index}={quote(term)}" for index, term in pairs)
