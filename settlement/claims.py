"""Loss and damage claims on book loans (issue 19): either side reports a loaned item
lost or damaged, the other side accepts or contests, and the claim is settled through
the ledger like any charge.

The workflow, append-only (migration 0030): opened -> accepted | contested -> settled.
A claim says what happened (`kind`: lost or damaged), where (`place`: in transit out,
with the reader, in transit back), when, the evidence, which side reported it, and the
item's declared value if the loan had one.

Who pays (`responsible`): where the item was decides. In transit out it was in the
supplier's hands or its carrier's: the supplier. With the reader or in transit back, it
was the requester's to keep or to ship: the requester. An accepted claim is settled so;
a contested one is decided by the centre, which names who pays (and may set the amount,
a repair instead of a replacement, say).

What it costs (`amounts`), frozen when the claim is opened as a quote is: the declared
value, else the default replacement cost for the item type in the supplier's BookLoan
schedule (settlement/claim_terms.py), plus the schedule's claim processing fee. Both are
the supplier's: it lost a book and handles its replacement.

What settling moves (`settle`):
- the requester pays: ONE ledger charge, requester -> supplier, of replacement + fee (or
  what the centre decided), event `Claim/<id>`, dated at the settlement, so the next
  open run carries it and both statements show it (title `遗失赔偿 lost-item claim ...`).
  No subsidy: a replacement cost is no ILL fee (post_charge(subsidised=False)).
- the supplier is responsible: nothing is charged, not even the processing fee (the
  supplier would be charging itself); the supplier bears its loss. When the item was
  lost in transit out, the requester never had the loan, so the loan's own charge
  (`Loaned`) is reversed, dated at the settlement as well.
Idempotent per claim: the ledger's key (transaction, `Claim/<id>`) and the one settled
step per claim (a unique key) mean a repeated settle posts nothing and is refused.

Both sides are told at every step by a message on `ill.finance` (`claim.<symbol>`) and
by mail in Chinese and English. The transaction's final state (CompletedWithoutReturn
for a lost item) is dispatch's to write: broker/claims.py calls this module.
Other packages read settled claims through the view `loan_claim_settled` (migration 0030).
"""

from __future__ import annotations

import datetime
import enum
import json
from dataclasses import dataclass
from typing import Any

from infra.database import Connection
from infra.locks import Lock, keyed_transaction_lock
from schemas.money import Money
from settlement import ledger
from settlement.calendar import DEFAULT_TZ
from settlement.claim_terms import CLAIM_KIND, ClaimTerms
from settlement.notices import tell_both

TEXT_MAX = 4000
EVENT_PREFIX = "Claim/"
LOAN_EVENT = "Loaned"   # the loan's own charge (settlement/ledger.py BILLABLE_STATUSES)


class Kind(enum.StrEnum):
    LOST = "lost"
    DAMAGED = "damaged"


class Place(enum.StrEnum):
    """Where the item was when it was lost or damaged."""

    OUT = "out"          # in transit from the supplier to the requester
    READER = "reader"    # with the requester (its reader)
    BACK = "back"        # in transit back to the supplier


class Side(enum.StrEnum):
    REQUESTER = "requester"
    SUPPLIER = "supplier"


class Step(enum.StrEnum):
    ACCEPTED = "accepted"
    CONTESTED = "contested"
    SETTLED = "settled"


class State(enum.StrEnum):
    OPENED = "opened"
    ACCEPTED = "accepted"
    CONTESTED = "contested"
    SETTLED = "settled"


# The workflow's moves: the step each state may take next.
MOVES: dict[State, frozenset[Step]] = {
    State.OPENED: frozenset({Step.ACCEPTED, Step.CONTESTED}),
    State.ACCEPTED: frozenset({Step.SETTLED}),
    State.CONTESTED: frozenset({Step.SETTLED}),
    State.SETTLED: frozenset(),
}


