"""Encrypted transport on the hub's own servers (issue 21): FTPS on the drop, HTTPS for
readers and operators, certificates rotated without a restart. Real servers and real
clients (ftplib, aiohttp, asyncio streams), each verifying against the test run's CA."""

from __future__ import annotations

import asyncio
import ftplib
import io
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import asyncpg
import pytest
import trustme

from app.hub import Hub
from delivery.ftp import FtpDrop, start_ftp
from illclient.client import AgencyClient
from infra.tls import ServerContexts
from schemas.settings import Settings
from sim.uploads import FtpSession
from tests.support import messages
from tests.support.delivery import (
    LINK,
    SmtpServer,
    home,
    pdf_bytes,
    put_document,
    put_grant,
    unique_email,
    with_smtp,
)
from tests.support.hub import Party
from tests.support.messages import supplier_message
from tests.support.network import ISSN
from tests.support.operators import OPERATOR, PASSWORD, ensure_operator
from tests.support.tls import ServerPem, verifying, write_server_pem
from web.app import HttpServer, make_app, start_http

HSTS = "Strict-Transport-Security"


def with_tls(settings: Settings, pem: ServerPem, **more: object) -> Settings:
    return settings.updated(ftp__tls_cert=str(pem.cert), ftp__tls_key=str(pem.key),
                            ftp__require_tls=True, http__tls_cert=str(pem.cert),
                            http__tls_key=str(pem.key), **more)


# --- clients (ftplib is blocking: run these with asyncio.to_thread) -------------------

def ftps_login(host: str, port: int, ca: Path, user: str, password: str) -> ftplib.FTP_TLS:
    """A supplier's FTPS client: AUTH TLS (the drop verified against `ca`), then login."""
    ftp = ftplib.FTP_TLS(context=verifying(ca), timeout=10, encoding="utf-8")
    ftp.connect(host, port)
    ftp.auth()
    ftp.login(user, password)
    return ftp


def ftps_upload(host: str, port: int, ca: Path, user: str, password: str, name: str,
                content: bytes) -> tuple[str, bool]:
    """Upload with PROT P; returns the server's answer and whether the data went in TLS."""
    ftp = ftps_login(host, port, ca, user, password)
    try:
        ftp.prot_p()
        ftp.voidcmd("TYPE I")
        with ftp.transfercmd(f"STOR {name}") as conn:
            encrypted = isinstance(conn, ssl.SSLSocket)
            conn.sendall(content)
            if isinstance(conn, ssl.SSLSocket):
                conn.unwrap()
        return ftp.voidresp(), encrypted
    finally:
        ftp.quit()


def cleartext_login(drop: FtpDrop, user: str, password: str) -> str:
    ftp = ftplib.FTP(timeout=10, encoding="utf-8")
    ftp.connect(drop.host, drop.port)
    try:
        ftp.login(user, password)
    except ftplib.error_perm as exc:
        return str(exc)
    finally:
        ftp.close()
    return "logged in"


async def peer_serial(server: HttpServer, ca: Path) -> tuple[str, asyncio.StreamReader,
                                                            asyncio.StreamWriter]:
    """A new verified TLS connection to `server`: the certificate's serial, and the
    connection (still open)."""
    reader, writer = await asyncio.open_connection(server.host, server.port, ssl=verifying(ca))
    cert = writer.get_extra_info("peercert")
    return cert["serialNumber"], reader, writer


# --- a hub with TLS on both servers -------------------------------------------------------

