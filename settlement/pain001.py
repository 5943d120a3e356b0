"""The centre's outgoing payments as a file its bank takes (issue 17): an ISO 20022
pain.001 credit transfer (version .03 or .09, `settings.payments.pain001_version`), or
a plain CSV for a bank that takes that instead.

A file pays the dues the centre owes (direction to_agency) that are still open, each
its outstanding amount, to the agency's current bank account
(settlement/bank_accounts.py). A due whose agency has no account, or that an earlier
file already pays, is left out with the reason (`again=True` pays it once more, for a
file the bank refused). Writing a file pays nothing: a due is paid when the bank
statement or finance staff record the payment (settlement/dues.py).

pain.001: one group header (MsgId, creation time, number of transactions, control
sum), one payment instruction per currency and execution date (debtor: the centre's
name, account and bank from the settings), one transaction per due (EndToEndId: the
due's reference, which the bank statement quotes back; remittance: reference and
period). Built with lxml, and validated with xmlschema against the official XSD
(schemas/xsd/, see its README) before it is written: a document that does not
validate is refused, not written. Names keep their Chinese (the generic ISO 20022
schemas allow any character, unlike the SEPA subset).

Files land in `<data_dir>/payments/` (or a directory given), one row each in
`payment_file` (migration 0023) with checksum, sums per currency and the dues paid.
"""

from __future__ import annotations

import csv
import datetime
import enum
import hashlib
import io
import json
import os
import secrets
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from pathlib import Path

import xmlschema
from lxml import etree

from infra.database import Connection
from infra.locks import Lock, transaction_lock
from schemas.iso18626_xsd import XSD_DIR
from schemas.money import Money
from schemas.settings import Payments, Settings
from settlement.bank_accounts import (
    AccountScheme,
    BankAccount,
    all_current,
    centre_account,
)
from settlement.dues import Direction, Position, positions
from settlement.statement_model import BOM, NAME_MAX, clean_text


class FileFormat(enum.StrEnum):
    PAIN001_03 = "pain.001.001.03"
    PAIN001_09 = "pain.001.001.09"
    CSV = "csv"

    @property
    def is_xml(self) -> bool:
        return self is not FileFormat.CSV

    @property
    def extension(self) -> str:
        return "xml" if self.is_xml else "csv"


XML_FORMATS = (FileFormat.PAIN001_03, FileFormat.PAIN001_09)
# The ISO 20022 code of China's clearing system (ExternalClearingSystemIdentification1Code).
CNAPS_CLEARING = "CNAPS"
# What a debtor agent without a known BIC is identified as (the usual placeholder).
NOT_PROVIDED = "NOTPROVIDED"
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
CSV_HEADER = (
    "参考号 Reference", "收款馆 Agency", "收款人 Holder", "账号 Account",
    "账户类型 Scheme", "银行代码 Bank code", "开户行 Bank name", "国家 Country",
    "金额 Amount", "币种 Currency", "结算期 Period", "执行日 Execution date",
)


class PaymentFileError(ValueError):
    """A payment file that cannot be made; the message says why (no account numbers)."""


class NothingToPay(PaymentFileError):
    """No due could go into the file; `left_out` says why for each one considered."""

    def __init__(self, message: str, left_out: Sequence[LeftOut]) -> None:
        super().__init__(message)
        self.left_out = tuple(left_out)


@dataclass(frozen=True)
class Payment:
    """One transfer of the file: a due's outstanding amount to its agency's account."""

    due: Position
    account: BankAccount
    execution_date: datetime.date

    @property
    def amount(self) -> Money:
        return self.due.outstanding

    @property
    def remittance(self) -> str:
        """What the agency's bank statement shows (ISO 20022 RmtInf/Ustrd)."""
        return f"{self.due.reference} {self.due.period}"


@dataclass(frozen=True)
class LeftOut:
    due: Position
    reason: str


@dataclass(frozen=True)
class Selection:
    payments: tuple[Payment, ...]
    left_out: tuple[LeftOut, ...]


def control_sums(payments: Iterable[Payment]) -> dict[str, Money]:
    """The sum of the payments per currency (sorted by currency)."""
    sums: dict[str, int] = {}
    for p in payments:
        sums[p.amount.currency] = sums.get(p.amount.currency, 0) + p.amount.minor
    return {c: Money(sums[c], c) for c in sorted(sums)}


