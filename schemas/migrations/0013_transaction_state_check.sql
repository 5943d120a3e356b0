-- Dispatch (broker/dispatch/): the states a transaction may be in, as a CHECK. The list is
-- broker/states.py's State enum (ISO 18626 spellings plus the hub's New, Received and
-- ShippedReturn); tests/test_states.py keeps the two equal. A new state needs a new
-- migration that drops and re-adds this constraint.
ALTER TABLE ill_transaction ADD CONSTRAINT ill_transaction_state_known
    CHECK (state IN ('New', 'ExpectToSupply', 'WillSupply', 'RetryPossible', 'Loaned',
                     'Received', 'Overdue', 'Recalled', 'ShippedReturn', 'CopyCompleted',
                     'LoanCompleted', 'CompletedWithoutReturn', 'Unfilled', 'Cancelled'));