@pytest.fixture
async def tls_hub(settings: Settings, make_agency, pool: asyncpg.Pool, dl_settings: Settings,
                  dl_smtp: SmtpServer, server_pem: ServerPem
                  ) -> AsyncIterator[tuple[Hub, Party, Party, str]]:
    """A hub serving FTPS and HTTPS, a requester and a supplier holding the ISSN; yields
    (hub, requester, supplier, supplier's password)."""
    await dl_smtp.start()
    s = with_tls(with_smtp(dl_settings, dl_smtp), server_pem)
    hub = Hub(s)
    req_symbol, req_pw = await make_agency(name="复旦大学图书馆", roles=("requester",))
    sup_symbol, sup_pw = await make_agency(name="国家图书馆", roles=("supplier",))
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       ISSN, sup_symbol)
    await hub.start()
    req = Party(req_symbol, AgencyClient(s, req_symbol, req_pw))
    sup = Party(sup_symbol, AgencyClient(s, sup_symbol, sup_pw))
    await req.client.connect()
    await sup.client.connect()
    yield hub, req, sup, sup_pw
    await req.client.close()
    await sup.client.close()
    await hub.stop()


async def test_supplier_uploads_a_pdf_over_ftps_to_the_hub(tls_hub, server_pem: ServerPem,
                                                           settings: Settings,
                                                           pool: asyncpg.Pool) -> None:
    hub, _req, sup, sup_pw = tls_hub
    content = pdf_bytes(400_000)
    answer, encrypted = await asyncio.to_thread(
        ftps_upload, hub.ftp.host, hub.ftp.port, server_pem.ca, sup.symbol, sup_pw,
        "论文 FTPS.pdf", content)
    assert answer.startswith("226") and encrypted
    assert (home(settings, sup.symbol) / "论文 FTPS.pdf").read_bytes() == content
    row = await pool.fetchrow(
        "SELECT state, size FROM ftp_upload WHERE supplier = $1 AND path = $2", sup.symbol,
        "论文 FTPS.pdf")
    assert (row["state"], row["size"]) == ("done", len(content))

    # The simulated suppliers' uploader speaks the same FTPS.
    session = FtpSession(sup.symbol, sup_pw, tls=verifying(server_pem.ca))
    await asyncio.to_thread(session.upload, (hub.ftp.host, hub.ftp.port), "second.pdf",
                            content[:50_000])
    await asyncio.to_thread(session.close)
    assert (home(settings, sup.symbol) / "second.pdf").read_bytes() == content[:50_000]


async def test_reader_gets_an_https_link_and_downloads_it_verified(
        tls_hub, server_pem: ServerPem, dl_smtp: SmtpServer) -> None:
    hub, req, sup, sup_pw = tls_hub
    reader = unique_email("patron")
    body = messages.request(req.symbol, request_id="TLS-1", issn=ISSN, title="红楼梦研究")
    body["request"]["patronInfo"]["address"][0]["electronicAddress"][
        "electronicAddressData"] = reader
    await req.send("request", body)
    await req.confirmed()
    await req.status("ExpectToSupply")
    await sup.next("request")
    content = pdf_bytes(300_000)
    await asyncio.to_thread(ftps_upload, hub.ftp.host, hub.ftp.port, server_pem.ca,
                            sup.symbol, sup_pw, "红楼梦.pdf", content)
    done = supplier_message(sup.symbol, req.symbol, "TLS-1", "CopyCompleted")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "sentVia": "FTP", "itemId": "/红楼梦.pdf"}
    await sup.send("supplyingAgencyMessage", done)
    await sup.confirmed()
    await req.status("CopyCompleted")

    for _ in range(100):  # the mail sender runs in the hub
        if dl_smtp.catcher.messages_to(reader):
            break
        await asyncio.sleep(0.1)
    [mail] = dl_smtp.catcher.messages_to(reader)
    [link] = set(LINK.findall(mail.get_body(("plain",)).get_content()))
    assert link.startswith(f"https://127.0.0.1:{hub.http.port}/d/")
    assert hub.http.base_url.startswith("https://")

    async with aiohttp.ClientSession() as http:
        async with http.get(link, ssl=verifying(server_pem.ca)) as resp:
            assert resp.status == 200
            assert await resp.read() == content
            assert resp.headers[HSTS] == "max-age=31536000"
        async with http.get(f"{hub.http.base_url}/no/such/page",
                            ssl=verifying(server_pem.ca)) as resp:
            assert resp.status == 404 and resp.headers[HSTS] == "max-age=31536000"
        # Cleartext HTTP to the TLS port gets no answer at all.
        with pytest.raises(aiohttp.ClientError):
            async with http.get(link.replace("https://", "http://", 1)) as resp:
                await resp.read()
        # Nor does a client that does not trust the hub's CA.
        with pytest.raises(aiohttp.ClientConnectorCertificateError):
            async with http.get(link, ssl=ssl.create_default_context()) as resp:
                await resp.read()


