"""The suppliers' FTP drop (aioftp): agency logins, one confined home each, size limit.

Confinement has two layers. aioftp maps the client's virtual path onto the home
and clamps `..` at the home's root, so `..` and absolute paths cannot climb out
lexically; `ConfinedPathIO` then resolves symlinks on every file-system call and
refuses (or hides, for existence checks and listings) anything whose real path
is outside the home. Each upload is recorded in `ftp_upload` so intake can tell a
finished file from one still arriving.

FTPS is explicit TLS (RFC 4217): a session starts in cleartext, `AUTH TLS` turns the
control connection to TLS, `PBSZ 0` and `PROT P` then protect every data connection.
With `ftp.require_tls` (the default) USER and PASS before AUTH TLS, and data
connections without PROT P, are refused. aioftp 0.28's server has implicit TLS only
(its `ssl` wraps every socket from the first byte, a mode RFC 4217 does not describe,
and clients offer it only on port 990), and its PBSZ and PROT answer 200 without
protecting anything. So `DropServer` leaves aioftp's `ssl` unset and does the upgrade
itself, with asyncio's `StreamWriter.start_tls`: AUTH TLS upgrades the command stream
in place, and each passive data connection is upgraded as it is accepted when its
session chose PROT P. PASV and EPSV are aioftp's own, so `ftp.announce_address` and
`ftp.passive_ports` work as without TLS.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import ssl
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from ssl import SSLContext
from typing import Any

import aioftp
import asyncpg
from aioftp.server import (
    ConnectionConditions,
    PathConditions,
    PathPermissions,
    worker,
)

from delivery.ftp_logins import SupplierLogins
from delivery.paths import ftp_root, is_inside
from infra.tls import TlsSettingError
from schemas.settings import Settings, env_name

log = logging.getLogger(__name__)

BLOCK_SIZE = 64 * 1024
# How long a TLS handshake (control or data connection) may take.
HANDSHAKE_SECONDS = 30.0
# How long a transfer command waits for its data connection. aioftp's default (1 s) is
# too short once the connection is accepted only after a TLS handshake, which the
# client starts only after the 150 reply, across a slow link.
DATA_CONNECTION_WAIT = 10.0
TLS_FIRST = "TLS required: AUTH TLS first (use FTPS, explicit TLS)"
PROT_P_FIRST = "data connection must be protected: PBSZ 0 and PROT P first"


class ConfinedPathIO(aioftp.PathIO):
    """aioftp's blocking local path io, refusing real paths outside the user's home."""

    def _root(self) -> Path:
        if self.connection is None:
            raise PermissionError("no FTP session: no home to confine paths to")
        user: aioftp.User = self.connection.user  # aioftp's Connection holds Any values
        return user.base_path

    def _allowed(self, path: Path) -> bool:
        return is_inside(path, self._root())

    def _check(self, path: Path, *, may_be_home: bool = True) -> None:
        if not self._allowed(path) or (not may_be_home and
                                       os.path.realpath(path) == os.path.realpath(self._root())):
            # PathIOError is what aioftp's dispatcher turns into a 451 answer.
            raise aioftp.PathIOError(reason=None)

    async def exists(self, path: Path) -> bool:
        return self._allowed(path) and await super().exists(path)

    async def is_dir(self, path: Path) -> bool:
        return self._allowed(path) and await super().is_dir(path)

    async def is_file(self, path: Path) -> bool:
        return self._allowed(path) and await super().is_file(path)

    async def mkdir(self, path: Path, *, parents: bool = False, exist_ok: bool = False) -> None:
        self._check(path, may_be_home=False)
        await super().mkdir(path, parents=parents, exist_ok=exist_ok)

    async def rmdir(self, path: Path) -> None:
        self._check(path, may_be_home=False)
        await super().rmdir(path)

    async def unlink(self, path: Path) -> None:
        self._check(path, may_be_home=False)
        await super().unlink(path)

    async def stat(self, path: Path) -> os.stat_result:
        self._check(path)
        return await super().stat(path)

    async def rename(self, source: Path, destination: Path) -> Path:
        self._check(source, may_be_home=False)
        self._check(destination, may_be_home=False)
        return await super().rename(source, destination)

    async def _open(self, path: Path, *args: Any, **kwargs: Any) -> Any:
        self._check(path, may_be_home=False)
        mode = kwargs.get("mode", args[0] if args else "rb")
        try:
            # O_NOFOLLOW closes the gap between the check above and the open.
            return open(path, mode, opener=_no_follow)  # noqa: ASYNC230 - aioftp's PathIO is sync
        except OSError as exc:
            raise aioftp.PathIOError(reason=None) from exc

    def list(self, path: Path) -> AsyncIterator[Path]:
        inner = super().list(path)

        async def confined() -> AsyncIterator[Path]:
            async for child in inner:
                if self._allowed(child):
                    yield child
        return confined()


def _no_follow(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_NOFOLLOW, 0o640)


class UploadTracker:
    """Keeps `ftp_upload` in step with the transfers; intake reads it."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool
        # Two sessions may write one path at once; it is done only when both are.
        self.active: Counter[tuple[str, str]] = Counter()

    async def started(self, supplier: str, path: str) -> None:
        await self.pool.execute(
            """INSERT INTO ftp_upload (supplier, path, state, size, started_at, finished_at)
               VALUES ($1, $2, 'uploading', NULL, now(), NULL)
               ON CONFLICT (supplier, path) DO UPDATE
               SET state = 'uploading', size = NULL, started_at = now(), finished_at = NULL""",
            supplier, path)
        self.active[(supplier, path)] += 1

    async def ended(self, supplier: str, path: str, *, size: int | None, complete: bool) -> None:
        key = (supplier, path)
        self.active[key] -= 1
        if self.active[key] > 0:
            return
        del self.active[key]
        if size is None:
            await self.removed(supplier, path)
            return
        await self.pool.execute(
            """UPDATE ftp_upload SET state = $3, size = $4, finished_at = now()
               WHERE supplier = $1 AND path = $2""",
            supplier, path, "done" if complete else "partial", size)

    async def renamed(self, supplier: str, old: str, new: str) -> None:
        # A directory rename carries the uploads below it along.
        await self.pool.execute(
            """UPDATE ftp_upload SET path = $3 || substr(path, length($2) + 1)
               WHERE supplier = $1 AND (path = $2 OR left(path, length($2) + 1) = $2 || '/')""",
            supplier, old, new)

    @staticmethod
    async def safely(step: Awaitable[None]) -> bool:
        """Run a bookkeeping step; a database hiccup must not kill the FTP session."""
        try:
            await step
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            log.exception("FTP upload bookkeeping failed")
            return False
        return True

    async def removed(self, supplier: str, path: str) -> None:
        await self.pool.execute("DELETE FROM ftp_upload WHERE supplier = $1 AND path = $2",
                                supplier, path)


