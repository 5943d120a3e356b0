-- Foundation: agencies, the inbox (idempotent intake) and the transactional outbox.

CREATE TABLE agency (
    symbol        text PRIMARY KEY CHECK (symbol ~ '^[A-Za-z0-9][A-Za-z0-9_.-]*:[^[:space:]:/]+$'),
    name          text NOT NULL CHECK (name <> ''),
    roles         text[] NOT NULL CHECK (roles <@ ARRAY['requester', 'supplier']::text[]
                                         AND cardinality(roles) > 0),
    province      text,
    city          text,
    email         text,
    finance_email text,
    -- scrypt, see broker/credentials.py; the clear password lives only in the broker.
    password_hash text NOT NULL,
    enabled       boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);

-- One row per inbound message ever seen: redelivery of (sender, message_id) is
-- absorbed here, because the first delivery's effects committed with this row.
CREATE TABLE inbox (
    sender        text NOT NULL,
    message_id    text NOT NULL,
    message_type  text,
    received_at   timestamptz NOT NULL DEFAULT now(),
    body          jsonb,
    outcome       text NOT NULL CHECK (outcome IN ('ok', 'error', 'dead')),
    error_type    text,
    error_value   text,
    PRIMARY KEY (sender, message_id)
);

-- Everything the hub sends is written here in the same PostgreSQL transaction as
-- the state change that caused it; broker/outbox.py publishes it afterwards.
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    exchange       text NOT NULL,           -- base name; the relay adds the prefix
    routing_key    text NOT NULL,
    message_id     text NOT NULL UNIQUE,
    message_type   text,
    correlation_id text,
    headers        jsonb NOT NULL DEFAULT '{}',
    body           bytea NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    available_at   timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    published_at   timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;

-- Poison messages: everything the hub could not process, with the reason. Also
-- published to ill.dead; this table is what `run.py dead list/replay` reads.
CREATE TABLE dead_letter (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL DEFAULT now(),
    sender      text,
    message_id  text,
    routing_key text,
    reason      text NOT NULL,
    properties  jsonb NOT NULL DEFAULT '{}',
    body        bytea NOT NULL,
    replayed_at timestamptz
);
