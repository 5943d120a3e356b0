-- Issue 20: no row trigger on the outbox. The transport of each row was chosen by a
-- plpgsql BEFORE INSERT trigger, once per row (four rows per routed request), each with
-- its own look-up of the receiver. The inserting statement now joins the view below
-- (infra/outbox.py), and the HTTP peers' relay is woken by the statement-level trigger,
-- which sees the statement's rows in a transition table.
DROP TRIGGER outbox_transport ON outbox;
DROP FUNCTION outbox_transport();

-- The agencies whose messages go over HTTP (broker/peers.py), published for the
-- outbox's inserting statement; every other message goes to RabbitMQ.
CREATE VIEW iso18626_http_peer AS SELECT symbol FROM agency WHERE iso18626_url IS NOT NULL;

DROP TRIGGER outbox_notify ON outbox;
CREATE OR REPLACE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('illhub_outbox', '');
    IF EXISTS (SELECT 1 FROM outbox_new WHERE transport = 'iso18626-http') THEN
        PERFORM pg_notify('illhub_peers', '');
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER outbox_notify AFTER INSERT ON outbox REFERENCING NEW TABLE AS outbox_new
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
