-- Publish from SQL (#19): an application connected to this database calls
-- pollcast.publish(topic, type, payload[, tenant]) inside its own
-- transaction. The event does not enter the log there: it waits in
-- pollcast.outbox, which only that transaction can see until it commits,
-- and a rollback takes it away. After the commit, a node's writer moves it
-- into the log (under the log's lock, in its own transaction, with the
-- next id), so:
--
-- * the application's transaction never takes the log's lock: it may run
--   for minutes and every other publish goes on;
-- * SQL and REST publishes share one order, the order the writer takes
--   them in;
-- * the function sends no NOTIFY: Postgres serializes the commits of
--   transactions that notified (a lock held across the commit's WAL
--   flush), which capped 8 publishing clients at 484 commits/s here
--   against 3,590 without it (pgbench, same sitting). The nodes look at
--   the outbox every 25 ms instead, with an index probe that takes no
--   lock (src/topics/sql_publish.rs).
--
-- The checks are the REST publish's (topic and type syntax, reserved
-- topics and event types, an object payload, a tenant's name), so a
-- mistake fails the application's own statement rather than vanishing
-- after its commit. The writer checks every row again with the server's
-- own rules and drops (and logs) any that a hand-made INSERT slipped past.
CREATE SCHEMA IF NOT EXISTS pollcast;

CREATE TABLE pollcast.outbox (
    -- Taken at the call; rows are drained in this order. Two transactions
    -- committing out of this order are drained as they become visible.
    seq        bigserial   PRIMARY KEY,
    topic      text        NOT NULL,
    type       text        NOT NULL,
    payload    jsonb       NOT NULL,
    tenant     text,
    trace_id   text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Returns the event's trace id (32 hex digits), which the event carries as
-- `traceId`: the application can log it and find its event by it. The id
-- in the log is not known until the writer takes the row, after the commit.
CREATE FUNCTION pollcast.publish(topic text, type text, payload jsonb, tenant text DEFAULT NULL)
RETURNS text
LANGUAGE plpgsql
-- Runs with its owner's rights: applications get EXECUTE on this function,
-- not the right to write the outbox (or the log) directly.
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    trace text := replace(gen_random_uuid()::text, '-', '');
    segment text := '[a-z0-9_.-]+';
BEGIN
    IF topic IS NULL OR octet_length(topic) > 256
       OR topic !~ ('^' || segment || '(:' || segment || '){0,7}$') THEN
        RAISE EXCEPTION 'pollcast.publish: topic % must be 1 to 8 `:`-separated segments of [a-z0-9_.-] (at most 256 bytes)', quote_nullable(topic)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF split_part(topic, ':', 1) IN ('system', 'session', 'participant', 'presenter') THEN
        RAISE EXCEPTION 'pollcast.publish: `%:*` topics are written only by the server', split_part(topic, ':', 1)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF type IS NULL OR octet_length(type) > 128
       OR type !~ ('^' || segment || ':' || segment || '$') THEN
        RAISE EXCEPTION 'pollcast.publish: type % must look like `domain:action` with segments of [a-z0-9_.-] (at most 128 bytes)', quote_nullable(type)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF split_part(type, ':', 1) IN ('connection', 'system', 'presence') THEN
        RAISE EXCEPTION 'pollcast.publish: `%:*` event types are sent only by the server', split_part(type, ':', 1)
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF payload IS NULL OR jsonb_typeof(payload) <> 'object' THEN
        RAISE EXCEPTION 'pollcast.publish: payload must be a JSON object'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF octet_length(payload::text) > 65536 THEN
        RAISE EXCEPTION 'pollcast.publish: payload is larger than 64 KiB (as a REST request body)'
            USING ERRCODE = 'program_limit_exceeded';
    END IF;
    IF tenant IS NOT NULL AND tenant !~ '^[a-z0-9_.-]{1,64}$' THEN
        RAISE EXCEPTION 'pollcast.publish: tenant % must be 1 to 64 characters of [a-z0-9_.-]', quote_literal(tenant)
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pollcast.outbox (topic, type, payload, tenant, trace_id)
    VALUES (topic, type, payload, tenant, trace);
    RETURN trace;
END;
$$;

-- Only roles an administrator names may publish:
--   GRANT USAGE ON SCHEMA pollcast TO app;
--   GRANT EXECUTE ON FUNCTION pollcast.publish(text, text, jsonb, text) TO app;
REVOKE ALL ON FUNCTION pollcast.publish(text, text, jsonb, text) FROM PUBLIC;
REVOKE ALL ON TABLE pollcast.outbox FROM PUBLIC;
