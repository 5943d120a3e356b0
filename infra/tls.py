"""TLS for every transport the hub speaks: the contexts, built once from settings.

Servers (the HTTP server, the FTP drop) get a server context from a certificate chain
and key; clients (SMTP, ISO 18626 peers) get a verifying client context, from a CA file
when the setting names one, else from the system's CAs. RabbitMQ and PostgreSQL take
theirs from their URLs (`Settings.amqp_broker_url`, `Settings.database_url`), so every
connection, the CLI's included, verifies alike; their files are checked here. Each
file is read at start-up: a missing or unreadable file, a key that does not match its
certificate, or a CA file without certificates stops the hub with a `TlsSettingError`
that names the setting (`ILLHUB_FTP__TLS_CERT: ...`). Nothing falls back to cleartext.

Server certificates are rotated without downtime: `ServerContexts.reload()` (the hub
calls it on SIGHUP) loads each chain again into the same `SSLContext`, so connections
already open keep their session and every new handshake gets the new certificate. A
chain that fails to load leaves the old one in place, and says which setting failed.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qsl, urlsplit

from schemas.settings import Settings, env_name

log = logging.getLogger(__name__)


class TlsSettingError(ValueError):
    """A TLS setting that cannot be used; the message starts with the setting's name."""

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting


def _readable(path: str, setting: str) -> Path:
    file = Path(path)
    if not file.is_file():
        raise TlsSettingError(setting, f"no such file {path!r}")
    try:
        with file.open("rb"):
            pass
    except OSError as exc:
        raise TlsSettingError(setting, f"cannot read {path!r} ({exc.strerror})") from None
    return file


@dataclass(frozen=True)
class CertPair:
    """A certificate chain and its key, with the settings that name them."""

    cert: str
    key: str
    cert_setting: str
    key_setting: str

    def load_into(self, context: ssl.SSLContext) -> None:
        _readable(self.cert, self.cert_setting)
        _readable(self.key, self.key_setting)
        try:
            context.load_cert_chain(self.cert, self.key)
        except ssl.SSLError as exc:
            raise TlsSettingError(self.cert_setting,
                                  f"{self.cert!r} with the key {self.key!r} (from "
                                  f"{self.key_setting}) cannot be used: {exc.reason or exc}"
                                  ) from None


def cert_pair(cert: str | None, key: str | None, group: str, *, cert_key: str = "tls_cert",
              key_key: str = "tls_key") -> CertPair | None:
    """The pair a settings group names, None if it names neither; one alone is an error."""
    cert_setting, key_setting = env_name(group, cert_key), env_name(group, key_key)
    if not cert and not key:
        return None
    if not cert:
        raise TlsSettingError(cert_setting, f"not set, but {key_setting} is")
    if not key:
        raise TlsSettingError(key_setting, f"not set, but {cert_setting} is")
    return CertPair(cert, key, cert_setting, key_setting)


def server_context(pair: CertPair) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    pair.load_into(context)
    return context


def client_context(ca_file: str | None, ca_setting: str,
                   client: CertPair | None = None) -> ssl.SSLContext:
    """A context that verifies the server's certificate and its host name."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        _readable(ca_file, ca_setting)
        try:
            context.load_verify_locations(cafile=ca_file)
        except ssl.SSLError as exc:
            raise TlsSettingError(ca_setting,
                                  f"{ca_file!r} holds no usable CA certificate "
                                  f"({exc.reason or exc})") from None
    if client is not None:
        client.load_into(context)
    return context


def pem_client_context(pem: str, setting: str) -> ssl.SSLContext:
    """A verifying context trusting the CA certificates in `pem` (a peer's own CA)."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_verify_locations(cadata=pem)
    except (ssl.SSLError, ValueError) as exc:
        raise TlsSettingError(setting, f"no usable CA certificate ({exc})") from None
    return context


@dataclass
class ServerContexts:
    """The hub's server contexts (None: that server speaks cleartext), reloadable."""

    http: ssl.SSLContext | None = None
    ftp: ssl.SSLContext | None = None
    _pairs: dict[str, tuple[CertPair, ssl.SSLContext]] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: Settings, *, drop: bool = True) -> ServerContexts:
        """`drop`: whether this process serves the FTP drop (its TLS may be required)."""
        out = cls()
        for group, cert, key in (("http", settings.http.tls_cert, settings.http.tls_key),
                                 ("ftp", settings.ftp.tls_cert, settings.ftp.tls_key)):
            pair = cert_pair(cert, key, group)
            if pair is not None:
                context = server_context(pair)
                out._pairs[group] = (pair, context)
                setattr(out, group, context)
        if drop and settings.ftp.require_tls and out.ftp is None:
            raise TlsSettingError(env_name("ftp", "require_tls"),
                                  f"on, but the drop has no certificate: set "
                                  f"{env_name('ftp', 'tls_cert')} and "
                                  f"{env_name('ftp', 'tls_key')}, or set "
                                  f"{env_name('ftp', 'require_tls')}=false to allow "
                                  "cleartext logins (a private network only)")
        return out

    def reload(self) -> list[str]:
        """Load every certificate chain again; returns what failed (the old one stays)."""
        failed: list[str] = []
        for group, (pair, context) in self._pairs.items():
            try:
                pair.load_into(context)
                log.info("TLS: %s certificate reloaded from %s", group, pair.cert)
            except TlsSettingError as exc:
                log.error("TLS: %s certificate not reloaded, the old one stays: %s",
                          group, exc)
                failed.append(str(exc))
        return failed


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def check_amqp(settings: Settings) -> None:
    """The broker's TLS files (amqps:// carries them in the URL, schemas/settings.py):
    each must be readable, and none may be set for a cleartext amqp:// URL."""
    a = settings.amqp
    client = cert_pair(a.client_cert, a.client_key, "amqp", cert_key="client_cert",
                       key_key="client_key")
    if not a.url.get_secret_value().startswith("amqps://"):
        for value, key in ((a.ca_file, "ca_file"), (client, "client_cert")):
            if value:
                raise TlsSettingError(env_name("amqp", key),
                                      f"set, but {env_name('amqp', 'url')} is amqp:// "
                                      "(cleartext): use amqps://")
        return
    # aiormq reads no_verify_ssl from the URL; it would quietly undo the verification.
    if _query(a.url.get_secret_value()).get("no_verify_ssl", "0") != "0":
        raise TlsSettingError(env_name("amqp", "url"),
                              "no_verify_ssl turns off the check of the broker's "
                              f"certificate: remove it, and set {env_name('amqp', 'ca_file')} "
                              "to the CA that signed the certificate")
    client_context(a.ca_file, env_name("amqp", "ca_file"), client)


