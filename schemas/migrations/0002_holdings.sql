-- Holdings: which supplier holds which item, for dispatch routing (broker/holdings.py).
--
-- The hot query is "which symbols hold any of these (id_type, id_value) pairs", so
-- the primary key leads with (id_type, id_value) and ends with symbol: a lookup is
-- an index-only scan (heap visits only for pages not yet vacuumed). There is
-- deliberately no second index on symbol: every extra index slows the million-row
-- import, and the by-symbol statements (a replace-mode import; the cascade when an
-- agency is deleted or renamed) are rare operator jobs for which one sequential
-- scan is acceptable.
--
-- The foreign key costs one trigger-driven lookup per inserted row: about 3.5 s of
-- the 14-15 s a million-row import takes on the 2-core dev box (bench/holdings_import.py).
-- It is kept so that no routing decision ever names an agency that does not exist,
-- and so that deleting an agency takes its holdings with it. The importer checks
-- symbols itself first, so a bad symbol becomes a rejected line, never a
-- constraint violation.
--
-- COLLATE "C": these are codes, compared for equality only, and byte comparison
-- spares the B-tree a strcoll() per key comparison (measured: the million-row
-- insert about 40 % faster than under the database's default locale).
--
-- id_value is stored normalised (see broker/holdings.py); the CHECKs pin the
-- canonical shapes so rows written by anything other than the importer cannot
-- silently miss lookups.

CREATE TABLE holding (
    id_type  text COLLATE "C" NOT NULL
             CHECK (id_type IN ('issn', 'isbn', 'doi_prefix', 'title_key')),
    id_value text COLLATE "C" NOT NULL,
    symbol   text COLLATE "C" NOT NULL
             REFERENCES agency (symbol) ON UPDATE CASCADE ON DELETE CASCADE,
    PRIMARY KEY (id_type, id_value, symbol),
    CONSTRAINT holding_value_shape CHECK (
        CASE id_type
            WHEN 'issn'       THEN id_value ~ '^[0-9]{4}-[0-9]{3}[0-9X]$'
            WHEN 'isbn'       THEN id_value ~ '^97[89][0-9]{10}$'
            WHEN 'doi_prefix' THEN id_value ~ '^10\.[0-9]+(\.[0-9]+)*$'
            ELSE id_value <> ''
        END
    )
);
