-- Reconciliation from the bank (issue 17; owned by settlement/, written by
-- settlement/reconcile.py): every camt.053/054 file read, and what became of each of
-- its transactions. Append-only, like the ledger: an import is a fact.

-- One row per file. The same bytes (sha256) are imported once; importing them again
-- changes nothing. The counts are of transactions (an entry's details; a batch entry
-- has several): matched ones recorded a payment, unmatched ones are listed with their
-- reason, duplicates were recorded by an earlier file, skipped ones were not booked.
CREATE TABLE bank_import (
    id                 bigserial PRIMARY KEY,
    sha256             text NOT NULL UNIQUE CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    file_name          text NOT NULL,
    message_id         text NOT NULL,
    kind               text NOT NULL,
    version            text NOT NULL CHECK (version ~ '^001\.[0-9]{2}$'),
    statement_account  text NOT NULL,
    entries            integer NOT NULL CHECK (entries >= 0),
    matched            integer NOT NULL CHECK (matched >= 0),
    unmatched          integer NOT NULL CHECK (unmatched >= 0),
    duplicates         integer NOT NULL CHECK (duplicates >= 0),
    skipped            integer NOT NULL CHECK (skipped >= 0),
    imported_by        text NOT NULL,
    imported_at        timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE bank_import ADD CONSTRAINT bank_import_kind
    CHECK (kind IN ('camt.053', 'camt.054'));

-- One row per transaction and outcome. An overpayment has two: `matched` for what was
-- outstanding, `unmatched` (overpaid) for the rest. entry_key is the payment's
-- source_key (statement_payment), stable across files: account, entry reference and
-- detail index, or a hash of the entry's content where the bank gives no reference.
CREATE TABLE bank_import_item (
    id                    bigserial PRIMARY KEY,
    import_id             bigint NOT NULL REFERENCES bank_import (id),
    entry_key             text NOT NULL,
    outcome               text NOT NULL,
    reason                text,
    note                  text NOT NULL DEFAULT '',
    due_id                bigint REFERENCES statement_due (id),
    payment_id            bigint REFERENCES statement_payment (id),
    matched_by            text,
    side                  text NOT NULL,
    amount_minor          bigint NOT NULL CHECK (amount_minor >= 0),
    currency              text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    booked_on             date,
    bank_reference        text,
    counterparty_name     text,
    counterparty_account  text,
    UNIQUE (import_id, entry_key, outcome),
    -- matched: the payment it recorded; duplicate: the one an earlier file recorded
    -- (none when the entry merely repeats within the same file).
    CHECK (outcome <> 'matched' OR payment_id IS NOT NULL),
    CHECK ((outcome IN ('unmatched', 'skipped')) = (reason IS NOT NULL))
);
ALTER TABLE bank_import_item ADD CONSTRAINT bank_import_item_outcome
    CHECK (outcome IN ('matched', 'unmatched', 'duplicate', 'skipped'));
ALTER TABLE bank_import_item ADD CONSTRAINT bank_import_item_reason
    CHECK (reason IN ('not_booked', 'reversal', 'no_amount', 'no_reference_and_no_payer',
                      'unknown_reference', 'wrong_direction', 'currency_mismatch',
                      'ambiguous', 'no_matching_due', 'already_paid', 'overpaid',
                      'refused'));
ALTER TABLE bank_import_item ADD CONSTRAINT bank_import_item_matched_by
    CHECK (matched_by IN ('reference', 'payer'));
ALTER TABLE bank_import_item ADD CONSTRAINT bank_import_item_side
    CHECK (side IN ('CRDT', 'DBIT'));
CREATE INDEX bank_import_item_unmatched ON bank_import_item (import_id)
    WHERE outcome = 'unmatched';

CREATE TRIGGER bank_import_append_only BEFORE UPDATE OR DELETE ON bank_import
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER bank_import_item_append_only BEFORE UPDATE OR DELETE ON bank_import_item
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
