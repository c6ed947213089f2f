//! One attempt to deliver one message: a signed POST with a deadline, and
//! what became of it in words an admin can act on (`HTTP 500`, `timed
//! out after 10s`, `could not connect: connection refused`).
//!
//! Any 2xx is a delivery; everything else is a failure, redirects
//! included (a redirect is not followed: a POST would not survive it, and
//! the configured URL is the one the admin checked).

use std::time::Duration;

use super::signing::SigningKey;

/// What one attempt met instead of a 2xx.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The receiver answered with this status.
    Status(u16),
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
            Failure::Status(code) => format!("HTTP {code}"),
            Failure::Timeout(after) => format!("timed out after {}", humantime::format_duration(*after)),
            Failure::Connect(why) => format!("could not connect: {why}"),
            Failure::Other(why) => why.clone(),
        };
        text.chars().take(300).collect()
    }
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

    /// POSTs `body` to `url`, signed with `key` for this attempt.
    pub async fn send(
        &self,
        url: &str,
        key: &SigningKey,
        message_id: &str,
        body: &str,
    ) -> Result<(), Failure> {
        let timestamp = chrono::Utc::now().timestamp();
        let signature = key.sign(message_id, timestamp, body);
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
            Ok(response) => Err(Failure::Status(response.status().as_u16())),
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

/// The innermost error's text: "connection refused", not "error sending
/// request for url (…)".
fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut inner = error;
    while let Some(source) = inner.source() {
        inner = source;
    }
    inner.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_read_as_an_admin_needs_them() {
        assert_eq!(Failure::Status(503).message(), "HTTP 503");
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
}
