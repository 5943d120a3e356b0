"""The ISO 18626 conformance kit: `run.py peer check` against `run.py peer mock`.

The check passes every step against the mock as it is, in both roles and both versions,
and names each deviation of a deliberately broken mock (`--break FAULT`) exactly: the
element, what is wrong with it and the rule. These run on loopback HTTP only: the
check's listener stands where the hub would, the mock POSTs its messages there.
The last tests run both as `run.py` commands against a registered agency, and the mock
against a real hub over HTTP and over AMQP.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from app.conformance.report import as_markdown, failures, write_report
from app.conformance.rules import RULES
from app.conformance.runner import Report, run_check
from app.conformance.session import Options, Outcome, Target
from illclient.client import AgencyClient
from schemas.iso18626_codes import ErrorType, MessageType, Status
from sim.peer_mock import MockConfig, PeerMock, Reply, Send
from sim.peer_scenarios import KEYWORDS, Fault, scenario_of
from tests.support import messages
from tests.support.cli import hub_env, run
from tests.support.hub import Party
from tests.support.names import fresh_issn
from tests.support.paths import ROOT
from tests.support.servers import eventually, free_port

PEER = "TEST:PEER"
HUB = "TEST:HUB"
PASSWORD = "mock-password"
BOTH = ("supplier", "requester")

STEPS = [
    ("supplier", "loan", "new request and confirmation"),
    ("supplier", "loan", "ExpectToSupply/WillSupply"),
    ("supplier", "loan", "Loaned"),
    ("supplier", "loan", "StatusRequest"),
    ("supplier", "loan", "notification"),
    ("supplier", "loan", "Loaned and return"),
    ("supplier", "copy", "CopyCompleted"),
    ("supplier", "unfilled", "Unfilled"),
    ("supplier", "retry", "RetryPossible and Retry"),
    ("supplier", "cancel", "Cancel"),
    ("requester", "loan", "new request and confirmation"),
    ("requester", "loan", "ExpectToSupply/WillSupply"),
    ("requester", "loan", "notification"),
    ("requester", "loan", "Loaned and return"),
    ("requester", "copy", "CopyCompleted"),
    ("requester", "unfilled", "Unfilled"),
    ("requester", "retry", "RetryPossible and Retry"),
    ("requester", "cancel", "Cancel"),
]

Check = Callable[..., Awaitable[Report]]


async def password_ok(user: str, password: str) -> bool:
    return (user, password) == (PEER, PASSWORD)


@pytest.fixture
async def check() -> AsyncIterator[Check]:
    """Run the check against a fresh mock: `await check(faults, roles=..., only=...)`."""
    mocks: list[PeerMock] = []

    async def _check(*faults: Fault, roles: tuple[str, ...] = BOTH, version: str = "1.2",
                     only: tuple[str, ...] | None = None, password: str | None = PASSWORD,
                     delay: float = 0.01, wait: float = 5.0,
                     mock_version: str | None = None,
                     mock_class: type[PeerMock] = PeerMock) -> Report:
        listen = free_port()
        mock = mock_class(MockConfig(PEER, password=password, version=mock_version or version,
                                     delay=delay, faults=frozenset(faults),
                                     hub_url=f"http://127.0.0.1:{listen}/iso18626"))
        mocks.append(mock)
        endpoint = await mock.start_http()
        options = Options(partner=HUB, hub_symbol=HUB, wait=wait, grace=0.2, token="T",
                          only=frozenset(only) if only else None)
        return await run_check(Target(PEER, endpoint.url, version), options, roles=roles,
                               listen=("127.0.0.1", listen), authenticate=password_ok,
                               say=lambda _line: None)

    yield _check
    for mock in mocks:
        await mock.stop()


# ---- against the mock as it is ----------------------------------------------------------

@pytest.mark.parametrize("version", ["1.2", "2021"])
async def test_the_check_passes_every_step_against_the_mock(check: Check, version: str) -> None:
    report = await check(version=version)
    assert [(s.role, s.flow, s.name) for s in report.steps] == STEPS
    assert [s.title for s in report.steps if s.outcome is not Outcome.PASS] == []
    assert [v.line for s in report.steps for v in s.verdicts] == []  # not even a warning
    assert (report.exit_code, report.result) == (0, "passed")
    # Every step shows what went each way: something sent or received, answers judged.
    assert all(s.exchanges for s in report.steps)
    loan = report.steps[5]
    assert [e.summary for e in loan.exchanges] == [
        "requestingAgencyMessage Received on T-s-loan",
        "requestingAgencyMessageConfirmation OK (HTTP 200)",
        "requestingAgencyMessage ShippedReturn on T-s-loan",
        "requestingAgencyMessageConfirmation OK (HTTP 200)",
        "supplyingAgencyMessage LoanCompleted (StatusChange) on T-s-loan"]
    sent = loan.exchanges[0].document or ""
    assert f'ill:version="{version}"' in sent and "<action>Received</action>" in sent


# ---- against a broken mock: each deviation named ----------------------------------------

CONF = "ISO 18626 confirmations"
BROKEN: list[tuple[Fault, tuple[str, ...], tuple[str, ...], list[str]]] = [
    (Fault.CONFIRMATION_TYPE, ("supplier",), ("copy",), [
        "supplier · copy · CopyCompleted: ISO18626Message: a "
        "supplyingAgencyMessageConfirmation answers the request; expected requestConfirmation "
        f"(CONF-TYPE, {CONF})"]),
    (Fault.MISSING_MESSAGE_STATUS, ("supplier",), ("copy",), [
        "supplier · copy · CopyCompleted: requestConfirmation.confirmationHeader."
        "messageStatus: required element missing (XSD, ISO 18626 1.2 XSD)"]),
    (Fault.WRONG_REQUEST_ID, ("supplier",), ("copy",), [
        "supplier · copy · CopyCompleted: requestConfirmation.confirmationHeader."
        f"requestingAgencyRequestId: 'T-s-copy-WRONG' does not echo 'T-s-copy' (ECHO, {CONF})"]),
    (Fault.INVALID_TIMESTAMP, ("supplier",), ("copy",), [
        "supplier · copy · CopyCompleted: requestConfirmation.confirmationHeader."
        "timestampReceived: 'yesterday' is not a valid xs:dateTime such as "
        "2024-05-01T08:30:00Z (XSD, ISO 18626 1.2 XSD)"]),
    (Fault.STALE_TIMESTAMP, ("supplier",), ("copy",), [
        "supplier · copy · CopyCompleted: requestConfirmation.confirmationHeader.timestamp: "
        "2001-01-01T00:00:00Z is before the request it confirms was sent (TIME, ISO 18626 "
        "header)",
        "supplier · copy · CopyCompleted: requestConfirmation.confirmationHeader."
        "timestampReceived: 2001-01-01T00:00:00Z is before the request it confirms was sent "
        "(TIME, ISO 18626 header)"]),
    (Fault.WRONG_ECHO, ("requester",), ("copy",), [
        "requester · copy · CopyCompleted: supplyingAgencyMessageConfirmation."
        f"reasonForMessage: 'Notification' does not echo 'RequestResponse' (ECHO, {CONF})"]),
    (Fault.HTTP_ERROR, ("supplier",), ("cancel",), [
        "supplier · cancel · Cancel: HTTP status: 500 answers the requestingAgencyMessage; "
        "expected 200 with a requestingAgencyMessageConfirmation (HTTP, ISO 18626 over "
        "HTTP)"]),
    (Fault.STATUS_ORDER, ("supplier",), ("loan",), [
        "supplier · loan · StatusRequest: supplyingAgencyMessage.statusInfo.status: "
        "'WillSupply' after Loaned: a status the request has passed already (the hub keeps "
        "Loaned) (ORDER, ISO 18626 status model)",
        "supplier · loan · StatusRequest: supplyingAgencyMessage.statusInfo.status: "
        "'WillSupply' in a StatusRequestResponse; the request is Loaned (STATUS-ANSWER, "
        "ISO 18626 StatusRequest)"]),
    (Fault.WRONG_AGENCY, ("supplier",), ("unfilled",), [
        "supplier · unfilled · Unfilled: supplyingAgencyMessage.header.supplyingAgencyId: "
        "'TEST:PEER-OTHER' is not 'TEST:PEER', the supplier of the request (IDS, ISO 18626 "
        "header)"]),
    (Fault.NO_NOTE, ("supplier",), ("loan",), [
        "supplier · loan · Loaned: supplyingAgencyMessage.messageInfo.note: missing on a "
        "Notification (NOTE, ISO 18626 Notification)"]),
    (Fault.CANCEL_ANSWER, ("supplier",), ("cancel",), [
        "supplier · cancel · Cancel: supplyingAgencyMessage.messageInfo.answerYesNo: 'N' "
        "with status 'Cancelled'; a Cancel refused keeps the status WillSupply (CANCEL, "
        "ISO 18626 CancelResponse)"]),
    (Fault.STATUS_ANSWER, ("supplier",), ("loan",), [
        "supplier · loan · StatusRequest: supplyingAgencyMessage.statusInfo.status: "
        "'WillSupply' in a StatusRequestResponse; the request is Loaned (STATUS-ANSWER, "
        "ISO 18626 StatusRequest)"]),
    (Fault.RETRY_NO_COST, ("supplier",), ("retry",), [
        "supplier · retry · RetryPossible and Retry: supplyingAgencyMessage.messageInfo."
        "offeredCosts: missing with reasonRetry CostExceedsMaxCost (RETRY, ISO 18626 retry)"]),
    (Fault.RETRY_NO_PREVIOUS, ("requester",), ("retry",), [
        "requester · retry · RetryPossible and Retry: request.serviceInfo."
        "requestingAgencyPreviousRequestId: missing on a Retry (RETRY, ISO 18626 retry)"]),
    (Fault.EARLY_RETURN, ("requester",), ("loan",), [
        "requester · loan · Loaned and return: requestingAgencyMessage.action: 'Received' is "
        "not allowed after ShippedReturn (ORDER, ISO 18626 status model)"]),
]


def test_every_fault_has_a_case() -> None:
    assert {case[0] for case in BROKEN} == set(Fault)


@pytest.mark.parametrize(("fault", "roles", "only", "expected"), BROKEN,
                         ids=[case[0].value for case in BROKEN])
async def test_a_broken_mock_is_named_precisely(check: Check, fault: Fault,
                                                roles: tuple[str, ...], only: tuple[str, ...],
                                                expected: list[str]) -> None:
    report = await check(fault, roles=roles, only=only)
    assert failures(report) == expected
    assert report.exit_code == 1
    # The flow went on to its end: nothing else failed and nothing was left unrun.
    assert {s.outcome for s in report.steps} <= {Outcome.PASS, Outcome.FAIL}


async def test_a_2021_peer_is_judged_by_the_2021_xsd_and_paths(check: Check) -> None:
    report = await check(Fault.RETRY_NO_COST, Fault.INVALID_TIMESTAMP, roles=("supplier",),
                         only=("retry",), version="2021")
    assert failures(report) == [
        "supplier · retry · RetryPossible and Retry: requestConfirmation.confirmationHeader."
        "timestampReceived: 'yesterday' is not a valid xs:dateTime such as "
        "2024-05-01T08:30:00Z (XSD, ISO 18626 2021 XSD)",
        "supplier · retry · RetryPossible and Retry: supplyingAgencyMessage.retryInfo."
        "offeredCosts: missing with reasonRetry CostExceedsMaxCost (RETRY, ISO 18626 retry)",
        "supplier · retry · RetryPossible and Retry: requestConfirmation.confirmationHeader."
        "timestampReceived: 'yesterday' is not a valid xs:dateTime such as "
        "2024-05-01T08:30:00Z (XSD, ISO 18626 2021 XSD)"]


async def test_a_peer_writing_another_version_than_registered_fails_its_xsd(
        check: Check) -> None:
    report = await check(roles=("supplier",), only=("copy",), mock_version="2021")
    assert failures(report) == [
        "supplier · copy · CopyCompleted: supplyingAgencyMessage.deliveryInfo.deliveryMethod: "
        "not allowed here in 1.2: the document is ISO 18626 2021, not 1.2 as the peer is "
        "registered (XSD, ISO 18626 1.2 XSD)"]
    # Its confirmation is valid 1.2 as well: only its version attribute is wrong.
    assert [v.line for v in report.steps[0].verdicts if v.level == "WARN"] == [
        "ISO18626Message@version: '2021' declared; the document is valid ISO 18626 1.2, the "
        "peer's version (LENIENT, hub leniency)"]


class RefusingMock(PeerMock):
    async def handle(self, kind: MessageType, content: dict[str, Any], via: Send) -> Reply:
        return Reply(ok=False, error_type=ErrorType.UNRECOGNISED_DATA_VALUE,
                     error_value="request.header.requestingAgencyId: no partner TEST:HUB")


async def test_a_refused_request_fails_at_once(check: Check) -> None:
    report = await check(roles=("supplier",), only=("copy", "unfilled"), wait=30,
                         mock_class=RefusingMock)
    assert failures(report) == [
        f"supplier · {flow}: requestConfirmation.confirmationHeader.messageStatus: ERROR for "
        "a valid request (UnrecognisedDataValue: request.header.requestingAgencyId: no "
        "partner TEST:HUB) (CONF-STATUS, ISO 18626 confirmations)"
        for flow in ("copy · CopyCompleted", "unfilled · Unfilled")]
    assert report.finished is not None
    assert (report.finished - report.started).total_seconds() < 10  # no waiting for answers


async def test_a_peer_without_credentials_is_told_the_hub_would_answer_401(
        check: Check) -> None:
    report = await check(roles=("supplier",), only=("unfilled",), password=None)
    assert failures(report) == [
        "supplier · unfilled · Unfilled: HTTP Authorization: no credentials: neither HTTP "
        "Basic nor header.requestingAgencyAuthentication (AUTH, hub contract)"]


async def test_a_silent_peer_fails_the_step_that_waits(check: Check) -> None:
    report = await check(roles=("supplier",), only=("loan",), delay=1.0, wait=0.3)
    assert failures(report) == [
        "supplier · loan · ExpectToSupply/WillSupply: supplyingAgencyMessage: none with "
        "ExpectToSupply/Loaned/WillSupply within 0.3 s (ANSWER, conformance step)"]
    assert [s.outcome for s in report.steps] == [Outcome.PASS, Outcome.FAIL] + \
        [Outcome.NOT_RUN] * 4
    assert report.steps[2].not_run == "an earlier step of this flow could not go on"
    assert report.exit_code == 1


async def test_an_unreachable_peer_could_not_run() -> None:
    dead = f"http://127.0.0.1:{free_port()}/iso18626"
    report = await run_check(Target(PEER, dead), Options(HUB, HUB, wait=1, token="T"),
                             roles=BOTH, listen=("127.0.0.1", 0), say=lambda _line: None)
    assert {s.outcome for s in report.steps} == {Outcome.NOT_RUN}
    assert len(report.steps) == len(STEPS)
    assert report.steps[0].not_run is not None
    assert report.steps[0].not_run.startswith(f"the peer did not answer: {dead}: "
                                              "ClientConnectorError")
    assert (report.exit_code, report.result) == (2, "could not run")


async def test_the_report_files(check: Check, tmp_path: Path) -> None:
    report = await check(Fault.WRONG_REQUEST_ID, roles=("supplier",), only=("copy",))
    write_report(report, tmp_path / "report.json")
    data = json.loads((tmp_path / "report.json").read_text("utf-8"))
    assert (data["result"], data["exit_code"]) == ("deviations", 1)
    assert data["peer"] == {"symbol": PEER, "url": report.target.url,
                            "iso18626_version": "1.2"}
    (step,) = data["steps"]
    assert step["verdicts"][0]["rule"] == "ECHO"
    assert step["verdicts"][0]["element"] == \
        "requestConfirmation.confirmationHeader.requestingAgencyRequestId"
    assert [e["direction"] for e in step["exchanges"]] == ["sent", "received", "received"]
    assert "<requestingAgencyRequestId>T-s-copy-WRONG<" in step["exchanges"][1]["document"]
    markdown = as_markdown(report)
    assert "| supplier | copy | CopyCompleted | FAIL | 1 |" in markdown
    assert f"`{report.steps[0].verdicts[0].line}`" in markdown
    assert "| ECHO | ISO 18626 confirmations |" in markdown


# ---- the scenario keywords ---------------------------------------------------------------

def test_scenario_keywords_are_read_from_note_title_and_record_id() -> None:
    def of(note: str, **bib: str) -> object:
        return scenario_of({"serviceInfo": {"serviceType": "Loan", "note": note},
                            "bibliographicInfo": bib}, "LIB2")

    s = of("please: WILLSUPPLY_LOANED NOTIFICATION CANCEL_REJECT, thanks")
    assert (s.statuses, s.modifiers) == ([Status.WILL_SUPPLY, Status.LOANED],
                                         {"NOTIFICATION", "CANCEL_REJECT"})
    assert of("Loaned please").statuses == []            # not upper case: no keyword
    assert of("", supplierUniqueRecordId="UNFILLED").statuses == [Status.UNFILLED]
    assert of("MOCK:LIB1:UNFILLED MOCK:LIB2:COPY LOANED").statuses == [Status.COPY_COMPLETED]
    retry = of("RETRY:COST_LOANED DELAY:2")
    assert (retry.retry_reason, retry.after_retry, retry.delay) == \
        ("CostExceedsMaxCost", "LOANED", 2.0)
    assert of("ERROR:BadlyFormedMessage").error_type is ErrorType.BADLY_FORMED_MESSAGE
    assert of("ERROR").error_type is ErrorType.UNRECOGNISED_DATA_VALUE
    assert of("HTTP-ERROR-500").http_status == 500
    assert of("HTTP:503").http_status == 503
    assert of("COMPLETED").statuses == [Status.LOAN_COMPLETED]


# ---- as run.py commands, against a registered agency -------------------------------------

async def _mock_process(settings, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "run.py"), "peer", "mock", *args, cwd=ROOT,
        env=hub_env(settings), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)


async def _listening(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@pytest.fixture
async def registered(settings, make_agency, pool) -> tuple[str, str, int]:
    """An agency registered as an HTTP peer at a port where a mock will listen."""
    symbol, password = await make_agency(f"MOCK-{secrets.token_hex(3)}")
    port = free_port()
    await pool.execute("UPDATE agency SET iso18626_url = $2 WHERE symbol = $1", symbol,
                       f"http://127.0.0.1:{port}/iso18626")
    return symbol, password, port


@pytest.mark.parametrize("broken", [False, True], ids=["as-is", "broken"])
async def test_run_py_peer_check_against_run_py_peer_mock(settings, registered, tmp_path,
                                                          broken: bool) -> None:
    symbol, password, port = registered
    listen = free_port()
    extra = ["--break", "wrong-request-id"] if broken else []
    # `--password=VALUE`: a generated password may begin with "-", which argparse would
    # read as an option (the mock then exited 2 before listening, 1 run in 64).
    mock = await _mock_process(settings, "--http", str(port), "--symbol", symbol,
                               f"--password={password}", "--hub-url", f"http://127.0.0.1:{listen}/iso18626",
                               "--delay", "0.01", *extra)
    try:
        await eventually(lambda: _listening(port))
        report = tmp_path / "report.json"
        code, out, err = await run(settings, "peer", "check", symbol, "--listen",
                                   f"127.0.0.1:{listen}", "--wait", "10", "--report",
                                   str(report), *(["--only", "copy", "--as", "requester"]
                                                  if broken else []))
    finally:
        mock.terminate()
        await mock.wait()
    data = json.loads(report.read_text("utf-8"))
    if not broken:
        assert code == 0, out + err
        assert "result: passed (exit 0)" in out
        assert [(s["role"], s["flow"], s["step"], s["outcome"]) for s in data["steps"]] == \
            [(*step, "PASS") for step in STEPS]
        return
    assert code == 1, out + err
    token = data["steps"][0]["exchanges"][0]["summary"].split()[1]  # CHK-xxxxxx-s-copy
    line = (f"requestConfirmation.confirmationHeader.requestingAgencyRequestId: "
            f"'{token}-WRONG' does not echo '{token}' (ECHO, ISO 18626 confirmations)")
    assert f"FAIL  {line}" in out
    assert "result: deviations (exit 1)" in out
    assert [v["line"] for v in data["steps"][0]["verdicts"]] == [line]


async def test_run_py_peer_check_could_not_run(settings, make_agency, pool) -> None:
    code, _, err = await run(settings, "peer", "check", "NOBODY:HERE")
    assert (code, err.strip()) == (2, "error: no agency NOBODY:HERE")
    symbol, _ = await make_agency()
    code, _, err = await run(settings, "peer", "check", symbol)
    assert code == 2 and "has no ISO 18626 URL" in err
    await pool.execute("UPDATE agency SET iso18626_url = $2 WHERE symbol = $1", symbol,
                       f"http://127.0.0.1:{free_port()}/iso18626")
    code, out, _ = await run(settings, "peer", "check", symbol, "--listen", "127.0.0.1:0",
                             "--only", "copy")
    assert code == 2 and "result: could not run (exit 2)" in out


# ---- the mock against the real hub ---------------------------------------------------------

@pytest.mark.parametrize("requester_via", ["amqp", "http"])
async def test_two_mocks_through_the_hub(settings, hub, make_agency, pool,
                                         requester_via: str) -> None:
    """A requester mock and a supplier mock, one over AMQP and the other over HTTP, run a
    loan through the hub as their keywords say: WillSupply, Loaned, returned, completed."""
    issn = fresh_issn()
    mocks: dict[str, PeerMock] = {}
    for role in ("requester", "supplier"):
        symbol, password = await make_agency(f"{role[:3].upper()}-{secrets.token_hex(3)}",
                                             roles=(role,))
        mock = PeerMock(MockConfig(symbol, password=password, delay=0.01,
                                   hub_url=f"{hub.http.base_url}/iso18626"))
        mocks[role] = mock
        if (role == "requester") == (requester_via == "amqp"):
            await mock.start_amqp(settings, password)
        else:
            endpoint = await mock.start_http()
            await pool.execute("UPDATE agency SET iso18626_url = $2 WHERE symbol = $1",
                               symbol, endpoint.url)
    supplier = mocks["supplier"].config.symbol
    requester = mocks["requester"].config.symbol
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       issn, supplier)
    try:
        request_id = mocks["requester"].send_request(
            "WILLSUPPLY_LOANED", extra={"bibliographicInfo": {
                "title": "红楼梦", "bibliographicItemId": [{
                    "bibliographicItemIdentifier": issn,
                    "bibliographicItemIdentifierCode": "ISSN"}]}})

        async def completed() -> bool:
            state = await pool.fetchval("SELECT state FROM ill_transaction WHERE requester = $1 "
                                        "AND request_id = $2", requester, request_id)
            return state == "LoanCompleted"

        await eventually(completed, timeout=20)
    finally:
        for mock in mocks.values():
            await mock.stop()
    trail = [r["event"] for r in await pool.fetch(
        "SELECT a.event FROM audit_log a JOIN ill_transaction t ON t.id = a.transaction_id "
        "WHERE t.requester = $1 AND t.request_id = $2 ORDER BY a.id", requester, request_id)]
    assert trail == ["request", "forward", "status:WillSupply", "status:Loaned",
                     "action:Received", "action:ShippedReturn", "status:LoanCompleted"]
    assert f"<- request {request_id} from {requester}: WILLSUPPLY_LOANED" in \
        mocks["supplier"].history
    assert not [line for m in mocks.values() for line in m.history if "refused" in line]


async def test_a_mock_answers_a_library_over_amqp(settings, hub, make_agency, pool) -> None:
    """A library's own system (here an AMQP client) against a supplier mock alone."""
    issn = fresh_issn()
    supplier, password = await make_agency(f"SUP-{secrets.token_hex(3)}", roles=("supplier",))
    mock = PeerMock(MockConfig(supplier, password=password, delay=0.01))
    await mock.start_amqp(settings, password)
    library, library_password = await make_agency(f"LIB-{secrets.token_hex(3)}",
                                                  roles=("requester",))
    await pool.execute("INSERT INTO holding (id_type, id_value, symbol) VALUES ('issn', $1, $2)",
                       issn, supplier)
    client = AgencyClient(settings, library, library_password)
    await client.connect()
    party = Party(library, client)
    try:
        await party.send("request", messages.request(
            library, request_id="AMQP-1", issn=issn, service_type="Copy",
            serviceInfo={"serviceType": "Copy", "note": "COPY NOTIFICATION"}))
        await party.confirmed()
        await party.status("ExpectToSupply")
        copied = await party.status("CopyCompleted", "RequestResponse")
        assert copied.content["deliveryInfo"]["sentVia"] == "URL"
        note = await party.status("CopyCompleted", "Notification")
        assert "peer mock" in note.content["messageInfo"]["note"]
    finally:
        await client.close()
        await mock.stop()


def test_the_docs_list_every_keyword_fault_and_rule() -> None:
    docs = (ROOT / "docs" / "conformance.md").read_text("utf-8")
    missing = [k for k in KEYWORDS if f"`{k}`" not in docs]
    missing += [f.value for f in Fault if f"`{f.value}`" not in docs]
    missing += [r.code for r in RULES if f"| {r.code} | {r.source} |" not in docs]
    assert missing == []
