"""Security checks (issue #9) that the other test modules do not already make.

Already covered elsewhere, not repeated here: basic.get on another agency's queue,
publishing to ill.outbound, declaring a queue and spoofing user_id
(test_topology_agencies); FTP `..`, absolute paths and symlinks out of a home
(test_ftp, test_delivery_intake); unknown download tokens answered 404 then 429,
tokens masked in the access log and stored only as SHA-256 (test_gateway);
operator sign-in, forged cookies and login rate limits (test_operators).

Download tokens are compared in constant time with respect to the secret: the
gateway looks a grant up by SHA-256(token) in a PostgreSQL index, so whatever
an early-exit comparison could leak is about a hash the attacker cannot steer
towards a real token. `test_download_tokens_are_found_only_by_their_full_hash`
shows the lookup uses nothing else (not the stored prefix).
"""

from __future__ import annotations

import asyncio
import ftplib
import hashlib
import json
import logging
import secrets
from pathlib import Path

import aiohttp
import aiormq
import asyncpg
import pytest
from aiohttp import web

from accounts import people
from accounts.audit import Actor
from app.cli import QUIET_LOGGERS
from app.hub import Hub
from bench.fuzz_cases import issn as make_issn
from broker.dispatch.dispatcher import Dispatcher
from broker.shards import declare_hub_topology
from delivery.grants import TOKEN_BYTES, hash_token
from delivery.intake import CopyProblem, accept_copy
from illclient.client import AgencyClient
from infra.credentials import verify_password
from infra.rabbit_admin import Management
from schemas.settings import Settings
from tests.support import messages
from tests.support.delivery import (
    ftp_try,
    ftp_upload,
    home,
    names,
    pdf_bytes,
    put_document,
    put_grant,
    try_login,
    unique_email,
    with_smtp,
)
from tests.support.hub import Party
from tests.support.messages import requester_action, supplier_message
from tests.support.names import unique
from web.app import make_app


async def test_an_agency_cannot_reach_beyond_its_queue_and_ill_inbound(
        settings: Settings, pool: asyncpg.Pool, make_agency, broker_refusals) -> None:
    shards = await declare_hub_topology(settings, pool)
    alice, alice_pw = await make_agency()
    bob, _ = await make_agency()
    n = settings.name
    attempts = {
        "consume bob's queue": lambda ch: _consume(ch, n(f"agency.{bob}")),
        "consume an intake shard": lambda ch: _consume(ch, n(shards.queues()[0])),
        "publish to an intake shard's exchange": lambda ch: _publish(
            ch, n(f"hub.intake.g{shards.number}"), "request"),
        "read hub.dead": lambda ch: _get(ch, n("hub.dead")),
        "purge bob's queue": lambda ch: _purge(ch, n(f"agency.{bob}")),
        "delete bob's queue": lambda ch: ch.queue_delete(n(f"agency.{bob}")),
        "bind own queue to bob's messages": lambda ch: ch.queue_bind(
            n(f"agency.{alice}"), n("ill.outbound"), routing_key=bob),
        "declare an exchange": lambda ch: ch.exchange_declare(n("mine"), durable=True),
        "publish to ill.events": lambda ch: _publish(ch, n("ill.events"), "transaction.x"),
        "publish to ill.finance": lambda ch: _publish(ch, n("ill.finance"), "statement.x"),
        "publish to ill.dead": lambda ch: _publish(ch, n("ill.dead"), "x"),
    }
    refused = {}
    conn = await aiormq.connect(settings.amqp_url_for(alice, alice_pw))
    try:
        for label, attempt in attempts.items():
            channel = await conn.channel(publisher_confirms=True)
            try:
                await attempt(channel)
                refused[label] = "allowed"
            except aiormq.exceptions.ChannelAccessRefused:
                refused[label] = "ACCESS_REFUSED"
        # The one thing it may do besides reading its own queue.
        channel = await conn.channel(publisher_confirms=True)
        await _publish(channel, n("ill.inbound"), "request", user_id=alice)
    finally:
        await conn.close()
    assert refused == dict.fromkeys(attempts, "ACCESS_REFUSED")


async def _consume(channel: aiormq.abc.AbstractChannel, queue: str) -> None:
    await channel.basic_consume(queue, lambda _m: asyncio.sleep(0))


async def _get(channel: aiormq.abc.AbstractChannel, queue: str) -> None:
    await channel.basic_get(queue)


