"""Asking a supplier's catalogue before routing (issue 18, broker/catalogue).

Pure: CQL quoting, reading MARCXML and ISO 20775 availability, the breaker's states
with a fake clock. Against a real SRU server (Index Data's Zebra holding real Library
of Congress MARC records, tests/support/zebra.py): available, not available, no record,
a slow catalogue (the budget holds), a dead one (the circuit opens, later checks return
without connecting), the cache, and a request routed past a supplier whose catalogue
says its copies are all on loan, with the reason in explain.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from lxml import etree

from broker.catalogue import cql, store
from broker.catalogue.breaker import Breaker, State
from broker.catalogue.checker import Catalogues
from broker.catalogue.config import CatalogueConfig, CatalogueError, Reader, parse_indexes
from broker.catalogue.records import SruError, availability, parse_response
from broker.dispatch.explain import explain
from broker.holdings import isbn10_to_13
from schemas.settings import Catalogues as CatalogueSettings
from tests.support import cli, messages
from tests.support.servers import free_port
from tests.support.zebra import RECORDS, Zebra

# The test records (tests/data/marc/README.md): ISBN-10 in the records, ISBN-13 asked.
ON_SHELF = isbn10_to_13("0152038655")  # Sandburg, Arithmetic: 3 items, 2 Available
ON_LOAN = isbn10_to_13("0836968433")  # The religious teachers of Greece: 2 items On loan
NO_ITEMS = isbn10_to_13("0839108826")  # Reconstruction tomography: 852 only, no 876
ZAIJIA = isbn10_to_13("0879832355")  # Four psalms: 1 item, status 在架 (on the shelf)
UNKNOWN = "9787301150894"  # in no record

SRU1 = "http://www.loc.gov/zing/srw/"


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


# ---- pure ---------------------------------------------------------------------------


def test_cql_terms_are_quoted_and_escaped() -> None:
    assert cql.quote("9787301150894") == '"9787301150894"'
    # Quotes, backslashes and masking characters cannot change the query.
    assert cql.quote('x" or dc.title="*') == r'"x\" or dc.title=\"\*"'
    assert cql.quote("a\\b?c^") == r'"a\\b\?c\^"'
    assert cql.query([("bath.isbn", "1"), ("bath.issn", "2")]) == \
        'bath.isbn="1" or bath.issn="2"'


def test_an_isbn_13_is_also_asked_as_isbn_10_and_unindexed_types_are_left_out() -> None:
    assert cql.isbn10_of(ON_SHELF) == "0152038655"
    assert cql.isbn10_of("9791234567896") is None  # 979: no ISBN-10 exists
    assert cql.isbn10_of(isbn10_to_13("080442957X")) == "080442957X"
    pairs = cql.terms([("isbn", ON_SHELF), ("issn", "1001-8867"), ("title_key", "x")],
                      {"isbn": "bath.isbn"})
    assert pairs == [("bath.isbn", ON_SHELF), ("bath.isbn", "0152038655")]


def test_catalogue_settings_are_checked() -> None:
    ok = CatalogueConfig("CALIS:1", "http://127.0.0.1:210/Default")
    assert ok.item_tag == ("876", "j") and ok.available("  available ")
    for bad, word in ((dict(sru_url="ftp://x/y"), "SRU URL"), (dict(sru_version="3"), "1.2"),
                      (dict(item_field="876j"), "TAG$CODE"), (dict(available_values=()), "shelf"),
                      (dict(indexes={"doi": "dc.identifier"}), "isbn"),
                      (dict(indexes={"isbn": 'bath.isbn="x"'}), "CQL index"),
                      (dict(budget_ms=0), "above 0")):
        with pytest.raises(CatalogueError, match=word.replace("$", r"\$")):
            CatalogueConfig("CALIS:1", **{"sru_url": "http://h/db", **bad})
    assert parse_indexes(["isbn=bath.isbn", "ISSN = dc.identifier"]) == \
        {"isbn": "bath.isbn", "issn": "dc.identifier"}
    with pytest.raises(CatalogueError, match="TYPE=INDEX"):
        parse_indexes(["isbn"])


def _sru(*records: etree._Element | str, count: int | None = None) -> bytes:
    """A searchRetrieveResponse around the given records (as Zebra sends them)."""
    root = etree.Element(f"{{{SRU1}}}searchRetrieveResponse", nsmap={"zs": SRU1})
    etree.SubElement(root, f"{{{SRU1}}}numberOfRecords").text = str(
        len(records) if count is None else count)
    holder = etree.SubElement(root, f"{{{SRU1}}}records")
    for r in records:
        data = etree.SubElement(etree.SubElement(holder, f"{{{SRU1}}}record"),
                                f"{{{SRU1}}}recordData")
        if isinstance(r, str):
            data.text = r  # recordPacking=string
        else:
            data.append(r)
    return etree.tostring(root)


def _record(control: str) -> etree._Element:
    tree = etree.parse(str(RECORDS))
    for r in tree.getroot():
        if r[1].text and r[1].text.strip() == control:
            return r
    raise LookupError(control)


MARC = CatalogueConfig("CALIS:1", "http://h/db")


def test_marc_items_give_the_availability() -> None:
    answer = parse_response(_sru(_record("92005291")))
    assert availability(MARC, answer, "isbn x") == \
        availability(MARC, answer, "isbn x")  # pure
    got = availability(MARC, answer, "isbn x")
    assert (got.available, got.reason) == (True, "checked: available (2 of 3 items on shelf)")
    got = availability(MARC, parse_response(_sru(_record("72002565"))), "isbn x")
    assert (got.available, got.reason) == (False, "checked: not available (all 2 items On loan)")
    got = availability(MARC, parse_response(_sru(_record("77000348"))), "isbn x")
    assert got.available is None and "no items (876$j)" in got.reason
    # Packed as a string, the record reads the same; 在架 counts once configured.
    packed = etree.tostring(_record("80082329"), encoding="unicode")
    zaijia = CatalogueConfig("CALIS:1", "http://h/db", available_values=("Available", "在架"))
    assert availability(zaijia, parse_response(_sru(packed)), "isbn x").available is True
    assert availability(MARC, parse_response(_sru(packed)), "isbn x").reason == \
        "checked: not available (all 1 items 在架)"


def test_no_record_is_not_proof_of_absence() -> None:
    got = availability(MARC, parse_response(_sru()), f"isbn {UNKNOWN}")
    assert (got.available, got.reason) == (None, f"checked: no record for isbn {UNKNOWN}")


ISO = "info:ofi/fmt:xml:xsd:iso20775"


def _holdings(copies: list[str] | None = None, summary: tuple[int, int] | None = None,
              namespace: str | None = ISO) -> etree._Element:
    q = (lambda n: f"{{{namespace}}}{n}") if namespace else (lambda n: n)
    root = etree.Element(q("holdings"))
    simple = etree.SubElement(etree.SubElement(root, q("holding")), q("holdingSimple"))
    if summary:
        s = etree.SubElement(simple, q("copiesSummary"))
        etree.SubElement(s, q("copiesCount")).text = str(summary[0])
        etree.SubElement(etree.SubElement(s, q("status")), q("availableCount")).text = \
            str(summary[1])
    for code in copies or []:
        c = etree.SubElement(simple, q("copyInformation"))
        status = etree.SubElement(etree.SubElement(c, q("availabilityInformation")), q("status"))
        etree.SubElement(status, q("availabilityStatus")).text = code
    return root


ISO_CONFIG = CatalogueConfig("CALIS:1", "http://h/db", record_schema="iso20775",
                             reader=Reader.ISO20775)


@pytest.mark.parametrize(("doc", "available", "reason"), [
    (_holdings(["1", "2", "2"]), True, "checked: available (1 of 3 copies on shelf)"),
    (_holdings(["2", "2"], namespace=None), False,
     "checked: not available (all 2 copies not available)"),
    (_holdings(summary=(4, 0)), False, "checked: not available (all 4 copies not available)"),
    (_holdings(summary=(4, 1), copies=["0"]), True,
     "checked: available (1 of 4 copies on shelf)"),
    (_holdings(["3", "2"]), None, "checked: availability unknown (2 copies, 1 possibly available)"),
    (_holdings([]), None, "checked: the holdings give no availability"),
])
def test_iso20775_holdings_give_the_availability(doc: etree._Element, available: bool | None,
                                                 reason: str) -> None:
    got = availability(ISO_CONFIG, parse_response(_sru(doc)), "isbn x")
    assert (got.available, got.reason) == (available, reason)


def test_a_diagnostic_or_a_wrong_answer_is_an_error_not_an_answer() -> None:
    diag = (b'<zs:searchRetrieveResponse xmlns:zs="http://www.loc.gov/zing/srw/">'
            b'<zs:numberOfRecords>0</zs:numberOfRecords><zs:diagnostics>'
            b'<diagnostic xmlns="http://www.loc.gov/zing/srw/diagnostic/">'
            b'<uri>info:srw/diagnostic/1/66</uri><message>Unknown schema for retrieval'
            b'</message><details>marc21</details></diagnostic></zs:diagnostics>'
            b'</zs:searchRetrieveResponse>')
    with pytest.raises(SruError, match="diagnostic 66 Unknown schema for retrieval"):
        parse_response(diag)
    with pytest.raises(SruError, match="not XML"):
        parse_response(b"<html><body>Bad gateway")
    with pytest.raises(SruError, match="explainResponse"):
        parse_response(b"<explainResponse/>")
    with pytest.raises(SruError, match="MARCXML"):
        availability(MARC, parse_response(_sru(_holdings(["1"]))), "isbn x")


def test_entities_and_dtds_in_an_answer_are_not_expanded() -> None:
    evil = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
            b'<zs:searchRetrieveResponse xmlns:zs="http://www.loc.gov/zing/srw/">'
            b'<zs:numberOfRecords>&x;</zs:numberOfRecords></zs:searchRetrieveResponse>')
    with pytest.raises(SruError) as caught:
        parse_response(evil)
    assert "root:" not in str(caught.value)


def test_the_breaker_opens_after_n_failures_and_tries_once_after_the_cooldown() -> None:
    clock = Clock()
    b = Breaker(3, 60, clock)
    assert b.state is State.CLOSED and b.allow()
    b.failed()
    b.failed()
    b.succeeded()  # a success in between: the count starts again
    b.failed()
    b.failed()
    assert b.state is State.CLOSED and b.allow()
    b.failed()
    assert b.state is State.OPEN and not b.allow() and b.opened_at == clock.now
    clock.advance(59)
    assert not b.allow()
    clock.advance(1)
    assert b.state is State.HALF_OPEN
    assert b.allow() and not b.allow()  # one trial at a time
    b.failed()  # the trial failed: open again for a whole cool-down
    assert b.state is State.OPEN and b.opened_at == clock.now and not b.allow()
    clock.advance(60)
    assert b.allow()
    b.succeeded()
    assert b.state is State.CLOSED and b.allow() and b.failures == 0


# ---- against Zebra ------------------------------------------------------------------


def _catalogues(clock: Clock | None = None, **settings: Any) -> Catalogues:
    return Catalogues(CatalogueSettings(**{"budget_ms": 2000, **settings}), clock or Clock())


def _config(url: str, symbol: str = "CALIS:Z", **kw: Any) -> CatalogueConfig:
    return CatalogueConfig(symbol, url, **kw)


async def test_the_real_catalogue_answers_available_not_available_and_no_record(
        zebra: Zebra) -> None:
    cats = _catalogues()
    try:
        config = _config(zebra.url, available_values=("Available", "在架"))
        for isbn, available, reason in (
                (ON_SHELF, True, "checked: available (2 of 3 items on shelf)"),
                (ON_LOAN, False, "checked: not available (all 2 items On loan)"),
                (NO_ITEMS, None, "checked: the record has no items (876$j)"),
                (ZAIJIA, True, "checked: available (1 of 1 items on shelf)"),
                (UNKNOWN, None, f"checked: no record for isbn {UNKNOWN}")):
            got = await cats.check([config], [("isbn", isbn)])
            assert (got["CALIS:Z"].available, got["CALIS:Z"].reason) == (available, reason), isbn
    finally:
        await cats.close()


async def test_the_real_catalogue_in_iso20775_and_sru_2(zebra: Zebra) -> None:
    cats = _catalogues()
    try:
        iso = _config(zebra.url, symbol="CALIS:ISO", record_schema="iso20775",
                      reader=Reader.ISO20775)
        sru2 = _config(zebra.url, symbol="CALIS:SRU2", sru_version="2.0")
        got = await cats.check([iso, sru2], [("isbn", ON_LOAN)])
        assert got["CALIS:ISO"].reason == "checked: not available (all 2 copies not available)"
        assert got["CALIS:SRU2"].reason == "checked: not available (all 2 items On loan)"
        got = await cats.check([iso], [("isbn", ON_SHELF)])
        assert got["CALIS:ISO"].reason == "checked: available (2 of 3 copies on shelf)"
        # A schema the server does not serve: an error, not "no record".
        wrong = _config(zebra.url, symbol="CALIS:WRONG", record_schema="dc")
        got = await cats.check([wrong], [("isbn", ON_SHELF)])
        assert got["CALIS:WRONG"].available is None
        assert got["CALIS:WRONG"].reason.startswith("catalogue ")
    finally:
        await cats.close()


async def test_answers_are_cached_until_they_expire(zebra: Zebra) -> None:
    clock = Clock()
    cats = _catalogues(clock, cache_seconds=300)
    try:
        config = _config(zebra.url)
        first = await cats.check([config], [("isbn", ON_LOAN)])
        again = await cats.check([config], [("isbn", ON_LOAN)])
        assert first == again and cats.lookups == 1
        await cats.check([config], [("isbn", UNKNOWN)])  # "no record" is cached too
        await cats.check([config], [("isbn", UNKNOWN)])
        assert cats.lookups == 2
        clock.advance(301)
        await cats.check([config], [("isbn", ON_LOAN)])
        assert cats.lookups == 3
    finally:
        await cats.close()


@contextlib.asynccontextmanager
async def _slow_proxy(port: int, delay: float) -> AsyncIterator[int]:
    """A TCP proxy to the real server that holds every connection `delay` seconds first."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(delay)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def test_a_slow_catalogue_is_cut_off_at_the_budget(zebra: Zebra) -> None:
    cats = _catalogues(budget_ms=200)
    try:
        async with _slow_proxy(zebra.port, delay=1.5) as port:
            slow = _config(f"http://127.0.0.1:{port}/Default", symbol="CALIS:SLOW")
            fast = _config(zebra.url, symbol="CALIS:FAST")
            started = time.monotonic()
            got = await cats.check([slow, fast], [("isbn", ON_LOAN)])
            elapsed = time.monotonic() - started
        # The bound the budget promises (plus the check's margin and scheduling slack).
        assert elapsed < 0.2 + 0.5, elapsed
        assert got["CALIS:SLOW"].available is None
        assert got["CALIS:SLOW"].reason == "catalogue: no answer within 200 ms"
        assert got["CALIS:FAST"].available is False  # the others still answer
        assert cats.breaker("CALIS:SLOW").failures == 1
    finally:
        await cats.close()


