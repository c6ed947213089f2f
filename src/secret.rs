//! Values that must never reach a log line: the token signing secret, the
//! admin key and the database URL (which may carry a password).
//!
//! [`Secret`] holds a string whose `Debug` prints `Secret([redacted])` and
//! which has no `Display`, so a `{:?}` of a settings struct, a panic message
//! or a `tracing` field cannot leak it. The value is reached only through
//! [`Secret::expose`], which makes every use easy to find with grep.
//! [`DatabaseUrl`] is a secret too, but its `Debug` still says where it
//! points (user, host, port, database) without the password.
//!
//! Written here rather than taken from the `secrecy` crate, which the
//! project could not resolve offline; it is small enough to check by eye.

use std::fmt;

/// A string shown as `Secret([redacted])` by `Debug`, never printed by
/// anything else. No `PartialEq` either, so nobody compares one with a
/// plain, early-exit `==`: the admin key is checked in constant time by
/// [`Secret::matches`].
#[derive(Clone)]
pub struct Secret(Box<str>);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into().into_boxed_str())
    }

    /// The value itself: for the few places that must use it (signing keys,
    /// the database connection), never for printing.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether a presented value is this secret, in time that does not
    /// depend on where they differ (both are hashed first, so not even on
    /// the length).
    pub fn matches(&self, given: &str) -> bool {
        use sha2::{Digest, Sha256};
        let (a, b) = (
            Sha256::digest(given.as_bytes()),
            Sha256::digest(self.0.as_bytes()),
        );
        a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret::new(value)
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value)
    }
}

/// A Postgres connection string (URL or `key=value` form), kept secret.
/// `Debug` shows the user, hosts, ports and database name, never the
/// password; a string that does not parse shows nothing at all.
#[derive(Clone)]
pub struct DatabaseUrl(Secret);

impl DatabaseUrl {
    /// The full connection string, password included: for connecting only.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }
}

impl From<String> for DatabaseUrl {
    fn from(value: String) -> Self {
        DatabaseUrl(Secret::new(value))
    }
}

impl From<&str> for DatabaseUrl {
    fn from(value: &str) -> Self {
        DatabaseUrl(Secret::new(value))
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use tokio_postgres::config::Host;
        let Ok(config) = self.expose().parse::<tokio_postgres::Config>() else {
            return f.write_str("DatabaseUrl([unparsable, redacted])");
        };
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let mut out = f.debug_struct("DatabaseUrl");
        out.field("user", &config.get_user())
            .field("hosts", &hosts)
            .field("ports", &config.get_ports())
            .field("dbname", &config.get_dbname());
        if config.get_password().is_some() {
            out.field("password", &format_args!("[redacted]"));
        }
        out.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_matches_only_itself() {
        let secret = Secret::from("k-123");
        assert!(secret.matches("k-123"));
        assert!(!secret.matches("k-124"));
        assert!(!secret.matches("k-12"));
        assert!(!secret.matches(""));
    }

    #[test]
    fn a_secret_debugs_as_redacted_and_exposes_on_request() {
        let secret = Secret::from("hunter2");
        assert_eq!(format!("{secret:?}"), "Secret([redacted])");
        assert_eq!(format!("{:?}", Some(secret.clone())), "Some(Secret([redacted]))");
        assert_eq!(secret.expose(), "hunter2");
    }

    #[test]
    fn a_database_url_debugs_where_it_points_but_not_its_password() {
        let url = DatabaseUrl::from("postgres://app:s3cr3t-pw@db.internal:6432/pollcast?sslmode=disable");
        let shown = format!("{url:?}");
        assert!(!shown.contains("s3cr3t-pw"), "{shown}");
        for part in ["app", "db.internal", "6432", "pollcast", "[redacted]"] {
            assert!(shown.contains(part), "{part} missing from {shown}");
        }
        assert!(url.expose().contains("s3cr3t-pw"));

        let key_value = DatabaseUrl::from("host=localhost user=app password=kv-pw dbname=pollcast");
        let shown = format!("{key_value:?}");
        assert!(!shown.contains("kv-pw"), "{shown}");
        assert!(shown.contains("localhost"), "{shown}");

        let garbage = DatabaseUrl::from("postgres://app:pw@host:not-a-port/db");
        assert_eq!(format!("{garbage:?}"), "DatabaseUrl([unparsable, redacted])");
    }
}
