"""TLS settings without servers: the URLs that carry the CA and client files, the
start-up checks that name the setting at fault (infra/tls.py), and the server
contexts of the HTTP server and the FTP drop."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from urllib.parse import parse_qs, parse_qsl, urlsplit

import pytest
import trustme

from infra.tls import (
    ClientContexts,
    ServerContexts,
    TlsSettingError,
    check_amqp,
    check_database,
    first_connection,
)
from schemas.settings import ENV_PREFIX, Settings, env_name
from tests.support.tls import ServerPem, write_server_pem

AMQPS = "amqps://hub:pw@broker.example:5671/ill"
PG = "postgresql://hub:pw@db.example:5432/illhub"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No ILLHUB_* variable, .env or secrets dir of the caller leaks into these settings."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def tls_message(exc: pytest.ExceptionInfo[TlsSettingError]) -> str:
    return str(exc.value)


# The URLs -----------------------------------------------------------------------------

def test_env_name_is_the_variable_the_setting_is_read_from() -> None:
    assert env_name("amqp", "ca_file") == "ILLHUB_AMQP__CA_FILE"
    assert env_name("ftp", "require_tls") == "ILLHUB_FTP__REQUIRE_TLS"
    assert env_name("database", "tls") == "ILLHUB_DATABASE__TLS"


def test_amqps_url_carries_the_ca_and_client_files_once() -> None:
    s = Settings(amqp={"url": AMQPS, "ca_file": "/etc/tls/ca dir/ca.crt",
                       "client_cert": "/etc/tls/hub.crt", "client_key": "/etc/tls/hub.key"})
    url = s.amqp_broker_url
    assert url.startswith(AMQPS + "?")
    assert parse_qs(urlsplit(url).query) == {"cafile": ["/etc/tls/ca dir/ca.crt"],
                                             "certfile": ["/etc/tls/hub.crt"],
                                             "keyfile": ["/etc/tls/hub.key"]}
    # Asked again, or for an agency's credentials: still once each.
    assert s.amqp_broker_url == url
    agency = s.amqp_url_for("CALIS:100010", "p@ss word")
    assert agency.startswith("amqps://CALIS%3A100010:p%40ss%20word@broker.example:5671/ill?")
    assert sorted(k for k, _ in query(agency)) == ["cafile", "certfile", "keyfile"]


def test_amqps_url_keeps_its_own_parameters_and_they_win() -> None:
    s = Settings(amqp={"url": AMQPS + "?heartbeat=30&cafile=/from/url.crt",
                       "ca_file": "/from/setting.crt"})
    assert query(s.amqp_broker_url) == [("heartbeat", "30"), ("cafile", "/from/url.crt")]
    only_name = Settings(amqp={"url": AMQPS + "?name=hub-1", "ca_file": "/ca.crt"})
    assert query(only_name.amqp_broker_url) == [("name", "hub-1"), ("cafile", "/ca.crt")]


def test_amqps_without_tls_files_and_cleartext_urls_are_unchanged() -> None:
    assert Settings(amqp={"url": AMQPS}).amqp_broker_url == AMQPS
    cleartext = "amqp://hub:pw@broker.example:5672/ill?heartbeat=30"
    s = Settings(amqp={"url": cleartext, "ca_file": "/ca.crt"})
    assert s.amqp_broker_url == cleartext
    assert "cafile" not in s.amqp_url_for("CALIS:1", "pw")


def test_database_url_with_verify_full_carries_the_files_once() -> None:
    s = Settings(database={"url": PG + "?application_name=hub", "tls": "verify-full",
                           "ca_file": "/ca.crt", "client_cert": "/c.crt",
                           "client_key": "/c.key"})
    assert query(s.database_url) == [("application_name", "hub"), ("sslmode", "verify-full"),
                                     ("sslrootcert", "/ca.crt"), ("sslcert", "/c.crt"),
                                     ("sslkey", "/c.key")]
    assert s.database_url == s.database_url
    # Without a CA file: verify-full against the system's CAs.
    assert query(Settings(database={"url": PG, "tls": "verify-full"}).database_url) == [
        ("sslmode", "verify-full")]


def test_database_url_with_tls_off_is_unchanged() -> None:
    assert Settings(database={"url": PG}).database_url == PG
    assert Settings(database={"url": PG + "?sslmode=require"}).database_url == (
        PG + "?sslmode=require")


# The start-up checks ------------------------------------------------------------------

@pytest.fixture(scope="module")
def pem(tmp_path_factory: pytest.TempPathFactory) -> ServerPem:
    return write_server_pem(trustme.CA(), tmp_path_factory.mktemp("tls"))


def test_a_missing_amqp_ca_file_is_named() -> None:
    s = Settings(amqp={"url": AMQPS, "ca_file": "/nonexistent/ca.crt"})
    with pytest.raises(TlsSettingError) as caught:
        check_amqp(s)
    assert tls_message(caught) == "ILLHUB_AMQP__CA_FILE: no such file '/nonexistent/ca.crt'"
    assert caught.value.setting == "ILLHUB_AMQP__CA_FILE"
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_AMQP__CA_FILE: "):
        ClientContexts.from_settings(s)


def test_a_ca_file_without_a_certificate_is_named(tmp_path: Path) -> None:
    junk = tmp_path / "ca.crt"
    junk.write_text("not a certificate\n")
    with pytest.raises(TlsSettingError,
                       match=r"^ILLHUB_AMQP__CA_FILE: .* holds no usable CA certificate"):
        check_amqp(Settings(amqp={"url": AMQPS, "ca_file": str(junk)}))
    with pytest.raises(TlsSettingError,
                       match=r"^ILLHUB_DATABASE__CA_FILE: .* holds no usable CA certificate"):
        check_database(Settings(database={"url": PG, "tls": "verify-full",
                                          "ca_file": str(junk)}))


def test_tls_files_for_a_cleartext_broker_url_are_refused(pem: ServerPem) -> None:
    cleartext = "amqp://hub:pw@broker.example:5672/ill"
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_AMQP__CA_FILE: set, but "
                                              "ILLHUB_AMQP__URL is amqp://"):
        check_amqp(Settings(amqp={"url": cleartext, "ca_file": str(pem.ca)}))
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_AMQP__CLIENT_CERT: set, but"):
        check_amqp(Settings(amqp={"url": cleartext, "client_cert": str(pem.cert),
                                  "client_key": str(pem.key)}))


def test_a_client_certificate_needs_its_key(pem: ServerPem) -> None:
    with pytest.raises(TlsSettingError,
                       match=r"^ILLHUB_AMQP__CLIENT_KEY: not set, but ILLHUB_AMQP__CLIENT_CERT"):
        check_amqp(Settings(amqp={"url": AMQPS, "client_cert": str(pem.cert)}))
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_DATABASE__CLIENT_CERT: not set"):
        check_database(Settings(database={"url": PG, "tls": "verify-full",
                                          "client_key": str(pem.key)}))


def test_good_amqp_and_database_files_pass(pem: ServerPem) -> None:
    s = Settings(amqp={"url": AMQPS, "ca_file": str(pem.ca), "client_cert": str(pem.cert),
                       "client_key": str(pem.key)},
                 database={"url": PG, "tls": "verify-full", "ca_file": str(pem.ca)},
                 smtp={"security": "none"})
    check_amqp(s)
    check_database(s)
    assert ClientContexts.from_settings(s).smtp is None


def test_amqp_no_verify_ssl_in_the_url_is_refused() -> None:
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_AMQP__URL: no_verify_ssl"):
        check_amqp(Settings(amqp={"url": AMQPS + "?no_verify_ssl=1"}))
    check_amqp(Settings(amqp={"url": AMQPS + "?no_verify_ssl=0"}))


def test_database_files_with_tls_off_are_refused(pem: ServerPem) -> None:
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_DATABASE__CA_FILE: set, but "
                                              "ILLHUB_DATABASE__TLS is off"):
        check_database(Settings(database={"url": PG, "ca_file": str(pem.ca)}))
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_DATABASE__CA_FILE: no such file"):
        check_database(Settings(database={"url": PG, "tls": "verify-full",
                                          "ca_file": "/nonexistent"}))


def test_a_weaker_sslmode_in_the_database_url_is_refused_with_verify_full() -> None:
    s = Settings(database={"url": PG + "?sslmode=prefer", "tls": "verify-full"})
    with pytest.raises(TlsSettingError,
                       match=r"^ILLHUB_DATABASE__URL: has sslmode=prefer, but "
                             "ILLHUB_DATABASE__TLS is verify-full"):
        check_database(s)
    check_database(Settings(database={"url": PG + "?sslmode=verify-full",
                                      "tls": "verify-full"}))


# A certificate that does not verify at the first connection ---------------------------

def verify_failure(code: int, message: str) -> ssl.SSLCertVerificationError:
    exc = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] {message}")
    exc.verify_code, exc.verify_message = code, message
    return exc


def test_an_unverified_certificate_names_the_ca_file_even_when_wrapped() -> None:
    s = Settings(amqp={"url": AMQPS, "ca_file": "/etc/tls/ca.crt"})
    wrapped = ConnectionError("cannot connect")  # as aiormq wraps it
    wrapped.__cause__ = verify_failure(19, "self-signed certificate in certificate chain")
    with pytest.raises(TlsSettingError) as caught, first_connection(s, "amqp"):
        raise wrapped
    assert tls_message(caught) == (
        "ILLHUB_AMQP__CA_FILE: the server's certificate is not signed by the CA in "
        "'/etc/tls/ca.crt' (self-signed certificate in certificate chain)")
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_DATABASE__CA_FILE: .* the system's "
                                              "CAs"), first_connection(Settings(), "database"):
        raise verify_failure(20, "unable to get local issuer certificate")


def test_a_certificate_for_another_host_names_the_url() -> None:
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_DATABASE__URL: the server's "
                                              "certificate does not name this host"), \
            first_connection(Settings(), "database"):
        raise verify_failure(62, "Hostname mismatch, certificate is not valid for 'db'.")


def test_other_connection_errors_pass_through_first_connection() -> None:
    with pytest.raises(ConnectionRefusedError), first_connection(Settings(), "amqp"):
        raise ConnectionRefusedError(111, "Connection refused")


# The servers' contexts (HTTP server, FTP drop) ----------------------------------------

def test_require_tls_without_a_drop_certificate_is_named() -> None:
    with pytest.raises(TlsSettingError) as caught:
        ServerContexts.from_settings(Settings())
    assert tls_message(caught).startswith("ILLHUB_FTP__REQUIRE_TLS: on, but the drop has no "
                                          "certificate: set ILLHUB_FTP__TLS_CERT")
    # A process that does not serve the drop, or a drop allowed cleartext, starts.
    assert ServerContexts.from_settings(Settings(), drop=False).ftp is None
    assert ServerContexts.from_settings(Settings(ftp={"require_tls": False})).ftp is None


def test_a_certificate_without_its_key_is_named(pem: ServerPem) -> None:
    with pytest.raises(TlsSettingError,
                       match=r"^ILLHUB_HTTP__TLS_KEY: not set, but ILLHUB_HTTP__TLS_CERT"):
        ServerContexts.from_settings(Settings(http={"tls_cert": str(pem.cert)}), drop=False)
    with pytest.raises(TlsSettingError, match=r"^ILLHUB_FTP__TLS_CERT: not set"):
        ServerContexts.from_settings(Settings(ftp={"tls_key": str(pem.key)}))


def test_a_key_that_does_not_match_the_certificate_is_named(pem: ServerPem,
                                                            tmp_path: Path) -> None:
    other = write_server_pem(trustme.CA(), tmp_path / "other")
    s = Settings(http={"tls_cert": str(pem.cert), "tls_key": str(other.key)})
    with pytest.raises(TlsSettingError) as caught:
        ServerContexts.from_settings(s, drop=False)
    message = tls_message(caught)
    assert message.startswith(f"ILLHUB_HTTP__TLS_CERT: '{pem.cert}' with the key "
                              f"'{other.key}' (from ILLHUB_HTTP__TLS_KEY) cannot be used")


def test_a_missing_certificate_file_is_named(pem: ServerPem) -> None:
    s = Settings(ftp={"tls_cert": "/nonexistent.crt", "tls_key": str(pem.key)})
    with pytest.raises(TlsSettingError,
                       match=r"^ILLHUB_FTP__TLS_CERT: no such file '/nonexistent.crt'"):
        ServerContexts.from_settings(s)


def test_good_pairs_give_contexts_and_reload_keeps_the_old_one_on_failure(
        pem: ServerPem, tmp_path: Path) -> None:
    cert, key = tmp_path / "hub.crt", tmp_path / "hub.key"
    cert.write_bytes(pem.cert.read_bytes())
    key.write_bytes(pem.key.read_bytes())
    s = Settings(http={"tls_cert": str(cert), "tls_key": str(key)},
                 ftp={"tls_cert": str(cert), "tls_key": str(key)})
    contexts = ServerContexts.from_settings(s)
    assert contexts.http is not None and contexts.ftp is not None
    assert contexts.http.minimum_version == ssl.TLSVersion.TLSv1_2
    assert contexts.reload() == []
    key.write_text("gone bad\n")
    failed = contexts.reload()
    assert len(failed) == 2 and failed[0].startswith("ILLHUB_HTTP__TLS_CERT: ")
