-- Flags (infra/flags.py): one store. A refused charge used to be recorded twice: a row in
-- charge_flag (0004, written by settlement) and a charge_above_schedule flag (0008, raised
-- by dispatch). From here it is one row of `flag`: its kind says why the charge was
-- refused, its `facts` carry what charge_flag had. infra/flags.py is the table's only
-- writer and reader; other SQL asks flag_raised() below.
--
-- The kinds are infra/flags.py's FlagKind enum; tests/test_flags.py keeps the two equal.
-- A new kind needs a new migration that drops and re-adds this constraint.
ALTER TABLE flag DROP CONSTRAINT flag_kind_check;
ALTER TABLE flag ADD CONSTRAINT flag_kind_check
    CHECK (kind IN ('charge_above_schedule', 'charge_above_max_cost',
                    'charge_currency_mismatch', 'deadline_breaches', 'copy_without_valid_file',
                    'loan_overdue', 'cancellation_rate', 'peer_error'));

-- What the flag is about, structured (a refused charge: event, requester, supplier,
-- reason, fee_minor, limit_minor, limit_currency, currency); `detail` says it in words.
ALTER TABLE flag ADD COLUMN facts jsonb NOT NULL DEFAULT '{}'
    CONSTRAINT flag_facts_object CHECK (jsonb_typeof(facts) = 'object');

-- The transaction page reads a transaction's flags (charge_flag's unique key did that).
CREATE INDEX flag_transaction ON flag (transaction_id) WHERE transaction_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Move charge_flag into flag. The kind follows the refusal's reason (ChargeRefused's
-- subclasses in settlement/ledger.py): above_quote is the supplier charging above the
-- quote its fee schedule gave, the kind dispatch always raised; a reason written by
-- nothing in the code is kept in the facts and classed the same way. The dedupe key is
-- the one settlement/ledger.py's record_flag now uses, so a refusal redelivered after
-- this migration still flags once.
-- ---------------------------------------------------------------------------
CREATE TEMPORARY TABLE charge_flag_moved ON COMMIT DROP AS
SELECT c.id, c.flagged_at, c.transaction_id, c.supplier, c.detail, m.kind,
       m.kind || ':' || c.transaction_id || ':' || c.event || ':' || c.fee_minor || ':'
           || c.currency AS dedupe_key,
       -- the key dispatch gave its charge_above_schedule twin of this row
       'charge_above_schedule:' || c.transaction_id || ':' || c.event || ':' || c.fee_minor
           AS twin_key,
       jsonb_build_object('event', c.event, 'requester', c.requester,
                          'supplier', c.supplier, 'reason', c.reason,
                          'fee_minor', c.fee_minor, 'limit_minor', c.limit_minor,
                          'currency', c.currency) AS facts
FROM charge_flag c
CROSS JOIN LATERAL (SELECT CASE c.reason WHEN 'above_max_cost' THEN 'charge_above_max_cost'
                                         WHEN 'currency_mismatch'
                                             THEN 'charge_currency_mismatch'
                                         ELSE 'charge_above_schedule' END AS kind) m;

-- A refusal dispatch saw has a twin flag already: that row (whose event was published)
-- becomes the one, with the facts; one charge_flag row per twin, the oldest.
UPDATE flag f SET kind = t.kind, dedupe_key = t.dedupe_key, facts = t.facts
FROM (SELECT DISTINCT ON (twin_key) * FROM charge_flag_moved ORDER BY twin_key, id) t
WHERE f.dedupe_key = t.twin_key;

-- The others (refused outside dispatch, or a second reason for one twin) become rows of
-- their own, in the order they were flagged. No event is published for them now.
INSERT INTO flag (raised_at, kind, subject, transaction_id, detail, facts, dedupe_key)
SELECT flagged_at, kind, supplier, transaction_id, detail, facts, dedupe_key
FROM charge_flag_moved ORDER BY flagged_at, id
ON CONFLICT (dedupe_key) DO NOTHING;

-- Dropped, not kept as a view: nothing outside the hub is documented to read it (the
-- interfaces are `run.py flags`, the operators' pages and the `flag.<kind>` events), and
-- a second name for the same facts is what this migration removes.
DROP TABLE charge_flag;

-- Whether `kind:key` was flagged, for SQL that must skip flagged conditions inside a
-- larger query (broker/violations.py's overdue sweep). infra/flags.py's dedupe_key()
-- builds the same key. LANGUAGE sql and STABLE: inlined, one probe of the unique index.
CREATE FUNCTION flag_raised(kind text, key text) RETURNS boolean
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT EXISTS (SELECT 1 FROM flag f WHERE f.dedupe_key = $1 || ':' || $2)
$$;
