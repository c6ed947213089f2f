//! Database errors, sorted the way a caller can act on them (see
//! [`StoreError`]), each with what the store was doing and the driver's
//! error as its cause.

use deadpool_postgres::PoolError;

use crate::store::error::StoreError;

/// Maps a database error met while doing `what` to "retry later"
/// (connection trouble, shutdown, overload), "this value was refused" (a
/// data exception, SQLSTATE class 22, such as a NUL in text) or
/// "internal" (everything else).
pub fn during(what: &'static str) -> impl Fn(tokio_postgres::Error) -> StoreError {
    move |error| {
        let transient = error.is_closed()
            || error.code().is_none_or(|code| {
                let c = code.code();
                c.starts_with("08") || c.starts_with("57P") || c.starts_with("53")
            });
        let sorted = if transient {
            StoreError::unavailable(what)
        } else if let Some(db) = error
            .as_db_error()
            .filter(|db| db.code().code().starts_with("22"))
        {
            // What was refused, in the database's words: the client sees it.
            StoreError::rejected(db.message())
        } else {
            StoreError::internal(what)
        };
        sorted.caused_by(error)
    }
}

/// Failing to get a connection is always "retry later", whatever the
/// server said (it may refuse new connections while it restarts).
pub fn no_connection(error: PoolError) -> StoreError {
    StoreError::unavailable("get a database connection").caused_by(error)
}
