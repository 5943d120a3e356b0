-- Charges: fee schedules, subsidy rules and budgets, the append-only double-entry ledger
-- (settlement/fees.py, settlement/subsidy.py, settlement/ledger.py).
--
-- Money is always bigint minor units (fen for CNY) with its ISO 4217 currency next to it.

-- ---------------------------------------------------------------------------
-- Fee schedules. Every `fees load` is one fee_load row; the schedules it brings
-- replace the active ones of every supplier the file names (the old rows stay,
-- marked superseded_by, so an operator can read back what applied when).
-- ---------------------------------------------------------------------------
CREATE TABLE fee_load (
    id         serial PRIMARY KEY,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    file_name  text,
    source     text NOT NULL,
    entries    integer NOT NULL
);

CREATE TABLE fee_schedule (
    id             bigserial PRIMARY KEY,
    load_id        integer NOT NULL REFERENCES fee_load (id),
    entry          integer NOT NULL,            -- fee[N] in the file, from 1
    supplier       text NOT NULL REFERENCES agency (symbol) ON UPDATE CASCADE,
    service_kind   text NOT NULL CHECK (service_kind IN ('DocumentDelivery', 'BookLoan',
                                                         'PayPerView', 'EBookLoan',
                                                         'ProxySearch')),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    -- consortium-local dates, both inclusive; NULL effective_to = open-ended
    effective_from date NOT NULL,
    effective_to   date CHECK (effective_to IS NULL OR effective_to >= effective_from),
    -- quote = fixed + per_page * pages + per_hour * hours (each kind uses its own parts)
    fixed_minor    bigint NOT NULL DEFAULT 0 CHECK (fixed_minor >= 0),
    per_page_minor bigint NOT NULL DEFAULT 0 CHECK (per_page_minor >= 0),
    per_hour_minor bigint NOT NULL DEFAULT 0 CHECK (per_hour_minor >= 0),
    assumed_pages  integer CHECK (assumed_pages > 0),
    assumed_hours  numeric CHECK (assumed_hours > 0),
    terms          jsonb NOT NULL,              -- the entry as written (normalised)
    superseded_by  integer REFERENCES fee_load (id)
);
CREATE INDEX fee_schedule_active ON fee_schedule (supplier, service_kind, effective_from)
    WHERE superseded_by IS NULL;

-- ---------------------------------------------------------------------------
-- Subsidy rules (versions of the subsidy file) and budgets.
-- ---------------------------------------------------------------------------
CREATE TABLE subsidy_version (
    version    serial PRIMARY KEY,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    source     text NOT NULL,
    normalised jsonb NOT NULL,
    file_name  text
);

-- One row per budget and draw period, created on first use. requester '' = a global
-- budget; period 'YYYY-MM' (consortium-local calendar month) or 'total'. The CHECK is
-- the last line of defence: no code path can overdraw a budget or push it below zero.
CREATE TABLE subsidy_budget (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    requester   text NOT NULL DEFAULT '',
    period      text NOT NULL CHECK (period = 'total' OR period ~ '^[0-9]{4}-[0-9]{2}$'),
    currency    text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    limit_minor bigint NOT NULL CHECK (limit_minor >= 0),
    spent_minor bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (name, requester, period),
    CONSTRAINT subsidy_budget_not_overdrawn CHECK (spent_minor >= 0 AND spent_minor <= limit_minor)
);

