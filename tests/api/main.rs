//! One integration test binary: every test starts a real server on a
//! port-0 listener, on its own Postgres database or on the memory store.

mod admin_console;
mod authz;
mod catalog;
mod direct;
mod errors;
mod helpers;
mod history;
mod idempotency;
mod idp_jwks_url;
mod idp_keys;
mod idp_tokens;
mod local_http;
mod ops;
mod polling;
mod polling_helpers;
mod presence;
mod publish_many;
mod rooms;
mod sql_publish;
mod streams;
mod system;
mod tenants;
mod versions;
mod webhook_delivery;
mod webhook_etiquette;
mod webhook_leases;
mod webhook_receiver;
mod webhook_rotation;
mod webhooks;
