//! One attempt to deliver one message: a signed POST with a deadline, and
//! what became of it in words an admin can act on (`HTTP 500`, `timed
//! out after 10s`, `could not connect: connection refused`).
//!
//! Any 2xx is a delivery; everything else is a failure, redirects
//! included (a redirect is not followed: a POST would not survive it, and
//! the configured URL is the one the admin checked). Two answers say more,
//! as the Standard Webhooks specification asks senders to heed them:
//! `410 Gone` (the receiver wants no more: the worker disables the
//! webhook) and a `Retry-After` header (the next attempt waits at least
//! that long).

use std::time::Duration;

use super::signing::{signature_header, SigningKey};
use crate::net::root_cause;

/// What one attempt met instead of a 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The receiver answered with this status, and maybe a `Retry-After`.
    Status {
        code: u16,
        retry_after: Option<Duration>,
    },
    /// No complete answer within the deadline.
    Timeout(Duration),
    /// No connection (refused, unreachable, DNS, TLS).
    Connect(String),
    /// Anything else the client met.
    Other(String),
}

impl Failure {
    /// What the API shows as `lastError.message`.
    pub fn message(&self) -> String {
        let text = match self {
            Failure::Status { code: 410, .. } => {
                "HTTP 410 Gone: the receiver wants no more deliveries, so the webhook was disabled".into()
            }
            Failure::Status { code, .. } => format!("HTTP {code}"),
            Failure::Timeout(after) => format!("timed out after {}", humantime::format_duration(*after)),
            Failure::Connect(why) => format!("could not connect: {why}"),
            Failure::Other(why) => why.clone(),
        };
        text.chars().take(300).collect()
    }

    /// The receiver answered `410 Gone`: it wants no more deliveries.
    pub fn is_gone(&self) -> bool {
        matches!(self, Failure::Status { code: 410, .. })
    }

    /// How long the receiver asked the sender to wait, if it did.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// A `Retry-After` value: delay-seconds, or an HTTP date (the wait until
/// then from `now`, zero when past). `None` when it is neither.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More digits than a u64 holds is "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&chrono::Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

/// The node's HTTP client for webhooks, with its deadline.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    timeout: Duration,
}

impl Sender {
    pub fn new(timeout: Duration) -> Result<Sender, reqwest::Error> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(10)))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("pollcast-webhooks/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Sender { client, timeout })
    }

    /// POSTs `body` to `url`, signed with each of `keys` for this attempt
    /// (the signatures space-separated, as the specification has it for a
    /// secret being rotated).
    pub async fn send(
        &self,
        url: &str,
        keys: &[SigningKey],
        message_id: &str,
        body: &str,
    ) -> Result<(), Failure> {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signature_header(keys, message_id, timestamp, body);
        let attempt = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_owned())
            .send()
            .await;
        match attempt {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(Failure::Status {
                code: response.status().as_u16(),
                retry_after: response
                    .headers()
                    .get(reqwest::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, chrono::Utc::now())),
            }),
            Err(error) => Err(self.classify(&error)),
        }
    }

    fn classify(&self, error: &reqwest::Error) -> Failure {
        if error.is_timeout() {
            Failure::Timeout(self.timeout)
        } else if error.is_connect() {
            Failure::Connect(root_cause(error))
        } else {
            Failure::Other(root_cause(error))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_an_admin_needs_them() {
        let status = |code| Failure::Status {
            code,
            retry_after: None,
        };
        assert_eq!(status(503).message(), "HTTP 503");
        assert!(status(410).message().starts_with("HTTP 410 Gone"));
        assert!(status(410).is_gone() && !status(404).is_gone());
        assert_eq!(
            Failure::Timeout(Duration::from_millis(1500)).message(),
            "timed out after 1s 500ms"
        );
        assert_eq!(
            Failure::Connect("Connection refused (os error 111)".into()).message(),
            "could not connect: Connection refused (os error 111)"
        );
        assert_eq!(Failure::Other("x".repeat(1000)).message().len(), 300);
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-12-07T10:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let secs = |s| Some(Duration::from_secs(s));
        assert_eq!(parse_retry_after("120", now), secs(120));
        assert_eq!(parse_retry_after(" 0 ", now), secs(0));
        assert_eq!(parse_retry_after("99999999999999999999999", now), secs(u64::MAX));
        assert_eq!(parse_retry_after("Mon, 07 Dec 2026 10:01:30 GMT", now), secs(90));
        // A date already past: no wait.
        assert_eq!(parse_retry_after("Mon, 07 Dec 2026 09:00:00 GMT", now), secs(0));
        for bad in ["", "-5", "1.5", "soon", "2026-12-07T10:01:30Z"] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }
}
