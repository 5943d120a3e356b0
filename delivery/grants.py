"""Download grants: a reader's link to one document, limited in downloads and days.

The token has 192 random bits (secrets.token_urlsafe(24), 32 characters). Only
its SHA-256 is stored, so a copy of the database holds no working link; logs
show the first 6 characters at most. The plain token exists only in the Grant
returned by create_grant, long enough to be written into the reader's mail.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

from infra.database import Connection, fetch_one

TOKEN_BYTES = 24
TOKEN_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32}$")
PREFIX_CHARS = 6


def hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode("ascii")).digest()


def token_prefix(token: str) -> str:
    return token[:PREFIX_CHARS]


@dataclass(frozen=True)
class Grant:
    id: int
    token_prefix: str
    document_id: str
    transaction_id: str
    patron_email: str | None
    patron_name: str | None
    max_downloads: int | None      # None: unlimited
    remaining: int | None
    expires_at: datetime
    created_at: datetime
    # Only set on the Grant that create_grant returns; never read back from the database.
    token: str | None = None

    def url(self, base_url: str) -> str:
        if self.token is None:
            raise ValueError("this grant was loaded from the database; its token is not known")
        return f"{base_url.rstrip('/')}/d/{self.token}"

    def __repr__(self) -> str:  # keeps the token out of logs and tracebacks
        return (f"Grant(id={self.id}, token={self.token_prefix}…, document={self.document_id}, "
                f"remaining={self.remaining}, expires_at={self.expires_at.isoformat()})")


_COLUMNS = ("id, token_prefix, document_id, transaction_id, patron_email, patron_name, "
            "max_downloads, remaining, expires_at, created_at")


def _grant(row: asyncpg.Record, token: str | None = None) -> Grant:
    return Grant(id=row["id"], token_prefix=row["token_prefix"],
                 document_id=str(row["document_id"]), transaction_id=row["transaction_id"],
                 patron_email=row["patron_email"], patron_name=row["patron_name"],
                 max_downloads=row["max_downloads"], remaining=row["remaining"],
                 expires_at=row["expires_at"], created_at=row["created_at"], token=token)


async def create_grant(conn: Connection, *, document_id: str, transaction_id: str,
                       patron_email: str | None, patron_name: str | None,
                       downloads: int | None, days: int, now: datetime) -> Grant:
    """A new link for one reader; `downloads` None means unlimited, `days` counts from `now`."""
    if downloads is not None and downloads < 1:
        raise ValueError(f"downloads must be at least 1 (or None for unlimited), not {downloads}")
    if days < 1:
        raise ValueError(f"days must be at least 1, not {days}")
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    row = await fetch_one(
        conn,
        f"""INSERT INTO download_grant (token_hash, token_prefix, document_id, transaction_id,
                                        patron_email, patron_name, max_downloads, remaining,
                                        expires_at, created_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8, $9)
            RETURNING {_COLUMNS}""",
        hash_token(token), token_prefix(token), uuid.UUID(str(document_id)), transaction_id,
        patron_email, patron_name, downloads, now + timedelta(days=days), now)
    return _grant(row, token)


async def load_grant(conn: Connection | asyncpg.Pool, grant_id: int) -> Grant:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM download_grant WHERE id = $1", grant_id)
    if row is None:
        raise LookupError(f"no grant {grant_id}")
    return _grant(row)


async def grants_for(conn: Connection | asyncpg.Pool, transaction_id: str) -> list[Grant]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM download_grant WHERE transaction_id = $1 "
                            "ORDER BY id", transaction_id)
    return [_grant(r) for r in rows]


async def revoke_grant(conn: Connection | asyncpg.Pool, grant_id: int,
                       now: datetime) -> bool:
    """Stop a link at once (a library's request, a wrong recipient)."""
    return bool(await conn.fetchval(
        "UPDATE download_grant SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL "
        "RETURNING true", grant_id, now))
