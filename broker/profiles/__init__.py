"""Peer profiles: the dialects of ISO 18626 that real ILL systems speak, as data.

Each agency has a profile (`run.py agency add/set ... --profile NAME`, default
`strict`). A profile is a list of named adjustments for what the peer sends (inbound)
and for what it is sent (outbound), each documented with where the behaviour comes from
(`table.py`, rendered in docs/peer-profiles.md). The hub's model stays one: adjustments
run at the edge only (`edge.py`), and what was received is kept as received.

    model.py       what an adjustment and a profile are
    vocabulary.py  open code lists spelt the hub's way
    fields.py      costs in the other field, statuses a system cannot take
    notes.py       conventions written into notes (ReShare, Alma, CrossLink)
    table.py       the adjustments and the profiles (the data)
    edge.py        applying them, and the originals kept
"""

from broker.profiles.edge import (
    adjustments_of,
    inbound,
    keep_original,
    normalise_at_intake,
    numbers_notes,
    originals,
    outbound,
    profile_named,
    profile_of,
    redacted,
    request_id_of,
)
from broker.profiles.model import Adjusted, Adjustment, Applied, Direction, Profile, Source
from broker.profiles.table import (
    ADJUSTMENTS,
    DEFAULT_PROFILE,
    PROFILE_NAMES,
    PROFILES,
    VOCABULARY,
    markdown,
)

__all__ = [
    "ADJUSTMENTS",
    "DEFAULT_PROFILE",
    "PROFILES",
    "PROFILE_NAMES",
    "VOCABULARY",
    "Adjusted",
    "Adjustment",
    "Applied",
    "Direction",
    "Profile",
    "Source",
    "adjustments_of",
    "inbound",
    "keep_original",
    "markdown",
    "normalise_at_intake",
    "numbers_notes",
    "originals",
    "outbound",
    "profile_named",
    "profile_of",
    "redacted",
    "request_id_of",
]
