"""`run.py agency | holdings | policy | explain | dead | flags`: the network and its traffic."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg

from app.cli.commands import EXIT_USAGE, Command, fail
from broker import agencies, borrower_trust, deadletters, holdings_trust, profiles
from broker import agency_addresses as addresses
from broker.catalogue import store as catalogue_store
from broker.catalogue.config import (
    SRU_VERSIONS,
    CatalogueConfig,
    CatalogueError,
    Reader,
    parse_indexes,
)
from broker.dispatch.dispatcher import Dispatcher
from broker.dispatch.explain import explain
from broker.dispatch.policies import active_policy, load_policy
from broker.holdings import HoldingsFileError, import_csv
from broker.intake import Intake, IntakeOutcome
from broker.policy import PolicyError
from infra import flags as flag_store
from infra.database import connect, create_pool
from infra.flags import FlagKind
from infra.migrations import migrate
from schemas.rulefile import read_input
from schemas.settings import Settings

# Rejected holdings lines shown by `holdings import` (the rest are counted).
MAX_REJECTIONS_SHOWN = 20


async def agency(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "profiles":
        print(profiles.markdown() if args.markdown else _profiles_text(), end="")
        return 0
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        if args.action == "catalogue":
            return await _catalogue(pool, args)
        if args.action == "address":
            return await _address(pool, args)
        if args.action == "trust":
            return await _trust(settings, pool, args)
        if args.action in ("add", "set"):
            try:
                ca = agencies.read_ca_pem(args.iso18626_ca) if args.iso18626_ca else None
            except agencies.AgencyError as exc:
                return fail(str(exc), EXIT_USAGE)
        if args.action == "add":
            province, city = agencies.parse_region(args.region)
            new = agencies.NewAgency(
                symbol=args.symbol, name=args.name,
                roles=tuple(r.strip() for r in args.roles.split(",") if r.strip()),
                password=args.password, province=province, city=city,
                email=args.email, finance_email=args.finance_email,
                iso18626_url=args.iso18626_url, iso18626_version=args.iso18626_version,
                iso18626_profile=args.profile, iso18626_ca=ca)
            try:
                await agencies.add(settings, pool, new)
            except agencies.AgencyError as exc:
                return fail(str(exc))
            print(f"agency {args.symbol} added: broker user, queue "
                  f"{settings.name('agency.' + args.symbol)}"
                  + (f"; ISO 18626 {args.iso18626_version} XML to {args.iso18626_url}"
                     if args.iso18626_url else "") + f"; profile {args.profile}"
                  + ("; its own CA trusted for HTTPS" if ca else ""))
        elif args.action == "set":
            try:
                row = await agencies.change(pool, args.symbol, agencies.PeerChange(
                    profile=args.profile, iso18626_url=args.iso18626_url,
                    iso18626_version=args.iso18626_version, iso18626_ca=ca))
            except agencies.AgencyError as exc:
                return fail(str(exc))
            print(f"agency {row['symbol']}: profile {row['iso18626_profile']}"
                  + (f", ISO 18626 {row['iso18626_version']} XML to {row['iso18626_url']}"
                     if row["iso18626_url"] else ", AMQP")
                  + (", its own CA trusted for HTTPS" if row["iso18626_own_ca"] else ""))
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
                transport = f"http/{r['iso18626_version']}" if r["iso18626_url"] else "amqp"
                # "+ca": the peer's https:// certificate is checked against its own CA.
                if r["iso18626_own_ca"]:
                    transport += "+ca"
                print(f"{r['symbol']:<24} {state:<8} {','.join(r['roles']):<18} "
                      f"{transport:<12} {r['iso18626_profile']:<10} {region:<12} {r['name']}")
            print(f"{len(rows)} agencies")
    finally:
        await pool.close()
    return 0


async def _trust(settings: Settings, pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    """Borrower trust scores (broker/borrower_trust.py): one agency's, or every borrower's."""
    today = datetime.now(UTC).astimezone(ZoneInfo(settings.timezone)).date()
    async with pool.acquire() as conn:
        if args.symbol:
            if await conn.fetchval(borrower_trust.AGENCY_EXISTS, args.symbol) is None:
                return fail(f"no agency {args.symbol}", EXIT_USAGE)
            symbols = [args.symbol]
        else:
            symbols = [r["symbol"] for r in await conn.fetch(borrower_trust.BORROWERS)]
        for symbol in symbols:
            history = await borrower_trust.borrower_history(conn, symbol, today)
            score = borrower_trust.trust(history, settings.loans)
            print(f"{symbol:<24} {borrower_trust.describe(history, score)}")
    return 0


async def _catalogue(pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    """`agency catalogue set|show|remove`: the supplier's SRU catalogue, asked before
    routing (broker/catalogue)."""
    if args.what == "show":
        shown = ([c] if (c := await catalogue_store.get(pool, args.symbol)) else []) \
            if args.symbol else await catalogue_store.listing(pool)
        if args.symbol and not shown:
            return fail(f"{args.symbol} has no catalogue")
        for c in shown:
            print(_catalogue_text(c))
        return 0
    if args.what == "remove":
        if not await catalogue_store.remove(pool, args.symbol):
            return fail(f"{args.symbol} has no catalogue")
        print(f"agency {args.symbol}: catalogue removed; routing no longer asks it")
        return 0
    given: dict[str, Any] = {}
    try:
        if args.index:
            given["indexes"] = parse_indexes(args.index)
        if args.available:
            given["available_values"] = tuple(args.available)
        if args.reader:
            given["reader"] = Reader(args.reader)
        for option, name in (("url", "sru_url"), ("sru_version", "sru_version"),
                             ("schema", "record_schema"), ("item_field", "item_field"),
                             ("budget_ms", "budget_ms"), ("enabled", "enabled")):
            if getattr(args, option) is not None:
                given[name] = getattr(args, option)
        old = await catalogue_store.get(pool, args.symbol)
        if old is None and "sru_url" not in given:
            return fail(f"{args.symbol} has no catalogue yet: --url is required", EXIT_USAGE)
        new = (dataclasses.replace(old, **given) if old is not None
               else CatalogueConfig(symbol=args.symbol, **given))
        await catalogue_store.put(pool, new)
    except CatalogueError as exc:
        return fail(str(exc), EXIT_USAGE)
    print(_catalogue_text(new))
    return 0


def _catalogue_text(c: CatalogueConfig) -> str:
    where = (f"items {c.item_field}, on shelf: {', '.join(c.available_values)}"
             if c.reader is Reader.MARC else "ISO 20775 availability")
    indexes = ", ".join(f"{t}={i}" for t, i in sorted(c.indexes.items()))
    budget = f"{c.budget_ms} ms" if c.budget_ms else "default budget"
    return (f"{c.symbol:<24} {'enabled' if c.enabled else 'DISABLED':<8} SRU {c.sru_version} "
            f"{c.sru_url} schema {c.record_schema} ({where}); {indexes}; {budget}")


async def _address(pool: asyncpg.Pool, args: argparse.Namespace) -> int:
    """`agency address set|show`: the postal address loans are shipped from and to
    (broker/agency_addresses.py; the pull slips' labels print it)."""
    old = await addresses.get(pool, args.symbol)
    if args.what == "show":
        if old is None:
            return fail(f"{args.symbol} has no postal address (set it with `agency address "
                        "set`)")
        print(_address_text(args.symbol, old))
        return 0
    given = {name: getattr(args, name) for name in
             ("recipient", "line1", "line2", "city", "province", "postcode", "country",
              "phone") if getattr(args, name) is not None}
    base = old if old is not None else addresses.PostalAddress(line1=None)
    try:
        new = await addresses.put(pool, args.symbol, dataclasses.replace(base, **given))
    except addresses.AddressError as exc:
        return fail(str(exc), EXIT_USAGE)
    print(_address_text(args.symbol, new))
    return 0


def _address_text(symbol: str, a: addresses.PostalAddress) -> str:
    return "\n".join([f"{symbol}", *(f"  {x}" for x in (a.recipient, a.street(), a.post(),
                                                        f"电话 {a.phone}" if a.phone else "")
                                     if x)])


def _profiles_text() -> str:
    lines = []
    for profile in profiles.PROFILES.values():
        lines.append(f"{profile.name}: {profile.title}")
        for direction in profiles.Direction:
            for name in profiles.adjustments_of(profile.name, direction):
                lines.append(f"  {direction:<8} {name:<30} "
                             f"{profiles.ADJUSTMENTS[name].summary}")
    return "\n".join(lines) + "\n"


_CA_HELP = ("PEM file of the CA that signed the certificate of its https:// ISO 18626 URL, "
            "when neither the system's CAs nor ILLHUB_HTTP__PEERS_CA_FILE hold it; stored "
            "with the agency (only its certificates)")


def _agency_arguments(p: argparse.ArgumentParser) -> None:
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
    a.add_argument("--profile", choices=profiles.PROFILE_NAMES, default=profiles.DEFAULT_PROFILE,
                   help="the ISO 18626 dialect of its ILL system, adjusted at the edge "
                        f"(default {profiles.DEFAULT_PROFILE}; `agency profiles` lists them)")
    a.add_argument("--iso18626-ca", metavar="FILE", help=_CA_HELP)
    s = asub.add_parser("set", help="change an agency's profile or ISO 18626 HTTP settings")
    s.add_argument("symbol")
    s.add_argument("--profile", choices=profiles.PROFILE_NAMES)
    s.add_argument("--iso18626-url", metavar="URL")
    s.add_argument("--iso18626-version", choices=("1.2", "2021"))
    s.add_argument("--iso18626-ca", metavar="FILE", help=_CA_HELP)
    asub.add_parser("list", help="list agencies (transport, profile)")
    pr = asub.add_parser("profiles", help="the profiles and what each adjusts")
    pr.add_argument("--markdown", action="store_true",
                    help="the table of docs/peer-profiles.md, with sources")
    d = asub.add_parser("disable", help="revoke an agency's broker access, keep its history")
    d.add_argument("symbol")
    _catalogue_arguments(asub.add_parser(
        "catalogue", help="the supplier's SRU catalogue, asked for availability before routing"))
    _address_arguments(asub.add_parser(
        "address", help="the postal address loans are shipped from and to (Chinese welcome)"))
    t = asub.add_parser("trust", help="borrower trust scores from late returns and losses "
                                      "(what min_borrower_trust rules compare)")
    t.add_argument("symbol", nargs="?", help="one agency (default: every requester)")


def _catalogue_arguments(p: argparse.ArgumentParser) -> None:
    csub = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    cs = csub.add_parser("set", help="set or change it (options not given keep their value)")
    cs.add_argument("symbol")
    cs.add_argument("--url", help="SRU base URL with its database, e.g. "
                                  "http://opac.example.edu.cn:210/Default")
    cs.add_argument("--sru-version", choices=SRU_VERSIONS, help="default 1.2")
    cs.add_argument("--schema", help="recordSchema as the server names it (default marcxml)")
    cs.add_argument("--reader", choices=[r.value for r in Reader],
                    help="where availability is read: MARC items (default) or ISO 20775")
    cs.add_argument("--item-field", metavar="TAG$CODE",
                    help="marc: the subfield with each item's status (default 876$j)")
    cs.add_argument("--available", action="append", metavar="STATUS",
                    help="marc: an item status meaning on the shelf (repeat; default "
                         "Available), e.g. --available Available --available 在架")
    cs.add_argument("--index", action="append", metavar="TYPE=INDEX",
                    help="the CQL index per identifier type (repeat; default "
                         "isbn=bath.isbn issn=bath.issn)")
    cs.add_argument("--budget-ms", type=int,
                    help="its own time budget, within settings.catalogues.budget_ms")
    on = cs.add_mutually_exclusive_group()
    on.add_argument("--enable", dest="enabled", action="store_const", const=True)
    on.add_argument("--disable", dest="enabled", action="store_const", const=False)
    sh = csub.add_parser("show", help="print one supplier's catalogue, or all")
    sh.add_argument("symbol", nargs="?")
    rm = csub.add_parser("remove", help="stop asking its catalogue")
    rm.add_argument("symbol")


def _address_arguments(p: argparse.ArgumentParser) -> None:
    asub = p.add_subparsers(dest="what", required=True, metavar="ACTION")
    a = asub.add_parser("set", help="set or change it (options not given keep their value; "
                                    "the first time --line1, --city, --province, --postcode "
                                    "and --phone are required)")
    a.add_argument("symbol")
    a.add_argument("--recipient", help="who takes the parcel, e.g. 馆际互借部 王老师")
    a.add_argument("--line1", help="street and number, e.g. 淮海中路1555号")
    a.add_argument("--line2", help="building, floor, room")
    a.add_argument("--city", help="e.g. 上海 or 南京")
    a.add_argument("--province", help="e.g. 上海 or 江苏")
    a.add_argument("--postcode", help="6 digits in China, e.g. 200031")
    a.add_argument("--country", help="ISO 3166 two letters (default CN)")
    a.add_argument("--phone", help="mobile or landline with its area code, e.g. "
                                   "021-64455555 or 13812345678")
    sh = asub.add_parser("show", help="print an agency's postal address")
    sh.add_argument("symbol")


async def holdings(settings: Settings, args: argparse.Namespace) -> int:
    """import: 0 all imported, 1 some lines rejected (the rest imported), 2 file
    unreadable or bad header (nothing imported). quality: 0, or 1 for an unknown symbol."""
    if args.action == "quality":
        return await _holdings_quality(settings, args)
    await migrate(settings.database_url, report=lambda _m: None)
    started = time.monotonic()

    def progress(lines: int) -> None:
        elapsed = time.monotonic() - started
        print(f"{lines:,} lines ({lines / elapsed:,.0f} lines/s)", file=sys.stderr, flush=True)

    conn = await connect(settings.database_url)
    try:
        report = await import_csv(conn, args.file, replace=args.replace, progress=progress,
                                  progress_every=100_000, max_rejections=MAX_REJECTIONS_SHOWN)
    except HoldingsFileError as exc:
        return fail(f"{exc}; nothing imported", EXIT_USAGE)
    finally:
        await conn.close()
    for line in report.summary(limit=MAX_REJECTIONS_SHOWN):
        print(line)
    return 1 if report.rejected else 0


async def _holdings_quality(settings: Settings, args: argparse.Namespace) -> int:
    """Per supplier (or one): its answers about listed items over the window, per id
    type, and its holdings in doubt, least accurate first."""
    conn = await connect(settings.database_url)
    try:
        found = await holdings_trust.quality(conn, args.symbol, datetime.now(UTC))
    except LookupError as exc:
        return fail(str(exc))
    finally:
        await conn.close()
    zone = ZoneInfo(settings.timezone)
    if args.json:
        print(json.dumps([_quality_json(q, zone) for q in found], ensure_ascii=False,
                         indent=2))
        return 0
    for line in _quality_lines(found, zone):
        print(line)
    return 0


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _quality_lines(found: list[holdings_trust.SupplierQuality], zone: ZoneInfo) -> list[str]:
    window = holdings_trust.WINDOW_DAYS
    lines = [f"holdings accuracy: of the listed items a supplier was asked for and answered "
             f"in the last {window} days, the share it held ('-': fewer than "
             f"{holdings_trust.MIN_ASKED} answers); doubted: asked for elsewhere first until "
             "it supplies the item or loads the holding again"]
    for q in found:
        lines += ["", f"{q.symbol}  {q.name}: accuracy {_share(q.accuracy)}, {q.asked} asked "
                      f"because listed, {q.not_held} not held; {len(q.doubts)} holding(s) "
                      "in doubt"]
        lines += [f"  {t.id_type:<11} asked {t.asked:>5}   not held {t.not_held:>5}   "
                  f"accuracy {_share(t.accuracy)}" for t in q.types]
        lines += [f"  doubted     {d.id_type} {d.id_value}: {d.reason} on "
                  f"{d.answered_at.astimezone(zone):%Y-%m-%d %H:%M} ({d.transaction_id})"
                  for d in q.doubts]
    if not found:
        lines.append("no answers about listed holdings yet")
    return lines


def _quality_json(q: holdings_trust.SupplierQuality, zone: ZoneInfo) -> dict[str, Any]:
    return {
        "symbol": q.symbol, "name": q.name, "asked": q.asked, "notHeld": q.not_held,
        "accuracy": q.accuracy, "windowDays": holdings_trust.WINDOW_DAYS,
        "byIdType": [{"idType": t.id_type, "asked": t.asked, "notHeld": t.not_held,
                      "accuracy": t.accuracy} for t in q.types],
        "doubted": [{"idType": d.id_type, "idValue": d.id_value, "reason": d.reason,
                     "answeredAt": d.answered_at.astimezone(zone).isoformat(),
                     "transaction": d.transaction_id} for d in q.doubts]}


def _holdings_arguments(p: argparse.ArgumentParser) -> None:
    hsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    h = hsub.add_parser("import", help="import a holdings CSV (merge by default)")
    h.add_argument("file")
    h.add_argument("--replace", action="store_true",
                   help="replace all holdings of the symbols in the file")
    q = hsub.add_parser("quality", help="holdings accuracy per supplier and id type, and the "
                                        "holdings in doubt (answered NotHeld)")
    q.add_argument("symbol", nargs="?", help="one supplier (default: all)")
    q.add_argument("--json", action="store_true", help="a JSON array, one object a supplier")


async def policy(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
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
            return 0
        loaded = await active_policy(conn)
    finally:
        await conn.close()
    if loaded is None:
        print("no policy loaded: routing uses holdings, tiers and scorecards only")
    else:
        print(f"# policy version {loaded.version} ({loaded.file_name}), loaded "
              f"{loaded.loaded_at:%Y-%m-%d %H:%M:%S %Z}")
        print(loaded.source)
    return 0


def _policy_arguments(p: argparse.ArgumentParser) -> None:
    psub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    pl = psub.add_parser("load", help="validate a TOML policy file and make it the active version")
    pl.add_argument("file")
    psub.add_parser("show", help="print the active policy version")


async def explain_transaction(settings: Settings, args: argparse.Namespace) -> int:
    conn = await connect(settings.database_url)
    try:
        today = datetime.now(UTC).astimezone(ZoneInfo(settings.timezone)).date()
        for line in await explain(conn, args.transaction, settings.loans, today):
            print(line)
    except LookupError as exc:
        return fail(str(exc))
    finally:
        await conn.close()
    return 0


def _explain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("transaction", help="hub transaction id, e.g. ILL-20261124-3F9A2C7B01")


async def dead(settings: Settings, args: argparse.Namespace) -> int:
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        if args.action == "list":
            rows = await deadletters.listing(pool, limit=args.limit, include_replayed=args.all)
            for r in reversed(rows):
                state = f"replayed {r['replayed_at']:%Y-%m-%d %H:%M}" if r["replayed_at"] else ""
                print(f"{r['id']:>6}  {r['received_at']:%Y-%m-%d %H:%M:%S}  "
                      f"{r['sender'] or '(no sender)':<20} {r['routing_key'] or '-':<24} "
                      f"{r['size']:>7} B  {r['reason']}  {state}")
            print(f"{len(rows)} dead letter(s) shown")
            return 0
        try:
            outcome = await deadletters.replay(pool, Intake(settings, Dispatcher(settings)),
                                               args.id)
        except LookupError as exc:
            return fail(str(exc))
        print(f"dead letter {args.id} replayed: {outcome}")
        return 0 if outcome in (IntakeOutcome.OK, IntakeOutcome.DUPLICATE) else 1
    finally:
        await pool.close()


def _dead_arguments(p: argparse.ArgumentParser) -> None:
    dsub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    dl = dsub.add_parser("list", help="list dead letters, newest last")
    dl.add_argument("--limit", type=int, default=50)
    dl.add_argument("--all", action="store_true", help="include replayed ones")
    dr = dsub.add_parser("replay", help="process a dead letter again through intake")
    dr.add_argument("id", type=int)


async def flags(settings: Settings, args: argparse.Namespace) -> int:
    kinds = [k.value for k in FlagKind]
    if args.kind and args.kind not in kinds:
        return fail(f"--kind must be one of {', '.join(kinds)}", EXIT_USAGE)
    pool = await create_pool(settings.database_url, max_size=1)
    try:
        rows = await flag_store.latest(pool, kinds=[FlagKind(args.kind)] if args.kind else None,
                                       limit=args.limit)
    finally:
        await pool.close()
    for f in reversed(rows):
        print(f"{f.raised_at:%Y-%m-%d %H:%M}  {f.kind:<24} {f.subject:<20} "
              f"{f.transaction_id or '-':<26} {f.detail}")
        if f.facts:
            print(f"{'':18}{flag_store.facts_text(f.facts)}")
    print(f"{len(rows)} flag(s)")
    return 0


def _flags_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kind", help=", ".join(k.value for k in FlagKind))
    p.add_argument("--limit", type=int, default=100)


COMMANDS = [
    Command("agency", "register, list and disable agencies", agency, _agency_arguments),
    Command("holdings", "load suppliers' holdings (CSV: symbol,id_type,id_value); their "
            "accuracy learned from NotHeld answers", holdings, _holdings_arguments),
    Command("policy", "load and show the routing (and subsidy) policy", policy,
            _policy_arguments),
    Command("explain", "print a transaction's rota, reasons and audit trail",
            explain_transaction, _explain_arguments),
    Command("dead", "list dead letters and replay one after a fix", dead, _dead_arguments),
    Command("flags", "list violation and quality flags, newest last", flags, _flags_arguments),
]
