"""The reader's mail: a bilingual message with the download link to a delivered copy.

Queued through infra/mailqueue.py in the same transaction as the grant it announces.
"""

from __future__ import annotations

import html
import logging
from email.headerregistry import Address
from zoneinfo import ZoneInfo

from delivery.grants import Grant
from delivery.store import Document
from infra.database import Connection
from infra.mailqueue import build_message, enqueue_message
from schemas.settings import Settings

log = logging.getLogger(__name__)


def _size(n: int) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{max(1, round(n / 1024))} KB"


async def enqueue_patron_mail(conn: Connection, *, grant: Grant, document: Document,
                              title: str, supplier_name: str, requester_name: str,
                              base_url: str, settings: Settings) -> int:
    """The reader's bilingual mail with the download link; returns the mail id."""
    if not grant.patron_email:
        raise ValueError("the grant has no patron e-mail address")
    url = grant.url(base_url)
    tz = ZoneInfo(settings.timezone)
    until = grant.expires_at.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    until_label = f"{until} ({settings.timezone})"
    limit = grant.max_downloads
    times_zh = f"{limit} 次" if limit else "不限次数"
    times_en = f"{limit} time{'s' if limit != 1 else ''}" if limit else "unlimited"
    name = grant.patron_name or ""
    short_title = title if len(title) <= 60 else title[:59] + "…"
    subject = f"文献传递 Document delivery: {short_title}"
    size = _size(document.size)

    who_zh, who_en = name or "读者", name or "reader"
    intro_zh = f"您通过{requester_name}申请的文献已由{supplier_name}提供，请从以下链接下载："
    intro_en = (f"The document you requested through {requester_name} has been supplied by "
                f"{supplier_name}. Download it here:")
    note_zh = ("此链接仅供您本人使用，请勿转发。下载次数用完或过期后链接即失效；"
               f"如仍需要该文献，请联系{requester_name}的馆际互借服务。")
    note_en = ("This link is for your personal use; please do not forward it. It stops working "
               "once the downloads are used up or the date has passed; if you still need the "
               f"document, ask the interlibrary loan service of {requester_name}.")
    facts_zh = [("文献", title), ("文件", f"{document.filename}（{size}）"),
                ("可下载次数", times_zh), ("有效期至", until_label)]
    facts_en = [("Document", title), ("File", f"{document.filename} ({size})"),
                ("Downloads allowed", times_en), ("Available until", until_label)]

    def text_part(who: str, intro: str, facts: list[tuple[str, str]], note: str,
                  colon: str, greeting: str) -> str:
        lines = "\n".join(f"{k}{colon}{v}" for k, v in facts)
        return f"{greeting.format(who)}\n\n{intro}\n{url}\n\n{lines}\n\n{note}\n"

    text = (text_part(who_zh, intro_zh, facts_zh, note_zh, "：", "{}，您好：")
            + "\n" + "-" * 64 + "\n\n"
            + text_part(who_en, intro_en, facts_en, note_en, ": ", "Dear {},"))

    e = html.escape
    link = f'<a href="{e(url)}">{e(url)}</a>'

    def html_part(who: str, intro: str, facts: list[tuple[str, str]], note: str,
                  greeting: str, lang: str) -> str:
        rows = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in facts)
        return (f'<div lang="{lang}"><p>{e(greeting.format(who))}</p>'
                f"<p>{e(intro)}<br>{link}</p>"
                f'<table style="text-align: left">{rows}</table><p>{e(note)}</p></div>')

    body_html = (
        '<!doctype html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
        f"<title>{e(subject)}</title></head>\n"
        '<body style="font-family: sans-serif; line-height: 1.5">\n'
        + html_part(who_zh, intro_zh, facts_zh, note_zh, "{}，您好：", "zh-CN")
        + "\n<hr>\n"
        + html_part(who_en, intro_en, facts_en, note_en, "Dear {},", "en")
        + "\n</body></html>\n")
    to = Address(display_name=name, addr_spec=grant.patron_email)
    msg = build_message(grant.patron_email, subject, text, body_html,
                        sender=settings.smtp.mail_from, to_header=to)
    mail_id = await enqueue_message(conn, msg, [grant.patron_email], kind="patron_link",
                            transaction_id=grant.transaction_id)
    log.info("mail %d queued: download link %s… for transaction %s", mail_id,
             grant.token_prefix, grant.transaction_id)
    return mail_id
