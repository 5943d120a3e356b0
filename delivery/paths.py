"""Where delivery keeps files under data_dir, and the rule that keeps paths inside a home.

    <data_dir>/ftp/<home dirname>/...   one FTP home per supplier
    <data_dir>/store/<xx>/<uuid>        stored documents
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

from schemas.settings import Settings


def data_root(settings: Settings) -> Path:
    return Path(settings.data_dir).resolve()


def ftp_root(settings: Settings) -> Path:
    return data_root(settings) / "ftp"


def store_root(settings: Settings) -> Path:
    return data_root(settings) / "store"


def home_dirname(symbol: str) -> str:
    """`CALIS:100010` -> `CALIS%3A100010`.

    Percent-encoding is injective (two symbols never share a home, unlike
    replacing ':' by '_') and the encoded ':' means a name can never be '.' or '..'.
    """
    return quote(symbol, safe="")


def symbol_of_home(dirname: str) -> str:
    return unquote(dirname)


def home_of(settings: Settings, symbol: str) -> Path:
    return ftp_root(settings) / home_dirname(symbol)


def is_inside(path: Path | str, root: Path | str) -> bool:
    """True if `path`, with every symlink resolved, is `root` or below it.

    Lexical checks are not enough: a symlink planted in a home (by an operator's
    mistake or a compromised account elsewhere) must not lead out of it.
    """
    real = os.path.realpath(path)
    base = os.path.realpath(root)
    return real == base or real.startswith(base.rstrip(os.sep) + os.sep)


class BadItemPath(ValueError):
    pass


def item_path(item_id: str) -> PurePosixPath:
    """deliveryInfo.itemId -> a relative path inside the supplier's home.

    Accepts what a supplier sees in its FTP client: `paper.pdf`, `/paper.pdf`,
    `/2025/paper.pdf`, or an `ftp://host/paper.pdf` URL. `..` is refused rather
    than clamped: a supplier naming a parent directory has made a mistake we
    should report, not silently reinterpret.
    """
    text = item_id.strip()
    if not text:
        raise BadItemPath("is empty; give the path of the file you uploaded to your FTP home")
    if text.lower().startswith("ftp://"):
        text = unquote(urlsplit(text).path)
    if "\x00" in text or "\\" in text:
        raise BadItemPath(f"{item_id!r} is not a valid path (no NUL or backslash)")
    parts = [p for p in PurePosixPath(text).parts if p not in ("/", ".")]
    if ".." in parts:
        raise BadItemPath(f"{item_id!r} must stay inside your FTP home ('..' is not allowed)")
    if not parts:
        raise BadItemPath(f"{item_id!r} names your FTP home itself, not a file in it")
    return PurePosixPath(*parts)
