"""The download gateway: `GET /d/{token}` streams a stored document to a reader.

aiohttp serves it: already the hub's HTTP client library, mature, asyncio-native
(the gateway shares the hub's event loop and asyncpg pool), and it streams files
with sendfile(2), so a 120 MB file costs no Python-level copying.

A download is claimed before a byte is sent, in one SQL statement that
decrements the remaining count only while it is positive and the link is
unexpired; parallel clicks therefore cannot exceed the limit. A claimed
download counts even if the reader aborts it (no Range support, so a partial
transfer cannot be resumed for free either). HEAD answers like GET without
counting. Tokens never reach the logs: the access log masks them.
"""

from __future__ import annotations

import asyncio
import html
import logging
import os
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from delivery.grants import PREFIX_CHARS, TOKEN_PATTERN, hash_token
from delivery.paths import store_root
from schemas.settings import Settings

log = logging.getLogger(__name__)

SEND_CHUNK = 4 * 1024 * 1024
COMMON_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    # The token is in the URL: never let it leak to another site as a Referer.
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex, nofollow",
}

CLAIM_SQL = """
WITH g AS (
    UPDATE download_grant
    SET remaining = remaining - 1, used = used + 1, last_download_at = $2
    WHERE token_hash = $1
      AND (remaining IS NULL OR remaining > 0)
      AND expires_at > $2
      AND revoked_at IS NULL
      AND document_id IN (SELECT id FROM document WHERE deleted_at IS NULL)
    RETURNING id, document_id, remaining
), d AS (
    INSERT INTO download (grant_id, at, address, user_agent)
    SELECT id, $2, $3, $4 FROM g
    RETURNING id
)
SELECT g.id AS grant_id, g.remaining, d.id AS download_id,
       doc.store_name, doc.filename, doc.content_type, doc.size
FROM g CROSS JOIN d JOIN document doc ON doc.id = g.document_id
"""

PEEK_SQL = """
SELECT g.remaining, g.expires_at, g.revoked_at, doc.deleted_at,
       doc.store_name, doc.filename, doc.content_type, doc.size
FROM download_grant g JOIN document doc ON doc.id = g.document_id
WHERE g.token_hash = $1
"""


@dataclass(frozen=True)
class Page:
    status: int
    title: str
    zh: str
    en: str


GONE = Page(410, "链接已失效 Link no longer valid",
            "此下载链接已失效：下载次数已用完，或已超过有效期。如仍需要该文献，请联系您所在图书馆的馆际互借服务。",
            "This download link is no longer valid: its downloads are used up or it has "
            "expired. If you still need the document, please ask your library's "
            "interlibrary loan service.")
UNKNOWN = Page(404, "找不到链接 Unknown link",
               "找不到此下载链接。请检查链接是否完整；如有疑问，请联系您所在图书馆的馆际互借服务。",
               "This download link does not exist. Check that the whole link was copied; "
               "if in doubt, ask your library's interlibrary loan service.")
SLOW_DOWN = Page(429, "请稍后再试 Too many attempts",
                 "来自您所在网络的无效链接请求过多，请稍后再试。",
                 "Too many unknown links were requested from your network; please try again "
                 "later.")
UNAVAILABLE = Page(500, "暂时无法下载 Download unavailable",
                   "文件暂时无法提供，本次未计入下载次数。请稍后再试，或联系您所在图书馆的馆际互借服务。",
                   "The file cannot be served right now; this attempt was not counted. Please "
                   "try again later or ask your library's interlibrary loan service.")


def page(p: Page, headers: dict[str, str] | None = None) -> web.Response:
    e = html.escape
    body = (f'<!doctype html>\n<html lang="zh-CN"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width">'
            f"<title>{e(p.title)}</title></head>\n"
            f'<body style="font-family: sans-serif; max-width: 40em; margin: 2em auto">'
            f"<h1>{e(p.title)}</h1><p>{e(p.zh)}</p><p lang=\"en\">{e(p.en)}</p></body></html>\n")
    return web.Response(status=p.status, text=body, content_type="text/html", charset="utf-8",
                        headers={**COMMON_HEADERS, **(headers or {})})


def content_disposition(filename: str) -> str:
    """RFC 6266: an ASCII fallback plus filename* in UTF-8, so Chinese names survive."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\%' else "_" for c in filename)
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def mask_path(path: str) -> str:
    if path.startswith("/d/"):
        return "/d/" + path[3:3 + PREFIX_CHARS] + "…"
    return path


class MaskingAccessLogger(AbstractAccessLogger):
    """Access log without tokens (and without client addresses: readers' data stays in the DB)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        self.logger.info('"%s %s" %s %s %.3fs', request.method, mask_path(request.path),
                         response.status, response.body_length, time)


