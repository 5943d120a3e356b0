-- Book loans kept (issue 19 items 1 and 4; owned by broker/, written by
-- broker/dispatch/loans.py, read by broker/borrower_trust.py and `run.py explain`).

-- One row per loan, from the supplier's first Loaned: how far the book travels (the
-- requester's and supplier's locations, by the routing tiers' rule: same city, same
-- province, national) and the transit days that distance is given (settings `loans`),
-- frozen when the loan starts so that the sweep's stages are one indexable comparison.
-- returned_at is the requester's ShippedReturn (else the supplier's LoanCompleted);
-- days_late, how many days after the due date the book could be back at the supplier
-- (sent back + transit - due date, 0 when on time): what borrower trust counts.
CREATE TABLE loan (
    transaction_id text PRIMARY KEY REFERENCES ill_transaction (id),
    distance       text NOT NULL,
    transit_days   integer NOT NULL CHECK (transit_days >= 0),
    loaned_at      timestamptz NOT NULL,
    returned_at    timestamptz,
    days_late      integer CHECK (days_late >= 0),
    CHECK ((returned_at IS NULL) = (days_late IS NULL))
);
ALTER TABLE loan ADD CONSTRAINT loan_distance
    CHECK (distance IN ('city', 'province', 'national'));
CREATE INDEX loan_loaned_at ON loan (loaned_at);

-- The parcel of each leg: out (the supplier's Loaned) and back (the requester's
-- ShippedReturn). A message re-sent with corrected data replaces the leg's row.
CREATE TABLE loan_shipment (
    transaction_id  text NOT NULL REFERENCES ill_transaction (id),
    leg             text NOT NULL,
    carrier         text CHECK (length(carrier) BETWEEN 1 AND 100),
    tracking_number text CHECK (length(tracking_number) BETWEEN 1 AND 64),
    shipped_on      date,
    parcels         integer CHECK (parcels BETWEEN 1 AND 99),
    sent_via        text,
    item_id         text,
    sender          text NOT NULL,
    message_id      text,
    recorded_at     timestamptz NOT NULL,
    PRIMARY KEY (transaction_id, leg)
);
ALTER TABLE loan_shipment ADD CONSTRAINT loan_shipment_leg CHECK (leg IN ('out', 'back'));

-- What the hub's sweep did about a loan's due date, each stage once per due date (a
-- renewal's new due date starts the stages again): the primary key is the claim, taken
-- in the transaction that sends the messages, so two hubs never send one twice.
CREATE TABLE loan_notice (
    transaction_id text NOT NULL REFERENCES ill_transaction (id),
    stage          text NOT NULL,
    due_at         timestamptz NOT NULL,
    at             timestamptz NOT NULL,
    mail_id        bigint,
    PRIMARY KEY (transaction_id, stage, due_at)
);
ALTER TABLE loan_notice ADD CONSTRAINT loan_notice_stage
    CHECK (stage IN ('reminder', 'overdue', 'recall'));
