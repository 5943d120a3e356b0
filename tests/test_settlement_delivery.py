"""Settlement delivered to finance staff: ill.finance messages (real RabbitMQ) and e-mail
with the statements attached (real SMTP server, aiosmtpd)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re

import aio_pika
import asyncpg

from infra import topology
from infra.mailqueue import MailSender
from infra.relay import Relay
from schemas import wire
from schemas.settings import Settings
from settlement.run import settle
from settlement.statement_model import (
    attachment_name,
    statement_name,
    statements_dir,
    summary_name,
)
from tests.support.delivery import delivery_settings, unique_email, with_smtp
from tests.support.settlement import after, fresh_year, worked_example


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def test_finance_messages_arrive_on_ill_finance(pool: asyncpg.Pool,
                                                      settings: Settings) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)
    connection = await aio_pika.connect(settings.amqp.url.get_secret_value())
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        exchanges = await topology.declare(channel, settings)
        queue = await channel.declare_queue(exclusive=True)
        finance = exchanges[wire.FINANCE]
        await queue.bind(finance, routing_key=f"settlement.{period}")
        for symbol in (pku, fdu, lzu):
            await queue.bind(finance, routing_key=f"statement.{symbol}")

        result = await settle(pool, settings, period, now=after(period))
        assert result is not None and result.created
        relay = Relay(pool, channel, settings)
        ours = f"%:{period}:{result.run_id}%"
        for _ in range(20):   # older rows of other tests may be ahead of ours, backing off
            await relay.drain()
            if not await pool.fetchval("SELECT count(*) FROM outbox WHERE message_id LIKE $1 "
                                       "AND published_at IS NULL", ours):
                break
            await asyncio.sleep(0.1)

        got: dict[str, aio_pika.abc.AbstractIncomingMessage] = {}
        for _ in range(100):
            message = await queue.get(fail=False, timeout=5)
            if message is None:
                if len(got) == 4:
                    break
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            got[message.routing_key or ""] = message
        assert sorted(got) == sorted([f"settlement.{period}", f"statement.{pku}",
                                      f"statement.{fdu}", f"statement.{lzu}"])

    directory = statements_dir(settings, period)
    summary = got[f"settlement.{period}"]
    assert summary.message_id == f"settlement:{period}:{result.run_id}"
    assert summary.type == "settlement" and summary.content_type == "application/json"
    assert summary.correlation_id == period
    body = json.loads(summary.body)
    assert body["period"] == period and body["runId"] == result.run_id
    assert body["agencyCount"] == 3 and body["postings"] == 4 and body["latePostings"] == 0
    [cny] = body["totals"]
    assert (cny["currencyCode"], cny["netSum"], cny["centrePosition"], cny["subsidyOutlay"],
            cny["agenciesReceive"], cny["agenciesPay"]) == (
        "CNY", "29.00", "-29.00", "29.00", "31.00", "2.00")
    assert body["subsidy"]["byRule"] == [{"rule": "读者补贴 reader support",
                                          "currencyCode": "CNY", "postings": 3,
                                          "amount": "29.00"}]
    assert body["invariants"]["ok"] is True
    assert body["invariants"]["everyEntryInOneStatement"]["linesWritten"] == 8
    assert [f["name"] for f in body["files"]] == [summary_name(period, "csv"),
                                                  summary_name(period, "pdf")]
    for f in body["files"] + [f for s in body["statements"] for f in s["files"]]:
        data = (directory / f["name"]).read_bytes()
        assert f["sha256"] == sha256(data) and f["bytes"] == len(data)

    lzu_message = json.loads(got[f"statement.{lzu}"].body)
    assert got[f"statement.{lzu}"].type == "statement"
    assert lzu_message["agency"] == lzu and lzu_message["name"] == "兰州大学图书馆"
    assert lzu_message["agencyId"] == dict(zip(("agencyIdType", "agencyIdValue"),
                                               lzu.split(":", 1), strict=True))
    assert lzu_message["amounts"] == [{"currencyCode": "CNY", "net": "-2.00",
                                       "direction": "pay", "earned": "12.00",
                                       "owed": "28.00", "subsidy": "14.00",
                                       "patronShare": "14.00"}]
    assert lzu_message["counts"] == {"lines": 3, "asSupplier": 1, "asRequester": 2, "late": 0}
    assert [f["name"] for f in lzu_message["files"]] == [statement_name(lzu, period, "csv"),
                                                         statement_name(lzu, period, "pdf")]
    assert json.loads(got[f"statement.{pku}"].body)["amounts"][0]["direction"] == "receive"


async def test_finance_emails_arrive_with_the_statements(pool: asyncpg.Pool, settings: Settings,
                                                        dl_smtp) -> None:
    await dl_smtp.start()
    year = await fresh_year(pool)
    period, pku, _fdu, lzu = await worked_example(pool, year, emails=True)
    centre = unique_email("centre-finance")
    result = await settle(pool, settings, period, now=after(period), centre_email=centre)
    assert result is not None
    lzu_mail = result.statement(lzu).finance_email
    assert lzu_mail and all(s.mail_id for s in result.statements)

    sender = MailSender(pool, with_smtp(delivery_settings(settings), dl_smtp))
    wanted = [s.finance_email for s in result.statements] + [centre]
    for _ in range(20):
        await sender.send_due()
        if all(dl_smtp.catcher.messages_to(a) for a in wanted):
            break
    directory = statements_dir(settings, period)

    [msg] = dl_smtp.catcher.messages_to(lzu_mail)
    raw = next(r for rcpts, r in dl_smtp.catcher.received if lzu_mail in rcpts)
    head = raw.split(b"\r\n\r\n", 1)[0]
    assert b"=?utf-8?" in head                        # the Chinese subject, RFC 2047
    assert str(msg["Subject"]) == (f"馆际互借结算对账单 ILL settlement statement {period} — "
                                   "兰州大学图书馆")
    text = msg.get_body(("plain",)).get_content()
    assert "本期应付中心净额：2.00 CNY" in text
    assert "Net amount to pay to the centre: 2.00 CNY" in text
    attachments = {a.get_filename(): a for a in msg.iter_attachments()}
    csv_name, pdf_name = (statement_name(lzu, period, "csv"), statement_name(lzu, period, "pdf"))
    assert sorted(attachments) == sorted([attachment_name(csv_name), attachment_name(pdf_name)])
    assert attachment_name(csv_name).startswith("馆际互借结算对账单-")
    assert re.search(rb"filename\*(0\*)?=utf-8''%E9%A6%86", raw)   # Chinese names, RFC 2231
    csv_part = attachments[attachment_name(csv_name)]
    assert csv_part.get_content_type() == "text/csv"
    assert csv_part.get_payload(decode=True) == (directory / csv_name).read_bytes()
    assert attachments[attachment_name(pdf_name)].get_payload(decode=True) == \
        (directory / pdf_name).read_bytes()
    assert sha256((directory / csv_name).read_bytes()) in text

    [pku_msg] = dl_smtp.catcher.messages_to(result.statement(pku).finance_email or "")
    assert "Net amount to receive from the centre: 26.00 CNY" in \
        pku_msg.get_body(("plain",)).get_content()

    [summary] = dl_smtp.catcher.messages_to(centre)
    assert str(summary["Subject"]) == f"馆际互借中心结算汇总 ILL settlement summary {period}"
    names = sorted(a.get_filename() for a in summary.iter_attachments())
    assert names == sorted([attachment_name(summary_name(period, "csv")),
                            attachment_name(summary_name(period, "pdf"))])
    assert "subsidy outlay 29.00" in summary.get_body(("plain",)).get_content()


async def test_statements_too_large_to_attach_are_announced(pool: asyncpg.Pool,
                                                            settings: Settings,
                                                            dl_smtp) -> None:
    await dl_smtp.start()
    year = await fresh_year(pool)
    period, _pku, fdu, _lzu = await worked_example(pool, year, emails=True)
    result = await settle(pool, settings, period, now=after(period), max_attachment_bytes=100)
    assert result is not None
    address = result.statement(fdu).finance_email or ""
    sender = MailSender(pool, with_smtp(delivery_settings(settings), dl_smtp))
    for _ in range(20):
        await sender.send_due()
        if dl_smtp.catcher.messages_to(address):
            break
    [msg] = dl_smtp.catcher.messages_to(address)
    assert list(msg.iter_attachments()) == []
    text = msg.get_body(("plain",)).get_content()
    assert "too large to attach" in text and "Net amount to receive from the centre: 5.00" in text
    assert attachment_name(statement_name(fdu, period, "csv")) in text
