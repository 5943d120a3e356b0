"""`run.py demo --tls`: the demo with every transport it owns encrypted.

The demo makes a throwaway CA and a certificate for 127.0.0.1/localhost (trustme) in
its data folder, and turns on the hub's HTTPS, FTPS (cleartext logins refused) and
verified SMTP STARTTLS to the demo's own mail catcher; the simulated suppliers upload
over FTPS and the readers download over HTTPS, both trusting only that CA. RabbitMQ
and PostgreSQL are servers the demo does not own: they are encrypted when the hub's
settings say so (an amqps:// URL with ILLHUB_AMQP__CA_FILE, ILLHUB_DATABASE__TLS=
verify-full), and the summary says which transports were.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import trustme

from schemas.settings import Settings

HOSTS = ("127.0.0.1", "localhost")


@dataclass(frozen=True)
class DemoTls:
    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """For the demo's mail catcher."""
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context

    def client_context(self) -> ssl.SSLContext:
        """What the simulated readers verify the hub's HTTPS with."""
        return ssl.create_default_context(cafile=str(self.ca))


def make_demo_tls(folder: Path) -> DemoTls:
    folder.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA(organization_name="ILL Hub demo CA")
    leaf = ca.issue_cert(*HOSTS)
    tls = DemoTls(ca=folder / "demo-ca.crt", cert=folder / "hub.crt", key=folder / "hub.key")
    ca.cert_pem.write_to_path(str(tls.ca))
    leaf.private_key_pem.write_to_path(str(tls.key))
    tls.key.chmod(0o600)
    with tls.cert.open("wb") as out:
        for blob in leaf.cert_chain_pems:
            out.write(blob.bytes())
    return tls


def with_tls(s: Settings, tls: DemoTls) -> Settings:
    """The hub's HTTP and FTP servers on the demo's certificate, mail over STARTTLS."""
    return s.updated(http__tls_cert=str(tls.cert), http__tls_key=str(tls.key),
                     ftp__tls_cert=str(tls.cert), ftp__tls_key=str(tls.key),
                     ftp__require_tls=True, smtp__security="starttls",
                     smtp__ca_file=str(tls.ca))


def transports(s: Settings) -> list[str]:
    """Each transport and whether it is encrypted, for the summary."""
    amqps = s.amqp.url.get_secret_value().startswith("amqps://")
    return [
        "HTTPS (download links, /iso18626, pages)" if s.http.tls_cert else "HTTP (cleartext)",
        "FTPS (cleartext logins refused)" if s.ftp.tls_cert and s.ftp.require_tls
        else ("FTPS offered" if s.ftp.tls_cert else "FTP (cleartext)"),
        f"SMTP {s.smtp.security}" if s.smtp.security != "none" else "SMTP (cleartext)",
        "AMQPS" if amqps else "AMQP (cleartext: set ILLHUB_AMQP__URL=amqps://... and "
                              "ILLHUB_AMQP__CA_FILE)",
        "PostgreSQL TLS verify-full" if s.database.tls != "off"
        else "PostgreSQL (cleartext: set ILLHUB_DATABASE__TLS=verify-full)",
    ]
