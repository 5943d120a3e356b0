"""Reconciliation from the bank (issue 17): a camt.053/054 file's booked transactions
matched to statement dues, their payments recorded, and what did not match listed with
the reason.

Each booked transaction, in a fixed order:
  1. by reference: a due's reference (ILL-2026-10-R12-A3F9C1-CNY) quoted in the
     end-to-end id, the structured creditor reference or the free text; a credit must
     pay a due to the centre, a debit one to an agency;
  2. else by payer and amount: the counterparty's account (settlement.bank_accounts),
     or its name equal to an agency's name, then exactly one open due of that agency,
     direction and currency whose outstanding amount equals the transaction's;
  3. recorded with dues.record_payment (source bank, source_key = the entry's stable
     key): less than outstanding is a part payment; more records what is outstanding
     and lists the rest as overpaid.

A file is imported in one transaction, with a `bank_import` row (the file's sha256 is
unique: the same bytes again change nothing), one `bank_import_item` per transaction and
outcome, and one message on ill.finance (`bank-import.CENTRE`). A transaction whose key
an earlier file recorded records nothing and is listed as a duplicate.
"""

from __future__ import annotations

import datetime
import enum
import hashlib
import json
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from infra.database import Connection
from infra.locks import Lock, transaction_lock
from infra.outbox import Outgoing, enqueue
from schemas.money import Money
from schemas.wire import FINANCE
from settlement import bank_accounts, dues
from settlement.camt import BankEntry, BankMessage, CreditDebit, Party, TransactionDetail, parse
from settlement.dues import Direction, PaymentRefused, PaymentSource, Position
from settlement.ledger import CENTRE


class Outcome(enum.StrEnum):
    MATCHED = "matched"           # a payment was recorded
    UNMATCHED = "unmatched"       # nothing (or, overpaid, not all) recorded: see the reason
    DUPLICATE = "duplicate"       # an earlier file recorded it (or it repeats in this one)
    SKIPPED = "skipped"           # not booked (pending, information only)


class Reason(enum.StrEnum):
    NOT_BOOKED = "not_booked"
    REVERSAL = "reversal"                         # a bank's reversal: by hand
    NO_AMOUNT = "no_amount"                       # a batch detail without its amount
    NO_REFERENCE_AND_NO_PAYER = "no_reference_and_no_payer"
    UNKNOWN_REFERENCE = "unknown_reference"
    WRONG_DIRECTION = "wrong_direction"
    CURRENCY_MISMATCH = "currency_mismatch"
    AMBIGUOUS = "ambiguous"
    NO_MATCHING_DUE = "no_matching_due"           # payer known, no open due of that amount
    ALREADY_PAID = "already_paid"
    OVERPAID = "overpaid"
    REFUSED = "refused"                           # dues.record_payment refused it


class MatchedBy(enum.StrEnum):
    REFERENCE = "reference"
    PAYER = "payer"


class ImportRefused(ValueError):
    """A file that is not imported at all (not the centre's account); says why."""


@dataclass(frozen=True)
class Item:
    """What became of one transaction (or, overpaid, of the part beyond the due)."""

    entry_key: str
    outcome: Outcome
    reason: Reason | None
    note: str
    amount: Money
    side: CreditDebit
    booked_on: datetime.date | None
    bank_reference: str | None
    counterparty: Party
    due_id: int | None = None
    reference: str | None = None          # the due's reference
    payment_id: int | None = None
    matched_by: MatchedBy | None = None   # how a matched (or overpaid) one found its due
    import_id: int | None = None          # set when read back from bank_import_item


@dataclass(frozen=True)
class ImportReport:
    sha256: str
    file_name: str
    kind: str                     # camt.053 / camt.054
    version: str                  # 001.08
    message_id: str
    account: str
    items: tuple[Item, ...]
    import_id: int | None         # None: a dry run
    already_imported: bool = False
    dry_run: bool = False

    def count(self, outcome: Outcome) -> int:
        return sum(1 for i in self.items if i.outcome is outcome)

    @property
    def entries(self) -> int:
        """Transactions read (an overpayment's two items count once)."""
        return len({i.entry_key for i in self.items})

    @property
    def changed(self) -> bool:
        return not (self.already_imported or self.dry_run) and self.import_id is not None


# --------------------------------------------------------------------------
# named statements
# --------------------------------------------------------------------------

# Imports take turns: the sha256 check, duplicate checks and payments of one file see
# every earlier file whole.

SELECT_IMPORT_BY_SHA = "SELECT id FROM bank_import WHERE sha256 = $1"

