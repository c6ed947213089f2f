//! The HTTP edge: the route table, one request context, one error
//! boundary, SSE framing, and the server that runs them.
//!
//! - [`routes`]: every route by method and path, read by the warp filter,
//!   the direct SSE path and the `405` answer alike;
//! - `dispatch`: the warp filter that resolves a route and calls its
//!   handler; one handler module per resource (`publish`, `polling`, …)
//!   parses, authorizes, calls a service (`crate::polling`,
//!   `crate::topics`) and renders;
//! - [`server`]: accepting connections, their caps and deadlines
//!   ([`connections`]), the direct SSE path ([`direct`]) and hyper;
//! - [`state`]: what every handler shares.
//!
//! Only this module knows HTTP: below it, services return typed outcomes.

mod admin;
mod admin_console;
pub mod connections;
pub mod direct;
mod dispatch;
pub mod error;
mod history;
pub mod idempotency;
mod ops;
mod polling;
mod presence;
mod publish;
mod publish_many;
pub mod request;
pub mod rooms;
pub mod routes;
pub mod server;
pub mod state;
pub mod stream;
mod web;
mod webhooks;

pub use dispatch::router;
pub use state::{AppShared, AppState, StreamSettings};