async def _purge(channel: aiormq.abc.AbstractChannel, queue: str) -> None:
    await channel.queue_purge(queue)


async def _publish(channel: aiormq.abc.AbstractChannel, exchange: str, key: str,
                   user_id: str | None = None) -> None:
    await channel.basic_publish(b"{}", exchange=exchange, routing_key=key,
                                properties=aiormq.spec.Basic.Properties(user_id=user_id))


async def test_a_stranger_to_a_transaction_can_neither_touch_nor_see_it(
        settings: Settings, hub, make_agency, pool: asyncpg.Pool) -> None:
    parties = {}
    for key, roles in (("req", ("requester",)), ("sup", ("supplier",)),
                       ("stranger", ("requester", "supplier"))):
        symbol, pw = await make_agency(roles=roles)
        client = AgencyClient(settings, symbol, pw)
        await client.connect()
        parties[key] = Party(symbol, client)
    req, sup, stranger = parties["req"], parties["sup"], parties["stranger"]
    issn = make_issn(secrets.randbelow(10_000_000))
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       issn, sup.symbol)
    try:
        await req.send("request", messages.request(req.symbol, request_id="S-1", issn=issn))
        await req.confirmed()
        await req.status("ExpectToSupply")
        await sup.next("request")
        before = await pool.fetchrow("SELECT row_to_json(t)::text AS row FROM ill_transaction t "
                                     "WHERE requester = $1 AND request_id = 'S-1'", req.symbol)

        answers = []
        for request_id in ("S-1", "NO-SUCH-REQUEST"):  # a real one, and one that never was
            await stranger.send("supplyingAgencyMessage", supplier_message(
                stranger.symbol, req.symbol, request_id, "CopyCompleted"))
            answers.append(await stranger.confirmed(ok=False))
        real, unknown = answers
        assert real.content["errorData"] == {
            "errorType": "UnrecognisedDataValue",
            "errorValue": unknown.content["errorData"]["errorValue"].replace(
                "NO-SUCH-REQUEST", "S-1")}
        assert "hub-transaction-id" not in real.headers
        # As a requester, naming the real requester, or itself with the other's request id.
        await stranger.send("requestingAgencyMessage", requester_action(
            req.symbol, sup.symbol, "S-1", "Cancel"))
        spoofed = await stranger.confirmed(ok=False)
        assert "is not the sending agency" in spoofed.content["errorData"]["errorValue"]
        await stranger.send("requestingAgencyMessage", requester_action(
            stranger.symbol, sup.symbol, "S-1", "Cancel"))
        own_name = await stranger.confirmed(ok=False)
        assert "no request 'S-1'" in own_name.content["errorData"]["errorValue"]
        assert "hub-transaction-id" not in own_name.headers

        after = await pool.fetchrow("SELECT row_to_json(t)::text AS row FROM ill_transaction t "
                                    "WHERE requester = $1 AND request_id = 'S-1'", req.symbol)
        assert after["row"] == before["row"]
        assert req.client.inbox.empty() and sup.client.inbox.empty()
        # The parties themselves carry on.
        await sup.send("supplyingAgencyMessage", supplier_message(
            sup.symbol, req.symbol, "S-1", "WillSupply"))
        await sup.confirmed()
        await req.status("WillSupply")
    finally:
        for party in parties.values():
            await party.client.close()


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink()}


