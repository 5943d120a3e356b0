-- Settlement: periods, runs and what each run settled (settlement/periods.py,
-- settlement/netting.py, settlement/statements.py, settlement/settle.py).
--
-- A run for period P settles every ledger posting dated (consortium-local) on or
-- before the last day of P that no earlier run settled, so a late charge dated in a
-- closed period lands in the next run. settlement_item holds the membership: a
-- posting is in at most one run (its primary key), and every figure of a run is
-- computed from its items, so a closed run never changes. Nothing here is updated
-- after the run's transaction commits, except a period's state bookkeeping.

-- One row per period that a run has touched; a period without a row is open.
-- open -> closing (a run is in progress, or died; the next attempt redoes it) -> closed.
CREATE TABLE settlement_period (
    period        text PRIMARY KEY CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    date_from     date NOT NULL,
    date_to       date NOT NULL CHECK (date_to >= date_from),
    state         text NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'closing', 'closed')),
    closing_since timestamptz,
    closed_at     timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    CHECK ((state = 'closed') = (closed_at IS NOT NULL))
);

-- One run per period: re-running a closed period reproduces this record, never a second one.
CREATE TABLE settlement_run (
    id            bigserial PRIMARY KEY,
    period        text NOT NULL UNIQUE REFERENCES settlement_period (period),
    date_from     date NOT NULL,           -- the period's first day
    cutoff        date NOT NULL,           -- the period's last day: postings dated up to it
    started_at    timestamptz NOT NULL,
    generated_at  timestamptz NOT NULL,    -- printed in every file of the run
    closed_at     timestamptz,
    postings      bigint NOT NULL DEFAULT 0,
    entries       bigint NOT NULL DEFAULT 0,
    late_postings bigint NOT NULL DEFAULT 0,  -- dated before date_from
    agencies      integer NOT NULL DEFAULT 0,
    totals        jsonb NOT NULL DEFAULT '{}',   -- per currency
    subsidy       jsonb NOT NULL DEFAULT '{}',   -- outlay by rule and by budget
    invariants    jsonb NOT NULL DEFAULT '{}',   -- what was checked, and the figures
    files         jsonb NOT NULL DEFAULT '[]',   -- the centre summary: name, sha256, bytes
    summary       jsonb NOT NULL DEFAULT '{}'    -- the settlement.<period> message body
);

-- Which run settled each posting. The primary key is the "exactly once" guarantee.
-- Rows are only ever appended, run after run, so a BRIN index finds one run's rows.
-- No foreign keys, deliberately: their per-row checks cost more than the insert itself
-- (10 million postings: two minutes). Both hold by construction: the rows are inserted
-- only by `INSERT .. SELECT id FROM ledger_posting` in the run's own transaction, after
-- its settlement_run row; ledger postings can never be deleted (append-only triggers);
-- a run is only ever deleted (an aborted one) after its items.
CREATE TABLE settlement_item (
    posting_id bigint PRIMARY KEY,
    run_id     bigint NOT NULL
);
CREATE INDEX settlement_item_run ON settlement_item USING brin (run_id);

-- Each agency's (and the centre's, owner CENTRE) figures in one run, per currency.
-- net = earned - owed + subsidy: positive, the centre pays the agency; negative, the
-- agency pays the centre. The centre's net is minus its subsidy outlay.
CREATE TABLE settlement_net (
    run_id          bigint NOT NULL REFERENCES settlement_run (id),
    owner           text NOT NULL,
    currency        text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    lines           bigint NOT NULL,       -- statement lines (postings it took part in)
    as_supplier     bigint NOT NULL,
    as_requester    bigint NOT NULL,
    late            bigint NOT NULL,
    earned_minor    bigint NOT NULL,       -- receivable: fees earned as supplier
    owed_minor      bigint NOT NULL,       -- payable: fees owed as requester (positive)
    subsidy_minor   bigint NOT NULL,       -- paid by the centre on its behalf
    patron_minor    bigint NOT NULL,       -- patron share its readers pay it
    net_minor       bigint NOT NULL,
    entries         bigint NOT NULL,
    PRIMARY KEY (run_id, owner, currency),
    CHECK (owner = 'CENTRE' OR net_minor = earned_minor - owed_minor + subsidy_minor)
);

-- One statement per agency in a run: its name and finance contact as they were at the
-- run (so a re-run prints the same), its files with checksums, and the mail sent.
CREATE TABLE settlement_statement (
    run_id        bigint NOT NULL REFERENCES settlement_run (id),
    agency        text NOT NULL REFERENCES agency (symbol),
    name          text NOT NULL,
    finance_email text,
    lines         bigint NOT NULL,
    files         jsonb NOT NULL DEFAULT '[]',
    mail_id       bigint,
    PRIMARY KEY (run_id, agency)
);
