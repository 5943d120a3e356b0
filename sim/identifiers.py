"""Item identifiers with valid check digits: ISSN, ISBN-13 and the ISBN-10 of older books.

The simulations' catalogues (the demo's generated one, the chaos harness's and the
benchmarks' numbered ones) are made of these; the hub checks the digits on import.
"""

from __future__ import annotations


def issn_with_check(first7: str) -> str:
    total = sum(int(d) * w for d, w in zip(first7, range(8, 1, -1), strict=True))
    check = -total % 11
    return f"{first7[:4]}-{first7[4:]}{'X' if check == 10 else check}"


def isbn13_with_check(first12: str) -> str:
    total = sum(int(d) * (1 if i % 2 == 0 else 3) for i, d in enumerate(first12))
    return first12 + str(-total % 10)


def isbn10_of(isbn13: str) -> str | None:
    """The ISBN-10 of a 978 ISBN-13 (hyphens as given by the publisher prefix), else None."""
    if not isbn13.startswith("978"):
        return None
    body = isbn13[3:12]
    total = sum(int(d) * w for d, w in zip(body, range(10, 1, -1), strict=True))
    check = -total % 11
    return body + ("X" if check == 10 else str(check))


def hyphenate_isbn(isbn13: str, publisher: str) -> str:
    """978-7-302-12345-6 style, from the digits and the publisher prefix `7-302`."""
    group, pub = publisher.split("-")
    start = 3 + len(group) + len(pub)
    return f"{isbn13[:3]}-{group}-{pub}-{isbn13[start:12]}-{isbn13[12]}"


def issn_of(n: int) -> str:
    """The ISSN numbered `n` (below 10,000,000), e.g. 1 -> 0000-0019."""
    return issn_with_check(f"{n % 10_000_000:07d}")


def isbn13_of(n: int, prefix: str = "978711") -> str:
    """The ISBN-13 numbered `n` (below 1,000,000) under a publisher prefix."""
    return isbn13_with_check(f"{prefix}{n % 1_000_000:06d}")
