-- Settlement calendars (issue 17): a settlement period is a month 'YYYY-MM', two months
-- 'YYYY-B1'..'YYYY-B6', a quarter 'YYYY-Q1'..'YYYY-Q4' or a calendar year 'YYYY'
-- (settings.settlement.calendar; settlement/calendar.py PERIOD_PATTERN is the same
-- expression). Subsidy budgets keep renewing by calendar month: subsidy_budget.period
-- stays 'YYYY-MM' or 'total' (0004).
--
-- Runs may switch calendar only at a boundary: a period is settled only if it overlaps
-- no closed period and starts after the last closed one ends (settlement/periods.py
-- says which, by name). Closed periods that overlap are refused here too, whatever
-- writes the table; the run regions (0010) nest by cutoff and need nothing new.

-- 0006 named the period CHECK itself (a column constraint): PostgreSQL's default name.
ALTER TABLE settlement_period DROP CONSTRAINT settlement_period_period_check;
ALTER TABLE settlement_period ADD CONSTRAINT settlement_period_period_check
    CHECK (period ~ '^[0-9]{4}(-(0[1-9]|1[0-2])|-B[1-6]|-Q[1-4])?$');

-- No two closed periods share a day (a range type's GiST operator class, no extension).
ALTER TABLE settlement_period ADD CONSTRAINT settlement_period_closed_apart
    EXCLUDE USING gist (daterange(date_from, date_to, '[]') WITH &&)
    WHERE (state = 'closed');
