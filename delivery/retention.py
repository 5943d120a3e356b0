"""Retention: nothing delivered is kept past its time.

One sweep, safe to run from every hub process at once (a transaction-level
advisory lock lets exactly one of them work per tick; the others skip):

- documents whose grants have all ended (expired, revoked, or used up) more than
  `grace_days` ago are deleted from the store, and their readers' names,
  addresses and download addresses are purged from the grant and download rows;
- uploads left in the FTP drop longer than `abandoned_upload_hours` are deleted;
- store files without a live `document` row (an intake whose transaction rolled
  back, or a deletion interrupted before the unlink) are deleted after an hour;
- sent or refused mail older than `mail_keep_days` is deleted.

Every deletion is written to `retention_log`. Rows are marked deleted and the
transaction committed before files are unlinked, so a crash in between leaves
only an orphan file, which the next sweep removes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from delivery.intake import release_drops
from delivery.paths import ftp_root, store_root, symbol_of_home
from delivery.store import INCOMING_PREFIX
from infra.database import Connection
from infra.locks import Lock, try_transaction_lock
from schemas.settings import Settings

log = logging.getLogger(__name__)

ORPHAN_AGE = timedelta(hours=1)


@dataclass
class SweepReport:
    skipped: bool = False          # another process held the lock
    documents: int = 0
    uploads: int = 0
    orphans: int = 0
    mails: int = 0
    released: int = 0
    bytes_freed: int = 0
    deleted_paths: list[str] = field(default_factory=list)


EXPIRED_DOCUMENTS = """
SELECT d.id, d.store_name, d.size, d.transaction_id FROM document d
WHERE d.deleted_at IS NULL
  AND d.created_at <= $1
  AND NOT EXISTS (
      SELECT 1 FROM download_grant g
      WHERE g.document_id = d.id AND g.revoked_at IS NULL
        AND (CASE WHEN g.remaining = 0
                  THEN least(g.expires_at, coalesce(g.last_download_at, g.created_at))
                  ELSE g.expires_at END) > $1)
