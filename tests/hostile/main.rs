//! The hostile-client suite: what one client can do to the others, tried
//! the way an attacker would, against a real server on a real port. Each
//! test is bounded in time; together they run in well under two minutes.
//!
//! - [`poisoning`]: requests the database cannot store, mixed into the
//!   batches of legitimate ones.
//! - [`connections`]: slow heads, idle keep-alives, stalled bodies, and
//!   more connections than the node has room for.
//! - [`lifetimes`]: streams that would outlive their token, a revoked
//!   token, an admin's close, or their session.
//! - [`forgery`]: smuggled bodies, server events from a publisher, a
//!   token that mixes two sessions.
//! - [`memory`]: a flood of large events with stalled subscribers against
//!   the in-memory default.

// The API suite's harness; not every helper is used here.
#[allow(dead_code)]
#[path = "../api/helpers.rs"]
mod helpers;
#[allow(dead_code)]
#[path = "../api/polling_helpers.rs"]
mod polling_helpers;

mod connections;
mod forgery;
mod lifetimes;
mod memory;
mod poisoning;
