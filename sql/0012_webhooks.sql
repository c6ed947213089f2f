-- Durable webhooks (#19): each row is one subscription of an HTTP receiver
-- to topic selectors, with its delivery cursor, its circuit and the lease of
-- the one node that delivers it. Every delivery write is fenced on
-- `leased_by` (a node that lost its lease cannot move the cursor) and on
-- `revision` (bumped by every change from the API: a replay or a new URL
-- is not overwritten by a delivery that was under way).
CREATE TABLE webhooks (
    id                   uuid PRIMARY KEY,
    url                  text NOT NULL,
    topics               text[] NOT NULL,
    secret               text NOT NULL,
    description          text,
    -- The tenant whose topics the selectors name (NULL: topics outside any
    -- tenant), as a tenant's token would name them.
    tenant               text,
    enabled              boolean NOT NULL DEFAULT true,
    -- The last event delivered (or skipped by a replay's afterId).
    delivered_through    bigint NOT NULL,
    revision             bigint NOT NULL DEFAULT 1,
    consecutive_failures integer NOT NULL DEFAULT 0,
    last_error_at        timestamptz,
    last_error           text,
    last_delivered_at    timestamptz,
    leased_by            uuid,
    lease_until          timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now()
);

-- A node's renewal finds its leases by node.
CREATE INDEX webhooks_leased_by ON webhooks (leased_by) WHERE leased_by IS NOT NULL;
