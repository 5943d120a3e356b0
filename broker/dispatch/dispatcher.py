"""The intake handler of dispatch: routes each message by its kind."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import asyncpg

from broker.dispatch import deadlines
from broker.dispatch.desk import Desk, utcnow
from broker.dispatch.requester import from_requester
from broker.dispatch.requests import new_request
from broker.dispatch.supplier import from_supplier
from broker.intake import Context, Outcome
from infra.database import Connection
from schemas.iso18626_codes import MessageType
from schemas.settings import Settings


class Dispatcher:
    """The intake handler for request, supplyingAgencyMessage and requestingAgencyMessage."""

    # new_request reads (and locks) but writes nothing before its last Refusal, so intake
    # can skip the savepoint around it. Keep it that way when changing new_request.
    refuses_before_writing = frozenset({MessageType.REQUEST})

    def __init__(self, settings: Settings, clock: Callable[[], datetime] = utcnow) -> None:
        self.desk = Desk.create(settings, clock)

    @property
    def base_url(self) -> str:
        """Where readers' links point; the hub process sets it once its HTTP server is up."""
        return self.desk.base_url

    @base_url.setter
    def base_url(self, value: str) -> None:
        self.desk.base_url = value

    async def __call__(self, conn: Connection, ctx: Context) -> Outcome:
        if ctx.kind is MessageType.REQUEST:
            return await new_request(self.desk, conn, ctx)
        if ctx.kind is MessageType.SUPPLYING_AGENCY_MESSAGE:
            return await from_supplier(self.desk, conn, ctx)
        return await from_requester(self.desk, conn, ctx)

    async def close(self) -> None:
        """Close what lives as long as the process (the catalogues' HTTP session)."""
        await self.desk.catalogues.close()

    async def sweep_deadlines(self, pool: asyncpg.Pool, now: datetime | None = None,
                              batch: int = 100) -> int:
        """Cancel silent suppliers past their deadline and move on; returns how many."""
        return await deadlines.sweep_deadlines(self.desk, pool, now, batch)
