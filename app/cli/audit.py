"""`run.py audit`: the audit of people's actions, newest first (what /audit shows).

  run.py audit [--login L] [--action PREFIX] [--since DATE] [--limit N] [--json]

`--since` is a consortium-local date (YYYY-MM-DD) or an ISO 8601 instant with a zone;
`--json` prints one JSON object a line (Chinese as is), for scripts.
"""

from __future__ import annotations

import argparse
import json
from datetime import date, datetime, time
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from accounts import audit as people_audit
from accounts.people import AccountError, normal_login
from app.cli.commands import EXIT_USAGE, Command, fail, table
from infra.database import connect
from schemas.settings import Settings

MAX_LIMIT = 100_000


def since_of(text: str | None, tz: str) -> datetime | None:
    """A local date's midnight, or an instant; ValueError says what is expected."""
    if text is None:
        return None
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), ZoneInfo(tz))
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise ValueError(f"--since {text!r}: a date YYYY-MM-DD or an ISO 8601 instant with "
                         "a time zone")
    return at


def _row(r: asyncpg.Record) -> dict[str, Any]:
    return {"id": r["id"], "at": r["at"].isoformat(), "person_id": r["person_id"],
            "login": r["login"], "source": r["source"], "action": r["action"],
            "target": r["target"],
            "before": json.loads(r["before"]) if r["before"] is not None else None,
            "after": json.loads(r["after"]) if r["after"] is not None else None}


def _change(value: Any) -> str:
    return "" if value is None else json.dumps(value, ensure_ascii=False, sort_keys=True)


async def audit(settings: Settings, args: argparse.Namespace) -> int:
    try:
        since = since_of(args.since, settings.timezone)
        login = normal_login(args.login) if args.login is not None else None
    except (ValueError, AccountError) as exc:
        return fail(str(exc), EXIT_USAGE)
    if not 1 <= args.limit <= MAX_LIMIT:
        return fail(f"--limit: from 1 to {MAX_LIMIT}", EXIT_USAGE)
    conn = await connect(settings.database_url)
    try:
        rows = [_row(r) for r in await people_audit.read(
            conn, login=login, action=args.action, since=since, limit=args.limit)]
    finally:
        await conn.close()
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return 0
    zone = ZoneInfo(settings.timezone)
    table(("id", "when", "who", "from", "action", "target", "before", "after"),
          [(r["id"], datetime.fromisoformat(r["at"]).astimezone(zone).strftime(
              "%Y-%m-%d %H:%M:%S"), r["login"], r["source"], r["action"], r["target"],
            _change(r["before"]), _change(r["after"])) for r in rows], right=(0,))
    return 0


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--login", help="only actions of this person (or cli:<user>)")
    p.add_argument("--action", help="only actions starting with this, e.g. person. or "
                                    "token.revoke")
    p.add_argument("--since", help="from this local date YYYY-MM-DD (or ISO instant)")
    p.add_argument("--limit", type=int, default=100, help="at most N rows (default 100)")
    p.add_argument("--json", action="store_true", help="one JSON object a line")


COMMANDS = [Command("audit", "the audit of people's actions, newest first", audit,
                    _arguments)]
