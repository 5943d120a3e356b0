-- Settlement runs take their postings by range instead of one settlement_item row per
-- posting (settlement/settle.py, settlement/netting.py). Writing and indexing ten
-- million membership rows was a fifth of a large run; two numbers per run say the same.
--
-- A run's region is every posting with id <= posting_max and local_date <= cutoff:
-- posting_max is the highest posting id committed when the run started (the run
-- takes a SHARE lock on ledger_posting for that moment, so no insert is in flight and
-- every later posting gets a larger id from the sequence). Runs close in calendar
-- order and posting ids only grow, so the regions of successive runs are nested, and
-- a run settles its region minus the region of the closed run before it: each posting
-- lies in the region of exactly one run, the first one whose region contains it.
-- A late posting (dated in a closed period, posted after its run) has a larger id
-- than that run's posting_max, so it lands in the next run. Two triggers keep this
-- true whatever writes to the tables: regions must nest, and no posting may be
-- inserted into a region already taken.

ALTER TABLE settlement_run ADD COLUMN posting_max bigint;

-- A run that died half way is redone from scratch by its next attempt anyway.
DELETE FROM settlement_statement
 WHERE run_id IN (SELECT id FROM settlement_run WHERE closed_at IS NULL);
DELETE FROM settlement_net
 WHERE run_id IN (SELECT id FROM settlement_run WHERE closed_at IS NULL);
DELETE FROM settlement_item
 WHERE run_id IN (SELECT id FROM settlement_run WHERE closed_at IS NULL);
DELETE FROM settlement_run WHERE closed_at IS NULL;

UPDATE settlement_run r
   SET posting_max = coalesce((SELECT max(i.posting_id) FROM settlement_item i
                               WHERE i.run_id = r.id), 0);

-- Closed runs keep exactly the postings they settled: refuse to convert a database
-- where a run's items are not its range (a posting committed during an old run).
DO $$
DECLARE
    differ bigint;
BEGIN
    WITH runs AS (
        SELECT id, cutoff, posting_max,
               coalesce(max(posting_max) OVER w, 0) AS prev_max,
               coalesce(max(cutoff) OVER w, date '0001-01-01') AS prev_cutoff
        FROM settlement_run
        WINDOW w AS (ORDER BY cutoff ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)),
    ranged AS (
        SELECT p.id AS posting_id, r.id AS run_id
        FROM runs r JOIN ledger_posting p
          ON p.id <= r.posting_max AND p.local_date <= r.cutoff
         AND (p.id > r.prev_max OR p.local_date > r.prev_cutoff))
    SELECT count(*) INTO differ FROM (
        (SELECT posting_id, run_id FROM settlement_item EXCEPT SELECT * FROM ranged)
        UNION ALL
        (SELECT * FROM ranged EXCEPT SELECT posting_id, run_id FROM settlement_item)) d;
    IF differ > 0 THEN
        RAISE EXCEPTION 'settlement runs cannot be converted to posting ranges: % posting(s) '
                        'differ between settlement_item and the ranges', differ;
    END IF;
END $$;

ALTER TABLE settlement_run ALTER COLUMN posting_max SET NOT NULL;
DROP TABLE settlement_item;

-- Which closed run settled each posting (for people and tests; runs never read it).
CREATE VIEW settlement_item AS
WITH runs AS (
    SELECT id, cutoff, posting_max,
           coalesce(max(posting_max) OVER w, 0) AS prev_max,
           coalesce(max(cutoff) OVER w, date '0001-01-01') AS prev_cutoff
    FROM settlement_run
    WHERE closed_at IS NOT NULL
    WINDOW w AS (ORDER BY cutoff ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING))
SELECT p.id AS posting_id, r.id AS run_id
FROM runs r JOIN ledger_posting p
  ON p.id <= r.posting_max AND p.local_date <= r.cutoff
 AND (p.id > r.prev_max OR p.local_date > r.prev_cutoff);

-- Regions nest: a run with a later cutoff never has a smaller posting_max.
CREATE FUNCTION settlement_run_nested() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    other bigint;
BEGIN
    SELECT id INTO other FROM settlement_run
     WHERE id <> NEW.id
       AND ((cutoff < NEW.cutoff AND posting_max > NEW.posting_max)
            OR (cutoff > NEW.cutoff AND posting_max < NEW.posting_max)
            OR cutoff = NEW.cutoff)
     LIMIT 1;
    IF other IS NOT NULL THEN
        RAISE EXCEPTION 'settlement run % (cutoff %, postings up to %) does not nest with run %',
                        NEW.id, NEW.cutoff, NEW.posting_max, other
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER settlement_run_nested BEFORE INSERT OR UPDATE OF cutoff, posting_max
    ON settlement_run FOR EACH ROW EXECUTE FUNCTION settlement_run_nested();

-- A posting never enters a region a run has taken (one check per inserting statement).
CREATE FUNCTION ledger_posting_not_settled() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    hit record;
BEGIN
    SELECT n.id AS posting, n.local_date, r.id AS run, r.period INTO hit
      FROM settlement_run r JOIN new_postings n
        ON n.id <= r.posting_max AND n.local_date <= r.cutoff
     LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger posting % dated % falls into settlement run % of %, '
                        'which has taken every posting up to id %',
                        hit.posting, hit.local_date, hit.run, hit.period,
                        (SELECT posting_max FROM settlement_run WHERE id = hit.run)
            USING ERRCODE = 'restrict_violation';
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER ledger_posting_not_settled AFTER INSERT ON ledger_posting
    REFERENCING NEW TABLE AS new_postings
    FOR EACH STATEMENT EXECUTE FUNCTION ledger_posting_not_settled();
