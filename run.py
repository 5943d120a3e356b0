#!/usr/bin/env python3
"""ILL Hub: the one entry point. `python run.py --help` lists the commands."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import asyncpg

from infra.rabbit_admin import ManagementError
from schemas.settings import Settings

EXIT_USAGE = 2
# Held at WARNING even with -v: at DEBUG aiormq logs every AMQP frame, message bodies
# (patrons' names and addresses) included; tests/test_security.py holds us to it.
QUIET_LOGGERS = ("aiormq", "aio_pika", "apscheduler")

Command = Callable[[Settings, argparse.Namespace], Coroutine[Any, Any, int]]


def fail(message: str, code: int = 1) -> int:
    print(f"error: {message}", file=sys.stderr)
    return code


async def cmd_config(settings: Settings, args: argparse.Namespace) -> int:
    print(json.dumps(settings.masked(), indent=2, ensure_ascii=False, default=str))
    return 0


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> int:
    from infra.database import MigrationError, migrate

    try:
        applied = await migrate(settings.database_url.get_secret_value())
    except MigrationError as exc:
        return fail(str(exc))
    print(f"database up to date ({len(applied)} migration(s) applied now)")
    return 0


async def cmd_topology(settings: Settings, args: argparse.Namespace) -> int:
    from infra.database import create_pool
    from infra.topology import declare_all

    pool = await create_pool(settings.database_url.get_secret_value(), max_size=1)
    try:
        agencies = [r["symbol"] for r in await pool.fetch(
            "SELECT symbol FROM agency WHERE enabled")]
    finally:
        await pool.close()
    await declare_all(settings, agencies)
    print(f"topology declared in vhost {settings.vhost!r} with prefix "
          f"{settings.name_prefix!r} ({len(agencies)} agency queues)")
    return 0


async def cmd_schemas(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from schemas.export import write_schemas

    for path in write_schemas(Path(args.directory), settings):
        print(path)
    return 0


async def cmd_hub(settings: Settings, args: argparse.Namespace) -> int:
    from app.hub import Hub

    await Hub(settings).run_forever()
    return 0


async def cmd_agency(settings: Settings, args: argparse.Namespace) -> int:
    from broker import agencies
    from infra.database import create_pool

    pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
    try:
        if args.action == "add":
            province, city = agencies.parse_region(args.region)
            new = agencies.NewAgency(
                symbol=args.symbol, name=args.name,
                roles=tuple(r.strip() for r in args.roles.split(",") if r.strip()),
                password=args.password, province=province, city=city,
                email=args.email, finance_email=args.finance_email,
                iso18626_url=args.iso18626_url, iso18626_version=args.iso18626_version)
            try:
                await agencies.add(settings, pool, new)
            except agencies.AgencyError as exc:
                return fail(str(exc))
            print(f"agency {args.symbol} added: broker user, queue "
                  f"{settings.name('agency.' + args.symbol)}"
                  + (f"; ISO 18626 {args.iso18626_version} XML to {args.iso18626_url}"
                     if args.iso18626_url else ""))
        elif args.action == "disable":
            try:
                await agencies.disable(settings, pool, args.symbol)
            except agencies.AgencyError as exc:
                return fail(str(exc))
            print(f"agency {args.symbol} disabled: broker access revoked, history kept")
        else:
            rows = await agencies.listing(pool)
            for r in rows:
                region = "/".join(x for x in (r["province"], r["city"]) if x) or "-"
                state = "enabled" if r["enabled"] else "DISABLED"
                print(f"{r['symbol']:<24} {state:<8} {','.join(r['roles']):<18} "
                      f"{region:<12} {r['name']}")
            print(f"{len(rows)} agencies")
    finally:
        await pool.close()
    return 0


async def cmd_holdings(settings: Settings, args: argparse.Namespace) -> int:
    from broker.holdings import holdings_import_cli
    from infra.database import migrate

    await migrate(settings.database_url.get_secret_value(), report=lambda _m: None)
    return await holdings_import_cli(settings.database_url.get_secret_value(), args.file,
                                     args.replace)


async def cmd_policy(settings: Settings, args: argparse.Namespace) -> int:
    from pathlib import Path

    from broker.dispatch import PolicyError, load_policy
    from infra.database import connect
    from settlement.common import read_input

    conn = await connect(settings.database_url.get_secret_value())
    try:
        if args.action == "load":
            try:
                text = read_input(args.file)
            except ValueError as exc:
                return fail(str(exc))
            try:
                version = await load_policy(conn, text, Path(args.file).name)
            except PolicyError as exc:
                return fail(f"{args.file}: {exc}")
            print(f"policy version {version} loaded from {args.file}; hubs use it from their "
                  "next request")
        else:
            row = await conn.fetchrow(
                "SELECT version, loaded_at, file_name, source FROM policy_version "
                "ORDER BY version DESC LIMIT 1")
            if row is None:
                print("no policy loaded: routing uses holdings, tiers and scorecards only")
            else:
                print(f"# policy version {row['version']} ({row['file_name']}), loaded "
                      f"{row['loaded_at']:%Y-%m-%d %H:%M:%S %Z}")
                print(row["source"])
    finally:
        await conn.close()
    return 0


async def cmd_explain(settings: Settings, args: argparse.Namespace) -> int:
    from broker.dispatch import explain
    from infra.database import connect

    conn = await connect(settings.database_url.get_secret_value())
    try:
        for line in await explain(conn, args.transaction):
            print(line)
    except LookupError as exc:
        return fail(str(exc))
    finally:
        await conn.close()
    return 0


async def cmd_dead(settings: Settings, args: argparse.Namespace) -> int:
    from broker import deadletters
    from broker.dispatch import Dispatcher
    from broker.intake import Intake
    from infra.database import create_pool

    pool = await create_pool(settings.database_url.get_secret_value(), max_size=2)
    try:
        if args.action == "list":
            rows = await deadletters.listing(pool, limit=args.limit, include_replayed=args.all)
            for r in reversed(rows):
                state = f"replayed {r['replayed_at']:%Y-%m-%d %H:%M}" if r["replayed_at"] else ""
                print(f"{r['id']:>6}  {r['received_at']:%Y-%m-%d %H:%M:%S}  "
                      f"{r['sender'] or '(no sender)':<20} {r['routing_key'] or '-':<24} "
                      f"{r['size']:>7} B  {r['reason']}  {state}")
            print(f"{len(rows)} dead letter(s) shown")
        else:
            try:
                outcome = await deadletters.replay(pool, Intake(settings, Dispatcher(settings)),
                                                   args.id)
            except LookupError as exc:
                return fail(str(exc))
            print(f"dead letter {args.id} replayed: {outcome}")
            return 0 if outcome in ("ok", "duplicate") else 1
    finally:
        await pool.close()
    return 0


async def cmd_fees(settings: Settings, args: argparse.Namespace) -> int:
    from settlement.fees import fees_load_cli

    return await fees_load_cli(settings.database_url.get_secret_value(), args.file)


async def cmd_subsidy(settings: Settings, args: argparse.Namespace) -> int:
    from settlement.subsidy import subsidy_load_cli

    return await subsidy_load_cli(settings.database_url.get_secret_value(), args.file)


async def cmd_budgets(settings: Settings, args: argparse.Namespace) -> int:
    from settlement.subsidy import budgets_cli

    return await budgets_cli(settings.database_url.get_secret_value(), args.period,
                             tz=settings.timezone)


async def cmd_ledger(settings: Settings, args: argparse.Namespace) -> int:
    from settlement import ledger

    url = settings.database_url.get_secret_value()
    if args.action == "check":
        return await ledger.ledger_check_cli(url)
    if args.action == "show":
        return await ledger.ledger_show_cli(url, args.symbol, args.date_from, args.date_to)
    from datetime import UTC, datetime

    from infra.database import connect

    conn = await connect(url)
    try:
        async with conn.transaction():
            done = await ledger.reverse_transaction(conn, transaction_id=args.transaction,
                                                    reason=args.reason, on=datetime.now(UTC))
    finally:
        await conn.close()
    if not done:
        return fail(f"nothing to reverse: transaction {args.transaction} has no charges")
    if all(p.duplicate for p in done):
        return fail(f"nothing to reverse: the charges of {args.transaction} were reversed "
                    "already")
    from settlement.common import signed

    for posting in done:
        print(f"reversed {posting.event}: {signed(posting.fee)} {posting.fee.currency} "
              f"({args.reason})")
    return 0


async def cmd_flags(settings: Settings, args: argparse.Namespace) -> int:
    from broker import violations
    from infra.database import create_pool

    if args.kind and args.kind not in violations.KINDS:
        return fail(f"--kind must be one of {', '.join(violations.KINDS)}", EXIT_USAGE)
    pool = await create_pool(settings.database_url.get_secret_value(), max_size=1)
    try:
        rows = await violations.listing(pool, kind=args.kind, limit=args.limit)
    finally:
        await pool.close()
    for r in reversed(rows):
        print(f"{r['raised_at']:%Y-%m-%d %H:%M}  {r['kind']:<24} {r['subject']:<20} "
              f"{r['transaction_id'] or '-':<26} {r['detail']}")
    print(f"{len(rows)} flag(s)")
    return 0


async def cmd_settle(settings: Settings, args: argparse.Namespace) -> int:
    from settlement.settle import settle_cli

    return await settle_cli(settings, args.period, args.dry_run,
                            centre_email=settings.centre_finance_email)


# --- demo (broker/demo.py) ----------------------------------------------------------------

async def cmd_demo(settings: Settings, args: argparse.Namespace) -> int:
    from sim.demo import demo_cli

    return await demo_cli(settings, args)


async def cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from bench.__main__ import main as bench_main

    return await bench_main(args)


async def cmd_chaos(settings: Settings, args: argparse.Namespace) -> int:
    from bench.chaos import chaos_cli

    return await chaos_cli(settings, args)


async def cmd_fuzz(settings: Settings, args: argparse.Namespace) -> int:
    from bench.fuzz import main as fuzz_main

    return await fuzz_main(args, settings)


# ------------------------------------------------------------------------------------------


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Command]]:
    parser = argparse.ArgumentParser(
        prog="run.py", description="ILL Hub: interlibrary loan dispatch and settlement centre")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands: dict[str, Command] = {}

    def add(name: str, fn: Command, help_text: str) -> argparse.ArgumentParser:
        commands[name] = fn
        return sub.add_parser(name, help=help_text, description=help_text)

    add("hub", cmd_hub, "run a hub process (intake, outbox relay, scheduled jobs)")
    add("migrate", cmd_migrate, "apply missing database migrations (safe to repeat)")
    add("topology", cmd_topology, "declare exchanges and queues in RabbitMQ (safe to repeat)")
    p = add("agency", cmd_agency, "register, list and disable agencies")
    asub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = asub.add_parser("add", help="register an agency and create its broker user and queue")
    a.add_argument("symbol", help="SCHEME:VALUE, e.g. CALIS:100010")
    a.add_argument("--name", required=True)
    a.add_argument("--roles", required=True, help="requester,supplier")
    a.add_argument("--region", help="PROVINCE/CITY, e.g. 上海/上海")
    a.add_argument("--email")
    a.add_argument("--finance-email")
    a.add_argument("--password", required=True,
                   help="broker, FTP and ISO 18626 HTTP (Basic) password")
    a.add_argument("--iso18626-url", metavar="URL",
                   help="the agency's ILL system takes ISO 18626 XML over HTTP at URL: the "
                        "hub POSTs its messages there instead of to its AMQP queue")
    a.add_argument("--iso18626-version", choices=("1.2", "2021"), default="1.2",
                   help="ISO 18626 schema version to send to --iso18626-url (default 1.2)")
    asub.add_parser("list", help="list agencies")
    d = asub.add_parser("disable", help="revoke an agency's broker access, keep its history")
    d.add_argument("symbol")
    p = add("schemas", cmd_schemas, "write JSON Schemas and the AsyncAPI document of the contract")
    p.add_argument("directory")
    p = add("holdings", cmd_holdings, "load suppliers' holdings (CSV: symbol,id_type,id_value)")
    hsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    h = hsub.add_parser("import", help="import a holdings CSV (merge by default)")
    h.add_argument("file")
    h.add_argument("--replace", action="store_true",
                   help="replace all holdings of the symbols in the file")
    p = add("policy", cmd_policy, "load and show the routing (and subsidy) policy")
    psub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    pl = psub.add_parser("load", help="validate a TOML policy file and make it the active version")
    pl.add_argument("file")
    psub.add_parser("show", help="print the active policy version")
    p = add("explain", cmd_explain, "print a transaction's rota, reasons and audit trail")
    p.add_argument("transaction", help="hub transaction id, e.g. ILL-20261124-3F9A2C7B01")
    p = add("dead", cmd_dead, "list dead letters and replay one after a fix")
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = dsub.add_parser("list", help="list dead letters, newest last")
    dl.add_argument("--limit", type=int, default=50)
    dl.add_argument("--all", action="store_true", help="include replayed ones")
    dr = dsub.add_parser("replay", help="process a dead letter again through intake")
    dr.add_argument("id", type=int)
    p = add("fees", cmd_fees, "load suppliers' fee schedules")
    fsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    fsub.add_parser("load", help="validate and load a fee file (TOML; docs/fees.example.toml)"
                    ).add_argument("file")
    p = add("subsidy", cmd_subsidy, "load subsidy rules and budgets")
    ssub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ssub.add_parser("load", help="validate and load a subsidy file "
                    "(docs/subsidy.example.toml)").add_argument("file")
    p = add("budgets", cmd_budgets, "show subsidy budgets: limit, spent, remaining")
    p.add_argument("--period", help="YYYY-MM (default: the current month)")
    p = add("ledger", cmd_ledger, "check, show and correct the ledger")
    lsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    lsub.add_parser("check", help="verify the ledger's invariants (exit 1 on any problem)")
    ls = lsub.add_parser("show", help="an agency's entries and balance (CENTRE for the centre)")
    ls.add_argument("symbol")
    ls.add_argument("--from", dest="date_from", help="YYYY-MM-DD")
    ls.add_argument("--to", dest="date_to", help="YYYY-MM-DD")
    lr = lsub.add_parser("reverse", help="refund a transaction's charges with reversing entries")
    lr.add_argument("transaction")
    lr.add_argument("--reason", required=True)
    p = add("flags", cmd_flags, "list violation and quality flags, newest last")
    p.add_argument("--kind", help="charge_above_schedule, deadline_breaches, "
                   "copy_without_valid_file, loan_overdue, cancellation_rate or "
                   "peer_error")
    p.add_argument("--limit", type=int, default=100)
    p = add("settle", cmd_settle, "net a period's charges: one amount per agency, statements, "
            "finance messages and mails")
    p.add_argument("--period", required=True, help="YYYY-MM, or 'current' (with --dry-run: "
                   "what the open period would settle to now)")
    p.add_argument("--dry-run", action="store_true", help="compute and show, write nothing")
    add("config", cmd_config, "print the effective settings (secrets masked)")
    # --- demo ------------------------------------------------------------------------------
    p = add("demo", cmd_demo, "run a simulated ILL network around a real hub and summarise it")
    p.add_argument("--requests", type=int, help="requests to simulate (default 200)")
    p.add_argument("--speed", type=float,
                   help="simulated seconds per real second (default 21600: 6 h a second)")
    p.add_argument("--days", type=float,
                   help="simulated days over which the requests arrive (default 12)")
    p.add_argument("--seed", type=int, help="seed of the network and the requests")
    p.add_argument("--requesters", type=int, help="requesting libraries (default: all 60)")
    p.add_argument("--suppliers", type=int, help="suppliers (default: all 20)")
    p.add_argument("--keep", action="store_true",
                   help="keep the database and broker queues afterwards, for run.py explain")
    p.add_argument("--smtp", action="store_true",
                   help="send mail to the configured SMTP server instead of the demo's folder")
    p.add_argument("--database", help="the demo's own database (default illhub_demo)")
    p.add_argument("--prefix", help="the demo's own broker name prefix (default demo.)")
    p.add_argument("--symbol-tag", help="prefix agency symbols with TAG. (two demos on one "
                   "RabbitMQ)")
    p.add_argument("--timeout", type=float,
                   help="seconds to wait for the last requests after the arrivals")
    # --- bench (bench/__main__.py) -------------------------------------------------------------
    p = add("bench", cmd_bench, "the benchmark suite: baseline, hub throughput and latency, a "
            "CALIS year, holdings import, settlement; prints a table, writes JSON")
    from bench.options import add_arguments as bench_arguments

    bench_arguments(p)
    # --- chaos (bench/chaos.py) ----------------------------------------------------------------
    p = add("chaos", cmd_chaos, "fault injection: several hubs, SIGKILLs, broker, database and "
            "SMTP outages while requests flow; checks that nothing is lost or done twice")
    from bench.chaos_options import add_arguments as chaos_arguments

    chaos_arguments(p)
    # --- fuzz (bench/fuzz.py; needs the test extra: hypothesis) ------------------------------
    p = add("fuzz", cmd_fuzz, "hostile-input fuzzer: hostile messages as a real agency user "
            "against a hub on a scratch database; prints counts by category and outcome")
    p.add_argument("--messages", type=int, default=10_000, help="cases to send")
    p.add_argument("--seed", type=int, default=18626, help="hypothesis seed")
    # ----------------------------------------------------------------------------------------
    return parser, commands


def _run(coro: Any, *, fast: bool) -> int:
    """asyncio.run, on uvloop for the hub process where it is installed (less CPU per
    message: bench/ measures it)."""
    if fast:
        try:
            import uvloop
        except ImportError:
            pass
        else:
            return uvloop.run(coro)
    return asyncio.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser, commands = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = Settings()
    except Exception as exc:  # pydantic's message names the setting
        return fail(f"invalid settings: {exc}", EXIT_USAGE)
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        from infra.observability import JsonFormatter

        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        handlers=[handler])
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        return _run(commands[args.command](settings, args),
                    fast=args.command in ("hub", "bench"))
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        return fail(f"cannot reach a server: {exc}")
    except ManagementError as exc:
        return fail(f"RabbitMQ management API: {exc}")
    except asyncpg.PostgresError as exc:
        return fail(f"database: {exc}")


if __name__ == "__main__":
    sys.exit(main())
