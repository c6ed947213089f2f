-- Optimistic locking for generic topics (CONTRACT §4): a publish may name
-- an entity and the version it expects; the writer keeps the current
-- version per (topic, entity) here and stamps the new one on the event.
-- Only the writer touches this table, inside its batch transaction and
-- under the log's advisory lock, so a read-compare-write is race-free
-- across nodes.
CREATE TABLE entity_versions (
    topic     text   NOT NULL,
    entity_id text   NOT NULL,
    version   bigint NOT NULL CHECK (version > 0),
    PRIMARY KEY (topic, entity_id)
);

-- The entity and version an event carries, both null for unversioned events.
ALTER TABLE events ADD COLUMN entity_id text, ADD COLUMN version bigint;
