"""Where things are: the repository root (run.py, docs/) and the tests' own data."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent
DOCS = ROOT / "docs"
DATA = ROOT / "tests" / "data"
