"""The daily pull slips: each supplier with loans to pull gets its PDF by mail, once a day.

`send_pull_slips(pool, settings, day)` is the hub's daily job (app/hub.py schedules
`send_todays_pull_slips` in every hub process, in the morning before the stacks are
walked). For each enabled supplier with a loan to pull that day (broker/pull_slips.py)
and an `email`, it writes `<data_dir>/pull-slips/<day>/<symbol>.pdf` (the colon of the
symbol as `_`, as statements name files: CALIS_100010.pdf) and queues a mail to the
supplier with the PDF attached. Once per supplier and day, whichever process gets there
first: the primary key of `pull_slip_mail` (migration 0029) is the claim, taken in the
transaction that queues the mail. A supplier with nothing to pull, or no address to
mail, is not claimed: a later run the same day mails it once it has both.

A list is tens of pages at most, rendered in this process (milliseconds a page), so
the job needs no worker processes as a settlement run's thousands of statements do.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import asyncpg

from broker.pull_slip_pdf import render
from broker.pull_slips import PullList, pull_list, suppliers_to_pull
from infra.database import Connection
from infra.mailqueue import enqueue_mail
from schemas.settings import Settings
from settlement.statement_model import file_stem

__all__ = ["MAIL_KIND", "Sent", "mail_text", "send_pull_slips", "send_todays_pull_slips",
           "slip_path"]

log = logging.getLogger(__name__)

MAIL_KIND = "pull_slips"

# The claim: one row per supplier and day; a second process's insert waits for the
# first one's commit and then inserts nothing.
CLAIM = """
INSERT INTO pull_slip_mail (supplier, day, loans, file) VALUES ($1, $2, $3, $4)
ON CONFLICT (supplier, day) DO NOTHING RETURNING supplier"""
SET_MAIL = "UPDATE pull_slip_mail SET mail_id = $3 WHERE supplier = $1 AND day = $2"


@dataclass(frozen=True)
class Sent:
    """A supplier's pull slips of a day, written and queued for mail."""

    supplier: str
    path: Path
    loans: int
    mail_id: int


def slip_path(settings: Settings, day: date, supplier: str) -> Path:
    return Path(settings.data_dir) / "pull-slips" / day.isoformat() / f"{file_stem(supplier)}.pdf"


def attachment_name(pull: PullList) -> str:
    """The name the PDF travels under (Chinese; RFC 2231-encoded by the mailer)."""
    return f"馆际互借取书单-{file_stem(pull.supplier)}-{pull.day.isoformat()}.pdf"


async def send_pull_slips(pool: asyncpg.Pool, settings: Settings, day: date, *,
                          suppliers: Sequence[str] | None = None,
                          now: datetime | None = None) -> list[Sent]:
    """Write and mail the day's pull slips of every supplier with loans to pull (or of
    `suppliers` only: `run.py pull-slips SYMBOL --mail`) that was not mailed that day."""
    zone = ZoneInfo(settings.timezone)
    now = now or datetime.now(UTC)
    sent: list[Sent] = []
    async with pool.acquire() as conn:
        chosen = list(suppliers) if suppliers is not None \
            else await suppliers_to_pull(conn, day, zone)
        for supplier in chosen:
            if (done := await _send_one(conn, settings, supplier, day, zone, now)) is not None:
                sent.append(done)
    if sent:
        log.info("pull slips of %s: %d supplier(s) mailed, %d loan(s)", day.isoformat(),
                 len(sent), sum(s.loans for s in sent))
    return sent


async def send_todays_pull_slips(pool: asyncpg.Pool, settings: Settings,
                                 now: datetime | None = None) -> None:
    """The scheduled job: the pull slips of today (consortium-local), for a scheduler
    that calls its jobs with (pool, settings)."""
    now = now or datetime.now(UTC)
    await send_pull_slips(pool, settings, now.astimezone(ZoneInfo(settings.timezone)).date(),
                          now=now)


async def _send_one(conn: Connection, settings: Settings, supplier: str, day: date,
                    zone: ZoneInfo, now: datetime) -> Sent | None:
    pull = await pull_list(conn, supplier, day, zone, now)
    if not pull.loans:
        return None
    if not pull.supplier_email:
        log.warning("pull slips of %s for %s: it has no e-mail address; not mailed",
                    day.isoformat(), supplier)
        return None
    path = slip_path(settings, day, supplier)
    async with conn.transaction():
        if await conn.fetchval(CLAIM, supplier, day, len(pull.loans), str(path)) is None:
            return None
        render(pull, path, zone)
        subject, text = mail_text(pull)
        mail_id = await enqueue_mail(
            conn, pull.supplier_email, subject, text,
            attachments=[(attachment_name(pull), path.read_bytes(), "application/pdf")],
            kind=MAIL_KIND)
        await conn.execute(SET_MAIL, supplier, day, mail_id)
    return Sent(supplier=supplier, path=path, loans=len(pull.loans), mail_id=mail_id)


def mail_text(pull: PullList) -> tuple[str, str]:
    """The mail's subject and text, in Chinese and English like the hub's other mail."""
    n = len(pull.loans)
    day = pull.day.isoformat()
    subject = f"馆际互借取书单 Pull slips {day}: {n} 册 loan(s)"
    lines = [
        f"{pull.supplier_name}：",
        "",
        f"附件是 {day} 贵馆待取的 {n} 册馆际互借图书的取书单和寄送标签（每册一页，"
        "100×150 毫米标签纸，按索书号排列）。请取书后剪下取书单夹入书中，把标签贴在包裹上，"
        "并发送“已借出”（Loaned）。",
        "",
        f"Attached are the pull slips and shipping labels of the {n} interlibrary loan(s) "
        f"waiting for you on {day} (a page each, 100 x 150 mm label paper, in call number "
        "order). Pull each book, put its slip in it, stick the label on the parcel and "
        "answer Loaned.",
        "",
        "索书号 call number  题名 title  事务 transaction",
    ]
    lines += [f"  {loan.call_number or '-'}  {loan.title}  {loan.transaction_id}"
              for loan in pull.loans]
    lines += ["", "ILL Hub 馆际互借中心"]
    return subject, "\n".join(lines) + "\n"
