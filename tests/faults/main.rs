//! Fault tests: real pollcast processes (the built binary) on real
//! Postgres servers, killed, restarted and loaded the way production will.
//! Each test is bounded in time and leaves no process or database behind.

mod harness;
mod memory;
mod nodes;
mod outages;
mod shutdown;
// Shared with tests/api, which uses all of it.
#[path = "../api/local_http.rs"]
mod local_http;
#[allow(dead_code)]
#[path = "../api/webhook_receiver.rs"]
mod webhook_receiver;
mod webhooks;
