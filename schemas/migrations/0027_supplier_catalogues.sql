-- Suppliers' catalogues, asked before routing (issue 18; owned by broker/, written by
-- broker/catalogue/settings.py through `run.py agency catalogue`, read by dispatch with
-- the candidates of a new request). Optional, per supplier: a row here means the hub
-- sends an SRU searchRetrieve for the item's identifiers to `sru_url` and reads the
-- availability of its copies from the record; the answer ranks, it never excludes.
CREATE TABLE supplier_catalogue (
    symbol            text PRIMARY KEY REFERENCES agency (symbol) ON DELETE CASCADE,
    -- the SRU base URL, database included (http://opac.example.edu.cn:210/Default)
    sru_url           text NOT NULL CHECK (sru_url ~ '^https?://[^[:space:]]+$'),
    sru_version       text NOT NULL DEFAULT '1.2',
    -- the recordSchema as the server names it (marcxml, info:srw/schema/1/marcxml-v1.1,
    -- iso20775, ...), and which reader reads it
    record_schema     text NOT NULL DEFAULT 'marcxml'
                      CHECK (record_schema <> '' AND length(record_schema) <= 200),
    reader            text NOT NULL DEFAULT 'marc',
    -- marc: the field and subfield holding each item's status (876$j, Koha's 952$7,
    -- ...) and the statuses that mean "on the shelf"; compared without regard to case
    item_field        text NOT NULL DEFAULT '876$j' CHECK (item_field ~ '^[0-9]{3}\$[a-z0-9]$'),
    available_values  text[] NOT NULL DEFAULT '{Available}'
                      CHECK (cardinality(available_values) > 0),
    -- the CQL index for each identifier type the hub knows ({"isbn": "bath.isbn"})
    indexes           jsonb NOT NULL DEFAULT '{"isbn": "bath.isbn", "issn": "bath.issn"}'
                      CHECK (jsonb_typeof(indexes) = 'object' AND indexes <> '{}'),
    -- its own time budget (NULL: settings.catalogues.budget_ms); never more than that
    budget_ms         integer CHECK (budget_ms > 0),
    enabled           boolean NOT NULL DEFAULT true,
    updated_at        timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE supplier_catalogue ADD CONSTRAINT supplier_catalogue_sru_version
    CHECK (sru_version IN ('1.1', '1.2', '2.0'));
ALTER TABLE supplier_catalogue ADD CONSTRAINT supplier_catalogue_reader
    CHECK (reader IN ('marc', 'iso20775'));
