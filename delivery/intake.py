"""Intake of an electronic copy named by a supplier's CopyCompleted (ARCHITECTURE §3.4 rule 6).

`accept_copy` runs inside the caller's PostgreSQL transaction. It checks the
upload, copies it into the store (hashing and type-checking the copy) and
inserts the `document` row. The supplier's file stays in the drop until that
transaction has committed: `release_drops` (run by the retention sweeper, and
cheap enough for the caller to run right after its commit) removes it then. So
a rolled-back or redelivered CopyCompleted finds the upload where the supplier
put it, and a committed one never leaves two live copies for long.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
import time
import uuid
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import asyncpg

from delivery.filetypes import HEAD_BYTES, FileType, describe_mismatch, sniff
from delivery.paths import BadItemPath, home_of, is_inside, item_path, store_root
from delivery.store import DOCUMENT_COLUMNS, Document, copy_into_store, new_store_name
from infra.database import Connection, fetch_one
from schemas.settings import Ftp, Settings

log = logging.getLogger(__name__)

ITEM_FIELD = "deliveryInfo.itemId"


class CopyProblem(Exception):
    """Why a delivered copy was refused; `field` names the ISO 18626 element at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True)
class _Upload:
    fd: int
    stat: os.stat_result


def _open_upload(home: Path, path: Path, shown: str) -> _Upload:
    if not is_inside(path.parent, home):
        raise CopyProblem(ITEM_FIELD, f"'{shown}' is outside your FTP home")
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise CopyProblem(ITEM_FIELD, f"no file '{shown}' in your FTP home") from None
    except NotADirectoryError:
        raise CopyProblem(ITEM_FIELD, f"no file '{shown}' in your FTP home") from None
    if stat.S_ISLNK(st.st_mode):
        raise CopyProblem(ITEM_FIELD, f"'{shown}' is a symbolic link, not an uploaded file")
    if stat.S_ISDIR(st.st_mode):
        raise CopyProblem(ITEM_FIELD, f"'{shown}' is a directory, not a file")
    if not stat.S_ISREG(st.st_mode):
        raise CopyProblem(ITEM_FIELD, f"'{shown}' is not a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise CopyProblem(ITEM_FIELD, f"'{shown}' cannot be read ({exc.strerror})") from None
    opened = os.fstat(fd)
    if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise CopyProblem(ITEM_FIELD, f"'{shown}' changed while being checked; "
                                      "send CopyCompleted again once the upload is finished")
    return _Upload(fd=fd, stat=opened)


async def _check_finished(conn: Connection, supplier: str, relative: str,
                          st: os.stat_result, shown: str, ftp: Ftp) -> None:
    row = await conn.fetchrow(
        "SELECT state, size FROM ftp_upload WHERE supplier = $1 AND path = $2", supplier, relative)
    if row is None:
        # Not uploaded through our FTP server (an operator copied it in): trust it
        # only once it has stopped changing.
        age = time.time() - st.st_mtime
        if age < ftp.upload_quiet_seconds:
            raise CopyProblem(ITEM_FIELD, f"upload of '{shown}' still in progress (changed "
                                          f"{age:.0f} s ago); send CopyCompleted when it is done")
        return
    if row["state"] == "uploading":
        raise CopyProblem(ITEM_FIELD, f"upload of '{shown}' still in progress; send "
                                      "CopyCompleted after the transfer has finished")
    if row["state"] == "partial":
        raise CopyProblem(ITEM_FIELD, f"upload of '{shown}' was interrupted; upload it again")
    if row["size"] != st.st_size:
        raise CopyProblem(ITEM_FIELD, f"'{shown}' changed after its upload finished "
                                      f"({row['size']} bytes then, {st.st_size} now); "
                                      "upload it again")


async def accept_copy(conn: Connection, settings: Settings, *, supplier: str,
                      item_id: str, transaction_id: str,
                      filename: str | None = None) -> Document:
    """Check and store the file `item_id` in `supplier`'s FTP home; raises CopyProblem.

    Idempotent per (supplier, file, transaction) until the upload is released, so
    a retried CopyCompleted gets the same Document back.
    """
    try:
        relative_path = item_path(item_id)
    except BadItemPath as exc:
        raise CopyProblem(ITEM_FIELD, str(exc)) from None
    relative = relative_path.as_posix()
    home = home_of(settings, supplier)

    earlier = await conn.fetchrow(
        f"""SELECT {DOCUMENT_COLUMNS} FROM document
            WHERE supplier = $1 AND drop_path = $2 AND drop_released_at IS NULL
              AND deleted_at IS NULL""", supplier, relative)
    if earlier is not None:
        if earlier["transaction_id"] == transaction_id:
            return Document.from_row(earlier)
        raise CopyProblem(ITEM_FIELD, f"'{relative}' was already delivered for another "
                                      "transaction; upload a separate file for this one")

    upload = await asyncio.to_thread(_open_upload, home, home / relative_path, relative)
    target: Path | None = None
    try:
        st = upload.stat
        if st.st_size == 0:
            raise CopyProblem(ITEM_FIELD, f"file '{relative}' is empty")
        if st.st_size > settings.ftp.max_upload_bytes:
            raise CopyProblem(ITEM_FIELD, f"file '{relative}' is {st.st_size / 2**20:.1f} MB, "
                                          f"over the {settings.ftp.max_upload_mb} MB limit")
        await _check_finished(conn, supplier, relative, st, relative, settings.ftp)

        found: list[FileType] = []

        def check_head(head: bytes) -> None:
            kind = sniff(head[:HEAD_BYTES], settings.ftp.allowed_types)
            if kind is None:
                raise CopyProblem(ITEM_FIELD, f"file '{relative}' "
                                  f"{describe_mismatch(head, settings.ftp.allowed_types)}")
            found.append(kind)

        doc_id, store_name = new_store_name()
        target = store_root(settings) / store_name
        copied = await asyncio.to_thread(copy_into_store, upload.fd, target, head_check=check_head)
        after = await asyncio.to_thread(os.fstat, upload.fd)
        if copied.size != st.st_size or after.st_size != st.st_size \
                or after.st_mtime_ns != st.st_mtime_ns:
            raise CopyProblem(ITEM_FIELD, f"'{relative}' changed while being stored; upload "
                                          "still in progress? Send CopyCompleted when it is done")
        kind = found[0]
        name = _display_name(filename or relative_path.name, kind)
        row = await fetch_one(
            conn,
            f"""INSERT INTO document (id, transaction_id, supplier, filename, content_type, size,
                                      sha256, store_name, drop_path, drop_size, drop_mtime_ns)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                RETURNING {DOCUMENT_COLUMNS}""",
            uuid.UUID(doc_id), transaction_id, supplier, name, kind.mime, copied.size,
            copied.sha256, store_name, relative, st.st_size, st.st_mtime_ns)
    except BaseException:
        if target is not None:
            await asyncio.to_thread(target.unlink, missing_ok=True)
        raise
    finally:
        os.close(upload.fd)
    document = Document.from_row(row)
    log.info("stored %s from %s for %s: %d bytes, sha256 %s", document.id, supplier,
             transaction_id, document.size, document.sha256[:12])
    return document


def _display_name(name: str, kind: FileType) -> str:
    """The name readers get: the supplier's, minus control characters, with a fitting suffix."""
    cleaned = "".join(ch for ch in name if ch.isprintable() and ch not in '/\\"').strip()
    if not cleaned or cleaned.startswith("."):
        cleaned = f"document{cleaned}"
    if not PurePosixPath(cleaned).suffix:
        cleaned += kind.extension
    return cleaned[:200]


async def release_drops(db: Connection | asyncpg.Pool, settings: Settings,
                        *, limit: int = 500) -> int:
    """Remove from the drop the uploads of committed documents; returns how many.

    A file the supplier replaced since (other size or mtime) is a new upload and
    is left alone; only our record of it is closed.
    """
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as pooled:
            return await release_drops(pooled, settings, limit=limit)
    conn = db
    released = 0
    async with conn.transaction():
        rows = await conn.fetch(
            """SELECT id, supplier, drop_path, drop_size, drop_mtime_ns FROM document
               WHERE drop_released_at IS NULL AND drop_path IS NOT NULL
               ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED""", limit)
        for row in rows:
            path = home_of(settings, row["supplier"]) / row["drop_path"]
            removed = await asyncio.to_thread(_remove_if_same, home_of(settings, row["supplier"]),
                                              path, row["drop_size"], row["drop_mtime_ns"])
            if removed:
                await conn.execute("DELETE FROM ftp_upload WHERE supplier = $1 AND path = $2",
                                   row["supplier"], row["drop_path"])
            await conn.execute("UPDATE document SET drop_released_at = now() WHERE id = $1",
                               row["id"])
            released += 1
    return released


def _remove_if_same(home: Path, path: Path, size: int, mtime_ns: int) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode) or not is_inside(path, home):
        return False
    if (st.st_size, st.st_mtime_ns) != (size, mtime_ns):
        return False
    path.unlink(missing_ok=True)
    return True
