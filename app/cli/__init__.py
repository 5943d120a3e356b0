"""`run.py`'s commands: one parser, settings built once, errors turned into exit codes."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import asyncpg

from app.cli import (
    audit,
    claims,
    copyright,
    demo,
    deposits,
    disputes,
    finance,
    network,
    payments,
    peer,
    pull_slips,
    routing_lab,
    server,
    tokens,
    users,
)
from app.cli.commands import EXIT_USAGE, Command, fail
from broker.copyright import VocabularyError
from infra.observability import JsonFormatter
from infra.rabbit_admin import ManagementError
from infra.tls import TlsSettingError
from infra.topology import MissingPlugin
from schemas.settings import Settings

# uvloop's run, where it is installed; not on Windows: asyncio's own loop then.
_uvloop_run: Callable[[Coroutine[Any, Any, int]], int] | None
try:
    import uvloop
    _uvloop_run = uvloop.run
except ImportError:
    _uvloop_run = None

# Held at WARNING even with -v: at DEBUG aiormq logs every AMQP frame, message bodies
# (patrons' names and addresses) included; tests/test_security.py holds us to it.
QUIET_LOGGERS = ("aiormq", "aio_pika", "apscheduler")

COMMANDS: list[Command] = [*server.COMMANDS, *network.COMMANDS, *finance.COMMANDS,
                           *demo.COMMANDS, *peer.COMMANDS, *tokens.COMMANDS,
                           *audit.COMMANDS, *users.COMMANDS, *payments.COMMANDS,
                           *disputes.COMMANDS, *deposits.COMMANDS, *routing_lab.COMMANDS,
                           *pull_slips.COMMANDS, *claims.COMMANDS,
                           *copyright.COMMANDS]


def build_parser(commands: Sequence[Command]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.py", description="ILL Hub: interlibrary loan dispatch and settlement centre")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for command in commands:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(p)
    return parser


def configure_logging(settings: Settings, *, verbose: bool) -> None:
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _run(coro: Coroutine[Any, Any, int], *, fast: bool) -> int:
    if fast and _uvloop_run is not None:
        return int(_uvloop_run(coro))
    return asyncio.run(coro)


def _chosen(commands: Sequence[Command], argv: Sequence[str] | None
            ) -> tuple[Command, argparse.Namespace]:
    args = build_parser(commands).parse_args(argv)
    return next(c for c in commands if c.name == args.command), args


async def run_command(settings: Settings, argv: Sequence[str],
                      commands: Sequence[Command] = COMMANDS) -> int:
    """One command in this process and event loop, with these settings (tests, tools)."""
    command, args = _chosen(commands, argv)
    return await command.run(settings, args)


def main(argv: Sequence[str] | None = None, extra: Sequence[Command] = ()) -> int:
    command, args = _chosen([*COMMANDS, *extra], argv)
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's message names the setting
        return fail(f"invalid settings: {exc}", EXIT_USAGE)
    configure_logging(settings, verbose=args.verbose)
    try:
        return _run(command.run(settings, args), fast=command.fast)
    except KeyboardInterrupt:
        return 130
    except TlsSettingError as exc:  # a TLS file or CA that cannot be used: a bad setting
        return fail(str(exc), EXIT_USAGE)
    except VocabularyError as exc:  # the copyright vocabulary file or country: a bad setting
        return fail(str(exc), EXIT_USAGE)
    except MissingPlugin as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot reach a server: {exc}")
    except ManagementError as exc:
        return fail(f"RabbitMQ management API: {exc}")
    except asyncpg.PostgresError as exc:
        return fail(f"database: {exc}")


__all__ = ["COMMANDS", "QUIET_LOGGERS", "build_parser", "main", "run_command"]