@dataclass(frozen=True)
class _Upload:
    """One STOR: whose file, where it goes, where it starts, how big it may grow."""
    supplier: str
    relative: str                 # the path in the supplier's home, as ftp_upload keeps it
    real_path: Path
    path_io: ConfinedPathIO
    mode: str                     # "wb" (STOR) or "ab" (APPE)
    offset: int                   # bytes already in the file (REST, or APPE's file size)
    limit: int


@dataclass
class _Tls:
    """One session's FTPS state, kept on aioftp's Connection (as `tls`)."""

    control: bool = False        # AUTH TLS done: commands and replies are encrypted
    protected: bool = False      # PROT P: data connections are encrypted too
    # The session's reply queue: AUTH TLS waits for its 234 to be sent before the
    # handshake (aioftp's dispatcher keeps the queue to itself; response_writer gets it).
    responses: asyncio.Queue[Any] | None = None
    # Set from the moment AUTH TLS is read until the upgrade is over: the next command
    # is read only after it, from the TLS stream.
    upgrading: asyncio.Future[None] | None = None


def _tls_of(connection: Any) -> _Tls:
    if "tls" not in connection:
        connection.tls = _Tls()
    state: _Tls = connection.tls
    return state


DataHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class DropServer(aioftp.Server):
    """aioftp.Server with upload size limit, upload tracking and explicit FTPS."""

    def __init__(self, logins: SupplierLogins, tracker: UploadTracker, max_bytes: int, *,
                 tls: ssl.SSLContext | None = None, require_tls: bool = False,
                 **kwargs: Any) -> None:
        super().__init__(logins, path_io_factory=ConfinedPathIO, block_size=BLOCK_SIZE,
                         wait_future_timeout=DATA_CONNECTION_WAIT, **kwargs)
        if require_tls and tls is None:
            raise TlsSettingError(env_name("ftp", "require_tls"),
                                  "on, but the drop has no TLS context")
        self.logins = logins
        self.tracker = tracker
        self.max_bytes = max_bytes
        self.tls = tls
        self.require_tls = require_tls
        self.commands_mapping["feat"] = self.feat
        if tls is not None:
            self.commands_mapping["auth"] = self.auth

    # ignore[override]: returns False for a hang-up. aioftp's dispatcher ends the session
    # on a falsy result, but its parse_command is annotated as returning a tuple only.
    async def parse_command(self, stream: Any,  # type: ignore[override]
                            censor_commands: tuple[str] = ("pass",)) -> tuple[str, str] | bool:
        # aioftp raises when the client hangs up; its dispatcher then logs an ERROR with
        # a traceback, or (after QUIT) leaves the exception unretrieved in a dead task.
        # A hang-up (or a TLS session that broke) is how FTP sessions end: finish the
        # session quietly instead.
        connection = self.connections.get(stream)
        state = _tls_of(connection) if connection is not None else None
        if state is not None and state.upgrading is not None:
            await state.upgrading  # AUTH TLS is under way: the next command comes over TLS
        try:
            command = await super().parse_command(stream, censor_commands)
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError, ssl.SSLError):
            return False
        if command[0] == "auth" and state is not None and self.tls is not None:
            # Stop reading before the 234 goes out: what the client sends after it is its
            # TLS handshake, which must reach the TLS layer, not this cleartext reader.
            stream.writer.transport.pause_reading()
            state.upgrading = asyncio.get_running_loop().create_future()
        return command

    async def response_writer(self, stream: Any, response_queue: asyncio.Queue[Any]) -> None:
        connection = self.connections.get(stream)
        if connection is not None:
            _tls_of(connection).responses = response_queue
        try:
            await super().response_writer(stream, response_queue)
        except (ConnectionError, TimeoutError, ssl.SSLError):
            # The client is gone: keep emptying the queue so the dispatcher's join() returns.
            while True:
                await response_queue.get()
                response_queue.task_done()

    # --- FTPS (RFC 4217) -----------------------------------------------------------------

    async def feat(self, connection: Any, rest: str | PurePosixPath) -> bool:
        tls = ["AUTH TLS", "PBSZ", "PROT"] if self.tls is not None else []
        connection.response("211", ["Features:", *tls, "EPSV", "PASV", "End"], True)
        return True

    async def auth(self, connection: Any, rest: str | PurePosixPath) -> bool:
        """AUTH TLS: answer 234, then turn the command stream to TLS in place."""
        state = _tls_of(connection)
        stream = connection.command_connection
        try:
            refusal = self._auth_refusal(connection, state, str(rest))
            if refusal is not None:
                stream.writer.transport.resume_reading()
                connection.response(*refusal)
                return True
            connection.response("234", "AUTH TLS accepted: start the TLS handshake")
            return await self._upgrade(connection, state, stream)
        finally:
            if state.upgrading is not None:
                state.upgrading.set_result(None)
                state.upgrading = None

    @staticmethod
    def _auth_refusal(connection: Any, state: _Tls, mechanism: str) -> tuple[str, str] | None:
        if mechanism.strip().upper() not in ("TLS", "TLS-C", "SSL"):
            return "504", "AUTH TLS only"
        if state.control:
            return "503", "already using TLS"
        if connection.future.user.done():
            # RFC 4217 would reset the session; refusing is simpler and leaves no doubt
            # about what was sent in cleartext.
            return "503", "AUTH TLS must come before USER"
        return None

    async def _upgrade(self, connection: Any, state: _Tls, stream: Any) -> bool:
        """The TLS handshake on the command connection; False ends the session."""
        if state.responses is not None:
            await state.responses.join()
        # Bytes read before the 234 went out were sent before the client could know TLS
        # was accepted: commands injected ahead of the handshake (the STARTTLS
        # command-injection flaw). They must not run as if they came over TLS.
        if getattr(stream.reader, "_buffer", b""):
            log.warning("FTP session from %s ended: data sent ahead of the TLS handshake",
                        connection.client_host)
            return False
        try:
            await stream.writer.start_tls(self.tls, ssl_handshake_timeout=HANDSHAKE_SECONDS)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("FTP TLS handshake with %s failed: %s", connection.client_host, exc)
            return False
        state.control = True
        return True

    def _tls_missing(self, connection: Any) -> bool:
        """Whether a login must wait for AUTH TLS (then the client has been told)."""
        if self.require_tls and not _tls_of(connection).control:
            connection.response("530", TLS_FIRST)
            return True
        return False

    async def user(self, connection: Any, rest: str) -> bool:
        if self._tls_missing(connection):
            return True
        return await super().user(connection, rest)

    async def pass_(self, connection: Any, rest: str) -> bool:
        if self._tls_missing(connection):
            return True
        if not connection.future.user.done() or connection.future.logged.done():
            return await super().pass_(connection, rest)  # aioftp's 503 answers
        refusal = await self.logins.log_in(connection.user, rest, connection.client_host)
        if refusal is None:
            connection.logged = True
        connection.response(*(("230", "normal login") if refusal is None else ("530", refusal)))
        return True

    async def pbsz(self, connection: Any, rest: str | PurePosixPath) -> bool:
        if _tls_of(connection).control:
            connection.response("200", "PBSZ=0")
        else:
            connection.response("503", "PBSZ needs AUTH TLS first")
        return True

    async def prot(self, connection: Any, rest: str | PurePosixPath) -> bool:
        state = _tls_of(connection)
        level = str(rest).strip().upper()
        if not state.control:
            connection.response("503", "PROT needs AUTH TLS first")
        elif level == "P":
            state.protected = True
            connection.response("200", "data connections protected (TLS)")
        elif level == "C" and not self.require_tls:
            state.protected = False
            connection.response("200", "data connections in cleartext")
        elif level == "C":
            connection.response("534", "PROT C refused: this drop protects data (PROT P)")
        else:
            connection.response("504", f"PROT {level[:8]} not supported: use PROT P")
        return True

    def _data_refused(self, connection: Any) -> bool:
        if self.require_tls and not _tls_of(connection).protected:
            connection.response("521", PROT_P_FIRST)
            return True
        return False

    async def pasv(self, connection: Any, rest: str | PurePosixPath) -> bool:
        if self._data_refused(connection):
            return True
        return await super().pasv(connection, rest)

    async def epsv(self, connection: Any, rest: str | PurePosixPath) -> bool:
        if self._data_refused(connection):
            return True
        return await super().epsv(connection, rest)

    async def _start_passive_server(self, connection: Any,
                                    handler_callback: DataHandler) -> asyncio.Server:
        """aioftp's passive listener, whose connections get TLS when the session chose
        PROT P at the time each is accepted (a session may change PROT between them)."""
        state = _tls_of(connection)

        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            if state.protected and self.tls is not None:
                if not await _data_tls(writer, self.tls, connection.client_host):
                    return
            elif self.require_tls:
                writer.close()  # PROT P was turned off after PASV: no cleartext data
                return
            await handler_callback(reader, writer)

        return await super()._start_passive_server(connection, accepted)

    # --- uploads ---------------------------------------------------------------------------

    @staticmethod
    def _relative(connection: Any, real_path: Path) -> str:
        return real_path.relative_to(connection.user.base_path).as_posix()

    # The `type: ignore[arg-type]`s below: aioftp types its command decorators for
    # methods of Server itself (Callable[Concatenate[Server, ...]]), so a method of a
    # subclass, whose `self` is the subclass, never matches.
    @ConnectionConditions(ConnectionConditions.login_required,
                          ConnectionConditions.passive_server_started)
    @PathPermissions(PathPermissions.writable)  # type: ignore[arg-type]
    async def stor(self, connection: Any, rest: str | PurePosixPath, mode: str = "wb") -> bool:
        upload = await self._upload_of(connection, rest, mode)
        if upload is not None:
            # ensure_future: aioftp's decorators type the worker's call as an Awaitable
            # (it is a coroutine, as create_task would want).
            task = asyncio.ensure_future(self._receive(connection, upload))
            connection.extra_workers.add(task)
            connection.response("150", "data transfer started")
        return True

    async def _upload_of(self, connection: Any, rest: str | PurePosixPath,
                         mode: str) -> _Upload | None:
        """The upload a STOR (or APPE, mode "ab") asks for; None once the client has been
        told why there is none (outside the home, no such directory, already too big)."""
        real_path, virtual_path = self.get_paths(connection, rest)
        path_io: ConfinedPathIO = connection.path_io
        if virtual_path == PurePosixPath("/") or not is_inside(real_path,
                                                               connection.user.base_path):
            connection.response("550", "permission denied")
            return None
        if not await path_io.is_dir(real_path.parent) or await path_io.is_dir(real_path):
            connection.response("550", "path unreachable")
            return None
        offset = connection.restart_offset
        if mode == "ab" and await path_io.is_file(real_path):
            offset = (await path_io.stat(real_path)).st_size
        if offset > self.max_bytes:
            connection.response("552", "file already at the size limit")
            return None
        return _Upload(supplier=connection.user.login,
                       relative=self._relative(connection, real_path), real_path=real_path,
                       path_io=path_io, mode=mode, offset=offset, limit=self.max_bytes)

    @ConnectionConditions(ConnectionConditions.data_connection_made, wait=True,
                          fail_code="425", fail_info="Can't open data connection")
    @worker  # type: ignore[arg-type]
    async def _receive(self, connection: Any, upload: _Upload) -> None:
        """The transfer, recorded in `ftp_upload` as it starts and as it ends."""
        stream = connection.data_connection
        del connection.data_connection
        tracker, supplier, relative = self.tracker, upload.supplier, upload.relative
        if not await tracker.safely(tracker.started(supplier, relative)):
            stream.close()
            connection.response("451", "upload not possible now; try again later")
            return
        try:
            written, too_big = await self._copy(connection, stream, upload)
        except asyncio.CancelledError:
            size = await asyncio.to_thread(_size_or_none, upload.real_path)
            _background(tracker.safely(
                tracker.ended(supplier, relative, size=size, complete=False)))
            raise
        except aioftp.PathIOError:
            await tracker.safely(tracker.ended(supplier, relative, size=None, complete=False))
            connection.response("550", "cannot write there")
            return
        # Shielded: a QUIT right after the transfer cancels this worker, and the
        # bookkeeping must not stop halfway (a file without its record, or the reverse).
        await asyncio.shield(self._conclude(connection, upload, too_big, written))

    @staticmethod
    async def _copy(connection: Any, stream: Any, upload: _Upload) -> tuple[int, bool]:
        """Data connection to file; returns the bytes the file has (from its start) and
        whether the upload went over the limit (then the data connection is closed, which
        is the abort the client sees)."""
        written = upload.offset
        file_mode = "r+b" if connection.restart_offset else upload.mode
        async with upload.path_io.open(upload.real_path, mode=file_mode) as out, stream:
            if connection.restart_offset:
                await out.seek(connection.restart_offset)
            async for data in stream.iter_by_block(connection.block_size):
                written += len(data)
                if written > upload.limit:
                    return written, True
                await out.write(data)
        return written, False

    async def _conclude(self, connection: Any, upload: _Upload, too_big: bool,
                        written: int) -> None:
        """Record the upload's end and answer the client (or drop a too-big file)."""
        tracker, supplier, relative = self.tracker, upload.supplier, upload.relative
        if too_big:
            await asyncio.to_thread(_unlink_quietly, upload.real_path)
            await tracker.safely(tracker.ended(supplier, relative, size=None, complete=False))
            log.info("FTP upload %s of %s aborted above %d bytes", relative, supplier,
                     upload.limit)
            connection.response(
                "552", f"file larger than {upload.limit // (1024 * 1024)} MB; upload aborted")
            return
        if not await tracker.safely(
                tracker.ended(supplier, relative, size=written, complete=True)):
            # Stored but not recorded: intake would wait for it forever, so say so.
            connection.response("451", "file stored but not recorded; upload it again")
            return
        log.info("FTP upload %s of %s: %d bytes", relative, supplier, written)
        connection.response("226", "data transfer done")

    @ConnectionConditions(ConnectionConditions.login_required,
                          ConnectionConditions.rename_from_required)
    @PathConditions(PathConditions.path_must_not_exists)
    @PathPermissions(PathPermissions.writable)  # type: ignore[arg-type]
    async def rnto(self, connection: Any, rest: str | PurePosixPath) -> bool:
        real_path, _virtual = self.get_paths(connection, rest)
        rename_from: Path = connection.rename_from
        del connection.rename_from
        await connection.path_io.rename(rename_from, real_path)
        await self.tracker.renamed(connection.user.login,
                                   self._relative(connection, rename_from),
                                   self._relative(connection, real_path))
        connection.response("250", "")
        return True

    @ConnectionConditions(ConnectionConditions.login_required)
    @PathConditions(PathConditions.path_must_exists, PathConditions.path_must_be_file)
    @PathPermissions(PathPermissions.writable)  # type: ignore[arg-type]
    async def dele(self, connection: Any, rest: str | PurePosixPath) -> bool:
        real_path, _virtual = self.get_paths(connection, rest)
        await connection.path_io.unlink(real_path)
        await self.tracker.removed(connection.user.login, self._relative(connection, real_path))
        connection.response("250", "")
        return True


