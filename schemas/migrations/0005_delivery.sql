-- Delivery: the suppliers' FTP uploads, the document store, download grants and
-- their log, the mail outbox and what retention deleted. Owned by delivery/.
-- transaction_id is the hub transaction id as text, without a foreign key, so
-- delivery can be exercised (and its rows purged) on its own.

-- What the FTP drop knows about each upload, so intake can tell a finished file
-- from one still being written.
CREATE TABLE ftp_upload (
    supplier    text NOT NULL,
    path        text NOT NULL,          -- inside the supplier's home, no leading '/'
    state       text NOT NULL CHECK (state IN ('uploading', 'done', 'partial')),
    size        bigint,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (supplier, path)
);

-- One stored electronic copy. The supplier's upload stays in the drop until this
-- row has committed (drop_released_at), so a rolled-back intake loses nothing.
CREATE TABLE document (
    id               uuid PRIMARY KEY,
    transaction_id   text NOT NULL,
    supplier         text NOT NULL,
    filename         text NOT NULL,
    content_type     text NOT NULL,
    size             bigint NOT NULL CHECK (size > 0),
    sha256           text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    store_name       text NOT NULL UNIQUE,   -- path under <data_dir>/store/
    drop_path        text,
    drop_size        bigint,
    drop_mtime_ns    bigint,
    drop_released_at timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    deleted_at       timestamptz
);
CREATE INDEX document_transaction ON document (transaction_id);
CREATE INDEX document_unreleased ON document (supplier, drop_path)
    WHERE drop_released_at IS NULL AND drop_path IS NOT NULL;
CREATE INDEX document_live ON document (created_at) WHERE deleted_at IS NULL;

-- A reader's right to download one document. Only the SHA-256 of the token is
-- kept: a copy of this table does not give anyone a working link.
CREATE TABLE download_grant (
    id               bigserial PRIMARY KEY,
    token_hash       bytea NOT NULL UNIQUE CHECK (length(token_hash) = 32),
    token_prefix     text NOT NULL,          -- for operators and logs only
    document_id      uuid NOT NULL REFERENCES document (id),
    transaction_id   text NOT NULL,
    patron_email     text,                   -- personal data: purged with the document
    patron_name      text,
    max_downloads    integer CHECK (max_downloads > 0),   -- NULL: unlimited
    remaining        integer CHECK (remaining >= 0),
    used             integer NOT NULL DEFAULT 0,
    expires_at       timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    last_download_at timestamptz,
    revoked_at       timestamptz,
    CHECK ((max_downloads IS NULL) = (remaining IS NULL))
);
CREATE INDEX download_grant_document ON download_grant (document_id);
CREATE INDEX download_grant_transaction ON download_grant (transaction_id);

-- Every download started through the gateway.
CREATE TABLE download (
    id         bigserial PRIMARY KEY,
    grant_id   bigint NOT NULL REFERENCES download_grant (id),
    at         timestamptz NOT NULL,
    address    text,
    user_agent text,
    bytes      bigint NOT NULL DEFAULT 0,
    completed  boolean NOT NULL DEFAULT false
);
CREATE INDEX download_grant_id ON download (grant_id);

-- Mail written in the same transaction as the state change that caused it;
-- delivery/mail.py sends it. `raw` is cleared once sent (it may hold a live link).
CREATE TABLE mail_outbox (
    id             bigserial PRIMARY KEY,
    message_id     text NOT NULL UNIQUE,      -- the Message-ID header, stable across retries
    kind           text NOT NULL DEFAULT 'generic',
    transaction_id text,
    recipients     text[] NOT NULL CHECK (cardinality(recipients) > 0),
    raw            bytea,
    created_at     timestamptz NOT NULL DEFAULT now(),
    available_at   timestamptz NOT NULL DEFAULT now(),
    attempts       integer NOT NULL DEFAULT 0,
    last_error     text,
    sent_at        timestamptz,
    failed_at      timestamptz                -- refused for good by the SMTP server
);
CREATE INDEX mail_outbox_due ON mail_outbox (available_at)
    WHERE sent_at IS NULL AND failed_at IS NULL;

-- What the retention sweeper deleted, and why.
CREATE TABLE retention_log (
    id      bigserial PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    kind    text NOT NULL CHECK (kind IN ('document', 'upload', 'orphan', 'mail')),
    ref     text,
    path    text,
    bytes   bigint,
    reason  text NOT NULL
);
