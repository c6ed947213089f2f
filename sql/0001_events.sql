-- The global event log. Append-only: ids come from events_id_seq and are
-- taken only by the writer task while it holds the log's advisory lock, so
-- ids are committed in increasing order across every node.
CREATE SEQUENCE events_id_seq AS bigint;

CREATE TABLE events (
    id         bigint      PRIMARY KEY,
    topic      text        NOT NULL,
    type       text        NOT NULL,
    trace_id   text        NOT NULL,
    -- `json`, not `jsonb`: the text is kept exactly as written (compact,
    -- one line), so replay can frame it without re-serializing.
    payload    json        NOT NULL,
    created_at timestamptz NOT NULL
);

-- Replay of exact topics: `topic = ANY(...) AND id > $last ORDER BY id`.
CREATE INDEX events_topic_id ON events (topic, id);
-- Retention finds the prefix older than the cutoff.
CREATE INDEX events_created_at ON events USING brin (created_at);

-- What retention has removed: a Last-Event-ID at or below pruned_through
-- can no longer be replayed and gets `connection:reset`.
CREATE TABLE log_state (
    singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    pruned_through bigint  NOT NULL DEFAULT 0
);
INSERT INTO log_state DEFAULT VALUES;

-- The trigger that makes the log append-only. The only way around it is
-- prune_events() below, which sets a transaction-local flag.
CREATE FUNCTION events_reject_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('pollcast.pruning', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'events is append-only: % is not allowed (use prune_events for retention)', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER events_append_only
    BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION events_reject_change();

CREATE TRIGGER events_no_truncate
    BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION events_reject_change();

-- Retention, the one documented maintenance path: drops the prefix of the
-- log up to the newest event older than `cutoff`, and records how far it
-- went. Prefixes keep the rule simple: every id <= pruned_through is gone.
CREATE FUNCTION prune_events(cutoff timestamptz) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    last_old bigint;
    dropped  bigint;
BEGIN
    SELECT max(id) INTO last_old FROM events WHERE created_at < cutoff;
    IF last_old IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM set_config('pollcast.pruning', 'on', true);
    DELETE FROM events WHERE id <= last_old;
    GET DIAGNOSTICS dropped = ROW_COUNT;
    PERFORM set_config('pollcast.pruning', 'off', true);
    UPDATE log_state SET pruned_through = greatest(pruned_through, last_old);
    RETURN dropped;
END;
$$;

-- Idempotency keys (CONTRACT §6): written in the same transaction as the
-- events they produced; remembered for 24 hours.
CREATE TABLE idempotency_keys (
    scope       text        NOT NULL,
    key         text        NOT NULL,
    fingerprint text        NOT NULL,
    status      smallint    NOT NULL,
    body        text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_created_at ON idempotency_keys (created_at);
