"""accept_copy: a supplier's upload, checked, hashed and moved into the document store."""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from delivery.intake import CopyProblem, accept_copy, release_drops
from delivery.paths import store_root
from delivery.retention import sweep
from schemas.settings import Settings
from tests.support.delivery import (
    SlowUpload,
    delivery_settings,
    ftp_upload,
    home,
    pdf_bytes,
    set_age,
)
from tests.support.servers import eventually


def tx() -> str:
    return f"tx-{uuid.uuid4().hex[:12]}"


def store_files(settings: Settings) -> set[str]:
    root = store_root(settings)
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()} \
        if root.exists() else set()


async def refused(pool: asyncpg.Pool, settings: Settings, supplier: str, item_id: str,
                  **overrides: object) -> CopyProblem:
    quick = delivery_settings(settings, **overrides)
    async with pool.acquire() as conn, conn.transaction():
        with pytest.raises(CopyProblem) as caught:
            await accept_copy(conn, quick, supplier=supplier, item_id=item_id,
                              transaction_id=tx())
    assert caught.value.field == "deliveryInfo.itemId"
    return caught.value


async def test_uploaded_pdf_is_stored_hashed_and_released(settings: Settings,
                                                          pool: asyncpg.Pool, dl_ftp,
                                                          dl_supplier, dl_settings) -> None:
    symbol, password = dl_supplier
    content = pdf_bytes(300_000)
    await asyncio.to_thread(ftp_upload, dl_ftp, symbol, password, "红楼梦研究.pdf", content)
    transaction = tx()
    async with pool.acquire() as conn, conn.transaction():
        doc = await accept_copy(conn, dl_settings, supplier=symbol, item_id="/红楼梦研究.pdf",
                                transaction_id=transaction)
        # Retried inside the same transaction: the same document, not a second one.
        again = await accept_copy(conn, dl_settings, supplier=symbol, item_id="红楼梦研究.pdf",
                                  transaction_id=transaction)
    assert again == doc
    assert doc.sha256 == hashlib.sha256(content).hexdigest()
    assert (doc.size, doc.content_type, doc.filename) == (len(content), "application/pdf",
                                                          "红楼梦研究.pdf")
    assert doc.path(settings).read_bytes() == content
    drop_file = home(settings, symbol) / "红楼梦研究.pdf"
    assert drop_file.exists()  # until the intake's transaction is known to have committed
    assert await release_drops(pool, settings) >= 1
    assert not drop_file.exists()
    assert await pool.fetchval("SELECT count(*) FROM ftp_upload WHERE supplier = $1",
                               symbol) == 0
    assert await pool.fetchval("SELECT drop_released_at IS NOT NULL FROM document WHERE id = $1",
                               uuid.UUID(doc.id))


async def test_non_pdf_renamed_pdf_is_refused_and_nothing_moves(settings: Settings,
                                                                pool: asyncpg.Pool, dl_ftp,
                                                                dl_supplier) -> None:
    symbol, password = dl_supplier
    zip_content = b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 2000
    await asyncio.to_thread(ftp_upload, dl_ftp, symbol, password, "paper.pdf", zip_content)
    before = store_files(settings)
    problem = await refused(pool, settings, symbol, "paper.pdf")
    assert str(problem) == ("deliveryInfo.itemId: file 'paper.pdf' is not a PDF "
                            "(starts with 'PK\\x03\\x04\\x14\\x00\\x00\\x00')")
    assert store_files(settings) == before
    assert (home(settings, symbol) / "paper.pdf").read_bytes() == zip_content


async def test_missing_empty_and_directory_items_are_named(settings: Settings,
                                                           pool: asyncpg.Pool, dl_ftp,
                                                           dl_supplier) -> None:
    symbol, password = dl_supplier
    await asyncio.to_thread(ftp_upload, dl_ftp, symbol, password, "empty.pdf", b"")
    (home(settings, symbol) / "folder").mkdir()
    assert str(await refused(pool, settings, symbol, "x.pdf")) == \
        "deliveryInfo.itemId: no file 'x.pdf' in your FTP home"
    assert "file 'empty.pdf' is empty" in str(await refused(pool, settings, symbol, "empty.pdf"))
    assert "'folder' is a directory" in str(await refused(pool, settings, symbol, "folder"))
    assert "is empty; give the path" in str(await refused(pool, settings, symbol, "  "))


async def test_paths_cannot_leave_the_suppliers_home(settings: Settings, pool: asyncpg.Pool,
                                                     dl_ftp, dl_supplier, make_agency,
                                                     tmp_path) -> None:
    symbol, _password = dl_supplier
    other, other_password = await make_agency(roles=("supplier",))
    await asyncio.to_thread(ftp_upload, dl_ftp, other, other_password, "theirs.pdf",
                            pdf_bytes(2000))
    outside = tmp_path / "outside.pdf"
    outside.write_bytes(pdf_bytes(2000))
    own = home(settings, other).parent / home(settings, symbol).name
    own.mkdir(exist_ok=True)
    (own / "link.pdf").symlink_to(outside)
    (own / "dir").symlink_to(home(settings, other), target_is_directory=True)

    assert "'..' is not allowed" in str(
        await refused(pool, settings, symbol, f"../{home(settings, other).name}/theirs.pdf"))
    # Another supplier's file is simply not in this supplier's home.
    assert "no file 'theirs.pdf'" in str(await refused(pool, settings, symbol, "theirs.pdf"))
    assert "no file" in str(await refused(pool, settings, symbol, str(outside)))
    assert "symbolic link" in str(await refused(pool, settings, symbol, "link.pdf"))
    assert "outside your FTP home" in str(await refused(pool, settings, symbol, "dir/theirs.pdf"))
    assert (home(settings, other) / "theirs.pdf").exists()


