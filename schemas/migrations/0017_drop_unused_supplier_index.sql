-- Dispatch (broker/dispatch/): no query looks up open transactions by supplier any more
-- (a supplier's open requests are counted on its scorecard), and the index misled the
-- planner. Without statistics yet (a new database, or autovacuum off), it chose this
-- index for the duplicate-request check, `requester = .. AND patron_key = .. AND
-- item_key = .. AND closed_at IS NULL`, scanning every open transaction (25 ms at 14,000
-- open) instead of ill_transaction_open_item, which answers it in one probe.
DROP INDEX ill_transaction_supplier_open;
