-- Recall by policy (issue 19 item 4; owned by broker): the days after its due date that an
-- overdue loan is recalled, fixed when the loan starts from the first policy rule whose
-- `when` it meets (`recall_after_days`); NULL: settings.loans.recall_after_days_overdue.
ALTER TABLE loan ADD COLUMN recall_after_days integer
    CHECK (recall_after_days IS NULL OR recall_after_days BETWEEN 0 AND 365);
ALTER TABLE loan ADD COLUMN recall_rule text;
