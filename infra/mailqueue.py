"""Outgoing mail through its own outbox table (`mail_outbox`), sent by MailSender.

Mail is rendered when enqueued (inside the caller's transaction) and stored as
the exact bytes to send, with a Message-ID fixed at that moment. Anyone may queue
mail here: delivery (readers' links), settlement (statements), operators' notices.

Delivery semantics: at least once, with a window of one message. MailSender
locks one row (`FOR UPDATE SKIP LOCKED`), hands it to the SMTP server and marks
it sent in the same transaction that holds the lock, so two senders never send
the same row. If the process dies after the SMTP server accepted the message
but before that commit, the row is sent again on restart; receivers can
de-duplicate on its unchanged Message-ID. While the server is unreachable each
due row backs off exponentially (30 s, 1 min, 2 min ... up to an hour); a
permanent refusal (5xx) marks the row failed instead of retrying forever.

Transport security follows `smtp.security` (schemas/settings.py): "starttls" (the
default) requires STARTTLS, "tls" speaks TLS from the first byte (port 465), "auto" uses
STARTTLS when the server offers it, "none" is cleartext (a relay on the same host). With
TLS the server's certificate and name are verified (infra/tls.py: ILLHUB_SMTP__CA_FILE
or the system's CAs). A server that does not offer the STARTTLS required of it, or
whose certificate cannot be verified, is treated like one that is down: the mail stays
queued and backs off, the row and the log say why, and nothing goes out in cleartext.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime, getaddresses, parseaddr

import aiosmtplib
import asyncpg

from infra.database import Connection
from infra.tls import smtp_context
from schemas.settings import Settings, env_name

log = logging.getLogger(__name__)

NOTIFY_CHANNEL = "illhub_mail"
Attachment = tuple[str, bytes, str]  # (file name, content, MIME type)


def _message_id(sender: str | None) -> str:
    domain = parseaddr(sender or "")[1].rpartition("@")[2] or "illhub.invalid"
    return f"<{uuid.uuid4().hex}@{domain}>"


def _address_list(to: str | Sequence[str]) -> list[str]:
    items = [to] if isinstance(to, str) else list(to)
    return [addr for _name, addr in getaddresses(items) if addr]


def build_message(to: str | Sequence[str], subject: str, text: str, html_body: str | None = None,
                  attachments: Sequence[Attachment] = (), *, sender: str | None = None,
                  message_id: str | None = None, to_header: Address | None = None,
                  now: datetime | None = None) -> EmailMessage:
    """A MIME message: Chinese in headers as RFC 2047 words, in file names as RFC 2231."""
    msg = EmailMessage(policy=SMTP)
    msg["Subject"] = subject
    if to_header is not None:
        msg["To"] = to_header
    else:
        msg["To"] = [to] if isinstance(to, str) else list(to)
    if sender:
        msg["From"] = sender
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = message_id or _message_id(sender)
    msg["Auto-Submitted"] = "auto-generated"
    # base64, not 8bit: some relays still lack 8BITMIME.
    msg.set_content(text, cte="base64")
    if html_body is not None:
        msg.add_alternative(html_body, subtype="html", cte="base64")
    for filename, content, mime in attachments:
        maintype, _, subtype = mime.partition("/")
        msg.add_attachment(content, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=filename)
    return msg


async def enqueue_message(conn: Connection, msg: EmailMessage, recipients: list[str], *,
                  kind: str, transaction_id: str | None) -> int:
    """Queue a built message in the caller's transaction; returns its id."""
    if not recipients:
        raise ValueError("a mail needs at least one recipient address")
    mail_id = await conn.fetchval(
        """INSERT INTO mail_outbox (message_id, kind, transaction_id, recipients, raw)
           VALUES ($1, $2, $3, $4, $5) RETURNING id""",
        msg["Message-ID"], kind, transaction_id, recipients, msg.as_bytes(policy=SMTP))
    # Delivered at commit, so a waiting MailSender wakes when there is mail to send.
    await conn.execute("SELECT pg_notify($1, '')", NOTIFY_CHANNEL)
    return int(mail_id)


