"""One conformance check from start to end: the listener up, the flows of each role run
one after the other, every step printed as it ends, a summary, an exit code."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp

from app.conformance import as_requester, as_supplier
from app.conformance.report import step_lines, summary_lines
from app.conformance.session import (
    Authenticate,
    Check,
    Listener,
    Options,
    Outcome,
    Say,
    Stalled,
    StepResult,
    Target,
    Unreachable,
)
from sim.peer_transport import XmlEndpoint

# The peer's roles, in the order they are checked.
ROLES = ("supplier", "requester")
FLOWS = {"supplier": as_supplier.FLOWS, "requester": as_requester.FLOWS}


@dataclass
class Report:
    target: Target
    options: Options
    roles: tuple[str, ...]
    listen_url: str
    started: datetime
    finished: datetime | None = None
    steps: list[StepResult] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        """0 every step passed, 1 deviations, 2 could not run (a step or all)."""
        outcomes = {s.outcome for s in self.steps}
        if Outcome.FAIL in outcomes:
            return 1
        if Outcome.NOT_RUN in outcomes or not self.steps:
            return 2
        return 0

    @property
    def result(self) -> str:
        return {0: "passed", 1: "deviations", 2: "could not run"}[self.exit_code]


def flow_names(only: frozenset[str] | None) -> list[str]:
    names = list(as_supplier.FLOWS)
    return [n for n in names if only is None or n in only]


async def run_check(target: Target, options: Options, *, roles: Sequence[str],
                    listen: tuple[str, int] = ("127.0.0.1", 18626),
                    authenticate: Authenticate | None = None,
                    say: Say = print, public_url: str | None = None,
                    tls: ssl.SSLContext | None = None) -> Report:
    """Check `target` in each of `roles` (the peer's); OSError if `listen` is taken.
    `tls` verifies an https:// peer as the hub would (its own CA, or the hub's)."""
    listener = Listener(target.symbol, target.version, authenticate)
    endpoint = await XmlEndpoint(listener.handle, *listen).start()
    report = Report(target, options, tuple(r for r in ROLES if r in roles),
                    public_url or endpoint.url, datetime.now(UTC))
    say(f"ISO 18626 conformance check of {target.symbol} at {target.url} "
        f"(ISO 18626 {target.version}), checked as {' and '.join(report.roles)}; the check "
        f"plays {options.partner}")
    say(f"the peer's messages to the hub are expected at {report.listen_url} during the check")
    try:
        timeout = aiohttp.ClientTimeout(total=max(30.0, options.wait))
        connector = aiohttp.TCPConnector(ssl=tls) if tls is not None else None
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            check = Check(target, options, listener, session, say, step_lines)
            for role in report.roles:
                await _run_role(check, role)
            check.finish()
            report.steps = check.steps
    finally:
        await endpoint.stop()
    report.finished = datetime.now(UTC)
    for line in summary_lines(report):
        say(line)
    return report


async def _run_role(check: Check, role: str) -> None:
    supplier_side = as_supplier.SupplierSide(check)
    requester_side = as_requester.RequesterSide(check)
    unreachable: str | None = None
    for flow in flow_names(check.options.only):
        if unreachable is not None:
            _not_run(check, role, flow, unreachable)
            continue
        flow_run: Awaitable[None] = as_supplier.RUNS[flow](supplier_side) \
            if role == "supplier" else as_requester.RUNS[flow](requester_side)
        try:
            await flow_run
        except Unreachable as exc:
            unreachable = f"the peer did not answer: {exc}"
            _stop_step(check, unreachable)
        except as_requester.NotDriven as exc:
            _stop_step(check, f"the peer sent no request: {exc}")
        except Stalled:
            pass
        check.finish()
        _not_run(check, role, flow, "an earlier step of this flow could not go on")


def _stop_step(check: Check, reason: str) -> None:
    if check.steps:
        check.steps[-1].not_run = reason


def _not_run(check: Check, role: str, flow: str, reason: str) -> None:
    """The flow's steps that did not start, recorded as not run."""
    done = {s.name for s in check.steps if (s.role, s.flow) == (role, flow)}
    for name in FLOWS[role][flow]:
        if name not in done:
            step = check.step(role, flow, name)
            step.not_run = reason
    check.finish()
