"""Real ISO 18626 messages written by other implementers (tests/data/iso18626/README.md).

Those committed here are in `tests/data/iso18626/`. Those taken from a snapshot of a
public repository are kept outside the repository, in the steering repository's
`shared/iso18626-peers/` (or wherever `ILLHUB_TEST_PEER_SAMPLES` points); a test that
reads one is skipped, saying why, where that folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.paths import DATA, ROOT

COMMITTED = DATA / "iso18626"
PEER_SAMPLES = Path(os.environ.get("ILLHUB_TEST_PEER_SAMPLES",
                                   str(ROOT.parent / "shared" / "iso18626-peers")))


def sample(name: str) -> str:
    """A committed sample's text."""
    return (COMMITTED / name).read_text("utf-8")


def peer_sample(name: str) -> str:
    """A sample kept outside the repository (skips the test if it is not there)."""
    path = PEER_SAMPLES / name
    if not path.is_file():
        pytest.skip(f"{name}: the real message is kept outside the repository, in "
                    f"{PEER_SAMPLES} (absent here); see tests/data/iso18626/README.md")
    return path.read_text("utf-8")