async def enqueue_mail(conn: Connection, to: str | Sequence[str], subject: str,
                       text: str, html: str | None = None,
                       attachments: Sequence[Attachment] = (), *, sender: str | None = None,
                       kind: str = "generic", transaction_id: str | None = None) -> int:
    """Queue any mail (finance statements, notices) in the caller's transaction; returns its id.

    Without `sender`, MailSender fills in settings.smtp.mail_from when sending.
    """
    msg = build_message(to, subject, text, html, attachments, sender=sender)
    return await enqueue_message(conn, msg, _address_list(to), kind=kind,
                                 transaction_id=transaction_id)



def _is_permanent(exc: BaseException) -> bool:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return all(500 <= r.code < 600 for r in exc.recipients)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return 500 <= exc.code < 600
    return False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _certificate_error(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate failure behind an SMTP error (aiosmtplib wraps the one of an
    implicit-TLS connect in SMTPConnectError), if that is what it was."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return cause
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def _no_starttls(exc: BaseException) -> bool:
    # aiosmtplib's only sign of it: a bare SMTPException, raised before any TLS.
    return type(exc) is aiosmtplib.SMTPException and "STARTTLS" in str(exc)


class MailSender:
    """Sends due rows of `mail_outbox`; several may run, in one or many processes."""

    def __init__(self, pool: asyncpg.Pool, settings: Settings,
                 *,
                 clock: Callable[[], datetime] | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        """`tls_context`: what the server's certificate is verified with (default: built
        from settings, `infra.tls.smtp_context`; unused with security "none")."""
        self.pool = pool
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.tls_context = tls_context if tls_context is not None \
            else smtp_context(settings)
        self._from_header = settings.smtp.mail_from
        self._envelope_from = parseaddr(settings.smtp.mail_from)[1] or "illhub@localhost"
        self._wake = asyncio.Event()
        self._stopping = False

    def backoff(self, attempts: int) -> timedelta:
        """Delay before the next try after `attempts` failed ones (1 -> base)."""
        seconds = min(self.settings.smtp.max_backoff_seconds,
                      self.settings.smtp.backoff_seconds * 2 ** min(max(attempts - 1, 0), 20))
        return timedelta(seconds=seconds)

    async def _connect(self) -> aiosmtplib.SMTP:
        mode = self.settings.smtp.security
        password = self.settings.smtp.password
        # start_tls None is aiosmtplib's "if offered"; True makes connect() fail (before
        # any login or mail) when the server does not offer it.
        smtp = aiosmtplib.SMTP(
            hostname=self.settings.smtp.host, port=self.settings.smtp.port,
            timeout=self.settings.smtp.timeout, use_tls=mode == "tls",
            start_tls={"auto": None, "starttls": True}.get(mode, False),
            tls_context=self.tls_context if mode != "none" else None,
            username=self.settings.smtp.user,
            password=password.get_secret_value() if password else None,
        )
        await smtp.connect()
        return smtp

    def _with_from(self, raw: bytes) -> bytes:
        if raw.startswith(b"From:") or b"\r\nFrom:" in raw.split(b"\r\n\r\n", 1)[0]:
            return raw
        header = EmailMessage(policy=SMTP)
        header["From"] = self._from_header
        return header.as_bytes(policy=SMTP).split(b"\r\n\r\n", 1)[0] + b"\r\n" + raw

    async def send_due(self, now: datetime | None = None, limit: int = 100) -> int:
        """Send mail due at `now` (default: the clock); returns how many were sent."""
        now = now or self.clock()
        sent = 0
        smtp: aiosmtplib.SMTP | None = None
        try:
            for _ in range(limit):
                async with self.pool.acquire() as conn, conn.transaction():
                    row = await conn.fetchrow(
                        """SELECT id, message_id, recipients, raw, attempts FROM mail_outbox
                           WHERE sent_at IS NULL AND failed_at IS NULL AND available_at <= $1
                           ORDER BY available_at, id LIMIT 1 FOR UPDATE SKIP LOCKED""", now)
                    if row is None:
                        break
                    try:
                        if smtp is None:
                            smtp = await self._connect()
                        await smtp.sendmail(self._envelope_from, list(row["recipients"]),
                                            self._with_from(bytes(row["raw"])))
                    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
                        if _is_permanent(exc):
                            await conn.execute(
                                """UPDATE mail_outbox SET failed_at = $2, last_error = $3,
                                          attempts = attempts + 1 WHERE id = $1""",
                                row["id"], now, _describe(exc))
                            log.warning("mail %d refused for good: %s", row["id"], _describe(exc))
                            continue
                        await self._back_off(conn, row["id"], now, exc)
                        if smtp is not None:
                            smtp.close()
                            smtp = None
                        break  # the server is unwell: leave the rest for the next round
                    await conn.execute(
                        """UPDATE mail_outbox SET sent_at = $2, raw = NULL, last_error = NULL,
                                  attempts = attempts + 1 WHERE id = $1""", row["id"], now)
                    sent += 1
                    log.info("mail %d sent (%s)", row["id"], row["message_id"])
        finally:
            if smtp is not None:
                try:
                    await smtp.quit()
                except (aiosmtplib.SMTPException, OSError, TimeoutError):
                    smtp.close()
        return sent

    def _problem(self, exc: BaseException) -> str:
        """What went wrong, in words that say what to fix when it is TLS."""
        s = self.settings.smtp
        server = f"{s.host}:{s.port}"
        cert = _certificate_error(exc)
        if cert is not None:
            return (f"TLS certificate of the mail server {server} could not be verified "
                    f"({cert.verify_message or cert}): set {env_name('smtp', 'ca_file')} "
                    "to the CA that signed it; nothing sent")[:500]
        if _no_starttls(exc):
            return (f"the mail server {server} does not offer STARTTLS, which "
                    f"{env_name('smtp', 'security')}={s.security} requires: nothing sent "
                    "in cleartext")[:500]
        return _describe(exc)

    async def _back_off(self, conn: Connection, failed_id: int, now: datetime,
                        exc: BaseException) -> None:
        """Push back the failed row and every other due row this sender can lock."""
        error = self._problem(exc)
        rows = await conn.fetch(
            """SELECT id, attempts FROM mail_outbox
               WHERE (id = $1 OR (sent_at IS NULL AND failed_at IS NULL AND available_at <= $2))
               FOR UPDATE SKIP LOCKED""", failed_id, now)
        # The failed row is already locked by this transaction, so it is always among them.
        for r in rows:
            delay = self.backoff(r["attempts"] + 1)
            await conn.execute(
                """UPDATE mail_outbox SET attempts = attempts + 1, last_error = $2,
                          available_at = $3 WHERE id = $1""", r["id"], error, now + delay)
        if error != _describe(exc):  # a TLS problem: an operator must act, so say so loudly
            log.error("SMTP: %s; %d mail(s) deferred", error, len(rows))
        else:
            log.warning("SMTP %s:%s unavailable (%s); %d mail(s) deferred",
                        self.settings.smtp.host, self.settings.smtp.port, error, len(rows))

    async def run(self) -> None:
        """Send until stop(); woken by enqueues, polling as a fallback.

        A failed round (PostgreSQL restarted, a session terminated) is logged and the
        next one tried: the sender must outlive any outage, or mail would wait forever.
        """
        listener: asyncpg.Connection | None = None
        try:
            while not self._stopping:
                try:
                    if listener is None or listener.is_closed():
                        listener = await asyncpg.connect(
                            self.settings.database_url)
                        await listener.add_listener(NOTIFY_CHANNEL,
                                                    lambda *_: self._wake.set())
                    await self.send_due()
                except Exception:
                    log.exception("mail sender round failed")
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self.settings.smtp.poll_seconds)
                except TimeoutError:
                    pass
        finally:
            if listener is not None:
                listener.terminate()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
