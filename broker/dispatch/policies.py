"""Routing policy versions: load a new one, read the one in force, keep it cached."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime

from broker.dispatch import sql
from broker.policy import Policy
from infra.database import Connection


class PolicyStore:
    """The active routing policy, reloaded when an operator loads a new version."""

    def __init__(self) -> None:
        self.version: int | None = None
        self.policy = Policy.default()

    async def current(self, conn: Connection) -> tuple[Policy, int | None]:
        row = await conn.fetchrow(sql.POLICY_NEWEST)
        if row is None:
            return Policy.default(), None
        if row["version"] != self.version:
            self.policy = Policy.from_dict(json.loads(row["normalised"]))
            self.version = row["version"]
        return self.policy, self.version

    async def at(self, version: int | None,
                 conn: Connection) -> tuple[Policy, int | None]:
        """The policy of a version already read (e.g. with other facts in one query)."""
        if version is None:
            return Policy.default(), None
        if version != self.version:
            text = await conn.fetchval(sql.POLICY_OF_VERSION, version)
            self.policy = Policy.from_dict(json.loads(text))
            self.version = version
        return self.policy, self.version


@dataclass(frozen=True)
class LoadedPolicy:
    version: int
    loaded_at: datetime
    file_name: str | None
    source: str


async def active_policy(conn: Connection) -> LoadedPolicy | None:
    """The policy version in force (the newest), with the text it was loaded from."""
    row = await conn.fetchrow(sql.POLICY_ACTIVE)
    return LoadedPolicy(**dict(row)) if row else None


async def load_policy(conn: Connection, text: str, file_name: str | None) -> int:
    """Validate and store a new policy version; raises PolicyError with the rule and field."""
    policy = Policy.from_toml(text)
    version: int = await conn.fetchval(
        sql.POLICY_INSERT, text, json.dumps(policy.to_dict(), ensure_ascii=False), file_name)
    return version
