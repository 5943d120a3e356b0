-- Quotes frozen at routing time: each rota entry's quote, and the current supplier's
-- quote on the transaction (what a CopyCompleted/Loaned may charge at most).
ALTER TABLE rota_entry ADD COLUMN quote_minor bigint, ADD COLUMN quote_currency text;
ALTER TABLE ill_transaction ADD COLUMN quote_minor bigint, ADD COLUMN quote_currency text;
