"""`run.py token create | list | revoke`: API tokens for library systems and finance tools.

A token acts for one person (their grants decide which agencies it reaches) within its
scopes. `create` prints it once, on stdout; it is stored as SHA-256 only, so a lost
token is revoked and a new one made. Making and revoking are audited (who ran the
command, as `cli:<user>`), never with the token.
"""

from __future__ import annotations

import argparse
import getpass
from datetime import UTC, datetime

from accounts import people, tokens
from accounts.audit import Actor
from accounts.people import AccountError
from accounts.tokens import TokenError
from app.cli.commands import EXIT_USAGE, Command, fail, table
from infra.database import Connection, connect
from schemas.settings import Settings


def actor() -> Actor:
    return Actor.cli(getpass.getuser())


def _when(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else "-"


async def token(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        if args.action == "create":
            return await _create(conn, args)
        if args.action == "list":
            return await _list(conn, args.login)
        return await _revoke(conn, args.id)
    except (AccountError, TokenError) as exc:
        return fail(str(exc))
    finally:
        await conn.close()


async def _create(conn: Connection, args: argparse.Namespace) -> int:
    try:
        scopes = tokens.parse_scopes(args.scope)
    except TokenError as exc:
        return fail(str(exc), EXIT_USAGE)
    person = await people.find(conn, args.login)
    if person is None:
        return fail(f"there is no account {args.login!r} (run.py user list)")
    made = await tokens.create(conn, actor(), person, label=args.label, scopes=scopes,
                               now=datetime.now(UTC), days=args.days)
    print(made.token)
    print(f"token {made.id} for {person.login} ({', '.join(sorted(scopes))}), "
          f"{'expires ' + _when(made.expires_at) if made.expires_at else 'no expiry'}. "
          "Keep it now: it is not shown again.", flush=True)
    return 0


async def _list(conn: Connection, login: str | None) -> int:
    person = None
    if login is not None:
        person = await people.find(conn, login)
        if person is None:
            return fail(f"there is no account {login!r} (run.py user list)")
    rows = await tokens.listing(conn, person)
    now = datetime.now(UTC)
    table(("id", "login", "label", "scopes", "state", "created", "expires", "last used"),
          [(t.id, t.login, t.label, ",".join(t.scopes), t.state(now), _when(t.created_at),
            _when(t.expires_at), _when(t.last_used_at)) for t in rows], right=(0,))
    return 0


async def _revoke(conn: Connection, token_id: int) -> int:
    info = await tokens.revoke(conn, actor(), token_id, datetime.now(UTC))
    print(f"token {token_id} of {info.login} ({info.label}) revoked; it opens nothing "
          "from now on")
    return 0


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = sub.add_parser("create", help="make a token for a person; printed once")
    c.add_argument("login")
    c.add_argument("--label", required=True, help="what uses it, e.g. 'ILLiad sync'")
    c.add_argument("--scope", required=True,
                   help="comma-separated: " + ", ".join(s.value for s in tokens.Scope))
    c.add_argument("--days", type=int, help="expires after N days (default: never)")
    ls = sub.add_parser("list", help="tokens (never the tokens themselves)")
    ls.add_argument("login", nargs="?", help="only this person's")
    r = sub.add_parser("revoke", help="revoke a token by its id (token list)")
    r.add_argument("id", type=int)


COMMANDS = [Command("token", "API tokens: create (shown once), list, revoke", token,
                    _arguments)]
