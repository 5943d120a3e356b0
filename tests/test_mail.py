"""The mail outbox and MailSender against a real SMTP server (aiosmtpd)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import asyncpg

from delivery.mail import enqueue_patron_mail
from infra.mailqueue import MailSender, enqueue_mail
from schemas.settings import Settings
from tests.support.delivery import (
    delivery_settings,
    pdf_bytes,
    put_document,
    put_grant,
    unique_email,
    with_smtp,
)


async def test_patron_mail_is_bilingual_and_properly_encoded(settings: Settings,
                                                             pool: asyncpg.Pool,
                                                             dl_smtp) -> None:
    await dl_smtp.start()
    doc = await put_document(pool, settings, pdf_bytes(1_500_000), filename="红楼梦研究.pdf")
    grant = await put_grant(pool, doc, downloads=5, days=30)
    title = "红楼梦版本研究：以甲戌本为中心"
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_patron_mail(conn, grant=grant, document=doc, title=title,
                                  supplier_name="北京大学图书馆", requester_name="复旦大学图书馆",
                                  base_url="https://ill.example.cn/", settings=settings)
    sender = MailSender(pool, with_smtp(delivery_settings(settings), dl_smtp))
    assert await sender.send_due() >= 1

    [msg] = dl_smtp.catcher.messages_to(grant.patron_email)
    raw = next(r for rcpts, r in dl_smtp.catcher.received if grant.patron_email in rcpts)
    assert b"=?utf-8?" in raw.split(b"\r\n\r\n", 1)[0]  # RFC 2047 encoded words, not raw UTF-8
    assert title in str(msg["Subject"])
    assert str(msg["Subject"]).startswith("文献传递 Document delivery")
    assert msg["To"].addresses[0].display_name == "李明"
    assert msg["Message-ID"].startswith("<") and msg["From"] == settings.smtp.mail_from
    text = msg.get_body(("plain",)).get_content()
    html = msg.get_body(("html",)).get_content()
    url = f"https://ill.example.cn/d/{grant.token}"
    for needle in (title, "北京大学图书馆", "复旦大学图书馆", "可下载次数：5 次",
                   "Downloads allowed: 5 times", url, "红楼梦研究.pdf", "1.4 MB"):
        assert needle in text, needle
    assert f'href="{url}"' in html and "有效期至" in html and "Available until" in html
    until = grant.expires_at.astimezone(__import__("zoneinfo").ZoneInfo(settings.timezone))
    assert until.strftime("%Y-%m-%d %H:%M") in text
    # Once sent, the stored copy (which holds a live link) is gone.
    row = await pool.fetchrow("SELECT sent_at, raw FROM mail_outbox WHERE message_id = $1",
                              msg["Message-ID"])
    assert row["sent_at"] is not None and row["raw"] is None


async def test_smtp_down_then_up_sends_each_mail_exactly_once(settings: Settings,
                                                              pool: asyncpg.Pool,
                                                              dl_smtp) -> None:
    smtp_settings = with_smtp(settings, dl_smtp)  # nothing listens on this port yet
    recipients = [unique_email("down") for _ in range(12)]
    async with pool.acquire() as conn, conn.transaction():
        for i, to in enumerate(recipients):
            await enqueue_mail(conn, to, f"对账单 Statement {i}", f"第 {i} 封 mail {i}")
    t0 = datetime.now(UTC)
    senders = [MailSender(pool, delivery_settings(smtp_settings)) for _ in range(3)]
    assert await senders[0].send_due(t0) == 0
    rows = await pool.fetch("SELECT attempts, available_at, last_error FROM mail_outbox "
                            "WHERE recipients[1] = ANY($1)", recipients)
    assert len(rows) == 12
    assert all(r["attempts"] == 1 and r["available_at"] >= t0 + timedelta(seconds=30)
               for r in rows)
    assert all("Connect" in r["last_error"] or "refused" in r["last_error"].lower()
               for r in rows)
    # Backing off: nothing is tried again before its time.
    assert await senders[1].send_due(t0 + timedelta(seconds=5)) == 0
    assert {r["attempts"] for r in await pool.fetch(
        "SELECT attempts FROM mail_outbox WHERE recipients[1] = ANY($1)", recipients)} == {1}

    await dl_smtp.start()
    later = t0 + timedelta(minutes=5)
    # Three senders at once (as from three hub processes): each mail still goes out once.
    sent = await asyncio.gather(*(s.send_due(later) for s in senders))
    assert sum(sent) >= 12
    assert await asyncio.gather(*(s.send_due(later) for s in senders)) == [0, 0, 0]
    for to in recipients:
        assert len(dl_smtp.catcher.messages_to(to)) == 1, to
    ids = {m["Message-ID"] for to in recipients for m in dl_smtp.catcher.messages_to(to)}
    assert len(ids) == 12
    assert await pool.fetchval("SELECT count(*) FROM mail_outbox WHERE recipients[1] = ANY($1) "
                               "AND sent_at IS NOT NULL", recipients) == 12


async def test_backoff_doubles_up_to_the_cap(settings: Settings, pool: asyncpg.Pool,
                                             dl_smtp) -> None:
    to = unique_email("backoff")
    async with pool.acquire() as conn:
        mail_id = await enqueue_mail(conn, to, "subject", "text")
    sender = MailSender(pool, with_smtp(delivery_settings(
        settings, smtp__backoff_seconds=30, smtp__max_backoff_seconds=200), dl_smtp))
    now = datetime.now(UTC)
    delays = []
    for _ in range(5):
        await sender.send_due(now)
        available = await pool.fetchval("SELECT available_at FROM mail_outbox WHERE id = $1",
                                        mail_id)
        delays.append((available - now).total_seconds())
        now = available
    assert delays == [30, 60, 120, 200, 200]
    await dl_smtp.start()
    assert await sender.send_due(now) >= 1
    assert len(dl_smtp.catcher.messages_to(to)) == 1


async def test_permanent_refusal_is_not_retried(settings: Settings, pool: asyncpg.Pool,
                                                dl_smtp) -> None:
    bad, good = unique_email("bad"), unique_email("good")
    dl_smtp.catcher.refuse.add(bad)
    await dl_smtp.start()
    async with pool.acquire() as conn:
        bad_id = await enqueue_mail(conn, bad, "s", "t")
        await enqueue_mail(conn, good, "s", "t")
    sender = MailSender(pool, with_smtp(delivery_settings(settings), dl_smtp))
    await sender.send_due()
    row = await pool.fetchrow("SELECT sent_at, failed_at, last_error FROM mail_outbox "
                              "WHERE id = $1", bad_id)
    assert row["sent_at"] is None and row["failed_at"] is not None and "550" in row["last_error"]
    assert len(dl_smtp.catcher.messages_to(good)) == 1
    await sender.send_due(datetime.now(UTC) + timedelta(days=1))
    assert dl_smtp.catcher.messages_to(bad) == []


async def test_generic_mail_with_chinese_attachment_name(settings: Settings,
                                                         pool: asyncpg.Pool, dl_smtp) -> None:
    await dl_smtp.start()
    to = unique_email("finance")
    statement = "机构,金额\n北京大学图书馆,12.50\n".encode("utf-8-sig")
    async with pool.acquire() as conn:
        await enqueue_mail(conn, [f"财务处 <{to}>"], "2025年7月结算单 Statement July 2025",
                           "附件为本期结算单。", "<p>附件为本期结算单。</p>",
                           [("结算单 2025-07.csv", statement, "text/csv"),
                            ("statement.pdf", pdf_bytes(2000), "application/pdf")])
    sender = MailSender(pool, with_smtp(delivery_settings(settings), dl_smtp))
    await sender.send_due()
    [msg] = dl_smtp.catcher.messages_to(to)
    raw = next(r for rcpts, r in dl_smtp.catcher.received if to in rcpts)
    assert b"filename*=utf-8''%E7%BB%93%E7%AE%97%E5%8D%95%202025-07.csv" in raw  # RFC 2231
    attachments = list(msg.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["结算单 2025-07.csv", "statement.pdf"]
    assert attachments[0].get_payload(decode=True) == statement
    assert msg["Subject"] == "2025年7月结算单 Statement July 2025"
    # No sender given at enqueue time: the sender's configured From is filled in.
    assert msg["From"] == settings.smtp.mail_from
    assert msg["To"].addresses[0].display_name == "财务处"