def select(found: Iterable[Position], accounts: Mapping[str, BankAccount],
           execution_date: datetime.date, *, filed: Mapping[int, str] | None = None
           ) -> Selection:
    """What a file pays: every open due the centre owes, to its agency's account; the
    rest of those dues left out with the reason. Dues owed to the centre are not the
    file's business and are skipped silently. `filed`: due id -> the earlier file
    that pays it."""
    pay: list[Payment] = []
    left: list[LeftOut] = []
    for p in found:
        if p.direction is not Direction.TO_AGENCY or p.outstanding.minor <= 0:
            continue
        a = accounts.get(p.agency)
        if filed and p.due_id in filed:
            left.append(LeftOut(p, f"already in payment file {filed[p.due_id]}"))
        elif a is None:
            left.append(LeftOut(p, f"{p.agency} has no bank account on file"))
        else:
            pay.append(Payment(p, a, execution_date))
    return Selection(tuple(pay), tuple(left))


# --------------------------------------------------------------------------
# the pain.001 document
# --------------------------------------------------------------------------

XSD_FILES = {FileFormat.PAIN001_03: "pain.001.001.03.xsd",
             FileFormat.PAIN001_09: "pain.001.001.09.xsd"}


def namespace(version: FileFormat) -> str:
    return f"urn:iso:std:iso:20022:tech:xsd:{version.value}"


@cache
def schema(version: FileFormat) -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(XSD_DIR / XSD_FILES[version]))


class _Writer:
    """Elements in one version's namespace, and the names that differ between them."""

    def __init__(self, version: FileFormat) -> None:
        self.v = version
        self.ns = namespace(version)
        self.bic_tag = "BIC" if version is FileFormat.PAIN001_03 else "BICFI"

    def el(self, parent: etree._Element, tag: str, text: str | None = None,
           **attrib: str) -> etree._Element:
        e = etree.SubElement(parent, f"{{{self.ns}}}{tag}", attrib)
        if text is not None:
            e.text = text
        return e

    def party(self, parent: etree._Element, tag: str, name: str) -> None:
        self.el(self.el(parent, tag), "Nm", name)

    def account(self, parent: etree._Element, tag: str, a: BankAccount) -> None:
        ident = self.el(self.el(parent, tag), "Id")
        if a.scheme is AccountScheme.IBAN:
            self.el(ident, "IBAN", a.account_id)
        else:
            self.el(self.el(ident, "Othr"), "Id", a.account_id)

    def agent(self, parent: etree._Element, tag: str, a: BankAccount, *,
              required: bool) -> None:
        """The account's bank: its BIC, or its clearing-system member id (CN: CNAPS).
        A creditor's bank known only by the IBAN is left out (the bank derives it); the
        debtor's must be there, as NOTPROVIDED if need be."""
        if a.bank_code is None and not required:
            return
        fin = self.el(self.el(parent, tag), "FinInstnId")
        if a.bic is not None:
            self.el(fin, self.bic_tag, a.bic)
        elif a.clearing_code is not None:
            member = self.el(fin, "ClrSysMmbId")
            if a.country == "CN":
                self.el(self.el(member, "ClrSysId"), "Cd", CNAPS_CLEARING)
            self.el(member, "MmbId", a.clearing_code)
        if a.bank_name:
            self.el(fin, "Nm", a.bank_name)
        if a.bank_code is None:
            self.el(self.el(fin, "Othr"), "Id", NOT_PROVIDED)

    def execution_date(self, parent: etree._Element, day: datetime.date) -> None:
        if self.v is FileFormat.PAIN001_03:
            self.el(parent, "ReqdExctnDt", day.isoformat())
        else:
            self.el(self.el(parent, "ReqdExctnDt"), "Dt", day.isoformat())


def _sum_text(amounts: Iterable[Money]) -> str:
    """A control sum: the decimal sum of the amounts as written (across currencies in
    the group header, as ISO 20022 defines it)."""
    total = sum((Decimal(m.amount_text()) for m in amounts), Decimal(0))
    return format(total, "f")


