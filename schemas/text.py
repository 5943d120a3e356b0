"""Chinese text as a terminal or a fixed-width page lays it out."""

from __future__ import annotations

import unicodedata


def is_wide(ch: str) -> bool:
    """Chinese (and other East Asian wide) characters take two columns."""
    return unicodedata.east_asian_width(ch) in "WF"


def display_width(text: str) -> int:
    """Columns `text` takes in a terminal; padding by len() would skew Chinese columns."""
    return sum(2 if is_wide(ch) else 1 for ch in text)
