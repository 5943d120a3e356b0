"""Agencies: the consortium's members, each with its own broker user and queue.

An agency's broker user name is exactly its symbol (ARCHITECTURE §3.1), with
permissions: configure nothing, write only `ill.inbound`, read only its own queue.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg

from broker.profiles import DEFAULT_PROFILE, PROFILE_NAMES
from infra.credentials import hash_password
from infra.database import Connection
from infra.rabbit_admin import Management
from infra.tls import TlsSettingError, pem_client_context
from infra.topology import declare_agency_queue
from schemas.settings import Settings
from schemas.symbols import split_symbol
from schemas.wire import INBOUND, agency_queue

ROLES = ("requester", "supplier")
ISO18626_VERSIONS = ("1.2", "2021")
# Only the certificates of a CA file are stored: a key that came along in the same
# file (a combined PEM) must not end up in the database.
_PEM_CERTIFICATE = re.compile(
    r"-----BEGIN CERTIFICATE-----\r?\n[A-Za-z0-9+/=\r\n]+?-----END CERTIFICATE-----")


class AgencyError(ValueError):
    pass


@dataclass(frozen=True)
class NewAgency:
    symbol: str
    name: str
    roles: tuple[str, ...]
    password: str
    province: str | None = None
    city: str | None = None
    email: str | None = None
    finance_email: str | None = None
    # An ILL system that speaks ISO 18626 XML over HTTP instead of AMQP (broker/peers.py).
    iso18626_url: str | None = None
    iso18626_version: str = "1.2"
    # Which dialect of ISO 18626 its ILL system speaks (broker/profiles/).
    iso18626_profile: str = DEFAULT_PROFILE
    # The PEM of a CA of its own that signed its https:// certificate (read_ca_pem).
    iso18626_ca: str | None = None

    def check(self) -> None:
        try:
            split_symbol(self.symbol)
        except ValueError as exc:
            raise AgencyError(f"symbol {self.symbol!r}: {exc}") from exc
        if not self.name.strip():
            raise AgencyError("--name must not be empty")
        bad = [r for r in self.roles if r not in ROLES]
        if bad or not self.roles:
            raise AgencyError(f"--roles must be a comma list of {', '.join(ROLES)}; got "
                              f"{','.join(self.roles) or 'nothing'}")
        if len(self.password) < 8:
            raise AgencyError("--password must have at least 8 characters")
        for label, addr in (("--email", self.email), ("--finance-email", self.finance_email)):
            if addr and not re.fullmatch(r"[^@\s]+@[^@\s]+", addr):
                raise AgencyError(f"{label} {addr!r} is not an e-mail address")
        check_peer(self.iso18626_url, self.iso18626_version, self.iso18626_profile)


def check_peer(url: str | None, version: str | None, profile: str | None) -> None:
    """The ISO 18626 HTTP settings of an agency, each when given."""
    if url is not None and not re.fullmatch(r"https?://[^\s/]+\S*", url):
        raise AgencyError(f"--iso18626-url {url!r} is not an http(s) URL")
    if version is not None and version not in ISO18626_VERSIONS:
        raise AgencyError(f"--iso18626-version must be one of "
                          f"{', '.join(ISO18626_VERSIONS)}; got {version!r}")
    if profile is not None and profile not in PROFILE_NAMES:
        raise AgencyError(f"--profile must be one of {', '.join(PROFILE_NAMES)}; "
                          f"got {profile!r}")


def read_ca_pem(path: str) -> str:
    """The CA certificates of a PEM file, for `--iso18626-ca FILE`: what broker/peers.py
    trusts for that peer's https:// URL. Unreadable, or no usable certificate: AgencyError."""
    try:
        text = Path(path).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a PEM (text) file"
        raise AgencyError(f"--iso18626-ca {path!r}: cannot read it ({reason})") from None
    pem = "\n".join(m.group(0).replace("\r\n", "\n")
                    for m in _PEM_CERTIFICATE.finditer(text))
    if not pem:
        raise AgencyError(f"--iso18626-ca {path!r}: no certificate in it (a PEM file with "
                          "-----BEGIN CERTIFICATE----- is needed)")
    try:
        pem_client_context(pem, "--iso18626-ca")
    except TlsSettingError as exc:
        raise AgencyError(f"--iso18626-ca {path!r}: {exc}") from None
    return pem + "\n"


def parse_region(region: str | None) -> tuple[str | None, str | None]:
    """`PROVINCE/CITY` (city optional), e.g. `上海/上海` or `广东/广州`."""
    if not region:
        return None, None
    province, _, city = region.partition("/")
    return province.strip() or None, city.strip() or None


def permissions(settings: Settings, symbol: str) -> dict[str, str]:
    return {
        "configure": "^$",
        "write": f"^{re.escape(settings.name(INBOUND))}$",
        "read": f"^{re.escape(settings.name(agency_queue(symbol)))}$",
    }


