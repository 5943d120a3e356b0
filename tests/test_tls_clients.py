"""The hub's clients over TLS against the machine's real servers (.ci/setup): RabbitMQ's
amqps:// listener on 5671 and PostgreSQL with sslmode=verify-full, both verified with
the machine's test CA; and a CA file that cannot be used stops `run.py hub` naming the
setting to fix."""

from __future__ import annotations

import base64
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import aio_pika
import aiohttp
import asyncpg
import pytest
import trustme

from app.hub import Hub
from illclient.client import AgencyClient
from infra.database import create_pool
from infra.tls import TlsSettingError, first_connection
from schemas.settings import Settings
from tests.support import messages
from tests.support.agencies import MakeAgency
from tests.support.broker import MANAGEMENT
from tests.support.cli import run
from tests.support.hub import Party
from tests.support.servers import eventually
from tests.support.tls import AMQPS_BASE, MachineTls

SSL_OF_THIS_BACKEND = "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()"


def fresh_issn() -> str:
    """An ISSN with a right check digit that no other test's supplier holds."""
    digits = [secrets.randbelow(10) for _ in range(7)]
    check = -sum(d * w for d, w in zip(digits, range(8, 1, -1), strict=True)) % 11
    body = "".join(map(str, digits))
    return f"{body[:4]}-{body[4:]}{'X' if check == 10 else check}"


async def broker_connections() -> list[dict[str, Any]]:
    """Every connection RabbitMQ lists, with whether it is TLS and on which port (more
    columns than infra.rabbit_admin asks for)."""
    parts = urlsplit(MANAGEMENT)
    login = f"{unquote(parts.username or '')}:{unquote(parts.password or '')}"
    headers = {"Authorization": "Basic " + base64.b64encode(login.encode()).decode()}
    url = f"{parts.scheme}://{parts.hostname}:{parts.port or 15672}/api/connections"
    async with aiohttp.ClientSession(headers=headers) as http, http.get(
            url, params={"columns": "name,user,ssl,port,client_properties"}) as response:
        response.raise_for_status()
        connections: list[dict[str, Any]] = await response.json()
    return connections


def over_amqps(settings: Settings, vhost: str, ca: Path, name: str) -> Settings:
    """`settings` with the broker reached on its TLS listener; `name` marks the hub's
    connections (aiormq's `name` parameter), to find them in the management API."""
    return settings.updated(amqp__url=f"{AMQPS_BASE}/{quote(vhost, safe='')}?name={name}",
                            amqp__ca_file=str(ca))


def over_verified_pg(settings: Settings, ca: Path, app: str) -> Settings:
    """`settings` with PostgreSQL over verify-full TLS; every connection of the hub
    carries `application_name` `app` (asyncpg passes unknown URL parameters on as
    server settings), to find its backends in pg_stat_activity."""
    url = f"{settings.database.url.get_secret_value()}?application_name={app}"
    return settings.updated(database__url=url, database__tls="verify-full",
                            database__ca_file=str(ca))


async def test_a_hub_over_amqps_takes_a_request_and_forwards_it(
        settings: Settings, vhost: str, machine_tls: MachineTls, make_agency: MakeAgency,
        pool: asyncpg.Pool) -> None:
    name = f"tls-test-{secrets.token_hex(4)}"
    s = over_amqps(settings, vhost, machine_tls.ca, name)
    assert s.amqp_broker_url.startswith("amqps://guest:guest@127.0.0.1:5671/")
    requester, req_pw = await make_agency(roles=("requester",))
    supplier, sup_pw = await make_agency(roles=("supplier",))
    issn = fresh_issn()
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       issn, supplier)
    hub = Hub(s, delivery=False)
    await hub.start()
    try:
        # The agencies' clients reach the broker with the hub's URL and CA (amqp_url_for).
        async with AgencyClient(s, requester, req_pw) as req_client, \
                AgencyClient(s, supplier, sup_pw) as sup_client:
            req, sup = Party(requester, req_client), Party(supplier, sup_client)
            await req.send("request", messages.request(requester, issn=issn))
            await req.confirmed()
            await sup.next("request")
            await req.status("ExpectToSupply")

            async def all_over_tls() -> bool:
                mine = [c for c in await broker_connections()
                        if (c.get("client_properties") or {}).get("connection_name") == name
                        or c.get("user") in (requester, supplier)]
                if not {"guest", requester, supplier} <= {c.get("user") for c in mine}:
                    return False  # the management API lists connections a little late
                assert all(c.get("ssl") is True and c.get("port") == 5671 for c in mine), [
                    (c.get("user"), c.get("ssl"), c.get("port"), c.get("name")) for c in mine]
                return True

            await eventually(all_over_tls, timeout=20)
    finally:
        await hub.stop()


async def test_postgres_verify_full_with_the_machine_ca(settings: Settings,
                                                        machine_tls: MachineTls) -> None:
    s = settings.updated(database__tls="verify-full", database__ca_file=str(machine_tls.ca))
    assert "sslmode=verify-full" in s.database_url
    pool = await create_pool(s.database_url, max_size=2)
    try:
        assert await pool.fetchval(SSL_OF_THIS_BACKEND) is True
    finally:
        await pool.close()