async def test_a_dead_catalogue_opens_its_circuit_and_is_not_asked_until_the_cooldown(
        zebra: Zebra) -> None:
    clock = Clock()
    cats = _catalogues(clock, breaker_failures=2, breaker_cooldown_seconds=60)
    dead = _config(f"http://127.0.0.1:{free_port()}/Default", symbol="CALIS:DEAD")
    alive = _config(zebra.url, symbol="CALIS:ALIVE")
    try:
        for _ in range(2):
            got = await cats.check([dead], [("isbn", ON_SHELF)])
            assert got["CALIS:DEAD"].available is None
            assert got["CALIS:DEAD"].reason.startswith("catalogue not reached: ")
        assert cats.lookups == 2
        got = await cats.check([dead, alive], [("isbn", ON_SHELF)])
        assert got["CALIS:DEAD"].reason == ("catalogue not asked: circuit open since "
                                            "2026-11-02 08:00:00Z after 2 failures")
        assert got["CALIS:ALIVE"].available is True
        assert cats.lookups == 3  # the alive one only: the dead one was not connected to
        clock.advance(61)  # half-open: asked once more, fails, open again
        got = await cats.check([dead], [("isbn", ON_SHELF)])
        assert got["CALIS:DEAD"].reason.startswith("catalogue not reached: ")
        assert cats.lookups == 4
        got = await cats.check([dead], [("isbn", ON_SHELF)])
        assert "circuit open since 2026-11-02 08:01:01Z" in got["CALIS:DEAD"].reason
        assert cats.lookups == 4
    finally:
        await cats.close()