async def _data_tls(writer: asyncio.StreamWriter, context: ssl.SSLContext, client: str) -> bool:
    """The TLS handshake on an accepted data connection; False (and closed) if it failed."""
    try:
        await writer.start_tls(context, ssl_handshake_timeout=HANDSHAKE_SECONDS)
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        log.info("FTP data connection from %s closed: TLS handshake failed: %s", client, exc)
        writer.close()
        return False
    return True


def _size_or_none(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except OSError:
        return None


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink()
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot remove %s: %s", path, exc)


_tasks: set[asyncio.Task[Any]] = set()


def _background(coro: Any) -> None:
    task = asyncio.ensure_future(coro)
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


@dataclass
class FtpDrop:
    """A running FTP drop; `port` is the bound one (useful with ftp_port=0)."""

    server: DropServer
    host: str
    port: int

    async def stop(self) -> None:
        await self.server.close()


async def start_ftp(settings: Settings, pool: asyncpg.Pool, *,
                    ssl: SSLContext | None = None) -> FtpDrop:
    """The drop on settings.ftp.host:port; `ssl` (infra.tls.ServerContexts.ftp) offers
    FTPS, which `settings.ftp.require_tls` makes the only way in."""
    ftp_root(settings).mkdir(parents=True, exist_ok=True)
    server = DropServer(
        SupplierLogins(settings, pool),
        UploadTracker(pool),
        settings.ftp.max_upload_bytes,
        tls=ssl,
        require_tls=settings.ftp.require_tls,
        data_ports=settings.ftp.data_ports(),
        ipv4_pasv_forced_response_address=settings.ftp.announce_address,
        idle_timeout=settings.ftp.idle_timeout,
        maximum_connections=settings.ftp.max_connections,
        socket_timeout=settings.ftp.idle_timeout,
        welcome_message="ILL Hub FTP drop: log in with your agency symbol and password",
    )
    await server.start(settings.ftp.host, settings.ftp.port)
    host, port = server.address
    log.info("FTP drop listening on %s:%s, %s (passive ports %s, announced %s)", host, port,
             _security(ssl, settings.ftp.require_tls), settings.ftp.passive_ports or "any",
             settings.ftp.announce_address or "as bound")
    return FtpDrop(server=server, host=host or settings.ftp.host, port=port)


def _security(context: ssl.SSLContext | None, required: bool) -> str:
    if context is None:
        return "cleartext FTP only (no certificate: FTPS off)"
    if required:
        return "FTPS (AUTH TLS, PROT P) required"
    return "FTPS (AUTH TLS) offered, cleartext allowed"
