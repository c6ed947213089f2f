//! What can go wrong in a store, sorted by what the caller can do about
//! it: retry later, give up on this one request, or report a bug. Each
//! error keeps what it was doing and, where there is one, the error that
//! caused it (a database error, a pool error), for the logs.

use std::error::Error;
use std::sync::Arc;

/// The error under a [`StoreError`]. Shared, because a failed writer
/// batch hands the same error to every request of the batch.
pub type Cause = Arc<dyn Error + Send + Sync>;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached now; the client should retry.
    #[error("event store unavailable: {what}")]
    Unavailable {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The in-memory store holds as many rows as it may: nothing new can
    /// be added until some go (a restart), or until it runs on Postgres.
    #[error("the store is full: {what}")]
    Full { what: String },
    /// The database refused a value of this one command (a data
    /// exception: SQLSTATE class 22). Only that command fails; the client
    /// sent something the edge's validation should have caught.
    #[error("the event store refused a value: {what}")]
    Rejected {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
    /// Anything else: a bug or a broken schema. Logged, never shown in detail.
    #[error("event store failure: {what}")]
    Internal {
        what: String,
        #[source]
        cause: Option<Cause>,
    },
}

impl StoreError {
    pub fn unavailable(what: impl Into<String>) -> Self {
        StoreError::Unavailable {
            what: what.into(),
            cause: None,
        }
    }

    pub fn full(what: impl Into<String>) -> Self {
        StoreError::Full { what: what.into() }
    }

    pub fn rejected(what: impl Into<String>) -> Self {
        StoreError::Rejected {
            what: what.into(),
            cause: None,
        }
    }

    pub fn internal(what: impl Into<String>) -> Self {
        StoreError::Internal {
            what: what.into(),
            cause: None,
        }
    }

    /// The same error, caused by `cause`.
    pub fn caused_by(mut self, error: impl Error + Send + Sync + 'static) -> Self {
        let error: Cause = Arc::new(error);
        match &mut self {
            StoreError::Unavailable { cause, .. }
            | StoreError::Rejected { cause, .. }
            | StoreError::Internal { cause, .. } => *cause = Some(error),
            StoreError::Full { .. } => {}
        }
        self
    }

    /// The error and every cause under it, on one line, for a log.
    pub fn report(&self) -> String {
        let mut line = self.to_string();
        let mut next = self.source();
        while let Some(cause) = next {
            line.push_str(": ");
            line.push_str(&cause.to_string());
            next = cause.source();
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::StoreError;

    #[test]
    fn a_report_names_what_failed_and_why() {
        let io = std::io::Error::other("connection reset by peer");
        let error = StoreError::unavailable("insert events").caused_by(io);
        assert_eq!(
            error.report(),
            "event store unavailable: insert events: connection reset by peer"
        );
        assert_eq!(
            StoreError::full("1000 rows").report(),
            "the store is full: 1000 rows"
        );
    }
}
