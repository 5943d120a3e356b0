"""Who may log in to the suppliers' FTP drop (delivery/ftp.py): an agency's symbol and
its password (the broker's), for enabled suppliers only, with the failed-login
throttle shared with POST /iso18626 and people's sign-in (infra/throttle.py).

A wrong password counts against the agency (`accounts.agency_failures`) and the client
address (`accounts.address_failures`); while either is locked every login is refused
with 530 THROTTLED, the right password too, so a guesser learns nothing; a login clears
the agency's counter. Unknown symbols count against the address only (no counter rows
for names that are no agency) and cost the same scrypt time as known ones.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aioftp
import asyncpg

from delivery.paths import home_of
from infra import throttle
from infra.credentials import hash_password, verify_password
from infra.throttle import KeyKind
from schemas.settings import Settings

log = logging.getLogger("delivery.ftp")

THROTTLED = "too many failed logins, try later"
_PASSWORD_REQUIRED = aioftp.AbstractUserManager.GetUserResponse.PASSWORD_REQUIRED


class SupplierLogins(aioftp.AbstractUserManager):
    """Agency symbol and password, checked against `agency` (module docstring)."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool) -> None:
        super().__init__()
        self.settings = settings
        self.pool = pool
        self.sessions: Counter[str] = Counter()
        self._counted: set[int] = set()
        self._dummy_hash: str | None = None

    async def get_user(self, login: str) -> tuple[Any, aioftp.User | None, str]:
        # Always ask for a password: the answer must not reveal which symbols exist.
        user = aioftp.User(
            login=login,
            base_path=home_of(self.settings, login),
            home_path="/",
            permissions=[aioftp.Permission("/", readable=True, writable=True)],
        )
        return _PASSWORD_REQUIRED, user, "password required"

    async def authenticate(self, user: aioftp.User, password: str) -> bool:
        return await self.log_in(user, password, "unknown") is None

    async def log_in(self, user: aioftp.User, password: str, address: str) -> str | None:
        """None when the login is accepted; else the 530 answer's text."""
        agency = throttle.key(KeyKind.AGENCY, user.login or "")
        client = throttle.key(KeyKind.ADDRESS, address)
        now = datetime.now(UTC)
        async with self.pool.acquire() as conn:
            locked = await throttle.first_lock(conn, (agency, client), now)
        verdict = "locked" if locked else await self._check(user, password)
        async with self.pool.acquire() as conn:
            if verdict == "ok":
                await throttle.succeed(conn, agency)
                return None
            # A wrong password counts, nothing else; no counters for symbols that are no
            # agency.
            if verdict in ("wrong", "unknown"):
                await throttle.fail(conn, client, now,
                                    throttle.limits(self.settings, KeyKind.ADDRESS))
            if verdict == "wrong":
                await throttle.fail(conn, agency, now,
                                    throttle.limits(self.settings, KeyKind.AGENCY))
        await asyncio.sleep(self.settings.ftp.login_failure_delay)
        return THROTTLED if locked else "wrong password"

    async def _check(self, user: aioftp.User, password: str) -> str:
        """ok, wrong (password), unknown (symbol), or refused (disabled, no supplier,
        too many sessions)."""
        login = user.login or ""
        row = await self.pool.fetchrow(
            "SELECT password_hash, enabled, 'supplier' = ANY(roles) AS supplier "
            "FROM agency WHERE symbol = $1", login)
        if row is None:
            # Same scrypt cost for unknown symbols, so timing does not tell them apart.
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(hash_password,
                                                           secrets.token_urlsafe(16))
            stored = self._dummy_hash
        else:
            stored = row["password_hash"]
        matches = await asyncio.to_thread(verify_password, password, stored)
        ok = matches and row is not None and row["enabled"] and row["supplier"]
        if ok and self.sessions[login] >= self.settings.ftp.max_connections_per_supplier:
            log.warning("FTP login for %s refused: %d sessions already open",
                        login, self.sessions[login])
            return "refused"
        if not ok:
            log.info("FTP login refused for %r", login[:64])
            return "unknown" if row is None else "refused" if matches else "wrong"
        await asyncio.to_thread(user.base_path.mkdir, mode=0o750, parents=True, exist_ok=True)
        self.sessions[login] += 1
        self._counted.add(id(user))
        log.info("FTP login: %s", login)
        return "ok"

    async def notify_logout(self, user: aioftp.User) -> None:
        if id(user) in self._counted:
            self._counted.discard(id(user))
            self.sessions[user.login or ""] -= 1
