"""Delivery knobs (environment `ILLHUB_DELIVERY_*` or `.env`), beside the hub's Settings.

The defaults follow OCLC Article Exchange, which CALIS-style document delivery
resembles: 5 downloads within 30 days, files up to 120 MB, PDF only.
"""

from __future__ import annotations

from typing import Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from delivery.filetypes import KNOWN_TYPES
from schemas.settings import Settings


class DeliverySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="ILLHUB_DELIVERY_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    # Grants: downloads per link (0 = unlimited) and days until the link expires.
    downloads: int = 5
    days: int = 30
    # Days a document is kept after its last grant ended, so a library can ask
    # for a fresh link without the supplier scanning again.
    grace_days: int = 7

    # FTP drop.
    max_upload_mb: int = 120
    allowed_types: list[str] = ["pdf"]
    # "50000-50099": the ports to open in the firewall; empty = any free port.
    passive_ports: str = "50000-50099"
    # The IPv4 address put in PASV answers when the hub sits behind NAT.
    announce_address: str | None = None
    ftp_idle_timeout: float = 300.0
    ftp_max_connections: int = 256
    max_connections_per_supplier: int = 8
    # A wrong password costs this long, on top of the scrypt check.
    login_failure_delay: float = 1.0
    # A file put into a home by other means than our FTP server counts as complete
    # once it has not changed for this long.
    upload_quiet_seconds: float = 10.0
    abandoned_upload_hours: float = 24.0

    # Download gateway: the public address readers click (default: http_host:http_port).
    public_base_url: str | None = None
    # Unknown tokens from one address within the window: answers slow down, then 429.
    bad_token_limit: int = 20
    bad_token_window_seconds: float = 300.0
    # Reverse proxies whose X-Forwarded-For is believed for the client address.
    trusted_proxies: list[str] = []

    # Mail.
    smtp_security: Literal["auto", "starttls", "tls", "none"] = "auto"
    smtp_timeout: float = 30.0
    mail_poll_seconds: float = 5.0
    mail_backoff_seconds: float = 30.0
    mail_max_backoff_seconds: float = 3600.0
    # Sent mail rows (addresses are personal data) are deleted after this many days.
    mail_keep_days: int = 30

    retention_minutes: float = 60.0

    @field_validator("allowed_types")
    @classmethod
    def _known_types(cls, value: list[str]) -> list[str]:
        names = [v.strip().lower() for v in value if v.strip()]
        unknown = [n for n in names if n not in KNOWN_TYPES]
        if unknown or not names:
            raise ValueError(f"allowed_types must name some of {', '.join(KNOWN_TYPES)}; "
                             f"got {value!r}")
        return names

    @field_validator("passive_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        if value.strip():
            parse_port_range(value)
        return value.strip()

    def data_ports(self) -> range | None:
        return parse_port_range(self.passive_ports) if self.passive_ports else None

    @property
    def max_upload_bytes(self) -> int:
        return self.max_upload_mb * 1024 * 1024

    def grant_downloads(self) -> int | None:
        return self.downloads or None

    def base_url(self, settings: Settings) -> str:
        if self.public_base_url:
            return self.public_base_url.rstrip("/")
        return f"http://{settings.http_host}:{settings.http_port}"


def parse_port_range(text: str) -> range:
    low, sep, high = text.partition("-")
    try:
        first = int(low)
        last = int(high) if sep else first
    except ValueError:
        raise ValueError(f"passive_ports {text!r} is not like 50000-50099") from None
    if not 1 <= first <= last <= 65535:
        raise ValueError(f"passive_ports {text!r} is not a port range within 1-65535")
    return range(first, last + 1)