# --- the drop alone -------------------------------------------------------------------------

@pytest.fixture
async def tls_drop(settings: Settings, pool: asyncpg.Pool, dl_settings: Settings,
                   server_pem: ServerPem) -> AsyncIterator[FtpDrop]:
    s = with_tls(dl_settings, server_pem, ftp__announce_address="203.0.113.9")
    drop = await start_ftp(s, pool, ssl=ServerContexts.from_settings(s).ftp)
    yield drop
    await drop.stop()


async def test_cleartext_ftp_login_is_refused(tls_drop: FtpDrop, dl_supplier,
                                              settings: Settings) -> None:
    symbol, password = dl_supplier
    answer = await asyncio.to_thread(cleartext_login, tls_drop, symbol, password)
    assert answer.startswith("530") and "AUTH TLS first" in answer
    assert not home(settings, symbol).exists()  # never logged in


async def test_data_without_prot_p_is_refused_and_pasv_announced(
        tls_drop: FtpDrop, dl_supplier, server_pem: ServerPem) -> None:
    symbol, password = dl_supplier

    def session() -> tuple[str, str, str, str]:
        ftp = ftps_login(tls_drop.host, tls_drop.port, server_pem.ca, symbol, password)
        try:
            try:
                ftp.storbinary("STOR clear.pdf", io.BytesIO(pdf_bytes(1000)))
                refused = "stored"
            except ftplib.error_perm as exc:
                refused = str(exc)
            ftp.sendcmd("PBSZ 0")
            prot_c = _answer(ftp, "PROT C")
            ftp.prot_p()
            pasv, epsv = ftp.sendcmd("PASV"), ftp.sendcmd("EPSV")
            return refused, prot_c, pasv, epsv
        finally:
            ftp.quit()

    refused, prot_c, pasv, epsv = await asyncio.to_thread(session)
    assert refused.startswith("521") and "PROT P" in refused
    assert prot_c.startswith("534")
    # Behind TLS the passive answers are aioftp's as ever: the announced address and a port.
    assert pasv.startswith("227") and "(203,0,113,9," in pasv
    assert epsv.startswith("229") and "(|||" in epsv


def _answer(ftp: ftplib.FTP, command: str) -> str:
    try:
        return ftp.sendcmd(command)
    except ftplib.error_perm as exc:
        return str(exc)


# --- operators' cookie ----------------------------------------------------------------------

async def _session_cookie(url: str, headers: dict[str, str] | None = None,
                          context: ssl.SSLContext | None = None) -> str:
    async with aiohttp.ClientSession() as http, http.post(
            f"{url}/signin", data={"login": OPERATOR, "password": PASSWORD, "next": "/ops/"},
            headers=headers or {}, allow_redirects=False, ssl=context or True) as resp:
        assert resp.status == 303
        return resp.headers["Set-Cookie"]