async def add(settings: Settings, pool: asyncpg.Pool, agency: NewAgency) -> None:
    """Register in PostgreSQL and in RabbitMQ; all or nothing."""
    agency.check()
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchval("SELECT true FROM agency WHERE symbol = $1", agency.symbol):
            raise AgencyError(f"agency {agency.symbol} already exists; "
                              "use `agency list` to see it")
        await conn.execute(
            """INSERT INTO agency (symbol, name, roles, province, city, email, finance_email,
                                   password_hash, iso18626_url, iso18626_version,
                                   iso18626_profile, iso18626_ca)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)""",
            agency.symbol, agency.name, list(agency.roles), agency.province, agency.city,
            agency.email, agency.finance_email, hash_password(agency.password),
            agency.iso18626_url, agency.iso18626_version, agency.iso18626_profile,
            agency.iso18626_ca,
        )
        # The broker side is created inside the DB transaction, so a broker failure
        # leaves no agency row; a DB failure after it is undone below.
        async with Management(settings.amqp.management_url.get_secret_value()) as mgmt:
            if await mgmt.get_user(agency.symbol) is not None:
                raise AgencyError(f"broker user {agency.symbol} already exists in RabbitMQ "
                                  "but not in the hub's database; remove it first")
            try:
                await mgmt.put_user(agency.symbol, agency.password)
                await mgmt.set_permissions(settings.vhost, agency.symbol,
                                           **permissions(settings, agency.symbol))
                connection = await aio_pika.connect(settings.amqp_broker_url)
                async with connection:
                    await declare_agency_queue(await connection.channel(), settings,
                                               agency.symbol)
            except BaseException:
                await mgmt.delete_user(agency.symbol)
                raise


async def disable(settings: Settings, pool: asyncpg.Pool, symbol: str) -> None:
    """Revoke broker access now; keep the agency's history and queue."""
    async with pool.acquire() as conn, conn.transaction():
        found = await conn.fetchval(
            "UPDATE agency SET enabled = false, disabled_at = now() WHERE symbol = $1 "
            "RETURNING true", symbol)
        if not found:
            raise AgencyError(f"no agency {symbol}")
        async with Management(settings.amqp.management_url.get_secret_value()) as mgmt:
            await mgmt.clear_permissions(settings.vhost, symbol)
            await mgmt.close_connections_of(symbol)


@dataclass(frozen=True)
class PeerChange:
    """What `agency set` changes of an agency's ISO 18626 HTTP settings (None: keep)."""

    profile: str | None = None
    iso18626_url: str | None = None
    iso18626_version: str | None = None
    iso18626_ca: str | None = None  # a PEM (read_ca_pem)

    def check(self) -> None:
        if self.profile is None and self.iso18626_url is None and \
                self.iso18626_version is None and self.iso18626_ca is None:
            raise AgencyError("nothing to set: give --profile, --iso18626-url, "
                              "--iso18626-version or --iso18626-ca")
        check_peer(self.iso18626_url, self.iso18626_version, self.profile)


async def change(pool: asyncpg.Pool, symbol: str, what: PeerChange) -> asyncpg.Record:
    """Set an agency's profile (and HTTP peer settings); returns them as they are now.

    Messages already in the outbox go out with the new settings (broker/peers.py reads
    them when it sends); messages received are normalised with the new profile from the
    next one on; a new CA is trusted from the next POST on."""
    what.check()
    row = await pool.fetchrow(
        """UPDATE agency SET iso18626_profile = coalesce($2, iso18626_profile),
                             iso18626_url = coalesce($3, iso18626_url),
                             iso18626_version = coalesce($4, iso18626_version),
                             iso18626_ca = coalesce($5, iso18626_ca)
           WHERE symbol = $1
           RETURNING symbol, iso18626_profile, iso18626_url, iso18626_version,
                     iso18626_ca IS NOT NULL AS iso18626_own_ca""",
        symbol, what.profile, what.iso18626_url, what.iso18626_version, what.iso18626_ca)
    if row is None:
        raise AgencyError(f"no agency {symbol}")
    return row


async def listing(pool: asyncpg.Pool) -> list[asyncpg.Record]:
    return await pool.fetch(
        """SELECT symbol, name, roles, province, city, email, finance_email, enabled, created_at,
                  iso18626_url, iso18626_version, iso18626_profile,
                  iso18626_ca IS NOT NULL AS iso18626_own_ca
           FROM agency ORDER BY symbol""")


@dataclass(frozen=True)
class PeerRegistration:
    """An agency's ISO 18626 HTTP registration, as the conformance check needs it."""

    symbol: str
    roles: tuple[str, ...]
    enabled: bool
    iso18626_url: str | None
    iso18626_version: str
    iso18626_profile: str
    iso18626_ca: str | None = None  # the PEM of its own CA, for its https:// URL


async def registration(pool: asyncpg.Pool, symbol: str) -> PeerRegistration | None:
    """An agency's roles and HTTP peer settings, or None if no agency has this symbol."""
    row = await pool.fetchrow(
        """SELECT symbol, roles, enabled, iso18626_url, iso18626_version, iso18626_profile,
                  iso18626_ca
           FROM agency WHERE symbol = $1""", symbol)
    if row is None:
        return None
    return PeerRegistration(symbol=row["symbol"], roles=tuple(row["roles"]),
                            enabled=row["enabled"], iso18626_url=row["iso18626_url"],
                            iso18626_version=row["iso18626_version"],
                            iso18626_profile=row["iso18626_profile"],
                            iso18626_ca=row["iso18626_ca"])


async def enabled_symbols(pool: asyncpg.Pool) -> list[str]:
    """The agencies that may send and receive now (each has a queue to declare)."""
    return [r["symbol"] for r in await pool.fetch(
        "SELECT symbol FROM agency WHERE enabled ORDER BY symbol")]


async def name_of(conn: Connection, symbol: str) -> str | None:
    """An agency's name, or None if no agency has this symbol."""
    name = await conn.fetchval("SELECT name FROM agency WHERE symbol = $1", symbol)
    return str(name) if name is not None else None
