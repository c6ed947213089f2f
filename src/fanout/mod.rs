//! Fan-out: from committed events to the bytes each subscriber receives.
//! `tail` reads the store in id order, `hub` frames each event once and
//! hands the shared frame to every matching subscriber, `frame` is the SSE
//! wire format.

pub mod frame;
pub mod hub;
pub mod tail;