async def test_ftp_commands_cannot_cross_into_another_home(settings: Settings, dl_ftp,
                                                          dl_supplier, make_agency,
                                                          pool: asyncpg.Pool) -> None:
    """Renames, directories, deletes and metadata (test_ftp covers RETR, STOR, CWD)."""
    symbol, password = dl_supplier
    other, other_password = await make_agency(roles=("supplier",))
    await asyncio.to_thread(ftp_upload, dl_ftp, other, other_password, "secret.pdf",
                            pdf_bytes(1000))
    await asyncio.to_thread(ftp_upload, dl_ftp, symbol, password, "mine.pdf", pdf_bytes(1000))
    other_home, theirs = home(settings, other), f"../{home(settings, other).name}"
    before = _tree(home(settings, other).parent)

    def attempts(ftp: ftplib.FTP) -> dict[str, str]:
        out = {}
        for label, commands in {
            "rename theirs to mine": [f"RNFR {theirs}/secret.pdf", "RNTO stolen.pdf"],
            "rename mine into theirs": ["RNFR mine.pdf", f"RNTO {theirs}/planted.pdf"],
            "rename mine out of the drop": ["RNFR mine.pdf", "RNTO ../../planted.pdf"],
            "delete theirs": [f"DELE {theirs}/secret.pdf"],
            "make a directory in theirs": [f"MKD {theirs}/sub"],
            "remove their home": [f"RMD {theirs}"],
            "metadata of theirs": [f"MLST {theirs}/secret.pdf"],
            "real path of theirs": [f"MLST {other_home}/secret.pdf"],
        }.items():
            try:
                for command in commands:
                    ftp.sendcmd(command)
                out[label] = "done"
            except ftplib.error_perm as exc:
                out[label] = str(exc)[:3]
            except ftplib.error_temp as exc:
                out[label] = str(exc)[:3]
        out["listing"] = ",".join(names(ftp, theirs))
        return out

    out = await asyncio.to_thread(ftp_try, dl_ftp, symbol, password, attempts)
    listing = out.pop("listing")
    assert "secret.pdf" not in listing
    # `..` stops at the home's root, so most of these name nothing at all (550); none
    # may have reached the other home or left the drop.
    assert all(code in ("550", "451", "done") for code in out.values()), repr(out)
    assert out["rename theirs to mine"] != "done" and out["delete theirs"] != "done"
    after = _tree(home(settings, other).parent)
    assert {k: v for k, v in after.items() if k.startswith(other_home.name)} == \
        {k: v for k, v in before.items() if k.startswith(other_home.name)}
    assert not (home(settings, other).parent.parent / "planted.pdf").exists()
    assert set(after) <= set(before) | {f"{home(settings, symbol).name}/{n}"
                                         for n in ("stolen.pdf", "planted.pdf")}
    # A CopyCompleted naming the other home, spelt as a URL with encoded dots.
    for item in (f"ftp://drop/%2E%2E/{other_home.name}/secret.pdf", f"{theirs}/secret.pdf",
                 f"/{theirs}/secret.pdf"):
        with pytest.raises(CopyProblem, match=r"'\.\.' is not allowed"):
            async with pool.acquire() as conn, conn.transaction():
                await accept_copy(conn, settings, supplier=symbol, item_id=item,
                                  transaction_id="tx-cross-home")


async def test_download_tokens_are_found_only_by_their_full_hash(
        settings: Settings, pool: asyncpg.Pool, dl_gateway) -> None:
    assert TOKEN_BYTES * 8 >= 128
    doc = await put_document(pool, settings, pdf_bytes(2_000))
    grants = [await put_grant(pool, doc, downloads=None) for _ in range(200)]
    tokens = [g.token for g in grants]
    assert all(t is not None and len(t) == 32 for t in tokens)
    assert len(set(tokens)) == len(tokens)
    # 200 tokens of 192 random bits: every base64url symbol shows up many times.
    assert len(set("".join(tokens))) == 64  # type: ignore[arg-type]
    grant = grants[0]
    assert grant.token is not None
    # A stranger's token sharing the stored prefix, and the real one with one symbol off.
    twin = grant.token[:6] + secrets.token_urlsafe(24)[6:]
    last = grant.token[-1]
    off_by_one = grant.token[:-1] + ("A" if last != "A" else "B")
    base = dl_gateway.base_url
    async with aiohttp.ClientSession() as http:
        for token in (twin, off_by_one):
            async with http.get(f"{base}/d/{token}") as resp:
                assert resp.status == 404, token
        async with http.get(f"{base}/d/{grant.token}") as resp:
            assert resp.status == 200
    row = await pool.fetchrow("SELECT token_hash, token_prefix FROM download_grant WHERE id = $1",
                              grant.id)
    assert row["token_hash"] == hash_token(grant.token) == hashlib.sha256(
        grant.token.encode()).digest()
    assert row["token_prefix"] == grant.token[:6]


