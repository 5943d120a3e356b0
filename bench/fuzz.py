"""Hostile-input fuzzer: thousands of hostile messages as a real agency user, each answer checked.

    .venv/bin/python -m bench.fuzz [--messages 10000] [--seed S]      (or: run.py fuzz)

The full run builds its own scratch database and broker name prefix, registers
three real agencies (the fuzzer, another requester and its supplier, each its own
RabbitMQ user), gives the other two a few live transactions, starts one hub
process's machinery in this event loop and publishes the cases of
bench/fuzz_cases.py through the real broker. It prints progress lines, then a table
of cases by category and outcome, and exits 1 if any case was answered wrongly,
lost or made the hub raise, if the other agencies' transactions changed, or if
the hub stopped routing. tests/test_fuzz.py runs the same code on fewer cases.

What is checked per case (`check`): exactly one confirmation of the right type,
ERROR with the expected errorType and an errorValue naming the field or problem
(and short enough to read), or OK for hostile but valid input; a dead letter in
the `dead_letter` table and on `hub.dead` with its reason, exactly when expected;
for messages about other agencies' transactions, an answer that does not reveal
the hub's transaction id.

A missing message_id cannot travel through the broker (aiormq invents one for
every publication that has none), so those cases go through `Intake.process`,
what the hub's consumer calls, and their answers through the real outbox relay.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import re
import secrets
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import asyncpg
from aio_pika.abc import AbstractIncomingMessage

from app.hub import Hub
from bench.fuzz_cases import CATEGORIES, Case, Targets, draw_cases
from bench.fuzz_messages import CASE_ID_LENGTH, CONFIRMATION
from broker.agencies import NewAgency, add
from broker.intake import ERROR_VALUE_LIMIT, Inbound, Intake
from illclient.client import AgencyClient
from infra.database import create_database, drop_database, with_database
from infra.migrations import migrate
from infra.rabbit_admin import Management
from infra.topology import HUB_DEAD, INBOUND, agency_queue
from schemas.settings import Settings
from sim.identifiers import issn_of
from sim.messages import agency_id

OUTCOMES = ("ok", "error", "dead", "silent")
Progress = Callable[[str], None]


def case_id(run: str, n: int) -> str:
    value = f"fz-{run}-{n:06d}"
    if len(value) != CASE_ID_LENGTH:
        raise ValueError(f"case id {value!r} is not {CASE_ID_LENGTH} characters long")
    return value


CASE_RE = re.compile(r"fz-[0-9a-f]{6}-[0-9]{6}")


def _case_of(*texts: Any) -> str | None:
    for value in texts:
        if isinstance(value, str) and (match := CASE_RE.match(value)):
            return match.group(0)
    return None


@dataclass
class Answer:
    kind: str | None
    status: str | None
    error_type: str | None
    error_value: str | None
    transaction_header: bool


@dataclass
class Observed:
    answers: dict[str, list[Answer]] = field(default_factory=lambda: defaultdict(list))
    dead_letters: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    hub_dead: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    crashes: Counter[str] = field(default_factory=Counter)
    received: int = 0


class _CrashWatch(logging.Handler):
    """Counts the hub's 'processing failed' log records: a hostile message made it raise."""

    def __init__(self, seen: Observed) -> None:
        super().__init__(logging.ERROR)
        self.seen = seen

    def emit(self, record: logging.LogRecord) -> None:
        found = _case_of(*(record.args or ()) if isinstance(record.args, tuple) else ())
        if found:
            self.seen.crashes[found] += 1


