"""Document delivery for tests: real FTP, SMTP and HTTP servers on loopback.

Fixtures (names carry a `dl_` prefix): `dl_settings` (quick delivery settings),
`dl_supplier`, `dl_ftp` (the FTP drop), `dl_clock` and `dl_gateway` (the download
gateway on a settable clock), `dl_smtp` (an SMTP server that can start late).
Helpers: FTP sessions (ftplib is blocking, so every session runs in a thread while
the server runs in the test's event loop), documents and grants put straight into
the store, PDF bytes, unique e-mail addresses, file ages.
"""

from __future__ import annotations

import asyncio
import ftplib
import hashlib
import io
import os
import re
import secrets
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiosmtpd.controller import Controller

from delivery.ftp import FtpDrop, start_ftp
from delivery.grants import Grant, create_grant
from delivery.paths import home_of
from delivery.store import Document, load_document, new_store_name, store_root
from schemas.settings import Settings
from tests.support.agencies import MakeAgency
from tests.support.servers import free_port
from web.app import HttpServer, make_app, start_http

# A reader's download link as the hub mails it.
LINK = re.compile(r"https?://\S+/d/[A-Za-z0-9_-]{32}")


def pdf_bytes(size: int = 50_000) -> bytes:
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"
    tail = b"\n%%EOF\n"
    return head + secrets.token_bytes(max(0, size - len(head) - len(tail))) + tail


def delivery_settings(settings: Settings, **overrides: Any) -> Settings:
    """`settings` made quick for delivery tests (no passive port range, short delays)."""
    values: dict[str, Any] = dict(ftp__passive_ports="", ftp__login_failure_delay=0.05,
                                  ftp__upload_quiet_seconds=0.0, http__bad_token_limit=5,
                                  smtp__backoff_seconds=30, smtp__poll_seconds=0.2)
    values.update(overrides)
    return settings.updated(**values)


@pytest.fixture
def dl_settings(settings: Settings) -> Settings:
    return delivery_settings(settings)


@pytest.fixture
async def dl_supplier(make_agency: MakeAgency) -> tuple[str, str]:
    return await make_agency(name="国家科技图书文献中心 NSTL-like Institute",
                             roles=("supplier",))


@pytest.fixture
async def dl_ftp(settings: Settings, pool: asyncpg.Pool,
                 dl_settings: Settings) -> AsyncIterator[FtpDrop]:
    drop = await start_ftp(dl_settings, pool)
    yield drop
    await drop.stop()


class Clock:
    """A settable clock for the gateway and the mail sender."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@pytest.fixture
def dl_clock() -> Clock:
    return Clock()


@pytest.fixture
async def dl_gateway(settings: Settings, pool: asyncpg.Pool, dl_settings: Settings,
                     dl_clock: Clock) -> AsyncIterator[HttpServer]:
    server = await start_http(dl_settings, make_app(dl_settings, pool, clock=dl_clock))
    yield server
    await server.stop()


@dataclass
class Catcher:
    """aiosmtpd handler keeping every message it accepted."""

    received: list[tuple[list[str], bytes]] = field(default_factory=list)
    refuse: set[str] = field(default_factory=set)

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((list(envelope.rcpt_tos), bytes(envelope.content)))
        return "250 OK"

    def messages_to(self, address: str) -> list[EmailMessage]:
        return [message_from_bytes(raw, policy=default_policy)  # type: ignore[misc]
                for rcpts, raw in self.received if address in rcpts]


class SmtpServer:
    """A real SMTP server on a fixed free port that can be started late (SMTP down, then up)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.catcher = Catcher()
        self.controller: Controller | None = None

    async def start(self) -> None:
        self.controller = Controller(self.catcher, hostname="127.0.0.1", port=self.port)
        await asyncio.to_thread(self.controller.start)

    async def stop(self) -> None:
        if self.controller is not None:
            await asyncio.to_thread(self.controller.stop)
            self.controller = None


@pytest.fixture
async def dl_smtp() -> AsyncIterator[SmtpServer]:
    server = SmtpServer()
    yield server
    await server.stop()


def with_smtp(settings: Settings, smtp: SmtpServer) -> Settings:
    return settings.updated(smtp__host="127.0.0.1", smtp__port=smtp.port)


def unique_email(label: str = "reader") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}@example.edu.cn"


