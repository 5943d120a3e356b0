"""The monthly mail to each library whose holdings failed (issue 18): the items its
holdings list that it answered it does not hold, so it can fix its catalogue.

Sent on the 2nd of each month for the month before (app/hub.py schedules it in every
hub process): once per supplier and month, whichever process gets there first (the
primary key of `holdings_mail` decides, in the transaction that queues the mail). It
lists the holdings still in doubt (broker/holdings_trust.py): one loaded again since,
or supplied since, is fixed already and not mentioned.
"""

from __future__ import annotations

import logging
from datetime import UTC, date, datetime, time
from zoneinfo import ZoneInfo

import asyncpg

from broker.holdings_trust import Doubt, doubts
from infra.database import Connection
from infra.mailqueue import enqueue_mail
from schemas.settings import Settings

__all__ = ["holdings_mail_text", "mail_holdings_quality", "mail_last_month"]

log = logging.getLogger(__name__)

MAIL_KIND = "holdings_quality"

# The claim: the row exists once per supplier and month; a second process's insert waits
# for the first one's commit and then inserts nothing.
CLAIM = """
INSERT INTO holdings_mail (supplier, month, failed) VALUES ($1, $2, $3)
ON CONFLICT (supplier, month) DO NOTHING RETURNING supplier"""
SET_MAIL = "UPDATE holdings_mail SET mail_id = $3 WHERE supplier = $1 AND month = $2"
CONTACT = "SELECT name, email FROM agency WHERE symbol = $1"


def _month(month: str) -> tuple[date, date]:
    """'2026-10' -> its first day and the next month's."""
    try:
        first = date.fromisoformat(f"{month}-01")
    except ValueError:
        raise ValueError(f"month {month!r}: want YYYY-MM") from None
    following = date(first.year + first.month // 12, first.month % 12 + 1, 1)
    return first, following


async def mail_holdings_quality(conn: Connection, settings: Settings,
                                month: str) -> list[tuple[str, int]]:
    """Queue the month's mail to each supplier with holdings in doubt from a not-held
    answer in that month (consortium-local), unless it had it already. Returns
    (supplier, mail id) of the mails queued now."""
    first, following = _month(month)
    zone = ZoneInfo(settings.timezone)
    since = datetime.combine(first, time(0), tzinfo=zone)
    until = datetime.combine(following, time(0), tzinfo=zone)
    by_supplier: dict[str, list[Doubt]] = {}
    for d in await doubts(conn, None, since, until):
        by_supplier.setdefault(d.supplier, []).append(d)
    queued: list[tuple[str, int]] = []
    for supplier, failed in sorted(by_supplier.items()):
        contact = await conn.fetchrow(CONTACT, supplier)
        if contact is None or not contact["email"]:
            continue  # nobody to tell: unclaimed, so a later run mails once it has one
        async with conn.transaction():
            if await conn.fetchval(CLAIM, supplier, first, len(failed)) is None:
                continue
            subject, text = holdings_mail_text(contact["name"], month, failed, zone)
            mail_id = await enqueue_mail(conn, contact["email"], subject, text,
                                         kind=MAIL_KIND)
            await conn.execute(SET_MAIL, supplier, first, mail_id)
        queued.append((supplier, mail_id))
    return queued


async def mail_last_month(pool: asyncpg.Pool, settings: Settings,
                          now: datetime | None = None) -> None:
    """The scheduled job: the mails of the month before `now` (consortium-local)."""
    today = (now or datetime.now(UTC)).astimezone(ZoneInfo(settings.timezone)).date()
    last = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)
    async with pool.acquire() as conn:
        queued = await mail_holdings_quality(conn, settings, f"{last:%Y-%m}")
    if queued:
        log.info("holdings quality of %s: %d mail(s) queued", f"{last:%Y-%m}", len(queued))


def holdings_mail_text(name: str, month: str, failed: list[Doubt],
                       zone: ZoneInfo) -> tuple[str, str]:
    """The mail's subject and text, in Chinese and English like the hub's other mail."""
    n = len(failed)
    subject = f"馆藏数据核对 Holdings to check {month}: {n} 种 item(s)"
    lines = [
        f"{name}：",
        "",
        f"{month} 月，贵馆馆藏数据列有下列 {n} 种文献，但馆际互借请求到达时，贵馆答复"
        "“无馆藏”“不在架”或“缺失”。在贵馆重新导入这些馆藏之前，中心会先向其他图书馆"
        "发送这些文献的请求。请核对并更正馆藏目录，然后重新导入馆藏数据。",
        "",
        f"In {month} your holdings listed the {n} item(s) below, but when interlibrary "
        "loan requests for them arrived you answered that you do not have them (NotHeld, "
        "NotOnShelf, Missing, Lost). Until you load these holdings again the hub asks other "
        "libraries first. Please check and correct your catalogue, then load your holdings "
        "again.",
        "",
        "标识类型 id type  标识 identifier  答复 answer  日期 date  事务 transaction",
    ]
    for d in failed:
        lines.append(f"  {d.id_type:<10} {d.id_value:<20} {d.reason:<12} "
                     f"{d.answered_at.astimezone(zone):%Y-%m-%d}  {d.transaction_id}")
    lines += ["", "ILL Hub 馆际互借中心"]
    return subject, "\n".join(lines) + "\n"
