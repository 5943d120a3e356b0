-- Prepaid deposit accounts (issue 17; owned by settlement/, settlement/deposits.py), an
-- option per agency as NLM's EFTS has them: the agency pays money in ahead, charges draw
-- the balance down, a run nets its statement against the deposit, and the agency is
-- alerted when the balance runs low.
--
-- Every table here is append-only, like the ledger: the balance is the sum of the
-- movements, an account is closed by a row in deposit_closure, and whether an agency
-- has been alerted for the current fall below its threshold is read from the alerts
-- and their clearances. Nothing is ever updated in place.

-- One deposit account per agency, in one currency. low_balance_minor NULL: the
-- threshold is settings.payments.deposit_low_minor, read when the balance is checked
-- (so a changed setting applies to every account that did not choose its own).
CREATE TABLE deposit_account (
    agency             text PRIMARY KEY REFERENCES agency (symbol),
    currency           text NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    low_balance_minor  bigint CHECK (low_balance_minor >= 0),
    opened_by          text NOT NULL,
    opened_at          timestamptz NOT NULL DEFAULT now(),
    -- the target of deposit_movement's (agency, currency) key: a movement is always in
    -- its account's currency
    UNIQUE (agency, currency)
);

-- A closed account takes no movements and is not netted or alerted; it is closed once
-- its balance is zero (refunded first), and stays closed.
CREATE TABLE deposit_closure (
    agency     text PRIMARY KEY REFERENCES deposit_account (agency),
    reason     text NOT NULL CHECK (length(reason) BETWEEN 1 AND 2000),
    closed_by  text NOT NULL,
    closed_at  timestamptz NOT NULL DEFAULT now()
);

-- Money into (+) or out of (-) a deposit:
--   topup     the agency paid money in (a bank credit, recorded by hand or imported)
--   drawdown  a run's statement to the centre paid from the deposit (due_id)
--   credit    a run's statement from the centre paid into the deposit (due_id)
--   refund    money paid back to the agency out of the deposit
-- source_key makes an import idempotent (the same bank entry is one top-up however
-- often it is read); a due is netted against a deposit at most once.
CREATE TABLE deposit_movement (
    id            bigserial PRIMARY KEY,
    agency        text NOT NULL,
    currency      text NOT NULL,
    kind          text NOT NULL,
    amount_minor  bigint NOT NULL CHECK (amount_minor <> 0),
    reference     text,
    due_id        bigint REFERENCES statement_due (id),
    source_key    text UNIQUE,
    actor         text NOT NULL,
    at            timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (agency, currency) REFERENCES deposit_account (agency, currency),
    CHECK ((kind IN ('topup', 'credit')) = (amount_minor > 0)),
    CHECK ((kind IN ('drawdown', 'credit')) = (due_id IS NOT NULL))
);
ALTER TABLE deposit_movement ADD CONSTRAINT deposit_movement_kind
    CHECK (kind IN ('topup', 'drawdown', 'credit', 'refund'));
CREATE INDEX deposit_movement_agency ON deposit_movement (agency, id);
CREATE UNIQUE INDEX deposit_movement_due ON deposit_movement (due_id) WHERE due_id IS NOT NULL;

-- One row per low-balance alert sent (a finance message and a mail): the available
-- balance and the threshold at the time, and the mail's id if the agency has a finance
-- address.
CREATE TABLE deposit_alert (
    id                bigserial PRIMARY KEY,
    agency            text NOT NULL REFERENCES deposit_account (agency),
    currency          text NOT NULL,
    available_minor   bigint NOT NULL,
    deposit_minor     bigint NOT NULL,
    threshold_minor   bigint NOT NULL,
    mail_id           bigint,
    at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX deposit_alert_agency ON deposit_alert (agency, id);

-- An alert is cleared when the available balance is seen at or above the threshold
-- again (a top-up, a credit, or a sweep that finds it risen): only then may the next
-- fall alert again. At most one clearance per alert.
CREATE TABLE deposit_alert_cleared (
    alert_id         bigint PRIMARY KEY REFERENCES deposit_alert (id),
    available_minor  bigint NOT NULL,
    at               timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER deposit_account_append_only BEFORE UPDATE OR DELETE ON deposit_account
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER deposit_closure_append_only BEFORE UPDATE OR DELETE ON deposit_closure
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER deposit_movement_append_only BEFORE UPDATE OR DELETE ON deposit_movement
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER deposit_alert_append_only BEFORE UPDATE OR DELETE ON deposit_alert
    FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
CREATE TRIGGER deposit_alert_cleared_append_only BEFORE UPDATE OR DELETE
    ON deposit_alert_cleared FOR EACH ROW EXECUTE FUNCTION ledger_append_only();
