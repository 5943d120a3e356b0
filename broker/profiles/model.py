"""What a profile is made of: named adjustments, each with its direction and its sources.

An adjustment is a small function over one message in the hub's JSON form
(`{messageType: {...}}`, ARCHITECTURE §3.3), working on a copy: it changes the message
in place and says what it changed (nothing: an empty list). Inbound adjustments run
before the message is validated, so they read defensively (a field may have any type;
validation answers for it afterwards). An outbound adjustment may also decide that the
message is not sent at all (`Work.drop`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Direction(StrEnum):
    INBOUND = "inbound"    # from the peer, before intake validates and handles it
    OUTBOUND = "outbound"  # to the peer, as broker/peers.py writes its XML


@dataclass(frozen=True)
class Source:
    """Where a behaviour is documented: vendor documentation, or implementers' code."""

    label: str
    url: str


@dataclass
class Work:
    """One message being adjusted: its type, its content (a private copy), and context."""

    kind: str
    inner: dict[str, Any]
    # Outbound: the number the next `#seq:N#` marker takes (None: nothing to number by).
    seq: int | None = None
    # Outbound: why the message is not sent to this peer at all.
    drop: str | None = None
    # Inbound: the `#seq:N#` a ReShare note carried (recorded with the original).
    note_seq: int | None = None
    # Set by an adjustment that used `seq`, so the caller counts it as sent.
    seq_used: bool = False

    def part(self, name: str) -> dict[str, Any] | None:
        """A child object of the message, when it is one."""
        value = self.inner.get(name)
        return value if isinstance(value, dict) else None

    def ensure(self, name: str) -> dict[str, Any]:
        """A child object of the message, created empty when absent."""
        value = self.inner.get(name)
        if not isinstance(value, dict):
            value = {}
            self.inner[name] = value
        return value


# What an adjustment changed, in words for the audit trail and the log; empty: nothing.
Changes = list[str]


@dataclass(frozen=True)
class Adjustment:
    name: str
    direction: Direction
    summary: str  # one line: what it does, for the profile table
    sources: tuple[Source, ...]
    apply: Callable[[Work], Changes] = field(repr=False, compare=False)


@dataclass(frozen=True)
class Applied:
    adjustment: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {"adjustment": self.adjustment, "detail": self.detail}


@dataclass
class Adjusted:
    """A message after a profile's adjustments for one direction."""

    body: dict[str, Any]
    applied: list[Applied] = field(default_factory=list)
    drop: str | None = None
    note_seq: int | None = None
    seq_used: bool = False

    @property
    def changed(self) -> bool:
        return bool(self.applied)


@dataclass(frozen=True)
class Profile:
    """A peer's dialect: the adjustments applied to what it sends and to what it gets."""

    name: str
    title: str
    inbound: tuple[str, ...]
    outbound: tuple[str, ...]
    about: str  # when to choose it, and what is known of the system
