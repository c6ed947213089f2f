-- Webhook secret rotation: the secret before the last change goes on
-- signing beside the new one until previous_secret_until, so that a
-- receiver can switch over without losing a message (Standard Webhooks:
-- both signatures in `webhook-signature` during the overlap).
ALTER TABLE webhooks
    ADD COLUMN previous_secret       text,
    ADD COLUMN previous_secret_until timestamptz;