class Fuzzer:
    """Publishes cases as one agency and gathers every answer and dead letter."""

    def __init__(self, settings: Settings, pool: asyncpg.Pool, symbol: str, password: str,
                 progress: Progress | None = None, stall_seconds: float = 60.0) -> None:
        self.settings = settings
        self.pool = pool
        self.symbol = symbol
        self.password = password
        self.progress = progress or (lambda _line: None)
        self.stall_seconds = stall_seconds
        self.seen = Observed()
        self.run_tag = ""

    async def run(self, cases: list[Case], run_tag: str) -> Observed:
        self.run_tag = run_tag
        watch = _CrashWatch(self.seen)
        logging.getLogger("app.hub").addHandler(watch)
        s = self.settings
        agency = await aio_pika.connect_robust(s.amqp_url_for(self.symbol, self.password))
        admin = await aio_pika.connect_robust(s.amqp_broker_url)
        try:
            channel = await agency.channel(publisher_confirms=True)
            exchange = await channel.get_exchange(s.name(INBOUND), ensure=False)
            own = await channel.get_queue(s.name(agency_queue(self.symbol)), ensure=False)
            await own.consume(self._on_answer)
            dead_channel = await admin.channel()
            dead = await dead_channel.get_queue(s.name(HUB_DEAD), ensure=False)
            await dead.consume(self._on_dead)
            started = time.perf_counter()
            intake = Intake(s)
            for i in range(0, len(cases), 50):
                chunk = cases[i:i + 50]
                await asyncio.gather(*(self._send(exchange, intake, c) for c in chunk))
                if (i // 50) % 40 == 39:
                    self.progress(f"  published {i + len(chunk):,}/{len(cases):,}, "
                                  f"answers so far {self.seen.received:,}")
            self.progress(f"  published all {len(cases):,} in "
                          f"{time.perf_counter() - started:.1f}s")
            await self._wait(cases)
        finally:
            logging.getLogger("app.hub").removeHandler(watch)
            await agency.close()
            await admin.close()
        return self.seen

    async def _send(self, exchange: aio_pika.abc.AbstractExchange, intake: Intake,
                    case: Case) -> None:
        body = case.payload()
        amqp_type = (case.amqp_type if case.set_type else case.kind)
        if amqp_type is not None and case.type_suffix:
            amqp_type += case.type_suffix
        if case.direct:
            await intake.process(self.pool, Inbound(
                body=body, sender=self.symbol, message_id=case.blank_message_id,
                routing_key=case.kind, content_type=case.content_type, message_type=amqp_type,
                correlation_id=case.id))
            return
        message = aio_pika.Message(
            body=body, content_type=case.content_type,
            message_id=case.id + case.message_id_suffix,
            correlation_id=case.id + case.correlation_suffix,
            type=amqp_type, user_id=None if case.anonymous else self.symbol,
            headers=case.headers or None, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await exchange.publish(message, routing_key=case.kind)

    async def _on_answer(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            self.seen.received += 1
            if not (message.type or "").endswith("Confirmation"):
                return   # the fuzzer's valid requests also get their Unfilled news
            try:
                content = next(iter(json.loads(message.body).values()))
                header = content["confirmationHeader"]
            except (ValueError, StopIteration, KeyError, TypeError, AttributeError):
                content, header = {}, {}
            found = _case_of(message.correlation_id, header.get("requestingAgencyRequestId"))
            if found is None:
                return
            error = content.get("errorData") or {}
            self.seen.answers[found].append(Answer(
                message.type, header.get("messageStatus"), error.get("errorType"),
                error.get("errorValue"), "hub-transaction-id" in (message.headers or {})))

    async def _on_dead(self, message: AbstractIncomingMessage) -> None:
        async with message.process():
            headers = message.headers or {}
            found = _case_of(headers.get("x-illhub-original-message-id"),
                             message.correlation_id)
            if found:
                self.seen.hub_dead[found].append(str(headers.get("x-illhub-reason") or ""))

    async def _dead_letters(self) -> None:
        rows = await self.pool.fetch(
            "SELECT message_id, properties->>'correlation_id' AS correlation_id, reason "
            "FROM dead_letter WHERE message_id LIKE $1 OR properties->>'correlation_id' LIKE $1",
            f"fz-{self.run_tag}-%")
        self.seen.dead_letters.clear()
        for r in rows:
            found = _case_of(r["message_id"], r["correlation_id"])
            if found:
                self.seen.dead_letters[found].append(r["reason"])

    def _complete(self, case: Case) -> bool:
        outcome = case.expect.outcome
        if outcome in ("ok", "error", "dead") and not self.seen.answers.get(case.id):
            return False
        return outcome not in ("dead", "silent") or bool(
            self.seen.dead_letters.get(case.id) and self.seen.hub_dead.get(case.id))

    async def _wait(self, cases: list[Case]) -> None:
        """Until every case has its answer (and dead letter), or nothing moves for a while."""
        last_progress, last_count, last_line = time.monotonic(), -1, time.monotonic()
        while True:
            await self._dead_letters()
            missing = [c for c in cases if not self._complete(c)]
            if not missing:
                break
            now = time.monotonic()
            if len(missing) != last_count:
                last_count, last_progress = len(missing), now
            elif now - last_progress > self.stall_seconds:
                self.progress(f"  {len(missing):,} cases still unanswered after "
                              f"{self.stall_seconds:.0f}s without progress; giving up on them")
                break
            if now - last_line > 5:
                self.progress(f"  waiting: {len(cases) - len(missing):,}/{len(cases):,} "
                              "cases answered")
                last_line = now
            await asyncio.sleep(0.25)
        # Everything the hub wrote for the fuzzer has gone out: late duplicates would be here.
        for _ in range(400):
            pending = await self.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NULL AND routing_key = $1",
                self.symbol)
            sent = await self.pool.fetchval(
                "SELECT count(*) FROM outbox WHERE published_at IS NOT NULL "
                "AND routing_key = $1", self.symbol)
            if pending == 0 and self.seen.received >= sent:
                break
            await asyncio.sleep(0.05)
        await self._dead_letters()


# --------------------------------------------------------------------------------------
# Checking
# --------------------------------------------------------------------------------------

def check(case: Case, seen: Observed) -> str | None:
    """What is wrong with the hub's handling of `case`, or None."""
    e = case.expected()
    answers = seen.answers.get(case.id, [])
    dead = seen.dead_letters.get(case.id, [])
    queued = seen.hub_dead.get(case.id, [])
    if seen.crashes.get(case.id):
        return f"the hub raised on it {seen.crashes[case.id]} time(s) instead of answering"
    if e.outcome == "silent":
        if answers:
            return f"answered ({answers[0].status}) though there is nobody to answer"
    elif len(answers) != 1:
        return f"{len(answers)} confirmations, expected exactly one"
    if e.outcome in ("dead", "silent"):
        if len(dead) != 1:
            return f"{len(dead)} rows in dead_letter, expected one"
        if not queued or not all(queued):
            return "no message with an x-illhub-reason on hub.dead"
        if not all(n in dead[0] for n in e.names) or (
                e.any_of and not any(n in dead[0] for n in e.any_of)):
            return f"dead letter reason {dead[0][:200]!r} does not say {e.names or e.any_of}"
    elif dead:
        return f"went to the dead letters ({dead[0][:120]!r}) but is not poison"
    if e.outcome == "silent":
        return None
    a = answers[0]
    if a.kind != CONFIRMATION[case.kind]:
        return f"answered with {a.kind}, expected {CONFIRMATION[case.kind]}"
    if e.outcome == "ok":
        if a.status != "OK":
            return f"refused valid input: {a.error_type}: {(a.error_value or '')[:300]}"
        return None
    if a.status != "ERROR":
        return f"accepted ({a.status}); expected {'/'.join(e.error_types)} naming {e.names}"
    value = a.error_value or ""
    if a.error_type not in e.error_types:
        return f"errorType {a.error_type} ({value[:200]!r}); expected {'/'.join(e.error_types)}"
    if not all(n in value for n in e.names) or (
            e.any_of and not any(n in value for n in e.any_of)):
        return f"errorValue {value[:300]!r} does not name {e.names or e.any_of}"
    if len(value) > ERROR_VALUE_LIMIT:  # the hub cuts longer ones: unreadable as an answer
        return f"errorValue is {len(value):,} characters long"
    if case.leak_check and (a.transaction_header or "ILL-" in value):
        return f"the answer reveals another agency's transaction: {value[:200]!r}"
    return None


def outcome_of(case: Case, seen: Observed) -> str:
    if seen.crashes.get(case.id):
        return "crash"
    answers = seen.answers.get(case.id, [])
    if seen.dead_letters.get(case.id):
        return "dead" if answers else "silent"
    if not answers:
        return "lost"
    return "ok" if answers[0].status == "OK" else "error"


@dataclass
class Report:
    cases: int
    counts: dict[str, Counter[str]]
    failures: list[tuple[Case, str]]

    @property
    def refusals(self) -> int:
        return sum(c[o] for c in self.counts.values() for o in ("error", "dead", "silent"))

    def table(self) -> str:
        columns = ("ok", "error", "dead", "silent", "lost", "crash")
        lines = [f"{'category':<20}{'cases':>7}" + "".join(f"{c:>8}" for c in columns)
                 + f"{'wrong':>8}"]
        wrong = Counter(case.category for case, _ in self.failures)
        total: Counter[str] = Counter()
        for category in CATEGORIES:
            counts = self.counts.get(category, Counter())
            n = sum(counts.values())
            if not n:
                continue
            total.update(counts)
            lines.append(f"{category:<20}{n:>7,}" + "".join(f"{counts[c]:>8,}" for c in columns)
                         + f"{wrong[category]:>8,}")
        lines.append(f"{'total':<20}{sum(total.values()):>7,}"
                     + "".join(f"{total[c]:>8,}" for c in columns) + f"{len(self.failures):>8,}")
        return "\n".join(lines)

    def failure_lines(self, limit: int = 30) -> list[str]:
        return [f"{case.id} [{case.category}] {case.note[:100]}: {problem}"
                for case, problem in self.failures[:limit]]


def report(cases: list[Case], seen: Observed) -> Report:
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    failures = []
    for case in cases:
        counts[case.category][outcome_of(case, seen)] += 1
        problem = check(case, seen)
        if problem:
            failures.append((case, problem))
    return Report(len(cases), counts, failures)


# --------------------------------------------------------------------------------------
# The other agencies: live transactions the fuzzer must not be able to touch
# --------------------------------------------------------------------------------------

async def seed_transactions(requester: AgencyClient, supplier: AgencyClient, issn: str,
                            count: int = 4) -> list[str]:
    """`count` requests of `requester` forwarded to `supplier`; half of them WillSupply."""
    ids = [f"OTHER-{secrets.token_hex(4)}" for _ in range(count)]
    for n, rid in enumerate(ids):
        await requester.send("request", _request(requester.symbol, rid, issn, n))
        await _expect(requester, "requestConfirmation")
        await _expect(requester, "supplyingAgencyMessage")      # ExpectToSupply
        await _expect(supplier, "request")
        if n % 2 == 0:
            await supplier.send("supplyingAgencyMessage", _will_supply(
                supplier.symbol, requester.symbol, rid))
            await _expect(supplier, "supplyingAgencyMessageConfirmation")
            await _expect(requester, "supplyingAgencyMessage")  # WillSupply, relayed
    return ids


async def _expect(client: AgencyClient, kind: str) -> None:
    got = await client.receive(30)
    if got.kind != kind:
        raise AssertionError(f"{client.symbol} expected {kind}, got {got.kind}: {got.body}")
    status = got.content.get("confirmationHeader", {}).get("messageStatus")
    if status == "ERROR":
        raise AssertionError(f"{client.symbol}: {got.body}")


def _request(symbol: str, rid: str, issn: str, n: int) -> dict[str, Any]:
    return {"request": {
        "header": {"requestingAgencyId": agency_id(symbol), "timestamp": "2026-11-24T08:00:00Z",
                   "requestingAgencyRequestId": rid},
        "bibliographicInfo": {"title": "大学图书馆学报", "bibliographicItemId": [
            {"bibliographicItemIdentifier": issn, "bibliographicItemIdentifierCode": "ISSN"}]},
        "serviceInfo": {"serviceType": "Copy", "serviceLevel": "Normal"},
        "patronInfo": {"patronId": f"P-{rid}-{n}"}}}


def _will_supply(supplier: str, requester: str, rid: str) -> dict[str, Any]:
    return {"supplyingAgencyMessage": {
        "header": {"supplyingAgencyId": agency_id(supplier),
                   "requestingAgencyId": agency_id(requester),
                   "timestamp": "2026-11-24T08:00:00Z", "requestingAgencyRequestId": rid},
        "messageInfo": {"reasonForMessage": "RequestResponse"},
        "statusInfo": {"status": "WillSupply", "lastChange": "2026-11-24T08:00:00Z"}}}


async def snapshot(pool: asyncpg.Pool, requester: str) -> dict[str, list[str]]:
    """Everything the hub keeps about `requester`'s transactions, as comparable text."""
    ids = [r["id"] for r in await pool.fetch(
        "SELECT id FROM ill_transaction WHERE requester = $1 ORDER BY id", requester)]
    queries = {
        "ill_transaction": "SELECT row_to_json(t)::text FROM ill_transaction t "
                           "WHERE id = ANY($1) ORDER BY id",
        "rota_entry": "SELECT row_to_json(r)::text FROM rota_entry r "
                      "WHERE transaction_id = ANY($1) ORDER BY transaction_id, position",
        "audit_log": "SELECT row_to_json(a)::text FROM audit_log a "
                     "WHERE transaction_id = ANY($1) ORDER BY id",
        "ledger_entry": "SELECT row_to_json(e)::text FROM ledger_entry e "
                        "WHERE transaction_id = ANY($1) ORDER BY id",
    }
    return {name: [r[0] for r in await pool.fetch(sql, ids)] for name, sql in queries.items()}


async def still_routing(requester: AgencyClient, supplier: AgencyClient, issn: str) -> None:
    """The hub is alive after the storm: a new request is confirmed and forwarded."""
    rid = f"AFTER-{secrets.token_hex(4)}"
    await requester.send("request", _request(requester.symbol, rid, issn, 99))
    await _expect(requester, "requestConfirmation")
    await _expect(supplier, "request")


@dataclass
class Run:
    """Cases drawn for the targets, published, checked."""

    report: Report
    seconds: float


async def fuzz(settings: Settings, pool: asyncpg.Pool, me: tuple[str, str], targets: Targets,
               count: int, seed_value: int, progress: Progress | None = None,
               stall_seconds: float = 60.0) -> Run:
    say = progress or (lambda _line: None)
    tag = secrets.token_hex(3)
    started = time.perf_counter()
    cases = draw_cases(targets, count, seed_value)
    for n, case in enumerate(cases):
        case.id = case_id(tag, n)
    say(f"drew {len(cases):,} cases in {time.perf_counter() - started:.1f}s "
        f"(hypothesis, seed {seed_value})")
    fuzzer = Fuzzer(settings, pool, *me, progress=say, stall_seconds=stall_seconds)
    started = time.perf_counter()
    seen = await fuzzer.run(cases, tag)
    return Run(report(cases, seen), time.perf_counter() - started)


# --------------------------------------------------------------------------------------
# The full run (its own database, broker prefix and agencies)
# --------------------------------------------------------------------------------------

async def main(args: argparse.Namespace, base: Settings | None = None) -> int:
    """The full run on the servers of `base` (default: the settings from the environment)."""


    # One warning per dead letter would bury the progress lines.
    logging.getLogger("broker.intake").setLevel(logging.ERROR)
    base = base or Settings()
    run = secrets.token_hex(3)
    url = with_database(base.database_url, f"illhub_fuzz_{run}")
    await create_database(url)
    # Own database, prefix and agencies; classic queues, as in the tests (quiet on a
    # small machine; the intake is the same).
    settings = base.updated(
        database__url=url, amqp__name_prefix=f"fuzz{run}.", hub_symbol=f"F{run}:HUB",
        amqp__queue_type="classic", outbox__poll_seconds=0.05, smtp__security="none")
    users: list[str] = []
    failed = True
    try:
        await migrate(url, report=lambda _m: None)
        pool = await asyncpg.create_pool(url, min_size=1, max_size=6)
        password = secrets.token_urlsafe(12)
        symbols = {label: f"F{run}:{label}" for label in ("FUZZER", "LIB", "SUP")}
        for label, symbol in symbols.items():
            roles = ("supplier",) if label == "SUP" else ("requester", "supplier")
            await add(settings, pool, NewAgency(symbol=symbol, name=f"模糊测试 {label}",
                                                roles=roles, password=password,
                                                province="北京", city="北京"))
            users.append(symbol)
        issn = issn_of(int(run, 16))
        await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES "
                           "('issn', $1, $2)", issn, symbols["SUP"])
        hub = Hub(settings, delivery=False)
        await hub.start()
        lib = AgencyClient(settings, symbols["LIB"], password)
        sup = AgencyClient(settings, symbols["SUP"], password)
        await lib.connect()
        await sup.connect()
        theirs = await seed_transactions(lib, sup, issn)
        before = await snapshot(pool, symbols["LIB"])
        print(f"other agencies: {len(theirs)} live transactions of {symbols['LIB']} "
              f"with {symbols['SUP']}")
        targets = Targets(me=symbols["FUZZER"], requester=symbols["LIB"],
                          supplier=symbols["SUP"], their_requests=tuple(theirs),
                          hub=settings.hub_symbol, limit=settings.intake.max_message_bytes)
        result = await fuzz(settings, pool, (symbols["FUZZER"], password), targets,
                            args.messages, args.seed, progress=lambda line: print(line,
                                                                                  flush=True))
        after = await snapshot(pool, symbols["LIB"])
        await still_routing(lib, sup, issn)
        print(f"\n{result.report.cases:,} hostile messages in {result.seconds:.1f}s "
              f"({result.report.cases / result.seconds:,.0f}/s); "
              f"{result.report.refusals:,} refused (error confirmation or dead letter)\n")
        print(result.report.table())
        print(f"\nother agencies' transactions unchanged: {before == after}")
        print("hub still routing after the run: yes (a new request was confirmed and forwarded)")
        for line in result.report.failure_lines():
            print("WRONG", line)
        failed = bool(result.report.failures) or before != after
        await lib.close()
        await sup.close()
        await hub.stop()
        await pool.close()
    finally:
        async with Management(settings.amqp.management_url.get_secret_value()) as mgmt:
            await mgmt.remove_scratch(settings.vhost, settings.amqp.name_prefix, users)
        await drop_database(url)
    return 1 if failed else 0


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--messages", type=int, default=10_000, help="cases to send")
    parser.add_argument("--seed", type=int, default=18626, help="hypothesis seed")
    return parser


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(asyncio.run(main(add_arguments(argparse.ArgumentParser(
        prog="bench.fuzz", description=__doc__.splitlines()[0])).parse_args())))
