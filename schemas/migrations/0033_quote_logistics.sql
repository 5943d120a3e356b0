-- The logistics part of a frozen quote (issue 19): owned by broker (broker/dispatch).
-- Dispatch freezes each rota entry's quote at routing time (0007) and copies the current
-- supplier's onto the transaction; a loan's quote may now include its shipping legs
-- (settlement/fee_logistics.py), and the charge posted on Loaned/CopyCompleted records
-- how much of the fee is shipping, so a subsidy rule on the logistics part can grant on
-- it. NULL: no quote, or a quote frozen before this column (read as no logistics).
ALTER TABLE rota_entry ADD COLUMN quote_logistics_minor bigint;
ALTER TABLE ill_transaction ADD COLUMN quote_logistics_minor bigint;
