"""`run.py peer check | mock`: the ISO 18626 conformance kit (docs/conformance.md).

`peer check SYMBOL` plays the other side against a registered HTTP peer's real
endpoint and judges what comes back; `peer mock` runs a scriptable peer (over HTTP, over
AMQP, or both) for a library's developers to test their own system against the hub.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import secrets
import signal
import ssl
from pathlib import Path

from app.cli.commands import EXIT_USAGE, Command, fail
from app.conformance.as_supplier import FLOWS
from app.conformance.report import write_report
from app.conformance.runner import ROLES, run_check
from app.conformance.session import Options, Target
from broker.agencies import PeerRegistration, registration
from infra.database import create_pool
from infra.tls import peers_context, pem_client_context
from schemas.settings import Settings
from sim.peer_mock import MockConfig, PeerMock
from sim.peer_scenarios import FAULTS, parse_faults
from web.iso18626 import Credentials

# --as names the side the check plays; the peer is checked in the other role.
CHECK_PLAYS = {"requester": ("supplier",), "supplier": ("requester",),
               "both": ("supplier", "requester")}
DEFAULT_LISTEN = "127.0.0.1:18626"


async def peer(settings: Settings, args: argparse.Namespace) -> int:
    if args.action == "check":
        return await check(settings, args)
    return await mock(settings, args)


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{option} {text!r} is not HOST:PORT")
    return host or "127.0.0.1", int(port)


async def check(settings: Settings, args: argparse.Namespace) -> int:
    """0 every step passed, 1 deviations, 2 could not run."""
    try:
        listen = _host_port(args.listen, "--listen")
        only = frozenset(f.strip() for f in args.only.split(",") if f.strip()) \
            if args.only else None
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    if only and only - set(FLOWS):
        return fail(f"--only: {', '.join(sorted(only - set(FLOWS)))}; the flows are "
                    f"{', '.join(FLOWS)}", EXIT_USAGE)
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        peer_of = await registration(pool, args.symbol)
        if peer_of is None:
            return fail(f"no agency {args.symbol}", EXIT_USAGE)
        if not peer_of.iso18626_url:
            return fail(f"{args.symbol} has no ISO 18626 URL (run.py agency add ... "
                        "--iso18626-url URL): the check plays against an HTTP peer's "
                        "endpoint", EXIT_USAGE)
        roles = CHECK_PLAYS[args.as_] if args.as_ else \
            tuple(r for r in ROLES if r in peer_of.roles)
        target = Target(args.symbol, peer_of.iso18626_url, peer_of.iso18626_version)
        options = Options(partner=args.partner or settings.hub_symbol,
                          hub_symbol=settings.hub_symbol, wait=args.wait,
                          token=f"CHK-{secrets.token_hex(3)}", only=only)
        try:
            report = await run_check(target, options, roles=roles, listen=listen,
                                     authenticate=Credentials(pool).check,
                                     public_url=args.public_url, tls=_verifying(settings,
                                                                               peer_of))
        except OSError as exc:
            return fail(f"cannot listen on {args.listen} for the peer's messages: {exc}",
                        EXIT_USAGE)
    finally:
        await pool.close()
    if args.report:
        write_report(report, Path(args.report))
        print(f"report written to {args.report}")
    return report.exit_code


def _verifying(settings: Settings, peer_of: PeerRegistration) -> ssl.SSLContext:
    """What the hub's relay would verify this peer with: its own CA, else the hub's."""
    if peer_of.iso18626_ca:
        return pem_client_context(peer_of.iso18626_ca, f"agency {peer_of.symbol}'s CA")
    return peers_context(settings)


async def mock(settings: Settings, args: argparse.Namespace) -> int:
    symbol = args.amqp or args.symbol
    if args.http is None and not args.amqp:
        return fail("say where the mock listens: --http PORT and/or --amqp SYMBOL", EXIT_USAGE)
    if not symbol:
        return fail("--symbol SYMBOL (the mock's agency symbol) is needed with --http",
                    EXIT_USAGE)
    if args.amqp and not args.password:
        return fail("--amqp needs --password (the agency's broker password)", EXIT_USAGE)
    try:
        faults = parse_faults(args.break_)
    except ValueError as exc:
        return fail(str(exc), EXIT_USAGE)
    host = "127.0.0.1" if settings.http.host in ("0.0.0.0", "") else settings.http.host
    config = MockConfig(symbol=symbol, password=args.password, version=args.version,
                        hub_url=args.hub_url or f"http://{host}:{settings.http.port}/iso18626",
                        delay=args.delay, faults=faults, default_scenario=args.default)
    peer_mock = PeerMock(config)
    try:
        if args.http is not None:
            endpoint = await peer_mock.start_http(args.host, args.http)
            print(f"peer mock {symbol}: ISO 18626 {args.version} at {endpoint.url}, answers "
                  f"to {config.hub_url}" + (f"; broken: {', '.join(sorted(faults))}"
                                            if faults else ""), flush=True)
        if args.amqp:
            await peer_mock.start_amqp(settings, args.password)
            print(f"peer mock {symbol}: reading its queue on RabbitMQ", flush=True)
        for keywords in args.send or []:
            request_id = peer_mock.send_request(keywords, service_type=args.service_type,
                                                supplier=args.supplier)
            print(f"peer mock {symbol}: requesting {request_id} ({keywords})", flush=True)
        await _until_stopped(args.seconds)
    finally:
        await peer_mock.stop()
    print(f"peer mock {symbol}: stopped ({len(peer_mock.history)} line(s) logged)")
    return 0


async def _until_stopped(seconds: float | None) -> None:
    """Run until SIGINT/SIGTERM (or `seconds`)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows: Ctrl-C only
            loop.add_signal_handler(sig, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


def _arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    c = sub.add_parser("check", help="play the other side against a registered HTTP peer and "
                                     "judge every answer (exit 0 passed, 1 deviations, 2 "
                                     "could not run)")
    c.add_argument("symbol", help="the agency, registered with --iso18626-url")
    c.add_argument("--as", dest="as_", choices=tuple(CHECK_PLAYS),
                   help="the side the check plays: requester (the peer is checked as "
                        "supplier), supplier (the peer as requester), both; default: the "
                        "other side of each of the agency's roles")
    c.add_argument("--report", metavar="FILE",
                   help="write a report for the centre: JSON for FILE.json, else Markdown")
    c.add_argument("--listen", default=DEFAULT_LISTEN, metavar="HOST:PORT",
                   help="where the check takes the peer's own messages (point the peer's "
                        f"address for the hub here during the check; default {DEFAULT_LISTEN})")
    c.add_argument("--public-url", metavar="URL",
                   help="the listener's address as the peer reaches it, when not --listen's")
    c.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long a step waits for the peer's message (default 30)")
    c.add_argument("--only", metavar="FLOW,...",
                   help=f"run these flows only: {', '.join(FLOWS)}")
    c.add_argument("--partner", metavar="SYMBOL",
                   help="the agency the check plays (default: the hub's own symbol)")
    m = sub.add_parser("mock", help="run a scriptable ISO 18626 peer (scenario keywords in "
                                    "the request, as CrossLink's illmock)")
    m.add_argument("--http", type=int, metavar="PORT",
                   help="serve POST /iso18626 on PORT (0: any free port)")
    m.add_argument("--host", default="127.0.0.1", help="address to serve on (--http)")
    m.add_argument("--amqp", metavar="SYMBOL",
                   help="also (or instead) read SYMBOL's queue and publish as SYMBOL")
    m.add_argument("--symbol", help="the mock's agency symbol over HTTP (default: --amqp's)")
    m.add_argument("--password", help="the agency's password: HTTP Basic to the hub, AMQP "
                                      "login")
    m.add_argument("--hub-url", metavar="URL",
                   help="where the mock POSTs its messages (default: this hub's /iso18626)")
    m.add_argument("--version", choices=("1.2", "2021"), default="1.2",
                   help="the ISO 18626 version it writes (default 1.2)")
    m.add_argument("--delay", type=float, default=0.5, metavar="SECONDS",
                   help="pause before each message it sends (default 0.5)")
    m.add_argument("--default", default="UNFILLED", metavar="KEYWORDS",
                   help="the scenario of a request without keywords (default UNFILLED)")
    m.add_argument("--break", dest="break_", metavar="FAULT,...",
                   help="deviate on purpose: " + "; ".join(f"{k}: {v}"
                                                            for k, v in FAULTS.items()))
    m.add_argument("--send", action="append", metavar="KEYWORDS",
                   help="as requester, send a request with these keywords in its note "
                        "(repeatable)")
    m.add_argument("--service-type", choices=("Loan", "Copy", "CopyOrLoan"), default="Loan",
                   help="serviceType of --send's requests (default Loan)")
    m.add_argument("--supplier", metavar="SYMBOL",
                   help="the supplier --send's requests name (default: the hub chooses)")
    m.add_argument("--seconds", type=float, metavar="N",
                   help="stop after N seconds (default: at Ctrl-C or SIGTERM)")


COMMANDS = [
    Command("peer", "ISO 18626 conformance kit: check a peer's endpoint, or run a mock peer",
            peer, _arguments),
]
