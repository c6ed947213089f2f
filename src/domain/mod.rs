//! Pure rules and value types: no IO, no tokio. Everything here is parsed
//! once at the edge and trusted afterwards.

pub mod event;
pub mod polling;
pub mod topic;
