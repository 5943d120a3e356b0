-- Encrypted transport (issue #21): an ISO 18626 HTTP peer whose https:// certificate is
-- signed by a CA of its own (a consortium's private CA) rather than one the hub trusts.

-- Owned by broker/agencies.py (`run.py agency add/set --iso18626-ca FILE`): the PEM of
-- the CA certificate(s) broker/peers.py trusts for this peer, besides the system's CAs
-- and ILLHUB_HTTP__PEERS_CA_FILE. Kept in the database, not as a path, so that every hub
-- process verifies the peer alike without a file on each machine.
ALTER TABLE agency
    ADD COLUMN iso18626_ca text
        CHECK (iso18626_ca IS NULL OR iso18626_ca LIKE '%-----BEGIN CERTIFICATE-----%');
