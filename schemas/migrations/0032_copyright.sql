-- Copyright on copies (issue 19; owned by broker/, broker/copyright.py is the table's only
-- writer and reader): one row per copy request, with the requester's copyright
-- declaration and what the hub counted it as. The consortium's limit ("rule of five":
-- at most N copies per library, journal and calendar year from the journal's recent
-- issues) is counted from these rows, and `run.py copyright report` shows them for an
-- audit. Declarations are kept settings.copyright.keep_years (6 by default, as the
-- British Library does) and then deleted by `purge_declarations`.
CREATE TABLE copyright_copy (
    id                bigserial PRIMARY KEY,
    transaction_id    text NOT NULL,
    requester         text NOT NULL,
    -- 'issn:0028-0836', or 'title:<title key of the journal title>' without an ISSN
    journal_key       text NOT NULL CHECK (journal_key <> ''),
    -- what the report prints: the ISSN, or the journal title as asked
    journal           text NOT NULL,
    -- the year of the issue (publicationInfo.publicationDate); NULL: not given, counted
    -- as recent (the hub cannot show the issue is old)
    publication_year  integer CHECK (publication_year BETWEEN 1000 AND 9999),
    -- the consortium-local calendar year of the request: the year counted in
    request_year      integer NOT NULL,
    -- whether the issue was recent by the window in force then (published in the last
    -- recent_years years): only recent issues count towards the limit
    recent            boolean NOT NULL,
    -- the accepted category (vocabulary code), NULL: none given or none accepted
    category          text,
    -- the declaration as received: {category, declaredBy, declaredAt, text, source}
    declaration       jsonb NOT NULL DEFAULT '{}',
    -- which copy of this journal this year it was (counted ones before it + 1), the
    -- limit then in force, and what the hub did past it
    copy_number       integer NOT NULL CHECK (copy_number >= 1),
    copy_limit        integer CHECK (copy_limit >= 0),
    action            text NOT NULL DEFAULT 'none',
    -- false: not counted towards the limit (a held request, a request a Retry replaced)
    counted           boolean NOT NULL DEFAULT true,
    created_at        timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT copyright_copy_declaration_object CHECK (jsonb_typeof(declaration) = 'object')
);

ALTER TABLE copyright_copy ADD CONSTRAINT copyright_copy_action
    CHECK (action IN ('none', 'flagged', 'routed', 'held'));

-- The count of each new copy request: one library, one journal, one year.
CREATE INDEX copyright_copy_count ON copyright_copy (requester, journal_key, request_year);
-- The daily purge of old declarations.
CREATE INDEX copyright_copy_created ON copyright_copy (created_at);
CREATE INDEX copyright_copy_transaction ON copyright_copy (transaction_id);

-- A new flag kind (infra/flags.py FlagKind): a copy request without an accepted copyright
-- declaration, or past the copyright limit.
ALTER TABLE flag DROP CONSTRAINT flag_kind_check;
ALTER TABLE flag ADD CONSTRAINT flag_kind_check
    CHECK (kind IN ('charge_above_schedule', 'charge_above_max_cost',
                    'charge_currency_mismatch', 'deadline_breaches', 'copy_without_valid_file',
                    'loan_overdue', 'cancellation_rate', 'peer_error', 'copyright'));
