"""Settings precedence: init > environment > .env > secrets dir > defaults."""

from __future__ import annotations

import pytest

from schemas.settings import Settings, mask_url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path):
    for key in ("ILLHUB_NAME_PREFIX", "ILLHUB_HTTP_PORT", "ILLHUB_AMQP_URL",
                "ILLHUB_DEADLINES__RUSH", "ILLHUB_SECRETS_DIR", "ILLHUB_DATABASE_URL"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_work_on_loopback(clean_env) -> None:
    s = Settings()
    assert s.amqp_url.get_secret_value().startswith("amqp://guest:guest@127.0.0.1:5672")
    assert s.database_url.get_secret_value().startswith("postgresql://")
    assert s.name("ill.inbound") == "ill.inbound"
    assert s.deadlines.express == 2 and s.deadlines.rush == 24 and s.deadlines.normal == 72
    assert s.vhost == "/"


def test_precedence(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_dir = clean_env / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "name_prefix").write_text("from-secrets.")
    (secrets_dir / "http_port").write_text("7001")
    (secrets_dir / "amqp_url").write_text("amqp://hub:s3cret@broker:5672/ill")
    assert Settings().name_prefix == "from-secrets."
    assert Settings().amqp_url.get_secret_value() == "amqp://hub:s3cret@broker:5672/ill"

    (clean_env / ".env").write_text("ILLHUB_NAME_PREFIX=from-dotenv.\nILLHUB_HTTP_PORT=7002\n")
    assert Settings().name_prefix == "from-dotenv."
    assert Settings().http_port == 7002

    monkeypatch.setenv("ILLHUB_NAME_PREFIX", "from-env.")
    monkeypatch.setenv("ILLHUB_DEADLINES__RUSH", "12")
    s = Settings()
    assert s.name_prefix == "from-env." and s.http_port == 7002 and s.deadlines.rush == 12

    assert Settings(name_prefix="from-init.").name_prefix == "from-init."


def test_secrets_dir_from_env(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = clean_env / "run-secrets"
    elsewhere.mkdir()
    (elsewhere / "database_url").write_text("postgresql://hub:pw@db:5432/illhub")
    monkeypatch.setenv("ILLHUB_SECRETS_DIR", str(elsewhere))
    assert Settings().database_url.get_secret_value() == "postgresql://hub:pw@db:5432/illhub"


def test_masked_never_shows_passwords(clean_env) -> None:
    s = Settings(amqp_url="amqp://hub:topsecret@broker:5672/ill",
                 smtp_password="mailsecret")
    shown = str(s.masked())
    assert "topsecret" not in shown and "mailsecret" not in shown
    assert s.masked()["amqp_url"] == "amqp://hub:****@broker:5672/ill"
    assert mask_url("http://a@b/") == "http://a@b/"


def test_vhost_and_agency_url(clean_env) -> None:
    s = Settings(amqp_url="amqp://guest:guest@127.0.0.1:5672/illhub-test")
    assert s.vhost == "illhub-test"
    url = s.amqp_url_for("CALIS:100010", "p@ss/word")
    assert url == "amqp://CALIS%3A100010:p%40ss%2Fword@127.0.0.1:5672/illhub-test"


def test_bad_value_names_the_setting(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILLHUB_HTTP_PORT", "eighty")
    with pytest.raises(Exception, match="http_port"):
        Settings()
