"""The hub's configuration: environment (ILLHUB_*), a `.env` file, a secrets directory.

Precedence, highest first: constructor arguments, environment variables, `.env`,
files in the secrets directory (one file per setting, named like the variable
without prefix, e.g. `secrets/amqp_url`), then the defaults below. The defaults
work on a machine with RabbitMQ and PostgreSQL on loopback.
"""

from __future__ import annotations

import os
from functools import cached_property
from typing import Any, Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

SECRETS_DIR_ENV = "ILLHUB_SECRETS_DIR"


def _secrets_dir() -> str | None:
    path = os.environ.get(SECRETS_DIR_ENV, "secrets")
    return path if os.path.isdir(path) else None


class Deadlines(BaseSettings):
    """How long a supplier may stay silent on a forwarded request, by service level (hours)."""

    express: float = 2.0
    rush: float = 24.0
    normal: float = 72.0


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ILLHUB_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    amqp_url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    amqp_management_url: SecretStr = SecretStr("http://guest:guest@127.0.0.1:15672/")
    database_url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/illhub")
    name_prefix: str = ""
    # Queues are quorum queues (replicated, ARCHITECTURE §3.2). "classic" exists for
    # throwaway brokers such as the test suite's, where hundreds of short-lived quorum
    # queues per run overload a small RabbitMQ for no benefit.
    queue_type: Literal["quorum", "classic"] = "quorum"
    hub_symbol: str = "ILLHUB:CENTRE"
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    # Where the hub keeps files: document store, FTP homes, statements, mail folder.
    data_dir: str = "var"

    http_host: str = "127.0.0.1"
    http_port: int = 8080
    ftp_host: str = "127.0.0.1"
    ftp_port: int = 2121
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    mail_from: str = "ILL Hub <illhub@localhost>"

    # Intake: how many inbound messages one consumer may hold unacked, and the
    # largest body accepted before any parsing is attempted.
    prefetch: int = 256
    # Group commit: up to this many messages already delivered are processed in one
    # PostgreSQL transaction and acked together after it commits. Kept below 64: each
    # message may open a savepoint, and a transaction with more than 64 subtransactions
    # makes every other session's snapshot slower (PostgreSQL's subxid cache overflows).
    intake_batch: int = 48
    max_message_bytes: int = 1_048_576
    outbox_batch: int = 200
    outbox_poll_seconds: float = 0.5

    # "json": one JSON object per log line, with the hub transaction id (for log shippers).
    log_format: Literal["text", "json"] = "text"

    deadlines: Deadlines = Field(default_factory=Deadlines)
    # Settlement: when runs start (cron, consortium time zone; default 00:05 on the 1st
    # of each month, settling the month before) and who at the centre gets the summary.
    settlement_cron: str = "5 0 1 * *"
    centre_finance_email: str | None = None

    # How often the hub looks for suppliers past their deadline.
    sweep_seconds: float = 30.0
    # A second open request from the same patron for the same item: refuse it with an
    # error confirmation, or accept it and flag it in the audit log.
    duplicate_requests: Literal["refuse", "accept"] = "refuse"

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any,
                                   env_settings: Any, dotenv_settings: Any,
                                   file_secret_settings: Any) -> tuple[Any, ...]:
        from pydantic_settings import SecretsSettingsSource

        secrets_dir = _secrets_dir()
        sources = [init_settings, env_settings, dotenv_settings]
        if secrets_dir:
            sources.append(SecretsSettingsSource(settings_cls, secrets_dir=secrets_dir,
                                                 env_prefix=""))
        return tuple(sources)

    def name(self, base: str) -> str:
        """An exchange or queue name with the configured prefix (ARCHITECTURE §3.2)."""
        return f"{self.name_prefix}{base}"

    @cached_property
    def vhost(self) -> str:
        path = urlsplit(self.amqp_url.get_secret_value()).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    def amqp_url_for(self, user: str, password: str) -> str:
        """The hub's broker URL with another user's credentials (for agencies and tests)."""
        parts = urlsplit(self.amqp_url.get_secret_value())
        host = parts.hostname or "127.0.0.1"
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))

    def masked(self) -> dict[str, Any]:
        """Effective settings for display: secrets and URL passwords never shown."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump().items():
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                out[key] = mask_url(raw) if "://" in raw else "**********"
            else:
                out[key] = value
        return out


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
