//! A real HTTP receiver for webhook tests: a local server
//! (`local_http.rs`) that checks each delivery's Standard Webhooks
//! signature itself (HMAC-SHA256 over `id.timestamp.body`, computed here,
//! not with pollcast's signing code), and can be told to answer 500 (or
//! any status, with a `Retry-After` if asked), to hang past the sender's
//! deadline, or to accept. Shared with
//! tests/faults through `#[path]`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Request, Response};
use serde_json::Value;
use sha2::Sha256;

use crate::local_http::serve;

/// What the receiver does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Accept,
    /// Answer with this status.
    Fail(u16),
    /// Answer with this status and `Retry-After: <seconds>`.
    RetryAfter(u16, u64),
    /// Answer nothing for a minute (past any deadline the sender has).
    Hang,
}

/// One request as it arrived.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub webhook_id: String,
    /// The event id in the body (`data.id`), or -1.
    pub event_id: i64,
    pub body: Value,
    /// Whether a signature matched the secret.
    pub signed: bool,
    /// How many signatures `webhook-signature` carried.
    pub signatures: usize,
    /// Whether it was accepted (2xx).
    pub accepted: bool,
    /// When it arrived.
    pub at: tokio::time::Instant,
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    /// The secret signatures are checked with.
    secret: String,
    attempts: Vec<Attempt>,
}

pub struct Receiver {
    pub url: String,
    /// The secret the test gives the webhook (`whsec_…`), which the
    /// receiver checks with until told another.
    pub secret: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `v1,<base64>` of `id.timestamp.body` under the key of `secret`.
pub fn expected_signature(secret: &str, id: &str, timestamp: &str, body: &[u8]) -> String {
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
        .expect("base64");
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body);
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

fn verified(secret: &str, request: &http::request::Parts, body: &[u8]) -> bool {
    let header = |name: &str| request.headers.get(name).and_then(|v| v.to_str().ok());
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    ) else {
        return false;
    };
    let fresh = timestamp
        .parse::<i64>()
        .is_ok_and(|t| (chrono::Utc::now().timestamp() - t).abs() <= 300);
    let expected = expected_signature(secret, id, timestamp, body);
    fresh && signatures.split(' ').any(|s| s == expected)
}

impl Receiver {
    pub async fn start() -> Receiver {
        let key: [u8; 32] = rand::random();
        let secret = format!("whsec_{}", STANDARD.encode(key));
        let state = Arc::new(Mutex::new(State {
            mode: Some(Mode::Accept),
            secret: secret.clone(),
            attempts: Vec::new(),
        }));
        let shared = Arc::clone(&state);
        let (addr, task) = serve(move |request| {
            let state = Arc::clone(&shared);
            async move { handle(request, &state).await }
        })
        .await;
        let url = format!("http://{addr}/hook");
        Receiver {
            url,
            secret,
            state,
            task,
        }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = Some(mode);
    }

    /// From now on, check signatures with this secret.
    pub fn set_secret(&self, secret: &str) {
        self.state.lock().unwrap().secret = secret.to_owned();
    }

    pub fn attempts(&self) -> Vec<Attempt> {
        self.state.lock().unwrap().attempts.clone()
    }

    /// The event ids of accepted deliveries, in arrival order.
    pub fn accepted(&self) -> Vec<i64> {
        self.attempts()
            .iter()
            .filter(|a| a.accepted)
            .map(|a| a.event_id)
            .collect()
    }

    /// Waits until `done` holds for the accepted ids; whether it did.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&[i64]) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if done(&self.accepted()) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        done(&self.accepted())
    }
}

async fn handle(request: Request<hyper::body::Incoming>, state: &Mutex<State>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let (mode, secret) = {
        let state = state.lock().unwrap();
        (state.mode.unwrap_or(Mode::Accept), state.secret.clone())
    };
    let signed = verified(&secret, &parts, &body);
    let signatures = parts
        .headers
        .get("webhook-signature")
        .and_then(|v| v.to_str().ok())
        .map_or(0, |v| v.split(' ').count());
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let attempt = Attempt {
        webhook_id: parts
            .headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned(),
        event_id: json["data"]["id"]
            .as_str()
            .and_then(|id| id.parse().ok())
            .unwrap_or(-1),
        body: json,
        signed,
        signatures,
        accepted: signed && mode == Mode::Accept,
        at: tokio::time::Instant::now(),
    };
    state.lock().unwrap().attempts.push(attempt);
    let mut retry_after = None;
    let status = match mode {
        _ if !signed => 401,
        Mode::Accept => 204,
        Mode::Fail(status) => status,
        Mode::RetryAfter(status, seconds) => {
            retry_after = Some(seconds);
            status
        }
        Mode::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            503
        }
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap();
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}
