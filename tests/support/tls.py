"""TLS for tests: a throwaway CA per test run (trustme) and certificates it signs.

`test_ca` is session-wide; `server_pem` writes a certificate for 127.0.0.1 and
localhost with its key to files, as the hub's settings name them. The RabbitMQ and
PostgreSQL TLS listeners are the machine's and get their certificates from
`.ci/setup` (a CA made at each setup run, in `MACHINE_TLS_DIR`).
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

# Where .ci/setup keeps the CA and the server certificates of the machine's RabbitMQ
# (port 5671) and PostgreSQL listeners.
MACHINE_TLS_DIR = Path(os.environ.get("ILLHUB_TEST_TLS_DIR", "/etc/illhub-test-tls"))
HOSTS = ("127.0.0.1", "localhost")
# The machine's RabbitMQ TLS listener (.ci/setup); the cleartext one is AMQP_BASE.
AMQPS_BASE = os.environ.get("ILLHUB_TEST_AMQPS_BASE", "amqps://guest:guest@127.0.0.1:5671")


@dataclass(frozen=True)
class ServerPem:
    cert: Path           # the chain: leaf then CA
    key: Path
    ca: Path             # the CA certificate clients trust


@dataclass(frozen=True)
class MachineTls:
    ca: Path             # the CA that signed the machine's RabbitMQ and PostgreSQL
    client_cert: Path    # a client certificate it signed, and its key
    client_key: Path


@pytest.fixture(scope="session")
def machine_tls() -> MachineTls:
    """The CA of the machine's TLS listeners; missing, the test fails saying what to run
    (not skipped: CI must not pass without having tried TLS)."""
    files = MachineTls(MACHINE_TLS_DIR / "ca.crt", MACHINE_TLS_DIR / "client.crt",
                       MACHINE_TLS_DIR / "client.key")
    for path in (files.ca, files.client_cert, files.client_key):
        if not path.is_file():
            pytest.fail(f"{path} is missing: `bash .ci/setup` makes the test CA and turns "
                        "on the TLS listeners of RabbitMQ (5671) and PostgreSQL")
    return files


@pytest.fixture(scope="session")
def test_ca() -> trustme.CA:
    return trustme.CA(organization_name="ILL Hub test CA")


def write_server_pem(ca: trustme.CA, folder: Path, name: str = "server") -> ServerPem:
    folder.mkdir(parents=True, exist_ok=True)
    leaf = ca.issue_cert(*HOSTS)
    cert, key, ca_file = folder / f"{name}.crt", folder / f"{name}.key", folder / "ca.crt"
    leaf.private_key_pem.write_to_path(str(key))
    with cert.open("wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    ca.cert_pem.write_to_path(str(ca_file))
    return ServerPem(cert, key, ca_file)


@pytest.fixture
def server_pem(test_ca: trustme.CA, tmp_path: Path) -> ServerPem:
    return write_server_pem(test_ca, tmp_path / "tls")


def verifying(ca: Path) -> ssl.SSLContext:
    """A client context that trusts only `ca` and checks the host name."""
    return ssl.create_default_context(cafile=str(ca))
