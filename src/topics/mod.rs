//! The topics service: generic topics beside live polling. What a
//! publisher may write, the versioned publish, who is present on a topic,
//! and history reads, with typed outcomes.
//!
//! - [`reserved`]: the topics (`system`, `session:*`, `participant:*`) and
//!   event types (`system:*`, `presence:*`, `connection:*`) only the server
//!   or live polling write;
//! - [`publish`]: a publish checked, then run in the writer's transaction,
//!   with optimistic locking of entities (`expectedVersion`);
//! - [`publish_many`]: several publishes in one commit, all or none;
//! - [`versions`]: the entity versions of a command's events, read and
//!   written once per command;
//! - [`sql_publish`]: publishes made in SQL (`pollcast.publish`) inside
//!   applications' transactions, moved from the outbox into the log;
//! - [`presence`]: `presence:update` events debounced by the grace period,
//!   and who is on a topic across nodes;
//! - [`history`]: events after a cursor, with an optional long-poll;
//! - [`tail`]: what an admin's live tail shows;
//! - [`outcome`]: what comes back, and why a request is refused.
//!
//! It imports `domain`, `store`, and beside it `fanout` (the hub a history
//! read waits on), `rooms` and `cluster` (who is present). Nothing here
//! knows HTTP: `src/http` parses, authorizes, calls this service and
//! renders its outcomes as statuses and bodies.

pub mod history;
pub mod outcome;
pub mod presence;
pub mod publish;
pub mod publish_many;
pub mod reserved;
pub mod sql_publish;
pub mod tail;
pub mod versions;
