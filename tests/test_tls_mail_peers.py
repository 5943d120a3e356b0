"""Encrypted transport to the mail server and to ISO 18626 peers (issue #21).

Real servers only: aiosmtpd requiring STARTTLS (or not offering it), aiohttp peers over
HTTPS, certificates from a throwaway CA (tests/support/tls.py), PostgreSQL for the
outboxes and `run.py agency set --iso18626-ca` in a child process.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import trustme
from aiosmtpd.controller import Controller

from broker.agencies import AgencyError, read_ca_pem
from broker.peers import PeerRelay
from infra.mailqueue import MailSender, enqueue_mail
from infra.outbox import Outgoing, enqueue
from schemas.settings import Settings
from schemas.wire import OUTBOUND
from tests.support.agencies import MakeAgency
from tests.support.cli import run
from tests.support.delivery import Catcher, unique_email
from tests.support.iso18626_peer import XmlPeer, https_peer
from tests.support.messages import supplier_message
from tests.support.servers import free_port
from tests.support.tls import ServerPem, write_server_pem

SUBJECT = "馆际互借通知：《天工开物》已到馆 ILL notice"
TEXT = "您申请的《天工开物》（宋应星著）已到馆，请于七日内到流通台领取。"


# --- SMTP ---------------------------------------------------------------------------------

@dataclass
class Watcher(Catcher):
    """A Catcher that also notes every MAIL FROM: nothing may start in cleartext."""

    mail_from: list[str] = field(default_factory=list)

    async def handle_MAIL(self, server: Any, session: Any, envelope: Any, address: str,
                          mail_options: list[str]) -> str:
        self.mail_from.append(address)
        envelope.mail_from = address
        return "250 OK"


class MailServer:
    """aiosmtpd on 127.0.0.1; with `pem`, it offers STARTTLS and requires it."""

    def __init__(self, pem: ServerPem | None) -> None:
        self.port = free_port()
        self.catcher = Watcher()
        tls: dict[str, Any] = {}
        if pem is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(pem.cert, pem.key)
            tls = {"tls_context": context, "require_starttls": True}
        self.controller = Controller(self.catcher, hostname="127.0.0.1", port=self.port,
                                     **tls)

    async def start(self) -> MailServer:
        await asyncio.to_thread(self.controller.start)
        return self

    async def stop(self) -> None:
        await asyncio.to_thread(self.controller.stop)


@pytest.fixture
async def starttls_server(server_pem: ServerPem) -> AsyncIterator[MailServer]:
    server = await MailServer(server_pem).start()
    yield server
    await server.stop()


@pytest.fixture
async def cleartext_server() -> AsyncIterator[MailServer]:
    server = await MailServer(None).start()
    yield server
    await server.stop()


def mail_settings(settings: Settings, server: MailServer, ca: Path,
                  security: str = "starttls") -> Settings:
    return settings.updated(smtp__host="127.0.0.1", smtp__port=server.port,
                            smtp__security=security, smtp__ca_file=str(ca))


async def queue_mail(pool: asyncpg.Pool) -> str:
    to = unique_email("tls")
    async with pool.acquire() as conn, conn.transaction():
        await enqueue_mail(conn, to, SUBJECT, TEXT)
    return to


async def mail_row(pool: asyncpg.Pool, to: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT sent_at, failed_at, attempts, last_error, raw IS NOT NULL AS kept "
        "FROM mail_outbox WHERE recipients[1] = $1", to)


async def send_until(sender: MailSender, server: MailServer, to: str) -> list[EmailMessage]:
    """Send rounds until `to` got its mail (other tests' due mail may come first)."""
    for _ in range(20):
        if server.catcher.messages_to(to) or await sender.send_due() == 0:
            break
    return server.catcher.messages_to(to)


async def test_mail_goes_through_starttls_verified_with_the_ca_file(
        settings: Settings, pool: asyncpg.Pool, starttls_server: MailServer,
        server_pem: ServerPem) -> None:
    to = await queue_mail(pool)
    sender = MailSender(pool, mail_settings(settings, starttls_server, server_pem.ca))

    [msg] = await send_until(sender, starttls_server, to)

    assert str(msg["Subject"]) == SUBJECT
    assert msg.get_body(("plain",)).get_content().strip() == TEXT
    row = await mail_row(pool, to)
    assert row["sent_at"] is not None and row["last_error"] is None


async def test_mail_with_the_hubs_own_context_and_implicit_tls(
        settings: Settings, pool: asyncpg.Pool, server_pem: ServerPem) -> None:
    """security "tls": TLS from the first byte (port 465 style), with the context the hub
    passes in (app/hub.py builds it once for all senders)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_pem.cert, server_pem.key)
    catcher = Watcher()
    port = free_port()
    controller = Controller(catcher, hostname="127.0.0.1", port=port, ssl_context=context)
    await asyncio.to_thread(controller.start)
    try:
        to = await queue_mail(pool)
        smtp = settings.updated(smtp__host="127.0.0.1", smtp__port=port, smtp__security="tls")
        sender = MailSender(pool, smtp,
                            tls_context=ssl.create_default_context(cafile=str(server_pem.ca)))
        for _ in range(20):
            if catcher.messages_to(to) or await sender.send_due() == 0:
                break
        [msg] = catcher.messages_to(to)
        assert str(msg["Subject"]) == SUBJECT
    finally:
        await asyncio.to_thread(controller.stop)


async def test_a_server_certificate_from_another_ca_sends_nothing_and_keeps_the_mail(
        settings: Settings, pool: asyncpg.Pool, starttls_server: MailServer,
        tmp_path: Path) -> None:
    stranger = write_server_pem(trustme.CA(organization_name="其他 CA"), tmp_path / "other")
    to = await queue_mail(pool)
    sender = MailSender(pool, mail_settings(settings, starttls_server, stranger.ca))

    assert await sender.send_due() == 0

    assert starttls_server.catcher.received == []
    assert starttls_server.catcher.mail_from == []
    row = await mail_row(pool, to)
    assert row["sent_at"] is None and row["failed_at"] is None and row["kept"]
    assert row["attempts"] == 1  # retried later, with backoff, like a server that is down
    assert "certificate of the mail server" in row["last_error"]
    assert "could not be verified" in row["last_error"]
    assert "ILLHUB_SMTP__CA_FILE" in row["last_error"]


async def test_starttls_required_but_not_offered_sends_nothing_in_cleartext(
        settings: Settings, pool: asyncpg.Pool, cleartext_server: MailServer,
        server_pem: ServerPem) -> None:
    to = await queue_mail(pool)
    sender = MailSender(pool, mail_settings(settings, cleartext_server, server_pem.ca)
                        .updated(smtp__user="illhub", smtp__password="不该明文发送"))

    assert await sender.send_due() == 0

    assert cleartext_server.catcher.mail_from == []  # not even MAIL FROM, let alone DATA
    assert cleartext_server.catcher.received == []
    row = await mail_row(pool, to)
    assert row["sent_at"] is None and row["failed_at"] is None and row["kept"]
    assert "does not offer STARTTLS" in row["last_error"]
    assert "ILLHUB_SMTP__SECURITY=starttls" in row["last_error"]


# --- ISO 18626 peers over HTTPS -------------------------------------------------------------

@pytest.fixture
async def https_library(make_agency: MakeAgency, pool: asyncpg.Pool,
                        server_pem: ServerPem) -> AsyncIterator[tuple[str, XmlPeer]]:
    """A requester whose ILL system takes ISO 18626 over HTTPS (a test CA's certificate)."""
    symbol, _ = await make_agency(f"TLS-{secrets.token_hex(3)}", roles=("requester",))
    peer = await https_peer(server_pem).start()
    await pool.execute("UPDATE agency SET iso18626_url = $2 WHERE symbol = $1", symbol,
                       peer.url)
    yield symbol, peer
    await peer.stop()


async def queue_for_peer(pool: asyncpg.Pool, symbol: str) -> str:
    """An outbox row to the peer (as dispatch writes one): an Unfilled with a Chinese note."""
    request_id = f"TLS-{uuid.uuid4().hex[:8]}"
    body = supplier_message(f"T{secrets.token_hex(2)}:LIB", symbol, request_id, "Unfilled",
                            note="无人收藏此书")
    async with pool.acquire() as conn, conn.transaction():
        message = Outgoing(OUTBOUND, symbol, body, message_type="supplyingAgencyMessage",
                           headers={"hub-transaction-id": f"ILL-TLS-{request_id}"})
        await enqueue(conn, [message])
    return message.message_id


async def outbox_row(pool: asyncpg.Pool, message_id: str) -> asyncpg.Record:
    return await pool.fetchrow(
        "SELECT transport, published_at, attempts, last_error, peer_status FROM outbox "
        "WHERE message_id = $1", message_id)


async def relay_until_tried(relay: PeerRelay, pool: asyncpg.Pool, message_id: str) -> None:
    for _ in range(20):
        row = await outbox_row(pool, message_id)
        if row["attempts"] > 0 or row["published_at"] is not None:
            return
        await relay.send_due()
        await asyncio.sleep(0.05)
    raise AssertionError(f"{message_id} was never tried")


async def test_an_https_peer_is_verified_through_peers_ca_file(
        settings: Settings, pool: asyncpg.Pool, https_library: tuple[str, XmlPeer],
        server_pem: ServerPem) -> None:
    symbol, peer = https_library
    message_id = await queue_for_peer(pool, symbol)
    relay = PeerRelay(pool, settings.updated(http__peers_ca_file=str(server_pem.ca)),
                      timeout=5.0)

    await relay_until_tried(relay, pool, message_id)

    row = await outbox_row(pool, message_id)
    assert row["transport"] == "iso18626-http"
    assert (row["peer_status"], row["last_error"]) == ("OK", None)
    assert peer.url.startswith("https://")
    [got] = peer.received
    assert got.message_id == message_id
    assert got.content["messageInfo"]["note"] == "无人收藏此书"


async def test_an_untrusted_peer_is_refused_until_its_ca_is_set(
        settings: Settings, pool: asyncpg.Pool, https_library: tuple[str, XmlPeer],
        server_pem: ServerPem, tmp_path: Path) -> None:
    symbol, peer = https_library
    message_id = await queue_for_peer(pool, symbol)
    relay = PeerRelay(pool, settings, timeout=5.0)  # the system's CAs only

    await relay_until_tried(relay, pool, message_id)

    row = await outbox_row(pool, message_id)
    assert peer.received == []
    assert row["published_at"] is None and row["peer_status"] is None
    assert "TLS certificate of https://127.0.0.1" in row["last_error"]
    assert "could not be verified" in row["last_error"]
    assert f"run.py agency set {symbol} --iso18626-ca FILE" in row["last_error"]
    flag = await pool.fetchrow("SELECT detail, transaction_id FROM flag "
                               "WHERE kind = 'peer_error' AND subject = $1", symbol)
    assert flag is not None and message_id in flag["detail"]
    assert "could not be verified" in flag["detail"]

    # The operators trust the peer's own CA: only its certificates are stored.
    combined = tmp_path / "peer-ca.pem"
    combined.write_text(server_pem.key.read_text() + server_pem.ca.read_text())
    code, out, err = await run(settings, "agency", "set", symbol, "--iso18626-ca",
                               str(combined))
    assert code == 0, err
    assert "its own CA trusted for HTTPS" in out
    stored = await pool.fetchval("SELECT iso18626_ca FROM agency WHERE symbol = $1", symbol)
    assert stored.strip() == server_pem.ca.read_text().strip()
    code, out, err = await run(settings, "agency", "list")
    assert code == 0, err
    [line] = [x for x in out.splitlines() if x.startswith(symbol + " ")]
    assert "http/1.2+ca" in line

    # The backoff is over (no waiting for its seconds in a test).
    await pool.execute("UPDATE outbox SET available_at = now() WHERE message_id = $1",
                       message_id)
    for _ in range(20):
        if (await outbox_row(pool, message_id))["published_at"] is not None:
            break
        await relay.send_due()
    row = await outbox_row(pool, message_id)
    assert (row["peer_status"], row["attempts"]) == ("OK", 2)
    assert [g.message_id for g in peer.received] == [message_id]


async def test_agency_iso18626_ca_must_be_a_readable_certificate(
        settings: Settings, server_pem: ServerPem, tmp_path: Path) -> None:
    with pytest.raises(AgencyError, match="no certificate in it"):
        read_ca_pem(str(server_pem.key))
    with pytest.raises(AgencyError, match="cannot read it"):
        read_ca_pem(str(tmp_path / "missing.pem"))
    code, _, err = await run(settings, "agency", "set", "ISIL:CN-NONE", "--iso18626-ca",
                             str(tmp_path / "missing.pem"))
    assert code == 2
    assert "--iso18626-ca" in err and "cannot read it" in err