# ---- routing ------------------------------------------------------------------------


async def test_a_supplier_whose_catalogue_says_on_loan_is_asked_after_one_that_holds_it(
        zebra: Zebra, network: Any, pool: Any) -> None:
    req, sh, js = network["req"], network["sh"], network["js"]
    await pool.executemany(
        "INSERT INTO holding (id_type, id_value, symbol) VALUES ('isbn', $1, $2)",
        [(ON_LOAN, sh.symbol), (ON_LOAN, js.symbol)])
    # Shanghai (same city: first by location) has a catalogue, and its copies are out.
    await store.put(pool, _config(zebra.url, symbol=sh.symbol))
    body = messages.request(req.symbol, request_id="CAT-1", issn=None, title="The religious "
                            "teachers of Greece")
    body["request"]["bibliographicInfo"]["bibliographicItemId"] = [
        {"bibliographicItemIdentifier": ON_LOAN, "bibliographicItemIdentifierCode": "ISBN"}]
    await req.send("request", body)
    await req.confirmed()
    told = await req.status("ExpectToSupply", "RequestResponse")
    assert told.content["header"]["supplyingAgencyId"] == messages.agency_id(js.symbol)
    await js.next("request")
    txn = await pool.fetchval("SELECT id FROM ill_transaction WHERE request_id = 'CAT-1' "
                              "AND requester = $1", req.symbol)
    async with pool.acquire() as conn:
        text = "\n".join(await explain(conn, txn))
    assert f"1. {js.symbol}" in text
    assert f"2. {sh.symbol}  tier 4" in text
    assert "checked: not available (all 2 items On loan)" in text