SELECT_IMPORT = """SELECT id, sha256, file_name, message_id, kind, version,
        statement_account FROM bank_import WHERE id = $1"""

SELECT_PAYMENT_BY_KEY = "SELECT id, due_id FROM statement_payment WHERE source_key = $1"

SELECT_AGENCY_BY_NAME = "SELECT symbol FROM agency WHERE name = $1 ORDER BY symbol"

INSERT_IMPORT = """INSERT INTO bank_import (sha256, file_name, message_id, kind, version,
        statement_account, entries, matched, unmatched, duplicates, skipped, imported_by)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
    RETURNING id"""

INSERT_ITEM = """INSERT INTO bank_import_item (import_id, entry_key, outcome, reason, note,
        due_id, payment_id, matched_by, side, amount_minor, currency, booked_on,
        bank_reference, counterparty_name, counterparty_account)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"""

ITEM_COLUMNS = """i.import_id, i.entry_key, i.outcome, i.reason, i.note, i.due_id,
    i.payment_id, i.matched_by, i.side, i.amount_minor, i.currency, i.booked_on, i.bank_reference,
    i.counterparty_name, i.counterparty_account, d.reference"""

SELECT_ITEMS = f"""SELECT {ITEM_COLUMNS}
    FROM bank_import_item i LEFT JOIN statement_due d ON d.id = i.due_id
    WHERE i.import_id = $1 ORDER BY i.id"""

SELECT_UNMATCHED = f"""SELECT {ITEM_COLUMNS}
    FROM bank_import_item i LEFT JOIN statement_due d ON d.id = i.due_id
    WHERE i.outcome = 'unmatched' AND ($1::bigint IS NULL OR i.import_id = $1)
    ORDER BY i.import_id, i.id"""


# --------------------------------------------------------------------------
# pure parts: keys and references
# --------------------------------------------------------------------------

# A due's reference as dues.reference_for writes it; payers may type it in lower case.
REFERENCE = re.compile(r"ILL-[0-9]{4}-[0-9]{2}-R[0-9]+-[0-9A-F]{6}-[A-Z]{3}", re.IGNORECASE)


def references_in(detail: TransactionDetail) -> tuple[str, ...]:
    """The due references a transaction quotes, each once, most structured field first."""
    found = (m.group(0).upper() for text in detail.texts for m in REFERENCE.finditer(text))
    return tuple(dict.fromkeys(found))


def entry_key(entry: BankEntry, detail: TransactionDetail, occurrence: int = 1) -> str:
    """The transaction's stable key (the payment's source_key): the statement's account,
    the bank's entry reference and the detail's place; where the bank gives no reference,
    a hash of the entry's content (and which of identical entries in the file it is), so
    the same entry in another file (a camt.054, then the day's camt.053) has the same key."""
    if entry.entry_ref:
        return f"camt:{entry.account}:{entry.entry_ref}:{detail.index}"
    return f"camt:{entry.account}:sha256:{content_hash(entry, detail)}:{occurrence}"