class Refusal(enum.StrEnum):
    """Why a claim cannot be opened or moved on."""

    NO_TRANSACTION = "no_transaction"
    NOT_A_LOAN = "not_a_loan"
    NOT_ON_LOAN = "not_on_loan"
    RETURNED_ALREADY = "returned_already"
    NO_EVIDENCE = "no_evidence"
    BAD_DATE = "bad_date"
    ALREADY_OPEN = "already_open"
    ALREADY_CLAIMED = "already_claimed"
    NO_REPLACEMENT_COST = "no_replacement_cost"
    BAD_AMOUNT = "bad_amount"
    NO_CLAIM = "no_claim"
    WRONG_STEP = "wrong_step"
    NEEDS_PAYER = "needs_payer"
    ALREADY_SETTLED = "already_settled"


class ClaimRefused(ValueError):
    def __init__(self, code: Refusal, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --------------------------------------------------------------------------
# the rules, pure
# --------------------------------------------------------------------------

def responsible(place: Place) -> Side:
    """Who pays by default: whoever had the item where it was lost or damaged."""
    return Side.SUPPLIER if place is Place.OUT else Side.REQUESTER


def check_move(state: State, step: Step) -> None:
    """Refuse a step the workflow does not allow from `state`."""
    if step not in MOVES[state]:
        if state is State.SETTLED:
            raise ClaimRefused(Refusal.ALREADY_SETTLED, "the claim is settled already")
        allowed = ", ".join(sorted(MOVES[state])) or "none"
        raise ClaimRefused(Refusal.WRONG_STEP,
                           f"a claim {state} cannot be {step} (next: {allowed})")


@dataclass(frozen=True)
class Amounts:
    replacement: Money
    fee: Money
    source: str          # declared | schedule

    @property
    def total(self) -> Money:
        return self.replacement + self.fee


def amounts(declared: Money | None, terms: ClaimTerms | None,
            item_type: str | None) -> Amounts:
    """The replacement cost (declared value, else the schedule's default for the item
    type) and the schedule's processing fee; refused when there is neither."""
    if declared is not None and declared.minor <= 0:
        raise ClaimRefused(Refusal.BAD_AMOUNT, f"the declared value {declared} must be "
                           "more than zero")
    if declared is not None and terms is not None and declared.currency != terms.currency:
        raise ClaimRefused(Refusal.BAD_AMOUNT,
                           f"the declared value {declared} is not in the currency of the "
                           f"supplier's schedule ({terms.currency})")
    fee = terms.fee if terms is not None else None
    if declared is not None:
        return Amounts(declared, fee or Money.zero(declared.currency), "declared")
    default = terms.replacement(item_type) if terms is not None else None
    if default is None or fee is None:
        raise ClaimRefused(Refusal.NO_REPLACEMENT_COST,
                           "no declared value, and the supplier's BookLoan schedule names no "
                           f"replacement cost for {item_type or 'this item type'} (nor a "
                           "default): give the declared value")
    return Amounts(default, fee, "schedule")


# --------------------------------------------------------------------------
# rows
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Loan:
    """What dispatch says of the loan a claim is about (settlement never reads its
    tables): the transaction, its two sides, and the item."""

    transaction_id: str
    requester: str
    supplier: str
    service_kind: str
    title: str | None
    item_type: str | None


@dataclass(frozen=True)
class Claim:
    id: int
    transaction_id: str
    requester: str
    supplier: str
    service_kind: str
    title: str | None
    item_type: str | None
    kind: Kind
    place: Place
    happened_on: datetime.date
    evidence: str
    reported_by: Side
    declared: Money | None
    replacement: Money
    fee: Money
    replacement_source: str
    opened_by: str
    opened_at: datetime.datetime
    answer: Step | None              # accepted | contested
    answered_by: str | None
    answer_note: str | None
    payer: Side | None               # set once settled
    settled_amount: Money | None
    charge_posting: int | None
    reversal_posting: int | None
    settled_by: str | None
    settle_note: str | None
    settled_at: datetime.datetime | None

    @property
    def state(self) -> State:
        if self.payer is not None:
            return State.SETTLED
        return State(self.answer.value) if self.answer is not None else State.OPENED

    @property
    def responsible(self) -> Side:
        return responsible(self.place)

    @property
    def total(self) -> Money:
        return self.replacement + self.fee

    @property
    def event(self) -> str:
        return f"{EVENT_PREFIX}{self.id}"

    def party(self, side: Side) -> str:
        return self.requester if side is Side.REQUESTER else self.supplier

    def to_json(self) -> dict[str, Any]:
        def money(m: Money | None) -> str | None:
            return m.amount_text() if m is not None else None
        return {
            "claimId": self.id, "transactionId": self.transaction_id,
            "requester": self.requester, "supplier": self.supplier, "title": self.title,
            "itemType": self.item_type, "kind": self.kind.value, "where": self.place.value,
            "when": self.happened_on.isoformat(), "evidence": self.evidence,
            "reportedBy": self.reported_by.value, "currencyCode": self.replacement.currency,
            "declaredValue": money(self.declared), "replacementCost": money(self.replacement),
            "replacementFrom": self.replacement_source, "processingFee": money(self.fee),
            "total": money(self.total), "responsible": self.responsible.value,
            "state": self.state.value, "openedBy": self.opened_by,
            "openedAt": self.opened_at.isoformat(), "answeredBy": self.answered_by,
            "answerNote": self.answer_note,
            "payer": self.payer.value if self.payer else None,
            "settledAmount": money(self.settled_amount), "event": self.event,
            "chargePosting": self.charge_posting, "reversalPosting": self.reversal_posting,
            "settledBy": self.settled_by, "settleNote": self.settle_note,
            "settledAt": self.settled_at.isoformat() if self.settled_at else None}


# --------------------------------------------------------------------------
# named statements
# --------------------------------------------------------------------------

SELECT_CLAIMS = """SELECT c.*, coalesce(a.step, k.step) AS answer,
        coalesce(a.actor, k.actor) AS answered_by, coalesce(a.note, k.note) AS answer_note,
        s.payer, s.amount_minor AS settled_minor, s.charge_posting, s.reversal_posting,
        s.actor AS settled_by, s.note AS settle_note, s.at AS settled_at
    FROM loan_claim c
    LEFT JOIN loan_claim_step a ON a.claim_id = c.id AND a.step = 'accepted'
    LEFT JOIN loan_claim_step k ON k.claim_id = c.id AND k.step = 'contested'
    LEFT JOIN loan_claim_step s ON s.claim_id = c.id AND s.step = 'settled'
    WHERE ($1::bigint IS NULL OR c.id = $1)
      AND ($2::text IS NULL OR $2 IN (c.requester, c.supplier))
      AND ($3::text IS NULL OR c.transaction_id = $3)
      AND (NOT $4::boolean OR s.id IS NULL)
    ORDER BY c.id"""

INSERT_CLAIM = """INSERT INTO loan_claim (transaction_id, requester, supplier, service_kind,
        title, item_type, kind, place, happened_on, evidence, reported_by, currency,
        declared_minor, replacement_minor, fee_minor, replacement_source, actor)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
    ON CONFLICT (transaction_id, kind) DO NOTHING
    RETURNING id"""

INSERT_STEP = """INSERT INTO loan_claim_step (claim_id, step, payer, amount_minor,
        charge_posting, reversal_posting, note, actor)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"""

# The claim terms of the supplier's BookLoan entry in force: which entry applies on a
# day is fee_terms_in_force's rule (migration 0014); the terms are the entry's stored
# ones (one load holds a supplier's active entries, so (supplier, entry) is one row).
SELECT_CLAIM_TERMS = """SELECT f.terms, f.currency
    FROM fee_terms_in_force($2, $3) t
    JOIN fee_schedule f ON f.supplier = t.supplier AND f.service_kind = t.service_kind
                       AND f.entry = t.entry AND f.superseded_by IS NULL
    WHERE t.supplier = $1"""




def _claim(r: Any) -> Claim:
    cur = r["currency"]

    def money(minor: int | None) -> Money | None:
        return Money(minor, cur) if minor is not None else None
    return Claim(
        id=r["id"], transaction_id=r["transaction_id"], requester=r["requester"],
        supplier=r["supplier"], service_kind=r["service_kind"], title=r["title"],
        item_type=r["item_type"], kind=Kind(r["kind"]), place=Place(r["place"]),
        happened_on=r["happened_on"], evidence=r["evidence"],
        reported_by=Side(r["reported_by"]), declared=money(r["declared_minor"]),
        replacement=Money(r["replacement_minor"], cur), fee=Money(r["fee_minor"], cur),
        replacement_source=r["replacement_source"], opened_by=r["actor"],
        opened_at=r["opened_at"], answer=Step(r["answer"]) if r["answer"] else None,
        answered_by=r["answered_by"], answer_note=r["answer_note"],
        payer=Side(r["payer"]) if r["payer"] else None,
        settled_amount=money(r["settled_minor"]), charge_posting=r["charge_posting"],
        reversal_posting=r["reversal_posting"], settled_by=r["settled_by"],
        settle_note=r["settle_note"], settled_at=r["settled_at"])


async def claims(conn: Connection, *, agency: str | None = None,
                 transaction_id: str | None = None, open_only: bool = False) -> list[Claim]:
    """Claims where the agency is requester or supplier, of one transaction, or all."""
    rows = await conn.fetch(SELECT_CLAIMS, None, agency, transaction_id, open_only)
    return [_claim(r) for r in rows]


async def claim(conn: Connection, claim_id: int) -> Claim | None:
    row = await conn.fetchrow(SELECT_CLAIMS, claim_id, None, None, False)
    return _claim(row) if row is not None else None


async def claim_terms(conn: Connection, supplier: str, on: datetime.date) -> ClaimTerms | None:
    """The claim terms of the supplier's BookLoan schedule in force on a day, if any."""
    row = await conn.fetchrow(SELECT_CLAIM_TERMS, supplier, CLAIM_KIND, on)
    if row is None:
        return None
    terms = row["terms"]
    # jsonb arrives as text unless the pool decodes it (infra.database may, or not).
    parsed: dict[str, Any] = json.loads(terms) if isinstance(terms, str) else dict(terms)
    return ClaimTerms.from_terms(parsed, row["currency"])


# --------------------------------------------------------------------------
# the workflow
# --------------------------------------------------------------------------

def _text(value: str, what: str, *, required: bool) -> str:
    value = value.strip()
    if required and not value:
        raise ClaimRefused(Refusal.NO_EVIDENCE, f"a claim needs {what}")
    if len(value) > TEXT_MAX:
        raise ClaimRefused(Refusal.NO_EVIDENCE,
                           f"{what} is {len(value)} characters; at most {TEXT_MAX}")
    return value


async def open_claim(conn: Connection, loan: Loan, *, kind: Kind, place: Place,
                     happened_on: datetime.date, evidence: str, reported_by: Side,
                     declared: Money | None, actor: str, today: datetime.date) -> Claim:
    """Open a claim on a loan (dispatch has checked it is one); ClaimRefused says why not.
    The amounts are frozen now, from the declared value or the supplier's schedule."""
    evidence = _text(evidence, "evidence notes (what happened, what shows it)", required=True)
    if happened_on > today:
        raise ClaimRefused(Refusal.BAD_DATE, f"when: {happened_on} is after today ({today})")
    async with conn.transaction():
        await keyed_transaction_lock(conn, Lock.LOAN_CLAIM, loan.transaction_id)
        for c in await claims(conn, transaction_id=loan.transaction_id):
            if c.kind is kind:
                raise ClaimRefused(Refusal.ALREADY_CLAIMED,
                                   f"the loan {loan.transaction_id} has a {kind} claim "
                                   f"already: claim {c.id} ({c.state})")
            if c.state is not State.SETTLED:
                raise ClaimRefused(Refusal.ALREADY_OPEN,
                                   f"claim {c.id} on {loan.transaction_id} is still open "
                                   f"({c.state}); settle it first")
        terms = await claim_terms(conn, loan.supplier, today)
        money = amounts(declared, terms, loan.item_type)
        claim_id = await conn.fetchval(
            INSERT_CLAIM, loan.transaction_id, loan.requester, loan.supplier, loan.service_kind,
            loan.title, loan.item_type, kind.value, place.value, happened_on, evidence,
            reported_by.value, money.replacement.currency,
            declared.minor if declared is not None else None, money.replacement.minor,
            money.fee.minor, money.source, actor)
        if claim_id is None:  # a concurrent open of the same kind, past the lock: none
            raise ClaimRefused(Refusal.ALREADY_CLAIMED, f"the loan {loan.transaction_id} "
                               f"has a {kind} claim already")
        opened = await _must(conn, claim_id)
        await _tell_both(conn, opened)
        return opened


async def answer(conn: Connection, claim_id: int, step: Step, *, actor: str,
                 note: str) -> Claim:
    """Accept or contest an open claim (a contest needs its reason)."""
    if step is Step.SETTLED:
        raise ClaimRefused(Refusal.WRONG_STEP, "settle a claim with `settle`")
    note = _text(note, "the reason for contesting", required=step is Step.CONTESTED)
    async with conn.transaction():
        await keyed_transaction_lock(conn, Lock.CLAIM_STEP, str(claim_id))
        c = await _must(conn, claim_id)
        check_move(c.state, step)
        await conn.execute(INSERT_STEP, claim_id, step.value, None, None, None, None, note,
                           actor)
        done = await _must(conn, claim_id)
        await _tell_both(conn, done)
        return done


async def settle(conn: Connection, claim_id: int, *, actor: str, note: str,
                 on: datetime.datetime, payer: Side | None = None,
                 amount: Money | None = None, tz: str = DEFAULT_TZ) -> Claim:
    """Settle an accepted claim (the responsible party pays) or a contested one (the
    centre names the payer, and may set the amount); posts the money (module doc)."""
    note = _text(note, "a note", required=False)
    async with conn.transaction():
        await keyed_transaction_lock(conn, Lock.CLAIM_STEP, str(claim_id))
        c = await _must(conn, claim_id)
        check_move(c.state, Step.SETTLED)
        who, total = _decide(c, payer, amount)
        charge_id = reversal_id = None
        if who is Side.REQUESTER and total.minor > 0:
            posted = await ledger.post_charge(
                conn, transaction_id=c.transaction_id, event=c.event, requester=c.requester,
                supplier=c.supplier, service_kind=c.service_kind, fee=total, quote=None,
                on=on, title=claim_title(c), tz=tz, subsidised=False)
            charge_id = posted.posting_id
        if who is Side.SUPPLIER and c.kind is Kind.LOST and c.place is Place.OUT:
            reversed_ = await ledger.reverse(
                conn, transaction_id=c.transaction_id, event=LOAN_EVENT, on=on, tz=tz,
                reason=f"claim {c.id}: lost in transit out, the requester never had the loan")
            # A loan fee reversed before (a dispute) is not this claim's doing.
            reversal_id = (reversed_.posting_id if reversed_ is not None
                           and not reversed_.duplicate else None)
        await conn.execute(INSERT_STEP, claim_id, Step.SETTLED.value, who.value, total.minor,
                           charge_id, reversal_id, note, actor)
        done = await _must(conn, claim_id)
        await _tell_both(conn, done)
        return done


def _decide(c: Claim, payer: Side | None, amount: Money | None) -> tuple[Side, Money]:
    """Who pays and how much: an accepted claim as it stands; a contested one as the
    centre decides (a payer is required; with the supplier paying nothing moves)."""
    if c.state is State.ACCEPTED:
        if payer is not None and payer is not c.responsible:
            raise ClaimRefused(Refusal.WRONG_STEP,
                               f"claim {c.id} was accepted: the {c.responsible} pays, as "
                               "reported; only a contested claim is decided otherwise")
        if amount is not None:
            raise ClaimRefused(Refusal.BAD_AMOUNT, f"claim {c.id} was accepted at "
                               f"{c.total}; only a contested claim's amount is decided")
        payer = c.responsible
    elif payer is None:
        raise ClaimRefused(Refusal.NEEDS_PAYER, f"claim {c.id} is contested: the centre "
                           "decides who pays (requester or supplier)")
    if amount is not None and (amount.currency != c.total.currency or amount.minor < 0):
        raise ClaimRefused(Refusal.BAD_AMOUNT, f"the amount must be zero or more, in "
                           f"{c.total.currency}")
    if payer is Side.SUPPLIER:
        return payer, Money.zero(c.total.currency)
    return payer, amount if amount is not None else c.total


def claim_title(c: Claim) -> str:
    """The statement line's title: what the claim is, then the item."""
    what = ("遗失赔偿 lost-item claim" if c.kind is Kind.LOST
            else "损坏赔偿 damaged-item claim")
    return f"{what} {c.id}: {c.title}" if c.title else f"{what} {c.id}"


async def _must(conn: Connection, claim_id: int) -> Claim:
    c = await claim(conn, claim_id)
    if c is None:
        raise ClaimRefused(Refusal.NO_CLAIM, f"no claim {claim_id}")
    return c


# --------------------------------------------------------------------------
# telling both sides
# --------------------------------------------------------------------------

async def _tell_both(conn: Connection, c: Claim) -> None:
    await tell_both(conn, kind="claim", state=c.state.value, sides=(c.requester, c.supplier),
                    payload=c.to_json(), ident=c.id, correlation_id=c.transaction_id,
                    headers={"claim-id": c.id, "hub-transaction-id": c.transaction_id},
                    mail=claim_mail(c), transaction_id=c.transaction_id)


_KIND_TEXT = {Kind.LOST: ("遗失", "lost"), Kind.DAMAGED: ("损坏", "damaged")}
_PLACE_TEXT = {Place.OUT: ("寄出途中", "in transit out"),
               Place.READER: ("读者借阅期间", "with the reader"),
               Place.BACK: ("寄还途中", "in transit back")}
_SIDE_TEXT = {Side.REQUESTER: ("申请馆", "the requester"),
              Side.SUPPLIER: ("供应馆", "the supplier")}


def claim_mail(c: Claim) -> tuple[str, str]:
    """Subject and text of a claim's mail at its current step, in Chinese and English."""
    kind, place = _KIND_TEXT[c.kind], _PLACE_TEXT[c.place]
    money = f"{c.total.amount_text()} {c.total.currency}"
    item = c.title or c.transaction_id
    head = (f"《{item}》（交易 {c.transaction_id}）于 {c.happened_on} {place[0]}{kind[0]}",
            f"'{item}' (transaction {c.transaction_id}) {kind[1]} {place[1]} on "
            f"{c.happened_on}")
    state = c.state
    if state is State.OPENED:
        zh = (f"{c.party(c.reported_by)} 报告{head[0]}。赔偿金额 {money}（含手续费 "
              f"{c.fee.amount_text()}），默认由{_SIDE_TEXT[c.responsible][0]}承担。")
        en = (f"{c.party(c.reported_by)} reports {head[1]}. The claim is {money} (processing "
              f"fee {c.fee.amount_text()} included), paid by {_SIDE_TEXT[c.responsible][1]} "
              "unless contested.")
    elif state in (State.ACCEPTED, State.CONTESTED):
        zh = (f"赔偿申请 {c.id}（{head[0]}）已{'接受' if state is State.ACCEPTED else '提出异议'}"
              f"：{c.answer_note or '-'}")
        en = f"Claim {c.id} ({head[1]}) is {state}: {c.answer_note or '-'}"
    else:
        paid = c.settled_amount or Money.zero(c.total.currency)
        payer = c.payer or c.responsible
        zh = (f"赔偿申请 {c.id}（{head[0]}）已结案：由{_SIDE_TEXT[payer][0]}承担，记账金额 "
              f"{paid.amount_text()} {paid.currency}，计入下一结算期。{c.settle_note or ''}")
        en = (f"Claim {c.id} ({head[1]}) is settled: {_SIDE_TEXT[payer][1]} pays; "
              f"{paid.amount_text()} {paid.currency} is posted into the next settlement "
              f"period. {c.settle_note or ''}")
    subject = (f"馆际互借{kind[0]}赔偿 ILL {kind[1]}-item claim {c.id} "
               f"({state.value}) {c.transaction_id}")
    return subject, f"{zh.strip()}\n\n{en.strip()}\n"


__all__ = ["MOVES", "Amounts", "Claim", "ClaimRefused", "Kind", "Loan", "Place", "Refusal",
           "Side", "State", "Step", "amounts", "answer", "check_move", "claim", "claim_mail",
           "claim_terms", "claim_title", "claims", "open_claim", "responsible", "settle"]
