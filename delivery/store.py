"""The document store: stored copies on disk under <data_dir>/store and their `document` rows."""

from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import asyncpg

from delivery.paths import store_root
from infra.database import Connection
from schemas.settings import Settings

CHUNK = 1024 * 1024
INCOMING_PREFIX = ".incoming-"


@dataclass(frozen=True)
class Document:
    id: str
    transaction_id: str
    supplier: str
    filename: str
    content_type: str
    size: int
    sha256: str
    store_name: str
    created_at: datetime

    def path(self, settings: Settings) -> Path:
        return store_root(settings) / self.store_name

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> Document:
        return cls(id=str(row["id"]), transaction_id=row["transaction_id"],
                   supplier=row["supplier"], filename=row["filename"],
                   content_type=row["content_type"], size=row["size"], sha256=row["sha256"],
                   store_name=row["store_name"], created_at=row["created_at"])


DOCUMENT_COLUMNS = ("id, transaction_id, supplier, filename, content_type, size, sha256, "
                    "store_name, created_at")


async def load_document(conn: Connection | asyncpg.Pool, document_id: str) -> Document:
    row = await conn.fetchrow(f"SELECT {DOCUMENT_COLUMNS} FROM document WHERE id = $1",
                              uuid.UUID(str(document_id)))
    if row is None:
        raise LookupError(f"no document {document_id}")
    return Document.from_row(row)


def new_store_name() -> tuple[str, str]:
    """A fresh document id and its place in the store (two-level, to keep directories small)."""
    doc_id = str(uuid.uuid4())
    return doc_id, f"{doc_id[:2]}/{doc_id}"


@dataclass(frozen=True)
class Copied:
    size: int
    sha256: str
    head: bytes


def copy_into_store(source_fd: int, target: Path, *,
                    head_check: Callable[[bytes], None] | None = None) -> Copied:
    """Copy an open file into the store while hashing it; atomic (temp file, fsync, rename).

    Blocking: run it in a thread. `head_check(head)` may raise to stop before
    anything is written. The copy, not the supplier's file, is what gets checked
    and served, so a supplier rewriting its upload afterwards changes nothing.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.parent / f"{INCOMING_PREFIX}{target.name}"
    digest = hashlib.sha256()
    size = 0
    with os.fdopen(os.dup(source_fd), "rb") as src:
        src.seek(0)
        head = src.read(CHUNK)
        if head_check is not None:
            head_check(head)
        try:
            with open(temp, "xb") as out:
                chunk = head
                while chunk:
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
                    chunk = src.read(CHUNK)
                out.flush()
                os.fsync(out.fileno())
            os.replace(temp, target)
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
    return Copied(size=size, sha256=digest.hexdigest(), head=head[:64])
