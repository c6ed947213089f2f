-- Publishes from SQL may name the entity the event is about (#19):
-- pollcast.publish(..., entity_id => 'order-42'). The writer gives such an
-- event the entity's next version, counted with the REST publishes about
-- the same entity on the same topic (as a REST publish with an entityId
-- and no expectedVersion: after the application's commit there is nobody
-- to answer a conflict, so SQL cannot expect a version).
--
-- The function gains a fifth parameter, which Postgres treats as another
-- function: the four-parameter one is dropped and this one takes its
-- place (calls with three or four arguments reach it through the
-- defaults). Its EXECUTE grants go with the old function: grant again,
--   GRANT EXECUTE ON FUNCTION pollcast.publish(text, text, jsonb, text, text) TO app;
ALTER TABLE pollcast.outbox ADD COLUMN entity_id text;

DROP FUNCTION pollcast.publish(text, text, jsonb, text);

CREATE FUNCTION pollcast.publish(topic text, type text, payload jsonb, tenant text DEFAULT NULL,
                                 entity_id text DEFAULT NULL)
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
    -- Control characters as the server's check has them (C0, DEL, C1),
    -- whatever the database's locale makes of [[:cntrl:]].
    IF entity_id IS NOT NULL
       AND (entity_id = '' OR char_length(entity_id) > 200
            OR entity_id ~ E'[\\u0001-\\u001f\\u007f-\\u009f]') THEN
        RAISE EXCEPTION 'pollcast.publish: entity_id must be 1 to 200 characters, none of them a control character'
            USING ERRCODE = 'invalid_parameter_value';
    END IF;
    INSERT INTO pollcast.outbox (topic, type, payload, tenant, entity_id, trace_id)
    VALUES (topic, type, payload, tenant, entity_id, trace);
    RETURN trace;
END;
$$;

REVOKE ALL ON FUNCTION pollcast.publish(text, text, jsonb, text, text) FROM PUBLIC;