def check_database(settings: Settings) -> None:
    """PostgreSQL's TLS files (verify-full carries them in the URL, schemas/settings.py)."""
    d = settings.database
    client = cert_pair(d.client_cert, d.client_key, "database", cert_key="client_cert",
                       key_key="client_key")
    if d.tls == "off":
        for value, key in ((d.ca_file, "ca_file"), (client, "client_cert")):
            if value:
                raise TlsSettingError(env_name("database", key),
                                      f"set, but {env_name('database', 'tls')} is off")
        return
    # The URL's own parameters win over the settings (schemas/settings.py): an sslmode
    # there would quietly weaken verify-full.
    mode = _query(d.url.get_secret_value()).get("sslmode", "verify-full")
    if mode != "verify-full":
        raise TlsSettingError(env_name("database", "url"),
                              f"has sslmode={mode}, but {env_name('database', 'tls')} is "
                              "verify-full: remove sslmode from the URL")
    client_context(d.ca_file, env_name("database", "ca_file"), client)


def smtp_context(settings: Settings) -> ssl.SSLContext | None:
    """For the mail server: verifying unless `smtp.security` is none."""
    s = settings.smtp
    if s.security == "none":
        if s.ca_file:
            raise TlsSettingError(env_name("smtp", "ca_file"),
                                  f"set, but {env_name('smtp', 'security')} is none")
        return None
    return client_context(s.ca_file, env_name("smtp", "ca_file"))


def peers_context(settings: Settings) -> ssl.SSLContext:
    """For ISO 18626 peers over HTTPS (a peer with its own CA gets its own context)."""
    return client_context(settings.http.peers_ca_file, env_name("http", "peers_ca_file"))


@dataclass(frozen=True)
class ClientContexts:
    """What the hub's clients verify with; building it checks every client setting."""

    smtp: ssl.SSLContext | None
    peers: ssl.SSLContext

    @classmethod
    def from_settings(cls, settings: Settings) -> ClientContexts:
        check_amqp(settings)
        check_database(settings)
        return cls(smtp=smtp_context(settings), peers=peers_context(settings))


# OpenSSL's verify codes for a certificate that names another host or address: the URL's
# host is what to fix then, not the CA file.
_NAME_MISMATCH = {62, 64}  # X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH


def _verify_failure(exc: BaseException) -> ssl.SSLCertVerificationError | None:
    """The certificate check that failed in `exc` or in what it wraps (aiormq wraps it in
    its AMQPConnectionError; asyncpg raises it as it is)."""
    seen: BaseException | None = exc
    for _ in range(8):  # a chain, not a cycle: a few links at most
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


@contextmanager
def first_connection(settings: Settings, group: Literal["amqp", "database"]) -> Iterator[None]:
    """Around the hub's first connection to the broker or the database: a server
    certificate that does not verify stops it with a `TlsSettingError` naming the setting
    to fix (the CA file, or the URL when the certificate names another host), where the
    client libraries would only say "certificate verify failed"."""
    try:
        yield
    except Exception as exc:
        failure = _verify_failure(exc)
        if failure is None:
            raise
        detail = failure.verify_message or str(failure)
        if failure.verify_code in _NAME_MISMATCH:
            raise TlsSettingError(env_name(group, "url"),
                                  f"the server's certificate does not name this host "
                                  f"({detail})") from exc
        ca_file = settings.amqp.ca_file if group == "amqp" else settings.database.ca_file
        trusted = f"the CA in {ca_file!r}" if ca_file else "the system's CAs"
        raise TlsSettingError(env_name(group, "ca_file"),
                              f"the server's certificate is not signed by {trusted} "
                              f"({detail})") from exc
