"""End to end: FTP upload -> intake -> grant -> e-mail -> the reader's downloads."""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import asyncpg

from delivery.grants import create_grant
from delivery.intake import accept_copy, release_drops
from delivery.mail import enqueue_patron_mail
from infra.mailqueue import MailSender
from schemas.settings import Settings
from tests.support.delivery import LINK, ftp_upload, home, pdf_bytes, unique_email, with_smtp


async def test_supplier_upload_reaches_the_reader_with_a_limited_link(
        settings: Settings, pool: asyncpg.Pool, dl_ftp, dl_supplier, dl_gateway, dl_smtp,
        dl_settings, dl_clock) -> None:
    symbol, password = dl_supplier
    content = pdf_bytes(1_200_000)
    await asyncio.to_thread(ftp_upload, dl_ftp, symbol, password, "红楼梦研究.pdf", content)

    # What the hub does on CopyCompleted (sentVia FTP, itemId the uploaded path), in the
    # transaction that advances the ILL transaction.
    reader = unique_email("patron")
    transaction = f"tx-{uuid.uuid4().hex[:10]}"
    title = "红楼梦版本研究"
    async with pool.acquire() as conn, conn.transaction():
        doc = await accept_copy(conn, dl_settings, supplier=symbol, item_id="/红楼梦研究.pdf",
                                transaction_id=transaction)
        grant = await create_grant(conn, document_id=doc.id, transaction_id=transaction,
                                   patron_email=reader, patron_name="王小明",
                                   downloads=dl_settings.delivery.grant_downloads(),
                                   days=dl_settings.delivery.days, now=dl_clock.now)
        await enqueue_patron_mail(conn, grant=grant, document=doc, title=title,
                                  supplier_name="北京大学图书馆",
                                  requester_name="复旦大学图书馆",
                                  base_url=dl_gateway.base_url, settings=settings)
    await release_drops(pool, settings)
    assert not (home(settings, symbol) / "红楼梦研究.pdf").exists()

    await dl_smtp.start()
    await MailSender(pool, with_smtp(dl_settings, dl_smtp)).send_due()
    [mail] = dl_smtp.catcher.messages_to(reader)
    assert title in str(mail["Subject"])
    body = mail.get_body(("plain",)).get_content()
    assert "可下载次数：5 次" in body and "Downloads allowed: 5 times" in body
    [link] = set(LINK.findall(body))

    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.get(link) as resp:
                assert resp.status == 200
                assert resp.content_disposition.filename == "红楼梦研究.pdf"
                assert await resp.read() == content
        async with http.get(link) as resp:
            assert resp.status == 410
            assert "馆际互借" in await resp.text()