async def test_every_operator_page_refuses_without_a_session(
        settings: Settings, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app(settings, pool)
    pages = []
    for resource in app.router.resources():
        info = resource.get_info()
        if isinstance(resource, web.PrefixedSubAppResource) and info["prefix"] == "/ops":
            for route in info["app"].router.routes():
                path = route.resource.canonical if route.resource else ""
                pages.append((route.method, path.replace("{txn_id}", "ILL-1")
                                  .replace("{symbol}", "CALIS:1") + "?q=x"))
    pages += [("GET", "/account"), ("POST", "/signout/everywhere")]
    assert len(pages) >= 4, pages  # dashboard, transaction, agency, search at least
    server = web.AppRunner(app)
    await server.setup()
    site = web.TCPSite(server, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession() as http:
            for method, path in pages:
                url = f"http://127.0.0.1:{port}{path}"
                async with http.request(method, url, allow_redirects=False,
                                        headers={"Accept": "application/json"}) as resp:
                    assert resp.status == 401, (method, path, resp.status)
                async with http.request(method, url, allow_redirects=False,
                                        headers={"Accept": "text/html"}) as resp:
                    assert resp.status == 302, (method, path, resp.status)
                    assert resp.headers["Location"].startswith("/signin?next=/")
    finally:
        await server.cleanup()


async def test_agency_passwords_are_stored_only_as_scrypt_hashes(
        settings: Settings, pool: asyncpg.Pool, make_agency) -> None:
    symbol, password = await make_agency()
    stored = await pool.fetchval("SELECT password_hash FROM agency WHERE symbol = $1", symbol)
    assert stored.startswith("scrypt$") and verify_password(password, stored)
    assert not verify_password(password + "x", stored)
    # Nowhere in the database in clear, in any table or column.
    tables = [r["tablename"] for r in await pool.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
    for table in tables:
        found = await pool.fetchval(
            f'SELECT count(*) FROM "{table}" t WHERE strpos(t::text, $1) > 0', password)
        assert found == 0, table
    async with Management(settings.amqp.management_url.get_secret_value()) as mgmt:
        user = await mgmt.get_user(symbol)
    assert user is not None and password not in str(user)


# ---- the logs of a whole flow ----------------------------------------------------------

OPERATOR_PASSWORD = "operators' secret 馆际 42"


async def test_logs_of_a_whole_flow_hold_no_secret_and_no_patron_data(
        settings: Settings, make_agency, pool: asyncpg.Pool, dl_settings, dl_smtp,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Request -> copy over FTP -> mail -> download, logged as `run.py -v` logs, into a file.

    Every logger at DEBUG except the ones run.py holds at WARNING (QUIET_LOGGERS: at
    DEBUG aiormq dumps whole AMQP frames, patron data included, which this test caught).
    """
    log_file = tmp_path / "hub.log"
    handler = logging.FileHandler(log_file, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))
    # aiosmtpd stands in for the consortium's mail server: its logs are not the hub's.
    handler.addFilter(lambda record: not record.name.startswith("mail.log"))
    root = logging.getLogger()
    levels = {name: logging.getLogger(name).level for name in ("", *QUIET_LOGGERS)}
    root.setLevel(logging.DEBUG)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    root.addHandler(handler)
    reader, surname, given = unique_email("patron"), "欧阳", "明月"
    secrets_seen: dict[str, str] = {"operator password": OPERATOR_PASSWORD,
                                    "reader's e-mail": reader,
                                    "reader's name": surname + given}
    try:
        await dl_smtp.start()
        s = with_smtp(dl_settings, dl_smtp)
        dispatcher = Dispatcher(s)
        async with pool.acquire() as conn:
            operator = await people.add(conn, Actor.cli("tests"), login=unique("logscan"),
                                        display_name="日志 Scan", password=OPERATOR_PASSWORD)
        req_symbol, req_pw = await make_agency(roles=("requester",))
        sup_symbol, sup_pw = await make_agency(roles=("supplier",))
        secrets_seen |= {"requester's password": req_pw, "supplier's password": sup_pw,
                         "a mistyped password": sup_pw + "!"}
        issn = make_issn(secrets.randbelow(10_000_000))
        await pool.execute("INSERT INTO holding (id_type, id_value, symbol) "
                           "VALUES ('issn', $1, $2)", issn, sup_symbol)
        hub = Hub(s, dispatcher)
        await hub.start()
        req = Party(req_symbol, AgencyClient(s, req_symbol, req_pw))
        sup = Party(sup_symbol, AgencyClient(s, sup_symbol, sup_pw))
        try:
            await req.client.connect()
            await sup.client.connect()
            secrets_seen |= await _whole_flow(hub, req, sup, sup_pw, issn, reader, surname,
                                              given, dl_smtp, operator.login)
        finally:
            await req.client.close()
            await sup.client.close()
            await hub.stop()
    finally:
        root.removeHandler(handler)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        handler.close()
    text = log_file.read_text(encoding="utf-8")
    assert "hub started" in text and "refused" in text  # the capture did capture
    leaked = {what for what, secret in secrets_seen.items()
              if any(form in text for form in _spellings(secret))}
    assert not leaked, f"in the logs: {sorted(leaked)}"


def _spellings(secret: str) -> set[str]:
    """The secret as text, and as a log may spell it: UTF-8 bytes repr, JSON escapes."""
    return {secret, repr(secret.encode())[2:-1], json.dumps(secret)[1:-1]}


async def _whole_flow(hub: Hub, req: Party, sup: Party, sup_pw: str, issn: str, reader: str,
                      surname: str, given: str, smtp, operator: str) -> dict[str, str]:
    """The flow; returns the secrets it made (download token, session cookie, CSRF)."""
    body = messages.request(req.symbol, request_id="LOG-1", issn=issn, title="红楼梦研究")
    patron = body["request"]["patronInfo"]
    patron.update(surname=surname, givenName=given)
    patron["address"][0]["electronicAddress"]["electronicAddressData"] = reader
    await req.send("request", body)
    await req.confirmed()
    await req.status("ExpectToSupply")
    await sup.next("request")
    # A refusal that quotes the message: the patron's data must not come along.
    await req.send("request", body | {"request": body["request"] | {"serviceInfo": {
        "serviceType": "Photocopy"}}})
    await req.confirmed(ok=False)
    assert hub.ftp is not None and hub.http is not None
    assert await asyncio.to_thread(try_login, hub.ftp, sup.symbol, sup_pw + "!") == "530"
    await asyncio.to_thread(ftp_upload, hub.ftp, sup.symbol, sup_pw, "红楼梦.pdf",
                            pdf_bytes(30_000))
    done = supplier_message(sup.symbol, req.symbol, "LOG-1", "CopyCompleted")
    done["supplyingAgencyMessage"]["deliveryInfo"] = {
        "dateSent": messages.now(), "sentVia": "FTP", "itemId": "/红楼梦.pdf"}
    await sup.send("supplyingAgencyMessage", done)
    await sup.confirmed()
    await req.status("CopyCompleted")
    for _ in range(100):  # the hub's mail sender
        if smtp.catcher.messages_to(reader):
            break
        await asyncio.sleep(0.1)
    [mail] = smtp.catcher.messages_to(reader)
    content = mail.get_body(("plain",)).get_content()
    token = content.split("/d/", 1)[1][:32]
    base = hub.http.base_url
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/d/{token}") as resp:
            assert resp.status == 200
            await resp.read()
        # One symbol off (never the same symbol again: 1 in 64 tokens ends in "x").
        wrong = token[:-1] + ("x" if token[-1] != "x" else "y")
        async with http.get(f"{base}/d/{wrong}") as resp:
            assert resp.status == 404
        return {"download token": token, **await _session_secrets(http, base, operator)}


async def _session_secrets(http: aiohttp.ClientSession, base: str,
                           operator: str) -> dict[str, str]:
    """Sign in (a wrong password first), read the account page, sign out: the session's
    cookie and CSRF token must not reach a log, nor must the passwords."""
    for password, status in ((OPERATOR_PASSWORD + "?", 401), (OPERATOR_PASSWORD, 303)):
        async with http.post(f"{base}/signin", data={"login": operator, "password": password,
                                                     "next": "/account"},
                             allow_redirects=False) as resp:
            assert resp.status == status
            if status == 303:
                cookie = resp.cookies["illhub_session"].value
    # The client's jar keeps no cookies of an IP address: the cookie goes by hand.
    session = {"Cookie": f"illhub_session={cookie}"}
    async with http.get(f"{base}/account", headers={"Accept": "text/html", **session},
                        allow_redirects=False) as resp:
        page = await resp.text()
        assert resp.status == 200, page
    csrf = page.split('name="csrf" value="', 1)[1].split('"', 1)[0]
    async with http.post(f"{base}/signout", data={"csrf": csrf}, headers=session,
                         allow_redirects=False) as resp:
        assert resp.status == 303
    return {"session cookie": cookie, "CSRF token": csrf}
