"""The hub's configuration, one tree: environment (ILLHUB_*), `.env`, a secrets directory.

Built once, in the composition root (`app/`), and passed down; no domain module
builds its own. Precedence, highest first: constructor arguments, environment
variables, `.env`, files in the secrets directory (one file per setting, named
like the variable without its prefix, e.g. `secrets/amqp__url`), then the
defaults below, which work on a machine with RabbitMQ and PostgreSQL on loopback.

Nested settings use `__` in names: `ILLHUB_AMQP__URL`, `ILLHUB_DEADLINES__RUSH=12`.
"""

from __future__ import annotations

import json
import os
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NestedSecretsSettingsSource, SettingsConfigDict

ENV_PREFIX = "ILLHUB_"
NESTED = "__"
SECRETS_DIR_ENV = "ILLHUB_SECRETS_DIR"

# The flat names of the first releases, and the nested setting that replaced each. A
# deployment that still sets one is told so instead of silently running on a default.
RENAMED = {
    "AMQP_URL": "AMQP__URL", "AMQP_MANAGEMENT_URL": "AMQP__MANAGEMENT_URL",
    "NAME_PREFIX": "AMQP__NAME_PREFIX", "QUEUE_TYPE": "AMQP__QUEUE_TYPE",
    "DATABASE_URL": "DATABASE__URL", "HTTP_HOST": "HTTP__HOST", "HTTP_PORT": "HTTP__PORT",
    "FTP_HOST": "FTP__HOST", "FTP_PORT": "FTP__PORT", "SMTP_HOST": "SMTP__HOST",
    "SMTP_PORT": "SMTP__PORT", "SMTP_USER": "SMTP__USER", "SMTP_PASSWORD": "SMTP__PASSWORD",
    "MAIL_FROM": "SMTP__MAIL_FROM", "PREFETCH": "INTAKE__PREFETCH",
    "INTAKE_BATCH": "INTAKE__BATCH", "MAX_MESSAGE_BYTES": "INTAKE__MAX_MESSAGE_BYTES",
    "OUTBOX_BATCH": "OUTBOX__BATCH", "OUTBOX_POLL_SECONDS": "OUTBOX__POLL_SECONDS",
    "SETTLEMENT_CRON": "SETTLEMENT__CRON",
    "CENTRE_FINANCE_EMAIL": "SETTLEMENT__CENTRE_FINANCE_EMAIL",
    "SWEEP_SECONDS": "DEADLINES__SWEEP_SECONDS",
    # The shared operators' password and its session gave way to people's accounts.
    "OPERATOR_PASSWORD": "OPERATORS__PASSWORD",
    "OPERATOR_SESSION_HOURS": "ACCOUNTS__SESSION_ABSOLUTE_HOURS",
    "OPERATOR_LOGIN_ATTEMPTS": "ACCOUNTS__ACCOUNT_FAILURES",
    "OPERATOR_LOGIN_WINDOW_SECONDS": "ACCOUNTS__FAILURE_WINDOW_MINUTES",
}
_OLD_DELIVERY = "DELIVERY_"  # ILLHUB_DELIVERY_X became ILLHUB_{DELIVERY,FTP,HTTP,SMTP}__X


class FileTypeName(StrEnum):
    """Kinds of file the FTP drop may accept (delivery/filetypes.py knows their bytes)."""

    PDF = "pdf"
    TIFF = "tiff"
    JPEG = "jpeg"
    PNG = "png"


