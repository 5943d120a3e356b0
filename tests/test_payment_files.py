"""Issue 17 item 3: agencies' bank accounts (validated, masked) and the centre's
outgoing payments as an ISO 20022 pain.001 file (validated against the official XSD)
or a plain CSV."""

from __future__ import annotations

import csv
import datetime
import hashlib
import io
import json
import re
import traceback
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
import xmlschema
from lxml import etree

from app.cli import run_command
from schemas.money import Money
from schemas.settings import Payments, Settings
from settlement import bank_accounts, dues, pain001
from settlement.bank_accounts import (
    AccountScheme,
    BankAccount,
    BankAccountError,
    CentreAccountMissing,
)
from settlement.dues import Direction
from settlement.pain001 import FileFormat, Payment, PaymentFileError
from settlement.run import settle
from settlement.statement_model import BOM
from tests.support.database import check_list
from tests.support.paths import ROOT
from tests.support.settlement import after, fresh_year, libraries, worked_example

XSD_DIR = ROOT / "schemas" / "xsd"
CN_NUMBER = "6222020200012345678"
CN_ACCOUNT = "6222 0202 0001 2345 678"
CNAPS_ICBC = "102100099996"
IBAN_DE = "DE89 3704 0044 0532 0130 00"
IBAN_DE_COMPACT = "DE89370400440532013000"
CENTRE_NUMBER = "110060149018001234567"
CENTRE_CNAPS = "301100000015"
DAY = datetime.date(1901, 4, 10)
CREATED = datetime.datetime(1901, 4, 9, 10, 30, tzinfo=datetime.UTC)


def _position(due_id: int, agency: str, amount: str, currency: str = "CNY", *,
              direction: Direction = Direction.TO_AGENCY, paid: str = "0") -> dues.Position:
    total = Money.from_decimal(amount, currency)
    paid_money = Money.from_decimal(paid, currency)
    return dues.Position(
        due_id=due_id, run_id=7, period="1901-03", agency=agency, direction=direction,
        amount=total, reference=f"ILL-1901-03-R7-A{due_id:05d}-{currency}",
        issued_on=datetime.date(1901, 4, 1), due_on=datetime.date(1901, 5, 1),
        dispute_until=datetime.date(1901, 4, 15), paid=paid_money,
        outstanding=Money(total.minor - paid_money.minor, currency),
        disputed=Money(0, currency), last_paid_on=None)


def _pku() -> BankAccount:
    return bank_accounts.account("CALIS:PKU", "北京大学图书馆", account_id=CN_ACCOUNT,
                                 bank_code=CNAPS_ICBC, bank_name="中国工商银行北京海淀支行")


def _wien() -> BankAccount:
    return bank_accounts.account("CALIS:WIEN", "Universitätsbibliothek Wien",
                                 iban="AT61 1904 3002 3457 3201", bic="BKAUATWW")


def _fudan() -> BankAccount:
    return bank_accounts.account("CALIS:FDU", "复旦大学图书馆", iban=IBAN_DE)


def _centre() -> BankAccount:
    return bank_accounts.account("CENTRE", "CALIS 管理中心 ILL Hub centre",
                                 account_id=CENTRE_NUMBER, bank_code=CENTRE_CNAPS)


def _payments() -> list[Payment]:
    return list(pain001.select(
        [_position(1, "CALIS:PKU", "26.00"), _position(2, "CALIS:WIEN", "5.00", "EUR"),
         _position(3, "CALIS:FDU", "1234.50", paid="234.50")],
        {"CALIS:PKU": _pku(), "CALIS:WIEN": _wien(), "CALIS:FDU": _fudan()}, DAY).payments)


def _official(version: FileFormat) -> xmlschema.XMLSchema:
    """The vendored XSD, loaded here independently of settlement/pain001.py."""
    return xmlschema.XMLSchema(str(XSD_DIR / f"{version.value}.xsd"))


def _bytes(path: Path) -> bytes:
    return path.read_bytes()


def _texts(data: bytes, version: FileFormat, tag: str) -> list[str]:
    root = etree.fromstring(data)
    return [e.text or "" for e in root.iter(f"{{{pain001.namespace(version)}}}{tag}")]


# --------------------------------------------------------------------------
# accounts: masking
# --------------------------------------------------------------------------