def build_document(payments: Sequence[Payment], *, version: FileFormat, debtor: BankAccount,
                   message_id: str, created_at: datetime.datetime) -> bytes:
    """The pain.001 document paying `payments` from the centre's account `debtor`,
    validated against the version's XSD (PaymentFileError if it does not validate)."""
    if not version.is_xml:
        raise PaymentFileError(f"{version.value} is not a pain.001 version")
    if not payments:
        raise PaymentFileError("a pain.001 document needs at least one payment")
    w = _Writer(version)
    # None is the default namespace's prefix in lxml; lxml-stubs' nsmap allows only str keys.
    root = etree.Element(f"{{{w.ns}}}Document", nsmap={None: w.ns})  # type: ignore[dict-item]
    initiation = w.el(root, "CstmrCdtTrfInitn")
    header = w.el(initiation, "GrpHdr")
    w.el(header, "MsgId", message_id)
    w.el(header, "CreDtTm", created_at.isoformat(timespec="seconds"))
    w.el(header, "NbOfTxs", str(len(payments)))
    w.el(header, "CtrlSum", _sum_text(p.amount for p in payments))
    w.party(header, "InitgPty", debtor.holder)
    groups: dict[tuple[str, datetime.date], list[Payment]] = {}
    for p in payments:
        groups.setdefault((p.amount.currency, p.execution_date), []).append(p)
    for n, (currency, day) in enumerate(sorted(groups), start=1):
        batch = groups[(currency, day)]
        info = w.el(initiation, "PmtInf")
        w.el(info, "PmtInfId", f"{message_id}-{n}")
        w.el(info, "PmtMtd", "TRF")
        w.el(info, "NbOfTxs", str(len(batch)))
        w.el(info, "CtrlSum", _sum_text(p.amount for p in batch))
        w.execution_date(info, day)
        w.party(info, "Dbtr", debtor.holder)
        w.account(info, "DbtrAcct", debtor)
        w.agent(info, "DbtrAgt", debtor, required=True)
        for p in batch:
            tx = w.el(info, "CdtTrfTxInf")
            w.el(w.el(tx, "PmtId"), "EndToEndId", p.due.reference)
            w.el(w.el(tx, "Amt"), "InstdAmt", p.amount.amount_text(), Ccy=currency)
            w.agent(tx, "CdtrAgt", p.account, required=False)
            w.party(tx, "Cdtr", p.account.holder)
            w.account(tx, "CdtrAcct", p.account)
            w.el(w.el(tx, "RmtInf"), "Ustrd", p.remittance)
    # The declaration written out: lxml's uses single quotes, which some banks refuse.
    data = XML_DECLARATION + etree.tostring(root, encoding="UTF-8", pretty_print=True)
    validate(data, version, hide=[debtor.account_id, *(p.account.account_id
                                                       for p in payments)])
    return data


def validate(data: bytes, version: FileFormat, *, hide: Iterable[str] = ()) -> None:
    """PaymentFileError unless `data` is valid against the version's official XSD. The
    message names the first problem and where it is, with the account numbers in
    `hide` masked (an XSD error quotes the offending value)."""
    try:
        root = etree.fromstring(data, etree.XMLParser(resolve_entities=False,
                                                      no_network=True))
    except etree.XMLSyntaxError as exc:
        raise PaymentFileError(f"the {version.value} document is not well-formed XML: "
                               f"{_hidden(str(exc), hide)}") from None
    errors = list(schema(version).iter_errors(root))
    if not errors:
        return
    first = errors[0]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    raise PaymentFileError(
        f"the {version.value} document does not validate against its XSD, so it was not "
        f"written: {_hidden(str(first.reason), hide)} at {first.path}{more}")


def _hidden(text: str, numbers: Iterable[str]) -> str:
    for n in sorted(set(numbers), key=len, reverse=True):
        if n:
            text = text.replace(n, "****" + n[-4:] if len(n) > 4 else "****")
    return text


# --------------------------------------------------------------------------
# the CSV alternative
# --------------------------------------------------------------------------

def csv_document(payments: Sequence[Payment]) -> bytes:
    """One row per payment, with the full account number (the bank needs it); UTF-8
    with a byte order mark and formula-safe text, as the statements' CSV."""
    buf = io.StringIO()
    buf.write(BOM)
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(CSV_HEADER)
    for p in payments:
        a = p.account
        out.writerow([clean_text(p.due.reference, NAME_MAX), clean_text(p.due.agency, NAME_MAX),
                      clean_text(a.holder, NAME_MAX), clean_text(a.account_id, NAME_MAX),
                      a.scheme.value, clean_text(a.bank_code, NAME_MAX),
                      clean_text(a.bank_name, NAME_MAX), a.country, p.amount.amount_text(),
                      p.amount.currency, clean_text(p.due.period, NAME_MAX),
                      p.execution_date.isoformat()])
    return buf.getvalue().encode("utf-8")


# --------------------------------------------------------------------------
# writing and recording a file
# --------------------------------------------------------------------------

# One file is made at a time: what earlier files pay is read under this lock, so two
# at once cannot both pay the same due.

SELECT_FILED = """SELECT id, file_name, message_id, created_at, due_ids FROM payment_file
    WHERE due_ids && $1::bigint[] ORDER BY id"""