async def test_agency_catalogue_set_show_remove(settings: Any, make_agency: Any) -> None:
    supplier, _ = await make_agency("CATCLI", roles=("supplier",))
    requester, _ = await make_agency("CATREQ", roles=("requester",))
    code, out, err = await cli.run(settings, "agency", "catalogue", "set", supplier)
    assert code == 2 and "--url is required" in err
    code, out, err = await cli.run(
        settings, "agency", "catalogue", "set", supplier, "--url",
        "http://opac.example.edu.cn:210/Default", "--available", "Available",
        "--available", "在架", "--index", "isbn=bath.isbn", "--budget-ms", "150")
    assert code == 0, err
    assert "Available, 在架" in out and "isbn=bath.isbn" in out and "150 ms" in out
    # Options not given keep their value.
    code, out, err = await cli.run(settings, "agency", "catalogue", "set", supplier,
                                   "--reader", "iso20775", "--schema", "iso20775")
    assert code == 0, err
    code, out, _ = await cli.run(settings, "agency", "catalogue", "show", supplier)
    assert "schema iso20775 (ISO 20775 availability)" in out and "150 ms" in out
    code, _, err = await cli.run(settings, "agency", "catalogue", "set", supplier,
                                 "--item-field", "876j")
    assert code == 2 and "TAG$CODE" in err
    code, _, err = await cli.run(settings, "agency", "catalogue", "set", requester,
                                 "--url", "http://h/db")
    assert code == 2 and "not a supplier" in err
    code, out, _ = await cli.run(settings, "agency", "catalogue", "remove", supplier)
    assert code == 0 and "removed" in out
    code, _, err = await cli.run(settings, "agency", "catalogue", "show", supplier)
    assert code != 0 and "has no catalogue" in err