def test_an_account_prints_masked_everywhere() -> None:
    a = _pku()
    assert a.account_id == CN_NUMBER            # kept whole, normalised, for the bank file
    assert a.masked == "**** 5678"
    for shown in (repr(a), str(a), f"{a}", f"{a!r}", format(a, ""),
                  json.dumps(a.to_json(), ensure_ascii=False), repr([a]), repr({"a": a})):
        assert CN_NUMBER not in shown and "12345678" not in shown, shown
        assert "**** 5678" in shown or "5678" in shown
    assert "北京大学图书馆" in str(a) and CNAPS_ICBC in repr(a)
    i = _fudan()
    assert IBAN_DE_COMPACT not in repr(i) and "**** 3000" in str(i)


@pytest.mark.parametrize("kwargs", [
    {"iban": "DE89 3704 0044 0532 0130 01"},                # checksum
    {"iban": "DE89 3704 0044 0532 0130"},                   # length
    {"iban": "DE893704004405320130AB"},                     # layout
    {"account_id": "6222 0202 0001 2345 67X", "bank_code": CNAPS_ICBC},
    {"account_id": "6222 0", "bank_code": CNAPS_ICBC},
])
def test_no_error_names_the_account_number(kwargs: dict[str, str]) -> None:
    with pytest.raises(BankAccountError) as caught:
        bank_accounts.account("CALIS:X", "某图书馆", **kwargs)
    number = bank_accounts.normalise(kwargs.get("iban") or kwargs["account_id"])
    # Not in the message, nor in the traceback a log would print (schwifty's own
    # messages quote the IBAN: they must not come along as the cause or context).
    printed = "".join(traceback.format_exception(caught.value))
    assert number not in printed and number[-8:] not in printed, printed


# --------------------------------------------------------------------------
# accounts: validation
# --------------------------------------------------------------------------

@pytest.mark.parametrize(("kwargs", "says"), [
    ({"iban": "DE89 3704 0044 0532 0130 01"}, "check digits"),
    ({"iban": "XX89 3704 0044 0532 0130 00"}, "country that uses IBANs"),
    ({"iban": IBAN_DE, "bic": "COBADEF"}, "8 or 11 characters"),
    ({"iban": IBAN_DE, "bic": "COBAXXFF"}, "no known country"),
    ({"iban": IBAN_DE, "bic": "COBADE-F"}, "malformed"),
    ({"iban": IBAN_DE, "country": "FR"}, "of country DE, not FR"),
    ({"iban": IBAN_DE, "bank_code": CNAPS_ICBC}, "takes a BIC"),
    ({"account_id": CN_ACCOUNT, "bank_code": "10210009999"}, "CNAPS code of 12 digits"),
    ({"account_id": CN_ACCOUNT, "bank_code": "1021000999961"}, "CNAPS code of 12 digits"),
    ({"account_id": "6222-0202-0001-2345", "bank_code": CNAPS_ICBC}, "digits only"),
    ({"account_id": "6222020", "bank_code": CNAPS_ICBC}, "8 to 32 digits, not 7"),
    ({"account_id": "6" * 33, "bank_code": CNAPS_ICBC}, "8 to 32 digits, not 33"),
    ({"account_id": CN_ACCOUNT, "bic": "BKCHCNBJ"}, "clearing code"),
    ({"account_id": CN_ACCOUNT, "bank_code": CNAPS_ICBC, "country": "China"}, "two letters"),
    ({}, "either an IBAN or a domestic account"),
    ({"iban": IBAN_DE, "account_id": CN_ACCOUNT}, "not both"),
])
def test_bad_accounts_are_refused_with_the_reason(kwargs: dict[str, str], says: str) -> None:
    with pytest.raises(BankAccountError, match=re.escape(says)):
        bank_accounts.account("CALIS:X", "某图书馆", **kwargs)


def test_the_holder_name_is_required_and_fits_pain001() -> None:
    for holder, says in (("", "required"), ("   ", "required"), ("图" * 141, "at most 140"),
                         ("北京\n大学", "line break")):
        with pytest.raises(BankAccountError, match=says):
            bank_accounts.account("CALIS:X", holder, iban=IBAN_DE)
    assert bank_accounts.account("CALIS:X", "图" * 140, iban=IBAN_DE).holder == "图" * 140


