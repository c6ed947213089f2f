//! Live polling: sessions, polls, participants and votes (CONTRACT §2).
//! Pure: the model, the input parsing, the rules (`decide`) and the events
//! they produce. Persistence and transport live elsewhere.

pub mod decide;
pub mod events;
pub mod ids;
pub mod input;
pub mod model;
pub mod rejection;

pub use decide::{decide, Command, State};
pub use events::DomainEvent;
pub use rejection::{RejectReason, Rejection};

#[cfg(test)]
mod tests;
