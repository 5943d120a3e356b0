-- Agencies' bank accounts and the payment files the centre gives its bank (issue 17;
-- owned by settlement/: settlement/bank_accounts.py and settlement/pain001.py).
--
-- Both tables are append-only, like the ledger: an account is never edited, a change
-- is a new row, so finance staff can always see which account a past file paid to.

-- Each change of an agency's account is a row; its current account is its latest row
-- (highest id). A removal is a row without an account (scheme, account_id and
-- holder_name all NULL). account_id is stored normalised (no spaces, upper case): the
-- full number is needed in the bank file and to match bank statements; every display
-- masks it (settlement/bank_accounts.py).
-- scheme 'iban': account_id is an IBAN, bank_code an optional BIC.
-- scheme 'domestic': account_id is the country's own account number, bank_code its
-- clearing code (CN: the 12-digit CNAPS bank code).
CREATE TABLE agency_bank_account (
    id           bigserial PRIMARY KEY,
    agency       text NOT NULL REFERENCES agency (symbol),
    holder_name  text CHECK (char_length(holder_name) BETWEEN 1 AND 140),
    scheme       text,
    account_id   text CHECK (account_id ~ '^[A-Z0-9]{1,34}$'),
    bank_code    text CHECK (bank_code ~ '^[A-Z0-9]{1,35}$'),
    bank_name    text CHECK (char_length(bank_name) BETWEEN 1 AND 140),
    country      text CHECK (country ~ '^[A-Z]{2}$'),
    changed_by   text NOT NULL,
    changed_at   timestamptz NOT NULL DEFAULT now(),
    -- An account row has all of these; a removal none of them.
    CHECK ((scheme IS NULL) = (account_id IS NULL)
           AND (scheme IS NULL) = (holder_name IS NULL)
           AND (scheme IS NULL) = (country IS NULL)
           AND (scheme IS NOT NULL OR (bank_code IS NULL AND bank_name IS NULL))),
    CHECK (scheme IS DISTINCT FROM 'domestic' OR bank_code IS NOT NULL)
);
ALTER TABLE agency_bank_account ADD CONSTRAINT agency_bank_account_scheme
    CHECK (scheme IN ('iban', 'domestic'));
CREATE INDEX agency_bank_account_latest ON agency_bank_account (agency, id DESC);
-- A bank statement's counterpart account is looked up by its number (reconciliation).
CREATE INDEX agency_bank_account_number ON agency_bank_account (account_id)
    WHERE account_id IS NOT NULL;

-- One row per payment file written (pain.001 XML or the plain CSV alternative), under
-- <data_dir>/payments/. Writing a file pays nothing: a due is paid when the bank
-- statement (or finance staff) records the payment. due_ids: the dues it pays (a
-- later file leaves them out unless asked to pay them again); control_minor: the sum
-- per currency in minor units, e.g. {"CNY": 310000}. run_id is NULL for a file
-- that pays dues of several runs.
CREATE TABLE payment_file (
    id             bigserial PRIMARY KEY,
    run_id         bigint REFERENCES settlement_run (id),
    format         text NOT NULL,
    message_id     text NOT NULL UNIQUE CHECK (message_id ~ '^[A-Za-z0-9-]{1,35}$'),
    file_name      text NOT NULL,
    sha256         text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    bytes          bigint NOT NULL CHECK (bytes > 0),
    payments       integer NOT NULL CHECK (payments > 0),
    control_minor  jsonb NOT NULL CHECK (jsonb_typeof(control_minor) = 'object'),
    due_ids        bigint[] NOT NULL CHECK (cardinality(due_ids) > 0),
    created_by     text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE payment_file ADD CONSTRAINT payment_file_format
    CHECK (format IN ('pain.001.001.03', 'pain.001.001.09', 'csv'));
CREATE INDEX payment_file_dues ON payment_file USING gin (due_ids);

-- Append-only, as the ledger (its trigger function, migration 0004).
CREATE TRIGGER agency_bank_account_append_only BEFORE UPDATE OR DELETE
    ON agency_bank_account FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER payment_file_append_only BEFORE UPDATE OR DELETE ON payment_file
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
