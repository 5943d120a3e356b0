"""Telling both libraries of a settlement matter (issue 17's disputes, issue 19's claims):
one message each on `ill.finance` (`<kind>.<symbol>`) and the same bilingual mail to each
finance contact, in the caller's transaction."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from infra.database import Connection
from infra.mailqueue import enqueue_mail
from infra.outbox import Outgoing, enqueue
from schemas.wire import FINANCE

SELECT_FINANCE_EMAILS = ("SELECT symbol, finance_email FROM agency "
                         "WHERE symbol = ANY($1::text[])")


async def tell_both(conn: Connection, *, kind: str, state: str, sides: Sequence[str],
                    payload: dict[str, Any], ident: int, correlation_id: str,
                    headers: dict[str, Any], mail: tuple[str, str],
                    transaction_id: str | None = None) -> None:
    """`payload` goes out as `{"kind": kind, "state": state, kind: payload}` to each side,
    with a message id `<kind>:<ident>:<state>:<symbol>` (a repeat is the same message);
    `mail` is (subject, text)."""
    body = {"kind": kind, "state": state, kind: payload}
    await enqueue(conn, [Outgoing(exchange=FINANCE, routing_key=f"{kind}.{symbol}", body=body,
                                  message_type=kind, correlation_id=correlation_id,
                                  message_id=f"{kind}:{ident}:{state}:{symbol}",
                                  headers={"agency": symbol, **headers})
                         for symbol in sides])
    subject, text = mail
    for r in await conn.fetch(SELECT_FINANCE_EMAILS, list(sides)):
        if r["finance_email"]:
            await enqueue_mail(conn, r["finance_email"], subject, text, kind=kind,
                               transaction_id=transaction_id)