class BadTokenGuard:
    """Per-address memory of unknown tokens: answers slow down, then 429 for a while.

    In memory and per process on purpose: it only needs to make guessing
    tedious (a token has 192 bits; guessing cannot succeed anyway) and to keep
    scanners from loading the database.
    """

    MAX_ADDRESSES = 50_000

    def __init__(self, limit: int, window: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self.clock = clock
        self.misses: dict[str, deque[float]] = {}

    def _recent(self, address: str) -> deque[float]:
        q = self.misses.get(address)
        if q is None:
            return deque()
        cutoff = self.clock() - self.window
        while q and q[0] <= cutoff:
            q.popleft()
        if not q:
            del self.misses[address]
        return q

    def retry_after(self, address: str) -> float | None:
        """Seconds this address must wait, or None if it may ask."""
        q = self._recent(address)
        if len(q) >= self.limit:
            return max(1.0, q[0] + self.window - self.clock())
        return None

    def miss(self, address: str) -> float:
        """Record an unknown token; returns how long to delay the answer."""
        if address not in self.misses and len(self.misses) >= self.MAX_ADDRESSES:
            self._prune()
        q = self.misses.setdefault(address, deque(maxlen=self.limit + 1))
        q.append(self.clock())
        n = len(q)
        return 0.0 if n <= 3 else min(2.0, 0.05 * 2 ** (n - 3))

    def _prune(self) -> None:
        for address in list(self.misses):
            self._recent(address)
        if len(self.misses) >= self.MAX_ADDRESSES:
            self.misses.clear()  # under a flood, forgetting beats running out of memory


@dataclass
class Gateway:
    settings: Settings
    pool: asyncpg.Pool
    clock: Callable[[], datetime]
    guard: BadTokenGuard
    store: Path

    @staticmethod
    def address(request: web.Request) -> str:
        # The reader's address: behind a trusted proxy the hub's HTTP app (web/app.py,
        # forwarded_by) has already put the X-Forwarded-For client here.
        return request.remote or "unknown"


STATE = web.AppKey("delivery.gateway", Gateway)


async def _unknown(gw: Gateway, address: str) -> web.Response:
    delay = gw.guard.miss(address)
    if delay:
        await asyncio.sleep(delay)
    return page(UNKNOWN)


def _file_headers(filename: str) -> dict[str, str]:
    return {**COMMON_HEADERS, "Content-Disposition": content_disposition(filename)}


async def download(request: web.Request) -> web.StreamResponse:
    gw = request.app[STATE]
    address = gw.address(request)
    wait = gw.guard.retry_after(address)
    if wait is not None:
        return page(SLOW_DOWN, {"Retry-After": str(int(wait + 0.999))})
    token = request.match_info["token"]
    if not TOKEN_PATTERN.fullmatch(token):
        return await _unknown(gw, address)
    token_hash = hash_token(token)
    now = gw.clock()

    if request.method == "HEAD":
        row = await gw.pool.fetchrow(PEEK_SQL, token_hash)
        if row is None:
            return await _unknown(gw, address)
        live = ((row["remaining"] is None or row["remaining"] > 0) and row["expires_at"] > now
                and row["revoked_at"] is None and row["deleted_at"] is None)
        if not live:
            return page(GONE)
        resp = web.StreamResponse(headers=_file_headers(row["filename"]))
        resp.content_type = row["content_type"]
        resp.content_length = row["size"]
        await resp.prepare(request)
        await resp.write_eof()
        return resp

    agent = request.headers.get("User-Agent", "")[:300]
    row = await gw.pool.fetchrow(CLAIM_SQL, token_hash, now, address, agent)
    if row is None:
        if await gw.pool.fetchval("SELECT true FROM download_grant WHERE token_hash = $1",
                                  token_hash):
            return page(GONE)
        return await _unknown(gw, address)

    path = gw.store / row["store_name"]
    try:
        handle = await asyncio.to_thread(path.open, "rb")
    except OSError:
        log.error("grant %s: stored file %s missing; download refunded", row["grant_id"],
                  row["store_name"])
        await gw.pool.execute(
            """UPDATE download_grant SET remaining = remaining + 1, used = used - 1
               WHERE id = $1""", row["grant_id"])
        await gw.pool.execute("DELETE FROM download WHERE id = $1", row["download_id"])
        return page(UNAVAILABLE)

    sent = 0
    completed = False
    try:
        resp = web.StreamResponse(headers=_file_headers(row["filename"]))
        resp.content_type = row["content_type"]
        resp.content_length = row["size"]
        await resp.prepare(request)
        sent = await _send(request, handle, row["size"], resp)
        await resp.write_eof()
        completed = sent == row["size"]
    except (ConnectionError, RuntimeError, OSError) as exc:
        log.info("download %s cut short after %d bytes: %s", row["download_id"], sent,
                 type(exc).__name__)
    finally:
        await asyncio.to_thread(handle.close)
        # Shielded: the record must land even if the server is shutting down.
        await asyncio.shield(gw.pool.execute(
            "UPDATE download SET bytes = $2, completed = $3 WHERE id = $1",
            row["download_id"], sent, completed))
    return resp


async def _send(request: web.Request, handle: Any, size: int,
                resp: web.StreamResponse) -> int:
    """sendfile(2) in chunks, so a broken connection still tells how much went out."""
    transport = request.transport
    if transport is None:
        raise ConnectionResetError("client went away")
    loop = asyncio.get_running_loop()
    sent = 0
    while sent < size:
        if transport.is_closing():
            raise ConnectionResetError("client went away")
        try:
            n = await loop.sendfile(transport, handle, sent, min(SEND_CHUNK, size - sent))
        except NotImplementedError:
            # uvloop (the hub process's loop where installed) has no sendfile: copy the
            # chunk through Python instead.
            data = await asyncio.to_thread(os.pread, handle.fileno(),
                                           min(SEND_CHUNK, size - sent), sent)
            await resp.write(data)
            n = len(data)
        if n == 0:
            break
        sent += n
    return sent


def add_download_routes(app: web.Application, settings: Settings, pool: asyncpg.Pool, *,
                        clock: Callable[[], datetime] | None = None) -> None:
    """Serve `GET /d/{token}` (and HEAD, which does not count) on the hub's HTTP app."""
    app[STATE] = Gateway(
        settings=settings, pool=pool, clock=clock or (lambda: datetime.now(UTC)),
        guard=BadTokenGuard(settings.http.bad_token_limit,
                            settings.http.bad_token_window_seconds),
        store=store_root(settings),
    )
    app.router.add_get("/d/{token}", download)
