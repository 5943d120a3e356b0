-- Peer profiles (broker/profiles/, docs/peer-profiles.md): which dialect of ISO 18626 an
-- agency's ILL system speaks, and what the hub keeps of what it received.

-- Owned by broker/agencies.py: the agency's profile (`run.py agency add/set --profile`).
-- The list matches broker/profiles/table.py PROFILES (a test checks it).
ALTER TABLE agency
    ADD COLUMN iso18626_profile text NOT NULL DEFAULT 'strict';
ALTER TABLE agency ADD CONSTRAINT agency_iso18626_profile_check
    CHECK (iso18626_profile IN ('alma', 'illiad', 'worldshare', 'reshare', 'crosslink',
                                'strict'));

-- Owned by broker/profiles/: every inbound message as it was received, before the edge
-- normalised it (the inbox keeps the message the hub went on with, under the same key).
-- ISO 18626 over HTTP: every document (the XML bytes; the securityCode of
-- requestingAgencyAuthentication blanked). AMQP: a body the edge changed.
CREATE TABLE inbound_original (
    sender        text NOT NULL,
    message_id    text NOT NULL,
    received_at   timestamptz NOT NULL DEFAULT now(),
    transport     text NOT NULL CHECK (transport IN ('amqp', 'iso18626-http')),
    profile       text NOT NULL,
    request_id    text,                       -- header.requestingAgencyRequestId
    content_type  text NOT NULL,
    original      bytea NOT NULL,
    adjustments   jsonb NOT NULL DEFAULT '[]',  -- [{adjustment, detail}], in order applied
    note_seq      integer,                    -- ReShare's #seq:N#, when the note had one
    PRIMARY KEY (sender, message_id)
);
CREATE INDEX inbound_original_request ON inbound_original (request_id, received_at);

-- Owned by broker/profiles/ (written by broker/peers.py): the last `#seq:N#` the hub put
-- on a note to a peer whose profile numbers notes (ReShare), per transaction.
CREATE TABLE peer_note_sequence (
    agency          text NOT NULL REFERENCES agency (symbol),
    transaction_id  text NOT NULL,
    last_seq        integer NOT NULL CHECK (last_seq > 0),
    PRIMARY KEY (agency, transaction_id)
);