async def test_postgres_verify_full_with_a_client_certificate(settings: Settings,
                                                              machine_tls: MachineTls) -> None:
    s = settings.updated(database__tls="verify-full", database__ca_file=str(machine_tls.ca),
                         database__client_cert=str(machine_tls.client_cert),
                         database__client_key=str(machine_tls.client_key))
    conn = await asyncpg.connect(s.database_url)
    try:
        # ssl_ca_file is set (.ci/setup), so the server checked the certificate it got.
        row = await conn.fetchrow("SELECT ssl, client_dn FROM pg_stat_ssl "
                                  "WHERE pid = pg_backend_pid()")
        assert row is not None and row["ssl"] is True
        assert row["client_dn"], row
    finally:
        await conn.close()


async def test_a_hub_on_verified_postgres_and_amqps_is_encrypted_throughout(
        settings: Settings, vhost: str, machine_tls: MachineTls, make_agency: MakeAgency,
        pool: asyncpg.Pool) -> None:
    app = f"tls-test-{secrets.token_hex(4)}"
    s = over_verified_pg(over_amqps(settings, vhost, machine_tls.ca, app), machine_tls.ca, app)
    requester, pw = await make_agency(roles=("requester",))
    hub = Hub(s, delivery=False)
    await hub.start()
    try:
        async with AgencyClient(s, requester, pw) as client:
            req = Party(requester, client)
            await req.send("request", messages.request(requester, issn=fresh_issn()))
            await req.confirmed()
            await req.status("Unfilled")  # nobody holds it: the rota is empty
        backends = await pool.fetch(
            "SELECT a.pid, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) "
            "WHERE a.application_name = $1", app)
        assert backends, "the hub's connections were not found by application_name"
        assert all(b["ssl"] for b in backends), backends
    finally:
        await hub.stop()


async def test_amqps_with_a_client_certificate(settings: Settings, vhost: str,
                                               machine_tls: MachineTls) -> None:
    """The certificate is sent (certfile/keyfile in the URL) and the broker, which checks
    any it gets against its CA, accepts it."""
    s = over_amqps(settings, vhost, machine_tls.ca, "tls-client-cert").updated(
        amqp__client_cert=str(machine_tls.client_cert),
        amqp__client_key=str(machine_tls.client_key))
    connection = await aio_pika.connect(s.amqp_broker_url)
    try:
        channel = await connection.channel()
        await channel.close()
    finally:
        await connection.close()


# A CA file that cannot be used --------------------------------------------------------

async def test_a_missing_amqp_ca_file_stops_the_hub_naming_the_setting(
        settings: Settings, vhost: str) -> None:
    s = over_amqps(settings, vhost, Path("/nonexistent"), "tls-missing-ca")
    code, _, err = await run(s, "hub")
    assert code == 2, err
    assert "error: ILLHUB_AMQP__CA_FILE: no such file '/nonexistent'" in err


async def test_a_missing_database_ca_file_stops_the_hub_naming_the_setting(
        settings: Settings) -> None:
    s = settings.updated(database__tls="verify-full", database__ca_file="/nonexistent")
    code, _, err = await run(s, "hub")
    assert code == 2, err
    assert "error: ILLHUB_DATABASE__CA_FILE: no such file '/nonexistent'" in err


def other_ca_file(ca: trustme.CA, tmp_path: Path) -> Path:
    """A good CA certificate, but not the one that signed the machine's servers."""
    path = tmp_path / "other-ca.crt"
    ca.cert_pem.write_to_path(str(path))
    return path


async def test_another_ca_fails_the_first_broker_connection_naming_the_setting(
        settings: Settings, vhost: str, test_ca: trustme.CA, tmp_path: Path) -> None:
    s = over_amqps(settings, vhost, other_ca_file(test_ca, tmp_path), "tls-other-ca")
    with pytest.raises(TlsSettingError) as caught:
        with first_connection(s, "amqp"):
            await aio_pika.connect_robust(s.amqp_broker_url)
    assert str(caught.value).startswith("ILLHUB_AMQP__CA_FILE: the server's certificate is "
                                        "not signed by the CA in")
    assert "certificate" in str(caught.value)


async def test_another_ca_fails_the_first_database_connection_naming_the_setting(
        settings: Settings, test_ca: trustme.CA, tmp_path: Path) -> None:
    s = settings.updated(database__tls="verify-full",
                         database__ca_file=str(other_ca_file(test_ca, tmp_path)))
    with pytest.raises(TlsSettingError) as caught:
        with first_connection(s, "database"):
            await create_pool(s.database_url, max_size=1)
    assert str(caught.value).startswith("ILLHUB_DATABASE__CA_FILE: the server's certificate")


async def test_another_amqp_ca_stops_run_py_hub_naming_the_setting(
        settings: Settings, vhost: str, test_ca: trustme.CA, tmp_path: Path) -> None:
    s = over_amqps(settings, vhost, other_ca_file(test_ca, tmp_path), "tls-other-ca")
    code, _, err = await run(s, "hub")
    assert code == 2, err
    assert "error: ILLHUB_AMQP__CA_FILE: the server's certificate is not signed" in err


async def test_another_database_ca_stops_run_py_hub_naming_the_setting(
        settings: Settings, test_ca: trustme.CA, tmp_path: Path) -> None:
    s = settings.updated(database__tls="verify-full",
                         database__ca_file=str(other_ca_file(test_ca, tmp_path)))
    code, _, err = await run(s, "hub")
    assert code == 2, err
    assert "error: ILLHUB_DATABASE__CA_FILE: the server's certificate is not signed" in err
