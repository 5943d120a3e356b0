-- Dispatch: ILL transactions, their rota, the audit log, supplier scorecards, policy versions.

CREATE TABLE policy_version (
    version    serial PRIMARY KEY,
    loaded_at  timestamptz NOT NULL DEFAULT now(),
    source     text NOT NULL,           -- the file as loaded, for operators to read back
    normalised jsonb NOT NULL,
    file_name  text
);

CREATE TABLE ill_transaction (
    id              text PRIMARY KEY,   -- the hub transaction id (header hub-transaction-id)
    requester       text NOT NULL REFERENCES agency (symbol),
    request_id      text NOT NULL,      -- the requester's requestingAgencyRequestId
    service_type    text NOT NULL,
    service_kind    text NOT NULL,
    service_level   text,
    returnable      boolean,            -- NULL: CopyOrLoan, not delivered yet
    state           text NOT NULL,
    supplier        text REFERENCES agency (symbol),
    rota_position   integer,
    deadline_at     timestamptz,
    cancel_requested_at timestamptz,
    request         jsonb NOT NULL,     -- the request as received (patron data purged later)
    confirmation    jsonb,              -- the requestConfirmation sent, repeated for duplicates
    max_cost_minor  bigint,
    currency        text,
    patron_key      text,
    item_key        text,
    duplicate_of    text REFERENCES ill_transaction (id),
    policy_version  integer REFERENCES policy_version (version),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    closed_at       timestamptz,
    UNIQUE (requester, request_id)
);
CREATE INDEX ill_transaction_deadline ON ill_transaction (deadline_at)
    WHERE deadline_at IS NOT NULL;
CREATE INDEX ill_transaction_open_item ON ill_transaction (requester, patron_key, item_key)
    WHERE closed_at IS NULL;
CREATE INDEX ill_transaction_supplier_open ON ill_transaction (supplier)
    WHERE closed_at IS NULL;

CREATE TABLE rota_entry (
    transaction_id text NOT NULL REFERENCES ill_transaction (id),
    position       integer NOT NULL,
    supplier       text NOT NULL REFERENCES agency (symbol),
    tier           integer NOT NULL,
    score          double precision NOT NULL,
    reasons        text[] NOT NULL,
    outcome        text NOT NULL DEFAULT 'pending'
                   CHECK (outcome IN ('pending', 'forwarded', 'unfilled', 'timed_out',
                                      'supplied', 'cancelled')),
    forwarded_at   timestamptz,
    answered_at    timestamptz,
    PRIMARY KEY (transaction_id, position)
);

CREATE TABLE rota_excluded (
    transaction_id text NOT NULL REFERENCES ill_transaction (id),
    supplier       text NOT NULL,
    reason         text NOT NULL
);
CREATE INDEX rota_excluded_txn ON rota_excluded (transaction_id);

-- Append-only: who did what to which transaction, when, from which state to which.
CREATE TABLE audit_log (
    id             bigserial PRIMARY KEY,
    transaction_id text NOT NULL REFERENCES ill_transaction (id),
    at             timestamptz NOT NULL DEFAULT now(),
    actor          text NOT NULL,
    event          text NOT NULL,
    from_state     text,
    to_state       text,
    message_id     text,
    detail         jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_log_txn ON audit_log (transaction_id, id);

-- Supplier quality, updated on every outcome; read by routing.
CREATE TABLE scorecard (
    supplier          text PRIMARY KEY REFERENCES agency (symbol),
    forwarded         integer NOT NULL DEFAULT 0,
    filled            integer NOT NULL DEFAULT 0,
    unfilled          integer NOT NULL DEFAULT 0,
    timed_out         integer NOT NULL DEFAULT 0,
    turnaround_total  double precision NOT NULL DEFAULT 0,   -- seconds, over `filled`
    open_requests     integer NOT NULL DEFAULT 0,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

-- Requests forwarded per supplier per consortium-local day (daily caps).
CREATE TABLE supplier_day (
    supplier  text NOT NULL REFERENCES agency (symbol),
    day       date NOT NULL,
    forwarded integer NOT NULL DEFAULT 0,
    PRIMARY KEY (supplier, day)
);