def test_good_accounts_are_normalised() -> None:
    a = bank_accounts.account("CALIS:X", " 复旦大学 ", iban="de89 3704 0044 0532 0130 00",
                              bic="cobadeffxxx")
    assert (a.scheme, a.account_id, a.bic, a.country, a.holder) == (
        AccountScheme.IBAN, IBAN_DE_COMPACT, "COBADEFFXXX", "DE", "复旦大学")
    d = _pku()
    assert (d.scheme, d.clearing_code, d.bic, d.country) == (
        AccountScheme.DOMESTIC, CNAPS_ICBC, None, "CN")
    hk = bank_accounts.account("CALIS:HK", "香港大學圖書館", account_id="015 123456 001",
                               bank_code="004", country="hk")
    assert hk.country == "HK" and hk.clearing_code == "004"


def test_the_centre_account_comes_from_the_settings() -> None:
    with pytest.raises(CentreAccountMissing, match="ILLHUB_PAYMENTS__CENTRE_ACCOUNT"):
        bank_accounts.centre_account(Payments())
    with pytest.raises(CentreAccountMissing, match="CNAPS code of 12 digits") as caught:
        bank_accounts.centre_account(Payments(centre_account=CENTRE_NUMBER))
    assert CENTRE_NUMBER not in str(caught.value)
    c = bank_accounts.centre_account(Payments(centre_account=CENTRE_NUMBER,
                                              centre_bank_code=CENTRE_CNAPS))
    assert (c.scheme, c.account_id, c.clearing_code) == (
        AccountScheme.DOMESTIC, CENTRE_NUMBER, CENTRE_CNAPS)
    i = bank_accounts.centre_account(Payments(centre_account=IBAN_DE))
    assert (i.scheme, i.bic) == (AccountScheme.IBAN, None)


# --------------------------------------------------------------------------
# pain.001
# --------------------------------------------------------------------------

def test_the_tables_allow_exactly_the_formats_and_schemes() -> None:
    assert check_list("payment_file_format", "format") == {f.value for f in FileFormat}
    assert check_list("agency_bank_account_scheme", "scheme") == {
        s.value for s in AccountScheme}


def test_the_vendored_schemas_are_the_ones_the_readme_names() -> None:
    readme = (XSD_DIR / "README.md").read_text()
    for name in ("pain.001.001.03.xsd", "pain.001.001.09.xsd"):
        digest = hashlib.sha256((XSD_DIR / name).read_bytes()).hexdigest()
        assert f"`{name}` | " in readme and digest in readme, name


def test_what_a_file_pays_and_what_it_leaves_out() -> None:
    found = [_position(1, "CALIS:PKU", "26.00"), _position(2, "CALIS:NONE", "5.00"),
             _position(3, "CALIS:PKU", "9.00", direction=Direction.TO_CENTRE),
             _position(4, "CALIS:PKU", "3.00", paid="3.00"),
             _position(5, "CALIS:FDU", "7.00")]
    chosen = pain001.select(found, {"CALIS:PKU": _pku(), "CALIS:FDU": _fudan()}, DAY,
                            filed={5: "ILLPAY-X.xml"})
    assert [p.due.due_id for p in chosen.payments] == [1]
    assert {x.due.due_id: x.reason for x in chosen.left_out} == {
        2: "CALIS:NONE has no bank account on file",
        5: "already in payment file ILLPAY-X.xml"}


