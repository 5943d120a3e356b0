-- Issue 20: a copy request's copyright count under its lock, in one call. The lock (one
-- library's copies of one journal, infra/locks.py Lock.COPYRIGHT_COUNT, keyed as
-- keyed_transaction_lock keys it) and the count were two statements of their own for
-- every copy request; routing now asks this function in the round trip that reads its
-- facts (broker/dispatch/sql.py REQUEST_FACTS). The function is VOLATILE, so the count
-- runs on a snapshot taken after the lock was granted: a copy that another transaction
-- committed while this one waited for the lock is counted.
CREATE FUNCTION copyright_copies_counted(lock_id bigint, of_library text, of_journal text,
                                         in_year integer)
RETURNS integer LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(of_library || chr(31) || of_journal,
                                                   lock_id));
    RETURN (SELECT count(*) FROM copyright_copy c
            WHERE c.requester = of_library AND c.journal_key = of_journal
              AND c.request_year = in_year AND c.counted AND c.recent);
END $$;
