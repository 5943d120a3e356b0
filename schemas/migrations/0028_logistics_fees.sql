-- Logistics in the fee (issue 19): owned by settlement (settlement/fees.py,
-- settlement/subsidy.py, settlement/ledger.py). The cost of a national book loan is
-- mostly its shipping, so a fee schedule entry may price the outbound and return legs
-- by zone (schemas/zones.py), the quote shows the parts, and a subsidy rule may pay
-- the logistics part alone.

-- ---------------------------------------------------------------------------
-- One row per priced leg of a schedule entry; an entry without rows here does not
-- price shipping (its quote is what it was before). A leg costs its zone's price plus
-- per_extra_item for each item after the first.
-- ---------------------------------------------------------------------------
CREATE TABLE fee_logistics (
    schedule_id          bigint NOT NULL REFERENCES fee_schedule (id),
    leg                  text NOT NULL,
    city_minor           bigint NOT NULL CHECK (city_minor >= 0),
    province_minor       bigint NOT NULL CHECK (province_minor >= 0),
    national_minor       bigint NOT NULL CHECK (national_minor >= 0),
    per_extra_item_minor bigint NOT NULL DEFAULT 0 CHECK (per_extra_item_minor >= 0),
    PRIMARY KEY (schedule_id, leg)
);
ALTER TABLE fee_logistics ADD CONSTRAINT fee_logistics_leg CHECK (leg IN ('outbound', 'return'));

-- fee_terms_in_force (0014) gains each leg's prices (NULL: the leg is not priced). The
-- return type changes, so the function is dropped and made again; still one inlinable
-- SELECT, the two legs probed by primary key.
DROP FUNCTION fee_terms_in_force(text, date);
CREATE FUNCTION fee_terms_in_force(kind text, on_day date)
RETURNS TABLE (supplier text, service_kind text, entry integer, currency text,
               effective_from date, effective_to date, fixed_minor bigint,
               per_page_minor bigint, per_hour_minor bigint, assumed_pages integer,
               assumed_hours numeric,
               out_city_minor bigint, out_province_minor bigint, out_national_minor bigint,
               out_per_extra_item_minor bigint,
               ret_city_minor bigint, ret_province_minor bigint, ret_national_minor bigint,
               ret_per_extra_item_minor bigint)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT f.supplier, f.service_kind, f.entry, f.currency, f.effective_from,
           f.effective_to, f.fixed_minor, f.per_page_minor, f.per_hour_minor,
           f.assumed_pages, f.assumed_hours,
           o.city_minor, o.province_minor, o.national_minor, o.per_extra_item_minor,
           r.city_minor, r.province_minor, r.national_minor, r.per_extra_item_minor
    FROM fee_schedule f
    LEFT JOIN fee_logistics o ON o.schedule_id = f.id AND o.leg = 'outbound'
    LEFT JOIN fee_logistics r ON r.schedule_id = f.id AND r.leg = 'return'
    WHERE f.service_kind = $1 AND f.superseded_by IS NULL AND f.effective_from <= $2
      AND (f.effective_to IS NULL OR $2 <= f.effective_to)
$$;

-- ---------------------------------------------------------------------------
-- The ledger: how much of a posting's fee is logistics (0 for every posting made
-- before, and for fees without shipping). A reversal negates it with the fee, so it
-- always lies between 0 and the fee, on the fee's side of zero. Adding a column with
-- a constant default rewrites nothing and fires no row trigger (the ledger stays
-- append-only).
-- ---------------------------------------------------------------------------
ALTER TABLE ledger_posting ADD COLUMN logistics_minor bigint NOT NULL DEFAULT 0;
ALTER TABLE ledger_posting ADD CONSTRAINT ledger_posting_logistics_within_fee
    CHECK (CASE WHEN fee_minor >= 0 THEN logistics_minor BETWEEN 0 AND fee_minor
                ELSE logistics_minor BETWEEN fee_minor AND 0 END);

-- Which part of the fee a subsidy rule worked on: the whole fee, or its logistics.
ALTER TABLE subsidy_grant ADD COLUMN part text NOT NULL DEFAULT 'fee';
ALTER TABLE subsidy_grant ADD CONSTRAINT subsidy_grant_part CHECK (part IN ('fee', 'logistics'));
