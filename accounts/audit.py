"""The audit of people's actions (table `people_audit`, append-only by trigger).

Who (person and login), when, from where (client address, or `cli` / `oidc`), what
(an action name such as `person.grant` or `transaction.cancel`), on what (`target`),
and the before and after where data changed. Never a password, token or session id.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from infra.database import Connection

INSERT = """INSERT INTO people_audit (person_id, login, source, action, target, before, after)
            VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb)"""
READ = """SELECT id, at, person_id, login, source, action, target, before, after
          FROM people_audit
          WHERE ($1::text IS NULL OR login = $1)
            AND ($2::text IS NULL OR starts_with(action, $2))
            AND ($3::timestamptz IS NULL OR at >= $3)
          ORDER BY id DESC LIMIT $4"""


@dataclass(frozen=True)
class Actor:
    """Who acts: a signed-in person, or the command line (person_id None)."""

    person_id: int | None
    login: str
    source: str

    @classmethod
    def cli(cls, user: str) -> Actor:
        return cls(None, f"cli:{user}", "cli")


def _json(value: dict[str, Any] | None) -> str | None:
    return json.dumps(value, ensure_ascii=False, default=str) if value is not None else None


async def record(conn: Connection, by: Actor, action: str, target: str = "", *,
                 before: dict[str, Any] | None = None,
                 after: dict[str, Any] | None = None) -> None:
    await conn.execute(INSERT, by.person_id, by.login, by.source, action, target,
                       _json(before), _json(after))


async def read(conn: Connection, *, login: str | None = None, action: str | None = None,
               since: datetime | None = None, limit: int = 100) -> list[asyncpg.Record]:
    return list(await conn.fetch(READ, login, action, since, limit))
