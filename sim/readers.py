"""Readers: they get the hub's mails (from sim/mailcatcher.py) and click the download links.

Every mail is recorded (`MailBook`, by Message-ID and by recipient); a mail with a
download link whose Message-ID is new is read by one reader, who follows the link
as the behaviour given says (the default: at once, once). A download is tried
again while the hub does not answer or answers 5xx (it may be restarting); any other
answer than the PDF is a problem of the simulation.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections import Counter, defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from email import message_from_bytes
from email.policy import default as default_policy
from typing import Any

import aiohttp

from sim.stats import Stats, Tasks

LINK = re.compile(r"https?://\S+/d/[A-Za-z0-9_-]{20,}")


@dataclass
class MailBook:
    """Every mail the SMTP server accepted, by Message-ID and by recipient."""

    by_message_id: Counter[str] = field(default_factory=Counter)
    by_recipient: dict[str, set[str]] = field(default_factory=lambda: defaultdict(set))
    clicked: dict[str, str] = field(default_factory=dict)    # Message-ID -> link followed
    received: int = 0


Reading = Callable[["Readers", str], Coroutine[Any, Any, None]]


async def download_once(readers: Readers, link: str) -> None:
    await readers.download(link)


class Readers:
    """The readers of every mail; `locate(link)` is the URL to fetch for a link."""

    def __init__(self, tasks: Tasks, stats: Stats, *, reading: Reading = download_once,
                 locate: Callable[[str], str] = str, concurrency: int = 8,
                 attempts: int = 20, timeout: float = 30.0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.tasks = tasks
        self.stats = stats
        self.reading = reading
        self.locate = locate
        self.attempts = attempts
        self.timeout = timeout
        self.tls = tls                    # verifies https:// links (None: the system's CAs)
        self.book = MailBook()
        self.busy = 0                     # readers not finished yet
        self.gate = asyncio.Semaphore(concurrency)
        self.http: aiohttp.ClientSession | None = None
        self.stopping = False

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(ssl=self.tls) if self.tls is not None else None
        self.http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout),
                                          connector=connector)

    async def stop(self) -> None:
        self.stopping = True
        if self.http is not None:
            await self.http.close()

    def on_mail(self, raw: bytes) -> None:
        """A mail the SMTP server accepted: record it; a reader clicks a new link."""
        book = self.book
        book.received += 1
        self.stats.mails += 1
        msg = message_from_bytes(raw, policy=default_policy)
        message_id = str(msg.get("Message-ID", "")).strip() or f"#{book.received}"
        book.by_message_id[message_id] += 1
        recipient = str(msg["To"].addresses[0].addr_spec) if msg["To"] else ""
        book.by_recipient[recipient].add(message_id)
        body = msg.get_body(("plain",))
        links = LINK.findall(body.get_content() if body is not None else "")
        if links and book.by_message_id[message_id] == 1 and not self.stopping:
            book.clicked[message_id] = links[0]
            self.busy += 1
            self.tasks.spawn(self._read(links[0]), "reader")

    async def _read(self, link: str) -> None:
        try:
            await self.reading(self, link)
        finally:
            self.busy -= 1

    async def download(self, link: str) -> bool:
        """Fetch the PDF behind `link`; False (and counted) if it never came."""
        if self.http is None:
            raise RuntimeError("the readers are not started")
        async with self.gate:
            for attempt in range(self.attempts):
                try:
                    async with self.http.get(self.locate(link)) as resp:
                        content = await resp.read()
                        if resp.status == 200 and content.startswith(b"%PDF-"):
                            self.stats.downloads += 1
                            return True
                        if resp.status < 500:
                            self.stats.problems.append(
                                f"download answered HTTP {resp.status}"
                                + (" without a PDF" if resp.status == 200 else ""))
                            return False
                except (aiohttp.ClientError, TimeoutError):
                    pass
                await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
        self.stats.download_failures += 1
        return False