@pytest.mark.parametrize("version", pain001.XML_FORMATS)
def test_a_pain001_document_validates_and_keeps_chinese(version: FileFormat) -> None:
    payments = _payments()
    data = pain001.build_document(payments, version=version, debtor=_centre(),
                                  message_id="ILLPAY-TEST-1", created_at=CREATED)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>')
    _official(version).validate(io.BytesIO(data))
    assert etree.fromstring(data).tag == f"{{urn:iso:std:iso:20022:tech:xsd:{version}}}Document"
    names = _texts(data, version, "Nm")
    assert "北京大学图书馆" in names and "复旦大学图书馆" in names
    assert "中国工商银行北京海淀支行" in names and "CALIS 管理中心 ILL Hub centre" in names
    # Group header: every transaction, the sum of all amounts as written.
    assert _texts(data, version, "NbOfTxs")[0] == "3"
    assert Decimal(_texts(data, version, "CtrlSum")[0]) == Decimal("26.00") + Decimal(
        "5.00") + Decimal("1000.00")
    # One instruction per currency: CNY (two, the outstanding 1000.00 of 1234.50), EUR.
    assert _texts(data, version, "CtrlSum")[1:] == ["1026.00", "5.00"]
    assert _texts(data, version, "InstdAmt") == ["26.00", "1000.00", "5.00"]
    assert _texts(data, version, "EndToEndId")[0] == "ILL-1901-03-R7-A00001-CNY"
    assert _texts(data, version, "Ustrd")[0] == "ILL-1901-03-R7-A00001-CNY 1901-03"
    assert CN_NUMBER in _texts(data, version, "Id")            # the bank needs it whole
    assert _texts(data, version, "IBAN") == [IBAN_DE_COMPACT, "AT611904300234573201"]
    assert _texts(data, version, "MmbId") == [CENTRE_CNAPS, CNAPS_ICBC, CENTRE_CNAPS]
    assert _texts(data, version, "Cd") == ["CNAPS"] * 3
    bic = "BIC" if version is FileFormat.PAIN001_03 else "BICFI"
    assert _texts(data, version, bic) == ["BKAUATWW"]
    dates = _texts(data, version, "ReqdExctnDt" if version is FileFormat.PAIN001_03
                   else "Dt")
    assert dates == ["1901-04-10", "1901-04-10"]


def test_the_two_versions_differ_where_the_standard_does() -> None:
    p = _payments()
    v03 = pain001.build_document(p, version=FileFormat.PAIN001_03, debtor=_centre(),
                                 message_id="M-03", created_at=CREATED)
    v09 = pain001.build_document(p, version=FileFormat.PAIN001_09, debtor=_centre(),
                                 message_id="M-09", created_at=CREATED)
    # Each is valid against its own schema only.
    assert _official(FileFormat.PAIN001_03).is_valid(io.BytesIO(v03))
    assert not _official(FileFormat.PAIN001_09).is_valid(
        io.BytesIO(v03.replace(b"pain.001.001.03", b"pain.001.001.09")))
    assert not _official(FileFormat.PAIN001_03).is_valid(
        io.BytesIO(v09.replace(b"pain.001.001.09", b"pain.001.001.03")))


def test_a_debtor_with_an_iban_and_no_bic_is_not_provided() -> None:
    centre = bank_accounts.centre_account(Payments(centre_account=IBAN_DE))
    data = pain001.build_document(_payments()[:1], version=FileFormat.PAIN001_09,
                                  debtor=centre, message_id="M-1", created_at=CREATED)
    _official(FileFormat.PAIN001_09).validate(io.BytesIO(data))
    assert "NOTPROVIDED" in _texts(data, FileFormat.PAIN001_09, "Id")


@pytest.mark.parametrize("version", pain001.XML_FORMATS)
def test_a_document_that_does_not_validate_is_refused(version: FileFormat) -> None:
    # An account no validation made: 40 digits do not fit ISO 20022's Max34Text.
    long_number = "1234567890" * 4
    bad = BankAccount("CALIS:BAD", "坏账户", AccountScheme.DOMESTIC, long_number,
                      CNAPS_ICBC, None, "CN")
    payment = Payment(_position(9, "CALIS:BAD", "1.00"), bad, DAY)
    with pytest.raises(PaymentFileError, match="does not validate against its XSD") as caught:
        pain001.build_document([payment], version=version, debtor=_centre(),
                               message_id="M-BAD", created_at=CREATED)
    assert "CdtrAcct/Id/Othr/Id" in str(caught.value)
    assert long_number not in str(caught.value)
    # Hand-broken: a currency the schema does not allow.
    good = pain001.build_document(_payments(), version=version, debtor=_centre(),
                                  message_id="M-OK", created_at=CREATED)
    with pytest.raises(PaymentFileError, match="Ccy"):
        pain001.validate(good.replace(b'Ccy="EUR"', b'Ccy="euro"'), version)
    with pytest.raises(PaymentFileError, match="not well-formed"):
        pain001.validate(good[:-40], version)
    pain001.validate(good, version)


# --------------------------------------------------------------------------
# CSV
# --------------------------------------------------------------------------