ORDER BY d.created_at
LIMIT $2
FOR UPDATE OF d SKIP LOCKED
"""


async def sweep(db: Connection | asyncpg.Pool, settings: Settings,
                now: datetime | None = None, *,
                batch: int = 1000) -> SweepReport:
    if isinstance(db, asyncpg.Pool):
        async with db.acquire() as pooled:
            return await sweep(pooled, settings, now, batch=batch)
    conn = db
    now = now or datetime.now(UTC)
    grace = timedelta(days=settings.delivery.grace_days)
    report = SweepReport()
    report.released = await release_drops(conn, settings)
    unlink: list[Path] = []
    store = store_root(settings)

    async with conn.transaction():
        if not await try_transaction_lock(conn, Lock.RETENTION):
            report.skipped = True
            return report

        docs = await conn.fetch(EXPIRED_DOCUMENTS, now - grace, batch)
        if docs:
            ids = [r["id"] for r in docs]
            await conn.execute("UPDATE document SET deleted_at = $2 WHERE id = ANY($1::uuid[])",
                               ids, now)
            await conn.execute(
                """UPDATE download_grant SET patron_email = NULL, patron_name = NULL
                   WHERE document_id = ANY($1::uuid[])""", ids)
            await conn.execute(
                """UPDATE download SET address = NULL, user_agent = NULL
                   WHERE grant_id IN (SELECT id FROM download_grant
                                      WHERE document_id = ANY($1::uuid[]))""", ids)
            await conn.executemany(
                """INSERT INTO retention_log (at, kind, ref, path, bytes, reason)
                   VALUES ($1, 'document', $2, $3, $4, $5)""",
                [(now, str(r["id"]), r["store_name"], r["size"],
                  f"all grants ended more than {settings.delivery.grace_days} days ago "
                  f"(transaction {r['transaction_id']})") for r in docs])
            unlink.extend(store / r["store_name"] for r in docs)
            report.documents = len(docs)
            report.bytes_freed += sum(r["size"] for r in docs)

        await _sweep_uploads(conn, settings, now, report)
        await _sweep_orphans(conn, store, now, report, exclude={r["store_name"] for r in docs})

        mails = await conn.fetchval(
            """WITH gone AS (DELETE FROM mail_outbox
                             WHERE coalesce(sent_at, failed_at) < $1 RETURNING 1)
               SELECT count(*) FROM gone""", now - timedelta(days=settings.smtp.keep_days))
        if mails:
            await conn.execute(
                "INSERT INTO retention_log (at, kind, reason) VALUES ($1, 'mail', $2)",
                now, f"{mails} sent or refused mail(s) older than {settings.smtp.keep_days} days")
        report.mails = int(mails)

    # Only now that the rows say so are the stored files removed.
    for path in unlink:
        await asyncio.to_thread(_unlink, path)
    report.deleted_paths.extend(str(p) for p in unlink)
    if report.documents or report.uploads or report.orphans or report.mails:
        log.info("retention: %d document(s), %d abandoned upload(s), %d orphan(s), %d mail(s); "
                 "%d bytes freed", report.documents, report.uploads, report.orphans,
                 report.mails, report.bytes_freed)
    return report


async def _sweep_uploads(conn: Connection, settings: Settings,
                         now: datetime, report: SweepReport) -> None:
    cutoff = (now - timedelta(hours=settings.ftp.abandoned_upload_hours)).timestamp()
    pending = {(r["supplier"], r["drop_path"]) for r in await conn.fetch(
        """SELECT supplier, drop_path FROM document
           WHERE drop_released_at IS NULL AND drop_path IS NOT NULL""")}
    old = await asyncio.to_thread(_old_files, ftp_root(settings), cutoff)
    for home, relative, size in old:
        supplier = symbol_of_home(home.name)
        if (supplier, relative) in pending:
            continue
        if not await asyncio.to_thread(_unlink, home / relative):
            continue
        await conn.execute("DELETE FROM ftp_upload WHERE supplier = $1 AND path = $2",
                           supplier, relative)
        await conn.execute(
            """INSERT INTO retention_log (at, kind, ref, path, bytes, reason)
               VALUES ($1, 'upload', $2, $3, $4, $5)""",
            now, supplier, relative, size,
            f"left in the FTP drop for more than {settings.ftp.abandoned_upload_hours:g} hours")
        report.uploads += 1
        report.bytes_freed += size
        report.deleted_paths.append(str(home / relative))


def _stale(top: Path, cutoff: float) -> list[tuple[Path, str, int]]:
    """(path, path relative to `top`, size) of files under `top` not modified since `cutoff`."""
    found: list[tuple[Path, str, int]] = []
    # followlinks=False: a symlink must not take the sweeper outside `top`.
    for directory, _dirs, files in os.walk(top, followlinks=False):
        for name in files:
            path = Path(directory) / name
            try:
                st = path.lstat()
            except OSError:
                continue
            if st.st_mtime < cutoff:
                found.append((path, path.relative_to(top).as_posix(), st.st_size))
    return found


def _old_files(root: Path, cutoff: float) -> list[tuple[Path, str, int]]:
    """(home, path inside it, size) of regular files not modified since `cutoff`."""
    if not root.is_dir():
        return []
    return [(home, relative, size) for home in root.iterdir()
            if home.is_dir() and not home.is_symlink()
            for _path, relative, size in _stale(home, cutoff)]


async def _sweep_orphans(conn: Connection, store: Path, now: datetime,
                         report: SweepReport, exclude: set[str]) -> None:
    cutoff = (now - ORPHAN_AGE).timestamp()
    candidates = await asyncio.to_thread(_store_files, store, cutoff)
    if not candidates:
        return
    names = [name for name, _size in candidates]
    live = {r["store_name"] for r in await conn.fetch(
        "SELECT store_name FROM document WHERE deleted_at IS NULL AND store_name = ANY($1)",
        names)}
    for name, size in candidates:
        if name in live or name in exclude:
            continue
        if not await asyncio.to_thread(_unlink, store / name):
            continue
        await conn.execute(
            """INSERT INTO retention_log (at, kind, path, bytes, reason)
               VALUES ($1, 'orphan', $2, $3, 'stored file without a live document')""",
            now, name, size)
        report.orphans += 1
        report.bytes_freed += size
        report.deleted_paths.append(str(store / name))


def _store_files(store: Path, cutoff: float) -> list[tuple[str, int]]:
    if not store.is_dir():
        return []
    return [(relative, size) for path, relative, size in _stale(store, cutoff)
            if path.name.startswith(INCOMING_PREFIX) or not path.name.startswith(".")]


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("retention: cannot delete %s: %s", path, exc)
        return False


def schedule_retention(scheduler: AsyncIOScheduler, settings: Settings, pool: asyncpg.Pool,
) -> Job:
    """Add the sweep to an APScheduler 3 AsyncIOScheduler (every `retention_minutes`).

    Each hub process may schedule it: the advisory lock makes one of them work per tick.
    """

    async def tick() -> None:
        await sweep(pool, settings)

    return scheduler.add_job(tick, "interval", minutes=settings.delivery.retention_minutes,
                             id="delivery.retention", replace_existing=True,
                             max_instances=1, coalesce=True)
