-- Counters that many intake batches bump at once become append-only change rows
-- (owned by broker/dispatch: sql.py writes them, counts.py folds them).
--
-- With the intake sharded (0012), several batches run at once, in one hub and in
-- several. Each used to update a supplier's scorecard row and its row of the day in
-- place, holding those row locks until the batch committed: batches waited on each
-- other, and two that took the rows of two suppliers in opposite order deadlocked
-- (a second's wait, then the batch redone one message at a time). Inserting a change
-- row takes no lock anyone else wants. One hub a second folds the changes into the
-- totals (an advisory lock; a short transaction). Readers keep reading `scorecard` and
-- `supplier_day`: views of the totals plus the changes not folded yet, so a count is
-- never late, and a transaction sees its own changes.
ALTER TABLE scorecard RENAME TO scorecard_total;
ALTER TABLE supplier_day RENAME TO supplier_day_total;

CREATE TABLE scorecard_change (
    id                bigserial PRIMARY KEY,
    supplier          text NOT NULL,
    forwarded         integer NOT NULL DEFAULT 0,
    filled            integer NOT NULL DEFAULT 0,
    unfilled          integer NOT NULL DEFAULT 0,
    timed_out         integer NOT NULL DEFAULT 0,
    turnaround_total  double precision NOT NULL DEFAULT 0,
    open_requests     integer NOT NULL DEFAULT 0,
    at                timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE supplier_day_change (
    id        bigserial PRIMARY KEY,
    supplier  text NOT NULL,
    day       date NOT NULL,
    forwarded integer NOT NULL DEFAULT 1
);

-- open_requests never shows below zero (as when it was updated in place).
CREATE VIEW scorecard AS
SELECT supplier, sum(forwarded)::integer AS forwarded, sum(filled)::integer AS filled,
       sum(unfilled)::integer AS unfilled, sum(timed_out)::integer AS timed_out,
       sum(turnaround_total) AS turnaround_total,
       greatest(sum(open_requests), 0)::integer AS open_requests,
       max(updated_at) AS updated_at
FROM (SELECT supplier, forwarded, filled, unfilled, timed_out, turnaround_total,
             open_requests, updated_at FROM scorecard_total
      UNION ALL
      SELECT supplier, forwarded, filled, unfilled, timed_out, turnaround_total,
             open_requests, at FROM scorecard_change) AS both_parts
GROUP BY supplier;

CREATE VIEW supplier_day AS
SELECT supplier, day, sum(forwarded)::integer AS forwarded
FROM (SELECT supplier, day, forwarded FROM supplier_day_total
      UNION ALL
      SELECT supplier, day, forwarded FROM supplier_day_change) AS both_parts
GROUP BY supplier, day;
