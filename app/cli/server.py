"""`run.py hub | migrate | topology | config | schemas`: running and setting up a hub."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from app.cli.commands import Command, fail
from app.hub import Hub
from broker.agencies import enabled_symbols
from broker.shards import declare_hub_topology
from infra.database import create_pool
from infra.migrations import MigrationError, migrate
from schemas.export import write_schemas
from schemas.settings import Settings


async def hub(settings: Settings, args: argparse.Namespace) -> int:
    await Hub(settings).run_forever()
    return 0


async def migrate_database(settings: Settings, args: argparse.Namespace) -> int:
    try:
        applied = await migrate(settings.database_url)
    except MigrationError as exc:
        return fail(str(exc))
    print(f"database up to date ({len(applied)} migration(s) applied now)")
    return 0


async def topology(settings: Settings, args: argparse.Namespace) -> int:
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        agencies = await enabled_symbols(pool)
        generation = await declare_hub_topology(settings, pool, agencies)
    finally:
        await pool.close()
    print(f"topology declared in vhost {settings.vhost!r} with prefix "
          f"{settings.amqp.name_prefix!r} ({len(agencies)} agency queues, intake generation "
          f"{generation.number} with {generation.shards} shard(s))")
    return 0


async def config(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(settings.masked(), indent=2, ensure_ascii=False, default=str))
    return 0


async def schemas(settings: Settings, args: argparse.Namespace) -> int:
    for path in write_schemas(Path(args.directory), settings):
        print(path)
    return 0


def _schemas_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory")


COMMANDS = [
    Command("hub", "run a hub process (intake, outbox relay, scheduled jobs)", hub, fast=True),
    Command("migrate", "apply missing database migrations (safe to repeat)", migrate_database),
    Command("topology", "declare exchanges and queues in RabbitMQ (safe to repeat)", topology),
    Command("config", "print every setting in effect (secrets masked)", config),
    Command("schemas", "write JSON Schemas and the AsyncAPI document of the contract",
            schemas, _schemas_arguments),
]