# --- FTP sessions (blocking; run them with asyncio.to_thread) ---------------------------

def ftp_session(drop: FtpDrop, user: str, password: str) -> ftplib.FTP:
    ftp = ftplib.FTP(timeout=10, encoding="utf-8")
    ftp.connect(drop.host, drop.port)
    ftp.login(user, password)
    return ftp


def try_login(drop: FtpDrop, user: str, password: str) -> str:
    """"ok", or the server's reply code; the socket is closed either way."""
    ftp = ftplib.FTP(timeout=10, encoding="utf-8")
    ftp.connect(drop.host, drop.port)
    try:
        ftp.login(user, password)
    except ftplib.error_perm as exc:
        return str(exc)[:3]
    finally:
        _bye(ftp)
    return "ok"


def ftp_upload(drop: FtpDrop, user: str, password: str, name: str, content: bytes) -> str:
    ftp = ftp_session(drop, user, password)
    try:
        return ftp.storbinary(f"STOR {name}", io.BytesIO(content))
    finally:
        _bye(ftp)


def _bye(ftp: ftplib.FTP) -> None:
    try:
        ftp.quit()
    except (ftplib.Error, OSError, EOFError):
        ftp.close()


def names(ftp: ftplib.FTP, path: str = "") -> list[str]:
    """File names in a directory (aioftp has MLSD and LIST, not NLST)."""
    return sorted(name for name, _facts in ftp.mlsd(path))


def ftp_try(drop: FtpDrop, user: str, password: str,
            action: Callable[[ftplib.FTP], Any]) -> Any:
    """Run `action` in a session; returns its result or the ftplib/OS error it raised."""
    ftp = ftp_session(drop, user, password)
    try:
        return action(ftp)
    except (ftplib.Error, OSError) as exc:
        return exc
    finally:
        _bye(ftp)


class SlowUpload:
    """An upload that sends its first half and then waits to be told to finish."""

    def __init__(self, drop: FtpDrop, user: str, password: str, name: str,
                 content: bytes) -> None:
        self.half_sent = threading.Event()
        self.go_on = threading.Event()
        self.result: str | BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(drop, user, password, name,
                                                               content), daemon=True)

    def _run(self, drop: FtpDrop, user: str, password: str, name: str, content: bytes) -> None:
        try:
            ftp = ftp_session(drop, user, password)
            ftp.voidcmd("TYPE I")
            with ftp.transfercmd(f"STOR {name}") as conn:
                conn.sendall(content[: len(content) // 2])
                self.half_sent.set()
                self.go_on.wait(10)
                conn.sendall(content[len(content) // 2:])
            self.result = ftp.voidresp()
            _bye(ftp)
        except BaseException as exc:
            self.result = exc
            self.half_sent.set()

    def start(self) -> None:
        self.thread.start()


# --- documents and grants without going through FTP (for gateway tests) ---------------

async def put_document(pool: asyncpg.Pool, settings: Settings, content: bytes, *,
                       filename: str = "文献.pdf", supplier: str = "TEST:SUPPLIER",
                       transaction_id: str | None = None) -> Document:
    doc_id, store_name = new_store_name()
    path = store_root(settings) / store_name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    await pool.execute(
        """INSERT INTO document (id, transaction_id, supplier, filename, content_type, size,
                                 sha256, store_name)
           VALUES ($1, $2, $3, $4, 'application/pdf', $5, $6, $7)""",
        uuid.UUID(doc_id), transaction_id or f"tx-{uuid.uuid4().hex[:8]}", supplier, filename,
        len(content), hashlib.sha256(content).hexdigest(), store_name)
    return await load_document(pool, doc_id)


async def put_grant(pool: asyncpg.Pool, document: Document, *, downloads: int | None = 5,
                    days: int = 30, now: datetime | None = None) -> Grant:
    async with pool.acquire() as conn:
        return await create_grant(conn, document_id=document.id,
                                  transaction_id=document.transaction_id,
                                  patron_email=unique_email(), patron_name="李明",
                                  downloads=downloads, days=days,
                                  now=now or datetime.now(UTC))


def home(settings: Settings, symbol: str) -> Path:
    return home_of(settings, symbol)


def set_age(path: Path, *, hours: float) -> None:
    t = datetime.now(UTC).timestamp() - hours * 3600
    os.utime(path, (t, t), follow_symlinks=False)