INSERT_FILE = """INSERT INTO payment_file (run_id, format, message_id, file_name, sha256,
        bytes, payments, control_minor, due_ids, created_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9::bigint[], $10)
    RETURNING id"""

SELECT_RUN_OF_PERIOD = """SELECT id FROM settlement_run
    WHERE period = $1 AND closed_at IS NOT NULL"""


@dataclass(frozen=True)
class PaymentFile:
    id: int
    path: Path
    format: FileFormat
    message_id: str
    run_id: int | None
    sha256: str
    bytes: int
    payments: tuple[Payment, ...]
    left_out: tuple[LeftOut, ...]

    @property
    def control_sums(self) -> dict[str, Money]:
        return control_sums(self.payments)


def payments_dir(settings: Settings) -> Path:
    return Path(settings.data_dir) / "payments"


def new_message_id(now: datetime.datetime) -> str:
    """A file's unique id (also its name): ILLPAY-<UTC time>-<random>, 28 characters."""
    stamp = now.astimezone(datetime.UTC).strftime("%Y%m%d%H%M%S")
    return f"ILLPAY-{stamp}-{secrets.token_hex(3).upper()}"


async def run_of_period(conn: Connection, period: str) -> int | None:
    """The closed settlement run of a period, if it has one."""
    run_id: int | None = await conn.fetchval(SELECT_RUN_OF_PERIOD, period)
    return run_id


async def _filed(conn: Connection, due_ids: list[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for r in await conn.fetch(SELECT_FILED, due_ids):
        made = r["created_at"].astimezone(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
        for d in r["due_ids"]:
            out[d] = f"{r['file_name']} ({made})"
    return out


async def make_file(conn: Connection, rules: Payments, *, run_id: int | None,
                    fmt: FileFormat, execution_date: datetime.date, directory: Path,
                    actor: str, now: datetime.datetime, again: bool = False) -> PaymentFile:
    """Write the file paying the open dues the centre owes for run `run_id` (None:
    of every run) and record it. CentreAccountMissing (a pain.001 file needs the
    centre's account), NothingToPay, or PaymentFileError if it does not validate;
    nothing is written then."""
    debtor = centre_account(rules) if fmt.is_xml else None
    written: list[Path] = []
    try:
        return await _make(conn, debtor, run_id=run_id, fmt=fmt,
                           execution_date=execution_date, directory=directory, actor=actor,
                           now=now, again=again, written=written)
    except BaseException:
        # The row was not committed: the file must not stay either.
        for path in written:
            path.unlink(missing_ok=True)
        raise


async def _make(conn: Connection, debtor: BankAccount | None, *, run_id: int | None,
                fmt: FileFormat, execution_date: datetime.date, directory: Path, actor: str,
                now: datetime.datetime, again: bool, written: list[Path]) -> PaymentFile:
    async with conn.transaction():
        await transaction_lock(conn, Lock.PAYMENT_FILE)
        found = [p for p in await positions(conn, run_id=run_id, open_only=True)
                 if p.direction is Direction.TO_AGENCY]
        filed = {} if again else await _filed(conn, [p.due_id for p in found])
        chosen = select(found, await all_current(conn), execution_date, filed=filed)
        if not chosen.payments:
            raise NothingToPay("nothing to pay: no open statement the centre owes "
                               + ("has a bank account and is in no earlier file"
                                  if chosen.left_out else
                                  ("in that run" if run_id is not None else "at all")),
                               chosen.left_out)
        message_id = new_message_id(now)
        if debtor is not None:
            data = build_document(chosen.payments, version=fmt, debtor=debtor,
                                  message_id=message_id, created_at=now)
        else:
            data = csv_document(chosen.payments)
        name = f"{message_id}.{fmt.extension}"
        digest = hashlib.sha256(data).hexdigest()
        sums = {c: m.minor for c, m in control_sums(chosen.payments).items()}
        file_id: int = await conn.fetchval(
            INSERT_FILE, run_id, fmt.value, message_id, name, digest, len(data),
            len(chosen.payments), json.dumps(sums), [p.due.due_id for p in chosen.payments],
            actor)
        path = _write(directory, name, data)
        written.append(path)
    return PaymentFile(file_id, path, fmt, message_id, run_id, digest, len(data),
                       chosen.payments, chosen.left_out)


def _write(directory: Path, name: str, data: bytes) -> Path:
    """The file in place whole or not at all (a temporary file renamed)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    part = directory / f".{name}.part"
    try:
        with part.open("xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return path
