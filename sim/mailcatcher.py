"""An SMTP server on loopback that keeps every mail the hub sends as a .eml file.

It runs in the caller's event loop (aiosmtpd), hands each accepted mail to
`on_mail` (the simulated readers), and can be stopped and started again on the
same port (the chaos harness's SMTP outage). Given a TLS context it offers STARTTLS
and requires it before any mail (`run.py demo --tls`).
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP

OnMail = Callable[[bytes], None]


class MailFolder:
    """aiosmtpd handler: every accepted mail becomes one .eml file, then `on_mail`."""

    def __init__(self, folder: Path, on_mail: OnMail) -> None:
        self.folder = folder
        self.on_mail = on_mail
        self.count = 0

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        raw = bytes(envelope.content)
        rcpt = re.sub(r"[^A-Za-z0-9@._-]", "_", (envelope.rcpt_tos or ["unknown"])[0])
        path = self.folder / f"{self.count:05d}-{rcpt}.eml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(raw)
        self.on_mail(raw)
        return "250 OK: kept in the simulation's mail folder"


async def start_mail_folder(folder: Path, on_mail: OnMail, port: int = 0, *,
                            tls: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    """An SMTP server on loopback (a free port unless `port` is given), in this event loop;
    with `tls`, STARTTLS is offered and required."""
    handler = MailFolder(folder, on_mail)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="illhub-sim.localhost", data_size_limit=50_000_000,
                     tls_context=tls, require_starttls=tls is not None),
        "127.0.0.1", port)
    return server, int(server.sockets[0].getsockname()[1])


class MailCatcher:
    """`start_mail_folder` that can stop and start again on the port it first got."""

    def __init__(self, folder: Path, on_mail: OnMail, port: int = 0, *,
                 tls: ssl.SSLContext | None = None) -> None:
        self.folder = folder
        self.on_mail = on_mail
        self.port = port
        self.tls = tls
        self.server: asyncio.Server | None = None

    @property
    def running(self) -> bool:
        return self.server is not None

    async def start(self) -> int:
        if self.server is None:
            self.server, self.port = await start_mail_folder(self.folder, self.on_mail,
                                                             self.port, tls=self.tls)
        return self.port

    async def stop(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            await server.wait_closed()
