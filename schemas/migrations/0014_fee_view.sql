-- Owned by settlement (settlement/fees.py): what other packages may read of the fee
-- schedules. Dispatch ranks its candidates with the fee terms in force, and reads them
-- only through this function, never from fee_schedule itself, so the rule "which entry
-- applies on a day" (active, not superseded, within its consortium-local dates, both
-- inclusive) lives here, beside the table.
--
-- LANGUAGE sql, STABLE and one SELECT: the planner inlines it, so a join on `supplier`
-- still probes fee_schedule_active per candidate.
CREATE FUNCTION fee_terms_in_force(kind text, on_day date)
RETURNS TABLE (supplier text, service_kind text, entry integer, currency text,
               effective_from date, effective_to date, fixed_minor bigint,
               per_page_minor bigint, per_hour_minor bigint, assumed_pages integer,
               assumed_hours numeric)
LANGUAGE sql STABLE PARALLEL SAFE
AS $$
    SELECT f.supplier, f.service_kind, f.entry, f.currency, f.effective_from,
           f.effective_to, f.fixed_minor, f.per_page_minor, f.per_hour_minor,
           f.assumed_pages, f.assumed_hours
    FROM fee_schedule f
    WHERE f.service_kind = $1 AND f.superseded_by IS NULL AND f.effective_from <= $2
      AND (f.effective_to IS NULL OR $2 <= f.effective_to)
$$;
