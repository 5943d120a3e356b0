"""Suppliers' uploads to a hub's FTP drop: one kept-open login per supplier, retried.

A login costs the hub a password (scrypt) check, so each supplier keeps its session
open between uploads and logs in again only after an error or when told to use
another server (the chaos harness spreads uploads over several hubs, one of which
may just have been killed). The transfers run in threads of the uploader's own: a
hub in this very process checks FTP passwords in the default executor, and uploads
waiting there for their login would starve it.

Given a CA file, the uploads go over FTPS as a supplier's client would: AUTH TLS
before the login, the drop's certificate verified against that CA (and its address),
then PROT P so the data connections are encrypted too.
"""

from __future__ import annotations

import asyncio
import ftplib
import io
import logging
import ssl
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

log = logging.getLogger(__name__)

Server = tuple[str, int]
FTP_ERRORS = (OSError, EOFError, ftplib.Error)


class UploadFailed(RuntimeError):
    """An upload that failed at every attempt."""


class FtpSession:
    """One supplier's FTP login (blocking: used from the uploader's threads only)."""

    def __init__(self, user: str, password: str, timeout: float = 20.0, *,
                 tls: ssl.SSLContext | None = None) -> None:
        """`tls`: log in over FTPS, verifying the drop with this context (None: plain FTP)."""
        self.user = user
        self.password = password
        self.timeout = timeout
        self.tls = tls
        self.ftp: ftplib.FTP | None = None
        self.server: Server | None = None
        # An upload still running in its thread when the simulation stops finishes
        # (or times out) before `close` touches the connection.
        self.lock = threading.Lock()

    def upload(self, server: Server, name: str, content: bytes) -> None:
        with self.lock:
            self._upload(server, name, content)

    def _upload(self, server: Server, name: str, content: bytes) -> None:
        if self.ftp is not None and self.server != server:
            self.drop()
        if self.ftp is None:
            self.ftp, self.server = self._login(server), server
        try:
            self.ftp.storbinary(f"STOR {name}", io.BytesIO(content))
        except BaseException:
            self.drop()
            raise

    def _login(self, server: Server) -> ftplib.FTP:
        ftp = (ftplib.FTP_TLS(context=self.tls, timeout=self.timeout, encoding="utf-8")
               if self.tls is not None else ftplib.FTP(timeout=self.timeout, encoding="utf-8"))
        try:
            ftp.connect(*server)
            if isinstance(ftp, ftplib.FTP_TLS):
                ftp.auth()          # the password travels only inside TLS
                ftp.login(self.user, self.password)
                ftp.prot_p()
            else:
                ftp.login(self.user, self.password)
        except BaseException:
            ftp.close()
            raise
        return ftp

    def drop(self) -> None:
        if self.ftp is not None:
            try:
                self.ftp.close()
            finally:
                self.ftp = None

    def close(self) -> None:
        with self.lock:
            if self.ftp is not None:
                try:
                    self.ftp.quit()
                except FTP_ERRORS:
                    pass
                self.drop()


class Uploader:
    """Uploads for every simulated supplier; `where()` names the FTP drop for each attempt."""

    def __init__(self, where: Callable[[], Server], passwords: dict[str, str], *,
                 threads: int = 8, attempts: int = 60,
                 ca_file: str | Path | None = None) -> None:
        """`ca_file`: upload over FTPS, trusting this CA for the drop (None: plain FTP)."""
        self.where = where
        self.tls = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self.passwords = passwords
        self.attempts = attempts
        self.sessions: dict[str, FtpSession] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="sim-ftp")

    async def upload(self, supplier: str, name: str, content: bytes) -> int:
        """Store `name` in the supplier's FTP home; returns how many attempts failed first."""
        session = self.sessions.setdefault(
            supplier, FtpSession(supplier, self.passwords[supplier], tls=self.tls))
        loop = asyncio.get_running_loop()
        async with self.locks.setdefault(supplier, asyncio.Lock()):
            for attempt in range(self.attempts):
                try:
                    await loop.run_in_executor(self.executor, partial(
                        session.upload, self.where(), name, content))
                    return attempt
                except FTP_ERRORS as exc:
                    # The drop's hub was killed mid-transfer, or dropped an idle login.
                    log.info("%s: upload of %s failed (%s); again", supplier, name, exc)
                    await asyncio.sleep(min(0.2 * (attempt + 1), 2.0))
        raise UploadFailed(f"upload of {name} failed {self.attempts} times")

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.executor, s.close)
                               for s in self.sessions.values()))
        self.executor.shutdown(wait=False, cancel_futures=True)