async def test_operator_cookie_is_secure_over_tls_and_behind_a_trusted_proxy(
        settings: Settings, pool: asyncpg.Pool, server_pem: ServerPem) -> None:
    await ensure_operator(pool)
    https = with_tls(settings, server_pem)
    server = await start_http(https, make_app(https, pool),
                              ssl=ServerContexts.from_settings(https).http)
    proxied = settings.updated(http__trusted_proxies=["127.0.0.1"])
    behind = await start_http(proxied, make_app(proxied, pool))
    plain = await start_http(settings, make_app(settings, pool))
    try:
        assert "Secure" in await _session_cookie(server.base_url,
                                                 context=verifying(server_pem.ca))
        https_proxy = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "198.51.100.4"}
        assert "Secure" in await _session_cookie(behind.base_url, https_proxy)
        assert "Secure" not in await _session_cookie(behind.base_url)
        # From a client that is no trusted proxy the header means nothing.
        assert "Secure" not in await _session_cookie(plain.base_url, https_proxy)
        async with aiohttp.ClientSession() as http, http.get(f"{plain.base_url}/healthz") as r:
            assert HSTS not in r.headers  # no TLS of the hub's own: no HSTS
    finally:
        for s in (server, behind, plain):
            await s.stop()


# --- certificate rotation -------------------------------------------------------------------

async def test_reloaded_certificate_serves_new_connections_while_running(
        settings: Settings, pool: asyncpg.Pool, test_ca: trustme.CA,
        server_pem: ServerPem) -> None:
    s = with_tls(settings, server_pem)
    contexts = ServerContexts.from_settings(s)
    server = await start_http(s, make_app(s, pool), ssl=contexts.http)
    doc = await put_document(pool, s, pdf_bytes(5_000))
    grant = await put_grant(pool, doc)
    try:
        before, old_reader, old_writer = await peer_serial(server, server_pem.ca)
        rotated = write_server_pem(test_ca, server_pem.cert.parent)  # same files, new cert
        assert rotated.cert == server_pem.cert
        assert contexts.reload() == []
        after, _reader, writer = await peer_serial(server, server_pem.ca)
        assert after != before
        writer.close()
        # The connection opened before the rotation still works, on its old certificate.
        assert old_writer.get_extra_info("peercert")["serialNumber"] == before
        old_writer.write(f"GET /d/{grant.token} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                         "Connection: close\r\n\r\n".encode())
        head = await old_reader.readline()
        assert head.startswith(b"HTTP/1.1 200"), head
        old_writer.close()
    finally:
        await server.stop()


async def test_reloaded_certificate_reaches_new_ftps_sessions(
        settings: Settings, pool: asyncpg.Pool, dl_settings: Settings, test_ca: trustme.CA,
        server_pem: ServerPem, dl_supplier) -> None:
    symbol, password = dl_supplier
    s = with_tls(dl_settings, server_pem)
    contexts = ServerContexts.from_settings(s)
    drop = await start_ftp(s, pool, ssl=contexts.ftp)

    def serial() -> str:
        ftp = ftps_login(drop.host, drop.port, server_pem.ca, symbol, password)
        try:
            sock = ftp.sock
            assert isinstance(sock, ssl.SSLSocket)
            return str(sock.getpeercert()["serialNumber"])
        finally:
            ftp.quit()

    try:
        before = await asyncio.to_thread(serial)
        write_server_pem(test_ca, server_pem.cert.parent)
        assert contexts.reload() == []
        assert await asyncio.to_thread(serial) != before
    finally:
        await drop.stop()


async def test_commands_sent_ahead_of_the_tls_handshake_end_the_session(
        tls_drop: FtpDrop) -> None:
    """AUTH TLS with a command behind it in the same packet (the STARTTLS injection): the
    command must not run as if it had come over TLS; the session ends instead."""

    def inject() -> bytes:
        with socket.create_connection((tls_drop.host, tls_drop.port), timeout=5) as sock:
            sock.recv(512)  # the greeting
            sock.sendall(b"AUTH TLS\r\nUSER injected\r\n")
            received = b""
            while chunk := sock.recv(512):
                received += chunk
            return received

    received = await asyncio.to_thread(inject)
    assert received.startswith(b"234 ") and b"331" not in received  # and then closed
