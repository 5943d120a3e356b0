"""`run.py user`: people's accounts from the command line (issue 16).

  user add LOGIN --name NAME [--email E] [--password-file F | --password-stdin]
           [--role ROLE [--scope consortium|region:PROVINCE|agency:SYMBOL]]
  user list
  user disable LOGIN | user enable LOGIN
  user grant LOGIN ROLE [SCOPE] | user revoke LOGIN ROLE [SCOPE]
  user password LOGIN (--password-file F | --password-stdin)
  user unlock LOGIN | user unlock --address IP | user unlock --agency SYMBOL
  user signout LOGIN                      (every session: sign out everywhere)

The first operator is made here: `user add ana --name "Ana" --password-stdin --role
operator`. A password is never an argument (it would sit in the shell's history and in
`ps`): it is read from a file or from the first line of standard input. Every change
is in the audit of people's actions as `cli:<OS user>`. Errors: `error: ...` on
stderr, exit 2 for a wrong usage (an unknown role, a malformed scope, no password
source), 1 for a change refused (no such account, a password too short, no such
agency or region).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from datetime import UTC, datetime
from pathlib import Path

from accounts import people
from accounts.audit import Actor, record
from accounts.people import AccountError, Person
from accounts.roles import Grant, GrantError
from accounts.sessions import close_all
from app.cli.commands import EXIT_FAILED, EXIT_USAGE, Command, fail, table
from infra import throttle
from infra.database import Connection, connect
from infra.throttle import KeyKind
from schemas.settings import Settings


class Refused(Exception):
    """A change the accounts refuse (exit 1); the message says why."""


class Usage(Exception):
    """A command given wrongly (exit 2)."""


def _actor() -> Actor:
    return Actor.cli(getpass.getuser())


def _password(args: argparse.Namespace) -> str | None:
    """From --password-file (its first line) or --password-stdin; None if neither."""
    if getattr(args, "password_file", None):
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise Usage(f"cannot read the password file: {exc.strerror}") from None
        return text.splitlines()[0] if text else ""
    if getattr(args, "password_stdin", False):
        return sys.stdin.readline().rstrip("\r\n")
    return None


def _grant(role: str, scope: str | None) -> Grant:
    try:
        return Grant.parse(role, scope)
    except GrantError as exc:
        raise Usage(str(exc)) from None


async def _person(conn: Connection, login: str) -> Person:
    person = await people.find(conn, login)
    if person is None:
        raise Refused(f"no account {login!r} (run.py user list)")
    return person


async def _add(conn: Connection, args: argparse.Namespace) -> None:
    grant = _grant(args.role, args.scope) if args.role else None
    if args.scope and not args.role:
        raise Usage("--scope needs --role")
    password = _password(args)
    async with conn.transaction():  # the account and its first grant, or neither
        person = await people.add(conn, _actor(), login=args.login, display_name=args.name,
                                  email=args.email, password=password)
        if grant is not None:
            await people.grant(conn, _actor(), person, grant)
    print(f"account {person.login} added" + (f": {grant}" if grant else "")
          + ("" if password else " (no password: signs in by OIDC only)"))


async def _list(conn: Connection, args: argparse.Namespace) -> None:
    rows = await people.listing(conn)
    table(("login", "name", "email", "state", "sign-in", "grants"),
          [(r["login"], r["display_name"], r["email"] or "-",
            "enabled" if r["enabled"] else "DISABLED",
            "+".join(m for m, on in (("password", r["has_password"]), ("oidc", r["has_oidc"]))
                     if on) or "-",
            "; ".join(r["grants"]) or "-") for r in rows])


async def _enable(conn: Connection, args: argparse.Namespace) -> None:
    person = await _person(conn, args.login)
    enabled = args.action == "enable"
    await people.set_enabled(conn, _actor(), person, enabled)
    print(f"account {person.login} {'enabled' if enabled else 'disabled'}")


async def _grant_or_revoke(conn: Connection, args: argparse.Namespace) -> None:
    what = _grant(args.role, args.scope)
    person = await _person(conn, args.login)
    if args.action == "grant":
        await people.grant(conn, _actor(), person, what)
        print(f"{person.login}: granted {what}")
    elif await people.revoke(conn, _actor(), person, what):
        print(f"{person.login}: revoked {what}")
    else:
        raise Refused(f"{person.login} does not hold {what}")


async def _set_password(conn: Connection, args: argparse.Namespace) -> None:
    password = _password(args)
    if password is None:
        raise Usage("say where the password comes from: --password-file F or --password-stdin")
    person = await _person(conn, args.login)
    await people.set_password(conn, _actor(), person, password)
    print(f"password of {person.login} set")


async def _unlock(conn: Connection, args: argparse.Namespace) -> None:
    given = [x for x in (args.login, args.address, args.agency) if x]
    if len(given) != 1:
        raise Usage("unlock one thing: LOGIN, --address IP or --agency SYMBOL")
    if args.login:
        person = await _person(conn, args.login)
        which, target = throttle.key(KeyKind.ACCOUNT, person.login), person.login
    elif args.address:
        which = target = throttle.key(KeyKind.ADDRESS, args.address)
    else:
        which = target = throttle.key(KeyKind.AGENCY, args.agency)
    async with conn.transaction():
        cleared = await throttle.unlock(conn, which)
        if cleared:
            await record(conn, _actor(), "throttle.unlock", target)
    print(f"{target}: unlocked, its failed sign-ins forgotten" if cleared
          else f"{target}: was not locked and had no failed sign-ins")


async def _signout(conn: Connection, args: argparse.Namespace) -> None:
    person = await _person(conn, args.login)
    async with conn.transaction():
        closed = await close_all(conn, person.id, datetime.now(UTC))
        await record(conn, _actor(), "person.signout_everywhere", person.login,
                     after={"sessions": closed})
    print(f"{person.login}: {closed} session(s) closed")


ACTIONS = {"add": _add, "list": _list, "disable": _enable, "enable": _enable,
           "grant": _grant_or_revoke, "revoke": _grant_or_revoke,
           "password": _set_password, "unlock": _unlock, "signout": _signout}


async def user(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        await ACTIONS[args.action](conn, args)
    except Usage as exc:
        return fail(str(exc), EXIT_USAGE)
    except (Refused, AccountError) as exc:
        return fail(str(exc), EXIT_FAILED)
    finally:
        await conn.close()
    return 0


def _password_source(p: argparse.ArgumentParser) -> None:
    source = p.add_mutually_exclusive_group()
    source.add_argument("--password-file", metavar="FILE",
                        help="read the password from the first line of FILE")
    source.add_argument("--password-stdin", action="store_true",
                        help="read the password from the first line of standard input")


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    add = sub.add_parser("add", help="a new account (the first operator too)")
    add.add_argument("login")
    add.add_argument("--name", required=True, help="the person's name as pages show it")
    add.add_argument("--email")
    _password_source(add)
    add.add_argument("--role", help="a first grant: operator, regional_admin, finance, "
                                    "library_staff or auditor")
    add.add_argument("--scope", help="consortium (default), region:PROVINCE or agency:SYMBOL")
    sub.add_parser("list", help="every account with its grants")
    for action, text in (("disable", "refuse its sign-ins and end its sessions"),
                         ("enable", "let it sign in again")):
        sub.add_parser(action, help=text).add_argument("login")
    for action, text in (("grant", "give a role over a scope"), ("revoke", "take it away")):
        g = sub.add_parser(action, help=text)
        g.add_argument("login")
        g.add_argument("role")
        g.add_argument("scope", nargs="?",
                       help="consortium (default), region:PROVINCE or agency:SYMBOL")
    pw = sub.add_parser("password", help="set an account's password")
    pw.add_argument("login")
    _password_source(pw)
    un = sub.add_parser("unlock", help="forget failed sign-ins: of an account, an address "
                                       "or an agency (POST /iso18626, FTP)")
    un.add_argument("login", nargs="?")
    un.add_argument("--address", metavar="IP")
    un.add_argument("--agency", metavar="SYMBOL")
    sub.add_parser("signout", help="close every session of the account (sign out "
                                   "everywhere)").add_argument("login")


COMMANDS = [Command("user", "people's accounts: add, list, disable, grant, revoke, unlock",
                    user, _arguments)]