-- ---------------------------------------------------------------------------
-- The ledger. A posting is one billable event of one ILL transaction (or the
-- reversal of one); its entries sum to zero per currency. Nothing here is ever
-- updated or deleted (triggers below): corrections are new, reversing postings.
-- ---------------------------------------------------------------------------
CREATE TABLE ledger_posting (
    id                 bigserial PRIMARY KEY,
    transaction_id     text NOT NULL,           -- the hub transaction id
    event              text NOT NULL,           -- CopyCompleted, Loaned, CopyCompleted/reversal
    kind               text NOT NULL CHECK (kind IN ('charge', 'reversal')),
    requester          text NOT NULL REFERENCES agency (symbol),
    supplier           text NOT NULL REFERENCES agency (symbol),
    service_kind       text NOT NULL,
    title              text,
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    fee_minor          bigint NOT NULL,         -- negative in a reversal
    subsidy_minor      bigint NOT NULL,
    patron_share_minor bigint NOT NULL,
    quote_minor        bigint,
    subsidy_version    integer REFERENCES subsidy_version (version),
    reverses           bigint UNIQUE REFERENCES ledger_posting (id),
    reason             text,
    notes              text[] NOT NULL DEFAULT '{}',
    occurred_at        timestamptz NOT NULL,    -- when the billable event happened
    local_date         date NOT NULL,           -- occurred_at in the consortium's time zone
    posted_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (transaction_id, event),
    CHECK (fee_minor = subsidy_minor + patron_share_minor),
    CHECK ((kind = 'reversal') = (reverses IS NOT NULL))
);
CREATE INDEX ledger_posting_date ON ledger_posting (local_date);

CREATE TABLE ledger_entry (
    id             bigserial PRIMARY KEY,
    posting_id     bigint NOT NULL REFERENCES ledger_posting (id),
    transaction_id text NOT NULL,
    -- an agency symbol, or CENTRE for the centre's own accounts
    owner          text NOT NULL,
    account        text NOT NULL CHECK (account IN ('receivable', 'payable', 'subsidy',
                                                    'subsidy_expense')),
    amount_minor   bigint NOT NULL CHECK (amount_minor <> 0),
    currency       text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    local_date     date NOT NULL,
    posted_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX ledger_entry_owner ON ledger_entry (owner, local_date);
CREATE INDEX ledger_entry_posting ON ledger_entry (posting_id);
CREATE INDEX ledger_entry_txn ON ledger_entry (transaction_id);

-- What each subsidy rule gave to one posting, and which budgets it counted against
-- (each listed budget is drawn by the full granted amount). granted < wanted: a
-- budget ran short; `note` says which. Reversals add rows with negated amounts.
CREATE TABLE subsidy_grant (
    id            bigserial PRIMARY KEY,
    posting_id    bigint NOT NULL REFERENCES ledger_posting (id),
    position      integer NOT NULL,
    rule          text NOT NULL,
    wanted_minor  bigint NOT NULL,
    granted_minor bigint NOT NULL,
    budgets       bigint[] NOT NULL DEFAULT '{}',
    note          text,
    UNIQUE (posting_id, position)
);
CREATE INDEX subsidy_grant_budgets ON subsidy_grant USING gin (budgets);

-- Refused charges (above the quote or maximumCosts), for operators and the
-- violations dashboard. Not part of the ledger.
CREATE TABLE charge_flag (
    id             bigserial PRIMARY KEY,
    flagged_at     timestamptz NOT NULL DEFAULT now(),
    transaction_id text NOT NULL,
    event          text NOT NULL,
    requester      text NOT NULL,
    supplier       text NOT NULL,
    reason         text NOT NULL,
    fee_minor      bigint NOT NULL,
    limit_minor    bigint,
    currency       text NOT NULL,
    detail         text NOT NULL,
    UNIQUE (transaction_id, event, reason, fee_minor, currency)
);

CREATE FUNCTION ledger_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % refused; post a reversing entry instead',
        TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER ledger_posting_append_only BEFORE UPDATE OR DELETE ON ledger_posting
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_posting_no_truncate BEFORE TRUNCATE ON ledger_posting
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entry_append_only BEFORE UPDATE OR DELETE ON ledger_entry
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER ledger_entry_no_truncate BEFORE TRUNCATE ON ledger_entry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER subsidy_grant_append_only BEFORE UPDATE OR DELETE ON subsidy_grant
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER subsidy_grant_no_truncate BEFORE TRUNCATE ON subsidy_grant
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_append_only();
