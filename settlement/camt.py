"""ISO 20022 bank statements read for reconciliation (issue 17): camt.053 (end-of-day
statement, BkToCstmrStmt/Stmt) and camt.054 (debit/credit notification,
BkToCstmrDbtCdtNtfctn/Ntfctn), versions 001.02 to 001.12, told apart by the namespace.

Why our own reading over lxml rather than a library's bindings:
- pycamt reads only IBAN accounts; the consortium's Chinese banks identify accounts by
  domestic numbers (Acct/Id/Othr/Id), which it drops.
- pyiso20022 (xsdata dataclasses generated from the official XSDs) has a separate,
  unrelated class tree for each of the 22 message versions (ReportEntry2 ... ReportEntry13,
  Party40Choice or not), so code reading them is untyped duck-typing over 22 models;
  its binding also refuses a whole file for one element its model lacks. The dozen
  fields reconciliation needs sit at the same paths in every version but two (the
  party's <Pty> wrapper from 001.08, the status's <Cd> from 001.03), so one reader
  with the document's own namespace covers them all. pyiso20022 still serves the tests:
  they BUILD their statements with it (the `test` extra), so this reader is checked
  against files a library generated from the XSDs, not against our own idea of them.

A bank file is untrusted input: no DTD, no entities, no network (lxml's safe parser,
and a DOCTYPE is refused outright). Amounts are read as decimal text into Money's
minor units, never through float; more decimals than the currency has are refused.
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass
from decimal import Decimal

from lxml import etree

from schemas.money import Money, minor_unit

NAMESPACE_PREFIX = "urn:iso:std:iso:20022:tech:xsd:"
VERSIONS = tuple(f"001.{n:02d}" for n in range(2, 13))   # 001.02 .. 001.12
_NAMESPACE = re.compile(r"urn:iso:std:iso:20022:tech:xsd:(camt\.05[34])\.(001\.[0-9]{2})")
# ISO 20022 amounts: xs:decimal, at most 18 digits of which at most 5 after the point.
_AMOUNT = re.compile(r"[0-9]{1,18}(?:\.([0-9]{0,5}))?")

# No DTDs, no entities, no network: a bank file is untrusted input (as ISO 18626 XML).
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                          dtd_validation=False, huge_tree=False, remove_comments=True,
                          remove_pis=True)


class CamtError(ValueError):
    """Why a file is not a camt.053/054 statement this hub reads; the message says which."""


class MessageKind(enum.StrEnum):
    STATEMENT = "camt.053"        # BankToCustomerStatement
    NOTIFICATION = "camt.054"     # BankToCustomerDebitCreditNotification


class CreditDebit(enum.StrEnum):
    CREDIT = "CRDT"               # money into the statement's account (the centre's)
    DEBIT = "DBIT"                # money out of it


BOOKED = "BOOK"

# kind -> (the message element, the statement element under it)
_BODY = {MessageKind.STATEMENT: ("BkToCstmrStmt", "Stmt"),
         MessageKind.NOTIFICATION: ("BkToCstmrDbtCdtNtfctn", "Ntfctn")}


@dataclass(frozen=True)
class Party:
    """The other side of a transaction: the debtor of a credit, the creditor of a debit."""

    name: str | None
    account: str | None           # IBAN, or the domestic number (Othr/Id)


@dataclass(frozen=True)
class TransactionDetail:
    """One transaction of an entry (TxDtls); a batch entry has several."""

    index: int                    # its place in the entry, from 0
    amount: Money | None          # None: a batch detail that gives no amount
    end_to_end_id: str | None
    account_servicer_ref: str | None
    unstructured: tuple[str, ...]         # RmtInf/Ustrd lines
    creditor_references: tuple[str, ...]  # RmtInf/Strd/CdtrRefInf/Ref
    additional_info: str | None           # AddtlTxInf
    counterparty: Party

    @property
    def texts(self) -> tuple[str, ...]:
        """Everything the payer may have written a reference in, most structured first."""
        found = (self.end_to_end_id, *self.creditor_references, *self.unstructured,
                 self.additional_info)
        return tuple(t for t in found if t)


@dataclass(frozen=True)
class BankEntry:
    """One entry (Ntry) of a statement or notification."""

    statement_id: str
    account: str                  # the statement's account: IBAN or Othr/Id
    entry_ref: str | None         # AcctSvcrRef, else NtryRef
    account_servicer_ref: str | None
    booking_date: datetime.date | None
    amount: Money
    side: CreditDebit
    status: str                   # BOOK, PDNG, INFO, ...
    reversal: bool
    additional_info: str | None   # AddtlNtryInf
    details: tuple[TransactionDetail, ...]

    @property
    def booked(self) -> bool:
        return self.status == BOOKED

    def transactions(self) -> tuple[TransactionDetail, ...]:
        """The details to match: those given, or the entry itself as one transaction
        (the entry's amount, and its additional information as remittance)."""
        if not self.details:
            return (TransactionDetail(0, self.amount, None, None, (), (),
                                      self.additional_info, Party(None, None)),)
        if len(self.details) == 1 and self.details[0].amount is None:
            d = self.details[0]
            return (TransactionDetail(d.index, self.amount, d.end_to_end_id,
                                      d.account_servicer_ref, d.unstructured,
                                      d.creditor_references,
                                      d.additional_info or self.additional_info,
                                      d.counterparty),)
        return self.details


@dataclass(frozen=True)
class BankMessage:
    """A whole camt.053/054 file."""

    kind: MessageKind
    version: str                  # "001.08"
    message_id: str
    entries: tuple[BankEntry, ...]

    @property
    def name(self) -> str:
        return f"{self.kind.value}.{self.version}"

    @property
    def namespace(self) -> str:
        return f"{NAMESPACE_PREFIX}{self.name}"

    @property
    def accounts(self) -> tuple[str, ...]:
        """The statements' accounts, each once, in file order."""
        return tuple(dict.fromkeys(e.account for e in self.entries))


# --------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------

def parse(raw: bytes) -> BankMessage:
    """Read a camt.053 or camt.054 file; CamtError says what is wrong with it."""
    try:
        root = etree.fromstring(raw, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise CamtError(f"not well-formed XML: {exc}") from None
    docinfo = root.getroottree().docinfo
    # lxml-stubs' DocInfo lacks `doctype` (lxml has had it since 2.0).
    if docinfo.doctype or docinfo.internalDTD is not None:  # type: ignore[union-attr]
        # ISO 20022 has no DTD; one in a bank file can only be an entity trick.
        raise CamtError("a DOCTYPE declaration is not allowed in a bank statement")
    document = _document(root)
    namespace = etree.QName(document).namespace or ""
    kind, version = _kind_of(namespace)
    reader = _Reader(namespace)
    body_name, statement_name = _BODY[kind]
    body = reader.one(document, body_name)
    if body is None:
        raise CamtError(f"{kind.value}: <Document> has no <{body_name}>")
    message_id = reader.text(body, "GrpHdr/MsgId")
    if not message_id:
        raise CamtError(f"{kind.value}: the group header has no MsgId")
    entries: list[BankEntry] = []
    for statement in reader.all(body, statement_name):
        entries.extend(reader.statement(statement, statement_name))
    return BankMessage(kind, version, message_id, tuple(entries))


def _document(root: etree._Element) -> etree._Element:
    """The <Document>: the root, or the one inside a business-message envelope."""
    if etree.QName(root).localname == "Document":
        return root
    for child in root:
        if isinstance(child.tag, str) and etree.QName(child).localname == "Document":
            return child
    raise CamtError(f"root element is <{etree.QName(root).localname}>; expected <Document> "
                    "of camt.053 or camt.054")


def _kind_of(namespace: str) -> tuple[MessageKind, str]:
    found = _NAMESPACE.fullmatch(namespace)
    if found is None or found.group(2) not in VERSIONS:
        raise CamtError(f"namespace {namespace or '(none)'!r} is not one this hub reads: "
                        f"camt.053 or camt.054, versions {VERSIONS[0]} to {VERSIONS[-1]} "
                        f"(e.g. {NAMESPACE_PREFIX}camt.053.001.08)")
    return MessageKind(found.group(1)), found.group(2)


def amount_of(text: str | None, currency: str | None, where: str) -> Money:
    """An ISO 20022 amount (decimal text, currency attribute) as Money: minor units via
    Decimal, refused when it has more decimals than the currency (CNY: 2, JPY: 0)."""
    value = (text or "").strip()
    found = _AMOUNT.fullmatch(value)
    if found is None:
        raise CamtError(f"{where}: amount {value!r} is not a decimal number such as 12.50")
    if not currency or not re.fullmatch(r"[A-Z]{3}", currency):
        raise CamtError(f"{where}: amount {value} has no currency (Ccy) or a bad one "
                        f"({currency!r})")
    places = minor_unit(currency)
    decimals = len(found.group(1) or "")
    if decimals > places:
        raise CamtError(f"{where}: amount {value} {currency} has {decimals} decimals; "
                        f"{currency} has {places}")
    return Money(int(Decimal(value).scaleb(places)), currency)


class _Reader:
    """Paths within one namespace; every path is written once, below."""

    def __init__(self, namespace: str) -> None:
        self.ns = {"c": namespace}

    def _path(self, path: str) -> str:
        return "/".join(f"c:{step}" for step in path.split("/"))

    def all(self, node: etree._Element, path: str) -> list[etree._Element]:
        return node.findall(self._path(path), namespaces=self.ns)

    def one(self, node: etree._Element, path: str) -> etree._Element | None:
        found = self.all(node, path)
        return found[0] if found else None

    def text(self, node: etree._Element | None, path: str) -> str | None:
        if node is None:
            return None
        found = self.one(node, path)
        if found is None or found.text is None:
            return None
        return found.text.strip() or None

    def texts(self, node: etree._Element | None, path: str) -> tuple[str, ...]:
        if node is None:
            return ()
        return tuple(e.text.strip() for e in self.all(node, path)
                     if e.text is not None and e.text.strip())

    def account(self, node: etree._Element | None) -> str | None:
        """An account's IBAN, or its other (domestic) identification."""
        return self.text(node, "Id/IBAN") or self.text(node, "Id/Othr/Id")

    def money(self, node: etree._Element | None, where: str) -> Money | None:
        if node is None:
            return None
        return amount_of(node.text, node.get("Ccy"), where)

    def statement(self, stmt: etree._Element, name: str) -> list[BankEntry]:
        statement_id = self.text(stmt, "Id") or ""
        where = f"{name} {statement_id or '(no Id)'}"
        account = self.account(self.one(stmt, "Acct"))
        if not account:
            raise CamtError(f"{where}: the account (Acct/Id/IBAN or Acct/Id/Othr/Id) is "
                            "missing")
        return [self.entry(n, i, statement_id, account, where)
                for i, n in enumerate(self.all(stmt, "Ntry"))]

    def entry(self, ntry: etree._Element, position: int, statement_id: str, account: str,
              where: str) -> BankEntry:
        servicer_ref = self.text(ntry, "AcctSvcrRef")
        entry_ref = servicer_ref or self.text(ntry, "NtryRef")
        here = f"{where} entry {entry_ref or position + 1}"
        amount = self.money(self.one(ntry, "Amt"), here)
        if amount is None:
            raise CamtError(f"{here}: no Amt")
        side_text = self.text(ntry, "CdtDbtInd")
        if side_text not in {s.value for s in CreditDebit}:
            raise CamtError(f"{here}: CdtDbtInd {side_text!r} is neither CRDT nor DBIT")
        # 001.02 writes the status as text; 001.03 on as a choice (<Cd>, <Prtry>).
        status = (self.text(ntry, "Sts/Cd") or self.text(ntry, "Sts/Prtry")
                  or self.text(ntry, "Sts") or "")
        booked_on = (self.date(ntry, "BookgDt", here) or self.date(ntry, "ValDt", here))
        if status == BOOKED and booked_on is None:
            raise CamtError(f"{here}: a booked entry without a booking date (BookgDt)")
        details = tuple(self.detail(tx, i, CreditDebit(side_text), here)
                        for i, tx in enumerate(self.all(ntry, "NtryDtls/TxDtls")))
        return BankEntry(
            statement_id=statement_id, account=account, entry_ref=entry_ref,
            account_servicer_ref=servicer_ref, booking_date=booked_on, amount=amount,
            side=CreditDebit(side_text), status=status,
            reversal=(self.text(ntry, "RvslInd") or "").lower() in {"true", "1"},
            additional_info=self.text(ntry, "AddtlNtryInf"), details=details)

    def date(self, node: etree._Element, path: str, where: str) -> datetime.date | None:
        text = self.text(node, f"{path}/Dt") or self.text(node, f"{path}/DtTm")
        if text is None:
            return None
        try:
            return datetime.date.fromisoformat(text[:10])
        except ValueError:
            raise CamtError(f"{where}: {path} {text!r} is not a date") from None

    def detail(self, tx: etree._Element, index: int, side: CreditDebit,
               where: str) -> TransactionDetail:
        here = f"{where} transaction {index + 1}"
        # 001.02 gives a detail's amount only in AmtDtls; 001.03 on also as <Amt>.
        amount = (self.money(self.one(tx, "Amt"), here)
                  or self.money(self.one(tx, "AmtDtls/TxAmt/Amt"), here))
        # The other side: who paid a credit, who was paid by a debit. From 001.08 the
        # party sits in <Pty> (or is an agent, <Agt>, with no name of its own).
        role = "Dbtr" if side is CreditDebit.CREDIT else "Cdtr"
        parties = self.one(tx, "RltdPties")
        name = (self.text(parties, f"{role}/Pty/Nm") or self.text(parties, f"{role}/Nm"))
        account = self.account(self.one(parties, f"{role}Acct")) if parties is not None \
            else None
        remittance = self.one(tx, "RmtInf")
        return TransactionDetail(
            index=index, amount=amount,
            end_to_end_id=_real_id(self.text(tx, "Refs/EndToEndId")),
            account_servicer_ref=self.text(tx, "Refs/AcctSvcrRef"),
            unstructured=self.texts(remittance, "Ustrd"),
            creditor_references=self.texts(remittance, "Strd/CdtrRefInf/Ref"),
            additional_info=self.text(tx, "AddtlTxInf"),
            counterparty=Party(name, account))


def _real_id(value: str | None) -> str | None:
    """NOTPROVIDED is what ISO 20022 says for 'no end-to-end id'."""
    return None if value is None or value.upper() == "NOTPROVIDED" else value


__all__ = ["BOOKED", "VERSIONS", "BankEntry", "BankMessage", "CamtError", "CreditDebit",
           "MessageKind", "Party", "TransactionDetail", "amount_of", "parse"]
