"""Reconciliation from the bank (issue 17): camt.053/054 files read (settlement/camt.py),
matched to statement dues and recorded (settlement/reconcile.py), `run.py payments
import` and `payments unmatched` (app/cli/bank_import.py).

The bank files are BUILT with a bank-statement library, not typed by hand: pyiso20022's
dataclasses (generated from the ISO 20022 XSDs, one module per message version) filled
from a description in the messages' own element names by xsdata's DictDecoder (which
refuses an element the version does not have) and written by xsdata's XmlSerializer.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from app.cli import run_command
from app.cli.payments import all_actions
from schemas.money import Money
from schemas.settings import Settings
from settlement import bank_accounts, camt, dues
from settlement.camt import CamtError, CreditDebit, MessageKind
from settlement.reconcile import (
    ImportRefused,
    MatchedBy,
    Outcome,
    Reason,
    entry_key,
    import_file,
    references_in,
    unmatched,
)
from settlement.run import settle
from tests.support.camt import CENTRE_ACCOUNT, build, ntry, tx
from tests.support.database import check_list
from tests.support.names import unique
from tests.support.settlement import after, charge, fresh_year, libraries, no_subsidy

# --------------------------------------------------------------------------
# reading (pure)
# --------------------------------------------------------------------------

def test_reads_camt053_001_02_with_a_domestic_account() -> None:
    raw = build("camt.053.001.02", [
        ntry("1250.50", "CRDT", ref="BANK-1", details=[
            tx("1250.50", party="兰州大学图书馆", account="6222 0202 0000 1234",
               ustrd=["馆际互借 ill-1901-03-r12-a3f9c1-cny", "第二行"],
               strd="ILL-1901-03-R12-A3F9C1-CNY")]),
        ntry("3.00", "DBIT", ref="BANK-2", status="PDNG")])
    assert b"<AmtDtls>" in raw and b"<Pty>" not in raw      # the 001.02 shapes
    m = camt.parse(raw)
    assert (m.kind, m.version, m.message_id, m.name) == (
        MessageKind.STATEMENT, "001.02", "MSG-1", "camt.053.001.02")
    assert m.accounts == (CENTRE_ACCOUNT,)
    first, pending = m.entries
    assert first.amount == Money(125050, "CNY") and first.side is CreditDebit.CREDIT
    assert first.booked and first.booking_date == datetime.date(1901, 4, 5)
    assert first.entry_ref == first.account_servicer_ref == "BANK-1"
    (d,) = first.details
    assert d.amount == Money(125050, "CNY")
    assert d.counterparty == camt.Party("兰州大学图书馆", "6222 0202 0000 1234")
    assert d.unstructured == ("馆际互借 ill-1901-03-r12-a3f9c1-cny", "第二行")
    assert d.creditor_references == ("ILL-1901-03-R12-A3F9C1-CNY",)
    assert references_in(d) == ("ILL-1901-03-R12-A3F9C1-CNY",)
    assert pending.status == "PDNG" and not pending.booked
    assert pending.transactions()[0].amount == Money(300, "CNY")


def test_reads_camt053_001_08_parties_in_pty_and_batches() -> None:
    raw = build("camt.053.001.08", [
        ntry("30.00", "DBIT", ref="B-9", details=[
            tx("10.00", party="复旦大学图书馆", iban="DE89370400440532013000", e2e="E2E-1"),
            tx("20.00", party="北京大学图书馆", account="0200001", e2e="NOTPROVIDED")])],
        iban="CH9300762011623852957")
    assert b"<Pty>" in raw
    m = camt.parse(raw)
    assert m.accounts == ("CH9300762011623852957",)
    (entry,) = m.entries
    assert entry.side is CreditDebit.DEBIT and entry.status == "BOOK"
    one, two = entry.transactions()
    # A debit's other side is its creditor (Cdtr), inside <Pty> from 001.08.
    assert one.counterparty == camt.Party("复旦大学图书馆", "DE89370400440532013000")
    assert two.counterparty == camt.Party("北京大学图书馆", "0200001")
    assert (one.amount, two.amount) == (Money(1000, "CNY"), Money(2000, "CNY"))
    assert (one.end_to_end_id, two.end_to_end_id) == ("E2E-1", None)
    assert entry_key(entry, one) != entry_key(entry, two)


def test_reads_camt054_notifications() -> None:
    raw = build("camt.054.001.08", [ntry("8.00", "CRDT", ref="N-1", details=[
        tx(None, party="兰州大学图书馆", e2e="ILL-1901-03-R7-ABCDEF-CNY")])])
    m = camt.parse(raw)
    assert m.kind is MessageKind.NOTIFICATION and m.name == "camt.054.001.08"
    (entry,) = m.entries
    # One detail without its own amount stands for the whole entry.
    (t,) = entry.transactions()
    assert t.amount == Money(800, "CNY")
    assert references_in(t) == ("ILL-1901-03-R7-ABCDEF-CNY",)


def test_an_unknown_namespace_is_refused_by_name() -> None:
    raw = build("camt.053.001.08", [ntry("1.00", "CRDT", ref="R")])
    for other in ("camt.053.001.13", "camt.052.001.08", "camt.053.001.01"):
        changed = raw.replace(b"camt.053.001.08", other.encode())
        with pytest.raises(CamtError, match=f"urn:iso:std:iso:20022:tech:xsd:{other}"):
            camt.parse(changed)
    with pytest.raises(CamtError, match="not well-formed"):
        camt.parse(b"not xml at all")


def test_a_dtd_or_entity_is_refused() -> None:
    raw = build("camt.053.001.08", [ntry("1.00", "CRDT", ref="R")]).decode()
    head, rest = raw.split("\n", 1)
    internal = (f'{head}\n<!DOCTYPE Document [<!ENTITY ref "ENTITY-TEXT">]>\n'
                + rest.replace("<AcctSvcrRef>R<", "<AcctSvcrRef>&ref;<"))
    external = (f'{head}\n<!DOCTYPE Document [<!ENTITY ref SYSTEM "file:///etc/hostname">]>\n'
                + rest.replace("<AcctSvcrRef>R<", "<AcctSvcrRef>&ref;<"))
    for doc in (internal, external):
        with pytest.raises(CamtError, match="DOCTYPE"):
            camt.parse(doc.encode())


def test_amounts_to_minor_units_without_float() -> None:
    assert camt.amount_of("12.5", "CNY", "x") == Money(1250, "CNY")
    assert camt.amount_of("0.10", "CNY", "x") == Money(10, "CNY")
    assert camt.amount_of("1234567890123456.78", "CNY", "x").minor == 123456789012345678
    assert camt.amount_of("100", "JPY", "x") == Money(100, "JPY")
    with pytest.raises(CamtError, match="3 decimals; CNY has 2"):
        camt.amount_of("12.345", "CNY", "x")
    with pytest.raises(CamtError, match="1 decimals; JPY has 0"):
        camt.amount_of("100.0", "JPY", "x")
    for bad in ("1e3", "-5.00", "", "12,50"):
        with pytest.raises(CamtError, match="not a decimal number"):
            camt.amount_of(bad, "CNY", "x")
    with pytest.raises(CamtError, match="no currency"):
        camt.amount_of("1.00", None, "x")
    # In a built file too: a refused amount names the entry.
    raw = build("camt.053.001.08", [ntry("1.50", "CRDT", ref="R-7")])
    with pytest.raises(CamtError, match=r"entry R-7: amount 1\.505 CNY has 3 decimals"):
        camt.parse(raw.replace(b">1.50<", b">1.505<"))


def test_keys_are_stable_and_content_hashed_without_a_reference() -> None:
    entries = [ntry("5.00", "CRDT", details=[tx("5.00", party="某馆")])]
    one = camt.parse(build("camt.053.001.08", entries, msg_id="A")).entries[0]
    other = camt.parse(build("camt.054.001.08", entries, msg_id="B")).entries[0]
    # No bank reference: the same content in another file (and kind) has the same key.
    assert one.entry_ref is None
    t1, t2 = one.transactions()[0], other.transactions()[0]
    assert entry_key(one, t1) == entry_key(other, t2)
    assert ":sha256:" in entry_key(one, t1)
    assert entry_key(one, t1, 2) != entry_key(one, t1)
    changed = camt.parse(build("camt.053.001.08", [ntry("5.01", "CRDT", details=[
        tx("5.01", party="某馆")])])).entries[0]
    assert entry_key(changed, changed.transactions()[0]) != entry_key(one, t1)


def test_the_tables_lists_hold_the_enums() -> None:
    assert check_list("bank_import_item_outcome", "outcome") == {o.value for o in Outcome}
    assert check_list("bank_import_item_reason", "reason") == {r.value for r in Reason}
    assert check_list("bank_import_item_matched_by", "matched_by") == {
        m.value for m in MatchedBy}
    assert check_list("bank_import_kind", "kind") == {k.value for k in MessageKind}


def test_the_actions_are_wired_into_payments() -> None:
    names = {a.name for a in all_actions()}
    assert {"import", "unmatched"} <= names


# --------------------------------------------------------------------------
# importing (PostgreSQL)
# --------------------------------------------------------------------------

async def _dues(pool: asyncpg.Pool, settings: Settings
                ) -> tuple[dict[str, dues.Position], list[str]]:
    """A settled month of six libraries; their dues by letter:
    a, b, e, f owe the centre 30.00, 12.00, 8.00, 7.00; c and d receive 37.00, 20.00."""
    year = await fresh_year(pool)
    names = [f"{unique('图书馆')}{x}" for x in "abcdef"]
    symbols = await libraries(pool, *names)
    a, b, c, d, e, f = symbols
    v = await no_subsidy(pool)
    on = datetime.datetime(year, 3, 10, 4, tzinfo=datetime.UTC)
    await charge(pool, v, a, c, "30.00", on)
    await charge(pool, v, b, d, "12.00", on)
    await charge(pool, v, e, d, "8.00", on)
    await charge(pool, v, f, c, "7.00", on)
    period = f"{year}-03"
    await settle(pool, settings, period, now=after(period))
    by_agency = {p.agency: p for p in await _positions(pool, *symbols)}
    return dict(zip("abcdef", (by_agency[s] for s in symbols), strict=True)), names


async def _positions(pool: asyncpg.Pool, *agencies: str) -> list[dues.Position]:
    async with pool.acquire() as conn:
        return [p for s in agencies for p in await dues.positions(conn, agency=s)]


async def _now(pool: asyncpg.Pool, due: dues.Position) -> dues.Position:
    async with pool.acquire() as conn:
        p = await dues.position(conn, due.due_id)
    assert p is not None
    return p


async def _counts(pool: asyncpg.Pool, due_ids: list[int]) -> tuple[int, int, int, int]:
    return tuple(await pool.fetchrow(  # type: ignore[return-value]
        """SELECT (SELECT count(*) FROM statement_payment WHERE due_id = ANY($1)),
                  (SELECT count(*) FROM bank_import),
                  (SELECT count(*) FROM bank_import_item),
                  (SELECT count(*) FROM outbox WHERE routing_key = 'bank-import.CENTRE')""",
        due_ids))


async def test_a_statement_is_matched_recorded_and_imported_once(
        pool: asyncpg.Pool, settings: Settings, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    ds, names = await _dues(pool, settings)
    a, b, c, d, e, f = (ds[x] for x in "abcdef")
    assert [p.direction for p in (a, b, c, d, e, f)] == [
        dues.Direction.TO_CENTRE, dues.Direction.TO_CENTRE, dues.Direction.TO_AGENCY,
        dues.Direction.TO_AGENCY, dues.Direction.TO_CENTRE, dues.Direction.TO_CENTRE]
    async with pool.acquire() as conn:
        await bank_accounts.set_account(conn, b.agency, names[1], actor="test",
                                        account_id="6222020200001234567",
                                        bank_code="102100099996")
    # Booked the day the run issued the statements (a payment may not predate them by
    # more than a year).
    year = int(a.period[:4])
    booked = a.issued_on.isoformat()
    entries = [
        # a pays its own statement, quoting the reference in free text (lower case)
        ntry("30.00", "CRDT", ref="BK-1", booked=booked, details=[
            tx("30.00", party="某某", ustrd=[f"ILL fee {a.reference.lower()} thanks"])]),
        # b pays without a reference, from its known account, the exact amount
        ntry("12.00", "CRDT", ref="BK-2", booked=booked, details=[
            tx("12.00", party="不认识的名字", account="6222 0202 0000 1234 567")]),
        # the centre pays c, quoting c's reference as the end-to-end id
        ntry("37.00", "DBIT", ref="BK-3", booked=booked, details=[
            tx("37.00", party=names[2], e2e=c.reference)]),
        # an unknown reference
        ntry("5.00", "CRDT", ref="BK-4", booked=booked, details=[
            tx("5.00", strd="ILL-1899-01-R999999-ABCDEF-CNY")]),
        # e pays 10.00 against 8.00: 8.00 recorded, 2.00 listed as overpaid
        ntry("10.00", "CRDT", ref="BK-5", booked=booked, details=[
            tx("10.00", strd=e.reference)]),
        # a credit quoting a statement the centre pays: wrong direction
        ntry("20.00", "CRDT", ref="BK-6", booked=booked, details=[
            tx("20.00", ustrd=[d.reference])]),
        # the centre pays d a part (5.00 of 20.00) in a batch with an unknown payee
        ntry("9.00", "DBIT", ref="BK-7", booked=booked, details=[
            tx("5.00", e2e=d.reference), tx("4.00", party="无名氏")]),
        # f pays without reference, known by its name only
        ntry("7.00", "CRDT", ref="BK-8", booked=booked, details=[tx("7.00", party=names[5])]),
        # pending: not counted
        ntry("99.00", "CRDT", ref="BK-9", status="PDNG", booked=booked, details=[
            tx("99.00", strd=b.reference)]),
    ]
    raw = build("camt.053.001.08", entries, msg_id=unique("STMT"))
    ids = [p.due_id for p in (a, b, c, d, e, f)]
    before = await _counts(pool, ids)

    async with pool.acquire() as conn:
        dry = await import_file(conn, raw, file_name="s1.xml", actor="t",
                                today=datetime.date(year, 4, 6), dry_run=True)
    assert dry.dry_run and dry.import_id is None and dry.count(Outcome.MATCHED) == 6
    assert await _counts(pool, ids) == before       # a dry run changes nothing

    async with pool.acquire() as conn:
        report = await import_file(conn, raw, file_name="s1.xml", actor="t",
                                   today=datetime.date(year, 4, 6))
    got = {(i.entry_key.split(":")[2], i.entry_key.split(":")[3], i.outcome): i
           for i in report.items}
    key = f"camt:{CENTRE_ACCOUNT}:"
    assert all(i.entry_key.startswith(key) for i in report.items)

    def item(ref: str, outcome: Outcome, index: str = "0") -> Any:
        return got[(ref, index, outcome)]

    assert item("BK-1", Outcome.MATCHED).due_id == a.due_id
    assert item("BK-1", Outcome.MATCHED).matched_by is MatchedBy.REFERENCE
    assert item("BK-2", Outcome.MATCHED).due_id == b.due_id
    assert item("BK-2", Outcome.MATCHED).matched_by is MatchedBy.PAYER
    assert item("BK-3", Outcome.MATCHED).due_id == c.due_id
    assert item("BK-4", Outcome.UNMATCHED).reason is Reason.UNKNOWN_REFERENCE
    assert item("BK-5", Outcome.MATCHED).amount == Money(800, "CNY")
    over = item("BK-5", Outcome.UNMATCHED)
    assert (over.reason, over.amount, over.due_id) == (Reason.OVERPAID, Money(200, "CNY"),
                                                       e.due_id)
    assert "overpaid by 2.00 CNY" in over.note
    assert item("BK-6", Outcome.UNMATCHED).reason is Reason.WRONG_DIRECTION
    assert item("BK-7", Outcome.MATCHED).amount == Money(500, "CNY")
    assert "part payment" in item("BK-7", Outcome.MATCHED).note
    assert item("BK-7", Outcome.UNMATCHED, "1").reason is Reason.NO_REFERENCE_AND_NO_PAYER
    assert item("BK-8", Outcome.MATCHED).due_id == f.due_id
    assert item("BK-9", Outcome.SKIPPED).reason is Reason.NOT_BOOKED
    assert (report.entries, report.count(Outcome.MATCHED), report.count(Outcome.UNMATCHED),
            report.count(Outcome.SKIPPED)) == (10, 6, 4, 1)

    now = {x: await _now(pool, p) for x, p in zip("abcdef", (a, b, c, d, e, f), strict=True)}
    assert [now[x].outstanding.minor for x in "abcdef"] == [0, 0, 0, 1500, 0, 0]
    rows = await pool.fetch("""SELECT due_id, amount_minor, paid_on, source, source_key,
                                      bank_reference FROM statement_payment
                               WHERE due_id = ANY($1) ORDER BY id""", ids)
    assert [(r["due_id"], r["amount_minor"]) for r in rows] == [
        (a.due_id, 3000), (b.due_id, 1200), (c.due_id, 3700), (e.due_id, 800),
        (d.due_id, 500), (f.due_id, 700)]
    assert {r["source"] for r in rows} == {"bank"}
    assert {r["paid_on"] for r in rows} == {a.issued_on}
    assert rows[0]["source_key"] == f"{key}BK-1:0" and rows[0]["bank_reference"] == "BK-1"
    stored = await pool.fetchrow("SELECT * FROM bank_import WHERE id = $1", report.import_id)
    assert (stored["kind"], stored["version"], stored["entries"], stored["matched"],
            stored["unmatched"], stored["skipped"], stored["statement_account"]) == (
        "camt.053", "001.08", 10, 6, 4, 1, CENTRE_ACCOUNT)
    message = await pool.fetchrow(
        "SELECT body FROM outbox WHERE routing_key = 'bank-import.CENTRE' "
        "AND correlation_id = $1", report.message_id)
    body = json.loads(bytes(message["body"]))
    assert (body["matched"], body["unmatched"], body["matchedAmounts"]) == (
        6, 4, {"CNY": "99.00"})
    after_first = await _counts(pool, ids)

    # the same bytes again: nothing changes, and the report says so
    async with pool.acquire() as conn:
        again = await import_file(conn, raw, file_name="renamed.xml", actor="t",
                                  today=datetime.date(year, 4, 7))
    assert again.already_imported and again.import_id == report.import_id
    assert len(again.items) == len(report.items)
    assert await _counts(pool, ids) == after_first

    # another file repeating BK-1, and paying the rest of d
    raw2 = build("camt.054.001.08", [
        entries[0], ntry("15.00", "DBIT", ref="BK-10", booked=booked,
                         details=[tx("15.00", e2e=d.reference)])], msg_id=unique("NTF"))
    async with pool.acquire() as conn:
        second = await import_file(conn, raw2, file_name="n2.xml", actor="t",
                                   today=datetime.date(year, 4, 7))
    dup, paid = second.items
    assert (dup.outcome, dup.due_id, dup.payment_id is not None) == (
        Outcome.DUPLICATE, a.due_id, True)
    assert (paid.outcome, paid.due_id) == (Outcome.MATCHED, d.due_id)
    assert (await _now(pool, a)).paid == Money(3000, "CNY")
    assert (await _now(pool, d)).outstanding.minor == 0
    assert (await _counts(pool, ids))[0] == after_first[0] + 1

    async with pool.acquire() as conn:
        listed = await unmatched(conn, report.import_id)
    assert sorted(i.reason.value for i in listed if i.reason) == [
        "no_reference_and_no_payer", "overpaid", "unknown_reference", "wrong_direction"]

    # the CLI: the same file once more, then the unmatched list
    path = tmp_path / "s1.xml"
    path.write_bytes(raw)
    capsys.readouterr()
    assert await run_command(settings, ["payments", "import", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"already imported (import {report.import_id}" in out and "nothing changed" in out
    assert await run_command(settings, ["payments", "unmatched", "--import",
                                        str(report.import_id)]) == 0
    out = capsys.readouterr().out
    assert "overpaid by 2.00 CNY" in out and "unknown_reference" in out
    assert await run_command(settings, ["payments", "unmatched", "--import", "0"]) == 2


async def test_cli_dry_run_and_refusals(pool: asyncpg.Pool, settings: Settings,
                                        tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    ds, _ = await _dues(pool, settings)
    a = ds["a"]
    booked = a.issued_on.isoformat()
    raw = build("camt.053.001.02", [ntry("30.00", "CRDT", ref=unique("BK"), booked=booked,
                                         details=[tx("30.00", strd=a.reference)])],
                msg_id=unique("DRY"))
    path = tmp_path / "dry.xml"
    path.write_bytes(raw)
    capsys.readouterr()
    assert await run_command(settings, ["payments", "import", str(path), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: nothing recorded" in out and a.reference in out and "matched" in out
    assert (await _now(pool, a)).paid.minor == 0
    assert await pool.fetchval("SELECT count(*) FROM bank_import WHERE sha256 = "
                               "encode(sha256($1), 'hex')", raw) == 0

    bad = tmp_path / "bad.xml"
    bad.write_bytes(raw.replace(b"camt.053.001.02", b"camt.053.001.99"))
    assert await run_command(settings, ["payments", "import", str(bad)]) == 2
    assert "camt.053.001.99" in capsys.readouterr().err
    assert await run_command(settings, ["payments", "import",
                                        str(tmp_path / "missing.xml")]) == 2

    # a statement of another account than the centre's is not imported
    async with pool.acquire() as conn:
        with pytest.raises(ImportRefused, match=r"\*\*\*\* 9999"):
            await import_file(conn, raw, file_name="x.xml", actor="t",
                              today=datetime.date(2000, 1, 1),
                              centre_account="CN-ACCOUNT-9999")
