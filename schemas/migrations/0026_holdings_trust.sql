-- Holdings that learn (issue 18). Owned by broker: broker/holdings_trust.py writes and
-- reads holding_answer and holdings_mail (dispatch records an answer through it, in the
-- transaction that applies the answer); broker/holdings.py keeps holding.loaded_at.
--
-- Every answer a supplier gives about an item its holdings list (supplied, or Unfilled
-- for whatever reason) is one row per listed identifier: the denominator of its
-- holdings accuracy ("asked because listed") and, when the answer says the item is not
-- there (NotHeld, NotOnShelf, Missing, Lost), the doubt. Rows are only ever inserted,
-- so concurrent intake batches take no lock anyone else wants (the reason migration
-- 0016 turned the scorecard counters into change rows); accuracy per supplier and id
-- type over any span of days or months is a count over them, read with the index below.

-- When the holding was last loaded. New rows get the import's time; a re-import of an
-- unchanged catalogue rewrites nothing, except the holdings with a doubt the import
-- should lift (broker/holdings.py): a doubt older than this no longer counts. Adding a
-- column with a stable default writes no row (the default is kept in the catalogue).
ALTER TABLE holding ADD COLUMN loaded_at timestamptz NOT NULL DEFAULT now();

CREATE TABLE holding_answer (
    id             bigserial PRIMARY KEY,
    supplier       text COLLATE "C" NOT NULL
                   REFERENCES agency (symbol) ON UPDATE CASCADE ON DELETE CASCADE,
    id_type        text COLLATE "C" NOT NULL,
    id_value       text COLLATE "C" NOT NULL,
    transaction_id text NOT NULL REFERENCES ill_transaction (id),
    answered_at    timestamptz NOT NULL,
    not_held       boolean NOT NULL,
    reason         text                -- reasonUnfilled as sent; NULL: supplied
);
ALTER TABLE holding_answer ADD CONSTRAINT holding_answer_id_type
    CHECK (id_type IN ('issn', 'isbn', 'doi_prefix', 'title_key'));

-- Is this holding doubted? Its latest answer, one probe per listed identifier of a
-- new request (broker/dispatch/sql.py `_candidates`).
CREATE INDEX holding_answer_latest
    ON holding_answer (supplier, id_type, id_value, answered_at DESC);
-- Accuracy per supplier and id type over a window: index-only.
CREATE INDEX holding_answer_window
    ON holding_answer (supplier, id_type, answered_at) INCLUDE (not_held);
-- The doubts only: what an import may lift, what the quality report and the monthly
-- mail list.
CREATE INDEX holding_answer_doubts
    ON holding_answer (supplier, answered_at) WHERE not_held;

-- The holdings in doubt: the latest answer about the holding said not held, and came
-- after the holding was loaded (a later supply, or a fresh import, lifts the doubt).
-- For the reports (run.py holdings quality, the operators' dashboard, the monthly
-- mail), driven from the not-held answers. Routing applies the same rule per identifier
-- of a new request, one index probe each (broker/dispatch/sql.py `_candidates`).
CREATE VIEW holding_doubt AS
SELECT d.supplier, d.id_type, d.id_value, d.reason, d.answered_at, d.transaction_id
FROM (SELECT DISTINCT supplier, id_type, id_value FROM holding_answer WHERE not_held) k
JOIN holding h ON h.symbol = k.supplier AND h.id_type = k.id_type AND h.id_value = k.id_value
CROSS JOIN LATERAL (
    SELECT x.supplier, x.id_type, x.id_value, x.reason, x.answered_at, x.transaction_id,
           x.not_held
    FROM holding_answer x
    WHERE x.supplier = k.supplier AND x.id_type = k.id_type AND x.id_value = k.id_value
    ORDER BY x.answered_at DESC LIMIT 1) d
WHERE d.not_held AND d.answered_at > h.loaded_at;

-- The monthly mail to each library listing its holdings that failed: one per supplier
-- and month, whichever hub process sends it (the primary key decides).
CREATE TABLE holdings_mail (
    supplier  text COLLATE "C" NOT NULL
              REFERENCES agency (symbol) ON UPDATE CASCADE ON DELETE CASCADE,
    month     date NOT NULL,           -- the first day of the month the mail is about
    mail_id   bigint,
    failed    integer NOT NULL,        -- holdings listed in the mail
    sent_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (supplier, month)
);