class _Part(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Amqp(_Part):
    url: SecretStr = SecretStr("amqp://guest:guest@127.0.0.1:5672/")
    # RabbitMQ management API: agencies' broker users, and which hub is active on which
    # intake shard.
    management_url: SecretStr = SecretStr("http://guest:guest@127.0.0.1:15672/")
    # Put before every exchange and queue name (tests and the demo use one of their own).
    name_prefix: str = ""
    # Queues are quorum queues (replicated, ARCHITECTURE §3.2). "classic" exists for
    # throwaway brokers such as the test suite's, where hundreds of short-lived quorum
    # queues per run overload a small RabbitMQ for no benefit.
    queue_type: Literal["quorum", "classic"] = "quorum"
    # TLS (with an amqps:// URL): the CA that signed the broker's certificate (default:
    # the system's CAs), and a client certificate where the broker asks for one.
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


class Intake(_Part):
    # How many shards `hub.inbound` is cut into (ARCHITECTURE §5): each shard has one
    # active consumer, and different hub processes are active on different shards. May
    # change between restarts; the hub drains the old shards before it uses the new.
    shards: int = Field(default=4, ge=1, le=64)
    # Unacked messages one shard's consumer may hold.
    prefetch: int = Field(default=256, ge=1)
    # Group commit: up to this many messages already delivered are processed in one
    # PostgreSQL transaction and acked together after it commits. Kept below 64: each
    # message may open a savepoint, and a transaction with more than 64 subtransactions
    # makes every other session's snapshot slower (PostgreSQL's subxid cache overflows).
    batch: int = Field(default=48, ge=1, le=63)
    # The largest body accepted before any parsing is attempted.
    max_message_bytes: int = Field(default=1_048_576, ge=1024)
    # How often a hub looks at who is active on which shard, and hands shards over.
    balance_seconds: float = Field(default=2.0, gt=0)


class Outbox(_Part):
    batch: int = Field(default=200, ge=1)
    poll_seconds: float = Field(default=0.5, gt=0)


class Database(_Part):
    url: SecretStr = SecretStr("postgresql://postgres@127.0.0.1:5432/illhub")
    # "verify-full": TLS, the server's certificate checked against ca_file (default: the
    # system's CAs) and its name against the URL's host.
    tls: Literal["off", "verify-full"] = "off"
    ca_file: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


class Http(_Part):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    # The public address readers click in their mail (default: http://host:port).
    public_base_url: str | None = None
    # Reverse proxies whose X-Forwarded-For is believed for the client address.
    trusted_proxies: list[str] = []
    # Unknown download tokens from one address within the window: answers slow down,
    # then 429.
    bad_token_limit: int = 20
    bad_token_window_seconds: float = 300.0
    # HTTPS: the certificate chain and key (PEM). Both set: the server speaks only TLS,
    # sends Strict-Transport-Security for hsts_seconds, and marks cookies Secure.
    tls_cert: str | None = None
    tls_key: str | None = None
    hsts_seconds: int = Field(default=31_536_000, ge=0)
    # Outbound ISO 18626 peers over https://: the CAs to trust beyond the system's (a
    # peer with a CA of its own has it on its agency: run.py agency set --iso18626-ca).
    peers_ca_file: str | None = None


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


class Ftp(_Part):
    """The suppliers' FTP drop. Defaults follow OCLC Article Exchange: files up to 120 MB."""

    host: str = "127.0.0.1"
    port: int = Field(default=2121, ge=0, le=65535)
    max_upload_mb: int = 120
    allowed_types: list[FileTypeName] = [FileTypeName.PDF]
    # "50000-50099": the ports to open in the firewall; empty = any free port.
    passive_ports: str = "50000-50099"
    # The IPv4 address put in PASV answers when the hub sits behind NAT.
    announce_address: str | None = None
    idle_timeout: float = 300.0
    max_connections: int = 256
    max_connections_per_supplier: int = 8
    # A wrong password costs this long, on top of the scrypt check.
    login_failure_delay: float = 1.0
    # A file put into a home by other means than our FTP server counts as complete
    # once it has not changed for this long.
    upload_quiet_seconds: float = 10.0
    abandoned_upload_hours: float = 24.0
    # FTPS (explicit, AUTH TLS, with PROT P data): the certificate chain and key (PEM).
    tls_cert: str | None = None
    tls_key: str | None = None
    # Refuse USER/PASS before AUTH TLS. On by default: a hub without a certificate for
    # its drop does not start until one is set or this is turned off.
    require_tls: bool = True

    @field_validator("allowed_types")
    @classmethod
    def _some_types(cls, value: list[FileTypeName]) -> list[FileTypeName]:
        if not value:
            raise ValueError(f"allowed_types must name some of "
                             f"{', '.join(t.value for t in FileTypeName)}")
        return value

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


class Smtp(_Part):
    host: str = "127.0.0.1"
    port: int = 8025
    user: str | None = None
    password: SecretStr | None = None
    mail_from: str = "ILL Hub <illhub@localhost>"
    # starttls: required and verified; tls: implicit TLS (port 465); none: cleartext
    # (a local relay only); auto: STARTTLS only if the server offers it.
    security: Literal["auto", "starttls", "tls", "none"] = "starttls"
    # The CA that signed the mail server's certificate (default: the system's CAs).
    ca_file: str | None = None
    timeout: float = 30.0
    poll_seconds: float = 5.0
    backoff_seconds: float = 30.0
    max_backoff_seconds: float = 3600.0
    # Sent mail rows (addresses are personal data) are deleted after this many days.
    keep_days: int = 30


class Delivery(_Part):
    """Download links. Defaults follow OCLC Article Exchange: 5 downloads within 30 days."""

    # Downloads per link (0 = unlimited) and days until the link expires.
    downloads: int = Field(default=5, ge=0)
    days: int = Field(default=30, ge=1)
    # Days a document is kept after its last grant ended, so a library can ask for a
    # fresh link without the supplier scanning again.
    grace_days: int = 7
    retention_minutes: float = 60.0

    def grant_downloads(self) -> int | None:
        return self.downloads or None


class Deadlines(_Part):
    """How long a supplier may stay silent on a forwarded request, by service level (hours)."""

    express: float = 2.0
    rush: float = 24.0
    normal: float = 72.0
    # How often the hub looks for suppliers past their deadline.
    sweep_seconds: float = 30.0


class Loans(_Part):
    """Book loans kept (issue 19): transit time by distance, the due-date sweep's stages,
    and how a borrower's history makes its trust score (broker/borrower_trust.py)."""

    # Days a parcel takes, by the routing tiers' distance (broker/policy.py `distance`):
    # a book must be sent back this long before its due date to arrive by it.
    transit_days_city: int = Field(default=1, ge=0, le=60)
    transit_days_province: int = Field(default=3, ge=0, le=60)
    transit_days_national: int = Field(default=5, ge=0, le=60)
    # The requester is reminded this many days before it must send the book back.
    reminder_days_before_due: int = Field(default=3, ge=0, le=60)
    # A loan this many days past its due date (Overdue) is recalled.
    recall_after_days_overdue: int = Field(default=14, ge=1, le=365)
    # Trust: each late loan costs min(1, days late / trust_late_days_full), a lost book
    # (a settled loss claim the borrower paid) trust_loss_weight; the sum is shared over
    # the borrower's loans plus trust_prior_loans imaginary good ones, so one late book
    # of a new borrower is not the end of it.
    trust_late_days_full: int = Field(default=30, ge=1, le=365)
    trust_loss_weight: float = Field(default=2.0, ge=0.0, le=10.0)
    trust_prior_loans: int = Field(default=4, ge=0, le=100)


class Settlement(_Part):
    # When runs start (cron, consortium time zone; default 00:05 on the 1st of each
    # month, settling the month before) and who at the centre gets the summary.
    cron: str = "5 0 1 * *"
    centre_finance_email: str | None = None
    # How long a settlement period is: a month (YYYY-MM), two months (YYYY-B1..B6, as
    # Libraries Australia invoices), a quarter (YYYY-Q1..Q4) or the calendar year (YYYY).
    # The monthly cron settles a period in the month after it ends (nothing in the
    # other months); change it only at a boundary (after the last month of a quarter or
    # year closed): a period overlapping a closed one is refused. Budgets stay monthly.
    calendar: Literal["monthly", "bimonthly", "quarterly", "annual"] = "monthly"


class Payments(_Part):
    """After a run (issue 17): when statements fall due, the dispute window, reminders,
    the centre's own bank account and the payment file its bank takes."""

    # A statement falls due this many days after the run issued it, and may be disputed
    # (line by line) for this many days after issue (Libraries Australia gives two weeks).
    due_days: int = Field(default=30, ge=0, le=366)
    dispute_days: int = Field(default=14, ge=0, le=366)
    # A reminder goes this many days before the due date, and again every
    # `overdue_every_days` once a statement is overdue (a disputed amount is not dunned).
    remind_days_before: int = Field(default=7, ge=0, le=366)
    overdue_every_days: int = Field(default=14, ge=1, le=366)
    # How often the hub looks for statements to remind, and deposits running low.
    sweep_minutes: float = Field(default=60.0, gt=0)
    # The ISO 20022 credit-transfer version the consortium's bank takes.
    pain001_version: Literal["pain.001.001.03", "pain.001.001.09"] = "pain.001.001.03"
    # The centre's account, the debtor of every outgoing payment (a bank file needs it).
    centre_name: str = "CALIS 管理中心 ILL Hub centre"
    centre_account: str | None = None      # IBAN, or a domestic account number
    centre_bank_code: str | None = None    # BIC, or a domestic bank code (CN: CNAPS, 12 digits)
    # A prepaid deposit whose available balance falls below this (minor units) raises a
    # low-balance alert, unless the agency's deposit account sets its own threshold.
    deposit_low_minor: int = Field(default=10_000, ge=0)


class Operators(_Part):
    """Retired (issue 16): the operators' shared password is gone. Operators sign in
    with their own accounts (`run.py user add LOGIN --name NAME --password-stdin --role
    operator` makes the first). A deployment that still sets the password is told so
    rather than left to wonder why it no longer opens the pages."""

    password: SecretStr | None = None

    @field_validator("password")
    @classmethod
    def _retired(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            raise ValueError(
                "ILLHUB_OPERATORS__PASSWORD is gone: operators sign in with their own "
                "accounts; make the first with `run.py user add LOGIN --name NAME "
                "--password-stdin --role operator` (README, Accounts and sign-in)")
        return value


def _with_params(url: str, params: dict[str, str | None]) -> str:
    """`url` with the query parameters that have a value (those it has already win)."""
    parts = urlsplit(url)
    have = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
    extra = [(k, v) for k, v in params.items() if v and k not in have]
    if not extra:
        return url
    query = "&".join(q for q in (parts.query, urlencode(extra)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def env_name(group: str, key: str) -> str:
    """The environment variable of a setting: env_name("ftp", "tls_cert") is
    ILLHUB_FTP__TLS_CERT (what error messages name)."""
    return f"{ENV_PREFIX}{group.upper()}{NESTED}{key.upper()}"


class Oidc(_Part):
    """OpenID Connect sign-in against the consortium's identity provider (authorization
    code flow with PKCE). Off while `issuer` is unset."""

    issuer: str | None = None           # e.g. https://idp.calis.example/ (discovery)
    client_id: str | None = None
    client_secret: SecretStr | None = None
    # Where the provider sends the browser back; default: <public base URL>/signin/oidc/callback
    redirect_url: str | None = None
    scopes: str = "openid profile email"
    # Which claim names the person's login, and how claims become grants: a JSON object
    # from a value of `roles_claim` to a role, e.g. {"ill-staff": "library_staff"};
    # the scope of an agency role is the value of `agency_claim`, of a regional role
    # the value of `region_claim`.
    login_claim: str = "preferred_username"
    roles_claim: str = "groups"
    role_map: dict[str, str] = {}
    agency_claim: str = "illhub_agency"
    region_claim: str = "illhub_region"
    # Create the account at first sign-in (with the mapped grants); off: only accounts
    # an operator made (run.py user add) may sign in, matched by login.
    provision: bool = False
    ca_file: str | None = None          # the provider's CA, if not a public one
    timeout: float = 10.0


class Accounts(_Part):
    """People's accounts (issue 16): sessions and sign-in throttling."""

    session_idle_minutes: float = Field(default=30.0, gt=0)
    session_absolute_hours: float = Field(default=12.0, gt=0)
    # Wrong passwords for one account within the window lock it until an operator
    # unlocks it (run.py user unlock); from one address, answers are 429 for a while.
    account_failures: int = Field(default=20, ge=1)
    address_failures: int = Field(default=100, ge=1)
    failure_window_minutes: float = Field(default=60.0, gt=0)
    address_lock_minutes: float = Field(default=15.0, gt=0)
    # Agencies' passwords on POST /iso18626 (Basic) and on the FTP drop.
    agency_failures: int = Field(default=20, ge=1)
    agency_lock_minutes: float = Field(default=15.0, gt=0)
    oidc: Oidc = Oidc()


def _secrets_dir() -> str | None:
    path = os.environ.get(SECRETS_DIR_ENV, "secrets")
    return path if os.path.isdir(path) else None


def refuse_renamed(environ: dict[str, str]) -> None:
    """Raise if a setting of the first releases is still set under its old flat name."""
    found = [f"{ENV_PREFIX}{old} is now {ENV_PREFIX}{new}" for old, new in RENAMED.items()
             if f"{ENV_PREFIX}{old}" in environ]
    found += [f"{key} is now {ENV_PREFIX}<DELIVERY|FTP|HTTP|SMTP>__"
              f"{key.removeprefix(ENV_PREFIX + _OLD_DELIVERY)} (see README, Configuration)"
              for key in environ if key.startswith(ENV_PREFIX + _OLD_DELIVERY)
              and not key.startswith(ENV_PREFIX + "DELIVERY" + NESTED)]
    if found:
        raise ValueError("renamed settings: " + "; ".join(sorted(found)))


class Catalogues(_Part):
    """Suppliers' catalogues asked before routing (issue 18, broker/catalogue): an SRU
    searchRetrieve per supplier that has one (`run.py agency catalogue set`)."""

    # The whole check of one new request, all suppliers at once. It runs inside the
    # intake's transaction (row locks held), so it stays small: what has not answered
    # by then counts as "no answer" and routing goes on without it.
    budget_ms: int = Field(default=300, gt=0, le=10_000)
    # How long an answer (available, not available, no record) is reused for the same
    # supplier and identifiers, and how many answers are kept at most.
    cache_seconds: float = Field(default=300.0, ge=0)
    cache_size: int = Field(default=10_000, ge=0)
    # The circuit breaker per catalogue: after this many failures in a row (error,
    # timeout, SRU diagnostic) it is not asked for cooldown_seconds, then asked once.
    breaker_failures: int = Field(default=3, gt=0)
    breaker_cooldown_seconds: float = Field(default=60.0, ge=0)


class Copyright(_Part):
    """Copyright on copies (issue 19, broker/copyright.py): each copy request's declaration
    is kept, and copies are counted per requesting library, journal and calendar year."""

    # Whose declaration categories are accepted: CN (合理使用 CN-FAIR-USE, ...), US (CONTU
    # guidelines US-CCG, copyright law US-CCL), UK (UK-S42A) or AU (AU-S50, AU-S49); the
    # lists are data in broker/copyright.py. `categories`, if given, replaces the
    # country's codes; `vocabulary_file` (TOML: [categories] CODE = "what it means")
    # replaces both, for a consortium with its own list.
    country: str = "CN"
    categories: list[str] = []
    vocabulary_file: str | None = None
    # Declarations are kept this long (the British Library keeps them six years), then
    # the daily purge deletes them.
    keep_years: int = Field(default=6, ge=1, le=100)
    # The defaults of a policy `copyright` action that leaves them out: copies allowed per
    # library, journal and year, and which issues count (published in the last N years).
    limit: int = Field(default=5, ge=0)
    recent_years: int = Field(default=5, ge=1, le=100)
    # What applies to a copy request no policy `copyright` rule matches: "off" (the
    # declaration is only recorded and counted), "flag" (an undeclared request and a
    # copy past the limit are flagged), "hold" (past the limit: RetryPossible, flagged).
    # Routing to a pay-per-view supplier needs a policy rule (it names the supplier).
    default_action: Literal["off", "flag", "hold"] = "off"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter=NESTED,
        env_file=".env",
        env_file_encoding="utf-8",
        # A .env file may hold other tools' variables too; the groups themselves forbid
        # unknown keys (ILLHUB_SMTP__HOTS is an error), and __init__ refuses unknown names.
        extra="ignore",
        frozen=True,
    )

    hub_symbol: str = "ILLHUB:CENTRE"
    timezone: str = "Asia/Shanghai"
    currency: str = "CNY"
    # Where the hub keeps files: document store, FTP homes, statements, mail folder.
    data_dir: str = "var"
    # "json": one JSON object per log line, with the hub transaction id (for log shippers).
    log_format: Literal["text", "json"] = "text"
    # A second open request from the same patron for the same item: refuse it with an
    # error confirmation, or accept it and flag it in the audit log.
    duplicate_requests: Literal["refuse", "accept"] = "refuse"

    amqp: Amqp = Amqp()
    intake: Intake = Intake()
    outbox: Outbox = Outbox()
    database: Database = Database()
    http: Http = Http()
    ftp: Ftp = Ftp()
    smtp: Smtp = Smtp()
    delivery: Delivery = Delivery()
    deadlines: Deadlines = Deadlines()
    loans: Loans = Loans()
    settlement: Settlement = Settlement()
    payments: Payments = Payments()
    operators: Operators = Operators()
    accounts: Accounts = Accounts()
    catalogues: Catalogues = Catalogues()
    copyright: Copyright = Copyright()

    def __init__(self, **values: Any) -> None:
        # In code a setting named wrongly (or by its flat name of an earlier release)
        # would otherwise be ignored, and the default used without a word.
        unknown = sorted(k for k in values
                         if k not in type(self).model_fields and not k.startswith("_"))
        if unknown:
            raise TypeError(f"Settings has no {', '.join(unknown)}; pass a group as a dict "
                            "(amqp={'url': ...}) or use Settings().updated(amqp__url=...)")
        super().__init__(**values)

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any,
                                   env_settings: Any, dotenv_settings: Any,
                                   file_secret_settings: Any) -> tuple[Any, ...]:
        refuse_renamed(dict(os.environ))
        secrets_dir = _secrets_dir()
        sources = [init_settings, env_settings, dotenv_settings]
        if secrets_dir:
            sources.append(NestedSecretsSettingsSource(settings_cls, secrets_dir=secrets_dir,
                                                 env_prefix="",
                                                 secrets_nested_delimiter=NESTED))
        return tuple(sources)

    def name(self, base: str) -> str:
        """An exchange or queue name with the configured prefix (ARCHITECTURE §3.2)."""
        return f"{self.amqp.name_prefix}{base}"

    @cached_property
    def vhost(self) -> str:
        path = urlsplit(self.amqp.url.get_secret_value()).path
        return unquote(path[1:]) if len(path) > 1 else "/"

    @property
    def database_url(self) -> str:
        """The PostgreSQL URL every connection uses; with `database.tls` verify-full it
        carries asyncpg's sslmode, sslrootcert, sslcert and sslkey (so the CLI, the
        hub's pools and its listeners all verify the server alike)."""
        url = self.database.url.get_secret_value()
        d = self.database
        if d.tls == "off":
            return url
        return _with_params(url, {"sslmode": "verify-full", "sslrootcert": d.ca_file,
                                  "sslcert": d.client_cert, "sslkey": d.client_key})

    @property
    def amqp_broker_url(self) -> str:
        """The hub's broker URL; an amqps:// one carries the CA and client certificate
        files as aiormq reads them (cafile, certfile, keyfile)."""
        return self._amqp_tls(self.amqp.url.get_secret_value())

    def _amqp_tls(self, url: str) -> str:
        if not url.startswith("amqps://"):
            return url
        a = self.amqp
        return _with_params(url, {"cafile": a.ca_file, "certfile": a.client_cert,
                                  "keyfile": a.client_key})

    @property
    def public_base_url(self) -> str:
        """What readers' download links start with."""
        if self.http.public_base_url:
            return self.http.public_base_url.rstrip("/")
        scheme = "https" if self.http.tls_cert else "http"
        return f"{scheme}://{self.http.host}:{self.http.port}"

    def amqp_url_for(self, user: str, password: str) -> str:
        """The hub's broker URL with another user's credentials (for agencies and tests)."""
        parts = urlsplit(self.amqp.url.get_secret_value())
        host = parts.hostname or "127.0.0.1"
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        if parts.port:
            netloc += f":{parts.port}"
        return self._amqp_tls(
            urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")))

    def updated(self, **changes: Any) -> Settings:
        """A copy with some settings changed, each named as in the environment without
        the prefix: `settings.updated(amqp__name_prefix="t1.", smtp__port=2525)`."""
        data = self.model_dump()
        for key, value in changes.items():
            *parents, leaf = key.split(NESTED)
            node = data
            for part in parents:
                if part not in node or not isinstance(node[part], dict):
                    raise KeyError(f"no settings group {part!r} (in {key!r})")
                node = node[part]
            if leaf not in node:
                raise KeyError(f"no setting {key!r}")
            node[leaf] = value
        return type(self).model_validate(_revealed(data))

    def environment(self) -> dict[str, str]:
        """These settings as ILLHUB_* variables, for a child process (`run.py hub`)."""
        out: dict[str, str] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}{NESTED}{k.upper()}" if prefix else k.upper(), v)
            elif value is not None:
                out[ENV_PREFIX + prefix] = _env_value(value)

        walk("", _revealed(self.model_dump()))
        return out

    def masked(self) -> dict[str, Any]:
        """Every setting for display; secrets and URL passwords are never shown."""
        def mask(value: Any) -> Any:
            if isinstance(value, dict):
                return {k: mask(v) for k, v in value.items()}
            if isinstance(value, SecretStr):
                raw = value.get_secret_value()
                return mask_url(raw) if "://" in raw else "**********"
            return value
        return {k: mask(v) for k, v in self.model_dump(mode="python").items()}


def _revealed(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _revealed(v) for k, v in value.items()}
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    return value


def _env_value(value: Any) -> str:
    if isinstance(value, list):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def mask_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":****@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
