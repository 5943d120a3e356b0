"""Settings: one tree, precedence init > environment > .env > secrets dir > defaults."""

from __future__ import annotations

import os

import pytest

from schemas.settings import ENV_PREFIX, FileTypeName, Settings, mask_url


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_work_on_loopback(clean_env) -> None:
    s = Settings()
    assert s.amqp.url.get_secret_value().startswith("amqp://guest:guest@127.0.0.1:5672")
    assert s.database_url.startswith("postgresql://")
    assert s.name("ill.inbound") == "ill.inbound"
    assert s.deadlines.express == 2 and s.deadlines.rush == 24 and s.deadlines.normal == 72
    assert s.vhost == "/"
    assert s.intake.shards == 4 and s.ftp.allowed_types == [FileTypeName.PDF]
    assert s.public_base_url == "http://127.0.0.1:8080"


def test_init_beats_environment_beats_dotenv_beats_secrets_dir(
        clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets_dir = clean_env / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "amqp__name_prefix").write_text("from-secrets.")
    (secrets_dir / "http__port").write_text("7001")
    (secrets_dir / "amqp__url").write_text("amqp://hub:s3cret@broker:5672/ill")
    assert Settings().amqp.name_prefix == "from-secrets."
    assert Settings().amqp.url.get_secret_value() == "amqp://hub:s3cret@broker:5672/ill"

    (clean_env / ".env").write_text(
        "ILLHUB_AMQP__NAME_PREFIX=from-dotenv.\nILLHUB_HTTP__PORT=7002\n")
    assert Settings().amqp.name_prefix == "from-dotenv."
    assert Settings().http.port == 7002

    monkeypatch.setenv("ILLHUB_AMQP__NAME_PREFIX", "from-env.")
    monkeypatch.setenv("ILLHUB_DEADLINES__RUSH", "12")
    s = Settings()
    assert s.amqp.name_prefix == "from-env." and s.http.port == 7002 and s.deadlines.rush == 12

    assert Settings(amqp={"name_prefix": "from-init."}).amqp.name_prefix == "from-init."


def test_secrets_dir_from_env(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    elsewhere = clean_env / "run-secrets"
    elsewhere.mkdir()
    (elsewhere / "database__url").write_text("postgresql://hub:pw@db:5432/illhub")
    (elsewhere / "smtp__password").write_text("邮件的密码 long enough")
    monkeypatch.setenv("ILLHUB_SECRETS_DIR", str(elsewhere))
    s = Settings()
    assert s.database_url == "postgresql://hub:pw@db:5432/illhub"
    assert s.smtp.password is not None
    assert s.smtp.password.get_secret_value() == "邮件的密码 long enough"


def test_masked_shows_every_group_but_no_password(clean_env) -> None:
    s = Settings(amqp={"url": "amqp://hub:topsecret@broker:5672/ill"},
                 smtp={"password": "mailsecret"},
                 accounts={"oidc": {"client_secret": "opsecret"}})
    shown = s.masked()
    assert "topsecret" not in str(shown) and "mailsecret" not in str(shown)
    assert "opsecret" not in str(shown)
    assert shown["amqp"]["url"] == "amqp://hub:****@broker:5672/ill"
    assert shown["smtp"]["password"] == "**********"
    assert {"amqp", "intake", "outbox", "database", "http", "ftp", "smtp", "delivery",
            "deadlines", "settlement", "accounts"} <= set(shown)
    assert mask_url("http://a@b/") == "http://a@b/"


def test_vhost_and_agency_url(clean_env) -> None:
    s = Settings(amqp={"url": "amqp://guest:guest@127.0.0.1:5672/illhub-test"})
    assert s.vhost == "illhub-test"
    url = s.amqp_url_for("CALIS:100010", "p@ss/word")
    assert url == "amqp://CALIS%3A100010:p%40ss%2Fword@127.0.0.1:5672/illhub-test"


def test_bad_value_names_the_setting(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ILLHUB_HTTP__PORT", "eighty")
    with pytest.raises(Exception, match=r"http\.port"):
        Settings()
    monkeypatch.delenv("ILLHUB_HTTP__PORT")
    monkeypatch.setenv("ILLHUB_FTP__ALLOWED_TYPES", '["pdf", "docx"]')
    with pytest.raises(Exception, match="allowed_types"):
        Settings()


def test_a_setting_under_its_old_flat_name_is_refused(clean_env,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A deployment configured for an earlier release must not silently run on defaults."""
    monkeypatch.setenv("ILLHUB_AMQP_URL", "amqp://hub:pw@broker/")
    monkeypatch.setenv("ILLHUB_DELIVERY_DOWNLOADS", "3")
    with pytest.raises(ValueError) as caught:
        Settings()
    assert "ILLHUB_AMQP_URL is now ILLHUB_AMQP__URL" in str(caught.value)
    assert "ILLHUB_DELIVERY_DOWNLOADS" in str(caught.value)


def test_updated_and_environment_round_trip(clean_env, monkeypatch: pytest.MonkeyPatch) -> None:
    s = Settings().updated(amqp__name_prefix="t1.", smtp__port=2525,
                           ftp__allowed_types=["pdf", "tiff"],
                           accounts__oidc__client_secret="密码 x")
    assert s.amqp.name_prefix == "t1." and s.smtp.port == 2525
    with pytest.raises(KeyError):
        s.updated(smtp__hots="typo")
    with pytest.raises(ValueError):
        s.updated(http__port=-1)
    for key, value in s.environment().items():
        monkeypatch.setenv(key, value)
    assert Settings() == s  # what a child `run.py hub` process would build


def test_the_shared_operators_password_is_refused_with_what_replaced_it(clean_env) -> None:
    with pytest.raises(ValueError, match="ILLHUB_OPERATORS__PASSWORD is gone"):
        Settings().updated(operators__password="shared 口令 of old")


def test_an_unknown_setting_in_code_is_an_error(clean_env) -> None:
    with pytest.raises(TypeError, match="name_prefix"):
        Settings(name_prefix="t1.")  # the flat name of an earlier release
    with pytest.raises(ValueError, match="hots"):
        Settings(smtp={"hots": "mail"})


def test_settings_are_built_once_and_never_changed(clean_env) -> None:
    s = Settings()
    with pytest.raises(Exception, match="frozen"):
        s.hub_symbol = "X:Y"  # type: ignore[misc]
    with pytest.raises(Exception, match="frozen"):
        s.smtp.port = 1  # type: ignore[misc]
