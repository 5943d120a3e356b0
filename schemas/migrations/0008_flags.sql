-- Violations and quality flags, raised as things happen (broker/violations.py).
CREATE TABLE flag (
    id             bigserial PRIMARY KEY,
    raised_at      timestamptz NOT NULL DEFAULT now(),
    kind           text NOT NULL CHECK (kind IN ('charge_above_schedule', 'deadline_breaches',
                                                 'copy_without_valid_file', 'loan_overdue',
                                                 'cancellation_rate')),
    subject        text NOT NULL,          -- the agency the flag is about
    transaction_id text,
    detail         text NOT NULL,
    -- One flag per condition: e.g. one per overdue loan, one per supplier and day.
    dedupe_key     text NOT NULL UNIQUE
);
CREATE INDEX flag_raised ON flag (raised_at);

-- A loan's due date as the supplier last gave it (Loaned, or a renewal's answer).
ALTER TABLE ill_transaction ADD COLUMN due_at timestamptz;
CREATE INDEX ill_transaction_due ON ill_transaction (due_at)
    WHERE due_at IS NOT NULL AND closed_at IS NULL;
