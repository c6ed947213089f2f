-- An Idempotency-Key keeps what the HTTP edge made of its request's first
-- answer, as one opaque text: the store no longer knows statuses and
-- bodies apart (src/store/command.rs, `Remembered`). The edge writes
-- "<status> <body>"; the rows already kept are turned into that form.
ALTER TABLE idempotency_keys ADD COLUMN answer text;
UPDATE idempotency_keys SET answer = status::text || ' ' || body;
ALTER TABLE idempotency_keys ALTER COLUMN answer SET NOT NULL;
ALTER TABLE idempotency_keys DROP COLUMN status, DROP COLUMN body;
