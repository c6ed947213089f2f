//! Storage: the event log and the tables commands read and write, behind
//! one trait with two backends, `postgres/` (durable, several nodes) and
//! `memory/` (the zero-setup default).
//!
//! ```text
//! command.rs      what a command is: decide in a transaction, a typed outcome
//! execute.rs      run one in the writer's batch, or a query on a snapshot
//! event_store.rs  the EventStore trait: append, read by id range, bus, hints
//! tx/             the repositories a command sees inside its transaction
//! error.rs        StoreError: retry, refused, full, or a bug; with its cause
//! webhooks.rs     webhook rows: cursor, circuit, lease (fenced writes)
//! postgres/ memory/  the two backends
//! ```
//!
//! This module only declares and re-exports: every file imports the file
//! that defines what it uses, so that nothing imports its own parent.

mod command;
mod error;
mod event_store;
mod execute;
pub mod memory;
pub mod postgres;
pub mod tx;
pub mod webhooks;

pub use command::{Append, Command, Remember, Remembered, TxCommand, Typed};
pub use error::{Cause, StoreError};
pub use event_store::{
    AppendOutcome, AppendRequest, CommittedBatch, EventStore, IdempotencyKey, LogBounds, IDEMPOTENCY_WINDOW,
};
pub use execute::{execute, query, Answer, Idempotent};
pub use tx::Tx;