def test_the_csv_has_every_payment_in_full_and_is_excel_safe() -> None:
    evil = bank_accounts.account("CALIS:EVIL", "=HYPERLINK(\"http://x\")", iban=IBAN_DE,
                                 bank_name="@SUM(A1)")
    payments = [*_payments(), *pain001.select([_position(4, "CALIS:EVIL", "2.00")],
                                              {"CALIS:EVIL": evil}, DAY).payments]
    data = pain001.csv_document(payments)
    assert data.startswith(BOM.encode())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"))))
    assert tuple(rows[0]) == pain001.CSV_HEADER
    by_ref = {r[0]: dict(zip(rows[0], r, strict=True)) for r in rows[1:]}
    pku = by_ref["ILL-1901-03-R7-A00001-CNY"]
    assert (pku["收款人 Holder"], pku["账号 Account"], pku["银行代码 Bank code"],
            pku["金额 Amount"], pku["币种 Currency"], pku["结算期 Period"]) == (
        "北京大学图书馆", CN_NUMBER, CNAPS_ICBC, "26.00", "CNY", "1901-03")
    assert by_ref["ILL-1901-03-R7-A00003-CNY"]["金额 Amount"] == "1000.00"
    e = by_ref["ILL-1901-03-R7-A00004-CNY"]
    assert e["收款人 Holder"] == "'=HYPERLINK(\"http://x\")"
    assert e["开户行 Bank name"] == "'@SUM(A1)"


# --------------------------------------------------------------------------
# PostgreSQL: accounts kept, a real run paid by file
# --------------------------------------------------------------------------

async def test_accounts_are_kept_with_their_history(pool: asyncpg.Pool) -> None:
    pku, fdu = await libraries(pool, "北京大学图书馆", "复旦大学图书馆")
    async with pool.acquire() as conn:
        assert await bank_accounts.current(conn, pku) is None
        assert await bank_accounts.remove_account(conn, pku, actor="t") is False
        await bank_accounts.set_account(conn, pku, "北京大学", actor="t", iban=IBAN_DE)
        a = await bank_accounts.set_account(conn, pku, "北京大学图书馆", actor="张三",
                                            account_id=CN_ACCOUNT, bank_code=CNAPS_ICBC)
        assert a.changed_by == "张三" and a.changed_at is not None
        now = await bank_accounts.current(conn, pku)
        assert now is not None and (now.holder, now.account_id) == ("北京大学图书馆",
                                                                   CN_NUMBER)
        # Matching a bank statement's counterpart: spaces and case do not matter; a
        # number the agency no longer uses matches nothing.
        assert await bank_accounts.agency_for_account(conn, CN_ACCOUNT) == pku
        assert await bank_accounts.agency_for_account(conn, CN_NUMBER) == pku
        assert await bank_accounts.agency_for_account(conn, IBAN_DE.lower()) is None
        # One number, two agencies: the payment cannot be attributed.
        await bank_accounts.set_account(conn, fdu, "复旦大学", actor="t", iban=IBAN_DE)
        assert await bank_accounts.agency_for_account(conn, "de89370400440532013000") == fdu
        await bank_accounts.set_account(conn, pku, "北京大学", actor="t", iban=IBAN_DE)
        assert await bank_accounts.agency_for_account(conn, IBAN_DE) is None
        assert await bank_accounts.remove_account(conn, pku, actor="t") is True
        assert await bank_accounts.current(conn, pku) is None
        assert await bank_accounts.agency_for_account(conn, IBAN_DE) == fdu
        assert pku not in await bank_accounts.all_current(conn)
        assert [h.holder if h else None for h in await bank_accounts.history(conn, pku)] == [
            "北京大学", "北京大学图书馆", "北京大学", None]
        with pytest.raises(asyncpg.PostgresError, match="append-only"):
            await conn.execute("UPDATE agency_bank_account SET bank_name = 'x' "
                               "WHERE agency = $1", pku)
        with pytest.raises(BankAccountError, match="no agency"):
            await bank_accounts.set_account(conn, "NOPE:1", "x", actor="t", iban=IBAN_DE)


async def payable(pool: asyncpg.Pool, run_id: int) -> list[dues.Position]:
    """The run's open dues the centre owes to an agency with an account. A run settles
    every posting not settled before, other tests' too: what a file of it pays is
    computed here, not assumed to be this test's agencies only."""
    async with pool.acquire() as conn:
        accounts = await bank_accounts.all_current(conn)
        return [p for p in await dues.positions(conn, run_id=run_id, open_only=True)
                if p.direction is Direction.TO_AGENCY and p.agency in accounts]


