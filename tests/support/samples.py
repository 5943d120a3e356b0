"""Real ISO 18626 messages written by other implementers, kept in `tests/data/iso18626/`
as published; their provenance and licence are in that folder's README.md."""

from __future__ import annotations

from tests.support.paths import DATA

COMMITTED = DATA / "iso18626"


def sample(name: str) -> str:
    """A sample's text, as published."""
    return (COMMITTED / name).read_text("utf-8")
