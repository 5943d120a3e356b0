"""The demo's hub, set up: agencies registered, holdings imported, fees, policy, subsidy.

Composition, not simulation: what the operators of a consortium would load into their
hub (docs/demo/, adapted to this run's symbols by sim/network.py) goes in here
through the hub's own code, and the broker is cleared of an earlier run's users,
queues and exchanges.
"""

from __future__ import annotations

import asyncio
import csv
import re
import secrets
from collections.abc import Callable
from pathlib import Path

import asyncpg

from broker import agencies
from broker.dispatch.policies import load_policy
from broker.holdings import import_csv
from broker.policy import PolicyError
from infra.rabbit_admin import Management
from schemas.settings import Settings
from settlement.fees import FeeError, load_fees
from settlement.subsidy import SubsidyError, load_subsidy
from sim.network import Agency, Network

DEMO_TAG = "illhub-demo"          # RabbitMQ user tag: this user was made by the demo
Out = Callable[[str], None]


class DemoError(RuntimeError):
    """A demo failure with a message for the user (printed as `error: ...`)."""


def _tags(user: dict[str, object]) -> list[str]:
    tags = user.get("tags") or []
    if isinstance(tags, str):
        return [t.strip() for t in tags.split(",")]
    return [str(t) for t in tags] if isinstance(tags, list) else []


async def clear_broker(s: Settings, symbols: list[str], *, strict: bool) -> None:
    """Delete the demo's broker users and its queues and exchanges (by prefix).

    A user of one of the demo's symbols that the demo did not create is left alone;
    `strict`: it is an error (the demo could not register that agency).
    """
    wanted = set(symbols)
    async with Management(s.amqp.management_url.get_secret_value()) as mgmt:
        ours: list[str] = []
        for user in await mgmt.users():
            name = str(user.get("name"))
            if name not in wanted:
                continue
            if DEMO_TAG in _tags(user):
                ours.append(name)
            elif strict:
                raise DemoError(
                    f"RabbitMQ already has a user {name!r} that the demo did not create; "
                    "run the demo with --symbol-tag NAME so its agencies get other names")
        await mgmt.remove_scratch(s.vhost, s.amqp.name_prefix, ours)


async def register(s: Settings, pool: asyncpg.Pool, net: Network) -> dict[str, str]:
    """Every agency through `broker.agencies.add` (its own broker user); the passwords."""
    passwords = {a.symbol: secrets.token_urlsafe(12) for a in net.agencies}
    gate = asyncio.Semaphore(6)
    async with Management(s.amqp.management_url.get_secret_value()) as mgmt:
        async def one(a: Agency) -> None:
            async with gate:
                await agencies.add(s, pool, agencies.NewAgency(
                    symbol=a.symbol, name=a.name, roles=a.roles,
                    password=passwords[a.symbol], province=a.province, city=a.city,
                    email=a.email, finance_email=a.finance_email))
                # Mark the broker user as the demo's, so the next run may remove it.
                await mgmt.put_user(a.symbol, passwords[a.symbol], tags=DEMO_TAG)

        await asyncio.gather(*(one(a) for a in net.agencies))
    return passwords


async def load_files(pool: asyncpg.Pool, net: Network, speed: float, out: Out) -> None:
    """docs/demo/fees.toml, policy.toml (its hours scaled to `speed`) and subsidy.toml."""
    async with pool.acquire() as conn:
        try:
            report = await load_fees(conn, net.texts["fees.toml"],
                                     file_name="docs/demo/fees.toml")
        except FeeError as exc:
            raise DemoError(f"docs/demo/fees.toml: {exc}") from exc
        try:
            policy = await load_policy(conn, scale_policy_hours(net.texts["policy.toml"], speed),
                                       "docs/demo/policy.toml")
        except PolicyError as exc:
            raise DemoError(f"docs/demo/policy.toml: {exc}") from exc
        try:
            subsidy = await load_subsidy(conn, net.texts["subsidy.toml"],
                                         "docs/demo/subsidy.toml")
        except SubsidyError as exc:
            raise DemoError(f"docs/demo/subsidy.toml: {exc}") from exc
    out(f"  fees, policy, subsidy: {report.entries} fee schedules of {len(report.suppliers)} "
        f"suppliers, routing policy version {policy}, subsidy rules version {subsidy} "
        "(docs/demo/*.toml)")


async def import_holdings(pool: asyncpg.Pool, net: Network, data: Path, out: Out) -> None:
    """What each supplier lists in the union catalogue, written as CSV and imported."""
    path = data / "holdings.csv"
    lines = await asyncio.to_thread(write_holdings_csv, path, net.holdings)
    async with pool.acquire() as conn:
        report = await import_csv(conn, path, replace=False)
    if report.rejected:
        first = report.rejections[0] if report.rejections else None
        raise DemoError(f"holdings: {report.rejected} generated line(s) rejected"
                        + (f", e.g. line {first.line}: {first.reason}" if first else ""))
    cat = net.catalogue
    out(f"  holdings: {lines:,} lines ({len(cat.journals)} journals by ISSN, {len(cat.books)} "
        f"books by ISBN, {len(cat.doi_prefixes)} DOI registrants; {len(cat.nowhere)} items "
        f"held nowhere) -> {path}")


def write_holdings_csv(path: Path, holdings: dict[str, set[tuple[str, str]]]) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        w = csv.writer(f)
        w.writerow(("symbol", "id_type", "id_value"))
        for symbol in sorted(holdings):
            for id_type, value in sorted(holdings[symbol]):
                w.writerow((symbol, id_type, value))
                n += 1
    return n


def scale_policy_hours(text: str, speed: float) -> str:
    """The policy with `turnaround_half_hours` in real hours (the hub measures real time)."""
    pattern = re.compile(r"^(turnaround_half_hours\s*=\s*)([0-9.]+)(.*)$", re.MULTILINE)
    m = pattern.search(text)
    hours = float(m.group(2)) if m else 48.0
    scaled = f"{hours / speed:.9f}"
    if m:
        return pattern.sub(lambda x: f"{x.group(1)}{scaled}  # {hours:g} simulated hours "
                           f"at --speed {speed:g}", text, count=1)
    if re.search(r"^\[scoring\]\s*$", text, re.MULTILINE):
        return re.sub(r"^\[scoring\]\s*$", f"[scoring]\nturnaround_half_hours = {scaled}",
                      text, count=1, flags=re.MULTILINE)
    return f"{text}\n[scoring]\nturnaround_half_hours = {scaled}\n"