async def test_upload_in_progress_is_refused_until_finished(settings: Settings,
                                                            pool: asyncpg.Pool, dl_ftp,
                                                            dl_supplier, dl_settings) -> None:
    symbol, password = dl_supplier
    content = pdf_bytes(2 * 1024 * 1024)
    upload = SlowUpload(dl_ftp, symbol, password, "slow.pdf", content)
    upload.start()
    try:
        await asyncio.to_thread(upload.half_sent.wait, 10)

        async def arriving() -> bool:
            return (home(settings, symbol) / "slow.pdf").exists() and await pool.fetchval(
                "SELECT state = 'uploading' FROM ftp_upload WHERE supplier = $1", symbol)
        await eventually(arriving)
        problem = await refused(pool, settings, symbol, "slow.pdf")
        assert "upload of 'slow.pdf' still in progress" in str(problem)
    finally:
        upload.go_on.set()
        await asyncio.to_thread(upload.thread.join, 10)
    assert isinstance(upload.result, str) and upload.result.startswith("226")
    async with pool.acquire() as conn, conn.transaction():
        doc = await accept_copy(conn, dl_settings, supplier=symbol, item_id="slow.pdf",
                                transaction_id=tx())
    assert doc.sha256 == hashlib.sha256(content).hexdigest()


async def test_file_copied_in_by_hand_must_be_quiet_first(settings: Settings,
                                                          pool: asyncpg.Pool,
                                                          dl_supplier) -> None:
    symbol, _password = dl_supplier
    own = home(settings, symbol)
    own.mkdir(parents=True, exist_ok=True)
    (own / "manual.pdf").write_bytes(pdf_bytes(3000))
    strict = delivery_settings(settings, ftp__upload_quiet_seconds=60)
    problem = await refused(pool, settings, symbol, "manual.pdf", ftp__upload_quiet_seconds=60)
    assert "still in progress" in str(problem)
    set_age(own / "manual.pdf", hours=1)
    async with pool.acquire() as conn, conn.transaction():
        doc = await accept_copy(conn, strict, supplier=symbol, item_id="manual.pdf",
                                transaction_id=tx())
    assert doc.size > 0


async def test_size_and_type_limits_are_configurable(settings: Settings, pool: asyncpg.Pool,
                                                     dl_supplier) -> None:
    symbol, _password = dl_supplier
    own = home(settings, symbol)
    own.mkdir(parents=True, exist_ok=True)
    (own / "big.pdf").write_bytes(pdf_bytes(2 * 1024 * 1024 + 10))
    (own / "scan.tif").write_bytes(b"II*\x00" + b"\x00" * 500)
    assert "over the 1 MB limit" in str(await refused(pool, settings, symbol, "big.pdf",
                                                      ftp__max_upload_mb=1))
    assert "is not a PDF" in str(await refused(pool, settings, symbol, "scan.tif"))
    tiff_ok = delivery_settings(settings, ftp__allowed_types=["pdf", "tiff"])
    async with pool.acquire() as conn, conn.transaction():
        doc = await accept_copy(conn, tiff_ok, supplier=symbol, item_id="scan.tif",
                                transaction_id=tx())
    assert doc.content_type == "image/tiff"


async def test_rolled_back_intake_leaves_the_upload_in_place(settings: Settings,
                                                             pool: asyncpg.Pool, dl_ftp,
                                                             dl_supplier,
                                                             dl_settings) -> None:
    symbol, password = dl_supplier
    content = pdf_bytes(5000)
    await asyncio.to_thread(ftp_upload, dl_ftp, symbol, password, "retry.pdf", content)
    transaction = tx()

    class Crash(Exception):
        pass

    with pytest.raises(Crash):
        async with pool.acquire() as conn, conn.transaction():
            first = await accept_copy(conn, dl_settings, supplier=symbol, item_id="retry.pdf",
                                      transaction_id=transaction)
            raise Crash
    await release_drops(pool, settings)
    assert (home(settings, symbol) / "retry.pdf").read_bytes() == content
    # The redelivered CopyCompleted succeeds; the first attempt's copy is an orphan.
    async with pool.acquire() as conn, conn.transaction():
        second = await accept_copy(conn, dl_settings, supplier=symbol, item_id="retry.pdf",
                                   transaction_id=transaction)
    assert second.id != first.id
    # Another transaction cannot claim the same upload while it is still in the drop.
    problem = await refused(pool, settings, symbol, "retry.pdf")
    assert "already delivered for another transaction" in str(problem)

    orphan = first.path(settings)
    assert orphan.exists()
    set_age(orphan, hours=2)
    report = await sweep(pool, dl_settings, datetime.now(UTC) + timedelta(minutes=1))
    assert not report.skipped
    assert not orphan.exists()
    assert second.path(settings).exists()
    assert await pool.fetchval("SELECT count(*) FROM retention_log WHERE kind = 'orphan' "
                               "AND path = $1", first.store_name) == 1
