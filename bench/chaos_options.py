"""Options of the chaos harness (bench/chaos.py), light enough for run.py to import at start."""

from __future__ import annotations

import argparse
import secrets
from dataclasses import dataclass, field

# The scenario mix: shares of copies, loans, Unfilled-then-next, silent suppliers, cancels.
DEFAULT_MIX = {"copy": 0.40, "loan": 0.25, "unfilled": 0.15, "silent": 0.10, "cancel": 0.10}


class ChaosError(RuntimeError):
    """A harness failure with a message for the user."""


@dataclass
class ChaosOptions:
    requests: int = 20_000
    hubs: int = 3
    kill_interval: float = 5.0        # seconds between SIGKILLs (0: none)
    broker_restart: bool = True
    db_restart: bool = True
    smtp_outage: float = 20.0         # seconds without an SMTP server (0: none)
    sever: bool = True                # drop the hubs' DB and broker connections once each
    seed: int = 18626
    window: int = 300                 # requests open at once
    requesters: int = 6
    suppliers: int = 5
    # Seconds a supplier may stay silent (Express level). Long enough that a loaded
    # 2-core box (three hubs, the servers, the simulation, a SIGKILL every 5 s) never
    # lags that far behind an answer already queued: the hub would then rightly time
    # that supplier out, and the scenario script would not expect it.
    deadline: float = 30.0
    drain_timeout: float = 300.0      # give up after this many seconds with no request finished
    progress_seconds: float = 3.0
    keep: bool = False
    token: str = field(default_factory=lambda: secrets.token_hex(3))
    prefix: str | None = None         # default chaos.<token>.
    mix: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_MIX))

    def check(self) -> None:
        if self.requests < 1:
            raise ChaosError("--requests must be at least 1")
        if not 1 <= self.hubs <= 9:
            raise ChaosError("--hubs must be between 1 and 9")
        if self.kill_interval < 0 or (0 < self.kill_interval < 0.5):
            raise ChaosError("--kill-interval must be 0 (no kills) or at least 0.5 seconds")
        if self.smtp_outage < 0:
            raise ChaosError("--smtp-outage must be 0 or more seconds")
        if self.window < 1:
            raise ChaosError("--window must be at least 1")
        if not 2 <= self.suppliers <= 20:
            raise ChaosError("--suppliers must be between 2 and 20 (a request needs a next "
                             "supplier)")
        if not 1 <= self.requesters <= 50:
            raise ChaosError("--requesters must be between 1 and 50")
        if self.deadline < 1:
            raise ChaosError("--deadline must be at least 1 second")
        if self.prefix is not None and not self.prefix.endswith("."):
            raise ChaosError(f"--prefix {self.prefix!r} must end in '.'")

    @property
    def name_prefix(self) -> str:
        return self.prefix or f"chaos.{self.token}."

    @property
    def database(self) -> str:
        return f"illhub_chaos_{self.token}"

    def symbol(self, label: str) -> str:
        return f"CHAOS{self.token.upper()}:{label}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    d = ChaosOptions
    p.add_argument("--requests", type=int, default=d.requests,
                   help=f"requests to push through (default {d.requests})")
    p.add_argument("--hubs", type=int, default=d.hubs, help="hub processes (default 3)")
    p.add_argument("--kill-interval", type=float, default=d.kill_interval,
                   help="seconds between SIGKILLs of a random hub (default 5; 0: none)")
    p.add_argument("--no-broker-restart", action="store_true",
                   help="do not restart RabbitMQ (it affects every user of the server)")
    p.add_argument("--no-db-restart", action="store_true",
                   help="do not restart PostgreSQL (it affects every user of the server)")
    p.add_argument("--no-sever", action="store_true",
                   help="do not sever the hubs' own DB sessions and broker connections")
    p.add_argument("--smtp-outage", type=float, default=d.smtp_outage,
                   help="seconds the SMTP server is down (default 20; 0: none)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed of the scenario mix and faults")
    p.add_argument("--window", type=int, default=d.window,
                   help="requests open at once (default 300)")
    p.add_argument("--deadline", type=float, default=d.deadline,
                   help="seconds a silent supplier has before the hub moves on (default 10)")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout,
                   help="give up after this many seconds in which no request finished "
                   "(default 300)")
    p.add_argument("--keep", action="store_true",
                   help="keep the database, queues and hub logs for inspection")


def options_from(args: argparse.Namespace) -> ChaosOptions:
    return ChaosOptions(requests=args.requests, hubs=args.hubs, kill_interval=args.kill_interval,
                        broker_restart=not args.no_broker_restart,
                        db_restart=not args.no_db_restart, sever=not args.no_sever,
                        smtp_outage=args.smtp_outage, seed=args.seed, window=args.window,
                        deadline=args.deadline, drain_timeout=args.drain_timeout,
                        keep=args.keep)