def content_hash(entry: BankEntry, detail: TransactionDetail) -> str:
    canonical = [entry.account, str(entry.booking_date), entry.side.value,
                 entry.amount.minor, entry.amount.currency, detail.index,
                 None if detail.amount is None else detail.amount.minor,
                 detail.end_to_end_id, list(detail.unstructured),
                 list(detail.creditor_references), detail.counterparty.name,
                 detail.counterparty.account]
    text = json.dumps(canonical, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def direction_for(side: CreditDebit) -> Direction:
    """Money in (a credit) pays a due to the centre; money out pays one to an agency."""
    return Direction.TO_CENTRE if side is CreditDebit.CREDIT else Direction.TO_AGENCY


# --------------------------------------------------------------------------
# importing
# --------------------------------------------------------------------------

async def import_file(conn: Connection, raw: bytes, *, file_name: str, actor: str,
                      today: datetime.date, dry_run: bool = False,
                      centre_account: str | None = None) -> ImportReport:
    """Read a camt.053/054 file and reconcile it, all in one transaction (a dry run rolls
    it back). CamtError: not a statement we read; ImportRefused: not the centre's account
    (when `centre_account` is set)."""
    message = parse(raw)
    sha = hashlib.sha256(raw).hexdigest()
    account = ", ".join(message.accounts)
    if centre_account and bank_accounts.normalise(centre_account) not in {
            bank_accounts.normalise(a) for a in message.accounts}:
        # Masked, as bank_accounts shows every account number outside the bank files.
        shown = ", ".join(bank_accounts.mask(a) for a in message.accounts) or "(none)"
        raise ImportRefused(f"{file_name} is a statement of account {shown}, not of the "
                            f"centre's account {bank_accounts.mask(centre_account)}")
    try:
        async with conn.transaction():
            await transaction_lock(conn, Lock.BANK_IMPORT)
            earlier = await conn.fetchval(SELECT_IMPORT_BY_SHA, sha)
            if earlier is not None:
                items = tuple(await import_items(conn, earlier))
                return _report(message, sha, file_name, account, items, earlier,
                               already_imported=True, dry_run=dry_run)
            items = tuple(await _reconcile_all(conn, message, actor=actor, today=today))
            if dry_run:
                raise _RollBack(_report(message, sha, file_name, account, items, None,
                                        dry_run=True))
            counted = _report(message, sha, file_name, account, items, None)
            import_id: int = await conn.fetchval(
                INSERT_IMPORT, sha, file_name, message.message_id, message.kind.value,
                message.version, account, counted.entries, counted.count(Outcome.MATCHED),
                counted.count(Outcome.UNMATCHED), counted.count(Outcome.DUPLICATE),
                counted.count(Outcome.SKIPPED), actor)
            await conn.executemany(INSERT_ITEM, [_item_row(import_id, i) for i in items])
            report = _report(message, sha, file_name, account, items, import_id)
            await enqueue(conn, [import_message(report, today)])
            return report
    except _RollBack as dry:
        return dry.report


class _RollBack(Exception):
    """Leaves a dry run's transaction, undoing all it did, with what it would have done."""

    def __init__(self, report: ImportReport) -> None:
        super().__init__("dry run")
        self.report = report


def _report(message: BankMessage, sha: str, file_name: str, account: str,
            items: tuple[Item, ...], import_id: int | None, *,
            already_imported: bool = False, dry_run: bool = False) -> ImportReport:
    return ImportReport(sha256=sha, file_name=file_name, kind=message.kind.value,
                        version=message.version, message_id=message.message_id,
                        account=account, items=items, import_id=import_id,
                        already_imported=already_imported, dry_run=dry_run)


async def _reconcile_all(conn: Connection, message: BankMessage, *, actor: str,
                         today: datetime.date) -> list[Item]:
    items: list[Item] = []
    seen: set[tuple[str, Outcome]] = set()
    occurrences: Counter[str] = Counter()
    for entry in message.entries:
        for detail in entry.transactions():
            base = entry_key(entry, detail)
            occurrences[base] += 1
            key = entry_key(entry, detail, occurrences[base])
            if occurrences[base] > 1 and entry.entry_ref:
                # The same bank reference again in this file: the same entry repeated.
                if (key, Outcome.DUPLICATE) not in seen:
                    seen.add((key, Outcome.DUPLICATE))
                    items.append(_item(entry, detail, key, Outcome.DUPLICATE, None,
                                       "repeated in this file"))
                continue
            for item in await reconcile(conn, entry, detail, key, actor=actor, today=today):
                seen.add((item.entry_key, item.outcome))
                items.append(item)
    return items


def _item(entry: BankEntry, detail: TransactionDetail, key: str, outcome: Outcome,
          reason: Reason | None, note: str, *, amount: Money | None = None,
          due: Position | None = None, payment_id: int | None = None,
          by: MatchedBy | None = None) -> Item:
    return Item(entry_key=key, outcome=outcome, reason=reason, note=note,
                amount=amount or detail.amount or entry.amount, side=entry.side,
                booked_on=entry.booking_date, bank_reference=bank_reference(entry, detail),
                counterparty=detail.counterparty,
                due_id=None if due is None else due.due_id,
                reference=None if due is None else due.reference, payment_id=payment_id,
                matched_by=by)


def bank_reference(entry: BankEntry, detail: TransactionDetail) -> str | None:
    """The bank's reference for the transfer, as kept with the payment."""
    return (detail.account_servicer_ref or entry.account_servicer_ref
            or detail.end_to_end_id or entry.entry_ref)


async def reconcile(conn: Connection, entry: BankEntry, detail: TransactionDetail, key: str,
                    *, actor: str, today: datetime.date) -> list[Item]:
    """One transaction: matched and recorded, or listed with the reason it was not."""
    def unmatched(reason: Reason, note: str, due: Position | None = None) -> list[Item]:
        return [_item(entry, detail, key, Outcome.UNMATCHED, reason, note, due=due)]

    if not entry.booked:
        return [_item(entry, detail, key, Outcome.SKIPPED, Reason.NOT_BOOKED,
                      f"status {entry.status or '(none)'}, not booked")]
    earlier = await conn.fetchrow(SELECT_PAYMENT_BY_KEY, key)
    if earlier is not None:
        due = await dues.position(conn, earlier["due_id"])
        return [_item(entry, detail, key, Outcome.DUPLICATE, None,
                      "recorded by an earlier import", due=due,
                      payment_id=earlier["id"])]
    if entry.reversal:
        return unmatched(Reason.REVERSAL, "the bank reversed an earlier entry; "
                         "correct the payment by hand")
    amount = detail.amount
    if amount is None:
        return unmatched(Reason.NO_AMOUNT, "a batch entry's transaction without its amount")
    quoted = references_in(detail)
    direction = direction_for(entry.side)
    if quoted:
        by = MatchedBy.REFERENCE
        due, miss = await _by_reference(conn, quoted, direction, amount)
    else:
        by = MatchedBy.PAYER
        due, miss = await _by_payer(conn, detail.counterparty, direction, amount)
    if due is None:
        reason, note, near = miss or (Reason.NO_REFERENCE_AND_NO_PAYER, "", None)
        return unmatched(reason, note, near)
    return await _record(conn, entry, detail, key, due, amount, by, actor=actor,
                         today=today)


_Miss = tuple[Reason, str, Position | None]


async def _by_reference(conn: Connection, quoted: Sequence[str], direction: Direction,
                        amount: Money) -> tuple[Position | None, _Miss | None]:
    known = [p for p in [await dues.by_reference(conn, r) for r in quoted] if p is not None]
    if not known:
        return None, (Reason.UNKNOWN_REFERENCE,
                      f"no statement has reference {', '.join(quoted)}", None)
    if len(known) > 1:
        return None, (Reason.AMBIGUOUS, "quotes several statements: "
                      + ", ".join(p.reference for p in known) + "; record it by hand", None)
    due = known[0]
    if due.direction is not direction:
        return None, (Reason.WRONG_DIRECTION,
                      f"statement {due.reference} is paid {due.direction.value}; a "
                      f"{'credit' if direction is Direction.TO_CENTRE else 'debit'} "
                      "cannot pay it", due)
    if due.currency != amount.currency:
        return None, (Reason.CURRENCY_MISMATCH,
                      f"statement {due.reference} is in {due.currency}, the transfer in "
                      f"{amount.currency}", due)
    return due, None


async def _by_payer(conn: Connection, party: Party, direction: Direction,
                    amount: Money) -> tuple[Position | None, _Miss | None]:
    agencies: list[str] = []
    if party.account:
        found = await bank_accounts.agency_for_account(conn, party.account)
        if found is not None:
            agencies = [found]
    if not agencies and party.name:
        agencies = [r["symbol"] for r in
                    await conn.fetch(SELECT_AGENCY_BY_NAME, party.name.strip())]
    if not agencies:
        who = party.name or (bank_accounts.mask(party.account) if party.account else None)
        return None, (Reason.NO_REFERENCE_AND_NO_PAYER,
                      "no statement reference, and " + (f"no agency known as {who}" if who
                                                        else "no payer named"), None)
    if len(agencies) > 1:
        return None, (Reason.AMBIGUOUS, f"several agencies are named {party.name}: "
                      + ", ".join(agencies), None)
    agency = agencies[0]
    fitting = [p for p in await dues.positions(conn, agency=agency, open_only=True)
               if p.direction is direction and p.currency == amount.currency
               and p.outstanding.minor == amount.minor]
    if len(fitting) > 1:
        return None, (Reason.AMBIGUOUS, f"{agency} has {len(fitting)} open statements of "
                      f"{amount}: " + ", ".join(p.reference for p in fitting), None)
    if not fitting:
        return None, (Reason.NO_MATCHING_DUE, f"no reference, and {agency} has no open "
                      f"statement ({direction.value}) of {amount} outstanding", None)
    return fitting[0], None


async def _record(conn: Connection, entry: BankEntry, detail: TransactionDetail, key: str,
                  due: Position, amount: Money, by: MatchedBy, *, actor: str,
                  today: datetime.date) -> list[Item]:
    if due.outstanding.minor == 0:
        return [_item(entry, detail, key, Outcome.UNMATCHED, Reason.ALREADY_PAID,
                      f"statement {due.reference} is paid in full", due=due)]
    paying = Money(min(amount.minor, due.outstanding.minor), amount.currency)
    if entry.booking_date is None:  # parse() refuses a booked entry without one
        raise ValueError(f"entry {key} is booked but has no booking date")
    try:
        result = await dues.record_payment(
            conn, due.due_id, paying, paid_on=entry.booking_date, source=PaymentSource.BANK,
            actor=actor, bank_reference=bank_reference(entry, detail), source_key=key,
            today=today)
    except PaymentRefused as exc:
        return [_item(entry, detail, key, Outcome.UNMATCHED, Reason.REFUSED, str(exc),
                      due=due)]
    after = result.position
    if result.duplicate:  # recorded by an import that committed after our check
        return [_item(entry, detail, key, Outcome.DUPLICATE, None,
                      "recorded by an earlier import", due=after)]
    part = "" if after.outstanding.minor == 0 else \
        f"part payment, {after.outstanding} still outstanding"
    items = [_item(entry, detail, key, Outcome.MATCHED, None, part, amount=paying, due=after,
                   payment_id=result.payment_id, by=by)]
    if amount.minor > paying.minor:
        extra = amount - paying
        items.append(_item(entry, detail, key, Outcome.UNMATCHED, Reason.OVERPAID,
                           f"overpaid by {extra}: {paying} was outstanding on "
                           f"{due.reference}", amount=extra, due=after, by=by))
    return items


def _item_row(import_id: int, i: Item) -> tuple[Any, ...]:
    return (import_id, i.entry_key, i.outcome.value, None if i.reason is None else
            i.reason.value, i.note, i.due_id, i.payment_id,
            None if i.matched_by is None else i.matched_by.value, i.side.value, i.amount.minor,
            i.amount.currency, i.booked_on, i.bank_reference, i.counterparty.name,
            i.counterparty.account)


def import_message(report: ImportReport, today: datetime.date) -> Outgoing:
    """One message per import on ill.finance, with the counts and the amounts matched."""
    matched: dict[str, Money] = {}
    for i in report.items:
        if i.outcome is Outcome.MATCHED:
            cur = i.amount.currency
            matched[cur] = matched.get(cur, Money.zero(cur)) + i.amount
    body = {"kind": "bank-import", "importId": report.import_id, "file": report.file_name,
            "sha256": report.sha256, "message": f"{report.kind}.{report.version}",
            "messageId": report.message_id, "account": report.account,
            "entries": report.entries, "matched": report.count(Outcome.MATCHED),
            "unmatched": report.count(Outcome.UNMATCHED),
            "duplicates": report.count(Outcome.DUPLICATE),
            "skipped": report.count(Outcome.SKIPPED),
            "matchedAmounts": {c: m.amount_text() for c, m in sorted(matched.items())},
            "date": today.isoformat()}
    return Outgoing(exchange=FINANCE, routing_key=f"bank-import.{CENTRE}", body=body,
                    message_type="bank-import", correlation_id=report.message_id,
                    headers={"importId": report.import_id})


# --------------------------------------------------------------------------
# reading back
# --------------------------------------------------------------------------

def _stored(r: Any) -> Item:
    return Item(entry_key=r["entry_key"], outcome=Outcome(r["outcome"]),
                reason=None if r["reason"] is None else Reason(r["reason"]), note=r["note"],
                amount=Money(r["amount_minor"], r["currency"]), side=CreditDebit(r["side"]),
                booked_on=r["booked_on"], bank_reference=r["bank_reference"],
                counterparty=Party(r["counterparty_name"], r["counterparty_account"]),
                due_id=r["due_id"], reference=r["reference"], payment_id=r["payment_id"],
                matched_by=None if r["matched_by"] is None else MatchedBy(r["matched_by"]),
                import_id=r["import_id"])


async def import_items(conn: Connection, import_id: int) -> list[Item]:
    return [_stored(r) for r in await conn.fetch(SELECT_ITEMS, import_id)]


async def unmatched(conn: Connection, import_id: int | None = None) -> list[Item]:
    """What imports (or one import) could not match, with the reasons."""
    return [_stored(r) for r in await conn.fetch(SELECT_UNMATCHED, import_id)]


async def import_exists(conn: Connection, import_id: int) -> bool:
    return await conn.fetchrow(SELECT_IMPORT, import_id) is not None


__all__ = ["REFERENCE", "ImportRefused", "ImportReport", "Item", "MatchedBy", "Outcome",
           "Reason", "bank_reference", "content_hash", "direction_for", "entry_key",
           "import_exists", "import_file", "import_items", "import_message", "reconcile",
           "references_in", "unmatched"]
