-- After the run (issue 17; owned by settlement/): what each statement asks to be paid,
-- the payments against it, its history, and disputes of its lines.
--
-- Every table here is append-only, like the ledger: a statement's state (due, part
-- paid, paid, overdue, disputed) is computed from its rows, never stored and updated.

-- One row per agency, currency and run whose net is not zero: the amount one side owes
-- the other. to_centre: the agency pays the centre; to_agency: the centre pays it.
-- `reference` is what a payer quotes (remittance information), and what the centre
-- quotes on its own transfers, so bank statements can be matched to it.
CREATE TABLE statement_due (
    id             bigserial PRIMARY KEY,
    run_id         bigint NOT NULL REFERENCES settlement_run (id),
    period         text NOT NULL,
    agency         text NOT NULL REFERENCES agency (symbol),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    direction      text NOT NULL,
    amount_minor   bigint NOT NULL CHECK (amount_minor > 0),
    reference      text NOT NULL UNIQUE CHECK (reference ~ '^[A-Z0-9-]{1,35}$'),
    issued_on      date NOT NULL,
    due_on         date NOT NULL CHECK (due_on >= issued_on),
    dispute_until  date NOT NULL CHECK (dispute_until >= issued_on),
    issued_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (run_id, agency, currency)
);
ALTER TABLE statement_due ADD CONSTRAINT statement_due_direction
    CHECK (direction IN ('to_centre', 'to_agency'));
CREATE INDEX statement_due_agency ON statement_due (agency, issued_on);

-- Money that moved against a due: from the agency (to_centre) or to it (to_agency).
-- Partial payments add up; the code refuses a payment beyond what is outstanding.
-- source_key is set for payments read from a bank file or drawn from a deposit: the same
-- bank entry (or the same run's drawdown) is recorded once, however often it is read.
CREATE TABLE statement_payment (
    id              bigserial PRIMARY KEY,
    due_id          bigint NOT NULL REFERENCES statement_due (id),
    amount_minor    bigint NOT NULL CHECK (amount_minor > 0),
    paid_on         date NOT NULL,
    bank_reference  text,
    source          text NOT NULL,
    source_key      text UNIQUE,
    actor           text NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE statement_payment ADD CONSTRAINT statement_payment_source
    CHECK (source IN ('manual', 'bank', 'deposit'));
CREATE INDEX statement_payment_due ON statement_payment (due_id);

-- A statement's history, one row per change (issued, payment, paid, reminder, overdue,
-- disputed, dispute_accepted, dispute_rejected, deposit). A reminder is sent once per
-- stage (`stage`: 'before', 'overdue-1', 'overdue-2', ...), whichever process sweeps.
CREATE TABLE statement_event (
    id            bigserial PRIMARY KEY,
    due_id        bigint NOT NULL REFERENCES statement_due (id),
    kind          text NOT NULL,
    stage         text,
    amount_minor  bigint,
    detail        jsonb NOT NULL DEFAULT '{}',
    actor         text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE statement_event ADD CONSTRAINT statement_event_kind
    CHECK (kind IN ('issued', 'payment', 'paid', 'reminder', 'overdue', 'disputed',
                    'dispute_accepted', 'dispute_rejected', 'deposit'));
CREATE INDEX statement_event_due ON statement_event (due_id, id);
CREATE UNIQUE INDEX statement_event_stage ON statement_event (due_id, kind, stage)
    WHERE stage IS NOT NULL;

-- A library contests one line (one ledger posting) of a statement, within the window.
-- amount_minor: the line's effect on the disputing agency's net, as a positive amount.
CREATE TABLE statement_dispute (
    id            bigserial PRIMARY KEY,
    due_id        bigint NOT NULL REFERENCES statement_due (id),
    posting_id    bigint NOT NULL REFERENCES ledger_posting (id),
    agency        text NOT NULL REFERENCES agency (symbol),
    amount_minor  bigint NOT NULL CHECK (amount_minor > 0),
    reason        text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    opened_by     text NOT NULL,
    channel       text NOT NULL,
    opened_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (due_id, posting_id)
);
ALTER TABLE statement_dispute ADD CONSTRAINT statement_dispute_channel
    CHECK (channel IN ('amqp', 'api', 'page', 'cli'));

-- How a dispute ended. accepted: the charge reversed (and, for a partial adjustment,
-- charged again at the corrected fee) in the open period, so the next run carries it;
-- rejected: answered with the reason. One row per dispute, never changed.
CREATE TABLE dispute_resolution (
    dispute_id        bigint PRIMARY KEY REFERENCES statement_dispute (id),
    outcome           text NOT NULL,
    adjustment_minor  bigint NOT NULL DEFAULT 0 CHECK (adjustment_minor >= 0),
    reason            text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    resolved_by       text NOT NULL,
    reversal_posting  bigint REFERENCES ledger_posting (id),
    charge_posting    bigint REFERENCES ledger_posting (id),
    resolved_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (outcome = 'accepted' OR adjustment_minor = 0)
);
ALTER TABLE dispute_resolution ADD CONSTRAINT dispute_resolution_outcome
    CHECK (outcome IN ('accepted', 'rejected'));

-- Append-only, as the ledger (its trigger function, migration 0004).
CREATE TRIGGER statement_due_append_only BEFORE UPDATE OR DELETE ON statement_due
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER statement_payment_append_only BEFORE UPDATE OR DELETE ON statement_payment
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER statement_event_append_only BEFORE UPDATE OR DELETE ON statement_event
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER statement_dispute_append_only BEFORE UPDATE OR DELETE ON statement_dispute
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER dispute_resolution_append_only BEFORE UPDATE OR DELETE ON dispute_resolution
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER statement_due_no_truncate BEFORE TRUNCATE ON statement_due
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER statement_payment_no_truncate BEFORE TRUNCATE ON statement_payment
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER statement_event_no_truncate BEFORE TRUNCATE ON statement_event
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER statement_dispute_no_truncate BEFORE TRUNCATE ON statement_dispute
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER dispute_resolution_no_truncate BEFORE TRUNCATE ON dispute_resolution
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();

-- What each due still asks: its amount minus payments, and the part under open dispute
-- (not dunned). Read by the finance pages, the API and reports.
CREATE VIEW statement_position AS
SELECT d.id AS due_id, d.run_id, d.period, d.agency, d.currency, d.direction,
       d.amount_minor, d.reference, d.issued_on, d.due_on, d.dispute_until,
       coalesce(p.paid, 0) AS paid_minor,
       d.amount_minor - coalesce(p.paid, 0) AS outstanding_minor,
       coalesce(x.open_disputed, 0) AS disputed_minor,
       p.last_paid_on
FROM statement_due d
LEFT JOIN (SELECT due_id, sum(amount_minor) AS paid, max(paid_on) AS last_paid_on
           FROM statement_payment GROUP BY due_id) p ON p.due_id = d.id
LEFT JOIN (SELECT s.due_id, sum(s.amount_minor) AS open_disputed
           FROM statement_dispute s LEFT JOIN dispute_resolution r ON r.dispute_id = s.id
           WHERE r.dispute_id IS NULL GROUP BY s.due_id) x ON x.due_id = d.id;
