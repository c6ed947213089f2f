-- Revoked tokens (see src/revocation.rs): by `jti`, or every token of a
-- `sub` issued up to `revoked_at`, in force until `until`. Written by an
-- admin's request through any node; every node keeps the rows in force in
-- memory, reloads them every few seconds and at once when told over the
-- cluster bus. Retention deletes the rows whose `until` has passed.
CREATE TABLE revocations (
    id         uuid        PRIMARY KEY,
    jti        text,
    sub        text,
    tenant     text,
    revoked_at timestamptz NOT NULL,
    until      timestamptz NOT NULL,
    CHECK (jti IS NOT NULL OR sub IS NOT NULL)
);
