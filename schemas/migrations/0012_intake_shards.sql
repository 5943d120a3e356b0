-- Intake shards (ARCHITECTURE §5), owned by broker/shards.py: which generation of the
-- `hub.inbound` shard queues is current in one broker namespace (vhost and name
-- prefix), and which older generations still hold messages to be drained before the
-- current one may be consumed. The newest generation of a namespace is the current one.
CREATE TABLE intake_generation (
    vhost       text NOT NULL,
    prefix      text NOT NULL,
    generation  integer NOT NULL CHECK (generation >= 0),
    shards      integer NOT NULL CHECK (shards BETWEEN 1 AND 64),
    created_at  timestamptz NOT NULL DEFAULT now(),
    -- Set once every queue of the generation is empty and deleted.
    drained_at  timestamptz,
    PRIMARY KEY (vhost, prefix, generation),
    -- Generation 0 is the single `hub.inbound` queue of the releases before sharding.
    CHECK (generation > 0 OR shards = 1)
);
