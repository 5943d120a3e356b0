"""Retention: expired documents and abandoned uploads go; live ones stay; one sweeper at a time."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from delivery.retention import sweep
from infra.locks import Lock
from infra.mailqueue import enqueue_mail
from schemas.settings import Settings
from tests.support.delivery import (
    delivery_settings,
    home,
    pdf_bytes,
    put_document,
    put_grant,
    set_age,
    unique_email,
)


async def deleted(pool: asyncpg.Pool, document_id: str) -> bool:
    return bool(await pool.fetchval("SELECT deleted_at IS NOT NULL FROM document WHERE id = $1",
                                    uuid.UUID(document_id)))


async def test_expired_documents_go_after_the_grace_period_live_ones_stay(
        settings: Settings, pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    expiring = await put_document(pool, settings, pdf_bytes(4000))
    live = await put_document(pool, settings, pdf_bytes(4000))
    old_grant = await put_grant(pool, expiring, days=30, now=now)
    await put_grant(pool, live, days=30, now=now)
    await put_grant(pool, live, days=60, now=now)  # a second reader keeps it alive
    quick = delivery_settings(settings, delivery__grace_days=7)

    report = await sweep(pool, quick, now + timedelta(days=36))
    assert not report.skipped
    assert expiring.path(settings).exists() and not await deleted(pool, expiring.id)

    report = await sweep(pool, quick, now + timedelta(days=38))
    assert report.documents >= 1
    assert not expiring.path(settings).exists() and await deleted(pool, expiring.id)
    assert live.path(settings).exists() and not await deleted(pool, live.id)
    row = await pool.fetchrow("SELECT patron_email, patron_name FROM download_grant "
                              "WHERE id = $1", old_grant.id)
    assert (row["patron_email"], row["patron_name"]) == (None, None)
    log = await pool.fetchrow("SELECT kind, path, bytes, reason FROM retention_log "
                              "WHERE ref = $1", expiring.id)
    assert (log["kind"], log["path"], log["bytes"]) == ("document", expiring.store_name, 4000)
    assert "7 days" in log["reason"]

    await sweep(pool, quick, now + timedelta(days=68))
    assert not live.path(settings).exists() and await deleted(pool, live.id)


async def test_used_up_grants_end_at_their_last_download(settings: Settings,
                                                         pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    doc = await put_document(pool, settings, pdf_bytes(3000))
    grant = await put_grant(pool, doc, downloads=1, days=60, now=now)
    await pool.execute("UPDATE download_grant SET remaining = 0, used = 1, last_download_at = $2 "
                       "WHERE id = $1", grant.id, now + timedelta(days=1))
    quick = delivery_settings(settings, delivery__grace_days=7)
    await sweep(pool, quick, now + timedelta(days=7, hours=23))
    assert doc.path(settings).exists()
    await sweep(pool, quick, now + timedelta(days=8, hours=1))
    assert not doc.path(settings).exists()


async def test_abandoned_uploads_are_removed_fresh_ones_kept(settings: Settings,
                                                             pool: asyncpg.Pool,
                                                             dl_supplier) -> None:
    symbol, _password = dl_supplier
    own = home(settings, symbol)
    (own / "sub").mkdir(parents=True)
    old, fresh = own / "sub" / "forgotten.pdf", own / "today.pdf"
    old.write_bytes(pdf_bytes(2000))
    fresh.write_bytes(pdf_bytes(2000))
    set_age(old, hours=25)
    await pool.execute("INSERT INTO ftp_upload (supplier, path, state, size) "
                       "VALUES ($1, 'sub/forgotten.pdf', 'done', 2000)", symbol)
    report = await sweep(pool, delivery_settings(settings), datetime.now(UTC))
    assert report.uploads == 1
    assert not old.exists() and fresh.exists()
    assert await pool.fetchval("SELECT count(*) FROM ftp_upload WHERE supplier = $1",
                               symbol) == 0
    log = await pool.fetchrow("SELECT kind, path FROM retention_log WHERE ref = $1", symbol)
    assert (log["kind"], log["path"]) == ("upload", "sub/forgotten.pdf")


async def test_only_one_process_sweeps_at_a_time(settings: Settings, pool: asyncpg.Pool,
                                                 database_url: str) -> None:
    other = await asyncpg.connect(database_url)
    try:
        async with other.transaction():
            await other.execute("SELECT pg_advisory_xact_lock($1)", int(Lock.RETENTION))
            report = await sweep(pool, delivery_settings(settings), datetime.now(UTC))
            assert report.skipped
        report = await sweep(pool, delivery_settings(settings), datetime.now(UTC))
        assert not report.skipped
    finally:
        await other.close()


async def test_old_sent_mail_is_purged(settings: Settings, pool: asyncpg.Pool) -> None:
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        kept = await enqueue_mail(conn, unique_email(), "s", "t")
        sent = await enqueue_mail(conn, unique_email(), "s", "t")
    await pool.execute("UPDATE mail_outbox SET sent_at = $2, raw = NULL WHERE id = $1", sent, now)
    await sweep(pool, delivery_settings(settings, smtp__keep_days=30), now + timedelta(days=31))
    remaining = {r["id"] for r in await pool.fetch(
        "SELECT id FROM mail_outbox WHERE id = ANY($1::bigint[])", [kept, sent])}
    assert remaining == {kept}  # unsent mail is never purged
    await pool.execute("UPDATE mail_outbox SET failed_at = $2 WHERE id = $1", kept, now)
