-- Wake the outbox relay from the database itself: one NOTIFY per inserting statement
-- (delivered at commit, folded into one per transaction), instead of a round trip
-- from every writer after every insert.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('illhub_outbox', '');
    RETURN NULL;
END $$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
