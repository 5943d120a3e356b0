-- ISO 18626 over HTTP (broker/iso18626_http.py in, broker/peers.py out).

-- An agency whose ILL system speaks ISO 18626 XML over HTTP instead of AMQP: the hub
-- POSTs what it would put on the agency's queue to this URL, in this schema version.
ALTER TABLE agency
    ADD COLUMN iso18626_url text CHECK (iso18626_url ~ '^https?://'),
    ADD COLUMN iso18626_version text NOT NULL DEFAULT '1.2'
        CHECK (iso18626_version IN ('1.2', '2021'));

-- Which relay sends an outbox row: the AMQP relay, or the HTTP peer relay. Decided
-- once, when the row is written, so a row never moves between the two.
ALTER TABLE outbox
    ADD COLUMN transport text NOT NULL DEFAULT 'amqp'
        CHECK (transport IN ('amqp', 'iso18626-http')),
    -- The peer's confirmation of what we POSTed (its messageStatus and the XML).
    ADD COLUMN peer_status text,
    ADD COLUMN peer_answer text;

CREATE INDEX outbox_http_pending ON outbox (routing_key, id)
    WHERE published_at IS NULL AND transport = 'iso18626-http';

CREATE FUNCTION outbox_transport() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.exchange = 'ill.outbound' AND EXISTS (
        SELECT 1 FROM agency WHERE symbol = NEW.routing_key AND iso18626_url IS NOT NULL
    ) THEN
        NEW.transport := 'iso18626-http';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER outbox_transport BEFORE INSERT ON outbox
    FOR EACH ROW EXECUTE FUNCTION outbox_transport();

-- A peer that answered ERROR to something the hub sent it.
ALTER TABLE flag DROP CONSTRAINT flag_kind_check;
ALTER TABLE flag ADD CONSTRAINT flag_kind_check
    CHECK (kind IN ('charge_above_schedule', 'deadline_breaches', 'copy_without_valid_file',
                    'loan_overdue', 'cancellation_rate', 'peer_error'));
