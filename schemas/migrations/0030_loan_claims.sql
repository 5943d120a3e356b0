-- Loss and damage claims on book loans (issue 19; owned by settlement/,
-- settlement/claims.py): either side reports a loaned item lost or damaged, the other
-- side accepts or contests, and the claim is settled by one ledger charge from the
-- responsible party to the other side (or, when the supplier bears its own loss, by
-- nothing but the record).
--
-- Append-only like the ledger: a claim's state (opened, accepted, contested, settled)
-- is its latest step, never a column updated in place.

-- One claim per loan and kind. The loan's facts (requester, supplier, title, item type)
-- are copied from dispatch's transaction when the claim is opened, as the ledger copies
-- them into a posting: settlement never reads dispatch's tables. The amounts are frozen
-- when the claim is opened, as a quote is: the declared value, else the supplier's
-- schedule default for the item type, and the schedule's processing fee.
CREATE TABLE loan_claim (
    id                  bigserial PRIMARY KEY,
    transaction_id      text NOT NULL,
    requester           text NOT NULL REFERENCES agency (symbol),
    supplier            text NOT NULL REFERENCES agency (symbol),
    service_kind        text NOT NULL,
    title               text,
    item_type           text,
    kind                text NOT NULL,
    place               text NOT NULL,        -- where: out | reader | back
    happened_on         date NOT NULL,        -- when, consortium-local
    evidence            text NOT NULL CHECK (length(evidence) BETWEEN 1 AND 4000),
    reported_by         text NOT NULL,        -- requester | supplier
    currency            text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    declared_minor      bigint CHECK (declared_minor > 0),
    replacement_minor   bigint NOT NULL CHECK (replacement_minor >= 0),
    fee_minor           bigint NOT NULL CHECK (fee_minor >= 0),
    replacement_source  text NOT NULL,        -- declared | schedule
    actor               text NOT NULL,
    opened_at           timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transaction_id, kind),
    CHECK ((replacement_source = 'declared') = (declared_minor IS NOT NULL))
);
ALTER TABLE loan_claim ADD CONSTRAINT loan_claim_kind CHECK (kind IN ('lost', 'damaged'));
ALTER TABLE loan_claim ADD CONSTRAINT loan_claim_place
    CHECK (place IN ('out', 'reader', 'back'));
ALTER TABLE loan_claim ADD CONSTRAINT loan_claim_reported_by
    CHECK (reported_by IN ('requester', 'supplier'));
ALTER TABLE loan_claim ADD CONSTRAINT loan_claim_replacement_source
    CHECK (replacement_source IN ('declared', 'schedule'));
CREATE INDEX loan_claim_requester ON loan_claim (requester);
CREATE INDEX loan_claim_supplier ON loan_claim (supplier);

-- A claim's workflow after it was opened, one row per step, each at most once:
-- accepted or contested, then settled. A settlement names who pays (payer), what
-- (amount_minor: replacement and processing fee, or what the centre decided), and the
-- postings it made: the claim's charge (none when the supplier bears its loss), and the
-- loan fee's reversal when the requester never had the book (lost in transit out).
CREATE TABLE loan_claim_step (
    id                bigserial PRIMARY KEY,
    claim_id          bigint NOT NULL REFERENCES loan_claim (id),
    step              text NOT NULL,
    payer             text,
    amount_minor      bigint CHECK (amount_minor >= 0),
    charge_posting    bigint REFERENCES ledger_posting (id),
    reversal_posting  bigint REFERENCES ledger_posting (id),
    note              text NOT NULL DEFAULT '' CHECK (length(note) <= 4000),
    actor             text NOT NULL,
    at                timestamptz NOT NULL DEFAULT now(),
    UNIQUE (claim_id, step),
    CHECK ((step = 'settled') = (payer IS NOT NULL AND amount_minor IS NOT NULL))
);
ALTER TABLE loan_claim_step ADD CONSTRAINT loan_claim_step_step
    CHECK (step IN ('accepted', 'contested', 'settled'));
ALTER TABLE loan_claim_step ADD CONSTRAINT loan_claim_step_payer
    CHECK (payer IN ('requester', 'supplier'));

CREATE TRIGGER loan_claim_append_only BEFORE UPDATE OR DELETE ON loan_claim
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER loan_claim_step_append_only BEFORE UPDATE OR DELETE ON loan_claim_step
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();

-- What other packages may read of the claims (e.g. a borrower's trust counts the lost
-- books it paid for): the settled claims, one row each, rather than the tables.
CREATE VIEW loan_claim_settled AS
SELECT c.id AS claim_id, c.transaction_id, c.requester, c.supplier, c.kind, c.place,
       s.payer, s.amount_minor, c.currency, s.charge_posting, s.reversal_posting,
       s.at AS settled_at
FROM loan_claim c
JOIN loan_claim_step s ON s.claim_id = c.id AND s.step = 'settled';