def _total(found: list[dues.Position]) -> Decimal:
    return sum((Decimal(p.outstanding.amount_text()) for p in found), Decimal(0))


async def test_a_run_is_paid_by_a_pain001_file_from_the_cli(
        pool: asyncpg.Pool, settings: Settings, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, lzu = await worked_example(pool, year)
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.run_id is not None
    run_id = result.run_id
    async with pool.acquire() as conn:
        mine = {p.agency: p for p in await dues.positions(conn, run_id=run_id)
                if p.agency in (pku, fdu, lzu)}
    assert {a: (p.direction, p.outstanding.amount_text()) for a, p in mine.items()} == {
        pku: (Direction.TO_AGENCY, "26.00"), fdu: (Direction.TO_AGENCY, "5.00"),
        lzu: (Direction.TO_CENTRE, "2.00")}

    # No centre account in the settings: a clear error, no file.
    out = tmp_path / "bank"
    assert await run_command(settings, ["payments", "file", "--run", str(run_id),
                                        "--out", str(out)]) == 2
    assert "ILLHUB_PAYMENTS__CENTRE_ACCOUNT" in capsys.readouterr().err
    assert not out.exists()
    s = settings.updated(payments__centre_account=CENTRE_NUMBER,
                         payments__centre_bank_code=CENTRE_CNAPS,
                         payments__pain001_version="pain.001.001.09")

    # Accounts through the CLI; shown masked.
    assert await run_command(s, ["payments", "account", "set", pku, "--holder",
                                 "北京大学图书馆", "--account", CN_ACCOUNT, "--bank-code",
                                 CNAPS_ICBC, "--bank-name", "中国工商银行"]) == 0
    assert await run_command(s, ["payments", "account", "set", fdu, "--holder", "复旦大学",
                                 "--iban", "DE89 3704 0044 0532 0130 01"]) == 2
    said = capsys.readouterr()
    assert "check digits" in said.err and "**** 5678" in said.out
    assert CN_NUMBER not in said.out + said.err and "370400440532013001" not in said.err
    assert await run_command(s, ["payments", "account", "show", pku]) == 0
    shown = capsys.readouterr().out
    assert "北京大学图书馆" in shown and "**** 5678" in shown and CN_NUMBER not in shown

    # fdu has no account yet: left out, with the reason.
    first_pays = await payable(pool, run_id)
    assert await run_command(s, ["payments", "file", "--period", period, "--out",
                                 str(out), "--execution-date", f"{year}-04-20"]) == 0
    said = capsys.readouterr()
    path = Path(said.out.splitlines()[0])
    assert path.parent == out and path.suffix == ".xml"
    assert f"{fdu} has no bank account on file" in said.out
    assert f"{len(first_pays)} payment(s)" in said.out
    assert f"control sum CNY {_total(first_pays):,}" in said.out
    data = _bytes(path)
    _official(FileFormat.PAIN001_09).validate(io.BytesIO(data))
    assert Decimal(_texts(data, FileFormat.PAIN001_09, "CtrlSum")[0]) == _total(first_pays)
    assert sorted(_texts(data, FileFormat.PAIN001_09, "EndToEndId")) == sorted(
        p.reference for p in first_pays)
    assert mine[pku].reference in _texts(data, FileFormat.PAIN001_09, "EndToEndId")
    assert _texts(data, FileFormat.PAIN001_09, "Dt") == [f"{year}-04-20"]

    # With fdu's account, the next file pays fdu and leaves out what the first pays.
    assert await run_command(s, ["payments", "account", "set", fdu, "--holder", "复旦大学图书馆",
                                 "--iban", IBAN_DE, "--bic", "COBADEFFXXX"]) == 0
    assert "**** 3000" in capsys.readouterr().out
    assert await run_command(s, ["payments", "file", "--run", str(run_id), "--out",
                                 str(out)]) == 0
    said = capsys.readouterr().out
    second = _bytes(Path(said.splitlines()[0]))
    assert "already in payment file " + path.name in said and "--again" in said
    assert _texts(second, FileFormat.PAIN001_09, "EndToEndId") == [mine[fdu].reference]
    assert "复旦大学图书馆" in _texts(second, FileFormat.PAIN001_09, "Nm")

    # --again: all of it; CtrlSum = the outstanding amounts the centre owes (those with
    # an account: every one here).
    everything = await payable(pool, run_id)
    async with pool.acquire() as conn:
        owed = [p for p in await dues.positions(conn, run_id=run_id, open_only=True)
                if p.direction is Direction.TO_AGENCY]
    assert await run_command(s, ["payments", "file", "--run", str(run_id), "--out",
                                 str(out), "--again"]) == 0
    whole = _bytes(Path(capsys.readouterr().out.splitlines()[0]))
    _official(FileFormat.PAIN001_09).validate(io.BytesIO(whole))
    assert Decimal(_texts(whole, FileFormat.PAIN001_09, "CtrlSum")[0]) == _total(everything)
    if len(owed) == len(everything):
        assert _total(everything) == _total(owed)
    assert sorted(_texts(whole, FileFormat.PAIN001_09, "EndToEndId")) == sorted(
        p.reference for p in everything)
    assert "北京大学图书馆" in _texts(whole, FileFormat.PAIN001_09, "Nm")

    rows = await pool.fetch("SELECT * FROM payment_file WHERE run_id = $1 ORDER BY id", run_id)
    assert [r["payments"] for r in rows] == [len(first_pays), 1, len(everything)]
    last = rows[-1]
    assert last["format"] == "pain.001.001.09" and last["created_by"] == "cli"
    total_minor = sum(p.outstanding.minor for p in everything)
    assert json.loads(last["control_minor"]) == {"CNY": total_minor}
    assert sorted(last["due_ids"]) == sorted(p.due_id for p in everything)
    assert last["sha256"] == hashlib.sha256(whole).hexdigest()
    assert last["bytes"] == len(whole) and (out / last["file_name"]).exists()
    assert _texts(whole, FileFormat.PAIN001_09, "MsgId") == [last["message_id"]]

    # Nothing is paid by a file.
    async with pool.acquire() as conn:
        still = await dues.positions(conn, run_id=run_id, open_only=True)
    assert {p.due_id for p in everything} <= {p.due_id for p in still}

    # Everything filed already: nothing to pay, exit 1, the reasons listed.
    assert await run_command(s, ["payments", "file", "--run", str(run_id), "--out",
                                 str(out)]) == 1
    said2 = capsys.readouterr()
    assert "nothing to pay" in said2.err and "already in payment file" in said2.out
    assert len(list(out.glob("*.xml"))) == 3 and not list(out.glob(".*part"))
    assert await run_command(s, ["payments", "file", "--period", f"{year}-11"]) == 2
    assert "no closed settlement run" in capsys.readouterr().err


async def test_a_run_is_paid_by_a_csv_file(pool: asyncpg.Pool, settings: Settings,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    year = await fresh_year(pool)
    period, pku, fdu, _lzu = await worked_example(pool, year)
    result = await settle(pool, settings, period, now=after(period))
    assert result is not None and result.run_id is not None
    async with pool.acquire() as conn:
        await bank_accounts.set_account(conn, pku, "北京大学图书馆", actor="t",
                                        account_id=CN_ACCOUNT, bank_code=CNAPS_ICBC)
        await bank_accounts.set_account(conn, fdu, "=复旦大学", actor="t", iban=IBAN_DE)
    pays = await payable(pool, result.run_id)
    # A CSV needs no centre account (it is the bank's upload, made in its own portal).
    assert await run_command(settings, ["payments", "file", "--run", str(result.run_id),
                                        "--format", "csv"]) == 0
    said = capsys.readouterr().out
    path = Path(said.splitlines()[0])
    assert path.parent == pain001.payments_dir(settings) and path.suffix == ".csv"
    assert f"control sum CNY {_total(pays):,}" in said and f"{len(pays)} payment(s)" in said
    rows = list(csv.reader(io.StringIO(_bytes(path).decode("utf-8-sig"))))
    body = {r[1]: r for r in rows[1:]}
    assert len(body) == len(pays)
    assert body[pku][3] == CN_NUMBER and body[pku][8] == "26.00"
    assert body[fdu][2] == "'=复旦大学" and body[fdu][3] == IBAN_DE_COMPACT
    row = await pool.fetchrow("SELECT * FROM payment_file WHERE run_id = $1", result.run_id)
    assert row["format"] == "csv" and row["file_name"] == path.name
    assert json.loads(row["control_minor"]) == {"CNY": sum(p.outstanding.minor for p in pays)}
