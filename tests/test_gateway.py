"""The download gateway over real HTTP (aiohttp client against the aiohttp server)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets

import aiohttp
import asyncpg
import pytest
from aiohttp.multipart import content_disposition_filename, parse_content_disposition

from delivery.gateway import BadTokenGuard, content_disposition
from delivery.grants import TOKEN_PATTERN, revoke_grant
from schemas.settings import Settings
from tests.support.delivery import delivery_settings, pdf_bytes, put_document, put_grant
from web.app import make_app, start_http


async def test_download_until_the_limit_then_410(settings: Settings, pool: asyncpg.Pool,
                                                 dl_gateway) -> None:
    content = pdf_bytes(700_000)
    doc = await put_document(pool, settings, content, filename="红楼梦研究 第1卷.pdf")
    grant = await put_grant(pool, doc, downloads=3)
    url = grant.url(dl_gateway.base_url)
    async with aiohttp.ClientSession() as http:
        for _ in range(3):
            async with http.get(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Type"] == "application/pdf"
                assert resp.content_length == len(content)
                assert resp.content_disposition is not None
                assert resp.content_disposition.filename == "红楼梦研究 第1卷.pdf"
                assert resp.headers["Cache-Control"] == "no-store"
                assert resp.headers["Referrer-Policy"] == "no-referrer"
                assert await resp.read() == content
        async with http.get(url) as resp:
            assert resp.status == 410
            page = await resp.text()
            assert "图书馆" in page and "ask your library" in page
    downloads = await pool.fetch("SELECT address, bytes, completed FROM download "
                                 "WHERE grant_id = $1", grant.id)
    assert [(d["address"], d["bytes"], d["completed"]) for d in downloads] == \
        [("127.0.0.1", len(content), True)] * 3
    assert await pool.fetchval("SELECT remaining FROM download_grant WHERE id = $1",
                               grant.id) == 0


async def test_hundred_parallel_clicks_get_exactly_five_downloads(settings: Settings,
                                                                  pool: asyncpg.Pool,
                                                                  dl_gateway) -> None:
    doc = await put_document(pool, settings, pdf_bytes(200_000))
    grant = await put_grant(pool, doc, downloads=5)
    url = grant.url(dl_gateway.base_url)
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(connector=connector) as http:
        async def click() -> int:
            async with http.get(url) as resp:
                await resp.read()
                return resp.status
        statuses = await asyncio.gather(*(click() for _ in range(100)))
    assert statuses.count(200) == 5
    assert statuses.count(410) == 95
    row = await pool.fetchrow("SELECT remaining, used FROM download_grant WHERE id = $1",
                              grant.id)
    assert (row["remaining"], row["used"]) == (0, 5)
    assert await pool.fetchval("SELECT count(*) FROM download WHERE grant_id = $1",
                               grant.id) == 5


async def test_expiry_follows_the_clock_and_head_does_not_count(settings: Settings,
                                                                pool: asyncpg.Pool, dl_gateway,
                                                                dl_clock) -> None:
    doc = await put_document(pool, settings, pdf_bytes(10_000))
    grant = await put_grant(pool, doc, downloads=2, days=3, now=dl_clock.now)
    url = grant.url(dl_gateway.base_url)
    async with aiohttp.ClientSession() as http:
        for _ in range(5):
            async with http.head(url) as resp:
                assert resp.status == 200
                assert resp.headers["Content-Length"] == str(doc.size)
                assert resp.content_disposition.filename == "文献.pdf"
        assert await pool.fetchval("SELECT remaining FROM download_grant WHERE id = $1",
                                   grant.id) == 2
        dl_clock.advance(days=2, hours=23)
        async with http.get(url) as resp:
            assert resp.status == 200
        dl_clock.advance(hours=1, seconds=1)
        async with http.get(url) as resp:
            assert resp.status == 410
        async with http.head(url) as resp:
            assert resp.status == 410
    assert await pool.fetchval("SELECT remaining FROM download_grant WHERE id = $1",
                               grant.id) == 1


async def test_unlimited_and_revoked_grants(settings: Settings, pool: asyncpg.Pool,
                                            dl_gateway, dl_clock) -> None:
    doc = await put_document(pool, settings, pdf_bytes(5_000))
    grant = await put_grant(pool, doc, downloads=None)
    url = grant.url(dl_gateway.base_url)
    async with aiohttp.ClientSession() as http:
        for _ in range(12):
            async with http.get(url) as resp:
                assert resp.status == 200
        assert await revoke_grant(pool, grant.id, dl_clock.now)
        async with http.get(url) as resp:
            assert resp.status == 410
    row = await pool.fetchrow("SELECT remaining, used FROM download_grant WHERE id = $1",
                              grant.id)
    assert (row["remaining"], row["used"]) == (None, 12)


async def test_unknown_tokens_404_then_slowed_then_429(settings: Settings, pool: asyncpg.Pool,
                                                       dl_clock) -> None:
    quick = delivery_settings(settings, http__bad_token_limit=4,
                              http__trusted_proxies=["127.0.0.1"])
    gw = await start_http(quick, make_app(quick, pool, clock=dl_clock))
    doc = await put_document(pool, settings, pdf_bytes(5_000))
    grant = await put_grant(pool, doc, downloads=5)
    try:
        async with aiohttp.ClientSession() as http:
            def get(path: str, client: str) -> aiohttp.client._RequestContextManager:
                return http.get(f"{gw.base_url}{path}", headers={"X-Forwarded-For": client})

            for path in ("/d/" + secrets.token_urlsafe(24), "/d/short", "/d/" + "x" * 32,
                         "/d/" + secrets.token_urlsafe(24)):
                async with get(path, "203.0.113.7") as resp:
                    assert resp.status == 404
                    assert "找不到" in await resp.text()
            async with get("/d/" + secrets.token_urlsafe(24), "203.0.113.7") as resp:
                assert resp.status == 429
                assert int(resp.headers["Retry-After"]) > 0
            # The penalty is per address: another reader is served.
            async with get(f"/d/{grant.token}", "198.51.100.9") as resp:
                assert resp.status == 200
            async with http.get(f"{gw.base_url}/healthz") as resp:
                assert resp.status == 200 and (await resp.json())["status"] == "ok"
    finally:
        await gw.stop()


def test_bad_token_guard_forgets_after_the_window() -> None:
    now = [0.0]
    guard = BadTokenGuard(limit=3, window=60, clock=lambda: now[0])
    delays = [guard.miss("a") for _ in range(3)]
    assert delays == [0.0, 0.0, 0.0]
    assert guard.retry_after("a") == 60
    assert guard.retry_after("b") is None
    now[0] = 61
    assert guard.retry_after("a") is None
    assert "a" not in guard.misses


async def test_missing_stored_file_is_not_counted(settings: Settings, pool: asyncpg.Pool,
                                                  dl_gateway) -> None:
    doc = await put_document(pool, settings, pdf_bytes(5_000))
    grant = await put_grant(pool, doc, downloads=2)
    doc.path(settings).unlink()
    async with aiohttp.ClientSession() as http, http.get(grant.url(dl_gateway.base_url)) as resp:
        assert resp.status == 500
    assert await pool.fetchval("SELECT remaining FROM download_grant WHERE id = $1",
                               grant.id) == 2


async def test_tokens_stay_out_of_the_access_log(settings: Settings, pool: asyncpg.Pool,
                                                 dl_gateway, caplog) -> None:
    doc = await put_document(pool, settings, pdf_bytes(5_000))
    grant = await put_grant(pool, doc)
    assert grant.token is not None
    with caplog.at_level(logging.DEBUG):
        async with aiohttp.ClientSession() as http, http.get(grant.url(dl_gateway.base_url)) as r:
            assert r.status == 200
            await r.read()
        await asyncio.sleep(0.05)
    assert f"/d/{grant.token[:6]}…" in caplog.text
    assert grant.token not in caplog.text
    assert grant.token not in repr(grant)


@pytest.mark.parametrize("name", ["红楼梦研究.pdf", "Report \"final\" 100%.pdf", "a;b,c.pdf",
                                  "日本語と中文 mixed.pdf"])
def test_content_disposition_round_trips(name: str) -> None:
    header = content_disposition(name)
    assert header.isascii()
    kind, params = parse_content_disposition(header)
    assert kind == "attachment"
    assert content_disposition_filename(params) == name


async def test_only_the_token_hash_is_stored(settings: Settings, pool: asyncpg.Pool) -> None:
    doc = await put_document(pool, settings, pdf_bytes(1_000))
    grants = [await put_grant(pool, doc) for _ in range(3)]
    tokens = {g.token for g in grants}
    assert len(tokens) == 3
    for g in grants:
        assert g.token is not None and TOKEN_PATTERN.fullmatch(g.token)
        assert len(g.token) * 6 >= 128  # base64url: 6 bits a character
        row = await pool.fetchrow("SELECT * FROM download_grant WHERE id = $1", g.id)
        assert row["token_hash"] == hashlib.sha256(g.token.encode()).digest()
        assert g.token not in repr(dict(row))
        assert g.url("https://ill.example.cn/") == f"https://ill.example.cn/d/{g.token}"
