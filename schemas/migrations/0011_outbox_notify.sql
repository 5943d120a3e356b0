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

-- The HTTP peer relay wakes only for rows of its own, on a channel of its own.
CREATE OR REPLACE FUNCTION outbox_transport() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.exchange = 'ill.outbound' AND EXISTS (
        SELECT 1 FROM agency WHERE symbol = NEW.routing_key AND iso18626_url IS NOT NULL
    ) THEN
        NEW.transport := 'iso18626-http';
        PERFORM pg_notify('illhub_peers', '');
    END IF;
    RETURN NEW;
END $$;
